//! Certificate rotation: a certificate and key pair re-read from its files when they change.
//!
//! The pair in use sits in an [`ArcSwap`]; rustls asks for it at every handshake (through
//! [`ResolvesServerCert`] and [`ResolvesClientCert`]), so a new handshake uses the newest good
//! pair while open connections keep the one they were made with. A task polls both files every
//! `reload_interval` and compares their content with the last seen; a changed pair is checked in
//! full (PEM parses, the key matches the certificate, now is inside the validity window) before
//! it replaces the old one. A bad pair is refused with an `error` log line and a count in
//! `meshwork_tls_reload_errors_total{reason}`, and the last good pair stays in use.
//!
//! Write new files by renaming them into place (write `cert.pem.tmp`, then `mv`), key first then
//! certificate: a poll that falls between two writes sees a mismatched pair, refuses it once and
//! takes the complete pair at the next poll.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{SignatureScheme, client::ResolvesClientCert};

use super::cert::{CertInfo, PemError, parse_certs, parse_key};

/// A certificate and key pair, with the paths they are read from.
pub(crate) struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<(Arc<CertifiedKey>, CertInfo)>,
    /// Hash of the last pair of file contents looked at, good or bad.
    seen: Mutex<u64>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("serial", &self.current.load().1.serial)
            .finish()
    }
}

fn hash(cert: &[u8], key: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    cert.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// Checks a pair in full.
fn load(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, CertInfo), PemError> {
    let chain = parse_certs(cert_pem)?;
    let key = parse_key(key_pem)?;
    let info = CertInfo::parse(&chain[0]).map_err(|detail| PemError {
        reason: "unparsable",
        detail,
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| PemError {
            reason: "unparsable",
            detail: format!("unusable private key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(PemError {
                reason: "key_mismatch",
                detail: format!("the key does not match the certificate: {e}"),
            });
        }
    }
    info.check_validity(SystemTime::now())
        .map_err(|reason| PemError {
            reason,
            detail: format!(
                "the certificate (serial {}) is {} (valid from {} to {}, Unix seconds)",
                info.serial,
                reason.replace('_', " "),
                info.not_before,
                info.not_after
            ),
        })?;
    Ok((Arc::new(certified), info))
}

impl CertStore {
    /// Reads and checks the pair; fails with why (the error names the file).
    pub(crate) fn open(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Self>, (&'static str, String)> {
        let cert = std::fs::read(&cert_path)
            .map_err(|e| ("cert", format!("cannot read {}: {e}", cert_path.display())))?;
        let key = std::fs::read(&key_path)
            .map_err(|e| ("key", format!("cannot read {}: {e}", key_path.display())))?;
        let pair = load(&cert, &key, &provider).map_err(|e| {
            let field = if e.detail.starts_with("no private key") {
                "key"
            } else {
                "cert"
            };
            (
                field,
                format!(
                    "{} / {}: {}",
                    cert_path.display(),
                    key_path.display(),
                    e.detail
                ),
            )
        })?;
        Ok(Arc::new(Self {
            cert_path,
            key_path,
            provider,
            current: ArcSwap::from_pointee(pair),
            seen: Mutex::new(hash(&cert, &key)),
        }))
    }

    /// The pair in use.
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        self.current.load().0.clone()
    }

    /// The serial number of the certificate in use.
    pub(crate) fn serial(&self) -> String {
        self.current.load().1.serial.clone()
    }

    /// Reads the files again; takes the pair when it changed and is good.
    pub(crate) async fn reload(&self) {
        let (cert, key) = match (
            tokio::fs::read(&self.cert_path).await,
            tokio::fs::read(&self.key_path).await,
        ) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                let h = hash(b"unreadable", e.to_string().as_bytes());
                if self.first_look(h) {
                    self.refuse("unreadable", &format!("cannot read the files: {e}"));
                }
                return;
            }
        };
        if !self.first_look(hash(&cert, &key)) {
            return;
        }
        match load(&cert, &key, &self.provider) {
            Ok(pair) => {
                let old = self.current.load().1.serial.clone();
                tracing::info!(
                    cert = %self.cert_path.display(),
                    old_serial = %old,
                    serial = %pair.1.serial,
                    identity = ?pair.1.identity().map(|i| i.to_string()),
                    "certificate reloaded; new handshakes use it"
                );
                self.current.store(Arc::new(pair));
                #[cfg(feature = "metrics")]
                metrics::counter!("meshwork_tls_reloads_total").increment(1);
            }
            Err(e) => self.refuse(e.reason, &e.detail),
        }
    }

    /// Whether these contents differ from the last looked at (and remembers them).
    fn first_look(&self, h: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == h {
            return false;
        }
        *seen = h;
        true
    }

    fn refuse(&self, reason: &'static str, detail: &str) {
        tracing::error!(
            cert = %self.cert_path.display(),
            key = %self.key_path.display(),
            reason,
            error = detail,
            serial_in_use = %self.current.load().1.serial,
            "new certificate refused; keeping the last good one"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!("meshwork_tls_reload_errors_total", "reason" => reason).increment(1);
    }

    /// Polls the files every `every` while the store is alive. Needs a tokio runtime.
    pub(crate) fn watch(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.reload().await;
            }
        });
    }
}

/// Hands rustls the pair in use, at every handshake.
#[derive(Debug)]
pub(crate) struct Resolver(pub Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
