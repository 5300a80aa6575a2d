use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::{DeadlineExceeded, Elapsed};
use crate::BoxError;

/// Which error a [`ResponseFuture`] fails with when its time runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    Try,
    Deadline,
}

impl Limit {
    pub(crate) fn error(self) -> BoxError {
        match self {
            Limit::Try => Box::new(Elapsed::new()),
            Limit::Deadline => Box::new(DeadlineExceeded::new()),
        }
    }
}

pin_project! {
    /// The response future of [`Timeout`](super::Timeout) and [`WithDeadline`](super::WithDeadline):
    /// the inner future, raced against a timer.
    ///
    /// The timer is armed lazily, the first time the inner future is not ready: a response that is
    /// ready at once (an in-memory service, a cache hit) never registers a timer, which spares two
    /// shared atomic operations on the runtime's handle per request.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        at: Instant,
        limit: Limit,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, at: Instant, limit: Limit) -> Self {
        Self {
            inner,
            sleep: None,
            at,
            limit,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out.map_err(Into::into));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep_until(*this.at)));
        }
        let sleep = this.sleep.as_pin_mut().expect("armed above");
        match sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(this.limit.error())),
            Poll::Pending => Poll::Pending,
        }
    }
}
