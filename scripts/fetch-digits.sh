#!/usr/bin/env bash
# Fetches the UCI optical-recognition digits (1797 examples of 8x8 pixels valued
# 0..16, the label in the last of 65 columns, no header row) to
# data/datasets/digits.csv.gz, for the README tour and examples/digits.json.
#
# The file ships inside scikit-learn's wheel, so it comes from the package registry
# with `pip download` and nothing else; scikit-learn is not installed. Idempotent:
# an existing data/datasets/digits.csv.gz is left alone.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="$root/data/datasets"
dest="$dest_dir/digits.csv.gz"
member="sklearn/datasets/data/digits.csv.gz"
sklearn_version="1.5.2"
# Checksum of digits.csv.gz as shipped in scikit-learn 1.5.2.
sha256="09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"

if [ -f "$dest" ]; then
  exit 0
fi

# shellcheck source=lib/pip.sh
. "$root/scripts/lib/pip.sh"
find_pip fetch-digits "or put digits.csv.gz in $dest_dir yourself"
if ! command -v python3 >/dev/null 2>&1; then
  echo "fetch-digits: python3 is missing; it is needed to unpack the wheel" >&2
  exit 1
fi

mkdir -p "$dest_dir"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/fetch-digits.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Any platform's wheel holds the same data file; naming one makes the download the
# same whatever this machine's Python or architecture.
echo "fetch-digits: downloading scikit-learn==$sklearn_version (for its digits.csv.gz)" >&2
$pip_cmd download --no-deps --only-binary=:all: \
  --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp \
  --dest "$tmp" "scikit-learn==$sklearn_version" >&2

wheel="$(ls "$tmp"/scikit_learn-*.whl 2>/dev/null | head -n 1)"
if [ -z "$wheel" ]; then
  echo "fetch-digits: pip downloaded no scikit-learn wheel" >&2
  exit 1
fi

python3 - "$wheel" "$member" "$tmp/digits.csv.gz" "$sha256" <<'PY'
import hashlib, sys, zipfile
wheel, member, out, expected = sys.argv[1:5]
with zipfile.ZipFile(wheel) as z:
    try:
        data = z.read(member)
    except KeyError:
        sys.exit(f"fetch-digits: {member} is not in {wheel}")
actual = hashlib.sha256(data).hexdigest()
if actual != expected:
    sys.exit(f"fetch-digits: {member} has SHA-256 {actual}, expected {expected}")
with open(out, "wb") as f:
    f.write(data)
PY

# Moved into place last, so an interrupted run leaves no partial file behind.
mv "$tmp/digits.csv.gz" "$dest"
echo "fetch-digits: wrote $dest" >&2
