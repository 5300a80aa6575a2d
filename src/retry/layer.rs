use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::policy::Shared;
use super::{Retry, RetryPolicy};

/// Retries failed requests according to a [`RetryPolicy`]: see the [module docs](crate::retry).
///
/// Metric handles are created here, once; every service the layer builds, and every clone of them,
/// shares the policy and its budget.
///
/// ```
/// use meshwork::retry::{RetryLayer, RetryPolicy};
/// use tower::ServiceBuilder;
///
/// let svc = ServiceBuilder::new()
///     .layer(RetryLayer::new(RetryPolicy::new()))
///     .service(tower::service_fn(|n: u32| async move { Ok::<_, meshwork::BoxError>(n + 1) }));
/// # let _ = svc;
/// ```
pub struct RetryLayer<C, R> {
    shared: Arc<Shared<C, R>>,
}

impl<C, R> RetryLayer<C, R> {
    /// A layer applying `policy`.
    pub fn new(policy: RetryPolicy<C, R>) -> Self {
        Self {
            shared: Arc::new(Shared::new(policy)),
        }
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &RetryPolicy<C, R> {
        &self.shared.policy
    }
}

impl<C, R> Clone for RetryLayer<C, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: fmt::Debug, R: fmt::Debug> fmt::Debug for RetryLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<S, C, R> Layer<S> for RetryLayer<C, R> {
    type Service = Retry<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_parts(inner, Arc::clone(&self.shared))
    }
}
