use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use futures_core::Stream;
use tower::discover::Change;

use super::load::Load;
use super::service::{Balance, Config, Shared};
use super::worker;
use crate::classify::DefaultClassify;
use crate::discover::{Endpoint, Update};
use crate::rng::SeedSource;
use crate::telemetry::MetricLabels;
use crate::{BoxError, ConfigError};

/// Configures and builds a [`Balance`].
///
/// | setting | default |
/// |---|---|
/// | [`max_wait`](Self::max_wait) | 1 s |
/// | [`load`](Self::load) | [`PeakEwma`](super::load::PeakEwma) (decay 10 s, initial latency 30 ms, failure penalty 1 s) |
/// | [`classify`](Self::classify) | [`DefaultClassify`] |
/// | [`seed`](Self::seed) | [`SeedSource::from_entropy`] |
/// | [`labels`](Self::labels) | none |
///
/// ```
/// use std::time::Duration;
/// use meshwork::available::Always;
/// use meshwork::balance::{Balance, load::LeastInFlight};
/// use meshwork::discover::{Endpoint, Update};
/// use meshwork::rng::SeedSource;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork::ConfigError> {
/// let addr = "127.0.0.1:8080".parse().unwrap();
/// let source = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Update::Insert(
///     Endpoint::new(addr),
/// ))]);
/// let balance = Balance::builder()
///     .max_wait(Duration::from_millis(200))
///     .load(LeastInFlight)
///     .seed(SeedSource::from_seed(7))
///     .build(source, |ep: &Endpoint| {
///         let addr = ep.addr();
///         Always::new(tower::service_fn(move |_req: ()| async move {
///             Ok::<_, meshwork::BoxError>(addr)
///         }))
///     })?;
/// # drop(balance);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Builder<C = DefaultClassify> {
    max_wait: Duration,
    load: Load,
    classify: C,
    pub(crate) seeds: Option<SeedSource>,
    pub(crate) labels: MetricLabels,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// The default configuration.
    #[must_use]
    pub fn new() -> Self {
        Self {
            max_wait: Duration::from_secs(1),
            load: Load::default(),
            classify: DefaultClassify,
            seeds: None,
            labels: MetricLabels::new(),
        }
    }
}

impl<C> Builder<C> {
    /// How long a request waits for an endpoint when none is ready, before failing with
    /// [`NoEndpoints`](super::NoEndpoints). Zero fails at once.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The load metric: [`PeakEwma`](super::load::PeakEwma) or
    /// [`LeastInFlight`](super::load::LeastInFlight).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn load(mut self, load: impl Into<Load>) -> Self {
        self.load = load.into();
        self
    }

    /// The wait for an endpoint (default 1 s).
    pub fn get_max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The load metric.
    pub fn get_load(&self) -> Load {
        self.load
    }

    /// How responses are classified; failures are penalised in the endpoint's load.
    pub fn classify<C2>(self, classify: C2) -> Builder<C2> {
        Builder {
            max_wait: self.max_wait,
            load: self.load,
            classify,
            seeds: self.seeds,
            labels: self.labels,
        }
    }

    /// The source of randomness for picks (each clone draws its own generator from it).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn seed(mut self, seeds: SeedSource) -> Self {
        self.seeds = Some(seeds);
        self
    }

    /// Static labels on every metric the balancer emits.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn labels(mut self, labels: MetricLabels) -> Self {
        self.labels = labels;
        self
    }

    /// Checks the settings (the load metric's: see [`Load::validate`]); `build` calls it.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] with the path `load.decay` or `load.initial_latency` when that
    /// [`PeakEwma`](super::load::PeakEwma) duration is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.load.validate().map_err(|e| e.within("load"))
    }

    fn shared<S>(
        self,
    ) -> (
        std::sync::Arc<Shared<S, C>>,
        tokio::sync::oneshot::Receiver<()>,
        Load,
    ) {
        let load = self.load;
        let (shared, closed) = Shared::new(Config {
            max_wait: self.max_wait,
            classify: self.classify,
            seeds: self.seeds.unwrap_or_default(),
            uses_clock: matches!(load, Load::PeakEwma(_)),
            labels: self.labels,
        });
        (shared, closed, load)
    }

    /// Builds a balancer fed by a meshwork discovery source, with `make` building the service of
    /// each endpoint (in a client: breaker, per-try timeout, connection).
    ///
    /// The source is consumed by a background task, with or without traffic; `make` runs there.
    /// An endpoint inserted again unchanged keeps its service; changed (weight or labels), it gets
    /// a new one from `make` and keeps its load.
    ///
    /// Fails when a setting is invalid (see [`validate`](Self::validate)).
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`validate`](Self::validate), before anything is spawned.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the discovery task is spawned on the current one).
    pub fn build<D, E, M, S>(self, discover: D, mut make: M) -> Result<Balance<S, C>, ConfigError>
    where
        D: Stream<Item = Result<Update, E>> + Send + 'static,
        E: Into<BoxError>,
        M: FnMut(&Endpoint) -> S + Send + 'static,
        S: Clone + Send + Sync + 'static,
        C: Send + Sync + 'static,
    {
        self.validate()?;
        let (shared, closed, load) = self.shared();
        worker::spawn(&shared, closed, load, discover, move |set, update| {
            set.apply(update, &mut make)
        });
        Ok(Balance::from_shared(shared))
    }

    /// Builds a balancer fed by a tower [`Discover`](tower::discover::Discover) stream of
    /// [`Change`]s (every endpoint has weight 1). Any tower discovery source works.
    ///
    /// Fails when a setting is invalid (see [`validate`](Self::validate)).
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`validate`](Self::validate), before anything is spawned.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the discovery task is spawned on the current one).
    pub fn build_from_tower<D, K, S, E>(self, discover: D) -> Result<Balance<S, C>, ConfigError>
    where
        D: Stream<Item = Result<Change<K, S>, E>> + Send + 'static,
        K: Hash + Eq + Clone + Debug + Send + 'static,
        E: Into<BoxError>,
        S: Send + Sync + 'static,
        C: Send + Sync + 'static,
    {
        self.validate()?;
        let (shared, closed, load) = self.shared();
        worker::spawn(
            &shared,
            closed,
            load,
            discover,
            |set, change| match change {
                Change::Insert(key, service) => set.upsert(key, None, 1, |_| service),
                Change::Remove(key) => set.remove(&key),
            },
        );
        Ok(Balance::from_shared(shared))
    }
}

impl<S> Balance<S> {
    /// A balancer with the default configuration: see [`Builder::build`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new<D, E, M>(discover: D, make: M) -> Self
    where
        D: Stream<Item = Result<Update, E>> + Send + 'static,
        E: Into<BoxError>,
        M: FnMut(&Endpoint) -> S + Send + 'static,
        S: Clone + Send + Sync + 'static,
    {
        Self::from_parts(Builder::new(), discover, make)
    }

    fn from_parts<D, E, M>(builder: Builder, discover: D, mut make: M) -> Self
    where
        D: Stream<Item = Result<Update, E>> + Send + 'static,
        E: Into<BoxError>,
        M: FnMut(&Endpoint) -> S + Send + 'static,
        S: Clone + Send + Sync + 'static,
    {
        // The defaults are valid: no check needed.
        let (shared, closed, load) = builder.shared();
        worker::spawn(&shared, closed, load, discover, move |set, update| {
            set.apply(update, &mut make)
        });
        Balance::from_shared(shared)
    }
}

impl Balance<()> {
    /// Configures a balancer (the service type is chosen by [`Builder::build`]); the same as
    /// [`Builder::new`].
    #[must_use]
    pub fn builder() -> Builder {
        Builder::new()
    }
}
