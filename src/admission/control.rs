use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

use super::window::Window;
use crate::ConfigError;
use crate::classify::{Class, Classification};
use crate::rng::{SeedSource, SmallRng};
use crate::telemetry::MetricLabels;

/// The SRE book's client-side throttling probability, capped at `max`:
/// `min(max, max(0, (requests − k × accepts) / (requests + 1)))`.
///
/// `k` is how many requests per accepted one the client may send before it starts rejecting
/// locally: with `k = 1 / success_threshold` (Envoy's form), nothing is rejected while the success
/// rate is at or above the threshold.
///
/// ```
/// use meshwork::admission::rejection_probability;
///
/// assert_eq!(rejection_probability(100, 100, 2.0, 1.0), 0.0);
/// // 100 requests, 10 accepted, K = 2: (100 - 20) / 101.
/// assert!((rejection_probability(100, 10, 2.0, 1.0) - 80.0 / 101.0).abs() < 1e-12);
/// assert_eq!(rejection_probability(100, 0, 2.0, 0.8), 0.8);
/// ```
#[must_use]
pub fn rejection_probability(requests: u64, accepts: u64, k: f64, max: f64) -> f64 {
    let p = (requests as f64 - k * accepts as f64) / (requests as f64 + 1.0);
    p.clamp(0.0, max.max(0.0))
}

/// The settings of client-side admission control: see the [module docs](super).
///
/// | setting | default | source |
/// |---|---|---|
/// | [`window`](Self::window) | 30 s | Envoy `sampling_window` |
/// | [`buckets`](Self::buckets) | 30 (one per second) | — |
/// | [`success_threshold`](Self::success_threshold) | 0.95 (K = 1/0.95) | Envoy `sr_threshold` |
/// | [`max_rejection_probability`](Self::max_rejection_probability) | 0.8 | Envoy `max_rejection_probability` |
/// | [`min_requests_per_sec`](Self::min_requests_per_sec) | 0 | Envoy `rps_threshold` |
/// | [`seed`](Self::seed) | from entropy | — |
///
/// Envoy's `aggression` (an exponent on the probability) is left at its default, 1, which is the
/// SRE formula itself.
///
/// ```
/// use std::time::Duration;
/// use meshwork::admission::AdmissionConfig;
///
/// let control = AdmissionConfig::new().window(Duration::from_secs(10)).build()?;
/// assert_eq!(control.config().get_window(), Duration::from_secs(10));
/// let err = AdmissionConfig::new().success_threshold(0.0).build().unwrap_err();
/// assert_eq!(err.field(), "admission.success_threshold");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct AdmissionConfig {
    window: Duration,
    buckets: u32,
    success_threshold: f64,
    max_rejection_probability: f64,
    min_requests_per_sec: f64,
    pub(crate) seeds: Option<SeedSource>,
    pub(crate) labels: MetricLabels,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl AdmissionConfig {
    /// The defaults of the table above.
    #[must_use]
    pub fn new() -> Self {
        Self {
            window: Duration::from_secs(30),
            buckets: 30,
            success_threshold: 0.95,
            max_rejection_probability: 0.8,
            min_requests_per_sec: 0.0,
            seeds: None,
            labels: MetricLabels::new(),
        }
    }

    /// How far back requests and accepts are counted (non-zero, at most 1 hour).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many buckets the window slides by (1 to 1,000).
    #[must_use]
    pub fn buckets(mut self, n: u32) -> Self {
        self.buckets = n;
        self
    }

    /// The success rate below which the client starts rejecting, in `(0, 1]`; `K` of the SRE
    /// formula is its inverse.
    #[must_use]
    pub fn success_threshold(mut self, t: f64) -> Self {
        self.success_threshold = t;
        self
    }

    /// The highest rejection probability, in `[0, 1]` (below 1, some requests always go through
    /// and detect the upstream's recovery).
    #[must_use]
    pub fn max_rejection_probability(mut self, p: f64) -> Self {
        self.max_rejection_probability = p;
        self
    }

    /// Below this many requests per second over the window, nothing is rejected (at least 0).
    #[must_use]
    pub fn min_requests_per_sec(mut self, rps: f64) -> Self {
        self.min_requests_per_sec = rps;
        self
    }

    /// The source of the random draws (seed it for deterministic tests).
    #[must_use]
    pub fn seed(mut self, seeds: SeedSource) -> Self {
        self.seeds = Some(seeds);
        self
    }

    /// Static labels on the layer's metrics.
    #[must_use]
    pub fn labels(mut self, labels: MetricLabels) -> Self {
        self.labels = labels;
        self
    }

    /// The window.
    #[must_use]
    pub fn get_window(&self) -> Duration {
        self.window
    }

    /// The success threshold.
    #[must_use]
    pub fn get_success_threshold(&self) -> f64 {
        self.success_threshold
    }

    /// The highest rejection probability.
    #[must_use]
    pub fn get_max_rejection_probability(&self) -> f64 {
        self.max_rejection_probability
    }

    /// Checks the settings (each error names its field).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field: `admission.window` (zero or over 1 hour),
    /// `admission.buckets` (outside 1..=1000), `admission.success_threshold` (outside (0, 1]),
    /// `admission.max_rejection_probability` (outside [0, 1]) or `admission.min_requests_per_sec`
    /// (negative or not finite).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason| Err(ConfigError::new(field, reason));
        crate::error::non_zero("admission.window", self.window)?;
        if self.window > Duration::from_secs(3600) {
            return bad("admission.window", "must be at most 1 hour");
        }
        if !(1..=1000).contains(&self.buckets) {
            return bad("admission.buckets", "must be in 1..=1000");
        }
        if !(self.success_threshold > 0.0 && self.success_threshold <= 1.0) {
            return bad("admission.success_threshold", "must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.max_rejection_probability) {
            return bad("admission.max_rejection_probability", "must be in [0, 1]");
        }
        if !(self.min_requests_per_sec >= 0.0 && self.min_requests_per_sec.is_finite()) {
            return bad(
                "admission.min_requests_per_sec",
                "must be a finite number of at least 0",
            );
        }
        Ok(())
    }

    /// Checks the settings and builds the shared [`AdmissionControl`].
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`validate`](Self::validate), naming the first invalid field.
    pub fn build(self) -> Result<AdmissionControl, ConfigError> {
        self.validate()?;
        Ok(AdmissionControl::new(self))
    }
}

/// The shared state of one admission controller: its sliding window of requests and accepts.
/// Clones share it; give one to every client of the same upstream.
#[derive(Clone)]
pub struct AdmissionControl {
    inner: Arc<Inner>,
}

struct Inner {
    config: AdmissionConfig,
    k: f64,
    epoch: Instant,
    window: Window,
    seeds: SeedSource,
    rejecting: AtomicBool,
    telemetry: Telemetry,
}

impl fmt::Debug for AdmissionControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionControl")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AdmissionControl {
    fn new(config: AdmissionConfig) -> Self {
        let bucket_ns = (config.window.as_nanos() / u128::from(config.buckets)) as u64;
        let seeds = config.seeds.clone().unwrap_or_default();
        let telemetry = Telemetry::new(&config.labels);
        Self {
            inner: Arc::new(Inner {
                k: 1.0 / config.success_threshold,
                epoch: Instant::now(),
                window: Window::new(bucket_ns, config.buckets as usize),
                seeds,
                rejecting: AtomicBool::new(false),
                telemetry,
                config,
            }),
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &AdmissionConfig {
        &self.inner.config
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.inner.epoch).as_nanos() as u64
    }

    /// The requests and accepts counted in the window ending at `now`.
    #[must_use]
    pub fn counts(&self, now: Instant) -> (u64, u64) {
        self.inner.window.totals(self.nanos(now))
    }

    /// The probability that a request is rejected at `now`.
    #[must_use]
    pub fn rejection_probability(&self, now: Instant) -> f64 {
        let i = &self.inner;
        let (requests, accepts) = self.counts(now);
        let rps = requests as f64 / i.config.window.as_secs_f64();
        if rps < i.config.min_requests_per_sec {
            return 0.0;
        }
        rejection_probability(requests, accepts, i.k, i.config.max_rejection_probability)
    }

    /// Decides whether to admit one request now, drawing from `rng`. A rejected request is not
    /// counted in the window (see the [module docs](super) for why).
    pub fn admit(&self, rng: &mut SmallRng) -> bool {
        let now = Instant::now();
        let p = self.rejection_probability(now);
        let i = &self.inner;
        if p > 0.0 {
            if !i.rejecting.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    probability = p,
                    "admission control: rejecting requests locally"
                );
            }
        } else if i.rejecting.swap(false, Ordering::Relaxed) {
            tracing::info!("admission control: no longer rejecting");
        }
        if p > 0.0 && rng.random::<f64>() < p {
            i.telemetry.rejected();
            return false;
        }
        true
    }

    /// Records the outcome of an admitted request: a success is an accept; a failure or a nack a
    /// request that was not accepted; any other ignorable outcome is not counted.
    pub fn record(&self, c: Classification) {
        let accepted = match c.class() {
            Class::Success => true,
            Class::Ignorable if !c.is_nack() && !c.is_throttled() => return,
            _ => false,
        };
        self.inner
            .window
            .record(self.nanos(Instant::now()), accepted);
    }

    /// A new generator for one service clone.
    pub(super) fn rng(&self) -> SmallRng {
        self.inner.seeds.rng()
    }
}

/// Metric handles, created once per controller.
struct Telemetry {
    #[cfg(feature = "metrics")]
    rejected: metrics::Counter,
}

impl Telemetry {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn new(labels: &MetricLabels) -> Self {
        #[cfg(feature = "metrics")]
        {
            crate::telemetry::describe_prefix("meshwork_admission_");
            Self {
                rejected: metrics::counter!(
                    "meshwork_admission_rejected_total",
                    labels.to_metrics(&[])
                ),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    fn rejected(&self) {
        #[cfg(feature = "metrics")]
        self.rejected.increment(1);
    }
}
