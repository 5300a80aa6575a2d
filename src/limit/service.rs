use std::task::{Context, Poll};

use tower_service::Service;

use super::{Limiter, NackError, Reject, ResponseFuture};

/// A service behind an adaptive concurrency limit: see the [module docs](super).
///
/// `poll_ready` is the inner service's; `call` takes a slot or rejects at once.
#[derive(Clone, Debug)]
pub struct Limit<S, N = NackError> {
    inner: S,
    limiter: Limiter,
    reject: N,
}

impl<S, N> Limit<S, N> {
    /// Wraps `inner`, sharing `limiter`, answering over-limit requests with `reject`.
    pub fn new(inner: S, limiter: Limiter, reject: N) -> Self {
        Self {
            inner,
            limiter,
            reject,
        }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

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

impl<S, N, Req> Service<Req> for Limit<S, N>
where
    S: Service<Req>,
    N: Reject<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.try_acquire() {
            Some(permit) => ResponseFuture::admitted(self.inner.call(req), permit),
            None => {
                // The inner service's readiness reserved nothing we must give back: tower's
                // contract lets a ready service be dropped or called later.
                ResponseFuture::rejected(self.reject.reject())
            }
        }
    }
}
