use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::Replay;
use super::policy::{Attempts, Shared};
use crate::BoxError;
use crate::classify::Classify;

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // A try is in flight.
        Calling { #[pin] fut: F },
        // Waiting before the next try.
        Backoff { #[pin] sleep: Sleep },
        // Waiting for the service clone to be ready for the next try.
        Ready,
    }
}

pin_project! {
    /// The response future of [`Retry`](super::Retry): a state machine of tries, backoff sleeps and
    /// readiness waits, with no boxing.
    pub struct ResponseFuture<S, Req, C, R>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        template: Option<Req>,
        next: Option<Req>,
        attempts: Attempts,
        shared: Arc<Shared<C, R>>,
    }
}

impl<S, Req, C, R> ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    pub(super) fn new(
        fut: S::Future,
        service: S,
        template: Option<Req>,
        shared: Arc<Shared<C, R>>,
    ) -> Self {
        Self {
            state: State::Calling { fut },
            service,
            template,
            next: None,
            attempts: Attempts::default(),
            shared,
        }
    }
}

impl<S, Req, C, R> fmt::Debug for ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } => "calling",
            State::Backoff { .. } => "backoff",
            State::Ready => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("retries", &self.attempts.retries)
            .field("requeues", &self.attempts.requeues)
            .finish()
    }
}

impl<S, Req, C, R> Future for ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    R: Replay<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    // Classified as a `BoxError`, so one classifier serves any inner error type.
                    let out = ready!(fut.poll(cx)).map_err(Into::into);
                    let c = this.shared.policy.classify.classify(out.as_ref());
                    let Some((next, delay)) =
                        this.shared.decide(c, this.template.as_ref(), this.attempts)
                    else {
                        return Poll::Ready(out);
                    };
                    drop(out);
                    *this.next = Some(next);
                    if delay.is_zero() {
                        this.state.set(State::Ready);
                    } else {
                        this.state.set(State::Backoff {
                            sleep: tokio::time::sleep(delay),
                        });
                    }
                }
                StateProj::Backoff { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    let req = this.next.take().expect("a retry always has a request");
                    let fut = this.service.call(req);
                    this.state.set(State::Calling { fut });
                }
            }
        }
    }
}
