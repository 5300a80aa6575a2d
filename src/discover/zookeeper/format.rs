//! Which JSON a child znode holds, and what parsing one child gives.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value};

use super::{nerve, serverset};
use crate::ConfigError;
use crate::discover::Endpoint;

/// The JSON format of the children under the watched path: see the
/// [module docs](crate::discover::zookeeper) for both, with examples.
///
/// ```
/// use meshwork::discover::zookeeper::Format;
///
/// let http = Format::server_set_endpoint("http")?;
/// assert_eq!(http.endpoint_name(), Some("http"));
/// assert_eq!(Format::ServerSet { endpoint: None }.endpoint_name(), None);
/// assert_eq!(Format::server_set_endpoint("").unwrap_err().field(), "endpoint_name");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// Finagle/Aurora server sets: only children named `member_…`, status `ALIVE` only; the
    /// address is `serviceEndpoint`, or the additional endpoint named `endpoint`.
    ServerSet {
        /// The name of an entry of `additionalEndpoints` to use instead of `serviceEndpoint`
        /// (Finagle's `zk!host!/path!http`); a member without it is skipped as malformed.
        endpoint: Option<String>,
    },
    /// Airbnb Nerve registrations (read by Synapse): every child, `host`, `port`, `name`,
    /// `weight`.
    Nerve,
}

impl Default for Format {
    /// `ServerSet` with `serviceEndpoint`.
    fn default() -> Self {
        Self::ServerSet { endpoint: None }
    }
}

impl Format {
    /// Server sets, reading the named entry of `additionalEndpoints`. An empty name is rejected.
    pub fn server_set_endpoint(name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ConfigError::new("endpoint_name", "must not be empty"));
        }
        Ok(Self::ServerSet {
            endpoint: Some(name),
        })
    }

    /// The named additional endpoint, if this is `ServerSet` with one.
    pub fn endpoint_name(&self) -> Option<&str> {
        match self {
            Self::ServerSet { endpoint } => endpoint.as_deref(),
            Self::Nerve => None,
        }
    }

    /// A short name for logs and metrics: `serverset` or `nerve`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ServerSet { .. } => "serverset",
            Self::Nerve => "nerve",
        }
    }

    /// Whether a child of this name is a member at all (server sets: `member_` prefix, as
    /// Finagle's `ServerSetImpl` names them; Nerve: every child).
    pub(crate) fn is_member(&self, child: &str) -> bool {
        match self {
            Self::ServerSet { .. } => child.starts_with(serverset::MEMBER_PREFIX),
            Self::Nerve => true,
        }
    }

    /// Parses one child's data.
    pub(crate) fn parse(&self, data: &[u8]) -> Result<Member, Malformed> {
        match self {
            Self::ServerSet { endpoint } => serverset::parse(data, endpoint.as_deref()),
            Self::Nerve => nerve::parse(data),
        }
    }
}

/// What one well-formed child says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Member {
    /// An endpoint to send traffic to.
    Serving(Endpoint),
    /// A well-formed member that must get no traffic (server-set status other than `ALIVE`, Nerve
    /// weight 0), with the reason.
    NotServing(String),
}

/// Why a child's data was not understood; the child is skipped with a warning naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn malformed(msg: impl Into<String>) -> Malformed {
    Malformed(msg.into())
}

/// The top-level JSON object of a child.
pub(crate) fn object(bytes: &[u8]) -> Result<Map<String, Value>, Malformed> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| malformed(format!("not JSON: {e}")))?;
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(malformed("not a JSON object")),
    }
}

/// `host` (an IP literal, IPv6 with or without brackets) and `port` (1–65535) fields of `obj`,
/// named `what` in error messages.
pub(crate) fn host_port(obj: &Map<String, Value>, what: &str) -> Result<SocketAddr, Malformed> {
    let host = match obj.get("host") {
        Some(Value::String(h)) => h,
        Some(_) => return Err(malformed(format!("`{what}.host` is not a string"))),
        None => return Err(malformed(format!("no `{what}.host`"))),
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = bare.parse().map_err(|_| {
        malformed(format!(
            "`{what}.host` {host:?} is not an IP address (host names are not resolved)"
        ))
    })?;
    let port = match obj.get("port") {
        Some(p) => p
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                malformed(format!("`{what}.port` must be an integer from 1 to 65535"))
            })?,
        None => return Err(malformed(format!("no `{what}.port`"))),
    };
    Ok(SocketAddr::new(ip, port))
}
