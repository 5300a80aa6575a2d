//! Shared helpers of the sidecar integration tests: spawn the sidecar process, run loopback
//! backends, and talk HTTP to both.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

pub type Body = BoxBody<Bytes, hyper::Error>;
pub type TestBody = BoxBody<Bytes, Infallible>;

/// The sidecar example binary, built by `cargo test --all-features`.
pub fn sidecar_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = dir
        .join("examples")
        .join(format!("sidecar{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --all-features` (or build it first with \
         `cargo build --all-features --example sidecar`)",
        bin.display()
    );
    // `cargo test --test sidecar` does not rebuild examples: refuse to test a stale binary.
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest = newest_source(&root.join("examples/sidecar"))
        .max(newest_source(&root.join("src")))
        .expect("sources exist");
    assert!(
        built >= newest,
        "{} is older than its sources: rebuild it with `cargo build --all-features --example \
         sidecar` (or run `cargo test --all-features`, which builds examples)",
        bin.display()
    );
    bin
}

fn newest_source(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_source(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// Writes `text` to a fresh file in the temp directory.
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "meshwork-sidecar-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// A running sidecar process, killed when dropped.
pub struct Sidecar {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Sidecar {
    /// Starts the sidecar with `args` and waits for its `listening on … admin …` line.
    pub async fn spawn(args: &[&str]) -> Sidecar {
        let mut child = Command::new(sidecar_bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the sidecar");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the sidecar prints its addresses within 30 s")
        .expect("read stdout");
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words.len() == 5 && words[0] == "listening" && words[3] == "admin",
            "unexpected first line: {line:?}"
        );
        Sidecar {
            child,
            addr: words[2].parse().expect("proxy address"),
            admin: words[4].parse().expect("admin address"),
        }
    }

    /// The simple case in front of `upstreams`, every port chosen by the OS.
    pub async fn simple(upstreams: &[SocketAddr]) -> Sidecar {
        let list = upstreams
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        Self::spawn(&[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--upstream",
            &list,
        ])
        .await
    }

    /// Starts from a config file holding `toml`, ports chosen by the OS.
    pub async fn with_config(toml: &str) -> Sidecar {
        let path = temp_file("sidecar.toml", toml);
        let sidecar = Self::spawn(&[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .await;
        // Read at start; no longer needed once the sidecar listens.
        let _ = std::fs::remove_file(path);
        sidecar
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

/// A loopback backend (HTTP/1.1 and h2c) that counts the requests it answers.
///
/// - `/ws`: answers 101 to an upgrade and echoes the upgraded connection's bytes;
/// - `/echo`: streams the request body back (its trailers too, declared as the request did);
/// - `/stall`: one byte, then nothing, never ending;
/// - `/drip/N`: N one-byte chunks, 500 ms apart;
/// - `…/trailers`: `with trailers`, then the trailer `x-checksum: abc123` (declared in `Trailer`);
/// - `/count`: reads the whole request body, answers its length;
/// - `/headers`: the request's headers, one `name: value` line each, sorted;
/// - `/chunked`: 64 chunks of 1000 bytes, streamed without a length;
/// - `…/slow/MS`: answers after MS milliseconds;
/// - `/status/CODE`: answers CODE;
/// - `/hop`: answers with hop-by-hop headers (`Connection: x-internal`, `X-Internal`, …);
/// - anything else: `hello from NAME`.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The body `/chunked` sends.
pub fn chunked_payload() -> Vec<u8> {
    (0..64u32)
        .flat_map(|i| std::iter::repeat_n(b'a' + (i % 26) as u8, 1000))
        .collect()
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        Self::start_inner(name, None).await
    }

    /// A backend that answers every request with `status` (and counts it).
    pub async fn failing(name: &'static str, status: u16) -> Backend {
        Self::start_inner(name, Some(StatusCode::from_u16(status).unwrap())).await
    }

    async fn start_inner(name: &'static str, always: Option<StatusCode>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let fail = always.map(|status| {
                            let mut res = Response::new(
                                Full::new(Bytes::from(format!("{name} fails")))
                                    .map_err(|n| match n {})
                                    .boxed(),
                            );
                            *res.status_mut() = status;
                            res
                        });
                        async move {
                            match fail {
                                Some(res) => Ok(res),
                                None => backend_handle(name, req).await,
                            }
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend { addr, hits, task }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn backend_handle(
    name: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let full = |s: String| Full::new(Bytes::from(s)).map_err(|n| match n {}).boxed();
    let res = if path == "/ws" {
        // A WebSocket-style upgrade (no handshake checks): echoes every byte once upgraded.
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .body(full(String::new()))
            .unwrap()
    } else if path == "/echo" {
        // Request trailers come back as response trailers: declare them as the request did.
        let declared = req.headers().get(http::header::TRAILER).cloned();
        let mut res = Response::new(req.into_body().boxed());
        if let Some(declared) = declared {
            res.headers_mut().insert(http::header::TRAILER, declared);
        }
        res
    } else if path == "/stall" {
        // One chunk, then silence (the response never ends).
        let first = futures_util::stream::iter([Ok::<_, hyper::Error>(Frame::data(
            Bytes::from_static(b"x"),
        ))]);
        let stream = futures_util::StreamExt::chain(first, futures_util::stream::pending());
        Response::new(StreamBody::new(stream).boxed())
    } else if let Some(n) = path.strip_prefix("/drip/") {
        // N chunks, 500 ms apart.
        let n: u32 = n.parse().unwrap();
        let stream = futures_util::stream::unfold(0, move |i| async move {
            (i < n).then_some(())?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some((
                Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"d"))),
                i + 1,
            ))
        });
        Response::new(StreamBody::new(stream).boxed())
    } else if path.ends_with("/trailers") {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "abc123".parse().unwrap());
        let frames = vec![
            Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"with trailers"))),
            Ok(Frame::trailers(trailers)),
        ];
        Response::builder()
            .header(http::header::TRAILER, "x-checksum")
            .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
            .unwrap()
    } else if path == "/headers" {
        let mut lines: Vec<String> = req
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        lines.sort();
        Response::new(full(lines.join("\n")))
    } else if path == "/chunked" {
        let chunks = chunked_payload()
            .chunks(1000)
            .map(|c| Ok::<_, hyper::Error>(Frame::data(Bytes::copy_from_slice(c))))
            .collect::<Vec<_>>();
        let stream = futures_util::stream::iter(chunks);
        Response::new(StreamBody::new(stream).boxed())
    } else if path == "/count" {
        match req.into_body().collect().await {
            Ok(body) => Response::new(full(body.to_bytes().len().to_string())),
            Err(_) => {
                let mut res = Response::new(full("body error".into()));
                *res.status_mut() = StatusCode::BAD_REQUEST;
                res
            }
        }
    } else if path == "/hop" {
        Response::builder()
            .header("connection", "x-internal")
            .header("x-internal", "secret")
            .header("proxy-authenticate", "Basic")
            .header("keep-alive", "timeout=5")
            .header("x-public", "yes")
            .body(full("hop".into()))
            .unwrap()
    } else if let Some((_, ms)) = path.split_once("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        Response::new(full("slow done".into()))
    } else if let Some(code) = path.strip_prefix("/status/") {
        let mut res = Response::new(full(format!("status {code}")));
        *res.status_mut() = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        res
    } else {
        Response::new(full(format!("hello from {name}")))
    };
    Ok(res)
}

/// The HTTP client of the tests.
pub type TestClient = Client<HttpConnector, TestBody>;

/// An HTTP/1.1 client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 prior-knowledge client.
pub fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

pub fn empty() -> TestBody {
    Full::new(Bytes::new()).boxed()
}

/// GETs `url`, returning status and body.
pub async fn get(url: &str) -> (StatusCode, Bytes) {
    let res = client()
        .request(Request::get(url).body(empty()).unwrap())
        .await
        .expect("request");
    let status = res.status();
    (status, body_bytes(res).await)
}

/// The whole body of `res`.
pub async fn body_bytes(res: Response<Incoming>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

/// Writes `raw` on a fresh connection and reads until the server closes it (10 s at most).
pub async fn raw(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}
