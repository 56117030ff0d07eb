use std::fmt;

/// Why a certificate bundle was refused. The `Display` text is meant for the operator who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("PKCS12 data could not be decrypted: wrong passphrase (MAC verification failed)")]
    Pkcs12WrongPassphrase,
    #[error("PKCS12 data is not a valid PKCS12 archive: {0}")]
    Pkcs12Malformed(String),
    #[error("PKCS12 archive holds no private key matched to a certificate")]
    Pkcs12NoKey,
    #[error("{field}: no PEM or DER certificate found")]
    NoCertificate { field: &'static str },
    #[error("{field}: malformed certificate data: {detail}")]
    MalformedCertificate { field: &'static str, detail: String },
    #[error("{field}: no PEM or DER certificate revocation list found")]
    NoCrl { field: &'static str },
    #[error("{field}: malformed certificate revocation list: {detail}")]
    MalformedCrl { field: &'static str, detail: String },
    #[error("{field}: {detail}")]
    TrustStore { field: &'static str, detail: String },
    #[error("private_key: no private key found (expected PEM PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE KEY or ENCRYPTED PRIVATE KEY, or DER PKCS8)")]
    NoPrivateKey,
    #[error("private_key: the key is encrypted and no passphrase was given")]
    PassphraseRequired,
    #[error("private_key: the passphrase does not decrypt the key")]
    WrongKeyPassphrase,
    #[error("private_key: {0}")]
    UnsupportedKey(String),
    #[error("private_key does not match the certificate {leaf}")]
    KeyMismatch { leaf: Subject },
    #[error("certificate {subject} expired at {not_after}")]
    Expired { subject: Subject, not_after: String },
    #[error("certificate {subject} is not valid before {not_before}")]
    NotYetValid { subject: Subject, not_before: String },
    #[error("chain out of order: certificate {position} ({subject}) did not issue certificate {issued} (issuer {expected})")]
    ChainOrder { position: usize, subject: Subject, issued: usize, expected: Subject },
}

/// A certificate's subject DN, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(pub String);

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}
