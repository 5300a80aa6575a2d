use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::timeout::{CarryDeadline, Deadline};

/// The header that carries the time left, in whole milliseconds, on non-gRPC requests.
pub const DEADLINE_HEADER: HeaderName = HeaderName::from_static("meshwork-timeout-ms");

/// gRPC's standard timeout header.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Parses a `grpc-timeout` value: up to 8 ASCII digits followed by one of `H M S m u n`.
///
/// ```
/// use std::time::Duration;
/// use meshwork::http::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
/// assert_eq!(parse_grpc_timeout("123456789S"), None); // nine digits
/// assert_eq!(parse_grpc_timeout("10"), None); // no unit
/// ```
#[must_use]
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats `d` as a `grpc-timeout` value, choosing the finest unit whose count fits in 8 digits and
/// rounding down, so the value never exceeds `d`.
///
/// ```
/// use std::time::Duration;
/// use meshwork::http::format_grpc_timeout;
///
/// assert_eq!(format_grpc_timeout(Duration::from_millis(100)), "100000u");
/// assert_eq!(format_grpc_timeout(Duration::from_nanos(1500)), "1500n");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(1000)), "1000000m");
/// ```
#[must_use]
pub fn format_grpc_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    for (unit, per) in [
        ("n", 1u128),
        ("u", 1_000),
        ("m", 1_000_000),
        ("S", 1_000_000_000),
        ("M", 60_000_000_000),
        ("H", 3_600_000_000_000),
    ] {
        let n = nanos / per;
        if n <= MAX {
            return format!("{n}{unit}");
        }
    }
    format!("{MAX}H")
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The caller's budget from a request's headers: `grpc-timeout`, else [`DEADLINE_HEADER`].
pub(crate) fn incoming_budget(headers: &HeaderMap) -> Option<Duration> {
    if let Some(v) = headers.get(GRPC_TIMEOUT) {
        let parsed = v.to_str().ok().and_then(parse_grpc_timeout);
        if parsed.is_none() {
            tracing::debug!(value = ?v, "ignoring malformed grpc-timeout header");
        }
        return parsed;
    }
    let v = headers.get(DEADLINE_HEADER)?;
    let parsed = v
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_millis);
    if parsed.is_none() {
        tracing::debug!(value = ?v, header = %DEADLINE_HEADER, "ignoring malformed deadline header");
    }
    parsed
}

impl<B> CarryDeadline for Request<B> {
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.extensions_mut().insert(deadline);
    }

    fn incoming_budget(&self) -> Option<Duration> {
        incoming_budget(self.headers())
    }
}

/// Writes the time left before the request's deadline into the outgoing request's headers.
///
/// Put it just above the connection, so that the header holds the time left *when this try is sent*.
/// A request with no deadline is sent as it is, except that a deadline header it already carries
/// (one the caller sent to a proxy) is passed on unchanged.
///
/// ```
/// use std::time::Duration;
/// use meshwork::http::{DEADLINE_HEADER, PropagateDeadlineLayer};
/// use meshwork::timeout::DeadlineLayer;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), meshwork::BoxError> {
/// let echo = tower::service_fn(|req: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(req.headers()[DEADLINE_HEADER].clone())
/// });
/// let mut svc = ServiceBuilder::new()
///     .layer(DeadlineLayer::new(Duration::from_millis(100))?)
///     .layer(PropagateDeadlineLayer::new())
///     .service(echo);
/// let sent = svc.ready().await?.call(http::Request::new(())).await?;
/// assert_eq!(sent, "100");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PropagateDeadlineLayer(());

impl PropagateDeadlineLayer {
    /// Creates the layer.
    #[must_use]
    pub const fn new() -> Self {
        Self(())
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline { inner }
    }
}

/// The service of [`PropagateDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct PropagateDeadline<S> {
    inner: S,
}

impl<S> PropagateDeadline<S> {
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
    /// use meshwork::http::PropagateDeadlineLayer;
    /// use tower::Layer;
    ///
    /// let mut svc = PropagateDeadlineLayer::new().layer(vec![1, 2]);
    /// assert_eq!(svc.get_ref().len(), 2);
    /// svc.get_mut().push(3);
    /// assert_eq!(svc.into_inner(), [1, 2, 3]);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for PropagateDeadline<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The request's own deadline, narrowed by the one beside it (a try's deadline, set by
        // `TryDeadline` under the per-try timeout).
        let deadline = match (req.deadline(), crate::timeout::current_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline) = deadline {
            let left = deadline.remaining_at(Instant::now());
            let headers = req.headers_mut();
            if is_grpc(headers) {
                let v = HeaderValue::try_from(format_grpc_timeout(left))
                    .expect("digits and a unit are a valid header value");
                headers.insert(GRPC_TIMEOUT, v);
            } else {
                let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
                headers.insert(DEADLINE_HEADER, HeaderValue::from(ms));
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_round_trip_never_grows() {
        for ms in [0u64, 1, 99, 100, 1_000, 86_400_000, u32::MAX as u64] {
            let d = Duration::from_millis(ms) + Duration::from_nanos(7);
            let back = parse_grpc_timeout(&format_grpc_timeout(d)).unwrap();
            assert!(back <= d, "{d:?} -> {back:?}");
        }
        for bad in ["", "m", "1x", "-1m", "1.5S", "123456789m", " 1m"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn incoming_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(incoming_budget(&h), None);
        h.insert(DEADLINE_HEADER, HeaderValue::from_static("50"));
        assert_eq!(incoming_budget(&h), Some(Duration::from_millis(50)));
        h.insert(DEADLINE_HEADER, HeaderValue::from_static("soon"));
        assert_eq!(incoming_budget(&h), None);
        h.insert(DEADLINE_HEADER, HeaderValue::from_static("-5"));
        assert_eq!(incoming_budget(&h), None);
        h.insert(GRPC_TIMEOUT, HeaderValue::from_static("2S"));
        assert_eq!(incoming_budget(&h), Some(Duration::from_secs(2)));
    }
}
