//! The success-rate window: fixed memory, bucketed, striped by thread.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The most buckets a window may have (one cache-line pair of `u64`s per stripe).
pub(crate) const MAX_BUCKETS: u32 = 16;

const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TICK_SHIFT: u32 = 2 * COUNT_BITS;
const TICK_MASK: u64 = (1 << (64 - TICK_SHIFT)) - 1;

/// One slot: `[tick: 24 bits | successes: 20 bits | failures: 20 bits]`, so a bucket is recycled and
/// counted in a single compare-and-swap. Counts saturate at 2²⁰ − 1 per bucket and stripe.
fn pack(tick: u64, ok: u64, failed: u64) -> u64 {
    ((tick & TICK_MASK) << TICK_SHIFT) | (ok << COUNT_BITS) | failed
}

fn unpack(v: u64) -> (u64, u64, u64) {
    (
        v >> TICK_SHIFT,
        (v >> COUNT_BITS) & COUNT_MAX,
        v & COUNT_MAX,
    )
}

/// The buckets of one stripe, alone on their cache lines.
#[repr(align(128))]
struct Line([AtomicU64; MAX_BUCKETS as usize]);

/// Success and failure counts over the last `buckets × bucket_nanos` of time.
///
/// Each thread writes to its own stripe (a set of buckets on its own cache lines), so that threads
/// sharing one breaker do not write one cache line on every success; reading the counts (only after a
/// failure) sums every stripe.
pub(crate) struct Window {
    lines: Box<[Line]>,
    buckets: u64,
    bucket_nanos: u64,
}

/// The number of stripes: the machine's parallelism rounded up to a power of two, at most 16.
fn stripes() -> usize {
    static STRIPES: OnceLock<usize> = OnceLock::new();
    *STRIPES.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .next_power_of_two()
            .min(16)
    })
}

/// This thread's stripe number (unbounded; reduced modulo the stripe count by the caller).
fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    STRIPE.with(|s| *s)
}

impl Window {
    pub(crate) fn new(buckets: u32, bucket_nanos: u64) -> Self {
        let lines = (0..stripes())
            .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        Self {
            lines,
            buckets: u64::from(buckets.clamp(1, MAX_BUCKETS)),
            bucket_nanos: bucket_nanos.max(1),
        }
    }

    fn tick(&self, now_nanos: u64) -> u64 {
        (now_nanos / self.bucket_nanos) & TICK_MASK
    }

    /// Records one outcome at `now_nanos` (time since the breaker was built).
    pub(crate) fn record(&self, now_nanos: u64, success: bool) {
        let tick = self.tick(now_nanos);
        let line = &self.lines[thread_stripe() & (self.lines.len() - 1)];
        let slot = &line.0[(tick % self.buckets) as usize];
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let (t, ok, failed) = unpack(cur);
            let (ok, failed) = if t == tick {
                (ok, failed)
            } else if tick.wrapping_sub(t) & TICK_MASK >= TICK_MASK / 2 {
                // The slot already holds a newer bucket: this late outcome is outside the window.
                return;
            } else {
                (0, 0)
            };
            let next = if success {
                pack(tick, (ok + 1).min(COUNT_MAX), failed)
            } else {
                pack(tick, ok, (failed + 1).min(COUNT_MAX))
            };
            if next == cur {
                return; // saturated
            }
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// `(successes, failures)` over the window ending at `now_nanos`.
    pub(crate) fn counts(&self, now_nanos: u64) -> (u64, u64) {
        let tick = self.tick(now_nanos);
        let (mut ok, mut failed) = (0, 0);
        for line in self.lines.iter() {
            for slot in line.0.iter().take(self.buckets as usize) {
                let (t, o, f) = unpack(slot.load(Ordering::Relaxed));
                if tick.wrapping_sub(t) & TICK_MASK < self.buckets {
                    ok += o;
                    failed += f;
                }
            }
        }
        (ok, failed)
    }

    /// Forgets every outcome.
    pub(crate) fn clear(&self) {
        for line in self.lines.iter() {
            for slot in line.0.iter() {
                slot.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn counts_within_the_window_only() {
        let w = Window::new(10, S);
        w.record(0, true);
        w.record(S / 2, false);
        w.record(3 * S, true);
        assert_eq!(w.counts(3 * S), (2, 1));
        assert_eq!(w.counts(9 * S + S / 2), (2, 1));
        // At 10 s the bucket [0, 1 s) has left the window.
        assert_eq!(w.counts(10 * S), (1, 0));
        assert_eq!(w.counts(13 * S), (0, 0));
        // A recycled slot starts from zero.
        w.record(10 * S, false);
        assert_eq!(w.counts(10 * S), (1, 1));
        w.clear();
        assert_eq!(w.counts(10 * S), (0, 0));
    }

    #[test]
    fn late_outcomes_do_not_clobber_newer_buckets() {
        let w = Window::new(2, S);
        w.record(2 * S, true);
        w.record(0, false); // same slot, two buckets older: dropped
        assert_eq!(w.counts(2 * S), (1, 0));
    }

    #[test]
    fn threads_write_their_own_stripes_and_all_are_counted() {
        let w = std::sync::Arc::new(Window::new(10, S));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        w.record(S, i % 4 != 0);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(w.counts(S), (3000, 1000));
    }
}
