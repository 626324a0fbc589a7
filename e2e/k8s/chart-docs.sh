#!/usr/bin/env bash
# Writes charts/kvstore/README.md from values.yaml, its comments and README.md.gotmpl with
# helm-docs (npm run chart:docs). Extra arguments go to helm-docs: --dry-run prints the README
# instead (e2e/k8s/helm.test.ts compares that with the committed file).
# helm-docs: $KVSTORE_HELM_DOCS if set (the binary build.sh caches), else `go tool` in
# e2e/k8s/helm-docs, which builds the version its go.mod pins.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
charts="$(cd "$here/../../charts" && pwd)"
flags=(--chart-search-root "$charts" --chart-to-generate "$charts/kvstore" --sort-values-order file
  --skip-version-footer --log-level warning)
if [ -n "${KVSTORE_HELM_DOCS:-}" ]; then
  exec "$KVSTORE_HELM_DOCS" "${flags[@]}" "$@"
fi
cd "$here/helm-docs"
exec go tool helm-docs "${flags[@]}" "$@"
