//! The discovery stream: range read, watch, resync.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchStream};
use futures_core::Stream;
use tokio::time::Instant;

use super::state::KeySet;
use super::{WatchClosed, value};
use crate::backoff::{Backoff, BackoffSeq};
use crate::discover::{BoxDiscover, Update};
use crate::rng::{SeedSource, SmallRng};
use crate::telemetry::MetricLabels;
use crate::timeout::Elapsed;
use crate::{BoxError, ConfigError};

/// Default first retry delay after a failure (full jitter, doubling up to [`DEFAULT_BACKOFF_MAX`]).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Default longest retry delay after repeated failures.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Default bound on one range read or watch creation.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Item = Result<Update, BoxError>;

/// A discovery source that follows the keys under an etcd prefix: see the
/// [module docs](crate::discover::etcd) for the key/value format and the consistency rules.
///
/// It is a `Stream<Item = Result<Update, BoxError>>`, driven by whoever polls it (the balancer's
/// background discovery task); it spawns nothing and stops all etcd traffic when dropped.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use meshwork::discover::etcd::EtcdDiscover;
///
/// # async fn run() -> Result<(), meshwork::BoxError> {
/// let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
/// let mut source = EtcdDiscover::new(client, "services/users")?;
/// // The first item is the complete set (`Update::Reset`), then one update per change.
/// while let Some(update) = source.next().await {
///     println!("{update:?}");
/// }
/// # Ok(()) }
/// ```
pub struct EtcdDiscover {
    inner: BoxDiscover,
    prefix: String,
}

impl fmt::Debug for EtcdDiscover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdDiscover")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdDiscover {
    /// Follows the keys under `prefix` (a `/` is appended if missing), with the default backoff
    /// and request timeout. An empty prefix is rejected.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `prefix` when `prefix` is empty or `/`.
    pub fn new(client: Client, prefix: impl Into<String>) -> Result<Self, ConfigError> {
        Self::builder(prefix)?.build(client)
    }

    /// A builder, to set the backoff, the request timeout, the randomness and the metric labels.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `prefix` when `prefix` is empty or `/`.
    pub fn builder(prefix: impl Into<String>) -> Result<EtcdDiscoverBuilder, ConfigError> {
        let prefix = normalize_prefix(prefix.into())?;
        Ok(EtcdDiscoverBuilder {
            prefix,
            backoff: Backoff::full_jitter(DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX)?,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            seeds: None,
            labels: MetricLabels::new(),
        })
    }

    /// The watched prefix, always ending with `/`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Stream for EtcdDiscover {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Builds an [`EtcdDiscover`].
///
/// ```
/// use std::time::Duration;
/// use meshwork::backoff::Backoff;
/// use meshwork::discover::etcd::EtcdDiscover;
/// use meshwork::rng::SeedSource;
///
/// let builder = EtcdDiscover::builder("services/users")?
///     .backoff(Backoff::full_jitter(Duration::from_millis(100), Duration::from_secs(2))?)
///     .request_timeout(Duration::from_secs(2))
///     .seed(SeedSource::from_seed(7));
/// assert_eq!(builder.prefix(), "services/users/");
/// assert_eq!(EtcdDiscover::builder("").unwrap_err().field(), "prefix");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct EtcdDiscoverBuilder {
    prefix: String,
    backoff: Backoff,
    request_timeout: Duration,
    seeds: Option<SeedSource>,
    labels: MetricLabels,
}

impl EtcdDiscoverBuilder {
    /// The delays between attempts after a failure (default: full jitter from
    /// [`DEFAULT_BACKOFF_BASE`] to [`DEFAULT_BACKOFF_MAX`]). The series starts again once a watch
    /// has stayed up for the policy's `max`.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The bound on one range read or one watch creation (default [`DEFAULT_REQUEST_TIMEOUT`]);
    /// zero is rejected by `build`. An established watch has no timeout: configure gRPC
    /// keep-alive on the client (`ConnectOptions::with_keep_alive`) to detect a silently dead
    /// connection.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The randomness for the backoff jitter (default: from entropy).
    #[must_use]
    pub fn seed(mut self, seeds: SeedSource) -> Self {
        self.seeds = Some(seeds);
        self
    }

    /// Static labels for this source's metrics (feature `metrics`).
    #[must_use]
    pub fn labels(mut self, labels: MetricLabels) -> Self {
        self.labels = labels;
        self
    }

    /// The watched prefix, always ending with `/`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks the settings, as [`build`](Self::build) does: `request_timeout` must be non-zero.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `request_timeout` when it is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::error::non_zero("request_timeout", self.request_timeout).map(drop)
    }

    /// The source, reading through `client`. Nothing is sent to etcd until the stream is polled.
    /// Fails when a setting is invalid (a zero `request_timeout`).
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`validate`](Self::validate).
    pub fn build(self, client: Client) -> Result<EtcdDiscover, ConfigError> {
        self.validate()?;
        let seeds = self.seeds.unwrap_or_default();
        let driver = Driver {
            #[cfg(feature = "metrics")]
            metrics: Metrics::new(&self.labels, &self.prefix),
            client,
            prefix: self.prefix.clone(),
            keys: KeySet::default(),
            watch: None,
            watch_from: None,
            watch_since: None,
            failed: false,
            backoff: self.backoff.sequence(),
            rng: seeds.rng(),
            request_timeout: self.request_timeout,
            pending: VecDeque::new(),
            reason: Reason::Initial,
        };
        #[cfg(not(feature = "metrics"))]
        let _ = self.labels;
        let inner = futures_util::stream::unfold(driver, |mut d| async move {
            let item = d.next().await;
            Some((item, d))
        });
        Ok(EtcdDiscover {
            inner: Box::pin(inner),
            prefix: self.prefix,
        })
    }
}

fn normalize_prefix(mut prefix: String) -> Result<String, ConfigError> {
    if prefix.is_empty() || prefix == "/" {
        return Err(ConfigError::new(
            "prefix",
            "must name a service (not empty, not `/`)",
        ));
    }
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(prefix)
}

/// Why the next range read happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Initial,
    Compacted,
    Reconnect,
}

#[cfg(feature = "metrics")]
struct Metrics {
    reload_initial: metrics::Counter,
    reload_compacted: metrics::Counter,
    reload_reconnect: metrics::Counter,
    errors: metrics::Counter,
    malformed: metrics::Counter,
    endpoints: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl Metrics {
    fn new(labels: &MetricLabels, prefix: &str) -> Self {
        crate::telemetry::describe_prefix("meshwork_etcd_");
        let base = labels.to_metrics(&[("prefix", prefix.to_owned())]);
        let reload = |reason: &'static str| {
            let mut l = base.clone();
            l.push(metrics::Label::new("reason", reason));
            metrics::counter!("meshwork_etcd_reloads_total", l)
        };
        Self {
            reload_initial: reload("initial"),
            reload_compacted: reload("compacted"),
            reload_reconnect: reload("reconnect"),
            errors: metrics::counter!("meshwork_etcd_errors_total", base.clone()),
            malformed: metrics::counter!("meshwork_etcd_malformed_values_total", base.clone()),
            endpoints: metrics::gauge!("meshwork_etcd_endpoints", base),
        }
    }

    fn reload(&self, reason: Reason) {
        match reason {
            Reason::Initial => &self.reload_initial,
            Reason::Compacted => &self.reload_compacted,
            Reason::Reconnect => &self.reload_reconnect,
        }
        .increment(1);
    }
}

struct Driver {
    client: Client,
    prefix: String,
    keys: KeySet,
    watch: Option<WatchStream>,
    /// The revision to watch from, after a successful read and before the watch exists.
    watch_from: Option<i64>,
    /// When the current watch was created: a watch that lived longer than the backoff's `max`
    /// resets the backoff series.
    watch_since: Option<Instant>,
    /// The last attempt failed: wait before the next one.
    failed: bool,
    backoff: BackoffSeq,
    rng: SmallRng,
    request_timeout: Duration,
    pending: VecDeque<Item>,
    reason: Reason,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

impl Driver {
    async fn next(&mut self) -> Item {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item;
            }
            let Some(watch) = self.watch.as_mut() else {
                if let Some(from) = self.watch_from.take() {
                    if let Err(e) = self.start_watch(from).await {
                        return self.fail(e);
                    }
                    continue;
                }
                if self.failed {
                    let delay = self.backoff.next_delay(&mut self.rng);
                    tracing::debug!(prefix = %self.prefix, ?delay, "etcd discovery: retrying after backoff");
                    tokio::time::sleep(delay).await;
                }
                return match self.read().await {
                    Ok(update) => Ok(update),
                    Err(e) => self.fail(e),
                };
            };
            match watch.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() != 0 {
                        tracing::warn!(
                            prefix = %self.prefix,
                            compact_revision = resp.compact_revision(),
                            "etcd discovery: watched revision was compacted; re-reading the prefix"
                        );
                        self.drop_watch();
                        self.reason = Reason::Compacted;
                        continue;
                    }
                    if resp.canceled() {
                        let err = WatchClosed::new(resp.cancel_reason());
                        self.drop_watch();
                        return self.fail(err.into());
                    }
                    self.apply(resp.events());
                }
                Ok(None) => {
                    self.drop_watch();
                    return self.fail(WatchClosed::new("").into());
                }
                Err(e) => {
                    self.drop_watch();
                    return self.fail(e.into());
                }
            }
        }
    }

    fn drop_watch(&mut self) {
        self.watch = None;
        if let Some(since) = self.watch_since.take()
            && since.elapsed() >= self.backoff.policy().max()
        {
            self.backoff.reset();
        }
    }

    /// Records a failure: the last good set stays, the next attempt waits for the backoff.
    fn fail(&mut self, err: BoxError) -> Item {
        tracing::warn!(prefix = %self.prefix, error = %err, "etcd discovery failed; keeping the last good set");
        #[cfg(feature = "metrics")]
        self.metrics.errors.increment(1);
        self.failed = true;
        self.reason = Reason::Reconnect;
        Err(err)
    }

    /// A range read of the prefix: the complete set, at a revision R. The watch from R+1 is
    /// created on the next poll, so a consumer that is slow to come back may find R+1 compacted:
    /// that is detected and answered by another read.
    async fn read(&mut self) -> Result<Update, BoxError> {
        let get = self
            .client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()));
        let resp = tokio::time::timeout(self.request_timeout, get)
            .await
            .map_err(|_| Elapsed::new())??;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut entries = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let ep = self.parse(kv.key(), kv.value());
            entries.push((kv.key().to_vec(), ep));
        }
        self.keys.reload(entries);
        self.watch_from = Some(revision + 1);
        let endpoints = self.keys.endpoints();
        #[cfg(feature = "metrics")]
        {
            self.metrics.reload(self.reason);
            self.metrics.endpoints.set(endpoints.len() as f64);
        }
        tracing::info!(
            prefix = %self.prefix,
            revision,
            endpoints = endpoints.len(),
            reason = ?self.reason,
            "etcd discovery: loaded the endpoint set"
        );
        Ok(Update::Reset(endpoints))
    }

    /// Watches the prefix from `from` (the revision after the last read).
    async fn start_watch(&mut self, from: i64) -> Result<(), BoxError> {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let watch = self.client.watch(self.prefix.as_str(), Some(options));
        let stream = tokio::time::timeout(self.request_timeout, watch)
            .await
            .map_err(|_| Elapsed::new())??;
        self.watch = Some(stream);
        self.watch_since = Some(Instant::now());
        self.failed = false;
        Ok(())
    }

    fn parse(&self, key: &[u8], val: &[u8]) -> Option<crate::discover::Endpoint> {
        match value::parse(val) {
            Ok(ep) => Some(ep),
            Err(why) => {
                #[cfg(feature = "metrics")]
                self.metrics.malformed.increment(1);
                tracing::warn!(
                    prefix = %self.prefix,
                    key = %String::from_utf8_lossy(key),
                    reason = %why,
                    "etcd discovery: skipping a malformed endpoint value; the key keeps its last good value"
                );
                None
            }
        }
    }

    fn apply(&mut self, events: &[etcd_client::Event]) {
        let mut out = Vec::new();
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            match ev.event_type() {
                EventType::Put => {
                    if let Some(ep) = self.parse(kv.key(), kv.value()) {
                        self.keys.put(kv.key().to_vec(), ep, &mut out);
                    }
                }
                EventType::Delete => self.keys.delete(kv.key().to_vec(), &mut out),
            }
        }
        if out.is_empty() {
            return;
        }
        #[cfg(feature = "metrics")]
        self.metrics.endpoints.set(self.keys.len() as f64);
        for update in out {
            match &update {
                Update::Insert(ep) => {
                    tracing::info!(prefix = %self.prefix, endpoint = %ep, "etcd discovery: endpoint added or changed")
                }
                Update::Remove(addr) => {
                    tracing::info!(prefix = %self.prefix, endpoint = %addr, "etcd discovery: endpoint removed")
                }
                Update::Reset(_) => {}
            }
            self.pending.push_back(Ok(update));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_gets_a_trailing_slash_and_empty_is_rejected() {
        assert_eq!(normalize_prefix("svc".into()).unwrap(), "svc/");
        assert_eq!(normalize_prefix("/a/b/".into()).unwrap(), "/a/b/");
        assert_eq!(
            normalize_prefix(String::new()).unwrap_err().field(),
            "prefix"
        );
        assert_eq!(normalize_prefix("/".into()).unwrap_err().field(), "prefix");
    }

    #[test]
    fn zero_request_timeout_is_rejected() {
        let err = EtcdDiscover::builder("svc")
            .unwrap()
            .request_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "request_timeout");
    }
}
