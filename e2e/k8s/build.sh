#!/usr/bin/env bash
# Builds a real Kubernetes control plane for the e2e tests from Go modules:
# kube-apiserver, kube-controller-manager and kubectl (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3), helm (helm.sh/helm/v3) and helm-docs; then the node side:
# kubelet, kube-proxy and kube-scheduler (k8s.io/kubernetes), a minimal coredns
# (coredns/main.go), crictl (sigs.k8s.io/cri-tools) and the storage provisioner
# (github.com/rancher/local-path-provisioner). There is no Docker on
# our machines, so kind cannot run; these are the same binaries kind would run.
#
# The binaries go to a cache folder outside the clone, keyed by the Kubernetes
# version, so a fresh clone on the same machine (and every CI run after the
# first) reuses them. A binary is rebuilt only when its version stamp differs.
# Prints the bin folder on stdout as its last line; progress goes to stderr.
#
# Usage: e2e/k8s/build.sh            (honours XDG_CACHE_HOME and KVSTORE_K8S_CACHE)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

command -v go >/dev/null 2>&1 || {
  echo "k8s-build: the go command is not on PATH; install Go $(sed -n 's/^go //p' "$here"/go.mod "$here"/*/go.mod | sort -V | tail -1) or newer" >&2
  exit 1
}
# The versions are the ones go.mod, helm/go.mod, coredns/go.mod and
# cri-tools/go.mod pin: one source of truth.
modversion() { (cd "$1" && go list -m -f '{{.Version}}' "$2"); }
KUBERNETES_VERSION="$(modversion "$here" k8s.io/kubernetes)"
ETCD_VERSION="$(modversion "$here" go.etcd.io/etcd/server/v3)"
HELM_VERSION="$(modversion "$here/helm" helm.sh/helm/v3)"
HELM_DOCS_VERSION="$(modversion "$here/helm-docs" github.com/norwoodj/helm-docs)"
COREDNS_VERSION="$(modversion "$here/coredns" github.com/coredns/coredns)"
CRICTL_VERSION="$(modversion "$here/cri-tools" sigs.k8s.io/cri-tools)"
LOCAL_PATH_VERSION="$(modversion "$here/local-path" github.com/rancher/local-path-provisioner)"

cache_root="${KVSTORE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvstore-k8s}"
bin="$cache_root/$KUBERNETES_VERSION/bin"
mkdir -p "$bin"

log() { echo "k8s-build: $*" >&2; }

# Two test runs (or two clones) may build at once: one builds, the other waits
# and then finds the binaries there.
exec 9>"$cache_root/$KUBERNETES_VERSION/.build.lock"
if ! flock -n 9; then
  log "another build holds $cache_root/$KUBERNETES_VERSION/.build.lock; waiting"
  flock 9
fi

# The module's go.sum is complete, so nothing here needs to change go.mod: a build
# that would have to is a mistake to report, not to paper over. buildvcs is off
# because the tools come from other modules and the clone's git state is irrelevant.
export GOFLAGS="-mod=readonly -buildvcs=false"
# Static binaries, as the Kubernetes release build makes them; no C toolchain needed.
export CGO_ENABLED=0

k8s_minor="${KUBERNETES_VERSION#v1.}"
k8s_minor="${k8s_minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# Without these the binaries report v0.0.0-master, and helm and kubectl then
# see a server too old for any chart's kubeVersion constraint.
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

helm_k8s="$(modversion "$here/helm" k8s.io/client-go)" # v0.MINOR.PATCH
helm_k8s_minor="${helm_k8s#v0.}"
helm_k8s_minor="${helm_k8s_minor%%.*}"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_k8s_minor"
done

# coredns is our own main package: its plugin list is part of its version.
coredns_stamp="$COREDNS_VERSION+$(sha256sum "$here/coredns/main.go" | cut -c1-12)"
# crictl reports pkg/version.Version, without the v, as its release build sets it.
crictl_ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}"

# build NAME STAMP MODULE_DIR LDFLAGS PACKAGE
build() {
  local name="$1" stamp="$2" dir="$3" ldflags="$4" pkg="$5"
  if [ -x "$bin/$name" ] && [ "$(cat "$bin/.$name.version" 2>/dev/null)" = "$stamp" ]; then
    log "$name $stamp: cached"
    return
  fi
  log "$name $stamp: building $pkg (this can take many minutes on a shared 2-core machine)"
  local start=$SECONDS
  # Build to a temporary name and rename: a killed build never leaves a broken binary.
  (cd "$dir" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg")
  mv -f "$bin/.$name.tmp" "$bin/$name"
  echo "$stamp" >"$bin/.$name.version"
  log "$name: built in $((SECONDS - start)) s"
}

build kube-apiserver "$KUBERNETES_VERSION" "$here" "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager "$KUBERNETES_VERSION" "$here" "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl "$KUBERNETES_VERSION" "$here" "$k8s_ldflags" k8s.io/kubernetes/cmd/kubectl
build etcd "$ETCD_VERSION" "$here" "-s -w" go.etcd.io/etcd/server/v3
build helm "$HELM_VERSION" "$here/helm" "$helm_ldflags" helm.sh/helm/v3/cmd/helm
# The chart README from values.yaml comments (npm run chart:docs; helm.test.ts checks its drift).
build helm-docs "$HELM_DOCS_VERSION" "$here/helm-docs" "-s -w" github.com/norwoodj/helm-docs/cmd/helm-docs
# The node side, for the suites that run a real kubelet. Upstream links the kubelet
# against libc; the only cgo in its dependencies is the standard library's (net's
# resolver, os/user), so the static one behaves the same here.
build kubelet "$KUBERNETES_VERSION" "$here" "$k8s_ldflags" k8s.io/kubernetes/cmd/kubelet
build kube-proxy "$KUBERNETES_VERSION" "$here" "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-proxy
build kube-scheduler "$KUBERNETES_VERSION" "$here" "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-scheduler
build coredns "$coredns_stamp" "$here/coredns" "-s -w" kvstore.test/e2e/k8s/coredns
build crictl "$CRICTL_VERSION" "$here/cri-tools" "$crictl_ldflags" sigs.k8s.io/cri-tools/cmd/crictl
build local-path-provisioner "$LOCAL_PATH_VERSION" "$here/local-path" "-s -w" github.com/rancher/local-path-provisioner

echo "$bin"
