use std::time::Duration;

use rand::Rng;

use super::Backoff;

/// The state of one series of attempts under a [`Backoff`]: the attempt number and the previous delay.
///
/// ```
/// use std::time::Duration;
/// use meshwork::backoff::Backoff;
/// use rand::{SeedableRng, rngs::SmallRng};
///
/// let mut seq = Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1))?.sequence();
/// let mut rng = SmallRng::seed_from_u64(0);
/// assert_eq!(seq.next_delay(&mut rng), Duration::from_millis(10));
/// assert_eq!(seq.next_delay(&mut rng), Duration::from_millis(20));
/// seq.reset();
/// assert_eq!(seq.next_delay(&mut rng), Duration::from_millis(10));
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffSeq {
    policy: Backoff,
    attempt: u32,
    prev: Duration,
}

impl BackoffSeq {
    pub(super) const fn new(policy: Backoff) -> Self {
        Self {
            policy,
            attempt: 0,
            prev: policy.base(),
        }
    }

    /// The delay before the next attempt; advances the series.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let d = self.policy.delay(self.attempt, self.prev, rng);
        self.attempt = self.attempt.saturating_add(1);
        self.prev = d;
        d
    }

    /// How many delays have been drawn since the start or the last [`reset`](Self::reset).
    #[must_use]
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts the series again from attempt 0.
    pub fn reset(&mut self) {
        *self = Self::new(self.policy);
    }

    /// The policy.
    #[must_use]
    pub const fn policy(&self) -> &Backoff {
        &self.policy
    }
}
