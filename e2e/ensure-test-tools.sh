#!/usr/bin/env bash
# The e2e suites start their own redis-server on free loopback ports, and the
# network-cut fault case drops a node's traffic with iptables. This makes sure
# both exist; on a fresh Debian/Ubuntu machine as root it installs them.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "e2e: installing ${need[*]} with apt-get" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # the redis package starts a system service we do not use; tests run their own servers
  (service redis-server stop || systemctl stop redis-server) >/dev/null 2>&1 || true
  exit 0
fi
echo "e2e: the tests need ${need[*]} on PATH (Debian/Ubuntu: sudo apt-get install ${need[*]});" >&2
echo "     the network-cut fault case also needs root to change iptables rules" >&2
exit 1
