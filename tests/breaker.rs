//! Circuit breaker: concurrency of the half-open probe, the open-state backoff, and a model check of
//! the state machine.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use meshwork::BoxError;
use meshwork::available::Available;
use meshwork::backoff::Backoff;
use meshwork::breaker::{Breaker, BreakerConfig, BreakerConfigBuilder, Mode, Open, State};
use meshwork::classify::Classification;
use meshwork::rng::SeedSource;
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// What the test service should do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    Ok,
    Fail,
    Ignore,
}

fn classify(out: Result<&Out, &BoxError>) -> Classification {
    match out {
        Ok(Out::Ignore) => Classification::ignorable(),
        Ok(_) => Classification::success(),
        Err(_) => Classification::retryable(),
    }
}

type Classifier = fn(Result<&Out, &BoxError>) -> Classification;
type Svc = Breaker<Scripted, Classifier>;

/// A service that answers as told, counting the calls that reach it.
#[derive(Clone, Debug, Default)]
struct Scripted {
    calls: Arc<AtomicUsize>,
}

impl Service<Out> for Scripted {
    type Response = Out;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Out, BoxError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, o: Out) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(match o {
            Out::Fail => Err("failed".into()),
            o => Ok(o),
        })
    }
}

fn breaker(b: BreakerConfigBuilder, seed: u64) -> (Svc, Arc<AtomicUsize>) {
    let inner = Scripted::default();
    let calls = inner.calls.clone();
    let config = b.seed(SeedSource::from_seed(seed)).build().unwrap();
    (
        Breaker::with_classify(inner, config, classify as Classifier),
        calls,
    )
}

/// One `poll_ready`, without waiting: `true` if the service is ready.
async fn ready_now(svc: &mut Svc) -> bool {
    poll_fn(|cx| Poll::Ready(svc.poll_ready(cx)))
        .await
        .is_ready()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clones_race_for_one_probe() {
    // Paused time does not exist on a multi-thread runtime: the breaker runs on real time, with a
    // 1 ms open period, and each round waits for the probe timer to reopen the gate.
    let (mut svc, calls) = breaker(
        BreakerConfig::builder()
            .consecutive_failures(1)
            .no_success_rate()
            .backoff(Backoff::constant(MS).unwrap()),
        1,
    );
    let handle = svc.handle();
    let _ = svc.ready().await.unwrap().call(Out::Fail).await;
    for round in 0..20 {
        // Woken by the breaker's timer once the probe is due.
        poll_fn(|cx| handle.poll_available(cx)).await;
        assert_eq!(handle.state(), State::HalfOpen, "round {round}");

        let barrier = Arc::new(tokio::sync::Barrier::new(100));
        let winners = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let mut clone = svc.clone();
                let (barrier, winners) = (barrier.clone(), winners.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let won = ready_now(&mut clone).await;
                    if won {
                        winners.fetch_add(1, Ordering::SeqCst);
                    }
                    (won, clone)
                })
            })
            .collect();
        let mut winner = None;
        for t in tasks {
            let (won, clone) = t.await.unwrap();
            if won {
                winner = Some(clone);
            }
        }
        assert_eq!(winners.load(Ordering::SeqCst), 1, "round {round}");
        assert!(!handle.is_available(), "the only probe is taken");
        let mut winner = winner.unwrap();
        if round % 2 == 0 {
            // The probe fails: the breaker reopens, and the next round races again.
            let _ = winner.call(Out::Fail).await;
            assert_eq!(handle.state(), State::Open);
        } else {
            // The winner is dropped without calling: the probe is given back, then sent by another
            // clone, and fails.
            drop(winner);
            assert!(handle.is_available());
            let mut other = svc.clone();
            assert!(ready_now(&mut other).await);
            let _ = other.call(Out::Fail).await;
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        21,
        "one trip + one probe per round"
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_stays_within_bounds_and_resets_after_recovery() {
    let backoff = Backoff::equal_jitter(SEC, 8 * SEC).unwrap();
    let (mut svc, _) = breaker(
        BreakerConfig::builder()
            .consecutive_failures(1)
            .no_success_rate()
            .backoff(backoff)
            .mode(Mode::FailFast),
        42,
    );
    let h = svc.handle();

    /// Sends `o`, then returns how long the breaker stays open (the probe timer wakes us).
    async fn open_for(svc: &mut Svc, o: Out) -> Duration {
        let _ = svc.ready().await.unwrap().call(o).await;
        assert_eq!(svc.handle().state(), State::Open);
        let start = Instant::now();
        let h = svc.handle();
        poll_fn(|cx| h.poll_available(cx)).await;
        assert_eq!(h.state(), State::HalfOpen);
        start.elapsed()
    }

    let mut at_cap = Vec::new();
    for attempt in 0..8u32 {
        // The first trip comes from the closed state; each later one is a failed probe.
        let d = open_for(&mut svc, Out::Fail).await;
        let (lo, hi) = backoff.bounds(attempt, SEC);
        assert!(
            d >= lo && d <= hi + MS,
            "trip {attempt}: open for {d:?}, expected within [{lo:?}, {hi:?}]"
        );
        assert!(d <= 8 * SEC + MS, "never above the cap");
        if hi == 8 * SEC {
            at_cap.push(d);
        }
    }
    assert!(at_cap.len() >= 4);
    assert!(
        at_cap.windows(2).any(|w| w[0] != w[1]),
        "jittered: {at_cap:?}"
    );

    // Recovery: the probe succeeds, the breaker closes, and the next trip starts from the base.
    let _ = svc.ready().await.unwrap().call(Out::Ok).await;
    assert_eq!(h.state(), State::Closed);
    let d = open_for(&mut svc, Out::Fail).await;
    assert!(d >= SEC / 2 && d <= SEC + MS, "after recovery: {d:?}");
}

// ---- model check ----

#[derive(Clone, Copy, Debug)]
enum Op {
    Call(Out),
    Advance(u64),
    ForceOpen,
    ForceClosed,
    ClearForce,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop_oneof![Just(Out::Ok), Just(Out::Fail), Just(Out::Ignore)].prop_map(Op::Call),
        3 => (0u64..400).prop_map(Op::Advance),
        1 => prop_oneof![Just(Op::ForceOpen), Just(Op::ForceClosed), Just(Op::ClearForce)],
    ]
}

/// The reference model: the state machine of the module docs, written as plainly as possible (an
/// exact list of outcomes in the window, an explicit attempt counter for the backoff).
#[derive(Debug)]
struct Model {
    threshold: u32,
    min_rate: f64,
    min_requests: u64,
    bucket_ms: u64,
    buckets: u64,
    backoff: Backoff,
    state: State,
    consecutive: u32,
    outcomes: Vec<(u64, bool)>,
    attempt: u32,
    open_until: u64,
}

impl Model {
    fn refresh(&mut self, now: u64) {
        if self.state == State::Open && now >= self.open_until {
            self.state = State::HalfOpen;
        }
    }

    fn reset(&mut self) {
        self.consecutive = 0;
        self.outcomes.clear();
        self.attempt = 0;
    }

    fn trip(&mut self, now: u64) {
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(0);
        let d = self
            .backoff
            .delay(self.attempt, self.backoff.base(), &mut rng);
        self.attempt += 1;
        self.open_until = now + d.as_millis() as u64;
        self.state = State::Open;
    }

    /// Returns whether the call reaches the inner service.
    fn call(&mut self, o: Out, now: u64) -> bool {
        self.refresh(now);
        match self.state {
            State::Open | State::ForcedOpen => false,
            State::HalfOpen => {
                match o {
                    Out::Ok => {
                        self.reset();
                        self.state = State::Closed;
                    }
                    Out::Fail => self.trip(now),
                    Out::Ignore => {}
                }
                true
            }
            State::Closed | State::ForcedClosed => {
                let tick = now / self.bucket_ms;
                match o {
                    Out::Ignore => {}
                    Out::Ok => {
                        self.consecutive = 0;
                        self.outcomes.push((tick, true));
                    }
                    Out::Fail => {
                        self.consecutive += 1;
                        self.outcomes.push((tick, false));
                        if self.state == State::Closed {
                            let recent = self
                                .outcomes
                                .iter()
                                .filter(|(t, _)| tick - t < self.buckets);
                            let total = recent.clone().count() as u64;
                            let ok = recent.filter(|(_, s)| *s).count() as u64;
                            if self.consecutive >= self.threshold
                                || (total >= self.min_requests
                                    && (ok as f64) < self.min_rate * total as f64)
                            {
                                self.trip(now);
                            }
                        }
                    }
                }
                true
            }
        }
    }

    fn force(&mut self, to: Option<State>) {
        match to {
            Some(s) => {
                self.reset();
                self.state = s;
            }
            None if matches!(self.state, State::ForcedOpen | State::ForcedClosed) => {
                self.reset();
                self.state = State::Closed;
            }
            None => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn state_machine_matches_the_model(
        threshold in 1u32..6,
        min_rate in prop_oneof![Just(0.5), Just(0.8), Just(1.0)],
        min_requests in 1u32..8,
        bucket_ms in prop_oneof![Just(50u64), Just(100), Just(250)],
        buckets in 1u32..6,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_millis(800)).unwrap();
            let window = Duration::from_millis(bucket_ms * u64::from(buckets));
            let (mut svc, calls) = breaker(
                BreakerConfig::builder()
                    .consecutive_failures(threshold)
                    .success_rate(min_rate, window, min_requests)
                    .window_buckets(buckets)
                    .backoff(backoff)
                    .mode(Mode::FailFast),
                0,
            );
            let h = svc.handle();
            let start = Instant::now();
            let mut model = Model {
                threshold,
                min_rate,
                min_requests: u64::from(min_requests),
                bucket_ms,
                buckets: u64::from(buckets),
                backoff,
                state: State::Closed,
                consecutive: 0,
                outcomes: Vec::new(),
                attempt: 0,
                open_until: 0,
            };
            let mut expected_calls = 0;
            for (i, op) in ops.iter().enumerate() {
                let now = start.elapsed().as_millis() as u64;
                match *op {
                    Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                    Op::ForceOpen => { h.force_open(); model.force(Some(State::ForcedOpen)); }
                    Op::ForceClosed => { h.force_closed(); model.force(Some(State::ForcedClosed)); }
                    Op::ClearForce => { h.clear_force(); model.force(None); }
                    Op::Call(o) => {
                        let reaches = model.call(o, now);
                        expected_calls += usize::from(reaches);
                        let res = svc.ready().await.unwrap().call(o).await;
                        match (reaches, o, &res) {
                            (false, _, Err(e)) => prop_assert!(e.is::<Open>(), "op {i}: {e}"),
                            (true, Out::Fail, Err(e)) => prop_assert!(!e.is::<Open>(), "op {i}"),
                            (true, o, Ok(got)) => prop_assert_eq!(*got, o),
                            _ => prop_assert!(false, "op {i} {op:?}: model reaches={reaches}, got {res:?}"),
                        }
                    }
                }
                let now = start.elapsed().as_millis() as u64;
                model.refresh(now);
                prop_assert_eq!(h.state(), model.state, "after op {} {:?}: {:?}", i, op, model);
                prop_assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
                prop_assert_eq!(
                    svc.is_available(),
                    !matches!(model.state, State::Open | State::ForcedOpen)
                );
            }
            Ok(())
        })?;
    }
}

/// End to end over loopback: an HTTP endpoint that answers 503 trips a fail-fast breaker that uses
/// `HttpClassify`; while open no request reaches the server; the probe closes it once it recovers.
#[cfg(feature = "http")]
#[tokio::test]
async fn http_endpoint_over_loopback() {
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use meshwork::classify::HttpClassify;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let status = if n < 3 { 503 } else { 200 };
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Empty::<Bytes>::new())
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

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let client = tower::ServiceBuilder::new()
        .map_err(BoxError::from)
        .service(client);
    let config = BreakerConfig::builder()
        .consecutive_failures(3)
        .backoff(Backoff::constant(Duration::from_millis(50)).unwrap())
        .mode(Mode::FailFast)
        .seed(SeedSource::from_seed(3))
        .build()
        .unwrap();
    let mut svc = Breaker::with_classify(client, config, HttpClassify::new());
    let handle = svc.handle();
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let get = || {
        http::Request::get(uri.clone())
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    for _ in 0..3 {
        let res = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), 503);
    }
    assert_eq!(handle.state(), State::Open);
    for _ in 0..5 {
        let err = svc.ready().await.unwrap().call(get()).await.unwrap_err();
        assert!(err.is::<Open>(), "{err}");
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        3,
        "no request reached the server"
    );

    // The probe timer wakes us when the probe is due; the probe finds the endpoint healthy.
    poll_fn(|cx| handle.poll_available(cx)).await;
    let res = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(served.load(Ordering::SeqCst), 4);
}
