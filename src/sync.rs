//! The atomics of the lock-free state that the model checks explore.
//!
//! Built normally, these are `std`'s atomics. Built with `RUSTFLAGS="--cfg meshwork_loom"` (see
//! `scripts/loom.sh`), they are [loom](https://docs.rs/loom)'s, so that the model-check tests can run
//! every interleaving of the breaker's state word and the balancer's watch flags. A custom cfg name
//! rather than `loom`, because `--cfg loom` also switches tokio's internals, which need tokio's own
//! test dependencies.

#[cfg(meshwork_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64};
#[cfg(not(meshwork_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64};
