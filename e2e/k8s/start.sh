#!/usr/bin/env bash
# Starts a real Kubernetes control plane for tests: etcd, kube-apiserver and
# kube-controller-manager, built by build.sh. Without a node (the default) it
# listens on 127.0.0.1 and pods stay Pending; everything an operator talks to
# (CRDs, RBAC, workloads, ConfigMaps, Leases, the controllers that turn a
# Deployment into ReplicaSets and pods) is real. With KVSTORE_K8S_NODE=1 it also
# starts kube-scheduler and one real node (node.sh: containerd, kubelet,
# kube-proxy, CoreDNS, a storage provisioner) in a network namespace of its own,
# and the API server listens on the host's end of the link to that namespace, so
# pods reach it through the `kubernetes` Service.
#
# Usage: e2e/k8s/start.sh WORK_DIR
#   WORK_DIR gets certs/, the etcd data, logs/, pids/, and:
#     kubeconfig  admin (system:masters) client-certificate kubeconfig, for kubectl,
#                 helm and @kubernetes/client-node
#     env         shell lines to source: KUBECONFIG, PATH with the binaries, ports, pids
# Environment:
#   KVSTORE_K8S_BIN            the bin folder (default: what build.sh prints; builds if needed)
#   KVSTORE_K8S_START_TIMEOUT  seconds to wait for readiness (default 300: a loaded 2-core machine is slow)
#   KVSTORE_K8S_OWNER_PID      stop everything when this process is gone (so a killed test run
#                              leaves no servers behind)
#   KVSTORE_K8S_NODE           1: start a real node too (node.sh)
#   KVSTORE_K8S_SLOT           with a node: which address ranges (0-63; node.sh); default the first free
# Stop with e2e/k8s/stop.sh WORK_DIR.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
work_arg="${1:?usage: start.sh WORK_DIR}"
mkdir -p "$work_arg"
work="$(cd "$work_arg" && pwd)"
timeout="${KVSTORE_K8S_START_TIMEOUT:-300}"

log() { echo "k8s-start: $*" >&2; }

if [ -e "$work/pids" ] && [ -n "$(ls -A "$work/pids" 2>/dev/null)" ]; then
  log "$work already has running processes (pids/); run stop.sh $work first"
  exit 1
fi

bin="${KVSTORE_K8S_BIN:-$(bash "$here/build.sh" | tail -n 1)}"
for b in etcd kube-apiserver kube-controller-manager kubectl; do
  [ -x "$bin/$b" ] || { log "$bin/$b is missing; run e2e/k8s/build.sh"; exit 1; }
done

certs="$work/certs"
logs="$work/logs"
pids="$work/pids"
mkdir -p "$certs" "$logs" "$pids"

# Where the API server listens, and the Service range. Without a node nothing
# routes a Service IP, but the range is still one reserved for tests.
with_node="${KVSTORE_K8S_NODE:-0}"
api_host=127.0.0.1
service_cidr=198.18.255.0/24
kubernetes_service_ip=198.18.255.1
if [ "$with_node" = 1 ]; then
  # Claims a slot and makes the network namespace and its link; writes $work/node.env.
  bash "$here/node.sh" net-up "$work"
  # shellcheck source=/dev/null
  . "$work/node.env"
  api_host="$KVSTORE_K8S_HOST_IP"
  service_cidr="$KVSTORE_K8S_SERVICE_CIDR"
  kubernetes_service_ip="$KVSTORE_K8S_KUBERNETES_IP"
fi

# If anything below fails, leave no half-started control plane behind.
started=0
on_exit() {
  local status=$?
  if [ "$status" -ne 0 ] && [ "$started" -eq 0 ]; then
    log "start failed; last log lines:"
    for f in "$logs"/*.log; do
      [ -e "$f" ] || continue
      echo "---- $f" >&2
      tail -n 25 "$f" >&2
    done
    bash "$here/stop.sh" "$work" >&2 || true
  fi
}
trap on_exit EXIT

# ---------------------------------------------------------------- certificates
# One CA signs the API server's serving cert and the client certs (all but the
# front proxy's, below); the API server trusts client certs from it
# (--client-ca-file), so the admin and the controller manager authenticate by
# certificate, as in a kubeadm cluster.
# Made once per work dir; .complete marks a set that was written whole.
# shellcheck source=certs.sh
. "$here/certs.sh"
# The API server's certificate names its addresses: a work dir reused with other ones gets new certificates.
cert_stamp="$api_host $kubernetes_service_ip"
if [ ! -f "$certs/.complete" ] || [ "$(cat "$certs/.complete")" != "$cert_stamp" ]; then
  rm -f "$certs"/*
  gen_key "$certs/ca.key"
  ossl req -x509 -new -key "$certs/ca.key" -subj "/CN=kvstore-e2e-ca" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$certs/ca.crt"
  client_ext="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
  # The first address of --service-cluster-ip-range is the `kubernetes` Service's ClusterIP.
  sign apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:$api_host,IP:$kubernetes_service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # system:masters is bound to cluster-admin by the API server's bootstrap RBAC.
  sign admin "/O=system:masters/CN=kvstore-e2e-admin" "$client_ext"
  # The bootstrap RBAC policy grants this exact user name what the controller manager needs.
  sign kube-controller-manager "/CN=system:kube-controller-manager" "$client_ext"
  # The same for the scheduler, kube-proxy (bound to system:node-proxier) and the API server's
  # client certificate for kubelets (logs, exec).
  sign kube-scheduler "/CN=system:kube-scheduler" "$client_ext"
  sign kube-proxy "/CN=system:kube-proxy" "$client_ext"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client_ext"
  # The front proxy (aggregation layer): without a request-header CA the controller
  # manager's delegated authentication logs errors every second, and aggregated
  # APIs (metrics-server, say) could not be registered. Its own CA, as kubeadm does.
  gen_key "$certs/front-proxy-ca.key"
  ossl req -x509 -new -key "$certs/front-proxy-ca.key" -subj "/CN=kvstore-e2e-front-proxy-ca" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$certs/front-proxy-ca.crt"
  sign front-proxy-client "/CN=front-proxy-client" "$client_ext" front-proxy-ca
  # The service-account token signer: the API server verifies with the public half,
  # the controller manager's token controller signs with the private half.
  ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$certs/sa.key"
  ossl pkey -in "$certs/sa.key" -pubout -out "$certs/sa.pub"
  # A static bearer token for the admin too, for tools that prefer a token to a client cert.
  admin_token="$(openssl rand -hex 24)"
  echo "$admin_token,kvstore-e2e-admin-token,kvstore-e2e-admin-token,system:masters" >"$certs/tokens.csv"
  chmod 600 "$certs"/*.key "$certs/tokens.csv"
  echo "$cert_stamp" >"$certs/.complete"
fi
admin_token="$(cut -d, -f1 "$certs/tokens.csv")"

# ---------------------------------------------------------------- helpers
# Free loopback ports, chosen by the kernel and all held at once so they differ.
# Another process may still take one before we bind it; the starts below retry.
free_ports() {
  node -e '
    const net = require("net");
    const n = Number(process.argv[1]);
    const servers = [];
    let left = n;
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      servers.push(s);
      s.listen(0, "127.0.0.1", () => {
        if (--left === 0) {
          console.log(servers.map((x) => x.address().port).join(" "));
          servers.forEach((x) => x.close());
        }
      });
    }' "$1"
}

# spawn NAME COMMAND...: start in its own session (so a Ctrl-C to the caller's
# process group does not reach it; stop.sh ends it), log to logs/NAME.log.
spawn() {
  local name="$1"
  shift
  setsid "$@" </dev/null >>"$logs/$name.log" 2>&1 &
  echo $! >"$pids/$name.pid"
}

# wait_for NAME DESCRIPTION COMMAND...: poll until COMMAND succeeds; fail early if NAME died.
wait_for() {
  local name="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$pids/$name.pid" 2>/dev/null)" 2>/dev/null; then
      log "$name exited while waiting for $what"
      return 2
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

port_in_use_failure() { grep -qiE 'address already in use|bind: address' "$logs/$1.log"; }

data() { base64 -w0 <"$1"; }
kubeconfig_for() { # USER CERT_NAME SERVER OUT
  cat >"$4" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: kvstore-e2e
    cluster:
      server: $3
      certificate-authority-data: $(data "$certs/ca.crt")
users:
  - name: $1
    user:
      client-certificate-data: $(data "$certs/$2.crt")
      client-key-data: $(data "$certs/$2.key")
contexts:
  - name: kvstore-e2e
    context:
      cluster: kvstore-e2e
      user: $1
current-context: kvstore-e2e
EOF
  chmod 600 "$4"
}

# ---------------------------------------------------------------- stop on owner exit
# Started before any server, so that even a start cut short leaves nothing running.
if [ -n "${KVSTORE_K8S_OWNER_PID:-}" ]; then
  owner="$KVSTORE_K8S_OWNER_PID"
  # shellcheck disable=SC2016 # $1..$3 are the inner script's arguments, expanded there
  setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -d "$2/pids" ]; do sleep 2; done; exec bash "$3" "$2"' \
    owner-watch "$owner" "$work" "$here/stop.sh" </dev/null >>"$logs/owner-watch.log" 2>&1 &
  echo $! >"$pids/owner-watch.pid"
fi

# ---------------------------------------------------------------- etcd
for attempt in 1 2 3; do
  read -r etcd_client_port etcd_peer_port < <(free_ports 2)
  rm -rf "$work/etcd"
  # --unsafe-no-fsync: test data is thrown away, and fsync on a disk shared with
  # other test runs is what makes etcd (and so the API server) slow here.
  spawn etcd "$bin/etcd" --name default --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_client_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "default=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --log-level warn
  if wait_for etcd "etcd on 127.0.0.1:$etcd_client_port" \
    curl -sf "http://127.0.0.1:$etcd_client_port/health"; then
    break
  fi
  if [ "$attempt" -lt 3 ] && port_in_use_failure etcd; then
    log "etcd port taken, retrying with others"
    continue
  fi
  exit 1
done
log "etcd ready on 127.0.0.1:$etcd_client_port"

# ---------------------------------------------------------------- kube-apiserver
# Without a node, the API server advertises 127.0.0.1, which it refuses to
# publish as the `kubernetes` Service's endpoint (loopback): no endpoints then
# (--endpoint-reconciler-type none), and no pod runs to use them. With a node it
# advertises the host's end of the node's link, and keeps that endpoint.
endpoint_flags=(--endpoint-reconciler-type none)
[ "$with_node" = 1 ] && endpoint_flags=(--endpoint-reconciler-type lease)
for attempt in 1 2 3; do
  read -r api_port < <(free_ports 1)
  server="https://$api_host:$api_port"
  kubeconfig_for kvstore-e2e-admin admin "$server" "$work/kubeconfig"
  spawn kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_client_port" \
    --bind-address "$api_host" --advertise-address "$api_host" --secure-port "$api_port" \
    --tls-cert-file "$certs/apiserver.crt" --tls-private-key-file "$certs/apiserver.key" \
    --client-ca-file "$certs/ca.crt" --token-auth-file "$certs/tokens.csv" \
    --requestheader-client-ca-file "$certs/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$certs/front-proxy-client.crt" \
    --proxy-client-key-file "$certs/front-proxy-client.key" \
    --service-cluster-ip-range "$service_cidr" \
    --kubelet-client-certificate "$certs/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$certs/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$certs/sa.pub" \
    --service-account-signing-key-file "$certs/sa.key" \
    --allow-privileged=true \
    "${endpoint_flags[@]}" \
    --cert-dir "$work/apiserver-certs" \
    --profiling=false --v=1
  if wait_for kube-apiserver "kube-apiserver /readyz on $server" \
    "$bin/kubectl" --kubeconfig "$work/kubeconfig" get --raw /readyz; then
    break
  fi
  if [ "$attempt" -lt 3 ] && port_in_use_failure kube-apiserver; then
    log "API server port taken, retrying with another"
    continue
  fi
  exit 1
done
log "kube-apiserver ready on $server"

# ---------------------------------------------------------------- kube-controller-manager
kubeconfig_for system:kube-controller-manager kube-controller-manager "$server" "$work/kube-controller-manager.kubeconfig"
for attempt in 1 2 3; do
  read -r kcm_port < <(free_ports 1)
  # --use-service-account-credentials: each controller acts as its own service
  # account, as in kubeadm clusters, so RBAC mistakes show up here too.
  spawn kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$work/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$work/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$work/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --cert-dir "$work/kcm-certs" \
    --controllers '*' --use-service-account-credentials=true \
    --service-account-private-key-file "$certs/sa.key" --root-ca-file "$certs/ca.crt" \
    --cluster-signing-cert-file "$certs/ca.crt" --cluster-signing-key-file "$certs/ca.key" \
    --service-cluster-ip-range "$service_cidr" \
    --leader-elect=false --profiling=false --v=1
  if wait_for kube-controller-manager "kube-controller-manager /healthz on 127.0.0.1:$kcm_port" \
    curl -skf "https://127.0.0.1:$kcm_port/healthz"; then
    break
  fi
  if [ "$attempt" -lt 3 ] && port_in_use_failure kube-controller-manager; then
    log "controller manager port taken, retrying with another"
    continue
  fi
  exit 1
done
# Pods cannot be created in a namespace before its `default` ServiceAccount
# exists (ServiceAccount admission); the controller manager makes it. Waiting
# here means a test can create workloads as soon as start.sh returns.
wait_for kube-controller-manager "the default ServiceAccount (controller manager working)" \
  "$bin/kubectl" --kubeconfig "$work/kubeconfig" -n default get serviceaccount default
log "kube-controller-manager ready on 127.0.0.1:$kcm_port"

# ---------------------------------------------------------------- with a node: scheduler, node
if [ "$with_node" = 1 ]; then
  [ -x "$bin/kube-scheduler" ] || { log "$bin/kube-scheduler is missing; run e2e/k8s/build.sh"; exit 1; }
  kubeconfig_for system:kube-scheduler kube-scheduler "$server" "$work/kube-scheduler.kubeconfig"
  for attempt in 1 2 3; do
    read -r sched_port < <(free_ports 1)
    spawn kube-scheduler "$bin/kube-scheduler" \
      --kubeconfig "$work/kube-scheduler.kubeconfig" \
      --authentication-kubeconfig "$work/kube-scheduler.kubeconfig" \
      --authorization-kubeconfig "$work/kube-scheduler.kubeconfig" \
      --bind-address 127.0.0.1 --secure-port "$sched_port" \
      --leader-elect=false --profiling=false --v=1
    if wait_for kube-scheduler "kube-scheduler /healthz on 127.0.0.1:$sched_port" \
      curl -skf "https://127.0.0.1:$sched_port/healthz"; then
      break
    fi
    if [ "$attempt" -lt 3 ] && port_in_use_failure kube-scheduler; then
      log "scheduler port taken, retrying with another"
      continue
    fi
    exit 1
  done
  log "kube-scheduler ready on 127.0.0.1:$sched_port"
  kubeconfig_for system:kube-proxy kube-proxy "$server" "$work/kube-proxy.kubeconfig"
  KVSTORE_K8S_BIN="$bin" KVSTORE_K8S_SERVER="$server" KVSTORE_K8S_START_TIMEOUT="$timeout" \
    bash "$here/node.sh" up "$work"
fi

q() { printf '%q' "$1"; }
# Written whole and then renamed: a reader never sees half a file.
cat >"$work/env.tmp" <<EOF
# Written by e2e/k8s/start.sh; source it: . $(q "$work/env")
export KUBECONFIG=$(q "$work/kubeconfig")
export PATH=$(q "$bin"):"\$PATH"
export KVSTORE_K8S_BIN=$(q "$bin")
export KVSTORE_K8S_SERVER=$(q "$server")
export KVSTORE_K8S_ADMIN_TOKEN=$(q "$admin_token")
export KVSTORE_K8S_CA=$(q "$certs/ca.crt")
export HELM_CACHE_HOME=$(q "$work/helm/cache")
export HELM_CONFIG_HOME=$(q "$work/helm/config")
export HELM_DATA_HOME=$(q "$work/helm/data")
export KVSTORE_K8S_ETCD=http://127.0.0.1:$etcd_client_port
export KVSTORE_K8S_ETCD_PID=$(cat "$pids/etcd.pid")
export KVSTORE_K8S_APISERVER_PID=$(cat "$pids/kube-apiserver.pid")
export KVSTORE_K8S_CONTROLLER_MANAGER_PID=$(cat "$pids/kube-controller-manager.pid")
EOF
if [ "$with_node" = 1 ]; then cat "$work/node.env" >>"$work/env.tmp"; fi
mv -f "$work/env.tmp" "$work/env"
started=1
log "control plane up: $server (KUBECONFIG=$work/kubeconfig; logs in $logs)"
echo "$work/kubeconfig"
