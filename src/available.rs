//! The seam between endpoint health and load balancing.
//!
//! A balancer needs to know, cheaply and without locks, whether an endpoint can take a request now,
//! and to be woken when that may change. An endpoint says so through [`Available`]. The circuit
//! breaker implements it (an open breaker is unavailable until its probe is due); the balancer reads
//! it. Neither module imports the other, and any service can implement the trait: a connection that
//! knows it is draining, a rate limiter, a manual switch.
//!
//! An unavailable endpoint is *skipped*, not dropped: the balancer keeps it and picks it again once
//! it says it is available.

use std::task::{Context, Poll};

/// Whether an endpoint can take a request now.
///
/// Implementations must be cheap and lock-free on the available path: the balancer calls
/// [`is_available`](Available::is_available) on every pick.
///
/// ```
/// use std::task::{Context, Poll};
/// use meshwork::available::Available;
///
/// /// An endpoint that is always available.
/// struct Healthy;
///
/// impl Available for Healthy {
///     fn is_available(&self) -> bool {
///         true
///     }
///     fn poll_available(&self, _cx: &mut Context<'_>) -> Poll<()> {
///         Poll::Ready(())
///     }
/// }
/// assert!(Healthy.is_available());
/// ```
pub trait Available {
    /// Returns `true` when the endpoint can take a request now.
    fn is_available(&self) -> bool;

    /// Returns `Ready` when the endpoint is available now; otherwise arranges for the task in `cx`
    /// to be woken when availability may have changed (a timer, a state change), and returns
    /// `Pending`. Implementations never rely on being polled again to make progress.
    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()>;
}

impl<T: Available + ?Sized> Available for std::sync::Arc<T> {
    fn is_available(&self) -> bool {
        (**self).is_available()
    }
    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        (**self).poll_available(cx)
    }
}

impl<T: Available + ?Sized> Available for &T {
    fn is_available(&self) -> bool {
        (**self).is_available()
    }
    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        (**self).poll_available(cx)
    }
}

/// Wraps a service that has no notion of availability: it is always available.
///
/// Use it to put a plain tower service under the balancer without a circuit breaker.
///
/// ```
/// use meshwork::available::{Always, Available};
///
/// let svc = Always::new(tower::service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) }));
/// assert!(svc.is_available());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Always<S> {
    inner: S,
}

impl<S> Always<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    ///
    /// ```
    /// use meshwork::available::Always;
    ///
    /// let mut svc = Always::new(vec![1, 2]);
    /// assert_eq!(svc.get_ref().len(), 2);
    /// svc.get_mut().push(3);
    /// assert_eq!(svc.into_inner(), [1, 2, 3]);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Available for Always<S> {
    fn is_available(&self) -> bool {
        true
    }
    fn poll_available(&self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

impl<S, R> tower_service::Service<R> for Always<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.inner.call(req)
    }
}
