#!/usr/bin/env bash
# `npm run k8s:down`: stops what `npm run k8s:up` started and removes it: pods, the node's
# processes, mounts, cgroups and network namespace (with its interfaces, routes and
# iptables rules), the control plane, and the work dir with the volumes in it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${KVSTORE_K8S_DIR:-$repo/.kvstore-k8s}"
[ -d "$work" ] || {
  echo "k8s-down: nothing to stop ($work does not exist)" >&2
  exit 0
}
bash "$here/stop.sh" "$work"
# Nothing may be mounted under it any more: a mount still there would be deleted through.
if grep -qF " $work/" /proc/self/mountinfo; then
  echo "k8s-down: mounts remain under $work; not removing it:" >&2
  grep -F " $work/" /proc/self/mountinfo >&2
  exit 1
fi
rm -rf "$work"
echo "k8s-down: stopped and removed $work" >&2
