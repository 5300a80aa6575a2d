//! Backoff: how long to wait before the next attempt.
//!
//! Retrying at once, or on a fixed schedule, makes many clients hit a recovering server in lockstep.
//! Exponential growth spreads attempts out over time; *jitter* spreads them among clients. The
//! strategies here are those of the AWS Architecture Blog's "Exponential Backoff and Jitter", with
//! `n` the attempt number starting at 0, `base` the first delay, `max` the cap and `factor` the
//! growth (2 by default, 3 for decorrelated jitter):
//!
//! | strategy | delay for attempt `n` | bounds |
//! |---|---|---|
//! | [`constant`](Backoff::constant) | `base` | exactly `base` |
//! | [`exponential`](Backoff::exponential) | `min(max, base · factorⁿ)` | exactly that |
//! | [`full_jitter`](Backoff::full_jitter) | `uniform(0, min(max, base · factorⁿ))` | `[0, min(max, base · factorⁿ)]` |
//! | [`equal_jitter`](Backoff::equal_jitter) | `t/2 + uniform(0, t/2)`, `t = min(max, base · factorⁿ)` | `[t/2, t]` |
//! | [`decorrelated_jitter`](Backoff::decorrelated_jitter) | `min(max, uniform(base, prev · factor))`, `prev₀ = base` | `[base, max]` |
//!
//! Full jitter does the least work in total; decorrelated jitter never waits less than `base`. Every
//! delay is drawn from an RNG the caller passes in, so a seeded RNG gives the same sequence every time.
//!
//! ```
//! use std::time::Duration;
//! use meshwork::backoff::Backoff;
//! use rand::{SeedableRng, rngs::SmallRng};
//!
//! let policy = Backoff::full_jitter(Duration::from_millis(25), Duration::from_millis(250))?;
//! let mut rng = SmallRng::seed_from_u64(1);
//! let mut seq = policy.sequence();
//! for _ in 0..10 {
//!     assert!(seq.next_delay(&mut rng) <= Duration::from_millis(250));
//! }
//! # Ok::<(), meshwork::ConfigError>(())
//! ```

mod policy;
mod sequence;

pub use self::policy::Backoff;
pub use self::sequence::BackoffSeq;
