//! PEM (and bare DER) certificates and private keys.

use pkcs8::EncryptedPrivateKeyInfo;
use rustls_pki_types::pem::{PemObject, SectionKind};
use zeroize::Zeroizing;

use super::CertError;
use super::validate::ParsedKey;
use lb_common::model::KeyFormat;

/// All certificates in `data` (PEM blocks, or a single DER certificate), in order.
pub fn certificates(data: &[u8], field: &'static str) -> Result<Vec<Vec<u8>>, CertError> {
    der_blocks(data, SectionKind::Certificate, CertError::NoCertificate { field }, |detail| CertError::MalformedCertificate { field, detail })
}

/// All certificate revocation lists in `data` (PEM `X509 CRL` blocks, or a single DER CRL).
pub fn crls(data: &[u8], field: &'static str) -> Result<Vec<Vec<u8>>, CertError> {
    der_blocks(data, SectionKind::Crl, CertError::NoCrl { field }, |detail| CertError::MalformedCrl { field, detail })
}

/// The DER of every PEM block of `kind` in `data`, or `data` itself when it is a single DER
/// structure (Barbican `application/pkix-*` payloads are often DER).
fn der_blocks(data: &[u8], kind: SectionKind, none: CertError, malformed: impl Fn(String) -> CertError) -> Result<Vec<Vec<u8>>, CertError> {
    if !looks_like_pem(data) {
        return match data.first() {
            Some(0x30) => Ok(vec![data.to_vec()]),
            _ => Err(none),
        };
    }
    let mut out = Vec::new();
    for item in sections(data) {
        match item {
            Ok((k, der)) if k == kind => out.push(der),
            Ok(_) => {}
            Err(e) => return Err(malformed(e.to_string())),
        }
    }
    if out.is_empty() {
        return Err(none);
    }
    Ok(out)
}

/// The first private key in `data`, decrypting an `ENCRYPTED PRIVATE KEY` with `passphrase`.
pub fn private_key(data: &[u8], passphrase: Option<&str>) -> Result<ParsedKey, CertError> {
    if !looks_like_pem(data) {
        return match data.first() {
            Some(0x30) => Ok(ParsedKey { der: Zeroizing::new(data.to_vec()), format: KeyFormat::Pkcs8 }),
            _ => Err(CertError::NoPrivateKey),
        };
    }
    if contains(data, b"Proc-Type: 4,ENCRYPTED") {
        return Err(CertError::UnsupportedKey(
            "legacy OpenSSL-encrypted PEM keys are not supported; convert with `openssl pkcs8 -topk8`".into(),
        ));
    }
    if let Some(der) = encrypted_block(data)? {
        return decrypt_pkcs8(&der, passphrase);
    }
    for item in sections(data) {
        let (kind, der) = item.map_err(|e| CertError::UnsupportedKey(format!("malformed PEM: {e}")))?;
        let format = match kind {
            SectionKind::PrivateKey => KeyFormat::Pkcs8,
            SectionKind::RsaPrivateKey => KeyFormat::Pkcs1,
            SectionKind::EcPrivateKey => KeyFormat::Sec1,
            _ => continue,
        };
        return Ok(ParsedKey { der: Zeroizing::new(der), format });
    }
    Err(CertError::NoPrivateKey)
}

fn sections(data: &[u8]) -> impl Iterator<Item = Result<(SectionKind, Vec<u8>), rustls_pki_types::pem::Error>> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(data)
}

fn decrypt_pkcs8(der: &[u8], passphrase: Option<&str>) -> Result<ParsedKey, CertError> {
    let passphrase = passphrase.ok_or(CertError::PassphraseRequired)?;
    let info = EncryptedPrivateKeyInfo::try_from(der)
        .map_err(|e| CertError::UnsupportedKey(format!("malformed ENCRYPTED PRIVATE KEY: {e}")))?;
    let doc = info.decrypt(passphrase).map_err(|_| CertError::WrongKeyPassphrase)?;
    Ok(ParsedKey { der: Zeroizing::new(doc.as_bytes().to_vec()), format: KeyFormat::Pkcs8 })
}

/// The DER inside an `ENCRYPTED PRIVATE KEY` PEM block, if there is one.
fn encrypted_block(data: &[u8]) -> Result<Option<Vec<u8>>, CertError> {
    const BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
    let Ok(text) = std::str::from_utf8(data) else { return Ok(None) };
    let Some(start) = text.find(BEGIN) else { return Ok(None) };
    let malformed = |detail: String| CertError::UnsupportedKey(format!("malformed ENCRYPTED PRIVATE KEY: {detail}"));
    let end = text[start..].find(END).ok_or_else(|| malformed("no END line".into()))? + start + END.len();
    let (_, der) = pkcs8::der::pem::decode_vec(&text.as_bytes()[start..end]).map_err(|e| malformed(e.to_string()))?;
    Ok(Some(der))
}

fn looks_like_pem(data: &[u8]) -> bool {
    contains(data, b"-----BEGIN ")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
