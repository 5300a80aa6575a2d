use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::{Budget, CloneRequest, NotReplayable, Replay, RetryBudget};
use crate::backoff::Backoff;
use crate::classify::{Class, Classification, DefaultClassify};
use crate::rng::SeedSource;
use crate::telemetry::MetricLabels;

/// What to retry, how often, and how long to wait: see the [module docs](crate::retry).
///
/// | setting | default |
/// |---|---|
/// | [`classify`](Self::classify) | [`DefaultClassify`] (`RetryPolicy::http()`: `HttpClassify`) |
/// | [`replay`](Self::replay) | [`CloneRequest`] (`RetryPolicy::http()`: `HttpReplay`) |
/// | [`max_retries`](Self::max_retries) | 2 |
/// | [`max_requeues`](Self::max_requeues) | 2 |
/// | [`backoff`](Self::backoff) | full jitter, 25 ms base, 250 ms cap |
/// | [`retry_after_cap`](Self::retry_after_cap) | 10 s |
/// | [`min_try_time`](Self::min_try_time) | 1 ms |
/// | [`budget`](Self::budget) | a new [`RetryBudget`] with its defaults |
/// | [`seed`](Self::seed) | from entropy |
/// | [`labels`](Self::labels) | none |
///
/// ```
/// use std::time::Duration;
/// use meshwork::backoff::Backoff;
/// use meshwork::retry::{RetryBudget, RetryPolicy};
///
/// let shared = RetryBudget::new();
/// let policy = RetryPolicy::new()
///     .max_retries(3)
///     .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_millis(100))?)
///     .retry_after_cap(Duration::from_secs(2))
///     .budget(shared.clone());
/// assert_eq!(policy.get_max_retries(), 3);
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryPolicy<C = DefaultClassify, R = CloneRequest> {
    pub(super) classify: C,
    pub(super) replay: R,
    pub(super) max_retries: u32,
    pub(super) max_requeues: u32,
    pub(super) backoff: Backoff,
    pub(super) retry_after_cap: Duration,
    pub(super) min_try_time: Duration,
    pub(super) budget: std::sync::Arc<dyn Budget>,
    pub(crate) seeds: Option<SeedSource>,
    pub(crate) labels: MetricLabels,
}

impl<C: fmt::Debug, R: fmt::Debug> fmt::Debug for RetryPolicy<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("classify", &self.classify)
            .field("replay", &self.replay)
            .field("max_retries", &self.max_retries)
            .field("max_requeues", &self.max_requeues)
            .field("backoff", &self.backoff)
            .field("retry_after_cap", &self.retry_after_cap)
            .field("min_try_time", &self.min_try_time)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicy {
    /// The default policy for any `Clone` request: [`DefaultClassify`], [`CloneRequest`].
    #[must_use]
    #[allow(
        clippy::missing_panics_doc,
        reason = "only `expect`s on constant, tested defaults"
    )]
    pub fn new() -> Self {
        Self {
            classify: DefaultClassify,
            replay: CloneRequest,
            max_retries: 2,
            max_requeues: 2,
            backoff: Backoff::full_jitter(Duration::from_millis(25), Duration::from_millis(250))
                .expect("the default backoff is valid"),
            retry_after_cap: Duration::from_secs(10),
            min_try_time: Duration::from_millis(1),
            budget: std::sync::Arc::new(RetryBudget::new()),
            seeds: None,
            labels: MetricLabels::new(),
        }
    }
}

#[cfg(feature = "http")]
impl RetryPolicy<crate::classify::HttpClassify, crate::http::HttpReplay> {
    /// The default policy for HTTP requests with a [`ReplayBody`](crate::http::ReplayBody):
    /// [`HttpClassify`](crate::classify::HttpClassify) and
    /// [`HttpReplay`](crate::http::HttpReplay) (idempotent methods only, unless unsent).
    #[must_use]
    pub fn http() -> Self {
        RetryPolicy::new()
            .classify(crate::classify::HttpClassify::new())
            .replay(crate::http::HttpReplay::new())
    }
}

impl<C, R> RetryPolicy<C, R> {
    /// Sets the classifier: only [`Class::Retryable`] outcomes are retried.
    pub fn classify<C2>(self, classify: C2) -> RetryPolicy<C2, R> {
        self.map_parts(|_, replay| (classify, replay))
    }

    /// Sets how requests are copied, and what the layer knows of their deadline and idempotency.
    pub fn replay<R2>(self, replay: R2) -> RetryPolicy<C, R2> {
        self.map_parts(|classify, _| (classify, replay))
    }

    /// The same policy with its classifier and replay (its type parameters) changed by `f`.
    fn map_parts<C2, R2>(self, f: impl FnOnce(C, R) -> (C2, R2)) -> RetryPolicy<C2, R2> {
        let (classify, replay) = f(self.classify, self.replay);
        RetryPolicy {
            classify,
            replay,
            max_retries: self.max_retries,
            max_requeues: self.max_requeues,
            backoff: self.backoff,
            retry_after_cap: self.retry_after_cap,
            min_try_time: self.min_try_time,
            budget: self.budget,
            seeds: self.seeds,
            labels: self.labels,
        }
    }

    /// Copies requests with `f` (for request types that are not `Clone`); see
    /// [`FnReplay`](super::FnReplay).
    pub fn clone_with<F>(self, f: F) -> RetryPolicy<C, super::FnReplay<F>> {
        self.replay(super::FnReplay::new(f))
    }

    /// The most retries of one request after failures that may have reached the server (default
    /// 2; 0 disables them, requeues remain).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub const fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The most requeues of one request after failures that prove it never reached the server
    /// (default 2).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub const fn max_requeues(mut self, n: u32) -> Self {
        self.max_requeues = n;
        self
    }

    /// The wait before each retry or requeue (attempt numbers count both).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub const fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest wait a server's `Retry-After` can impose (default 10 s): the layer waits
    /// `max(backoff, min(retry_after, cap))`. Zero ignores `Retry-After` (the backoff alone).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub const fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.retry_after_cap = cap;
        self
    }

    /// The least time a try needs: a retry starts only if at least this much is left before the
    /// request's deadline once its backoff has elapsed (default 1 ms; zero allowed).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub const fn min_try_time(mut self, t: Duration) -> Self {
        self.min_try_time = t;
        self
    }

    /// The budget retries and requeues draw on; pass clones of one handle to several layers to
    /// share it.
    ///
    /// Any [`Budget`] works: [`RetryBudget`] (the default), [`AlwaysRetry`](super::AlwaysRetry),
    /// [`NeverRetry`](super::NeverRetry), or your own.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn budget(mut self, budget: impl Budget) -> Self {
        self.budget = std::sync::Arc::new(budget);
        self
    }

    /// The source of the backoff jitter (seed it for deterministic tests).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn seed(mut self, seeds: SeedSource) -> Self {
        self.seeds = Some(seeds);
        self
    }

    /// Static labels on every metric the layer emits.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn labels(mut self, labels: MetricLabels) -> Self {
        self.labels = labels;
        self
    }

    /// The most retries per request.
    pub const fn get_max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The most requeues per request.
    pub const fn get_max_requeues(&self) -> u32 {
        self.max_requeues
    }

    /// The backoff between tries.
    pub const fn get_backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The cap on a server's `Retry-After`.
    pub const fn get_retry_after_cap(&self) -> Duration {
        self.retry_after_cap
    }

    /// The retry budget.
    pub fn get_budget(&self) -> &dyn Budget {
        &*self.budget
    }
}

/// Metric handles, created once per layer.
#[derive(Clone, Debug)]
pub(super) struct Telemetry {
    #[cfg(feature = "metrics")]
    retries: metrics::Counter,
    #[cfg(feature = "metrics")]
    requeues: metrics::Counter,
    #[cfg(feature = "metrics")]
    exhausted: metrics::Counter,
    #[cfg(feature = "metrics")]
    too_large: metrics::Counter,
}

impl Telemetry {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn new(labels: &MetricLabels) -> Self {
        #[cfg(feature = "metrics")]
        {
            crate::telemetry::describe_prefix("meshwork_retry_");
            let labels = labels.to_metrics(&[]);
            Self {
                retries: metrics::counter!("meshwork_retry_retries_total", labels.clone()),
                requeues: metrics::counter!("meshwork_retry_requeues_total", labels.clone()),
                exhausted: metrics::counter!(
                    "meshwork_retry_budget_exhausted_total",
                    labels.clone()
                ),
                too_large: metrics::counter!("meshwork_retry_body_too_large_total", labels),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    fn retry(&self) {
        #[cfg(feature = "metrics")]
        self.retries.increment(1);
    }
    fn requeue(&self) {
        #[cfg(feature = "metrics")]
        self.requeues.increment(1);
    }
    fn exhausted(&self) {
        #[cfg(feature = "metrics")]
        self.exhausted.increment(1);
    }
    fn too_large(&self) {
        #[cfg(feature = "metrics")]
        self.too_large.increment(1);
    }
}

/// The policy and its metric handles, shared by every clone of one layer's services.
#[derive(Debug)]
pub(super) struct Shared<C, R> {
    pub(super) policy: RetryPolicy<C, R>,
    seeds: SeedSource,
    telemetry: Telemetry,
}

/// What one request has used so far.
#[derive(Debug, Default)]
pub(super) struct Attempts {
    pub(super) retries: u32,
    pub(super) requeues: u32,
    pub(super) prev_delay: Option<Duration>,
    pub(super) rng: Option<SmallRng>,
}

impl<C, R> Shared<C, R> {
    pub(super) fn new(policy: RetryPolicy<C, R>) -> Self {
        let telemetry = Telemetry::new(&policy.labels);
        let seeds = policy.seeds.clone().unwrap_or_default();
        Self {
            policy,
            seeds,
            telemetry,
        }
    }

    /// Decides whether a failed try is tried again. On yes, returns the request for the next try
    /// and the wait before it; the budget has been drawn on and the counters updated.
    pub(super) fn decide<Req>(
        &self,
        c: Classification,
        template: Option<&Req>,
        attempts: &mut Attempts,
    ) -> Option<(Req, Duration)>
    where
        R: Replay<Req>,
    {
        let p = &self.policy;
        // A nack (refused before any work, class `Ignorable`) is requeued like an unsent failure.
        // So is a throttled outcome (a 429), retried like a retryable failure.
        if c.class() != Class::Retryable && !c.is_nack() && !c.is_throttled() {
            return None;
        }
        let template = template?;
        let requeue = c.is_unsent();
        if requeue {
            if attempts.requeues >= p.max_requeues {
                return None;
            }
        } else {
            if attempts.retries >= p.max_retries {
                return None;
            }
            if !p.replay.is_idempotent(template) {
                tracing::debug!(
                    "not retrying: the request may have been sent and is not idempotent"
                );
                return None;
            }
        }

        let attempt = attempts.retries + attempts.requeues;
        let rng = attempts.rng.get_or_insert_with(|| self.seeds.rng());
        let prev = attempts.prev_delay.unwrap_or(p.backoff.base());
        let mut delay = p.backoff.delay(attempt, prev, rng);
        if let Some(after) = c.retry_after() {
            delay = delay.max(after.min(p.retry_after_cap));
        }

        if let Some(deadline) = p.replay.deadline(template) {
            let needed = delay.saturating_add(p.min_try_time);
            if !deadline.fits(Instant::now(), needed) {
                tracing::debug!(
                    ?delay,
                    left = ?deadline.remaining(),
                    "not retrying: no time left before the deadline"
                );
                return None;
            }
        }

        let next = match p.replay.replay(template) {
            Ok(next) => next,
            Err(reason) => {
                if reason == NotReplayable::BodyTooLarge {
                    self.telemetry.too_large();
                }
                tracing::debug!(%reason, "not retrying: the request cannot be replayed");
                return None;
            }
        };

        if p.budget.withdraw().is_err() {
            self.telemetry.exhausted();
            tracing::debug!("not retrying: retry budget exhausted");
            return None;
        }

        if requeue {
            attempts.requeues += 1;
            self.telemetry.requeue();
            tracing::debug!(attempt, ?delay, "requeueing a request that was never sent");
        } else {
            attempts.retries += 1;
            self.telemetry.retry();
            tracing::debug!(attempt, ?delay, "retrying");
        }
        attempts.prev_delay = Some(delay);
        Some((next, delay))
    }
}
