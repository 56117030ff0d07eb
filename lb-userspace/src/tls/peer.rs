//! What a verified client certificate tells the members: the values of Octavia's `X-SSL-*`
//! headers, in the formats HAProxy (Octavia's amphora) produces:
//! DNs in OpenSSL's one-line form (`/C=US/O=Example/CN=client`), the SHA-1 of the DER
//! certificate in upper-case hex, validity times as ASN.1 `YYMMDDhhmmssZ` (`YYYYMMDDhhmmssZ` from
//! 2050), and quoted where HAProxy quotes them.

use x509_parser::prelude::*;

/// Facts about the certificate a client presented, taken once per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    pub subject_dn: String,
    pub subject_cn: String,
    pub issuer_dn: String,
    pub sha1: String,
    pub not_before: String,
    pub not_after: String,
}

impl ClientCert {
    /// One field of the subject (`CN`, `O`, `OU`, ...), the first if it repeats.
    pub fn subject_field(&self, key: &str) -> Option<&str> {
        self.subject_dn.split('/').filter_map(|part| part.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Reads the leaf certificate `der`; `None` if it cannot be parsed (rustls already accepted it).
    pub fn parse(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        Some(ClientCert {
            subject_dn: oneline(cert.subject()),
            subject_cn: cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or_default().to_string(),
            issuer_dn: oneline(cert.issuer()),
            sha1: hex::encode_upper(digest.as_ref()),
            not_before: asn1_time(&cert.validity().not_before),
            not_after: asn1_time(&cert.validity().not_after),
        })
    }
}

/// OpenSSL's `X509_NAME_oneline` form: `/SN=value` per attribute, in certificate order.
fn oneline(name: &X509Name<'_>) -> String {
    let registry = oid_registry();
    let mut out = String::new();
    for rdn in name.iter_rdn() {
        for attr in rdn.iter() {
            let oid = attr.attr_type();
            let short = oid2abbrev(oid, registry).map(str::to_string).unwrap_or_else(|_| oid.to_id_string());
            let value = attr.as_str().map(str::to_string).unwrap_or_else(|_| hex::encode(attr.attr_value().data));
            out.push('/');
            out.push_str(&short);
            out.push('=');
            out.push_str(&value);
        }
    }
    out
}

fn asn1_time(t: &ASN1Time) -> String {
    let dt = t.to_datetime();
    let year = dt.year();
    let rest = format!("{:02}{:02}{:02}{:02}{:02}Z", u8::from(dt.month()), dt.day(), dt.hour(), dt.minute(), dt.second());
    if (1950..2050).contains(&year) { format!("{:02}{rest}", year % 100) } else { format!("{year:04}{rest}") }
}

/// The `(name, value)` pairs to set on a request for the headers `on` says, given what the client
/// presented. With no certificate only `X-SSL-Client-Verify` (0) and `X-SSL-Client-Has-Cert` (0)
/// are set; the others are left out.
pub fn headers(on: &lb_common::model::SslHeaders, cert: Option<&ClientCert>) -> Vec<(&'static str, String)> {
    let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\\\""));
    let values: [Option<String>; 8] = [
        // Only verified certificates complete a handshake, so the OpenSSL verify result is X509_V_OK.
        Some("0".into()),
        Some(if cert.is_some() { "1" } else { "0" }.into()),
        cert.map(|c| quoted(&c.subject_dn)),
        cert.map(|c| quoted(&c.subject_cn)),
        cert.map(|c| quoted(&c.issuer_dn)),
        cert.map(|c| quoted(&c.sha1)),
        cert.map(|c| quoted(&c.not_before)),
        cert.map(|c| quoted(&c.not_after)),
    ];
    on.named().into_iter().zip(values).filter_map(|((name, enabled), v)| enabled.then_some(v).flatten().map(|v| (name, v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::model::SslHeaders;

    #[test]
    fn without_a_certificate_only_verify_and_has_cert_are_set() {
        let all = SslHeaders::all();
        assert_eq!(headers(&all, None), vec![("X-SSL-Client-Verify", "0".to_string()), ("X-SSL-Client-Has-Cert", "0".to_string())]);
        let only_cn = SslHeaders { client_cn: true, ..SslHeaders::default() };
        let cert = ClientCert {
            subject_dn: "/O=x/CN=a \"quoted\" name".into(),
            subject_cn: "a \"quoted\" name".into(),
            issuer_dn: "/CN=ca".into(),
            sha1: "00".into(),
            not_before: "200101000000Z".into(),
            not_after: "20600630000000Z".into(),
        };
        assert_eq!(headers(&only_cn, Some(&cert)), vec![("X-SSL-Client-CN", r#""a \"quoted\" name""#.to_string())]);
    }

    #[test]
    fn asn1_times_use_utctime_before_2050_and_generalizedtime_after() {
        let t = |y, m, d| ASN1Time::new(::time::Date::from_calendar_date(y, m, d).unwrap().midnight().assume_utc());
        assert_eq!(asn1_time(&t(2020, ::time::Month::January, 1)), "200101000000Z");
        assert_eq!(asn1_time(&t(2060, ::time::Month::June, 30)), "20600630000000Z");
        assert_eq!(asn1_time(&t(1975, ::time::Month::March, 2)), "750302000000Z");
    }
}
