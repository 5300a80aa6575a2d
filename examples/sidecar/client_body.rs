//! The client's request body, watched: when it fails (the client aborted its upload, sent a
//! malformed chunked encoding, or closed its connection mid-body), the proxy knows the failure is
//! the caller's and answers 400, never 502, whatever error the upstream stack then reports.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// Whether the client's body failed, and how many bytes it carried; shared by the body, the
/// request's error mapping and the access log.
#[derive(Clone, Debug, Default)]
pub struct BodyStatus(Arc<State>);

#[derive(Debug)]
struct State {
    failed: AtomicBool,
    bytes: AtomicU64,
    /// 1 + milliseconds since `epoch` of the last data frame; 0 before the first.
    last: AtomicU64,
    epoch: Instant,
}

impl Default for State {
    fn default() -> Self {
        Self {
            failed: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl BodyStatus {
    /// Whether the client's body failed.
    pub fn failed(&self) -> bool {
        self.0.failed.load(Ordering::Acquire)
    }

    /// Body bytes read from the client so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    /// When the client's body last carried a frame (millisecond resolution), if ever.
    pub fn last_frame(&self) -> Option<Instant> {
        let ms = self.0.last.load(Ordering::Relaxed).checked_sub(1)?;
        self.0
            .epoch
            .checked_add(std::time::Duration::from_millis(ms))
    }
}

/// A body that records its own failure and size in [`BodyStatus`]. Frames pass through unchanged.
pub struct ClientBody<B> {
    inner: B,
    status: BodyStatus,
}

impl<B> ClientBody<B> {
    /// Watches `inner`; the returned [`BodyStatus`] says whether it failed.
    pub fn new(inner: B) -> (Self, BodyStatus) {
        let status = BodyStatus::default();
        (
            Self {
                inner,
                status: status.clone(),
            },
            status,
        )
    }
}

impl<B: Body + Unpin> Body for ClientBody<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(_))) => self.status.0.failed.store(true, Ordering::Release),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let s = &self.status.0;
                    s.bytes
                        .fetch_add(data.remaining() as u64, Ordering::Relaxed);
                    let ms = u64::try_from(s.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                    s.last.store(ms.saturating_add(1), Ordering::Relaxed);
                }
            }
            _ => {}
        }
        polled
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
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn a_failing_body_is_recorded_and_a_good_one_is_not() {
        let frames: Vec<Result<Frame<Bytes>, &str>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Err("client went away"),
        ];
        let (body, failed) = ClientBody::new(StreamBody::new(futures_util::stream::iter(frames)));
        assert!(!failed.failed());
        assert!(body.collect().await.is_err());
        assert!(failed.failed());
        assert_eq!(failed.bytes(), 1);

        let frames: Vec<Result<Frame<Bytes>, &str>> =
            vec![Ok(Frame::data(Bytes::from_static(b"x")))];
        let (body, failed) = ClientBody::new(StreamBody::new(futures_util::stream::iter(frames)));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "x");
        assert!(!failed.failed());
    }
}
