//! Unit tests of the breaker, on paused time with seeded randomness.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{Service, ServiceExt};

use super::*;
use crate::BoxError;
use crate::available::Available;
use crate::backoff::Backoff;
use crate::classify::Classification;
use crate::rng::SeedSource;

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

/// A service that answers as told, counting the calls that reach it.
#[derive(Clone, Debug, Default)]
struct Scripted {
    calls: Arc<AtomicUsize>,
}

impl Service<Out> for Scripted {
    type Response = Out;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Out, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, o: Out) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(match o {
            Out::Fail => Err("failed".into()),
            o => Ok(o),
        })
    }
}

fn breaker(b: BreakerConfigBuilder) -> (Breaker<Scripted, Classifier>, Arc<AtomicUsize>) {
    let inner = Scripted::default();
    let calls = inner.calls.clone();
    let config = b.seed(SeedSource::from_seed(1)).build().unwrap();
    (
        Breaker::with_classify(inner, config, classify as Classifier),
        calls,
    )
}

fn constant(d: Duration) -> Backoff {
    Backoff::constant(d).unwrap()
}

/// The builder most tests start from: one failure trips it, and it stays open for one second.
fn trips_once() -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .consecutive_failures(1)
        .backoff(constant(SEC))
}

/// A current-thread runtime with paused time, for tests that install a recorder or subscriber first.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Polls `svc.ready()` once, which must be ready at once; `svc` keeps its reservation.
fn ready_now(svc: &mut Breaker<Scripted, Classifier>) {
    let mut ready = tokio_test::task::spawn(svc.ready());
    assert_ready_ok!(ready.poll(), "expected the breaker to be ready");
}

/// Starts one call through `svc`, which must be ready at once; the response is not polled yet.
fn start(
    svc: &mut Breaker<Scripted, Classifier>,
    o: Out,
) -> ResponseFuture<std::future::Ready<Result<Out, BoxError>>, Classifier> {
    ready_now(svc);
    svc.call(o)
}

/// One call through `svc`, which must be ready at once.
async fn call(svc: &mut Breaker<Scripted, Classifier>, o: Out) -> Result<Out, BoxError> {
    start(svc, o).await
}

#[tokio::test(start_paused = true)]
async fn trips_after_exactly_n_consecutive_failures() {
    let (mut svc, _) = breaker(
        BreakerConfig::builder()
            .consecutive_failures(3)
            .no_success_rate(),
    );
    let h = svc.handle();
    // A success in between resets the count.
    for o in [Out::Fail, Out::Fail, Out::Ok, Out::Fail, Out::Fail] {
        let _ = call(&mut svc, o).await;
        assert_eq!(h.state(), State::Closed);
    }
    let _ = call(&mut svc, Out::Fail).await;
    assert_eq!(h.state(), State::Open);
    assert!(!svc.is_available());
}

#[tokio::test(start_paused = true)]
async fn success_rate_trips_only_with_the_minimum_volume() {
    let (mut svc, _) = breaker(
        BreakerConfig::builder()
            .no_consecutive_failures()
            .success_rate(0.8, 10 * SEC, 5),
    );
    let h = svc.handle();
    // Four failures: 0 % success, but below the minimum volume.
    for _ in 0..4 {
        let _ = call(&mut svc, Out::Fail).await;
    }
    assert_eq!(h.state(), State::Closed);
    // The window slides: after 10 s those four have left it, and four more are still not enough.
    tokio::time::advance(10 * SEC).await;
    for _ in 0..4 {
        let _ = call(&mut svc, Out::Fail).await;
    }
    assert_eq!(h.state(), State::Closed);
    // The fifth outcome in the window reaches the volume.
    let _ = call(&mut svc, Out::Fail).await;
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn success_rate_threshold_is_strict() {
    let (mut svc, _) = breaker(
        BreakerConfig::builder()
            .no_consecutive_failures()
            .success_rate(0.8, 10 * SEC, 5),
    );
    let h = svc.handle();
    for o in [Out::Ok, Out::Ok, Out::Ok, Out::Ok, Out::Fail] {
        let _ = call(&mut svc, o).await;
    }
    // Exactly 80 %: not below the threshold.
    assert_eq!(h.state(), State::Closed);
    let _ = call(&mut svc, Out::Fail).await; // 4/6
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn ignorable_outcomes_change_nothing() {
    let (mut svc, _) = breaker(
        BreakerConfig::builder()
            .consecutive_failures(3)
            .success_rate(0.5, 10 * SEC, 3),
    );
    let h = svc.handle();
    // Ignorables neither reset the consecutive count nor add volume to the window.
    for o in [Out::Fail, Out::Ignore, Out::Ignore, Out::Fail, Out::Ignore] {
        let _ = call(&mut svc, o).await;
        assert_eq!(h.state(), State::Closed);
    }
    // A cancelled call is ignorable too.
    drop(start(&mut svc, Out::Ok));
    let _ = call(&mut svc, Out::Fail).await;
    assert_eq!(h.state(), State::Open);

    // Only ignorables: nothing at all happens.
    let (mut svc, _) = breaker(BreakerConfig::builder().consecutive_failures(1));
    for _ in 0..100 {
        let _ = call(&mut svc, Out::Ignore).await;
    }
    assert_eq!(svc.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_successes_count_as_failures() {
    let inner = tower::service_fn(|d: Duration| async move {
        tokio::time::sleep(d).await;
        Ok::<_, BoxError>(())
    });
    let config = BreakerConfig::builder()
        .consecutive_failures(2)
        .no_success_rate()
        .slow_call(100 * MS)
        .build()
        .unwrap();
    let mut svc = Breaker::new(inner, config);
    let h = svc.handle();
    svc.ready().await.unwrap().call(150 * MS).await.unwrap();
    svc.ready().await.unwrap().call(50 * MS).await.unwrap(); // fast: resets
    svc.ready().await.unwrap().call(150 * MS).await.unwrap();
    assert_eq!(h.state(), State::Closed);
    svc.ready().await.unwrap().call(101 * MS).await.unwrap();
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_makes_no_inner_call_while_open() {
    let (mut svc, calls) = breaker(
        BreakerConfig::builder()
            .consecutive_failures(2)
            .backoff(constant(SEC))
            .mode(Mode::FailFast),
    );
    let _ = call(&mut svc, Out::Fail).await;
    let _ = call(&mut svc, Out::Fail).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    for _ in 0..10 {
        let err = call(&mut svc, Out::Ok).await.unwrap_err();
        assert!(err.is::<Open>(), "{err}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "no call reached the inner service"
    );

    // Once the backoff elapses, one probe goes through and closes the breaker.
    tokio::time::advance(SEC).await;
    assert_eq!(svc.handle().state(), State::HalfOpen);
    assert_eq!(call(&mut svc, Out::Ok).await.unwrap(), Out::Ok);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(svc.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_rejects_beyond_the_probes() {
    let (mut svc, calls) = breaker(trips_once().mode(Mode::FailFast));
    let mut other = svc.clone();
    let _ = call(&mut svc, Out::Fail).await;
    tokio::time::advance(SEC).await;
    // `svc` takes the one probe and does not send it yet; `other` is refused.
    ready_now(&mut svc);
    assert!(call(&mut other, Out::Ok).await.unwrap_err().is::<Open>());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(svc.call(Out::Ok).await.unwrap(), Out::Ok);
    assert_eq!(svc.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn gate_mode_wakes_the_waiting_task_by_timer() {
    let (mut svc, calls) = breaker(trips_once());
    let _ = call(&mut svc, Out::Fail).await;
    let mut waiting = svc.clone();
    let mut ready = tokio_test::task::spawn(waiting.ready());
    assert_pending!(ready.poll());
    // Nothing wakes it before the probe is due: it is not polled again in a loop.
    tokio::time::advance(999 * MS).await;
    tokio::task::yield_now().await;
    assert!(!ready.is_woken());
    // The timer fires at the due time and wakes it without anyone polling the breaker.
    tokio::time::advance(MS).await;
    tokio::task::yield_now().await;
    assert!(ready.is_woken());
    assert_eq!(
        ready.waker_ref_count(),
        1,
        "the waker was taken out of the list"
    );
    assert_ready_ok!(ready.poll());
    drop(ready);
    // It holds the probe: another clone is not ready, the breaker is not available.
    let mut other = svc.clone();
    let mut other_ready = tokio_test::task::spawn(other.ready());
    assert_pending!(other_ready.poll());
    assert!(!svc.is_available());
    assert_eq!(waiting.call(Out::Ok).await.unwrap(), Out::Ok);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The successful probe closed the breaker and woke the other waiter.
    assert!(other_ready.is_woken());
    assert_ready_ok!(other_ready.poll());
}

#[tokio::test(start_paused = true)]
async fn poll_available_wakes_when_the_probe_is_due() {
    let (mut svc, _) = breaker(trips_once());
    let _ = call(&mut svc, Out::Fail).await;
    let h = svc.handle();
    let mut avail = tokio_test::task::spawn(std::future::poll_fn(|cx| h.poll_available(cx)));
    assert_pending!(avail.poll());
    // Polling again registers the same task once.
    assert_pending!(avail.poll());
    tokio::time::advance(SEC).await;
    tokio::task::yield_now().await;
    assert!(avail.is_woken());
    assert_ready!(avail.poll());
    assert!(svc.is_available());
    assert_eq!(h.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer() {
    let (mut svc, _) = breaker(
        BreakerConfig::builder()
            .consecutive_failures(1)
            .backoff(Backoff::exponential(SEC, 4 * SEC).unwrap())
            .mode(Mode::FailFast),
    );
    let h = svc.handle();
    let _ = call(&mut svc, Out::Fail).await;
    tokio::time::advance(SEC).await;
    assert_eq!(h.state(), State::HalfOpen);
    let _ = call(&mut svc, Out::Fail).await; // the probe fails
    assert_eq!(h.state(), State::Open);
    tokio::time::advance(SEC).await;
    assert_eq!(h.state(), State::Open);
    tokio::time::advance(SEC).await;
    assert_eq!(h.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn probes_given_back_when_unused() {
    let (mut svc, _) = breaker(trips_once());
    let _ = call(&mut svc, Out::Fail).await;
    tokio::time::advance(SEC).await;

    // A clone that reserved the probe and is dropped gives it back.
    let mut a = svc.clone();
    ready_now(&mut a);
    assert!(!svc.is_available());
    drop(a);
    assert!(svc.is_available());

    // So does one unwrapped with `into_inner`.
    let mut a = svc.clone();
    ready_now(&mut a);
    assert!(!svc.is_available());
    let _inner = a.into_inner();
    assert!(svc.is_available());

    // A probe whose response future is dropped gives it back too.
    let mut b = svc.clone();
    let fut = start(&mut b, Out::Ok);
    assert!(!svc.is_available());
    drop(fut);
    assert!(svc.is_available());

    // So does an ignorable probe outcome.
    assert_eq!(call(&mut b, Out::Ignore).await.unwrap(), Out::Ignore);
    assert_eq!(svc.handle().state(), State::HalfOpen);
    assert!(svc.is_available());

    // A clone of a reserving service starts without a reservation.
    ready_now(&mut b);
    let mut c = b.clone();
    let mut ready = tokio_test::task::spawn(c.ready());
    assert_pending!(ready.poll());
}

#[tokio::test(start_paused = true)]
async fn several_probes_must_all_succeed() {
    let (mut svc, _) = breaker(trips_once().half_open_probes(3).mode(Mode::FailFast));
    let h = svc.handle();
    let _ = call(&mut svc, Out::Fail).await;
    tokio::time::advance(SEC).await;
    let mut clones: Vec<_> = (0..4).map(|_| svc.clone()).collect();
    let mut futs = Vec::new();
    for (i, c) in clones.iter_mut().enumerate() {
        let fut = start(c, Out::Ok);
        if i < 3 {
            futs.push(fut);
        } else {
            assert!(
                fut.await.unwrap_err().is::<Open>(),
                "a fourth probe is refused"
            );
        }
    }
    let mut futs = futs.into_iter();
    futs.next().unwrap().await.unwrap();
    futs.next().unwrap().await.unwrap();
    assert_eq!(h.state(), State::HalfOpen);
    futs.next().unwrap().await.unwrap();
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn manual_switch() {
    let (mut svc, calls) = breaker(BreakerConfig::builder().consecutive_failures(1));
    let h = svc.handle();
    let mut waiting = svc.clone();
    h.force_open();
    assert_eq!(h.state(), State::ForcedOpen);
    assert!(!svc.is_available());
    let mut ready = tokio_test::task::spawn(waiting.ready());
    assert_pending!(ready.poll());
    // Forced open stays open: no probe after any backoff.
    tokio::time::advance(Duration::from_secs(3600)).await;
    tokio::task::yield_now().await;
    assert!(!ready.is_woken());
    assert_pending!(ready.poll());

    // Forced closed: failures do not trip it, and the waiter is woken.
    h.force_closed();
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
    drop(ready);
    for _ in 0..5 {
        let _ = call(&mut svc, Out::Fail).await;
    }
    assert_eq!(h.state(), State::ForcedClosed);
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    // Cleared: back to the policies, from scratch.
    h.clear_force();
    assert_eq!(h.state(), State::Closed);
    let _ = call(&mut svc, Out::Fail).await;
    assert_eq!(h.state(), State::Open);
    h.clear_force(); // not forced: no effect
    assert_eq!(h.state(), State::Open);
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_are_emitted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        paused_runtime().block_on(async {
            let (mut svc, _) = breaker(
                trips_once()
                    .mode(Mode::FailFast)
                    .labels(crate::telemetry::MetricLabels::new().with("upstream", "users")),
            );
            let _ = call(&mut svc, Out::Fail).await;
            let _ = call(&mut svc, Out::Ok).await; // rejected
            tokio::time::advance(SEC).await;
            let _ = call(&mut svc, Out::Fail).await; // failed probe
            tokio::time::advance(SEC).await;
            let _ = call(&mut svc, Out::Ok).await; // successful probe
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let value = |name: &str, label: Option<(&str, &str)>| {
        snapshot
            .iter()
            .find(|(k, _, _, _)| {
                k.key().name() == name
                    && k.key()
                        .labels()
                        .any(|l| l.key() == "upstream" && l.value() == "users")
                    && label.is_none_or(|(lk, lv)| {
                        k.key().labels().any(|l| l.key() == lk && l.value() == lv)
                    })
            })
            .map(|(_, _, _, v)| match v {
                DebugValue::Counter(n) => *n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(_) => f64::NAN,
            })
            .unwrap_or_else(|| panic!("missing {name} {label:?}"))
    };
    let trips = |reason| value("meshwork_breaker_trips_total", Some(("reason", reason)));
    assert_eq!(trips("consecutive_failures"), 1.0);
    assert_eq!(trips("probe_failed"), 1.0);
    assert_eq!(trips("success_rate"), 0.0);
    let probes = |outcome| value("meshwork_breaker_probes_total", Some(("outcome", outcome)));
    assert_eq!(probes("success"), 1.0);
    assert_eq!(probes("failure"), 1.0);
    assert_eq!(value("meshwork_breaker_rejected_total", None), 1.0);
    assert_eq!(
        value("meshwork_breaker_state", None),
        State::Closed.gauge_value()
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_are_bounded_by_live_clones() {
    let (mut svc, _) = breaker(trips_once());
    let _ = call(&mut svc, Out::Fail).await;
    // A thousand requests, each with its own clone, wait and give up (an outer timeout, say).
    for _ in 0..1000 {
        let mut c = svc.clone();
        let mut ready = tokio_test::task::spawn(c.ready());
        assert_pending!(ready.poll());
        // The registration holds the task's waker; dropping the request drops it.
        assert_eq!(ready.waker_ref_count(), 2);
        drop(ready);
        drop(c);
    }
    // One clone polled many times holds one registration.
    let mut c = svc.clone();
    let mut ready = tokio_test::task::spawn(c.ready());
    for _ in 0..100 {
        assert_pending!(ready.poll());
    }
    assert_eq!(
        ready.waker_ref_count(),
        2,
        "one registration, not a hundred"
    );
    tokio::time::advance(SEC).await;
    tokio::task::yield_now().await;
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
}

// `every_transition_is_traced_with_its_reason` lives in its own test binary,
// `tests/breaker_tracing.rs`, with a global subscriber: a thread-local one raced the callsite
// interest cache of the other tests' threads (issue 12 item 14).
/// A removed endpoint's breaker leaves the open-breakers gauge: endpoints that share labels (the
/// default: no per-endpoint label) are counted together, and a dropped breaker no longer counts.
///
/// Before the fix, per-endpoint state gauges kept a removed endpoint's last value forever.
#[cfg(feature = "metrics")]
#[test]
fn regression_12_12_the_open_breakers_gauge_forgets_dropped_breakers() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A debugging snapshot resets gauges to zero: keep the running value.
    let value = std::cell::Cell::new(0.0);
    let open = || {
        let delta = snapshotter
            .snapshot()
            .into_vec()
            .iter()
            .filter(|(k, _, _, _)| k.key().name() == "meshwork_breaker_open")
            .map(|(k, _, _, v)| {
                assert!(
                    k.key().labels().all(|l| l.key() != "endpoint"),
                    "no endpoint label by default"
                );
                match v {
                    DebugValue::Gauge(g) => g.into_inner(),
                    _ => f64::NAN,
                }
            })
            .sum::<f64>();
        value.set(value.get() + delta);
        value.get()
    };
    metrics::with_local_recorder(&recorder, || {
        paused_runtime().block_on(async {
            let mut breakers: Vec<_> = (0..3)
                .map(|_| breaker(trips_once().mode(Mode::FailFast)).0)
                .collect();
            for b in &mut breakers[..2] {
                let _ = call(b, Out::Fail).await;
            }
            assert_eq!(open(), 2.0);
            // Discovery removes an endpoint whose breaker is open: its service is dropped.
            drop(breakers.remove(0));
            assert_eq!(open(), 1.0);
            drop(breakers);
            assert_eq!(open(), 0.0);
        });
    });
}
