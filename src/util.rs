//! Small helpers shared across modules.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A duration in whole nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Locks `m`, even if a thread panicked while holding it. Every mutex in this crate guards a few
/// assignments at most (state transitions, waker lists, a body's replay state), which a panic
/// cannot leave half-done, so a poisoned lock is still consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
