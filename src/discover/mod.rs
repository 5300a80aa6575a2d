//! Service discovery: where the endpoints of a service are.
//!
//! A discovery source is any stream of [`Update`]s — `Stream<Item = Result<Update, E>>` — that the
//! balancer consumes in the background. An update either replaces the whole set
//! ([`Update::Reset`]) or inserts or removes one endpoint. An `Err` item reports a failure of the
//! source: it is logged and counted, and the last good set stays in place. Only a positive statement
//! (`Update::Reset(vec![])`) empties the set.
//!
//! ## The source contract
//!
//! - **`Ok(update)`**: the set changed. Sources send a `Reset` when they learn a complete set and
//!   only when it differs from the last one they sent.
//! - **`Err(e)`**: the source failed (resolver timeout, unreadable or malformed file, …). The consumer
//!   keeps its last good set; the error is informational. A source keeps running after an error and
//!   recovers by itself.
//! - **end of stream** (`None`): the source is gone for good. Consumers treat it like a permanent
//!   failure — keep the last set — never as "no endpoints". A source that has nothing more to say
//!   (such as [`Static`]) therefore stays pending instead of ending.
//!
//! ## Sources
//!
//! | source | what | feature |
//! |---|---|---|
//! | [`Static`] | a fixed list | |
//! | [`Manual`] / [`ManualDiscover`] | a handle the application pushes changes through (coalesced, bounded) | |
//! | [`Dns`] | a `host:port` (A and AAAA) or an SRV name, re-resolved when the TTL expires | `dns` |
//! | [`WatchFile`] | a JSON or TOML list of endpoints in a file, polled for changes | `file` |
//! | `etcd::EtcdDiscover` | the keys under an etcd v3 prefix, watched | `etcd` |
//! | `zookeeper::ZkDiscover` | the children of a ZooKeeper path (Finagle server sets, Nerve), watched | `zookeeper` |
//!
//! Any other stream of `Result<Update, E>` works too; wrap it in [`Instrumented`] to give it the same
//! failure accounting as the built-in sources. To feed tower's own balancers, wrap a source in
//! [`TowerDiscover`], which turns it into a tower [`Discover`](tower::discover::Discover) stream.
//!
//! ## Observability
//!
//! The built-in sources log every failure with `tracing::warn!` (fields `source` and `error`) and
//! count it; a new set is a `debug` event. With feature `metrics`, each source emits (with the
//! static [`MetricLabels`](crate::telemetry::MetricLabels) it was given, plus `source`):
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `meshwork_discovery_errors_total` | counter | `source` | failures reported by the source (each one an `Err` item) |
//! | `meshwork_discovery_updates_total` | counter | `source` | updates published (a new set; for `manual`, each change made through the handle) |
//! | `meshwork_discovery_endpoints` | gauge | `source` | size of the last complete set published |
//!
//! `source` is `manual`, `dns` or `file` (or the name given to [`Instrumented`]).

mod endpoint;
#[cfg(feature = "etcd")]
pub mod etcd;
mod update;
#[cfg(feature = "zookeeper")]
pub mod zookeeper;

pub use self::endpoint::Endpoint;
pub use self::update::{BoxDiscover, Update};

// Sources (static list, programmatic handle, DNS, watched file) and the tower adapter.
#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "file")]
mod file;
mod instrument;
mod into_tower;
mod manual;
mod report;
mod static_list;
#[cfg(feature = "dns")]
pub use self::dns::{Dns, DnsBuilder, DnsError};
#[cfg(feature = "file")]
pub use self::file::{FileError, WatchFile, WatchFileBuilder};
pub use self::instrument::Instrumented;
pub use self::into_tower::TowerDiscover;
pub use self::manual::{Manual, ManualDiscover, ManualFailure};
pub use self::static_list::Static;
