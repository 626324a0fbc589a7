#!/usr/bin/env bash
# The e2e suites start their own redis-server on free loopback ports, the
# network-cut fault case drops a node's traffic with iptables, and the
# observability suite runs its own prometheus (Debian package `prometheus`)
# against a local cluster. The journey on a real node (e2e/k8s/node.sh) needs a
# container runtime (containerd, runc, the CNI plugins, conntrack) and builds
# its images daemonless (buildah, mmdebstrap). kvctl's zsh completion is
# checked in a real zsh, and the REST contract by Schemathesis (PyPI, in a
# virtualenv: python3 with venv). This makes sure all of them
# exist; on a fresh Debian/Ubuntu machine as root it installs them. Then it
# builds the real Kubernetes binaries (e2e/k8s/build.sh: once per machine into
# the user's cache; instant when cached) and the images (e2e/k8s/images.sh:
# again cached, by the content they are made from).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build_k8s() {
  bash "$here/contract/schemathesis.sh" --version >/dev/null
  bash "$here/k8s/build.sh" >&2
  bash "$here/k8s/images.sh" build >&2
}
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v zsh >/dev/null 2>&1 || need+=(zsh)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -eq 0 ]; then
  build_k8s
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "e2e: installing ${need[*]} with apt-get" >&2
  apt-get update -qq >/dev/null
  # no recommends: prometheus would pull in node-exporter, which the tests do not use
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # the redis and prometheus packages start system services we do not use; tests run their own servers
  for svc in redis-server prometheus containerd; do
    (service "$svc" stop || systemctl stop "$svc") >/dev/null 2>&1 || true
  done
  build_k8s
  exit 0
fi
echo "e2e: the tests need ${need[*]} on PATH (Debian/Ubuntu: sudo apt-get install ${need[*]});" >&2
echo "     the network-cut fault case also needs root to change iptables rules" >&2
exit 1
