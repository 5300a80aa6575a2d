//! One vocabulary of outcomes.
//!
//! Every layer that reacts to how a request went — the circuit breaker, the retry layer, the load
//! metric, the metrics — asks the same question through [`Classify`]: was this
//! `Result<Response, Error>` a success, a failure worth retrying, a failure not worth retrying, or
//! something that should not count at all? Configure the answer once, and every layer agrees.
//!
//! | class | breaker | retry | load |
//! |---|---|---|---|
//! | [`Class::Success`] | counts as success | returns it | latency recorded |
//! | [`Class::Retryable`] | counts as failure | may retry | failure penalty |
//! | [`Class::NonRetryable`] | counts as failure | returns it | failure penalty |
//! | [`Class::Ignorable`] | not counted | returns it | latency recorded |
//!
//! A [`Classification`] also carries two facts the retry layer needs: a server's `Retry-After`
//! hint, and whether the failure *proves the request never reached the server* (so that even a
//! non-idempotent request may be requeued).
//!
//! [`DefaultClassify`] treats `Ok` as success and `Err` as a retryable failure, recognising
//! meshwork's own errors. With the `http` feature, [`HttpClassify`] classifies HTTP responses by
//! status.

mod error;
#[cfg(feature = "http")]
mod http;

pub use self::error::classify_error;
#[cfg(feature = "http")]
pub use self::http::HttpClassify;

use std::time::Duration;

/// The class of an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// The request succeeded.
    Success,
    /// The request failed, and trying again (elsewhere, or later) may succeed.
    Retryable,
    /// The request failed, and trying again would not help (or is not allowed).
    NonRetryable,
    /// Neither success nor failure: not counted by the breaker, not retried (for example a request
    /// the caller cancelled, or a client error that says nothing about the endpoint's health).
    Ignorable,
}

impl Class {
    /// `true` for [`Class::Retryable`] and [`Class::NonRetryable`].
    #[must_use]
    pub const fn is_failure(self) -> bool {
        matches!(self, Class::Retryable | Class::NonRetryable)
    }

    /// `true` for [`Class::Success`].
    #[must_use]
    pub const fn is_success(self) -> bool {
        matches!(self, Class::Success)
    }
}

/// The classification of one outcome: its [`Class`] and what the retry layer should know about it.
///
/// ```
/// use std::time::Duration;
/// use meshwork::classify::{Class, Classification};
///
/// let c = Classification::retryable().with_retry_after(Duration::from_secs(2));
/// assert_eq!(c.class(), Class::Retryable);
/// assert_eq!(c.retry_after(), Some(Duration::from_secs(2)));
/// assert!(!c.is_unsent());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    class: Class,
    retry_after: Option<Duration>,
    unsent: bool,
    nack: bool,
    throttled: bool,
}

impl Classification {
    /// A new classification of class `class`, with no retry hint.
    #[must_use]
    pub const fn new(class: Class) -> Self {
        Self {
            class,
            retry_after: None,
            unsent: false,
            nack: false,
            throttled: false,
        }
    }

    /// A success.
    #[must_use]
    pub const fn success() -> Self {
        Self::new(Class::Success)
    }

    /// A retryable failure.
    #[must_use]
    pub const fn retryable() -> Self {
        Self::new(Class::Retryable)
    }

    /// A failure that must not be retried.
    #[must_use]
    pub const fn non_retryable() -> Self {
        Self::new(Class::NonRetryable)
    }

    /// An outcome that counts neither as success nor as failure.
    #[must_use]
    pub const fn ignorable() -> Self {
        Self::new(Class::Ignorable)
    }

    /// A *nack*: the request was refused before any work was done (a server's concurrency limit,
    /// admission control, a full queue) and is safe to send elsewhere.
    ///
    /// A nack is not the endpoint's failure: its class is [`Class::Ignorable`] (the breaker does not
    /// count it; the load metric records it as load, not as a failure), and it is
    /// [unsent](Self::is_unsent), so the retry layer may requeue it to another endpoint, even a
    /// non-idempotent request, within the retry budget.
    ///
    /// ```
    /// use meshwork::classify::{Class, Classification};
    ///
    /// let c = Classification::nack();
    /// assert_eq!(c.class(), Class::Ignorable);
    /// assert!(c.is_nack() && c.is_unsent());
    /// ```
    #[must_use]
    pub const fn nack() -> Self {
        let mut c = Self::new(Class::Ignorable);
        c.unsent = true;
        c.nack = true;
        c
    }

    /// The endpoint asked the caller to slow down (HTTP `429 Too Many Requests`): not the
    /// endpoint's failure, but worth trying again.
    ///
    /// Its class is [`Class::Ignorable`], so the breaker does not count it against the endpoint
    /// (Envoy's outlier detection counts 5xx only), and the load metric records it as load, as it
    /// does a [nack](Self::nack) (a fast 429 never makes the endpoint look fast). It is
    /// [throttled](Self::is_throttled), so the retry layer retries it like a retryable failure
    /// (idempotent requests only, within the budget, after any `Retry-After`), and admission control
    /// counts it as a request that was not accepted.
    ///
    /// ```
    /// use meshwork::classify::{Class, Classification};
    ///
    /// let c = Classification::throttled();
    /// assert_eq!(c.class(), Class::Ignorable);
    /// assert!(c.is_throttled() && !c.is_unsent());
    /// ```
    #[must_use]
    pub const fn throttled() -> Self {
        let mut c = Self::new(Class::Ignorable);
        c.throttled = true;
        c
    }

    /// Adds the server's `Retry-After` hint.
    #[must_use]
    pub const fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Marks the failure as proof that the request never reached the server (connection refused,
    /// HTTP/2 `REFUSED_STREAM`, ...): any request, even a non-idempotent one, may then be requeued.
    #[must_use]
    pub const fn unsent(mut self) -> Self {
        self.unsent = true;
        self
    }

    /// The class.
    #[must_use]
    pub const fn class(&self) -> Class {
        self.class
    }

    /// The server's `Retry-After` hint, if any.
    #[must_use]
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// `true` when the failure proves the request never reached the server.
    #[must_use]
    pub const fn is_unsent(&self) -> bool {
        self.unsent
    }

    /// `true` for a [throttled](Self::throttled) outcome: not counted against the endpoint, but
    /// retried.
    #[must_use]
    pub const fn is_throttled(&self) -> bool {
        self.throttled
    }

    /// `true` for a [nack](Self::nack): refused before any work, safe to send elsewhere.
    #[must_use]
    pub const fn is_nack(&self) -> bool {
        self.nack
    }
}

impl From<Class> for Classification {
    fn from(class: Class) -> Self {
        Self::new(class)
    }
}

/// Turns the outcome of a request into a [`Classification`].
///
/// Implementations are usually small `Copy` values shared by every layer of a stack. The outcome is
/// borrowed, so classifying never consumes the response.
///
/// ```
/// use meshwork::classify::{Class, Classification, Classify};
///
/// /// Treats negative answers as failures.
/// #[derive(Clone, Copy)]
/// struct NonNegative;
///
/// impl<E> Classify<i64, E> for NonNegative {
///     fn classify(&self, outcome: Result<&i64, &E>) -> Classification {
///         match outcome {
///             Ok(n) if *n >= 0 => Classification::success(),
///             Ok(_) => Classification::non_retryable(),
///             Err(_) => Classification::retryable(),
///         }
///     }
/// }
///
/// assert_eq!(NonNegative.classify(Ok::<_, &()>(&-1)).class(), Class::NonRetryable);
/// ```
pub trait Classify<Res, E> {
    /// Classifies one outcome.
    fn classify(&self, outcome: Result<&Res, &E>) -> Classification;
}

impl<Res, E, F> Classify<Res, E> for F
where
    F: Fn(Result<&Res, &E>) -> Classification,
{
    fn classify(&self, outcome: Result<&Res, &E>) -> Classification {
        self(outcome)
    }
}

/// The default classifier: `Ok` is a success, `Err` a failure.
///
/// Errors are inspected with [`classify_error`], which walks the source chain: a per-try timeout
/// or a connection failure is retryable, an exceeded deadline or an exhausted retry budget is not.
/// Any other error is a retryable failure.
///
/// Every classifying layer (breaker, balancer, retry, admission) turns its inner service's error
/// into a [`BoxError`](crate::BoxError) *before* it asks the classifier, so a classifier only ever
/// sees `Classify<Res, BoxError>`. That is why `DefaultClassify` works under any inner error type
/// that converts into `BoxError` (every `E: Error + Send + Sync + 'static`, `anyhow::Error`,
/// `BoxError` itself) with no glue: here a foreign error type, like `hyper::Error`, whose source is
/// a refused connection, is recognised as unsent by the breaker:
///
/// ```
/// use meshwork::breaker::{Breaker, BreakerConfig};
/// use tower::{Service, ServiceExt};
///
/// /// A foreign error type (think `hyper::Error` or `tonic::Status`): no meshwork trait needed.
/// #[derive(Debug)]
/// struct ForeignError(std::io::Error);
/// impl std::fmt::Display for ForeignError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("connect failed")
///     }
/// }
/// impl std::error::Error for ForeignError {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let inner = tower::service_fn(|_: ()| async {
///     Err::<(), _>(ForeignError(std::io::ErrorKind::ConnectionRefused.into()))
/// });
/// // `Breaker::new` uses `DefaultClassify`.
/// let mut svc = Breaker::new(inner, BreakerConfig::default());
/// let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
/// assert!(meshwork::is_caused_by::<ForeignError>(&*err));
/// # });
/// ```
///
/// Called directly, it takes a `BoxError` (or any type with [`AsErrorRef`]):
///
/// ```
/// use meshwork::classify::{Class, Classify, DefaultClassify};
/// use meshwork::BoxError;
///
/// let err: BoxError = "boom".into();
/// assert_eq!(DefaultClassify.classify(Ok::<_, &BoxError>(&())).class(), Class::Success);
/// assert_eq!(DefaultClassify.classify(Err::<&(), _>(&err)).class(), Class::Retryable);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultClassify;

impl<Res, E> Classify<Res, E> for DefaultClassify
where
    E: AsErrorRef,
{
    fn classify(&self, outcome: Result<&Res, &E>) -> Classification {
        match outcome {
            Ok(_) => Classification::success(),
            Err(e) => classify_error(e.as_error_ref()),
        }
    }
}

/// Gives a classifier a view of an error as `dyn Error`, so it can walk the source chain.
///
/// Implemented for [`BoxError`](crate::BoxError), [`std::io::Error`], [`std::convert::Infallible`]
/// and meshwork's own error types. The layers never need more: they classify the error after
/// turning it into a `BoxError` (see [`DefaultClassify`]). Implement it for your own error type
/// only to call a built-in classifier on that type directly. (A blanket implementation for every
/// `E: Error` is not possible beside the one for `BoxError`: the coherence rules reject the pair.)
pub trait AsErrorRef {
    /// The error as a trait object.
    fn as_error_ref(&self) -> &(dyn std::error::Error + 'static);
}

impl AsErrorRef for crate::BoxError {
    fn as_error_ref(&self) -> &(dyn std::error::Error + 'static) {
        &**self
    }
}

impl AsErrorRef for std::io::Error {
    fn as_error_ref(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}

impl AsErrorRef for std::convert::Infallible {
    fn as_error_ref(&self) -> &(dyn std::error::Error + 'static) {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;

    #[test]
    fn closure_classifier() {
        let c = |o: Result<&u8, &BoxError>| match o {
            Ok(_) => Classification::ignorable(),
            Err(_) => Classification::non_retryable(),
        };
        assert_eq!(c.classify(Ok(&1)).class(), Class::Ignorable);
        assert!(Class::Retryable.is_failure());
        assert!(!Class::Ignorable.is_failure());
        assert!(Class::Success.is_success());
    }
}
