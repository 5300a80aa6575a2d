#!/usr/bin/env bash
# Model checks (loom) of the lock-free state: the breaker's state word and probe gate
# (src/breaker/word.rs) and the balancer's wait protocol (src/balance/watch.rs). Explores every
# interleaving up to LOOM_MAX_PREEMPTIONS (3 by default here: loom's recommendation for CI).
# A separate target dir: `--cfg meshwork_loom` changes the build of the crate.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg meshwork_loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
cargo test --release --target-dir target/loom --lib --no-default-features "$@" -- loom_tests
