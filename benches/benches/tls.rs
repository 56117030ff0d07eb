//! TLS-side hot spots: SNI certificate lookup among many names, PKCS#12 parsing (certificate
//! upload and rotation), and record-bounded handshake reads versus the read-ahead reads after it.
use std::process::Command;
use std::sync::Arc;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use lb_userspace::certs::{self, validate::certified_key};
use lb_userspace::tls::record::RecordReader;
use lb_userspace::tls::resolver::SniResolver;
use tokio::io::AsyncReadExt;

fn bundle(name: &str) -> lb_common::model::CertificateBundle {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
    certs::from_pem(name, cert.pem().as_bytes(), key.serialize_pem().as_bytes(), None, None).unwrap()
}

fn sni(c: &mut Criterion) {
    let default = certified_key(&bundle("default.example")).unwrap();
    let named: Vec<_> = (0..100)
        .map(|i| {
            let name = if i % 10 == 0 { format!("*.w{i}.example") } else { format!("host{i}.example") };
            (certified_key(&bundle(&name)).unwrap(), vec![name])
        })
        .collect();
    let resolver = SniResolver::new(default, named);
    c.bench_function("sni_lookup_exact_among_100", |b| b.iter(|| resolver.lookup(black_box(Some("host57.example")))));
    c.bench_function("sni_lookup_wildcard_among_100", |b| b.iter(|| resolver.lookup(black_box(Some("a.w50.example")))));
    c.bench_function("sni_lookup_unknown_falls_back", |b| b.iter(|| resolver.lookup(black_box(Some("nobody.example")))));
}

fn pkcs12(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("lb-bench-p12-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["p12.example".to_string()]).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    for (label, extra) in [("pkcs12_parse_openssl3", vec![]), ("pkcs12_parse_legacy", vec!["-legacy"])] {
        let out = dir.join(format!("{label}.p12"));
        let status = Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:secret"])
            .args(&extra)
            .arg("-in").arg(&cert_path).arg("-inkey").arg(&key_path).arg("-out").arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        let der = std::fs::read(&out).unwrap();
        c.bench_function(label, |b| b.iter(|| certs::from_pkcs12("bench", black_box(&der), Some("secret")).unwrap()));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// 1 MiB of 16 KiB records read record-bounded (as during a handshake) or uncorked (after it:
/// read ahead up to 256 KiB at a time once a read fills the caller's buffer).
fn records(c: &mut Criterion) {
    let mut stream = Vec::new();
    for _ in 0..64 {
        stream.extend_from_slice(&[23, 3, 3, 0x40, 0x00]);
        stream.extend(std::iter::repeat_n(0xAB, 16384));
    }
    let stream = Arc::new(stream);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for corked in [true, false] {
        let name = if corked { "records_1mib_record_bounded_reads" } else { "records_1mib_uncorked_read_ahead" };
        let stream = stream.clone();
        c.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut r = RecordReader::new(&stream[..]);
                    if !corked {
                        r.uncork();
                    }
                    let mut buf = vec![0u8; 65536];
                    let mut total = 0;
                    loop {
                        let n = r.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break total;
                        }
                        total += n;
                    }
                })
            })
        });
    }
}

criterion_group!(benches, sni, pkcs12, records);
criterion_main!(benches);
