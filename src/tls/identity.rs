//! Workload identities: a SPIFFE ID (`spiffe://trust-domain/path`, carried in a URI SAN) or a DNS
//! name (a DNS SAN), and the identity of a verified peer.

use std::fmt;
use std::sync::Arc;

use super::error::InvalidIdentity;

/// The longest SPIFFE ID accepted, in bytes (the SPIFFE spec's limit for URI SANs).
const MAX_SPIFFE_LEN: usize = 2048;

/// A SPIFFE ID: `spiffe://trust-domain/path`, as the SPIFFE spec defines it.
///
/// The trust domain is lowercase letters, digits, `.`, `-` and `_`; the path is zero or more
/// segments of letters, digits, `.`, `-` and `_`, none empty, none `.` or `..`, and no trailing
/// slash. No port, user info, query or fragment.
///
/// ```
/// use meshwork::tls::SpiffeId;
///
/// let id: SpiffeId = "spiffe://mesh.local/ns/shop/sa/orders".parse()?;
/// assert_eq!(id.trust_domain(), "mesh.local");
/// assert_eq!(id.path(), "/ns/shop/sa/orders");
/// assert!("spiffe://Mesh.local/x".parse::<SpiffeId>().is_err());
/// # Ok::<(), meshwork::tls::InvalidIdentity>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    uri: Arc<str>,
    /// Where the path starts in `uri`.
    path_at: usize,
}

impl SpiffeId {
    /// Parses a SPIFFE ID.
    ///
    /// # Errors
    ///
    /// [`InvalidIdentity`] naming the reason when `s` is longer than 2048 bytes, lacks the
    /// `spiffe://` scheme, or has an empty or invalid trust domain or path.
    pub fn parse(s: &str) -> Result<Self, InvalidIdentity> {
        let bad = |reason| InvalidIdentity::new(s, reason);
        if s.len() > MAX_SPIFFE_LEN {
            return Err(bad("is longer than 2048 bytes"));
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("must start with `spiffe://`"))?;
        let (td, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if td.is_empty() {
            return Err(bad("has an empty trust domain"));
        }
        if !td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(bad(
                "trust domain may hold only lowercase letters, digits, `.`, `-` and `_` (no port, user info or query)",
            ));
        }
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return Err(bad("path has an empty segment or a trailing `/`"));
                }
                if segment == "." || segment == ".." {
                    return Err(bad("path may not hold `.` or `..` segments"));
                }
                if !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                {
                    return Err(bad(
                        "path may hold only letters, digits, `.`, `-`, `_` and `/` (no query or fragment)",
                    ));
                }
            }
        }
        Ok(Self {
            uri: Arc::from(s),
            path_at: "spiffe://".len() + td.len(),
        })
    }

    /// The trust domain, e.g. `mesh.local`.
    #[must_use]
    pub fn trust_domain(&self) -> &str {
        &self.uri["spiffe://".len()..self.path_at]
    }

    /// The path, e.g. `/ns/shop/sa/orders` (empty for a trust domain's own ID).
    #[must_use]
    pub fn path(&self) -> &str {
        &self.uri[self.path_at..]
    }

    /// The whole ID as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = InvalidIdentity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// A workload's identity as a certificate carries it: a SPIFFE ID in a URI SAN, or a DNS name in
/// a DNS SAN.
///
/// Parsing: a string starting with `spiffe://` is a SPIFFE ID, anything else a DNS name.
///
/// ```
/// use meshwork::tls::Identity;
///
/// let a: Identity = "spiffe://mesh.local/orders".parse()?;
/// let b: Identity = "users.internal".parse()?;
/// assert!(matches!(a, Identity::Spiffe(_)));
/// assert_eq!(b.to_string(), "users.internal");
/// # Ok::<(), meshwork::tls::InvalidIdentity>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A SPIFFE ID (URI SAN).
    Spiffe(SpiffeId),
    /// A DNS name (DNS SAN), lowercase.
    Dns(Arc<str>),
}

impl Identity {
    /// Parses an identity: a SPIFFE ID when it starts with `spiffe://`, otherwise a DNS name.
    ///
    /// # Errors
    ///
    /// [`InvalidIdentity`] when `s` is neither a valid SPIFFE ID (see [`SpiffeId::parse`]) nor a
    /// DNS name.
    pub fn parse(s: &str) -> Result<Self, InvalidIdentity> {
        if s.starts_with("spiffe://") {
            return SpiffeId::parse(s).map(Identity::Spiffe);
        }
        Self::dns(s)
    }

    /// A DNS-name identity.
    ///
    /// # Errors
    ///
    /// [`InvalidIdentity`] when `s` is empty or not a valid DNS name.
    pub fn dns(s: &str) -> Result<Self, InvalidIdentity> {
        match rustls_pki_types::DnsName::try_from(s) {
            Ok(_) if !s.is_empty() => Ok(Identity::Dns(Arc::from(s.to_ascii_lowercase()))),
            _ => Err(InvalidIdentity::new(
                s,
                "is neither a SPIFFE ID nor a DNS name",
            )),
        }
    }

    /// The identity as a string: the SPIFFE ID, or the DNS name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Identity::Spiffe(id) => id.as_str(),
            Identity::Dns(name) => name,
        }
    }
}

impl std::str::FromStr for Identity {
    type Err = InvalidIdentity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verified identity of the other side of a TLS connection: what its certificate, checked
/// against the trust bundle, says.
///
/// A TLS listener ([`TlsServer`](super::TlsServer)) puts the client's in each request's extensions
/// (through [`InsertPeerIdentity`](super::InsertPeerIdentity)); the HTTP client puts the server's
/// in each response's extensions.
///
/// ```
/// # fn handler(req: http::Request<()>) {
/// use meshwork::tls::PeerIdentity;
///
/// match req.extensions().get::<PeerIdentity>().and_then(|p| p.identity()) {
///     Some(id) => println!("called by {id}"),
///     None => println!("anonymous caller"),
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity(Arc<PeerInner>);

#[derive(Debug, PartialEq, Eq)]
struct PeerInner {
    identity: Option<Identity>,
    serial: String,
}

impl PeerIdentity {
    /// A peer identity (for tests and custom transports).
    pub fn new(identity: Option<Identity>, serial: impl Into<String>) -> Self {
        Self(Arc::new(PeerInner {
            identity,
            serial: serial.into(),
        }))
    }

    /// The SPIFFE ID of the certificate's first `spiffe://` URI SAN if it has one, otherwise its
    /// first DNS SAN; `None` when it has neither.
    #[must_use]
    pub fn identity(&self) -> Option<&Identity> {
        self.0.identity.as_ref()
    }

    /// The certificate's serial number, lowercase hex (no separators): tells one certificate of
    /// a workload from the next after a rotation.
    #[must_use]
    pub fn serial(&self) -> &str {
        &self.0.serial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spiffe_ids() {
        for good in [
            "spiffe://mesh.local",
            "spiffe://mesh.local/a",
            "spiffe://a-b_c.d/ns/x/sa/Y.z",
        ] {
            let id = SpiffeId::parse(good).unwrap();
            assert_eq!(id.to_string(), good);
        }
        for bad in [
            "http://mesh.local/a",
            "spiffe://",
            "spiffe:///a",
            "spiffe://MESH/a",
            "spiffe://mesh:8080/a",
            "spiffe://user@mesh/a",
            "spiffe://mesh/a/",
            "spiffe://mesh//a",
            "spiffe://mesh/./a",
            "spiffe://mesh/../a",
            "spiffe://mesh/a?x=1",
            "spiffe://mesh/a#f",
            "spiffe://mesh/a b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        let id = SpiffeId::parse("spiffe://td/p/q").unwrap();
        assert_eq!((id.trust_domain(), id.path()), ("td", "/p/q"));
    }

    #[test]
    fn identities() {
        assert!(matches!(
            Identity::parse("spiffe://td/x").unwrap(),
            Identity::Spiffe(_)
        ));
        assert_eq!(
            Identity::parse("Users.Local").unwrap().as_str(),
            "users.local"
        );
        assert!(Identity::parse("").is_err());
        assert!(Identity::parse("not a name").is_err());
        assert!(Identity::parse("spiffe://bad/").is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(id) = SpiffeId::parse(&s) {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert!(id.as_str().starts_with("spiffe://"));
                let again = SpiffeId::parse(id.as_str()).unwrap();
                prop_assert_eq!(again, id);
            }
            let _ = Identity::parse(&s);
        }

        #[test]
        fn spiffe_like_input(td in "[a-z0-9.:@A-Z_-]{0,12}", path in "(/[a-zA-Z0-9._?#%-]{0,6}){0,4}") {
            let s = format!("spiffe://{td}{path}");
            if let Ok(id) = SpiffeId::parse(&s) {
                prop_assert_eq!(id.trust_domain(), td.as_str());
                prop_assert_eq!(id.path(), path.as_str());
            }
        }
    }
}
