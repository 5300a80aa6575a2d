#!/usr/bin/env bash
# Balancing quality (Linkerd's "beyond round robin" experiment) on virtual time: round robin,
# tower's p2c + PeakEwma and meshwork's client stack, under a slow and a failing endpoint.
# Prints markdown tables. Arguments are passed on (see --help): --seed, --rate, --secs,
# --per-try-timeout-ms. Deterministic for a given seed. Virtual time: the figures do not depend
# on the build profile or the machine, so the debug build (already built by tests) is used.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --example balance_quality -- "$@"
