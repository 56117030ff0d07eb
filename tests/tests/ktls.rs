//! kTLS on a real kernel. Tests that only make sense with kTLS are ignored on a host without it,
//! with the reason shown; `cargo xtask vm-test` runs this binary with `--include-ignored` and
//! `LB_REQUIRE_KTLS=1` as root in a QEMU guest booted on Debian's kernel, where they must pass.
//! The data-integrity tests (1 GiB each way, keep-alive, h2) run everywhere: through kTLS where
//! the kernel has it, through the userspace fallback (with its reason asserted) where it has not.
//! Offload is asserted through the kernel's own `/proc/net/tls_stat` as well as lbd's counters,
//! so nothing can pass with the records silently left in userspace.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lb_common::model::*;
use lb_tests::fixture::*;
use lb_tests::{bulk, client, free_port, metric, sh};
use lb_userspace::daemon::{Daemon, KtlsMode};
use lb_userspace::tls::accept::OffloadPolicy;
use lb_userspace::tls::offload::{self, KernelCipher, record_type};
use rustls::crypto::aws_lc_rs::cipher_suite as cs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `/proc/net/tls_stat` counts every socket of the machine: one test at a time.
/// An async lock: the guard is held across awaits, and a failed test does not poison it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

const KTLS_INSTALLED: &str = r#"lb_tls_connections_total{offload="ktls",reason="installed"}"#;

/// A snapshot of `/proc/net/tls_stat`.
struct TlsStat(BTreeMap<String, u64>);

impl TlsStat {
    fn now() -> Self {
        TlsStat(offload::tls_stat().expect("this test needs a kernel with kTLS: /proc/net/tls_stat is missing"))
    }

    /// Counters that moved since `earlier`, as "Name+delta" (deterministic, for assertions).
    fn since(&self, earlier: &TlsStat) -> BTreeMap<String, i64> {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let d = *v as i64 - *earlier.0.get(k).unwrap_or(&0) as i64;
                (d != 0).then(|| (k.clone(), d))
            })
            .collect()
    }
}

/// The kernel's kTLS counters now, or `None` on a kernel without kTLS (refused when the run
/// requires kTLS, as in the guest).
fn kernel_snapshot() -> Option<TlsStat> {
    let stat = offload::tls_stat().map(TlsStat);
    assert!(stat.is_some() || std::env::var_os("LB_REQUIRE_KTLS").is_none(), "LB_REQUIRE_KTLS is set but this kernel has no kTLS");
    stat
}

/// `conns` connections went through kTLS (per the kernel and lbd) or, on a kernel without it,
/// through userspace with that reason counted.
async fn assert_record_path(before: &Option<TlsStat>, daemon: &Daemon, conns: i64) {
    let m = daemon.metrics.encode();
    match before {
        Some(b) => {
            assert_offloaded(b, conns).await;
            assert_eq!(metric(&m, KTLS_INSTALLED), conns as f64, "{m}");
        }
        None => assert_eq!(metric(&m, r#"lb_tls_connections_total{offload="userspace",reason="kernel_without_ktls"}"#), conns as f64, "{m}"),
    }
}

/// Asserts that `conns` sockets had kTLS TX and RX installed in software and nothing failed
/// (waiting briefly: lbd installs kTLS just after the client has seen the handshake finish).
async fn assert_offloaded(before: &TlsStat, conns: i64) -> BTreeMap<String, i64> {
    let installed = || TlsStat::now().since(before).get("TlsRxSw").copied().unwrap_or(0) >= conns;
    for _ in 0..100 {
        if installed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delta = TlsStat::now().since(before);
    println!("tls_stat delta: {delta:?}");
    assert_eq!(delta.get("TlsTxSw"), Some(&conns), "TLS_TX installs: {delta:?}");
    assert_eq!(delta.get("TlsRxSw"), Some(&conns), "TLS_RX installs: {delta:?}");
    assert_eq!(delta.get("TlsDecryptError"), None, "{delta:?}");
    delta
}

/// lbd's kTLS policy on this kernel, as if it could not take new keys (kernels before 6.14).
fn without_key_updates() -> OffloadPolicy {
    let mut capabilities = offload::probe();
    capabilities.key_updates = false;
    OffloadPolicy::probe_with(capabilities)
}

/// Waits (generously: the guest is emulated) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..600 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn bulk_bytes() -> u64 {
    std::env::var("LB_BULK_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 30)
}

/// lbd (`--ktls auto`) with a TERMINATED_HTTPS listener (any version and cipher) proxying HTTP
/// to one hyper backend; its files in `dir`.
async fn http_service(dir: &std::path::Path) -> (Arc<Daemon>, u16) {
    let backend = bulk::http_backend().await;
    serve(Daemon::start(KtlsMode::Auto), &[backend], tls_with(dir, vec![], &[]), PoolProtocol::Http).await
}

fn tls_with(dir: &std::path::Path, versions: Vec<TlsVersion>, ciphers: &[&str]) -> ListenerTls {
    let mut tls = tls_settings(bundle(dir, "a.example"), vec![]);
    tls.tls_versions = versions;
    tls.tls_ciphers = ciphers.iter().map(|c| c.to_string()).collect();
    tls
}

/// curl: upload `n` bytes to /verify, then download `n` bytes, on one keep-alive connection.
fn curl_up_and_down(port: u16, dir: &std::path::Path, n: usize) {
    let upload = dir.join("upload.bin");
    let mut data = vec![0u8; n];
    bulk::fill(5, 0, &mut data);
    std::fs::write(&upload, &data).unwrap();
    let base = format!("https://a.example:{port}");
    let out = sh(Command::new("curl")
        .args(["-sS", "-k", "--http1.1", "--max-time", "120", "--resolve", &format!("a.example:{port}:127.0.0.1")])
        .arg("-T")
        .arg(&upload)
        .arg(format!("{base}/verify?seed=5"))
        .args(["--next", "-sS", "-k", "--http1.1", "--max-time", "120"])
        .arg(format!("{base}/bytes?n={n}&seed=6")));
    let expected_verdict = format!("ok {n}");
    assert!(out.stdout.starts_with(expected_verdict.as_bytes()), "{}", String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(200)]));
    let mut v = bulk::Verifier::new(6);
    v.update(&out.stdout[expected_verdict.len()..]);
    assert_eq!(v.verdict(), expected_verdict);
}

/// openssl s_client to lbd's `a.example` listener with `args` added: `send` writes its input,
/// which then ends (`-quiet` ignores that end: s_client runs until lbd closes); returns its output.
fn s_client(port: u16, args: &[&str], send: impl FnOnce(&mut std::process::ChildStdin)) -> std::process::Output {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "a.example", "-quiet"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    send(&mut child.stdin.take().unwrap());
    child.wait_with_output().unwrap()
}

/// openssl s_client: one HTTP/1.1 request with `Connection: close`; lbd must end the connection
/// with close_notify from the kernel for s_client to exit cleanly.
fn s_client_get(port: u16, n: usize) {
    let out = s_client(port, &["-ign_eof"], |stdin| {
        write!(stdin, "GET /bytes?n={n}&seed=9 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n").unwrap()
    });
    let text = &out.stdout;
    let split = text.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response") + 4;
    assert!(text.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&text[..split]));
    let mut v = bulk::Verifier::new(9);
    v.update(&text[split..]);
    assert_eq!(v.verdict(), format!("ok {n}"), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_and_cipher_with_curl_and_openssl() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = bulk::http_backend().await;
    let cases = [
        (TlsVersion::Tls13, "TLS_AES_128_GCM_SHA256"),
        (TlsVersion::Tls13, "TLS_AES_256_GCM_SHA384"),
        (TlsVersion::Tls13, "TLS_CHACHA20_POLY1305_SHA256"),
        (TlsVersion::Tls12, "ECDHE-ECDSA-AES128-GCM-SHA256"),
        (TlsVersion::Tls12, "ECDHE-ECDSA-AES256-GCM-SHA384"),
        (TlsVersion::Tls12, "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ];
    for (version, cipher) in cases {
        let daemon = Daemon::start(KtlsMode::Auto);
        let (daemon, port) = serve(daemon, &[backend], tls_with(dir.path(), vec![version], &[cipher]), PoolProtocol::Http).await;
        let before = kernel_snapshot();
        let d = dir.path().to_path_buf();
        blocking(move || curl_up_and_down(port, &d, 256 * 1024)).await;
        blocking(move || s_client_get(port, 100_000)).await;
        println!("{version:?} {cipher}:");
        assert_record_path(&before, &daemon, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by `cargo xtask vm-test`"]
async fn ciphers_kept_in_userspace_by_policy_or_switch_are_counted() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = bulk::http_backend().await;
    let mut policy = KtlsMode::Auto.policy();
    policy.userspace_ciphers = vec![KernelCipher::Chacha20Poly1305];
    let tls = || tls_with(dir.path(), vec![TlsVersion::Tls13], &["TLS_CHACHA20_POLY1305_SHA256"]);
    let (by_policy, port) = serve(Daemon::start_with(policy), &[backend], tls(), PoolProtocol::Http).await;
    let (switched_off, off_port) = serve(Daemon::start(KtlsMode::Off), &[backend], tls(), PoolProtocol::Http).await;

    let before = TlsStat::now();
    let d = dir.path().to_path_buf();
    blocking(move || curl_up_and_down(port, &d, 64 * 1024)).await;
    let d = dir.path().to_path_buf();
    blocking(move || curl_up_and_down(off_port, &d, 64 * 1024)).await;
    let delta = TlsStat::now().since(&before);
    assert_eq!(delta.get("TlsTxSw"), None, "nothing offloaded: {delta:?}");
    let m = by_policy.metrics.encode();
    assert_eq!(metric(&m, r#"lb_tls_connections_total{offload="userspace",reason="cipher_policy"}"#), 1.0, "{m}");
    let m = switched_off.metrics.encode();
    assert_eq!(metric(&m, r#"lb_tls_connections_total{offload="userspace",reason="disabled_by_config"}"#), 1.0, "{m}");
}

/// A raw-mode upload that lasts longer than the listener's inactivity timeouts, to a member that
/// says nothing until it has read all of it: the connection is busy one way, not idle, so the
/// member's late answer must reach the client (over kTLS: the spliced path, whose two
/// directions share one inactivity clock; without kTLS: the userspace copy loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_mode_upload_longer_than_the_timeouts_gets_the_members_late_answer() {
    let _serial = serial().await;
    let member = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let member_addr = member.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = member.accept().await.unwrap();
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).await.unwrap();
        tcp.write_all(format!("received {}", got.len()).as_bytes()).await.unwrap();
        tcp.shutdown().await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut state = lb_tests::fixture::state(port, &[member_addr], tls_with(dir.path(), vec![], &[]), PoolProtocol::Tcp);
    let timeouts = &mut state.load_balancers[0].listeners[0].timeouts;
    (timeouts.client_data, timeouts.member_data) = (Duration::from_millis(1500), Duration::from_millis(1500));
    let daemon = Daemon::start(KtlsMode::Auto);
    assert_eq!(daemon.apply(&state).await.listeners["l1"], Ok(()));
    let before = kernel_snapshot();

    let mut tls = client::connect(port, "a.example", client::config(&[&rustls::version::TLS13], None, &[])).await.unwrap();
    // 4 s of upload, while the member is silent: well past both timeouts.
    for _ in 0..16 {
        tls.write_all(&[0x5a; 64 * 1024]).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tls.shutdown().await.unwrap();
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), tls.read_to_string(&mut answer)).await.expect("the answer or the end of the connection");
    assert_eq!((read.map(|_| ()).map_err(|e| e.to_string()), answer.as_str()), (Ok(()), "received 1048576"));
    assert_record_path(&before, &daemon, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_mode_moves_a_gigabyte_each_way_intact() {
    let _serial = serial().await;
    let n = bulk_bytes();
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut reports) = bulk::raw_backend().await;
    let tls = tls_with(dir.path(), vec![], &[]);
    let (daemon, port) = serve(Daemon::start(KtlsMode::Auto), &[backend], tls, PoolProtocol::Tcp).await;
    let before = kernel_snapshot();

    let cfg = client::config(&[&rustls::version::TLS13], Some(vec![cs::TLS13_AES_128_GCM_SHA256]), &[]);
    let tls = client::connect(port, "a.example", cfg).await.unwrap();
    let (mut r, mut w) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        w.write_all(&bulk::raw_header(n, 42)).await?;
        bulk::write_stream(&mut w, 42, n).await?;
        w.shutdown().await // close_notify, then FIN
    });
    let download = bulk::read_stream(&mut r, 43).await.expect("download ends with close_notify");
    writer.await.unwrap().unwrap();
    assert_eq!(download.verdict(), format!("ok {n}"));
    let report = reports.recv().await.unwrap();
    assert_eq!((report.upload, report.error), (format!("ok {n}"), None));
    assert_record_path(&before, &daemon, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_moves_a_gigabyte_each_way_intact_with_curl() {
    let _serial = serial().await;
    let n = bulk_bytes();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port) = http_service(dir.path()).await;
    let before = kernel_snapshot();
    let url = |path: String| format!("https://127.0.0.1:{port}{path}");

    // Download: curl's stdout is verified as it streams.
    let download_url = url(format!("/bytes?n={n}&seed=11"));
    let download = blocking(move || {
        let mut curl = Command::new("curl")
            .args(["-sS", "-k", "--http1.1", "--fail", &download_url])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = curl.stdout.take().unwrap();
        let mut v = bulk::Verifier::new(11);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let k = out.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            v.update(&buf[..k]);
        }
        assert!(curl.wait().unwrap().success());
        v.verdict()
    })
    .await;
    assert_eq!(download, format!("ok {n}"));

    // Upload: curl reads the stream from stdin (chunked), the backend verifies it.
    let upload_url = url("/verify?seed=12".into());
    let verdict = blocking(move || {
        let mut curl = Command::new("curl")
            .args(["-sS", "-k", "--http1.1", "--fail", "-T", "-", &upload_url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = curl.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut sent = 0u64;
            while sent < n {
                let len = (n - sent).min(buf.len() as u64) as usize;
                bulk::fill(12, sent, &mut buf[..len]);
                stdin.write_all(&buf[..len]).unwrap();
                sent += len as u64;
            }
        });
        let out = curl.wait_with_output().unwrap();
        feeder.join().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    })
    .await;
    assert_eq!(verdict, format!("ok {n}"));
    assert_record_path(&before, &daemon, 2).await;
}

/// Runs h2load and returns its "requests:" summary line.
fn h2load(port: u16, args: &[&str]) -> String {
    let out = sh(Command::new("h2load").args(args).arg(format!("https://127.0.0.1:{port}/hello")));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().find(|l| l.starts_with("requests:")).unwrap_or(&text).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_on_one_keep_alive_connection_and_multiplexed_h2_streams() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port) = http_service(dir.path()).await;
    let before = kernel_snapshot();
    let h1 = blocking(move || h2load(port, &["--h1", "-n", "500", "-c", "1"])).await;
    assert!(h1.contains("500 succeeded, 0 failed, 0 errored"), "{h1}");
    let h2 = blocking(move || h2load(port, &["-n", "500", "-c", "1", "-m", "16"])).await;
    assert!(h2.contains("500 succeeded, 0 failed, 0 errored"), "{h2}");
    assert_record_path(&before, &daemon, 2).await;
    let m = daemon.metrics.encode();
    assert_eq!(metric(&m, r#"lb_http_responses_total{listener="l1",code="200"}"#), 1000.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_connections_are_pooled_beyond_sixty_four_concurrent_requests() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port) = http_service(dir.path()).await;
    let opened = || lb_tests::metric_sum(&daemon.metrics.encode(), "lb_member_connections_total{");
    // 2 h2 connections × 100 streams: up to 200 requests at once, each holding a member connection.
    let load = move || h2load(port, &["-n", "4000", "-c", "2", "-m", "100"]);
    let first = blocking(load).await;
    assert!(first.contains("4000 succeeded, 0 failed, 0 errored"), "{first}");
    let after_first = opened();
    let second = blocking(load).await;
    assert!(second.contains("4000 succeeded, 0 failed, 0 errored"), "{second}");
    let again = opened() - after_first;
    println!("member connections: {after_first} opened for the first 4000 requests, {again} more for the next 4000");
    assert!(after_first > 64.0, "the load needs more than 64 member connections at once ({after_first})");
    // The pool kept what the first burst opened: the second opens few, not the excess over 64.
    assert!(again * 4.0 < after_first, "{again} new member connections in the second run");
}

/// Connects in raw mode and sends the backend header plus `n` bytes of stream 42.
async fn raw_session(port: u16, n: u64) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = client::config(&[&rustls::version::TLS13], None, &[]);
    let mut tls = client::connect(port, "a.example", cfg).await.unwrap();
    tls.write_all(&bulk::raw_header(0, 42)).await.unwrap();
    bulk::write_stream(&mut tls, 42, n).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by `cargo xtask vm-test`"]
async fn control_records_after_offload_end_connections_cleanly() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut reports) = bulk::raw_backend().await;
    let tls = tls_with(dir.path(), vec![], &[]);
    // Key updates are followed only on kernels that take new keys: here, as on those before 6.14.
    let (daemon, port) = serve(Daemon::start_with(without_key_updates()), &[backend], tls, PoolProtocol::Tcp).await;
    let before = TlsStat::now();
    let closed = |reason: &str| metric(&daemon.metrics.encode(), &format!(r#"lb_ktls_closed_total{{reason="{reason}"}}"#));

    // close_notify from the client: everything before it arrives, lbd answers with close_notify.
    let mut tls = raw_session(port, 100_000).await;
    tls.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).await.expect("lbd closes with close_notify, not a bare FIN");
    let report = reports.recv().await.unwrap();
    assert_eq!((report.upload.as_str(), report.error), ("ok 100000", None));

    // A fatal alert mid-stream, sent through the client's own kTLS TX path. The client's kTLS
    // goes in before anything is sent: the backend ends its side as soon as it has the header
    // (a download of 0 bytes), and a socket that has received a FIN takes no kTLS (ENOTCONN).
    let mut tls = client::connect(port, "a.example", client::config(&[&rustls::version::TLS13], None, &[])).await.unwrap();
    tls.flush().await.unwrap();
    let (mut tcp, conn) = tls.into_inner();
    let version = conn.protocol_version().unwrap();
    let secrets = conn.dangerous_extract_secrets().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    offload::install(fd, version, secrets, offload::RxPadding::Tolerated).unwrap();
    tcp.write_all(&bulk::raw_header(0, 42)).await.unwrap();
    bulk::write_stream(&mut tcp, 42, 1000).await.unwrap();
    offload::send_record(fd, record_type::ALERT, &[2, 80]).unwrap(); // fatal internal_error
    let report = reports.recv().await.unwrap();
    assert_eq!(report.upload, "ok 1000", "bytes before the alert arrive intact: {report:?}");
    eventually("the alert to be counted", || closed("alert") == 1.0).await;
    drop(tcp);

    // A TLS 1.3 KeyUpdate from the client where the kernel cannot take the next key: lbd ends
    // the connection; what came before arrives intact, nothing after it is forwarded.
    let mut tls = raw_session(port, 1000).await;
    tls.get_mut().1.refresh_traffic_keys().unwrap();
    bulk::write_stream(&mut tls, 4242, 5000).await.unwrap();
    tls.flush().await.unwrap();
    let report = reports.recv().await.unwrap();
    assert_eq!(report.upload, "ok 1000", "nothing after the KeyUpdate reaches the member: {report:?}");
    eventually("the KeyUpdate to be counted", || closed("key_update") == 1.0).await;
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;

    // Three lbd sockets, plus the client socket that sent the alert through its own kTLS.
    assert_offloaded(&before, 4).await;
}

/// Reads an HTTP/1.1 response head from `tls`, lower-cased (`None`: the connection ended inside it).
async fn read_head(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if tls.read(&mut byte).await.unwrap() != 1 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8(head).unwrap().to_ascii_lowercase())
}

/// Reads one HTTP/1.1 response with a Content-Length from `tls`: its head, and its body checked
/// as stream `seed`.
async fn read_response(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, seed: u64) -> (String, bulk::Verifier) {
    let head = read_head(tls).await.expect("the connection ended inside a response head");
    let len: u64 = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).expect("a content-length");
    let mut v = bulk::Verifier::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    while v.received < len {
        let want = buf.len().min((len - v.received) as usize);
        let n = tls.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "the connection ended inside a body after {} of {len} bytes", v.received);
        v.update(&buf[..n]);
    }
    (head, v)
}

/// TLS 1.3 key updates on offloaded client connections, where the kernel takes new keys (Linux
/// 6.14+; `cargo xtask vm-test` runs this on Debian's newest backports kernel with
/// `LB_REQUIRE_KEY_UPDATES=1`). The client asks for a key update mid-stream: lbd installs the
/// client's next key and sends its own KeyUpdate before its next record. And lbd renews its
/// transmit key whenever the record budget (64 records here) runs out. In raw (splice) and HTTP
/// modes every byte arrives intact and no connection is ended. On older kernels such connections
/// end cleanly instead (`control_records_after_offload_end_connections_cleanly`,
/// `offloaded_connections_end_cleanly_before_their_record_limit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by `cargo xtask vm-test`"]
async fn key_updates_renew_offloaded_keys_in_both_directions() {
    let _serial = serial().await;
    if !takes_new_keys("connections end instead (tested by the two tests named above)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let before = TlsStat::now();
    let cfg = client::config(&[&rustls::version::TLS13], Some(vec![cs::TLS13_AES_128_GCM_SHA256]), &[]);
    let want = 4u64 << 20;

    // Raw mode: a 300 kB upload with a key update asked for after its first 100 kB, and a 4 MiB
    // download (256 records: the transmit key is renewed about every 56).
    let (backend, mut reports) = bulk::raw_backend().await;
    let (daemon, port) = serve(Daemon::start_with(key_update_policy()), &[backend], tls_with(dir.path(), vec![], &[]), PoolProtocol::Tcp).await;
    let mut upload = vec![0u8; 300_000];
    bulk::fill(42, 0, &mut upload);
    let mut tls = client::connect(port, "a.example", cfg.clone()).await.unwrap();
    tls.write_all(&bulk::raw_header(want, 42)).await.unwrap();
    tls.write_all(&upload[..100_000]).await.unwrap();
    tls.flush().await.unwrap();
    tls.get_mut().1.refresh_traffic_keys().unwrap();
    tls.write_all(&upload[100_000..]).await.unwrap();
    tls.shutdown().await.unwrap();
    let download = bulk::read_stream(&mut tls, 43).await.expect("the download ends with close_notify");
    assert_eq!(download.verdict(), format!("ok {want}"));
    let report = reports.recv().await.unwrap();
    assert_eq!((report.upload.as_str(), report.error.as_deref()), ("ok 300000", None));
    let (sent, received, closed) = key_update_counts(&daemon);
    println!("raw mode: {sent} KeyUpdates sent, {received} received");
    assert_eq!(received, 1.0);
    assert!(sent >= 4.0, "{sent} KeyUpdates sent for 256 records under a 64-record budget");
    assert_eq!(closed, 0.0);

    // HTTP mode: two 4 MiB responses on one keep-alive connection, a key update asked for
    // between them.
    let (daemon, port) = serve(Daemon::start_with(key_update_policy()), &[bulk::http_backend().await], tls_with(dir.path(), vec![], &[]), PoolProtocol::Http).await;
    let mut tls = client::connect(port, "a.example", cfg.clone()).await.unwrap();
    for round in 0..2 {
        if round == 1 {
            tls.get_mut().1.refresh_traffic_keys().unwrap();
        }
        tls.write_all(format!("GET /bytes?n={want}&seed=7 HTTP/1.1\r\nHost: a.example\r\n\r\n").as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut tls, 7).await;
        assert!(head.starts_with("http/1.1 200") && !head.contains("connection: close"), "{head}");
        assert_eq!(body.verdict(), format!("ok {want}"));
    }
    let (sent, received, closed) = key_update_counts(&daemon);
    println!("HTTP mode: {sent} KeyUpdates sent, {received} received");
    assert_eq!(received, 1.0);
    assert!(sent >= 8.0, "{sent} KeyUpdates sent for 512 records under a 64-record budget");
    assert_eq!(closed, 0.0);
    drop(tls);

    // The kernel's own counters: both sockets renewed their keys, nothing failed.
    let delta = TlsStat::now().since(&before);
    println!("tls_stat delta: {delta:?}");
    assert_eq!(delta.get("TlsRxRekeyOk"), Some(&2), "{delta:?}");
    assert!(delta.get("TlsTxRekeyOk").is_some_and(|n| *n >= 12), "{delta:?}");
    for failed in ["TlsTxRekeyError", "TlsRxRekeyError", "TlsDecryptError"] {
        assert_eq!(delta.get(failed), None, "{delta:?}");
    }
}

/// Whether this kernel takes new kTLS keys; if not, says what is tested `instead` (and fails
/// where `LB_REQUIRE_KEY_UPDATES` is set).
fn takes_new_keys(instead: &str) -> bool {
    if offload::probe().key_updates {
        return true;
    }
    assert!(std::env::var_os("LB_REQUIRE_KEY_UPDATES").is_none(), "LB_REQUIRE_KEY_UPDATES is set but this kernel takes no new kTLS keys");
    println!("this kernel takes no new kTLS keys: {instead}");
    false
}

/// A 64-record budget with key updates: one policy, and so one set of counters, per daemon.
fn key_update_policy() -> OffloadPolicy {
    OffloadPolicy { record_limit: Some(64), ..OffloadPolicy::probe() }
}

/// KeyUpdates `d` sent and received, and offloaded connections it ended.
fn key_update_counts(d: &Daemon) -> (f64, f64, f64) {
    let m = d.metrics.encode();
    (metric(&m, "lb_ktls_key_updates_sent_total"), metric(&m, "lb_ktls_key_updates_received_total"), lb_tests::metric_sum(&m, "lb_ktls_closed_total{"))
}

/// Key updates on an offloaded member connection, both ways: lbd "A" under test opens TLS 1.3 to
/// its member, a second lbd "B" that offloads it too, both with a 64-record budget. A 4 MiB
/// upload and a 4 MiB download in raw mode (256 records each way on the member connection):
/// A renews its transmit key towards B and follows B's KeyUpdates, B the other way round; no
/// connection ends and every byte arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by `cargo xtask vm-test`"]
async fn member_key_updates_renew_offloaded_keys_in_both_directions() {
    use lb_tests::pki::Ca;
    let _serial = serial().await;
    if !takes_new_keys("member connections are retired before their record limit instead (offloaded_connections_end_cleanly_before_their_record_limit)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "member ca");
    let b_cert = ca.issue("member b", 2, &["127.0.0.1"]);
    let (backend, mut reports) = bulk::raw_backend().await;
    let (b, b_port) = serve(Daemon::start_with(key_update_policy()), &[backend], tls_settings(b_cert.bundle(), vec![]), PoolProtocol::Tcp).await;
    let a = Daemon::start_with(key_update_policy());
    let a_port = free_port();
    let mut state = lb_tests::fixture::state(a_port, &[format!("127.0.0.1:{b_port}").parse().unwrap()], tls_with(dir.path(), vec![], &[]), PoolProtocol::Tcp);
    state.load_balancers[0].pools[0].tls = Some(PoolTls {
        ca_certificates: Some(vec![ca.der()]),
        crls: vec![],
        client_certificate: None,
        server_name: None,
        tls_versions: vec![TlsVersion::Tls13],
        tls_ciphers: vec![],
        alpn_protocols: vec![],
    });
    let report = a.apply(&state).await;
    assert_eq!((report.listeners["l1"].clone(), report.pools["p1"].clone()), (Ok(()), Ok(())));

    raw_up_and_down(a_port, 4 << 20, &mut reports).await;

    let (am, bm) = (a.metrics.encode(), b.metrics.encode());
    assert_eq!(metric(&am, r#"lb_member_tls_connections_total{pool="p1",offload="ktls",reason="installed"}"#), 1.0, "{am}");
    assert_eq!((metric(&am, KTLS_INSTALLED), metric(&bm, KTLS_INSTALLED)), (1.0, 1.0), "{am}\n{bm}");
    let ((a_sent, a_received, a_closed), (b_sent, b_received, b_closed)) = (key_update_counts(&a), key_update_counts(&b));
    println!("A: {a_sent} KeyUpdates sent, {a_received} received; B: {b_sent} sent, {b_received} received");
    // The client sends no KeyUpdate and B's member is plain TCP: what A receives comes from B
    // on the member connection, what B receives from A on it.
    assert!(a_received >= 4.0 && b_received >= 4.0, "A received {a_received}, B {b_received}, for 256 records each way under a 64-record budget");
    // A renews towards the client and towards B.
    assert!(a_sent >= 8.0 && b_sent >= 4.0, "A sent {a_sent}, B {b_sent}");
    assert_eq!((a_closed, b_closed), (0.0, 0.0));
}

/// lbd proxying HTTP over TLS 1.3 with `--ktls-rx-expect-no-pad` on or off for clients.
async fn no_pad_service(dir: &std::path::Path, no_pad: bool) -> (Arc<Daemon>, u16) {
    let policy = OffloadPolicy { client_rx_no_pad: no_pad, ..OffloadPolicy::probe() };
    serve(Daemon::start_with(policy), &[bulk::http_backend().await], tls_with(dir, vec![], &[]), PoolProtocol::Http).await
}

/// `--ktls-rx-expect-no-pad`: the kernel decrypts a client's TLS 1.3 records straight into lbd's
/// buffer, and decrypts again, counting `TlsDecryptRetry`, a record that turns out not to be
/// application data (the client's close_notify here). Without the option it never tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by `cargo xtask vm-test`"]
async fn clients_records_are_decrypted_in_place_only_with_rx_expect_no_pad() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    for no_pad in [false, true] {
        let (daemon, port) = no_pad_service(dir.path(), no_pad).await;
        let before = TlsStat::now();
        let cfg = client::config(&[&rustls::version::TLS13], None, &[b"http/1.1"]);
        let mut tls = client::connect(port, "a.example", cfg).await.unwrap();
        tls.write_all(b"GET /bytes?n=1000&seed=3 HTTP/1.1\r\nHost: a.example\r\n\r\n").await.unwrap();
        let mut resp = Vec::new();
        let mut buf = [0u8; 4096];
        while resp.windows(4).position(|w| w == b"\r\n\r\n").is_none_or(|p| resp.len() < p + 4 + 1000) {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "the response ended early: {}", String::from_utf8_lossy(&resp));
            resp.extend_from_slice(&buf[..n]);
        }
        assert!(resp.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&resp));
        tls.shutdown().await.unwrap(); // close_notify: an alert record
        let mut rest = Vec::new();
        let _ = tls.read_to_end(&mut rest).await;
        eventually("lbd to close the connection", || metric(&daemon.metrics.encode(), r#"lb_active_connections{listener="l1"}"#) == 0.0).await;
        let delta = assert_offloaded(&before, 1).await;
        assert_eq!(delta.get("TlsDecryptRetry"), no_pad.then_some(&1), "no_pad={no_pad}: {delta:?}");
    }
}

/// A client that pads its TLS 1.3 records (`openssl s_client -record_padding`) is served
/// correctly with `--ktls-rx-expect-no-pad`: the kernel's in-place decryption finds each padded
/// record, counts it (`TlsRxNoPadViolation`, `TlsDecryptRetry`) and decrypts it again the normal
/// way. Without the option the same client costs no retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by `cargo xtask vm-test`"]
async fn padded_client_records_are_decrypted_correctly_with_rx_expect_no_pad() {
    const CHUNK: usize = 3000;
    const N: usize = 30 * CHUNK;
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    for no_pad in [false, true] {
        let (daemon, port) = no_pad_service(dir.path(), no_pad).await;
        let before = TlsStat::now();
        let out = blocking(move || {
            s_client(port, &["-tls1_3", "-record_padding", "512"], |stdin| {
                write!(stdin, "POST /verify?seed=11 HTTP/1.1\r\nHost: a.example\r\nContent-Length: {N}\r\nConnection: close\r\n\r\n").unwrap();
                let mut body = vec![0u8; N];
                bulk::fill(11, 0, &mut body);
                // Chunks written apart become records of a few KiB, short of the 16 KiB maximum,
                // so s_client pads them (chunks it reads together may still fill a record unpadded).
                for chunk in body.chunks(CHUNK) {
                    stdin.write_all(chunk).unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("HTTP/1.1 200") && text.ends_with(&format!("ok {N}")), "no_pad={no_pad}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
        eventually("lbd to close the connection", || metric(&daemon.metrics.encode(), r#"lb_active_connections{listener="l1"}"#) == 0.0).await;
        let delta = assert_offloaded(&before, 1).await;
        let count = |name: &str| delta.get(name).copied().unwrap_or(0);
        if no_pad {
            // A padded data record that the kernel tried to decrypt in place counts as a
            // violation of the promise and is decrypted again. It tries only when the record
            // fits the reader's buffer whole, so not every padded record is counted (18 of the
            // 30 writes in one guest run).
            assert!(count("TlsRxNoPadViolation") >= 3, "padded records were seen: {delta:?}");
            assert!(count("TlsDecryptRetry") >= count("TlsRxNoPadViolation"), "{delta:?}");
        } else {
            assert_eq!((count("TlsRxNoPadViolation"), count("TlsDecryptRetry")), (0, 0), "{delta:?}");
        }
    }
}

/// One HTTP/1.1 request over `tls` with `Connection: close`; returns the verified body verdict.
async fn get_and_close(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, n: usize) -> String {
    tls.write_all(format!("GET /bytes?n={n}&seed=3 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tls.read_to_end(&mut resp).await.expect("response ends with close_notify");
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut v = bulk::Verifier::new(3);
    v.update(&resp[split..]);
    v.verdict()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_sessions_take_the_same_path() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port) = http_service(dir.path()).await;
    let before = kernel_snapshot();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let cfg = client::config(&[version], None, &[b"http/1.1"]);
        for expected in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed] {
            let mut tls = client::connect(port, "a.example", cfg.clone()).await.unwrap();
            assert_eq!(tls.get_ref().1.handshake_kind(), Some(expected), "{version:?}");
            // TLS 1.3 tickets were sent by rustls before the kernel took TX over; a corrupt or
            // lost ticket would fail this connection or the next one's resumption.
            assert_eq!(get_and_close(&mut tls, 20_000).await, "ok 20000");
        }
    }
    assert_record_path(&before, &daemon, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_certificate_keeps_open_connections_working() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = bulk::http_backend().await;
    let daemon = Daemon::start(KtlsMode::Auto);
    let port = free_port();
    let apply = |name: &str| state(port, &[backend], tls_settings(bundle(dir.path(), name), vec![]), PoolProtocol::Http);
    assert_eq!(daemon.apply(&apply("old.example")).await.listeners["l1"], Ok(()));
    let before = kernel_snapshot();
    let cfg = client::config(rustls::ALL_VERSIONS, None, &[b"http/1.1"]);
    let served_name = |tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        String::from_utf8_lossy(&der).to_string()
    };

    let tls = client::connect(port, "a.example", cfg.clone()).await.unwrap();
    assert!(served_name(&tls).contains("old.example"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let get = |n: usize| {
        hyper::Request::get(format!("/bytes?n={n}&seed=8"))
            .header("host", "a.example")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let body = |resp: hyper::Response<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let data = resp.into_body().collect().await.unwrap().to_bytes();
        let mut v = bulk::Verifier::new(8);
        v.update(&data);
        v.verdict()
    };
    sender.ready().await.unwrap();
    assert_eq!(body(sender.send_request(get(50_000)).await.unwrap()).await, "ok 50000");

    assert_eq!(daemon.apply(&apply("new.example")).await.listeners["l1"], Ok(()));
    // The open, offloaded connection keeps working across the rotation ...
    for _ in 0..3 {
        // The previous response is read; wait for the connection to be idle again.
        sender.ready().await.unwrap();
        assert_eq!(body(sender.send_request(get(50_000)).await.unwrap()).await, "ok 50000");
    }
    // ... and the next handshake gets the new certificate.
    let mut tls = client::connect(port, "a.example", cfg).await.unwrap();
    assert!(served_name(&tls).contains("new.example"));
    assert_eq!(get_and_close(&mut tls, 1000).await, "ok 1000");
    assert_record_path(&before, &daemon, 2).await;
}

/// Through raw-mode listener `port` to a [`bulk::raw_backend`]: `n` bytes up and `n` down at
/// once over TLS 1.3 AES-128-GCM, every byte checked at both ends, the download ending with
/// close_notify.
async fn raw_up_and_down(port: u16, n: u64, reports: &mut tokio::sync::mpsc::UnboundedReceiver<bulk::RawReport>) {
    let cfg = client::config(&[&rustls::version::TLS13], Some(vec![cs::TLS13_AES_128_GCM_SHA256]), &[]);
    let tls = client::connect(port, "a.example", cfg).await.unwrap();
    let (mut r, mut w) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        w.write_all(&bulk::raw_header(n, 42)).await?;
        bulk::write_stream(&mut w, 42, n).await?;
        w.shutdown().await
    });
    let download = bulk::read_stream(&mut r, 43).await.expect("download ends with close_notify");
    writer.await.unwrap().unwrap();
    assert_eq!(download.verdict(), format!("ok {n}"));
    let report = reports.recv().await.unwrap();
    assert_eq!((report.upload, report.error), (format!("ok {n}"), None));
}

/// lbd "A" under test terminates the client and opens mTLS to its member, which is a second
/// data plane "B" (userspace TLS, so the kernel counters are A's alone) that requires A's client
/// certificate and forwards to the bulk backend. A offloads both legs; raw mode splices between
/// two kTLS sockets (the kernel decrypts from one and encrypts into the other), and B's TLS 1.3
/// NewSessionTickets arriving on A's offloaded member socket are skipped, not fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_members_is_offloaded_on_both_legs_in_raw_and_http_modes() {
    use lb_tests::pki::Ca;
    let _serial = serial().await;
    let n = bulk_bytes() / 16;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "member ca");
    let b_cert = ca.issue("member b", 2, &["127.0.0.1"]);
    let a_client = ca.issue("lbd a", 3, &["lbd-a.internal"]);
    let member_tls = PoolTls {
        ca_certificates: Some(vec![ca.der()]),
        crls: vec![],
        client_certificate: Some(a_client.bundle()),
        server_name: None,
        tls_versions: vec![],
        tls_ciphers: vec![],
        alpn_protocols: vec![],
    };
    let b_listener = ListenerTls {
        client_auth: Some(ClientAuth { mode: ClientAuthMode::Mandatory, ca_certificates: vec![ca.der()], crls: vec![] }),
        ..tls_settings(b_cert.bundle(), vec![])
    };

    for (mode, pool) in [("raw", PoolProtocol::Tcp), ("http", PoolProtocol::Http)] {
        let backend = if pool == PoolProtocol::Tcp { bulk::raw_backend().await } else { (bulk::http_backend().await, tokio::sync::mpsc::unbounded_channel().1) };
        let (backend, mut reports) = backend;
        let (_b, b_port) = serve(Daemon::start(KtlsMode::Off), &[backend], b_listener.clone(), pool).await;
        let b_addr: std::net::SocketAddr = format!("127.0.0.1:{b_port}").parse().unwrap();
        let a = Daemon::start(KtlsMode::Auto);
        let a_port = free_port();
        let mut state = lb_tests::fixture::state(a_port, &[b_addr], tls_with(dir.path(), vec![], &[]), pool);
        state.load_balancers[0].pools[0].tls = Some(member_tls.clone());
        let report = a.apply(&state).await;
        assert_eq!((report.listeners["l1"].clone(), report.pools["p1"].clone()), (Ok(()), Ok(())));
        let before = kernel_snapshot();

        if mode == "raw" {
            raw_up_and_down(a_port, n, &mut reports).await;
        } else {
            let d = dir.path().to_path_buf();
            blocking(move || curl_up_and_down(a_port, &d, n as usize)).await;
        }

        let m = a.metrics.encode();
        match &before {
            Some(b) => {
                // A's client socket and A's member socket: two TX and two RX installs.
                assert_offloaded(b, 2).await;
                assert_eq!(metric(&m, KTLS_INSTALLED), 1.0, "{mode}: {m}");
                assert_eq!(metric(&m, r#"lb_member_tls_connections_total{pool="p1",offload="ktls",reason="installed"}"#), 1.0, "{mode}: {m}");
            }
            None => assert_eq!(
                metric(&m, r#"lb_member_tls_connections_total{pool="p1",offload="userspace",reason="kernel_without_ktls"}"#),
                1.0,
                "{mode}: {m}"
            ),
        }
    }
}

/// The transmit key's record limit (`--ktls-record-limit`, here 64 records; the suites' own are
/// 2^23-2^24): a client connection ends with close_notify after a prefix of intact bytes, in raw
/// (splice) and HTTP modes, counted as `record_limit`; pooled member connections are retired
/// before it, so no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kTLS: run by `cargo xtask vm-test`"]
async fn offloaded_connections_end_cleanly_before_their_record_limit() {
    use lb_tests::pki::Ca;
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    // As on kernels that take no new keys (before 6.14): with them, keys are renewed instead
    // (`key_updates_renew_offloaded_keys_in_both_directions`).
    let limited = || Daemon::start_with(OffloadPolicy { record_limit: Some(64), ..without_key_updates() });
    let closed = |d: &Daemon| metric(&d.metrics.encode(), r#"lb_ktls_closed_total{reason="record_limit"}"#);
    let want = 4u64 << 20;

    // Raw mode: the download is spliced into the client's kTLS socket until the budget is spent.
    let (backend, _reports) = bulk::raw_backend().await;
    let (daemon, port) = serve(limited(), &[backend], tls_with(dir.path(), vec![], &[]), PoolProtocol::Tcp).await;
    let cfg = client::config(&[&rustls::version::TLS13], Some(vec![cs::TLS13_AES_128_GCM_SHA256]), &[]);
    let mut tls = client::connect(port, "a.example", cfg.clone()).await.unwrap();
    tls.write_all(&bulk::raw_header(want, 42)).await.unwrap();
    tls.flush().await.unwrap();
    let mut v = bulk::Verifier::new(43);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tls.read(&mut buf).await.expect("the download ends with close_notify, not a bare FIN");
        if n == 0 {
            break;
        }
        v.update(&buf[..n]);
    }
    println!("raw mode: {} of {want} bytes before the record limit", v.received);
    assert_eq!(v.first_mismatch, None);
    assert!(v.received > 0 && v.received <= 64 * 16384, "{} bytes", v.received);
    // The client's direction stays open until the client closes it, as after any half-close.
    drop(tls);
    eventually("the record limit to be counted (raw)", || closed(&daemon) == 1.0).await;

    // HTTP mode: a response larger than the budget is cut after intact bytes, with close_notify.
    let (daemon, port) = serve(limited(), &[bulk::http_backend().await], tls_with(dir.path(), vec![], &[]), PoolProtocol::Http).await;
    let mut tls = client::connect(port, "a.example", cfg.clone()).await.unwrap();
    tls.write_all(format!("GET /bytes?n={want}&seed=7 HTTP/1.1\r\nHost: a.example\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.expect("the response ends with close_notify");
    let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..body_at]));
    let mut v = bulk::Verifier::new(7);
    v.update(&got[body_at..]);
    println!("HTTP mode: {} of {want} body bytes before the record limit", v.received);
    assert_eq!(v.first_mismatch, None);
    assert!(v.received > 0 && v.received < want, "{} bytes", v.received);
    drop(tls);
    eventually("the record limit to be counted (HTTP)", || closed(&daemon) == 1.0).await;

    // HTTP/1.1 keep-alive: once the budget is nearly spent, a whole response says
    // `Connection: close` and the connection ends there, before the limit.
    let mut tls = client::connect(port, "a.example", cfg.clone()).await.unwrap();
    let mut answered = 0;
    loop {
        tls.write_all(b"GET /hello HTTP/1.1\r\nHost: a.example\r\n\r\n").await.unwrap();
        let head = read_head(&mut tls).await.unwrap_or_else(|| panic!("the connection ended inside a response head after {answered} responses"));
        assert!(head.starts_with("http/1.1 200") && head.contains("content-length: 5"), "{head}");
        let mut body = [0u8; 5];
        tls.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"hello");
        answered += 1;
        if head.contains("connection: close") {
            break;
        }
        assert!(answered < 64, "no response closed the connection");
    }
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).await.expect("close_notify after the last response");
    assert!(rest.is_empty());
    println!("HTTP/1.1 keep-alive: {answered} whole responses, the last with Connection: close");
    assert_eq!(closed(&daemon), 1.0, "the connection did not reach the limit");

    // h2: once the budget is nearly spent the connection is sent GOAWAY; every request the
    // client got an answer to is whole, and the connection ends without reaching the limit.
    let h2_cfg = client::config(&[&rustls::version::TLS13], Some(vec![cs::TLS13_AES_128_GCM_SHA256]), &[b"h2"]);
    let tls = client::connect(port, "a.example", h2_cfg).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut answered = 0;
    while answered < 200 {
        if sender.ready().await.is_err() {
            break;
        }
        let req = hyper::Request::get("https://a.example/hello").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
        let Ok(resp) = sender.send_request(req).await else { break };
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("a whole body").to_bytes();
        assert_eq!(&body[..], b"hello");
        answered += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(30), driver).await.expect("the connection ends after GOAWAY").unwrap();
    println!("h2: {answered} whole responses before GOAWAY; connection end: {ended:?}");
    assert!((10..200).contains(&answered), "{answered}");
    assert_eq!(closed(&daemon), 1.0, "the h2 connection did not reach the limit");

    // Member leg: a TLS member whose pooled kTLS connection would reach the limit after about
    // 56 requests is replaced before that; every request succeeds.
    let ca = Ca::new(dir.path(), "member ca");
    let b_cert = ca.issue("member b", 2, &["127.0.0.1"]);
    let (_b, b_port) = serve(Daemon::start(KtlsMode::Off), &[bulk::http_backend().await], tls_settings(b_cert.bundle(), vec![]), PoolProtocol::Http).await;
    let a = limited();
    let a_port = free_port();
    let b_addr: std::net::SocketAddr = format!("127.0.0.1:{b_port}").parse().unwrap();
    let mut state = lb_tests::fixture::state(a_port, &[b_addr], tls_with(dir.path(), vec![], &[]), PoolProtocol::Http);
    state.load_balancers[0].pools[0].tls = Some(PoolTls {
        ca_certificates: Some(vec![ca.der()]),
        crls: vec![],
        client_certificate: None,
        server_name: None,
        tls_versions: vec![],
        tls_ciphers: vec![],
        alpn_protocols: vec![],
    });
    let report = a.apply(&state).await;
    assert_eq!(report.pools["p1"], Ok(()));
    let requests = 150;
    for i in 0..requests {
        let mut tls = client::connect(a_port, "a.example", cfg.clone()).await.unwrap();
        tls.write_all(b"GET /hello HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert!(got.starts_with(b"HTTP/1.1 200"), "request {i}: {:?}", String::from_utf8_lossy(&got));
    }
    let m = a.metrics.encode();
    let opened = metric(&m, r#"lb_member_connections_total{pool="p1",member="m0"}"#);
    let offloaded = metric(&m, r#"lb_member_tls_connections_total{pool="p1",offload="ktls",reason="installed"}"#);
    println!("member leg: {requests} requests over {opened} member connections ({offloaded} offloaded)");
    assert_eq!(offloaded, opened, "{m}");
    assert!((2.0..=15.0).contains(&opened), "pooled connections retired before the limit, and only then: {opened}\n{m}");
    assert_eq!(closed(&a), 0.0, "no client connection reached the limit: {m}");
}
