//! Retries that are safe by construction: classified, budgeted, backed off, deadline-aware.
//!
//! A retry layer that is turned on for every service must not turn an outage into a retry storm,
//! nor a timeout into a duplicated payment. [`RetryLayer`] retries a failed try only when all of
//! these hold:
//!
//! 1. **The failure is retryable.** The outcome goes through the stack's [`Classify`]: only
//!    [`Class::Retryable`] is tried again (for HTTP, [`HttpClassify`]: 502, 503, 504 and
//!    connection failures), and so are [throttled](crate::classify::Classification::is_throttled) outcomes (a 429,
//!    which does not count against the endpoint) and nacks.
//! 2. **Sending it again is safe.** A failure that *proves* the request never reached the server
//!    (connection refused, HTTP/2 `REFUSED_STREAM`, a pooled connection closed before the request
//!    was written: [`Classification::is_unsent`]) is *requeued*, whatever the request. Any other
//!    failure is retried only if the request is idempotent ([`Replay::is_idempotent`]; for HTTP:
//!    GET, HEAD, OPTIONS, PUT, DELETE, TRACE). A POST that timed out is never sent twice.
//! 3. **The request can be replayed.** [`Replay::replay`] copies it; for HTTP,
//!    [`ReplayBody`](crate::http::ReplayBody) keeps a copy of a body up to a limit (64 KiB by
//!    default) while the first try streams it, and a larger body is sent once.
//! 4. **Attempts are left**: at most [`max_retries`](RetryPolicy::max_retries) retries (default 2)
//!    and [`max_requeues`](RetryPolicy::max_requeues) requeues (default 2) per request.
//! 5. **Time is left.** If the request carries a [`Deadline`](crate::timeout::Deadline) (set by
//!    [`DeadlineLayer`](crate::timeout::DeadlineLayer) above), no backoff sleep starts unless the
//!    sleep and [`min_try_time`](RetryPolicy::min_try_time) fit before it.
//! 6. **The budget allows it.** See below.
//!
//! Otherwise the failure of the last try is returned as it is: the layer adds no error of its own,
//! and keeps the inner service's error type.
//!
//! Between tries the layer waits a [`Backoff`](crate::backoff::Backoff) delay (default full jitter,
//! 25 ms base, 250 ms cap, from a seedable [`SeedSource`](crate::rng::SeedSource)); a server's
//! `Retry-After` makes it wait at least that long, capped by
//! [`retry_after_cap`](RetryPolicy::retry_after_cap) (default 10 s).
//!
//! ## Why budgets and not only a maximum of retries?
//!
//! "Retry up to 2 times" triples the load on a service that fails every request, at the moment it
//! can least afford it. A [`RetryBudget`] bounds retries as a share of requests instead: each
//! request deposits, each retry or requeue withdraws, and over a window (default 10 s) retries are
//! at most `retry_ratio × requests + min_retries_per_sec × window` (default 20% and 10 per second).
//! A healthy service with rare failures still retries every one of them; a failing one gets at most
//! 20% more load. The budget is a shared handle: give one to several routes to bound them together.
//! When it is empty, the original failure is returned and the refusal counted.
//!
//! ## Requests
//!
//! Any request type works: [`CloneRequest`] (the default) clones `Clone` requests,
//! [`CloneWithDeadline`] also reads a [`CarryDeadline`](crate::timeout::CarryDeadline) deadline,
//! [`FnReplay`] (or [`RetryPolicy::clone_with`]) takes your own clone function, and
//! `HttpReplay` (feature `http`) handles `http::Request<ReplayBody<B>>`. The inner service only
//! needs to be `Clone`: each retry waits for readiness on a clone of it, with no `Buffer`.
//!
//! ## Observability
//!
//! `debug` events for each retry, requeue and refusal (with the reason); an `info` event when the
//! budget becomes exhausted and when it recovers (state changes only). Metrics (feature `metrics`),
//! with the policy's [`labels`](RetryPolicy::labels):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `meshwork_retry_retries_total` | counter | retries sent (after a failure that may have reached the server) |
//! | `meshwork_retry_requeues_total` | counter | requeues sent (after a failure that proves the request was never sent) |
//! | `meshwork_retry_budget_exhausted_total` | counter | retries or requeues refused because the budget was empty |
//! | `meshwork_retry_body_too_large_total` | counter | retries refused because the request body exceeded the replay limit |
//!
//! ## Example
//!
//! ```
//! use std::time::Duration;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use meshwork::backoff::Backoff;
//! use meshwork::retry::{RetryLayer, RetryPolicy};
//! use meshwork::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // Fails twice, then answers.
//! let calls = Arc::new(AtomicU32::new(0));
//! let flaky = tower::service_fn({
//!     let calls = calls.clone();
//!     move |req: String| {
//!         let n = calls.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             if n < 2 { Err::<String, BoxError>("unavailable".into()) } else { Ok(req) }
//!         }
//!     }
//! });
//! let policy = RetryPolicy::new()
//!     .backoff(Backoff::constant(Duration::from_millis(10))?);
//! let mut svc = ServiceBuilder::new().layer(RetryLayer::new(policy)).service(flaky);
//! let res = svc.ready().await?.call("hello".to_string()).await?;
//! assert_eq!(res, "hello");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # Ok(())
//! # }
//! ```
//!
//! [`Classify`]: crate::classify::Classify
//! [`Class::Retryable`]: crate::classify::Class::Retryable
//! [`Classification::is_unsent`]: crate::classify::Classification::is_unsent
//! [`HttpClassify`]: crate::classify::HttpClassify

mod budget;
mod budget_trait;
mod error;
mod future;
mod layer;
mod policy;
mod replay;
mod service;

pub use self::budget::{RetryBudget, RetryBudgetBuilder};
pub use self::budget_trait::{AlwaysRetry, Budget, NeverRetry};
pub use self::error::BudgetExhausted;
pub use self::future::ResponseFuture;
pub use self::layer::RetryLayer;
pub use self::policy::RetryPolicy;
pub use self::replay::{CloneRequest, CloneWithDeadline, FnReplay, NotReplayable, Replay};
pub use self::service::Retry;

#[cfg(test)]
mod tests;
