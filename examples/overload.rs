//! The overload experiment: what the meshwork stack does when the whole service is overloaded.
//!
//! Five in-memory backends, each with a real capacity: 4 workers and a FIFO queue in front of them
//! (so latency grows with the queue), a service time drawn uniformly from 30–50 ms (mean 40 ms):
//! 100 requests/s each, **500 requests/s in total**. A backend keeps working on a request whose
//! caller gave up, as a real server does. One millisecond of "network" each way.
//!
//! The offered load is open-loop (Poisson arrivals, seeded), split over 4 clients: 0.5× the total
//! capacity for 10 s, a ramp to 2× over 10 s, 2× for 20 s, a ramp back over 10 s, 0.5× for 15 s.
//! Every client is the real meshwork stack ([`ClientBuilder`] over in-memory endpoint services):
//! 1 s total deadline, default per-try timeout (a third), default retries with the default budget
//! (20 % + 10/s), default breakers and P2C with peak EWMA. Three scenarios:
//!
//! - **(a)** the stack alone;
//! - **(b)** each backend behind a [`LimitLayer`] (adaptive concurrency): over-limit requests are
//!   nacked at once, and the client requeues them elsewhere within the budget;
//! - **(c)** as (b), plus client-side [admission control](meshwork::admission) in every client.
//!
//! Everything runs on tokio's paused clock in a current-thread runtime with fixed seeds: the run
//! takes seconds of real time and its output is exactly reproducible.
//!
//! ```text
//! cargo run --example overload -- [--png bench/overload.png] [--csv bench/overload.csv] [--font FILE.ttf]
//! ```
//!
//! The table goes to stdout; `--png` draws the time series (needs a TrueType font: by default
//! DejaVu Sans from Debian's `fonts-dejavu-core`; without one the plot is drawn without text).

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use meshwork::BoxError;
use meshwork::admission::{AdmissionConfig, Rejected};
use meshwork::client::ClientBuilder;
use meshwork::discover::{Endpoint, Static};
use meshwork::limit::{LimitConfig, LimitLayer, Nacked};
use meshwork::rng::{SeedSource, SmallRng};
use rand::{RngExt, SeedableRng};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const BACKENDS: u16 = 5;
const WORKERS: usize = 4;
const SERVICE_MS: (f64, f64) = (30.0, 50.0);
/// Requests per second all backends complete when busy: 5 × 4 / 40 ms.
const CAPACITY: f64 = BACKENDS as f64 * WORKERS as f64 / ((SERVICE_MS.0 + SERVICE_MS.1) / 2e3);
const NET: Duration = Duration::from_millis(1);
const CLIENTS: usize = 4;
const DEADLINE: Duration = Duration::from_secs(1);
const DURATION_S: usize = 65;
/// The 2× plateau, for the table (the first 2 s of it left out as transition).
const PLATEAU: (usize, usize) = (22, 40);
/// The unloaded phase, for the table.
const UNLOADED: (usize, usize) = (2, 10);

/// The offered load at `t` seconds, as a multiple of the capacity.
fn load_factor(t: f64) -> f64 {
    match t {
        t if t < 10.0 => 0.5,
        t if t < 20.0 => 0.5 + 1.5 * (t - 10.0) / 10.0,
        t if t < 40.0 => 2.0,
        t if t < 50.0 => 2.0 - 1.5 * (t - 40.0) / 10.0,
        _ => 0.5,
    }
}

// ---------------------------------------------------------------------------------------------
// The request.

/// A plain `Clone` request (the stack's deadline travels beside it).
#[derive(Clone, Debug)]
struct Req;

// ---------------------------------------------------------------------------------------------
// The backend: workers and a queue.

/// One backend's application: a FIFO queue (tokio's fair semaphore) in front of `WORKERS`
/// workers.
#[derive(Clone)]
struct App {
    workers: Arc<Semaphore>,
    rng: Arc<Mutex<SmallRng>>,
    work_done_per_s: Arc<Mutex<Vec<f64>>>,
    epoch: Instant,
}

impl App {
    fn new(seed: u64, epoch: Instant) -> Self {
        Self {
            epoch,
            workers: Arc::new(Semaphore::new(WORKERS)),
            rng: Arc::new(Mutex::new(SmallRng::seed_from_u64(seed))),
            work_done_per_s: Arc::new(Mutex::new(vec![0.0; DURATION_S + 20])),
        }
    }
}

impl Service<Req> for App {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Req) -> Self::Future {
        let app = self.clone();
        Box::pin(async move {
            let _worker = app.workers.acquire().await?;
            let ms = app
                .rng
                .lock()
                .unwrap()
                .random_range(SERVICE_MS.0..SERVICE_MS.1);
            tokio::time::sleep(Duration::from_secs_f64(ms / 1e3)).await;
            let sec = (Instant::now() - app.epoch).as_secs() as usize;
            if let Some(b) = app.work_done_per_s.lock().unwrap().get_mut(sec) {
                *b += 1.0;
            }
            Ok(())
        })
    }
}

type Server =
    Box<dyn FnMut(Req) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send>;

/// The server side of one backend: the app alone, or behind the adaptive limit.
fn server(app: App, limit: bool) -> Server {
    if limit {
        let limiter = LimitConfig::new()
            .initial_limit(10)
            .min_limit(WORKERS as u32)
            // Gradient2's headroom of 4 is meant for limits in the tens; this server has 4 workers.
            .queue_size(1.0)
            .build()
            .expect("valid limit");
        let mut svc = LimitLayer::new(limiter).layer(app);
        Box::new(move |req| Box::pin(svc.call(req)))
    } else {
        let mut svc = app;
        Box::new(move |req| svc.call(req))
    }
}

/// What a client's endpoint service talks to: a server that runs each request in its own task, so
/// that a caller giving up does not stop the work (as over a real connection).
#[derive(Clone)]
struct Conn {
    server: Arc<Mutex<Server>>,
}

impl Service<Req> for Conn {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (tx, rx) = oneshot::channel();
        let server = self.server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(NET).await;
            let fut = (server.lock().unwrap())(req);
            let _ = tx.send(fut.await.map_err(|e| e.to_string()));
        });
        Box::pin(async move {
            let out = rx.await?;
            tokio::time::sleep(NET).await;
            out.map_err(|e| -> BoxError {
                if e == Nacked::new().to_string() {
                    Box::new(Nacked::new())
                } else {
                    e.into()
                }
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement.

#[derive(Clone, Default)]
struct Second {
    offered: u64,
    ok: u64,
    nacked: u64,
    rejected: u64,
    deadline: u64,
    no_endpoint: u64,
    other: u64,
    latencies_us: Vec<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Plain,
    Nacks,
    NacksAdmission,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Plain => "(a) no overload control",
            Scenario::Nacks => "(b) nacking servers",
            Scenario::NacksAdmission => "(c) nacks + client admission",
        }
    }
}

struct Run {
    seconds: Vec<Second>,
    work_done: Vec<f64>,
}

fn p(sorted: &[u64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i] as f64 / 1e3)
}

impl Run {
    fn range(&self, (a, b): (usize, usize)) -> Second {
        let mut s = Second::default();
        for x in &self.seconds[a..b] {
            s.offered += x.offered;
            s.ok += x.ok;
            s.nacked += x.nacked;
            s.rejected += x.rejected;
            s.deadline += x.deadline;
            s.no_endpoint += x.no_endpoint;
            s.other += x.other;
            s.latencies_us.extend_from_slice(&x.latencies_us);
        }
        s.latencies_us.sort_unstable();
        s
    }
}

async fn run(scenario: Scenario, seed: u64) -> Run {
    let seeds = SeedSource::from_seed(seed);
    let limit = scenario != Scenario::Plain;
    let start = Instant::now();
    let apps: Vec<App> = (0..BACKENDS)
        .map(|i| App::new(seed * 100 + u64::from(i), start))
        .collect();
    let conns: Vec<Conn> = apps
        .iter()
        .map(|app| Conn {
            server: Arc::new(Mutex::new(server(app.clone(), limit))),
        })
        .collect();
    let endpoints: Vec<Endpoint> = (0..BACKENDS)
        .map(|i| Endpoint::new(([10, 0, 0, 1], 8000 + i).into()))
        .collect();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let conns = conns.clone();
            let mut b = ClientBuilder::new()
                .total_timeout(DEADLINE)
                .seed(SeedSource::from_seed(seeds.next_seed()));
            if scenario == Scenario::NacksAdmission {
                b = b.admission(AdmissionConfig::new().window(Duration::from_secs(10)));
            }
            b.build(Static::new(endpoints.clone()), move |ep: &Endpoint| {
                conns[usize::from(ep.addr().port() - 8000)].clone()
            })
            .expect("valid client")
        })
        .collect();

    let stats = Arc::new(Mutex::new(vec![Second::default(); DURATION_S + 5]));
    let mut rng = seeds.rng();
    let mut t = 0.0f64;
    let mut n = 0usize;
    loop {
        let rate = load_factor(t) * CAPACITY;
        t += -(1.0 - rng.random::<f64>()).ln() / rate;
        if t >= DURATION_S as f64 {
            break;
        }
        tokio::time::sleep_until(start + Duration::from_secs_f64(t)).await;
        let sec = t as usize;
        let mut client = clients[n % CLIENTS].clone();
        n += 1;
        let stats = stats.clone();
        tokio::spawn(async move {
            let begin = Instant::now();
            let res = match client.ready().await {
                Ok(c) => c.call(Req).await,
                Err(e) => Err(e),
            };
            let took = begin.elapsed();
            let mut stats = stats.lock().unwrap();
            let s = &mut stats[sec];
            s.offered += 1;
            match res {
                Ok(()) if took <= DEADLINE => {
                    s.ok += 1;
                    s.latencies_us.push(took.as_micros() as u64);
                }
                Ok(()) => s.deadline += 1,
                Err(e) if e.is::<Nacked>() => s.nacked += 1,
                Err(e) if e.is::<Rejected>() => s.rejected += 1,
                Err(e) if meshwork::is_caused_by::<meshwork::timeout::DeadlineExceeded>(&*e) => {
                    s.deadline += 1
                }
                Err(e) if meshwork::is_caused_by::<meshwork::balance::NoEndpoints>(&*e) => {
                    s.no_endpoint += 1
                }
                Err(_) => s.other += 1,
            }
        });
    }
    // Let the last requests finish (their deadline bounds them).
    tokio::time::sleep(DEADLINE * 2).await;
    let seconds = stats.lock().unwrap()[..DURATION_S].to_vec();
    let mut work_done = vec![0.0; DURATION_S];
    for app in &apps {
        for (w, b) in work_done
            .iter_mut()
            .zip(app.work_done_per_s.lock().unwrap().iter())
        {
            *w += b;
        }
    }
    Run { seconds, work_done }
}

// ---------------------------------------------------------------------------------------------
// Output.

fn table(runs: &[(Scenario, Run)], unloaded_p99: f64) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "capacity {CAPACITY:.0} req/s; 2x plateau = seconds {}..{} (offered {:.0} req/s); unloaded = seconds {}..{} (offered {:.0} req/s)\n",
        PLATEAU.0,
        PLATEAU.1,
        2.0 * CAPACITY,
        UNLOADED.0,
        UNLOADED.1,
        0.5 * CAPACITY
    )
    .unwrap();
    writeln!(out, "| scenario | phase | goodput (req/s) | of capacity | success ratio | p50 (ms) | p99 of successes (ms) | nacked | rejected locally | deadline exceeded | no endpoint (breakers open) | other errors | server work (req/s) |").unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for (scenario, r) in runs {
        for (phase, range) in [("unloaded (0.5x)", UNLOADED), ("overload (2x)", PLATEAU)] {
            let s = r.range(range);
            let secs = (range.1 - range.0) as f64;
            let work: f64 = r.work_done[range.0..range.1].iter().sum::<f64>() / secs;
            writeln!(
                out,
                "| {} | {phase} | {:.0} | {:.0} % | {:.1} % | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
                scenario.name(),
                s.ok as f64 / secs,
                100.0 * s.ok as f64 / secs / CAPACITY,
                100.0 * s.ok as f64 / s.offered.max(1) as f64,
                p(&s.latencies_us, 0.5).map_or("-".into(), |v| format!("{v:.0}")),
                p(&s.latencies_us, 0.99).map_or("-".into(), |v| format!("{v:.0}")),
                s.nacked,
                s.rejected,
                s.deadline,
                s.no_endpoint,
                s.other,
                work,
            )
            .unwrap();
        }
    }
    let c = &runs[2].1.range(PLATEAU);
    let secs = (PLATEAU.1 - PLATEAU.0) as f64;
    let goodput = c.ok as f64 / secs / CAPACITY;
    let p99 = p(&c.latencies_us, 0.99).unwrap_or(f64::INFINITY);
    writeln!(
        out,
        "\nunloaded p99 (scenario a): {unloaded_p99:.0} ms\ngoals for (c) at 2x: goodput >= 90 % of capacity: {:.0} % ({}); p99 <= 3x unloaded p99 ({:.0} ms): {p99:.0} ms ({})\n",
        100.0 * goodput,
        if goodput >= 0.9 { "met" } else { "MISSED" },
        3.0 * unloaded_p99,
        if p99 <= 3.0 * unloaded_p99 { "met" } else { "MISSED" },
    )
    .unwrap();
    out
}

fn csv(runs: &[(Scenario, Run)]) -> String {
    let mut out = String::from(
        "scenario,second,offered,ok,p99_ms,nacked,rejected,deadline,no_endpoint,other,server_work\n",
    );
    for (i, (_, r)) in runs.iter().enumerate() {
        for (sec, s) in r.seconds.iter().enumerate() {
            let mut l = s.latencies_us.clone();
            l.sort_unstable();
            writeln!(
                out,
                "{},{sec},{},{},{},{},{},{},{},{},{}",
                ["a", "b", "c"][i],
                s.offered,
                s.ok,
                p(&l, 0.99).map_or(String::new(), |v| format!("{v:.1}")),
                s.nacked,
                s.rejected,
                s.deadline,
                s.no_endpoint,
                s.other,
                r.work_done[sec]
            )
            .unwrap();
        }
    }
    out
}

fn plot(runs: &[(Scenario, Run)], path: &str, font: Option<&str>) -> Result<(), BoxError> {
    use plotters::prelude::*;

    let text = match font.and_then(|f| std::fs::read(f).ok()) {
        Some(bytes) => {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "invalid font file")?;
            true
        }
        None => {
            eprintln!("no font file: drawing the plot without text");
            false
        }
    };
    let colors = [
        RGBColor(220, 50, 47),
        RGBColor(38, 139, 210),
        RGBColor(0, 150, 80),
    ];
    let root = BitMapBackend::new(path, (1200, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((3, 1));
    let x = 0f64..DURATION_S as f64;
    let series = |r: &Run, f: &dyn Fn(&Second) -> Option<f64>| -> Vec<(f64, f64)> {
        r.seconds
            .iter()
            .enumerate()
            .filter_map(|(i, s)| f(s).map(|v| (i as f64 + 0.5, v)))
            .collect()
    };
    type Metric = (
        &'static str,
        &'static str,
        f64,
        Box<dyn Fn(&Second) -> Option<f64>>,
    );
    let metrics: [Metric; 3] = [
        (
            "goodput (answers within the 1 s deadline per second)",
            "req/s",
            2.2 * CAPACITY,
            Box::new(|s: &Second| Some(s.ok as f64)),
        ),
        (
            "p99 latency of successful requests",
            "ms",
            1000.0,
            Box::new(|s: &Second| {
                let mut l = s.latencies_us.clone();
                l.sort_unstable();
                p(&l, 0.99)
            }),
        ),
        (
            "success ratio (answered within the deadline / offered)",
            "%",
            105.0,
            Box::new(|s: &Second| (s.offered > 0).then(|| 100.0 * s.ok as f64 / s.offered as f64)),
        ),
    ];
    for (panel, (title, unit, ymax, f)) in panels.iter().zip(metrics.iter()) {
        let mut b = ChartBuilder::on(panel);
        b.margin(12);
        if text {
            b.caption(*title, ("sans-serif", 22))
                .x_label_area_size(36)
                .y_label_area_size(60);
        } else {
            b.x_label_area_size(10).y_label_area_size(10);
        }
        let mut chart = b.build_cartesian_2d(x.clone(), 0f64..*ymax)?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if text {
            mesh.x_desc("time (s)").y_desc(*unit);
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw()?;
        if *unit == "req/s" {
            let offered: Vec<(f64, f64)> = (0..=DURATION_S * 4)
                .map(|i| (i as f64 / 4.0, load_factor(i as f64 / 4.0) * CAPACITY))
                .collect();
            let s = chart.draw_series(LineSeries::new(offered, BLACK.mix(0.5).stroke_width(1)))?;
            if text {
                s.label("offered load")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
            }
            let s = chart.draw_series(LineSeries::new(
                vec![(0.0, CAPACITY), (DURATION_S as f64, CAPACITY)],
                ShapeStyle::from(&BLACK).stroke_width(1),
            ))?;
            if text {
                s.label("total capacity")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
            }
        }
        for (i, (scenario, r)) in runs.iter().enumerate() {
            let color = colors[i];
            let s = chart.draw_series(LineSeries::new(
                series(r, f.as_ref())
                    .into_iter()
                    .map(|(x, y)| (x, y.min(*ymax))),
                color.stroke_width(2),
            ))?;
            if text {
                s.label(scenario.name()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 15))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let mut png = None;
    let mut csv_path = None;
    let mut font = Some("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--png" => png = args.next(),
            "--csv" => csv_path = args.next(),
            "--font" => font = args.next(),
            "--no-font" => font = None,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let runs: Vec<(Scenario, Run)> = rt.block_on(async {
        let mut runs = Vec::new();
        for scenario in [Scenario::Plain, Scenario::Nacks, Scenario::NacksAdmission] {
            let started = Instant::now();
            let r = run(scenario, 42).await;
            eprintln!(
                "{}: {:.0} s of virtual time",
                scenario.name(),
                started.elapsed().as_secs_f64()
            );
            runs.push((scenario, r));
        }
        runs
    });
    let unloaded_p99 = p(&runs[0].1.range(UNLOADED).latencies_us, 0.99).unwrap_or(0.0);
    print!("{}", table(&runs, unloaded_p99));
    if let Some(path) = csv_path {
        std::fs::write(path, csv(&runs))?;
    }
    if let Some(path) = png {
        plot(&runs, &path, font.as_deref())?;
    }
    Ok(())
}
