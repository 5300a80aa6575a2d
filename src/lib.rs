//! # meshwork
//!
//! Composable resilience middleware for [tower] services, in the style of Twitter's Finagle:
//! service discovery, power-of-two-choices load balancing, circuit breaking, timeouts with deadlines
//! and retries with budgets. Each capability is an independent tower layer; the client builder
//! composes them into one stack.
//!
//! ```text
//!  caller
//!    │  deadline / total timeout   timeout::DeadlineLayer
//!    │  retry                      retry (budget, backoff, body replay)
//!    │  balance (P2C)              balance, fed by discover
//!    ├─ per endpoint ─────────────
//!    │  circuit breaker            breaker (gate mode: open = not ready)
//!    │  load measurement           balance (peak EWMA, failure-aware)
//!    │  per-try timeout            timeout::TimeoutLayer
//!    │  connection                 any tower Service (hyper client for HTTP)
//! ```
//!
//! The layers share one vocabulary of outcomes ([`classify`]), one error convention ([`BoxError`],
//! with small public error types to downcast to), time from `tokio::time` only (every test runs on
//! paused time) and injectable randomness ([`rng`]).
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `http` (default) | HTTP classification, deadline headers, idempotency-aware retries, body replay, the hyper client |
//! | `metrics` (default) | metrics through the [`metrics`](https://docs.rs/metrics) facade |
//! | `dns` | DNS discovery |
//! | `file` | watched-file discovery |
//! | `etcd` | etcd v3 discovery and registration |
//!
//! [tower]: https://docs.rs/tower

#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod available;
pub mod backoff;
pub mod balance;
pub mod breaker;
pub mod classify;
pub mod client;
pub mod discover;
mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod retry;
pub mod rng;
pub mod telemetry;
pub mod timeout;

pub use crate::error::{BoxError, ConfigError};
