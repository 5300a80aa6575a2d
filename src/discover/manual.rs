use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::watch;

use super::report::Reporter;
use super::{BoxDiscover, Endpoint, Update};
use crate::BoxError;
use crate::telemetry::MetricLabels;

/// A programmatic discovery source: a cloneable handle that pushes endpoint changes to any number
/// of [`ManualDiscover`] streams.
///
/// Updates are *coalesced*, never queued: the handle keeps the current complete set, and each
/// stream yields an [`Update::Reset`] with the latest set whenever it changed since the stream last
/// yielded. A slow consumer therefore sees the newest set, not a backlog, and memory stays bounded
/// by the size of the set whatever the rate of updates.
///
/// Until the first [`set`](Self::set), [`insert`](Self::insert) or [`remove`](Self::remove), the set
/// is *unknown* and streams yield nothing (a handle built with [`with_endpoints`](Self::with_endpoints)
/// starts known). When every handle is dropped, the streams end after yielding the final set: for
/// consumers, "source gone, keep the last set".
///
/// [`fail`](Self::fail) reports a failure of whatever feeds the handle (for example a registry the
/// application polls): the failure is logged and counted once, and every stream yields it as an
/// `Err` item ([`ManualFailure`]), which consumers treat as "keep the last good set".
///
/// ```
/// use futures_util::StreamExt;
/// use meshwork::discover::{Endpoint, Manual, Update};
///
/// # tokio_test::block_on(async {
/// let a = Endpoint::new("127.0.0.1:8001".parse().unwrap());
/// let b = Endpoint::new("127.0.0.1:8002".parse().unwrap());
/// let handle = Manual::new();
/// let mut stream = handle.subscribe();
///
/// handle.insert(a.clone());
/// handle.insert(b.clone());
/// handle.remove(a.addr());
/// // Three changes, one update: the latest complete set.
/// assert_eq!(stream.next().await.unwrap().unwrap(), Update::Reset(vec![b]));
/// # });
/// ```
#[derive(Clone)]
pub struct Manual {
    shared: Arc<Shared>,
}

struct Shared {
    tx: watch::Sender<State>,
    reporter: Reporter,
}

#[derive(Default)]
struct State {
    /// `None` until the set is first known.
    endpoints: Option<BTreeMap<SocketAddr, Endpoint>>,
    set_gen: u64,
    failure: Option<Arc<dyn Error + Send + Sync>>,
    fail_gen: u64,
}

impl Manual {
    /// A handle whose set is not known yet.
    #[must_use]
    pub fn new() -> Self {
        Self::build(State::default(), &MetricLabels::new())
    }

    /// A handle that starts with a known set.
    pub fn with_endpoints(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        let handle = Self::new();
        handle.set(endpoints);
        handle
    }

    /// A handle whose metrics carry `labels` (see the [module docs](super) for the metric names).
    #[must_use]
    pub fn with_labels(labels: &MetricLabels) -> Self {
        Self::build(State::default(), labels)
    }

    fn build(state: State, labels: &MetricLabels) -> Self {
        let (tx, _) = watch::channel(state);
        Self {
            shared: Arc::new(Shared {
                tx,
                reporter: Reporter::new("manual", labels),
            }),
        }
    }

    /// Replaces the whole set. An empty list positively says the service has no endpoints. When two
    /// endpoints share an address, the last one wins.
    pub fn set(&self, endpoints: impl IntoIterator<Item = Endpoint>) {
        let map: BTreeMap<_, _> = endpoints.into_iter().map(|e| (e.addr(), e)).collect();
        self.modify(|set| *set = map);
    }

    /// Adds an endpoint, or replaces the one with the same address (new weight or labels).
    pub fn insert(&self, endpoint: Endpoint) {
        self.modify(|set| {
            set.insert(endpoint.addr(), endpoint);
        });
    }

    /// Removes the endpoint at `addr`, if present.
    pub fn remove(&self, addr: SocketAddr) {
        self.modify(|set| {
            set.remove(&addr);
        });
    }

    /// Reports a failure of whatever feeds this handle. The set is unchanged; every stream yields
    /// the failure once (a failure superseded by a newer one before a stream looked is skipped).
    pub fn fail(&self, err: impl Into<BoxError>) {
        let err: Arc<dyn Error + Send + Sync> = Arc::from(err.into());
        self.shared.reporter.error(&*err);
        self.shared.tx.send_modify(|s| {
            s.failure = Some(err);
            s.fail_gen += 1;
        });
    }

    /// The current set, or `None` if it is not known yet.
    #[must_use]
    pub fn endpoints(&self) -> Option<Vec<Endpoint>> {
        let state = self.shared.tx.borrow();
        state
            .endpoints
            .as_ref()
            .map(|m| m.values().cloned().collect())
    }

    /// A new stream of this handle's updates. It first yields the current set, if known.
    pub fn subscribe(&self) -> ManualDiscover {
        let rx = self.shared.tx.subscribe();
        let seen_fail = rx.borrow().fail_gen;
        let sub = Subscriber {
            rx,
            seen_set: 0,
            seen_fail,
        };
        ManualDiscover {
            inner: Box::pin(futures_util::stream::unfold(sub, Subscriber::next)),
        }
    }

    fn modify(&self, f: impl FnOnce(&mut BTreeMap<SocketAddr, Endpoint>)) {
        let mut len = 0;
        self.shared.tx.send_modify(|s| {
            let set = s.endpoints.get_or_insert_with(BTreeMap::new);
            f(set);
            len = set.len();
            s.set_gen += 1;
        });
        self.shared.reporter.reset(len);
    }
}

impl Default for Manual {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Manual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.tx.borrow();
        f.debug_struct("Manual")
            .field("endpoints", &state.endpoints.as_ref().map(BTreeMap::len))
            .finish()
    }
}

struct Subscriber {
    rx: watch::Receiver<State>,
    seen_set: u64,
    seen_fail: u64,
}

impl Subscriber {
    async fn next(mut self) -> Option<(Result<Update, BoxError>, Self)> {
        loop {
            {
                let state = self.rx.borrow_and_update();
                if state.fail_gen != self.seen_fail {
                    self.seen_fail = state.fail_gen;
                    if let Some(cause) = &state.failure {
                        let err = ManualFailure {
                            cause: cause.clone(),
                        };
                        drop(state);
                        return Some((Err(Box::new(err)), self));
                    }
                }
                if state.set_gen != self.seen_set {
                    self.seen_set = state.set_gen;
                    if let Some(set) = &state.endpoints {
                        let update = Update::Reset(set.values().cloned().collect());
                        drop(state);
                        return Some((Ok(update), self));
                    }
                }
            }
            // Every handle dropped (and the final state already yielded): the source is gone.
            self.rx.changed().await.ok()?;
        }
    }
}

/// The stream side of a [`Manual`] handle: a discovery source of coalesced [`Update::Reset`]s.
pub struct ManualDiscover {
    inner: BoxDiscover,
}

impl Stream for ManualDiscover {
    type Item = Result<Update, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for ManualDiscover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualDiscover").finish_non_exhaustive()
    }
}

/// The failure a [`Manual`] handle reported with [`Manual::fail`]; its source is the original error.
#[derive(Clone, Debug)]
pub struct ManualFailure {
    cause: Arc<dyn Error + Send + Sync>,
}

impl fmt::Display for ManualFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "discovery source reported a failure: {}", self.cause)
    }
}

impl Error for ManualFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_test::{assert_pending, assert_ready};

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(([127, 0, 0, 1], port).into())
    }

    #[test]
    fn unknown_until_first_change() {
        let handle = Manual::new();
        let mut stream = tokio_test::task::spawn(handle.subscribe());
        assert_pending!(stream.poll_next());
        assert_eq!(handle.endpoints(), None);
        handle.insert(ep(1));
        assert!(stream.is_woken());
        let update = assert_ready!(stream.poll_next()).unwrap().unwrap();
        assert_eq!(update, Update::Reset(vec![ep(1)]));
        assert_pending!(stream.poll_next());
    }

    #[test]
    fn coalesces_many_updates_into_the_latest_set() {
        let handle = Manual::with_endpoints([ep(1)]);
        let mut stream = tokio_test::task::spawn(handle.subscribe());
        for port in 2..1_000 {
            handle.insert(ep(port));
        }
        for port in 2..500 {
            handle.remove(ep(port).addr());
        }
        let heavy = ep(999).with_weight(5).unwrap().with_label("zone", "b");
        handle.insert(heavy.clone());
        let update = assert_ready!(stream.poll_next()).unwrap().unwrap();
        let Update::Reset(set) = update else {
            panic!("expected a reset, got {update:?}")
        };
        assert_eq!(set.len(), 1 + 500);
        assert_eq!(set[0], ep(1));
        assert_eq!(set.last(), Some(&heavy));
        // One snapshot for all those changes: nothing else is queued.
        assert_pending!(stream.poll_next());
    }

    #[test]
    fn set_replaces_and_empty_is_positive() {
        let handle = Manual::with_endpoints([ep(1), ep(2)]);
        let mut stream = tokio_test::task::spawn(handle.subscribe());
        assert_eq!(
            assert_ready!(stream.poll_next()).unwrap().unwrap(),
            Update::Reset(vec![ep(1), ep(2)])
        );
        handle.set(Vec::new());
        assert_eq!(
            assert_ready!(stream.poll_next()).unwrap().unwrap(),
            Update::Reset(Vec::new())
        );
    }

    #[test]
    fn failure_is_an_error_item_and_keeps_the_set() {
        let handle = Manual::with_endpoints([ep(1)]);
        let mut stream = tokio_test::task::spawn(handle.subscribe());
        assert_ready!(stream.poll_next()).unwrap().unwrap();
        handle.fail("registry unreachable");
        let err = assert_ready!(stream.poll_next()).unwrap().unwrap_err();
        let failure = err
            .downcast_ref::<ManualFailure>()
            .expect("a ManualFailure");
        assert!(failure.to_string().contains("registry unreachable"));
        assert!(failure.source().is_some());
        // No reset follows a failure: the set did not change.
        assert_pending!(stream.poll_next());
        assert_eq!(handle.endpoints(), Some(vec![ep(1)]));
    }

    #[test]
    fn subscribers_are_independent_and_see_the_current_set() {
        let handle = Manual::with_endpoints([ep(1)]);
        let mut a = tokio_test::task::spawn(handle.subscribe());
        assert_ready!(a.poll_next()).unwrap().unwrap();
        handle.insert(ep(2));
        let mut b = tokio_test::task::spawn(handle.subscribe());
        let want = Update::Reset(vec![ep(1), ep(2)]);
        assert_eq!(assert_ready!(a.poll_next()).unwrap().unwrap(), want);
        assert_eq!(assert_ready!(b.poll_next()).unwrap().unwrap(), want);
    }

    #[test]
    fn ends_when_every_handle_is_dropped_after_the_final_set() {
        let handle = Manual::new();
        let clone = handle.clone();
        let mut stream = tokio_test::task::spawn(handle.subscribe());
        drop(handle);
        clone.insert(ep(7));
        drop(clone);
        assert_eq!(
            assert_ready!(stream.poll_next()).unwrap().unwrap(),
            Update::Reset(vec![ep(7)])
        );
        assert!(assert_ready!(stream.poll_next()).is_none());
    }

    #[tokio::test]
    async fn feeds_a_consumer_task_across_threads() {
        let handle = Manual::new();
        let mut stream = handle.subscribe();
        let consumer = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok(Update::Reset(set))) if set.len() == 100 => return set,
                    Some(_) => continue,
                    None => panic!("source ended"),
                }
            }
        });
        for port in 0..100 {
            handle.insert(ep(port));
            tokio::task::yield_now().await;
        }
        assert_eq!(consumer.await.unwrap().len(), 100);
    }
}
