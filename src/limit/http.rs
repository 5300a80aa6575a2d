use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::Reject;

/// The header that marks a response as a *nack*: `meshwork-nack: 1` on a `503` means "not
/// processed, safe to send elsewhere". [`HttpClassify`](crate::classify::HttpClassify) recognises
/// it.
pub const NACK_HEADER: HeaderName = HeaderName::from_static("meshwork-nack");

/// A nack response: `503 Service Unavailable`, `meshwork-nack: 1`, an empty (default) body.
///
/// ```
/// use meshwork::limit::{nack_response, NACK_HEADER};
///
/// let res = nack_response::<String>();
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.headers()[NACK_HEADER], "1");
/// ```
pub fn nack_response<B: Default>() -> Response<B> {
    let mut res = Response::new(B::default());
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    res.headers_mut()
        .insert(NACK_HEADER, HeaderValue::from_static("1"));
    res
}

/// `true` when `res` is a nack (`503` with `meshwork-nack: 1`).
pub fn is_nack_response<B>(res: &Response<B>) -> bool {
    res.status() == StatusCode::SERVICE_UNAVAILABLE
        && res
            .headers()
            .get(NACK_HEADER)
            .is_some_and(|v| v.as_bytes() == b"1")
}

/// Rejects an HTTP request with [`nack_response`]; the inner error type is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpNack;

impl<B: Default, E> Reject<Response<B>, E> for HttpNack {
    fn reject(&self) -> Result<Response<B>, E> {
        Ok(nack_response())
    }
}
