#!/usr/bin/env bash
# The overload experiment (examples/overload.rs): virtual time, seeded, exactly reproducible.
# Writes bench/overload.md (table), bench/overload.csv (per-second series), bench/overload.png.
# Text in the plot needs a TrueType font (Debian: fonts-dejavu-core); FONT overrides the path.
set -euo pipefail
cd "$(dirname "$0")/.."
FONT=${FONT:-/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf}
cargo run --quiet --example overload -- --csv bench/overload.csv --png bench/overload.png --font "$FONT" | tee bench/overload.md
