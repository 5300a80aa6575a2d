//! tower's equivalent of meshwork's client stack: `Retry` (with a `TpsBudget` and a trivial policy)
//! → `Timeout` → `Buffer` → p2c `Balance` over `PeakEwma`, on immediate endpoints.
//!
//! tower's `Balance` takes `&mut self`, so sharing it needs a `Buffer`, whose worker task runs on
//! the runtime: each request is a channel hop to that task and back. That hop is part of tower's
//! cost, so this benchmark drives requests inside the runtime (`block_on` over a batch of
//! requests, timed as a whole), not with [`one_call`](super::one_call).

use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use tower::retry::budget::TpsBudget;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::{Immediate, TowerBudgetPolicy};

/// `tower/retry_timeout_buffer_p2c/{10,1000}`.
pub fn tower_stack(c: &mut Criterion) {
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::{CompleteOnResponse, PeakEwmaDiscover};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("tower/retry_timeout_buffer_p2c");
    for n in [10usize, 1_000] {
        // Buffer spawns its worker on the current runtime.
        let mut svc = rt.block_on(async {
            let discover = PeakEwmaDiscover::new::<u64>(
                ServiceList::new::<u64>(vec![Immediate; n]),
                Duration::from_millis(30),
                Duration::from_secs(10),
                CompleteOnResponse::default(),
            );
            let balance: Balance<_, u64> = Balance::new(discover);
            let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
            ServiceBuilder::new()
                .retry(TowerBudgetPolicy(budget))
                .timeout(Duration::from_secs(1))
                .buffer(1024)
                .service(balance)
        });
        group.bench_function(n.to_string(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        let r = svc.ready().await.expect("ready");
                        r.call(std::hint::black_box(0u64)).await.expect("call");
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}
