use std::fmt;
use std::net::SocketAddr;

use rustls::{AlertDescription, CertificateError};

use super::identity::Identity;
use crate::BoxError;

/// A string that is not a valid [`Identity`] or [`SpiffeId`](super::SpiffeId).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidIdentity {
    input: String,
    reason: &'static str,
}

impl InvalidIdentity {
    pub(crate) fn new(input: &str, reason: &'static str) -> Self {
        let mut input = input.to_owned();
        if input.len() > 100 {
            let mut cut = 100;
            while !input.is_char_boundary(cut) {
                cut -= 1;
            }
            input.truncate(cut);
            input.push('…');
        }
        Self { input, reason }
    }

    /// Why it was rejected.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid identity `{}`: {}", self.input, self.reason)
    }
}

impl std::error::Error for InvalidIdentity {}

/// A TLS setting that cannot be used: the field at fault and what is wrong (a file that cannot be
/// read or parsed, a key that does not match its certificate, an expired certificate, a missing
/// setting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfigError {
    field: &'static str,
    message: String,
}

impl TlsConfigError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    /// Rejects a zero duration for `field`.
    pub(crate) fn non_zero(field: &'static str, d: std::time::Duration) -> Result<(), Self> {
        if d.is_zero() {
            Err(Self::new(field, "must be greater than zero"))
        } else {
            Ok(())
        }
    }

    /// The setting at fault, e.g. `tls.ca`, `tls.cert`, `tls.key`, `tls.server_identity`.
    #[must_use]
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for TlsConfigError {}

/// Why a TLS handshake failed: the label of `meshwork_tls_handshake_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureReason {
    /// The peer's certificate does not chain to the trust bundle (or the peer refused ours).
    UnknownCa,
    /// A certificate is expired or not yet valid.
    Expired,
    /// The certificate is valid, but for another identity than the one expected.
    IdentityMismatch,
    /// The client presented no certificate, and one is required.
    NoClientCert,
    /// The client spoke plaintext to a TLS port.
    Plaintext,
    /// The handshake did not finish within its timeout.
    Timeout,
    /// Anything else (protocol error, connection closed mid-handshake...).
    Other,
}

impl FailureReason {
    /// The label value: `unknown_ca`, `expired`, `identity_mismatch`, `no_client_cert`,
    /// `plaintext`, `timeout`, `other`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnknownCa => "unknown_ca",
            FailureReason::Expired => "expired",
            FailureReason::IdentityMismatch => "identity_mismatch",
            FailureReason::NoClientCert => "no_client_cert",
            FailureReason::Plaintext => "plaintext",
            FailureReason::Timeout => "timeout",
            FailureReason::Other => "other",
        }
    }

    /// The reason behind a rustls error.
    pub(crate) fn of_rustls(e: &rustls::Error) -> Self {
        use rustls::Error as E;
        match e {
            E::NoCertificatesPresented => FailureReason::NoClientCert,
            E::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer
                | CertificateError::BadSignature
                | CertificateError::UnhandledCriticalExtension => FailureReason::UnknownCa,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => FailureReason::Expired,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    FailureReason::IdentityMismatch
                }
                CertificateError::Other(o) if o.0.is::<IdentityMismatch>() => {
                    FailureReason::IdentityMismatch
                }
                _ => FailureReason::Other,
            },
            E::AlertReceived(a) => match a {
                AlertDescription::UnknownCA | AlertDescription::BadCertificate => {
                    FailureReason::UnknownCa
                }
                AlertDescription::CertificateExpired => FailureReason::Expired,
                AlertDescription::CertificateRequired => FailureReason::NoClientCert,
                _ => FailureReason::Other,
            },
            _ => FailureReason::Other,
        }
    }

    /// The reason behind an I/O error from a TLS stream (rustls errors travel inside them).
    pub(crate) fn of_io(e: &std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::TimedOut {
            return FailureReason::Timeout;
        }
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map_or(FailureReason::Other, Self::of_rustls)
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which end of the connection saw a handshake fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The TLS listener ([`TlsServer`](super::TlsServer)).
    Server,
    /// The client ([`ClientTls`](super::ClientTls)).
    Client,
}

impl Side {
    /// `server` or `client`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

/// A TLS handshake that failed, with its [reason](FailureReason).
///
/// Returned by [`TlsServer::accept`](super::TlsServer::accept), and found in the error chain of a
/// failed [`HttpClient`](crate::client::HttpClient) request (with
/// [`find_cause`](crate::find_cause)).
#[derive(Debug)]
pub struct HandshakeError {
    side: Side,
    reason: FailureReason,
    peer: Option<SocketAddr>,
    source: BoxError,
}

impl HandshakeError {
    pub(crate) fn new(
        side: Side,
        reason: FailureReason,
        peer: Option<SocketAddr>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            side,
            reason,
            peer,
            source: source.into(),
        }
    }

    /// Why it failed.
    #[must_use]
    pub fn reason(&self) -> FailureReason {
        self.reason
    }

    /// Which side saw it.
    #[must_use]
    pub fn side(&self) -> Side {
        self.side
    }

    /// The other side's address, when known.
    #[must_use]
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Counts the failure and logs one line.
    pub(crate) fn record(self) -> Self {
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "meshwork_tls_handshake_failures_total",
            "side" => self.side.as_str(),
            "reason" => self.reason.as_str()
        )
        .increment(1);
        tracing::warn!(
            side = self.side.as_str(),
            reason = self.reason.as_str(),
            peer = ?self.peer,
            error = %self.source,
            "TLS handshake failed"
        );
        self
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS handshake failed ({}): {}", self.reason, self.source)
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// A server certificate that is valid, but for another identity than the one expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityMismatch {
    expected: Identity,
    presented: Option<Identity>,
}

impl IdentityMismatch {
    pub(crate) fn new(expected: Identity, presented: Option<Identity>) -> Self {
        Self {
            expected,
            presented,
        }
    }

    /// The identity the client expected.
    #[must_use]
    pub fn expected(&self) -> &Identity {
        &self.expected
    }

    /// The identity the certificate proves, if any.
    #[must_use]
    pub fn presented(&self) -> Option<&Identity> {
        self.presented.as_ref()
    }
}

impl fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.presented {
            Some(p) => write!(
                f,
                "expected server identity {}, certificate is for {p}",
                self.expected
            ),
            None => write!(
                f,
                "expected server identity {}, certificate has no usable identity",
                self.expected
            ),
        }
    }
}

impl std::error::Error for IdentityMismatch {}
