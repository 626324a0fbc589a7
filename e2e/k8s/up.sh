#!/usr/bin/env bash
# `npm run k8s:up`: kvstore on a one-node Kubernetes made of real parts on this machine
# (start.sh with a node: etcd, API server, controller manager, scheduler, containerd,
# kubelet, kube-proxy, CoreDNS, a storage provisioner), our image built from the
# repository's Dockerfile (images.sh), the chart installed with the operator as its
# Deployment, and the example KVCluster applied. Returns once the KVCluster is Ready,
# printing the KUBECONFIG and the gateway Service's URL. Run again, it reuses the
# running cluster: it rebuilds the image if the sources changed, upgrades the release and
# applies the example again. `npm run k8s:down` removes it all.
#
# Needs root, Go, and Debian's containerd, runc, containernetworking-plugins, buildah,
# mmdebstrap, iptables and conntrack (e2e/ensure-test-tools.sh installs them).
# Environment: KVSTORE_K8S_DIR (default .kvstore-k8s in the repository), KVSTORE_K8S_SLOT
# (default 0: 198.18.0.0/24, pods 198.18.64.0/24, Services 198.18.128.0/24; node.sh).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${KVSTORE_K8S_DIR:-$repo/.kvstore-k8s}"
ns=kvstore
release_ns=kvstore-system
log() { echo "k8s-up: $*" >&2; }

mkdir -p "$work"
bin="$(bash "$here/build.sh" | tail -n 1)"
alive() { [ -f "$work/env" ] && kill -0 "$(cat "$work/pids/kube-apiserver.pid" 2>/dev/null)" 2>/dev/null; }
if alive; then
  log "reusing the cluster in $work"
  # shellcheck source=/dev/null
  . "$work/env"
  # The image may be stale: build what changed and load it.
  bash "$here/images.sh" build >&2
  bash "$here/images.sh" import "$KVSTORE_K8S_CONTAINERD_SOCK" >&2
else
  # A half-stopped earlier run (machine restarted, processes killed) is cleared first.
  bash "$here/stop.sh" "$work" >&2 || true
  KVSTORE_K8S_BIN="$bin" KVSTORE_K8S_NODE=1 KVSTORE_K8S_SLOT="${KVSTORE_K8S_SLOT:-0}" \
    bash "$here/start.sh" "$work" >/dev/null
  # shellcheck source=/dev/null
  . "$work/env"
fi

version="$(node -p "require('$repo/package.json').version")"
log "helm upgrade --install kvstore (operator image kvstore:$version)"
helm upgrade --install kvstore "$repo/charts/kvstore" --namespace "$release_ns" --create-namespace \
  --set image.pullPolicy=Never --wait --timeout 5m >&2
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" apply -f "$repo/charts/kvstore/examples/kvcluster.yaml" >&2
log "waiting for KVCluster demo to be Ready"
kubectl -n "$ns" wait kvcluster/demo --for=condition=Ready --timeout=10m >&2
ip="$(kubectl -n "$ns" get service demo -o jsonpath='{.spec.clusterIP}')"
port="$(kubectl -n "$ns" get service demo -o jsonpath='{.spec.ports[0].port}')"
cat <<OUT
export KUBECONFIG=$work/kubeconfig
export PATH=$bin:\$PATH
# the gateway Service (admin key: kubectl -n $ns get secret demo-admin-token -o jsonpath='{.data.token}' | base64 -d)
export KVSTORE_URL=http://$ip:$port
OUT
