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
        .unwrap()
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
        .unwrap()
        .build(endpoints, |_: &Endpoint| {
            tower::service_fn(|_: Req| async { Ok::<_, BoxError>(()) })
        })
        .unwrap_err();
    assert_eq!(err.field(), "per_try_timeout");
}
