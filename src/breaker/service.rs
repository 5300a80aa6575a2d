use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::{ResponseFuture, Role, Tracker};
use super::state::{Shared, WaitSlot};
use super::word::{CLOSED, FORCED_CLOSED, FORCED_OPEN, HALF_OPEN, epoch_of, state_of};
use super::{BreakerConfig, BreakerHandle, Mode};
use crate::BoxError;
use crate::available::Available;
use crate::classify::{Classify, DefaultClassify};

/// What one clone holds between `poll_ready` and `call`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Permit {
    None,
    Admitted(Role),
    Reject,
}

/// What a clone shares with its in-flight response futures. One per clone, so that response futures
/// of clones on different threads do not bump one shared reference count on every call.
#[derive(Debug)]
pub(crate) struct Local<C> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) classify: C,
    wait: WaitSlot,
}

/// A circuit breaker in front of `S`: see the [module docs](crate::breaker).
///
/// Clones share one breaker (one state machine, one set of counters). Cloning gives a service with
/// no reservation, as tower's clones do; a clone dropped while holding a half-open probe gives it
/// back.
///
/// ```
/// use meshwork::breaker::{Breaker, BreakerConfig, Mode, Open, State};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), meshwork::BoxError> {
/// let config = BreakerConfig::builder().consecutive_failures(2).mode(Mode::FailFast).build()?;
/// let failing = tower::service_fn(|_: ()| async { Err::<(), meshwork::BoxError>("down".into()) });
/// let mut svc = Breaker::new(failing, config);
/// for _ in 0..2 {
///     assert!(svc.ready().await?.call(()).await.is_err());
/// }
/// assert_eq!(svc.handle().state(), State::Open);
/// let err = svc.ready().await?.call(()).await.unwrap_err();
/// assert!(err.is::<Open>());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Breaker<S, C = DefaultClassify> {
    inner: S,
    gate: Gate<C>,
}

/// The breaker's side of a [`Breaker`]: its state, and this clone's reservation, which dropping
/// gives back (apart from the inner service, so that [`Breaker::into_inner`] can move it out).
#[derive(Debug)]
struct Gate<C> {
    local: Arc<Local<C>>,
    mode: Mode,
    permit: Permit,
}

impl<S> Breaker<S> {
    /// A breaker in front of `inner`, classifying outcomes with [`DefaultClassify`].
    pub fn new(inner: S, config: BreakerConfig) -> Self {
        Self::with_classify(inner, config, DefaultClassify)
    }
}

impl<S, C> Breaker<S, C> {
    /// A breaker in front of `inner`, classifying outcomes with `classify` (for HTTP,
    /// [`HttpClassify`](crate::classify::HttpClassify)).
    pub fn with_classify(inner: S, config: BreakerConfig, classify: C) -> Self {
        Self {
            inner,
            gate: Gate {
                local: Arc::new(Local {
                    shared: Shared::new(&config),
                    classify,
                    wait: WaitSlot::default(),
                }),
                mode: config.mode,
                permit: Permit::None,
            },
        }
    }

    /// A handle on this breaker's shared state: read it, or force it open or closed.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.gate.local.shared.clone())
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service. A half-open probe this breaker had reserved (`poll_ready` without
    /// `call`) is given back, as when the breaker is dropped; the other clones keep the state.
    ///
    /// ```
    /// use meshwork::breaker::{Breaker, BreakerConfig};
    ///
    /// let svc = tower::service_fn(|_: ()| async { Ok::<_, meshwork::BoxError>(()) });
    /// let breaker = Breaker::new(svc, BreakerConfig::default());
    /// let _svc = breaker.into_inner();
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for Breaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            gate: Gate {
                local: Arc::new(Local {
                    shared: self.gate.local.shared.clone(),
                    classify: self.gate.local.classify.clone(),
                    wait: WaitSlot::default(),
                }),
                mode: self.gate.mode,
                permit: Permit::None,
            },
        }
    }
}

impl<C> Drop for Gate<C> {
    fn drop(&mut self) {
        if let Permit::Admitted(Role::Probe(epoch)) = self.permit {
            self.local.shared.release_probe(epoch);
        }
    }
}

impl<S, C> Available for Breaker<S, C> {
    #[inline]
    fn is_available(&self) -> bool {
        self.gate.local.shared.is_available()
    }

    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        poll_available(&self.gate.local.shared, &self.gate.local.wait, cx)
    }
}

/// `Ready` when a call would be admitted; otherwise registers in `wait` (and arms the probe timer),
/// then checks again, so that a change between the check and the registration is not missed.
pub(crate) fn poll_available(
    shared: &Arc<Shared>,
    wait: &WaitSlot,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        if shared.is_available() {
            return Poll::Ready(());
        }
        if wait
            .poll(shared, cx, shared.refresh(shared.load()))
            .is_pending()
        {
            return if shared.is_available() {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
        }
    }
}

impl<S, C, R> Service<R> for Breaker<S, C>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.gate.permit {
            Permit::None => {}
            Permit::Reject => return Poll::Ready(Ok(())),
            Permit::Admitted(_) => {
                return self.inner.poll_ready(cx).map_err(Into::into);
            }
        }
        let Local { shared, wait, .. } = &*self.gate.local;
        let mut registered = false;
        loop {
            let w = shared.load();
            match state_of(w) {
                CLOSED | FORCED_CLOSED => {
                    std::task::ready!(self.inner.poll_ready(cx)).map_err(Into::into)?;
                    self.gate.permit = Permit::Admitted(Role::Normal(epoch_of(w)));
                    return Poll::Ready(Ok(()));
                }
                HALF_OPEN => {
                    // Ask the inner service first, so a probe is never held by a clone whose
                    // connection is not ready.
                    std::task::ready!(self.inner.poll_ready(cx)).map_err(Into::into)?;
                    if let Some(epoch) = shared.try_reserve_probe() {
                        self.gate.permit = Permit::Admitted(Role::Probe(epoch));
                        return Poll::Ready(Ok(()));
                    }
                    if state_of(shared.load()) != HALF_OPEN {
                        continue; // closed or reopened meanwhile: decide again
                    }
                }
                FORCED_OPEN => {}
                _ => {
                    // Open: half-open if the backoff has elapsed (then loop to take a probe).
                    if state_of(shared.refresh(w)) != state_of(w) {
                        continue;
                    }
                }
            }
            // Refused: not ready (gate) or ready to fail (fail fast).
            if self.gate.mode == Mode::FailFast {
                self.gate.permit = Permit::Reject;
                return Poll::Ready(Ok(()));
            }
            if registered {
                return Poll::Pending;
            }
            // Registered (check once more), or a change happened since the last registration
            // (check again, and register anew if still refused).
            registered = wait.poll(shared, cx, w).is_pending();
        }
    }

    fn call(&mut self, req: R) -> Self::Future {
        match std::mem::replace(&mut self.gate.permit, Permit::None) {
            Permit::Admitted(role) => ResponseFuture::called(
                self.inner.call(req),
                Tracker::new(self.gate.local.clone(), role),
            ),
            Permit::Reject => {
                self.gate.local.shared.rejected();
                ResponseFuture::rejected()
            }
            Permit::None => panic!("Breaker::call without a successful poll_ready"),
        }
    }
}
