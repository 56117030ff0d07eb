//! Certificate input with fixtures made by `openssl` at test time: PKCS#12 in both encodings,
//! passphrases, and every refusal with its precise error.

use lb_tests::*;
use lb_userspace::certs::{self, CertError};

#[test]
fn pkcs12_modern_and_legacy_with_and_without_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = self_signed(dir.path(), "p12.example", "2");
    for legacy in [false, true] {
        for pass in ["", "s3cret"] {
            let der = pkcs12(dir.path(), &c, &k, pass, legacy);
            let b = certs::from_pkcs12("t", &der, Some(pass)).unwrap_or_else(|e| panic!("legacy={legacy} pass={pass:?}: {e}"));
            assert_eq!(b.dns_names, vec!["p12.example"]);
        }
    }
}

#[test]
fn pkcs12_refusals_are_precise() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = self_signed(dir.path(), "p12.example", "2");
    let der = pkcs12(dir.path(), &c, &k, "right", false);
    assert_eq!(certs::from_pkcs12("t", &der, Some("wrong")), Err(CertError::Pkcs12WrongPassphrase));
    assert!(matches!(certs::from_pkcs12("t", b"garbage bytes", None), Err(CertError::Pkcs12Malformed(_))));
    assert!(matches!(certs::from_pkcs12("t", &der[..der.len() / 2], Some("right")), Err(CertError::Pkcs12Malformed(_))));
}

#[test]
fn mismatched_key_and_expired_certificate_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, _) = self_signed(dir.path(), "one.example", "2");
    let (_, k2) = self_signed(dir.path(), "two.example", "2");
    let err = certs::from_pem("t", &std::fs::read(&c1).unwrap(), &std::fs::read(&k2).unwrap(), None, None).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("one.example"));

    let mut params = rcgen::CertificateParams::new(vec!["old.example".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let err = certs::from_pem("t", cert.pem().as_bytes(), key.serialize_pem().as_bytes(), None, None).unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err}");
}

#[test]
fn encrypted_pkcs8_needs_the_right_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = self_signed(dir.path(), "enc.example", "2");
    let enc = dir.path().join("enc.key");
    sh(std::process::Command::new("openssl").args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:pw"])
        .arg("-in").arg(&k).arg("-out").arg(&enc));
    let (cert, key) = (std::fs::read(&c).unwrap(), std::fs::read(&enc).unwrap());
    assert_eq!(certs::from_pem("t", &cert, &key, None, None).unwrap_err(), CertError::PassphraseRequired);
    assert_eq!(certs::from_pem("t", &cert, &key, None, Some("nope")).unwrap_err(), CertError::WrongKeyPassphrase);
    assert!(certs::from_pem("t", &cert, &key, None, Some("pw")).is_ok());
}

#[test]
fn chains_are_kept_in_order_from_pem_and_pkcs12_and_misordered_chains_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = chain(dir.path(), "chain.example");
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let b = certs::from_pem("t", &read(&pki.leaf), &read(&pki.leaf_key), Some(&read(&pki.intermediate)), None).unwrap();
    assert_eq!(b.chain.len(), 2, "leaf + intermediate");

    // PKCS#12 carrying the intermediate (openssl pkcs12 -export -certfile), both encodings.
    for legacy in [false, true] {
        let out = dir.path().join(format!("chain-{legacy}.p12"));
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["pkcs12", "-export", "-passout", "pass:pw"]).arg("-in").arg(&pki.leaf).arg("-inkey").arg(&pki.leaf_key)
            .arg("-certfile").arg(&pki.intermediate).arg("-out").arg(&out);
        if legacy {
            cmd.arg("-legacy");
        }
        sh(&mut cmd);
        let b = certs::from_pkcs12("t", &read(&out), Some("pw")).unwrap();
        assert_eq!(b.chain.len(), 2, "legacy={legacy}");
        assert_eq!(b.dns_names, vec!["chain.example"]);
    }

    // Intermediate first, leaf second: refused with the positions named.
    let mut swapped = read(&pki.intermediate);
    swapped.extend(read(&pki.leaf));
    let err = certs::from_pem("t", &swapped, &read(&pki.leaf_key), None, None).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. } | CertError::ChainOrder { .. }), "{err}");
    let mut both = read(&pki.leaf);
    both.extend(read(&pki.root));
    let err = certs::from_pem("t", &both, &read(&pki.leaf_key), None, None).unwrap_err();
    assert!(matches!(err, CertError::ChainOrder { position: 2, issued: 1, .. }), "{err}");
}

#[test]
fn not_yet_valid_and_truncated_inputs_are_refused() {
    let mut params = rcgen::CertificateParams::new(vec!["future.example".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2090, 1, 1);
    params.not_after = rcgen::date_time_ymd(2091, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let err = certs::from_pem("t", cert.pem().as_bytes(), key.serialize_pem().as_bytes(), None, None).unwrap_err();
    assert!(matches!(err, CertError::NotYetValid { .. }), "{err}");

    let pem = cert.pem();
    let truncated = &pem.as_bytes()[..pem.len() / 2];
    let err = certs::from_pem("t", truncated, key.serialize_pem().as_bytes(), None, None).unwrap_err();
    assert!(matches!(err, CertError::NoCertificate { field: "certificate" } | CertError::MalformedCertificate { .. }), "{err}");
    let key_pem = key.serialize_pem();
    let err = certs::from_pem("t", pem.as_bytes(), &key_pem.as_bytes()[..key_pem.len() / 2], None, None).unwrap_err();
    assert!(matches!(err, CertError::NoPrivateKey | CertError::UnsupportedKey(_)), "{err}");
}
