//! Certificate orders are fulfilled by a CA plugin. The built-in one is a local CA (rcgen) whose
//! key is sealed in the store like any secret; an ACME plugin can implement the same trait.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde::{Deserialize, Serialize};

use crate::store::seal::{Kek, Sealed};
use crate::store::{Kind, StoreError, Txn, TxnExt};

/// What a certificate order asks for.
pub enum CertRequest {
    /// A new key pair and a certificate for `subject_dn` (`CN=...,O=...`).
    Subject { subject_dn: String },
    /// A certificate for the key in this PEM certificate signing request.
    Csr { pem: String },
}

/// What the plugin issued (PEM). `private_key` is `None` for CSR orders.
pub struct Issued {
    pub certificate: String,
    pub private_key: Option<String>,
    pub intermediates: String,
}

pub trait CaPlugin {
    fn issue(&self, tx: &mut dyn Txn, kek: &Kek, request: &CertRequest) -> Result<Issued, String>;
}

/// The local CA: created on first use, its key sealed under the KEK.
pub struct LocalCa;

#[derive(Serialize, Deserialize)]
struct StoredCa {
    certificate: String,
    key: Sealed,
}

const CA_ID: &str = "local-ca";

impl LocalCa {
    fn load_or_create(tx: &mut dyn Txn, kek: &Kek) -> Result<(rcgen::Certificate, KeyPair, String), String> {
        let stored: Option<StoredCa> = tx.get(Kind::Meta, CA_ID).map_err(|e: StoreError| e.to_string())?;
        let (pem, key) = match stored {
            Some(s) => {
                let key_pem = kek.open(CA_ID, &s.key).map_err(|e| e.to_string())?;
                let key = KeyPair::from_pem(std::str::from_utf8(&key_pem).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                (s.certificate, key)
            }
            None => {
                let key = KeyPair::generate().map_err(|e| e.to_string())?;
                let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
                params.distinguished_name.push(DnType::CommonName, "lbd local CA");
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                params.not_after = rcgen::date_time_ymd(2046, 1, 1);
                let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
                let stored = StoredCa { certificate: cert.pem(), key: kek.seal(CA_ID, key.serialize_pem().as_bytes()) };
                tx.put(Kind::Meta, CA_ID, &stored).map_err(|e| e.to_string())?;
                (stored.certificate, key)
            }
        };
        let issuer = CertificateParams::from_ca_cert_pem(&pem).map_err(|e| e.to_string())?.self_signed(&key).map_err(|e| e.to_string())?;
        Ok((issuer, key, pem))
    }
}

/// Parses `CN=a,O=b` into (type, value) pairs.
fn parse_dn(dn: &str) -> Result<Vec<(DnType, String)>, String> {
    dn.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("subject_dn: {part:?} is not KEY=value"))?;
            let t = match k.trim().to_ascii_uppercase().as_str() {
                "CN" => DnType::CommonName,
                "O" => DnType::OrganizationName,
                "OU" => DnType::OrganizationalUnitName,
                "C" => DnType::CountryName,
                "ST" => DnType::StateOrProvinceName,
                "L" => DnType::LocalityName,
                other => return Err(format!("subject_dn: attribute {other:?} is not supported (CN, O, OU, C, ST, L)")),
            };
            Ok((t, v.trim().to_string()))
        })
        .collect()
}

impl CaPlugin for LocalCa {
    fn issue(&self, tx: &mut dyn Txn, kek: &Kek, request: &CertRequest) -> Result<Issued, String> {
        let (issuer, issuer_key, ca_pem) = Self::load_or_create(tx, kek)?;
        let validity = |p: &mut CertificateParams| {
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now - time::Duration::minutes(5);
            p.not_after = now + time::Duration::days(365);
        };
        match request {
            CertRequest::Subject { subject_dn } => {
                let dn = parse_dn(subject_dn)?;
                let cn = dn.iter().find(|(t, _)| *t == DnType::CommonName).map(|(_, v)| v.clone()).ok_or("subject_dn: a CN is required")?;
                let names = if cn.contains('.') && !cn.contains(' ') { vec![cn.clone()] } else { vec![] };
                let mut params = CertificateParams::new(names).map_err(|e| e.to_string())?;
                for (t, v) in dn {
                    params.distinguished_name.push(t, v);
                }
                validity(&mut params);
                let key = KeyPair::generate().map_err(|e| e.to_string())?;
                let cert = params.signed_by(&key, &issuer, &issuer_key).map_err(|e| e.to_string())?;
                Ok(Issued { certificate: cert.pem(), private_key: Some(key.serialize_pem()), intermediates: ca_pem })
            }
            CertRequest::Csr { pem } => {
                let mut csr = rcgen::CertificateSigningRequestParams::from_pem(pem).map_err(|e| format!("request_data: not a valid CSR ({e})"))?;
                validity(&mut csr.params);
                let cert = csr.signed_by(&issuer, &issuer_key).map_err(|e| e.to_string())?;
                Ok(Issued { certificate: cert.pem(), private_key: None, intermediates: ca_pem })
            }
        }
    }
}
