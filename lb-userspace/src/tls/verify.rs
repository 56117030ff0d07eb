//! Verifying TLS peers: clients of a listener with client authentication (Octavia
//! `client_ca_tls_container_ref`, `client_crl_container_ref`) and members of a pool with TLS
//! (`ca_tls_container_ref`, `crl_container_ref`), and naming why a peer was refused.
//!
//! Revocation is checked for the peer's own certificate (as HAProxy's `crl-file` does); when CRLs
//! are configured, a certificate whose issuer has no CRL among them is refused
//! (`unknown_revocation_status`) rather than trusted.

use std::io;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};

use crate::certs::CertError;
use lb_common::model::{ClientAuth, ClientAuthMode};

/// Where the trust anchors and CRLs of a verifier came from, for error messages.
#[derive(Clone, Copy)]
pub struct Fields {
    pub ca: &'static str,
    pub crl: &'static str,
}

pub const LISTENER_FIELDS: Fields = Fields { ca: "client_ca_tls_container_ref", crl: "client_crl_container_ref" };
pub const POOL_FIELDS: Fields = Fields { ca: "ca_tls_container_ref", crl: "crl_container_ref" };

fn roots(cas: &[Vec<u8>], fields: Fields) -> Result<Arc<RootCertStore>, CertError> {
    let mut store = RootCertStore::empty();
    for der in cas {
        store
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| CertError::TrustStore { field: fields.ca, detail: format!("CA certificate is not a usable trust anchor: {e}") })?;
    }
    if store.is_empty() {
        return Err(CertError::NoCertificate { field: fields.ca });
    }
    Ok(Arc::new(store))
}

fn crls(list: &[Vec<u8>]) -> Vec<CertificateRevocationListDer<'static>> {
    list.iter().map(|d| CertificateRevocationListDer::from(d.clone())).collect()
}

fn builder_error(e: rustls::server::VerifierBuilderError, fields: Fields) -> CertError {
    use rustls::server::VerifierBuilderError as E;
    match e {
        E::NoRootAnchors => CertError::NoCertificate { field: fields.ca },
        E::InvalidCrl(e) => CertError::MalformedCrl { field: fields.crl, detail: format!("{e:?}") },
        other => CertError::TrustStore { field: fields.ca, detail: other.to_string() },
    }
}

/// The verifier a listener with client authentication hands to rustls.
pub fn client_verifier(auth: &ClientAuth, provider: Arc<CryptoProvider>) -> Result<Arc<dyn ClientCertVerifier>, CertError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots(&auth.ca_certificates, LISTENER_FIELDS)?, provider)
        .with_crls(crls(&auth.crls))
        .only_check_end_entity_revocation();
    if auth.mode == ClientAuthMode::Optional {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|e| builder_error(e, LISTENER_FIELDS))
}

/// The verifier for a pool's members: the configured CA, or none at all (see [`Unverified`]).
pub fn member_verifier(
    cas: Option<&[Vec<u8>]>,
    crl_list: &[Vec<u8>],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, CertError> {
    match cas {
        Some(cas) => WebPkiServerVerifier::builder_with_provider(roots(cas, POOL_FIELDS)?, provider)
            .with_crls(crls(crl_list))
            .only_check_end_entity_revocation()
            .build()
            .map(|v| v as Arc<dyn ServerCertVerifier>)
            .map_err(|e| builder_error(e, POOL_FIELDS)),
        None => Ok(Arc::new(Unverified(provider))),
    }
}

/// Accepts any member certificate (a pool with `tls_enabled` and no `ca_tls_container_ref`, as
/// Octavia does). The handshake signature is still checked, so the member holds the key of the
/// certificate it sent; what is lost is knowing who that is. Counted and logged by the caller.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A short, stable name for why a handshake failed, for metrics labels.
pub fn failure_reason(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::TimedOut {
        return "timeout";
    }
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return "io";
    };
    match err {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(c) => certificate_reason(c),
        rustls::Error::AlertReceived(_) => "alert_received",
        rustls::Error::PeerIncompatible(_) => "incompatible",
        _ => "protocol",
    }
}

fn certificate_reason(c: &CertificateError) -> &'static str {
    match c {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "not_yet_valid",
        CertificateError::Revoked => "revoked",
        CertificateError::UnknownIssuer => "unknown_issuer",
        CertificateError::UnknownRevocationStatus => "unknown_revocation_status",
        CertificateError::BadSignature => "bad_signature",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => "name_mismatch",
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => "invalid_purpose",
        CertificateError::BadEncoding => "bad_encoding",
        _ => "invalid_certificate",
    }
}
