use std::time::Duration;

use rand::{Rng, RngExt};

use super::BackoffSeq;
use crate::ConfigError;
use crate::util::nanos;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Constant,
    Exponential,
    FullJitter,
    EqualJitter,
    Decorrelated,
}

/// A validated backoff strategy: see the [module docs](crate::backoff) for the formulas and bounds.
///
/// A `Backoff` is a small `Copy` value; the state of one series of attempts lives in a
/// [`BackoffSeq`].
///
/// ```
/// use std::time::Duration;
/// use meshwork::backoff::Backoff;
///
/// let err = Backoff::exponential(Duration::from_secs(2), Duration::from_secs(1)).unwrap_err();
/// assert_eq!(err.field(), "max");
/// let err = Backoff::equal_jitter(Duration::from_millis(1), Duration::from_secs(1))
///     .and_then(|b| b.with_factor(f64::NAN))
///     .unwrap_err();
/// assert_eq!(err.field(), "factor");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    kind: Kind,
    base: Duration,
    max: Duration,
    factor: f64,
}

impl Backoff {
    fn build(kind: Kind, base: Duration, max: Duration, factor: f64) -> Result<Self, ConfigError> {
        if base.is_zero() {
            return Err(ConfigError::new("base", "must be greater than zero"));
        }
        if max < base {
            return Err(ConfigError::new("max", "must be at least `base`"));
        }
        Ok(Self {
            kind,
            base,
            max,
            factor,
        })
    }

    /// Always waits `delay`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `delay` when `delay` is zero.
    pub fn constant(delay: Duration) -> Result<Self, ConfigError> {
        if delay.is_zero() {
            return Err(ConfigError::new("delay", "must be greater than zero"));
        }
        Self::build(Kind::Constant, delay, delay, 1.0)
    }

    /// `min(max, base · 2ⁿ)`, without jitter.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `base` when `base` is zero, or `max` when `max` is below `base`.
    pub fn exponential(base: Duration, max: Duration) -> Result<Self, ConfigError> {
        Self::build(Kind::Exponential, base, max, 2.0)
    }

    /// Exponential with full jitter: `uniform(0, min(max, base · 2ⁿ))`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `base` when `base` is zero, or `max` when `max` is below `base`.
    pub fn full_jitter(base: Duration, max: Duration) -> Result<Self, ConfigError> {
        Self::build(Kind::FullJitter, base, max, 2.0)
    }

    /// Exponential with equal jitter: half the exponential delay, plus up to the other half at random.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `base` when `base` is zero, or `max` when `max` is below `base`.
    pub fn equal_jitter(base: Duration, max: Duration) -> Result<Self, ConfigError> {
        Self::build(Kind::EqualJitter, base, max, 2.0)
    }

    /// Decorrelated jitter: `min(max, uniform(base, previous · 3))`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `base` when `base` is zero, or `max` when `max` is below `base`.
    pub fn decorrelated_jitter(base: Duration, max: Duration) -> Result<Self, ConfigError> {
        Self::build(Kind::Decorrelated, base, max, 3.0)
    }

    /// Sets the growth factor (finite, at least 1). Has no effect on a constant backoff.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `factor` when `factor` is below 1, infinite or NaN.
    pub fn with_factor(mut self, factor: f64) -> Result<Self, ConfigError> {
        if !factor.is_finite() || factor < 1.0 {
            return Err(ConfigError::new(
                "factor",
                "must be a finite number of at least 1",
            ));
        }
        self.factor = factor;
        Ok(self)
    }

    /// The first delay (for a constant backoff, the delay).
    #[must_use]
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// The cap.
    #[must_use]
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The growth factor.
    #[must_use]
    pub const fn factor(&self) -> f64 {
        self.factor
    }

    /// `min(max, base · factorⁿ)` in nanoseconds, without overflow.
    fn capped_exponential(&self, attempt: u32) -> u64 {
        let (base, max) = (nanos(self.base), nanos(self.max));
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let t = base as f64 * self.factor.powi(exp);
        if t.is_nan() || t >= max as f64 {
            max
        } else {
            (t as u64).clamp(base.min(max), max)
        }
    }

    /// The documented `[low, high]` bounds of the delay for attempt `attempt` (starting at 0), given
    /// the previous delay `prev` (used by decorrelated jitter only).
    #[must_use]
    pub fn bounds(&self, attempt: u32, prev: Duration) -> (Duration, Duration) {
        let (lo, hi) = self.bounds_nanos(attempt, prev);
        (Duration::from_nanos(lo), Duration::from_nanos(hi))
    }

    fn bounds_nanos(&self, attempt: u32, prev: Duration) -> (u64, u64) {
        match self.kind {
            Kind::Constant => (nanos(self.base), nanos(self.base)),
            Kind::Exponential => {
                let t = self.capped_exponential(attempt);
                (t, t)
            }
            Kind::FullJitter => (0, self.capped_exponential(attempt)),
            Kind::EqualJitter => {
                let t = self.capped_exponential(attempt);
                (t / 2, t)
            }
            Kind::Decorrelated => {
                let base = nanos(self.base);
                let max = nanos(self.max);
                let prev = nanos(prev).max(base);
                let upper = prev as f64 * self.factor;
                let upper = if upper >= max as f64 {
                    max
                } else {
                    (upper as u64).max(base)
                };
                (base.min(max), upper)
            }
        }
    }

    /// The delay before attempt `attempt` (starting at 0). `prev` is the previous delay, which only
    /// decorrelated jitter uses (pass [`base`](Self::base) for the first attempt).
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, prev: Duration, rng: &mut R) -> Duration {
        let (lo, hi) = self.bounds_nanos(attempt, prev);
        if lo >= hi {
            return Duration::from_nanos(hi);
        }
        Duration::from_nanos(rng.random_range(lo..=hi))
    }

    /// A new series of attempts, starting at attempt 0.
    #[must_use]
    pub const fn sequence(&self) -> BackoffSeq {
        BackoffSeq::new(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::SmallRng};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rejects_bad_configuration() {
        assert_eq!(
            Backoff::constant(Duration::ZERO).unwrap_err().field(),
            "delay"
        );
        for ctor in [
            Backoff::exponential,
            Backoff::full_jitter,
            Backoff::equal_jitter,
            Backoff::decorrelated_jitter,
        ] {
            assert_eq!(ctor(Duration::ZERO, MS).unwrap_err().field(), "base");
            assert_eq!(ctor(MS * 2, MS).unwrap_err().field(), "max");
            let ok = ctor(MS, MS * 10).unwrap();
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.5, -2.0] {
                assert_eq!(ok.with_factor(bad).unwrap_err().field(), "factor");
            }
        }
    }

    #[test]
    fn exponential_grows_and_caps() {
        let b = Backoff::exponential(MS * 10, MS * 100).unwrap();
        let mut rng = SmallRng::seed_from_u64(0);
        let got: Vec<_> = (0..6).map(|n| b.delay(n, b.base(), &mut rng)).collect();
        assert_eq!(
            got,
            [MS * 10, MS * 20, MS * 40, MS * 80, MS * 100, MS * 100]
        );
        assert_eq!(b.delay(u32::MAX, b.base(), &mut rng), MS * 100);
    }

    #[test]
    fn constant_is_constant() {
        let b = Backoff::constant(MS * 7).unwrap();
        let mut rng = SmallRng::seed_from_u64(0);
        assert!((0..100).all(|n| b.delay(n, MS, &mut rng) == MS * 7));
    }

    #[test]
    fn full_jitter_spreads() {
        let b = Backoff::full_jitter(MS * 100, MS * 100).unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        let delays: Vec<_> = (0..1000).map(|_| b.delay(0, b.base(), &mut rng)).collect();
        let below_half = delays.iter().filter(|d| **d < MS * 50).count();
        assert!((400..600).contains(&below_half), "{below_half}");
    }
}
