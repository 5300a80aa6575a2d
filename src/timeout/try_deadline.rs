use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use super::carry::{Scoped, scope, sync_scope};
use super::{Deadline, current_deadline};

/// Narrows the deadline of each try to one try's timeout: the inner call and its future run with
/// the earlier of the request's [`current_deadline`] and `timeout` from now as their
/// [`current_deadline`], so the layers below — above all
/// [`PropagateDeadline`](crate::http::PropagateDeadline), which writes the earlier of the
/// request's own deadline and this one into the deadline header — see the time this try really
/// has, not the whole request's. Envoy does the same: the upstream is told
/// `min(time left, per-try timeout)`. It works for any request type: the request is not touched.
///
/// The client stack puts it under its per-try [`Timeout`](super::Timeout); with a hand-built stack,
/// put it just below yours, with the same timeout.
///
/// ```
/// use std::time::Duration;
/// use meshwork::timeout::{TryDeadline, current_deadline};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), std::convert::Infallible> {
/// let seen = tower::service_fn(|_req: ()| async move {
///     Ok::<_, std::convert::Infallible>(current_deadline().unwrap().remaining())
/// });
/// let mut svc = TryDeadline::new(seen, Duration::from_secs(5));
/// assert_eq!(svc.ready().await?.call(()).await?, Duration::from_secs(5));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TryDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> TryDeadline<S> {
    /// Wraps `inner`, narrowing each request's deadline to `timeout` from when it is called.
    pub const fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout }
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
    /// use meshwork::timeout::TryDeadline;
    ///
    /// let mut svc = TryDeadline::new(vec![1, 2], Duration::from_secs(1));
    /// assert_eq!(svc.get_ref().len(), 2);
    /// svc.get_mut().push(3);
    /// assert_eq!(svc.into_inner(), [1, 2, 3]);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for TryDeadline<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Scoped<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let this_try = Deadline::at(crate::util::deadline_after(Instant::now(), self.timeout));
        let deadline = current_deadline().map_or(this_try, |d| d.min(this_try));
        let fut = sync_scope(deadline, || self.inner.call(req));
        scope(deadline, fut)
    }
}
