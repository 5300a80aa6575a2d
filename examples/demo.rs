//! The foundation layers at work: a per-try timeout that also bounds readiness, a deadline that
//! travels to the server in a header, and the backoff strategies side by side.
//!
//! Run with `cargo run --release --example demo`.

use std::convert::Infallible;
use std::time::Duration;

use meshwork::BoxError;
use meshwork::backoff::Backoff;
use meshwork::http::{DEADLINE_HEADER, PropagateDeadlineLayer};
use meshwork::timeout::{DeadlineLayer, TimeoutLayer};
use rand::{SeedableRng, rngs::SmallRng};
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    println!("== per-try timeout: a service that never becomes ready");
    let (never_ready, mut handle) = tower_test::mock::pair::<(), ()>();
    handle.allow(0);
    let mut svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(200))?)
        .service(never_ready);
    let start = tokio::time::Instant::now();
    let err = svc.ready().await.unwrap_err();
    println!("   failed after {:?}: {err}", start.elapsed());

    println!("== deadline: 150 ms in total, and the server is told how much is left");
    let server = tower::service_fn(|req: http::Request<()>| async move {
        let header = req.headers()[DEADLINE_HEADER].to_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, Infallible>(header)
    });
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_millis(150))?)
        .layer(PropagateDeadlineLayer::new())
        .service(server);
    let told = svc.ready().await?.call(http::Request::new(())).await?;
    println!("   server saw {DEADLINE_HEADER}: {told}");

    println!("== backoff (base 25 ms, cap 250 ms, seed 42): eight delays each");
    let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
    for (name, policy) in [
        ("exponential", Backoff::exponential(base, max)?),
        ("full jitter", Backoff::full_jitter(base, max)?),
        ("equal jitter", Backoff::equal_jitter(base, max)?),
        ("decorrelated", Backoff::decorrelated_jitter(base, max)?),
    ] {
        let mut rng = SmallRng::seed_from_u64(42);
        let mut seq = policy.sequence();
        let delays: Vec<String> = (0..8)
            .map(|_| format!("{:>4}", seq.next_delay(&mut rng).as_millis()))
            .collect();
        println!("   {name:<13} {} ms", delays.join(" "));
    }
    Ok(())
}
