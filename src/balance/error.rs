use std::fmt;

/// No endpoint could take the request: the endpoint set is empty, or no endpoint became ready
/// within the balancer's [`max_wait`](super::Builder::max_wait).
///
/// The request was never sent. The [classifier](crate::classify) counts it as a non-retryable
/// failure: the balancer has already waited for an endpoint, so trying again through the same
/// balancer would only spend the caller's deadline and retry budget on the same wait.
///
/// ```
/// use meshwork::balance::NoEndpoints;
/// use meshwork::BoxError;
///
/// let err: BoxError = NoEndpoints::new().into();
/// assert!(err.is::<NoEndpoints>());
/// assert_eq!(err.to_string(), "no endpoint available");
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NoEndpoints(());

impl NoEndpoints {
    /// Creates the error.
    #[must_use]
    pub const fn new() -> Self {
        NoEndpoints(())
    }
}

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no endpoint available")
    }
}

impl std::error::Error for NoEndpoints {}

impl crate::classify::AsErrorRef for NoEndpoints {
    fn as_error_ref(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}

/// The endpoint reserved by `poll_ready` was removed by discovery before `call`: the request was
/// not sent to it (a removed endpoint gets nothing new) and failed at once.
///
/// The [classifier](crate::classify) counts it as a retryable failure that proves the request was
/// never sent, so the retry layer requeues it to another endpoint, whatever its method.
///
/// ```
/// use meshwork::balance::EndpointRemoved;
/// use meshwork::classify::classify_error;
///
/// let c = classify_error(&EndpointRemoved::new());
/// assert!(c.is_unsent());
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointRemoved(());

impl EndpointRemoved {
    /// Creates the error.
    #[must_use]
    pub const fn new() -> Self {
        EndpointRemoved(())
    }
}

impl fmt::Display for EndpointRemoved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the reserved endpoint was removed before the call")
    }
}

impl std::error::Error for EndpointRemoved {}
