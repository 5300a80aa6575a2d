use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::BoxError;
use crate::retry::NotReplayable;
use crate::util::lock;

/// The default replay limit: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// A request body that can be sent again: it keeps a copy of what it sends, up to a limit.
///
/// The first try streams the body as it arrives: nothing waits for the whole body. Each data frame
/// is passed on and, while the total stays within the limit, its bytes are kept (a reference-counted
/// [`Bytes`], so no copy for bodies made of `Bytes`). Trailers are kept too.
///
/// [`try_replay`](Self::try_replay) makes a copy for another try. The copy replays the kept bytes,
/// then — if the earlier try stopped before the end — goes on reading the original body where that
/// try left it, keeping copies as it goes. The original body and the kept bytes live in one state
/// that moves to whichever copy is being read, so only one copy reads at a time, and a copy
/// hands the state back when it finishes or is dropped.
///
/// A body that grows past the limit is still sent in full by the try reading it, but its copy is
/// dropped and every later [`try_replay`](Self::try_replay) fails with
/// [`NotReplayable::BodyTooLarge`] (a `debug` event is emitted when that happens, and the retry
/// layer counts `meshwork_retry_body_too_large_total`). A copy cannot be made while an earlier try
/// is still reading the body ([`NotReplayable::BodyInUse`]).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use meshwork::http::ReplayBody;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let first = ReplayBody::new(Full::new(Bytes::from_static(b"hello")));
/// let again = first.try_replay().unwrap();
/// assert_eq!(first.collect().await.unwrap().to_bytes(), "hello");
/// assert_eq!(again.collect().await.unwrap().to_bytes(), "hello");
/// # }
/// ```
pub struct ReplayBody<B> {
    shared: Arc<Shared<B>>,
    /// The state, while this copy is reading.
    state: Option<State<B>>,
    /// The next kept chunk this copy replays.
    replayed: usize,
    trailers_sent: bool,
    done: bool,
}

struct Shared<B> {
    /// The state, while no copy is reading (`None` while one is).
    state: Mutex<Option<State<B>>>,
    limit: usize,
    too_large: AtomicBool,
    hint: SizeHint,
    empty: bool,
}

struct State<B> {
    kept: Vec<Bytes>,
    kept_len: usize,
    /// The original body; `None` once it has ended.
    rest: Option<B>,
    trailers: Option<HeaderMap>,
}

/// The body was polled while another copy was still reading it.
#[derive(Debug)]
struct InUse;

impl fmt::Display for InUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("replayed request body read while an earlier try still reads it")
    }
}

impl std::error::Error for InUse {}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to [`DEFAULT_REPLAY_LIMIT`] bytes.
    pub fn new(body: B) -> Self {
        Self::with_limit(body, DEFAULT_REPLAY_LIMIT)
    }

    /// Wraps `body`, keeping up to `limit` bytes (a body longer than that is never replayed).
    pub fn with_limit(body: B, limit: usize) -> Self {
        let hint = body.size_hint();
        let empty = body.is_end_stream();
        let state = State {
            kept: Vec::new(),
            kept_len: 0,
            rest: Some(body),
            trailers: None,
        };
        Self::reader(Arc::new(Shared {
            state: Mutex::new(Some(state)),
            limit,
            too_large: AtomicBool::new(false),
            hint,
            empty,
        }))
    }
}

impl<B> ReplayBody<B> {
    /// A copy that reads `shared` from the start.
    fn reader(shared: Arc<Shared<B>>) -> Self {
        Self {
            shared,
            state: None,
            replayed: 0,
            trailers_sent: false,
            done: false,
        }
    }

    /// A copy of the body for another try, replaying it from the start.
    ///
    /// # Errors
    ///
    /// [`NotReplayable::BodyTooLarge`] when the body outgrew the replay buffer, and
    /// [`NotReplayable::BodyInUse`] while another copy is still reading it.
    pub fn try_replay(&self) -> Result<Self, NotReplayable> {
        if self.is_too_large() {
            return Err(NotReplayable::BodyTooLarge);
        }
        // A copy reading the body holds its state; one that finished or was dropped gave it back.
        if self.state.is_some() || lock(&self.shared.state).is_none() {
            return Err(NotReplayable::BodyInUse);
        }
        Ok(Self::reader(Arc::clone(&self.shared)))
    }

    /// `true` once the body has grown past the limit: it will not be replayed.
    pub fn is_too_large(&self) -> bool {
        self.shared.too_large.load(Ordering::Acquire)
    }

    /// The replay limit, in bytes.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }

    /// Hands the state back, so another copy can read.
    fn release(&mut self) {
        if let Some(state) = self.state.take() {
            *lock(&self.shared.state) = Some(state);
        }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("limit", &self.shared.limit)
            .field("too_large", &self.is_too_large())
            .field("replayed", &self.replayed)
            .field("done", &self.done)
            .finish()
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.state.is_none() {
            match lock(&this.shared.state).take() {
                Some(state) => this.state = Some(state),
                None => return Poll::Ready(Some(Err(Box::new(InUse)))),
            }
        }
        let limit = this.shared.limit;
        loop {
            let state = this.state.as_mut().expect("taken above");
            // 1. What earlier tries kept.
            if let Some(chunk) = state.kept.get(this.replayed) {
                this.replayed += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
            }
            // 2. The rest of the original body.
            if let Some(rest) = state.rest.as_mut() {
                match ready!(Pin::new(rest).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(mut data) => {
                            let chunk = data.copy_to_bytes(data.remaining());
                            // Only the reader holding the state sets the flag.
                            if !this.shared.too_large.load(Ordering::Relaxed) {
                                if state.kept_len + chunk.len() > limit {
                                    state.kept = Vec::new();
                                    state.kept_len = 0;
                                    this.shared.too_large.store(true, Ordering::Release);
                                    tracing::debug!(
                                        limit,
                                        "request body larger than the replay limit: it will not be retried"
                                    );
                                } else {
                                    state.kept_len += chunk.len();
                                    state.kept.push(chunk.clone());
                                }
                            }
                            this.replayed = state.kept.len();
                            return Poll::Ready(Some(Ok(Frame::data(chunk))));
                        }
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                state.trailers = Some(trailers.clone());
                                state.rest = None;
                                this.trailers_sent = true;
                                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                            }
                            // A frame kind this crate does not know: skip it.
                            continue;
                        }
                    },
                    Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                    None => state.rest = None,
                }
            }
            // 3. The body has ended: the trailers, if any, then the end.
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(trailers) = state.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            this.done = true;
            this.release();
            return Poll::Ready(None);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.shared.empty
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            self.shared.hint
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    fn chunks(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn replays_byte_identical_with_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("checksum", "abc".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let body = ReplayBody::new(StreamBody::new(futures_util::stream::iter(frames)));
        let copy = body.try_replay().unwrap();
        let first = body.collect().await.unwrap();
        assert_eq!(first.trailers(), Some(&trailers));
        assert_eq!(first.to_bytes(), "abcd");
        let again = copy.collect().await.unwrap();
        assert_eq!(again.trailers(), Some(&trailers));
        assert_eq!(again.to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn a_copy_continues_where_an_abandoned_try_stopped() {
        let mut body = ReplayBody::new(chunks(&["one,", "two,", "three"]));
        let copy = body.try_replay().unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "one,");
        // The first try is still reading: no copy can start now.
        assert_eq!(body.try_replay().unwrap_err(), NotReplayable::BodyInUse);
        drop(body);
        let copy2 = copy.try_replay().unwrap();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "one,two,three");
        assert_eq!(copy2.collect().await.unwrap().to_bytes(), "one,two,three");
    }

    #[tokio::test]
    async fn over_the_limit_is_sent_once_and_not_replayable() {
        let body = ReplayBody::with_limit(chunks(&["1234", "5678", "9"]), 8);
        let copy = body.try_replay().unwrap();
        assert!(!body.is_too_large());
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent, "123456789");
        assert!(copy.is_too_large());
        assert_eq!(copy.try_replay().unwrap_err(), NotReplayable::BodyTooLarge);
        // At exactly the limit, it is kept.
        let body = ReplayBody::with_limit(chunks(&["1234", "5678"]), 8);
        let copy = body.try_replay().unwrap();
        body.collect().await.unwrap();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "12345678");
    }

    #[tokio::test]
    async fn size_hint_and_end_of_stream() {
        let body = ReplayBody::new(Full::new(Bytes::from_static(b"xyz")));
        assert_eq!(body.size_hint().exact(), Some(3));
        let copy = body.try_replay().unwrap();
        assert_eq!(copy.size_hint().exact(), Some(3));
        let empty = ReplayBody::new(http_body_util::Empty::<Bytes>::new());
        assert!(empty.is_end_stream());
        assert!(empty.try_replay().unwrap().is_end_stream());
    }
}
