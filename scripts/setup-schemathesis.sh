#!/usr/bin/env bash
# Installs schemathesis into <target>/st-venv for the OpenAPI conformance test
# (tests/api/schemathesis.rs): `st run <server>/api/v1/openapi.json -c all`. Idempotent:
# a venv with this version is left as it is. Where it cannot install (no python3 venv,
# no PyPI) it says so and exits 0: the test then fails naming what is missing when
# RUNYARD_REQUIRE_SCHEMATHESIS=1 (as `make test` sets it), and prints SKIPPED otherwise.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/target.sh
. "$root/scripts/lib/target.sh"
venv="$target/st-venv"
version="4.32.5"

if [ -x "$venv/bin/st" ] && [ "$("$venv/bin/st" --version 2>/dev/null)" = "st, version $version" ]; then
  exit 0
fi
python3 -m venv "$venv" || {
  echo "setup-schemathesis: python3 -m venv $venv failed (install python3-venv)" >&2
  exit 0
}
"$venv/bin/pip" install -q "schemathesis==$version" || {
  echo "setup-schemathesis: pip could not install schemathesis==$version into $venv" >&2
  exit 0
}
echo "setup-schemathesis: $("$venv/bin/st" --version) in $venv" >&2
