use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::future::{Limit, ResponseFuture};
use super::service::ReadyWait;
use super::{Deadline, DeadlineCarrier, InRequest, Scoped};
use crate::{BoxError, ConfigError};

/// Gives every request a [`Deadline`]: a total timeout over all its tries. See the
/// [module docs](crate::timeout).
///
/// The request's deadline is the earliest of:
/// - `total` after the request arrived (or after its wait for readiness began);
/// - a deadline already on the request;
/// - the caller's budget from the wire ([`DeadlineCarrier::incoming_budget`]), capped by
///   [`max_incoming`](Self::max_incoming), unless [`honor_incoming`](Self::honor_incoming) is off.
///
/// ```
/// use std::time::Duration;
/// use meshwork::timeout::DeadlineLayer;
///
/// let layer = DeadlineLayer::new(Duration::from_secs(1))?;
/// assert_eq!(layer.total(), Some(Duration::from_secs(1)));
/// assert_eq!(DeadlineLayer::new(Duration::ZERO).unwrap_err().field(), "total");
///
/// // A proxy that only enforces what its callers ask for, up to 30 s:
/// let layer = DeadlineLayer::from_incoming(Duration::from_secs(30))?;
/// assert_eq!(layer.total(), None);
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
///
/// The deadline travels in the request by default ([`InRequest`]: `http::Request` and other
/// [`CarryDeadline`](super::CarryDeadline) types); [`beside`](Self::beside) makes it travel beside
/// any request type instead (see [`current_deadline`](super::current_deadline)).
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer<K = InRequest> {
    total: Option<Duration>,
    max_incoming: Option<Duration>,
    honor_incoming: bool,
    carrier: K,
}

impl DeadlineLayer {
    /// Every request gets at most `total`. A zero total is rejected.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `total` when `total` is zero.
    pub const fn new(total: Duration) -> Result<Self, ConfigError> {
        if total.is_zero() {
            return Err(ConfigError::new("total", "must be greater than zero"));
        }
        Ok(Self {
            total: Some(total),
            max_incoming: None,
            honor_incoming: true,
            carrier: InRequest,
        })
    }

    /// No local total: a request gets the budget its caller sent, capped by `max`; a request
    /// without one gets `max`. A zero maximum is rejected.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_incoming` when `max` is zero.
    pub const fn from_incoming(max: Duration) -> Result<Self, ConfigError> {
        if max.is_zero() {
            return Err(ConfigError::new(
                "max_incoming",
                "must be greater than zero",
            ));
        }
        Ok(Self {
            total: None,
            max_incoming: Some(max),
            honor_incoming: true,
            carrier: InRequest,
        })
    }
}

impl<K> DeadlineLayer<K> {
    /// The same layer, with the deadline travelling beside the request ([`super::Beside`]): for
    /// request types that cannot carry it.
    pub fn beside(self) -> DeadlineLayer<super::Beside> {
        self.carrier(super::Beside)
    }

    /// The same layer, with the deadline travelling through `carrier`.
    pub fn carrier<K2>(self, carrier: K2) -> DeadlineLayer<K2> {
        DeadlineLayer {
            total: self.total,
            max_incoming: self.max_incoming,
            honor_incoming: self.honor_incoming,
            carrier,
        }
    }
}

impl<K> DeadlineLayer<K> {
    /// Caps a caller's incoming budget (default: no cap beyond `total`). A zero cap is rejected.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_incoming` when `max` is zero.
    pub fn max_incoming(mut self, max: Duration) -> Result<Self, ConfigError> {
        match crate::error::non_zero("max_incoming", max) {
            Ok(max) => {
                self.max_incoming = Some(max);
                Ok(self)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a caller's incoming budget may shorten the deadline (default `true`).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn honor_incoming(mut self, yes: bool) -> Self {
        self.honor_incoming = yes;
        self
    }

    /// The local total, if any.
    pub fn total(&self) -> Option<Duration> {
        self.total
    }

    /// The budget for a request whose caller sent `incoming`.
    fn budget(&self, incoming: Option<Duration>) -> Duration {
        let incoming = if self.honor_incoming { incoming } else { None };
        let incoming = incoming.map(|i| self.max_incoming.map_or(i, |max| i.min(max)));
        match (self.total, incoming) {
            (Some(t), Some(i)) => t.min(i),
            (Some(t), None) => t,
            (None, Some(i)) => i,
            (None, None) => self.max_incoming.unwrap_or(Duration::MAX),
        }
    }

    fn wait_limit(&self) -> Duration {
        self.total.or(self.max_incoming).unwrap_or(Duration::MAX)
    }
}

impl<S, K: Clone> Layer<S> for DeadlineLayer<K> {
    type Service = WithDeadline<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        WithDeadline {
            inner,
            config: self.clone(),
            ready: ReadyWait::default(),
        }
    }
}

/// The service of [`DeadlineLayer`]: sets each request's [`Deadline`] and fails it with
/// [`DeadlineExceeded`](super::DeadlineExceeded) when the deadline passes.
///
/// The wait for readiness counts against the deadline of the request that follows it: the deadline
/// runs from when that wait began.
#[derive(Debug)]
pub struct WithDeadline<S, K = InRequest> {
    inner: S,
    config: DeadlineLayer<K>,
    ready: ReadyWait,
}

impl<S: Clone, K: Clone> Clone for WithDeadline<S, K> {
    fn clone(&self) -> Self {
        self.config.layer(self.inner.clone())
    }
}

impl<S, K> WithDeadline<S, K> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, K, R> Service<R> for WithDeadline<S, K>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    K: DeadlineCarrier<R>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Scoped<ResponseFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A successful wait keeps its start for the call that follows: the deadline runs from it.
        self.ready.poll(
            &mut self.inner,
            cx,
            self.config.wait_limit(),
            Limit::Deadline,
        )
    }

    fn call(&mut self, mut req: R) -> Self::Future {
        let start = self.ready.clear().unwrap_or_else(Instant::now);
        let carrier = &self.config.carrier;
        let budget = self.config.budget(carrier.incoming_budget(&req));
        let mut deadline = Deadline::at(crate::util::deadline_after(start, budget));
        if let Some(outer) = carrier.deadline(&req) {
            deadline = deadline.min(outer);
        }
        carrier.set_deadline(&mut req, deadline);
        let fut = super::sync_scope(deadline, || self.inner.call(req));
        super::scope(
            deadline,
            ResponseFuture::new(fut, deadline.instant(), Limit::Deadline),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_rules() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let l = DeadlineLayer::new(s(1)).unwrap();
        assert_eq!(l.budget(None), s(1));
        assert_eq!(l.budget(Some(ms(50))), ms(50));
        assert_eq!(l.budget(Some(s(10))), s(1));
        assert_eq!(l.honor_incoming(false).budget(Some(ms(50))), s(1));
        let l = DeadlineLayer::from_incoming(s(30)).unwrap();
        assert_eq!(l.budget(None), s(30));
        assert_eq!(l.budget(Some(s(60))), s(30));
        assert_eq!(l.budget(Some(s(2))), s(2));
        let l = DeadlineLayer::new(s(10))
            .unwrap()
            .max_incoming(s(3))
            .unwrap();
        assert_eq!(l.budget(Some(s(5))), s(3));
        assert_eq!(l.budget(None), s(10));
        assert_eq!(
            DeadlineLayer::new(s(1))
                .unwrap()
                .max_incoming(Duration::ZERO)
                .unwrap_err()
                .field(),
            "max_incoming"
        );
        assert_eq!(
            DeadlineLayer::from_incoming(Duration::ZERO)
                .unwrap_err()
                .field(),
            "max_incoming"
        );
    }
}
