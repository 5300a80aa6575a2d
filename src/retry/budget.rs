use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::BudgetExhausted;
use crate::ConfigError;

/// Fixed-point units of one retry. A request deposits `ratio × UNIT` units (the ratio rounded to
/// the nearest millionth), a retry withdraws `UNIT` units: integer arithmetic, no truncated
/// reciprocal, so a fractional ratio allows exactly that fraction.
const UNIT: i128 = 1_000_000;

/// The window is a ring of this many slices of `ttl / SLICES` each.
const SLICES: usize = 10;

/// The largest ratio accepted: 1000% (ten retries per request).
const MAX_RATIO: f64 = 10.0;

/// A retry budget: how many retries a client may send, as a share of its requests.
///
/// Every request *deposits* into the budget and every retry (or requeue) *withdraws* from it. Over
/// any window of [`ttl`](RetryBudgetBuilder::ttl), the retries allowed are
///
/// ```text
/// retry_ratio × requests in the window  +  min_retries_per_sec × ttl
/// ```
///
/// so retries add at most `retry_ratio` to the load a client sends, however badly its servers fail,
/// and a client with little traffic can still retry a few times a second. This is Finagle's and
/// Linkerd's budget; unlike tower's `TpsBudget` the ratio is applied in exact integer arithmetic
/// (parts per million), so a ratio of `0.006` allows 6 retries per 1,000 requests, never more
/// (tower#857).
///
/// A `RetryBudget` is a cheap handle: clones share one budget. Give the same handle to several
/// retry layers (several routes of one client) to bound their retries together. Deposits and
/// withdrawals are lock-free: a ring of per-slice counters, each an atomic word holding a slice
/// number and a count.
///
/// | setting | default | valid |
/// |---|---|---|
/// | [`retry_ratio`](RetryBudgetBuilder::retry_ratio) | `0.2` (20%) | `0`, or `0.000001 ..= 10` (1000%); rounded to the nearest millionth |
/// | [`min_retries_per_sec`](RetryBudgetBuilder::min_retries_per_sec) | `10` | any |
/// | [`ttl`](RetryBudgetBuilder::ttl) | 10 s | 1 s ..= 60 s |
///
/// ```
/// use std::time::Duration;
/// use meshwork::retry::RetryBudget;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), meshwork::ConfigError> {
/// let budget = RetryBudget::builder()
///     .retry_ratio(0.5)
///     .min_retries_per_sec(0)
///     .ttl(Duration::from_secs(1))
///     .build()?;
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// assert_eq!(budget.available(), 2);
/// assert!(budget.withdraw().is_ok());
/// assert!(budget.withdraw().is_ok());
/// assert!(budget.withdraw().is_err());
/// assert_eq!(budget.exhausted_count(), 1);
///
/// // Deposits and withdrawals leave the window after `ttl`.
/// tokio::time::advance(Duration::from_secs(1)).await;
/// assert_eq!(budget.available(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    slice_nanos: u64,
    /// Units deposited per request.
    deposit: i128,
    /// Units always available (the per-second minimum over the window).
    reserve: i128,
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
    deposits: [AtomicU64; SLICES],
    withdrawals: [AtomicU64; SLICES],
    exhausted: AtomicU64,
    /// Whether the last withdrawal failed: logs only state changes.
    is_exhausted: AtomicBool,
}

/// Builds a [`RetryBudget`]; see there for the settings.
#[derive(Clone, Copy, Debug)]
pub struct RetryBudgetBuilder {
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
}

impl Default for RetryBudgetBuilder {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl RetryBudgetBuilder {
    /// The share of requests that may be retried: `0.2` allows one retry per five requests, `2.0`
    /// two retries per request (default `0.2`).
    #[must_use]
    pub const fn retry_ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries allowed per second whatever the traffic, so a quiet client can still retry
    /// (default 10).
    #[must_use]
    pub const fn min_retries_per_sec(mut self, n: u32) -> Self {
        self.min_per_sec = n;
        self
    }

    /// How long a deposit or a withdrawal counts (default 10 s).
    #[must_use]
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Validates the settings and builds the budget.
    ///
    /// ```
    /// use std::time::Duration;
    /// use meshwork::retry::RetryBudget;
    ///
    /// let err = RetryBudget::builder().retry_ratio(-0.1).build().unwrap_err();
    /// assert_eq!(err.field(), "retry_ratio");
    /// let err = RetryBudget::builder().ttl(Duration::from_millis(500)).build().unwrap_err();
    /// assert_eq!(err.field(), "ttl");
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `retry_ratio` when the ratio is outside 0..=10, not finite, or
    /// positive but below one retry per million requests, or `ttl` when the TTL is outside 1 s..=60 s.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if !self.ratio.is_finite() || !(0.0..=MAX_RATIO).contains(&self.ratio) {
            return Err(ConfigError::new(
                "retry_ratio",
                "must be a finite number from 0 to 10 (1000%)",
            ));
        }
        let deposit = (self.ratio * UNIT as f64).round() as i128;
        if deposit == 0 && self.ratio > 0.0 {
            return Err(ConfigError::new(
                "retry_ratio",
                "must be 0 or at least 0.000001 (one retry per million requests)",
            ));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(ConfigError::new("ttl", "must be from 1 s to 60 s"));
        }
        let ttl_nanos = self.ttl.as_nanos() as i128;
        let reserve = i128::from(self.min_per_sec) * ttl_nanos * UNIT / 1_000_000_000;
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                start: Instant::now(),
                slice_nanos: (ttl_nanos / SLICES as i128) as u64,
                deposit,
                reserve,
                ratio: self.ratio,
                min_per_sec: self.min_per_sec,
                ttl: self.ttl,
                deposits: Default::default(),
                withdrawals: Default::default(),
                exhausted: AtomicU64::new(0),
                is_exhausted: AtomicBool::new(false),
            }),
        })
    }
}

/// A slot word: the slice number in the high 32 bits, the count in the low 32 bits.
const fn pack(slice: u32, count: u32) -> u64 {
    ((slice as u64) << 32) | count as u64
}

const fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Adds one to the slot for `slice`, starting a new count if the slot holds an older slice.
fn bump(slot: &AtomicU64, slice: u32) {
    let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |cur| {
        Some(bumped(cur, slice))
    });
}

const fn bumped(word: u64, slice: u32) -> u64 {
    let (s, n) = unpack(word);
    if s == slice {
        pack(slice, n.saturating_add(1))
    } else {
        pack(slice, 1)
    }
}

/// The sum of the counts of the slots that belong to the window ending at `slice`.
fn window_sum(slots: &[AtomicU64; SLICES], slice: u32) -> i128 {
    slots
        .iter()
        .map(|slot| {
            let (s, n) = unpack(slot.load(Ordering::Acquire));
            if (slice.wrapping_sub(s) as usize) < SLICES {
                i128::from(n)
            } else {
                0
            }
        })
        .sum()
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryBudget {
    /// A budget with the default settings: 20% of requests, at least 10 retries a second, over 10 s.
    #[must_use]
    #[allow(
        clippy::missing_panics_doc,
        reason = "only `expect`s on constant, tested defaults"
    )]
    pub fn new() -> Self {
        RetryBudgetBuilder::default()
            .build()
            .expect("the default settings are valid")
    }

    /// A builder, starting from the default settings.
    #[must_use]
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder::default()
    }

    /// The current slice number (it wraps after 2³² slices, more than 13 years at the smallest ttl).
    fn slice(&self) -> u32 {
        let elapsed = Instant::now().saturating_duration_since(self.inner.start);
        (elapsed.as_nanos() / u128::from(self.inner.slice_nanos)) as u32
    }

    fn balance_at(&self, slice: u32) -> i128 {
        let i = &self.inner;
        window_sum(&i.deposits, slice) * i.deposit + i.reserve
            - window_sum(&i.withdrawals, slice) * UNIT
    }

    /// Records a request. The retry layer deposits once per request, before its first try.
    pub fn deposit(&self) {
        let slice = self.slice();
        bump(&self.inner.deposits[slice as usize % SLICES], slice);
    }

    /// Takes one retry from the budget, or fails with [`BudgetExhausted`] (counted in
    /// [`exhausted_count`](Self::exhausted_count)) when none is left.
    ///
    /// # Errors
    ///
    /// [`BudgetExhausted`] when the budget holds less than one retry.
    pub fn withdraw(&self) -> Result<(), BudgetExhausted> {
        let i = &self.inner;
        let slice = self.slice();
        let slot = &i.withdrawals[slice as usize % SLICES];
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            if self.balance_at(slice) < UNIT {
                i.exhausted.fetch_add(1, Ordering::Relaxed);
                if !i.is_exhausted.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        retry_ratio = i.ratio,
                        min_retries_per_sec = i.min_per_sec,
                        "retry budget exhausted: failures are returned without retrying"
                    );
                }
                return Err(BudgetExhausted::new());
            }
            // Withdrawals in one slice are serialised by this compare-exchange, so two callers
            // never spend the same last retry.
            match slot.compare_exchange(
                cur,
                bumped(cur, slice),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        if i.is_exhausted.load(Ordering::Relaxed) && i.is_exhausted.swap(false, Ordering::Relaxed) {
            tracing::info!("retry budget recovered");
        }
        Ok(())
    }

    /// The number of retries the budget would allow now.
    #[must_use]
    pub fn available(&self) -> u64 {
        u64::try_from(self.balance_at(self.slice()) / UNIT).unwrap_or(0)
    }

    /// How many withdrawals failed because the budget was empty, since it was built.
    #[must_use]
    pub fn exhausted_count(&self) -> u64 {
        self.inner.exhausted.load(Ordering::Relaxed)
    }

    /// The share of requests that may be retried.
    #[must_use]
    pub fn retry_ratio(&self) -> f64 {
        self.inner.ratio
    }

    /// The retries allowed per second whatever the traffic.
    #[must_use]
    pub fn min_retries_per_sec(&self) -> u32 {
        self.inner.min_per_sec
    }

    /// How long a deposit or a withdrawal counts.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min: u32, ttl: u64) -> RetryBudget {
        RetryBudget::builder()
            .retry_ratio(ratio)
            .min_retries_per_sec(min)
            .ttl(Duration::from_secs(ttl))
            .build()
            .unwrap()
    }

    #[test]
    fn rejects_bad_settings() {
        for bad in [f64::NAN, f64::INFINITY, -0.01, 10.5, 1e-9] {
            let err = RetryBudget::builder().retry_ratio(bad).build().unwrap_err();
            assert_eq!(err.field(), "retry_ratio", "{bad}");
        }
        for bad in [0, 999, 60_001] {
            let err = RetryBudget::builder()
                .ttl(Duration::from_millis(bad))
                .build()
                .unwrap_err();
            assert_eq!(err.field(), "ttl", "{bad}");
        }
        assert!(RetryBudget::builder().retry_ratio(0.0).build().is_ok());
        assert!(RetryBudget::builder().retry_ratio(10.0).build().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_ratio_is_exact() {
        // tower#857: 1/0.006 truncated would over-allocate; ours allows exactly 6 per 1000.
        for (ratio, requests, allowed) in [
            (0.006, 1000, 6),
            (0.006, 999, 5),
            (0.2, 1000, 200),
            (0.6, 10, 6),
            (1.0 / 3.0, 3000, 999),
            (2.5, 4, 10),
        ] {
            let b = budget(ratio, 0, 10);
            for _ in 0..requests {
                b.deposit();
            }
            assert_eq!(b.available(), allowed, "{ratio} × {requests}");
            let mut n = 0;
            while b.withdraw().is_ok() {
                n += 1;
            }
            assert_eq!(n, allowed, "{ratio} × {requests}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_refills_as_the_window_slides() {
        let b = budget(0.0, 2, 1);
        assert_eq!(b.available(), 2);
        assert!(b.withdraw().is_ok());
        assert!(b.withdraw().is_ok());
        assert!(b.withdraw().is_err());
        assert_eq!(b.exhausted_count(), 1);
        // Still inside the window.
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(b.withdraw().is_err());
        // The withdrawals have left the window.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(b.available(), 2);
        assert!(b.withdraw().is_ok());
        assert_eq!(b.exhausted_count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire() {
        let b = budget(1.0, 0, 2);
        for _ in 0..5 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_millis(1000)).await;
        for _ in 0..3 {
            b.deposit();
        }
        assert_eq!(b.available(), 8);
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(b.available(), 3);
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(b.available(), 0);
    }

    #[test]
    fn clones_share_and_threads_never_overdraw() {
        // 5 per second × 20 s: a reserve of exactly 100 retries, fought over by 4 threads.
        let b = budget(0.0, 5, 20);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..100).filter(|_| b.withdraw().is_ok()).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 100);
        assert_eq!(b.exhausted_count(), 300);
        assert_eq!(b.available(), 0);
    }
}
