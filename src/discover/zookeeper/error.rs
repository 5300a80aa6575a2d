use std::fmt;

/// The ZooKeeper session of a source or a registration ended (expired, closed by another client
/// with the same session, or authentication failed): a new session is established after a
/// backoff, the watches are set again and the whole path is read again, so nothing that changed
/// meanwhile is missed. Reported as an `Err` item of the discovery stream; the last good set stays
/// in place.
///
/// Errors of the ZooKeeper client itself (no host reachable, timeouts, connection loss) are
/// reported as they are, boxed: downcast to [`zookeeper_client::Error`]. A connection or a read
/// that took longer than configured is reported as [`timeout::Elapsed`](crate::timeout::Elapsed).
///
/// ```
/// use meshwork::discover::zookeeper::SessionLost;
///
/// let err: meshwork::BoxError = SessionLost::new("Expired").into();
/// assert!(err.is::<SessionLost>());
/// assert!(err.to_string().contains("Expired"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLost {
    state: String,
}

impl SessionLost {
    /// A lost session, with the final state ZooKeeper's client reported (`Expired`, `Closed`,
    /// `AuthFailed`).
    pub fn new(state: impl Into<String>) -> Self {
        Self {
            state: state.into(),
        }
    }

    /// The final session state.
    pub fn state(&self) -> &str {
        &self.state
    }
}

impl fmt::Display for SessionLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZooKeeper session lost ({})", self.state)
    }
}

impl std::error::Error for SessionLost {}

/// The connection to ZooKeeper was lost; the session lives on while the client reconnects
/// (within the session timeout), and the path is read again once it is back. Reported as an `Err`
/// item of the discovery stream; the last good set stays in place.
///
/// ```
/// use meshwork::discover::zookeeper::Disconnected;
///
/// let err: meshwork::BoxError = Disconnected.into();
/// assert!(err.is::<Disconnected>());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

impl fmt::Display for Disconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("disconnected from ZooKeeper; reconnecting within the session timeout")
    }
}

impl std::error::Error for Disconnected {}
