//! Per-request overhead of each layer and of the whole stack, beside tower's equivalents, on
//! immediate in-memory services. Benchmark ids are read by other tooling: keep them stable.
//!
//! Run: `cargo bench --bench overhead` (add `-- --quick` for a short run).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

mod breaker;
mod retry;

use criterion::{Criterion, criterion_group, criterion_main};

mod balance;
mod full_stack;
mod timeout;
mod tower_stack;
use tower::Service;

/// An immediate service: always ready, answers at once. The cost of calling it is the floor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Immediate;

impl<R> Service<R> for Immediate {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: R) -> Self::Future {
        ready(Ok(()))
    }
}

/// tower's retry baseline: retries failures while the `TpsBudget` allows; every success deposits.
#[derive(Clone)]
pub struct TowerBudgetPolicy(pub std::sync::Arc<tower::retry::budget::TpsBudget>);

impl<E> tower::retry::Policy<u64, (), E> for TowerBudgetPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut u64, result: &mut Result<(), E>) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
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

/// Drives `svc` through one ready + call + response on the current thread, without a runtime hop.
pub fn one_call<S, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    loop {
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => break,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => std::thread::yield_now(),
        }
    }
    let mut fut = std::pin::pin!(svc.call(req));
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

fn bare(c: &mut Criterion) {
    let mut svc = Immediate;
    c.bench_function("bare", |b| b.iter(|| one_call(&mut svc, 0u64).unwrap()));
}

criterion_group!(
    benches,
    bare,
    retry::retry,
    breaker::breaker,
    balance::meshwork_balance,
    balance::tower_p2c,
    tower_stack::tower_stack,
    timeout::meshwork_timeout,
    full_stack::full_stack,
    full_stack::full_stack_contended
);
criterion_main!(benches);
