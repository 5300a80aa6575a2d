//! Small helpers shared across modules.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A duration in whole nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// About 30 years: far enough away to mean "never" (tokio uses the same horizon).
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(86400 * 365 * 30);

/// The instant `d` after `now`, saturating: a duration too large for `Instant` arithmetic (up to
/// `Duration::MAX`, which passes every non-zero check) means "never", about 30 years away, instead
/// of a panic. Every `Instant + Duration` of a configured or received duration goes through here.
pub(crate) fn deadline_after(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    now.checked_add(d.min(FAR_FUTURE)).unwrap_or(now)
}

/// Locks `m`, even if a thread panicked while holding it. Every mutex in this crate guards a few
/// assignments at most (state transitions, waker lists, a body's replay state), which a panic
/// cannot leave half-done, so a poisoned lock is still consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
