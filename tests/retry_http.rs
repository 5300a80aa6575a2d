//! The retry layer against a real HTTP/1.1 server on 127.0.0.1, through hyper-util's client.
//!
//! The server counts and records every request it receives, so the tests see exactly what reached
//! it: a POST that failed after being sent is never sent twice; a POST whose connection was refused
//! is delivered exactly once; a body under the replay limit is replayed byte-identical, one over it
//! is not retried; and the first try streams the body before it is complete.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork::BoxError;
use meshwork::backoff::Backoff;
use meshwork::http::ReplayBody;
use meshwork::retry::{RetryBudget, RetryLayer, RetryPolicy};
use meshwork::rng::SeedSource;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::{Service, ServiceExt};

/// What the server does with its n-th request: answer with a status, or (0) read it and drop the
/// connection without answering.
struct Server {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<(Method, Bytes)>>>,
    first_chunk: Arc<Notify>,
}

impl Server {
    async fn start(plan: &'static [u16]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let first_chunk = Arc::new(Notify::new());
        let (rec, notify) = (received.clone(), first_chunk.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (rec, notify) = (rec.clone(), notify.clone());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    handle(req, plan, rec.clone(), notify.clone())
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        Self {
            addr,
            received,
            first_chunk,
        }
    }

    fn received(&self) -> Vec<(Method, Bytes)> {
        self.received.lock().unwrap().clone()
    }

    fn url(&self) -> String {
        format!("http://{}/resource", self.addr)
    }
}

async fn handle(
    req: Request<Incoming>,
    plan: &'static [u16],
    received: Arc<Mutex<Vec<(Method, Bytes)>>>,
    first_chunk: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let method = req.method().clone();
    let mut body = req.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.is_empty() {
                first_chunk.notify_one();
            }
            buf.extend_from_slice(&data);
        }
    }
    let n = {
        let mut r = received.lock().unwrap();
        r.push((method, buf.freeze()));
        r.len() - 1
    };
    match plan.get(n).copied().unwrap_or(200) {
        // An error from the service makes hyper close the connection without a response.
        0 => Err("dropping the connection after reading the request".into()),
        code => Ok(Response::builder()
            .status(code)
            .body(Full::new(Bytes::new()))
            .unwrap()),
    }
}

type Body<B> = ReplayBody<B>;

fn client<B>() -> Client<HttpConnector, Body<B>>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

fn policy() -> RetryPolicy<meshwork::classify::HttpClassify, meshwork::http::HttpReplay> {
    RetryPolicy::http()
        .backoff(Backoff::constant(Duration::from_millis(1)).unwrap())
        .seed(SeedSource::from_seed(3))
        .budget(
            RetryBudget::builder()
                .min_retries_per_sec(100)
                .build()
                .unwrap(),
        )
}

/// A retrying HTTP client: hyper-util's client, errors boxed, under the retry layer.
fn retrying<B>(
    policy: RetryPolicy<meshwork::classify::HttpClassify, meshwork::http::HttpReplay>,
) -> impl Service<Request<Body<B>>, Response = Response<Incoming>, Error = BoxError, Future = impl Send>
+ Clone
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let inner = client::<B>().map_err(BoxError::from);
    tower::Layer::layer(&RetryLayer::new(policy), inner)
}

fn full(method: Method, url: &str, body: &'static [u8]) -> Request<Body<Full<Bytes>>> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(ReplayBody::new(Full::new(Bytes::from_static(body))))
        .unwrap()
}

#[tokio::test]
async fn a_post_that_failed_after_being_sent_is_never_sent_twice() {
    let server = Server::start(&[0, 200]).await;
    let svc = retrying::<Full<Bytes>>(policy());
    let err = svc
        .clone()
        .oneshot(full(Method::POST, &server.url(), b"pay 10"))
        .await
        .unwrap_err();
    assert!(
        err.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some()
    );
    assert_eq!(
        server.received(),
        [(Method::POST, Bytes::from_static(b"pay 10"))]
    );

    // The same failure on an idempotent request is retried: the rule, not an accident, kept the
    // POST from being sent twice.
    let server = Server::start(&[0, 200]).await;
    let res = svc
        .oneshot(full(Method::PUT, &server.url(), b"set 10"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn a_refused_post_is_requeued_and_delivered_once() {
    let server = Server::start(&[]).await;
    // A port nothing listens on: connecting is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Routes the first try to the closed port and the next ones to the server, as a balancer
    // would pick another endpoint.
    let tries = Arc::new(AtomicUsize::new(0));
    let http = client::<Full<Bytes>>();
    let routing = tower::service_fn({
        let (tries, live) = (tries.clone(), server.addr);
        move |mut req: Request<Body<Full<Bytes>>>| {
            let addr = if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                closed
            } else {
                live
            };
            *req.uri_mut() = format!("http://{addr}/pay").parse().unwrap();
            let fut = http.request(req);
            async move { fut.await.map_err(BoxError::from) }
        }
    });
    let svc = tower::Layer::layer(&RetryLayer::new(policy()), routing);
    let res = svc
        .oneshot(full(Method::POST, "http://placeholder/pay", b"pay 20"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(tries.load(Ordering::SeqCst), 2);
    assert_eq!(
        server.received(),
        [(Method::POST, Bytes::from_static(b"pay 20"))]
    );
}

type Chunks = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

fn streamed(chunks: Vec<Bytes>) -> StreamBody<Chunks> {
    let frames: Vec<_> = chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

#[tokio::test]
async fn a_body_under_the_limit_is_replayed_byte_identical() {
    let server = Server::start(&[503, 200]).await;
    let chunks: Vec<Bytes> = (0..10u8)
        .map(|i| Bytes::from((0..1000u32).map(|j| (j as u8) ^ i).collect::<Vec<u8>>()))
        .collect();
    let whole: Bytes = chunks.concat().into();
    let req = Request::put(server.url())
        .body(ReplayBody::with_limit(streamed(chunks), 16 * 1024))
        .unwrap();
    let res = retrying(policy()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].1, whole);
    assert_eq!(received[1].1, whole);
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn a_body_over_the_limit_is_sent_once_and_not_retried() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let svc = metrics::with_local_recorder(&recorder, || retrying(policy()));

    let server = Server::start(&[503, 200]).await;
    let chunks = vec![Bytes::from(vec![7u8; 3000]), Bytes::from(vec![8u8; 3000])];
    let whole: Bytes = chunks.concat().into();
    let req = Request::put(server.url())
        .body(ReplayBody::with_limit(streamed(chunks), 4096))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    // The 503 is returned: the body could not be replayed.
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.received(), [(Method::PUT, whole)]);

    let too_large = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, ..)| key.key().name() == "meshwork_retry_body_too_large_total")
        .map(|(.., value)| value);
    assert_eq!(too_large, Some(DebugValue::Counter(1)));
}

/// A body whose chunks the test sends one by one.
struct Gated(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Gated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
    }
}

#[tokio::test]
async fn the_first_try_streams_before_the_body_is_complete() {
    let server = Server::start(&[200]).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = Gated(rx);
    let req = Request::post(server.url())
        .body(ReplayBody::new(body))
        .unwrap();
    let call = tokio::spawn(retrying(policy()).oneshot(req));

    tx.send(Bytes::from_static(b"first,")).await.unwrap();
    // The server sees the first chunk while the rest of the body does not exist yet. A layer that
    // buffered the whole body first would never get here (the guard turns a hang into a failure).
    tokio::time::timeout(Duration::from_secs(10), server.first_chunk.notified())
        .await
        .expect("the server received the first chunk before the body was complete");
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);

    let res = call.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        server.received(),
        [(Method::POST, Bytes::from_static(b"first,second"))]
    );
}
