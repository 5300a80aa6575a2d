//! Injectable, seedable randomness.
//!
//! Every layer that draws random numbers (jitter, P2C picks) takes its randomness from a
//! [`SeedSource`]. A source built with [`SeedSource::from_seed`] makes the whole run deterministic;
//! [`SeedSource::from_entropy`] (the default everywhere) seeds from the operating system.
//!
//! The source hands out independent [`SmallRng`]s: one per service clone or per request, so the hot
//! path draws from a generator it owns (`&mut`), with no lock and no shared cache line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::SeedableRng;
pub use rand::rngs::SmallRng;

/// A shared, thread-safe source of seeds for per-clone random number generators.
///
/// Cloning a `SeedSource` shares it: every clone draws from the same deterministic stream, so the
/// seeds handed out depend only on the original seed and the order of the draws.
///
/// ```
/// use meshwork::rng::SeedSource;
/// use rand::Rng;
///
/// let a = SeedSource::from_seed(7);
/// let b = SeedSource::from_seed(7);
/// assert_eq!(a.rng().next_u64(), b.rng().next_u64());
/// ```
#[derive(Clone, Debug)]
pub struct SeedSource {
    state: Arc<AtomicU64>,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// `SplitMix64`'s output function: a bijective mix of a counter into a well-distributed seed.
/// Written here because it is three lines and is what makes the shared source lock-free.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SeedSource {
    /// A deterministic source: the same seed gives the same sequence of generators.
    #[must_use]
    pub fn from_seed(seed: u64) -> Self {
        Self {
            state: Arc::new(AtomicU64::new(seed)),
        }
    }

    /// A source seeded from the operating system's entropy.
    #[must_use]
    pub fn from_entropy() -> Self {
        let mut os = rand::rngs::SysRng;
        let seed = rand::TryRng::try_next_u64(&mut os).unwrap_or_else(|_| {
            // No OS entropy: fall back to the clock; still fine for jitter and P2C picks.
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(GOLDEN_GAMMA)
        });
        Self::from_seed(seed)
    }

    /// The next seed of the stream.
    #[must_use]
    pub fn next_seed(&self) -> u64 {
        mix(self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA))
    }

    /// A new generator, seeded with [`next_seed`](Self::next_seed).
    #[must_use]
    pub fn rng(&self) -> SmallRng {
        SmallRng::seed_from_u64(self.next_seed())
    }
}

impl Default for SeedSource {
    fn default() -> Self {
        Self::from_entropy()
    }
}
