//! `lb-guest-transfer --mode ktls|userspace --bytes N`: one bulk download through lbd's data
//! plane in this process, for `cargo xtask bench`'s guest instruction counts. A backend sends N
//! bytes from a static buffer over plain TCP; lbd terminates TLS 1.3 AES-128-GCM in raw mode
//! (TCP pool: splice(2) between the sockets when kTLS is on, a copy loop through rustls when
//! off); a rustls client reads the N bytes and discards them. Everything else (boot, start-up,
//! handshake) is the same for every N, so the difference between two sizes is the cost of the
//! bytes alone. Exits non-zero if the bytes did not all arrive or the TLS path was not the one
//! asked for.

use std::sync::Arc;

use lb_common::model::PoolProtocol;
use lb_tests::client;
use lb_tests::fixture::{bundle, serve, tls_settings};
use lb_userspace::daemon::{Daemon, KtlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut mode, mut bytes) = (String::new(), 0u64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mode" => mode = args.next().unwrap_or_default(),
            "--bytes" => bytes = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let ktls = match mode.as_str() {
        "ktls" => KtlsMode::Auto,
        "userspace" => KtlsMode::Off,
        other => anyhow::bail!("--mode ktls|userspace, not {other:?}"),
    };

    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend.local_addr()?;
    tokio::spawn(async move {
        static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];
        while let Ok((mut tcp, _)) = backend.accept().await {
            tokio::spawn(async move {
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(CHUNK.len() as u64) as usize;
                    if tcp.write_all(&CHUNK[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = tcp.shutdown().await;
            });
        }
    });

    let dir = tempfile::tempdir()?;
    let tls = tls_settings(bundle(dir.path(), "a.example"), vec![]);
    let (daemon, port) = serve(Daemon::start(ktls), &[backend_addr], tls, PoolProtocol::Tcp).await;
    let cfg = client::config(&[&rustls::version::TLS13], Some(vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256]), &[]);
    let mut tls = client::connect(port, "a.example", cfg).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    anyhow::ensure!(got == bytes, "received {got} of {bytes} bytes");
    let metrics = daemon.metrics.encode();
    let offloaded = metrics.lines().any(|l| l.starts_with("lb_tls_connections_total{offload=\"ktls\"") && !l.ends_with(" 0"));
    anyhow::ensure!(offloaded == (mode == "ktls"), "mode {mode} but the connection was {}offloaded:\n{metrics}", if offloaded { "" } else { "not " });
    println!("lb-guest-transfer: {mode}: {got} bytes, offloaded={offloaded}");
    drop(Arc::clone(&daemon));
    Ok(())
}
