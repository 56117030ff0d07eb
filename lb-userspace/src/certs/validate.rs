//! Checks a parsed key and chain before anything serves it: the key matches the leaf, every
//! certificate is inside its validity window, each certificate issued the one before it, and the
//! leaf's DNS names (for SNI) are extracted.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use super::CertError;
use super::error::Subject;
use lb_common::model::{CertificateBundle, KeyFormat};

/// A private key as parsed, not yet checked against anything.
pub struct ParsedKey {
    pub der: Zeroizing<Vec<u8>>,
    pub format: KeyFormat,
}

/// A chain (leaf first) and key as parsed, not yet validated.
pub struct Parsed {
    pub chain: Vec<Vec<u8>>,
    pub key: ParsedKey,
}

/// Validates `parsed` at time `now` and builds the bundle.
pub fn bundle(source: &str, parsed: Parsed, now: SystemTime) -> Result<CertificateBundle, CertError> {
    let Parsed { chain, key } = parsed;
    let certs = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| CertError::MalformedCertificate {
                field: if i == 0 { "certificate" } else { "intermediates" },
                detail: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = certs.first().ok_or(CertError::NoCertificate { field: "certificate" })?;

    let now = ASN1Time::from_timestamp(
        now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
    )
    .expect("current time is representable");
    for cert in &certs {
        let v = cert.validity();
        if now < v.not_before {
            return Err(CertError::NotYetValid { subject: subject(cert), not_before: v.not_before.to_string() });
        }
        if now > v.not_after {
            return Err(CertError::Expired { subject: subject(cert), not_after: v.not_after.to_string() });
        }
    }
    for (i, pair) in certs.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Err(CertError::ChainOrder {
                position: i + 2,
                subject: subject(&pair[1]),
                issued: i + 1,
                expected: Subject(pair[0].issuer().to_string()),
            });
        }
    }

    check_key_matches(&chain, &key, leaf)?;
    let dns_names = dns_names(leaf);
    Ok(CertificateBundle {
        source: source.to_string(),
        chain: chain.clone(),
        key: key.der.to_vec(),
        key_format: key.format,
        dns_names,
    })
}

/// Builds the rustls signing key for a validated bundle.
pub fn certified_key(bundle: &CertificateBundle) -> Result<Arc<CertifiedKey>, CertError> {
    let der = key_der(&bundle.key, bundle.key_format);
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| CertError::UnsupportedKey(format!("unsupported or malformed key: {e}")))?;
    let chain = bundle.chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

fn check_key_matches(chain: &[Vec<u8>], key: &ParsedKey, leaf: &X509Certificate<'_>) -> Result<(), CertError> {
    let der = key_der(&key.der, key.format);
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| CertError::UnsupportedKey(format!("unsupported or malformed key: {e}")))?;
    let ck = CertifiedKey::new(vec![CertificateDer::from(chain[0].clone())], signer);
    match ck.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(_) => Err(CertError::KeyMismatch { leaf: subject(leaf) }),
    }
}

fn key_der(der: &[u8], format: KeyFormat) -> PrivateKeyDer<'static> {
    let der = der.to_vec();
    match format {
        KeyFormat::Pkcs8 => PrivatePkcs8KeyDer::from(der).into(),
        KeyFormat::Pkcs1 => PrivatePkcs1KeyDer::from(der).into(),
        KeyFormat::Sec1 => PrivateSec1KeyDer::from(der).into(),
    }
}

fn subject(cert: &X509Certificate<'_>) -> Subject {
    Subject(cert.subject().to_string())
}

/// DNS names from the SAN extension, or the CN when there is no SAN; lower-case.
fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
        if !names.is_empty() {
            return names;
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            names.push(s.to_ascii_lowercase());
        }
    }
    names
}
