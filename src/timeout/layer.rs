use std::time::Duration;

use tower_layer::Layer;

use super::Timeout;
use crate::ConfigError;

/// Applies a per-try [`Timeout`] to a service: see the [module docs](crate::timeout).
///
/// ```
/// use std::time::Duration;
/// use meshwork::timeout::TimeoutLayer;
///
/// let layer = TimeoutLayer::new(Duration::from_millis(250))?;
/// assert_eq!(layer.timeout(), Duration::from_millis(250));
/// assert_eq!(TimeoutLayer::new(Duration::ZERO).unwrap_err().field(), "timeout");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// A layer that gives each try `timeout`, readiness wait included. A zero timeout is rejected.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `timeout` when `timeout` is zero.
    pub const fn new(timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        Ok(Self { timeout })
    }

    /// The per-try timeout.
    #[must_use]
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::from_parts(inner, self.timeout)
    }
}
