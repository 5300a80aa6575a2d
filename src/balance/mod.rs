//! Power-of-two-choices load balancing over a failure-aware load, fed by discovery in the
//! background.
//!
//! A [`Balance`] sends each request to one endpoint of a discovered set. For each request it draws
//! two endpoints at random and sends to the less loaded one ("power of two choices"): nearly as good
//! as always picking the least loaded endpoint, at the cost of two looks instead of a scan, and
//! without the herd behaviour of every caller choosing the same "best" endpoint.
//!
//! ## Load
//!
//! The default load is [peak EWMA](load::PeakEwma): a latency estimate (peak sensitive, decaying
//! with time constant 10 s, 30 ms for a new endpoint) times the requests in flight plus one.
//! Outcomes are [classified](crate::classify); a failure counts as a latency of at least one
//! second, so an endpoint that fails fast does not attract traffic (tower's `PeakEwma` treats a
//! fast error as a fast response). [Least in flight](load::LeastInFlight) is the alternative.
//!
//! **Weights.** When weights differ, each of the two candidates is drawn with probability
//! proportional to its weight (O(1), with an alias table), and the in-flight count is divided by the
//! weight: at equal latency an endpoint of weight 3 receives three times the traffic of an endpoint
//! of weight 1, whether requests come one at a time or many at once. With equal weights the two
//! candidates are always distinct.
//!
//! ## Availability
//!
//! Endpoints implement [`Available`](crate::available::Available) (the circuit breaker does; wrap a
//! plain service in [`Always`](crate::available::Always)). An unavailable endpoint — an open
//! breaker — is **skipped, not dropped**: it is picked again as soon as it is available. An
//! endpoint whose `poll_ready` fails is skipped for that pick and penalised, never dropped.
//!
//! When no endpoint can take a request, `poll_ready` waits (woken when an endpoint becomes
//! available or the set changes) for at most [`Builder::max_wait`] (1 s by default), then the call
//! fails with [`NoEndpoints`]. When discovery says the set is empty, the call fails at once. Before
//! discovery has said anything, a request waits for the first answer, within the same bound.
//!
//! ## Discovery
//!
//! A discovery source is any `Stream<Item = Result<Update, E>>` (see [`crate::discover`]), or any
//! tower [`Discover`](tower::discover::Discover) stream through [`Builder::build_from_tower`].
//! Building the balancer spawns one task that consumes the source — with or without traffic —
//! and publishes each new endpoint set as an immutable snapshot, swapped atomically: a request
//! picks from a consistent set without a lock, and a discovery update never blocks a request.
//! Endpoints that stay in the set keep their service and their load. An `Err` from the source is
//! logged and counted and the last set stays; when the source ends, the last set stays. The task
//! ends with the last clone of the balancer.
//!
//! A removed endpoint gets no new request; requests in flight there (and a reservation made just
//! before the removal: tower #856) complete on that endpoint, never on another.
//!
//! ## Sharing
//!
//! [`Balance`] is `Clone + Send + Sync` and needs no `Buffer` in front: clone it into each task.
//! The hot path reads the snapshot, two endpoints' availability and load (atomics) and the clock
//! once; it takes no lock and allocates nothing.
//!
//! ## Metrics (feature `metrics`)
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `meshwork_balance_endpoints` | gauge | endpoints in the current set |
//! | `meshwork_balance_no_endpoints_total` | counter | requests failed with [`NoEndpoints`] |
//! | `meshwork_balance_discovery_errors_total` | counter | errors reported by the discovery source |
//! | `meshwork_balance_ready_errors_total` | counter | endpoints skipped because their `poll_ready` failed |
//!
//! Every metric carries the balancer's [`MetricLabels`](crate::telemetry::MetricLabels).
//!
//! ## Example
//!
//! ```
//! use std::net::SocketAddr;
//! use meshwork::available::Always;
//! use meshwork::balance::Balance;
//! use meshwork::discover::{Endpoint, Update};
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshwork::BoxError> {
//! let (tx, rx) = tokio::sync::mpsc::channel::<Update>(16);
//! let source = futures_util::stream::unfold(rx, |mut rx| async move {
//!     rx.recv().await.map(|u| (Ok::<_, std::convert::Infallible>(u), rx))
//! });
//! let mut balance = Balance::new(source, |ep: &Endpoint| {
//!     let addr = ep.addr();
//!     Always::new(tower::service_fn(move |_req: &'static str| async move {
//!         Ok::<SocketAddr, meshwork::BoxError>(addr)
//!     }))
//! });
//!
//! let addr: SocketAddr = "127.0.0.1:8080".parse()?;
//! tx.send(Update::Reset(vec![Endpoint::new(addr)])).await?;
//! let answer = balance.ready().await?.call("hello").await?;
//! assert_eq!(answer, addr);
//!
//! // Discovery says the set is empty: requests fail at once.
//! tx.send(Update::Reset(vec![])).await?;
//! while !balance.is_empty() {
//!     tokio::task::yield_now().await;
//! }
//! let err = balance.ready().await?.call("hello").await.unwrap_err();
//! assert!(err.is::<meshwork::balance::NoEndpoints>());
//! # Ok(())
//! # }
//! ```

mod builder;
mod error;
mod future;
pub mod load;
mod measure;
mod service;
mod snapshot;
mod watch;
mod worker;

pub use self::builder::Builder;
pub use self::error::{EndpointRemoved, NoEndpoints};
pub use self::future::{MeasureFuture, ResponseFuture};
pub use self::measure::{Measure, MeasureLayer};
pub use self::service::{Balance, EndpointStatus};
