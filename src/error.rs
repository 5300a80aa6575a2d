//! Errors shared by every layer.

use std::fmt;

/// The boxed error type every meshwork layer returns, as in tower.
///
/// Callers recover the concrete error with [`downcast_ref`](std::error::Error) on the box, for example
/// `err.downcast_ref::<meshwork::timeout::Elapsed>()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An invalid configuration value, reported when a layer or policy is constructed.
///
/// meshwork never clamps a bad value silently and never panics on one: every constructor that takes
/// a value with a valid range returns this error, naming the field at fault.
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
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    /// Creates an error for `field`, with a short `reason` such as "must be greater than zero".
    pub const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The configuration field that holds the invalid value.
    pub const fn field(&self) -> &'static str {
        self.field
    }

    /// Why the value was rejected.
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
