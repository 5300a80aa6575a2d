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
use tokio::sync::oneshot;

use super::load::{EndpointLoad, Load};
use super::service::Shared;
use super::snapshot::{Slot, Snapshot};
use crate::BoxError;
use crate::discover::{Endpoint, Update};

/// At most this many updates are applied before the new set is published and the task yields, so
/// a source that is always ready neither starves the runtime nor delays publication forever.
const BATCH: usize = 4096;

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
    dirty: bool,
    added: usize,
    removed: usize,
}

impl<K: Hash + Eq + Clone + Debug, S> Set<K, S> {
    fn new(load: Load) -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
            load,
            dirty: false,
            added: 0,
            removed: 0,
        }
    }

    /// Adds an endpoint, or replaces the one with the same key (keeping its load). An identical
    /// discovered endpoint is left alone, service and all.
    pub(crate) fn upsert(
        &mut self,
        key: K,
        endpoint: Option<Endpoint>,
        weight: u32,
        make: impl FnOnce() -> S,
    ) {
        let slot = |load, endpoint: &Option<Endpoint>| {
            Arc::new(Slot {
                load,
                weight,
                weight_recip: 1.0 / f64::from(weight),
                service: make(),
                endpoint: endpoint.clone(),
            })
        };
        match self.index.get(&key) {
            Some(&i) => {
                let entry = &mut self.entries[i];
                if endpoint.is_some() && entry.endpoint == endpoint {
                    return;
                }
                tracing::debug!(endpoint = ?key, "balancer endpoint replaced");
                entry.slot = slot(entry.slot.load.clone(), &endpoint);
                entry.endpoint = endpoint;
            }
            None => {
                tracing::debug!(endpoint = ?key, "balancer endpoint added");
                let load = Arc::new(EndpointLoad::new(self.load));
                self.index.insert(key.clone(), self.entries.len());
                let slot = slot(load, &endpoint);
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
        self.entries.swap_remove(i);
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

impl<S> Set<std::net::SocketAddr, S> {
    /// Applies one of meshwork's discovery updates.
    pub(crate) fn apply(&mut self, update: Update, make: &mut impl FnMut(&Endpoint) -> S) {
        match update {
            Update::Insert(ep) => {
                self.upsert(ep.addr(), Some(ep.clone()), ep.weight(), || make(&ep))
            }
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
                    self.upsert(ep.addr(), Some(ep.clone()), ep.weight(), || make(&ep));
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
/// (the last set stays in place).
pub(crate) fn spawn<K, S, C, St, T, E, F>(
    shared: &Arc<Shared<S, C>>,
    closed: oneshot::Receiver<()>,
    load: Load,
    source: St,
    mut apply: F,
) where
    K: Hash + Eq + Clone + Debug + Send + 'static,
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
    St: Stream<Item = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
    F: FnMut(&mut Set<K, S>, T) + Send + 'static,
{
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut source = std::pin::pin!(source);
        let mut closed = closed;
        let mut set = Set::<K, S>::new(load);
        poll_fn(|cx| {
            if Pin::new(&mut closed).poll(cx).is_ready() {
                tracing::debug!("balancer dropped; discovery task ends");
                return Poll::Ready(());
            }
            let mut applied = 0;
            loop {
                match source.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(item))) => {
                        apply(&mut set, item);
                        applied += 1;
                        if applied == BATCH {
                            if !publish(&weak, &mut set, false) {
                                return Poll::Ready(());
                            }
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        let e: BoxError = e.into();
                        tracing::warn!(error = %e, "discovery failed; keeping the last endpoint set");
                        if let Some(shared) = weak.upgrade() {
                            shared.discovery_error();
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
            }
        })
        .await;
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
