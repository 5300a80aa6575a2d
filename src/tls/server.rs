//! The serving side: TLS over accepted TCP connections, with client authentication, and the
//! verified client identity handed to the service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower_service::Service;

use super::cert::{self, CertInfo};
use super::error::{FailureReason, HandshakeError, Side, TlsConfigError};
use super::identity::PeerIdentity;
use super::reload::{CertStore, Resolver};
use super::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_RELOAD_INTERVAL};

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// What a plaintext HTTP client gets back before the connection closes.
const PLAINTEXT_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\
connection: close\r\ncontent-length: 39\r\n\r\nthis port requires TLS (mutual TLS)\r\n\r\n";

/// Builds a [`TlsServer`].
///
/// | setting | default | |
/// |---|---|---|
/// | `cert` | none: required | the server's certificate chain and key (PEM), re-read when they change |
/// | `client_ca_file` | none | the trust bundle for client certificates; set, every client must present one that chains to it |
/// | `allow_anonymous` | off | with `client_ca_file`: also accept clients without a certificate (their [`PeerIdentity`] is absent) |
/// | `reload_interval` | 5 s | how often the certificate files are looked at |
/// | `handshake_timeout` | 10 s | a client that takes longer is cut off (`timeout`) |
///
/// ALPN offers `h2` and `http/1.1`; [`TlsConnection::is_h2`] tells which was chosen.
#[derive(Clone, Debug)]
pub struct TlsServerBuilder {
    cert: Option<(PathBuf, PathBuf)>,
    client_ca: Option<PathBuf>,
    allow_anonymous: bool,
    reload_interval: Duration,
    handshake_timeout: Duration,
}

impl TlsServerBuilder {
    /// The server certificate chain and its key (PEM files).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some((cert.into(), key.into()));
        self
    }

    /// The CA bundle client certificates must chain to (mutual TLS).
    #[must_use = "a builder method returns the changed builder; the original is consumed"]
    pub fn client_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(path.into());
        self
    }

    /// Also accept clients that present no certificate.
    #[must_use]
    pub fn allow_anonymous(mut self, yes: bool) -> Self {
        self.allow_anonymous = yes;
        self
    }

    /// How often the certificate files are looked at for a change (non-zero).
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

    /// Reads the files and builds the server. Must run within a tokio runtime (a task watches
    /// the certificate files).
    ///
    /// # Errors
    ///
    /// A [`TlsConfigError`] naming the first bad field: `tls.reload_interval` or
    /// `tls.handshake_timeout` (zero), `tls.cert` / `tls.key` (unset, unreadable or not matching, or
    /// no tokio runtime), `tls.client_ca` (unreadable) or `tls` when rustls rejects the configuration.
    pub fn build(self) -> Result<TlsServer, TlsConfigError> {
        super::describe_metrics();
        TlsConfigError::non_zero("tls.reload_interval", self.reload_interval)?;
        TlsConfigError::non_zero("tls.handshake_timeout", self.handshake_timeout)?;
        let (cert, key) = self.cert.ok_or_else(|| {
            TlsConfigError::new("tls.cert", "must be set: the server's certificate and key")
        })?;
        let provider = super::provider();
        let store = CertStore::open(cert, key, provider.clone()).map_err(|(f, e)| {
            TlsConfigError::new(if f == "key" { "tls.key" } else { "tls.cert" }, e)
        })?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TlsConfigError::new(
                "tls.cert",
                "the TLS server needs a tokio runtime (its files are watched)",
            ));
        }
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError::new("tls", e.to_string()))?;
        let builder = match &self.client_ca {
            Some(path) => {
                let roots =
                    cert::load_roots(path).map_err(|e| TlsConfigError::new("tls.client_ca", e))?;
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                if self.allow_anonymous {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsConfigError::new("tls.client_ca", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(Resolver(store.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        store.watch(self.reload_interval);
        Ok(TlsServer(Arc::new(Inner {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certs: store,
            handshake_timeout: self.handshake_timeout,
        })))
    }
}

/// Turns accepted TCP connections into TLS connections, with client authentication when a client
/// CA is set, and tells who the client is. Cheap to clone.
///
/// Every refused handshake is counted in `meshwork_tls_handshake_failures_total{side="server",
/// reason}` and logged at `warn` with its reason (`unknown_ca`, `expired`, `no_client_cert`,
/// `plaintext`, `timeout`, `other`): none reaches the service. A plaintext HTTP client gets a
/// `400` saying the port requires TLS.
///
/// ```no_run
/// use hyper_util::rt::{TokioExecutor, TokioIo};
/// use meshwork::tls::{InsertPeerIdentity, PeerIdentity, TlsServer};
///
/// # async fn run() -> Result<(), meshwork::BoxError> {
/// let tls = TlsServer::builder()
///     .cert("/etc/mesh/users.pem", "/etc/mesh/users.key")
///     .client_ca_file("/etc/mesh/ca.pem")
///     .build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// loop {
///     let (tcp, addr) = listener.accept().await?;
///     let tls = tls.clone();
///     tokio::spawn(async move {
///         let Ok(conn) = tls.accept(tcp, addr).await else { return }; // counted and logged
///         let (stream, peer) = conn.into_parts();
///         // A tower service sees the peer in its request extensions.
///         let app = tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
///             let who = req.extensions().get::<PeerIdentity>().and_then(|p| p.identity()).cloned();
///             Ok::<_, std::convert::Infallible>(http::Response::new(format!("hello {who:?}")))
///         });
///         let svc = InsertPeerIdentity::new(app, peer);
///         let svc = hyper::service::service_fn(move |req| tower::ServiceExt::oneshot(svc.clone(), req));
///         let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
///             .serve_connection(TokioIo::new(stream), svc)
///             .await;
///     });
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct TlsServer(Arc<Inner>);

struct Inner {
    acceptor: TlsAcceptor,
    certs: Arc<CertStore>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("cert", &self.0.certs)
            .finish()
    }
}

impl TlsServer {
    /// Every setting at its default (see [`TlsServerBuilder`]).
    #[must_use]
    pub fn builder() -> TlsServerBuilder {
        TlsServerBuilder {
            cert: None,
            client_ca: None,
            allow_anonymous: false,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// The serial number of the server certificate in use (new handshakes present it).
    #[must_use]
    pub fn cert_serial(&self) -> String {
        self.0.certs.serial()
    }

    /// Runs the handshake on an accepted connection from `peer`, within the handshake timeout. A
    /// failure is counted and logged before it is returned.
    ///
    /// # Errors
    ///
    /// A [`HandshakeError`] with its [`FailureReason`] when the handshake fails, the client's
    /// certificate or identity is rejected, or the handshake timeout passes.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<TlsConnection, HandshakeError> {
        let fail = |reason, e: std::io::Error| {
            HandshakeError::new(Side::Server, reason, Some(peer), e).record()
        };
        match tokio::time::timeout(self.0.handshake_timeout, self.handshake(tcp)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err((reason, e))) => Err(fail(reason, e)),
            Err(_) => Err(fail(
                FailureReason::Timeout,
                std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"),
            )),
        }
    }

    async fn handshake(
        &self,
        mut tcp: TcpStream,
    ) -> Result<TlsConnection, (FailureReason, std::io::Error)> {
        let mut first = [0u8; 1];
        let n = tcp
            .peek(&mut first)
            .await
            .map_err(|e| (FailureReason::Other, e))?;
        if n == 0 {
            return Err((
                FailureReason::Other,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before the handshake",
                ),
            ));
        }
        if first[0] != TLS_HANDSHAKE {
            if first[0].is_ascii_uppercase() {
                // Looks like an HTTP request line: say why, then close.
                let _ = tcp.write_all(PLAINTEXT_ANSWER).await;
                let _ = tcp.shutdown().await;
            }
            return Err((
                FailureReason::Plaintext,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "plaintext on a TLS port: the client did not start a TLS handshake",
                ),
            ));
        }
        let stream = self
            .0
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| (FailureReason::of_io(&e), e))?;
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| CertInfo::parse(c).ok())
            .map(|i| i.peer());
        Ok(TlsConnection { stream, peer })
    }
}

/// A TLS connection accepted by a [`TlsServer`], with the client's verified identity.
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: Option<PeerIdentity>,
}

impl TlsConnection {
    /// The client's verified identity; `None` when it presented no certificate (possible only
    /// without a client CA, or with `allow_anonymous`).
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.peer.as_ref()
    }

    /// Whether ALPN chose HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.stream.get_ref().1.alpn_protocol() == Some(b"h2")
    }

    /// The stream (an `AsyncRead + AsyncWrite`) and the peer identity.
    pub fn into_parts(self) -> (TlsStream<TcpStream>, Option<PeerIdentity>) {
        (self.stream, self.peer)
    }
}

/// Puts the connection's [`PeerIdentity`] into every request's extensions (nothing when the
/// client is anonymous), so the service behind a [`TlsServer`] can see who calls.
#[derive(Clone, Debug)]
pub struct InsertPeerIdentity<S> {
    inner: S,
    peer: Option<PeerIdentity>,
}

impl<S> InsertPeerIdentity<S> {
    /// Wraps `inner` for one connection whose client is `peer`.
    pub fn new(inner: S, peer: Option<PeerIdentity>) -> Self {
        Self { inner, peer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<http::Request<B>> for InsertPeerIdentity<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        // Whatever was there did not come from this connection's handshake.
        req.extensions_mut().remove::<PeerIdentity>();
        if let Some(peer) = &self.peer {
            req.extensions_mut().insert(peer.clone());
        }
        self.inner.call(req)
    }
}
