use tower_layer::Layer;

use super::{Limit, Limiter, NackError};

/// Puts an adaptive concurrency [`Limit`] in front of a service: see the [module docs](super).
///
/// Clones of the layer, and every service it makes, share one [`Limiter`].
#[derive(Clone, Debug)]
pub struct LimitLayer<N = NackError> {
    limiter: Limiter,
    reject: N,
}

impl LimitLayer {
    /// Rejects over-limit requests with the [`Nacked`](super::Nacked) error.
    #[must_use]
    pub fn new(limiter: Limiter) -> Self {
        Self {
            limiter,
            reject: NackError,
        }
    }
}

#[cfg(feature = "http")]
impl LimitLayer<super::HttpNack> {
    /// Rejects over-limit HTTP requests with `503 Service Unavailable` and `meshwork-nack: 1`
    /// (the inner service's error type is kept).
    #[must_use]
    pub fn http(limiter: Limiter) -> Self {
        Self {
            limiter,
            reject: super::HttpNack,
        }
    }
}

impl<N> LimitLayer<N> {
    /// Rejects over-limit requests with `reject`.
    pub fn with_reject<N2>(self, reject: N2) -> LimitLayer<N2> {
        LimitLayer {
            limiter: self.limiter,
            reject,
        }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl<S, N: Clone> Layer<S> for LimitLayer<N> {
    type Service = Limit<S, N>;

    fn layer(&self, inner: S) -> Self::Service {
        Limit::new(inner, self.limiter.clone(), self.reject.clone())
    }
}
