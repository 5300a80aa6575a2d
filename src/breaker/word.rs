//! The breaker's state word: its state, its epoch and the half-open probe gate in one atomic.
//!
//! `[epoch: 32 | probe successes: 12 | free probes: 12 | state: 8]`. Every transition bumps the
//! epoch, so that anything tied to an earlier period — a probe reserved then, the outcome of a call
//! admitted then — can be recognised as stale and never touches a later period. Reserving and
//! releasing a probe and counting a probe's success are lock-free compare-and-swaps on this word;
//! the other transitions are compare-and-swaps made by the state machine (one at a time, under its
//! cold-path lock). This module holds only the word and its atomic operations, so that a model
//! checker can explore them alone (`tests` below, and `scripts/loom.sh`).

use std::sync::atomic::Ordering;

use crate::sync::AtomicU64;

pub(crate) const CLOSED: u64 = 0;
pub(crate) const OPEN: u64 = 1;
pub(crate) const HALF_OPEN: u64 = 2;
pub(crate) const FORCED_OPEN: u64 = 3;
pub(crate) const FORCED_CLOSED: u64 = 4;

const STATE_MASK: u64 = 0xff;
const FREE_SHIFT: u32 = 8;
const OK_SHIFT: u32 = 20;
const FIELD_MASK: u64 = 0xfff;
const EPOCH_SHIFT: u32 = 32;

pub(crate) const fn state_of(w: u64) -> u64 {
    w & STATE_MASK
}
pub(crate) const fn free_of(w: u64) -> u64 {
    (w >> FREE_SHIFT) & FIELD_MASK
}
pub(crate) const fn ok_of(w: u64) -> u64 {
    (w >> OK_SHIFT) & FIELD_MASK
}
pub(crate) const fn epoch_of(w: u64) -> u32 {
    (w >> EPOCH_SHIFT) as u32
}
pub(crate) const fn word(epoch: u32, state: u64, free: u64, ok: u64) -> u64 {
    ((epoch as u64) << EPOCH_SHIFT) | (ok << OK_SHIFT) | (free << FREE_SHIFT) | state
}

/// What counting a probe's success did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeSuccess {
    /// Counted; more probes must succeed before the breaker closes.
    Counted,
    /// This was the last probe needed: the caller closes the breaker (epoch unchanged so far).
    Last,
    /// The probe belongs to an earlier period: nothing was counted.
    Stale,
}

/// The state word.
pub(crate) struct Word(AtomicU64);

impl Word {
    pub(crate) fn new(w: u64) -> Self {
        Self(AtomicU64::new(w))
    }

    #[inline]
    pub(crate) fn load(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Replaces `current` by `next`; on failure returns the actual word.
    #[inline]
    pub(crate) fn replace(&self, current: u64, next: u64) -> Result<u64, u64> {
        self.0
            .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
    }

    /// Reserves one half-open probe; returns the half-open epoch it belongs to.
    pub(crate) fn reserve_probe(&self) -> Option<u32> {
        let mut w = self.load();
        loop {
            if state_of(w) != HALF_OPEN || free_of(w) == 0 {
                return None;
            }
            match self.0.compare_exchange_weak(
                w,
                w - (1 << FREE_SHIFT),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(epoch_of(w)),
                Err(actual) => w = actual,
            }
        }
    }

    /// Gives back a probe of `epoch` (never more than `probes` free). `true` if it was given back.
    pub(crate) fn release_probe(&self, epoch: u32, probes: u64) -> bool {
        let mut w = self.load();
        loop {
            if state_of(w) != HALF_OPEN || epoch_of(w) != epoch || free_of(w) >= probes {
                return false;
            }
            match self.0.compare_exchange_weak(
                w,
                w + (1 << FREE_SHIFT),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => w = actual,
            }
        }
    }

    /// Counts the success of a probe of `epoch`, out of `probes` needed.
    pub(crate) fn probe_succeeded(&self, epoch: u32, probes: u64) -> ProbeSuccess {
        let mut w = self.load();
        loop {
            if state_of(w) != HALF_OPEN || epoch_of(w) != epoch {
                return ProbeSuccess::Stale;
            }
            if ok_of(w) + 1 >= probes {
                return ProbeSuccess::Last;
            }
            match self.0.compare_exchange_weak(
                w,
                w + (1 << OK_SHIFT),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return ProbeSuccess::Counted,
                Err(actual) => w = actual,
            }
        }
    }

    /// Moves to `to` (with `free` probe slots) if the current word satisfies `from`, bumping the
    /// epoch; retries over concurrent probe reservations. Returns the new word.
    pub(crate) fn transition(&self, from: impl Fn(u64) -> bool, to: u64, free: u64) -> Option<u64> {
        let mut w = self.load();
        loop {
            if !from(w) {
                return None;
            }
            let next = word(epoch_of(w).wrapping_add(1), to, free, 0);
            match self.replace(w, next) {
                Ok(_) => return Some(next),
                Err(actual) => w = actual,
            }
        }
    }
}

#[cfg(all(test, meshwork_loom))]
mod loom_tests {
    //! Every interleaving of the probe gate, explored by loom. Run with `scripts/loom.sh`.

    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    fn half_open(probes: u64) -> Arc<Word> {
        Arc::new(Word::new(word(1, HALF_OPEN, probes, 0)))
    }

    /// Three callers race for one probe: exactly one gets it.
    #[test]
    fn one_probe_one_winner() {
        loom::model(|| {
            let w = half_open(1);
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let w = w.clone();
                    thread::spawn(move || w.reserve_probe().is_some())
                })
                .collect();
            let winners = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|&won| won)
                .count();
            assert_eq!(winners, 1);
            assert_eq!(free_of(w.load()), 0);
        });
    }

    /// A probe released while the breaker reopens never frees a slot in the new period, and the
    /// free count never exceeds the configured number of probes.
    #[test]
    fn stale_release_never_touches_a_new_period() {
        loom::model(|| {
            let w = half_open(2);
            let epoch = w.reserve_probe().unwrap();
            let releaser = {
                let w = w.clone();
                thread::spawn(move || {
                    w.release_probe(epoch, 2);
                    w.release_probe(epoch, 2); // a double release is refused
                })
            };
            let reopener = {
                let w = w.clone();
                thread::spawn(move || {
                    // Probe failed elsewhere: reopen, then the backoff elapses: half-open again.
                    w.transition(|w| state_of(w) == HALF_OPEN, OPEN, 0);
                    w.transition(|w| state_of(w) == OPEN, HALF_OPEN, 2);
                })
            };
            releaser.join().unwrap();
            reopener.join().unwrap();
            let end = w.load();
            assert!(free_of(end) <= 2, "free {} > 2", free_of(end));
            if epoch_of(end) != epoch {
                assert_eq!(free_of(end), 2);
            }
        });
    }

    /// Two probes succeed concurrently while one caller abandons the period: the breaker is closed
    /// by at most one of them, and only within the period they were admitted in.
    #[test]
    fn probe_successes_close_once() {
        loom::model(|| {
            let w = half_open(2);
            let e1 = w.reserve_probe().unwrap();
            let e2 = w.reserve_probe().unwrap();
            let threads: Vec<_> = [e1, e2]
                .into_iter()
                .map(|e| {
                    let w = w.clone();
                    thread::spawn(move || match w.probe_succeeded(e, 2) {
                        ProbeSuccess::Last => w
                            .transition(|x| state_of(x) == HALF_OPEN && epoch_of(x) == e, CLOSED, 0)
                            .is_some(),
                        _ => false,
                    })
                })
                .collect();
            let abandon = {
                let w = w.clone();
                thread::spawn(move || {
                    // The probe lease expired: a new half-open period with fresh probes.
                    w.transition(
                        |x| state_of(x) == HALF_OPEN && epoch_of(x) == e1,
                        HALF_OPEN,
                        2,
                    )
                    .is_some()
                })
            };
            let closed = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|&c| c)
                .count();
            let abandoned = abandon.join().unwrap();
            assert!(closed <= 1);
            let end = w.load();
            match (closed, abandoned) {
                (1, false) => assert_eq!(state_of(end), CLOSED),
                (0, true) => {
                    assert_eq!(state_of(end), HALF_OPEN);
                    assert_eq!(free_of(end), 2);
                }
                other => panic!("closed/abandoned the same period: {other:?}"),
            }
        });
    }
}
