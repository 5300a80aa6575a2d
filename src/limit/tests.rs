use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::BoxError;

/// A handler whose latency the test sets, kept saturated by `clients` looping callers.
fn saturate(
    limiter: &Limiter,
    latency: Arc<AtomicU64>,
    clients: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let handler = tower::service_fn(move |_: ()| {
        let ms = latency.load(Ordering::Relaxed);
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(())
        }
    });
    let svc = LimitLayer::new(limiter.clone()).layer(handler);
    (0..clients)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                loop {
                    let res = svc.ready().await.unwrap().call(()).await;
                    if res.is_err() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn rises_at_baseline_and_falls_when_latency_rises() {
    let limiter = LimitConfig::new()
        .initial_limit(10)
        .min_limit(3)
        .max_limit(200)
        .build()
        .unwrap();
    let latency = Arc::new(AtomicU64::new(10));
    let tasks = saturate(&limiter, latency.clone(), 400);

    let mut prev = limiter.limit();
    assert_eq!(prev, 10);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = limiter.limit();
        assert!(now > prev, "baseline latency: {prev} -> {now}");
        prev = now;
    }
    assert!(limiter.rejected() > 0);
    assert!(limiter.in_flight() <= limiter.limit());

    // Latency quadruples (queueing): the limit falls.
    latency.store(40, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let high = limiter.limit();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        limiter.limit() < high,
        "rising latency: {high} -> {}",
        limiter.limit()
    );
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn stays_within_min_and_max() {
    // The gradient's floor settles at 2 × queue_size (8): a minimum above it is reached.
    let limiter = LimitConfig::new()
        .initial_limit(15)
        .min_limit(10)
        .max_limit(30)
        .build()
        .unwrap();
    let latency = Arc::new(AtomicU64::new(10));
    let tasks = saturate(&limiter, latency.clone(), 100);
    let mut seen_max = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let l = limiter.limit();
        assert!((10..=30).contains(&l), "{l}");
        assert!(limiter.in_flight() <= 30);
        seen_max = seen_max.max(l);
    }
    assert_eq!(
        seen_max, 30,
        "the limit reaches its maximum at baseline latency"
    );
    // Latency keeps growing: the limit goes down to its minimum and stays there.
    let mut seen_min = u64::MAX;
    for step in 0..400u64 {
        latency.store(10 + step * 5, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let l = limiter.limit();
        assert!((10..=30).contains(&l), "{l}");
        seen_min = seen_min.min(l);
    }
    assert_eq!(
        seen_min, 10,
        "the limit reaches its minimum when latency keeps rising"
    );
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn rejects_at_once_and_releases_slots() {
    let limiter = LimitConfig::new()
        .initial_limit(2)
        .min_limit(2)
        .max_limit(2)
        .build()
        .unwrap();
    let handler = tower::service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, BoxError>(())
    });
    let mut svc = LimitLayer::new(limiter.clone()).layer(handler);
    let a = svc.ready().await.unwrap().call(());
    let b = svc.ready().await.unwrap().call(());
    assert_eq!(limiter.in_flight(), 2);
    let start = tokio::time::Instant::now();
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let c = crate::classify::classify_error(&*err);
    assert!(c.is_nack() && c.is_unsent(), "{c:?}");
    assert_eq!(limiter.rejected(), 1);
    // A cancelled request gives its slot back.
    drop(a);
    assert_eq!(limiter.in_flight(), 1);
    b.await.unwrap();
    assert_eq!(limiter.in_flight(), 0);
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn http_nack_is_a_503_with_the_header() {
    use crate::classify::{Classify, HttpClassify};
    let limiter = LimitConfig::new()
        .initial_limit(1)
        .min_limit(1)
        .build()
        .unwrap();
    let handler = tower::service_fn(|_: ::http::Request<()>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, std::convert::Infallible>(::http::Response::new(String::from("ok")))
    });
    let mut svc = LimitLayer::http(limiter.clone()).layer(handler);
    let first = svc.ready().await.unwrap().call(::http::Request::new(()));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(::http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()[NACK_HEADER], "1");
    assert!(is_nack_response(&res));
    let c = HttpClassify::new().classify(Ok::<_, &BoxError>(&res));
    assert!(c.is_nack(), "{c:?}");
    assert_eq!(first.await.unwrap().status(), 200);
}

#[test]
fn config_errors_name_the_field() {
    let field = |c: LimitConfig| c.build().unwrap_err().field().to_owned();
    assert_eq!(field(LimitConfig::new().min_limit(0)), "limit.min_limit");
    assert_eq!(
        field(LimitConfig::new().min_limit(9).max_limit(8)),
        "limit.max_limit"
    );
    assert_eq!(field(LimitConfig::new().tolerance(0.5)), "limit.tolerance");
    assert_eq!(
        field(LimitConfig::new().tolerance(f64::NAN)),
        "limit.tolerance"
    );
    assert_eq!(field(LimitConfig::new().smoothing(0.0)), "limit.smoothing");
    assert_eq!(
        field(LimitConfig::new().queue_size(-1.0)),
        "limit.queue_size"
    );
    assert_eq!(
        field(LimitConfig::new().long_window(0)),
        "limit.long_window"
    );
    assert_eq!(
        field(LimitConfig::new().update_interval(Duration::ZERO)),
        "limit.update_interval"
    );
    assert_eq!(
        field(LimitConfig::new().min_samples(0)),
        "limit.min_samples"
    );
}
