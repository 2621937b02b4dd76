#!/usr/bin/env bash
# The PyTorch side of the training-speed comparison: trains the MLP of
# `cargo bench --bench training` in PyTorch (benches/pytorch_mlp.py) with the
# parameters that bench wrote to <target>/bench-figures/training-params.json, and
# writes <target>/bench-figures/pytorch.json with
#   pytorch_train_samples_per_s  PyTorch's samples/s
#   tch_vs_pytorch_speed_ratio   runyard's runyard_train_samples_per_s / PyTorch's
# Run it right after the Rust bench, so both sides see the same machine.
#
# PyTorch is installed for this bench only, into a virtual environment at
# <target>/bench-venv (created on first use; about 5 GB, as the Linux wheel on PyPI
# is the CUDA build and pulls the nvidia-* wheels, though only the CPU is used: its
# `import torch` loads libtorch_cuda.so, which needs them all, so torch's own wheel
# without its dependencies does not import).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in
  /*) ;;
  *) target="$root/$target" ;;
esac
figures="$target/bench-figures"
params="$figures/training-params.json"
runyard="$figures/training.json"
venv="$target/bench-venv"
python="$venv/bin/python"
torch_version="2.13.0"

fail() {
  echo "bench-pytorch: $*" >&2
  exit 1
}

[ -f "$params" ] && [ -f "$runyard" ] \
  || fail "no $params or $runyard; run \`cargo bench --bench training\` first"

has_torch() {
  [ -x "$python" ] && "$python" -W ignore -c "
import sys, torch
sys.exit(torch.__version__.split('+')[0] != '$torch_version')" >/dev/null 2>&1
}

if ! has_torch; then
  echo "bench-pytorch: installing torch==$torch_version into $venv (first run only)" >&2
  started=$SECONDS
  python3 -m venv "$venv"
  "$python" -m pip install --no-cache-dir "torch==$torch_version" numpy >&2 \
    || fail "pip could not install torch==$torch_version into $venv (it needs about 5 GB)"
  has_torch || fail "torch==$torch_version does not import from $venv"
  echo "bench-pytorch: torch installed in $((SECONDS - started)) s, $(du -sh "$venv" | cut -f1) in $venv" >&2
fi

result="$("$python" -W ignore "$root/benches/pytorch_mlp.py" --params "$params")"
echo "bench-pytorch: $result" >&2

python3 - "$runyard" "$figures/pytorch.json" "$result" <<'PY'
import json
import sys

runyard_path, out_path, result = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with open(runyard_path) as f:
    runyard = json.load(f)["runyard_train_samples_per_s"]["value"]
pytorch = result["samples_per_s"]
figures = {
    "pytorch_train_samples_per_s": {"value": pytorch, "unit": "samples/s"},
    "tch_vs_pytorch_speed_ratio": {"value": runyard / pytorch, "unit": "x"},
}
with open(out_path, "w") as f:
    f.write(json.dumps(figures, indent=2, sort_keys=True) + "\n")
for name, figure in figures.items():
    print(f"{name}: {figure['value']:.4f} {figure['unit']}")
PY
