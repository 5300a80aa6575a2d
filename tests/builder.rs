//! The API a Rust user meets (issue 22): the obvious code compiles, and the defaults work for a
//! plain request type.

use std::time::Duration;

use meshwork::BoxError;
use meshwork::client::ClientBuilder;
use meshwork::discover::{Endpoint, Static};
use meshwork::timeout::{DeadlineExceeded, current_deadline};
use tower::{Service, ServiceExt};

/// A plain request: no trait implemented.
#[derive(Clone)]
struct Req;

#[tokio::test(start_paused = true)]
async fn plain_request_gets_the_total_timeout_beside_it() {
    let endpoints = Static::new([Endpoint::new("127.0.0.1:7001".parse().unwrap())]);
    let mut client = ClientBuilder::new()
        .total_timeout(Duration::from_secs(2))
        .no_per_try_timeout()
        .build(endpoints, |_: &Endpoint| {
            tower::service_fn(|_: Req| async {
                // The connection sees the deadline, beside the request.
                let left = current_deadline().map(|d| d.remaining());
                assert_eq!(left, Some(Duration::from_secs(2)));
                std::future::pending::<Result<(), BoxError>>().await
            })
        })
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = client.ready().await.unwrap().call(Req).await.unwrap_err();
    assert!(meshwork::is_caused_by::<DeadlineExceeded>(&*err), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn total_timeout_2ns_is_rejected() {
    let endpoints = Static::new([Endpoint::new("127.0.0.1:7001".parse().unwrap())]);
    let err = ClientBuilder::new()
        .total_timeout(Duration::from_nanos(2))
        .build(endpoints, |_: &Endpoint| {
            tower::service_fn(|_: Req| async { Ok::<_, BoxError>(()) })
        })
        .unwrap_err();
    assert_eq!(err.field(), "per_try_timeout");
}

// ---- No setting is lost (issue 22): a layer's own seed and labels win over the client's. ----

use meshwork::backoff::Backoff;
use meshwork::balance::{self, load::LeastInFlight};
use meshwork::breaker::{BreakerConfig, State};
use meshwork::retry::RetryPolicy;
use meshwork::rng::SeedSource;
use meshwork::telemetry::MetricLabels;

fn eps(n: u16) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint::new(format!("127.0.0.1:{}", 7100 + i).parse().unwrap()))
        .collect()
}

/// The port each of 64 sequential requests is sent to (least-in-flight: every pick is a tie that
/// the balancer's random generator settles, so the sequence shows which seed it got).
async fn picks(builder: ClientBuilder) -> Vec<u16> {
    let mut client = builder
        .no_retries()
        .no_breaker()
        .build(Static::new(eps(8)), |ep: &Endpoint| {
            let port = ep.addr().port();
            tower::service_fn(move |_: Req| async move { Ok::<_, BoxError>(port) })
        })
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..64 {
        out.push(client.ready().await.unwrap().call(Req).await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn the_balancers_own_seed_is_kept_and_the_clients_fills_in() {
    let own = || {
        balance::Builder::new()
            .load(LeastInFlight)
            .seed(SeedSource::from_seed(42))
    };
    let unseeded = || balance::Builder::new().load(LeastInFlight);
    let c = |seed| ClientBuilder::new().seed(SeedSource::from_seed(seed));
    // Before issue 22 the client's seed replaced the balancer's: these two differed.
    let a = picks(c(1).balance(own())).await;
    let b = picks(c(2).balance(own())).await;
    assert_eq!(a, b, "the balancer's own seed decides its picks");
    // Unseeded, the balancer takes the client's seed: the same client seed, the same picks...
    let x = picks(c(2).balance(unseeded())).await;
    assert_eq!(x, picks(c(2).balance(unseeded())).await);
    // ...and another client seed, other picks (so the comparisons above can fail).
    assert_ne!(x, picks(c(3).balance(unseeded())).await);
    assert_ne!(a, x);
}

/// How long the only endpoint's breaker stays open after one failure: its backoff is jittered
/// (equal jitter, 1-2 s), so the time shows which seed the breaker got.
async fn open_for(builder: ClientBuilder) -> Duration {
    let mut client = builder
        .no_retries()
        .no_per_try_timeout()
        .build(Static::new(eps(1)), |_: &Endpoint| {
            tower::service_fn(|_: Req| async { Err::<(), BoxError>("down".into()) })
        })
        .unwrap();
    let _ = client.ready().await.unwrap().call(Req).await;
    assert_eq!(client.endpoints()[0].breaker, Some(State::Open));
    let start = tokio::time::Instant::now();
    while client.endpoints()[0].breaker == Some(State::Open) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn the_breakers_own_seed_is_kept() {
    let config = |seed: Option<u64>| {
        let b = BreakerConfig::builder().consecutive_failures(1).backoff(
            Backoff::equal_jitter(Duration::from_secs(1), Duration::from_secs(2)).unwrap(),
        );
        match seed {
            Some(s) => b.seed(SeedSource::from_seed(s)),
            None => b,
        }
        .build()
        .unwrap()
    };
    let c = |seed| ClientBuilder::new().seed(SeedSource::from_seed(seed));
    // Before issue 22 the client's seed overwrote the breaker's: these two differed.
    let a = open_for(c(1).breaker(config(Some(9)))).await;
    let b = open_for(c(2).breaker(config(Some(9)))).await;
    assert_eq!(a, b, "the breaker's own seed decides its jitter");
    // Unseeded, the breaker takes the client's seed.
    let x = open_for(c(5).breaker(config(None))).await;
    assert_eq!(x, open_for(c(5).breaker(config(None))).await);
    assert_ne!(
        a, x,
        "another seed, another jitter (so the comparison above can fail)"
    );
}

#[cfg(feature = "metrics")]
#[test]
fn a_layers_own_labels_are_merged_with_the_clients() {
    use metrics_util::debugging::DebuggingRecorder;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let client = ClientBuilder::new()
            .labels(MetricLabels::new().with("upstream", "users"))
            .retry(RetryPolicy::new().labels(MetricLabels::new().with("layer", "retry")))
            .balance(balance::Builder::new().labels(MetricLabels::new().with("layer", "balance")))
            .build(Static::new(eps(1)), |_: &Endpoint| {
                tower::service_fn(|_: Req| async { Ok::<_, BoxError>(()) })
            })
            .unwrap();
        drop(client);
    });
    let keys: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, ..)| key.into_parts().1)
        .collect();
    let has = |name: &str, labels: &[(&str, &str)]| {
        keys.iter().any(|k| {
            k.name() == name
                && labels
                    .iter()
                    .all(|(l, v)| k.labels().any(|x| x.key() == *l && x.value() == *v))
        })
    };
    // Before issue 22 the layers' own labels were replaced by the client's.
    assert!(
        has(
            "meshwork_retry_retries_total",
            &[("upstream", "users"), ("layer", "retry")]
        ),
        "{keys:?}"
    );
    assert!(
        has(
            "meshwork_balance_no_endpoints_total",
            &[("upstream", "users"), ("layer", "balance")]
        ),
        "{keys:?}"
    );
}
