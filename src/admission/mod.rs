//! Client-side admission control: when the upstream as a whole rejects or fails, reject locally,
//! before any network work.
//!
//! Retries and requeues assume spare capacity somewhere. When every endpoint is overloaded, each
//! request the client sends costs the upstream work (even a nack costs a little) and a retry
//! multiplies it. [`Admission`] throttles the client itself, after the
//! [Google SRE book](https://sre.google/sre-book/handling-overload/#client-side-throttling-a7sYUg)'s
//! adaptive throttling:
//!
//! ```text
//! P_reject = max(0, (requests − K × accepts) / (requests + 1))      capped at max_rejection_probability
//! ```
//!
//! over a sliding window (fixed-size buckets), where *requests* counts the requests sent to the
//! upstream and *accepts* those whose outcome was a [success](crate::classify::Class::Success). A
//! nack or a failure is a request that was not accepted; an outcome that is neither (a request the
//! caller cancelled) is not counted. While the success rate stays at or above `1/K` nothing is
//! rejected; below, requests fail at once with [`Rejected`] with probability `P_reject`, and
//! [`Rejected`] is itself a nack to [`classify_error`](crate::classify::classify_error).
//!
//! **Requests rejected locally are not counted.** The SRE book counts them as requests, which
//! makes the client send about `K` requests per accepted one. With the book's `K = 2` that recovers
//! quickly once the upstream does; with Envoy's `K = 1 / 0.95`, it does not: in steady state
//! `P = 1 − K·(1 − P)` has a second fixed point near the cap, each window only shrinks the rejected
//! share by a factor `K`, and in the overload experiment (`examples/overload.rs`) the clients kept
//! rejecting 40 % of the requests for the whole 15 s after the overload ended. Counting only the
//! requests sent, the rejection stops as soon as the sent requests succeed again; under overload
//! a client then sends about `sqrt(offered × K × accepted)` requests per second, which still
//! sheds most of the excess before it reaches the network.
//!
//! The parameters follow Envoy's
//! [admission control filter](https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/admission_control_filter)
//! (`K = 1 / sr_threshold`): see [`AdmissionConfig`] for the defaults and their sources. The pure
//! formula is [`rejection_probability`].
//!
//! In a [`ClientBuilder`](crate::client::ClientBuilder) stack it sits between the deadline and the
//! retry layer, so it sees each request's final outcome, retries included; it is off by default
//! ([`ClientBuilder::admission`](crate::client::ClientBuilder::admission)).
//!
//! The hot path is lock-free: a decision reads the window's bucket counters (atomics) and draws from
//! the service clone's own generator; an outcome adds to one bucket.
//!
//! ## Observability
//!
//! An `info` event when local rejection starts and stops (state changes only). Metrics (feature
//! `metrics`):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `meshwork_admission_rejected_total` | counter | requests rejected locally |
//!
//! ## Example
//!
//! ```
//! use meshwork::admission::{AdmissionConfig, AdmissionLayer, Rejected};
//! use meshwork::rng::SeedSource;
//! use meshwork::BoxError;
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let control = AdmissionConfig::new().seed(SeedSource::from_seed(1)).build().unwrap();
//! // An upstream that rejects everything.
//! let down = tower::service_fn(|_: ()| async { Err::<(), BoxError>("overloaded".into()) });
//! let mut svc = AdmissionLayer::new(control.clone()).layer(down);
//! let mut local = 0;
//! for _ in 0..100 {
//!     if let Err(e) = svc.ready().await.unwrap().call(()).await {
//!         local += usize::from(e.is::<Rejected>());
//!     }
//! }
//! // Most requests never left: rejected locally, up to the 80 % cap.
//! assert!(local > 50 && local < 90, "{local}");
//! # }
//! ```

mod control;
mod error;
mod future;
mod layer;
mod service;
mod window;

pub use self::control::{AdmissionConfig, AdmissionControl, rejection_probability};
pub use self::error::Rejected;
pub use self::future::ResponseFuture;
pub use self::layer::AdmissionLayer;
pub use self::service::Admission;

#[cfg(test)]
mod tests;
