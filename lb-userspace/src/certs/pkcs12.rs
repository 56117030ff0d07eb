//! PKCS#12 archives through `p12-keystore`: modern (PBES2 + AES, HMAC-SHA256) and legacy
//! (`openssl pkcs12 -legacy`: RC2-40 / 3DES, HMAC-SHA1) encodings.

use p12_keystore::{KeyStore, KeyStoreEntry, Pkcs12ImportPolicy};
use zeroize::Zeroizing;

use super::CertError;
use super::validate::{Parsed, ParsedKey};
use lb_common::model::KeyFormat;

/// Extracts the key and its certificate chain (leaf first) from a PKCS#12 archive.
pub fn parse(der: &[u8], passphrase: &str) -> Result<Parsed, CertError> {
    let store = KeyStore::from_pkcs12(der, passphrase, Pkcs12ImportPolicy::Relaxed).map_err(map_error)?;
    let mut extra_certs = Vec::new();
    let mut keychain = None;
    for (_, entry) in store.entries() {
        match entry {
            KeyStoreEntry::PrivateKeyChain(chain) if keychain.is_none() && !chain.certs().is_empty() => {
                keychain = Some(chain)
            }
            KeyStoreEntry::Certificate(c) => extra_certs.push(c.as_der().to_vec()),
            _ => {}
        }
    }
    let chain = keychain.ok_or(CertError::Pkcs12NoKey)?;
    let mut certs: Vec<Vec<u8>> = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
    // CA certificates without a local key id (added with -certfile) are returned separately
    // by the keystore; keep the ones it did not already link into the chain.
    for c in extra_certs {
        if !certs.contains(&c) {
            certs.push(c);
        }
    }
    Ok(Parsed {
        chain: certs,
        key: ParsedKey { der: Zeroizing::new(chain.key().as_der().to_vec()), format: KeyFormat::Pkcs8 },
    })
}

fn map_error(e: p12_keystore::error::Error) -> CertError {
    use p12_keystore::error::Error as E;
    match e {
        E::MacError(_) => CertError::Pkcs12WrongPassphrase,
        // A wrong passphrase on an archive without MAC surfaces as a padding failure.
        E::UnpadError => CertError::Pkcs12WrongPassphrase,
        E::DerError(d) => CertError::Pkcs12Malformed(format!("DER decoding failed ({d}); the data is truncated or not PKCS12")),
        other => CertError::Pkcs12Malformed(other.to_string()),
    }
}
