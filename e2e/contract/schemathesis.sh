#!/usr/bin/env bash
# Runs Schemathesis (PyPI), pinned, from a virtualenv in the user's cache that this makes once.
# e2e/ensure-test-tools.sh calls it with --version so the install happens before the tests run.
set -euo pipefail
version=4.32.5
venv="${XDG_CACHE_HOME:-$HOME/.cache}/kvstore-tools/schemathesis-$version"
if [ ! -x "$venv/bin/schemathesis" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
fi
exec "$venv/bin/schemathesis" "$@"
