//! The budget retries draw on, as a trait: plug in the shared [`RetryBudget`], or one of your own.

use std::any::Any;
use std::fmt;

use super::{BudgetExhausted, RetryBudget};

/// What the retry layer draws retries and requeues from.
///
/// The layer [deposits](Budget::deposit) once per request, before its first try, and
/// [withdraws](Budget::withdraw) once per retry or requeue; a failed withdrawal returns the
/// failure to the caller without trying again ([`BudgetExhausted`] is non-retryable). tower's
/// `retry::budget::Budget` and Finagle's `RetryBudget` have the same shape.
///
/// [`RetryBudget`] (a ratio of requests over a sliding window, with a per-second floor) is the
/// default. [`AlwaysRetry`] and [`NeverRetry`] are for tests and special cases; implement the trait
/// for a budget shared in another way (across processes, per tenant).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use meshwork::retry::{Budget, BudgetExhausted, RetryPolicy};
///
/// /// At most `n` retries in the life of the process.
/// #[derive(Debug)]
/// struct Tickets(AtomicU32);
///
/// impl Budget for Tickets {
///     fn deposit(&self) {}
///     fn withdraw(&self) -> Result<(), BudgetExhausted> {
///         self.0
///             .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
///             .map(drop)
///             .map_err(|_| BudgetExhausted::new())
///     }
/// }
///
/// let policy = RetryPolicy::new().budget(Tickets(AtomicU32::new(3)));
/// # drop(policy);
/// ```
pub trait Budget: Any + fmt::Debug + Send + Sync {
    /// Records a request (once, before its first try).
    fn deposit(&self);

    /// Takes one retry or requeue, or fails when none is left.
    ///
    /// # Errors
    ///
    /// [`BudgetExhausted`] when the budget allows no retry now; the caller then returns the
    /// failure without retrying.
    fn withdraw(&self) -> Result<(), BudgetExhausted>;

    /// The retries the budget would allow now, if it can tell (for reports and tests).
    fn available(&self) -> Option<u64> {
        None
    }
}

impl dyn Budget {
    /// The budget as its concrete type, if it is a `T`.
    ///
    /// ```
    /// use meshwork::retry::{Budget, RetryBudget};
    ///
    /// let budget: &dyn Budget = &RetryBudget::new();
    /// assert_eq!(budget.downcast_ref::<RetryBudget>().unwrap().retry_ratio(), 0.2);
    /// ```
    pub fn downcast_ref<T: Budget>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref()
    }
}

impl Budget for RetryBudget {
    fn deposit(&self) {
        RetryBudget::deposit(self);
    }

    fn withdraw(&self) -> Result<(), BudgetExhausted> {
        RetryBudget::withdraw(self)
    }

    fn available(&self) -> Option<u64> {
        Some(RetryBudget::available(self))
    }
}

/// A budget that always allows another try: the retry layer is then bounded by the policy's
/// `max_retries` and `max_requeues` alone (a retry storm is possible: use it in tests).
///
/// ```
/// use meshwork::retry::{AlwaysRetry, Budget};
///
/// assert!(AlwaysRetry.withdraw().is_ok());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlwaysRetry;

impl Budget for AlwaysRetry {
    fn deposit(&self) {}

    fn withdraw(&self) -> Result<(), BudgetExhausted> {
        Ok(())
    }
}

/// A budget that never allows another try: every failure is returned as it is.
///
/// ```
/// use meshwork::retry::{Budget, NeverRetry};
///
/// assert!(NeverRetry.withdraw().is_err());
/// assert_eq!(NeverRetry.available(), Some(0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeverRetry;

impl Budget for NeverRetry {
    fn deposit(&self) {}

    fn withdraw(&self) -> Result<(), BudgetExhausted> {
        Err(BudgetExhausted::new())
    }

    fn available(&self) -> Option<u64> {
        Some(0)
    }
}
