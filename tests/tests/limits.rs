//! Listener timeouts (`timeout_client_data`, `timeout_member_connect`, `timeout_member_data`)
//! and `connection_limit`, with real curl clients and real (misbehaving) TCP members.
//! Bounds are generous: these check behaviour, not speed.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_common::model::*;
use lb_tests::fixture::*;
use lb_tests::{bulk, client, free_port};
use lb_userspace::daemon::{Daemon, KtlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(backend: SocketAddr, edit: impl FnOnce(&mut Listener)) -> (Arc<Daemon>, u16) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = state(port, &[backend], tls_settings(bundle(dir.path(), "a.example"), vec![]), PoolProtocol::Http);
    edit(&mut s.load_balancers[0].listeners[0]);
    let daemon = Daemon::start(KtlsMode::Auto);
    assert_eq!(daemon.apply(&s).await.listeners["l1"], Ok(()));
    (daemon, port)
}

/// `(HTTP status or 0, seconds taken)` for one curl GET.
async fn curl_status(port: u16, max_time: &str) -> (u16, f64) {
    let max_time = max_time.to_string();
    blocking(move || {
        let started = Instant::now();
        let out = Command::new("curl")
            .args(["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", &max_time])
            .arg(format!("https://127.0.0.1:{port}/"))
            .output()
            .unwrap();
        (String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0), started.elapsed().as_secs_f64())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_data_timeout_closes_idle_clients_before_and_after_the_handshake() {
    let backend = bulk::http_backend().await;
    let (_daemon, port) = start(backend, |l| l.timeouts.client_data = Duration::from_millis(800)).await;

    // Silent after connecting: no ClientHello.
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await.expect("lbd closes the connection");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());

    // Handshake done, then silent: closed without a request ever arriving.
    let mut tls = client::connect(port, "a.example", client::config(rustls::ALL_VERSIONS, None, &[b"http/1.1"])).await.unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut all)).await.expect("lbd closes the connection");
    assert!(all.is_empty(), "{all:?}");
    assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());

    // A first request after a pause shorter than the timeout is served.
    let mut tls = client::connect(port, "a.example", client::config(rustls::ALL_VERSIONS, None, &[b"http/1.1"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut all)).await.expect("response");
    assert!(String::from_utf8_lossy(&all).ends_with("hello"), "{}", String::from_utf8_lossy(&all));

    // Idle after a request on a keep-alive connection.
    let mut tls = client::connect(port, "a.example", client::config(rustls::ALL_VERSIONS, None, &[b"http/1.1"])).await.unwrap();
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: a.example\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut all)).await.expect("lbd closes the connection");
    assert!(String::from_utf8_lossy(&all).ends_with("hello"), "the response came first");
    assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_connect_timeout_answers_503() {
    // A member whose accept queue is full: further SYNs are dropped, connects hang.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    sock.listen(0).unwrap();
    let member = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&member, Duration::from_millis(300)) {
            fillers.push(s);
        }
    }
    let (_daemon, port) = start(member, |l| l.timeouts.member_connect = Duration::from_millis(700)).await;
    let (code, secs) = curl_status(port, "20").await;
    assert_eq!(code, 503);
    assert!((0.6..15.0).contains(&secs), "{secs}");
    drop(sock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_data_timeout_answers_504() {
    // A member that accepts and reads but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let member = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let (daemon, port) = start(member, |l| l.timeouts.member_data = Duration::from_millis(800)).await;
    let (code, secs) = curl_status(port, "20").await;
    assert_eq!(code, 504);
    assert!((0.7..15.0).contains(&secs), "{secs}");
    assert!(daemon.metrics.encode().contains(r#"lb_http_responses_total{listener="l1",code="504"} 1"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_holds_new_connections_until_one_closes() {
    let backend = bulk::http_backend().await;
    let (_daemon, port) = start(backend, |l| l.connection_limit = Some(1)).await;
    let cfg = client::config(rustls::ALL_VERSIONS, None, &[b"http/1.1"]);
    let mut first = client::connect(port, "a.example", cfg).await.unwrap();
    first.write_all(b"GET /hello HTTP/1.1\r\nHost: a.example\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    assert!(first.read(&mut buf).await.unwrap() > 0);

    // The one allowed connection is open: another waits (its handshake does not start).
    let (code, _) = curl_status(port, "2").await;
    assert_eq!(code, 0, "a second connection must not be served while the limit is reached");
    drop(first);
    let (code, _) = curl_status(port, "20").await;
    assert_eq!(code, 200, "served once the first connection closed");
}
