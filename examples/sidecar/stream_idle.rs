//! The stream idle timeout (`listener.stream_idle_timeout`, Envoy's `stream_idle_timeout`,
//! default 5 minutes): a request whose bodies carry no byte in either direction for that long is
//! ended on both sides. The response body then fails, so hyper resets the client's stream (HTTP/2)
//! or closes its connection (HTTP/1), and dropping the exchange cancels the upstream request.
//!
//! Waiting for the response head is bounded by the upstream's deadline, not by this timer: it
//! starts with the response body.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use meshwork::BoxError;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::client_body::BodyStatus;

/// The error a response body ends with when the stream idled too long.
#[derive(Debug)]
pub struct StreamIdle(Duration);

impl std::fmt::Display for StreamIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no body byte in either direction for {:?}", self.0)
    }
}

impl std::error::Error for StreamIdle {}

pin_project! {
    /// A response body that fails after `idle` without a frame of its own or of the request body.
    pub struct IdleBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
        idle: Duration,
        last: Instant,
        request: Option<BodyStatus>,
    }
}

impl<B> IdleBody<B> {
    /// Watches `inner`, and the request body's activity in `request` when there is one.
    pub fn new(inner: B, idle: Duration, request: Option<BodyStatus>) -> Self {
        let now = Instant::now();
        Self {
            inner,
            sleep: tokio::time::sleep_until(deadline(now, idle)),
            idle,
            last: now,
            request,
        }
    }
}

fn deadline(from: Instant, idle: Duration) -> Instant {
    // A deadline past what `Instant` holds: far enough (the configuration caps durations anyway).
    from.checked_add(idle)
        .unwrap_or_else(|| from + Duration::from_secs(365 * 24 * 3600))
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) {
            *this.last = Instant::now();
            return Poll::Ready(frame);
        }
        loop {
            ready!(this.sleep.as_mut().poll(cx));
            let last = this
                .request
                .as_ref()
                .and_then(BodyStatus::last_frame)
                .map_or(*this.last, |r| r.max(*this.last));
            let at = deadline(last, *this.idle);
            if at <= Instant::now() {
                return Poll::Ready(Some(Err(StreamIdle(*this.idle).into())));
            }
            this.sleep.as_mut().reset(at);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_fails_and_a_busy_one_does_not() {
        // One frame, then nothing: fails one idle period after the frame.
        let frames =
            futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x")))])
                .chain(futures_util::stream::pending());
        let mut body = std::pin::pin!(IdleBody::new(
            StreamBody::new(frames),
            Duration::from_secs(5),
            None
        ));
        let start = Instant::now();
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<StreamIdle>(), "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        // A frame every 4 s keeps a 5 s timer from firing.
        let frames = futures_util::stream::unfold(0, |n| async move {
            (n < 3).then_some(())?;
            tokio::time::sleep(Duration::from_secs(4)).await;
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"y"))),
                n + 1,
            ))
        });
        let body = IdleBody::new(StreamBody::new(frames), Duration::from_secs(5), None);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "yyy");
    }

    use futures_util::StreamExt as _;
}
