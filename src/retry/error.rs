use std::fmt;

/// The retry budget had no retry left.
///
/// The retry layer never fails a request with this error: when the budget is empty it returns the
/// failure of the last try, unchanged, and counts the refusal (in
/// [`RetryBudget::exhausted_count`](super::RetryBudget::exhausted_count), the
/// `meshwork_retry_budget_exhausted_total` metric and a `debug` event). It is the error of
/// [`RetryBudget::withdraw`](super::RetryBudget::withdraw), for code that draws on a budget itself;
/// boxed into a [`BoxError`](crate::BoxError) it classifies as non-retryable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetExhausted(());

impl BudgetExhausted {
    /// Creates the error.
    #[must_use]
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("retry budget exhausted")
    }
}

impl std::error::Error for BudgetExhausted {}
