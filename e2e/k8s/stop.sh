#!/usr/bin/env bash
# Stops what start.sh started in WORK_DIR: SIGTERM, then SIGKILL after 10 s.
# Safe to call twice, or on a work dir whose start failed half way.
# Usage: e2e/k8s/stop.sh WORK_DIR
set -euo pipefail

work_arg="${1:?usage: stop.sh WORK_DIR}"
[ -d "$work_arg" ] || exit 0
work="$(cd "$work_arg" && pwd)"
pids="$work/pids"
# A node (start.sh with KVSTORE_K8S_NODE=1) goes first, while the API server still answers:
# its pods, processes, mounts, cgroups and network namespace.
node_status=0
if [ -f "$work/node.env" ]; then
  bash "$(dirname "$0")/node.sh" down "$work" || node_status=$?
  # The control plane is stopped all the same; the failure is reported by the exit status.
  [ "$node_status" = 0 ] || echo "k8s-stop: node.sh down failed (exit $node_status); see above" >&2
fi
[ -d "$pids" ] || exit "$node_status"

# A pid file may outlive its process, and the kernel may have given the number to
# someone else: only signal a process whose command line names this work dir
# (every process start.sh starts has it in an argument).
ours() {
  local pid="$1"
  # 2>/dev/null before the input: a process already gone has no /proc entry to open.
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$work"
}

# Clients first, etcd last, so the API server does not spend its shutdown
# reconnecting to a store that is already gone.
order=(owner-watch kube-scheduler kube-controller-manager kube-apiserver etcd)
for f in "$pids"/*.pid; do
  [ -e "$f" ] || continue
  name="$(basename "$f" .pid)"
  case " ${order[*]} " in *" $name "*) ;; *) order+=("$name") ;; esac
done

for name in "${order[@]}"; do
  f="$pids/$name.pid"
  [ -f "$f" ] || continue
  pid="$(cat "$f")"
  # The owner watcher runs this script itself when the test process is gone.
  if [ "$pid" = "$PPID" ] || [ "$pid" = "$$" ]; then
    rm -f "$f"
    continue
  fi
  if [ -n "$pid" ] && ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      ours "$pid" || break
      sleep 0.1
    done
    if ours "$pid"; then
      echo "k8s-stop: $name ($pid) ignored SIGTERM for 10 s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
done
rmdir "$pids" 2>/dev/null || true
exit "$node_status"
