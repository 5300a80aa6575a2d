use http::{Method, Request};

use super::ReplayBody;
use crate::retry::{NotReplayable, Replay};
use crate::timeout::{CarryDeadline, Deadline};

/// `true` for the methods RFC 9110 defines as idempotent: GET, HEAD, OPTIONS, PUT, DELETE, TRACE.
///
/// ```
/// use http::Method;
/// use meshwork::http::is_idempotent;
///
/// assert!(is_idempotent(&Method::PUT));
/// assert!(!is_idempotent(&Method::POST));
/// assert!(!is_idempotent(&Method::PATCH));
/// ```
#[must_use]
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Replays `http::Request<ReplayBody<B>>`: the retry layer's [`Replay`] for HTTP.
///
/// - a copy has the same method, URI, version, headers and extensions, and a
///   [`ReplayBody::try_replay`] of the body (so a body over the replay limit is not retried);
/// - the deadline is the one [`DeadlineLayer`](crate::timeout::DeadlineLayer) stored in the
///   extensions;
/// - only [idempotent](is_idempotent) methods are retried after a failure that may have reached the
///   server; any method is requeued after one that proves it did not.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use meshwork::http::{HttpReplay, ReplayBody};
/// use meshwork::retry::Replay;
///
/// let req = http::Request::post("http://example.com/pay")
///     .header("x-id", "7")
///     .body(ReplayBody::new(Full::new(Bytes::from_static(b"{}"))))
///     .unwrap();
/// let copy = HttpReplay::new().replay(&req).unwrap();
/// assert_eq!(copy.headers()["x-id"], "7");
/// assert!(!HttpReplay::new().is_idempotent(&req));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpReplay(());

impl HttpReplay {
    /// Creates it.
    #[must_use]
    pub const fn new() -> Self {
        Self(())
    }
}

impl<B> Replay<Request<ReplayBody<B>>> for HttpReplay {
    fn replay(
        &self,
        req: &Request<ReplayBody<B>>,
    ) -> Result<Request<ReplayBody<B>>, NotReplayable> {
        let body = req.body().try_replay()?;
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Ok(copy)
    }

    fn deadline(&self, req: &Request<ReplayBody<B>>) -> Option<Deadline> {
        req.deadline()
    }

    fn set_deadline(&self, req: &mut Request<ReplayBody<B>>, deadline: Deadline) {
        req.set_deadline(deadline);
    }

    fn incoming_budget(&self, req: &Request<ReplayBody<B>>) -> Option<std::time::Duration> {
        req.incoming_budget()
    }

    fn is_idempotent(&self, req: &Request<ReplayBody<B>>) -> bool {
        is_idempotent(req.method())
    }
}
