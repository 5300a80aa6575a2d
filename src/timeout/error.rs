use std::fmt;

/// One try ran out of time (a per-try [`Timeout`](super::Timeout)): retryable.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl Elapsed {
    /// Creates the error.
    #[must_use]
    pub const fn new() -> Self {
        Elapsed(())
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request try timed out")
    }
}

impl std::error::Error for Elapsed {}

/// The request's deadline passed (a [`DeadlineLayer`](super::DeadlineLayer)): not retryable, since no
/// time is left.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded(());

impl DeadlineExceeded {
    /// Creates the error.
    #[must_use]
    pub const fn new() -> Self {
        DeadlineExceeded(())
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

impl crate::classify::AsErrorRef for Elapsed {
    fn as_error_ref(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}

impl crate::classify::AsErrorRef for DeadlineExceeded {
    fn as_error_ref(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}
