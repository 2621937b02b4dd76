#!/usr/bin/env bash
# Installs Debian's chromium and chromedriver (packages chromium, chromium-driver) for
# the dashboard's browser test (tests/api/dashboard.rs), with apt-get, when either is
# missing. Idempotent: with both present it does nothing. Where it cannot install (not
# root, no apt-get) it says so and exits 0: the test then fails naming what is missing
# when RUNYARD_REQUIRE_BROWSER=1 (as `make test` sets it), and skips saying so otherwise.
set -euo pipefail

chromium=/usr/bin/chromium
driver=/usr/bin/chromedriver

if [ -x "$chromium" ] && [ -x "$driver" ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-browser: $chromium or $driver is missing and cannot be installed here" \
    "(needs root and apt-get): install the Debian packages chromium and chromium-driver," \
    "or run \`make test RUNYARD_REQUIRE_BROWSER=0\` to skip the browser test" >&2
  exit 0
fi

echo "setup-browser: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may hold no package lists yet; a failed update still leaves the
# install to try with what is there.
apt-get update -q || echo "setup-browser: apt-get update failed; trying the install anyway" >&2
apt-get install -y -q chromium chromium-driver
"$chromium" --version 2>/dev/null | grep -i chromium >&2
"$driver" --version >&2
