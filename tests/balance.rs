//! Acceptance tests of the P2C balancer: paused time, seeded randomness, in-memory endpoints.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::task::AtomicWaker;
use meshwork::BoxError;
use meshwork::available::{Always, Available};
use meshwork::balance::{Balance, NoEndpoints, load::LeastInFlight};
use meshwork::discover::{Endpoint, Update};
use meshwork::rng::SeedSource;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------------
// Test endpoints: latency, failures, availability (a breaker's gate) and readiness errors are
// switched from the test.

#[derive(Default)]
struct EpState {
    hits: AtomicU64,
    latency_ms: AtomicU64,
    fail: AtomicBool,
    down: AtomicBool,
    ready_err: AtomicBool,
    waker: AtomicWaker,
}

impl EpState {
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        self.waker.wake();
    }
    fn set_latency(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Ep {
    addr: SocketAddr,
    st: Arc<EpState>,
}

impl Service<()> for Ep {
    type Response = SocketAddr;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<SocketAddr, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.st.ready_err.load(Ordering::SeqCst) {
            return Poll::Ready(Err("endpoint not ready".into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: ()) -> Self::Future {
        self.st.hits.fetch_add(1, Ordering::SeqCst);
        let latency = Duration::from_millis(self.st.latency_ms.load(Ordering::SeqCst));
        let fail = self.st.fail.load(Ordering::SeqCst);
        let addr = self.addr;
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if fail { Err("boom".into()) } else { Ok(addr) }
        })
    }
}

impl Available for Ep {
    fn is_available(&self) -> bool {
        !self.st.down.load(Ordering::SeqCst)
    }
    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_available() {
            return Poll::Ready(());
        }
        self.st.waker.register(cx.waker());
        if self.is_available() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Every endpoint ever built, by address, so the test can steer and count them.
#[derive(Clone, Default)]
struct Fleet(Arc<Mutex<HashMap<SocketAddr, Arc<EpState>>>>);

impl Fleet {
    fn get(&self, addr: SocketAddr) -> Arc<EpState> {
        self.0.lock().unwrap().entry(addr).or_default().clone()
    }
    fn make(&self) -> impl FnMut(&Endpoint) -> Ep + Send + 'static {
        let fleet = self.clone();
        move |ep: &Endpoint| Ep {
            addr: ep.addr(),
            st: fleet.get(ep.addr()),
        }
    }
}

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0)).with_port_and_ip(i)
}

trait WithIndex {
    fn with_port_and_ip(self, i: u32) -> SocketAddr;
}
impl WithIndex for SocketAddr {
    /// Up to 2^24 distinct loopback addresses: 127.x.y.z:port.
    fn with_port_and_ip(self, i: u32) -> SocketAddr {
        let ip = std::net::Ipv4Addr::from(0x7f00_0000 | (i >> 8) & 0x00ff_ffff);
        SocketAddr::from((ip, 10_000 + (i & 0xff) as u16))
    }
}

fn eps(range: std::ops::Range<u32>) -> Vec<Endpoint> {
    range.map(|i| Endpoint::new(addr(i))).collect()
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

fn balancer(fleet: &Fleet, seed: u64) -> (Tx, Balance<Ep>) {
    let (tx, stream) = source();
    let bal = Balance::builder()
        .seed(SeedSource::from_seed(seed))
        .build(stream, fleet.make())
        .unwrap();
    (tx, bal)
}

/// Lets the discovery task run until `cond` holds.
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

async fn one(bal: &mut Balance<Ep>) -> Result<SocketAddr, BoxError> {
    bal.ready().await?.call(()).await
}

/// `workers` tasks send requests through clones of `bal` until `end`; returns (ok, failed).
async fn drive(bal: &Balance<Ep>, workers: usize, end: Instant) -> (u64, u64) {
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let mut bal = bal.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            while Instant::now() < end {
                match one(&mut bal).await {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        let (ok, failed) = t.await.unwrap();
        total.0 += ok;
        total.1 += failed;
    }
    total
}

fn hits(fleet: &Fleet, range: std::ops::Range<u32>) -> Vec<u64> {
    range.map(|i| fleet.get(addr(i)).hits()).collect()
}

// ---------------------------------------------------------------------------------------------
// Simulations.

#[tokio::test(start_paused = true)]
async fn one_endpoint_turns_100x_slower_gets_under_2_percent() {
    let fleet = Fleet::default();
    for i in 0..10 {
        fleet.get(addr(i)).set_latency(10);
    }
    let (tx, bal) = balancer(&fleet, 1);
    tx.send(Ok(Update::Reset(eps(0..10)))).unwrap();

    // Warm-up: all equally fast.
    let (_, failed) = drive(&bal, 20, Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(failed, 0);
    let warm = hits(&fleet, 0..10);
    assert!(
        warm[0] > 0,
        "every endpoint is used while all are fast: {warm:?}"
    );

    fleet.get(addr(0)).set_latency(1_000);
    let (ok, failed) = drive(&bal, 20, Instant::now() + Duration::from_secs(30)).await;
    assert_eq!(failed, 0);
    let after: Vec<u64> = hits(&fleet, 0..10)
        .iter()
        .zip(&warm)
        .map(|(a, b)| a - b)
        .collect();
    let total: u64 = after.iter().sum();
    let share = after[0] as f64 / total as f64;
    eprintln!("slow endpoint: {share:.4} of {total} requests after warm-up");
    assert!(ok > 10_000, "{ok}");
    assert!(share < 0.02, "slow endpoint share {share}: {after:?}");
}

#[tokio::test(start_paused = true)]
async fn endpoint_failing_fast_gets_under_5_percent() {
    let fleet = Fleet::default();
    for i in 0..10 {
        fleet.get(addr(i)).set_latency(10);
    }
    let bad = fleet.get(addr(3));
    bad.set_latency(0);
    bad.fail.store(true, Ordering::SeqCst);
    let (tx, bal) = balancer(&fleet, 2);
    tx.send(Ok(Update::Reset(eps(0..10)))).unwrap();

    let (ok, failed) = drive(&bal, 20, Instant::now() + Duration::from_secs(30)).await;
    let h = hits(&fleet, 0..10);
    let total: u64 = h.iter().sum();
    let share = h[3] as f64 / total as f64;
    assert_eq!(failed, h[3]);
    eprintln!("failing endpoint: {share:.4} of {total} requests");
    assert!(ok > 10_000, "{ok}");
    assert!(share < 0.05, "failing endpoint share {share}: {h:?}");
}

async fn weighted_share(workers: usize, seed: u64) -> f64 {
    let fleet = Fleet::default();
    fleet.get(addr(0)).set_latency(10);
    fleet.get(addr(1)).set_latency(10);
    let (tx, bal) = balancer(&fleet, seed);
    tx.send(Ok(Update::Reset(vec![
        Endpoint::new(addr(0)).with_weight(3).unwrap(),
        Endpoint::new(addr(1)),
    ])))
    .unwrap();
    let (_, failed) = drive(&bal, workers, Instant::now() + Duration::from_secs(60)).await;
    assert_eq!(failed, 0);
    let h = hits(&fleet, 0..2);
    let share = h[0] as f64 / (h[0] + h[1]) as f64;
    eprintln!(
        "weight 3 of 3:1, {workers} workers: {share:.4} of {} requests",
        h[0] + h[1]
    );
    share
}

#[tokio::test(start_paused = true)]
async fn weights_3_to_1_give_75_percent_under_concurrency() {
    let share = weighted_share(16, 3).await;
    assert!((share - 0.75).abs() < 0.05, "share {share}");
}

#[tokio::test(start_paused = true)]
async fn weights_3_to_1_give_75_percent_one_at_a_time() {
    let share = weighted_share(1, 4).await;
    assert!((share - 0.75).abs() < 0.05, "share {share}");
}

#[tokio::test(start_paused = true)]
async fn update_of_10_000_endpoints_while_requests_flow_loses_none() {
    let fleet = Fleet::default();
    let (tx, bal) = balancer(&fleet, 5);
    for i in 0..10_010 {
        fleet.get(addr(i)).set_latency(5);
    }
    tx.send(Ok(Update::Reset(eps(0..10)))).unwrap();
    let flow = {
        let bal = bal.clone();
        tokio::spawn(async move { drive(&bal, 50, Instant::now() + Duration::from_secs(2)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Replace the 10 endpoints (with requests in flight on them) by 10,000 others.
    tx.send(Ok(Update::Reset(eps(10..10_010)))).unwrap();
    until(|| bal.len() == 10_000).await;
    let (ok, failed) = flow.await.unwrap();
    assert_eq!(failed, 0, "{ok} succeeded");
    let old: u64 = hits(&fleet, 0..10).iter().sum();
    let new: u64 = hits(&fleet, 10..10_010).iter().sum();
    assert_eq!(old + new, ok);
    assert!(new > 0 && old > 0, "old {old}, new {new}");
}

// ---------------------------------------------------------------------------------------------
// Removal, availability, waiting.

#[tokio::test(start_paused = true)]
async fn reservation_on_removed_endpoint_goes_neither_there_nor_elsewhere() {
    // tower #856: a stale ready index after a removal routed to a different endpoint. And a
    // removed endpoint gets nothing new (issue 12, defect 5): the reserved call fails as unsent.
    let fleet = Fleet::default();
    let (tx, mut bal) = balancer(&fleet, 6);
    tx.send(Ok(Update::Reset(eps(0..1)))).unwrap();
    until(|| bal.len() == 1).await;
    bal.ready().await.unwrap(); // reserves endpoint 0

    tx.send(Ok(Update::Insert(Endpoint::new(addr(1))))).unwrap();
    tx.send(Ok(Update::Remove(addr(0)))).unwrap();
    until(|| bal.len() == 1 && fleet.0.lock().unwrap().contains_key(&addr(1))).await;

    let err = bal.call(()).await.unwrap_err();
    assert!(err.is::<meshwork::balance::EndpointRemoved>(), "{err}");
    assert!(meshwork::classify::classify_error(&*err).is_unsent());
    assert_eq!(
        hits(&fleet, 0..1),
        vec![0],
        "the removed endpoint got a request"
    );
    // New requests never go to the removed endpoint.
    for _ in 0..50 {
        assert_eq!(one(&mut bal).await.unwrap(), addr(1));
    }
}

#[tokio::test(start_paused = true)]
async fn removed_endpoint_in_flight_requests_complete() {
    let fleet = Fleet::default();
    fleet.get(addr(0)).set_latency(100);
    let (tx, mut bal) = balancer(&fleet, 7);
    tx.send(Ok(Update::Reset(eps(0..1)))).unwrap();
    let in_flight: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            let fut = bal.ready().await.unwrap().call(());
            v.push(tokio::spawn(fut));
        }
        v
    };
    tx.send(Ok(Update::Reset(eps(1..2)))).unwrap();
    until(|| bal.len() == 1 && fleet.0.lock().unwrap().contains_key(&addr(1))).await;
    for t in in_flight {
        assert_eq!(t.await.unwrap().unwrap(), addr(0));
    }
    assert_eq!(one(&mut bal).await.unwrap(), addr(1));
}

#[tokio::test(start_paused = true)]
async fn unavailable_endpoints_are_skipped_not_dropped() {
    let fleet = Fleet::default();
    let (tx, mut bal) = balancer(&fleet, 8);
    tx.send(Ok(Update::Reset(eps(0..3)))).unwrap();
    let gated = fleet.get(addr(1));
    gated.set_down(true);
    for _ in 0..300 {
        assert_ne!(one(&mut bal).await.unwrap(), addr(1));
    }
    assert_eq!(gated.hits(), 0);
    gated.set_down(false);
    for _ in 0..300 {
        one(&mut bal).await.unwrap();
    }
    assert!(gated.hits() > 50, "{}", gated.hits());
}

/// P2C over the *available* endpoints: when one candidate of a pair is unavailable, the other is
/// still compared with a second draw. Otherwise, with three endpoints — one fast, one slow, one
/// broken out — the slow one would win every pair that holds the broken one: a third of the traffic.
#[tokio::test(start_paused = true)]
async fn an_unavailable_candidate_does_not_hand_its_pair_to_the_slow_endpoint() {
    let fleet = Fleet::default();
    fleet.get(addr(0)).set_latency(2);
    fleet.get(addr(1)).set_latency(250);
    fleet.get(addr(2)).set_latency(2);
    let (tx, bal) = balancer(&fleet, 21);
    tx.send(Ok(Update::Reset(eps(0..3)))).unwrap();
    // Warm-up: every endpoint measured.
    drive(&bal, 8, Instant::now() + Duration::from_secs(2)).await;
    fleet.get(addr(2)).set_down(true);
    let before = hits(&fleet, 0..3);
    let (ok, failed) = drive(&bal, 4, Instant::now() + Duration::from_secs(10)).await;
    assert_eq!(failed, 0);
    let after = hits(&fleet, 0..3);
    let slow = (after[1] - before[1]) as f64 / ok as f64;
    assert!(
        slow < 0.05,
        "the slow endpoint got {:.1}% of {ok}",
        slow * 100.0
    );
    assert_eq!(after[2], before[2], "the unavailable endpoint got nothing");
}

#[tokio::test(start_paused = true)]
async fn nothing_available_waits_at_most_max_wait_then_no_endpoints() {
    let fleet = Fleet::default();
    let (tx, mut bal) = balancer(&fleet, 9);
    tx.send(Ok(Update::Reset(eps(0..3)))).unwrap();
    until(|| bal.len() == 3).await;
    for i in 0..3 {
        fleet.get(addr(i)).set_down(true);
    }
    let start = Instant::now();
    let err = one(&mut bal).await.unwrap_err();
    assert!(err.is::<NoEndpoints>(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert!(fleet.0.lock().unwrap().values().all(|s| s.hits() == 0));

    // The balancer stays usable, and a waiting request is woken when an endpoint comes back.
    let st = fleet.get(addr(2));
    let start = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(300 * MS).await;
        st.set_down(false);
    });
    assert_eq!(one(&mut bal).await.unwrap(), addr(2));
    assert_eq!(start.elapsed(), 300 * MS);
}

#[tokio::test(start_paused = true)]
async fn max_wait_is_configurable() {
    let fleet = Fleet::default();
    let (tx, stream) = source();
    let mut bal = Balance::builder()
        .max_wait(250 * MS)
        .seed(SeedSource::from_seed(10))
        .build(stream, fleet.make())
        .unwrap();
    tx.send(Ok(Update::Reset(eps(0..1)))).unwrap();
    until(|| bal.len() == 1).await;
    fleet.get(addr(0)).set_down(true);
    let start = Instant::now();
    assert!(one(&mut bal).await.unwrap_err().is::<NoEndpoints>());
    assert_eq!(start.elapsed(), 250 * MS);
}

#[tokio::test(start_paused = true)]
async fn empty_set_fails_at_once() {
    let fleet = Fleet::default();
    let (tx, mut bal) = balancer(&fleet, 11);
    tx.send(Ok(Update::Reset(eps(0..2)))).unwrap();
    until(|| bal.len() == 2).await;
    tx.send(Ok(Update::Reset(vec![]))).unwrap();
    until(|| bal.is_empty()).await;
    let start = Instant::now();
    assert!(one(&mut bal).await.unwrap_err().is::<NoEndpoints>());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn waits_for_the_first_discovery_result() {
    let fleet = Fleet::default();
    let (tx, mut bal) = balancer(&fleet, 12);
    // Nothing discovered within max wait: NoEndpoints after 1 s, not at once.
    let start = Instant::now();
    assert!(one(&mut bal).await.unwrap_err().is::<NoEndpoints>());
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // The first result arrives while a request waits: the request is woken and sent.
    tokio::spawn(async move {
        tokio::time::sleep(200 * MS).await;
        tx.send(Ok(Update::Insert(Endpoint::new(addr(0))))).unwrap();
        tx // keep the source open
    });
    let start = Instant::now();
    assert_eq!(one(&mut bal).await.unwrap(), addr(0));
    assert_eq!(start.elapsed(), 200 * MS);
}

#[tokio::test(start_paused = true)]
async fn endpoint_whose_poll_ready_fails_is_skipped_not_dropped() {
    let fleet = Fleet::default();
    let (tx, mut bal) = balancer(&fleet, 13);
    fleet.get(addr(0)).set_latency(5);
    fleet.get(addr(1)).set_latency(5);
    tx.send(Ok(Update::Reset(eps(0..2)))).unwrap();
    let flaky = fleet.get(addr(0));
    flaky.ready_err.store(true, Ordering::SeqCst);
    for _ in 0..100 {
        assert_eq!(one(&mut bal).await.unwrap(), addr(1));
    }
    assert_eq!(flaky.hits(), 0);
    flaky.ready_err.store(false, Ordering::SeqCst);
    // The penalty decays (10 s time constant) while the other endpoint serves traffic; the
    // endpoint was kept, and is used again.
    let (_, failed) = drive(&bal, 2, Instant::now() + Duration::from_secs(120)).await;
    assert_eq!(failed, 0);
    assert!(flaky.hits() > 100, "{}", flaky.hits());
}

// ---------------------------------------------------------------------------------------------
// Discovery in the background.

#[tokio::test(start_paused = true)]
async fn discovery_is_applied_without_traffic() {
    let fleet = Fleet::default();
    let (tx, bal) = balancer(&fleet, 14);
    tx.send(Ok(Update::Reset(eps(0..3)))).unwrap();
    until(|| bal.len() == 3).await;
    tx.send(Ok(Update::Insert(Endpoint::new(addr(7))))).unwrap();
    until(|| bal.len() == 4).await;
    tx.send(Ok(Update::Remove(addr(0)))).unwrap();
    tx.send(Ok(Update::Remove(addr(1)))).unwrap();
    until(|| bal.len() == 2).await;
    // No request was sent.
    assert!(fleet.0.lock().unwrap().values().all(|s| s.hits() == 0));
}

#[tokio::test(start_paused = true)]
async fn failing_or_ended_source_keeps_the_last_set() {
    let fleet = Fleet::default();
    let (tx, mut bal) = balancer(&fleet, 15);
    tx.send(Ok(Update::Reset(eps(0..2)))).unwrap();
    until(|| bal.len() == 2).await;
    tx.send(Err("resolver down".into())).unwrap();
    tx.send(Err("still down".into())).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(bal.len(), 2);
    one(&mut bal).await.unwrap();
    drop(tx); // the source ends
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(bal.len(), 2);
    for _ in 0..10 {
        one(&mut bal).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn discovery_task_ends_with_the_last_clone() {
    let fleet = Fleet::default();
    let (tx, bal) = balancer(&fleet, 16);
    let clone = bal.clone();
    drop(bal);
    tokio::task::yield_now().await;
    assert!(!tx.is_closed());
    drop(clone);
    until(|| tx.is_closed()).await;
}

#[tokio::test(start_paused = true)]
async fn regression_12_13_a_metadata_change_keeps_the_endpoint_service() {
    // An identical endpoint is left alone, and a weight change swaps the weight but keeps the
    // service (its breaker state, its connections): nothing is rebuilt after the first three.
    let built = Arc::new(AtomicU64::new(0));
    let (tx, stream) = source();
    let counter = built.clone();
    let bal = Balance::builder()
        .seed(SeedSource::from_seed(17))
        .build(stream, move |_: &Endpoint| {
            counter.fetch_add(1, Ordering::SeqCst);
            Always::new(tower::service_fn(|()| async { Ok::<_, BoxError>(()) }))
        })
        .unwrap();
    tx.send(Ok(Update::Reset(eps(0..3)))).unwrap();
    until(|| bal.len() == 3).await;
    tx.send(Ok(Update::Reset(eps(0..3)))).unwrap();
    tx.send(Ok(Update::Insert(Endpoint::new(addr(1))))).unwrap();
    tx.send(Ok(Update::Insert(
        Endpoint::new(addr(2)).with_weight(2).unwrap(),
    )))
    .unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(built.load(Ordering::SeqCst), 3);
    assert_eq!(bal.len(), 3);
    let weights: Vec<u32> = bal.endpoints().iter().map(|e| e.weight).collect();
    assert!(weights.contains(&2), "{weights:?}");
}

// ---------------------------------------------------------------------------------------------
// Interop and sharing.

#[tokio::test(start_paused = true)]
async fn tower_discover_feeds_the_balancer() {
    let services: Vec<_> = (0..3u32)
        .map(|i| {
            Always::new(tower::service_fn(
                move |()| async move { Ok::<_, BoxError>(i) },
            ))
        })
        .collect();
    let mut bal = Balance::builder()
        .seed(SeedSource::from_seed(18))
        .load(LeastInFlight)
        .build_from_tower(tower::discover::ServiceList::new::<()>(services))
        .unwrap();
    let mut seen = [0; 3];
    for _ in 0..300 {
        let i = bal.ready().await.unwrap().call(()).await.unwrap();
        seen[i as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
}

#[test]
fn balance_is_clone_send_sync() {
    fn assert_shared<T: Clone + Send + Sync + 'static>() {}
    assert_shared::<Balance<Ep>>();
    fn assert_send<T: Send + 'static>() {}
    assert_send::<<Balance<Ep> as Service<()>>::Future>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_on_many_threads_share_one_balancer() {
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..8).map(|_| AtomicU64::new(0)).collect());
    let (tx, stream) = source();
    let c = counts.clone();
    let bal = Balance::new(stream, move |ep: &Endpoint| {
        let i = (ep.addr().port() - 10_000) as usize;
        let c = c.clone();
        Always::new(tower::service_fn(move |()| {
            c[i].fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, BoxError>(()) }
        }))
    });
    tx.send(Ok(Update::Reset(eps(0..8)))).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut bal = bal.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..1_000 {
                bal.ready().await.unwrap().call(()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert_eq!(total, 16_000);
    assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) > 0));
}

#[cfg(feature = "metrics")]
#[tokio::test(start_paused = true)]
async fn metrics_count_endpoints_errors_and_no_endpoints() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let fleet = Fleet::default();
    let (tx, mut bal) = metrics::with_local_recorder(&recorder, || {
        let (tx, stream) = source();
        let bal = Balance::builder()
            .seed(SeedSource::from_seed(19))
            .labels(meshwork::telemetry::MetricLabels::new().with("upstream", "users"))
            .build(stream, fleet.make())
            .unwrap();
        (tx, bal)
    });
    tx.send(Ok(Update::Reset(eps(0..4)))).unwrap();
    tx.send(Err("boom".into())).unwrap();
    until(|| bal.len() == 4).await;
    tokio::task::yield_now().await;
    tx.send(Ok(Update::Reset(vec![]))).unwrap();
    until(|| bal.is_empty()).await;
    assert!(one(&mut bal).await.unwrap_err().is::<NoEndpoints>());

    let values: HashMap<String, DebugValue> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, v)| {
            let key = key.key();
            assert!(
                key.labels()
                    .any(|l| l.key() == "upstream" && l.value() == "users")
            );
            (key.name().to_string(), v)
        })
        .collect();
    assert_eq!(
        values["meshwork_balance_endpoints"],
        DebugValue::Gauge(0.0.into())
    );
    assert_eq!(
        values["meshwork_balance_no_endpoints_total"],
        DebugValue::Counter(1)
    );
    assert_eq!(
        values["meshwork_balance_discovery_errors_total"],
        DebugValue::Counter(1)
    );
}
