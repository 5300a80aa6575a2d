//! The meshwork demo: three backends (healthy; slow; flaky with 30 % 503), the meshwork sidecar in
//! front of them, and two clients driving the same load for about ten seconds — one through the
//! sidecar, one plain round robin straight to the backends. Then a summary: success rate and
//! latency for each, and how each split its traffic.
//!
//! Everything runs in this process, on 127.0.0.1 only. Run with `cargo run --release --example demo`.
//! Same seed, same story: the flaky backend fails the same requests every run.

#![allow(dead_code)]

#[path = "sidecar/access.rs"]
mod access;
#[path = "sidecar/admin.rs"]
mod admin;
#[path = "sidecar/app.rs"]
mod app;
#[path = "sidecar/client_body.rs"]
mod client_body;
#[path = "sidecar/config.rs"]
mod config;
#[path = "sidecar/conn.rs"]
mod conn;
#[path = "sidecar/headers.rs"]
mod headers;
#[path = "sidecar/limits.rs"]
mod limits;
#[path = "sidecar/live_metrics.rs"]
mod live_metrics;
#[path = "sidecar/proxy.rs"]
mod proxy;
#[path = "sidecar/request_metrics.rs"]
mod request_metrics;
#[path = "sidecar/stream_idle.rs"]
mod stream_idle;
#[path = "sidecar/upstream.rs"]
mod upstream;

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// How long each client drives load.
const RUN: Duration = Duration::from_secs(10);
/// Requests per second, per client.
const RATE: u32 = 100;
/// Each client gives up on a request after this long (the sidecar's own total timeout is the same).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Healthy,
    Slow,
    Flaky,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Healthy => "healthy",
            Kind::Slow => "slow (250 ms)",
            Kind::Flaky => "flaky (30 % 503)",
        }
    }
}

/// Requests a backend received, by which client sent them.
#[derive(Default)]
struct Hits {
    mesh: AtomicUsize,
    plain: AtomicUsize,
}

/// A deterministic "random" decision for the n-th request: SplitMix64 of n, seeded.
fn flaky_fails(seed: u64, n: u64) -> bool {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 100 < 30
}

async fn backend(kind: Kind, hits: Arc<Hits>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seq = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (hits, seq) = (hits.clone(), seq.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (hits, seq) = (hits.clone(), seq.clone());
                    async move {
                        let counter = if req.headers().contains_key("x-demo-plain") {
                            &hits.plain
                        } else {
                            &hits.mesh
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        // A little work for everyone, so the healthy backend is not free.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        let status = match kind {
                            Kind::Healthy => StatusCode::OK,
                            Kind::Slow => {
                                tokio::time::sleep(Duration::from_millis(250)).await;
                                StatusCode::OK
                            }
                            Kind::Flaky => {
                                if flaky_fails(42, seq.fetch_add(1, Ordering::Relaxed)) {
                                    StatusCode::SERVICE_UNAVAILABLE
                                } else {
                                    StatusCode::OK
                                }
                            }
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"hello\n")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// What one client saw.
#[derive(Default)]
struct Outcomes {
    ok: usize,
    failed: usize,
    latencies: Vec<Duration>,
}

impl Outcomes {
    fn record(&mut self, ok: bool, latency: Duration) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        self.latencies.push(latency);
    }

    fn total(&self) -> usize {
        self.ok + self.failed
    }

    fn success(&self) -> f64 {
        100.0 * self.ok as f64 / self.total().max(1) as f64
    }

    fn mean(&self) -> Duration {
        let n = u32::try_from(self.latencies.len().max(1)).unwrap_or(u32::MAX);
        self.latencies.iter().sum::<Duration>() / n
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i]
    }
}

type Plain = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// Sends one GET with the client's own timeout; `true` for a 2xx.
async fn get(client: &Plain, uri: http::Uri, plain: bool) -> bool {
    let mut req = Request::get(uri).body(Empty::new()).unwrap();
    if plain {
        req.headers_mut()
            .insert("x-demo-plain", http::HeaderValue::from_static("1"));
    }
    let send = async {
        let res = client.request(req).await.ok()?;
        let ok = res.status().is_success();
        res.into_body().collect().await.ok()?;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(CLIENT_TIMEOUT, send).await,
        Ok(Some(true))
    )
}

/// Drives `RATE` requests per second for `RUN`; the `n`-th request goes to `target(n)`.
async fn drive(
    target: impl Fn(u64) -> http::Uri + Send + Sync + 'static,
    plain: bool,
    outcomes: Arc<Mutex<Outcomes>>,
) {
    let client: Plain = Client::builder(TokioExecutor::new()).build_http();
    let target = Arc::new(target);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + RUN;
    let mut n = 0;
    let mut inflight = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tick.tick().await;
        let (client, target, outcomes) = (client.clone(), target.clone(), outcomes.clone());
        inflight.spawn(async move {
            let start = Instant::now();
            let ok = get(&client, target(n), plain).await;
            outcomes.lock().unwrap().record(ok, start.elapsed());
        });
        n += 1;
    }
    while inflight.join_next().await.is_some() {}
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), meshwork::BoxError> {
    println!(
        "meshwork demo: three backends, the meshwork sidecar, two clients, {} s\n",
        RUN.as_secs()
    );
    let kinds = [Kind::Healthy, Kind::Slow, Kind::Flaky];
    let mut backends = Vec::new();
    for kind in kinds {
        let hits = Arc::new(Hits::default());
        let addr = backend(kind, hits.clone()).await?;
        println!("  backend {:<18} on {addr}", kind.name());
        backends.push((kind, addr, hits));
    }

    let mut config = config::Config::simple(
        "127.0.0.1:0".parse()?,
        backends.iter().map(|(_, addr, _)| *addr).collect(),
    )?;
    config.admin = "127.0.0.1:0".parse()?;
    // Same seed, same story: P2C picks and jitter are reproducible.
    config.seed = Some(42);
    let sidecar = app::start(config, true).await?;
    println!(
        "  sidecar on {} (admin {}: try /metrics and /endpoints)\n",
        sidecar.listen, sidecar.admin
    );

    let mesh = Arc::new(Mutex::new(Outcomes::default()));
    let plain = Arc::new(Mutex::new(Outcomes::default()));
    let via_sidecar: http::Uri = format!("http://{}/hello", sidecar.listen).parse()?;
    let direct: Vec<http::Uri> = backends
        .iter()
        .map(|(_, addr, _)| format!("http://{addr}/hello").parse())
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let runs = tokio::spawn({
        let (mesh, plain) = (mesh.clone(), plain.clone());
        async move {
            tokio::join!(
                drive(move |_| via_sidecar.clone(), false, mesh),
                drive(
                    move |n| direct[n as usize % direct.len()].clone(),
                    true,
                    plain
                ),
            )
        }
    });

    // The live progress line.
    while !runs.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (m, p) = (mesh.lock().unwrap(), plain.lock().unwrap());
        print!(
            "\r  {:>4.1} s   meshwork: {:>5} done, {:>5.1} % ok   round robin: {:>5} done, {:>5.1} % ok ",
            started.elapsed().as_secs_f64().min(RUN.as_secs_f64()),
            m.total(),
            m.success(),
            p.total(),
            p.success()
        );
        let _ = std::io::stdout().flush();
    }
    runs.await?;
    println!("\n");

    let m = std::mem::take(&mut *mesh.lock().unwrap());
    let p = std::mem::take(&mut *plain.lock().unwrap());
    println!("| client | requests | success | mean | p50 | p90 | p99 |");
    println!("|---|---|---|---|---|---|---|");
    for (name, o) in [("meshwork sidecar", &m), ("plain round robin", &p)] {
        println!(
            "| {name} | {} | {:.1} % | {} | {} | {} | {} |",
            o.total(),
            o.success(),
            ms(o.mean()),
            ms(o.percentile(50.0)),
            ms(o.percentile(90.0)),
            ms(o.percentile(99.0))
        );
    }
    println!("\nHow each client's requests reached the backends (tries, retries included):\n");
    println!("| backend | via the meshwork sidecar | plain round robin |");
    println!("|---|---|---|");
    let (mesh_total, plain_total): (usize, usize) =
        backends.iter().fold((0, 0), |acc, (_, _, h)| {
            (
                acc.0 + h.mesh.load(Ordering::Relaxed),
                acc.1 + h.plain.load(Ordering::Relaxed),
            )
        });
    for (kind, _, hits) in &backends {
        let (mh, ph) = (
            hits.mesh.load(Ordering::Relaxed),
            hits.plain.load(Ordering::Relaxed),
        );
        println!(
            "| {} | {mh} ({:.1} %) | {ph} ({:.1} %) |",
            kind.name(),
            100.0 * mh as f64 / mesh_total.max(1) as f64,
            100.0 * ph as f64 / plain_total.max(1) as f64
        );
    }
    let verdict = if m.success() > p.success() {
        "above"
    } else {
        "NOT above"
    };
    println!(
        "\nmeshwork's success rate ({:.1} %) is {verdict} round robin's ({:.1} %): retries moved the flaky \
         backend's 503s elsewhere, and peak-EWMA balancing and the circuit breaker kept traffic off \
         the slow and failing backends.",
        m.success(),
        p.success()
    );
    sidecar.shutdown().await;
    Ok(())
}
