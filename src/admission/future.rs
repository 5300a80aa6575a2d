use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{AdmissionControl, Rejected};
use crate::BoxError;
use crate::classify::Classify;

pin_project! {
    /// The response future of [`Admission`](super::Admission): the inner future, whose outcome is
    /// recorded in the window, or the local rejection, ready at once.
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
        Admitted { #[pin] fut: F, control: Option<AdmissionControl>, classify: C },
        Rejected,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn admitted(fut: F, control: AdmissionControl, classify: C) -> Self {
        Self {
            state: State::Admitted {
                fut,
                control: Some(control),
                classify,
            },
        }
    }

    pub(super) fn rejected() -> Self {
        Self {
            state: State::Rejected,
        }
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
        match self.project().state.project() {
            StateProj::Admitted {
                fut,
                control,
                classify,
            } => {
                // Classified as a `BoxError`, so one classifier serves any inner error type.
                let out = std::task::ready!(fut.poll(cx)).map_err(Into::into);
                if let Some(control) = control.take() {
                    control.record(classify.classify(out.as_ref()));
                }
                Poll::Ready(out)
            }
            StateProj::Rejected => Poll::Ready(Err(Rejected::new().into())),
        }
    }
}
