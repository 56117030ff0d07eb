//! `lb-guest-transfer --mode ktls|userspace[-http][-upload] --bytes N`: one bulk transfer
//! through lbd's data plane in this process, for `cargo xtask bench`'s guest instruction
//! counts. lbd terminates TLS 1.3 AES-128-GCM either in raw mode (TCP pool: splice(2) between
//! the sockets when kTLS is on, a copy loop through rustls when off) or, for the `-http` modes,
//! in HTTP mode (HTTP pool: hyper proxies one request, over kTLS or rustls). lbd runs as with
//! `--ktls-rx-expect-no-pad`: the kernel decrypts the client's records into lbd's buffers.
//! - Download (no suffix): a backend sends N bytes from a static buffer over plain TCP (in
//!   HTTP mode as the body of its answer to one GET); a rustls client reads and discards them.
//! - `-upload`: the rustls client sends N bytes (in HTTP mode as the body of one POST); the
//!   backend reads and discards them, then answers with the count it received.
//!
//! Everything else (boot, start-up, handshake, headers) is the same for every N, so the
//! difference between two sizes is the cost of the bytes alone. Exits non-zero if the bytes
//! did not all arrive or the TLS path was not the one asked for.
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
use lb_userspace::tls::accept::OffloadPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    let (path, upload) = match mode.strip_suffix("-upload") {
        Some(path) => (path, true),
        None => (mode.as_str(), false),
    };
    let (ktls, http) = match path {
        "ktls" => (KtlsMode::Auto, false),
        "userspace" => (KtlsMode::Off, false),
        "ktls-http" => (KtlsMode::Auto, true),
        "userspace-http" => (KtlsMode::Off, true),
        _ => anyhow::bail!("--mode ktls|userspace|ktls-http|userspace-http, each optionally with -upload, not {mode:?}"),
    };
    let transfer = Transfer { bytes, http };

    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = backend.accept().await {
            tokio::spawn(async move {
                let _ = if upload { transfer.receive_at_backend(tcp).await } else { transfer.send_from_backend(tcp).await };
            });
        }
    });

    let dir = tempfile::tempdir()?;
    let tls = tls_settings(bundle(dir.path(), "a.example"), vec![]);
    let pool = if http { PoolProtocol::Http } else { PoolProtocol::Tcp };
    // As `lbd serve --ktls-rx-expect-no-pad` (the client here, rustls, does not pad its records).
    let policy = OffloadPolicy { client_rx_no_pad: true, ..ktls.policy() };
    let (daemon, port) = lbd.spawn(async move { serve(Daemon::start_with(policy), &[backend_addr], tls, pool).await }).await?;
    let cfg = client::config(&[&rustls::version::TLS13], Some(vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256]), &[]);
    // The measured window: the connection, its handshake and the transfer (lbd is running).
    start_mark();
    let tls = client::connect(port, "a.example", cfg).await?;
    let got = if upload { transfer.upload(tls).await } else { transfer.download(tls).await };
    stop_mark();
    let got = got?;
    anyhow::ensure!(got == bytes, "{} {got} of {bytes} bytes", if upload { "the backend received" } else { "received" });
    let metrics = daemon.metrics.encode();
    let offloaded = metrics.lines().any(|l| l.starts_with("lb_tls_connections_total{offload=\"ktls\"") && !l.ends_with(" 0"));
    anyhow::ensure!(offloaded == mode.starts_with("ktls"), "mode {mode} but the connection was {}offloaded:\n{metrics}", if offloaded { "" } else { "not " });
    println!("lb-guest-transfer: {mode}: {got} bytes, offloaded={offloaded}");
    drop(Arc::clone(&daemon));
    Ok(())
}

/// The N bytes every run moves, from a static buffer.
static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];

/// What one run moves: `bytes`, as raw bytes or (`http`) as one request's or response's body.
#[derive(Clone, Copy)]
struct Transfer {
    bytes: u64,
    http: bool,
}

impl Transfer {
    /// Download, backend side: (HTTP: after one request's head) sends the N bytes and closes.
    async fn send_from_backend(self, mut tcp: TcpStream) -> std::io::Result<()> {
        if self.http {
            skip_head(&mut tcp).await?;
            tcp.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\n\r\n", self.bytes).as_bytes()).await?;
        }
        write_bytes(&mut tcp, self.bytes).await?;
        tcp.shutdown().await
    }

    /// Upload, backend side: reads the N bytes (HTTP: one POST's body), then answers with how
    /// many arrived (HTTP: as a 200 response's body) and closes.
    async fn receive_at_backend(self, mut tcp: TcpStream) -> std::io::Result<()> {
        let mut got = if self.http { skip_head(&mut tcp).await? as u64 } else { 0 };
        let mut buf = vec![0u8; 256 * 1024];
        while got < self.bytes {
            match tcp.read(&mut buf).await? {
                0 => break,
                n => got += n as u64,
            }
        }
        let count = got.to_string();
        if self.http {
            tcp.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", count.len()).as_bytes()).await?;
        }
        tcp.write_all(count.as_bytes()).await?;
        tcp.shutdown().await
    }

    /// Download, client side: (HTTP: sends one GET) reads to the end; returns the body's length.
    async fn download(self, mut tls: Client) -> anyhow::Result<u64> {
        if self.http {
            tls.write_all(b"GET /bulk HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n").await?;
        }
        let mut buf = vec![0u8; 256 * 1024];
        let (mut got, mut head, mut in_body) = (0u64, Vec::new(), !self.http);
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
            if let Some(end) = head_end(&head) {
                got += (head.len() - end) as u64;
                head.truncate(end);
                in_body = true;
            }
        }
        if self.http {
            ensure_ok(&head)?;
        }
        Ok(got)
    }

    /// Upload, client side: (HTTP: as one POST's body) sends the N bytes and reads the answer to
    /// the end; returns the count the backend reported.
    async fn upload(self, mut tls: Client) -> anyhow::Result<u64> {
        if self.http {
            tls.write_all(format!("POST /bulk HTTP/1.1\r\nhost: a.example\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", self.bytes).as_bytes()).await?;
        }
        write_bytes(&mut tls, self.bytes).await?;
        tls.flush().await?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await?;
        let body = if self.http {
            let end = head_end(&answer).ok_or_else(|| anyhow::anyhow!("no response head in {:?}", String::from_utf8_lossy(&answer)))?;
            ensure_ok(&answer[..end])?;
            &answer[end..]
        } else {
            &answer[..]
        };
        let body = String::from_utf8_lossy(body);
        body.parse().map_err(|_| anyhow::anyhow!("the backend's count is {body:?}"))
    }
}

type Client = tokio_rustls::client::TlsStream<TcpStream>;

/// Writes `bytes` bytes from [`CHUNK`].
async fn write_bytes(to: &mut (impl AsyncWriteExt + Unpin), mut bytes: u64) -> std::io::Result<()> {
    while bytes > 0 {
        let n = bytes.min(CHUNK.len() as u64) as usize;
        to.write_all(&CHUNK[..n]).await?;
        bytes -= n as u64;
    }
    Ok(())
}

/// Reads past one HTTP head; returns how many body bytes came after it in the same reads.
async fn skip_head(tcp: &mut TcpStream) -> std::io::Result<usize> {
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&head) {
            return Ok(head.len() - end);
        }
        match tcp.read(&mut b).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => head.extend_from_slice(&b[..n]),
        }
    }
}

/// Where the body starts, once `data` holds a whole HTTP head.
fn head_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn ensure_ok(head: &[u8]) -> anyhow::Result<()> {
    let head = String::from_utf8_lossy(head);
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "response: {head}");
    Ok(())
}
