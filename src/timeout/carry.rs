use std::future::Future;
use std::time::Duration;

use super::{CarryDeadline, Deadline};

tokio::task_local! {
    static DEADLINE: Deadline;
}

/// The deadline of the request being served, when it travels *beside* the request (see
/// [`Beside`]): set by [`WithDeadline`](super::WithDeadline) for the inner layers' calls and
/// while its response future is polled.
///
/// ```
/// use std::time::Duration;
/// use meshwork::timeout::{DeadlineLayer, current_deadline};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), meshwork::BoxError> {
/// // A plain request type: no trait to implement.
/// #[derive(Clone)]
/// struct Ping;
/// let inner = tower::service_fn(|_: Ping| async { Ok::<_, meshwork::BoxError>(current_deadline()) });
/// let mut svc = tower::ServiceBuilder::new()
///     .layer(DeadlineLayer::new(Duration::from_secs(1))?.beside())
///     .service(inner);
/// let seen = svc.ready().await?.call(Ping).await?;
/// assert_eq!(seen.unwrap().remaining(), Duration::from_secs(1));
/// assert_eq!(current_deadline(), None);
/// # Ok(())
/// # }
/// ```
#[must_use]
pub fn current_deadline() -> Option<Deadline> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Runs `f` with `deadline` as the [`current_deadline`].
pub(crate) fn sync_scope<T>(deadline: Deadline, f: impl FnOnce() -> T) -> T {
    DEADLINE.sync_scope(deadline, f)
}

/// `fut`, polled with `deadline` as the [`current_deadline`].
pub(crate) fn scope<F: Future>(deadline: Deadline, fut: F) -> Scoped<F> {
    DEADLINE.scope(deadline, fut)
}

/// A future polled with a [`current_deadline`].
pub type Scoped<F> = tokio::task::futures::TaskLocalFuture<Deadline, F>;

/// How a request's [`Deadline`] travels through the stack: in the request, or beside it.
///
/// [`DeadlineLayer`](super::DeadlineLayer) sets the deadline through it, and every layer under it
/// reads it back. Either way the deadline is also the [`current_deadline`] while the request is
/// served.
///
/// | implementation | requests | where the deadline is |
/// |---|---|---|
/// | [`InRequest`] | [`CarryDeadline`] types (`http::Request`: its extensions) | in the request |
/// | [`Beside`] | any type | beside it ([`current_deadline`]) |
/// | [`ViaReplay`] | what the [`Replay`](crate::retry::Replay) accepts | where the replay puts it |
pub trait DeadlineCarrier<Req> {
    /// The deadline already on the request, if any.
    fn deadline(&self, req: &Req) -> Option<Deadline>;

    /// Records the deadline on the request (a no-op when it travels beside it).
    fn set_deadline(&self, req: &mut Req, deadline: Deadline);

    /// The caller's budget from the wire (a deadline header), if any.
    fn incoming_budget(&self, req: &Req) -> Option<Duration> {
        let _ = req;
        None
    }
}

/// The deadline lives in the request ([`CarryDeadline`]); the default of
/// [`DeadlineLayer`](super::DeadlineLayer).
#[derive(Clone, Copy, Debug, Default)]
pub struct InRequest;

impl<Req: CarryDeadline> DeadlineCarrier<Req> for InRequest {
    fn deadline(&self, req: &Req) -> Option<Deadline> {
        req.deadline()
    }
    fn set_deadline(&self, req: &mut Req, deadline: Deadline) {
        req.set_deadline(deadline);
    }
    fn incoming_budget(&self, req: &Req) -> Option<Duration> {
        req.incoming_budget()
    }
}

/// The deadline travels beside the request, as the [`current_deadline`]: for request types that
/// cannot carry one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Beside;

impl<Req> DeadlineCarrier<Req> for Beside {
    fn deadline(&self, _: &Req) -> Option<Deadline> {
        current_deadline()
    }
    fn set_deadline(&self, _: &mut Req, _: Deadline) {}
}

/// A [`Replay`](crate::retry::Replay) used as the carrier: the retry layer's replay says both how
/// a request is copied and how its deadline travels ([`Replay::set_deadline`]); the
/// [`ClientBuilder`](crate::client::ClientBuilder) uses its replay this way.
///
/// [`Replay::set_deadline`]: crate::retry::Replay::set_deadline
#[derive(Clone, Copy, Debug, Default)]
pub struct ViaReplay<R>(pub R);

impl<Req, R: crate::retry::Replay<Req>> DeadlineCarrier<Req> for ViaReplay<R> {
    fn deadline(&self, req: &Req) -> Option<Deadline> {
        self.0.deadline(req)
    }
    fn set_deadline(&self, req: &mut Req, deadline: Deadline) {
        self.0.set_deadline(req, deadline);
    }
    fn incoming_budget(&self, req: &Req) -> Option<Duration> {
        self.0.incoming_budget(req)
    }
}
