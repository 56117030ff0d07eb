//! A test PKI made with rcgen at test time: a CA that issues client and server certificates (by
//! IP address or DNS name), and revocation lists. Files are PEM in the given directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lb_common::model::CertificateBundle;
use lb_userspace::certs;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};

pub struct Ca {
    dir: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate (PEM file).
    pub cert_path: PathBuf,
}

/// A certificate and key issued by a [`Ca`].
#[derive(Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// DER of the certificate.
    pub der: Vec<u8>,
}

impl Issued {
    /// The certificate and key as lbd's validated bundle.
    pub fn bundle(&self) -> Arc<CertificateBundle> {
        let (c, k) = (std::fs::read(&self.cert).unwrap(), std::fs::read(&self.key).unwrap());
        Arc::new(certs::from_pem(&self.cert.display().to_string(), &c, &k, None, None).unwrap())
    }
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::OrganizationName, "lb tests");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let cert_path = dir.join(format!("{}.ca.crt", name.replace(' ', "_")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        Ca { dir: dir.to_path_buf(), cert, key, cert_path }
    }

    /// DER of the CA certificate.
    pub fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// Issues a certificate for `cn` with serial `serial` and subject alternative `names` (IP
    /// addresses or DNS names), usable for client and server authentication.
    pub fn issue(&self, cn: &str, serial: u64, names: &[&str]) -> Issued {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::OrganizationName, "lb tests");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from(serial));
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            })
            .collect();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        // One validity date before 2050 and one after: X-SSL-Client-Not-Before/After use the
        // two ASN.1 time forms (UTCTime, GeneralizedTime).
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2060, 6, 30);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let file = cn.replace(' ', "_");
        let (cert_path, key_path) = (self.dir.join(format!("{file}.crt")), self.dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued { cert: cert_path, key: key_path, der: cert.der().to_vec() }
    }

    /// A CRL of this CA revoking `serials`, as a PEM file.
    pub fn crl(&self, file: &str, serials: &[u64]) -> PathBuf {
        let now = rcgen::date_time_ymd(2020, 1, 1);
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.cert, &self.key).unwrap();
        let path = self.dir.join(file);
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }
}

/// DER certificates of a PEM file (for building desired state in tests).
pub fn ders(path: &Path) -> Vec<Vec<u8>> {
    certs::pem::certificates(&std::fs::read(path).unwrap(), "test").unwrap()
}

/// DER CRLs of a PEM file.
pub fn crl_ders(path: &Path) -> Vec<Vec<u8>> {
    certs::pem::crls(&std::fs::read(path).unwrap(), "test").unwrap()
}
