//! The whole client stack on immediate endpoints: deadline → retry with budget → P2C (peak EWMA)
//! → per endpoint [breaker (gate) → per-try timeout → service], as `ClientBuilder` composes it.
//! The figure to compare is `tower/p2c_peak_ewma/10`: the whole stack should cost no more than
//! tower's bare balancer.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::Criterion;
use meshwork::client::{Client, ClientBuilder};
use meshwork::discover::{Endpoint, Static};
use meshwork::rng::SeedSource;
use tower::{Service, ServiceExt};

use super::{Immediate, one_call};

/// The smallest request: a plain `Clone` type (the deadline travels beside it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Req;

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::from(0x7f00_0000 | (i >> 8)),
        10_000 + (i & 0xff) as u16,
    ))
}

/// A client over `n` immediate endpoints with every layer on (default settings, except a 1 s total
/// timeout and a 300 ms per-try timeout), once discovery has published all `n`.
async fn client(n: u32) -> Client<Immediate> {
    let client = ClientBuilder::new()
        .total_timeout(Duration::from_secs(1))
        .per_try_timeout(Duration::from_millis(300))
        .seed(SeedSource::from_seed(1))
        .build(
            Static::new((0..n).map(|i| Endpoint::new(addr(i)))),
            |_: &Endpoint| Immediate,
        )
        .expect("valid client");
    while client.endpoints().len() != n as usize {
        tokio::task::yield_now().await;
    }
    assert!(
        client.retry_budget().is_some(),
        "the stack has a retry budget"
    );
    client
}

/// `meshwork/full_stack/{10,1000}`: one ready + call + response on the current thread.
pub fn full_stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let mut group = c.benchmark_group("meshwork/full_stack");
    for n in [10u32, 1_000] {
        let mut svc = rt.block_on(client(n));
        group.bench_function(n.to_string(), |b| {
            b.iter(|| one_call(&mut svc, black_box(Req)).unwrap())
        });
    }
    group.finish();
}

/// Wall time for `tasks` tasks, each with its own clone of `svc`, to make `iters` requests
/// between them (`ready().await` then `call().await`).
fn run_tasks(
    rt: &tokio::runtime::Runtime,
    svc: &Client<Immediate>,
    tasks: u64,
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(tasks as usize + 1));
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let mut svc = svc.clone();
                let barrier = barrier.clone();
                // Split `iters` as evenly as possible.
                let share = iters / tasks + u64::from(t < iters % tasks);
                tokio::spawn(async move {
                    barrier.wait().await;
                    for _ in 0..share {
                        let ready = ServiceExt::<Req>::ready(&mut svc).await.expect("ready");
                        ready.call(black_box(Req)).await.expect("call");
                    }
                })
            })
            .collect();
        barrier.wait().await;
        let start = Instant::now();
        for h in handles {
            h.await.expect("task");
        }
        start.elapsed()
    })
}

/// `meshwork/full_stack_contended/10`: the same stack called from 2 tasks on a 2-thread runtime;
/// the figure is wall time / total requests. `meshwork/full_stack_one_task/10` is the control: one
/// task on the same runtime (perfect scaling would make the contended figure half of it).
pub fn full_stack_contended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let svc = rt.block_on(client(10));
    c.bench_function("meshwork/full_stack_contended/10", |b| {
        b.iter_custom(|iters| run_tasks(&rt, &svc, 2, iters))
    });
    c.bench_function("meshwork/full_stack_one_task/10", |b| {
        b.iter_custom(|iters| run_tasks(&rt, &svc, 1, iters))
    });
}
