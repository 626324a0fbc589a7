#!/usr/bin/env bash
# The e2e suites start their own redis-server on free loopback ports, the
# network-cut fault case drops a node's traffic with iptables, and the
# observability suite runs its own prometheus (Debian package `prometheus`)
# against a local cluster. This makes sure all three exist; on a fresh
# Debian/Ubuntu machine as root it installs them. Then it builds the real
# Kubernetes control plane the operator suites run against (e2e/k8s/build.sh:
# once per machine into the user's cache, ~10 min; instant when cached).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build_k8s() { bash "$here/k8s/build.sh" >&2; }
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
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
  for svc in redis-server prometheus; do
    (service "$svc" stop || systemctl stop "$svc") >/dev/null 2>&1 || true
  done
  build_k8s
  exit 0
fi
echo "e2e: the tests need ${need[*]} on PATH (Debian/Ubuntu: sudo apt-get install ${need[*]});" >&2
echo "     the network-cut fault case also needs root to change iptables rules" >&2
exit 1
