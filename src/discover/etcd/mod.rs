//! Discovery from etcd v3 (feature `etcd`): a source that follows a key prefix, and a helper that
//! registers a service under a lease.
//!
//! A fleet that outgrows static lists and DNS keeps its endpoints in a registry that every machine
//! shares. etcd is the one that ships with every Kubernetes control plane, and its Go client has a
//! documented naming scheme for client-side balancing (`go.etcd.io/etcd/client/v3/naming/endpoints`);
//! meshwork reads and writes that same scheme, so services registered by Go tooling are discovered,
//! and services registered by meshwork are visible to Go resolvers.
//!
//! - [`EtcdDiscover`] is a discovery source: a `Stream<Item = Result<Update, BoxError>>` for the
//!   balancer (see [`discover`](crate::discover)).
//! - [`Registration`] puts the service's own endpoint under a lease and keeps it alive; the key
//!   disappears when the service deregisters or dies.
//!
//! # Key/value format
//!
//! Every key under the prefix is one endpoint. The prefix names the service; a `/` is appended if it
//! is missing, so the prefix `services/users` watches `services/users/…`. The key's name is free
//! (by convention `<prefix>/<ip:port>`, which is what [`Registration`] and Go's
//! `endpoints.Manager.AddEndpoint(ctx, "services/users/"+addr, …)` write); the value is a JSON
//! object in either of two forms:
//!
//! | form | example |
//! |---|---|
//! | etcd's endpoint manager (Go `endpoints.Endpoint`) | `{"Addr":"10.0.0.1:8080","Metadata":{"weight":3,"zone":"a"}}` |
//! | meshwork's own | `{"addr":"10.0.0.1:8080","weight":3,"labels":{"zone":"a"}}` |
//!
//! - `Addr` / `addr` (required): an `ip:port` socket address (`[v6]:port` for IPv6). Host names and
//!   addresses without a port are not resolved: such a value is malformed.
//! - `Metadata` (Go's `interface{}`): `null` or absent means nothing; a string becomes the label
//!   `metadata`; in an object, the string fields become labels and a numeric `weight` is the
//!   weight; other JSON types are ignored. Other top-level fields (Go's old `Op`) are ignored.
//! - `weight`: an integer from 1 to 2³²−1 (default 1). Zero, negative or fractional is malformed.
//! - `labels`: an object whose string fields become labels.
//!
//! Endpoints are identified by address: if two keys name the same address, the endpoint of the
//! smaller key (byte order) is used, and the address stays until no key names it.
//!
//! # Consistency
//!
//! - **No gap between the read and the watch.** The source reads the whole prefix with a range read,
//!   which returns the store's revision R, and then watches the prefix from revision R+1: every
//!   change after the read is delivered, none twice. The watch is created when the stream is polled
//!   after the `Reset`, so a consumer that comes back late may find R+1 compacted: see below.
//! - **Updates.** After each range read the source emits [`Update::Reset`](crate::discover::Update)
//!   with the complete set (the balancer diffs it against what it has); each watched change then
//!   emits [`Update::Insert`](crate::discover::Update) (new or changed endpoint) or
//!   [`Update::Remove`](crate::discover::Update). A change that does not change the effective set
//!   emits nothing.
//! - **Compaction.** If etcd compacted the history past the watched revision (the watch reports a
//!   compact revision), the source re-reads the prefix at once and emits a fresh `Reset`: no change
//!   is silently lost.
//! - **Failures keep the last good set.** A failed read, a failed or broken watch, or a lost
//!   connection is reported as an `Err` item (the etcd client's error, [`WatchClosed`], or
//!   [`timeout::Elapsed`](crate::timeout::Elapsed) when a read exceeds the request timeout);
//!   nothing is removed. The source retries after a jittered backoff
//!   ([`backoff`](crate::backoff)), with a fresh range read and `Reset`. Only a successful read
//!   that finds no keys emits `Reset(vec![])`.
//! - **Malformed values are skipped, never the set.** A value that does not parse is logged with a
//!   warning and ignored: the key keeps its last good endpoint, if it had one (as etcd's Go
//!   resolver does), and every other endpoint stays. Deleting the key removes it.
//!
//! The source spawns no task: it makes progress when polled, and dropping it cancels its watch.
//! An established watch has no timeout of its own; give the client gRPC keep-alive
//! (`etcd_client::ConnectOptions::with_keep_alive`) to notice a silently dead connection, with an
//! interval no shorter than the server's `--grpc-keepalive-min-time` (5 s by default): etcd closes
//! connections that ping more often.
//!
//! # Metrics (feature `metrics`)
//!
//! Labelled with the source's [`MetricLabels`](crate::telemetry::MetricLabels) and `prefix`:
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `meshwork_etcd_reloads_total` | counter | range reads that produced a `Reset`; label `reason` = `initial`, `compacted` or `reconnect` |
//! | `meshwork_etcd_errors_total` | counter | failures reported as `Err` items |
//! | `meshwork_etcd_malformed_values_total` | counter | values skipped as malformed |
//! | `meshwork_etcd_endpoints` | gauge | endpoints in the current set |
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use meshwork::discover::{Endpoint, Update};
//! use meshwork::discover::etcd::{EtcdDiscover, Registration};
//!
//! # async fn run() -> Result<(), meshwork::BoxError> {
//! let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
//!
//! // One side: a service registers itself.
//! let me = Endpoint::new("127.0.0.1:8080".parse()?);
//! let _registration = Registration::register(client.clone(), "services/users", me).await?;
//!
//! // The other side: a client follows the service's endpoints.
//! let mut users = EtcdDiscover::new(client, "services/users")?;
//! let Some(Ok(Update::Reset(endpoints))) = users.next().await else { unreachable!() };
//! assert!(endpoints.iter().any(|e| e.addr().port() == 8080));
//! # Ok(()) }
//! ```

mod error;
mod registration;
mod source;
mod state;
mod value;

pub use self::error::WatchClosed;
pub use self::registration::{DEFAULT_TTL, Registration, RegistrationBuilder};
pub use self::source::{
    DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_REQUEST_TIMEOUT, EtcdDiscover,
    EtcdDiscoverBuilder,
};
