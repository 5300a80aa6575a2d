use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;

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
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        limit: Limit,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, sleep: Sleep, limit: Limit) -> Self {
        Self {
            inner,
            sleep,
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
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(this.limit.error())),
            Poll::Pending => Poll::Pending,
        }
    }
}
