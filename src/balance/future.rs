use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::load::EndpointLoad;
use super::{EndpointRemoved, NoEndpoints};
use crate::BoxError;
use crate::classify::{Class, Classification, Classify};

/// Counts one request in flight on an endpoint, and records its latency when it ends.
#[derive(Debug)]
pub(crate) struct Tracker {
    load: Arc<EndpointLoad>,
    start: Option<Instant>,
    done: bool,
}

impl Tracker {
    /// Counts a request that started at `start` (`None` when the metric reads no clock).
    pub(crate) fn begin(load: Arc<EndpointLoad>, start: Option<Instant>) -> Self {
        load.begin();
        Self {
            load,
            start,
            done: false,
        }
    }

    fn complete(mut self, c: Classification) {
        if let Some(start) = self.start {
            self.load.record_outcome(start, Instant::now(), c);
        }
        self.done = true;
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled: the endpoint was at least this slow, which is worth knowing (a caller's
            // timeout above the balancer drops the future of a hanging endpoint).
            if let Some(start) = self.start {
                self.load.record(start, Instant::now(), Class::Ignorable);
            }
        }
        self.load.end();
    }
}

pin_project! {
    /// The response future of [`Measure`](super::Measure): the inner future, whose outcome is
    /// classified and recorded in the endpoint's load when it completes.
    ///
    /// Dropped before completion, it still ends the request's in-flight count and records the
    /// time it ran as a latency sample (a cancelled request says the endpoint was at least that
    /// slow).
    #[derive(Debug)]
    pub struct MeasureFuture<F, C> {
        #[pin]
        inner: F,
        tracker: Option<Tracker>,
        classify: C,
    }
}

impl<F, C> MeasureFuture<F, C> {
    pub(crate) fn new(inner: F, tracker: Tracker, classify: C) -> Self {
        Self {
            inner,
            tracker: Some(tracker),
            classify,
        }
    }
}

impl<F, C, T, E> Future for MeasureFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Classified as a `BoxError`, so one classifier serves any inner error type.
        let out = std::task::ready!(this.inner.poll(cx)).map_err(Into::into);
        if let Some(tracker) = this.tracker.take() {
            tracker.complete(this.classify.classify(out.as_ref()));
        }
        Poll::Ready(out)
    }
}

pin_project! {
    /// The response future of [`Balance`](super::Balance): the chosen endpoint's response,
    /// measured for its load, or [`NoEndpoints`] at once.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F, C>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F, C> {
        Sent { #[pin] fut: MeasureFuture<F, C> },
        NoEndpoints,
        Removed,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn sent(fut: MeasureFuture<F, C>) -> Self {
        Self {
            state: State::Sent { fut },
        }
    }

    pub(crate) fn no_endpoints() -> Self {
        Self {
            state: State::NoEndpoints,
        }
    }

    pub(crate) fn removed() -> Self {
        Self {
            state: State::Removed,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, BoxError>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sent { fut } => fut.poll(cx),
            StateProj::NoEndpoints => Poll::Ready(Err(NoEndpoints::new().into())),
            StateProj::Removed => Poll::Ready(Err(EndpointRemoved::new().into())),
        }
    }
}
