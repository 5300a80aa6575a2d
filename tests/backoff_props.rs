//! Property tests: every backoff delay lies within its documented bounds, for any attempt and seed.

use std::time::Duration;

use meshwork::backoff::Backoff;
use proptest::prelude::*;
use rand::{SeedableRng, rngs::SmallRng};

fn policies() -> impl Strategy<Value = Backoff> {
    let base = 1u64..5_000_000_000; // 1 ns .. 5 s
    (0usize..5, base, 0u64..100_000_000_000, 1.0f64..10.0).prop_map(
        |(kind, base, extra, factor)| {
            let base = Duration::from_nanos(base);
            let max = base + Duration::from_nanos(extra);
            let b = match kind {
                0 => Backoff::constant(base),
                1 => Backoff::exponential(base, max),
                2 => Backoff::full_jitter(base, max),
                3 => Backoff::equal_jitter(base, max),
                _ => Backoff::decorrelated_jitter(base, max),
            }
            .unwrap();
            if kind == 0 {
                b
            } else {
                b.with_factor(factor).unwrap()
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn delays_within_documented_bounds(policy in policies(), seed: u64, attempts in 1usize..80) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut seq = policy.sequence();
        let mut prev = policy.base();
        for n in 0..attempts {
            let (lo, hi) = policy.bounds(n as u32, prev);
            prop_assert!(lo <= hi);
            prop_assert!(hi <= policy.max(), "upper bound {hi:?} above the cap {:?}", policy.max());
            let d = seq.next_delay(&mut rng);
            prop_assert!(d >= lo && d <= hi, "attempt {n}: {d:?} outside [{lo:?}, {hi:?}]");
            prev = d;
        }
    }

    #[test]
    fn full_jitter_never_exceeds_the_cap(base in 1u64..1_000_000_000, extra in 0u64..10_000_000_000, seed: u64, attempt: u32) {
        let base = Duration::from_nanos(base);
        let max = base + Duration::from_nanos(extra);
        let policy = Backoff::full_jitter(base, max).unwrap();
        let mut rng = SmallRng::seed_from_u64(seed);
        let d = policy.delay(attempt, base, &mut rng);
        prop_assert!(d <= max);
        // And never more than the exponential value for that attempt.
        let exp = Backoff::exponential(base, max).unwrap().delay(attempt, base, &mut rng);
        prop_assert!(d <= exp);
    }

    #[test]
    fn same_seed_same_sequence(policy in policies(), seed: u64) {
        let run = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut seq = policy.sequence();
            (0..32).map(|_| seq.next_delay(&mut rng)).collect::<Vec<_>>()
        };
        prop_assert_eq!(run(seed), run(seed));
    }
}
