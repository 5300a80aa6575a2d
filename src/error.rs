//! Errors shared by every layer.

use std::borrow::Cow;
use std::fmt;

/// The boxed error type every meshwork layer returns, as in tower.
///
/// Callers recover the concrete error with [`downcast_ref`](std::error::Error) on the box, for example
/// `err.downcast_ref::<meshwork::timeout::Elapsed>()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An invalid configuration value, reported when a layer, client or policy is built.
///
/// meshwork never clamps a bad value silently and never panics on one. Setters are infallible;
/// the `build` step that turns a configuration into something that runs checks every value (set or
/// derived) and returns this error, naming the field at fault by its path from the builder
/// (`balance.load.decay`, `connect.connect_timeout`). Value constructors whose arguments alone can
/// be invalid (a [`Backoff`](crate::backoff::Backoff) with a zero base) return it at once.
///
/// ```
/// use std::time::Duration;
/// use meshwork::backoff::Backoff;
///
/// let err = Backoff::full_jitter(Duration::ZERO, Duration::from_secs(1)).unwrap_err();
/// assert_eq!(err.field(), "base");
/// assert!(err.to_string().contains("base"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    reason: &'static str,
}

impl ConfigError {
    /// Creates an error for `field`, with a short `reason` such as "must be greater than zero".
    #[must_use]
    pub const fn new(field: &'static str, reason: &'static str) -> Self {
        Self {
            field: Cow::Borrowed(field),
            reason,
        }
    }

    /// The same error, its field path prefixed with `section` (the builder setting that holds the
    /// value): `decay` within `balance.load` is `balance.load.decay`.
    ///
    /// ```
    /// use meshwork::ConfigError;
    ///
    /// let err = ConfigError::new("decay", "must be greater than zero").within("balance.load");
    /// assert_eq!(err.field(), "balance.load.decay");
    /// ```
    #[must_use]
    pub fn within(self, section: &str) -> Self {
        Self {
            field: Cow::Owned(format!("{section}.{}", self.field)),
            reason: self.reason,
        }
    }

    /// The path of the configuration field that holds the invalid value.
    #[must_use]
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why the value was rejected.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: `{}` {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Rejects a zero duration for `field`.
pub(crate) const fn non_zero(
    field: &'static str,
    value: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    if value.is_zero() {
        Err(ConfigError::new(field, "must be greater than zero"))
    } else {
        Ok(value)
    }
}

/// Walks `err`'s [source chain](std::error::Error::source) (starting with `err` itself) and returns
/// the first error of type `T`.
///
/// meshwork's layers wrap and box errors, so the error a caller sees is often not the one that
/// happened: a [`NoEndpoints`](crate::balance::NoEndpoints) may arrive inside a retry error, an
/// [`Elapsed`](crate::timeout::Elapsed) inside a hyper error.
///
/// ```
/// use meshwork::{find_cause, is_caused_by, BoxError};
/// use meshwork::timeout::Elapsed;
///
/// #[derive(Debug)]
/// struct Wrapper(BoxError);
/// impl std::fmt::Display for Wrapper {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("request failed")
///     }
/// }
/// impl std::error::Error for Wrapper {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&*self.0)
///     }
/// }
///
/// let err: BoxError = Box::new(Wrapper(Box::new(Elapsed::new())));
/// assert!(is_caused_by::<Elapsed>(&*err));
/// assert!(find_cause::<Elapsed>(&*err).is_some());
/// assert!(!is_caused_by::<std::io::Error>(&*err));
/// ```
pub fn find_cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// `true` when an error of type `T` is in `err`'s source chain (`err` included): see
/// [`find_cause`].
pub fn is_caused_by<T: std::error::Error + 'static>(
    err: &(dyn std::error::Error + 'static),
) -> bool {
    find_cause::<T>(err).is_some()
}
