//! Outages, recoveries and churn (issue 12): thousands of callers through a total outage and a
//! recovery, endpoints replaced while callers wait, slow failures that outlive a trip, and a
//! half-open probe that is reserved and never used. Paused time, seeded randomness, in-memory
//! endpoints behind real [`Breaker`]s and a real [`Balance`].

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_core::Stream;
use meshwork::BoxError;
use meshwork::available::{Always, Available};
use meshwork::backoff::Backoff;
use meshwork::balance::{Balance, EndpointRemoved, NoEndpoints};
use meshwork::breaker::{Breaker, BreakerConfig, State};
use meshwork::discover::{Endpoint, Update};
use meshwork::rng::SeedSource;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16))
}

type Tx = mpsc::UnboundedSender<Result<Update, BoxError>>;

/// A discovery source the test drives.
fn source() -> (
    Tx,
    impl Stream<Item = Result<Update, BoxError>> + Send + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, stream)
}

/// Lets the other tasks run until `cond` holds (no virtual time passes).
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

// ---------------------------------------------------------------------------------------------
// An endpoint whose failures the test switches, counting what reaches it.

#[derive(Default)]
struct Backend {
    fail: AtomicBool,
    hits: AtomicU64,
    /// When the first successful call completed.
    first_ok: Mutex<Option<Instant>>,
}

#[derive(Clone)]
struct Server(Arc<Backend>);

impl Service<()> for Server {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        self.0.hits.fetch_add(1, Ordering::SeqCst);
        if self.0.fail.load(Ordering::SeqCst) {
            return std::future::ready(Err("backend down".into()));
        }
        self.0
            .first_ok
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        std::future::ready(Ok(()))
    }
}

/// Counts every look the balancer takes at an endpoint: readiness and availability polls.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    looks: Arc<AtomicU64>,
}

impl<S: Service<()>> Service<()> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.looks.fetch_add(1, Ordering::Relaxed);
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ()) -> Self::Future {
        self.inner.call(req)
    }
}

impl<S: Available> Available for Counted<S> {
    fn is_available(&self) -> bool {
        self.looks.fetch_add(1, Ordering::Relaxed);
        self.inner.is_available()
    }

    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.looks.fetch_add(1, Ordering::Relaxed);
        self.inner.poll_available(cx)
    }
}

/// A breaker that trips on the first failure and stays open for exactly `open` (no jitter).
fn breaker_config(open: Duration, seed: u64) -> BreakerConfig {
    BreakerConfig::builder()
        .consecutive_failures(1)
        .no_success_rate()
        .backoff(Backoff::constant(open).unwrap())
        .seed(SeedSource::from_seed(seed))
        .build()
        .unwrap()
}

/// One `poll_ready` through `f`, counting the polls into `polls`.
async fn ready_counted<S: Service<()>>(svc: &mut S, polls: &mut u64) -> Result<(), S::Error> {
    poll_fn(|cx| {
        *polls += 1;
        svc.poll_ready(cx)
    })
    .await
}

// ---------------------------------------------------------------------------------------------

/// 5,000 tasks share one client whose 10 endpoints all have open breakers. When one endpoint's
/// probe succeeds, every waiting task is served within 100 ms (virtual) of it, none fails with
/// `NoEndpoints`, and no task is polled more than a few times during the 2 s outage.
///
/// Before the fix, the breaker's wait slot kept one waker for all waiting tasks (only one was woken
/// on recovery; the rest slept until `max_wait` and failed with `NoEndpoints`), and beyond 1024
/// waiters every registration woke everyone (a busy loop until `max_wait`).
#[tokio::test(start_paused = true)]
async fn regression_12_01_02_five_thousand_waiters_are_all_served_on_recovery_without_a_busy_loop()
{
    const TASKS: usize = 5_000;
    const ENDPOINTS: u32 = 10;
    const HEALTHY: u32 = 3;

    let backends: Vec<Arc<Backend>> = (0..ENDPOINTS).map(|_| Arc::default()).collect();
    for b in &backends {
        b.fail.store(true, Ordering::SeqCst);
    }
    let looks = Arc::new(AtomicU64::new(0));
    let (tx, stream) = source();
    let make = {
        let backends = backends.clone();
        let looks = looks.clone();
        move |ep: &Endpoint| {
            let i = u32::from(ep.addr().port() - 20_000);
            Counted {
                inner: Breaker::new(
                    Server(backends[i as usize].clone()),
                    breaker_config(2 * SEC, u64::from(i)),
                ),
                looks: looks.clone(),
            }
        }
    };
    let mut bal = Balance::builder()
        .max_wait(30 * SEC)
        .seed(SeedSource::from_seed(7))
        .build(stream, make)
        .unwrap();
    tx.send(Ok(Update::Reset(
        (0..ENDPOINTS).map(|i| Endpoint::new(addr(i))).collect(),
    )))
    .unwrap();
    until(|| bal.len() == ENDPOINTS as usize).await;

    // Total outage: one failure trips each breaker.
    type Ep = Counted<Breaker<Server>>;
    let open = |bal: &Balance<Ep>| {
        bal.endpoints()
            .iter()
            .filter(|e| e.service.inner.handle().state() == State::Open)
            .count()
    };
    for _ in 0..100 {
        if open(&bal) == ENDPOINTS as usize {
            break;
        }
        let _ = bal.ready().await.unwrap().call(()).await;
    }
    assert_eq!(open(&bal), ENDPOINTS as usize, "every breaker is open");
    let tripped = Instant::now();

    looks.store(0, Ordering::SeqCst);
    let mut tasks = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let mut bal = bal.clone();
        tasks.push(tokio::spawn(async move {
            let mut polls = 0;
            ready_counted(&mut bal, &mut polls).await.unwrap();
            let result = bal.call(()).await;
            (result, Instant::now(), polls)
        }));
    }

    // Every task looks once and registers its wait...
    tokio::time::sleep(10 * MS).await;
    let looks_registering = looks.load(Ordering::SeqCst);
    // ...then nothing happens until the open period ends: 1.5 s into the outage, one backend
    // recovers; its breaker lets a probe through at 2 s.
    tokio::time::sleep(1490 * MS).await;
    let looks_while_waiting = looks.load(Ordering::SeqCst) - looks_registering;
    backends[HEALTHY as usize]
        .fail
        .store(false, Ordering::SeqCst);

    let mut served = 0;
    let mut failed = 0;
    let mut latest = tripped;
    let mut max_polls = 0;
    for t in tasks {
        let (result, at, polls) = tokio::time::timeout(60 * SEC, t)
            .await
            .expect("every task ends")
            .unwrap();
        max_polls = max_polls.max(polls);
        match result {
            Ok(()) => {
                served += 1;
                latest = latest.max(at);
            }
            Err(e) => {
                assert!(
                    !e.is::<NoEndpoints>(),
                    "NoEndpoints while an endpoint is available"
                );
                failed += 1;
            }
        }
    }
    let recovered = backends[HEALTHY as usize]
        .first_ok
        .lock()
        .unwrap()
        .expect("the probe succeeded");
    assert!(
        recovered >= tripped + 2 * SEC,
        "the probe waited for the open period"
    );
    // Only the half-open probes of the endpoints that are still down can fail.
    assert!(failed < ENDPOINTS as usize, "{failed} tasks failed");
    assert_eq!(served + failed, TASKS);
    let lag = latest - recovered;
    assert!(
        lag <= 100 * MS,
        "the last waiter was served {lag:?} after the recovery"
    );
    // No busy loop: a waiting task is polled a handful of times, whatever the number of waiters;
    // registering costs a few looks at each endpoint, and waiting costs none.
    assert!(max_polls <= 8, "a task was polled {max_polls} times");
    let per_task = looks_registering as f64 / TASKS as f64;
    assert!(
        per_task <= 3.0 * f64::from(ENDPOINTS),
        "{per_task} endpoint looks per task to register"
    );
    assert!(
        looks_while_waiting <= 100,
        "{looks_while_waiting} endpoint looks while nothing changed"
    );
}

// ---------------------------------------------------------------------------------------------
// Churn: endpoints with a small capacity (a connection pool), replaced while callers wait on them.

#[derive(Default)]
struct Pool {
    in_flight: Mutex<(usize, Vec<Waker>)>,
    hits: AtomicU64,
    /// Set once the test has seen the endpoint's removal published.
    removed: AtomicBool,
    /// Requests that reached the endpoint after that.
    late: AtomicU64,
}

const CAPACITY: usize = 5;

impl Pool {
    fn release(&self) {
        let wakers = {
            let mut g = self.in_flight.lock().unwrap();
            g.0 -= 1;
            std::mem::take(&mut g.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// A service over a [`Pool`]: ready when it holds one of the pool's `CAPACITY` slots.
struct Pooled {
    pool: Arc<Pool>,
    holding: bool,
}

impl Clone for Pooled {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            holding: false,
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if self.holding {
            self.pool.release();
        }
    }
}

struct Release(Arc<Pool>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Service<()> for Pooled {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.holding {
            return Poll::Ready(Ok(()));
        }
        let mut g = self.pool.in_flight.lock().unwrap();
        if g.0 < CAPACITY {
            g.0 += 1;
            self.holding = true;
            Poll::Ready(Ok(()))
        } else {
            g.1.push(cx.waker().clone());
            Poll::Pending
        }
    }

    fn call(&mut self, _: ()) -> Self::Future {
        assert!(self.holding, "call without poll_ready");
        self.holding = false;
        self.pool.hits.fetch_add(1, Ordering::SeqCst);
        if self.pool.removed.load(Ordering::SeqCst) {
            self.pool.late.fetch_add(1, Ordering::SeqCst);
        }
        let release = Release(self.pool.clone());
        Box::pin(async move {
            tokio::time::sleep(20 * MS).await;
            drop(release);
            Ok(())
        })
    }
}

/// 20 endpoints removed and replaced, one every 50 ms, while 1,000 tasks wait for or send to them:
/// no request reaches a removed endpoint after its removal is published.
///
/// Before the fix, a task that was waiting on a busy endpoint re-polled it when it freed up,
/// without checking that it was still in the set, and sent to it.
#[tokio::test(start_paused = true)]
async fn regression_12_05_no_request_reaches_an_endpoint_after_its_removal_is_published() {
    const TASKS: usize = 1_000;
    const ENDPOINTS: u32 = 20;

    let pools: Arc<Mutex<std::collections::HashMap<SocketAddr, Arc<Pool>>>> = Arc::default();
    let pool = {
        let pools = pools.clone();
        move |a: SocketAddr| pools.lock().unwrap().entry(a).or_default().clone()
    };
    let (tx, stream) = source();
    let make = {
        let pool = pool.clone();
        move |ep: &Endpoint| {
            Always::new(Pooled {
                pool: pool(ep.addr()),
                holding: false,
            })
        }
    };
    let bal = Balance::builder()
        .max_wait(10 * SEC)
        .seed(SeedSource::from_seed(11))
        .build(stream, make)
        .unwrap();
    let mut current: Vec<u32> = (0..ENDPOINTS).collect();
    let publish = |set: &[u32]| {
        tx.send(Ok(Update::Reset(
            set.iter().map(|&i| Endpoint::new(addr(i))).collect(),
        )))
        .unwrap();
    };
    publish(&current);
    until(|| bal.len() == ENDPOINTS as usize).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let mut bal = bal.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut removed, mut other) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                match bal.ready().await.unwrap().call(()).await {
                    Ok(()) => ok += 1,
                    Err(e) if e.is::<EndpointRemoved>() => removed += 1,
                    Err(e) => {
                        let _ = e;
                        other += 1
                    }
                }
            }
            (ok, removed, other)
        }));
    }

    // Let the pools fill up and callers queue on them.
    tokio::time::sleep(30 * MS).await;
    for round in 0..ENDPOINTS {
        let old = current[round as usize];
        let new = 100 + round;
        current[round as usize] = new;
        publish(&current);
        let gone = addr(old);
        until(|| {
            bal.endpoints()
                .iter()
                .all(|e| e.endpoint.as_ref().unwrap().addr() != gone)
        })
        .await;
        pool(gone).removed.store(true, Ordering::SeqCst);
        tokio::time::sleep(50 * MS).await;
    }
    tokio::time::sleep(200 * MS).await;
    stop.store(true, Ordering::SeqCst);

    let (mut ok, mut removed, mut other) = (0, 0, 0);
    for t in tasks {
        let (o, r, x) = tokio::time::timeout(60 * SEC, t).await.unwrap().unwrap();
        ok += o;
        removed += r;
        other += x;
    }
    let pools = pools.lock().unwrap();
    let late: u64 = pools.values().map(|p| p.late.load(Ordering::SeqCst)).sum();
    assert_eq!(late, 0, "requests reached removed endpoints");
    assert_eq!(other, 0, "only reservations on removed endpoints may fail");
    // The traffic really moved: every replacement served requests, and the load ran throughout
    // (20 endpoints × 5 slots × 20 ms for about 1.2 s is about 6,000 requests).
    for round in 0..ENDPOINTS {
        let hits = pools[&addr(100 + round)].hits.load(Ordering::SeqCst);
        assert!(hits > 0, "replacement {round} got no request");
    }
    assert!(
        ok > 4_000,
        "{ok} requests served ({removed} reservations on removed endpoints)"
    );
}

// ---------------------------------------------------------------------------------------------
// One breaker, driven directly.

#[derive(Clone, Copy, Debug)]
enum Call {
    /// Fails after 3 s.
    SlowFail,
    Fail,
    Ok,
}

#[derive(Clone, Default)]
struct Scripted {
    hits: Arc<AtomicU64>,
}

impl Service<Call> for Scripted {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, c: Call) -> Self::Future {
        self.hits.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match c {
                Call::SlowFail => {
                    tokio::time::sleep(3 * SEC).await;
                    Err("slow failure".into())
                }
                Call::Fail => Err("failure".into()),
                Call::Ok => Ok(()),
            }
        })
    }
}

/// An endpoint recovers while 50 slow failures admitted before the trip are still in flight: when
/// they fail, after the recovery, the breaker does not re-trip.
///
/// Before the fix, an outcome carried no epoch: the 50 late failures counted against the new
/// closed period and re-opened a breaker whose endpoint had just recovered.
#[tokio::test(start_paused = true)]
async fn regression_12_03_slow_failures_from_before_a_trip_do_not_retrip_after_recovery() {
    let config = BreakerConfig::builder()
        .consecutive_failures(5)
        .backoff(Backoff::constant(SEC).unwrap())
        .seed(SeedSource::from_seed(3))
        .build()
        .unwrap();
    let mut svc = Breaker::new(Scripted::default(), config);
    let handle = svc.handle();

    let mut slow = Vec::new();
    for _ in 0..50 {
        let fut = svc.ready().await.unwrap().call(Call::SlowFail);
        slow.push(tokio::spawn(fut));
    }
    for _ in 0..5 {
        let _ = svc.ready().await.unwrap().call(Call::Fail).await;
    }
    assert_eq!(handle.state(), State::Open);

    // The open period ends after 1 s; the probe succeeds: closed again.
    tokio::time::sleep(1100 * MS).await;
    svc.ready().await.unwrap().call(Call::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Closed);

    // At 3 s the 50 slow calls fail.
    for f in slow {
        assert!(f.await.unwrap().is_err());
    }
    tokio::time::sleep(SEC).await;
    assert_eq!(
        handle.state(),
        State::Closed,
        "late failures of the previous period re-tripped the breaker"
    );
    svc.ready().await.unwrap().call(Call::Ok).await.unwrap();
}

/// A caller holds a half-open reservation and never calls: other callers reach the endpoint after
/// the probe timeout.
///
/// Before the fix, the reserved probe slot was held for as long as the reserving clone lived.
#[tokio::test(start_paused = true)]
async fn regression_12_04_a_held_half_open_reservation_is_released_after_the_probe_timeout() {
    let config = BreakerConfig::builder()
        .consecutive_failures(1)
        .backoff(Backoff::constant(SEC).unwrap())
        .probe_timeout(2 * SEC)
        .seed(SeedSource::from_seed(4))
        .build()
        .unwrap();
    let inner = Scripted::default();
    let hits = inner.hits.clone();
    let mut svc = Breaker::new(inner, config);
    let _ = svc.ready().await.unwrap().call(Call::Fail).await;
    assert_eq!(svc.handle().state(), State::Open);

    tokio::time::sleep(1100 * MS).await;
    // This caller takes the only probe and keeps it (legal: `ready()` inside a `select!` whose
    // other branch won, say).
    let mut holder = svc.clone();
    holder.ready().await.unwrap();
    let held_at = Instant::now();
    assert_eq!(svc.handle().state(), State::HalfOpen);

    let mut other = svc.clone();
    let waiter = tokio::spawn(async move {
        other.ready().await.unwrap().call(Call::Ok).await.unwrap();
        Instant::now()
    });
    tokio::time::sleep(1900 * MS).await;
    assert!(!waiter.is_finished(), "served before the probe timeout");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "only the tripping call so far"
    );

    let served = tokio::time::timeout(10 * SEC, waiter)
        .await
        .expect("the other caller is served after the probe timeout")
        .unwrap();
    let after = served - held_at;
    assert!(
        after >= 2 * SEC && after <= 2 * SEC + 100 * MS,
        "served {after:?} after the reservation"
    );
    assert_eq!(svc.handle().state(), State::Closed);
    drop(holder);
}

// ---------------------------------------------------------------------------------------------
// The discovery worker under a failing source or a panicking `make`.

/// A discovery source that fails on every poll (never `Pending`), counting its polls. It gives up
/// (`Pending` for good) after 100,000 polls, so that a spinning worker fails the test instead of
/// hanging it.
struct Failing(Arc<AtomicU64>);

impl Stream for Failing {
    type Item = Result<Update, BoxError>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.0.fetch_add(1, Ordering::SeqCst) >= 100_000 {
            return Poll::Pending;
        }
        Poll::Ready(Some(Err("registry unreachable".into())))
    }
}

/// A source that keeps yielding errors while ready is polled a bounded number of times: a burst,
/// then pauses that double up to 1 s.
///
/// Before the fix, errors did not count toward the worker's batch: it spun on the source forever.
#[tokio::test(start_paused = true)]
async fn regression_12_11_an_erroring_source_is_polled_a_bounded_number_of_times() {
    let polls = Arc::new(AtomicU64::new(0));
    let bal = Balance::builder()
        .max_wait(SEC)
        .seed(SeedSource::from_seed(5))
        .build(Failing(polls.clone()), |_: &Endpoint| {
            Always::new(Server(Arc::new(Backend::default())))
        })
        .unwrap();
    tokio::time::sleep(10 * SEC).await;
    let n = polls.load(Ordering::SeqCst);
    // 16 errors in a burst, then one per pause (10 ms doubling to 1 s): about 30 in 10 s.
    assert!(n <= 60, "the source was polled {n} times in 10 s");
    assert!(n >= 16, "the source was polled only {n} times");
    drop(bal);
}

/// A `make` that panics is caught: the panic is counted as a discovery error, the last set stays,
/// and callers are served from it instead of waiting for a set that will never come.
///
/// Before the fix, the worker task died silently with the panic.
#[cfg(feature = "metrics")]
#[test]
fn regression_12_11_a_panicking_make_is_counted_and_the_last_set_stays() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async {
                let backend = Arc::new(Backend::default());
                let (tx, stream) = source();
                let make = {
                    let backend = backend.clone();
                    move |ep: &Endpoint| {
                        assert!(ep.addr() != addr(1), "make panicked on purpose");
                        Always::new(Server(backend.clone()))
                    }
                };
                let mut bal = Balance::builder()
                    .max_wait(10 * SEC)
                    .seed(SeedSource::from_seed(6))
                    .build(stream, make)
                    .unwrap();
                tx.send(Ok(Update::Reset(vec![Endpoint::new(addr(0))])))
                    .unwrap();
                until(|| bal.len() == 1).await;
                tx.send(Ok(Update::Insert(Endpoint::new(addr(1))))).unwrap();
                // The worker is gone (its panic was caught); the last set serves, at once.
                until(|| tx.is_closed()).await;
                let start = Instant::now();
                for _ in 0..10 {
                    bal.ready().await.unwrap().call(()).await.unwrap();
                }
                assert_eq!(Instant::now(), start);
                assert_eq!(backend.hits.load(Ordering::SeqCst), 10);
            });
    });
    let errors: f64 = snapshotter
        .snapshot()
        .into_vec()
        .iter()
        .filter(|(k, _, _, _)| k.key().name() == "meshwork_balance_discovery_errors_total")
        .map(|(_, _, _, v)| match v {
            DebugValue::Counter(n) => *n as f64,
            _ => 0.0,
        })
        .sum();
    assert_eq!(errors, 1.0, "the panic is counted as a discovery error");
}
