//! The sidecar process against real loopback backends and real HTTP clients.
//!
//! Run with `cargo test --all-features --test sidecar` (the sidecar example must be built: `cargo
//! test --all-features` builds it).

// The sidecar example needs these features (see its `required-features`).
#![cfg(all(feature = "http", feature = "metrics"))]

mod sidecar_support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use sidecar_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// 1 MiB of non-repeating bytes, streamed in 64 KiB frames.
fn mib_payload() -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn streaming(payload: &[u8]) -> TestBody {
    let frames = payload
        .chunks(64 * 1024)
        .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::copy_from_slice(c))))
        .collect::<Vec<_>>();
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// POSTs `payload` to `url` with `client`, [`streaming`] it.
async fn post_streaming(
    client: &TestClient,
    url: String,
    payload: &[u8],
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    client
        .request(Request::post(url).body(streaming(payload)).unwrap())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_get_post_and_chunked_round_trip_byte_identical() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::simple(&[backend.addr]).await;

    let (status, body) = get(&sidecar.url("/hello")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from a");

    let payload = mib_payload();
    let res = post_streaming(&client(), sidecar.url("/echo"), &payload)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let echoed = body_bytes(res).await;
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the 1 MiB body came back altered");

    let res = client()
        .request(Request::get(sidecar.url("/chunked")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("content-length").is_none());
    let body = body_bytes(res).await;
    assert!(
        body == chunked_payload(),
        "the chunked body came back altered"
    );
    assert_eq!(backend.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_round_trip() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::simple(&[backend.addr]).await;
    let h2 = h2_client();

    let res = h2
        .request(Request::get(sidecar.url("/hi")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_bytes(res).await, "hello from a");

    let payload = mib_payload();
    let res = post_streaming(&h2, sidecar.url("/echo"), &payload)
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let echoed = body_bytes(res).await;
    assert!(
        echoed == payload,
        "the 1 MiB body came back altered over HTTP/2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_from_config() {
    let backend = Backend::start("h2").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        upstream = "h2"
        [upstreams.h2]
        http_version = "http2"
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;
    let payload = mib_payload();
    let res = post_streaming(&client(), sidecar.url("/echo"), &payload)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let echoed = body_bytes(res).await;
    assert!(echoed == payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_removed_and_forwarding_headers_added() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::simple(&[backend.addr]).await;
    let res = client()
        .request(
            Request::get(sidecar.url("/headers"))
                .header("connection", "keep-alive, x-secret")
                .header("x-secret", "do not forward")
                .header("keep-alive", "timeout=5")
                .header("proxy-authorization", "Basic Zm9vOmJhcg==")
                .header("te", "gzip, trailers")
                .header("x-forwarded-for", "10.1.2.3")
                .header("x-kept", "yes")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(
        res.headers()["via"]
            .to_str()
            .unwrap()
            .starts_with("1.1 meshwork-")
    );
    let seen = body_bytes(res).await;
    let seen = String::from_utf8_lossy(&seen);
    for gone in ["x-secret", "keep-alive", "proxy-authorization", "gzip"] {
        assert!(!seen.contains(gone), "{gone} was forwarded:\n{seen}");
    }
    assert!(seen.contains("x-kept: yes"), "{seen}");
    assert!(seen.contains("te: trailers"), "{seen}");
    assert!(
        seen.contains("x-forwarded-for: 10.1.2.3, 127.0.0.1"),
        "{seen}"
    );
    assert!(
        seen.contains("forwarded: for=127.0.0.1;proto=http"),
        "{seen}"
    );
    assert!(seen.contains("via: 1.1 meshwork-"), "{seen}");
    assert!(seen.contains(&format!("host: {}", sidecar.addr)), "{seen}");
    // And on the way back.
    let (status, _) = get(&sidecar.url("/hop")).await;
    assert_eq!(status, StatusCode::OK);
    let res = client()
        .request(Request::get(sidecar.url("/hop")).body(empty()).unwrap())
        .await
        .unwrap();
    for gone in ["x-internal", "proxy-authenticate", "keep-alive"] {
        assert!(
            res.headers().get(gone).is_none(),
            "{gone}: {:?}",
            res.headers()
        );
    }
    assert_eq!(res.headers()["x-public"], "yes");
    assert!(
        res.headers()["via"]
            .to_str()
            .unwrap()
            .starts_with("1.1 meshwork-")
    );

    // The deadline travels on: the upstream is told how much of the 15 s default total is left.
    let left: u64 = seen
        .lines()
        .find_map(|l| l.strip_prefix("meshwork-timeout-ms: "))
        .expect("deadline header forwarded")
        .parse()
        .unwrap();
    assert!(left > 0 && left <= 15_000, "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_oversized_and_slow_requests_are_refused_without_disturbing_others() {
    let backend = Backend::start("a").await;
    let mut sidecar = Sidecar::with_config(&format!(
        r#"
        [listener]
        max_header_bytes = 8192
        header_read_timeout = "1s"
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;

    // A slow client: starts its head and stalls. Opened first, so it is around for everything else.
    let mut slow = TcpStream::connect(sidecar.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    let garbage = raw(sidecar.addr, b"NOT AN HTTP REQUEST LINE\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");

    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    big.extend(b"\r\nConnection: close\r\n\r\n");
    let too_large = raw(sidecar.addr, &big).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large:?}");

    // Another connection works while the slow one is still open.
    let (status, body) = get(&sidecar.url("/")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello from a"[..]));

    // The slow client is cut off (header_read_timeout 1 s; 10 s is the test's patience).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the slow client was not cut off");
    assert!(
        !String::from_utf8_lossy(&rest).contains("hello"),
        "the slow request was served"
    );

    let (status, _) = get(&sidecar.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(sidecar.alive());
    assert_eq!(
        backend.hits(),
        2,
        "only the two good requests reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_destinations_are_refused_never_forwarded() {
    let backend = Backend::start("app").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        host = "app.local"
        upstream = "app"
        [upstreams.app]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;
    let addr = sidecar.addr;

    let ok = raw(
        addr,
        b"GET /x HTTP/1.1\r\nHost: app.local\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok:?}");
    assert!(ok.ends_with("hello from app"), "{ok:?}");

    let cases: [(&[u8], &str); 6] = [
        (
            b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            "404",
        ),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "400"),
        (
            b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            "421",
        ),
        (
            b"GET http://evil.example/ HTTP/1.1\r\nHost: app.local\r\nConnection: close\r\n\r\n",
            "400",
        ),
        (
            b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n",
            "421",
        ),
        (
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n",
            "405",
        ),
    ];
    for (req, status) in cases {
        let res = raw(addr, req).await;
        assert!(
            res.starts_with(&format!("HTTP/1.1 {status}")),
            "{}: {res:?}",
            String::from_utf8_lossy(req)
        );
    }
    // HTTP/2 carries the destination in :authority: an unconfigured one is refused too.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (authority, status) in [("evil.example", 404), ("app.local", 200)] {
        let res = h2
            .send_request(
                Request::get(format!("http://{authority}/h2"))
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{authority}");
    }

    // An absolute-form request for the configured host goes to the configured upstream.
    let abs = raw(
        addr,
        b"GET http://app.local/ HTTP/1.1\r\nHost: app.local\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(abs.starts_with("HTTP/1.1 200"), "{abs:?}");
    assert_eq!(backend.hits(), 3, "a refused request reached the backend");
}

/// Issue 13, Host handling: two Host headers and an HTTP/1.1 request without Host get 400 (RFC
/// 9112 §3.2) and reach no upstream; HTTP/1.0 may omit Host; `Connection: host` cannot remove the
/// Host the request was routed by; in HTTP/2 the forwarded Host is `:authority`, and a Host
/// header naming another host is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_edges_duplicate_missing_connection_host_and_h2_authority() {
    let backend = Backend::start("app").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        upstream = "app"
        [upstreams.app]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;
    let addr = sidecar.addr;
    let cases: [(&[u8], &str, &str); 4] = [
        (
            b"GET / HTTP/1.1\r\nHost: app.local\r\nHost: app.local\r\nConnection: close\r\n\r\n",
            "400",
            "more than one Host header",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: app.local\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            "400",
            "more than one Host header",
        ),
        (
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            "400",
            "an HTTP/1.1 request needs a Host header",
        ),
        (b"GET / HTTP/1.0\r\n\r\n", "200", "hello from app"),
    ];
    for (req, status, text) in cases {
        let res = raw(addr, req).await;
        assert!(
            res.get(9..12) == Some(status) && res.contains(text),
            "{}: {res:?}",
            String::from_utf8_lossy(req)
        );
    }
    assert_eq!(backend.hits(), 1, "a refused request reached the backend");

    let res = raw(
        addr,
        b"GET /headers HTTP/1.1\r\nHost: app.local\r\nConnection: close, host\r\n\r\n",
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res:?}");
    assert!(res.contains("host: app.local\n"), "{res:?}");

    // HTTP/2: the forwarded Host is :authority; a Host header for another host is refused.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let res = h2
        .send_request(
            Request::get("http://app.local/headers")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = body_bytes(res).await;
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("host: app.local\n"), "{body}");
    let hits = backend.hits();
    let res = h2
        .send_request(
            Request::get("http://app.local/headers")
                .header("host", "evil.example")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_bytes(res).await,
        ":authority and Host header disagree\n"
    );
    assert_eq!(backend.hits(), hits);
}

/// Issue 13, header-based route matching (exact value) and a per-route `host_rewrite`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_exact_header_values_and_rewrite_host() {
    let canary = Backend::start("canary").await;
    let main = Backend::start("main").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        headers = {{ x-canary = "1", X-Team = "blue" }}
        host_rewrite = "canary.svc:8080"
        upstream = "canary"
        [[routes]]
        upstream = "main"
        [upstreams.canary]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        [upstreams.main]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        canary.addr, main.addr
    ))
    .await;
    let send = |headers: &'static [(&'static str, &'static str)]| {
        let url = sidecar.url("/headers");
        async move {
            let mut req = Request::get(url).header("host", "app.local");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let res = client().request(req.body(empty()).unwrap()).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            String::from_utf8(body_bytes(res).await.to_vec()).unwrap()
        }
    };
    let seen = send(&[("x-canary", "1"), ("x-team", "blue")]).await;
    assert!(seen.contains("host: canary.svc:8080\n"), "{seen}");
    assert_eq!((canary.hits(), main.hits()), (1, 0));
    for headers in [
        &[("x-canary", "2"), ("x-team", "blue")][..],
        &[("x-canary", "1")][..],
        &[("x-canary", "1"), ("x-team", "Blue")][..],
        &[][..],
    ] {
        let seen = send(headers).await;
        assert!(seen.contains("host: app.local\n"), "{headers:?}: {seen}");
    }
    assert_eq!((canary.hits(), main.hits()), (1, 4));
}

/// Issue 13, `X-Forwarded-For` trust: `x_forwarded_for = "replace"` drops what an untrusted client
/// sent (XFF and `Forwarded`) and keeps it from a trusted peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_replaced_unless_the_peer_is_trusted() {
    let backend = Backend::start("a").await;
    for (trusted, want_xff, want_fwd) in [
        (
            "[]",
            "x-forwarded-for: 127.0.0.1",
            "forwarded: for=127.0.0.1;proto=http",
        ),
        (
            "[\"127.0.0.1\"]",
            "x-forwarded-for: 6.6.6.6, 127.0.0.1",
            "forwarded: for=6.6.6.6, for=127.0.0.1;proto=http",
        ),
    ] {
        let sidecar = Sidecar::with_config(&format!(
            r#"
            [listener]
            x_forwarded_for = "replace"
            trusted_peers = {trusted}
            [[routes]]
            upstream = "a"
            [upstreams.a]
            discovery = {{ kind = "static", endpoints = ["{}"] }}
            "#,
            backend.addr
        ))
        .await;
        let res = client()
            .request(
                Request::get(sidecar.url("/headers"))
                    .header("x-forwarded-for", "6.6.6.6")
                    .header("forwarded", "for=6.6.6.6")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let seen = String::from_utf8(body_bytes(res).await.to_vec()).unwrap();
        assert!(
            seen.lines().any(|l| l == want_xff),
            "trusted {trusted}: {seen}"
        );
        assert!(
            seen.lines().any(|l| l == want_fwd),
            "trusted {trusted}: {seen}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_map_to_502_and_504() {
    let backend = Backend::start("a").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        path_prefix = "/down"
        upstream = "down"
        [[routes]]
        path_prefix = "/try/"
        upstream = "try"
        [[routes]]
        upstream = "a"
        [upstreams.try]
        discovery = {{ kind = "static", endpoints = ["{0}"] }}
        timeouts = {{ per_try = "100ms", total = "5s" }}
        [upstreams.down]
        discovery = {{ kind = "static", endpoints = ["{closed}"] }}
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{0}"] }}
        timeouts = {{ total = "300ms" }}
        "#,
        backend.addr
    ))
    .await;

    let (status, body) = get(&sidecar.url("/down/x")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "upstream request failed\n");

    let (status, body) = get(&sidecar.url("/slow/3000")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "deadline exceeded before the upstream answered\n");

    // One try's timeout: 504 too, saying so.
    let (status, body) = get(&sidecar.url("/try/slow/3000")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "upstream timed out\n");
    assert_eq!(get(&sidecar.url("/try/slow/1")).await.0, StatusCode::OK);

    // A caller's shorter budget wins over the configured total.
    let res = client()
        .request(
            Request::get(sidecar.url("/slow/200"))
                .header("meshwork-timeout-ms", "50")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);

    let (status, _) = get(&sidecar.url("/slow/10")).await;
    assert_eq!(status, StatusCode::OK);
}

/// A request body that fails on the client's side (a malformed chunked encoding, a connection
/// half-closed mid-body) is the caller's doing: 400 with the sidecar's own reason, never 502, and
/// never the endpoint's failure (issue 12 item 6, the status half).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_12_06_a_failed_request_body_is_the_callers_400_not_502() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        breaker = {{ consecutive_failures = 2 }}
        "#,
        backend.addr
    ))
    .await;
    for i in 0..5 {
        let bad = raw(
            sidecar.addr,
            b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n\r\n",
        )
        .await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{i}: {bad:?}");
        assert!(bad.contains("the request body failed"), "{i}: {bad:?}");

        // The client stops sending mid-body: answered 400 if at all (hyper may close at once).
        let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
        s.write_all(b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("the sidecar closes the connection");
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty()
                || (out.starts_with("HTTP/1.1 400") && out.contains("the request body failed")),
            "{i}: {out:?}"
        );
    }
    let (_, json) = get(&sidecar.admin_url("/endpoints")).await;
    let json = String::from_utf8_lossy(&json);
    assert!(json.contains("\"breaker\":\"closed\""), "{json}");
    let (status, body) = get(&sidecar.url("/hello")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello from a"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_refused() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [listener]
        max_body_bytes = 1000
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;
    let res = client()
        .request(
            Request::post(sidecar.url("/echo"))
                .body(http_body_util::Full::new(Bytes::from(vec![0u8; 2000])).boxed())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(backend.hits(), 0);

    // A streamed body (no length) that outgrows the limit is cut off: it never arrives whole.
    let res = post_streaming(&client(), sidecar.url("/count"), &vec![1u8; 200_000]).await;
    let outcome = match res {
        Ok(res) => {
            let status = res.status();
            let body = res.into_body().collect().await.map(|b| b.to_bytes());
            format!("{status} {body:?}")
        }
        Err(e) => format!("error {e}"),
    };
    assert!(!outcome.contains("200000"), "{outcome}");
    assert!(outcome.starts_with("413"), "{outcome}");
    // Within the limit, a streamed body goes through.
    let res = post_streaming(&client(), sidecar.url("/count"), &[7u8; 1000])
        .await
        .unwrap();
    assert_eq!(body_bytes(res).await, "1000");
}

/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses Prometheus text format strictly enough for a test: every non-comment line is
/// `name{labels} value` or `name value`, with a valid metric name, well-formed labels and a float.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).expect("TYPE has a kind");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split("\",")
                    .filter(|s| !s.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label is k=\"v\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        out.push((name.to_owned(), labels, value));
    }
    out
}

fn metric(parsed: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parsed
        .iter()
        .find(|(n, ls, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_metrics_match_the_traffic_and_endpoints_are_listed() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let sidecar = Sidecar::simple(&[a.addr, b.addr]).await;

    assert_eq!(get(&sidecar.admin_url("/live")).await.0, StatusCode::OK);
    assert_eq!(get(&sidecar.admin_url("/ready")).await.0, StatusCode::OK);

    // Enough successes that the failures below trip no breaker (success rate stays >= 80 %).
    for _ in 0..40 {
        assert_eq!(get(&sidecar.url("/ok")).await.0, StatusCode::OK);
    }
    // 500 is not retryable: one try each, the upstream's answer passed through.
    for _ in 0..2 {
        assert_eq!(
            get(&sidecar.url("/status/500")).await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    // 503 on a GET is retried (max_retries = 2): three tries, then the upstream's last answer.
    let (status, body) = get(&sidecar.url("/status/503")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "status 503");

    // Refused locally, never forwarded: counted by status.
    let refused = raw(
        sidecar.addr,
        b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 421"), "{refused}");

    let (status, text) = get(&sidecar.admin_url("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text.to_vec()).unwrap();
    let parsed = parse_prometheus(&text);
    let total = |class: &str| -> f64 {
        [a.addr, b.addr]
            .iter()
            .map(|addr| {
                metric(
                    &parsed,
                    "meshwork_sidecar_requests_total",
                    &[
                        ("upstream", "default"),
                        ("endpoint", &addr.to_string()),
                        ("class", class),
                    ],
                )
                .unwrap_or(0.0)
            })
            .sum()
    };
    assert_eq!(total("success"), 40.0, "{text}");
    assert_eq!(total("non_retryable"), 2.0, "{text}");
    assert_eq!(total("retryable"), 3.0, "{text}");
    // Every try is timed, on whichever endpoint P2C chose.
    let tries: f64 = [a.addr, b.addr]
        .iter()
        .map(|addr| {
            metric(
                &parsed,
                "meshwork_sidecar_request_duration_seconds_count",
                &[("upstream", "default"), ("endpoint", &addr.to_string())],
            )
            .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(tries, 45.0, "{text}");
    assert_eq!(a.hits() + b.hits(), 45);
    // The library's own metrics, labelled with the upstream.
    let up = [("upstream", "default")];
    assert_eq!(
        metric(&parsed, "meshwork_retry_retries_total", &up),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&parsed, "meshwork_retry_budget_exhausted_total", &up).unwrap_or(0.0),
        0.0,
        "{text}"
    );
    assert_eq!(
        metric(&parsed, "meshwork_balance_endpoints", &up),
        Some(2.0),
        "{text}"
    );
    for addr in [a.addr, b.addr] {
        assert_eq!(
            metric(
                &parsed,
                "meshwork_sidecar_endpoint_breaker_state",
                &[("upstream", "default"), ("endpoint", &addr.to_string())]
            ),
            Some(0.0),
            "closed: {text}"
        );
    }
    assert_eq!(
        metric(
            &parsed,
            "meshwork_sidecar_refused_total",
            &[("status", "421")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &parsed,
            "meshwork_sidecar_refused_total",
            &[("status", "404")]
        ),
        Some(0.0),
        "{text}"
    );
    // One name is one family: no `# TYPE` line twice (a strict Prometheus parser rejects that).
    let mut types: Vec<_> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let all = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), all, "a family is declared twice:\n{text}");
    // Every family on /metrics has its help text (issue 22): the library's, described by
    // `meshwork::telemetry`, and the sidecar's own.
    for name in text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
    {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "{name} has no # HELP line:\n{text}"
        );
    }

    // In flight shows while a request is under way.
    let slow_url = sidecar.url("/slow/1000");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (_, json) = get(&sidecar.admin_url("/endpoints")).await;
            if String::from_utf8_lossy(&json).contains("\"in_flight\":1") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("/endpoints shows the request in flight");
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);

    let (status, json) = get(&sidecar.admin_url("/endpoints")).await;
    assert_eq!(status, StatusCode::OK);
    let json = String::from_utf8(json.to_vec()).unwrap();
    assert!(
        json.starts_with("{\"upstreams\":[{\"name\":\"default\""),
        "{json}"
    );
    for addr in [a.addr, b.addr] {
        let entry = endpoint_json(&json, addr);
        assert!(entry.contains("\"in_flight\":0,"), "{json}");
        assert!(entry.contains("\"breaker\":\"closed\""), "{json}");
        let load: f64 = entry
            .split("\"load\":")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a numeric load in {entry}"));
        assert!(load >= 0.0, "{entry}");
    }
}

/// The `{...}` object of endpoint `addr` in the `/endpoints` JSON.
fn endpoint_json(json: &str, addr: std::net::SocketAddr) -> &str {
    let start = json
        .find(&format!("{{\"address\":\"{addr}\""))
        .unwrap_or_else(|| panic!("{addr} not in {json}"));
    let end = start + json[start..].find('}').expect("the object ends");
    &json[start..=end]
}

/// GETs `url` and returns the status, the `x-meshwork-overloaded` header, the body and the time
/// it took.
async fn timed_get(url: String) -> (StatusCode, Option<String>, Bytes, Duration) {
    let start = std::time::Instant::now();
    let res = client()
        .request(Request::get(url).body(empty()).unwrap())
        .await
        .expect("request");
    let status = res.status();
    let over = res
        .headers()
        .get("x-meshwork-overloaded")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = body_bytes(res).await;
    (status, over, body, start.elapsed())
}

/// Issue 13, per-upstream limits: past `limits.max_requests` (two slow requests in flight) and
/// past `limits.max_pending` (two requests waiting for an endpoint of an upstream that has none),
/// a request is answered at once with 503 and `x-meshwork-overloaded: true`, never reaches a
/// backend, and is counted in `meshwork_sidecar_overloaded_total`; the slots free when the
/// responses end.
#[cfg(feature = "dns")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_limits_answer_503_overloaded_at_once() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        path_prefix = "/none/"
        upstream = "none"
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        limits = {{ max_requests = 2 }}
        [upstreams.none]
        discovery = {{ kind = "dns", name = "nothing.invalid", port = 80 }}
        balancer = {{ max_wait = "3s" }}
        limits = {{ max_pending = 2 }}
        "#,
        backend.addr
    ))
    .await;

    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(timed_get(sidecar.url("/slow/1500"))))
        .collect();
    while backend.hits() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, over, body, took) = timed_get(sidecar.url("/hello")).await;
    eprintln!("over max_requests: {status} in {took:?}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(over.as_deref(), Some("true"));
    assert_eq!(body, "upstream overloaded: limits.max_requests reached\n");
    assert!(took < Duration::from_millis(500), "not at once: {took:?}");
    assert_eq!(backend.hits(), 2, "the refused request reached the backend");
    for s in slow {
        let (status, over, ..) = s.await.unwrap();
        assert_eq!((status, over), (StatusCode::OK, None));
    }
    let (status, ..) = timed_get(sidecar.url("/hello")).await;
    assert_eq!(status, StatusCode::OK, "the slots are free again");

    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(timed_get(sidecar.url("/none/x"))))
        .collect();
    loop {
        let (_, json) = get(&sidecar.admin_url("/endpoints")).await;
        if String::from_utf8_lossy(&json).contains("\"name\":\"none\",\"active\":2,\"pending\":2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, over, body, took) = timed_get(sidecar.url("/none/x")).await;
    eprintln!("over max_pending: {status} in {took:?}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(over.as_deref(), Some("true"));
    assert_eq!(body, "upstream overloaded: limits.max_pending reached\n");
    assert!(took < Duration::from_millis(500), "not at once: {took:?}");
    for w in waiting {
        // They waited `max_wait` for an endpoint: a plain 503, not an overload.
        let (status, over, _, took) = w.await.unwrap();
        assert_eq!((status, over), (StatusCode::SERVICE_UNAVAILABLE, None));
        assert!(took >= Duration::from_millis(2500), "{took:?}");
    }

    let (_, text) = get(&sidecar.admin_url("/metrics")).await;
    let parsed = parse_prometheus(&String::from_utf8_lossy(&text));
    let over = |upstream: &str, limit: &str| {
        metric(
            &parsed,
            "meshwork_sidecar_overloaded_total",
            &[("upstream", upstream), ("limit", limit)],
        )
    };
    assert_eq!(over("a", "max_requests"), Some(1.0));
    assert_eq!(over("none", "max_pending"), Some(1.0));
    assert_eq!(over("a", "max_pending"), Some(0.0));
    let (_, json) = get(&sidecar.admin_url("/endpoints")).await;
    let json = String::from_utf8_lossy(&json);
    assert!(
        json.contains("\"name\":\"none\",\"active\":0,\"pending\":0"),
        "{json}"
    );
    assert!(
        json.contains("\"name\":\"a\",\"active\":0,\"pending\":0"),
        "{json}"
    );
}

/// Issue 13, HTTP/2 server limits: a rapid-reset flood (CVE-2023-44487: HEADERS then RST_STREAM
/// at once, 10,000 times, from a raw `h2` client) is met with GOAWAY (ENHANCE_YOUR_CALM), fewer
/// than 1 % of the streams reach the upstream, and the sidecar keeps serving. The stream cap is
/// the configured `h2_max_concurrent_streams`; `max_headers` bounds HTTP/2 requests too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_flood_gets_goaway_and_never_reaches_the_upstream() {
    let backend = Backend::start("a").await;
    let mut sidecar = Sidecar::with_config(&format!(
        r#"
        [listener]
        h2_max_concurrent_streams = 50
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;

    let tcp = TcpStream::connect(sidecar.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut reset = 0usize;
    let mut refused = None;
    for _ in 0..10_000 {
        let req = Request::get("http://a/slow/200").body(()).unwrap();
        match client.send_request(req, false) {
            Ok((_response, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                reset += 1;
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        client = match client.ready().await {
            Ok(c) => c,
            Err(e) => {
                refused = Some(e);
                break;
            }
        };
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the sidecar ends the flooding connection")
        .unwrap();
    let reason = refused
        .as_ref()
        .and_then(h2::Error::reason)
        .or_else(|| ended.as_ref().err().and_then(h2::Error::reason));
    eprintln!(
        "rapid reset: {reset} streams sent and reset before the connection ended \
         ({refused:?} / {ended:?}); {} reached the upstream",
        backend.hits()
    );
    // The sidecar sends GOAWAY (ENHANCE_YOUR_CALM) and closes. The client sees the GOAWAY, or,
    // when its own flood was still unread at the sidecar's side, the close discards it and the
    // client sees only the connection die (a broken pipe or reset): both are the sidecar ending
    // the connection; any other h2 reason is a failure.
    let closed_by_peer = [refused.as_ref(), ended.as_ref().err()]
        .into_iter()
        .flatten()
        .any(|e| {
            e.get_io().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                )
            })
        });
    assert!(
        reason == Some(h2::Reason::ENHANCE_YOUR_CALM) || (reason.is_none() && closed_by_peer),
        "{reason:?}"
    );
    assert!(reset < 10_000, "the flood was never stopped");
    assert!(
        backend.hits() < 100,
        "{} of 10,000 reached the upstream",
        backend.hits()
    );

    // Still serving, on a new connection, which is told the configured stream cap.
    assert!(sidecar.alive());
    let tcp = TcpStream::connect(sidecar.addr).await.unwrap();
    let (client, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut client = client.ready().await.unwrap();
    let req = Request::get("http://a/hello").body(()).unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    let response = tokio::select! {
        r = &mut conn => panic!("connection ended: {r:?}"),
        r = response => r.unwrap(),
    };
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        conn.max_concurrent_send_streams(),
        50,
        "the configured stream cap"
    );

    // The header-field bound (`max_headers`, 100) holds for HTTP/2 too: 431.
    let mut req = Request::get("http://a/hello");
    for i in 0..120 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let hits = backend.hits();
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
    let response = tokio::select! {
        r = &mut conn => panic!("connection ended: {r:?}"),
        r = response => r.unwrap(),
    };
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(backend.hits(), hits);
}

/// Issue 13, loop detection: a sidecar whose upstream is itself sees its own `Via` token on the
/// second hop and answers 508 there, so the caller gets 508 at once (before, the request looped
/// until its growing headers hit the 64 KiB limit and the caller got 431 half a second later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_via_loop_gets_508_at_the_first_repeat() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let path = temp_file(
        "loop.toml",
        &format!(
            r#"
            [listener]
            address = "127.0.0.1:{port}"
            [[routes]]
            upstream = "me"
            [upstreams.me]
            discovery = {{ kind = "static", endpoints = ["127.0.0.1:{port}"] }}
            retry = {{ enabled = false }}
            "#
        ),
    );
    let mut sidecar =
        Sidecar::spawn(&["--config", path.to_str().unwrap(), "--admin", "127.0.0.1:0"]).await;
    let _ = std::fs::remove_file(path);
    let start = std::time::Instant::now();
    let res = client()
        .request(Request::get(sidecar.url("/x")).body(empty()).unwrap())
        .await
        .unwrap();
    let took = start.elapsed();
    let status = res.status();
    let via = res.headers()["via"].to_str().unwrap().to_owned();
    let body = body_bytes(res).await;
    eprintln!("loop: {status} in {took:?}, via {via:?}");
    assert_eq!(status, StatusCode::LOOP_DETECTED);
    assert_eq!(
        body,
        "loop detected: this request has already passed this sidecar\n"
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
    // Two hops, each adding its entry once to the response on its way back (and the 508 its own).
    assert!(via.matches("meshwork-").count() <= 3, "{via}");
    assert!(sidecar.alive());
}

/// The trailer section of a raw chunked HTTP/1 response: the lines after the last chunk.
fn raw_trailers(res: &str) -> String {
    let (_, after) = res.rsplit_once("\r\n0\r\n").expect("a chunked body");
    after.trim_end().to_owned()
}

/// Issue 13, trailers pass through in both directions and between versions (`Trailer` was dropped
/// as hop-by-hop, so hyper's HTTP/1 encoder dropped every trailer): response trailers HTTP/1 →
/// HTTP/1, HTTP/2 → HTTP/2 (an h2 upstream), HTTP/2 client ← HTTP/1 upstream; request trailers
/// HTTP/1 → HTTP/1 (echoed back). Each arrives byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_through_h1_h1_h2_h2_and_h2_h1() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        path_prefix = "/h2/"
        upstream = "h2"
        [[routes]]
        upstream = "h1"
        [upstreams.h1]
        discovery = {{ kind = "static", endpoints = ["{0}"] }}
        [upstreams.h2]
        http_version = "http2"
        discovery = {{ kind = "static", endpoints = ["{0}"] }}
        "#,
        backend.addr
    ))
    .await;

    // HTTP/1 → HTTP/1, response trailers.
    let res = raw(
        sidecar.addr,
        b"GET /trailers HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res:?}");
    assert_eq!(raw_trailers(&res), "x-checksum: abc123", "{res:?}");

    // HTTP/1 → HTTP/1, request trailers, echoed back as response trailers.
    let res = raw(
        sidecar.addr,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nTrailer: x-sum\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n",
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res:?}");
    assert!(res.contains("hello"), "{res:?}");
    assert_eq!(raw_trailers(&res), "x-sum: 42", "{res:?}");

    // HTTP/2 clients: from an h2 upstream and from an HTTP/1 upstream.
    for path in ["/h2/trailers", "/trailers"] {
        let res = h2_client()
            .request(
                Request::get(sidecar.url(path))
                    .header("te", "trailers")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let collected = res.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        assert_eq!(collected.to_bytes(), "with trailers", "{path}");
        let trailers = trailers.unwrap_or_else(|| panic!("{path}: no trailers"));
        assert_eq!(trailers["x-checksum"], "abc123", "{path}");
        assert_eq!(trailers.len(), 1, "{path}: {trailers:?}");
    }
}

/// Issue 13, per-route timeouts: an upstream with `timeouts = { total = "none", per_try = "none" }`
/// serves a streaming route whose answer takes longer than another upstream's total (which gets
/// 504), and a route's own shorter `timeout` cuts its requests sooner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_routes_have_no_total_timeout_and_routes_can_shorten_theirs() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        path_prefix = "/stream/"
        upstream = "stream"
        [[routes]]
        path_prefix = "/short/"
        timeout = "300ms"
        upstream = "stream"
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{0}"] }}
        timeouts = {{ total = "1s" }}
        [upstreams.stream]
        discovery = {{ kind = "static", endpoints = ["{0}"] }}
        timeouts = {{ total = "none", per_try = "none" }}
        "#,
        backend.addr
    ))
    .await;
    let (bounded, streaming, short) = tokio::join!(
        timed_get(sidecar.url("/slow/2500")),
        timed_get(sidecar.url("/stream/slow/2500")),
        timed_get(sidecar.url("/short/slow/2500")),
    );
    eprintln!(
        "timeouts: total 1s {} in {:?}; none {} in {:?}; route 300ms {} in {:?}",
        bounded.0, bounded.3, streaming.0, streaming.3, short.0, short.3
    );
    assert_eq!(bounded.0, StatusCode::GATEWAY_TIMEOUT);
    assert!(bounded.3 < Duration::from_millis(2000), "{:?}", bounded.3);
    assert_eq!(streaming.0, StatusCode::OK);
    assert_eq!(streaming.2, "slow done");
    assert!(streaming.3 >= Duration::from_millis(2500));
    assert_eq!(short.0, StatusCode::GATEWAY_TIMEOUT);
    assert!(short.3 < Duration::from_millis(900), "{:?}", short.3);
}

/// Issue 13, WebSocket: an HTTP/1.1 upgrade is routed to the upstream, its 101 passed back with
/// `Upgrade`, and the upgraded connection tunnelled both ways (an echo round trip); it is counted
/// like any request. Another upgrade is not proxied (the request is forwarded without `Upgrade`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echo_round_trip() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;
    let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head:?}");
    for message in [
        &b"\x81\x05hello"[..],
        &[0x82, 3, 1, 2, 3][..],
        &[7u8; 3000][..],
    ] {
        s.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echoed")
            .unwrap();
        assert_eq!(back, message);
    }
    drop(s);

    // Another upgrade: forwarded as a plain request.
    let res = raw(
        sidecar.addr,
        b"GET /headers HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\nUpgrade: h2c\r\n\r\n",
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res:?}");
    assert!(!res.contains("upgrade: h2c"), "{res:?}");

    let (_, text) = get(&sidecar.admin_url("/metrics")).await;
    let parsed = parse_prometheus(&String::from_utf8_lossy(&text));
    assert_eq!(
        metric(
            &parsed,
            "meshwork_sidecar_route_requests_total",
            &[("upstream", "a"), ("route", "0"), ("class", "1xx")],
        ),
        Some(1.0)
    );
}

/// Issue 13, request metrics: requests by upstream, route and status class, and the sidecar's
/// own answers by status and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_upstream_route_and_class_and_local_errors_by_reason() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        path_prefix = "/b/"
        upstream = "b"
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        [upstreams.b]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        a.addr, b.addr
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(get(&sidecar.url("/x")).await.0, StatusCode::OK);
    }
    assert_eq!(get(&sidecar.url("/b/x")).await.0, StatusCode::OK);
    assert_eq!(
        get(&sidecar.url("/status/404")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&sidecar.url("/status/503")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    for _ in 0..2 {
        let bad = raw(
            sidecar.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    }
    let (_, text) = get(&sidecar.admin_url("/metrics")).await;
    let parsed = parse_prometheus(&String::from_utf8_lossy(&text));
    let requests = |upstream: &str, route: &str, class: &str| {
        metric(
            &parsed,
            "meshwork_sidecar_route_requests_total",
            &[("upstream", upstream), ("route", route), ("class", class)],
        )
    };
    assert_eq!(requests("a", "1", "2xx"), Some(3.0));
    assert_eq!(requests("a", "1", "4xx"), Some(1.0));
    assert_eq!(
        requests("a", "1", "5xx"),
        Some(1.0),
        "one request, whatever its tries"
    );
    assert_eq!(requests("b", "0", "2xx"), Some(1.0));
    assert_eq!(requests("b", "0", "5xx"), Some(0.0));
    assert_eq!(requests("-", "-", "4xx"), Some(2.0));
    assert_eq!(
        metric(
            &parsed,
            "meshwork_sidecar_local_errors_total",
            &[("status", "400"), ("reason", "more than one Host header")],
        ),
        Some(2.0)
    );
}

/// The client stack at work through the sidecar: an endpoint that answers 503 to everything.
/// With peak EWMA (the default), its failures make it expensive, so P2C stops picking it and the
/// retry layer sends the failed tries to the healthy endpoint: every request succeeds. With
/// least-in-flight (which does not see failures), it keeps being picked until its circuit breaker
/// opens; from then on it gets nothing, and the trip shows in `/metrics` and `/endpoints`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_is_avoided_then_broken_out() {
    let good1 = Backend::start("good").await;
    let bad1 = Backend::failing("bad", 503).await;
    let good2 = Backend::start("good").await;
    let bad2 = Backend::failing("bad", 503).await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        path_prefix = "/ewma/"
        upstream = "ewma"
        [[routes]]
        upstream = "lif"
        [upstreams.ewma]
        discovery = {{ kind = "static", endpoints = ["{}", "{}"] }}
        [upstreams.lif]
        discovery = {{ kind = "static", endpoints = ["{}", "{}"] }}
        balancer = {{ load = "least_in_flight" }}
        breaker = {{ backoff_base = "30s", backoff_max = "60s" }}
        "#,
        good1.addr, bad1.addr, good2.addr, bad2.addr
    ))
    .await;

    for _ in 0..30 {
        let (status, body) = get(&sidecar.url("/ewma/x")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello from good");
    }
    assert!(
        bad1.hits() <= 2,
        "the failing endpoint kept getting traffic: {}",
        bad1.hits()
    );
    assert!(good1.hits() >= 30);

    // Least in flight picks either endpoint: a request fails only if all three tries hit `bad`.
    let mut opened = false;
    for _ in 0..300 {
        let (status, _) = get(&sidecar.url("/y")).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
        let (_, json) = get(&sidecar.admin_url("/endpoints")).await;
        let json = String::from_utf8(json.to_vec()).unwrap();
        if endpoint_json(&json, bad2.addr).contains("\"breaker\":\"open\"") {
            assert!(endpoint_json(&json, good2.addr).contains("\"breaker\":\"closed\""));
            opened = true;
            break;
        }
    }
    assert!(opened, "the breaker of the failing endpoint never opened");
    assert!(bad2.hits() >= 5, "5 consecutive failures trip it");

    // Broken out: every request goes to the healthy endpoint, first try.
    let bad_hits = bad2.hits();
    for _ in 0..20 {
        let (status, body) = get(&sidecar.url("/y")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello from good");
    }
    assert_eq!(bad2.hits(), bad_hits);

    let (_, text) = get(&sidecar.admin_url("/metrics")).await;
    let text = String::from_utf8(text.to_vec()).unwrap();
    let parsed = parse_prometheus(&text);
    let bad = [("upstream", "lif"), ("endpoint", &*bad2.addr.to_string())];
    assert_eq!(
        metric(&parsed, "meshwork_sidecar_endpoint_breaker_state", &bad),
        Some(1.0),
        "open: {text}"
    );
    assert_eq!(
        metric(&parsed, "meshwork_breaker_open", &[("upstream", "lif")]),
        Some(1.0),
        "{text}"
    );
    let trips: f64 = parsed
        .iter()
        .filter(|(name, labels, _)| {
            name == "meshwork_breaker_trips_total"
                && bad[..1]
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, value)| value)
        .sum();
    assert_eq!(trips, 1.0, "{text}");
    let retries = metric(
        &parsed,
        "meshwork_retry_retries_total",
        &[("upstream", "lif")],
    );
    assert!(retries.is_some_and(|r| r >= 1.0), "{text}");
    assert_eq!(
        metric(
            &parsed,
            "meshwork_sidecar_requests_total",
            &[
                ("upstream", "lif"),
                ("endpoint", &*bad2.addr.to_string()),
                ("class", "retryable")
            ]
        ),
        Some(bad_hits as f64),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_refuses_new_and_exits_zero() {
    let backend = Backend::start("a").await;
    // No drain delay: accepting stops at once.
    let mut sidecar = Sidecar::with_config(&format!(
        r#"
        drain_delay = "0s"
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;
    let url = sidecar.url("/slow/3000");
    let slow = tokio::spawn(async move { get(&url).await });
    // Wait until the slow request reached the backend.
    tokio::time::timeout(Duration::from_secs(10), async {
        while backend.hits() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the slow request reaches the backend");

    sidecar.signal("TERM");
    // New connections are refused promptly (the listener is closed at once).
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if TcpStream::connect(sidecar.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "new connections were still accepted");
    assert!(
        sidecar.alive(),
        "exited before the in-flight request finished"
    );

    let (status, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow done");
    let exit = tokio::time::timeout(Duration::from_secs(10), sidecar.child.wait())
        .await
        .expect("exits after draining")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// Issue 13, drain on SIGTERM: `/ready` fails at once; for `drain_delay` (2 s here) new
/// connections and requests are still served (the application's own calls during its shutdown);
/// then the listener closes and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_ready_at_once_and_serves_during_drain_delay() {
    let backend = Backend::start("a").await;
    let mut sidecar = Sidecar::with_config(&format!(
        r#"
        drain_delay = "2s"
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;
    assert_eq!(get(&sidecar.admin_url("/ready")).await.0, StatusCode::OK);
    sidecar.signal("TERM");
    let start = std::time::Instant::now();
    let not_ready = loop {
        let (status, _) = get(&sidecar.admin_url("/ready")).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(1), "/ready still 200");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // New connections (a fresh client each time) during the delay are served.
    let mut served = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let (status, body) = get(&sidecar.url("/hello")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello from a"[..]));
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while TcpStream::connect(sidecar.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    })
    .await
    .expect("the listener closes after drain_delay");
    let exit = tokio::time::timeout(Duration::from_secs(10), sidecar.child.wait())
        .await
        .expect("exits after draining")
        .unwrap();
    eprintln!(
        "drain: /ready 503 after {not_ready:?}; {served} requests served during the delay; \
         listener closed after {closed:?}"
    );
    assert!(not_ready < Duration::from_millis(500), "{not_ready:?}");
    assert!(served >= 10, "{served}");
    assert!(closed >= Duration::from_millis(1900), "{closed:?}");
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_connections_are_capped() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [listener]
        idle_timeout = "1s"
        max_connections = 1
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    // First connection: one keep-alive request, then idle.
    let mut first = TcpStream::connect(sidecar.addr).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // Second connection while the first holds the only slot: not served yet.
    let mut second = TcpStream::connect(sidecar.addr).await.unwrap();
    second.write_all(request).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(200), second.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond max_connections");

    // The idle first connection is closed by the proxy...
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), first.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed")
        .unwrap();
    // ...which frees the slot for the second.
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("the waiting connection is served once a slot frees")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(backend.hits(), 2);
}

/// Reads one response head and its `content-length` body from `s` (enough for these tests).
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if out.len() >= end + 4 + len {
                return text.into_owned();
            }
        }
    }
}

/// How long until the peer closes `s` (reading and discarding anything it sends).
async fn time_to_close(s: &mut TcpStream, patience: Duration) -> Duration {
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(patience, s.read_to_end(&mut rest))
        .await
        .expect("the sidecar closes the connection")
        .unwrap();
    start.elapsed()
}

/// Issue 13: the keep-alive idle timeout is `idle_timeout`, not the header-read timer. With
/// `header_read_timeout = "1s"` and `idle_timeout = "4s"`: a connection idle for 2 s between
/// requests is still served, and is closed about 4 s after its last response; a connection that
/// sends nothing is closed after about 1 s; a head that starts after an idle spell and stalls is
/// cut off about 1 s after its first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_survives_the_header_timeout_and_closes_at_idle_timeout() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [listener]
        header_read_timeout = "1s"
        idle_timeout = "4s"
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    let kept = async {
        let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        s.write_all(request).await.unwrap();
        let res = read_response(&mut s).await;
        assert!(res.starts_with("HTTP/1.1 200"), "idle 2 s, then: {res:?}");
        time_to_close(&mut s, Duration::from_secs(20)).await
    };
    let silent = async {
        let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
        time_to_close(&mut s, Duration::from_secs(20)).await
    };
    let stalled = async {
        let mut s = TcpStream::connect(sidecar.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        time_to_close(&mut s, Duration::from_secs(20)).await
    };
    let (kept, silent, stalled) = tokio::join!(kept, silent, stalled);
    eprintln!(
        "kept-alive closed {kept:?} after its last response; silent {silent:?}; stalled head {stalled:?}"
    );
    assert!(
        kept >= Duration::from_millis(3800) && kept < Duration::from_millis(6000),
        "{kept:?}"
    );
    assert!(
        silent >= Duration::from_millis(900) && silent < Duration::from_millis(2500),
        "{silent:?}"
    );
    assert!(
        stalled >= Duration::from_millis(900) && stalled < Duration::from_millis(2500),
        "{stalled:?}"
    );
    assert_eq!(backend.hits(), 3);
}

/// Issue 13, the admin listener's limits (`admin_limits`): a silent connection is cut after the
/// header timeout, a kept-alive one closed after the idle timeout, and beyond `max_connections`
/// a connection waits until a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_has_a_header_timeout_an_idle_timeout_and_a_connection_cap() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        admin_limits = {{ header_read_timeout = "500ms", idle_timeout = "1500ms", max_connections = 2 }}
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        "#,
        backend.addr
    ))
    .await;
    let live = b"GET /live HTTP/1.1\r\nHost: admin\r\n\r\n";

    let mut silent = TcpStream::connect(sidecar.admin).await.unwrap();
    let silent_closed = time_to_close(&mut silent, Duration::from_secs(10)).await;

    let mut kept = TcpStream::connect(sidecar.admin).await.unwrap();
    kept.write_all(live).await.unwrap();
    assert!(read_response(&mut kept).await.starts_with("HTTP/1.1 200"));
    let mut second = TcpStream::connect(sidecar.admin).await.unwrap();
    second.write_all(live).await.unwrap();
    assert!(read_response(&mut second).await.starts_with("HTTP/1.1 200"));
    // Both slots are held by kept-alive connections: a third waits.
    let mut third = TcpStream::connect(sidecar.admin).await.unwrap();
    third.write_all(live).await.unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond admin_limits.max_connections");
    let kept_closed = time_to_close(&mut kept, Duration::from_secs(10)).await;
    let res = tokio::time::timeout(Duration::from_secs(5), read_response(&mut third))
        .await
        .expect("served once a slot frees");
    assert!(res.starts_with("HTTP/1.1 200"), "{res:?}");
    eprintln!(
        "admin: silent closed after {silent_closed:?}; kept-alive closed {kept_closed:?} after the third connected"
    );
    assert!(
        silent_closed >= Duration::from_millis(400) && silent_closed < Duration::from_secs(2),
        "{silent_closed:?}"
    );
    // Idle 1.5 s from its response; 0.3 s of it had passed before the wait started.
    assert!(
        kept_closed >= Duration::from_millis(900) && kept_closed < Duration::from_secs(3),
        "{kept_closed:?}"
    );
}

/// Runs a sidecar with `args` and `RUST_LOG=off`, makes the requests of `traffic` against its
/// address, stops it, and returns its access-log lines (its whole stderr: nothing else is logged).
async fn access_lines<F, Fut>(args: &[&str], traffic: F) -> Vec<String>
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut child = tokio::process::Command::new(sidecar_bin())
        .args(args)
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
        .await
        .unwrap();
    let addr = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    traffic(addr).await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Issue 13, the stream idle timeout: with `stream_idle_timeout = "1s"`, a response that stalls
/// after its first byte is cut about 1 s later (both sides), while a response that sends a byte
/// every 500 ms lives for its whole 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_is_closed_after_the_stream_idle_timeout() {
    let backend = Backend::start("a").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [listener]
        stream_idle_timeout = "1s"
        [[routes]]
        upstream = "a"
        [upstreams.a]
        discovery = {{ kind = "static", endpoints = ["{}"] }}
        timeouts = {{ total = "30s" }}
        "#,
        backend.addr
    ))
    .await;
    for h2 in [false, true] {
        let c = if h2 { h2_client() } else { client() };
        let res = c
            .request(Request::get(sidecar.url("/stall")).body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "x");
        let start = std::time::Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the stalled stream is closed");
        let took = start.elapsed();
        eprintln!("stream idle (h2 {h2}): closed after {took:?}: {end:?}");
        assert!(
            matches!(end, Some(Err(_))),
            "the stream must end in an error, not look complete: {end:?}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "{took:?}"
        );

        let start = std::time::Instant::now();
        let res = c
            .request(Request::get(sidecar.url("/drip/6")).body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(body_bytes(res).await, "dddddd");
        assert!(start.elapsed() >= Duration::from_millis(2900));
    }
}

/// Issue 13, the access log: one structured line per request (logfmt by default, JSON
/// selectable) with request id (the client's, or generated and forwarded), method, authority,
/// path, route, upstream, endpoint, status, tries, bytes in and out, duration and the reason of a
/// local error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_carry_every_field() {
    let backend = Backend::start("a").await;
    let ep = backend.addr.to_string();
    let lines = access_lines(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--access-log",
            "--upstream",
            &ep,
        ],
        |addr| async move {
            let res = client()
                .request(
                    Request::get(format!("http://{addr}/logged"))
                        .header("x-request-id", "req-1")
                        .body(empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            body_bytes(res).await;
            let res = client()
                .request(
                    Request::post(format!("http://{addr}/count"))
                        .header("x-request-id", "req-2")
                        .body(http_body_util::Full::new(Bytes::from_static(b"12345")).boxed())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(body_bytes(res).await, "5");
            let (status, _) = get(&format!("http://{addr}/status/503")).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            let bad = raw(
                addr,
                b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nx-request-id: req-4\r\nConnection: close\r\n\r\n",
            )
            .await;
            assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
            // No id from the client: one is generated, forwarded, and logged.
            let (_, seen) = get(&format!("http://{addr}/headers")).await;
            let seen = String::from_utf8(seen.to_vec()).unwrap();
            let id = seen
                .lines()
                .find_map(|l| l.strip_prefix("x-request-id: "))
                .unwrap_or_else(|| panic!("no x-request-id forwarded: {seen}"));
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        },
    )
    .await;
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let field = |line: &str, key: &str| -> String {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            .to_owned()
    };
    for line in &lines {
        for key in [
            "ts",
            "request_id",
            "client",
            "method",
            "authority",
            "path",
            "route",
            "upstream",
            "endpoint",
            "status",
            "tries",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "error",
        ] {
            field(line, key);
        }
        assert!(field(line, "duration_ms").parse::<f64>().unwrap() >= 0.0);
    }
    let l = &lines[0];
    assert_eq!(field(l, "request_id"), "req-1");
    assert_eq!(field(l, "method"), "GET");
    assert_eq!(field(l, "path"), "/logged");
    assert!(field(l, "authority").starts_with("127.0.0.1:"), "{l}");
    assert_eq!(field(l, "route"), "0");
    assert_eq!(field(l, "upstream"), "default");
    assert_eq!(field(l, "endpoint"), ep);
    assert_eq!(
        (field(l, "status"), field(l, "tries")),
        ("200".into(), "1".into())
    );
    assert_eq!(field(l, "bytes_out"), "12", "hello from a");
    assert_eq!(field(l, "error"), "-");
    let l = &lines[1];
    assert_eq!(field(l, "request_id"), "req-2");
    assert_eq!(field(l, "method"), "POST");
    assert_eq!(
        (field(l, "bytes_in"), field(l, "bytes_out")),
        ("5".into(), "1".into())
    );
    // A 503 is retried (GET): the upstream's answer after every try, no local error.
    let l = &lines[2];
    assert_eq!(
        (field(l, "status"), field(l, "tries")),
        ("503".into(), "3".into())
    );
    assert_eq!(field(l, "error"), "-");
    let l = &lines[3];
    assert_eq!(field(l, "request_id"), "req-4");
    assert_eq!(field(l, "status"), "400");
    assert!(l.contains(" error=\"more than one Host header\" "), "{l}");
    assert_eq!(
        (
            field(l, "route"),
            field(l, "upstream"),
            field(l, "endpoint"),
            field(l, "tries")
        ),
        ("-".into(), "-".into(), "-".into(), "0".into())
    );
    assert_eq!(field(&lines[4], "request_id").len(), 32);

    // JSON, from a configuration file.
    let path = temp_file(
        "access.toml",
        &format!(
            r#"
            access_log = true
            access_log_format = "json"
            [[routes]]
            upstream = "a"
            [upstreams.a]
            discovery = {{ kind = "static", endpoints = ["{ep}"] }}
            "#
        ),
    );
    let lines = access_lines(
        &[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        |addr| async move {
            let res = client()
                .request(
                    Request::get(format!("http://{addr}/json"))
                        .header("x-request-id", "j\"1")
                        .body(empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(body_bytes(res).await, "hello from a");
        },
    )
    .await;
    let _ = std::fs::remove_file(path);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let l = &lines[0];
    assert!(
        l.starts_with("{\"ts\":") && l.ends_with("\"kind\":\"access\"}"),
        "{l}"
    );
    for part in [
        "\"request_id\":\"j\\\"1\"",
        "\"method\":\"GET\"",
        "\"path\":\"/json\"",
        "\"route\":0",
        "\"upstream\":\"a\"",
        &format!("\"endpoint\":\"{ep}\""),
        "\"status\":200",
        "\"tries\":1",
        "\"bytes_in\":0",
        "\"bytes_out\":12",
        "\"error\":null",
    ] {
        assert!(l.contains(part), "{part} not in {l}");
    }
}

/// DNS discovery (system resolver): endpoints appear once resolved; a name that does not resolve
/// leaves the upstream without endpoints, which answers 503 and keeps `/ready` at 503.
#[cfg(feature = "dns")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_and_no_endpoint_503() {
    let backend = Backend::start("dns").await;
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        path_prefix = "/nowhere"
        upstream = "nowhere"
        [[routes]]
        upstream = "local"
        [upstreams.nowhere]
        discovery = {{ kind = "dns", name = "nothing.invalid", port = 80, refresh = "1s" }}
        [upstreams.local]
        discovery = {{ kind = "dns", name = "localhost", port = {}, refresh = "1s" }}
        "#,
        backend.addr.port()
    ))
    .await;

    let (status, body) = get(&sidecar.url("/nowhere/x")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "no endpoint available for this upstream\n");

    // `localhost` resolves in the background; /ready turns 200 once it has.
    tokio::time::timeout(Duration::from_secs(10), async {
        while get(&sidecar.admin_url("/ready")).await.0 != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("ready once localhost resolved");
    let (_, json) = get(&sidecar.admin_url("/endpoints")).await;
    let json = String::from_utf8(json.to_vec()).unwrap();
    assert!(
        json.contains(&format!("\"address\":\"{}\"", backend.addr)),
        "{json}"
    );
    assert!(
        json.contains("{\"name\":\"nowhere\",\"active\":0,\"pending\":0,\"endpoints\":[]}"),
        "{json}"
    );
    if json.matches("\"address\"").count() == 1 {
        assert_eq!(get(&sidecar.url("/")).await.1, "hello from dns");
    }
    let (status, _) = get(&sidecar.url("/nowhere/x")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// A removed endpoint's series leave `/metrics`: the per-endpoint families are rendered for the
/// endpoints of the current set only, so endpoint churn never grows the page.
///
/// Before the fix (issue 12, defect 12), every endpoint ever seen kept its series (a histogram,
/// four counters, two gauges) forever.
#[cfg(feature = "file")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_12_12_a_removed_endpoint_leaves_the_metrics_page() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let both = format!(r#"[{{"addr": "{}"}}, {{"addr": "{}"}}]"#, a.addr, b.addr);
    let list = sidecar_support::temp_file("endpoints.json", &both);
    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        upstream = "churn"
        [upstreams.churn]
        discovery = {{ kind = "file", path = "{}" }}
        "#,
        list.display()
    ))
    .await;
    for _ in 0..20 {
        assert_eq!(get(&sidecar.url("/x")).await.0, StatusCode::OK);
    }
    let series = |text: &str, addr: std::net::SocketAddr| {
        let label = format!("endpoint=\"{addr}\"");
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&label))
            .count()
    };
    let page = || async {
        let (_, text) = get(&sidecar.admin_url("/metrics")).await;
        String::from_utf8(text.to_vec()).unwrap()
    };
    let text = page().await;
    // 4 classes + 12 buckets + sum + count + in flight + breaker state.
    assert_eq!(series(&text, a.addr), 20, "{text}");
    assert_eq!(series(&text, b.addr), 20, "{text}");

    // Discovery removes b (an atomic rename, as a deploy tool writes it).
    let next =
        sidecar_support::temp_file("endpoints.json", &format!(r#"[{{"addr": "{}"}}]"#, a.addr));
    std::fs::rename(&next, &list).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = page().await;
        if series(&text, b.addr) == 0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b is still listed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(series(&text, a.addr), 20, "{text}");
    assert!(!text.contains(&b.addr.to_string()), "{text}");
    for _ in 0..5 {
        assert_eq!(get(&sidecar.url("/x")).await.0, StatusCode::OK);
    }
    let _ = std::fs::remove_file(&list);
}
