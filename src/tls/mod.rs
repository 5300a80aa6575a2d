//! TLS, mutual TLS and workload identity (feature `tls`): rustls with the `ring` provider.
//!
//! - **Client side.** A [`ClientTls`] holds what one upstream's connections need: the trust
//!   bundle (a CA file), an optional client certificate and key (mutual TLS), and the identity
//!   every server of the upstream must prove, a DNS name or a SPIFFE ID
//!   (`spiffe://trust-domain/path` in a URI SAN). [`HttpClientBuilder::tls`] makes every
//!   connection of an [`HttpClient`] TLS, with ALPN `h2` or `http/1.1` after the configured HTTP
//!   version; the server's [`PeerIdentity`] is in each response's extensions.
//! - **Server side.** A [`TlsServer`] turns accepted TCP connections into TLS connections with
//!   client authentication, and says who the client is ([`PeerIdentity`]: the SPIFFE ID, else the
//!   DNS SAN of its certificate); [`InsertPeerIdentity`] puts it in each request's extensions.
//! - **Rotation.** Certificates and keys are re-read from their files when they change (polled
//!   every `reload_interval`, 5 s by default). New handshakes use the new pair; connections already
//!   open keep theirs. A bad new pair (unparsable, key that does not match, expired or not yet
//!   valid) is refused with an `error` log line and `meshwork_tls_reload_errors_total{reason}`; the
//!   last good pair stays. Trust bundles are read once, at `build`.
//! - **Bad input.** Failed handshakes are counted by side and reason in
//!   `meshwork_tls_handshake_failures_total{side, reason}` (see [`FailureReason`]) and logged at
//!   `warn`: none reaches the application.
//!
//! Without the `tls` feature, or without [`ClientTls`] on the client, an `https` URI is refused
//! with [`TlsNotConfigured`](crate::http::TlsNotConfigured), never sent in cleartext.
//!
//! ## A Rust service calling another over mutual TLS
//!
//! ```no_run
//! use meshwork::client::{HttpClient, HttpClientBuilder};
//! use meshwork::discover::{Endpoint, Static};
//! use meshwork::tls::{ClientTls, PeerIdentity};
//!
//! # async fn run() -> Result<(), meshwork::BoxError> {
//! // Trust the mesh CA, present our own certificate, and accept only `users`.
//! let tls = ClientTls::builder()
//!     .ca_file("/etc/mesh/ca.pem")
//!     .client_cert("/etc/mesh/orders.pem", "/etc/mesh/orders.key")
//!     .server_identity("spiffe://mesh.local/users")
//!     .build()?;
//! let users: HttpClient = HttpClientBuilder::new()
//!     .tls(tls)
//!     .build(Static::new([Endpoint::new("127.0.0.1:8443".parse()?)]))?;
//! let res = users.get("https://users/profile/42".parse()?).await?;
//! let server = res.extensions().get::<PeerIdentity>();
//! println!("{} from {:?}", res.status(), server.and_then(|p| p.identity()));
//! # Ok(())
//! # }
//! ```
//!
//! ## Metrics
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `meshwork_tls_handshake_failures_total` | counter | `side` (`server`, `client`), `reason` | handshakes that failed |
//! | `meshwork_tls_reloads_total` | counter | | new certificate pairs taken into use |
//! | `meshwork_tls_reload_errors_total` | counter | `reason` (`unreadable`, `unparsable`, `key_mismatch`, `expired`, `not_yet_valid`) | new pairs refused |
//!
//! [`HttpClientBuilder::tls`]: crate::client::HttpClientBuilder::tls
//! [`HttpClient`]: crate::client::HttpClient

mod cert;
mod client;
pub(crate) mod connect;
mod error;
mod identity;
mod reload;
mod server;
mod verify;

use std::sync::Arc;
use std::time::Duration;

pub use self::client::{ClientTls, ClientTlsBuilder};
pub use self::error::{
    FailureReason, HandshakeError, IdentityMismatch, InvalidIdentity, Side, TlsConfigError,
};
pub use self::identity::{Identity, PeerIdentity, SpiffeId};
pub use self::server::{InsertPeerIdentity, TlsConnection, TlsServer, TlsServerBuilder};

/// How often certificate files are looked at, by default.
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The longest a handshake may take, by default.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto provider: rustls' `ring`.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// HELP texts of the TLS metrics (see [`crate::telemetry::METRICS`]), given to the current recorder.
fn describe_metrics() {
    #[cfg(feature = "metrics")]
    crate::telemetry::describe_prefix("meshwork_tls_");
}
