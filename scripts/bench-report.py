#!/usr/bin/env python3
"""Merges the figures the benches wrote and prints them.

Each bench binary (`cargo bench --bench progress --bench journal`) writes its figures
to `<target>/bench-figures/<bench>.json` as `{"name": {"value": 1.23, "unit": "ns"}}`.
This script merges every such file into `bench-results.json` at the repository root
and prints one `name: value unit` line per figure, sorted by name. The target
directory is `$CARGO_TARGET_DIR` when set, else `target/` in the repository, as in
the benches.

Exits non-zero when no figure is found or a figures file is malformed.
"""

import json
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent


def target_dir() -> Path:
    configured = os.environ.get("CARGO_TARGET_DIR")
    if configured:
        return (ROOT / configured).resolve()
    return ROOT / "target"


def fail(message: str) -> NoReturn:
    print(f"bench-report: {message}", file=sys.stderr)
    sys.exit(1)


def load(path: Path) -> dict:
    try:
        figures = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")
    if not isinstance(figures, dict):
        fail(f"{path}: expected an object of figures")
    for name, figure in figures.items():
        value = figure.get("value") if isinstance(figure, dict) else None
        unit = figure.get("unit") if isinstance(figure, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not isinstance(unit, str):
            fail(f"{path}: figure {name!r} is not {{\"value\": number, \"unit\": string}}")
    return figures


def show(value: float) -> str:
    """Four significant digits, without exponent notation for everyday magnitudes."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, 3 - magnitude)
    return f"{value:.{decimals}f}"


def main() -> None:
    figures_dir = target_dir() / "bench-figures"
    files = sorted(figures_dir.glob("*.json"))
    merged: dict = {}
    for path in files:
        for name, figure in load(path).items():
            if name in merged:
                fail(f"figure {name!r} appears in more than one file under {figures_dir}")
            merged[name] = {"value": figure["value"], "unit": figure["unit"]}
    if not merged:
        fail(
            f"no figures found in {figures_dir}; run "
            "`cargo bench --bench progress --bench journal` first"
        )
    merged = dict(sorted(merged.items()))
    out = ROOT / "bench-results.json"
    out.write_text(json.dumps(merged, indent=2) + "\n")
    for name, figure in merged.items():
        print(f"{name}: {show(figure['value'])} {figure['unit']}")
    print(f"bench-report: {len(merged)} figures from {len(files)} files written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
