//! Balancing quality: Linkerd's "beyond round robin" experiment on virtual time.
//!
//! Eleven simulated endpoints answer with log-normal latencies (medians spread from 10 to 30 ms,
//! σ = 0.5). Clients send requests at a fixed rate (open loop: a request is sent on schedule
//! whatever happened to the previous ones), each bounded by a 1 s timeout. Three ways to spread them
//! are compared:
//!
//! - **round robin** — each request to the next endpoint in turn;
//! - **tower p2c + PeakEwma** — tower's `Balance` over `PeakEwma` endpoints, behind a `Buffer`
//!   (tower's balancer takes `&mut self`, so concurrent callers need one);
//! - **meshwork stack** — deadline (1 s) → retry with budget → P2C over peak EWMA → per endpoint
//!   [circuit breaker → per-try timeout], with every setting at its default except the per-try
//!   timeout.
//!
//! Scenarios:
//!
//! - **baseline** — every endpoint healthy;
//! - **slow endpoint** — endpoint 0 takes 2 s to answer during the middle third of the run;
//! - **failing endpoint** — endpoint 0 answers every request with an error after 1 ms (an HTTP
//!   503 from a broken instance), the whole run.
//!
//! For each, the caller's latency (p50, p99, p99.9, over *all* requests: a request that timed out
//! counts at 1 s, one that failed at the time it failed), the success rate, the p99.9 of the
//! requests sent during the middle third alone (the slow window, where 1 request in 1,000 is 20
//! of them) and the share of tries that reached the faulty endpoint (retries included). "healthy p99.9" is the p99.9 of the service time measured *at*
//! the healthy endpoints: the best a balancer could offer. The goal: under the slow endpoint, the
//! stack's p99.9 stays within 2× of it, where round robin's does not.
//!
//! Everything runs on a current-thread runtime with tokio's clock paused: sleeping endpoints advance
//! virtual time, so a 60 s run takes a few seconds, and the result depends only on the seed.
//! Latencies are whole milliseconds (tokio's timer resolution). The endpoints do not queue: their
//! latency does not grow with their load, so this measures how a strategy routes around a bad
//! endpoint, not how it spreads load across saturated ones.
//!
//! ```text
//! cargo run --release --example balance_quality -- [--seed 1] [--rate 1000] [--secs 60] [--per-try-timeout-ms 300]
//! ```
//!
//! or `bench/balance-quality.sh`.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Parser;
use meshwork::BoxError;
use meshwork::client::ClientBuilder;
use meshwork::discover::{Endpoint, Static};
use meshwork::rng::SeedSource;
use rand::RngExt;
use rand::rngs::SmallRng;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// Command-line settings.
#[derive(Parser, Debug, Clone, Copy)]
#[command(about = "Balancing quality under a slow or failing endpoint, on virtual time")]
struct Args {
    /// Seed of every random choice (latencies, picks, jitter).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests per second, sent on a fixed schedule.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Length of each run in (virtual) seconds.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// The meshwork stack's per-try timeout, in milliseconds.
    #[arg(long, default_value_t = 300)]
    per_try_timeout_ms: u64,
}

/// Endpoints in the set; endpoint 0 is the one that misbehaves.
const ENDPOINTS: usize = 11;
/// The caller's bound on a request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// Log-normal shape of the healthy latencies.
const SIGMA: f64 = 0.5;

/// The request: a plain `Clone` type (the meshwork stack's deadline travels beside it).
#[derive(Clone, Debug, Default)]
struct Req;

/// What endpoint 0 does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// 2 s answers during the middle third of the run.
    Slow,
    /// An error after 1 ms, the whole run.
    FailFast,
}

impl Fault {
    fn title(self) -> &'static str {
        match self {
            Fault::None => "baseline: all endpoints healthy",
            Fault::Slow => "slow endpoint: endpoint 0 answers in 2 s during the middle third",
            Fault::FailFast => "failing endpoint: endpoint 0 fails every request in 1 ms",
        }
    }
}

/// The error of the failing endpoint (classified as retryable, like a 503).
#[derive(Debug)]
struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("503 service unavailable")
    }
}

impl std::error::Error for Unavailable {}

/// What the endpoints observed during one run.
#[derive(Default)]
struct EndpointLog {
    /// Service times of the healthy endpoints, in ms.
    healthy_ms: Mutex<Vec<u64>>,
    /// Tries that reached each endpoint.
    tries: [AtomicU64; ENDPOINTS],
}

/// One simulated endpoint: always ready; answers after a seeded log-normal delay.
#[derive(Clone)]
struct SimEndpoint {
    id: usize,
    median_ms: f64,
    fault: Fault,
    /// Start and end of the slow window.
    slow: (Instant, Instant),
    rng: Arc<Mutex<SmallRng>>,
    log: Arc<EndpointLog>,
}

impl SimEndpoint {
    fn set(args: &Args, fault: Fault, log: &Arc<EndpointLog>) -> Vec<SimEndpoint> {
        let start = Instant::now();
        let third = Duration::from_secs(args.secs) / 3;
        let seeds = SeedSource::from_seed(args.seed);
        (0..ENDPOINTS)
            .map(|id| SimEndpoint {
                id,
                median_ms: 10.0 + 20.0 * id as f64 / (ENDPOINTS - 1) as f64,
                fault,
                slow: (start + third, start + 2 * third),
                rng: Arc::new(Mutex::new(seeds.rng())),
                log: log.clone(),
            })
            .collect()
    }

    fn latency(&self) -> Duration {
        let mut rng = self.rng.lock().unwrap();
        // Box–Muller: a standard normal from two uniforms.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let ms = self.median_ms * (SIGMA * z).exp();
        Duration::from_micros((ms * 1000.0) as u64).max(Duration::from_millis(1))
    }
}

impl Service<Req> for SimEndpoint {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        self.log.tries[self.id].fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let faulty = self.id == 0;
        let latency = self.latency();
        let log = self.log.clone();
        match self.fault {
            Fault::Slow if faulty && now >= self.slow.0 && now < self.slow.1 => Box::pin(async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok(())
            }),
            Fault::FailFast if faulty => Box::pin(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Err(Unavailable.into())
            }),
            _ => Box::pin(async move {
                tokio::time::sleep(latency).await;
                if !faulty {
                    let ms = now.elapsed().as_millis() as u64;
                    log.healthy_ms.lock().unwrap().push(ms);
                }
                Ok(())
            }),
        }
    }
}

/// Round robin over always-ready endpoints.
#[derive(Clone)]
struct RoundRobin {
    endpoints: Arc<Vec<SimEndpoint>>,
    next: Arc<AtomicUsize>,
}

impl Service<Req> for RoundRobin {
    type Response = ();
    type Error = BoxError;
    type Future = <SimEndpoint as Service<Req>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints[i].clone().call(req)
    }
}

/// tower's `Rng` over a seeded generator, so tower's picks are reproducible too.
struct TowerRng(SmallRng);

impl tower::util::rng::Rng for TowerRng {
    fn next_u64(&mut self) -> u64 {
        self.0.random()
    }
}

/// The endpoint address of simulated endpoint `id` (never dialled: it only names the endpoint).
fn addr(id: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 20_000 + id as u16))
}

#[derive(Clone, Copy, Debug)]
enum Strategy {
    RoundRobin,
    TowerP2c,
    Meshwork,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round robin",
            Strategy::TowerP2c => "tower p2c + PeakEwma",
            Strategy::Meshwork => "meshwork stack",
        }
    }
}

/// The outcome of one request, as the caller saw it.
#[derive(Clone, Copy)]
struct Sample {
    ms: u64,
    ok: bool,
    /// Sent during the middle third of the run (the slow endpoint's window).
    middle: bool,
}

/// Sends `rate × secs` requests on a fixed schedule through clones of `svc`, each bounded by the
/// client timeout, and returns what the callers saw.
async fn drive<S>(svc: S, args: &Args) -> Vec<Sample>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    let total = u64::from(args.rate) * args.secs;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / args.rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let third = Duration::from_secs(args.secs) / 3;
    for _ in 0..total {
        tick.tick().await;
        let mut svc = svc.clone();
        let sent = Instant::now();
        let middle = sent >= start + third && sent < start + 2 * third;
        tasks.spawn(async move {
            let res = tokio::time::timeout(CLIENT_TIMEOUT, async {
                svc.ready().await.map_err(Into::into)?;
                svc.call(Req).await.map_err(Into::into)
            })
            .await;
            Sample {
                ms: sent.elapsed().as_millis() as u64,
                ok: matches!(res, Ok(Ok(_))),
                middle,
            }
        });
    }
    let mut samples = Vec::with_capacity(total as usize);
    while let Some(s) = tasks.join_next().await {
        samples.push(s.expect("request task"));
    }
    samples
}

async fn run(strategy: Strategy, fault: Fault, args: &Args, log: &Arc<EndpointLog>) -> Vec<Sample> {
    let endpoints = SimEndpoint::set(args, fault, log);
    let seeds = SeedSource::from_seed(args.seed.wrapping_add(1));
    match strategy {
        Strategy::RoundRobin => {
            let rr = RoundRobin {
                endpoints: Arc::new(endpoints),
                next: Arc::new(AtomicUsize::new(0)),
            };
            drive(rr, args).await
        }
        Strategy::TowerP2c => {
            use tower::balance::p2c::Balance;
            use tower::discover::ServiceList;
            use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
            let discover = PeakEwmaDiscover::new::<Req>(
                ServiceList::new::<Req>(endpoints),
                Duration::from_millis(30),
                Duration::from_secs(10),
                CompleteOnResponse::default(),
            );
            let balance: Balance<_, Req> = Balance::from_rng(discover, TowerRng(seeds.rng()));
            let buffered = tower::buffer::Buffer::new(balance, 1024);
            drive(buffered, args).await
        }
        Strategy::Meshwork => {
            let client = ClientBuilder::new()
                .total_timeout(CLIENT_TIMEOUT)
                .per_try_timeout(Duration::from_millis(args.per_try_timeout_ms))
                .seed(seeds)
                .build(
                    Static::new((0..ENDPOINTS).map(|i| Endpoint::new(addr(i)))),
                    move |ep: &Endpoint| endpoints[usize::from(ep.addr().port() - 20_000)].clone(),
                )
                .expect("valid client");
            drive(client, args).await
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    println!(
        "{ENDPOINTS} endpoints (log-normal latency, medians 10–30 ms, σ = {SIGMA}), {} req/s for {} s \
         (virtual time), client timeout {} ms, meshwork per-try timeout {} ms, seed {}.\n",
        args.rate,
        args.secs,
        CLIENT_TIMEOUT.as_millis(),
        args.per_try_timeout_ms,
        args.seed
    );
    for fault in [Fault::None, Fault::Slow, Fault::FailFast] {
        println!("### {}\n", fault.title());
        println!(
            "| strategy | p50 | p99 | p99.9 | success | p99.9 / healthy p99.9 | p99.9, middle third | tries to endpoint 0 |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        let mut rows = Vec::new();
        let mut healthy = Vec::new();
        for strategy in [Strategy::RoundRobin, Strategy::TowerP2c, Strategy::Meshwork] {
            let log = Arc::new(EndpointLog::default());
            let samples = rt.block_on(run(strategy, fault, &args, &log));
            let mut ms: Vec<u64> = samples.iter().map(|s| s.ms).collect();
            ms.sort_unstable();
            let mut middle: Vec<u64> = samples.iter().filter(|s| s.middle).map(|s| s.ms).collect();
            middle.sort_unstable();
            let ok = samples.iter().filter(|s| s.ok).count();
            let tries: u64 = log.tries.iter().map(|t| t.load(Ordering::Relaxed)).sum();
            let faulty_share = log.tries[0].load(Ordering::Relaxed) as f64 / tries as f64;
            healthy.extend(log.healthy_ms.lock().unwrap().iter().copied());
            rows.push((
                strategy,
                [50.0, 99.0, 99.9].map(|p| percentile(&ms, p)),
                percentile(&middle, 99.9),
                ok as f64 / samples.len() as f64,
                faulty_share,
            ));
        }
        healthy.sort_unstable();
        let healthy_p999 = percentile(&healthy, 99.9);
        for (strategy, [p50, p99, p999], middle_p999, success, faulty_share) in rows {
            println!(
                "| {} | {p50} ms | {p99} ms | {p999} ms | {:.2} % | {:.1}× | {middle_p999} ms | {:.2} % |",
                strategy.name(),
                success * 100.0,
                p999 as f64 / healthy_p999 as f64,
                faulty_share * 100.0,
            );
        }
        println!(
            "\nHealthy endpoints' own p99.9 (service time at endpoints 1–10, all three runs): \
             {healthy_p999} ms.\n"
        );
    }
}
