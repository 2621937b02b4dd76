#!/usr/bin/env bash
# Installs what the power-cut test (tests/crash_loop.rs, `power_loop`) needs to mount
# scripts/cutfs.py: Debian's libfuse2 (with apt-get, as root, when missing) and fusepy
# into target/cutfs-venv. Idempotent. Where it cannot install (not root, no apt-get,
# no /dev/fuse) it says so and exits 0: the test then fails naming what is missing when
# RUNYARD_REQUIRE_POWER=1 (as `make test` sets it), and prints SKIPPED otherwise.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/cutfs-venv"
fusepy_version="3.0.1"

if [ ! -e /dev/fuse ]; then
  echo "setup-cutfs: /dev/fuse is missing: the power-cut test cannot mount here" >&2
  exit 0
fi

if ! ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2'; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-cutfs: libfuse 2 is missing and cannot be installed here (needs root and" \
      "apt-get): install Debian's libfuse2, or run \`make test RUNYARD_REQUIRE_POWER=0\`" >&2
    exit 0
  fi
  echo "setup-cutfs: installing libfuse2 with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q libfuse2 || {
    apt-get update -q || echo "setup-cutfs: apt-get update failed; trying the install anyway" >&2
    apt-get install -y -q libfuse2
  }
fi

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import fuse" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q "fusepy==$fusepy_version"
"$venv/bin/python" -c "import fuse" >&2
echo "setup-cutfs: fusepy $fusepy_version in $venv" >&2
