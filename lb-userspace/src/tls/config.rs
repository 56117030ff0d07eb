//! A listener's rustls `ServerConfig`: protocol versions, cipher suites (Octavia `tls_ciphers`,
//! OpenSSL or IANA names), ALPN, session tickets, and the SNI resolver.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{self, cipher_suite as cs};
use rustls::crypto::CryptoProvider;
use rustls::{ServerConfig, SupportedCipherSuite};

use super::resolver::SniResolver;
use super::verify;
use crate::certs::{CertError, validate::certified_key};
use lb_common::model::{ListenerTls, TlsVersion};

/// Why a listener's TLS settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsConfigError {
    #[error("tls_ciphers: unknown cipher {0:?}")]
    UnknownCipher(String),
    #[error("tls_ciphers: none of the listed ciphers is supported (supported: {0})")]
    NoSupportedCipher(String),
    #[error("tls_versions: no cipher suite left for {0:?}")]
    NoCipherForVersion(TlsVersion),
    #[error("tls_versions must not be empty")]
    NoVersion,
    #[error("alpn_protocols: {0:?} is not a valid protocol name")]
    BadAlpn(String),
    #[error("certificate {source_ref}: {error}")]
    Certificate { source_ref: String, error: CertError },
    #[error("{0}")]
    Trust(CertError),
    #[error("server name {0:?} is not a valid DNS name")]
    BadServerName(String),
}

/// (OpenSSL name, IANA name, suite) for every suite lb implements.
const SUITES: &[(&str, &str, SupportedCipherSuite)] = &[
    ("TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", cs::TLS13_AES_128_GCM_SHA256),
    ("TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", cs::TLS13_AES_256_GCM_SHA384),
    ("TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256", cs::TLS13_CHACHA20_POLY1305_SHA256),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
];

/// OpenSSL cipher names that are valid but that lb does not implement (CBC, static RSA, DHE).
/// Octavia's default `tls_ciphers` lists some of them; they are skipped, not refused.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA", "AES128-GCM-SHA256", "AES256-GCM-SHA384",
    "AES128-SHA256", "AES256-SHA256", "AES128-SHA", "AES256-SHA", "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305", "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
];

/// The OpenSSL name lb uses for `suite` in logs and metrics.
pub fn suite_name(suite: SupportedCipherSuite) -> &'static str {
    SUITES.iter().find(|(_, _, s)| *s == suite).map(|(n, _, _)| *n).unwrap_or("unknown")
}

/// Resolves Octavia `tls_ciphers` into suites. A list naming no TLS 1.3 suite leaves all TLS 1.3
/// suites allowed (as HAProxy's `ciphers` does), and likewise for TLS 1.2.
pub fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, TlsConfigError> {
    if names.is_empty() {
        return Ok(SUITES.iter().map(|(_, _, s)| *s).collect());
    }
    let mut chosen = Vec::new();
    let mut named_any = false;
    for name in names.iter().flat_map(|n| n.split(':')).map(str::trim).filter(|n| !n.is_empty()) {
        named_any = true;
        if let Some((_, _, s)) = SUITES.iter().find(|(o, i, _)| *o == name || *i == name) {
            if !chosen.contains(s) {
                chosen.push(*s);
            }
        } else if !KNOWN_UNSUPPORTED.contains(&name) {
            return Err(TlsConfigError::UnknownCipher(name.to_string()));
        }
    }
    if named_any && chosen.is_empty() {
        let supported: Vec<&str> = SUITES.iter().map(|(n, _, _)| *n).collect();
        return Err(TlsConfigError::NoSupportedCipher(supported.join(":")));
    }
    for tls13 in [true, false] {
        if !chosen.iter().any(|s| is_tls13(*s) == tls13) {
            chosen.extend(SUITES.iter().map(|(_, _, s)| *s).filter(|s| is_tls13(*s) == tls13));
        }
    }
    Ok(chosen)
}

fn is_tls13(s: SupportedCipherSuite) -> bool {
    matches!(s, SupportedCipherSuite::Tls13(_))
}

/// Protocol versions and a crypto provider restricted to the allowed suites, checked against
/// each other (shared by listeners and pools).
pub fn versions_and_provider(
    tls_versions: &[TlsVersion],
    tls_ciphers: &[String],
) -> Result<(Vec<&'static rustls::SupportedProtocolVersion>, Arc<CryptoProvider>), TlsConfigError> {
    let mut versions: Vec<TlsVersion> =
        if tls_versions.is_empty() { vec![TlsVersion::Tls12, TlsVersion::Tls13] } else { tls_versions.to_vec() };
    versions.sort();
    versions.dedup();
    let suites: Vec<SupportedCipherSuite> = cipher_suites(tls_ciphers)?;
    for v in &versions {
        if !suites.iter().any(|s| is_tls13(*s) == (*v == TlsVersion::Tls13)) {
            return Err(TlsConfigError::NoCipherForVersion(*v));
        }
    }
    let protocol_versions: Vec<&'static rustls::SupportedProtocolVersion> = versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    if protocol_versions.is_empty() {
        return Err(TlsConfigError::NoVersion);
    }
    Ok((protocol_versions, Arc::new(CryptoProvider { cipher_suites: suites, ..aws_lc_rs::default_provider() })))
}

/// Builds the `ServerConfig` a listener serves with. `extract_secrets` allows kTLS installation.
pub fn server_config(tls: &ListenerTls, extract_secrets: bool) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let (protocol_versions, provider) = versions_and_provider(&tls.tls_versions, &tls.tls_ciphers)?;
    let load = |b: &lb_common::model::CertificateBundle| {
        certified_key(b).map_err(|error| TlsConfigError::Certificate { source_ref: b.source.clone(), error })
    };
    let default = load(&tls.default_certificate)?;
    let sni = tls
        .sni_certificates
        .iter()
        .map(|b| Ok((load(b)?, b.dns_names.clone())))
        .collect::<Result<Vec<_>, TlsConfigError>>()?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&protocol_versions)
        .expect("suites were checked against the versions");
    let builder = match &tls.client_auth {
        Some(auth) => builder.with_client_cert_verifier(verify::client_verifier(auth, provider).map_err(TlsConfigError::Trust)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(default, sni)));
    config.alpn_protocols = alpn(&tls.alpn_protocols)?;
    config.enable_secret_extraction = extract_secrets;
    config.ticketer = aws_lc_rs::Ticketer::new().expect("ticketer from the system RNG");
    Ok(Arc::new(config))
}

pub(crate) fn alpn(protocols: &[String]) -> Result<Vec<Vec<u8>>, TlsConfigError> {
    if protocols.is_empty() {
        return Ok(vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
    protocols
        .iter()
        .map(|p| {
            if p.is_empty() || p.len() > 255 {
                Err(TlsConfigError::BadAlpn(p.clone()))
            } else {
                Ok(p.as_bytes().to_vec())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octavia_default_cipher_string_is_accepted() {
        let s = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
                 ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
                 ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256";
        let suites = cipher_suites(&[s.to_string()]).unwrap();
        // six TLS 1.2 suites named, all three TLS 1.3 suites kept
        assert_eq!(suites.len(), 9);
        assert_eq!(suite_name(suites[0]), "ECDHE-ECDSA-AES256-GCM-SHA384");
    }

    #[test]
    fn naming_a_tls13_suite_restricts_tls13_only() {
        let suites = cipher_suites(&["TLS_AES_256_GCM_SHA384".into()]).unwrap();
        assert_eq!(suites.iter().filter(|s| is_tls13(**s)).count(), 1);
        assert_eq!(suites.iter().filter(|s| !is_tls13(**s)).count(), 6);
    }

    #[test]
    fn unknown_and_unusable_ciphers_are_refused_by_name() {
        assert_eq!(
            cipher_suites(&["BOGUS-CIPHER".into()]),
            Err(TlsConfigError::UnknownCipher("BOGUS-CIPHER".into()))
        );
        assert!(matches!(cipher_suites(&["AES128-SHA".into()]), Err(TlsConfigError::NoSupportedCipher(_))));
    }
}
