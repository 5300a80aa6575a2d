//! Service discovery: where the endpoints of a service are.
//!
//! A discovery source is any stream of [`Update`]s — `Stream<Item = Result<Update, E>>` — that the
//! balancer consumes in the background. An update either replaces the whole set
//! ([`Update::Reset`]) or inserts or removes one endpoint. An `Err` item reports a failure of the
//! source: it is logged and counted, and the last good set stays in place. Only a positive statement
//! (`Update::Reset(vec![])`) empties the set.

mod endpoint;
#[cfg(feature = "etcd")]
pub mod etcd;
mod update;

pub use self::endpoint::Endpoint;
pub use self::update::{BoxDiscover, Update};
