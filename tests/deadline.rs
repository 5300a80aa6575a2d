//! Deadlines: the time left travels in the request, and across the network in a header.
#![cfg(feature = "http")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request};
use meshwork::http::{DEADLINE_HEADER, GRPC_TIMEOUT, PropagateDeadlineLayer};
use meshwork::timeout::{CarryDeadline, DeadlineExceeded, DeadlineLayer, Elapsed, TimeoutLayer};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

const MS: Duration = Duration::from_millis(1);

type Seen = Arc<Mutex<Vec<(Option<Duration>, http::HeaderMap)>>>;

/// A service that records the time left in each request it sees, and the headers it was sent with.
#[derive(Clone, Default)]
struct Recorder {
    seen: Seen,
}

impl Recorder {
    fn service(
        &self,
    ) -> impl Service<Request<()>, Response = (), Error = Infallible, Future: Send> + Clone {
        let seen = self.seen.clone();
        tower::service_fn(move |req: Request<()>| {
            let left = req.deadline().map(|d| d.remaining_at(Instant::now()));
            seen.lock().unwrap().push((left, req.headers().clone()));
            async { Ok::<_, Infallible>(()) }
        })
    }

    fn last(&self) -> (Option<Duration>, http::HeaderMap) {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn inner_service_and_outgoing_header_see_at_most_the_deadline() {
    let rec = Recorder::default();
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(100 * MS).unwrap())
        .layer(PropagateDeadlineLayer::new())
        .service(rec.service());
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let (left, headers) = rec.last();
    let left = left.expect("the request carries a deadline");
    assert!(left <= 100 * MS && left > 90 * MS, "{left:?}");
    let header: u64 = headers[DEADLINE_HEADER].to_str().unwrap().parse().unwrap();
    assert!((90..=100).contains(&header), "{header}");

    // A gRPC request gets a grpc-timeout header instead.
    let mut req = Request::new(());
    req.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/grpc+proto"),
    );
    svc.ready().await.unwrap().call(req).await.unwrap();
    let (_, headers) = rec.last();
    assert!(!headers.contains_key(DEADLINE_HEADER));
    let grpc = meshwork::http::parse_grpc_timeout(headers[GRPC_TIMEOUT].to_str().unwrap()).unwrap();
    assert!(grpc <= 100 * MS && grpc > 90 * MS, "{grpc:?}");
}

#[tokio::test(start_paused = true)]
async fn time_left_shrinks_as_time_passes() {
    // A layer between the deadline and the recorder that takes 30 ms: the recorder sees ~70 ms left.
    let rec = Recorder::default();
    let inner = rec.service();
    let delayed = tower::service_fn(move |req: Request<()>| {
        let mut inner = inner.clone();
        async move {
            tokio::time::sleep(30 * MS).await;
            inner.call(req).await
        }
    });
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(100 * MS).unwrap())
        .layer(PropagateDeadlineLayer::new())
        .service(delayed);
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(rec.last().0, Some(70 * MS));
}

async fn budget_seen_with_incoming(
    local: Duration,
    incoming: &'static str,
    name: &'static str,
) -> Duration {
    let rec = Recorder::default();
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(local).unwrap())
        .service(rec.service());
    let mut req = Request::new(());
    req.headers_mut()
        .insert(name, HeaderValue::from_static(incoming));
    svc.ready().await.unwrap().call(req).await.unwrap();
    rec.last().0.unwrap()
}

#[tokio::test(start_paused = true)]
async fn incoming_header_shortens_never_lengthens() {
    let s = Duration::from_secs(1);
    assert_eq!(
        budget_seen_with_incoming(s, "50", "meshwork-timeout-ms").await,
        50 * MS
    );
    assert_eq!(
        budget_seen_with_incoming(s, "10000", "meshwork-timeout-ms").await,
        s
    );
    assert_eq!(
        budget_seen_with_incoming(s, "50m", "grpc-timeout").await,
        50 * MS
    );
    assert_eq!(budget_seen_with_incoming(s, "10S", "grpc-timeout").await, s);
    // Garbage is ignored: the local deadline applies.
    assert_eq!(
        budget_seen_with_incoming(s, "soon", "meshwork-timeout-ms").await,
        s
    );
    assert_eq!(
        budget_seen_with_incoming(s, "1.5S", "grpc-timeout").await,
        s
    );
    assert_eq!(
        budget_seen_with_incoming(s, "99999999999999999999", "meshwork-timeout-ms").await,
        s
    );
}

#[tokio::test(start_paused = true)]
async fn incoming_budget_is_capped_by_the_configured_maximum() {
    let rec = Recorder::default();
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::from_incoming(Duration::from_secs(2)).unwrap())
        .service(rec.service());
    let mut req = Request::new(());
    req.headers_mut()
        .insert(DEADLINE_HEADER, HeaderValue::from_static("60000"));
    svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(rec.last().0, Some(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn an_outer_deadline_is_never_lengthened() {
    let rec = Recorder::default();
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(100 * MS).unwrap())
        .layer(DeadlineLayer::new(Duration::from_secs(5)).unwrap())
        .service(rec.service());
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(rec.last().0, Some(100 * MS));
}

#[tokio::test(start_paused = true)]
async fn deadline_bounds_all_tries_and_is_not_a_per_try_timeout() {
    let slow = tower::service_fn(|_req: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, Infallible>(())
    });
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(300 * MS).unwrap())
        .service(slow);
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(start.elapsed(), 300 * MS);

    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(300 * MS).unwrap())
        .layer(TimeoutLayer::new(100 * MS).unwrap())
        .service(slow);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn readiness_wait_counts_against_the_deadline() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, ()>();
    handle.allow(0);
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(100 * MS).unwrap())
        .service(mock);
    // Never ready: the wait itself fails once the total is spent.
    let start = Instant::now();
    let err = svc.ready().await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(start.elapsed(), 100 * MS);

    // Ready after 40 ms: the request that follows has 60 ms left.
    let waiter = tokio::spawn(async move {
        svc.ready().await.unwrap();
        let fut = svc.call(Request::new(()));
        (fut, svc)
    });
    tokio::time::sleep(40 * MS).await;
    handle.allow(1);
    let (fut, _svc) = waiter.await.unwrap();
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(
        req.deadline().unwrap().remaining_at(Instant::now()),
        60 * MS
    );
    send.send_response(());
    fut.await.unwrap();
}

/// Through `HttpClient` against a real hyper server on 127.0.0.1: with a 15 s total and a 5 s
/// per-try timeout, the upstream is told at most 5 s (the try is abandoned then), not 15 s.
#[tokio::test]
async fn regression_12_08_deadline_header_carries_the_per_try_timeout() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use meshwork::client::{ClientBuilder, HttpClient, HttpClientBuilder};
    use meshwork::discover::{Endpoint, Static};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let header = req
                            .headers()
                            .get(DEADLINE_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("none")
                            .to_owned();
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(header))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let stack = ClientBuilder::new()
        .total_timeout(Duration::from_secs(15))
        .per_try_timeout(Duration::from_secs(5));
    let client: HttpClient = HttpClientBuilder::with_stack(stack)
        .build(Static::new([Endpoint::new(addr)]))
        .unwrap();
    let res = client
        .get("http://upstream/".parse().unwrap())
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let ms: u64 = std::str::from_utf8(&body)
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no deadline header: {body:?}"));
    assert!(ms <= 5000, "the upstream was told {ms} ms for a 5 s try");
    assert!(ms >= 4000, "{ms} ms");
    server.abort();
}
