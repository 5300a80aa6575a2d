use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::State;
use super::state::{Shared, WaitSlot};
use crate::available::Available;

/// A handle on a breaker's shared state: read the state, or drive the manual switch.
///
/// The switch lets the application hold the breaker open (an overload detector elsewhere, an
/// operator draining an endpoint) or closed (a known-good endpoint that must keep traffic whatever
/// the policies say), and [`clear_force`](Self::clear_force) hands control back to the policies.
/// Waiting callers are woken at every change.
///
/// ```
/// use meshwork::available::Available;
/// use meshwork::breaker::{Breaker, BreakerConfig, State};
///
/// let svc = Breaker::new(tower::service_fn(|x: u8| async move { Ok::<_, meshwork::BoxError>(x) }),
///     BreakerConfig::default());
/// let handle = svc.handle();
/// assert_eq!(handle.state(), State::Closed);
/// handle.force_open();
/// assert!(!svc.is_available());
/// handle.clear_force();
/// assert_eq!(handle.state(), State::Closed);
/// ```
pub struct BreakerHandle {
    shared: Arc<Shared>,
    wait: WaitSlot,
}

impl Clone for BreakerHandle {
    /// Another handle on the same breaker, with its own place to wait.
    fn clone(&self) -> Self {
        Self::new(self.shared.clone())
    }
}

impl BreakerHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            wait: WaitSlot::default(),
        }
    }

    /// The current state. An open breaker whose backoff has elapsed is reported (and moved) as
    /// half-open.
    pub fn state(&self) -> State {
        self.shared.state_now()
    }

    /// Holds the breaker open until [`force_closed`](Self::force_closed) or
    /// [`clear_force`](Self::clear_force).
    pub fn force_open(&self) {
        self.shared.force(Some(State::ForcedOpen));
    }

    /// Holds the breaker closed (outcomes never trip it) until [`force_open`](Self::force_open) or
    /// [`clear_force`](Self::clear_force).
    pub fn force_closed(&self) {
        self.shared.force(Some(State::ForcedClosed));
    }

    /// Releases the manual switch: the breaker is closed again, with the policies' counters and the
    /// open backoff starting from scratch. Does nothing if the switch was not set.
    pub fn clear_force(&self) {
        self.shared.force(None);
    }
}

impl Available for BreakerHandle {
    fn is_available(&self) -> bool {
        self.shared.is_available()
    }

    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        super::service::poll_available(&self.shared, &self.wait, cx)
    }
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("state", &self.state())
            .finish()
    }
}
