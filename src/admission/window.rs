use std::sync::atomic::{AtomicU64, Ordering};

/// A sliding window of request and accept counts: a fixed ring of buckets, each covering
/// `bucket_ns` nanoseconds and stamped with the index of the interval it counts. Lock-free; a bucket
/// that is reused for a new interval is reset by the first writer that sees it stale (a count
/// racing with the reset may be lost: benign for a rate).
#[derive(Debug)]
pub(super) struct Window {
    bucket_ns: u64,
    buckets: Box<[Bucket]>,
}

#[derive(Debug, Default)]
struct Bucket {
    /// The interval index + 1 (0 = never used).
    stamp: AtomicU64,
    requests: AtomicU64,
    accepts: AtomicU64,
}

impl Window {
    pub(super) fn new(bucket_ns: u64, buckets: usize) -> Self {
        Self {
            bucket_ns: bucket_ns.max(1),
            buckets: (0..buckets.max(1)).map(|_| Bucket::default()).collect(),
        }
    }

    /// Counts one request (and one accept if `accepted`) at `now_ns`.
    pub(super) fn record(&self, now_ns: u64, accepted: bool) {
        let idx = now_ns / self.bucket_ns;
        let b = &self.buckets[(idx % self.buckets.len() as u64) as usize];
        let stamp = b.stamp.load(Ordering::Acquire);
        if stamp != idx + 1
            && b.stamp
                .compare_exchange(stamp, idx + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Relaxed);
            b.accepts.store(0, Ordering::Relaxed);
        }
        b.requests.fetch_add(1, Ordering::Relaxed);
        if accepted {
            b.accepts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The requests and accepts of the window ending at `now_ns`.
    pub(super) fn totals(&self, now_ns: u64) -> (u64, u64) {
        let idx = now_ns / self.bucket_ns;
        let oldest = (idx + 1).saturating_sub(self.buckets.len() as u64);
        let (mut requests, mut accepts) = (0, 0);
        for b in self.buckets.iter() {
            let stamp = b.stamp.load(Ordering::Acquire);
            if stamp > oldest && stamp <= idx + 1 {
                requests += b.requests.load(Ordering::Relaxed);
                accepts += b.accepts.load(Ordering::Relaxed);
            }
        }
        (requests, accepts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides() {
        let w = Window::new(10, 3);
        w.record(0, true);
        w.record(5, false);
        w.record(15, true);
        assert_eq!(w.totals(29), (3, 2));
        // At 30 the first bucket has left the window.
        assert_eq!(w.totals(30), (1, 1));
        w.record(31, false);
        assert_eq!(w.totals(31), (2, 1));
        assert_eq!(w.totals(1000), (0, 0));
    }
}
