//! Unit tests of the retry layer, with tower-test mocks and paused time.

use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_test::mock;

use super::*;
use crate::BoxError;
use crate::backoff::Backoff;
use crate::classify::Classification;
use crate::rng::SeedSource;
use crate::timeout::{CarryDeadline, Deadline};

const MS: Duration = Duration::from_millis(1);

fn policy() -> RetryPolicy {
    RetryPolicy::new()
        .backoff(Backoff::constant(MS * 100).unwrap())
        .seed(SeedSource::from_seed(1))
}

type Handle<Req> = mock::Handle<Req, &'static str>;

/// Spawns one request through `layer` over a mock, returning the join handle and the mock handle.
fn spawn_call<Req, C, R>(
    layer: RetryLayer<C, R>,
    req: Req,
) -> (
    tokio::task::JoinHandle<Result<&'static str, BoxError>>,
    Handle<Req>,
)
where
    Req: Send + 'static,
    C: crate::classify::Classify<&'static str, BoxError> + Send + Sync + 'static,
    R: Replay<Req> + Send + Sync + 'static,
{
    let (svc, handle) = mock::pair::<Req, &'static str>();
    (spawn_on(tower::Layer::layer(&layer, svc), req), handle)
}

/// Fails the next try `handle` receives with `err`.
async fn fail<Req>(handle: &mut Handle<Req>, err: impl Into<BoxError>) {
    handle.next_request().await.unwrap().1.send_error(err);
}

fn spawn_on<S, Req>(mut svc: S, req: Req) -> tokio::task::JoinHandle<Result<S::Response, S::Error>>
where
    S: Service<Req> + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    Req: Send + 'static,
{
    tokio::spawn(async move { svc.ready().await?.call(req).await })
}

#[tokio::test(start_paused = true)]
async fn retries_until_success_with_the_same_request() {
    let (join, mut handle) = spawn_call(RetryLayer::new(policy()), "req");
    for _ in 0..2 {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req, "req");
        send.send_error("unavailable");
    }
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("ok");
    assert_eq!(join.await.unwrap().unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn stops_after_max_retries_with_the_last_failure() {
    let (join, mut handle) = spawn_call(RetryLayer::new(policy().max_retries(2)), "req");
    for msg in ["first", "second", "third"] {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(msg);
    }
    let err = join.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "third");
    // The service (and its clones) are gone: no fourth try was ever started.
    assert!(handle.next_request().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn only_retryable_failures_are_retried() {
    let classify = |o: Result<&&'static str, &BoxError>| match o {
        Ok(_) => Classification::success(),
        Err(e) if e.to_string() == "bad request" => Classification::non_retryable(),
        Err(_) => Classification::ignorable(),
    };
    for msg in ["bad request", "cancelled"] {
        let layer = RetryLayer::new(policy().classify(classify));
        let (join, mut handle) = spawn_call(layer, "req");
        fail(&mut handle, msg).await;
        assert_eq!(join.await.unwrap().unwrap_err().to_string(), msg);
        assert!(handle.next_request().await.is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_are_waited() {
    let backoff = Backoff::exponential(MS * 40, MS * 1000).unwrap();
    let layer = RetryLayer::new(policy().backoff(backoff).max_retries(3));
    let (join, mut handle) = spawn_call(layer, "req");
    let (_, send) = handle.next_request().await.unwrap();
    let mut failed_at = Instant::now();
    send.send_error("unavailable");
    for expected in [40, 80, 160] {
        let (_, send) = handle.next_request().await.unwrap();
        assert_eq!(failed_at.elapsed(), MS * expected);
        failed_at = Instant::now();
        send.send_error("unavailable");
    }
    assert!(join.await.unwrap().is_err());
}

#[tokio::test(start_paused = true)]
async fn full_jitter_default_stays_within_its_bounds() {
    let layer = RetryLayer::new(RetryPolicy::new().seed(SeedSource::from_seed(9)));
    let (join, mut handle) = spawn_call(layer, "req");
    let (_, send) = handle.next_request().await.unwrap();
    let mut failed_at = Instant::now();
    send.send_error("unavailable");
    for cap in [25, 50] {
        let (_, send) = handle.next_request().await.unwrap();
        assert!(failed_at.elapsed() <= MS * cap, "{:?}", failed_at.elapsed());
        failed_at = Instant::now();
        send.send_error("unavailable");
    }
    assert!(join.await.unwrap().is_err());
}

fn retry_after(secs: u64) -> impl Fn(Result<&&'static str, &BoxError>) -> Classification + Clone {
    move |o: Result<&&'static str, &BoxError>| match o {
        Ok(_) => Classification::success(),
        Err(_) => Classification::retryable().with_retry_after(Duration::from_secs(secs)),
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_at_least() {
    let layer = RetryLayer::new(policy().classify(retry_after(2)));
    let (join, mut handle) = spawn_call(layer, "req");
    let (_, send) = handle.next_request().await.unwrap();
    let failed_at = Instant::now();
    send.send_error("slow down");
    let (_, send) = handle.next_request().await.unwrap();
    // Not the 100 ms backoff: the server asked for 2 s.
    assert_eq!(failed_at.elapsed(), Duration::from_secs(2));
    send.send_response("ok");
    assert_eq!(join.await.unwrap().unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_capped() {
    let policy = policy()
        .classify(retry_after(3600))
        .retry_after_cap(Duration::from_secs(5));
    let (join, mut handle) = spawn_call(RetryLayer::new(policy), "req");
    let (_, send) = handle.next_request().await.unwrap();
    let failed_at = Instant::now();
    send.send_error("slow down");
    let (_, send) = handle.next_request().await.unwrap();
    assert_eq!(failed_at.elapsed(), Duration::from_secs(5));
    send.send_response("ok");
    assert_eq!(join.await.unwrap().unwrap(), "ok");
}

#[derive(Clone, Debug, PartialEq)]
struct Timed {
    id: u32,
    deadline: Option<Deadline>,
}

impl CarryDeadline for Timed {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }
    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

#[tokio::test(start_paused = true)]
async fn a_deadline_stops_further_tries() {
    let req = Timed {
        id: 1,
        deadline: Some(Deadline::after(MS * 150)),
    };
    let layer = RetryLayer::new(policy().max_retries(5).replay(CloneWithDeadline));
    let (join, mut handle) = spawn_call(layer, req.clone());
    let (got, send) = handle.next_request().await.unwrap();
    assert_eq!(got, req);
    send.send_error("first");
    // 100 ms of backoff + 1 ms for a try fit in 150 ms.
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::sleep(MS * 20).await;
    // 30 ms are left: another 100 ms sleep would overrun the deadline, so it never starts.
    let before = Instant::now();
    send.send_error("second");
    assert_eq!(join.await.unwrap().unwrap_err().to_string(), "second");
    assert_eq!(before.elapsed(), Duration::ZERO);
    assert!(handle.next_request().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn min_try_time_is_left_for_the_try() {
    let req = Timed {
        id: 1,
        deadline: Some(Deadline::after(MS * 105)),
    };
    let policy = policy().min_try_time(MS * 10).replay(CloneWithDeadline);
    let (join, mut handle) = spawn_call(RetryLayer::new(policy), req);
    fail(&mut handle, "only").await;
    // 100 ms backoff + 10 ms for the try > 105 ms.
    assert_eq!(join.await.unwrap().unwrap_err().to_string(), "only");
}

/// A budget with no share of requests: only `per_sec` retries a second over `ttl`.
fn reserve_only(per_sec: u32, ttl: Duration) -> RetryBudget {
    RetryBudget::builder()
        .retry_ratio(0.0)
        .min_retries_per_sec(per_sec)
        .ttl(ttl)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_returns_the_original_failure_and_counts() {
    let budget = reserve_only(0, Duration::from_secs(10));
    let layer = RetryLayer::new(policy().budget(budget.clone()));
    let (join, mut handle) = spawn_call(layer, "req");
    fail(&mut handle, "original").await;
    assert_eq!(join.await.unwrap().unwrap_err().to_string(), "original");
    assert_eq!(budget.exhausted_count(), 1);
    assert!(handle.next_request().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_shared_by_clones_and_layers() {
    // One retry for everyone: 0% of requests, 1 per second over 1 s.
    let budget = reserve_only(1, Duration::from_secs(1));
    let a = RetryLayer::new(policy().budget(budget.clone()));
    let b = RetryLayer::new(policy().budget(budget.clone()));
    let (join_a, mut handle_a) = spawn_call(a, "a");
    fail(&mut handle_a, "a1").await;
    fail(&mut handle_a, "a2").await;
    let (join_b, mut handle_b) = spawn_call(b, "b");
    fail(&mut handle_b, "b1").await;
    assert_eq!(join_b.await.unwrap().unwrap_err().to_string(), "b1");
    // The withdrawal expired: a's second failure was already returned (no budget then).
    assert_eq!(join_a.await.unwrap().unwrap_err().to_string(), "a2");
    assert_eq!(budget.exhausted_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn never_retry_returns_the_first_failure() {
    let layer = RetryLayer::new(policy().budget(NeverRetry));
    let (join, mut handle) = spawn_call(layer, "req");
    fail(&mut handle, "first").await;
    assert_eq!(join.await.unwrap().unwrap_err().to_string(), "first");
    assert!(handle.next_request().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn always_retry_is_bounded_by_max_retries_alone() {
    // A `RetryBudget` with nothing in it would refuse the first retry (see above); `AlwaysRetry`
    // lets the policy's `max_retries` (3) decide.
    let layer = RetryLayer::new(policy().max_retries(3).budget(AlwaysRetry));
    let (join, mut handle) = spawn_call(layer, "req");
    for i in 0..4 {
        fail(&mut handle, format!("try {i}")).await;
    }
    assert_eq!(join.await.unwrap().unwrap_err().to_string(), "try 3");
    assert!(handle.next_request().await.is_none());
}

/// Requests that must not be sent twice unless they provably were not sent.
struct NotIdempotent;

impl Replay<&'static str> for NotIdempotent {
    fn replay(&self, req: &&'static str) -> Result<&'static str, NotReplayable> {
        Ok(req)
    }
    fn is_idempotent(&self, _: &&'static str) -> bool {
        false
    }
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_are_only_requeued() {
    let layer = RetryLayer::new(policy().replay(NotIdempotent));
    let (join, mut handle) = spawn_call(layer.clone(), "pay");
    fail(
        &mut handle,
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    )
    .await;
    handle.next_request().await.unwrap().1.send_response("paid");
    assert_eq!(join.await.unwrap().unwrap(), "paid");

    let (join, mut handle) = spawn_call(layer, "pay");
    fail(
        &mut handle,
        std::io::Error::from(std::io::ErrorKind::ConnectionReset),
    )
    .await;
    let err = join.await.unwrap().unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());
    assert!(handle.next_request().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn requeues_have_their_own_limit() {
    let layer = RetryLayer::new(policy().max_retries(0).max_requeues(3));
    let (join, mut handle) = spawn_call(layer, "req");
    for _ in 0..4 {
        fail(
            &mut handle,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )
        .await;
    }
    assert!(join.await.unwrap().is_err());
    assert!(handle.next_request().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_clone_function_replays_non_clone_requests() {
    #[derive(Debug, PartialEq)]
    struct Job(u32);
    let layer = RetryLayer::new(policy().clone_with(|j: &Job| Some(Job(j.0))));
    let (join, mut handle) = spawn_call(layer, Job(7));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, Job(7));
    send.send_error("again");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, Job(7));
    send.send_response("done");
    assert_eq!(join.await.unwrap().unwrap(), "done");

    // A clone function that declines: one try only.
    let layer = RetryLayer::new(policy().clone_with(|_: &Job| None));
    let (join, mut handle) = spawn_call(layer, Job(8));
    fail(&mut handle, "once").await;
    assert_eq!(join.await.unwrap().unwrap_err().to_string(), "once");
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_the_clone_to_be_ready() {
    let (svc, mut handle) = mock::pair::<&'static str, &'static str>();
    let svc = tower::Layer::layer(&RetryLayer::new(policy()), svc);
    handle.allow(1);
    let join = spawn_on(svc, "req");
    fail(&mut handle, "unavailable").await;
    // The retry is due after 100 ms, but the service is not ready until 1 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    handle.allow(1);
    let (_, send) = handle.next_request().await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    send.send_response("ok");
    assert_eq!(join.await.unwrap().unwrap(), "ok");
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn metrics_count_retries_requeues_and_exhaustion() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let budget = reserve_only(2, Duration::from_secs(1));
    let layer = metrics::with_local_recorder(&recorder, || {
        RetryLayer::new(
            policy()
                .budget(budget)
                .labels(crate::telemetry::MetricLabels::new().with("upstream", "users")),
        )
    });
    let (join, mut handle) = spawn_call(layer, "req");
    let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    fail(&mut handle, refused()).await;
    fail(&mut handle, "unavailable").await;
    fail(&mut handle, "unavailable").await;
    assert!(join.await.unwrap().is_err());

    let counters: std::collections::HashMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => {
                let key = key.key();
                assert!(
                    key.labels()
                        .any(|l| l.key() == "upstream" && l.value() == "users")
                );
                Some((key.name().to_string(), n))
            }
            _ => None,
        })
        .collect();
    assert_eq!(counters["meshwork_retry_requeues_total"], 1);
    assert_eq!(counters["meshwork_retry_retries_total"], 1);
    assert_eq!(counters["meshwork_retry_budget_exhausted_total"], 1);
    assert_eq!(counters["meshwork_retry_body_too_large_total"], 0);
}

/// A replay that says no request is idempotent (a POST): only unsent failures and nacks may be
/// sent again.
#[derive(Clone, Copy, Debug)]
struct NeverIdempotent;

impl Replay<&'static str> for NeverIdempotent {
    fn replay(&self, req: &&'static str) -> Result<&'static str, NotReplayable> {
        Ok(req)
    }
    fn is_idempotent(&self, _: &&'static str) -> bool {
        false
    }
}

#[tokio::test(start_paused = true)]
async fn a_nack_is_requeued_even_when_not_idempotent() {
    let post = policy().replay(NeverIdempotent);
    let (join, mut handle) = spawn_call(RetryLayer::new(post), "post");
    fail(&mut handle, crate::limit::Nacked::new()).await;
    fail(&mut handle, crate::limit::Nacked::new()).await;
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "post");
    send.send_response("ok");
    assert_eq!(join.await.unwrap().unwrap(), "ok");

    // A failure that may have reached the server is not retried for a POST.
    let post = policy().replay(NeverIdempotent);
    let (join, mut handle) = spawn_call(RetryLayer::new(post), "post");
    fail(&mut handle, "reset").await;
    assert_eq!(join.await.unwrap().unwrap_err().to_string(), "reset");
}

#[tokio::test(start_paused = true)]
async fn nack_requeues_stop_at_max_requeues_and_draw_on_the_budget() {
    let budget = RetryBudget::builder()
        .min_retries_per_sec(0)
        .retry_ratio(0.0)
        .build()
        .unwrap();
    let (join, mut handle) = spawn_call(RetryLayer::new(policy().budget(budget)), "req");
    fail(&mut handle, crate::limit::Nacked::new()).await;
    // An empty budget: the nack is returned as it is.
    let err = join.await.unwrap().unwrap_err();
    assert!(err.is::<crate::limit::Nacked>());

    let (join, mut handle) = spawn_call(RetryLayer::new(policy().max_requeues(1)), "req");
    fail(&mut handle, crate::limit::Nacked::new()).await;
    fail(&mut handle, crate::limit::Nacked::new()).await;
    assert!(
        join.await
            .unwrap()
            .unwrap_err()
            .is::<crate::limit::Nacked>()
    );
}
