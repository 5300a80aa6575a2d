#!/usr/bin/env bash
# Balancing quality (Linkerd's "beyond round robin" experiment) on virtual time: round robin,
# tower's p2c + PeakEwma and meshwork's client stack, under a slow and a failing endpoint.
# Prints markdown tables. Arguments are passed on (see --help): --seed, --rate, --secs,
# --per-try-timeout-ms. Deterministic for a given seed; takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release --example balance_quality -- "$@"
