use std::fmt;

/// A request rejected locally by client-side admission control, before any network work: the
/// upstream as a whole has been rejecting or failing. It is a *nack* for
/// [`classify_error`](crate::classify::classify_error): nothing was sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rejected(());

impl Rejected {
    /// Creates the error.
    #[must_use]
    pub const fn new() -> Self {
        Rejected(())
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rejected by client-side admission control (the upstream is overloaded)")
    }
}

impl std::error::Error for Rejected {}

impl crate::classify::AsErrorRef for Rejected {
    fn as_error_ref(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}
