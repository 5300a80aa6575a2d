//! What meshwork reads from a certificate: serial, validity, and the identity in its SANs; and
//! the PEM files certificates, keys and trust bundles come in.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::identity::{Identity, PeerIdentity, SpiffeId};

/// The parts of a certificate meshwork uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertInfo {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Validity window, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// The first `spiffe://` URI SAN that is a valid SPIFFE ID.
    pub spiffe: Option<SpiffeId>,
    /// The DNS SANs that are valid DNS names.
    pub dns: Vec<Identity>,
}

impl CertInfo {
    /// Parses a DER certificate. Never panics, whatever the bytes.
    pub(crate) fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let serial = cert.raw_serial().iter().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
        let validity = cert.validity();
        let mut spiffe = None;
        let mut dns = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) if spiffe.is_none() && uri.starts_with("spiffe://") => {
                        spiffe = SpiffeId::parse(uri).ok();
                    }
                    GeneralName::DNSName(name) => {
                        if let Ok(id) = Identity::dns(name) {
                            dns.push(id);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Self {
            serial,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            spiffe,
            dns,
        })
    }

    /// The identity the certificate proves: its SPIFFE ID, else its first DNS name.
    pub(crate) fn identity(&self) -> Option<Identity> {
        self.spiffe
            .clone()
            .map(Identity::Spiffe)
            .or_else(|| self.dns.first().cloned())
    }

    /// Whether the certificate is valid for `identity`.
    pub(crate) fn proves(&self, identity: &Identity) -> bool {
        match identity {
            Identity::Spiffe(id) => self.spiffe.as_ref() == Some(id),
            Identity::Dns(_) => self.dns.contains(identity),
        }
    }

    /// The peer identity for this certificate.
    pub(crate) fn peer(&self) -> PeerIdentity {
        PeerIdentity::new(self.identity(), self.serial.clone())
    }

    /// `Err` with why, when `now` is outside the validity window.
    pub(crate) fn check_validity(&self, now: SystemTime) -> Result<(), &'static str> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if now > self.not_after {
            Err("expired")
        } else if now < self.not_before {
            Err("not_yet_valid")
        } else {
            Ok(())
        }
    }
}

/// Why a PEM file was refused: a short reason (a metric label) and the details.
#[derive(Debug)]
pub(crate) struct PemError {
    pub reason: &'static str,
    pub detail: String,
}

impl PemError {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Every certificate in a PEM document (at least one).
pub(crate) fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::new("unparsable", format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PemError::new("unparsable", "no CERTIFICATE block"));
    }
    for c in &certs {
        CertInfo::parse(c).map_err(|e| PemError::new("unparsable", e))?;
    }
    Ok(certs)
}

/// The private key of a PEM document (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| PemError::new("unparsable", format!("no private key: {e}")))
}

/// A trust bundle: every certificate of a PEM file.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = parse_certs(&pem).map_err(|e| format!("{}: {}", path.display(), e.detail))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_der_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = CertInfo::parse(&bytes);
        }

        #[test]
        fn arbitrary_pem_never_panics(text in "(-----BEGIN (CERTIFICATE|PRIVATE KEY)-----\n)?[A-Za-z0-9+/=\n]{0,200}(-----END (CERTIFICATE|PRIVATE KEY)-----\n)?") {
            let _ = parse_certs(text.as_bytes());
            let _ = parse_key(text.as_bytes());
        }
    }

    #[test]
    fn empty_files_are_refused() {
        assert_eq!(parse_certs(b"").unwrap_err().reason, "unparsable");
        assert_eq!(parse_key(b"junk").unwrap_err().reason, "unparsable");
    }
}
