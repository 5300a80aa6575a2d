//! Discovery from ZooKeeper (feature `zookeeper`): a source that follows the children of a path,
//! in Finagle/Aurora *server-set* JSON or Airbnb *Nerve* JSON, and a helper that registers a
//! service as a server-set member.
//!
//! Many fleets that a Finagle-style stack serves were built on ZooKeeper: Finagle and Aurora
//! announce every instance as an ephemeral sequential znode under a service's path, and Airbnb's
//! SmartStack (Nerve registers, Synapse reads) does the same with its own JSON. meshwork reads
//! both, so a fleet moving to meshwork keeps the registry it has.
//!
//! - [`ZkDiscover`] is a discovery source: a `Stream<Item = Result<Update, BoxError>>` for the
//!   balancer (see [`discover`](crate::discover)).
//! - [`Registration`] creates the service's own server-set member and keeps it registered; it
//!   disappears when the registration, the process or its session dies.
//! - [`Ensemble`] says where ZooKeeper is and which session timeout to ask for; the source and
//!   the registration each make their own session from it (and a new one after a session is
//!   lost).
//!
//! The client is [`zookeeper_client`] (async, with one-shot watches that the server sets again
//! on reconnection); its session task runs on the application's tokio runtime.
//!
//! # Formats
//!
//! Every child of the path is one member; its data is a JSON object. Hosts must be IP addresses
//! (IPv6 with or without brackets): host names are not resolved, and such a child is malformed.
//!
//! ## Finagle/Aurora server set ([`Format::ServerSet`])
//!
//! Only children whose name starts with `member_` are members (Finagle writes
//! `member_0000000042`; other children are ignored).
//!
//! ```json
//! {
//!   "serviceEndpoint": {"host": "10.0.0.1", "port": 31010},
//!   "additionalEndpoints": {
//!     "http":  {"host": "10.0.0.1", "port": 31011},
//!     "admin": {"host": "10.0.0.1", "port": 9990}
//!   },
//!   "status": "ALIVE",
//!   "shard": 0
//! }
//! ```
//!
//! - `serviceEndpoint` (required): the address, unless an endpoint name is configured
//!   ([`Format::server_set_endpoint`], Finagle's `zk!host!/path!http`): then the entry of that
//!   name in `additionalEndpoints` is the address, and a member without it is malformed.
//! - `status` (required, a string): only `ALIVE` gets traffic. `DEAD`, `STARTING`, `STOPPING`,
//!   `STOPPED`, `WARNING` (or anything else) are well-formed members that are not used.
//! - `shard` (optional, a 32-bit integer): becomes the label `shard`.
//! - `port`: an integer from 1 to 65535.
//!
//! ## Nerve ([`Format::Nerve`])
//!
//! Every child is a member (Nerve writes `<name>_<sequence>`).
//!
//! ```json
//! {"host": "10.0.0.1", "port": 8080, "name": "i-0abc123", "weight": 2,
//!  "labels": {"az": "us-east-1a"}, "haproxy_server_options": "check"}
//! ```
//!
//! - `host`, `port` (required): the address.
//! - `name` (optional string): becomes the label `name`.
//! - `weight` (optional integer): the endpoint's weight; absent or `null` is 1, `0` means
//!   drained (well-formed, not used); negative, fractional or not a number is malformed.
//! - `labels` (optional object): its string fields become labels. Other fields are ignored.
//!
//! # Consistency
//!
//! - **Watches, no polling.** The source lists the children with a watch, then reads every
//!   member's data with a watch (all requests in flight at once). A children watch makes it list
//!   again and read only the new children; a data watch makes it read that child again. Each
//!   change ends with a [`Update::Reset`](crate::discover::Update) of the complete set, sent only
//!   when the set differs from the last one sent. A path that does not exist is an empty set,
//!   watched until it is created.
//! - **Duplicates.** Endpoints are identified by address: if two members name the same address,
//!   the member with the smaller name is used.
//! - **Lost connection.** The source reports [`Disconnected`] once and keeps the last good set;
//!   the client reconnects within the session timeout (with its own backoff: 100 ms doubling, so
//!   after a long outage its next attempt may be seconds away), and the source then reads the
//!   whole path again with new watches (ZooKeeper does not deliver every event that happened during the
//!   gap), so nothing is missed.
//! - **Lost session.** When the session expires (or is closed by another client), the watches
//!   are gone with it: the source reports [`SessionLost`], keeps the last good set, makes a new
//!   session after a backoff, sets every watch again and reads the whole path: a change made
//!   while it had no session arrives in that read.
//! - **Failures keep the last good set.** A failed connection (the client's
//!   [`zookeeper_client::Error`]), a read over the request timeout
//!   ([`timeout::Elapsed`](crate::timeout::Elapsed)) or a lost session is an `Err` item; nothing
//!   is removed; the source retries after a jittered backoff ([`backoff`](crate::backoff)).
//! - **Malformed children are skipped, never the set.** A child whose data does not parse is
//!   logged at warn with its name and the reason, and counted; the other members stay. When its
//!   data is fixed (a data watch fires), it is read again.
//!
//! The source spawns no task of its own and makes progress when polled; dropping it drops its
//! session, which removes its watches.
//!
//! # Metrics (feature `metrics`)
//!
//! Labelled with the source's [`MetricLabels`](crate::telemetry::MetricLabels), `path` and
//! `format` (`serverset` or `nerve`):
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `meshwork_zookeeper_reloads_total` | counter | full reads of the path; label `reason` = `initial`, `session` (a new session) or `reconnect` |
//! | `meshwork_zookeeper_errors_total` | counter | failures reported as `Err` items |
//! | `meshwork_zookeeper_malformed_children_total` | counter | children skipped as malformed |
//! | `meshwork_zookeeper_endpoints` | gauge | endpoints in the current set |
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use meshwork::discover::Update;
//! use meshwork::discover::zookeeper::{Ensemble, Format, Registration, ZkDiscover};
//!
//! # async fn run() -> Result<(), meshwork::BoxError> {
//! let zk = Ensemble::new(["127.0.0.1:2181"])?;
//!
//! // One side: a service registers itself as a server-set member.
//! let _me = Registration::register(&zk, "/services/users", "127.0.0.1:8080".parse()?).await?;
//!
//! // The other side: a client follows the service's members.
//! let mut users = ZkDiscover::new(zk, "/services/users", Format::default())?;
//! let Some(Ok(Update::Reset(endpoints))) = users.next().await else { unreachable!() };
//! assert!(endpoints.iter().any(|e| e.addr().port() == 8080));
//! # Ok(()) }
//! ```

mod ensemble;
mod error;
mod format;
mod nerve;
mod registration;
mod serverset;
mod source;

pub use self::ensemble::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_SESSION_TIMEOUT, Ensemble};
pub use self::error::{Disconnected, SessionLost};
pub use self::format::Format;
pub use self::registration::{Registration, RegistrationBuilder};
pub use self::source::{
    DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_REQUEST_TIMEOUT, ZkDiscover,
    ZkDiscoverBuilder,
};
