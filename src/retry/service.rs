use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::policy::Shared;
use super::{Replay, ResponseFuture, RetryPolicy};
use crate::BoxError;
use crate::classify::Classify;

/// The service of [`RetryLayer`](super::RetryLayer).
///
/// The inner service only needs to be `Clone` (no `Buffer`): the first try uses the readiness
/// reserved by [`poll_ready`](Service::poll_ready); each retry waits for readiness on a clone.
pub struct Retry<S, C, R> {
    inner: S,
    shared: Arc<Shared<C, R>>,
}

impl<S, C, R> Retry<S, C, R> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: RetryPolicy<C, R>) -> Self {
        Self::from_parts(inner, Arc::new(Shared::new(policy)))
    }

    pub(super) fn from_parts(inner: S, shared: Arc<Shared<C, R>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy<C, R> {
        &self.shared.policy
    }
}

impl<S: Clone, C, R> Clone for Retry<S, C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug, R: fmt::Debug> fmt::Debug for Retry<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<S, Req, C, R> Service<Req> for Retry<S, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    R: Replay<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let policy = &self.shared.policy;
        policy.budget.deposit();
        let (first, template) = match policy.replay.replay(&req) {
            Ok(copy) => (copy, Some(req)),
            Err(reason) => {
                tracing::trace!(%reason, "request cannot be replayed: one try only");
                (req, None)
            }
        };
        // The clone is for later tries; it reserves nothing until polled ready.
        let spare = self.inner.clone();
        let fut = self.inner.call(first);
        ResponseFuture::new(fut, spare, template, Arc::clone(&self.shared))
    }
}
