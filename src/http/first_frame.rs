use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Response, response::Parts};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;

/// Makes a response future complete only once the response's first body frame (or its end) has
/// arrived, so that every layer above — per-try timeout, load measurement, breaker, retry — sees
/// time to first byte of the body, not just to the headers.
///
/// A server that sends headers and then stalls is caught by the per-try timeout; an error on the
/// first frame is an error of the try (and so classified, counted and retried like any other).
/// The frame is not lost: [`FirstFrameBody`] yields it first, then streams the rest.
///
/// ```
/// use meshwork::http::FirstFrameLayer;
/// use tower::ServiceBuilder;
///
/// let svc = ServiceBuilder::new()
///     .layer(FirstFrameLayer::new())
///     .service(tower::service_fn(|_req: http::Request<()>| async {
///         Ok::<_, meshwork::BoxError>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
///     }));
/// # let _ = svc;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstFrameLayer(());

impl FirstFrameLayer {
    /// Creates the layer.
    #[must_use]
    pub const fn new() -> Self {
        Self(())
    }
}

impl<S> Layer<S> for FirstFrameLayer {
    type Service = FirstFrame<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FirstFrame { inner }
    }
}

/// The service of [`FirstFrameLayer`].
#[derive(Clone, Debug)]
pub struct FirstFrame<S> {
    inner: S,
}

impl<S> FirstFrame<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    ///
    /// ```
    /// use meshwork::http::FirstFrameLayer;
    /// use tower::Layer;
    ///
    /// let mut svc = FirstFrameLayer::new().layer(vec![1, 2]);
    /// assert_eq!(svc.get_ref().len(), 2);
    /// svc.get_mut().push(3);
    /// assert_eq!(svc.into_inner(), [1, 2, 3]);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R, B> Service<R> for FirstFrame<S>
where
    S: Service<R, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<FirstFrameBody<B>>;
    type Error = BoxError;
    type Future = FirstFrameFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        FirstFrameFuture {
            fut: self.inner.call(req),
            head: None,
        }
    }
}

pin_project! {
    /// The response future of [`FirstFrame`].
    #[derive(Debug)]
    pub struct FirstFrameFuture<F, B> {
        #[pin]
        fut: F,
        head: Option<(Parts, B)>,
    }
}

impl<F, B, E> Future for FirstFrameFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<FirstFrameBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.head.is_none() {
            let res = ready!(this.fut.poll(cx)).map_err(Into::into)?;
            if res.body().is_end_stream() {
                return Poll::Ready(Ok(res.map(|rest| FirstFrameBody {
                    first: None,
                    rest,
                    ended: true,
                })));
            }
            *this.head = Some(res.into_parts());
        }
        let (_, body) = this.head.as_mut().expect("set above");
        let first = ready!(Pin::new(body).poll_frame(cx));
        let (parts, rest) = this.head.take().expect("set above");
        match first {
            Some(Err(e)) => Poll::Ready(Err(e.into())),
            Some(Ok(frame)) => Poll::Ready(Ok(Response::from_parts(
                parts,
                FirstFrameBody {
                    first: Some(frame),
                    rest,
                    ended: false,
                },
            ))),
            None => Poll::Ready(Ok(Response::from_parts(
                parts,
                FirstFrameBody {
                    first: None,
                    rest,
                    ended: true,
                },
            ))),
        }
    }
}

/// A response body whose first frame was already read: yields it, then the rest.
#[derive(Debug)]
pub struct FirstFrameBody<B: Body> {
    first: Option<Frame<B::Data>>,
    rest: B,
    ended: bool,
}

impl<B> Body for FirstFrameBody<B>
where
    B: Body + Unpin,
    B::Data: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.ended || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            let n = self
                .first
                .as_ref()
                .and_then(|f| f.data_ref())
                .map_or(0, |d| bytes::Buf::remaining(d) as u64);
            return SizeHint::with_exact(n);
        }
        let rest = self.rest.size_hint();
        let Some(n) = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map(|d| bytes::Buf::remaining(d) as u64)
        else {
            return rest;
        };
        // Upper bound first: `SizeHint` asserts `lower <= upper` on every change, so raising the
        // lower bound of an exact hint before its upper bound would panic.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(n));
        }
        hint.set_lower(rest.lower().saturating_add(n));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use std::time::Duration;
    use tower::ServiceExt;

    type Chunks =
        StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, BoxError>>>;

    fn slow_body(first_after: Duration) -> Chunks {
        let s = futures_util::stream::unfold(0u8, move |n| async move {
            match n {
                0 => {
                    tokio::time::sleep(first_after).await;
                    Some((Ok(Frame::data(Bytes::from_static(b"one"))), 1))
                }
                1 => Some((Ok(Frame::data(Bytes::from_static(b"two"))), 2)),
                _ => None,
            }
        });
        StreamBody::new(Box::pin(s) as _)
    }

    #[tokio::test(start_paused = true)]
    async fn completes_at_the_first_frame_and_keeps_every_byte() {
        let svc = FirstFrameLayer::new().layer(tower::service_fn(|_: ()| async {
            Ok::<_, BoxError>(Response::new(slow_body(Duration::from_millis(300))))
        }));
        let start = tokio::time::Instant::now();
        let res = svc.oneshot(()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "onetwo");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_caught_by_a_timeout_above() {
        let svc = tower::ServiceBuilder::new()
            .layer(crate::timeout::TimeoutLayer::new(Duration::from_millis(100)).unwrap())
            .layer(FirstFrameLayer::new())
            .service(tower::service_fn(|_: ()| async {
                Ok::<_, BoxError>(Response::new(slow_body(Duration::from_secs(10))))
            }));
        let Err(err) = svc.oneshot(()).await else {
            panic!("a stalled body must time out");
        };
        assert!(err.is::<crate::timeout::Elapsed>());
    }

    #[tokio::test]
    async fn regression_12_07_first_frame_exact_size_hint_does_not_panic() {
        // Any Content-Length body: an exact size hint, whose remainder is exact too once the
        // first frame is read.
        let body = http_body_util::Full::new(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        let svc = FirstFrameLayer::new().layer(tower::service_fn(move |_: ()| {
            let body = body.clone();
            async move { Ok::<_, BoxError>(Response::new(body)) }
        }));
        let res = svc.oneshot(()).await.unwrap();
        assert_eq!(res.body().size_hint().exact(), Some(5));

        // Part of the body read, an exact remainder: lower and upper both move by the first frame.
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"one"))),
            Ok(Frame::data(Bytes::from_static(b"two"))),
        ];
        let inner = Exact {
            frames: frames.into(),
            left: 6,
        };
        let svc = FirstFrameLayer::new().layer(tower::service_fn(move |_: ()| {
            let inner = inner.clone_frames();
            async move { Ok::<_, BoxError>(Response::new(inner)) }
        }));
        let res = svc.oneshot(()).await.unwrap();
        assert_eq!(res.body().size_hint().exact(), Some(6));
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "onetwo");
    }

    /// A body with an exact size hint of what is left, like hyper's body of a Content-Length
    /// response.
    struct Exact {
        frames: std::collections::VecDeque<Result<Frame<Bytes>, BoxError>>,
        left: u64,
    }

    impl Exact {
        fn clone_frames(&self) -> Self {
            Self {
                frames: self
                    .frames
                    .iter()
                    .map(|f| Ok(Frame::data(f.as_ref().unwrap().data_ref().unwrap().clone())))
                    .collect(),
                left: self.left,
            }
        }
    }

    impl Body for Exact {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let next = self.frames.pop_front();
            if let Some(Ok(f)) = &next {
                let n = f.data_ref().map_or(0, |d| d.len() as u64);
                self.left -= n;
            }
            Poll::Ready(next)
        }

        fn is_end_stream(&self) -> bool {
            self.frames.is_empty()
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.left)
        }
    }

    #[tokio::test]
    async fn an_empty_body_completes_at_once() {
        let svc = FirstFrameLayer::new().layer(tower::service_fn(|_: ()| async {
            Ok::<_, BoxError>(Response::new(http_body_util::Empty::<Bytes>::new()))
        }));
        let res = svc.oneshot(()).await.unwrap();
        assert!(res.body().is_end_stream());
    }
}
