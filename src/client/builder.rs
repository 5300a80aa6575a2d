use std::time::Duration;

use futures_core::Stream;
use tower_layer::Layer;

use super::optional::Optional;
use super::service::{Client, EndpointStack};
use crate::admission::{Admission, AdmissionConfig};
use crate::available::Always;
use crate::balance;
use crate::breaker::{Breaker, BreakerConfig, Mode};
use crate::classify::DefaultClassify;
use crate::discover::{Endpoint, Update};
use crate::retry::{CloneRequest, Retry, RetryPolicy};
use crate::rng::SeedSource;
use crate::telemetry::MetricLabels;
use crate::timeout::{DeadlineLayer, Timeout, TryDeadline, ViaReplay};
use crate::{BoxError, ConfigError};

/// Composes the whole client stack: see the [module docs](super) for the picture and the defaults.
///
/// Every layer can be configured or turned off; `build` checks the combination and returns a
/// [`Client`].
///
/// The builder is generic over the classifier `C` (one for every layer: breaker, load, retry) and
/// over how a request is replayed for a retry, `R`, which also says how its deadline travels
/// ([`Replay::set_deadline`](crate::retry::Replay::set_deadline)). The default, [`CloneRequest`], takes any
/// `Clone` request type, the deadline travelling beside it
/// ([`current_deadline`](crate::timeout::current_deadline)); pick
/// [`CloneWithDeadline`](crate::retry::CloneWithDeadline) for a type that carries it.
///
/// ```
/// use std::time::Duration;
/// use meshwork::client::ClientBuilder;
/// use meshwork::retry::RetryPolicy;
///
/// let builder = ClientBuilder::new()
///     .total_timeout(Duration::from_secs(2))
///     .per_try_timeout(Duration::from_millis(500))
///     .retry(RetryPolicy::new().max_retries(3));
/// assert_eq!(builder.get_total_timeout(), Some(Duration::from_secs(2)));
/// ```
///
/// Setters never fail; `build` checks every value, set or derived, and names the field at fault:
///
/// ```
/// use std::time::Duration;
/// use meshwork::client::ClientBuilder;
/// use meshwork::discover::{Endpoint, Static};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let make = |_: &Endpoint| tower::service_fn(|_: ()| async { Ok::<_, meshwork::BoxError>(()) });
/// let err = ClientBuilder::new()
///     .per_try_timeout(Duration::ZERO)
///     .build(Static::new([]), make)
///     .unwrap_err();
/// assert_eq!(err.field(), "per_try_timeout");
/// # }
/// ```
///
/// Settings given to a layer's own builder are kept: the seed and labels of a
/// [`RetryPolicy`], a [`balance::Builder`] or a [`BreakerConfig`] win over the client's
/// (labels are merged, the layer's winning on a clash); the client's fill in what they leave
/// unset.
#[derive(Clone, Debug)]
pub struct ClientBuilder<C = DefaultClassify, R = CloneRequest> {
    total_timeout: Option<Duration>,
    per_try_timeout: PerTry,
    retry: Option<RetryPolicy>,
    admission: Option<AdmissionConfig>,
    breaker: Option<BreakerConfig>,
    balance: balance::Builder,
    classify: C,
    replay: R,
    seeds: Option<SeedSource>,
    labels: MetricLabels,
    endpoint_labels: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The per-try timeout setting: derived from the total unless set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PerTry {
    /// A third of the total timeout (or [`DEFAULT_PER_TRY_TIMEOUT`] with no total).
    Derived,
    Set(Duration),
    Off,
}

/// The default total timeout: Envoy's default route timeout.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(15);
/// The default per-try timeout with the default total: a third of the total, so that a first try
/// and two retries fit. With another total, the default per-try timeout is a third of that total.
pub const DEFAULT_PER_TRY_TIMEOUT: Duration = Duration::from_secs(5);

impl ClientBuilder {
    /// A builder with every layer on, at the defaults listed in the [module docs](super).
    #[must_use]
    pub fn new() -> Self {
        Self {
            total_timeout: Some(DEFAULT_TOTAL_TIMEOUT),
            per_try_timeout: PerTry::Derived,
            retry: Some(RetryPolicy::new()),
            admission: None,
            breaker: Some(BreakerConfig::default()),
            balance: balance::Builder::new(),
            classify: DefaultClassify,
            replay: CloneRequest,
            seeds: None,
            labels: MetricLabels::new(),
            endpoint_labels: false,
        }
    }
}

impl<C, R> ClientBuilder<C, R> {
    /// Bounds each request, all tries included (non-zero, checked by `build`). See
    /// [`DeadlineLayer`].
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn total_timeout(mut self, total: Duration) -> Self {
        self.total_timeout = Some(total);
        self
    }

    /// No total timeout (and no deadline set on requests; one the caller set is still honoured
    /// by the retry layer).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn no_total_timeout(mut self) -> Self {
        self.total_timeout = None;
        self
    }

    /// Bounds each try, readiness wait included (non-zero, checked by `build`). See [`Timeout`].
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn per_try_timeout(mut self, timeout: Duration) -> Self {
        self.per_try_timeout = PerTry::Set(timeout);
        self
    }

    /// No per-try timeout.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn no_per_try_timeout(mut self) -> Self {
        self.per_try_timeout = PerTry::Off;
        self
    }

    /// The retry policy. Its classifier and replay are the client's ([`classify`](Self::classify),
    /// [`replay`](Self::replay)), which is why it takes a policy with the default type parameters;
    /// its seed and labels, if set, are kept. Share a [`RetryBudget`](crate::retry::RetryBudget)
    /// between clients by giving their policies the same budget.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// No retries.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn no_retries(mut self) -> Self {
        self.retry = None;
        self
    }

    /// Client-side admission control (off by default), between the deadline and the retry layer:
    /// when the upstream as a whole rejects or fails, requests are rejected locally with
    /// [`admission::Rejected`](crate::admission::Rejected). Its settings are checked by `build`;
    /// its seed and labels are the builder's unless set. See [`admission`](crate::admission).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn admission(mut self, config: AdmissionConfig) -> Self {
        self.admission = Some(config);
        self
    }

    /// No admission control (the default).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn no_admission(mut self) -> Self {
        self.admission = None;
        self
    }

    /// The per-endpoint circuit breaker's configuration. It must be in [`Mode::Gate`]: under the
    /// balancer, an open breaker makes its endpoint unavailable.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// No circuit breakers.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn no_breaker(mut self) -> Self {
        self.breaker = None;
        self
    }

    /// The balancer's settings (load metric, wait for an endpoint). Its classifier is the
    /// client's (so it takes a builder with the default classifier); its seed and labels, if set,
    /// are kept.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn balance(mut self, balance: balance::Builder) -> Self {
        self.balance = balance;
        self
    }

    /// The classifier every layer uses.
    pub fn classify<C2>(self, classify: C2) -> ClientBuilder<C2, R> {
        self.map_parts(|_, replay| (classify, replay))
    }

    /// How a request is copied for another try (see [`Replay`](crate::retry::Replay)).
    pub fn replay<R2>(self, replay: R2) -> ClientBuilder<C, R2> {
        self.map_parts(|classify, _| (classify, replay))
    }

    /// The same builder with its classifier and replay (the two type parameters) replaced.
    fn map_parts<C2, R2>(self, f: impl FnOnce(C, R) -> (C2, R2)) -> ClientBuilder<C2, R2> {
        let (classify, replay) = f(self.classify, self.replay);
        ClientBuilder {
            total_timeout: self.total_timeout,
            per_try_timeout: self.per_try_timeout,
            retry: self.retry,
            admission: self.admission,
            breaker: self.breaker,
            balance: self.balance,
            classify,
            replay,
            seeds: self.seeds,
            labels: self.labels,
            endpoint_labels: self.endpoint_labels,
        }
    }

    /// The source of randomness for every layer (P2C picks, jitter): seed it for deterministic runs.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn seed(mut self, seeds: SeedSource) -> Self {
        self.seeds = Some(seeds);
        self
    }

    /// Static labels on every metric the stack emits (for example `upstream="users"`).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn labels(mut self, labels: MetricLabels) -> Self {
        self.labels = labels;
        self
    }

    /// Adds an `endpoint` label (the endpoint's address) to the per-endpoint metrics — the
    /// breakers' (default off).
    ///
    /// Off, every endpoint of the client adds to the same series, so the number of series is
    /// bounded by the number of clients, whatever discovery does: the breaker counters count trips
    /// and probes across the endpoints, and `meshwork_breaker_open` counts the endpoints whose
    /// breaker is not closed. On, each endpoint has its own series; the `metrics` facade cannot
    /// delete a series, so those of a removed endpoint stay (at their final values, the
    /// `meshwork_breaker_open` gauge back at 0) until the exporter drops idle series — configure
    /// its idle timeout (for example `PrometheusBuilder::idle_timeout`) when endpoints churn.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn endpoint_labels(mut self, on: bool) -> Self {
        self.endpoint_labels = on;
        self
    }

    /// Whether per-endpoint metrics carry an `endpoint` label.
    pub fn get_endpoint_labels(&self) -> bool {
        self.endpoint_labels
    }

    /// The total timeout, if on.
    pub fn get_total_timeout(&self) -> Option<Duration> {
        self.total_timeout
    }

    /// The per-try timeout, if on: the one set, or by default a third of the total timeout.
    pub fn get_per_try_timeout(&self) -> Option<Duration> {
        match self.per_try_timeout {
            PerTry::Derived => Some(
                self.total_timeout
                    .map_or(DEFAULT_PER_TRY_TIMEOUT, |total| total / 3),
            ),
            PerTry::Set(d) => Some(d),
            PerTry::Off => None,
        }
    }

    /// The retry policy, if on.
    pub fn get_retry(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// The admission control settings, if on.
    pub fn get_admission(&self) -> Option<&AdmissionConfig> {
        self.admission.as_ref()
    }

    /// The breaker configuration, if on.
    pub fn get_breaker(&self) -> Option<&BreakerConfig> {
        self.breaker.as_ref()
    }

    /// The balancer's settings.
    pub fn get_balance(&self) -> &balance::Builder {
        &self.balance
    }

    /// Checks every setting, as [`build`](Self::build) does, and names the first invalid field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field: `total_timeout` or `per_try_timeout` (zero,
    /// set or derived from the total; or a per-try timeout over the total), an `admission.*` field,
    /// a `balance.load.*` field, or `breaker.mode` (anything but [`Mode::Gate`](crate::breaker::Mode::Gate)).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(total) = self.total_timeout {
            crate::error::non_zero("total_timeout", total)?;
        }
        if let PerTry::Set(t) = self.per_try_timeout {
            crate::error::non_zero("per_try_timeout", t)?;
        }
        if self.get_per_try_timeout() == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "per_try_timeout",
                "derived from `total_timeout` (a third of it) is zero: set a longer total or a per-try timeout",
            ));
        }
        if let (Some(total), Some(try_)) = (self.total_timeout, self.get_per_try_timeout())
            && try_ > total
        {
            return Err(ConfigError::new(
                "per_try_timeout",
                "must not exceed `total_timeout`",
            ));
        }
        if let Some(a) = &self.admission {
            a.validate()?; // its fields are named `admission.*` already
        }
        self.balance.validate().map_err(|e| e.within("balance"))?;
        if let Some(b) = &self.breaker
            && b.mode() != Mode::Gate
        {
            return Err(ConfigError::new(
                "breaker.mode",
                "must be `Gate` under a balancer (an open endpoint is skipped, not failed)",
            ));
        }
        Ok(())
    }

    /// Builds the client over a discovery source and `make`, which builds the connection service
    /// of one endpoint. Spawns the balancer's discovery task, so it must be called within a tokio
    /// runtime.
    ///
    /// Fails when a value or the combination is invalid, naming the field: a zero timeout (set, or
    /// derived from the total), a per-try timeout longer than the total, a breaker in fail-fast
    /// mode, an invalid `balance.load` or `admission` setting.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`validate`](Self::validate), before anything is spawned.
    pub fn build<D, E, M, S>(self, discover: D, mut make: M) -> Result<Client<S, C, R>, ConfigError>
    where
        D: Stream<Item = Result<Update, E>> + Send + 'static,
        E: Into<BoxError>,
        M: FnMut(&Endpoint) -> S + Send + 'static,
        S: Clone + Send + Sync + 'static,
        C: Clone + Send + Sync + 'static,
        R: Clone,
    {
        self.validate()?;
        let per_try = self.get_per_try_timeout();
        let seeds = self.seeds.unwrap_or_default();
        let labels = self.labels;
        let endpoint_labels = self.endpoint_labels;
        let classify = self.classify;
        // A layer's own seed and labels win; the client's fill in what it left unset.
        let breaker = self.breaker.map(|mut config| {
            config.seeds.get_or_insert_with(|| seeds.clone());
            config.labels = merge(&labels, &config.labels);
            config
        });
        let endpoint_classify = classify.clone();
        let make_endpoint = move |ep: &Endpoint| -> EndpointStack<S, C> {
            let svc = make(ep);
            let svc = match per_try {
                Some(t) => Optional::On(Timeout::from_parts(TryDeadline::new(svc, t), t)),
                None => Optional::Off(svc),
            };
            match &breaker {
                Some(config) => {
                    let mut config = config.clone();
                    if endpoint_labels {
                        config.labels = config.labels.with("endpoint", ep.addr().to_string());
                    }
                    Optional::On(Breaker::with_classify(
                        svc,
                        config,
                        endpoint_classify.clone(),
                    ))
                }
                None => Optional::Off(Always::new(svc)),
            }
        };
        let mut balance = self.balance;
        balance.seeds.get_or_insert_with(|| seeds.clone());
        balance.labels = merge(&labels, &balance.labels);
        let balance = balance
            .classify(classify.clone())
            .build(discover, make_endpoint)?;
        let admission_classify = classify.clone();
        let carrier = self.replay.clone();
        let retry = match self.retry {
            Some(mut policy) => {
                policy.seeds.get_or_insert_with(|| seeds.clone());
                policy.labels = merge(&labels, &policy.labels);
                let policy = policy.classify(classify).replay(self.replay);
                Optional::On(Retry::new(balance, policy))
            }
            None => Optional::Off(balance),
        };
        let admitted = match self.admission {
            Some(mut config) => {
                if config.seeds.is_none() {
                    config = config.seed(seeds);
                }
                let merged = merge(&labels, &config.labels);
                config = config.labels(merged);
                Optional::On(Admission::new(retry, config.build()?, admission_classify))
            }
            None => Optional::Off(retry),
        };
        let stack = match self.total_timeout {
            Some(total) => Optional::On(
                DeadlineLayer::new(total)?
                    .carrier(ViaReplay(carrier))
                    .layer(admitted),
            ),
            None => Optional::Off(admitted),
        };
        Ok(Client::from_stack(stack))
    }
}

/// `outer`'s labels, then `inner`'s (which win on a clash).
fn merge(outer: &MetricLabels, inner: &MetricLabels) -> MetricLabels {
    inner
        .iter()
        .fold(outer.clone(), |acc, (k, v)| acc.with(k, v.to_owned()))
}
