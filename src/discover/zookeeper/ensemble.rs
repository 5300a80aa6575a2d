//! Where ZooKeeper is, and how sessions with it are made.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use zookeeper_client::{Client, SessionInfo};

use crate::timeout::Elapsed;
use crate::{BoxError, ConfigError};

/// Default session timeout asked of ZooKeeper (the server clamps it to its own
/// `minSessionTimeout`..`maxSessionTimeout`, by default 2 to 20 ticks).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on establishing one session.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A ZooKeeper ensemble: the servers and the session settings. Sources and registrations make
/// their own sessions from it, and a new one whenever a session is lost.
///
/// ```
/// use std::time::Duration;
/// use meshwork::discover::zookeeper::Ensemble;
///
/// let zk = Ensemble::new(["10.0.0.1:2181", "10.0.0.2:2181"])?
///     .session_timeout(Duration::from_secs(6));
/// assert_eq!(zk.servers(), "10.0.0.1:2181,10.0.0.2:2181");
/// assert_eq!(Ensemble::new(Vec::<String>::new()).unwrap_err().field(), "servers");
/// assert_eq!(Ensemble::new(["10.0.0.1"]).unwrap_err().field(), "servers");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Ensemble {
    servers: String,
    session_timeout: Duration,
    connect_timeout: Duration,
}

impl Ensemble {
    /// The servers, each `host:port` (no chroot: give the full path to the source). At least
    /// one is needed.
    pub fn new<I, S>(servers: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for s in servers {
            let s = s.as_ref().trim();
            let port = s
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            match port {
                Some((host, Ok(port)))
                    if !host.is_empty() && port != 0 && !s.contains([',', '/']) => {}
                _ => {
                    return Err(ConfigError::new(
                        "servers",
                        "each server must be `host:port` with a port from 1 to 65535",
                    ));
                }
            }
            list.push(s.to_owned());
        }
        if list.is_empty() {
            return Err(ConfigError::new("servers", "must list at least one server"));
        }
        Ok(Self {
            servers: list.join(","),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// The session timeout to ask for (default [`DEFAULT_SESSION_TIMEOUT`]): how long ZooKeeper
    /// keeps a session, and so its ephemeral registrations, after its client went silent. Zero
    /// is rejected by [`validate`](Self::validate).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// The bound on establishing one session (default [`DEFAULT_CONNECT_TIMEOUT`]); zero is
    /// rejected by [`validate`](Self::validate).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Checks the settings: `session_timeout` and `connect_timeout` must be non-zero. The
    /// source's and the registration's builders call it (field `ensemble.session_timeout`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the zero timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::error::non_zero("session_timeout", self.session_timeout)?;
        crate::error::non_zero("connect_timeout", self.connect_timeout)?;
        Ok(())
    }

    /// The connect string, servers separated by commas.
    pub fn servers(&self) -> &str {
        &self.servers
    }

    /// The session timeout asked for.
    pub fn requested_session_timeout(&self) -> Duration {
        self.session_timeout
    }

    /// Establishes a new session: the servers are tried in turn until one accepts, for at most
    /// the connect timeout ([`Elapsed`] after it) or the session timeout (the client's
    /// `zookeeper_client::Error::Timeout`), whichever is shorter.
    pub async fn connect(&self) -> Result<Client, BoxError> {
        let connect = Client::connector()
            .with_session_timeout(self.session_timeout)
            .connect(&self.servers);
        Ok(tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| Elapsed::new())??)
    }
}

/// The session a source or a registration holds now, shared with its handle for diagnostics
/// (and for tests that close it from another client to force an expiry).
#[derive(Clone, Debug, Default)]
pub(crate) struct CurrentSession(Arc<Mutex<Option<SessionInfo>>>);

impl CurrentSession {
    pub(crate) fn set(&self, session: Option<SessionInfo>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = session;
    }

    pub(crate) fn get(&self) -> Option<SessionInfo> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Rejects a path that is not an absolute ZooKeeper path of a service: it must start with `/`,
/// must not be `/` alone, must not end with `/`, and has no empty segment.
pub(crate) fn check_path(path: &str) -> Result<(), ConfigError> {
    let ok = path.len() > 1
        && path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..");
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "path",
            "must be an absolute ZooKeeper path such as `/services/users` (not `/`, no trailing `/`)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in ["/a", "/services/users", "/x/y_z-1"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/", "a/b", "/a/", "/a//b", "/a/../b", "/a/."] {
            assert_eq!(check_path(bad).unwrap_err().field(), "path", "{bad}");
        }
    }

    #[test]
    fn servers_and_timeouts() {
        assert!(Ensemble::new(["127.0.0.1:2181", " [::1]:2181 "]).is_ok());
        for bad in ["", ":2181", "h:0", "h:x", "h:1/chroot", "a:1,b:2"] {
            assert_eq!(
                Ensemble::new([bad]).unwrap_err().field(),
                "servers",
                "{bad}"
            );
        }
        let zk = Ensemble::new(["h:1"]).unwrap();
        assert_eq!(
            zk.clone()
                .session_timeout(Duration::ZERO)
                .validate()
                .unwrap_err()
                .field(),
            "session_timeout"
        );
        assert_eq!(
            zk.connect_timeout(Duration::ZERO)
                .validate()
                .unwrap_err()
                .field(),
            "connect_timeout"
        );
    }
}
