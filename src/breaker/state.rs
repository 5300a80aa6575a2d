//! The state shared by every clone of one breaker: the state machine, the policies' counters, the
//! waiters and the probe timer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;

use super::config::BreakerConfig;
use super::window::Window;
use crate::backoff::BackoffSeq;
use crate::classify::Class;
use crate::rng::SmallRng;
use crate::util::{lock, nanos};

/// The state of a circuit breaker, as seen by its [`BreakerHandle`](super::BreakerHandle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass; outcomes are counted by the policies.
    Closed,
    /// Calls are refused until the probe is due.
    Open,
    /// Up to the configured number of probe calls pass; their outcome closes or reopens the breaker.
    HalfOpen,
    /// Held open by [`force_open`](super::BreakerHandle::force_open) until the switch is cleared.
    ForcedOpen,
    /// Held closed by [`force_closed`](super::BreakerHandle::force_closed) until the switch is
    /// cleared: calls pass and outcomes never trip it.
    ForcedClosed,
}

impl State {
    /// The value of the `meshwork_breaker_state` gauge.
    #[must_use]
    pub const fn gauge_value(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::Open => 1.0,
            State::HalfOpen => 2.0,
            State::ForcedOpen => 3.0,
            State::ForcedClosed => 4.0,
        }
    }

    fn from_bits(bits: u64) -> Self {
        match bits {
            CLOSED => State::Closed,
            OPEN => State::Open,
            HALF_OPEN => State::HalfOpen,
            FORCED_OPEN => State::ForcedOpen,
            _ => State::ForcedClosed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::ForcedOpen => "forced open",
            State::ForcedClosed => "forced closed",
        })
    }
}

pub(crate) use super::word::{CLOSED, FORCED_CLOSED, FORCED_OPEN, HALF_OPEN, OPEN, state_of};
use super::word::{ProbeSuccess, Word, epoch_of, free_of, word};

/// Why the breaker changed state (in the tracing events).
#[derive(Clone, Copy, Debug)]
enum Reason {
    ConsecutiveFailures(u32),
    SuccessRate { ok: u64, total: u64 },
    ProbeFailed,
    ProbeDue,
    ProbeAbandoned,
    ProbesSucceeded,
    Forced,
    ForceCleared,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ConsecutiveFailures(n) => write!(f, "{n} consecutive failures"),
            Reason::SuccessRate { ok, total } => {
                write!(f, "success rate {ok}/{total} below the threshold")
            }
            Reason::ProbeFailed => f.write_str("half-open probe failed"),
            Reason::ProbeDue => f.write_str("open backoff elapsed, probing"),
            Reason::ProbeAbandoned => {
                f.write_str("a half-open probe did not finish within the probe timeout")
            }
            Reason::ProbesSucceeded => f.write_str("half-open probes succeeded"),
            Reason::Forced => f.write_str("forced by the application"),
            Reason::ForceCleared => f.write_str("manual switch cleared"),
        }
    }
}

/// Cold-path state, touched only on transitions.
struct Cold {
    backoff: BackoffSeq,
    rng: SmallRng,
}

/// Metric handles, created once per breaker.
#[cfg(feature = "metrics")]
struct Metrics {
    trips_consecutive: metrics::Counter,
    trips_rate: metrics::Counter,
    trips_probe: metrics::Counter,
    probes_success: metrics::Counter,
    probes_failure: metrics::Counter,
    rejected: metrics::Counter,
    state: metrics::Gauge,
    /// Breakers (of these labels) that are not closed: 0 or 1 per breaker, summed when endpoints
    /// share their labels.
    open: metrics::Gauge,
    /// Whether this breaker counts itself in `open` now.
    counted_open: std::sync::atomic::AtomicBool,
}

#[cfg(feature = "metrics")]
impl Metrics {
    fn new(labels: &crate::telemetry::MetricLabels) -> Self {
        crate::telemetry::describe_prefix("meshwork_breaker_");
        let with = |k: &'static str, v: &str| labels.to_metrics(&[(k, v.to_owned())]);
        let base = labels.to_metrics(&[]);
        let m = Self {
            trips_consecutive: metrics::counter!(
                "meshwork_breaker_trips_total",
                with("reason", "consecutive_failures")
            ),
            trips_rate: metrics::counter!(
                "meshwork_breaker_trips_total",
                with("reason", "success_rate")
            ),
            trips_probe: metrics::counter!(
                "meshwork_breaker_trips_total",
                with("reason", "probe_failed")
            ),
            probes_success: metrics::counter!(
                "meshwork_breaker_probes_total",
                with("outcome", "success")
            ),
            probes_failure: metrics::counter!(
                "meshwork_breaker_probes_total",
                with("outcome", "failure")
            ),
            rejected: metrics::counter!("meshwork_breaker_rejected_total", base.clone()),
            state: metrics::gauge!("meshwork_breaker_state", base.clone()),
            open: metrics::gauge!("meshwork_breaker_open", base),
            counted_open: std::sync::atomic::AtomicBool::new(false),
        };
        m.state.set(State::Closed.gauge_value());
        m
    }
}

/// The success-rate policy: its window and thresholds.
struct RatePolicy {
    window: Window,
    min_rate: f64,
    min_requests: u64,
}

/// The state shared by the clones of one breaker and its handles.
pub(crate) struct Shared {
    word: Word,
    consecutive: AtomicU32,
    /// When the current open period ends, in nanoseconds since `base`.
    probe_at: AtomicU64,
    /// The epoch of the last open period a probe timer was spawned for.
    timer_epoch: AtomicU32,
    /// When the current half-open period's last probe reservation lapses, in nanoseconds since
    /// `base`: a period whose probes are all taken and unfinished by then is abandoned.
    lease_at: AtomicU64,
    probe_timeout: Duration,
    base: Instant,
    rate: Option<RatePolicy>,
    threshold: u32,
    probes: u64,
    pub(crate) slow_call: Option<Duration>,
    cold: Mutex<Cold>,
    /// Waiting clones and handles, each at most once (see [`WaitSlot`]).
    notify: Arc<Notify>,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("state", &State::from_bits(state_of(self.load())))
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(config: &BreakerConfig) -> Arc<Self> {
        let rng = config
            .seeds
            .clone()
            .unwrap_or_else(crate::rng::SeedSource::from_entropy)
            .rng();
        Arc::new(Self {
            word: Word::new(word(0, CLOSED, 0, 0)),
            consecutive: AtomicU32::new(0),
            probe_at: AtomicU64::new(0),
            timer_epoch: AtomicU32::new(0),
            lease_at: AtomicU64::new(0),
            probe_timeout: config.probe_timeout,
            base: Instant::now(),
            rate: config.success_rate.map(|s| RatePolicy {
                window: Window::new(s.buckets, s.bucket_nanos()),
                min_rate: s.min_rate,
                min_requests: u64::from(s.min_requests),
            }),
            threshold: config.consecutive_failures.unwrap_or(u32::MAX),
            probes: u64::from(config.half_open_probes),
            slow_call: config.slow_call,
            cold: Mutex::new(Cold {
                backoff: config.backoff.sequence(),
                rng,
            }),
            notify: Arc::new(Notify::new()),
            #[cfg(feature = "metrics")]
            metrics: Metrics::new(&config.labels),
        })
    }

    /// The state word, as one atomic load.
    #[inline]
    pub(crate) fn load(&self) -> u64 {
        self.word.load()
    }

    /// Whether the outcomes of closed-state calls need the clock.
    #[inline]
    pub(crate) fn needs_clock(&self) -> bool {
        self.rate.is_some()
    }

    fn nanos_since_base(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.base))
    }

    /// The state word after the two moves that time makes: an open breaker whose backoff has
    /// elapsed goes half-open, and a half-open period whose probes are all taken but unfinished
    /// after the probe timeout is abandoned for a fresh one (so that a caller that reserved a probe
    /// and never called, or a probe stuck on a hung connection, cannot hold the endpoint
    /// unavailable for everyone). Reads the clock only in those two states.
    pub(crate) fn refresh(&self, w: u64) -> u64 {
        let (due, reason) = match state_of(w) {
            OPEN => (&self.probe_at, Reason::ProbeDue),
            HALF_OPEN if free_of(w) == 0 => (&self.lease_at, Reason::ProbeAbandoned),
            _ => return w,
        };
        let now = self.nanos_since_base(Instant::now());
        if now < due.load(Ordering::Acquire) {
            return w;
        }
        let next = word(epoch_of(w).wrapping_add(1), HALF_OPEN, self.probes, 0);
        match self.word.replace(w, next) {
            Ok(_) => {
                self.announce(State::HalfOpen, reason, None);
                self.wake_all();
                next
            }
            Err(actual) => self.refresh(actual),
        }
    }

    /// The current state, after the open → half-open check.
    pub(crate) fn state_now(&self) -> State {
        State::from_bits(state_of(self.refresh(self.load())))
    }

    /// `true` when a call would be admitted now (closed, or a free probe slot).
    pub(crate) fn is_available(&self) -> bool {
        let w = self.load();
        match state_of(w) {
            CLOSED | FORCED_CLOSED => true,
            FORCED_OPEN => false,
            _ => {
                let w = self.refresh(w);
                state_of(w) == HALF_OPEN && free_of(w) > 0
            }
        }
    }

    /// Reserves one half-open probe; returns the half-open epoch it belongs to. The reservation is
    /// a lease: if the period's probes are all still out after the probe timeout, the period is
    /// abandoned (see [`refresh`](Self::refresh)), and a timer makes sure waiters hear of it.
    pub(crate) fn try_reserve_probe(self: &Arc<Self>) -> Option<u32> {
        let epoch = self.word.reserve_probe()?;
        let until = self
            .nanos_since_base(Instant::now())
            .saturating_add(nanos(self.probe_timeout));
        self.lease_at.fetch_max(until, Ordering::AcqRel);
        self.arm_lease_timer(epoch);
        Some(epoch)
    }

    /// Gives back a probe that was reserved and never used, or whose outcome does not count.
    pub(crate) fn release_probe(&self, epoch: u32) {
        if self.word.release_probe(epoch, self.probes) {
            self.wake_all();
        }
    }

    /// Records the outcome of a call admitted while closed in period `epoch`. An outcome from an
    /// earlier period (a slow call admitted before a trip, finishing after the recovery) is not
    /// counted: it says nothing about the endpoint since it recovered. `now` is read only when a
    /// policy needs it (the success-rate window), at most once.
    #[inline]
    pub(crate) fn record_closed(&self, epoch: u32, class: Class, now: Option<Instant>) {
        if epoch_of(self.load()) != epoch {
            return;
        }
        match class {
            Class::Ignorable => {}
            Class::Success => {
                // Read before writing: in a healthy breaker the counter is already zero, and
                // skipping the store keeps the cache line shared between threads.
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
                if let Some(r) = &self.rate {
                    let now = now.unwrap_or_else(Instant::now);
                    r.window.record(self.nanos_since_base(now), true);
                }
            }
            Class::Retryable | Class::NonRetryable => self.record_closed_failure(epoch, now),
        }
    }

    #[cold]
    fn record_closed_failure(&self, epoch: u32, now: Option<Instant>) {
        let n = self
            .consecutive
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let now = now.map(|n| self.nanos_since_base(n));
        if let (Some(r), Some(now)) = (&self.rate, now) {
            r.window.record(now, false);
        }
        let w = self.load();
        if state_of(w) != CLOSED || epoch_of(w) != epoch {
            return;
        }
        if n >= self.threshold {
            self.trip_from_closed(epoch, Reason::ConsecutiveFailures(n));
            return;
        }
        if let (Some(r), Some(now)) = (&self.rate, now) {
            let (ok, failed) = r.window.counts(now);
            let total = ok + failed;
            if total >= r.min_requests && (ok as f64) < r.min_rate * total as f64 {
                self.trip_from_closed(epoch, Reason::SuccessRate { ok, total });
            }
        }
    }

    /// Records the outcome of a half-open probe.
    pub(crate) fn record_probe(&self, epoch: u32, class: Class) {
        match class {
            Class::Ignorable => self.release_probe(epoch),
            Class::Success => {
                #[cfg(feature = "metrics")]
                self.metrics.probes_success.increment(1);
                if self.word.probe_succeeded(epoch, self.probes) == ProbeSuccess::Last {
                    self.close_from_half_open(epoch);
                }
            }
            Class::Retryable | Class::NonRetryable => {
                #[cfg(feature = "metrics")]
                self.metrics.probes_failure.increment(1);
                let mut cold = lock(&self.cold);
                let w = self.load();
                if state_of(w) == HALF_OPEN && epoch_of(w) == epoch {
                    self.open_locked(&mut cold, HALF_OPEN, Reason::ProbeFailed);
                }
            }
        }
    }

    fn trip_from_closed(&self, epoch: u32, reason: Reason) {
        let mut cold = lock(&self.cold);
        let w = self.load();
        if state_of(w) == CLOSED && epoch_of(w) == epoch {
            self.open_locked(&mut cold, CLOSED, reason);
        }
    }

    /// Opens the breaker (which is in state `from`) for the next backoff delay. Called with `cold`.
    fn open_locked(&self, cold: &mut Cold, from: u64, reason: Reason) {
        let Cold { backoff, rng } = cold;
        let delay = backoff.next_delay(rng);
        let now = Instant::now();
        // Store the end of the open period before the state: a reader that sees OPEN sees it.
        self.probe_at.store(
            self.nanos_since_base(now).saturating_add(nanos(delay)),
            Ordering::Release,
        );
        if !self.transition_locked(|s| s == from, OPEN, 0) {
            return;
        }
        #[cfg(feature = "metrics")]
        match reason {
            Reason::ConsecutiveFailures(_) => self.metrics.trips_consecutive.increment(1),
            Reason::SuccessRate { .. } => self.metrics.trips_rate.increment(1),
            _ => self.metrics.trips_probe.increment(1),
        }
        self.announce(State::Open, reason, Some(delay));
        self.wake_all();
    }

    fn close_from_half_open(&self, epoch: u32) {
        let mut cold = lock(&self.cold);
        let w = self.load();
        if state_of(w) != HALF_OPEN || epoch_of(w) != epoch {
            return;
        }
        self.reset_policies(&mut cold);
        if self.transition_locked(|s| s == HALF_OPEN, CLOSED, 0) {
            self.announce(State::Closed, Reason::ProbesSucceeded, None);
            self.wake_all();
        }
    }

    fn reset_policies(&self, cold: &mut Cold) {
        cold.backoff.reset();
        self.consecutive.store(0, Ordering::Relaxed);
        if let Some(r) = &self.rate {
            r.window.clear();
        }
    }

    /// Moves to `to` (with `free` probe slots) if the current state satisfies `from`, bumping the
    /// epoch. Only called while holding `cold`, so only one transition is computed at a time.
    fn transition_locked(&self, from: impl Fn(u64) -> bool, to: u64, free: u64) -> bool {
        self.word
            .transition(|w| from(state_of(w)), to, free)
            .is_some()
    }

    /// The manual switch: hold the breaker open or closed, or clear the hold.
    pub(crate) fn force(&self, to: Option<State>) {
        let mut cold = lock(&self.cold);
        let (bits, state, reason) = match to {
            Some(State::ForcedOpen) => (FORCED_OPEN, State::ForcedOpen, Reason::Forced),
            Some(_) => (FORCED_CLOSED, State::ForcedClosed, Reason::Forced),
            None => {
                if !matches!(state_of(self.load()), FORCED_OPEN | FORCED_CLOSED) {
                    return;
                }
                (CLOSED, State::Closed, Reason::ForceCleared)
            }
        };
        // Leaving or entering a manual hold starts the automatic policies from scratch.
        self.reset_policies(&mut cold);
        if self.transition_locked(|s| s != bits, bits, 0) {
            self.announce(state, reason, None);
            self.wake_all();
        }
    }

    fn announce(&self, state: State, reason: Reason, open_for: Option<Duration>) {
        #[cfg(feature = "metrics")]
        {
            self.metrics.state.set(state.gauge_value());
            let open = !matches!(state, State::Closed | State::ForcedClosed);
            if self.metrics.counted_open.swap(open, Ordering::AcqRel) != open {
                if open {
                    self.metrics.open.increment(1.0);
                } else {
                    self.metrics.open.decrement(1.0);
                }
            }
        }
        match state {
            State::Open | State::ForcedOpen => {
                tracing::warn!(state = %state, reason = %reason, open_for = ?open_for, "circuit breaker opened")
            }
            _ => tracing::info!(state = %state, reason = %reason, "circuit breaker state changed"),
        }
    }

    /// Counts a call rejected in fail-fast mode.
    #[inline]
    pub(crate) fn rejected(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.rejected.increment(1);
    }

    fn wake_all(&self) {
        self.notify.notify_waiters();
    }

    /// Spawns, once per open period, a task that sleeps until the probe is due and then moves the
    /// breaker to half-open (which wakes the waiters). It holds only a weak reference.
    fn arm_timer(self: &Arc<Self>, epoch: u32) {
        if self.timer_epoch.fetch_max(epoch, Ordering::AcqRel) >= epoch {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let at = self.base + Duration::from_nanos(self.probe_at.load(Ordering::Acquire));
        tokio::spawn(async move {
            let mut at = at;
            loop {
                tokio::time::sleep_until(at).await;
                let Some(shared) = weak.upgrade() else { return };
                let w = shared.refresh(shared.load());
                if state_of(w) != OPEN || epoch_of(w) != epoch {
                    return;
                }
                // Woken a little early (timer resolution): sleep again until the due time.
                at = shared.base + Duration::from_nanos(shared.probe_at.load(Ordering::Acquire));
                at = at.max(Instant::now() + Duration::from_millis(1));
            }
        });
    }
}

impl Shared {
    /// Spawns, for a probe reservation, a task that sleeps until its lease lapses and then lets
    /// [`refresh`](Self::refresh) abandon the period if its probes are all still out (which wakes
    /// the waiters). Holds only a weak reference.
    fn arm_lease_timer(self: &Arc<Self>, epoch: u32) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let at = self.base + Duration::from_nanos(self.lease_at.load(Ordering::Acquire));
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let Some(shared) = weak.upgrade() else { return };
            let w = shared.load();
            if epoch_of(w) == epoch {
                shared.refresh(w);
            }
        });
    }
}

#[cfg(feature = "metrics")]
impl Drop for Shared {
    /// The endpoint is gone (discovery removed it): it no longer counts as open.
    fn drop(&mut self) {
        if self.metrics.counted_open.swap(false, Ordering::AcqRel) {
            self.metrics.open.decrement(1.0);
        }
    }
}

/// Where one clone (or one handle) waits for the breaker's next state change.
///
/// The slot holds a registration in the breaker's [`Notify`] list, so the list holds at most one
/// entry per waiting clone, and a clone dropped while waiting leaves it. As with tokio's `poll_*`
/// methods that take `&self`, only the task of the most recent poll through one slot is woken.
#[derive(Default)]
pub(crate) struct WaitSlot(Mutex<Option<Pin<Box<OwnedNotified>>>>);

impl fmt::Debug for WaitSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitSlot")
    }
}

impl WaitSlot {
    /// Registers for the next state change (and, if the breaker is open in state word `w`, makes sure
    /// the probe timer runs). `Ready` if a change happened since the last registration: the caller
    /// checks the state again either way, so that a change just before registering is not missed.
    pub(crate) fn poll(&self, shared: &Arc<Shared>, cx: &mut Context<'_>, w: u64) -> Poll<()> {
        let mut slot = lock(&self.0);
        let notified = slot.get_or_insert_with(|| Box::pin(shared.notify.clone().notified_owned()));
        notified.as_mut().enable();
        if state_of(w) == OPEN {
            shared.arm_timer(epoch_of(w));
        }
        match notified.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *slot = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
