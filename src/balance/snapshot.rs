//! The immutable endpoint set the balancer picks from, swapped atomically on every update.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::RngExt;
use rand::rngs::SmallRng;

use super::load::EndpointLoad;

/// One endpoint as the balancer sees it. Shared (by `Arc`) between successive snapshots while the
/// endpoint stays in the set, so its load and its service survive updates.
pub(crate) struct Slot<S> {
    pub(crate) load: Arc<EndpointLoad>,
    /// 1 / weight.
    pub(crate) weight_recip: f64,
    pub(crate) weight: u32,
    pub(crate) service: S,
    /// The discovered endpoint (`None` when fed by a tower `Discover`, whose keys are opaque).
    pub(crate) endpoint: Option<crate::discover::Endpoint>,
    /// Set (before the set without it is published) when discovery removes the endpoint: a clone
    /// that reserved it, or remembered it as pending, sends it nothing new.
    removed: AtomicBool,
    /// Wakes a waiting clone when this endpoint may have become available.
    pub(crate) watch: Arc<super::watch::Watch>,
}

impl<S> Slot<S> {
    pub(crate) fn new(
        service: S,
        load: Arc<EndpointLoad>,
        weight: u32,
        endpoint: Option<crate::discover::Endpoint>,
        watch: Arc<super::watch::Watch>,
    ) -> Self {
        Self {
            load,
            weight_recip: 1.0 / f64::from(weight),
            weight,
            service,
            endpoint,
            removed: AtomicBool::new(false),
            watch,
        }
    }

    /// `true` once discovery has removed the endpoint.
    #[inline]
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }
}

/// An endpoint set, ready to pick from.
pub(crate) struct Snapshot<S> {
    pub(crate) slots: Box<[Arc<Slot<S>>]>,
    /// Present only when weights differ: Vose's alias table for O(1) weighted draws.
    alias: Option<Alias>,
}

impl<S> Snapshot<S> {
    pub(crate) fn empty() -> Self {
        Self {
            slots: Box::new([]),
            alias: None,
        }
    }

    pub(crate) fn new(slots: Vec<Arc<Slot<S>>>) -> Self {
        let first = slots.first().map(|s| s.weight);
        let uniform = slots.iter().all(|s| Some(s.weight) == first);
        let alias = (!uniform).then(|| Alias::new(slots.iter().map(|s| s.weight)));
        Self {
            slots: slots.into_boxed_slice(),
            alias,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Two candidates. Equal weights: two distinct endpoints, uniformly (classic P2C). Unequal
    /// weights: two independent draws with probability proportional to weight, possibly the same
    /// endpoint — so that at equal load each endpoint's share is exactly its share of the weight.
    #[inline]
    pub(crate) fn draw_pair(&self, rng: &mut SmallRng) -> (usize, usize) {
        let n = self.slots.len();
        debug_assert!(n >= 2);
        match &self.alias {
            None => {
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                (a, b)
            }
            Some(alias) => (alias.draw(rng), alias.draw(rng)),
        }
    }
}

/// Vose's alias method: a weighted draw costs one index draw and one coin flip, whatever the
/// number of endpoints.
struct Alias {
    /// Probability of keeping column `i`, in 32-bit fixed point (`1 << 32` is certainty).
    keep: Box<[u64]>,
    alias: Box<[u32]>,
}

impl Alias {
    fn new(weights: impl ExactSizeIterator<Item = u32> + Clone) -> Self {
        let n = weights.len();
        let total: f64 = weights.clone().map(f64::from).sum();
        let mut scaled: Vec<f64> = weights.map(|w| f64::from(w) * n as f64 / total).collect();
        let mut keep = vec![1u64 << 32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = (scaled[s] * (1u64 << 32) as f64) as u64;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // What remains is 1 up to rounding: keep it.
        Self {
            keep: keep.into_boxed_slice(),
            alias: alias.into_boxed_slice(),
        }
    }

    #[inline]
    fn draw(&self, rng: &mut SmallRng) -> usize {
        let i = rng.random_range(0..self.keep.len());
        if u64::from(rng.random::<u32>()) < self.keep[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn alias_draws_follow_weights() {
        let weights = [1u32, 2, 3, 4, 10];
        let alias = Alias::new(weights.iter().copied());
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = [0u32; 5];
        let n = 200_000;
        for _ in 0..n {
            counts[alias.draw(&mut rng)] += 1;
        }
        for (w, c) in weights.iter().zip(counts) {
            let expected = f64::from(*w) / 20.0;
            let got = f64::from(c) / f64::from(n);
            assert!(
                (got - expected).abs() < 0.005,
                "weight {w}: {got} vs {expected}"
            );
        }
    }
}
