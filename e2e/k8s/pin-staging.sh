#!/usr/bin/env bash
# Rewrites go.mod's replace block so that every k8s.io staging module that
# k8s.io/kubernetes@<version> replaces with "./staging/..." (a path that only
# exists inside the kubernetes repository, so the go command cannot use it from
# another module) points at the published v0.<minor>.<patch> of that module.
# Usage, to move to another Kubernetes release:
#   e2e/k8s/pin-staging.sh v1.37.2 && (cd e2e/k8s && go mod tidy)
set -euo pipefail
cd "$(dirname "$0")"
k8s="${1:?usage: pin-staging.sh v1.MINOR.PATCH}"
go mod edit -require "k8s.io/kubernetes@$k8s"
staging="v0.${k8s#v1.}"
gomod="$(go mod download -json "k8s.io/kubernetes@$k8s" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
mods="$(sed -n 's#^\s*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$gomod")"
[ -n "$mods" ] || { echo "no staging replaces found in $gomod" >&2; exit 1; }
for m in $mods; do
  go mod edit -replace "$m=$m@$staging"
done
echo "pinned $(echo "$mods" | wc -l) staging modules to $staging"
