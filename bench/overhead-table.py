#!/usr/bin/env python3
"""Prints criterion's results for the `overhead` bench as a markdown table.

Reads target/criterion/<group>/<id>/new/estimates.json (the last run) and prints, for each
benchmark id, the time per request (criterion's mean point estimate; median in a second column)
and its ratio to tower/p2c_peak_ewma/10 (the goal: meshwork/full_stack/10 <= 1.0).

Usage: bench/overhead-table.py [CRITERION_DIR]   (default: target/criterion)
"""

import json
import os
import sys

BASELINE = "tower/p2c_peak_ewma/10"


def load(root):
    rows = {}
    for dirpath, _dirs, files in os.walk(root):
        if "benchmark.json" not in files or os.path.basename(dirpath) != "new":
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        # "full_id" is the id as written in the bench (group/function/parameter).
        rows[bench["full_id"]] = (
            est["mean"]["point_estimate"],
            est["median"]["point_estimate"],
        )
    return rows


def fmt_ns(ns):
    return f"{ns:,.0f}" if ns >= 100 else f"{ns:.1f}"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    rows = load(root)
    if not rows:
        sys.exit(f"no criterion results under {root}: run `cargo bench --bench overhead` first")
    base = rows.get(BASELINE, (None,))[0]
    print(f"| id | ns/request (mean) | median | ratio to `{BASELINE}` |")
    print("|---|---:|---:|---:|")
    for full_id in sorted(rows):
        mean, median = rows[full_id]
        ratio = f"{mean / base:.2f}" if base else "n/a"
        print(f"| `{full_id}` | {fmt_ns(mean)} | {fmt_ns(median)} | {ratio} |")


if __name__ == "__main__":
    main()
