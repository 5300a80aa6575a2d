//! Issue 22: the built-in classifier works under services whose error is a foreign type, with no
//! glue: hyper-util's client error, hyper's own error inside it, and `tonic::Status`.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use meshwork::breaker::{Breaker, BreakerConfig, State};
use meshwork::classify::{Class, Classify, DefaultClassify};
use meshwork::retry::{AlwaysRetry, RetryLayer, RetryPolicy};
use meshwork::rng::SeedSource;
use tower::{Layer, Service, ServiceExt};

fn trips_after(n: u32) -> BreakerConfig {
    BreakerConfig::builder()
        .consecutive_failures(n)
        .seed(SeedSource::from_seed(1))
        .build()
        .unwrap()
}

/// A port with nothing listening on it.
async fn closed_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

#[tokio::test]
async fn a_hyper_util_client_error_is_classified_by_default_classify() {
    let addr = closed_port().await;
    // The inner service's error is `hyper_util::client::legacy::Error`: no meshwork trait.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut svc = Breaker::new(client, trips_after(3));
    for _ in 0..3 {
        let req = http::Request::get(format!("http://{addr}/"))
            .body(Empty::new())
            .unwrap();
        let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
        // The classifier saw through the foreign error to the refused connection: unsent.
        assert!(
            DefaultClassify.classify(Err::<&(), _>(&err)).is_unsent(),
            "{err:?}"
        );
    }
    // And the breaker counted the three failures.
    assert_eq!(svc.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn tonic_status_errors_count_as_failures_and_are_retried() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let inner = {
        let calls = calls.clone();
        tower::service_fn(move |_: ()| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Err::<(), _>(tonic::Status::unavailable("backend down")) }
        })
    };
    // Retry over a breaker, both with `DefaultClassify`, over a `tonic::Status` error.
    let policy = RetryPolicy::new()
        .max_retries(2)
        .budget(AlwaysRetry)
        .seed(SeedSource::from_seed(2));
    let breaker = Breaker::new(inner, trips_after(10));
    let handle = breaker.handle();
    let mut svc = RetryLayer::new(policy).layer(breaker);
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let status = meshwork::find_cause::<tonic::Status>(&*err).expect("the status is kept");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::Relaxed),
        3,
        "one try and two retries"
    );
    assert_eq!(
        DefaultClassify.classify(Err::<&(), _>(&err)).class(),
        Class::Retryable
    );
    assert_eq!(handle.state(), State::Closed);
}
