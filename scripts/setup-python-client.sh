#!/usr/bin/env bash
# Installs the Python client package (`pip install ./python[test]`: runyard with httpx
# and tqdm, plus pytest and pandas for its tests) into the virtual environment at
# <target>/py-venv, for tests/api/python_client.rs and benches/python_client.rs.
# Idempotent: the venv is left alone while it imports everything and was installed
# from the package's present sources (a stamp holds their SHA-256); otherwise the
# package is installed again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/venv.sh
. "$root/scripts/lib/venv.sh"
venv="$target/py-venv"
python="$venv/bin/python"
stamp="$venv/.runyard-sources.sha256"

fail() {
  echo "setup-python-client: $*" >&2
  exit 1
}

sources_digest() {
  (cd "$root/python" && find pyproject.toml README.md runyard_report.py runyard -type f \
    ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

imports() {
  # From outside python/, so the installed copy is the one imported.
  [ -x "$python" ] && (cd / && "$python" -c "
import httpx, tqdm, pandas, pytest, runyard, runyard_report
from runyard import Client, report
import pathlib, sys
sys.exit(not (pathlib.Path(runyard.__file__).parent / 'py.typed').is_file())") >/dev/null 2>&1
}

digest="$(sources_digest)"
if imports && [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ]; then
  exit 0
fi

echo "setup-python-client: installing ./python[test] into $venv" >&2
started=$SECONDS
[ -x "$python" ] || python3 -m venv "$venv" || fail "python3 -m venv $venv failed (install python3-venv)"
"$python" -m pip install -q --upgrade pip >&2 || true
"$python" -m pip install -q --force-reinstall --no-deps "$root/python" >&2 \
  && "$python" -m pip install -q "$root/python[test]" >&2 \
  || fail "pip could not install $root/python[test] into $venv"
# setuptools builds in the source tree; its leftovers would go into the next build.
rm -rf "$root/python/build" "$root/python/runyard.egg-info"
imports || fail "runyard, httpx, tqdm, pandas or pytest does not import from $venv (or py.typed is missing)"
echo "$digest" >"$stamp"
echo "setup-python-client: installed in $((SECONDS - started)) s" >&2
