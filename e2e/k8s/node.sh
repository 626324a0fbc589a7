#!/usr/bin/env bash
# One real Kubernetes node on this machine, for start.sh with KVSTORE_K8S_NODE=1:
# containerd (Debian's, with its CRI plugin) and runc, the CNI bridge plugin, the
# kubelet and kube-proxy built by build.sh, and the cluster add-ons every real
# cluster has (CoreDNS, a storage provisioner with a default StorageClass).
#
# Everything networked runs inside a network namespace of its own (kvs-SLOT),
# linked to the host by one veth pair. So kube-proxy's iptables rules, the pod
# bridge, ip_forward and bridge netfilter are that namespace's, never the host's;
# two nodes (a test run beside `npm run k8s:up`) never share a rule or a port;
# and deleting the namespace removes every interface and rule at once. The host
# gets routes to the pod and Service ranges through the link, so it reaches a
# ClusterIP as any node of a cluster does. Mounts, cgroups and processes are
# the host's; `down` removes every one it made.
#
# Addresses (198.18.0.0/15 is reserved for tests; SLOT 0-63):
#   link      198.18.SLOT.0/24       host end .1 (the API server listens there), node end .2
#   pods      198.18.(64+SLOT).0/24  on the bridge cni0 in the namespace
#   Services  198.18.(128+SLOT).0/24 .1 the `kubernetes` Service, .10 cluster DNS
#
# Usage (start.sh and stop.sh call these; WORK_DIR is theirs):
#   node.sh net-up WORK_DIR   claim a slot (KVSTORE_K8S_SLOT or the first free), make the
#                             namespace, link and routes; write WORK_DIR/node.env
#   node.sh up WORK_DIR       containerd, images, kubelet, kube-proxy, add-ons; wait until Ready
#   node.sh down WORK_DIR     pods, processes, mounts, cgroups, namespace; safe to call twice
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:?usage: node.sh net-up|up|down WORK_DIR}"
work_arg="${2:?usage: node.sh net-up|up|down WORK_DIR}"
mkdir -p "$work_arg"
work="$(cd "$work_arg" && pwd)"
timeout="${KVSTORE_K8S_START_TIMEOUT:-300}"
node_name=kvstore-node

log() { echo "k8s-node: $*" >&2; }
die() {
  log "$*"
  exit 1
}

[ "$(id -u)" = 0 ] || die "a node needs root (network namespaces, mounts, cgroups)"
# set -e stops at the first failing command: say which, or a failed `down` is a bare exit status.
trap 'log "$cmd: failed at line $LINENO (exit $?): $BASH_COMMAND"' ERR

netns_exists() { [ -e "/run/netns/$1" ]; }

# ---------------------------------------------------------------- net-up
net_up() {
  if [ -f "$work/node.env" ]; then
    # shellcheck source=/dev/null
    . "$work/node.env"
    if netns_exists "$KVSTORE_K8S_NETNS"; then
      log "reusing $KVSTORE_K8S_NETNS (slot $KVSTORE_K8S_SLOT)"
      return
    fi
  fi
  local slot="" s
  mkdir -p /run/netns
  if [ -n "${KVSTORE_K8S_SLOT:-}" ]; then
    [[ "$KVSTORE_K8S_SLOT" =~ ^[0-9]+$ ]] && [ "$KVSTORE_K8S_SLOT" -le 63 ] ||
      die "KVSTORE_K8S_SLOT must be 0-63, not '$KVSTORE_K8S_SLOT'"
    ip netns add "kvs-$KVSTORE_K8S_SLOT" 2>/dev/null ||
      die "slot $KVSTORE_K8S_SLOT is taken (network namespace kvs-$KVSTORE_K8S_SLOT exists; node.sh down its work dir)"
    slot="$KVSTORE_K8S_SLOT"
  else
    # `ip netns add` fails when the name exists: the namespace itself is the claim, so two
    # runs starting at once take different slots. Slot 0 is left to `npm run k8s:up`.
    for s in $(seq 1 63); do
      if ip netns add "kvs-$s" 2>/dev/null; then
        slot="$s"
        break
      fi
    done
    [ -n "$slot" ] || die "no free slot: network namespaces kvs-1 to kvs-63 all exist"
  fi
  local ns="kvs-$slot" host_if="kvs${slot}h" node_if="kvs${slot}n"
  local link="198.18.$slot" pods="198.18.$((64 + slot))" svcs="198.18.$((128 + slot))"
  # Written first: a failure below still leaves `down` enough to undo what was made.
  cat >"$work/node.env" <<EOF
export KVSTORE_K8S_SLOT=$slot
export KVSTORE_K8S_NETNS=$ns
export KVSTORE_K8S_NODE_NAME=$node_name
export KVSTORE_K8S_HOST_IP=$link.1
export KVSTORE_K8S_NODE_IP=$link.2
export KVSTORE_K8S_POD_CIDR=$pods.0/24
export KVSTORE_K8S_SERVICE_CIDR=$svcs.0/24
export KVSTORE_K8S_KUBERNETES_IP=$svcs.1
export KVSTORE_K8S_DNS_IP=$svcs.10
export KVSTORE_K8S_CONTAINERD_SOCK=$work/node/containerd/containerd.sock
EOF
  ip link del "$host_if" 2>/dev/null || true
  ip link add "$host_if" type veth peer name "$node_if"
  ip link set "$node_if" netns "$ns"
  ip addr add "$link.1/24" dev "$host_if"
  ip link set "$host_if" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$link.2/24" dev "$node_if"
  ip -n "$ns" link set "$node_if" up
  # Pods answer the host (the API server) through the link; nothing routes past the host,
  # whose ip_forward this never touches.
  ip -n "$ns" route add default via "$link.1"
  # These are the namespace's own settings: kube-proxy needs forwarding, and bridged
  # pod-to-pod traffic must pass its iptables rules for a Service backed by a pod on the
  # same bridge to answer.
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
    net.ipv4.conf.all.route_localnet=1
  ip route add "$pods.0/24" via "$link.2" dev "$host_if"
  ip route add "$svcs.0/24" via "$link.2" dev "$host_if"
  log "network namespace $ns: host $link.1, node $link.2, pods $pods.0/24, Services $svcs.0/24"
}

# ---------------------------------------------------------------- up
load_env() {
  [ -f "$work/node.env" ] || die "$work/node.env is missing: run net-up first"
  # shellcheck source=/dev/null
  . "$work/node.env"
  node_dir="$work/node"
  sock="$KVSTORE_K8S_CONTAINERD_SOCK"
  cgroup_root="/kvstore-$KVSTORE_K8S_SLOT"
}

# spawn NAME COMMAND...: as start.sh's, but inside the node's network namespace. nsenter
# enters the namespace only (not `ip netns exec`, which also makes a mount namespace):
# containerd, the kubelet and the shims must see each other's mounts.
spawn_in_node() {
  local name="$1"
  shift
  setsid nsenter --net="/run/netns/$KVSTORE_K8S_NETNS" "$@" </dev/null >>"$work/logs/$name.log" 2>&1 &
  echo $! >"$work/pids/$name.pid"
}

wait_until() {
  local name="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$name" ] && ! kill -0 "$(cat "$work/pids/$name.pid" 2>/dev/null)" 2>/dev/null; then
      log "$name exited while waiting for $what; last lines of its log:"
      tail -n 30 "$work/logs/$name.log" >&2 || true
      return 2
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

certs="$work/certs"
# shellcheck source=certs.sh
. "$here/certs.sh"

kubectl_() { "$KVSTORE_K8S_BIN/kubectl" --kubeconfig "$work/kubeconfig" "$@"; }

node_up() {
  load_env
  local bin="${KVSTORE_K8S_BIN:?KVSTORE_K8S_BIN is not set (start.sh sets it)}"
  local server="${KVSTORE_K8S_SERVER:?KVSTORE_K8S_SERVER is not set (start.sh sets it)}"
  for b in kubelet kube-proxy; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing; run e2e/k8s/build.sh"
  done
  for b in containerd runc nsenter iptables conntrack; do
    command -v "$b" >/dev/null 2>&1 || die "$b is not on PATH (Debian: containerd runc util-linux iptables conntrack)"
  done
  local cni_bin=/usr/lib/cni
  [ -x "$cni_bin/bridge" ] || die "$cni_bin/bridge is missing (Debian: containernetworking-plugins)"
  mkdir -p "$node_dir"/{containerd,cni/net.d,cni/ipam,kubelet,pod-logs,volumes} "$work/logs" "$work/pids"

  # Images first: building our image can take minutes, and nothing waits on it yet.
  KVSTORE_COREDNS_BIN="$bin/coredns" KVSTORE_LOCAL_PATH_BIN="$bin/local-path-provisioner" \
    bash "$here/images.sh" build >/dev/null

  # ---- containerd
  if ! kill -0 "$(cat "$work/pids/containerd.pid" 2>/dev/null)" 2>/dev/null; then
    cat >"$node_dir/containerd/config.toml" <<EOF
# Written by e2e/k8s/node.sh: a containerd of this node's own (root, state, socket).
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$sock"
[ttrpc]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  # Made locally (images.sh): no registry is reachable here.
  sandbox_image = "localhost/kvstore-pause:1"
  # This VM withholds CAP_SYS_RESOURCE: a negative oom_score_adj is refused.
  restrict_oom_score_adj = true
  disable_apparmor = true
  # Pod network namespaces under state/, so down can find and unmount them.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$node_dir/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$node_dir/cni/net.d"
EOF
    spawn_in_node containerd containerd --config "$node_dir/containerd/config.toml"
    wait_until containerd "containerd on $sock" ctr --address "$sock" version
    log "containerd ready on $sock"
  fi
  bash "$here/images.sh" import "$sock" >&2

  # ---- CNI: one bridge for the node's pods
  cat >"$node_dir/cni/net.d/10-kvstore.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kvstore-$KVSTORE_K8S_SLOT",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$KVSTORE_K8S_POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$node_dir/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF

  # ---- kubelet
  local client_ext="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
  # The Node authorizer knows a kubelet by this name and group.
  [ -f "$certs/kubelet.crt" ] || sign kubelet "/O=system:nodes/CN=system:node:$node_name" "$client_ext"
  [ -f "$certs/kubelet-serving.crt" ] || sign kubelet-serving "/CN=$node_name" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$KVSTORE_K8S_NODE_IP,DNS:$node_name"
  local data
  data() { base64 -w0 <"$1"; }
  cat >"$node_dir/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: kvstore-e2e
    cluster: { server: "$server", certificate-authority-data: $(data "$work/certs/ca.crt") }
users:
  - name: kubelet
    user: { client-certificate-data: $(data "$work/certs/kubelet.crt"), client-key-data: $(data "$work/certs/kubelet.key") }
contexts:
  - name: kvstore-e2e
    context: { cluster: kvstore-e2e, user: kubelet }
current-context: kvstore-e2e
EOF
  chmod 600 "$node_dir/kubelet.kubeconfig"
  # Pods with dnsPolicy Default get this; the cluster's DNS does not forward anywhere.
  echo "options ndots:1" >"$node_dir/resolv.conf"
  cat >"$node_dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1, which recent kubelets refuse unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
# Pods of this node under a cgroup of its own, so two nodes on one machine never share one.
cgroupRoot: $cgroup_root
containerRuntimeEndpoint: unix://$sock
address: $KVSTORE_K8S_NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $work/certs/kubelet-serving.crt
tlsPrivateKeyFile: $work/certs/kubelet-serving.key
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: false }
  x509: { clientCAFile: $work/certs/ca.crt }
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
clusterDNS: [$KVSTORE_K8S_DNS_IP]
resolvConf: $node_dir/resolv.conf
podLogsDir: $node_dir/pod-logs
# Its default is a folder of the host's (/usr/libexec/kubernetes/...).
volumePluginDir: $node_dir/kubelet-plugins
failSwapOn: false
# Images are made here and cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The disk is shared with everything else on the machine: evict only when it is truly full.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
serializeImagePulls: false
rotateCertificates: false
maxPods: 60
EOF
  # The kubelet wants its cgroupRoot to exist in every hierarchy (cgroup v1: one per controller).
  local controller
  for controller in /sys/fs/cgroup/*/; do
    [ -f "$controller/cgroup.procs" ] && mkdir -p "$controller${cgroup_root#/}"
  done
  if ! kill -0 "$(cat "$work/pids/kubelet.pid" 2>/dev/null)" 2>/dev/null; then
    spawn_in_node kubelet "$bin/kubelet" --config "$node_dir/kubelet.yaml" \
      --kubeconfig "$node_dir/kubelet.kubeconfig" --root-dir "$node_dir/kubelet" \
      --cert-dir "$node_dir/kubelet/pki" --hostname-override "$node_name" \
      --node-ip "$KVSTORE_K8S_NODE_IP" --v=1
  fi

  # ---- kube-proxy
  cat >"$node_dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $work/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: $node_name
clusterCIDR: $KVSTORE_K8S_POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$KVSTORE_K8S_NODE_IP/32]
# nf_conntrack_max and its timeouts are the whole machine's settings, not the namespace's: leave them.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  if ! kill -0 "$(cat "$work/pids/kube-proxy.pid" 2>/dev/null)" 2>/dev/null; then
    spawn_in_node kube-proxy "$bin/kube-proxy" --config "$node_dir/kube-proxy.yaml" --v=1
  fi

  node_ready() {
    [ "$(kubectl_ get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
  }
  wait_until kubelet "node $node_name Ready" node_ready
  log "node $node_name Ready at $KVSTORE_K8S_NODE_IP"

  # ---- add-ons
  local lp_dir="$node_dir/volumes"
  # The add-ons' images by the names images.sh gave them (their tags follow the Go modules' versions).
  local manifest coredns_image provisioner_image
  manifest="$(bash "$here/images.sh" list)"
  coredns_image="$(awk '$1 ~ /^localhost\/kvstore-coredns:/ { print $1 }' <<<"$manifest" | tail -n 1)"
  provisioner_image="$(awk '$1 ~ /^localhost\/kvstore-local-path-provisioner:/ { print $1 }' <<<"$manifest" | tail -n 1)"
  [ -n "$coredns_image" ] && [ -n "$provisioner_image" ] ||
    die "images.sh built no coredns or local-path-provisioner image (see its log above)"
  local subst=(-e "s|@DNS_IP@|$KVSTORE_K8S_DNS_IP|g" -e "s|@VOLUME_DIR@|$lp_dir|g"
    -e "s|@COREDNS_IMAGE@|$coredns_image|g" -e "s|@PROVISIONER_IMAGE@|$provisioner_image|g"
    -e "s|@HELPER_IMAGE@|localhost/kvstore-redis:7|g")
  for f in "$here"/addons/*.yaml; do
    sed "${subst[@]}" "$f" | kubectl_ apply -f - >/dev/null
  done
  wait_until "" "CoreDNS and the storage provisioner rolled out" \
    kubectl_ -n kube-system rollout status deployment/coredns deployment/local-path-provisioner --timeout 5s
  log "add-ons ready: CoreDNS at $KVSTORE_K8S_DNS_IP, StorageClass standard (volumes under $lp_dir)"
}

# ---------------------------------------------------------------- down
# Kills what is left of this node's pods: every process in its cgroups.
kill_pod_processes() {
  local d procs
  for d in /sys/fs/cgroup/*"$cgroup_root"; do
    [ -d "$d" ] || continue
    # Cgroups vanish while find walks them (the runtime is cleaning up too): not a failure.
    procs="$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)"
    if [ -n "$procs" ]; then kill -KILL $procs 2>/dev/null || true; fi
  done
}

remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*"$cgroup_root"; do
    [ -d "$d" ] || continue
    # Deepest first: a cgroup with children cannot be removed.
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    if [ -d "$d" ]; then log "cgroup $d is still there"; fi
  done
}

unmount_all_under() {
  local m
  # Longest path first, so a mount inside another goes before it.
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done < <(awk -v w="$1/" 'index($5, w) == 1 { print length($5), $5 }' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-)
}

stop_pid() { # NAME
  local f="$work/pids/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$work"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

node_down() {
  [ -f "$work/node.env" ] || return 0
  load_env
  local down_status=0
  # The kubelet first, so it restarts nothing; then the pods through the runtime, which
  # tears their networks down; whatever is left is killed through its cgroup.
  stop_pid kubelet
  stop_pid kube-proxy
  if [ -S "$sock" ] && command -v crictl >/dev/null 2>&1; then
    local crictl=(crictl --runtime-endpoint "unix://$sock" --timeout 10s)
    "${crictl[@]}" stopp $("${crictl[@]}" pods -q 2>/dev/null) >/dev/null 2>&1 || true
    "${crictl[@]}" rmp -f $("${crictl[@]}" pods -q 2>/dev/null) >/dev/null 2>&1 || true
  fi
  kill_pod_processes
  stop_pid containerd
  # The shims outlive containerd; each names this node's socket in its arguments.
  local shims
  shims="$(pgrep -f -- "-address $sock" || true)"
  if [ -n "$shims" ]; then kill -KILL $shims 2>/dev/null || true; fi
  kill_pod_processes
  sleep 0.2
  unmount_all_under "$work"
  # A sandbox the runtime was still setting up as it stopped can mount after the pass above.
  if grep -qF " $work/" /proc/self/mountinfo; then
    sleep 1
    kill_pod_processes
    unmount_all_under "$work"
  fi
  if grep -qF " $work/" /proc/self/mountinfo; then
    log "mounts remain under $work:"
    grep -F " $work/" /proc/self/mountinfo >&2
    down_status=1
  fi
  remove_cgroups
  # The kubelet links every container's log into /var/log/containers (a fixed path); drop ours.
  local link
  for link in /var/log/containers/*.log; do
    [ -L "$link" ] || continue
    case "$(readlink "$link")" in "$work"/*) rm -f "$link" ;; esac
  done
  if netns_exists "$KVSTORE_K8S_NETNS"; then
    # Deleting the namespace deletes the veth pair (and so the host's routes through it),
    # the bridge and every iptables rule kube-proxy wrote.
    ip netns del "$KVSTORE_K8S_NETNS" || log "could not delete network namespace $KVSTORE_K8S_NETNS"
  fi
  ip link del "kvs${KVSTORE_K8S_SLOT}h" 2>/dev/null || true
  if [ "$down_status" = 0 ]; then
    rm -f "$work/node.env"
    log "node down (slot $KVSTORE_K8S_SLOT)"
  fi
  return "$down_status"
}

case "$cmd" in
  net-up) net_up ;;
  up) node_up ;;
  down) node_down ;;
  *) die "unknown command '$cmd' (net-up, up, down)" ;;
esac
