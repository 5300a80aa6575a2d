use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::gradient::{GradientParams, next_limit, next_long_rtt};
use crate::ConfigError;
use crate::telemetry::MetricLabels;

/// The settings of an adaptive concurrency limit: see the [module docs](super) for the algorithm
/// and where each default comes from.
///
/// | setting | default | source |
/// |---|---|---|
/// | [`initial_limit`](Self::initial_limit) | 20 | Gradient2 `initialLimit` |
/// | [`min_limit`](Self::min_limit) | 3 | Envoy `min_concurrency` |
/// | [`max_limit`](Self::max_limit) | 200 | Gradient2 `maxConcurrency` |
/// | [`tolerance`](Self::tolerance) | 1.5 | Gradient2 `rttTolerance` |
/// | [`smoothing`](Self::smoothing) | 0.2 | Gradient2 `smoothing` |
/// | [`queue_size`](Self::queue_size) | 4 | Gradient2 `queueSize` |
/// | [`long_window`](Self::long_window) | 600 updates | Gradient2 `longWindow` |
/// | [`update_interval`](Self::update_interval) | 100 ms | Envoy `concurrency_update_interval` |
/// | [`min_samples`](Self::min_samples) | 10 | (an update needs this many latency samples) |
///
/// Setters are infallible; [`build`](Self::build) checks the combination.
///
/// ```
/// use meshwork::limit::LimitConfig;
///
/// let limiter = LimitConfig::new().min_limit(5).max_limit(100).build()?;
/// assert_eq!(limiter.limit(), 20);
/// let err = LimitConfig::new().min_limit(50).max_limit(10).build().unwrap_err();
/// assert_eq!(err.field(), "limit.max_limit");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LimitConfig {
    initial_limit: u32,
    min_limit: u32,
    max_limit: u32,
    tolerance: f64,
    smoothing: f64,
    queue_size: f64,
    long_window: u32,
    update_interval: Duration,
    min_samples: u32,
    labels: MetricLabels,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl LimitConfig {
    /// The defaults of the table above.
    #[must_use]
    pub fn new() -> Self {
        Self {
            initial_limit: 20,
            min_limit: 3,
            max_limit: 200,
            tolerance: 1.5,
            smoothing: 0.2,
            queue_size: 4.0,
            long_window: 600,
            update_interval: Duration::from_millis(100),
            min_samples: 10,
            labels: MetricLabels::new(),
        }
    }

    /// The limit before the first update (clamped into `[min_limit, max_limit]`).
    #[must_use]
    pub fn initial_limit(mut self, n: u32) -> Self {
        self.initial_limit = n;
        self
    }

    /// The lowest limit (at least 1).
    #[must_use]
    pub fn min_limit(mut self, n: u32) -> Self {
        self.min_limit = n;
        self
    }

    /// The highest limit (at least `min_limit`).
    #[must_use]
    pub fn max_limit(mut self, n: u32) -> Self {
        self.max_limit = n;
        self
    }

    /// How much slower than the long-term latency the recent latency may be before the limit falls
    /// (at least 1).
    #[must_use]
    pub fn tolerance(mut self, t: f64) -> Self {
        self.tolerance = t;
        self
    }

    /// The weight of each update, in `(0, 1]`.
    #[must_use]
    pub fn smoothing(mut self, s: f64) -> Self {
        self.smoothing = s;
        self
    }

    /// The headroom added to the limit at each update (at least 0).
    #[must_use]
    pub fn queue_size(mut self, q: f64) -> Self {
        self.queue_size = q;
        self
    }

    /// The number of updates the long-term latency averages over (at least 1).
    #[must_use]
    pub fn long_window(mut self, n: u32) -> Self {
        self.long_window = n;
        self
    }

    /// The least time between two updates (non-zero).
    #[must_use]
    pub fn update_interval(mut self, d: Duration) -> Self {
        self.update_interval = d;
        self
    }

    /// The least number of latency samples an update needs (at least 1).
    #[must_use]
    pub fn min_samples(mut self, n: u32) -> Self {
        self.min_samples = n;
        self
    }

    /// Static labels on the limit's metrics.
    #[must_use]
    pub fn labels(mut self, labels: MetricLabels) -> Self {
        self.labels = labels;
        self
    }

    /// Checks the settings and builds the shared [`Limiter`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field: `limit.min_limit` (zero), `limit.max_limit`
    /// (below `min_limit`), `limit.tolerance` (below 1 or not finite), `limit.smoothing` (outside
    /// (0, 1]), `limit.queue_size` (negative or not finite), `limit.long_window` (zero),
    /// `limit.update_interval` (zero or over 1 hour) or `limit.min_samples` (zero).
    pub fn build(self) -> Result<Limiter, ConfigError> {
        let bad = |field, reason| Err(ConfigError::new(field, reason));
        if self.min_limit == 0 {
            return bad("limit.min_limit", "must be at least 1");
        }
        if self.max_limit < self.min_limit {
            return bad("limit.max_limit", "must be at least `min_limit`");
        }
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return bad("limit.tolerance", "must be a finite number of at least 1");
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return bad("limit.smoothing", "must be in (0, 1]");
        }
        if !(self.queue_size >= 0.0 && self.queue_size.is_finite()) {
            return bad("limit.queue_size", "must be a finite number of at least 0");
        }
        if self.long_window == 0 {
            return bad("limit.long_window", "must be at least 1");
        }
        crate::error::non_zero("limit.update_interval", self.update_interval)?;
        if self.update_interval > Duration::from_secs(3600) {
            return bad("limit.update_interval", "must be at most 1 hour");
        }
        if self.min_samples == 0 {
            return bad("limit.min_samples", "must be at least 1");
        }
        Ok(Limiter::new(self))
    }
}

/// The shared state of one adaptive concurrency limit: clone it to share the limit between
/// services (for example every connection of one server).
///
/// Everything on the request path is an atomic: taking a slot is one compare-and-swap loop on the
/// in-flight count, recording a latency two additions. The update of the limit runs at most once
/// per [`update_interval`](LimitConfig::update_interval), in the request whose sample closes the
/// interval (a compare-and-swap elects it), so no task and no lock is needed.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    params: GradientParams,
    long_window: u32,
    interval_ns: u64,
    min_samples: u64,
    epoch: Instant,
    in_flight: AtomicU64,
    /// The integer limit the request path compares against.
    limit: AtomicU64,
    /// The estimated limit (`f64` bits); written only by the elected updater.
    estimate: AtomicU64,
    /// The long-term latency in nanoseconds (`f64` bits), 0 before the first update.
    long_rtt: AtomicU64,
    /// The latest recent latency in nanoseconds (`f64` bits), for observation.
    short_rtt: AtomicU64,
    /// Start of the current sampling interval, nanoseconds since `epoch`.
    window_start: AtomicU64,
    sum_ns: AtomicU64,
    samples: AtomicU64,
    max_in_flight: AtomicU64,
    rejected: AtomicU64,
    telemetry: Telemetry,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("rejected", &self.rejected())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    fn new(c: LimitConfig) -> Self {
        let params = GradientParams {
            min_limit: f64::from(c.min_limit),
            max_limit: f64::from(c.max_limit),
            tolerance: c.tolerance,
            smoothing: c.smoothing,
            queue_size: c.queue_size,
        };
        let initial = c.initial_limit.clamp(c.min_limit, c.max_limit);
        let telemetry = Telemetry::new(&c.labels);
        telemetry.limit(initial as f64, 0);
        Self {
            inner: Arc::new(Inner {
                params,
                long_window: c.long_window,
                interval_ns: c.update_interval.as_nanos() as u64,
                min_samples: u64::from(c.min_samples),
                epoch: Instant::now(),
                in_flight: AtomicU64::new(0),
                limit: AtomicU64::new(u64::from(initial)),
                estimate: AtomicU64::new(f64::from(initial).to_bits()),
                long_rtt: AtomicU64::new(0f64.to_bits()),
                short_rtt: AtomicU64::new(0f64.to_bits()),
                window_start: AtomicU64::new(0),
                sum_ns: AtomicU64::new(0),
                samples: AtomicU64::new(0),
                max_in_flight: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                telemetry,
            }),
        }
    }

    /// The current limit.
    #[must_use]
    pub fn limit(&self) -> u64 {
        self.inner.limit.load(Ordering::Relaxed)
    }

    /// Requests admitted and not yet answered.
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Requests rejected so far.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// The long-term latency the controller compares against (`None` before the first update).
    #[must_use]
    pub fn long_rtt(&self) -> Option<Duration> {
        let ns = f64::from_bits(self.inner.long_rtt.load(Ordering::Relaxed));
        (ns > 0.0).then(|| Duration::from_nanos(ns as u64))
    }

    /// Takes a slot if one is free: `None` means the request must be rejected (and has been
    /// counted as a rejection).
    #[must_use]
    pub fn try_acquire(&self) -> Option<Permit> {
        let i = &self.inner;
        let limit = i.limit.load(Ordering::Relaxed);
        let mut cur = i.in_flight.load(Ordering::Relaxed);
        loop {
            if cur >= limit {
                i.rejected.fetch_add(1, Ordering::Relaxed);
                i.telemetry.rejected();
                return None;
            }
            match i.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        i.max_in_flight.fetch_max(cur + 1, Ordering::Relaxed);
        Some(Permit {
            limiter: self.clone(),
            start: Instant::now(),
        })
    }

    /// Records one latency sample, and updates the limit when it closes the sampling interval.
    fn sample(&self, rtt: Duration, now: Instant) {
        let i = &self.inner;
        let rtt_ns = (rtt.as_nanos() as u64).max(1);
        i.sum_ns.fetch_add(rtt_ns, Ordering::Relaxed);
        let n = i.samples.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ns = now.saturating_duration_since(i.epoch).as_nanos() as u64;
        let start = i.window_start.load(Ordering::Relaxed);
        if n < i.min_samples || now_ns.saturating_sub(start) < i.interval_ns {
            return;
        }
        if i.window_start
            .compare_exchange(start, now_ns, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return; // another request is updating
        }
        // A sample added between these swaps lands in the next interval: benign.
        let count = i.samples.swap(0, Ordering::AcqRel);
        let sum = i.sum_ns.swap(0, Ordering::AcqRel);
        let busiest = i
            .max_in_flight
            .swap(i.in_flight.load(Ordering::Relaxed), Ordering::AcqRel);
        if count == 0 {
            return;
        }
        let short = sum as f64 / count as f64;
        let long = next_long_rtt(
            f64::from_bits(i.long_rtt.load(Ordering::Relaxed)),
            short,
            i.long_window,
        );
        let estimate = f64::from_bits(i.estimate.load(Ordering::Relaxed));
        let next = next_limit(&i.params, estimate, short, long, busiest);
        i.long_rtt.store(long.to_bits(), Ordering::Relaxed);
        i.short_rtt.store(short.to_bits(), Ordering::Relaxed);
        i.estimate.store(next.to_bits(), Ordering::Relaxed);
        let old = i.limit.swap(next as u64, Ordering::Relaxed);
        if old != next as u64 {
            tracing::debug!(
                limit = next as u64,
                old,
                short_rtt_ns = short,
                long_rtt_ns = long,
                "concurrency limit changed"
            );
        }
        i.telemetry.limit(next, i.in_flight.load(Ordering::Relaxed));
    }
}

/// One admitted request's slot; released when dropped. Record the latency with
/// [`Permit::complete`].
#[derive(Debug)]
pub struct Permit {
    limiter: Limiter,
    start: Instant,
}

impl Permit {
    /// The request was answered: records its latency (from the permit's creation until now), then
    /// releases the slot.
    pub fn complete(self) {
        let now = Instant::now();
        self.limiter
            .sample(now.saturating_duration_since(self.start), now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Metric handles, created once per limiter.
struct Telemetry {
    #[cfg(feature = "metrics")]
    limit: metrics::Gauge,
    #[cfg(feature = "metrics")]
    in_flight: metrics::Gauge,
    #[cfg(feature = "metrics")]
    rejected: metrics::Counter,
}

impl Telemetry {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn new(labels: &MetricLabels) -> Self {
        #[cfg(feature = "metrics")]
        {
            crate::telemetry::describe_prefix("meshwork_limit_");
            let labels = labels.to_metrics(&[]);
            Self {
                limit: metrics::gauge!("meshwork_limit_limit", labels.clone()),
                in_flight: metrics::gauge!("meshwork_limit_in_flight", labels.clone()),
                rejected: metrics::counter!("meshwork_limit_rejected_total", labels),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn limit(&self, limit: f64, in_flight: u64) {
        #[cfg(feature = "metrics")]
        {
            self.limit.set(limit.floor());
            self.in_flight.set(in_flight as f64);
        }
    }

    fn rejected(&self) {
        #[cfg(feature = "metrics")]
        self.rejected.increment(1);
    }
}
