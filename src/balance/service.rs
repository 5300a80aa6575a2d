use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use pin_project_lite::pin_project;
use rand::RngExt;
use rand::rngs::SmallRng;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::future::{MeasureFuture, ResponseFuture, Tracker};
use super::load::EndpointLoad;
use super::snapshot::{Slot, Snapshot};
use crate::BoxError;
use crate::available::Available;
use crate::classify::{Classify, DefaultClassify};
use crate::rng::SeedSource;

/// A candidate must be this much cheaper than the first draw to win: closer costs are a tie, won
/// by the first draw (itself random, and weight-proportional). Estimates a few percent apart are
/// noise (for example the read-time decay favours whichever endpoint was sampled least recently);
/// letting noise decide would skew weighted shares.
const TIE: f64 = 1.1;
/// Pairs drawn before falling back to a scan for any available endpoint.
const PAIR_ATTEMPTS: usize = 3;
/// Endpoints picked (and polled for readiness) in one `poll_ready` before waiting; also the most
/// available-but-not-ready endpoints a clone remembers (and is woken by).
const PICK_ATTEMPTS: usize = 4;
/// Rounds of "look, then register" in one `poll_ready`: a round ends early only when something
/// changed while registering, so this bounds the work of one poll, never a wait.
const WAIT_ROUNDS: usize = 4;

/// State shared by every clone of a [`Balance`] and its discovery task.
pub(crate) struct Shared<S, C> {
    pub(crate) snapshot: ArcSwap<Snapshot<S>>,
    /// Whether the discovery source has said anything yet (an empty set is then known empty).
    pub(crate) discovered: AtomicBool,
    /// Clones waiting for an endpoint: see [`watch`](super::watch).
    pub(crate) waiters: Arc<Notify>,
    max_wait: Duration,
    classify: C,
    seeds: SeedSource,
    uses_clock: bool,
    /// Dropped with the last clone: ends the discovery task.
    _close: oneshot::Sender<()>,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

#[cfg(feature = "metrics")]
struct Metrics {
    endpoints: metrics::Gauge,
    no_endpoints: metrics::Counter,
    discovery_errors: metrics::Counter,
    ready_errors: metrics::Counter,
}

pub(crate) struct Config<C> {
    pub(crate) max_wait: Duration,
    pub(crate) classify: C,
    pub(crate) seeds: SeedSource,
    pub(crate) uses_clock: bool,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) labels: crate::telemetry::MetricLabels,
}

impl<S, C> Shared<S, C> {
    pub(crate) fn new(config: Config<C>) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (close, closed) = oneshot::channel();
        #[cfg(feature = "metrics")]
        let metrics = {
            crate::telemetry::describe_prefix("meshwork_balance_");
            let labels = config.labels.to_metrics(&[]);
            Metrics {
                endpoints: metrics::gauge!("meshwork_balance_endpoints", labels.clone()),
                no_endpoints: metrics::counter!(
                    "meshwork_balance_no_endpoints_total",
                    labels.clone()
                ),
                discovery_errors: metrics::counter!(
                    "meshwork_balance_discovery_errors_total",
                    labels.clone()
                ),
                ready_errors: metrics::counter!("meshwork_balance_ready_errors_total", labels),
            }
        };
        let shared = Arc::new(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            discovered: AtomicBool::new(false),
            waiters: Arc::new(Notify::new()),
            max_wait: config.max_wait,
            classify: config.classify,
            seeds: config.seeds,
            uses_clock: config.uses_clock,
            _close: close,
            #[cfg(feature = "metrics")]
            metrics,
        });
        (shared, closed)
    }

    /// A new endpoint set of `len` endpoints was published: hand the baton to a waiting clone
    /// (which passes it on if the new set serves it).
    pub(crate) fn published(&self, len: usize) {
        #[cfg(feature = "metrics")]
        self.metrics.endpoints.set(len as f64);
        let _ = len;
        self.waiters.notify_one();
    }

    pub(crate) fn discovery_error(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.discovery_errors.increment(1);
    }
}

/// The endpoint a `poll_ready` reserved for the next `call`.
enum Reservation<S> {
    Endpoint {
        service: S,
        slot: Arc<Slot<S>>,
        start: Option<Instant>,
    },
    NoEndpoints,
}

/// An endpoint that said it was available but whose `poll_ready` was `Pending`: it has this
/// clone's waker and is polled again first.
struct PendingEndpoint<S> {
    slot: Arc<Slot<S>>,
    service: S,
}

pin_project! {
    /// A clone's wait for an endpoint: bounded by `max_wait`, ended early by the baton.
    struct Wait {
        #[pin]
        sleep: Sleep,
        #[pin]
        baton: OwnedNotified,
    }
}

/// One endpoint of a [`Balance`], as [`Balance::endpoints`] reports it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointStatus<S> {
    /// The discovered endpoint (`None` when the balancer is fed by a tower `Discover`).
    pub endpoint: Option<crate::discover::Endpoint>,
    /// Its weight.
    pub weight: u32,
    /// Requests in flight to it.
    pub in_flight: u64,
    /// Its latency estimate (peak EWMA), if the load measures latency.
    pub latency: Option<std::time::Duration>,
    /// Its current cost, the number P2C compares (lower is better; before weighting).
    pub cost: f64,
    /// Its service.
    pub service: S,
}

/// A power-of-two-choices load balancer over a discovered set of endpoints: see the
/// [module docs](super).
///
/// `Balance` is `Clone + Send + Sync`: clone it into every task that sends requests. Clones share
/// the endpoint set, the endpoints' load and the discovery task; each clone has its own random
/// generator and its own reservation (a clone starts with none, as tower's clones do).
///
/// # Readiness and `NoEndpoints`
///
/// `poll_ready` picks an endpoint and reserves it for the next `call`. When no endpoint can take a
/// request, it returns `Pending` for at most [`max_wait`](super::Builder::max_wait), woken when an
/// endpoint becomes available or the set changes. When that time runs out — or at once, when
/// discovery says the set is empty — `poll_ready` returns `Ready(Ok(()))` and the `call` fails with
/// [`NoEndpoints`](super::NoEndpoints), as tower's `LoadShed` fails calls with `Overloaded`: the
/// balancer stays usable, and layers that treat a `poll_ready` error as fatal (tower's `Buffer`)
/// are not broken by a transient lack of endpoints.
///
/// # Removed endpoints (tower #856)
///
/// A reservation holds the picked endpoint's own service and load. If discovery removes that
/// endpoint between `poll_ready` and `call`, the request still goes to the endpoint that was
/// picked — never to another one — and completes normally, like every request already in flight
/// there. A removed endpoint gets no new pick.
pub struct Balance<S, C = DefaultClassify> {
    shared: Arc<Shared<S, C>>,
    /// Seeded on first use: a clone that never picks (the retry layer's spare) costs no draw from
    /// the shared seed source.
    rng: Option<SmallRng>,
    reserved: Option<Reservation<S>>,
    /// Endpoints picked earlier whose `poll_ready` was `Pending` (at most [`PICK_ATTEMPTS`]).
    pending: Vec<PendingEndpoint<S>>,
    /// The current wait for an endpoint (boxed only once a wait begins).
    wait: Option<Pin<Box<Wait>>>,
}

impl<S, C> Balance<S, C> {
    pub(crate) fn from_shared(shared: Arc<Shared<S, C>>) -> Self {
        Self {
            shared,
            rng: None,
            reserved: None,
            pending: Vec::new(),
            wait: None,
        }
    }

    /// The number of endpoints in the current set (available or not).
    pub fn len(&self) -> usize {
        self.shared.snapshot.load().len()
    }

    /// `true` when the current set has no endpoint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current endpoint set, with each endpoint's load and a clone of its service (through
    /// which, for example, a breaker's state can be read). For admin pages and tests: it allocates,
    /// so keep it off the request path.
    pub fn endpoints(&self) -> Vec<EndpointStatus<S>>
    where
        S: Clone,
    {
        let now = tokio::time::Instant::now();
        self.shared
            .snapshot
            .load()
            .slots
            .iter()
            .map(|slot| EndpointStatus {
                endpoint: slot.endpoint.clone(),
                weight: slot.weight,
                in_flight: slot.load.in_flight(),
                latency: slot.load.latency_estimate(now),
                cost: slot.load.cost(now),
                service: slot.service.clone(),
            })
            .collect()
    }

    fn no_endpoints(&mut self) -> Poll<Result<(), BoxError>> {
        #[cfg(feature = "metrics")]
        self.shared.metrics.no_endpoints.increment(1);
        tracing::debug!("no endpoint available");
        self.pending.clear();
        self.reserved = Some(Reservation::NoEndpoints);
        Poll::Ready(Ok(()))
    }

    fn reserve(&mut self, service: S, slot: Arc<Slot<S>>, start: Option<Instant>) {
        self.pending.clear();
        self.reserved = Some(Reservation::Endpoint {
            service,
            slot,
            start,
        });
    }

    /// Leaves a wait, if any. A clone that waited and is now served passes the baton on, so that
    /// the next waiter looks too (see [`watch`](super::watch)); one whose wait ran out does not.
    fn end_wait(&mut self, pass_baton: bool) {
        if self.wait.take().is_some() && pass_baton {
            self.shared.waiters.notify_one();
        }
    }
}

impl<S: Available, C> Balance<S, C> {
    /// Power of two choices among the available endpoints of `snap` (at least one endpoint).
    #[inline]
    fn pick(&mut self, snap: &Snapshot<S>, now: Option<Instant>) -> Option<usize> {
        let n = snap.len();
        if n == 1 {
            return snap.slots[0].service.is_available().then_some(0);
        }
        // P2C over the *available* endpoints: an unavailable candidate is replaced by another draw,
        // so that an available endpoint is still compared with a second one. Taking the other
        // candidate unchallenged would hand the second-worst endpoint every pair that contains an
        // open one (with three endpoints, a third of all traffic).
        let mut held: Option<usize> = None;
        for _ in 0..PAIR_ATTEMPTS {
            let (a, b) = snap.draw_pair(self.rng());
            if a == b {
                // Weighted draws may pick one endpoint twice: it wins its own pair.
                if held.is_none() && snap.slots[a].service.is_available() {
                    return Some(a);
                }
                continue;
            }
            for c in [a, b] {
                if !snap.slots[c].service.is_available() {
                    continue;
                }
                match held {
                    None => held = Some(c),
                    Some(h) if h == c => {}
                    Some(h) => {
                        let (sh, sc) = (&snap.slots[h], &snap.slots[c]);
                        let ch = sh.load.weighted_cost(now, sh.weight_recip);
                        let cc = sc.load.weighted_cost(now, sc.weight_recip);
                        return Some(if cc * TIE < ch { c } else { h });
                    }
                }
            }
        }
        // Most endpoints are unavailable: scan from a random point for the first two available.
        let start = self.rng().random_range(0..n);
        let mut found: Option<usize> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let slot = &snap.slots[i];
            if !slot.service.is_available() {
                continue;
            }
            match found {
                None => found = Some(i),
                Some(f) => {
                    let other = &snap.slots[f];
                    let cf = other.load.weighted_cost(now, other.weight_recip);
                    let ci = slot.load.weighted_cost(now, slot.weight_recip);
                    return Some(if ci * TIE < cf { i } else { f });
                }
            }
        }
        found
    }

    /// Asks every unavailable endpoint of `snap` to wake a waiter when it may become available
    /// (each endpoint holds at most one such registration). `true` if one became available while
    /// we looked. Available endpoints are left alone: they were picked, or are remembered as
    /// pending with our waker.
    fn arm_watches(snap: &Snapshot<S>) -> bool {
        let mut became_available = false;
        for slot in snap.slots.iter() {
            if !slot.service.is_available() && slot.watch.arm(&slot.service).is_ready() {
                became_available = true;
            }
        }
        became_available
    }
}

impl<S, C> Balance<S, C> {
    /// This clone's generator, seeded from the shared source on first use.
    #[inline]
    fn rng(&mut self) -> &mut SmallRng {
        let seeds = &self.shared.seeds;
        self.rng.get_or_insert_with(|| seeds.rng())
    }
}

impl<S, C> Clone for Balance<S, C> {
    fn clone(&self) -> Self {
        Self::from_shared(self.shared.clone())
    }
}

impl<S, C> fmt::Debug for Balance<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("endpoints", &self.len())
            .field("reserved", &self.reserved.is_some())
            .field("waiting", &self.wait.is_some())
            .finish()
    }
}

impl<S, C, Req> Service<Req> for Balance<S, C>
where
    S: Service<Req> + Available + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.reserved.is_some() {
            return Poll::Ready(Ok(()));
        }
        let uses_clock = self.shared.uses_clock;
        for _ in 0..WAIT_ROUNDS {
            if self.poll_pending::<Req>(cx, uses_clock) {
                self.end_wait(true);
                return Poll::Ready(Ok(()));
            }
            // The guard does not borrow `self`; it keeps this snapshot alive while we pick.
            let snap = self.shared.snapshot.load();
            if snap.len() == 0 {
                if self.shared.discovered.load(Ordering::Acquire) {
                    self.end_wait(true);
                    return self.no_endpoints();
                }
            } else if self.try_pick::<Req>(cx, &snap, uses_clock) {
                self.end_wait(true);
                return Poll::Ready(Ok(()));
            }

            // Nothing can take the request now: wait, for a bounded time. Register for the baton
            // *before* looking again, so that a change after the last look is never missed.
            let shared = &self.shared;
            let wait = self.wait.get_or_insert_with(|| {
                Box::pin(Wait {
                    sleep: tokio::time::sleep(shared.max_wait),
                    baton: shared.waiters.clone().notified_owned(),
                })
            });
            let mut w = wait.as_mut().project();
            w.baton.as_mut().enable();
            if Self::arm_watches(&snap) {
                continue; // an endpoint is available after all: pick again
            }
            if !Arc::ptr_eq(&snap, &self.shared.snapshot.load()) {
                continue; // a new set was published meanwhile
            }
            let mut w = wait.as_mut().project();
            if w.baton.as_mut().poll(cx).is_ready() {
                // Our turn: take a fresh place in line, then look again.
                w.baton.set(self.shared.waiters.clone().notified_owned());
                continue;
            }
            if w.sleep.poll(cx).is_ready() {
                self.end_wait(false);
                return self.no_endpoints();
            }
            return Poll::Pending;
        }
        // Several rounds each saw a change: yield, and look again at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self
            .reserved
            .take()
            .expect("Balance::call without a successful poll_ready")
        {
            Reservation::Endpoint {
                mut service,
                slot,
                start,
            } => {
                if slot.is_removed() {
                    // Discovery removed it after our `poll_ready`: nothing new goes to a removed
                    // endpoint. The request was not sent; the retry layer may requeue it.
                    return ResponseFuture::removed();
                }
                let tracker = Tracker::begin(slot.load.clone(), start);
                let fut = service.call(req);
                ResponseFuture::sent(MeasureFuture::new(
                    fut,
                    tracker,
                    self.shared.classify.clone(),
                ))
            }
            Reservation::NoEndpoints => ResponseFuture::no_endpoints(),
        }
    }
}

impl<S: Available + Clone, C> Balance<S, C> {
    /// Polls the remembered pending endpoints: reserves the first that is ready, forgets those
    /// that were removed, failed or became unavailable (the watches cover those).
    fn poll_pending<Req>(&mut self, cx: &mut Context<'_>, uses_clock: bool) -> bool
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            if p.slot.is_removed() || !p.slot.service.is_available() {
                self.pending.swap_remove(i);
                continue;
            }
            match p.service.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let p = self.pending.swap_remove(i);
                    self.reserve(p.service, p.slot, uses_clock.then(Instant::now));
                    return true;
                }
                Poll::Ready(Err(e)) => {
                    let p = self.pending.swap_remove(i);
                    self.endpoint_failed(&p.slot.load, e.into(), None);
                }
                Poll::Pending => i += 1,
            }
        }
        false
    }

    /// Picks from `snap` and polls the picks for readiness; reserves the first that is ready.
    fn try_pick<Req>(&mut self, cx: &mut Context<'_>, snap: &Snapshot<S>, uses_clock: bool) -> bool
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        let now = uses_clock.then(Instant::now);
        for _ in 0..PICK_ATTEMPTS {
            let Some(i) = self.pick(snap, now) else {
                return false;
            };
            let slot = &snap.slots[i];
            let mut service = slot.service.clone();
            match service.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.reserve(service, slot.clone(), now);
                    return true;
                }
                Poll::Ready(Err(e)) => self.endpoint_failed(&slot.load, e.into(), now),
                Poll::Pending => {
                    // Available but not ready (a connection pool, a limit): remember it, with our
                    // waker. One that is not available either is the watches' business.
                    let known = self.pending.iter().any(|p| Arc::ptr_eq(&p.slot, slot));
                    if slot.service.is_available() && !known && self.pending.len() < PICK_ATTEMPTS {
                        self.pending.push(PendingEndpoint {
                            slot: slot.clone(),
                            service,
                        });
                    }
                }
            }
        }
        false
    }
}

impl<S, C> Balance<S, C> {
    /// An endpoint's `poll_ready` failed: skip it for this pick and make it less attractive, but
    /// keep it (tower drops such an endpoint for good).
    fn endpoint_failed(&self, load: &EndpointLoad, error: BoxError, now: Option<Instant>) {
        tracing::debug!(%error, "endpoint failed to become ready; skipped");
        #[cfg(feature = "metrics")]
        self.shared.metrics.ready_errors.increment(1);
        if load.uses_clock() {
            load.penalize(now.unwrap_or_else(Instant::now));
        }
    }
}
