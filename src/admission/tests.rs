use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::BoxError;
use crate::classify::Classification;
use crate::rng::SeedSource;

fn control() -> AdmissionControl {
    AdmissionConfig::new()
        .seed(SeedSource::from_seed(7))
        .build()
        .unwrap()
}

proptest! {
    #[test]
    fn formula(requests in 0u64..1_000_000, accepted in 0.0f64..=1.0, k in 1.0f64..3.0, max in 0.0f64..=1.0) {
        let accepts = (requests as f64 * accepted) as u64;
        let p = rejection_probability(requests, accepts, k, max);
        let expected = ((requests as f64 - k * accepts as f64) / (requests as f64 + 1.0)).max(0.0).min(max);
        prop_assert!((p - expected).abs() < 1e-12);
        prop_assert!((0.0..=max).contains(&p));
        // Healthy (success rate at least 1/K): no rejection.
        if accepts as f64 * k >= requests as f64 {
            prop_assert_eq!(p, 0.0);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn probability_follows_the_formula_for_given_counts() {
    let c = control();
    let k = 1.0 / 0.95;
    for (requests, accepts) in [(10u64, 10u64), (100, 50), (200, 20), (1000, 900)] {
        let c = AdmissionConfig::new()
            .max_rejection_probability(1.0)
            .build()
            .unwrap();
        for i in 0..requests {
            c.record(if i < accepts {
                Classification::success()
            } else {
                Classification::nack()
            });
        }
        let now = tokio::time::Instant::now();
        assert_eq!(c.counts(now), (requests, accepts));
        let expected = ((requests as f64 - k * accepts as f64) / (requests as f64 + 1.0)).max(0.0);
        assert!(
            (c.rejection_probability(now) - expected).abs() < 1e-12,
            "{requests}/{accepts}"
        );
    }
    // Capped at the maximum (default 0.8).
    for _ in 0..100 {
        c.record(Classification::retryable());
    }
    assert_eq!(c.rejection_probability(tokio::time::Instant::now()), 0.8);
    // Cancelled requests are not counted; nacks and failures are not accepts.
    c.record(Classification::ignorable());
    assert_eq!(c.counts(tokio::time::Instant::now()), (100, 0));
}

#[tokio::test(start_paused = true)]
async fn the_window_slides() {
    let c = control();
    for _ in 0..100 {
        c.record(Classification::non_retryable());
    }
    assert!(c.rejection_probability(tokio::time::Instant::now()) > 0.0);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(c.counts(tokio::time::Instant::now()).0, 100);
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(c.counts(tokio::time::Instant::now()), (0, 0));
    assert_eq!(c.rejection_probability(tokio::time::Instant::now()), 0.0);
}

/// An upstream whose requests succeed unless `failing`; counts the calls it receives.
fn upstream(
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
) -> impl Service<
    (),
    Response = (),
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<(), BoxError>> + Send,
> + Clone {
    tower::service_fn(move |_: ()| {
        calls.fetch_add(1, Ordering::Relaxed);
        let fail = failing.load(Ordering::Relaxed);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if fail {
                Err::<(), BoxError>("overloaded".into())
            } else {
                Ok(())
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn no_rejection_while_healthy_then_throttles_then_recovers() {
    let failing = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let c = control();
    let mut svc = AdmissionLayer::new(c.clone()).layer(upstream(failing.clone(), calls.clone()));

    // Healthy: 1000 requests over 20 s, none rejected, every one sent.
    for _ in 0..1000 {
        svc.ready().await.unwrap().call(()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert_eq!(calls.load(Ordering::Relaxed), 1000);

    // A success rate just above the threshold (96 %) still rejects nothing.
    let mut rejected = 0;
    for i in 0..1000 {
        failing.store(i % 25 == 0, Ordering::Relaxed);
        if let Err(e) = svc.ready().await.unwrap().call(()).await {
            rejected += usize::from(e.is::<Rejected>());
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert_eq!(rejected, 0);

    // The upstream fails everything: most requests are rejected locally, never reaching it.
    failing.store(true, Ordering::Relaxed);
    let before = calls.load(Ordering::Relaxed);
    let mut rejected = 0;
    for _ in 0..2000 {
        let e = svc.ready().await.unwrap().call(()).await.unwrap_err();
        rejected += usize::from(e.is::<Rejected>());
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let sent = calls.load(Ordering::Relaxed) - before;
    assert_eq!(sent as usize + rejected, 2000);
    assert!(rejected > 1000, "rejected {rejected}");
    // Never more than the cap: some requests always probe the upstream.
    assert!(sent > 2000 / 10, "sent {sent}");

    // Recovery: once the upstream answers, rejections fade as the window slides.
    failing.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(31)).await;
    for _ in 0..200 {
        svc.ready().await.unwrap().call(()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn seeded_runs_are_identical() {
    async fn run() -> Vec<bool> {
        let failing = Arc::new(AtomicBool::new(true));
        let mut svc = AdmissionLayer::new(control()).layer(upstream(failing, Arc::default()));
        let mut out = Vec::new();
        for _ in 0..300 {
            let res = svc.ready().await.unwrap().call(()).await;
            out.push(matches!(res, Err(e) if e.is::<Rejected>()));
        }
        out
    }
    assert_eq!(run().await, run().await);
}

#[test]
fn config_errors_name_the_field() {
    let field = |c: AdmissionConfig| c.build().unwrap_err().field().to_owned();
    assert_eq!(
        field(AdmissionConfig::new().window(Duration::ZERO)),
        "admission.window"
    );
    assert_eq!(
        field(AdmissionConfig::new().buckets(0)),
        "admission.buckets"
    );
    assert_eq!(
        field(AdmissionConfig::new().success_threshold(1.5)),
        "admission.success_threshold"
    );
    assert_eq!(
        field(AdmissionConfig::new().max_rejection_probability(-0.1)),
        "admission.max_rejection_probability"
    );
    assert_eq!(
        field(AdmissionConfig::new().min_requests_per_sec(f64::INFINITY)),
        "admission.min_requests_per_sec"
    );
}

#[tokio::test(start_paused = true)]
async fn below_min_requests_per_sec_nothing_is_rejected() {
    let c = AdmissionConfig::new()
        .min_requests_per_sec(10.0)
        .build()
        .unwrap();
    for _ in 0..100 {
        c.record(Classification::retryable());
    }
    // 100 requests over 30 s is 3.3/s: below the threshold.
    assert_eq!(c.rejection_probability(tokio::time::Instant::now()), 0.0);
}
