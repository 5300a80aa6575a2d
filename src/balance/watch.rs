//! How waiting balancer clones hear that an endpoint may have become available.
//!
//! Every clone of a [`Balance`](super::Balance) that finds no endpoint to take its request waits in
//! one shared [`Notify`]: a bounded intrusive list, one entry per waiting clone, that a clone leaves
//! when it stops waiting or is dropped. Nothing in it grows with the number of requests, and
//! registering costs no lock held across an O(n) scan.
//!
//! Two things may end a wait: a new endpoint set is published, or an unavailable endpoint becomes
//! available. For the second, each endpoint slot has a [`Watch`]: the waker under which the
//! balancer asks the endpoint ([`Available::poll_available`]) to say when its availability may have
//! changed. One waker per endpoint, whatever the number of waiting clones, so an endpoint that keeps
//! only the last waker it was given (as a breaker does) loses nobody. A flag makes sure each endpoint
//! holds at most one registration.
//!
//! Waking is a **baton**, not a broadcast: an event wakes *one* waiting clone
//! ([`Notify::notify_one`]). A woken clone that finds an endpoint (or learns that the set is empty)
//! passes the baton to the next waiter before it returns; one that finds nothing goes back to
//! waiting and passes nothing. So when an endpoint returns, every waiting clone is woken once, in
//! turn, and none is woken in vain more than once per event; while an endpoint only admits one
//! half-open probe, one clone takes it and the others sleep on. tokio's `Notify` forwards a baton
//! to the next waiter when the woken one is dropped before it ran, so a cancelled caller cannot
//! break the chain.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::Notify;

use crate::available::Available;
use crate::sync::AtomicBool;

/// One endpoint's registration for "my availability may have changed".
pub(crate) struct Watch {
    /// `true` while the endpoint holds a registration under this waker.
    armed: AtomicBool,
    waiters: Arc<Notify>,
}

impl Watch {
    pub(crate) fn new(waiters: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            armed: AtomicBool::new(false),
            waiters,
        })
    }

    /// Makes sure `endpoint` (unavailable when last looked at) will wake a waiter when its
    /// availability may change. `Ready` when it is available now: look again.
    pub(crate) fn arm(self: &Arc<Self>, endpoint: &impl Available) -> Poll<()> {
        // Read before writing: with many waiting clones, the flag's cache line stays shared.
        // Every write is a read-modify-write (the flag is written only when an endpoint is armed
        // or wakes, never per request): under loom, plain stores mixed with swaps let the model
        // checker pick an order in which a disarm is lost, so the model and the code use swaps.
        if self.armed.load(Ordering::Acquire) || self.armed.swap(true, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.clone());
        match endpoint.poll_available(&mut Context::from_waker(&waker)) {
            Poll::Ready(()) => {
                self.armed.swap(false, Ordering::AcqRel);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether the endpoint holds a registration (a read-modify-write, so that it reads the
    /// latest value under the model checker too).
    #[cfg(all(test, meshwork_loom))]
    pub(crate) fn is_armed(&self) -> bool {
        self.armed.fetch_or(false, Ordering::AcqRel)
    }
}

impl Wake for Watch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The registration is used up: the next waiter that finds the endpoint unavailable arms it
        // again. Cleared before the baton is passed, so the woken waiter sees it cleared.
        self.armed.swap(false, Ordering::AcqRel);
        self.waiters.notify_one();
    }
}

#[cfg(all(test, meshwork_loom))]
mod loom_tests {
    //! The wait protocol under every interleaving (loom): a waiter registers for the baton, then
    //! looks (arming the endpoint's watch); meanwhile the endpoint becomes available and wakes
    //! whoever it was given. Whatever the order, every waiter ends up served, or holding a baton
    //! that was handed to it, and the watch is left disarmed for the next outage. tokio's `Notify`
    //! is model-checked by tokio itself; here its operations are single steps.

    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::{Arc, Mutex};
    use loom::thread;
    use tokio::sync::Notify;
    use tokio::sync::futures::OwnedNotified;

    use super::Watch;
    use crate::available::Available;

    /// An endpoint that keeps only the last waker it was given, as a breaker does.
    #[derive(Default)]
    struct Endpoint {
        available: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    impl Available for Endpoint {
        fn is_available(&self) -> bool {
            self.available.load(Ordering::Acquire)
        }
        fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.is_available() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Endpoint {
        fn recover(&self) {
            self.available.store(true, Ordering::Release);
            let waker = self.waker.lock().unwrap().take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    type Baton = Pin<Box<OwnedNotified>>;

    /// One waiter's look: `None` when served (it passes the baton on), or its registered baton
    /// when it went to sleep.
    fn look(
        notify: &std::sync::Arc<Notify>,
        watch: &std::sync::Arc<Watch>,
        ep: &Endpoint,
    ) -> Option<Baton> {
        let mut baton = Box::pin(notify.clone().notified_owned());
        baton.as_mut().enable();
        if ep.is_available() || watch.arm(ep).is_ready() {
            notify.notify_one();
            return None;
        }
        Some(baton)
    }

    fn run(waiters: usize) {
        loom::model(move || {
            let notify = std::sync::Arc::new(Notify::new());
            let watch = Watch::new(notify.clone());
            let ep = Arc::new(Endpoint::default());
            let threads: Vec<_> = (0..waiters)
                .map(|_| {
                    let (notify, watch, ep) = (notify.clone(), watch.clone(), ep.clone());
                    thread::spawn(move || look(&notify, &watch, &ep))
                })
                .collect();
            let recovery = {
                let ep = ep.clone();
                thread::spawn(move || ep.recover())
            };
            let mut asleep: Vec<Baton> = threads
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .collect();
            recovery.join().unwrap();
            // The endpoint is back: the batons must reach every sleeper, each passing it on.
            let mut cx = Context::from_waker(Waker::noop());
            while !asleep.is_empty() {
                let before = asleep.len();
                asleep.retain_mut(|baton| {
                    if baton.as_mut().poll(&mut cx).is_ready() {
                        assert!(ep.is_available());
                        notify.notify_one(); // served: pass it on
                        false
                    } else {
                        true
                    }
                });
                assert!(
                    asleep.len() < before,
                    "{} waiters lost their wake-up",
                    asleep.len()
                );
            }
            assert!(
                !watch.is_armed(),
                "the watch stays armed on an available endpoint"
            );
        });
    }

    #[test]
    fn one_waiter_never_misses_a_recovery() {
        run(1);
    }

    #[test]
    fn the_baton_reaches_every_waiter() {
        run(2);
    }
}
