//! Timeouts per try, and deadlines per request.
//!
//! Two layers bound a request in time, at two places of the stack:
//!
//! - [`TimeoutLayer`] bounds **one try**: the time waiting for the inner service to become ready
//!   *and* the time until its response. (tower's `Timeout` only bounds the response, so a try stuck
//!   behind a service that never becomes ready waits forever.) A try that runs out fails with
//!   [`Elapsed`], which the [classifier](crate::classify) counts as a retryable failure.
//! - [`DeadlineLayer`] bounds **the whole request**, all retries and backoff sleeps included. It
//!   records the request's [`Deadline`] in the request itself (through [`CarryDeadline`]; for HTTP,
//!   in the request's extensions) or beside it ([`Beside`], [`current_deadline`], for any request type), so inner layers see the time left: the retry layer never starts a
//!   try or a sleep that cannot finish in time. A request that runs out fails with
//!   [`DeadlineExceeded`], which is not retryable. A deadline already on the request (set by an outer
//!   layer, or by the caller) is never lengthened, only shortened.
//!
//! With the `http` feature the deadline crosses the network: an outgoing request carries the time left
//! in a header ([`crate::http::PropagateDeadlineLayer`]), and an incoming request's header shortens the
//! local deadline (never lengthens it).
//!
//! ```
//! use std::time::Duration;
//! use meshwork::timeout::{DeadlineLayer, Elapsed, TimeoutLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), meshwork::BoxError> {
//! let slow = tower::service_fn(|_req: http::Request<()>| async {
//!     tokio::time::sleep(Duration::from_secs(5)).await;
//!     Ok::<_, std::convert::Infallible>("late")
//! });
//! let mut svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(2))?)
//!     .layer(TimeoutLayer::new(Duration::from_secs(1))?)
//!     .service(slow);
//! let err = svc.ready().await?.call(http::Request::new(())).await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//! # Ok(())
//! # }
//! ```

mod carry;
mod deadline;
mod deadline_layer;
mod error;
mod future;
mod layer;
mod service;
mod try_deadline;

pub use self::carry::{Beside, DeadlineCarrier, InRequest, Scoped, ViaReplay, current_deadline};
pub(crate) use self::carry::{scope, sync_scope};
pub use self::deadline::{CarryDeadline, Deadline};
pub use self::deadline_layer::{DeadlineLayer, WithDeadline};
pub use self::error::{DeadlineExceeded, Elapsed};
pub use self::future::ResponseFuture;
pub use self::layer::TimeoutLayer;
pub use self::service::Timeout;
pub use self::try_deadline::TryDeadline;
