//! The retry budget bounds retries against a service that fails every request.
//!
//! Steady traffic at a fixed rate, on paused time, through a retry layer that would retry every
//! request twice: the retries sent must stay within `retry_ratio × requests + min_per_sec × ttl`
//! per window, and reach that bound (the budget is neither leaky nor stingy).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshwork::BoxError;
use meshwork::backoff::Backoff;
use meshwork::retry::{RetryBudget, RetryLayer, RetryPolicy};
use meshwork::rng::SeedSource;
use tower::{Layer, ServiceExt};

struct Run {
    requests: u64,
    tries: u64,
    exhausted: u64,
}

impl Run {
    fn retries(&self) -> u64 {
        self.tries - self.requests
    }
}

/// Sends `rate` requests per second for `secs` seconds to an always-failing service.
async fn run(ratio: f64, min_per_sec: u32, rate: u64, secs: u64) -> Run {
    let budget = RetryBudget::builder()
        .retry_ratio(ratio)
        .min_retries_per_sec(min_per_sec)
        .ttl(Duration::from_secs(10))
        .build()
        .unwrap();
    let policy = RetryPolicy::new()
        .max_retries(2)
        // Retries finish within 2 ms of their request, inside the request's second.
        .backoff(Backoff::constant(Duration::from_millis(1)).unwrap())
        .seed(SeedSource::from_seed(4))
        .budget(budget.clone());
    let tries = Arc::new(AtomicU64::new(0));
    let failing = tower::service_fn({
        let tries = tries.clone();
        move |_req: u64| {
            tries.fetch_add(1, Ordering::Relaxed);
            async { Err::<(), BoxError>("down".into()) }
        }
    });
    let svc = RetryLayer::new(policy).layer(failing);

    let requests = rate * secs;
    let gap = Duration::from_secs(1) / rate as u32;
    let mut calls = Vec::new();
    for i in 0..requests {
        calls.push(tokio::spawn(svc.clone().oneshot(i)));
        tokio::time::sleep(gap).await;
    }
    for call in calls {
        // The caller always gets the service's own failure, never a budget error.
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "down");
    }
    Run {
        requests,
        tries: tries.load(Ordering::Relaxed),
        exhausted: budget.exhausted_count(),
    }
}

#[tokio::test(start_paused = true)]
async fn twenty_percent_over_one_window() {
    // 100 requests per second for one 10 s window: 20% of 1000, plus 10/s × 10 s.
    let r = run(0.2, 10, 100, 10).await;
    let bound = 1000 / 5 + 10 * 10;
    assert!(r.retries() <= bound, "{} > {bound}", r.retries());
    assert!(r.retries() >= bound - 1, "{} ≪ {bound}", r.retries());
    // Every request wanted two retries; the refusals were counted.
    assert!(r.exhausted > 0);
}

#[tokio::test(start_paused = true)]
async fn twenty_percent_over_three_windows() {
    // Three consecutive windows: the bound holds in each, so over the run.
    let r = run(0.2, 10, 100, 30).await;
    let bound = 3000 / 5 + 10 * 30;
    assert!(r.retries() <= bound, "{} > {bound}", r.retries());
    assert!(r.retries() >= bound - 3, "{} ≪ {bound}", r.retries());
}

#[tokio::test(start_paused = true)]
async fn a_fractional_percent_is_exact() {
    // 0.6%: 6 retries per 1000 requests, plus 1/s × 10 s. tower#857's truncated reciprocal would
    // allow more; a float rounding error could allow fewer.
    let r = run(0.006, 1, 100, 10).await;
    let bound = 6 + 10;
    assert!(r.retries() <= bound, "{} > {bound}", r.retries());
    assert!(r.retries() >= bound - 1, "{} ≪ {bound}", r.retries());

    // Without a per-second minimum, 0.6% of 1000 requests is exactly 6 retries.
    let r = run(0.006, 0, 100, 10).await;
    assert_eq!(r.retries(), 6);
    // Every request was refused once: 994 at their first retry, 6 at their second.
    assert_eq!(r.exhausted, r.requests);
}

#[tokio::test(start_paused = true)]
async fn a_zero_ratio_allows_only_the_minimum() {
    let r = run(0.0, 2, 50, 10).await;
    assert_eq!(r.retries(), 20);
}
