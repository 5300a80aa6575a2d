//! The client side: what a client trusts, which certificate it presents, and whom it expects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::{FailureReason, HandshakeError, Side, TlsConfigError};
use super::identity::{Identity, PeerIdentity};
use super::reload::{CertStore, Resolver};
use super::verify::IdentityVerifier;
use super::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_RELOAD_INTERVAL, cert};

/// Builds a [`ClientTls`].
///
/// | setting | default | |
/// |---|---|---|
/// | `ca_file` | none: required | the trust bundle (PEM), read once at `build` |
/// | `client_cert` | none | certificate chain and key (PEM) for mutual TLS, re-read when they change |
/// | `server_identity` | none: required | a DNS name, or a SPIFFE ID `spiffe://trust-domain/path` |
/// | `reload_interval` | 5 s | how often the client certificate files are looked at |
/// | `handshake_timeout` | 10 s | a handshake that takes longer fails (`timeout`) |
///
/// ```no_run
/// use meshwork::tls::ClientTls;
///
/// # async fn run() -> Result<(), meshwork::BoxError> {
/// let tls = ClientTls::builder()
///     .ca_file("/etc/mesh/ca.pem")
///     .client_cert("/etc/mesh/orders.pem", "/etc/mesh/orders.key")
///     .server_identity("spiffe://mesh.local/users")
///     .build()?;
/// # let _ = tls; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientTlsBuilder {
    ca: Option<PathBuf>,
    cert: Option<(PathBuf, PathBuf)>,
    server_identity: Option<String>,
    reload_interval: Duration,
    handshake_timeout: Duration,
}

impl ClientTlsBuilder {
    /// The trust bundle: CA certificates in a PEM file.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// The client certificate chain and its private key (PEM files), for mutual TLS.
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some((cert.into(), key.into()));
        self
    }

    /// The identity the server must prove: a DNS name (checked against its DNS SANs, and sent as
    /// SNI) or a SPIFFE ID (checked against its URI SAN).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn server_identity(mut self, identity: impl Into<String>) -> Self {
        self.server_identity = Some(identity.into());
        self
    }

    /// How often the client certificate files are looked at for a change (non-zero).
    #[must_use]
    pub fn reload_interval(mut self, every: Duration) -> Self {
        self.reload_interval = every;
        self
    }

    /// The longest a handshake may take (non-zero).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Reads the files and builds the client configuration. With a client certificate, it must
    /// run within a tokio runtime (a task watches the files).
    ///
    /// # Errors
    ///
    /// A [`TlsConfigError`] naming the first bad field: `tls.reload_interval` or
    /// `tls.handshake_timeout` (zero), `tls.server_identity` (unset, or neither a SPIFFE ID nor a DNS
    /// name), `tls.ca` (unset or unreadable), `tls.cert` / `tls.key` (unreadable or not matching, or
    /// a client certificate outside a tokio runtime), or `tls` when rustls rejects the configuration.
    pub fn build(self) -> Result<ClientTls, TlsConfigError> {
        super::describe_metrics();
        TlsConfigError::non_zero("tls.reload_interval", self.reload_interval)?;
        TlsConfigError::non_zero("tls.handshake_timeout", self.handshake_timeout)?;
        let identity = self
            .server_identity
            .as_deref()
            .ok_or_else(|| {
                TlsConfigError::new(
                    "tls.server_identity",
                    "must be set: the DNS name or SPIFFE ID the server must prove",
                )
            })
            .and_then(|s| {
                Identity::parse(s)
                    .map_err(|e| TlsConfigError::new("tls.server_identity", e.to_string()))
            })?;
        let ca = self.ca.as_ref().ok_or_else(|| {
            TlsConfigError::new(
                "tls.ca",
                "must be set: the CA bundle the server is checked against",
            )
        })?;
        let roots = cert::load_roots(ca).map_err(|e| TlsConfigError::new("tls.ca", e))?;
        let provider = super::provider();
        let certs = match self.cert {
            Some((cert, key)) => {
                let store = CertStore::open(cert, key, provider.clone()).map_err(|(f, e)| {
                    TlsConfigError::new(if f == "key" { "tls.key" } else { "tls.cert" }, e)
                })?;
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(TlsConfigError::new(
                        "tls.cert",
                        "a client certificate needs a tokio runtime (its files are watched)",
                    ));
                }
                store.watch(self.reload_interval);
                Some(store)
            }
            None => None,
        };
        let verifier = Arc::new(IdentityVerifier::new(
            Arc::new(roots),
            identity.clone(),
            provider.clone(),
        ));
        let config = |alpn: &[u8]| -> Result<Arc<ClientConfig>, TlsConfigError> {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsConfigError::new("tls", e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone());
            let mut config = match &certs {
                Some(store) => builder.with_client_cert_resolver(Arc::new(Resolver(store.clone()))),
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(config))
        };
        let server_name = match &identity {
            Identity::Dns(name) => Some(
                ServerName::try_from(name.to_string())
                    .map_err(|e| TlsConfigError::new("tls.server_identity", e.to_string()))?,
            ),
            Identity::Spiffe(_) => None,
        };
        Ok(ClientTls(Arc::new(Inner {
            h1: config(b"http/1.1")?,
            h2: config(b"h2")?,
            identity,
            server_name,
            certs,
            handshake_timeout: self.handshake_timeout,
        })))
    }
}

/// A client's TLS settings for one upstream: the trust bundle, an optional client certificate
/// (mutual TLS, rotated from its files), and the identity every server of the upstream must
/// prove. Cheap to clone.
///
/// Give it to [`HttpClientBuilder::tls`](crate::client::HttpClientBuilder::tls) (or
/// [`ConnectConfig::tls_endpoint`](crate::http::ConnectConfig::tls_endpoint)): every connection
/// of that client is then TLS, whatever the request URI's scheme, with ALPN `http/1.1` or `h2`
/// after the configured HTTP version.
#[derive(Clone)]
pub struct ClientTls(Arc<Inner>);

struct Inner {
    h1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
    identity: Identity,
    server_name: Option<ServerName<'static>>,
    certs: Option<Arc<CertStore>>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_identity", &self.0.identity)
            .field("client_cert", &self.0.certs)
            .finish()
    }
}

impl ClientTls {
    /// Every setting at its default (see [`ClientTlsBuilder`]).
    #[must_use]
    pub fn builder() -> ClientTlsBuilder {
        ClientTlsBuilder {
            ca: None,
            cert: None,
            server_identity: None,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// The identity servers must prove.
    #[must_use]
    pub fn server_identity(&self) -> &Identity {
        &self.0.identity
    }

    /// The serial number of the client certificate in use, if there is one.
    #[must_use]
    pub fn client_cert_serial(&self) -> Option<String> {
        self.0.certs.as_ref().map(|c| c.serial())
    }

    /// Opens TLS over `tcp` to `addr`, offering `h2` when `h2`, else `http/1.1`. Returns the
    /// stream and the server's verified identity. A failure is counted and logged.
    ///
    /// # Errors
    ///
    /// A [`HandshakeError`] with its [`FailureReason`] when the handshake fails, the server's
    /// certificate or identity is rejected, or the handshake timeout passes.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        h2: bool,
    ) -> Result<(TlsStream<TcpStream>, PeerIdentity), HandshakeError> {
        let config = if h2 { &self.0.h2 } else { &self.0.h1 };
        // A SPIFFE identity is checked by the verifier; no SNI is sent for an IP address.
        let name = self
            .0
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let fail = |reason, e: std::io::Error| {
            HandshakeError::new(Side::Client, reason, Some(addr), e).record()
        };
        let stream = match tokio::time::timeout(
            self.0.handshake_timeout,
            TlsConnector::from(config.clone()).connect(name, tcp),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(fail(FailureReason::of_io(&e), e)),
            Err(_) => {
                return Err(fail(
                    FailureReason::Timeout,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"),
                ));
            }
        };
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| cert::CertInfo::parse(c).ok())
            .map(|i| i.peer())
            .unwrap_or_else(|| PeerIdentity::new(None, ""));
        Ok((stream, peer))
    }
}
