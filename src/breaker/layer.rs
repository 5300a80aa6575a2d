use tower_layer::Layer;

use super::{Breaker, BreakerConfig};
use crate::classify::DefaultClassify;

/// Puts a [`Breaker`] in front of each service it wraps; every wrapped service gets its own,
/// independent breaker (under a balancer: one per endpoint).
///
/// ```
/// use meshwork::breaker::{BreakerConfig, BreakerLayer};
/// use meshwork::classify::Classification;
/// use meshwork::BoxError;
/// use tower::ServiceBuilder;
///
/// // Negative answers count as failures.
/// let classify = |out: Result<&i32, &BoxError>| match out {
///     Ok(n) if *n >= 0 => Classification::success(),
///     _ => Classification::retryable(),
/// };
/// let layer = BreakerLayer::new(BreakerConfig::default()).with_classify(classify);
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(tower::service_fn(|x: i32| async move { Ok::<_, BoxError>(x) }));
/// # drop(svc);
/// ```
#[derive(Clone, Debug)]
pub struct BreakerLayer<C = DefaultClassify> {
    config: BreakerConfig,
    classify: C,
}

impl BreakerLayer {
    /// A layer with this configuration, classifying with [`DefaultClassify`].
    #[must_use]
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            classify: DefaultClassify,
        }
    }
}

impl<C> BreakerLayer<C> {
    /// Classifies outcomes with `classify` instead.
    pub fn with_classify<C2>(self, classify: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            config: self.config,
            classify,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = Breaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker::with_classify(inner, self.config.clone(), self.classify.clone())
    }
}
