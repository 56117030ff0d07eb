//! `lb-guest-transfer --mode ktls|userspace|ktls-http|userspace-http --bytes N`: one bulk
//! download through lbd's data plane in this process, for `cargo xtask bench`'s guest
//! instruction counts. A backend sends N bytes from a static buffer over plain TCP; lbd
//! terminates TLS 1.3 AES-128-GCM either in raw mode (TCP pool: splice(2) between the sockets
//! when kTLS is on, a copy loop through rustls when off) or, for the `-http` modes, in HTTP mode
//! (HTTP pool: hyper proxies one GET whose response body is the N bytes, over kTLS or rustls);
//! a rustls client reads the N bytes and discards them. Everything else (boot, start-up,
//! handshake, headers) is the same for every N, so the difference between two sizes is the cost
//! of the bytes alone. Exits non-zero if the bytes did not all arrive or the TLS path was not
//! the one asked for.
//!
//! lbd's threads (its runtime, and every thread it starts) run on CPU 1 only; the backend's and
//! the client's on CPU 0 only. With the TCG plugin's per-vCPU counts, vCPU 1's instructions are
//! then lbd's own work, user and kernel (its system calls, and the loopback delivery its sends
//! run), like the server CPU time the host benchmark measures.

use std::sync::Arc;

use lb_common::model::PoolProtocol;
use lb_tests::client;
use lb_tests::fixture::{bundle, serve, tls_settings};
use lb_userspace::daemon::{Daemon, KtlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The CPU lbd runs on; the backend and the client run on [`PEERS_CPU`].
const LBD_CPU: usize = 1;
const PEERS_CPU: usize = 0;

/// Marks the start of the window the TCG plugin measures (`benches/tcg-insns`): `xchg bx, bx`,
/// a no-op that compilers never emit.
fn start_mark() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: exchanging a register with itself changes no register, memory or flag.
    unsafe {
        std::arch::asm!("xchg bx, bx", options(nomem, nostack, preserves_flags))
    }
}

/// Marks the window's end: `xchg cx, cx`.
fn stop_mark() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `start_mark`.
    unsafe {
        std::arch::asm!("xchg cx, cx", options(nomem, nostack, preserves_flags))
    }
}

/// Restricts the calling thread (and the threads it starts later) to one CPU.
fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read and write `set`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Every thread started from here on inherits CPU 1: lbd's runtime and anything it spawns.
    pin(LBD_CPU).map_err(|e| anyhow::anyhow!("pinning to CPU {LBD_CPU} (the guest needs two CPUs): {e}"))?;
    let lbd = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("lbd").enable_all().build()?;
    let peers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("peers")
        .on_thread_start(|| pin(PEERS_CPU).expect("pinning the backend and client to CPU 0"))
        .enable_all()
        .build()?;
    // A task, not block_on's own future: that one would run on this (CPU 1) thread.
    peers.block_on(peers.spawn(peers_task(lbd.handle().clone())))?
}

/// Parses the arguments, starts the backend (on this runtime) and lbd (on `lbd`), and runs the
/// client.
async fn peers_task(lbd: tokio::runtime::Handle) -> anyhow::Result<()> {
    let flags = lb_tests::flags(&["--mode", "--bytes"])?;
    let mode = flags.get("--mode").cloned().unwrap_or_default();
    let bytes: u64 = flags.get("--bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
    let (ktls, http) = match mode.as_str() {
        "ktls" => (KtlsMode::Auto, false),
        "userspace" => (KtlsMode::Off, false),
        "ktls-http" => (KtlsMode::Auto, true),
        "userspace-http" => (KtlsMode::Off, true),
        other => anyhow::bail!("--mode ktls|userspace|ktls-http|userspace-http, not {other:?}"),
    };

    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend.local_addr()?;
    tokio::spawn(async move {
        static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];
        while let Ok((mut tcp, _)) = backend.accept().await {
            tokio::spawn(async move {
                if http {
                    // One request: read its head, answer with the N bytes as the body.
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    let status = format!("HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\ncontent-type: application/octet-stream\r\n\r\n");
                    if tcp.write_all(status.as_bytes()).await.is_err() {
                        return;
                    }
                }
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
    let pool = if http { PoolProtocol::Http } else { PoolProtocol::Tcp };
    let (daemon, port) = lbd.spawn(async move { serve(Daemon::start(ktls), &[backend_addr], tls, pool).await }).await?;
    let cfg = client::config(&[&rustls::version::TLS13], Some(vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256]), &[]);
    // The measured window: the connection, its handshake and the transfer (lbd is running).
    start_mark();
    let mut tls = client::connect(port, "a.example", cfg).await?;
    if http {
        tls.write_all(b"GET /bulk HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n").await?;
    }
    let mut buf = vec![0u8; 256 * 1024];
    let (mut got, mut head, mut in_body) = (0u64, Vec::new(), !http);
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if in_body {
            got += n as u64;
            continue;
        }
        // HTTP mode: the response head comes first; count only the body after it.
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) {
            got += (head.len() - end) as u64;
            head.truncate(end);
            in_body = true;
        }
    }
    stop_mark();
    if http {
        let head = String::from_utf8_lossy(&head);
        anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "response: {head}");
    }
    anyhow::ensure!(got == bytes, "received {got} of {bytes} bytes");
    let metrics = daemon.metrics.encode();
    let offloaded = metrics.lines().any(|l| l.starts_with("lb_tls_connections_total{offload=\"ktls\"") && !l.ends_with(" 0"));
    anyhow::ensure!(offloaded == mode.starts_with("ktls"), "mode {mode} but the connection was {}offloaded:\n{metrics}", if offloaded { "" } else { "not " });
    println!("lb-guest-transfer: {mode}: {got} bytes, offloaded={offloaded}");
    drop(Arc::clone(&daemon));
    Ok(())
}
