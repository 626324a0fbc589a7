#!/usr/bin/env bash
# The e2e suites start their own redis-server on a free loopback port; this makes
# sure the binary exists. On a fresh Debian/Ubuntu machine as root it installs it.
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "e2e: redis-server not found; installing it with apt-get" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # the package starts a system service we do not use; tests run their own servers
  (service redis-server stop || systemctl stop redis-server) >/dev/null 2>&1 || true
  exit 0
fi
echo "e2e: the tests need redis-server on PATH (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)" >&2
exit 1
