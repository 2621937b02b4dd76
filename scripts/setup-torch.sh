#!/usr/bin/env bash
# Makes the one virtual environment with PyTorch that the tests and the benchmarks
# share, at <target>/bench-venv: torch 2.13.0 from the wheel scripts/setup-libtorch.sh
# already downloaded into .libtorch-wheels/ (from PyPI when it is not there), and
# numpy. Its dependencies come from the package registry: the Linux wheel is the CUDA
# build, whose `import torch` loads libtorch_cuda.so and so needs the nvidia-* wheels
# (about 5 GB in all) though only the CPU is used. Idempotent: a venv whose torch has
# the pinned version is left alone.
#
# The ranks tests (tests/api/ranks.rs) train with it through torch.distributed; the
# command, ddp and training benches run it too.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/venv.sh
. "$root/scripts/lib/venv.sh"
torch_version="2.13.0"

fail() {
  echo "setup-torch: $*" >&2
  exit 1
}

has_torch() {
  [ -x "$python" ] && "$python" -W ignore -c "
import sys, torch, torch.distributed as dist
sys.exit(torch.__version__.split('+')[0] != '$torch_version' or not dist.is_gloo_available())" >/dev/null 2>&1
}

has_torch && exit 0

wheel="$(ls "$root"/.libtorch-wheels/torch-"$torch_version"-*.whl 2>/dev/null | head -n 1 || true)"
source="${wheel:-torch==$torch_version}"
echo "setup-torch: installing $source into $venv (first run only; about 5 GB with its dependencies)" >&2
started=$SECONDS
[ -x "$python" ] || python3 -m venv "$venv" || fail "python3 -m venv $venv failed (install python3-venv)"
"$python" -m pip install --no-cache-dir "$source" numpy >&2 \
  || fail "pip could not install $source into $venv"
has_torch || fail "torch==$torch_version (with gloo) does not import from $venv"
echo "setup-torch: torch installed in $((SECONDS - started)) s, $(du -sh "$venv" | cut -f1) in $venv" >&2
