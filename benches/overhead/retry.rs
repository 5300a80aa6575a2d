//! Retry layer overhead on the success path: meshwork's `Retry` with its budget, beside tower's
//! `Retry` with a `TpsBudget` and a trivial policy.

use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use tower::retry::budget::TpsBudget;

use super::{Immediate, TowerBudgetPolicy, one_call};

pub fn retry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let policy =
        meshwork::retry::RetryPolicy::new().classify(|_: Result<&(), &meshwork::BoxError>| {
            meshwork::classify::Classification::success()
        });
    let mut svc = tower::Layer::layer(&meshwork::retry::RetryLayer::new(policy), Immediate);
    c.bench_function("meshwork/retry", |b| {
        b.iter(|| one_call(&mut svc, 0u64).unwrap())
    });

    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let mut svc = tower::retry::Retry::new(TowerBudgetPolicy(budget), Immediate);
    c.bench_function("tower/retry_budget", |b| {
        b.iter(|| one_call(&mut svc, 0u64).unwrap())
    });
}
