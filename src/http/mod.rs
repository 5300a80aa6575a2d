//! HTTP-specific parts (feature `http`): status classification, deadline headers, idempotency
//! rules and body replay for retries, and (in later modules) the hyper connector.
//!
//! ## Retries
//!
//! [`RetryPolicy::http`](crate::retry::RetryPolicy::http) retries `http::Request<ReplayBody<B>>`
//! with [`HttpReplay`]: wrap request bodies in a [`ReplayBody`] above the retry layer (it keeps a copy
//! of up to 64 KiB while the first try streams), and only [idempotent](is_idempotent) requests are
//! retried after a failure that may have reached the server:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use meshwork::http::ReplayBody;
//! use meshwork::retry::{RetryLayer, RetryPolicy};
//! use tower::ServiceBuilder;
//!
//! let client = tower::service_fn(|req: http::Request<ReplayBody<Full<Bytes>>>| async move {
//!     Ok::<_, meshwork::BoxError>(http::Response::new(()))
//! });
//! let svc = ServiceBuilder::new()
//!     .map_request(|req: http::Request<Full<Bytes>>| req.map(ReplayBody::new))
//!     .layer(RetryLayer::new(RetryPolicy::http()))
//!     .service(client);
//! # let _ = svc;
//! ```
//!
//! ## Deadline propagation
//!
//! A request's [`Deadline`](crate::timeout::Deadline) crosses the network as a header holding the
//! time left when the request leaves:
//!
//! - gRPC requests (`content-type: application/grpc…`) use the standard `grpc-timeout` header
//!   (`1*8DIGIT` and a unit, `H M S m u n`);
//! - other requests use [`DEADLINE_HEADER`], `meshwork-timeout-ms`, whole milliseconds left (rounded
//!   down, so the header never promises more time than there is).
//!
//! [`PropagateDeadlineLayer`] writes the header on the way out. On the way in,
//! [`DeadlineLayer`](crate::timeout::DeadlineLayer) reads either header through
//! [`CarryDeadline::incoming_budget`](crate::timeout::CarryDeadline::incoming_budget): it can shorten
//! the local deadline, never lengthen it. A malformed value is ignored with a `debug` event.

mod connect;
mod deadline;
mod first_frame;
mod replay;
mod retry;

pub use self::connect::{
    ConnectConfig, EndpointFuture, HttpEndpoint, HttpVersion, TlsNotConfigured,
};
pub use self::first_frame::{FirstFrame, FirstFrameBody, FirstFrameFuture, FirstFrameLayer};

pub use self::deadline::{
    DEADLINE_HEADER, GRPC_TIMEOUT, PropagateDeadline, PropagateDeadlineLayer, format_grpc_timeout,
    parse_grpc_timeout,
};
pub use self::replay::{DEFAULT_REPLAY_LIMIT, ReplayBody};
pub use self::retry::{HttpReplay, is_idempotent};
pub use crate::classify::HttpClassify;
