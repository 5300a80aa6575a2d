//! HTTP-specific parts (feature `http`): status classification, deadline headers, and (in later
//! modules) idempotency rules, body replay and the hyper connector.
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

pub use self::connect::{ConnectConfig, EndpointFuture, HttpEndpoint, HttpVersion};

pub use self::deadline::{
    DEADLINE_HEADER, GRPC_TIMEOUT, PropagateDeadline, PropagateDeadlineLayer, format_grpc_timeout,
    parse_grpc_timeout,
};
pub use crate::classify::HttpClassify;
