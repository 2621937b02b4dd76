#!/usr/bin/env bash
# Fetches libtorch 2.13.0 (CPU) into .libtorch/ from the PyPI wheels, so tch links
# without any download site but the package registries. Idempotent: a complete
# .libtorch/ is left alone.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.libtorch"
wheels="$root/.libtorch-wheels"
torch_version="2.13.0"
cudart_version="13.0.96"
cupti_version="13.0.85"
stamp="$dest/.complete-$torch_version"

if [ -f "$stamp" ]; then
  exit 0
fi

# shellcheck source=lib/pip.sh
. "$root/scripts/lib/pip.sh"
find_pip setup-libtorch "or set LIBTORCH to an existing libtorch"
if ! command -v unzip >/dev/null 2>&1 && ! command -v python3 >/dev/null 2>&1; then
  echo "setup-libtorch: need unzip or python3 to unpack the wheels" >&2
  exit 1
fi

mkdir -p "$wheels"
fetch() {
  local spec="$1"
  echo "setup-libtorch: downloading $spec" >&2
  $pip_cmd download --no-deps --only-binary=:all: --dest "$wheels" "$spec" >&2
}
find_wheel() { ls "$wheels"/$1 2>/dev/null | head -n 1; }

[ -n "$(find_wheel "torch-$torch_version-*.whl")" ] || fetch "torch==$torch_version"
[ -n "$(find_wheel "nvidia_cuda_runtime-$cudart_version-*.whl")" ] || fetch "nvidia-cuda-runtime==$cudart_version"
[ -n "$(find_wheel "nvidia_cuda_cupti-$cupti_version-*.whl")" ] || fetch "nvidia-cuda-cupti==$cupti_version"

tmp="$(mktemp -d "$root/.libtorch-unpack.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

unpack() {
  # unpack WHEEL DIR PATTERN...
  local wheel="$1" out="$2"
  shift 2
  python3 - "$wheel" "$out" "$@" <<'PY'
import fnmatch, sys, zipfile
wheel, out, patterns = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not names:
        sys.exit(f"setup-libtorch: nothing matching {patterns} in {wheel}")
    z.extractall(out, names)
PY
}

unpack "$(find_wheel "torch-$torch_version-*.whl")" "$tmp" 'torch/lib/*' 'torch/include/*'
unpack "$(find_wheel "nvidia_cuda_runtime-$cudart_version-*.whl")" "$tmp/cudart" '*libcudart.so*'
unpack "$(find_wheel "nvidia_cuda_cupti-$cupti_version-*.whl")" "$tmp/cupti" '*libcupti.so*'

# CPU only: the CUDA libraries are left out so tch links libtorch_cpu alone.
rm -f "$tmp"/torch/lib/libtorch_cuda*.so "$tmp"/torch/lib/libc10_cuda.so
find "$tmp/cudart" "$tmp/cupti" -name 'lib*.so*' -exec cp {} "$tmp/torch/lib/" \;

rm -rf "$dest"
mkdir -p "$dest"
mv "$tmp/torch/lib" "$dest/lib"
mv "$tmp/torch/include" "$dest/include"
touch "$stamp"
echo "setup-libtorch: libtorch $torch_version ready in $dest" >&2
