//! TLS-side hot spots: SNI certificate lookup among many names, PKCS#12 parsing (certificate
//! upload and rotation), and userspace TLS records between two of lbd's sessions over loopback.
use std::process::Command;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use lb_userspace::certs::{self, validate::certified_key};
use lb_userspace::tls::resolver::SniResolver;
use lb_userspace::tls::session;
use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// A listener's session and a member session (both lbd's, [`session`]) over loopback TCP, one
/// TLS 1.3 connection: 1 MiB each way per iteration, the data path's record handling (256 KiB
/// writes cut into 16 KiB records, reads ahead while the peer streams), rustls' AES-128-GCM
/// and the loopback system calls.
fn records(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // A listener's configuration as lbd builds it, and the test client's (TLS 1.3 AES-128-GCM).
    let dir = std::env::temp_dir().join(format!("lb-bench-records-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let settings = lb_tests::fixture::tls_settings(lb_tests::fixture::bundle(&dir, "s.example"), vec![]);
    let server_config = lb_userspace::tls::config::server_config(&settings, false).unwrap();
    let client_config = lb_tests::client::config(&[&rustls::version::TLS13], Some(vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256]), &[]);
    let _ = std::fs::remove_dir_all(&dir);
    let (mut server, mut member) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let member = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let conn = UnbufferedClientConnection::new(client_config, "s.example".try_into().unwrap()).unwrap();
            session::handshake(tcp, conn, false).await.unwrap().0
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let server = session::handshake(tcp, UnbufferedServerConnection::new(server_config).unwrap(), false).await.unwrap().0;
        (server, member.await.unwrap())
    });
    let data = vec![0xABu8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    c.bench_function("records_1mib_session_download", |b| {
        b.iter(|| rt.block_on(async { tokio::join!(async { server.write_all(&data).await.unwrap(); server.flush().await.unwrap() }, member.read_exact(&mut buf)).1.unwrap() }))
    });
    c.bench_function("records_1mib_session_upload", |b| {
        b.iter(|| rt.block_on(async { tokio::join!(async { member.write_all(&data).await.unwrap(); member.flush().await.unwrap() }, server.read_exact(&mut buf)).1.unwrap() }))
    });
}

criterion_group!(benches, sni, pkcs12, records);
criterion_main!(benches);
