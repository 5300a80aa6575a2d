use std::error::Error;
use std::time::{Duration, SystemTime};

use http::{Response, StatusCode, header::RETRY_AFTER};

use super::{AsErrorRef, Classification, Classify, classify_error};

/// Classifies HTTP responses by status, and transport errors by their cause.
///
/// | outcome | classification |
/// |---|---|
/// | 502, 503, 504 | retryable failure |
/// | 429 Too Many Requests | [throttled](Classification::throttled): retried, but not the endpoint's failure (a retryable failure with [`count_429_as_failure`](Self::count_429_as_failure)) |
/// | other 5xx | non-retryable failure, or retryable with [`retry_all_5xx`](Self::retry_all_5xx) |
/// | 1xx–4xx (but 429) | success: the endpoint answered as it should |
/// | an error caused by the caller (its request body failed, was aborted or outgrew a limit: hyper's *user* errors, [`LengthLimitError`](http_body_util::LengthLimitError)) | ignorable: never the endpoint's failure |
/// | any other error | as [`classify_error`]: timeouts and connection failures are retryable, and a request that provably never reached the server (connect error, HTTP/2 `REFUSED_STREAM`, a pooled connection closed before the request was written) is marked *unsent* |
///
/// A `Retry-After` header (seconds or an HTTP-date) on a 429 or 503 response is captured in the
/// [`Classification`] for the retry layer.
///
/// ```
/// use http::{Response, StatusCode};
/// use meshwork::classify::{Class, Classify, HttpClassify};
/// use meshwork::BoxError;
///
/// let classify = HttpClassify::new();
/// let unavailable = Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
/// let c = classify.classify(Ok::<_, &BoxError>(&unavailable));
/// assert_eq!(c.class(), Class::Retryable);
/// assert_eq!(c.retry_after(), Some(std::time::Duration::from_secs(2)));
///
/// let internal = Response::builder().status(500).body(()).unwrap();
/// assert_eq!(classify.classify(Ok::<_, &BoxError>(&internal)).class(), Class::NonRetryable);
/// assert_eq!(
///     classify.retry_all_5xx(true).classify(Ok::<_, &BoxError>(&internal)).class(),
///     Class::Retryable
/// );
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpClassify {
    retry_all_5xx: bool,
    count_429: bool,
}

impl HttpClassify {
    /// The default HTTP classifier.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            retry_all_5xx: false,
            count_429: false,
        }
    }

    /// Whether a 429 counts as the endpoint's failure (default `false`: the endpoint is shedding
    /// the caller's load, it is not broken; Envoy's outlier detection counts 5xx only). Either way a
    /// 429 is retried.
    ///
    /// ```
    /// use http::Response;
    /// use meshwork::classify::{Class, Classify, HttpClassify};
    /// use meshwork::BoxError;
    ///
    /// let busy = Response::builder().status(429).body(()).unwrap();
    /// let c = HttpClassify::new().classify(Ok::<_, &BoxError>(&busy));
    /// assert_eq!(c.class(), Class::Ignorable);
    /// assert!(c.is_throttled());
    /// let c = HttpClassify::new().count_429_as_failure(true).classify(Ok::<_, &BoxError>(&busy));
    /// assert_eq!(c.class(), Class::Retryable);
    /// ```
    #[must_use]
    pub const fn count_429_as_failure(mut self, yes: bool) -> Self {
        self.count_429 = yes;
        self
    }

    /// Whether 5xx statuses other than 502, 503 and 504 are retryable (default `false`: a 500 usually
    /// means the request itself broke something, and would break it again).
    #[must_use]
    pub const fn retry_all_5xx(mut self, yes: bool) -> Self {
        self.retry_all_5xx = yes;
        self
    }

    /// Classifies a status code alone (no `Retry-After`).
    #[must_use]
    pub const fn classify_status(&self, status: StatusCode) -> Classification {
        match status.as_u16() {
            429 if !self.count_429 => Classification::throttled(),
            429 | 502 | 503 | 504 => Classification::retryable(),
            500..=599 if self.retry_all_5xx => Classification::retryable(),
            500..=599 => Classification::non_retryable(),
            _ => Classification::success(),
        }
    }
}

impl<B, E> Classify<Response<B>, E> for HttpClassify
where
    E: AsErrorRef,
{
    fn classify(&self, outcome: Result<&Response<B>, &E>) -> Classification {
        match outcome {
            Ok(res) => {
                if crate::limit::is_nack_response(res) {
                    // `503` + `meshwork-nack: 1`: refused before any work, safe elsewhere.
                    return Classification::nack();
                }
                let c = self.classify_status(res.status());
                match res.status().as_u16() {
                    429 | 503 => match retry_after(res.headers()) {
                        Some(after) => c.with_retry_after(after),
                        None => c,
                    },
                    _ => c,
                }
            }
            Err(e) => classify_error(e.as_error_ref()),
        }
    }
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP-date (relative to the system clock).
/// A malformed value is ignored.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The HTTP-specific part of [`classify_error`].
pub(super) fn classify_http_error(e: &(dyn Error + 'static)) -> Option<Classification> {
    if e.is::<crate::http::TlsNotConfigured>() {
        // The caller asked for TLS where none is configured: not the endpoint's failure.
        return Some(Classification::ignorable());
    }
    if let Some(err) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
        if err.is_connect() {
            return Some(Classification::retryable().unsent());
        }
        // Otherwise keep walking: the source says more.
        return None;
    }
    if e.is::<http_body_util::LengthLimitError>() {
        // The caller's streamed request body outgrew a limit: the caller's doing.
        return Some(Classification::ignorable());
    }
    if let Some(err) = e.downcast_ref::<hyper::Error>() {
        if err.is_user() {
            // Caused by the caller: its request body failed or was aborted mid-way (an aborted
            // upload), or it sent what hyper refuses. Never the endpoint's failure, never retried.
            return Some(Classification::ignorable());
        }
        if err.is_canceled() {
            // hyper reports `Canceled` when the connection closed before the request was started.
            return Some(Classification::retryable().unsent());
        }
        return None;
    }
    if let Some(err) = e.downcast_ref::<h2::Error>() {
        if err.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return Some(Classification::retryable().unsent());
        }
        return Some(Classification::retryable());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;
    use crate::classify::Class;

    fn status(code: u16) -> Class {
        let res = Response::builder().status(code).body(()).unwrap();
        HttpClassify::new()
            .classify(Ok::<_, &BoxError>(&res))
            .class()
    }

    #[test]
    fn statuses() {
        assert_eq!(status(200), Class::Success);
        assert_eq!(status(404), Class::Success);
        assert_eq!(status(429), Class::Ignorable);
        assert_eq!(status(500), Class::NonRetryable);
        assert_eq!(status(501), Class::NonRetryable);
        assert_eq!(status(502), Class::Retryable);
        assert_eq!(status(503), Class::Retryable);
        assert_eq!(status(504), Class::Retryable);
    }

    #[test]
    fn regression_12_06_429_is_not_an_endpoint_failure_by_default() {
        let res = Response::builder()
            .status(429)
            .header(RETRY_AFTER, "2")
            .body(())
            .unwrap();
        let c = HttpClassify::new().classify(Ok::<_, &BoxError>(&res));
        assert!(!c.class().is_failure(), "the breaker must not count a 429");
        assert!(c.is_throttled(), "but it is still retried");
        assert_eq!(c.retry_after(), Some(Duration::from_secs(2)));
        let c = HttpClassify::new()
            .count_429_as_failure(true)
            .classify(Ok::<_, &BoxError>(&res));
        assert_eq!(c.class(), Class::Retryable);
        assert_eq!(c.retry_after(), Some(Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn regression_12_06_over_limit_request_body_is_the_callers_doing() {
        use http_body_util::{BodyExt, Full, Limited};
        let body = Limited::new(Full::new(bytes::Bytes::from_static(b"0123456789")), 4);
        let e: BoxError = body.collect().await.unwrap_err();
        // As the error arrives from hyper: wrapped by what sent the body.
        #[derive(Debug)]
        struct Wrapped(BoxError);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("sending the request failed")
            }
        }
        impl Error for Wrapped {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&*self.0)
            }
        }
        let e: BoxError = Box::new(Wrapped(e));
        let c = HttpClassify::new().classify(Err::<&Response<()>, _>(&e));
        assert_eq!(c.class(), Class::Ignorable);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = http::HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let future = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            RETRY_AFTER,
            httpdate::fmt_http_date(future).parse().unwrap(),
        );
        let got = retry_after(&h).unwrap();
        assert!(
            got <= Duration::from_secs(120) && got >= Duration::from_secs(110),
            "{got:?}"
        );
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn retry_after_only_on_429_and_503() {
        let res = Response::builder()
            .status(502)
            .header(RETRY_AFTER, "3")
            .body(())
            .unwrap();
        let c = HttpClassify::new().classify(Ok::<_, &BoxError>(&res));
        assert_eq!(c.retry_after(), None);
        let res = Response::builder()
            .status(429)
            .header(RETRY_AFTER, "3")
            .body(())
            .unwrap();
        let c = HttpClassify::new().classify(Ok::<_, &BoxError>(&res));
        assert_eq!(c.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn h2_refused_stream_is_unsent() {
        let e: BoxError = Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM));
        let c = HttpClassify::new().classify(Err::<&Response<()>, _>(&e));
        assert!(c.is_unsent());
        let e: BoxError = Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR));
        let c = HttpClassify::new().classify(Err::<&Response<()>, _>(&e));
        assert!(!c.is_unsent());
        assert_eq!(c.class(), Class::Retryable);
    }
}
