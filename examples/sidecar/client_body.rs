//! The client's request body, watched: when it fails (the client aborted its upload, sent a
//! malformed chunked encoding, or closed its connection mid-body), the proxy knows the failure is
//! the caller's and answers 400, never 502, whatever error the upstream stack then reports.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

/// Set when the client's body failed; shared by the body and the request's error mapping.
#[derive(Clone, Debug, Default)]
pub struct Failed(Arc<AtomicBool>);

impl Failed {
    /// Whether the client's body failed.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A body that records its own failure in [`Failed`]. Frames pass through unchanged.
pub struct ClientBody<B> {
    inner: B,
    failed: Failed,
}

impl<B> ClientBody<B> {
    /// Watches `inner`; the returned [`Failed`] says whether it failed.
    pub fn new(inner: B) -> (Self, Failed) {
        let failed = Failed::default();
        (
            Self {
                inner,
                failed: failed.clone(),
            },
            failed,
        )
    }
}

impl<B: Body + Unpin> Body for ClientBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.failed.0.store(true, Ordering::Release);
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
        assert!(!failed.get());
        assert!(body.collect().await.is_err());
        assert!(failed.get());

        let frames: Vec<Result<Frame<Bytes>, &str>> =
            vec![Ok(Frame::data(Bytes::from_static(b"x")))];
        let (body, failed) = ClientBody::new(StreamBody::new(futures_util::stream::iter(frames)));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "x");
        assert!(!failed.get());
    }
}
