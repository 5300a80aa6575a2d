use std::fmt;

/// etcd ended or canceled the watch without a compaction: the source re-reads the prefix after a
/// backoff. Reported as an `Err` item of the discovery stream (the last good set stays in place).
///
/// Errors of the etcd client itself (connection refused, gRPC status) are reported as they are,
/// boxed: downcast to [`etcd_client::Error`]. A request that took longer than the configured
/// request timeout is reported as [`timeout::Elapsed`](crate::timeout::Elapsed).
///
/// ```
/// use meshwork::discover::etcd::WatchClosed;
///
/// let err: meshwork::BoxError = WatchClosed::new("server shutting down").into();
/// assert!(err.is::<WatchClosed>());
/// assert!(err.to_string().contains("server shutting down"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchClosed {
    reason: String,
}

impl WatchClosed {
    /// A closed watch, with the reason etcd gave (empty if none).
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// The reason etcd gave, if any (empty when the stream simply ended).
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for WatchClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            f.write_str("etcd closed the watch")
        } else {
            write!(f, "etcd canceled the watch: {}", self.reason)
        }
    }
}

impl std::error::Error for WatchClosed {}
