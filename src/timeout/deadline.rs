use std::time::Duration;

use tokio::time::Instant;

/// The instant by which a request must be done, all retries included.
///
/// ```
/// use std::time::Duration;
/// use meshwork::timeout::Deadline;
/// use tokio::time::Instant;
///
/// let now = Instant::now();
/// let d = Deadline::at(now + Duration::from_millis(100));
/// assert_eq!(d.remaining_at(now), Duration::from_millis(100));
/// assert_eq!(d.remaining_at(now + Duration::from_secs(1)), Duration::ZERO);
/// assert!(d.min(Deadline::at(now)) == Deadline::at(now));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline at `at`.
    #[must_use]
    pub const fn at(at: Instant) -> Self {
        Self { at }
    }

    /// A deadline `budget` from now (a budget too large for `Instant` arithmetic, up to
    /// `Duration::MAX`, saturates to about 30 years away).
    #[must_use]
    pub fn after(budget: Duration) -> Self {
        Self::at(crate::util::deadline_after(Instant::now(), budget))
    }

    /// The instant.
    #[must_use]
    pub const fn instant(&self) -> Instant {
        self.at
    }

    /// The time left, as of `now` (zero once passed).
    #[must_use]
    pub fn remaining_at(&self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }

    /// The time left, reading the clock.
    #[must_use]
    pub fn remaining(&self) -> Duration {
        self.remaining_at(Instant::now())
    }

    /// `true` when the deadline has passed as of `now`.
    #[must_use]
    pub fn is_expired_at(&self, now: Instant) -> bool {
        now >= self.at
    }

    /// `true` when something that takes `duration`, started at `now`, would finish in time.
    #[must_use]
    pub fn fits(&self, now: Instant, duration: Duration) -> bool {
        now.checked_add(duration).is_some_and(|end| end <= self.at)
    }
}

/// A request that can carry a [`Deadline`], so that every layer of the stack sees the time left.
///
/// Implemented for `http::Request<B>` (feature `http`), where the deadline lives in the request's
/// extensions and [`incoming_budget`](Self::incoming_budget) reads the caller's deadline header. For
/// another request type, store the deadline in a field:
///
/// ```
/// use meshwork::timeout::{CarryDeadline, Deadline};
///
/// #[derive(Clone)]
/// struct Query {
///     sql: String,
///     deadline: Option<Deadline>,
/// }
///
/// impl CarryDeadline for Query {
///     fn deadline(&self) -> Option<Deadline> {
///         self.deadline
///     }
///     fn set_deadline(&mut self, deadline: Deadline) {
///         self.deadline = Some(deadline);
///     }
/// }
/// ```
pub trait CarryDeadline {
    /// The request's deadline, if it has one.
    fn deadline(&self) -> Option<Deadline>;

    /// Sets the request's deadline.
    fn set_deadline(&mut self, deadline: Deadline);

    /// The time budget the *caller* gave this request on the wire (a deadline header), if any.
    /// A malformed value must be ignored (`None`), never turned into an error.
    fn incoming_budget(&self) -> Option<Duration> {
        None
    }
}

impl<T: CarryDeadline + ?Sized> CarryDeadline for Box<T> {
    fn deadline(&self) -> Option<Deadline> {
        (**self).deadline()
    }
    fn set_deadline(&mut self, deadline: Deadline) {
        (**self).set_deadline(deadline)
    }
    fn incoming_budget(&self) -> Option<Duration> {
        (**self).incoming_budget()
    }
}
