use std::fmt;

use crate::timeout::{CarryDeadline, Deadline};

/// Why a request cannot be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReplayable {
    /// The request body was larger than the replay limit, so no copy of it was kept.
    BodyTooLarge,
    /// An earlier try is still reading the request body, so it cannot be replayed yet.
    BodyInUse,
    /// The request cannot be copied (a clone function declined).
    Declined,
}

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotReplayable::BodyTooLarge => "request body larger than the replay limit",
            NotReplayable::BodyInUse => "request body still in use by an earlier try",
            NotReplayable::Declined => "request cannot be copied",
        })
    }
}

/// What the retry layer needs to know about a request type: how to copy it for another try, its
/// deadline, and whether sending it twice is safe.
///
/// This is the request half of tower's `retry::Policy`. The request types themselves need no
/// trait: pick (or write) a `Replay` for them.
///
/// | implementation | requests | deadline | idempotent |
/// |---|---|---|---|
/// | [`CloneRequest`] | any `Clone` type | beside the request | always |
/// | [`CloneWithDeadline`] | `Clone + CarryDeadline` | from the request | always |
/// | [`FnReplay`] | any type, with your clone function | beside the request | always |
/// | `meshwork::http::HttpReplay` (feature `http`) | `http::Request<ReplayBody<B>>` | from the extensions | by method |
///
/// ```
/// use meshwork::retry::{NotReplayable, Replay};
///
/// /// Commands that say themselves whether they may run twice.
/// struct Command { name: &'static str, safe: bool }
///
/// struct CommandReplay;
///
/// impl Replay<Command> for CommandReplay {
///     fn replay(&self, req: &Command) -> Result<Command, NotReplayable> {
///         Ok(Command { name: req.name, safe: req.safe })
///     }
///     fn is_idempotent(&self, req: &Command) -> bool {
///         req.safe
///     }
/// }
/// # let _ = CommandReplay.replay(&Command { name: "get", safe: true });
/// ```
pub trait Replay<Req> {
    /// A copy of `req` for another try. Called before the first try (the copy is sent, the
    /// original kept) and before each retry. An error before the first try means the request is
    /// sent once, never retried.
    ///
    /// # Errors
    ///
    /// [`NotReplayable`] when no copy can be made (for example a body already streamed or too
    /// large to buffer); the request is then sent once and not retried.
    fn replay(&self, req: &Req) -> Result<Req, NotReplayable>;

    /// The request's deadline: no retry and no backoff sleep starts that cannot end before it.
    /// By default the deadline travelling beside the request
    /// ([`current_deadline`](crate::timeout::current_deadline)).
    fn deadline(&self, req: &Req) -> Option<Deadline> {
        let _ = req;
        crate::timeout::current_deadline()
    }

    /// Records the deadline the [`ClientBuilder`](crate::client::ClientBuilder)'s total timeout
    /// gives the request. By default nothing is written: the deadline travels beside the request.
    fn set_deadline(&self, req: &mut Req, deadline: Deadline) {
        let _ = (req, deadline);
    }

    /// The caller's budget from the wire (a deadline header), if the request has one.
    fn incoming_budget(&self, req: &Req) -> Option<std::time::Duration> {
        let _ = req;
        None
    }

    /// Whether the request may be sent again after a failure that may have reached the server.
    /// A request that provably never reached it (an *unsent* failure) is requeued either way.
    fn is_idempotent(&self, req: &Req) -> bool {
        let _ = req;
        true
    }
}

/// Replays any `Clone` request by cloning it; the deadline travels beside it
/// ([`current_deadline`](crate::timeout::current_deadline)); always idempotent. The default of
/// [`ClientBuilder`](crate::client::ClientBuilder).
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneRequest;

impl<Req: Clone> Replay<Req> for CloneRequest {
    fn replay(&self, req: &Req) -> Result<Req, NotReplayable> {
        Ok(req.clone())
    }
}

/// Replays a `Clone` request that carries its [`Deadline`] ([`CarryDeadline`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneWithDeadline;

impl<Req: Clone + CarryDeadline> Replay<Req> for CloneWithDeadline {
    fn replay(&self, req: &Req) -> Result<Req, NotReplayable> {
        Ok(req.clone())
    }

    fn deadline(&self, req: &Req) -> Option<Deadline> {
        req.deadline().or_else(crate::timeout::current_deadline)
    }

    fn set_deadline(&self, req: &mut Req, deadline: Deadline) {
        req.set_deadline(deadline);
    }

    fn incoming_budget(&self, req: &Req) -> Option<std::time::Duration> {
        req.incoming_budget()
    }
}

/// Replays requests with a user-supplied function; `None` means "cannot be copied".
///
/// ```
/// use meshwork::retry::{FnReplay, Replay};
///
/// struct Job { id: u64, payload: Vec<u8> } // not `Clone`
///
/// let replay = FnReplay::new(|job: &Job| {
///     (job.payload.len() <= 1024).then(|| Job { id: job.id, payload: job.payload.clone() })
/// });
/// assert!(replay.replay(&Job { id: 1, payload: vec![0; 10] }).is_ok());
/// assert!(replay.replay(&Job { id: 2, payload: vec![0; 2048] }).is_err());
/// ```
#[derive(Clone, Copy)]
pub struct FnReplay<F>(F);

impl<F> FnReplay<F> {
    /// Wraps `f`.
    pub const fn new(f: F) -> Self {
        Self(f)
    }
}

impl<F> fmt::Debug for FnReplay<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnReplay").finish_non_exhaustive()
    }
}

impl<Req, F> Replay<Req> for FnReplay<F>
where
    F: Fn(&Req) -> Option<Req>,
{
    fn replay(&self, req: &Req) -> Result<Req, NotReplayable> {
        (self.0)(req).ok_or(NotReplayable::Declined)
    }
}
