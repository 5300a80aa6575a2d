//! Nacks through the client stack, and admission control in `ClientBuilder`: paused time, seeded,
//! in-memory endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshwork::BoxError;
use meshwork::admission::{AdmissionConfig, Rejected};
use meshwork::breaker::State;
use meshwork::client::ClientBuilder;
use meshwork::discover::{Endpoint, Static};
use meshwork::limit::{LimitConfig, LimitLayer, Nacked};
use meshwork::retry::{NotReplayable, Replay, RetryPolicy};
use meshwork::rng::SeedSource;
use meshwork::timeout::{CarryDeadline, Deadline};
use tower::{Layer, Service, ServiceExt};

/// A non-idempotent request (a POST) that carries its deadline.
#[derive(Clone, Debug)]
struct Post(Option<Deadline>);

impl CarryDeadline for Post {
    fn deadline(&self) -> Option<Deadline> {
        self.0
    }
    fn set_deadline(&mut self, d: Deadline) {
        self.0 = Some(d);
    }
}

/// Copies a `Post`, and says it is not idempotent: only unsent failures and nacks are sent again.
#[derive(Clone, Copy, Debug)]
struct PostReplay;

impl Replay<Post> for PostReplay {
    fn replay(&self, req: &Post) -> Result<Post, NotReplayable> {
        Ok(req.clone())
    }
    fn deadline(&self, req: &Post) -> Option<Deadline> {
        req.0
    }
    fn is_idempotent(&self, _: &Post) -> bool {
        false
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(start_paused = true)]
async fn nacked_requests_are_requeued_and_never_count_as_failures() {
    // Endpoint 7001 is full: its limit (1 slot) is held by a request that never ends, so it nacks
    // every other request. Endpoint 7002 has room.
    let busy = LimitConfig::new()
        .initial_limit(1)
        .min_limit(1)
        .max_limit(1)
        .build()
        .unwrap();
    let hits = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let make = {
        let busy = busy.clone();
        let hits = hits.clone();
        move |ep: &Endpoint| {
            let port = ep.addr().port();
            let hits = hits.clone();
            let handler = tower::service_fn(move |_: Post| {
                hits[usize::from(port - 7001)].fetch_add(1, Ordering::Relaxed);
                async move {
                    if port == 7001 {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, BoxError>(port)
                }
            });
            let limiter = if port == 7001 {
                busy.clone()
            } else {
                LimitConfig::new().build().unwrap()
            };
            LimitLayer::new(limiter).layer(handler)
        }
    };
    let mut client = ClientBuilder::new()
        .total_timeout(Duration::from_secs(1))
        .retry(RetryPolicy::new().max_requeues(4))
        .replay(PostReplay)
        .seed(SeedSource::from_seed(3))
        .build(
            Static::new([Endpoint::new(addr(7001)), Endpoint::new(addr(7002))]),
            make,
        )
        .unwrap();

    // Take 7001's only slot with a request that never ends.
    let hog = {
        let mut svc = LimitLayer::new(busy.clone()).layer(tower::service_fn(|_: ()| {
            std::future::pending::<Result<(), BoxError>>()
        }));
        svc.ready().await.unwrap().call(())
    };
    assert_eq!(busy.in_flight(), 1);

    for _ in 0..200 {
        let port = client
            .ready()
            .await
            .unwrap()
            .call(Post(None))
            .await
            .unwrap();
        assert_eq!(
            port, 7002,
            "every POST is answered by the endpoint with room"
        );
    }
    // 7001 was tried (and nacked: its load then rose, so the balancer prefers 7002), and its
    // handler never saw a request.
    assert!(busy.rejected() >= 1, "nacks: {}", busy.rejected());
    assert_eq!(hits[0].load(Ordering::Relaxed), 0);
    assert_eq!(hits[1].load(Ordering::Relaxed), 200);
    // The nacks did not trip 7001's breaker (5 consecutive failures would).
    for info in client.endpoints() {
        assert_eq!(info.breaker, Some(State::Closed), "{:?}", info.endpoint);
    }
    drop(hog);
}

#[tokio::test(start_paused = true)]
async fn admission_is_off_by_default_and_rejects_locally_when_on() {
    let calls = Arc::new(AtomicU64::new(0));
    let make = {
        let calls = calls.clone();
        move |_: &Endpoint| {
            let calls = calls.clone();
            tower::service_fn(move |_: Post| {
                calls.fetch_add(1, Ordering::Relaxed);
                async { Err::<(), BoxError>("overloaded".into()) }
            })
        }
    };
    let builder = ClientBuilder::new()
        .no_breaker()
        .no_retries()
        .replay(PostReplay)
        .seed(SeedSource::from_seed(5));
    assert!(builder.get_admission().is_none());
    let client = builder
        .clone()
        .build(Static::new([Endpoint::new(addr(7101))]), make.clone())
        .unwrap();
    assert!(client.admission().is_none());

    let err = builder
        .clone()
        .admission(AdmissionConfig::new().success_threshold(2.0))
        .build(Static::new([Endpoint::new(addr(7101))]), make.clone())
        .unwrap_err();
    assert_eq!(err.field(), "admission.success_threshold");

    let mut client = builder
        .admission(AdmissionConfig::new())
        .build(Static::new([Endpoint::new(addr(7101))]), make)
        .unwrap();
    let mut local = 0;
    for _ in 0..1000 {
        let err = client
            .ready()
            .await
            .unwrap()
            .call(Post(None))
            .await
            .unwrap_err();
        if err.is::<Rejected>() {
            local += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = calls.load(Ordering::Relaxed);
    assert_eq!(sent + local, 1000);
    assert!(local > 600, "rejected locally: {local}");
    assert!(client.admission().is_some());
}

#[test]
fn nacked_is_a_nack_to_the_classifier() {
    let e: BoxError = Box::new(Nacked::new());
    let c = meshwork::classify::classify_error(&*e);
    assert!(c.is_nack() && c.is_unsent());
    let e: BoxError = Box::new(Rejected::new());
    assert!(meshwork::classify::classify_error(&*e).is_nack());
}

#[tokio::test(start_paused = true)]
async fn a_breaker_does_not_count_nacks() {
    use meshwork::breaker::{Breaker, BreakerConfig, Mode};
    let config = BreakerConfig::builder()
        .consecutive_failures(1)
        .success_rate(0.9, Duration::from_secs(10), 1)
        .mode(Mode::FailFast)
        .build()
        .unwrap();
    let nacking = tower::service_fn(|_: ()| async { Err::<(), BoxError>(Nacked::new().into()) });
    let mut breaker = Breaker::new(nacking, config.clone());
    for _ in 0..50 {
        let err = breaker.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(err.is::<Nacked>(), "{err}");
    }
    assert_eq!(breaker.handle().state(), State::Closed);
    // The same breaker trips on one real failure.
    let failing = tower::service_fn(|_: ()| async { Err::<(), BoxError>("boom".into()) });
    let mut breaker = Breaker::new(failing, config);
    let _ = breaker.ready().await.unwrap().call(()).await;
    assert_ne!(breaker.handle().state(), State::Closed);
}
