use std::fmt;
use std::task::{Context, Poll};

use tower_service::Service;

use super::{AdmissionControl, ResponseFuture};
use crate::BoxError;
use crate::classify::{Classify, DefaultClassify};
use crate::rng::SmallRng;

/// A service behind client-side admission control: see the [module docs](super).
///
/// `poll_ready` is the inner service's; `call` decides, and a rejected request fails at once with
/// [`Rejected`](super::Rejected) without calling the inner service. Each clone draws from its own
/// generator (from the controller's [`SeedSource`](crate::rng::SeedSource)) and shares the
/// controller's window.
pub struct Admission<S, C = DefaultClassify> {
    inner: S,
    control: AdmissionControl,
    classify: C,
    rng: SmallRng,
}

impl<S: Clone, C: Clone> Clone for Admission<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            control: self.control.clone(),
            classify: self.classify.clone(),
            rng: self.control.rng(),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Admission<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("inner", &self.inner)
            .field("control", &self.control)
            .field("classify", &self.classify)
            .finish_non_exhaustive()
    }
}

impl<S, C> Admission<S, C> {
    /// Wraps `inner`, classifying its outcomes with `classify`.
    pub fn new(inner: S, control: AdmissionControl, classify: C) -> Self {
        let rng = control.rng();
        Self {
            inner,
            control,
            classify,
            rng,
        }
    }

    /// The shared controller.
    pub fn control(&self) -> &AdmissionControl {
        &self.control
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

impl<S, C, Req> Service<Req> for Admission<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if self.control.admit(&mut self.rng) {
            ResponseFuture::admitted(
                self.inner.call(req),
                self.control.clone(),
                self.classify.clone(),
            )
        } else {
            ResponseFuture::rejected()
        }
    }
}
