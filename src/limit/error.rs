use std::fmt;

/// A request refused by a concurrency limit before any work was done: a *nack*, safe to send
/// elsewhere. [`classify_error`](crate::classify::classify_error) classifies it as
/// [`Classification::nack`](crate::classify::Classification::nack).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Nacked(());

impl Nacked {
    /// Creates the error.
    #[must_use]
    pub const fn new() -> Self {
        Nacked(())
    }
}

impl fmt::Display for Nacked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rejected by the concurrency limit (not processed, safe to retry elsewhere)")
    }
}

impl std::error::Error for Nacked {}

impl crate::classify::AsErrorRef for Nacked {
    fn as_error_ref(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}
