//! Certificate input: turn what operators upload (PKCS#12, PEM certificates and keys) into a
//! validated [`CertificateBundle`], or a precise [`CertError`] naming what is wrong.
//!
//! - [`pkcs12`]: PKCS#12 archives, OpenSSL 3 (PBES2/AES) and legacy (RC2/3DES) encodings.
//! - [`pem`]: PEM certificates and PKCS#8 / PKCS#1 / SEC1 keys, encrypted PKCS#8 with a passphrase.
//! - [`validate`]: key matches leaf, validity window, chain order, names for SNI.

mod error;
pub mod pem;
pub mod pkcs12;
pub mod validate;

pub use error::CertError;
pub use lb_common::model::CertificateBundle;

/// Parses a PKCS#12 archive and validates the result.
pub fn from_pkcs12(
    source: &str,
    der: &[u8],
    passphrase: Option<&str>,
) -> Result<CertificateBundle, CertError> {
    let parsed = pkcs12::parse(der, passphrase.unwrap_or(""))?;
    validate::bundle(source, parsed, std::time::SystemTime::now())
}

/// Parses PEM (or DER) certificate, key and optional intermediates, and validates the result.
pub fn from_pem(
    source: &str,
    certificate: &[u8],
    private_key: &[u8],
    intermediates: Option<&[u8]>,
    passphrase: Option<&str>,
) -> Result<CertificateBundle, CertError> {
    let mut chain = pem::certificates(certificate, "certificate")?;
    if let Some(extra) = intermediates {
        chain.extend(pem::certificates(extra, "intermediates")?);
    }
    let key = pem::private_key(private_key, passphrase)?;
    validate::bundle(source, validate::Parsed { chain, key }, std::time::SystemTime::now())
}
