//! Resolving an Octavia TLS reference into a validated certificate bundle: the href's trailing
//! UUID names either a Barbican secret holding PKCS#12, or a certificate container
//! (`certificate`, `private_key`, optional `intermediates` and `private_key_passphrase`).

use lb_common::model::CertificateBundle;
use zeroize::Zeroizing;

use crate::certs::{self, CertError};
use crate::store::barbican::{ContainerRec, SecretRec, ref_id};
use crate::store::seal::{Kek, Sealed};
use crate::store::{Kind, StoreError, Txn, TxnExt};

#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("{field}: {href:?} does not end in a Barbican secret or container UUID")]
    Malformed { field: &'static str, href: String },
    #[error("{field}: no secret or container {id} visible to this project")]
    NotFound { field: &'static str, id: String },
    #[error("{field}: secret {id} has no payload")]
    NoPayload { field: &'static str, id: String },
    #[error("{field}: container {id} is of type {kind:?}; TLS references need a certificate container")]
    WrongContainerType { field: &'static str, id: String, kind: String },
    #[error("{field}: container {id} has no {entry:?} secret")]
    MissingEntry { field: &'static str, id: String, entry: &'static str },
    #[error("{field}: certificate in {id} is not usable: {error}")]
    Certificate { field: &'static str, id: String, error: CertError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{field}: secret {id} cannot be decrypted with this lbd's key-encryption key")]
    Sealed { field: &'static str, id: String },
}

/// The object behind `href`, for whoever may see `project` (None = any project).
pub enum Target {
    Secret(SecretRec),
    Container(ContainerRec),
}

pub fn target(tx: &mut dyn Txn, field: &'static str, href: &str, project: Option<&str>) -> Result<(String, Target), RefError> {
    let id = ref_id(href).ok_or_else(|| RefError::Malformed { field, href: href.into() })?;
    let visible = |p: &str| project.is_none_or(|want| want == p);
    if let Some(s) = tx.get::<SecretRec>(Kind::Secret, &id)?.filter(|s| visible(&s.project_id)) {
        return Ok((id, Target::Secret(s)));
    }
    if let Some(c) = tx.get::<ContainerRec>(Kind::Container, &id)?.filter(|c| visible(&c.project_id)) {
        return Ok((id, Target::Container(c)));
    }
    Err(RefError::NotFound { field, id })
}

/// A secret's decrypted payload.
pub fn payload(tx: &mut dyn Txn, kek: &Kek, field: &'static str, id: &str) -> Result<Zeroizing<Vec<u8>>, RefError> {
    let sealed: Sealed = tx.get(Kind::SecretPayload, id)?.ok_or_else(|| RefError::NoPayload { field, id: id.into() })?;
    kek.open(id, &sealed).map_err(|_| RefError::Sealed { field, id: id.into() })
}

/// The payload of the secret `href` names, or of a certificate container's `certificate` entry
/// (CA bundles and CRLs are plain PEM secrets in Octavia; a container is accepted too).
fn pem_payload(tx: &mut dyn Txn, kek: &Kek, field: &'static str, href: &str, project: Option<&str>) -> Result<(String, Zeroizing<Vec<u8>>), RefError> {
    let (id, target) = target(tx, field, href, project)?;
    let secret_id = match target {
        Target::Secret(_) => id.clone(),
        Target::Container(c) => {
            let r = c.secret_refs.iter().find(|r| r.name == "certificate").ok_or(RefError::MissingEntry { field, id: id.clone(), entry: "certificate" })?;
            ref_id(&r.secret_ref).ok_or_else(|| RefError::Malformed { field, href: r.secret_ref.clone() })?
        }
    };
    Ok((id, payload(tx, kek, field, &secret_id)?))
}

/// Resolves a CA bundle reference into DER certificates.
pub fn ca_certificates(tx: &mut dyn Txn, kek: &Kek, field: &'static str, href: &str, project: Option<&str>) -> Result<Vec<Vec<u8>>, RefError> {
    let (id, data) = pem_payload(tx, kek, field, href, project)?;
    certs::pem::certificates(&data, field).map_err(|error| RefError::Certificate { field, id, error })
}

/// Resolves a CRL reference into DER revocation lists.
pub fn crls(tx: &mut dyn Txn, kek: &Kek, field: &'static str, href: &str, project: Option<&str>) -> Result<Vec<Vec<u8>>, RefError> {
    let (id, data) = pem_payload(tx, kek, field, href, project)?;
    certs::pem::crls(&data, field).map_err(|error| RefError::Certificate { field, id, error })
}

/// Resolves and validates a certificate reference.
pub fn bundle(tx: &mut dyn Txn, kek: &Kek, field: &'static str, href: &str, project: Option<&str>) -> Result<CertificateBundle, RefError> {
    let (id, target) = target(tx, field, href, project)?;
    let cert_err = |error| RefError::Certificate { field, id: id.clone(), error };
    match target {
        Target::Secret(_) => {
            let der = payload(tx, kek, field, &id)?;
            certs::from_pkcs12(href, &der, None).map_err(cert_err)
        }
        Target::Container(c) => {
            if c.kind != "certificate" {
                return Err(RefError::WrongContainerType { field, id, kind: c.kind });
            }
            let mut entry = |name: &'static str| -> Result<Option<Zeroizing<Vec<u8>>>, RefError> {
                match c.secret_refs.iter().find(|r| r.name == name) {
                    None => Ok(None),
                    Some(r) => {
                        let sid = ref_id(&r.secret_ref).ok_or_else(|| RefError::Malformed { field, href: r.secret_ref.clone() })?;
                        payload(tx, kek, field, &sid).map(Some)
                    }
                }
            };
            let cert = entry("certificate")?.ok_or(RefError::MissingEntry { field, id: id.clone(), entry: "certificate" })?;
            let key = entry("private_key")?.ok_or(RefError::MissingEntry { field, id: id.clone(), entry: "private_key" })?;
            let intermediates = entry("intermediates")?;
            let passphrase = entry("private_key_passphrase")?;
            let passphrase = passphrase.as_ref().map(|p| String::from_utf8_lossy(p).trim_end_matches(['\n', '\r']).to_string());
            certs::from_pem(href, &cert, &key, intermediates.as_deref().map(|v| v.as_slice()), passphrase.as_deref()).map_err(cert_err)
        }
    }
}
