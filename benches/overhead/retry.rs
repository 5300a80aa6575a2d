//! Retry layer overhead on the success path: meshwork's `Retry` with its budget, beside tower's
//! `Retry` with a `TpsBudget` and a trivial policy.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use super::{Immediate, one_call};

#[derive(Clone)]
struct TowerPolicy(Arc<TpsBudget>);

impl Policy<u64, (), std::convert::Infallible> for TowerPolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut u64,
        result: &mut Result<(), std::convert::Infallible>,
    ) -> Option<Self::Future> {
        match result {
            Ok(()) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| ready(())),
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

pub fn retry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let policy = meshwork::retry::RetryPolicy::new().classify(
        |_: Result<&(), &std::convert::Infallible>| meshwork::classify::Classification::success(),
    );
    let mut svc = tower::Layer::layer(&meshwork::retry::RetryLayer::new(policy), Immediate);
    c.bench_function("meshwork/retry", |b| {
        b.iter(|| one_call(&mut svc, 0u64).unwrap())
    });

    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let mut svc = tower::retry::Retry::new(TowerPolicy(budget), Immediate);
    c.bench_function("tower/retry_budget", |b| {
        b.iter(|| one_call(&mut svc, 0u64).unwrap())
    });
}
