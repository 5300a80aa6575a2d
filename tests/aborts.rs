//! Client aborts never poison breakers (issue 12 item 6): uploads the caller abandons part way,
//! through the HTTP client against a real hyper server on 127.0.0.1, and (the sidecar half is
//! the second test, through the sidecar process.)
#![cfg(feature = "http")]

#[cfg(feature = "metrics")]
mod sidecar_support;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meshwork::breaker::{BreakerConfig, State};
use meshwork::client::{ClientBuilder, HttpClient, HttpClientBuilder};
use meshwork::discover::{Endpoint, Static};
use meshwork::rng::SeedSource;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How an upload ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The whole body is sent.
    Complete,
    /// The body fails after its first chunk (the caller's stream broke: an aborted upload).
    Error,
    /// The body stalls after its first chunk, and the caller drops the request.
    Stall,
}

/// A streamed request body: one chunk, then as `end` says.
struct Upload {
    end: End,
    chunks: u8,
}

impl Upload {
    fn new(end: End) -> Self {
        Self { end, chunks: 0 }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.chunks += 1;
        match (self.chunks, self.end) {
            (1, _) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first part"))))),
            (_, End::Complete) => Poll::Ready(None),
            (_, End::Error) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the uploading client went away",
            )))),
            (_, End::Stall) => Poll::Pending,
        }
    }
}

/// A backend that reads each request body to its end and answers 200 (400 when the body broke).
async fn backend() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let complete = Arc::new(AtomicUsize::new(0));
    let done = complete.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let done = done.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let done = done.clone();
                    async move {
                        let status = match req.into_body().collect().await {
                            Ok(_) => {
                                done.fetch_add(1, Ordering::SeqCst);
                                StatusCode::OK
                            }
                            Err(_) => StatusCode::BAD_REQUEST,
                        };
                        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *res.status_mut() = status;
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, complete, task)
}

fn upload(end: End) -> Request<Upload> {
    Request::post("http://uploads/")
        .body(Upload::new(end))
        .unwrap()
}

#[tokio::test]
async fn regression_12_06_aborted_uploads_through_the_http_client_never_open_a_breaker() {
    let (addr, complete, task) = backend().await;
    // A breaker that trips on 3 consecutive failures: 100 aborts would open it many times over.
    let stack = ClientBuilder::new()
        .breaker(
            BreakerConfig::builder()
                .consecutive_failures(3)
                .build()
                .unwrap(),
        )
        .seed(SeedSource::from_seed(12));
    let client: HttpClient<Upload> = HttpClientBuilder::with_stack(stack)
        .build_with_body(Static::new([Endpoint::new(addr)]))
        .unwrap();

    for i in 0..100 {
        if i % 2 == 0 {
            let err = client.request(upload(End::Error)).await.unwrap_err();
            let _ = err; // the caller's own body failed: an error for the caller, not the endpoint's
        } else {
            // The caller gives up on a stalled upload: its request future is dropped.
            let r = tokio::time::timeout(
                Duration::from_millis(20),
                client.request(upload(End::Stall)),
            )
            .await;
            assert!(r.is_err(), "a stalled upload cannot complete");
        }
        let states: Vec<_> = client.endpoints().iter().map(|e| e.breaker).collect();
        assert_eq!(
            states,
            [Some(State::Closed)],
            "upload {i}: the caller's abort counted against the endpoint"
        );
    }

    let res = client.request(upload(End::Complete)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(complete.load(Ordering::SeqCst), 1);
    task.abort();
}

/// Through the sidecar (a real process): 50 uploads aborted mid-body (the client closes its
/// connection after the first chunk) and 50 streamed bodies over `listener.max_body_bytes`. With
/// a breaker that opens on 5 consecutive failures, every one of them counted as the endpoint's
/// failure would open it; none may.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_12_06_aborted_uploads_through_the_sidecar_never_open_a_breaker() {
    use sidecar_support::{Backend, Sidecar, get};
    use tokio::io::AsyncWriteExt;

    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [listener]
        max_body_bytes = 1000
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        breaker = {{ consecutive_failures = 5 }}
        "#,
        backend.addr
    ))
    .await;
    let proxy: std::net::SocketAddr = sidecar
        .url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap();

    let breaker_state = || async {
        let (_, json) = get(&sidecar.admin_url("/endpoints")).await;
        String::from_utf8(json.to_vec()).unwrap()
    };
    for i in 0..50 {
        let hits = backend.hits();
        let mut conn = tokio::net::TcpStream::connect(proxy).await.unwrap();
        conn.write_all(
            b"POST /count HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        )
        .await
        .unwrap();
        // Abort once the upload has reached the backend (no sleeps: wait for the backend's count).
        while backend.hits() == hits {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(conn);
        let json = breaker_state().await;
        assert!(
            json.contains("\"breaker\":\"closed\""),
            "abort {i} counted against the endpoint: {json}"
        );
    }
    for i in 0..50 {
        let frames = (0..20)
            .map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![7u8; 1000]))))
            .collect::<Vec<_>>();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let res = sidecar_support::client()
            .request(Request::post(sidecar.url("/count")).body(body).unwrap())
            .await;
        if let Ok(res) = res {
            assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        }
        let json = breaker_state().await;
        assert!(
            json.contains("\"breaker\":\"closed\""),
            "over-limit body {i} counted against the endpoint: {json}"
        );
    }
    let (status, body) = get(&sidecar.url("/hello")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from a");
}
