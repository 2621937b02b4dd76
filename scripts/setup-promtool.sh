#!/usr/bin/env bash
# Puts Prometheus's promtool at target/promtool/promtool for the metrics test
# (tests/api/prometheus.rs: `promtool check metrics` on /metrics, `check config`,
# `check rules` and `test rules` on deploy/prometheus/). Idempotent: with it there,
# or a promtool on PATH, it does nothing.
#
# promtool comes from Debian's `prometheus` package, fetched with `apt-get download`
# and unpacked into target/ (only promtool is kept, about 48 MB), rather than
# installed with `apt-get install`: that would also install and, where an init
# system runs, start a Prometheus server on port 9090, and needs root. Prometheus's
# own release binaries are not used: they are not on a registry CI can reach.
#
# Where it cannot fetch (no apt-get, no package lists and not root to update them)
# it says so and exits 0: the test then fails naming what is missing when
# RUNYARD_REQUIRE_PROMTOOL=1 (as `make test` sets it), and skips saying so otherwise.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/target.sh
. "$root/scripts/lib/target.sh"
dir="$target/promtool"
promtool="$dir/promtool"

if [ -x "$promtool" ] || command -v promtool >/dev/null 2>&1; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "setup-promtool: promtool is missing and cannot be fetched here (needs apt-get" \
    "and dpkg-deb): install Debian's prometheus package, or run" \
    "\`make test RUNYARD_REQUIRE_PROMTOOL=0\` to skip the promtool checks" >&2
  exit 0
fi

download="$dir/download"
rm -rf "$download"
mkdir -p "$download"
fetch() { (cd "$download" && apt-get download -q prometheus) >&2; }
if ! fetch; then
  # A fresh machine may hold no package lists yet.
  if [ "$(id -u)" != 0 ]; then
    echo "setup-promtool: apt-get download prometheus failed and the package lists" \
      "cannot be updated here (needs root): run \`apt-get update\` as root, or" \
      "\`make test RUNYARD_REQUIRE_PROMTOOL=0\` to skip the promtool checks" >&2
    exit 0
  fi
  apt-get update -q >&2 || echo "setup-promtool: apt-get update failed; trying anyway" >&2
  fetch
fi

deb=("$download"/prometheus_*.deb)
dpkg-deb --fsys-tarfile "${deb[0]}" | tar -x -C "$download" ./usr/bin/promtool
mv "$download/usr/bin/promtool" "$promtool.partial"
mv "$promtool.partial" "$promtool"
rm -rf "$download"
"$promtool" --version 2>&1 | head -n 1 >&2
echo "setup-promtool: promtool in $dir" >&2
