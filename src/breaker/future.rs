use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::Open;
use super::service::Local;
use crate::BoxError;
use crate::classify::{Class, Classify};

/// Which kind of admission a call had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Admitted while closed in the given epoch: counted by the closed-state policies, unless the
    /// breaker has changed state since.
    Normal(u32),
    /// A half-open probe of the given epoch.
    Probe(u32),
}

/// Reports a call's outcome to the breaker exactly once; if dropped first (the response future was
/// cancelled), the outcome is ignorable and a probe slot is given back.
pub(crate) struct Tracker<C> {
    local: Arc<Local<C>>,
    role: Role,
    start: Option<Instant>,
    done: bool,
}

impl<C> Tracker<C> {
    pub(crate) fn new(local: Arc<Local<C>>, role: Role) -> Self {
        let start = local.shared.slow_call.map(|_| Instant::now());
        Self {
            local,
            role,
            start,
            done: false,
        }
    }

    fn finish(&mut self, mut class: Class) {
        self.done = true;
        let shared = &self.local.shared;
        let now = (self.start.is_some()
            || (matches!(self.role, Role::Normal(_)) && shared.needs_clock()))
        .then(Instant::now);
        if let (Some(start), Some(limit), Some(now), Class::Success) =
            (self.start, shared.slow_call, now, class)
            && now.saturating_duration_since(start) > limit
        {
            class = Class::Retryable;
        }
        match self.role {
            Role::Normal(epoch) => shared.record_closed(epoch, class, now),
            Role::Probe(epoch) => shared.record_probe(epoch, class),
        }
    }
}

impl<C> Drop for Tracker<C> {
    fn drop(&mut self) {
        if let (false, Role::Probe(epoch)) = (self.done, self.role) {
            self.local.shared.release_probe(epoch);
        }
    }
}

pin_project! {
    /// The response future of [`Breaker`](super::Breaker): the inner response, whose outcome is
    /// classified and counted when it completes. Dropping it before then counts as ignorable (and
    /// gives back a half-open probe). In fail-fast mode, a rejected call's future fails at once with
    /// [`Open`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: Option<F>,
        tracker: Option<Tracker<C>>,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(inner: F, tracker: Tracker<C>) -> Self {
        Self {
            inner: Some(inner),
            tracker: Some(tracker),
        }
    }

    pub(crate) fn rejected() -> Self {
        Self {
            inner: None,
            tracker: None,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("rejected", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(Box::new(Open::new())));
        };
        // Classified as a `BoxError`, so one classifier serves any inner error type.
        let out = std::task::ready!(inner.poll(cx)).map_err(Into::into);
        if let Some(mut tracker) = this.tracker.take() {
            let class = tracker.local.classify.classify(out.as_ref()).class();
            tracker.finish(class);
        }
        Poll::Ready(out)
    }
}
