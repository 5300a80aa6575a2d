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
//!    │  admission (optional)       admission (client-side throttling)
//!    │  retry                      retry (budget, backoff, body replay)
//!    │  balance (P2C)              balance, fed by discover
//!    ├─ per endpoint ─────────────
//!    │  circuit breaker            breaker (gate mode: open = not ready)
//!    │  load measurement           balance (peak EWMA, failure-aware)
//!    │  per-try timeout            timeout::TimeoutLayer
//!    │  connection                 any tower Service (hyper client for HTTP)
//! ```
//!
//! On the serving side, [`limit`] puts an adaptive concurrency limit in front of a handler; what it
//! refuses is a *nack*, which the client stack requeues elsewhere.
//!
//! [`client::ClientBuilder`] composes the stack over any tower `Service` (one per endpoint);
//! [`client::HttpClient`] is the HTTP version, with one hyper connection pool per endpoint:
//!
//! ```no_run
//! use std::time::Duration;
//! use meshwork::client::{ClientBuilder, HttpClient, HttpClientBuilder};
//! use meshwork::discover::{Endpoint, Static};
//!
//! # async fn run() -> Result<(), meshwork::BoxError> {
//! // Where the `users` service runs (or a DNS name, a watched file, etcd...).
//! let users = Static::new([
//!     Endpoint::new("127.0.0.1:8081".parse()?),
//!     Endpoint::new("127.0.0.1:8082".parse()?),
//! ]);
//! let client: HttpClient = HttpClientBuilder::with_stack(
//!     ClientBuilder::new().total_timeout(Duration::from_secs(2)),
//! )
//! .build(users)?;
//! // Balanced, broken out, timed out, retried when safe, with the deadline sent downstream.
//! let res = client.get("http://users/profile/42".parse()?).await?;
//! println!("{}", res.status());
//! # Ok(())
//! # }
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
//! | `zookeeper` | ZooKeeper discovery (Finagle server sets, Nerve) and server-set registration |
//! | `tls` | TLS and mutual TLS for the HTTP client, a TLS listener with workload identity (SPIFFE), certificate rotation ([`tls`]) |
//!
//! [tower]: https://docs.rs/tower

#![warn(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admission;
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
pub mod limit;
pub mod retry;
pub mod rng;
mod sync;
pub mod telemetry;
pub mod timeout;
#[cfg(feature = "tls")]
pub mod tls;
mod util;

/// The Rust examples of `CONTRIBUTING.md` (the guide to building a layer here) run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../CONTRIBUTING.md")]
struct ContributingGuide;

pub use crate::error::{BoxError, ConfigError, find_cause, is_caused_by};
