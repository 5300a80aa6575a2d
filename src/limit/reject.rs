use super::Nacked;

/// What a [`Limit`](super::Limit) answers for a request over the limit.
///
/// [`NackError`] (the default) fails it with [`Nacked`]; with feature `http`,
/// [`HttpNack`](super::HttpNack) answers `503` with `meshwork-nack: 1`.
pub trait Reject<Res, E> {
    /// The outcome of one rejected request.
    ///
    /// # Errors
    ///
    /// Always, for a rejecting implementation such as [`NackError`]; an implementation may instead
    /// answer `Ok` with a response (for example a 503).
    fn reject(&self) -> Result<Res, E>;
}

/// Rejects with the [`Nacked`] error (the inner error type must convert from it, as
/// [`BoxError`](crate::BoxError) does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NackError;

impl<Res, E: From<Nacked>> Reject<Res, E> for NackError {
    fn reject(&self) -> Result<Res, E> {
        Err(Nacked::new().into())
    }
}
