//! The discovery stream: list the children with a watch, read each child with a watch, re-read
//! what a watch reports; a new session and a full read after a session is lost.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use zookeeper_client::{Client, EventType, SessionInfo, SessionState, StateWatcher, WatchedEvent};

use super::ensemble::{CurrentSession, Ensemble, check_path};
use super::format::{Format, Member};
use super::{Disconnected, SessionLost};
use crate::backoff::{Backoff, BackoffSeq};
use crate::discover::{BoxDiscover, Endpoint, Update};
use crate::rng::{SeedSource, SmallRng};
use crate::telemetry::MetricLabels;
use crate::timeout::Elapsed;
use crate::{BoxError, ConfigError};

/// Default first retry delay after a failure (full jitter, doubling up to [`DEFAULT_BACKOFF_MAX`]).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Default longest retry delay after repeated failures.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Default bound on one read of the path (the listing and the children's data).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Item = Result<Update, BoxError>;
type Watch = Pin<Box<dyn Future<Output = WatchedEvent> + Send>>;

/// A discovery source that follows the children of a ZooKeeper path, in server-set or Nerve
/// JSON: see the [module docs](crate::discover::zookeeper) for the formats and the consistency
/// rules.
///
/// It is a `Stream<Item = Result<Update, BoxError>>`, driven by whoever polls it (the balancer's
/// background discovery task); it spawns nothing of its own, and dropping it closes its session
/// (which removes its watches).
///
/// ```no_run
/// use futures_util::StreamExt;
/// use meshwork::discover::zookeeper::{Ensemble, Format, ZkDiscover};
///
/// # async fn run() -> Result<(), meshwork::BoxError> {
/// let zk = Ensemble::new(["127.0.0.1:2181"])?;
/// let mut source = ZkDiscover::new(zk, "/services/users", Format::server_set_endpoint("http")?)?;
/// // The first item is the complete set (`Update::Reset`), then a new `Reset` per change.
/// while let Some(update) = source.next().await {
///     println!("{update:?}");
/// }
/// # Ok(()) }
/// ```
pub struct ZkDiscover {
    inner: BoxDiscover,
    path: String,
    session: CurrentSession,
}

impl fmt::Debug for ZkDiscover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkDiscover")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ZkDiscover {
    /// Follows the children of `path` on `ensemble`, read as `format`, with the default backoff
    /// and request timeout. A path that is not absolute, or is `/`, is rejected.
    pub fn new(ensemble: Ensemble, path: &str, format: Format) -> Result<Self, ConfigError> {
        Self::builder(path, format)?.build(ensemble)
    }

    /// A builder, to set the backoff, the request timeout, the randomness and the metric labels.
    pub fn builder(path: &str, format: Format) -> Result<ZkDiscoverBuilder, ConfigError> {
        check_path(path)?;
        Ok(ZkDiscoverBuilder {
            path: path.to_owned(),
            format,
            backoff: Backoff::full_jitter(DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX)?,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            seeds: None,
            labels: MetricLabels::new(),
        })
    }

    /// The watched path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The ZooKeeper session the source holds now (`None` before the first poll and while it
    /// establishes a new one), for diagnostics.
    pub fn session(&self) -> Option<SessionInfo> {
        self.session.get()
    }
}

impl Stream for ZkDiscover {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Builds a [`ZkDiscover`].
///
/// ```
/// use std::time::Duration;
/// use meshwork::backoff::Backoff;
/// use meshwork::discover::zookeeper::{Ensemble, Format, ZkDiscover};
/// use meshwork::rng::SeedSource;
///
/// let builder = ZkDiscover::builder("/services/users", Format::Nerve)?
///     .backoff(Backoff::full_jitter(Duration::from_millis(100), Duration::from_secs(2))?)
///     .request_timeout(Duration::from_secs(2))
///     .seed(SeedSource::from_seed(7));
/// assert_eq!(builder.path(), "/services/users");
/// assert_eq!(ZkDiscover::builder("services", Format::Nerve).unwrap_err().field(), "path");
/// let _source = builder.build(Ensemble::new(["127.0.0.1:2181"])?);
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ZkDiscoverBuilder {
    path: String,
    format: Format,
    backoff: Backoff,
    request_timeout: Duration,
    seeds: Option<SeedSource>,
    labels: MetricLabels,
}

impl ZkDiscoverBuilder {
    /// The delays between attempts after a failure (default: full jitter from
    /// [`DEFAULT_BACKOFF_BASE`] to [`DEFAULT_BACKOFF_MAX`]). The series starts again after a
    /// successful read.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The bound on one read of the path: the listing plus the data of the children that need
    /// reading (default [`DEFAULT_REQUEST_TIMEOUT`]); zero is rejected.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The randomness for the backoff jitter (default: from entropy).
    pub fn seed(mut self, seeds: SeedSource) -> Self {
        self.seeds = Some(seeds);
        self
    }

    /// Static labels for this source's metrics (feature `metrics`).
    pub fn labels(mut self, labels: MetricLabels) -> Self {
        self.labels = labels;
        self
    }

    /// The watched path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Checks the settings, as [`build`](Self::build) does: `request_timeout` must be non-zero.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `request_timeout`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::error::non_zero("request_timeout", self.request_timeout).map(drop)
    }

    /// The source, with sessions on `ensemble`. Nothing is sent to ZooKeeper until the stream
    /// is polled.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming an invalid setting: `request_timeout`, or one of the ensemble's
    /// (`ensemble.session_timeout`, `ensemble.connect_timeout`).
    pub fn build(self, ensemble: Ensemble) -> Result<ZkDiscover, ConfigError> {
        self.validate()?;
        ensemble.validate().map_err(|e| e.within("ensemble"))?;
        let session = CurrentSession::default();
        let driver = Driver {
            #[cfg(feature = "metrics")]
            metrics: Metrics::new(&self.labels, &self.path, self.format.name()),
            ensemble,
            path: self.path.clone(),
            format: self.format,
            client: None,
            state: None,
            session: session.clone(),
            members: BTreeMap::new(),
            watches: FuturesUnordered::new(),
            reread_all: true,
            relist: false,
            refetch: BTreeSet::new(),
            published: None,
            disconnected: false,
            failed: false,
            backoff: self.backoff.sequence(),
            rng: self.seeds.unwrap_or_default().rng(),
            request_timeout: self.request_timeout,
            reason: Reason::Initial,
        };
        #[cfg(not(feature = "metrics"))]
        let _ = self.labels;
        let inner = futures_util::stream::unfold(driver, |mut d| async move {
            let item = d.next().await;
            Some((item, d))
        });
        Ok(ZkDiscover {
            inner: Box::pin(inner),
            path: self.path,
            session,
        })
    }
}

/// Why the next full read happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Initial,
    /// A new session after the last one was lost.
    Session,
    /// The same session, after a lost connection or a failed read.
    Reconnect,
}

#[cfg(feature = "metrics")]
struct Metrics {
    reload_initial: metrics::Counter,
    reload_session: metrics::Counter,
    reload_reconnect: metrics::Counter,
    errors: metrics::Counter,
    malformed: metrics::Counter,
    endpoints: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl Metrics {
    fn new(labels: &MetricLabels, path: &str, format: &'static str) -> Self {
        crate::telemetry::describe_prefix("meshwork_zookeeper_");
        let base = labels.to_metrics(&[("path", path.to_owned()), ("format", format.to_owned())]);
        let reload = |reason: &'static str| {
            let mut l = base.clone();
            l.push(metrics::Label::new("reason", reason));
            metrics::counter!("meshwork_zookeeper_reloads_total", l)
        };
        Self {
            reload_initial: reload("initial"),
            reload_session: reload("session"),
            reload_reconnect: reload("reconnect"),
            errors: metrics::counter!("meshwork_zookeeper_errors_total", base.clone()),
            malformed: metrics::counter!(
                "meshwork_zookeeper_malformed_children_total",
                base.clone()
            ),
            endpoints: metrics::gauge!("meshwork_zookeeper_endpoints", base),
        }
    }

    fn reload(&self, reason: Reason) {
        match reason {
            Reason::Initial => &self.reload_initial,
            Reason::Session => &self.reload_session,
            Reason::Reconnect => &self.reload_reconnect,
        }
        .increment(1);
    }
}

/// What woke the driver while it waited.
enum Wake {
    Event(WatchedEvent),
    State(SessionState),
}

struct Driver {
    ensemble: Ensemble,
    path: String,
    format: Format,
    client: Option<Client>,
    state: Option<StateWatcher>,
    session: CurrentSession,
    /// Every member child by name, with its endpoint if it serves (`None`: malformed or not
    /// serving). Sorted by name, so the first child naming an address wins, as in Finagle.
    members: BTreeMap<String, Option<Endpoint>>,
    /// The pending one-shot watches: the path's children (or its existence), and each member's
    /// data. Each fires once; what it reports is read again with a new watch.
    watches: FuturesUnordered<Watch>,
    /// Read everything again, with new watches (first read, new session, reconnection).
    reread_all: bool,
    /// The children changed: list them again, read the new ones.
    relist: bool,
    /// These members' data changed: read them again.
    refetch: BTreeSet<String>,
    /// The last set sent.
    published: Option<Vec<Endpoint>>,
    /// The connection is lost (the session may live on): wait for it before reading.
    disconnected: bool,
    /// The last attempt failed: wait for the backoff before the next one.
    failed: bool,
    backoff: BackoffSeq,
    rng: SmallRng,
    request_timeout: Duration,
    reason: Reason,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

impl Driver {
    async fn next(&mut self) -> Item {
        loop {
            if self.client.is_none() {
                self.pause_after_failure().await;
                match self.ensemble.connect().await {
                    Ok(client) => {
                        tracing::info!(
                            path = %self.path,
                            session = %client.session_id(),
                            "zookeeper discovery: session established"
                        );
                        self.state = Some(client.state_watcher());
                        self.session.set(Some(client.session().clone()));
                        self.client = Some(client);
                        self.disconnected = false;
                        self.reread_all = true;
                    }
                    Err(e) => return self.fail(e),
                }
            }
            let dirty = self.reread_all || self.relist || !self.refetch.is_empty();
            if dirty && !self.disconnected {
                self.pause_after_failure().await;
                let full = self.reread_all;
                match tokio::time::timeout(self.request_timeout, self.refresh()).await {
                    Ok(Ok(())) => {
                        self.failed = false;
                        self.backoff.reset();
                        if full {
                            #[cfg(feature = "metrics")]
                            self.metrics.reload(self.reason);
                            tracing::debug!(path = %self.path, reason = ?self.reason, "zookeeper discovery: read the path");
                        }
                        if let Some(update) = self.publish() {
                            return Ok(update);
                        }
                        continue;
                    }
                    Ok(Err(e)) => {
                        self.reread_all = true;
                        self.reason = Reason::Reconnect;
                        if let Some(zk) = e.downcast_ref::<zookeeper_client::Error>()
                            && matches!(
                                zk,
                                zookeeper_client::Error::SessionExpired
                                    | zookeeper_client::Error::ClientClosed
                                    | zookeeper_client::Error::AuthFailed
                            )
                        {
                            self.lose_session();
                        }
                        return self.fail(e);
                    }
                    Err(_) => {
                        self.reread_all = true;
                        self.reason = Reason::Reconnect;
                        return self.fail(Elapsed::new().into());
                    }
                }
            }
            let wake = {
                let Some(state) = self.state.as_mut() else {
                    continue;
                };
                let watches = &mut self.watches;
                tokio::select! {
                    Some(event) = watches.next(), if !watches.is_empty() => Wake::Event(event),
                    state = state.changed() => Wake::State(state),
                }
            };
            let lost = match wake {
                Wake::Event(event) => self.on_event(event),
                Wake::State(state) => self.on_state(state),
            };
            if let Some(err) = lost {
                let disconnected = err.is::<Disconnected>();
                let item = self.fail(err);
                // The client reconnects by itself; the read after it needs no backoff.
                if disconnected {
                    self.failed = false;
                }
                return item;
            }
        }
    }

    async fn pause_after_failure(&mut self) {
        if self.failed {
            let delay = self.backoff.next_delay(&mut self.rng);
            tracing::debug!(path = %self.path, ?delay, "zookeeper discovery: retrying after backoff");
            tokio::time::sleep(delay).await;
        }
    }

    /// A watch fired. Returns an error to report if the session is gone.
    fn on_event(&mut self, event: WatchedEvent) -> Option<BoxError> {
        match event.event_type {
            EventType::Session => {
                if event.session_state.is_terminated() {
                    return Some(self.session_ended(event.session_state));
                }
            }
            _ if event.path == self.path => self.relist = true,
            EventType::NodeDataChanged => {
                if let Some(child) = self.child_name(&event.path)
                    && self.members.contains_key(child)
                {
                    self.refetch.insert(child.to_owned());
                }
            }
            EventType::NodeDeleted => {
                if let Some(child) = self.child_name(&event.path) {
                    let child = child.to_owned();
                    self.members.remove(&child);
                    self.refetch.remove(&child);
                    // The children watch fires too; publishing now spares a round trip.
                    self.relist = true;
                }
            }
            EventType::NodeCreated | EventType::NodeChildrenChanged => {}
        }
        None
    }

    /// The session changed state. Returns an error to report (a lost connection once, a lost
    /// session).
    fn on_state(&mut self, state: SessionState) -> Option<BoxError> {
        match state {
            SessionState::Disconnected => {
                if self.disconnected {
                    return None;
                }
                self.disconnected = true;
                Some(Disconnected.into())
            }
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                if self.disconnected {
                    tracing::info!(path = %self.path, "zookeeper discovery: reconnected; reading the path again");
                    self.disconnected = false;
                    self.reread_all = true;
                    self.reason = Reason::Reconnect;
                }
                None
            }
            SessionState::Expired | SessionState::Closed | SessionState::AuthFailed => {
                Some(self.session_ended(state))
            }
        }
    }

    fn session_ended(&mut self, state: SessionState) -> BoxError {
        self.lose_session();
        SessionLost::new(format!("{state:?}")).into()
    }

    /// Drops the session and its watches; the next round makes a new one and reads everything.
    fn lose_session(&mut self) {
        self.client = None;
        self.state = None;
        self.watches = FuturesUnordered::new();
        self.session.set(None);
        self.reread_all = true;
        self.reason = Reason::Session;
    }

    fn child_name<'a>(&self, path: &'a str) -> Option<&'a str> {
        path.strip_prefix(self.path.as_str())?.strip_prefix('/')
    }

    /// Records a failure: the last good set stays, the next attempt waits for the backoff.
    fn fail(&mut self, err: BoxError) -> Item {
        tracing::warn!(path = %self.path, error = %err, "zookeeper discovery failed; keeping the last good set");
        #[cfg(feature = "metrics")]
        self.metrics.errors.increment(1);
        self.failed = true;
        Err(err)
    }

    /// Reads what the watches said changed (or everything), setting new watches first.
    async fn refresh(&mut self) -> Result<(), BoxError> {
        let client = self.client.clone().ok_or("no ZooKeeper session")?;
        if self.reread_all {
            self.watches = FuturesUnordered::new();
            self.members.clear();
            self.refetch.clear();
            self.relist = true;
            self.reread_all = false;
        }
        if self.relist {
            let children = self.list(&client).await?;
            let listed: HashSet<&str> = children.iter().map(String::as_str).collect();
            self.members
                .retain(|name, _| listed.contains(name.as_str()));
            self.refetch.retain(|name| listed.contains(name.as_str()));
            let new: Vec<String> = children
                .into_iter()
                .filter(|c| !self.members.contains_key(c))
                .collect();
            self.fetch(&client, new).await?;
            self.relist = false;
        }
        if !self.refetch.is_empty() {
            let names = std::mem::take(&mut self.refetch).into_iter().collect();
            self.fetch(&client, names).await?;
        }
        Ok(())
    }

    /// The member children of the path, with a watch on them (or, if the path does not exist,
    /// on its creation: an absent path is an empty set).
    async fn list(&mut self, client: &Client) -> Result<Vec<String>, BoxError> {
        loop {
            match client.list_and_watch_children(&self.path).await {
                Ok((children, watch)) => {
                    self.watches.push(Box::pin(watch.changed()));
                    return Ok(children
                        .into_iter()
                        .filter(|c| self.format.is_member(c))
                        .collect());
                }
                Err(zookeeper_client::Error::NoNode) => {
                    let (stat, watch) = client.check_and_watch_stat(&self.path).await?;
                    self.watches.push(Box::pin(watch.changed()));
                    if stat.is_none() {
                        tracing::debug!(path = %self.path, "zookeeper discovery: the path does not exist (no endpoints)");
                        return Ok(Vec::new());
                    }
                    // Created between the two requests: list it.
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads (and watches) these children's data, all requests in flight at once.
    async fn fetch(&mut self, client: &Client, names: Vec<String>) -> Result<(), BoxError> {
        let reads: Vec<_> = names
            .iter()
            .map(|name| client.get_and_watch_data(&format!("{}/{name}", self.path)))
            .collect();
        let results = futures_util::future::join_all(reads).await;
        for (name, result) in names.into_iter().zip(results) {
            match result {
                Ok((data, _stat, watch)) => {
                    self.watches.push(Box::pin(watch.changed()));
                    let member = self.parse(&name, &data);
                    self.members.insert(name, member);
                }
                // Deleted since the listing: the children watch reports it.
                Err(zookeeper_client::Error::NoNode) => {
                    self.members.remove(&name);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn parse(&self, child: &str, data: &[u8]) -> Option<Endpoint> {
        match self.format.parse(data) {
            Ok(Member::Serving(ep)) => Some(ep),
            Ok(Member::NotServing(why)) => {
                tracing::debug!(path = %self.path, child, reason = %why, "zookeeper discovery: member not serving");
                None
            }
            Err(why) => {
                #[cfg(feature = "metrics")]
                self.metrics.malformed.increment(1);
                tracing::warn!(
                    path = %self.path,
                    child,
                    format = self.format.name(),
                    reason = %why,
                    "zookeeper discovery: skipping a malformed child"
                );
                None
            }
        }
    }

    /// The complete set, if it differs from the last one sent.
    fn publish(&mut self) -> Option<Update> {
        let mut by_addr: BTreeMap<std::net::SocketAddr, Endpoint> = BTreeMap::new();
        for ep in self.members.values().flatten() {
            by_addr.entry(ep.addr()).or_insert_with(|| ep.clone());
        }
        let endpoints: Vec<Endpoint> = by_addr.into_values().collect();
        if self.published.as_ref() == Some(&endpoints) {
            return None;
        }
        #[cfg(feature = "metrics")]
        self.metrics.endpoints.set(endpoints.len() as f64);
        tracing::info!(
            path = %self.path,
            endpoints = endpoints.len(),
            members = self.members.len(),
            "zookeeper discovery: new endpoint set"
        );
        self.published = Some(endpoints.clone());
        Some(Update::Reset(endpoints))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_path_and_zero_timeout_are_rejected() {
        assert_eq!(
            ZkDiscover::builder("/", Format::Nerve).unwrap_err().field(),
            "path"
        );
        let err = ZkDiscover::builder("/svc", Format::Nerve)
            .unwrap()
            .request_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "request_timeout");
    }
}
