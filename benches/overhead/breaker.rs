//! The circuit breaker in the closed state, on an immediate service: alone, and two threads sharing
//! one breaker (each thread with its own clone, as a balancer's callers would have).

use std::time::{Duration, Instant};

use criterion::Criterion;
use meshwork::breaker::{Breaker, BreakerConfig};

use crate::{Immediate, one_call};

/// Wall time for `threads` threads that each make `iters` calls on their own clone of `svc`; with
/// `unshared`, each thread gets a breaker of its own instead (the machine's scaling ceiling).
fn run_threads(svc: &Breaker<Immediate>, threads: usize, iters: u64, unshared: bool) -> Duration {
    let clones: Vec<_> = (0..threads)
        .map(|_| {
            if unshared {
                Breaker::new(Immediate, BreakerConfig::default())
            } else {
                svc.clone()
            }
        })
        .collect();
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for mut clone in clones {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..iters {
                    one_call(&mut clone, i).unwrap();
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every thread before returning.
        start
    })
    .elapsed()
}

pub fn breaker(c: &mut Criterion) {
    // Default policies: consecutive failures and the success-rate window (one clock read per call).
    let mut svc = Breaker::new(Immediate, BreakerConfig::default());
    c.bench_function("meshwork/breaker", |b| {
        b.iter(|| one_call(&mut svc, 0u64).unwrap())
    });

    // Throughput: the 2-thread / 1-thread ratio is `2 × breaker_one_thread / breaker_contended`
    // (each iteration is one call per thread; both include the same thread start-up cost).
    let shared = Breaker::new(Immediate, BreakerConfig::default());
    c.bench_function("meshwork/breaker_one_thread", |b| {
        b.iter_custom(|iters| run_threads(&shared, 1, iters, false))
    });
    c.bench_function("meshwork/breaker_contended", |b| {
        b.iter_custom(|iters| run_threads(&shared, 2, iters, false))
    });
    // Control: two threads with a breaker each, nothing shared. If this does not scale either, the
    // machine (not the breaker) is the limit.
    c.bench_function("meshwork/breaker_unshared_2threads", |b| {
        b.iter_custom(|iters| run_threads(&shared, 2, iters, true))
    });
}
