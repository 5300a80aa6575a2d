//! The client stack: one builder that composes every layer.
//!
//! ```text
//!  caller
//!    │  deadline (total timeout)     timeout::DeadlineLayer
//!    │  admission (optional, off)    admission::Admission (client-side throttling)
//!    │  retry                        retry::Retry (budget, backoff, replay)
//!    │  balance (P2C)                balance::Balance, fed by a discovery source
//!    ├─ per endpoint ─────────────
//!    │  circuit breaker (gate)       breaker::Breaker
//!    │  load measurement             inside balance::Balance (peak EWMA, failure-aware)
//!    │  per-try timeout              timeout::Timeout
//!    │  connection                   your Service, made per endpoint
//! ```
//!
//! [`ClientBuilder`] holds no logic of its own: every box is a layer you can also use alone. It is
//! generic over how an endpoint's connection is made (any tower `Service`), so it serves non-HTTP
//! protocols too; with feature `http`, [`HttpClient`] builds the HTTP version (one hyper-util pool
//! per endpoint, HTTP classification, idempotency-aware retries, body replay, deadline propagation).
//!
//! ```
//! use std::time::Duration;
//! use meshwork::client::ClientBuilder;
//! use meshwork::discover::{Endpoint, Static};
//! use tower::{Service, ServiceExt};
//!
//! /// A plain request type: every default works with it (the deadline travels beside it).
//! #[derive(Clone)]
//! struct Ping;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshwork::BoxError> {
//! let endpoints = Static::new(vec![
//!     Endpoint::new("127.0.0.1:7001".parse()?),
//!     Endpoint::new("127.0.0.1:7002".parse()?),
//! ]);
//! let mut client = ClientBuilder::new()
//!     .total_timeout(Duration::from_secs(1))
//!     .build(endpoints, |ep: &Endpoint| {
//!         let addr = ep.addr();
//!         // The connection: here an in-memory service that answers with its address.
//!         tower::service_fn(move |_req: Ping| async move { Ok::<_, meshwork::BoxError>(addr) })
//!     })?;
//! let answered_by = client.ready().await?.call(Ping).await?;
//! assert!(answered_by.port() == 7001 || answered_by.port() == 7002);
//! # Ok(())
//! # }
//! ```
//!
//! ## Defaults
//!
#![doc = include_str!("defaults.md")]

mod builder;
#[cfg(feature = "http")]
mod http;
mod optional;
mod service;

pub use self::builder::{ClientBuilder, DEFAULT_PER_TRY_TIMEOUT, DEFAULT_TOTAL_TIMEOUT};
#[cfg(feature = "http")]
pub use self::http::{HttpClient, HttpClientBuilder, HttpConnection, HttpResponse};
pub use self::optional::{Optional, OptionalFuture};
pub use self::service::{Client, EndpointInfo, EndpointStack, TryStack};
