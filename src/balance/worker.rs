//! The background task that applies discovery updates to the balancer's endpoint set.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::poll_fn;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::Poll;

use futures_core::Stream;
use futures_util::FutureExt;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Duration, Instant, Sleep};

use super::load::{EndpointLoad, Load};
use super::service::Shared;
use super::snapshot::{Slot, Snapshot};
use crate::BoxError;
use crate::discover::{Endpoint, Update};

/// At most this many updates are applied before the new set is published and the task yields, so
/// a source that is always ready neither starves the runtime nor delays publication forever.
/// Errors and successes alike count towards it.
const BATCH: usize = 4096;
/// After this many errors in a row, the source is polled again only after a pause, doubling from
/// [`ERROR_PAUSE`] to [`MAX_ERROR_PAUSE`]: a source that keeps failing while always ready must not
/// turn the task into a busy loop (our own sources wait between their retries; any stream may be
/// given).
const ERROR_BURST: u32 = 16;
const ERROR_PAUSE: Duration = Duration::from_millis(10);
const MAX_ERROR_PAUSE: Duration = Duration::from_secs(1);

struct Entry<K, S> {
    key: K,
    /// The endpoint as discovered (`None` for services from a tower `Discover`).
    endpoint: Option<Endpoint>,
    slot: Arc<Slot<S>>,
}

/// The task's working copy of the endpoint set, in a deterministic order (insertion order, with
/// removals filled by the last entry), indexed by key.
pub(crate) struct Set<K, S> {
    entries: Vec<Entry<K, S>>,
    index: HashMap<K, usize>,
    load: Load,
    /// The balancer's waiters, woken through each slot's watch.
    waiters: Arc<Notify>,
    dirty: bool,
    added: usize,
    removed: usize,
}

impl<K: Hash + Eq + Clone + Debug, S> Set<K, S> {
    fn new(load: Load, waiters: Arc<Notify>) -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
            load,
            waiters,
            dirty: false,
            added: 0,
            removed: 0,
        }
    }

    /// Adds an endpoint, or updates the one with the same key. An identical discovered endpoint is
    /// left alone. Otherwise `make` is given the current service, if any: a metadata change
    /// (weight, labels) passes it on, so that the endpoint keeps its breaker state and its
    /// connections; a new service from a tower `Discover` replaces it. The load is kept either way.
    pub(crate) fn upsert(
        &mut self,
        key: K,
        endpoint: Option<Endpoint>,
        weight: u32,
        make: impl FnOnce(Option<&S>) -> S,
    ) {
        let watch = || super::watch::Watch::new(self.waiters.clone());
        match self.index.get(&key) {
            Some(&i) => {
                let entry = &mut self.entries[i];
                if endpoint.is_some() && entry.endpoint == endpoint {
                    return;
                }
                tracing::debug!(endpoint = ?key, "balancer endpoint updated");
                let service = make(Some(&entry.slot.service));
                entry.slot = Arc::new(Slot::new(
                    service,
                    entry.slot.load.clone(),
                    weight,
                    endpoint.clone(),
                    watch(),
                ));
                entry.endpoint = endpoint;
            }
            None => {
                tracing::debug!(endpoint = ?key, "balancer endpoint added");
                let load = Arc::new(EndpointLoad::new(self.load));
                let slot = Arc::new(Slot::new(
                    make(None),
                    load,
                    weight,
                    endpoint.clone(),
                    watch(),
                ));
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push(Entry {
                    key,
                    endpoint,
                    slot,
                });
                self.added += 1;
            }
        }
        self.dirty = true;
    }

    pub(crate) fn remove(&mut self, key: &K) {
        let Some(i) = self.index.remove(key) else {
            return;
        };
        tracing::debug!(endpoint = ?key, "balancer endpoint removed");
        // Flagged now, before the set without it is published: from then on, a clone holding it
        // (reserved or pending) sends it nothing new.
        self.entries.swap_remove(i).slot.mark_removed();
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(moved.key.clone(), i);
        }
        self.removed += 1;
        self.dirty = true;
    }

    fn snapshot(&self) -> Snapshot<S> {
        Snapshot::new(self.entries.iter().map(|e| e.slot.clone()).collect())
    }
}

impl<S: Clone> Set<std::net::SocketAddr, S> {
    /// Applies one of meshwork's discovery updates.
    pub(crate) fn apply(&mut self, update: Update, make: &mut impl FnMut(&Endpoint) -> S) {
        let mut make_or_keep =
            |ep: &Endpoint, old: Option<&S>| old.map_or_else(|| make(ep), S::clone);
        match update {
            Update::Insert(ep) => self.upsert(ep.addr(), Some(ep.clone()), ep.weight(), |old| {
                make_or_keep(&ep, old)
            }),
            Update::Remove(addr) => self.remove(&addr),
            Update::Reset(eps) => {
                let keep: HashSet<_> = eps.iter().map(Endpoint::addr).collect();
                let gone: Vec<_> = self
                    .entries
                    .iter()
                    .filter(|e| !keep.contains(&e.key))
                    .map(|e| e.key)
                    .collect();
                for addr in gone {
                    self.remove(&addr);
                }
                for ep in eps {
                    self.upsert(ep.addr(), Some(ep.clone()), ep.weight(), |old| {
                        make_or_keep(&ep, old)
                    });
                }
                // A positive statement, even of an empty set.
                self.dirty = true;
            }
        }
    }
}

/// Spawns the task that feeds `shared` from `source`, applying each item with `apply`.
///
/// The task ends when every balancer clone is gone (`closed` resolves) or when the source ends
/// (the last set stays in place). It is supervised: if the source or `apply` (the user's `make`
/// closure) panics, the panic is logged and counted as a discovery error, the last published set
/// stays in place, and the balancer is marked as discovered, so that callers are served from
/// that set (or fail fast when it is empty) instead of waiting for a set that will never come.
pub(crate) fn spawn<K, S, C, St, T, E, F>(
    shared: &Arc<Shared<S, C>>,
    closed: oneshot::Receiver<()>,
    load: Load,
    source: St,
    apply: F,
) where
    K: Hash + Eq + Clone + Debug + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
    St: Stream<Item = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
    F: FnMut(&mut Set<K, S>, T) + Send + 'static,
{
    let weak = Arc::downgrade(shared);
    let mut set = Set::<K, S>::new(load, shared.waiters.clone());
    let supervisor = weak.clone();
    let mut closed = closed;
    let mut apply = apply;
    let task = async move {
        let mut source = std::pin::pin!(source);
        let mut errors_in_row: u32 = 0;
        let mut pause: Option<Pin<Box<Sleep>>> = None;
        poll_fn(|cx| {
            if Pin::new(&mut closed).poll(cx).is_ready() {
                tracing::debug!("balancer dropped; discovery task ends");
                return Poll::Ready(());
            }
            if let Some(p) = &mut pause {
                if p.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                pause = None;
            }
            let mut items = 0;
            loop {
                match source.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(item))) => {
                        errors_in_row = 0;
                        apply(&mut set, item);
                    }
                    Poll::Ready(Some(Err(e))) => {
                        let e: BoxError = e.into();
                        tracing::warn!(error = %e, "discovery failed; keeping the last endpoint set");
                        if let Some(shared) = weak.upgrade() {
                            shared.discovery_error();
                        }
                        errors_in_row = errors_in_row.saturating_add(1);
                        if errors_in_row >= ERROR_BURST {
                            let doublings = (errors_in_row - ERROR_BURST).min(8);
                            let delay = (ERROR_PAUSE * 2u32.pow(doublings)).min(MAX_ERROR_PAUSE);
                            if !publish(&weak, &mut set, false) {
                                return Poll::Ready(());
                            }
                            let mut p = Box::pin(tokio::time::sleep_until(Instant::now() + delay));
                            // Registers the wake-up (a sleep of a positive delay is never ready now).
                            let _ = p.as_mut().poll(cx);
                            pause = Some(p);
                            return Poll::Pending;
                        }
                    }
                    Poll::Ready(None) => {
                        tracing::warn!("discovery source ended; keeping the last endpoint set");
                        publish(&weak, &mut set, true);
                        return Poll::Ready(());
                    }
                    Poll::Pending => {
                        return if set.dirty && !publish(&weak, &mut set, false) {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        };
                    }
                }
                items += 1;
                if items == BATCH {
                    if !publish(&weak, &mut set, false) {
                        return Poll::Ready(());
                    }
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        })
        .await;
    };
    tokio::spawn(async move {
        if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            tracing::error!(panic = %msg, "discovery task panicked; keeping the last endpoint set");
            if let Some(shared) = supervisor.upgrade() {
                shared.discovery_error();
                shared.discovered.store(true, Ordering::Release);
                shared.waiters.notify_one();
            }
        }
    });
}

/// Publishes the set (if it changed, or `force`); returns `false` when the balancer is gone.
fn publish<K: Hash + Eq + Clone + Debug, S, C>(
    weak: &Weak<Shared<S, C>>,
    set: &mut Set<K, S>,
    force: bool,
) -> bool {
    let Some(shared) = weak.upgrade() else {
        return false;
    };
    if set.dirty || force {
        let len = set.entries.len();
        shared.snapshot.store(Arc::new(set.snapshot()));
        shared.discovered.store(true, Ordering::Release);
        if set.added > 0 || set.removed > 0 {
            tracing::info!(
                endpoints = len,
                added = set.added,
                removed = set.removed,
                "balancer endpoint set updated"
            );
        }
        shared.published(len);
        set.dirty = false;
        set.added = 0;
        set.removed = 0;
    }
    true
}
