//! Circuit breaking: per-endpoint failure accrual that gates readiness.
//!
//! A [`Breaker`] watches the outcomes of the calls made through it (as classified by
//! [`classify`](crate::classify)) and *trips* when the endpoint behind it looks unhealthy. While it
//! is open the endpoint gets no traffic; after a backoff it lets a probe through, and the probe's
//! outcome closes it again or reopens it for longer. This is Finagle's failure accrual and Linkerd's
//! consecutive-failure gate: under a balancer, an open breaker makes its endpoint **not ready**, so
//! power-of-two-choices skips it without dropping it.
//!
//! ## Policies
//!
//! Any policy that trips opens the breaker; [ignorable](crate::classify::Class::Ignorable) outcomes
//! (and cancelled calls) are not counted by any of them.
//!
//! | policy | trips when | default |
//! |---|---|---|
//! | consecutive failures | `n` failures in a row | on, `n = 5` |
//! | success rate | fewer than `r` of the outcomes of the last `w` were successes, with at least `m` outcomes | on, `r = 80 %`, `w = 10 s`, `m = 5` |
//! | slow calls | (not a trigger itself) a success slower than `t` counts as a failure | off |
//!
//! The success-rate window has fixed memory: `w` is cut into buckets (10 by default) that are
//! recycled as time passes, so the window slides one bucket at a time.
//!
//! ## States
//!
//! ```text
//!            trip                   backoff elapsed
//!  Closed ─────────────▶ Open ─────────────────────▶ HalfOpen
//!    ▲                    ▲                             │
//!    │                    └──── a probe fails ──────────┤
//!    └────────────── all probes succeed ────────────────┘
//! ```
//!
//! The open period is drawn from a jittered exponential [`Backoff`](crate::backoff::Backoff) that
//! grows with each consecutive trip (a failed probe is one more trip) and starts over once the
//! endpoint has recovered (its probes succeeded). The default is equal jitter from 1 s to 60 s:
//! with full jitter an open period could be almost zero, which would turn the breaker into a retry
//! loop; equal jitter always waits at least half the exponential delay and still spreads clients
//! apart. Half-open admits exactly `N` probes (default 1), reserved by a compare-and-swap on the
//! shared state word, so the count holds across any number of clones and threads. A probe that is
//! reserved but never called (its clone dropped) or whose call is cancelled gives its slot back.
//!
//! A [`BreakerHandle`] reads the state and drives a manual switch: [`force_open`](BreakerHandle::force_open),
//! [`force_closed`](BreakerHandle::force_closed), [`clear_force`](BreakerHandle::clear_force).
//!
//! ## Two modes
//!
//! - [`Mode::Gate`] (default), for endpoints under a balancer: open ⇒ `poll_ready` is `Pending`, and
//!   the task is woken when the probe is due. The breaker also implements
//!   [`Available`](crate::available::Available), so a balancer can skip an open endpoint without
//!   polling it: `is_available` is a single atomic load while closed.
//! - [`Mode::FailFast`], for a breaker used alone: open ⇒ `poll_ready` is `Ready` and `call` fails at
//!   once with [`Open`] without touching the inner service. `Open` is classified as retryable and
//!   *unsent*.
//!
//! ### How waiting tasks are woken
//!
//! A waiting clone (gate-mode `poll_ready`, or `poll_available`) registers in the breaker's
//! [`tokio::sync::Notify`] through a slot of its own: the list holds at most one entry per waiting
//! clone or handle, an entry leaves it when its clone is dropped, and a state change empties it. So
//! the list is bounded by the number of live clones, whatever the number of requests or tasks that
//! came and went. (As with tokio's `poll_*` methods on `&self`, only the task of the most recent
//! poll through one clone is woken; give each waiting task its own clone.) Every state change wakes
//! the waiters.
//!
//! For the end of an open period the breaker arms **one timer per open period**, on the first
//! registration: a small spawned task that sleeps until the probe is due, moves the breaker to
//! half-open and wakes the waiters. One shared timer rather than a `Sleep` in each clone, because
//! `poll_available` takes `&self` (the balancer polls through a shared reference), because a hundred
//! waiting clones then cost one timer instead of a hundred, and because the task holds only a weak
//! reference, so a dropped breaker leaves nothing behind but a sleeping task that exits when it
//! wakes. No timer is spawned when nobody waits (fail-fast mode, or a balancer that only reads
//! `is_available`). The open → half-open move is also made lazily by whoever looks at the state
//! after the due time, so the timer is only needed to *wake* tasks. Waiting therefore requires a
//! Tokio runtime, as any `tokio::time` timer does.
//!
//! ## Cost
//!
//! In the closed state a call does one atomic load in `poll_ready`, and when it completes one read
//! of the consecutive-failure counter (stored to only when it is not already zero), one clock read
//! and one compare-and-swap on a window bucket of the calling thread's stripe (the window is
//! striped by thread so that threads sharing a breaker do not write one cache line on every call).
//! Failures, transitions and waiting take the slower paths. Each clone owns a small allocation that
//! its response futures point to, so that calls on different threads do not contend on one reference
//! count.
//!
//! ## Observability
//!
//! Every transition emits a `tracing` event with the new state and the reason (`warn` when opening,
//! `info` otherwise). With the `metrics` feature, each breaker registers these, with the labels of
//! [`BreakerConfigBuilder::labels`]:
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `meshwork_breaker_trips_total` | counter | `reason` = `consecutive_failures` \| `success_rate` \| `probe_failed` | the breaker opened |
//! | `meshwork_breaker_probes_total` | counter | `outcome` = `success` \| `failure` | half-open probes that completed |
//! | `meshwork_breaker_rejected_total` | counter | | calls refused with [`Open`] (fail-fast mode) |
//! | `meshwork_breaker_state` | gauge | | 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed (meaningful per endpoint: see below) |
//! | `meshwork_breaker_open` | gauge | | breakers that are not closed: 0 or 1 for one breaker, the number of such endpoints when endpoints share their labels; a dropped breaker (a removed endpoint) no longer counts |
//!
//! The series are as bounded as the labels: the client builder gives per-endpoint breakers the
//! client's labels, and adds an `endpoint` label only when asked
//! ([`ClientBuilder::endpoint_labels`](crate::client::ClientBuilder::endpoint_labels)), so by
//! default discovery churn creates no series. The `metrics` facade cannot delete a series: with
//! per-endpoint labels, those of a removed endpoint stay at their final values (`open` back at 0)
//! until the exporter drops idle series (its idle timeout).
//!
//! ## Example
//!
//! ```
//! use std::time::Duration;
//! use meshwork::available::Available;
//! use meshwork::backoff::Backoff;
//! use meshwork::breaker::{BreakerConfig, BreakerLayer, State};
//! use meshwork::rng::SeedSource;
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), meshwork::BoxError> {
//! let config = BreakerConfig::builder()
//!     .consecutive_failures(3)
//!     .backoff(Backoff::equal_jitter(Duration::from_secs(1), Duration::from_secs(30))?)
//!     .seed(SeedSource::from_seed(7))
//!     .build()?;
//! let flaky = tower::service_fn(|fail: bool| async move {
//!     if fail { Err::<(), meshwork::BoxError>("boom".into()) } else { Ok(()) }
//! });
//! let mut svc = BreakerLayer::new(config).layer(flaky);
//! for _ in 0..3 {
//!     let _ = svc.ready().await?.call(true).await;
//! }
//! assert_eq!(svc.handle().state(), State::Open);
//! assert!(!svc.is_available());
//!
//! // Gate mode: `ready` waits (a timer wakes it) until the probe is due, then admits the probe.
//! svc.ready().await?.call(false).await?;
//! assert_eq!(svc.handle().state(), State::Closed);
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod future;
mod handle;
mod layer;
mod service;
mod state;
mod window;
mod word;

pub use self::config::{
    BreakerConfig, BreakerConfigBuilder, DEFAULT_PROBE_TIMEOUT, MAX_PROBES, Mode,
};
pub use self::error::Open;
pub use self::future::ResponseFuture;
pub use self::handle::BreakerHandle;
pub use self::layer::BreakerLayer;
pub use self::service::Breaker;
pub use self::state::State;

#[cfg(test)]
mod tests;
