use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::future::{Limit, ResponseFuture};
use crate::{BoxError, ConfigError};

/// A per-try timeout that covers the wait for readiness as well as the response.
///
/// If the inner service stays `Pending` in `poll_ready` for the whole timeout, `poll_ready` fails
/// with [`Elapsed`](super::Elapsed); the service stays usable, and the next `poll_ready` starts a new
/// wait. Once ready, each call gets the full timeout for its response.
///
/// Cloning gives a service with no readiness wait under way, as tower's clones do.
///
/// ```
/// use std::time::Duration;
/// use meshwork::timeout::{Elapsed, Timeout};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), meshwork::BoxError> {
/// let (mock, mut handle) = tower_test::mock::pair::<(), ()>();
/// handle.allow(0); // never ready
/// let mut svc = Timeout::new(mock, Duration::from_millis(100))?;
/// let err = svc.ready().await.unwrap_err();
/// assert!(err.is::<Elapsed>());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
    ready: ReadyWait,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with a per-try `timeout`. A zero timeout is rejected.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `timeout` when `timeout` is zero.
    pub fn new(inner: S, timeout: Duration) -> Result<Self, ConfigError> {
        crate::error::non_zero("timeout", timeout).map(|t| Self::from_parts(inner, t))
    }

    pub(crate) fn from_parts(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            ready: ReadyWait::default(),
        }
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
    /// use std::time::Duration;
    /// use meshwork::timeout::Timeout;
    ///
    /// let mut svc = Timeout::new(vec![1, 2], Duration::from_secs(1))?;
    /// assert_eq!(svc.get_ref().len(), 2);
    /// svc.get_mut().push(3);
    /// assert_eq!(svc.into_inner(), [1, 2, 3]);
    /// # Ok::<(), meshwork::ConfigError>(())
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The per-try timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S: Clone> Clone for Timeout<S> {
    fn clone(&self) -> Self {
        Self::from_parts(self.inner.clone(), self.timeout)
    }
}

/// A wait for readiness, bounded by a timer armed at its first `Pending`. Shared with the deadline
/// layer, which also needs to know when the wait began.
#[derive(Debug, Default)]
pub(crate) struct ReadyWait {
    /// Boxed only once a `poll_ready` returns `Pending`, then reused.
    timer: Option<Pin<Box<Sleep>>>,
    /// When the current wait began; `None` when no wait is under way.
    started: Option<Instant>,
}

impl ReadyWait {
    /// Polls `inner` for readiness, failing with `kind`'s error once `limit` has passed since the
    /// wait began. A ready service leaves `started` set, for the caller to read or [`clear`](Self::clear).
    pub(crate) fn poll<S, R>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        limit: Duration,
        kind: Limit,
    ) -> Poll<Result<(), BoxError>>
    where
        S: Service<R>,
        S::Error: Into<BoxError>,
    {
        match inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.started = None;
                Poll::Ready(Err(e.into()))
            }
            Poll::Pending => {
                if self.started.is_none() {
                    let now = Instant::now();
                    self.started = Some(now);
                    let at = crate::util::deadline_after(now, limit);
                    match &mut self.timer {
                        Some(t) => t.as_mut().reset(at),
                        None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                }
                let t = self.timer.as_mut().expect("armed above");
                match t.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.started = None;
                        Poll::Ready(Err(kind.error()))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    /// Ends the wait; returns when it began, if there was one.
    pub(crate) fn clear(&mut self) -> Option<Instant> {
        self.started.take()
    }
}

impl<S, R> Service<R> for Timeout<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let poll = self
            .ready
            .poll(&mut self.inner, cx, self.timeout, Limit::Try);
        if poll.is_ready() {
            self.ready.clear();
        }
        poll
    }

    fn call(&mut self, req: R) -> Self::Future {
        let at = crate::util::deadline_after(Instant::now(), self.timeout);
        ResponseFuture::new(self.inner.call(req), at, Limit::Try)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeout::Elapsed;
    use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};
    use tower_test::mock;

    #[tokio::test(start_paused = true)]
    async fn fires_while_stuck_in_poll_ready() {
        let (svc, mut handle) = mock::pair::<&str, &str>();
        handle.allow(0);
        let mut svc = mock::Spawn::new(Timeout::new(svc, Duration::from_millis(100)).unwrap());
        assert_pending!(svc.poll_ready());
        tokio::time::advance(Duration::from_millis(99)).await;
        assert_pending!(svc.poll_ready());
        tokio::time::advance(Duration::from_millis(2)).await;
        let err = assert_ready_err!(svc.poll_ready());
        assert!(err.is::<Elapsed>(), "{err}");

        // Still usable: a new wait starts, and once the inner service is ready, so is the timeout.
        assert_pending!(svc.poll_ready());
        handle.allow(1);
        assert_ready_ok!(svc.poll_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn bounds_the_response() {
        let (svc, mut handle) = mock::pair::<&str, &str>();
        handle.allow(1);
        let mut svc = Timeout::new(svc, Duration::from_millis(100)).unwrap();
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let fut = svc.call("hi");
        let _req = handle.next_request().await.unwrap();
        let err = fut.await.unwrap_err();
        assert!(err.is::<Elapsed>());
    }

    #[tokio::test(start_paused = true)]
    async fn passes_responses_and_errors() {
        let (svc, mut handle) = mock::pair::<&str, &str>();
        handle.allow(2);
        let mut svc = Timeout::new(svc, Duration::from_secs(1)).unwrap();
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let fut = svc.call("a");
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response("ok");
        assert_eq!(fut.await.unwrap(), "ok");
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let fut = svc.call("b");
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error("broken");
        assert_eq!(fut.await.unwrap_err().to_string(), "broken");
    }

    #[cfg(feature = "http")]
    #[tokio::test(start_paused = true)]
    async fn regression_12_09_duration_max_never_overflows_an_instant() {
        // Duration::MAX passes every non-zero check; it must mean "never", not a panic.
        let (svc, mut handle) = mock::pair::<&str, &str>();
        handle.allow(0);
        let mut svc = mock::Spawn::new(Timeout::new(svc, Duration::MAX).unwrap());
        // ReadyWait: the readiness timer is armed at the first `Pending`.
        assert_pending!(svc.poll_ready());
        tokio::time::advance(Duration::from_secs(86400)).await;
        assert_pending!(svc.poll_ready());
        handle.allow(1);
        assert_ready_ok!(svc.poll_ready());
        // The call's timer.
        let fut = svc.call("hi");
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response("ok");
        assert_eq!(fut.await.unwrap(), "ok");

        // A deadline that far away, and a deadline layer with that total.
        let d = crate::timeout::Deadline::after(Duration::MAX);
        assert!(d.remaining() >= Duration::from_secs(86400 * 365 * 29));
        let (inner, mut handle) = mock::pair::<http::Request<()>, &str>();
        handle.allow(0);
        let layer = crate::timeout::DeadlineLayer::new(Duration::MAX)
            .unwrap()
            .max_incoming(Duration::MAX)
            .unwrap();
        let mut svc = mock::Spawn::new(tower_layer::Layer::layer(&layer, inner));
        assert_pending!(svc.poll_ready());
        handle.allow(1);
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(http::Request::new(()));
        let (req, send) = handle.next_request().await.unwrap();
        let deadline = crate::timeout::CarryDeadline::deadline(&req).expect("a deadline is set");
        assert!(deadline.remaining() >= Duration::from_secs(86400 * 365 * 29));
        send.send_response("ok");
        assert_eq!(fut.await.unwrap(), "ok");
    }

    #[test]
    fn rejects_zero() {
        let (svc, _handle) = mock::pair::<(), ()>();
        assert_eq!(
            Timeout::new(svc, Duration::ZERO).unwrap_err().field(),
            "timeout"
        );
    }
}
