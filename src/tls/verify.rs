//! The client's check of the server certificate: the normal webpki chain validation against the
//! trust bundle, then the expected identity, a DNS SAN or a SPIFFE ID in a URI SAN (webpki itself
//! only knows DNS names and IP addresses).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore};

use super::cert::CertInfo;
use super::error::IdentityMismatch;
use super::identity::Identity;

/// Chain validation, then the expected identity instead of the name the client dialled.
#[derive(Debug)]
pub(crate) struct IdentityVerifier {
    roots: Arc<RootCertStore>,
    expected: Identity,
    provider: Arc<CryptoProvider>,
}

impl IdentityVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        expected: Identity,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            roots,
            expected,
            provider,
        }
    }
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match &self.expected {
            Identity::Dns(name) => {
                let name = ServerName::try_from(name.as_ref())
                    .map_err(|_| Error::InvalidCertificate(CertificateError::NotValidForName))?;
                verify_server_name(&cert, &name).map_err(|_| self.mismatch(end_entity))?;
            }
            Identity::Spiffe(_) => {
                let info = CertInfo::parse(end_entity)
                    .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
                if !info.proves(&self.expected) {
                    return Err(self.mismatch(end_entity));
                }
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl IdentityVerifier {
    fn mismatch(&self, end_entity: &CertificateDer<'_>) -> Error {
        let presented = CertInfo::parse(end_entity).ok().and_then(|i| i.identity());
        Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            IdentityMismatch::new(self.expected.clone(), presented),
        ))))
    }
}
