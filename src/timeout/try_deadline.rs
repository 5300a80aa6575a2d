use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use super::{CarryDeadline, Deadline};

/// Narrows each request's [`Deadline`] to one try's timeout: the request goes on with the earlier
/// of its deadline and `timeout` from now, so the layers below — above all
/// [`PropagateDeadline`](crate::http::PropagateDeadline), which writes the deadline header — see
/// the time this try really has, not the whole request's. Envoy does the same: the upstream is
/// told `min(time left, per-try timeout)`.
///
/// The client stack puts it under its per-try [`Timeout`](super::Timeout); with a hand-built stack,
/// put it just below yours, with the same timeout. A request without a deadline gets one.
///
/// ```
/// use std::time::Duration;
/// use meshwork::timeout::{CarryDeadline, Deadline, TryDeadline};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), std::convert::Infallible> {
/// let seen = tower::service_fn(|req: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(req.deadline().unwrap().remaining())
/// });
/// let mut svc = TryDeadline::new(seen, Duration::from_secs(5));
/// let mut req = http::Request::new(());
/// req.set_deadline(Deadline::after(Duration::from_secs(15)));
/// assert_eq!(svc.ready().await?.call(req).await?, Duration::from_secs(5));
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
}

impl<S, R> Service<R> for TryDeadline<S>
where
    S: Service<R>,
    R: CarryDeadline,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: R) -> Self::Future {
        let this_try = Deadline::at(crate::util::deadline_after(Instant::now(), self.timeout));
        let deadline = req.deadline().map_or(this_try, |d| d.min(this_try));
        req.set_deadline(deadline);
        self.inner.call(req)
    }
}
