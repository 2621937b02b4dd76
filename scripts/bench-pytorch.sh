#!/usr/bin/env bash
# The PyTorch side of the training-speed comparison: trains the MLP of
# `cargo bench --bench training` in PyTorch (benches/pytorch_mlp.py) with the
# parameters that bench wrote to <target>/bench-figures/training-params.json, and
# writes <target>/bench-figures/pytorch.json with
#   pytorch_train_samples_per_s  PyTorch's samples/s
#   tch_vs_pytorch_speed_ratio   runyard's runyard_train_samples_per_s / PyTorch's
# Run it right after the Rust bench, so both sides see the same machine.
#
# PyTorch comes from the virtual environment at <target>/bench-venv that
# scripts/setup-torch.sh makes (the tests use it too).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/venv.sh
. "$root/scripts/lib/venv.sh"
figures="$target/bench-figures"
params="$figures/training-params.json"
runyard="$figures/training.json"

fail() {
  echo "bench-pytorch: $*" >&2
  exit 1
}

[ -f "$params" ] && [ -f "$runyard" ] \
  || fail "no $params or $runyard; run \`cargo bench --bench training\` first"

bash "$root/scripts/setup-torch.sh"

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
