use std::fmt;

/// The breaker is open (or its half-open probes are all taken) and the call was rejected at once,
/// without touching the inner service ([`Mode::FailFast`](super::Mode::FailFast) only).
///
/// The [classifier](crate::classify::classify_error) treats it as *retryable* and *unsent*: the
/// request never left this process, so it may be sent elsewhere, even if it is not idempotent.
///
/// ```
/// use meshwork::breaker::Open;
/// use meshwork::classify::{Class, classify_error};
///
/// let err: meshwork::BoxError = Box::new(Open::new());
/// let c = classify_error(&*err);
/// assert_eq!(c.class(), Class::Retryable);
/// assert!(c.is_unsent());
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Open(());

impl Open {
    /// Creates the error.
    #[must_use]
    pub const fn new() -> Self {
        Open(())
    }
}

impl fmt::Display for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker is open")
    }
}

impl std::error::Error for Open {}

impl crate::classify::AsErrorRef for Open {
    fn as_error_ref(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}
