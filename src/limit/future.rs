use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::Permit;

pin_project! {
    /// The response future of [`Limit`](super::Limit): the inner future holding its slot, or the
    /// rejection, ready at once.
    #[derive(Debug)]
    pub struct ResponseFuture<F, T, E> {
        #[pin]
        state: State<F, T, E>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F, T, E> {
        Admitted { #[pin] fut: F, permit: Option<Permit> },
        Rejected { out: Option<Result<T, E>> },
    }
}

impl<F, T, E> ResponseFuture<F, T, E> {
    pub(super) fn admitted(fut: F, permit: Permit) -> Self {
        Self {
            state: State::Admitted {
                fut,
                permit: Some(permit),
            },
        }
    }

    pub(super) fn rejected(out: Result<T, E>) -> Self {
        Self {
            state: State::Rejected { out: Some(out) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T, E>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { fut, permit } => {
                let out = std::task::ready!(fut.poll(cx));
                if let Some(permit) = permit.take() {
                    if out.is_ok() {
                        // Only answers say how fast the server is: a fast error would pull the
                        // latency down.
                        permit.complete();
                    } else {
                        drop(permit);
                    }
                }
                Poll::Ready(out)
            }
            StateProj::Rejected { out } => {
                Poll::Ready(out.take().expect("polled after completion"))
            }
        }
    }
}
