//! The pure decision: the next concurrency limit from the latency gradient.

/// The parameters of the gradient controller (validated by
/// [`LimitConfig::build`](super::LimitConfig::build)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradientParams {
    /// The lowest limit.
    pub min_limit: f64,
    /// The highest limit.
    pub max_limit: f64,
    /// How much slower than the long-term latency the recent latency may be before the limit
    /// falls (Gradient2's `rttTolerance`, 1.5).
    pub tolerance: f64,
    /// The weight of the new limit against the old one (Gradient2's `smoothing`, 0.2).
    pub smoothing: f64,
    /// The headroom added at each update (Gradient2's `queueSize`, 4).
    pub queue_size: f64,
}

/// The next limit, as Netflix's Gradient2 computes it.
///
/// ```text
/// if in_flight < limit / 2:   keep the limit (the application, not the server, is the bottleneck)
/// gradient  = clamp(tolerance × long_rtt / short_rtt, 0.5, 1.0)
/// candidate = limit × gradient + queue_size
/// next      = clamp(limit × (1 − smoothing) + candidate × smoothing, min_limit, max_limit)
/// ```
///
/// At baseline latency (`short_rtt ≤ tolerance × long_rtt`) the gradient is 1 and the limit grows
/// by `smoothing × queue_size` per update; when the recent latency exceeds the tolerated one the
/// gradient drops below 1 and the limit shrinks, by at most half per update before smoothing.
/// Latencies are in any unit (both the same); a non-finite or non-positive latency keeps the limit.
///
/// ```
/// use meshwork::limit::{next_limit, GradientParams};
///
/// let p = GradientParams { min_limit: 3.0, max_limit: 200.0, tolerance: 1.5, smoothing: 0.2, queue_size: 4.0 };
/// // At baseline latency and busy: rises.
/// assert!(next_limit(&p, 20.0, 10.0, 10.0, 20) > 20.0);
/// // Latency tripled: falls.
/// assert!(next_limit(&p, 20.0, 30.0, 10.0, 20) < 20.0);
/// ```
#[must_use]
pub fn next_limit(
    p: &GradientParams,
    limit: f64,
    short_rtt: f64,
    long_rtt: f64,
    in_flight: u64,
) -> f64 {
    let limit = limit.clamp(p.min_limit, p.max_limit);
    if !(short_rtt > 0.0 && long_rtt > 0.0 && short_rtt.is_finite() && long_rtt.is_finite()) {
        return limit;
    }
    if (in_flight as f64) < limit / 2.0 {
        return limit;
    }
    let gradient = (p.tolerance * long_rtt / short_rtt).clamp(0.5, 1.0);
    let candidate = limit * gradient + p.queue_size;
    let next = limit * (1.0 - p.smoothing) + candidate * p.smoothing;
    next.clamp(p.min_limit, p.max_limit)
}

/// The next long-term latency: an exponential moving average over about `long_window` updates,
/// pulled down faster (by 5 % per update) while it is more than twice the recent latency, so that
/// the controller recovers quickly when an overload ends (Gradient2's drift correction).
pub(crate) fn next_long_rtt(long_rtt: f64, short_rtt: f64, long_window: u32) -> f64 {
    if long_rtt <= 0.0 {
        return short_rtt;
    }
    let alpha = 2.0 / (f64::from(long_window) + 1.0);
    let mut long = long_rtt * (1.0 - alpha) + short_rtt * alpha;
    if long / short_rtt > 2.0 {
        long *= 0.95;
    }
    long
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(min: f64, max: f64) -> GradientParams {
        GradientParams {
            min_limit: min,
            max_limit: max,
            tolerance: 1.5,
            smoothing: 0.2,
            queue_size: 4.0,
        }
    }

    proptest! {
        #[test]
        fn stays_within_bounds(
            min in 1.0f64..50.0,
            span in 0.0f64..500.0,
            limit in 0.0f64..2000.0,
            short in 0.0f64..1e9,
            long in 0.0f64..1e9,
            in_flight in 0u64..3000,
        ) {
            let p = params(min, min + span);
            let next = next_limit(&p, limit, short, long, in_flight);
            prop_assert!(next >= p.min_limit && next <= p.max_limit, "{next} outside [{}, {}]", p.min_limit, p.max_limit);
        }

        #[test]
        fn rises_at_baseline_latency(
            limit in 3.0f64..199.0,
            rtt in 1.0f64..1e9,
            jitter in 0.0f64..1.5,
            extra in 0u64..100,
        ) {
            let p = params(3.0, 200.0);
            // Recent latency within the tolerance of the long-term latency, server busy.
            let short = rtt * jitter.max(0.01);
            let in_flight = limit.ceil() as u64 + extra;
            let next = next_limit(&p, limit, short, rtt, in_flight);
            prop_assert!(next > limit, "{limit} -> {next}");
        }

        #[test]
        fn falls_when_latency_rises(
            limit in 9.0f64..200.0,
            rtt in 1.0f64..1e6,
            factor in 3.0f64..100.0,
        ) {
            let p = params(3.0, 200.0);
            // Recent latency at least twice the tolerated latency: the gradient is at its floor.
            let next = next_limit(&p, limit, rtt * factor, rtt, limit as u64);
            prop_assert!(next < limit, "{limit} -> {next}");
        }

        #[test]
        fn app_limited_keeps_the_limit(limit in 10.0f64..200.0, short in 1.0f64..1e6, long in 1.0f64..1e6) {
            let p = params(3.0, 200.0);
            let next = next_limit(&p, limit, short, long, (limit / 2.0) as u64 - 1);
            prop_assert_eq!(next, limit);
        }
    }

    #[test]
    fn long_rtt_tracks_and_recovers() {
        assert_eq!(next_long_rtt(0.0, 7.0, 600), 7.0);
        let mut long = 10.0;
        for _ in 0..100 {
            long = next_long_rtt(long, 10.0, 600);
        }
        assert!((long - 10.0).abs() < 1e-9);
        // After an overload the long-term latency falls back fast.
        let mut long = 100.0;
        for _ in 0..50 {
            long = next_long_rtt(long, 10.0, 600);
        }
        assert!(long < 20.0 * 1.0 + 10.0, "{long}");
    }
}
