use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;
use crate::available::Available;

/// A layer that is either in the stack (`On`) or left out (`Off`), decided when the stack is built.
///
/// Both sides answer with the same response type; errors are boxed. This is how the
/// [`ClientBuilder`](super::ClientBuilder) turns layers off without a different stack type per
/// combination, and without boxing the service or its future.
#[derive(Clone, Debug)]
pub enum Optional<A, B> {
    /// The layer is on.
    On(A),
    /// The layer is off: the inner service is used as it is.
    Off(B),
}

impl<A, B> Optional<A, B> {
    /// The layer's service, when on.
    pub fn on(&self) -> Option<&A> {
        match self {
            Optional::On(a) => Some(a),
            Optional::Off(_) => None,
        }
    }
}

impl<A, B, R> Service<R> for Optional<A, B>
where
    A: Service<R>,
    A::Error: Into<BoxError>,
    B: Service<R, Response = A::Response>,
    B::Error: Into<BoxError>,
{
    type Response = A::Response;
    type Error = BoxError;
    type Future = OptionalFuture<A::Future, B::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Optional::On(a) => a.poll_ready(cx).map_err(Into::into),
            Optional::Off(b) => b.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: R) -> Self::Future {
        match self {
            Optional::On(a) => OptionalFuture {
                kind: Kind::On { fut: a.call(req) },
            },
            Optional::Off(b) => OptionalFuture {
                kind: Kind::Off { fut: b.call(req) },
            },
        }
    }
}

impl<A: Available, B: Available> Available for Optional<A, B> {
    fn is_available(&self) -> bool {
        match self {
            Optional::On(a) => a.is_available(),
            Optional::Off(b) => b.is_available(),
        }
    }

    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Optional::On(a) => a.poll_available(cx),
            Optional::Off(b) => b.poll_available(cx),
        }
    }
}

pin_project! {
    /// The response future of [`Optional`].
    #[derive(Debug)]
    pub struct OptionalFuture<A, B> {
        #[pin]
        kind: Kind<A, B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<A, B> {
        On { #[pin] fut: A },
        Off { #[pin] fut: B },
    }
}

impl<A, B, T, EA, EB> Future for OptionalFuture<A, B>
where
    A: Future<Output = Result<T, EA>>,
    B: Future<Output = Result<T, EB>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::On { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Off { fut } => fut.poll(cx).map_err(Into::into),
        }
    }
}
