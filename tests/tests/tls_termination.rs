//! TERMINATED_HTTPS end to end: the lbd data plane in this process, a real hyper backend, and
//! real `curl` and `openssl s_client` clients.

use std::process::Command;
use std::sync::Arc;

use lb_common::model::*;
use lb_tests::fixture::*;
use lb_tests::*;
use lb_userspace::daemon::{Daemon, KtlsMode};

fn curl(port: u16, host: &str, extra: &[&str]) -> String {
    let out = sh(Command::new("curl")
        .args(["-sS", "-k", "--max-time", "20", "--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{host}:{port}/hello?x=1")));
    String::from_utf8(out.stdout).unwrap()
}

/// A data plane serving one TERMINATED_HTTPS listener on a free port; checks it applied.
async fn start(mode: KtlsMode, backends: &[std::net::SocketAddr], tls: ListenerTls, pool: PoolProtocol) -> (Arc<Daemon>, u16) {
    serve(Daemon::start(mode), backends, tls, pool).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2_clients_reach_the_backend_with_forwarded_headers() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("one").await;
    let tls = tls_settings(bundle(dir.path(), "a.example"), vec![]);
    let (daemon, port) = start(KtlsMode::Auto, &[backend], tls, PoolProtocol::Http).await;

    let h1 = blocking(move || curl(port, "a.example", &["--http1.1"])).await;
    assert!(h1.contains("backend=one") && h1.contains("path=/hello?x=1"), "{h1}");
    assert!(h1.contains("x-forwarded-for: 127.0.0.1"), "{h1}");
    assert!(h1.contains(&format!("x-forwarded-port: {port}")), "{h1}");
    assert!(h1.contains("x-forwarded-proto: https"), "{h1}");

    let h2 = blocking(move || curl(port, "a.example", &["--http2", "-w", "\nversion=%{http_version}"])).await;
    assert!(h2.contains("backend=one") && h2.contains("version=2"), "{h2}");
    assert!(h2.contains("host: a.example"), "h2 :authority becomes Host: {h2}");

    // On a kernel without kTLS every connection stays in userspace, with the reason counted.
    let metrics = daemon.metrics.encode();
    if lb_userspace::tls::offload::tls_stat().is_none() {
        assert!(
            metrics.contains(r#"lb_tls_connections_total{offload="userspace",reason="kernel_without_ktls"} 2"#),
            "{metrics}"
        );
        assert!(metrics.contains(r#"lb_ktls_available{reason="kernel_without_ktls"} 0"#), "{metrics}");
    }
    assert!(metrics.contains(r#"lb_tls_handshakes_total{listener="l1",result="ok"} 2"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_matching_certificate_and_falls_back_to_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("one").await;
    let tls = tls_settings(bundle(dir.path(), "default.example"), vec![bundle(dir.path(), "b.example")]);
    let (_daemon, port) = start(KtlsMode::Off, &[backend], tls, PoolProtocol::Http).await;

    let subject = move |sni: &'static str| {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", sni])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().find(|l| l.starts_with("subject=")).unwrap_or("").to_string()
    };
    assert!(blocking(move || subject("b.example")).await.contains("CN = b.example"));
    assert!(blocking(move || subject("unknown.example")).await.contains("CN = default.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_versions_restrict_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("one").await;
    let mut tls = tls_settings(bundle(dir.path(), "a.example"), vec![]);
    tls.tls_versions = vec![TlsVersion::Tls13];
    let (_daemon, port) = start(KtlsMode::Off, &[backend], tls, PoolProtocol::Http).await;
    let try_version = move |flag: &'static str| {
        Command::new("curl")
            .args(["-sS", "-k", "--max-time", "10", flag, "--tls-max", if flag == "--tlsv1.2" { "1.2" } else { "1.3" }])
            .arg(format!("https://127.0.0.1:{port}/"))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(blocking(move || try_version("--tlsv1.3")).await, "TLS 1.3 allowed");
    assert!(!blocking(move || try_version("--tlsv1.2")).await, "TLS 1.2 refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_mode_forwards_bytes_and_a_refused_member_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("raw").await;
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tls = tls_settings(bundle(dir.path(), "a.example"), vec![]);
    let (_daemon, port) = start(KtlsMode::Auto, &[dead, backend], tls, PoolProtocol::Tcp).await;
    for _ in 0..4 {
        // raw mode: the backend itself speaks HTTP, lbd adds no headers
        let body = blocking(move || curl(port, "a.example", &["--http1.1"])).await;
        assert!(body.contains("backend=raw") && !body.contains("x-forwarded-for"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_default_certificate_applies_to_the_next_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("one").await;
    let daemon = Daemon::start(KtlsMode::Off);
    let port = free_port();
    let first = state(port, &[backend], tls_settings(bundle(dir.path(), "old.example"), vec![]), PoolProtocol::Http);
    assert_eq!(daemon.apply(&first).await.listeners["l1"], Ok(()));
    let served = move || {
        let out = sh(Command::new("curl").args(["-sS", "-k", "-v", "--max-time", "10"]).arg(format!("https://127.0.0.1:{port}/")));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(blocking(served).await.contains("CN=old.example"));
    let second = state(port, &[backend], tls_settings(bundle(dir.path(), "new.example"), vec![]), PoolProtocol::Http);
    assert_eq!(daemon.apply(&second).await.listeners["l1"], Ok(()));
    assert!(blocking(served).await.contains("CN=new.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_chain_is_served_and_verifies_against_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let pki = chain(dir.path(), "chain.example");
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let b = lb_userspace::certs::from_pem("t", &read(&pki.leaf), &read(&pki.leaf_key), Some(&read(&pki.intermediate)), None).unwrap();
    let backend = echo_backend("one").await;
    let (_daemon, port) = start(KtlsMode::Auto, &[backend], tls_settings(Arc::new(b), vec![]), PoolProtocol::Http).await;
    let root = pki.root.clone();
    let out = blocking(move || {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "chain.example", "-showcerts", "-verify_return_error"])
            .arg("-CAfile")
            .arg(&root)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    })
    .await;
    assert_eq!(out.matches("-----BEGIN CERTIFICATE-----").count(), 2, "leaf + intermediate: {out}");
    assert!(out.contains("CN = lb test intermediate"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_request_without_host_reaches_the_member_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("one").await;
    let tls = tls_settings(bundle(dir.path(), "a.example"), vec![]);
    let (_daemon, port) = start(KtlsMode::Auto, &[backend], tls, PoolProtocol::Http).await;
    let out = blocking(move || {
        use std::io::Write;
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}"), "-servername", "a.example"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"GET /old HTTP/1.0\r\n\r\n").unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    })
    .await;
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    assert!(out.contains(&format!("host: {backend}")), "HTTP/1.1 to the member needs a Host: {out}");
}
