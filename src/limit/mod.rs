//! Adaptive concurrency for the serving side: reject what the server cannot take, at once, with a
//! *nack*.
//!
//! A server that queues every request it receives turns an overload into timeouts: the queued
//! requests wait, the callers give up, and the server does the work anyway. [`Limit`] admits at
//! most [`Limiter::limit`] requests at a time and rejects the others immediately, before any work,
//! with a nack ("not processed, safe elsewhere": the [`Nacked`] error, or for HTTP a `503` with
//! `meshwork-nack: 1`, see [`LimitLayer::http`]). A meshwork client requeues a nack to another
//! endpoint as a request that never left, and never counts it as the endpoint's failure.
//!
//! ## The limit adapts to latency: a gradient controller
//!
//! The right limit is the server's real concurrency (its workers, its cores) plus a little queue;
//! it is not known in advance and it changes. The controller follows Netflix's
//! [Gradient2](https://github.com/Netflix/concurrency-limits/blob/master/concurrency-limits-core/src/main/java/com/netflix/concurrency/limits/limit/Gradient2Limit.java),
//! sampled on a fixed interval as Envoy's
//! [adaptive concurrency filter](https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/adaptive_concurrency_filter)
//! does:
//!
//! 1. Each admitted request that is answered records its latency (from `call` to the response).
//! 2. Once per [`update_interval`](LimitConfig::update_interval) (and at least
//!    [`min_samples`](LimitConfig::min_samples) samples), the *short* latency is the mean of the
//!    interval's samples, and the *long* latency an exponential average of the short ones over
//!    [`long_window`](LimitConfig::long_window) updates (pulled down faster when it is more than
//!    twice the short one, so that the limit recovers after an overload).
//! 3. The gradient `clamp(tolerance × long / short, 0.5, 1)` is 1 while the latency stays within
//!    the tolerance, and falls as queueing makes it rise. The next limit is
//!    `limit × gradient + queue_size`, smoothed, clamped into `[min_limit, max_limit]`
//!    ([`next_limit`], a plain function with property tests). While fewer than half the slots are
//!    in use the limit is kept: the latency then says nothing about concurrency.
//!
//! The defaults and their sources are listed on [`LimitConfig`].
//!
//! ## tower semantics: reject in `call`, not wait in `poll_ready`
//!
//! `poll_ready` only forwards the inner service's readiness; the slot is taken in `call`, and an
//! over-limit request gets its rejection as a future that is ready at once. A limit that said
//! `Pending` in `poll_ready` (as tower's `ConcurrencyLimit` does) would make the server's accept
//! loop wait for a slot, which is the queue this layer exists to avoid. Rejecting costs one atomic
//! read and no allocation.
//!
//! ## Observability
//!
//! A `debug` event when the limit changes. Metrics (feature `metrics`), with the config's labels:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `meshwork_limit_limit` | gauge | the current limit |
//! | `meshwork_limit_in_flight` | gauge | requests admitted and not answered, sampled at each update |
//! | `meshwork_limit_rejected_total` | counter | requests rejected with a nack |
//!
//! [`Limiter::in_flight`], [`Limiter::limit`] and [`Limiter::rejected`] read the live values.
//!
//! ## Example
//!
//! ```
//! use meshwork::limit::{LimitConfig, LimitLayer, Nacked};
//! use meshwork::BoxError;
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let limiter = LimitConfig::new().initial_limit(1).min_limit(1).build()?;
//! let handler = tower::service_fn(|_: ()| async {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//!     Ok::<_, BoxError>("done")
//! });
//! let mut svc = LimitLayer::new(limiter.clone()).layer(handler);
//! let first = svc.ready().await?.call(());
//! // One slot, taken: the second request is nacked at once.
//! let err = svc.ready().await?.call(()).await.unwrap_err();
//! assert!(err.is::<Nacked>());
//! assert_eq!(first.await?, "done");
//! assert_eq!(limiter.in_flight(), 0);
//! # Ok(())
//! # }
//! ```

mod error;
mod future;
mod gradient;
#[cfg(feature = "http")]
mod http;
mod layer;
mod limiter;
mod reject;
mod service;

pub use self::error::Nacked;
pub use self::future::ResponseFuture;
pub use self::gradient::{GradientParams, next_limit};
#[cfg(feature = "http")]
pub use self::http::{HttpNack, NACK_HEADER, is_nack_response, nack_response};
pub use self::layer::LimitLayer;
pub use self::limiter::{LimitConfig, Limiter, Permit};
pub use self::reject::{NackError, Reject};
pub use self::service::Limit;

#[cfg(test)]
mod tests;
