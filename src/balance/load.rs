//! Load metrics: how busy an endpoint is, as the balancer compares it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::ConfigError;
use crate::classify::{Class, Classification};

/// Peak-EWMA load (Finagle, Linkerd): `cost = latency estimate × (in-flight + 1)`.
///
/// The latency estimate is an exponentially weighted moving average of response times that is
/// *peak sensitive*: a sample slower than the estimate replaces it at once, while faster samples
/// pull it down with time constant [`decay`](Self::decay). So an endpoint that slows down loses
/// traffic immediately and wins it back gradually. Between samples the estimate decays towards
/// zero, so an endpoint that stopped receiving traffic is eventually tried again.
///
/// A **failure** (as [classified](crate::classify)) records a sample of at least
/// [`failure_penalty`](Self::failure_penalty). Without it, an endpoint that fails fast (a
/// connection refused in 1 ms) would look like the fastest endpoint and attract traffic — the
/// mistake of tower's `PeakEwma`. The penalty is a fixed floor rather than a multiple of the
/// current estimate, because a fast-failing endpoint's estimate is tiny and any multiple of it
/// stays tiny.
///
/// | setting | default |
/// |---|---|
/// | [`decay`](Self::with_decay) | 10 s |
/// | [`initial_latency`](Self::with_initial_latency) (estimate of a new endpoint) | 30 ms |
/// | [`failure_penalty`](Self::with_failure_penalty) | 1 s |
///
/// ```
/// use std::time::Duration;
/// use meshwork::balance::load::PeakEwma;
///
/// let ewma = PeakEwma::default().with_decay(Duration::from_secs(5));
/// assert_eq!(ewma.decay(), Duration::from_secs(5));
/// assert_eq!(ewma.initial_latency(), Duration::from_millis(30));
/// // Values are checked when the balancer is built (or by `validate`).
/// let zero = PeakEwma::default().with_decay(Duration::ZERO);
/// assert_eq!(zero.validate().unwrap_err().field(), "decay");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeakEwma {
    decay: Duration,
    initial_latency: Duration,
    failure_penalty: Duration,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self {
            decay: Duration::from_secs(10),
            initial_latency: Duration::from_millis(30),
            failure_penalty: Duration::from_secs(1),
        }
    }
}

impl PeakEwma {
    /// Sets the decay time constant. Zero is rejected by [`validate`](Self::validate) (when the
    /// balancer is built).
    #[must_use]
    pub const fn with_decay(mut self, decay: Duration) -> Self {
        self.decay = decay;
        self
    }

    /// Sets the latency estimate of an endpoint that has no sample yet. Zero is rejected by
    /// [`validate`](Self::validate) (when the balancer is built).
    #[must_use]
    pub const fn with_initial_latency(mut self, latency: Duration) -> Self {
        self.initial_latency = latency;
        self
    }

    /// Checks the settings: `decay` and `initial_latency` must be non-zero.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `decay` or `initial_latency` when that duration is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::error::non_zero("decay", self.decay)?;
        crate::error::non_zero("initial_latency", self.initial_latency)?;
        Ok(())
    }

    /// Sets the least latency a failure counts for. Zero turns the penalty off (a failure then
    /// counts for its observed latency, as in tower).
    #[must_use]
    pub const fn with_failure_penalty(mut self, penalty: Duration) -> Self {
        self.failure_penalty = penalty;
        self
    }

    /// The decay time constant.
    #[must_use]
    pub const fn decay(&self) -> Duration {
        self.decay
    }

    /// The estimate of an endpoint with no sample yet.
    #[must_use]
    pub const fn initial_latency(&self) -> Duration {
        self.initial_latency
    }

    /// The least latency a failure counts for.
    #[must_use]
    pub const fn failure_penalty(&self) -> Duration {
        self.failure_penalty
    }
}

/// Least-in-flight load: `cost = requests in flight`. Reads no clock at all; suits endpoints of
/// similar latency, or when the cheapest possible pick matters more than latency awareness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeastInFlight;

/// The load metric of a balancer or a [`Measure`](super::Measure) layer.
///
/// ```
/// use meshwork::balance::load::{LeastInFlight, Load, PeakEwma};
///
/// assert_eq!(Load::default(), Load::PeakEwma(PeakEwma::default()));
/// assert_eq!(Load::from(LeastInFlight), Load::LeastInFlight);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// [`PeakEwma`] (the default).
    PeakEwma(PeakEwma),
    /// [`LeastInFlight`].
    LeastInFlight,
}

impl Load {
    /// Checks the metric's settings (see [`PeakEwma::validate`]).
    ///
    /// # Errors
    ///
    /// For [`Load::PeakEwma`], the [`ConfigError`] of [`PeakEwma::validate`]; never for
    /// [`Load::LeastInFlight`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Load::PeakEwma(p) => p.validate(),
            Load::LeastInFlight => Ok(()),
        }
    }
}

impl Default for Load {
    fn default() -> Self {
        Load::PeakEwma(PeakEwma::default())
    }
}

impl From<PeakEwma> for Load {
    fn from(p: PeakEwma) -> Self {
        Load::PeakEwma(p)
    }
}

impl From<LeastInFlight> for Load {
    fn from(_: LeastInFlight) -> Self {
        Load::LeastInFlight
    }
}

/// The live load of one endpoint: requests in flight and, for [`PeakEwma`], the latency estimate.
///
/// All state is in atomics: reading the cost and recording a sample take no lock. Two samples
/// recorded at the same instant by two threads may race; the last store wins and the other sample
/// is lost. That is benign: each stored value is a valid estimate, and the next sample corrects it.
///
/// A balancer owns one per endpoint; a [`Measure`](super::Measure) service exposes its own.
///
/// ```
/// use meshwork::balance::load::{EndpointLoad, Load};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let load = EndpointLoad::new(Load::default());
/// assert_eq!(load.in_flight(), 0);
/// let now = tokio::time::Instant::now();
/// assert_eq!(load.latency_estimate(now), Some(std::time::Duration::from_millis(30)));
/// # }
/// ```
#[derive(Debug)]
pub struct EndpointLoad {
    in_flight: AtomicU64,
    /// The latency estimate in nanoseconds, as `f64` bits.
    estimate: AtomicU64,
    /// When the estimate was last updated, in nanoseconds since `epoch`.
    stamp: AtomicU64,
    epoch: Instant,
    /// Decay time constant in nanoseconds; 0 for least-in-flight.
    decay_ns: f64,
    penalty_ns: f64,
}

impl EndpointLoad {
    /// A new endpoint's load: nothing in flight, the initial latency estimate.
    #[must_use]
    pub fn new(load: Load) -> Self {
        let (decay_ns, initial_ns, penalty_ns) = match load {
            Load::PeakEwma(p) => (
                p.decay.as_nanos() as f64,
                p.initial_latency.as_nanos() as f64,
                p.failure_penalty.as_nanos() as f64,
            ),
            Load::LeastInFlight => (0.0, 0.0, 0.0),
        };
        Self {
            in_flight: AtomicU64::new(0),
            estimate: AtomicU64::new(initial_ns.to_bits()),
            stamp: AtomicU64::new(0),
            epoch: Instant::now(),
            decay_ns,
            penalty_ns,
        }
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The latency estimate as of `now` (peak-EWMA only; `None` for least-in-flight).
    pub fn latency_estimate(&self, now: Instant) -> Option<Duration> {
        self.uses_clock()
            .then(|| Duration::from_nanos(self.decayed_estimate(now) as u64))
    }

    /// The cost of sending one more request now: see [`PeakEwma`] and [`LeastInFlight`]. Lower is
    /// better.
    pub fn cost(&self, now: Instant) -> f64 {
        self.weighted_cost(Some(now), 1.0)
    }

    /// The cost, with the in-flight count divided by the endpoint's weight (`weight_recip` is
    /// 1 / weight): an endpoint of weight 3 is as loaded with 3 requests in flight as an endpoint of
    /// weight 1 with one. `now` is `None` only for least-in-flight.
    #[inline]
    pub(crate) fn weighted_cost(&self, now: Option<Instant>, weight_recip: f64) -> f64 {
        let pending = self.in_flight.load(Ordering::Relaxed) as f64 * weight_recip;
        match now {
            Some(now) if self.uses_clock() => self.decayed_estimate(now) * (pending + 1.0),
            _ => pending,
        }
    }

    /// Whether this metric needs the time of a request's start and end.
    #[inline]
    pub(crate) fn uses_clock(&self) -> bool {
        self.decay_ns > 0.0
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn decayed_estimate(&self, now: Instant) -> f64 {
        let estimate = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let last = self.stamp.load(Ordering::Relaxed);
        let elapsed = self.nanos(now).saturating_sub(last);
        if elapsed == 0 {
            estimate
        } else {
            estimate * (-(elapsed as f64) / self.decay_ns).exp()
        }
    }

    /// A request was sent.
    #[inline]
    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request ended (answered, failed or cancelled).
    #[inline]
    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records a latency sample for a request that started at `start` and ended at `end`.
    pub(crate) fn record(&self, start: Instant, end: Instant, class: Class) {
        if !self.uses_clock() {
            return;
        }
        let mut sample = end.saturating_duration_since(start).as_nanos() as f64;
        if class.is_failure() {
            sample = sample.max(self.penalty_ns);
        }
        self.sample(sample, end);
    }

    /// Records the outcome of a request that started at `start` and ended at `end`: as
    /// [`record`](Self::record), except that a [nack](Classification::nack) counts as load (see
    /// [`record_nack`](Self::record_nack)).
    pub(crate) fn record_outcome(&self, start: Instant, end: Instant, c: Classification) {
        // A nack and a throttled answer (429) both say "busy": load, not a failure. Recorded as a
        // plain ignorable sample, a fast 429 would make the endpoint look fast and attract more.
        if c.is_nack() || c.is_throttled() {
            self.record_nack(start, end);
        } else {
            self.record(start, end, c.class());
        }
    }

    /// Records a nack: the endpoint refused the request because it is busy. That is load, not a
    /// failure: the sample is twice the current estimate (at least the observed latency, at most
    /// the failure penalty), so a nacking endpoint loses traffic to the others in proportion to its
    /// latency, without the failure penalty; a fast nack never makes it look fast.
    pub(crate) fn record_nack(&self, start: Instant, end: Instant) {
        if !self.uses_clock() {
            return;
        }
        let observed = end.saturating_duration_since(start).as_nanos() as f64;
        let busy = 2.0 * self.decayed_estimate(end);
        let cap = if self.penalty_ns > 0.0 {
            self.penalty_ns
        } else {
            f64::INFINITY
        };
        self.sample(observed.max(busy.min(cap)), end);
    }

    /// Records a failure that had no latency (an endpoint's `poll_ready` failed).
    pub(crate) fn penalize(&self, now: Instant) {
        if self.uses_clock() {
            self.sample(self.penalty_ns, now);
        }
    }

    fn sample(&self, sample: f64, at: Instant) {
        let now = self.nanos(at);
        let prev = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let last = self.stamp.load(Ordering::Relaxed);
        let next = if sample > prev {
            sample
        } else {
            let w = (-(now.saturating_sub(last) as f64) / self.decay_ns).exp();
            prev * w + sample * (1.0 - w)
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now.max(last), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn peak_then_decay() {
        let load = EndpointLoad::new(Load::default());
        let t0 = Instant::now();
        assert_eq!(load.latency_estimate(t0), Some(30 * MS));
        // A slower sample replaces the estimate at once.
        load.record(t0, t0 + 200 * MS, Class::Success);
        assert_eq!(load.latency_estimate(t0 + 200 * MS), Some(200 * MS));
        // Faster samples pull it down gradually (time constant 10 s).
        let t1 = t0 + Duration::from_secs(10) + 200 * MS;
        load.record(t1 - 10 * MS, t1, Class::Success);
        let est = load.latency_estimate(t1).unwrap().as_secs_f64() * 1e3;
        let expected = 200.0 * (-1f64).exp() + 10.0 * (1.0 - (-1f64).exp());
        assert!((est - expected).abs() < 0.01, "{est} vs {expected}");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_penalised() {
        let load = EndpointLoad::new(Load::default());
        let t0 = Instant::now();
        load.record(t0, t0 + MS, Class::Retryable);
        assert_eq!(load.latency_estimate(t0 + MS), Some(Duration::from_secs(1)));
        let ignored = EndpointLoad::new(Load::default());
        ignored.record(t0, t0 + 40 * MS, Class::Ignorable);
        assert_eq!(ignored.latency_estimate(t0 + 40 * MS), Some(40 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn a_nack_is_load_not_a_failure() {
        let load = EndpointLoad::new(Load::default());
        let t0 = Instant::now();
        load.record(t0, t0 + 40 * MS, Class::Success);
        // A fast nack doubles the estimate: busy, so less attractive, but not the 1 s penalty.
        load.record_outcome(t0 + 40 * MS, t0 + 41 * MS, Classification::nack());
        let est = load.latency_estimate(t0 + 41 * MS).unwrap();
        assert!(est > 70 * MS && est <= 80 * MS, "{est:?}");
        // Repeated nacks are capped at the failure penalty.
        for i in 0..20 {
            load.record_outcome(t0, t0 + (42 + i) * MS, Classification::nack());
        }
        assert_eq!(
            load.latency_estimate(t0 + 61 * MS),
            Some(Duration::from_secs(1))
        );
        // A least-in-flight load ignores it (no clock).
        let lif = EndpointLoad::new(Load::LeastInFlight);
        lif.record_outcome(t0, t0 + MS, Classification::nack());
        assert_eq!(lif.latency_estimate(t0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_429_is_load_and_never_makes_the_endpoint_look_fast() {
        // Before: a throttled answer (ignorable) was recorded at its latency, so a 1 ms 429 pulled
        // the estimate down like a fast success.
        let load = EndpointLoad::new(Load::default());
        let t0 = Instant::now();
        load.record(t0, t0 + 40 * MS, Class::Success);
        load.record_outcome(t0 + 40 * MS, t0 + 41 * MS, Classification::throttled());
        let est = load.latency_estimate(t0 + 41 * MS).unwrap();
        assert!(est > 70 * MS && est <= 80 * MS, "{est:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn cost_counts_in_flight_and_weight() {
        let load = EndpointLoad::new(Load::default());
        let now = Instant::now();
        let base = load.cost(now);
        load.begin();
        load.begin();
        assert!((load.cost(now) - 3.0 * base).abs() < 1e-6);
        assert!((load.weighted_cost(Some(now), 0.5) - 2.0 * base).abs() < 1e-6);
        load.end();
        load.end();
        assert_eq!(load.in_flight(), 0);

        let lif = EndpointLoad::new(Load::LeastInFlight);
        lif.begin();
        assert_eq!(lif.weighted_cost(None, 1.0), 1.0);
        assert_eq!(lif.latency_estimate(now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_estimate_decays_towards_zero() {
        let load = EndpointLoad::new(Load::default());
        let t0 = Instant::now();
        load.record(t0, t0 + Duration::from_secs(1), Class::Success);
        let later = t0 + Duration::from_secs(31);
        let est = load.latency_estimate(later).unwrap();
        assert!(est < Duration::from_millis(60), "{est:?}");
    }
}
