#!/usr/bin/env bash
# Installs what `cargo bench --bench command` compares runyard's progress reporting
# against: MLflow (its tracking server and client) into the virtual environment at
# <target>/bench-venv, next to the torch that scripts/setup-torch.sh installs there
# (run first). Idempotent: a venv whose mlflow has the pinned version is left alone.
#
# MLflow is for this bench only; the project itself never imports it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/venv.sh
. "$root/scripts/lib/venv.sh"
mlflow_version="3.17.2"

fail() {
  echo "setup-mlflow: $*" >&2
  exit 1
}

has() {
  [ -x "$python" ] && "$python" -W ignore -c "
import sys
import $1
sys.exit($1.__version__.split('+')[0] != '$2')" >/dev/null 2>&1
}

bash "$root/scripts/setup-torch.sh"

if ! has mlflow "$mlflow_version"; then
  echo "setup-mlflow: installing mlflow==$mlflow_version into $venv (first run only)" >&2
  started=$SECONDS
  "$python" -m pip install --no-cache-dir "mlflow==$mlflow_version" >&2 \
    || fail "pip could not install mlflow==$mlflow_version into $venv"
  has mlflow "$mlflow_version" || fail "mlflow==$mlflow_version does not import from $venv"
  echo "setup-mlflow: mlflow installed in $((SECONDS - started)) s" >&2
fi

[ -x "$venv/bin/mlflow" ] || fail "$venv/bin/mlflow is missing after the install"
