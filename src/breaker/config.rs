use std::time::Duration;

use super::window::MAX_BUCKETS;
use crate::ConfigError;
use crate::backoff::Backoff;
use crate::error::non_zero;
use crate::rng::SeedSource;
use crate::telemetry::MetricLabels;

/// What an open breaker does with callers: see the [module docs](crate::breaker#two-modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Open ⇒ `poll_ready` is `Pending` until the probe is due (the task is woken by a timer). For
    /// endpoints under a balancer, which skips services that are not ready.
    #[default]
    Gate,
    /// Open ⇒ `poll_ready` is `Ready` and `call` fails at once with [`Open`](super::Open), without
    /// touching the inner service. For a breaker used alone.
    FailFast,
}

/// The validated configuration of a circuit breaker. Build it with [`BreakerConfig::builder`]; the
/// [`Default`] is the builder's defaults.
///
/// ```
/// use std::time::Duration;
/// use meshwork::breaker::{BreakerConfig, Mode};
///
/// let config = BreakerConfig::builder()
///     .consecutive_failures(3)
///     .success_rate(0.9, Duration::from_secs(30), 20)
///     .slow_call(Duration::from_millis(500))
///     .mode(Mode::FailFast)
///     .build()?;
/// assert_eq!(config.mode(), Mode::FailFast);
///
/// let err = BreakerConfig::builder().half_open_probes(0).build().unwrap_err();
/// assert_eq!(err.field(), "half_open_probes");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) success_rate: Option<SuccessRate>,
    pub(crate) slow_call: Option<Duration>,
    pub(crate) backoff: Backoff,
    pub(crate) half_open_probes: u32,
    pub(crate) probe_timeout: Duration,
    pub(crate) mode: Mode,
    pub(crate) labels: MetricLabels,
    pub(crate) seeds: Option<SeedSource>,
}

/// The success-rate policy's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SuccessRate {
    pub(crate) min_rate: f64,
    pub(crate) window: Duration,
    pub(crate) min_requests: u32,
    pub(crate) buckets: u32,
}

impl SuccessRate {
    pub(crate) fn bucket_nanos(&self) -> u64 {
        u64::try_from(self.window.as_nanos() / u128::from(self.buckets)).unwrap_or(u64::MAX)
    }
}

/// How long a half-open probe may stay out (reserved, or called and unanswered) before its period
/// is abandoned for a fresh one: twice the client's default per-try timeout, so that a probe is
/// normally ended by its own timeout first.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most probes a half-open breaker may admit.
pub const MAX_PROBES: u32 = 1024;

impl BreakerConfig {
    /// A builder, starting from the defaults: trip after 5 consecutive failures, or below 80 %
    /// success over 10 s (10 buckets) with at least 5 requests; no slow-call policy; open for an
    /// equal-jitter exponential backoff from 1 s to 60 s; 1 half-open probe; [`Mode::Gate`]; no
    /// metric labels; randomness from the OS.
    #[allow(
        clippy::missing_panics_doc,
        reason = "only `expect`s on constant, tested defaults"
    )]
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder {
            config: BreakerConfig {
                consecutive_failures: Some(5),
                success_rate: Some(SuccessRate {
                    min_rate: 0.8,
                    window: Duration::from_secs(10),
                    min_requests: 5,
                    buckets: 10,
                }),
                slow_call: None,
                backoff: Backoff::equal_jitter(Duration::from_secs(1), Duration::from_secs(60))
                    .expect("valid default backoff"),
                half_open_probes: 1,
                probe_timeout: DEFAULT_PROBE_TIMEOUT,
                mode: Mode::Gate,
                labels: MetricLabels::new(),
                seeds: None,
            },
        }
    }

    /// How long a half-open period's probes may stay out before it is abandoned.
    #[must_use]
    pub fn probe_timeout(&self) -> Duration {
        self.probe_timeout
    }

    /// The mode.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The consecutive-failure threshold, if that policy is on.
    #[must_use]
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }

    /// The success-rate policy, if on: (minimum success rate, window, minimum requests).
    #[must_use]
    pub fn success_rate(&self) -> Option<(f64, Duration, u32)> {
        self.success_rate
            .map(|r| (r.min_rate, r.window, r.min_requests))
    }

    /// The slow-call threshold, if the slow-call policy is on.
    #[must_use]
    pub fn slow_call(&self) -> Option<Duration> {
        self.slow_call
    }

    /// The open-state backoff.
    #[must_use]
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// How many probes a half-open breaker admits.
    #[must_use]
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self::builder().build().expect("valid defaults")
    }
}

/// Builds a [`BreakerConfig`]; every value is checked by [`build`](Self::build).
#[derive(Clone, Debug)]
#[must_use = "call `build` to get the configuration"]
pub struct BreakerConfigBuilder {
    config: BreakerConfig,
}

impl BreakerConfigBuilder {
    /// Trip after `n` consecutive failures (default 5). Zero is rejected; use
    /// [`no_consecutive_failures`](Self::no_consecutive_failures) to turn the policy off.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// Turns the consecutive-failure policy off.
    pub fn no_consecutive_failures(mut self) -> Self {
        self.config.consecutive_failures = None;
        self
    }

    /// Trip when fewer than `min_rate` (in (0, 1]) of the outcomes over the last `window` were
    /// successes, once at least `min_requests` (≥ 1) outcomes were counted. Default 0.8, 10 s, 5.
    pub fn success_rate(mut self, min_rate: f64, window: Duration, min_requests: u32) -> Self {
        let buckets = self.config.success_rate.map_or(10, |s| s.buckets);
        self.config.success_rate = Some(SuccessRate {
            min_rate,
            window,
            min_requests,
            buckets,
        });
        self
    }

    /// How many buckets the success-rate window is divided into (1 to 16, default 10): the window
    /// slides one bucket at a time.
    pub fn window_buckets(mut self, buckets: u32) -> Self {
        if let Some(s) = &mut self.config.success_rate {
            s.buckets = buckets;
        }
        self
    }

    /// Turns the success-rate policy off.
    pub fn no_success_rate(mut self) -> Self {
        self.config.success_rate = None;
        self
    }

    /// Counts a successful call that took longer than `threshold` as a failure (off by default).
    pub fn slow_call(mut self, threshold: Duration) -> Self {
        self.config.slow_call = Some(threshold);
        self
    }

    /// The open-state backoff: how long the breaker stays open after its n-th consecutive trip. The
    /// default is [`Backoff::equal_jitter`] from 1 s to 60 s, which never opens for less than half
    /// the exponential delay (full jitter could open for almost no time at all).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// How many probes a half-open breaker admits (1 to 1024, default 1). All must succeed to close.
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.config.half_open_probes = n;
        self
    }

    /// How long a half-open period's probes may all stay out — reserved by a caller that has not
    /// called yet, or called and not answered — before the period is abandoned and new probes are
    /// admitted (default [`DEFAULT_PROBE_TIMEOUT`], 10 s). Without this bound, a caller that got
    /// `ready()` and never called (legal tower use, inside `select!` for example), or a probe stuck
    /// on a hung connection, would keep the endpoint unavailable for everyone. The outcome of an
    /// abandoned probe is not counted.
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.config.probe_timeout = timeout;
        self
    }

    /// The [`Mode`] (default [`Mode::Gate`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Static labels for the breaker's metrics.
    pub fn labels(mut self, labels: MetricLabels) -> Self {
        self.config.labels = labels;
        self
    }

    /// The source of randomness for the backoff jitter (default: OS entropy). Each breaker built from
    /// this configuration draws its own generator from it.
    pub fn seed(mut self, seeds: SeedSource) -> Self {
        self.config.seeds = Some(seeds);
        self
    }

    /// Checks every value and returns the configuration, or the first invalid field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field: `consecutive_failures` (zero),
    /// `min_success_rate` (outside (0, 1]), `window` (zero, or under 1 ns per bucket), `min_requests`
    /// (zero), `window_buckets` (outside 1..=16), `slow_call` (zero), `half_open_probes` (outside
    /// 1..=1024) or `probe_timeout` (zero).
    pub fn build(self) -> Result<BreakerConfig, ConfigError> {
        let c = &self.config;
        if c.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be greater than zero",
            ));
        }
        if let Some(s) = &c.success_rate {
            if !(s.min_rate > 0.0 && s.min_rate <= 1.0) {
                return Err(ConfigError::new(
                    "min_success_rate",
                    "must be greater than 0 and at most 1",
                ));
            }
            non_zero("window", s.window)?;
            if s.min_requests == 0 {
                return Err(ConfigError::new(
                    "min_requests",
                    "must be greater than zero",
                ));
            }
            if s.buckets == 0 || s.buckets > MAX_BUCKETS {
                return Err(ConfigError::new(
                    "window_buckets",
                    "must be between 1 and 16",
                ));
            }
            if s.bucket_nanos() == 0 {
                return Err(ConfigError::new(
                    "window",
                    "must be at least one nanosecond per bucket",
                ));
            }
        }
        if let Some(d) = c.slow_call {
            non_zero("slow_call", d)?;
        }
        if c.half_open_probes == 0 || c.half_open_probes > MAX_PROBES {
            return Err(ConfigError::new(
                "half_open_probes",
                "must be between 1 and 1024",
            ));
        }
        non_zero("probe_timeout", c.probe_timeout)?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = BreakerConfig::default();
        assert_eq!(c.consecutive_failures(), Some(5));
        let s = c.success_rate.unwrap();
        assert_eq!(
            (s.min_rate, s.window, s.min_requests),
            (0.8, Duration::from_secs(10), 5)
        );
        assert_eq!(c.half_open_probes(), 1);
        assert_eq!(c.mode(), Mode::Gate);
        assert_eq!(c.backoff().base(), Duration::from_secs(1));
        assert_eq!(c.backoff().max(), Duration::from_secs(60));
        // Equal jitter: never less than half the delay.
        assert_eq!(
            c.backoff().bounds(0, Duration::ZERO).0,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let b = BreakerConfig::builder;
        let s = Duration::from_secs(1);
        let field = |r: Result<BreakerConfig, ConfigError>| r.unwrap_err().field().to_owned();
        assert_eq!(
            field(b().consecutive_failures(0).build()),
            "consecutive_failures"
        );
        for bad in [0.0, -0.1, 1.01, f64::NAN] {
            assert_eq!(
                field(b().success_rate(bad, s, 5).build()),
                "min_success_rate"
            );
        }
        assert_eq!(
            field(b().success_rate(0.5, Duration::ZERO, 5).build()),
            "window"
        );
        assert_eq!(field(b().success_rate(0.5, s, 0).build()), "min_requests");
        assert_eq!(field(b().window_buckets(0).build()), "window_buckets");
        assert_eq!(field(b().window_buckets(17).build()), "window_buckets");
        assert_eq!(
            field(b().success_rate(0.5, Duration::from_nanos(5), 1).build()),
            "window"
        );
        assert_eq!(field(b().slow_call(Duration::ZERO).build()), "slow_call");
        assert_eq!(field(b().half_open_probes(0).build()), "half_open_probes");
        assert_eq!(
            field(b().half_open_probes(1025).build()),
            "half_open_probes"
        );
        // A backoff with max below base never gets this far: its own constructor rejects it.
        assert_eq!(Backoff::equal_jitter(s * 2, s).unwrap_err().field(), "max");
        assert!(
            b().success_rate(1.0, s, 1)
                .half_open_probes(1024)
                .build()
                .is_ok()
        );
        assert!(
            b().no_consecutive_failures()
                .no_success_rate()
                .build()
                .is_ok()
        );
    }
}
