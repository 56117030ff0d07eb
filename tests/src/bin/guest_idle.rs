//! `lb-guest-idle --ktls auto|off --conns N`: the memory of N idle TLS connections held open to
//! a real `lbd` process (`$LBD_BIN`), for `cargo xtask bench`'s guest half, where the kernel has
//! kTLS. Memory does not depend on emulation speed, so unlike guest timings this figure is real.
//!
//! lbd gets one TERMINATED_HTTPS listener through its API (a PKCS#12 secret in Barbican, an
//! Octavia load balancer with an HTTP pool); a rustls client completes N TLS 1.3 handshakes and
//! sends nothing more. With `--ktls auto` every connection is offloaded, so lbd holds no rustls
//! state for it; with `off` the records stay in rustls. Writes one JSON object to
//! `$LB_GUEST_RESULT` (lbd's RSS and anonymous RSS before and after, the connections on the
//! path) and exits non-zero if a connection failed or was not on the path asked for.

use std::time::Duration;

use lb_tests::api::Api;
use lb_tests::lbd::Lbd;
use lb_tests::{client, free_port, metric, pkcs12, self_signed};
use serde_json::json;

/// A `/proc/PID/status` field in KiB (`VmRSS`, `RssAnon`).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).ok_or_else(|| anyhow::anyhow!("no {field} for {pid}"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// Raises the open-file limit for this process and lbd (its child): one descriptor per
/// connection on each side.
fn raise_nofile(n: u64) -> anyhow::Result<()> {
    let want = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
        anyhow::bail!("raising the open-file limit to {n}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let flags = lb_tests::flags(&["--ktls", "--conns"])?;
    let ktls = flags.get("--ktls").cloned().unwrap_or_default();
    let conns: usize = flags.get("--conns").and_then(|v| v.parse().ok()).unwrap_or(0);
    anyhow::ensure!(ktls == "auto" || ktls == "off", "--ktls auto|off, not {ktls:?}");
    anyhow::ensure!(conns > 0, "--conns N (N > 0)");
    let out = std::env::var("LB_GUEST_RESULT").map_err(|_| anyhow::anyhow!("LB_GUEST_RESULT is not set"))?;
    raise_nofile(conns as u64 + 1000)?;

    // A member that is never reached: idle connections send no request.
    let member = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let member_port = member.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let work = dir.path().to_path_buf();
    let mode = ktls.clone();
    let (lbd, api, port) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Lbd, Api, u16)> {
        let lbd = Lbd::start_with(&work, "127.0.0.1".parse()?, &["--ktls", &mode]);
        let api = Api::login(&lbd);
        let (c, k) = self_signed(&work, "idle.example", "30");
        use base64::Engine;
        let p12 = base64::engine::general_purpose::STANDARD.encode(pkcs12(&work, &c, &k, "", false));
        let (code, secret) = api.post("/v1/secrets/", json!({"name": "idle", "payload": p12, "payload_content_type": "application/octet-stream", "payload_content_encoding": "base64"}));
        anyhow::ensure!(code == 201, "secret: {code} {secret}");
        let port = free_port();
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": "idle", "vip_address": "127.0.0.1",
            "listeners": [{"name": "l", "protocol": "TERMINATED_HTTPS", "protocol_port": port, "connection_limit": -1,
                           "default_tls_container_ref": secret["secret_ref"],
                           "default_pool": {"name": "p", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                                            "members": [{"address": "127.0.0.1", "protocol_port": member_port}]}}]}}));
        anyhow::ensure!(code == 201, "load balancer: {code} {lb}");
        api.wait_active(lb["loadbalancer"]["id"].as_str().unwrap_or_default());
        Ok((lbd, api, port))
    })
    .await??;
    let pid = lbd.pid().ok_or_else(|| anyhow::anyhow!("lbd is not running"))?;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, anon_before) = (status_kib(pid, "VmRSS")?, status_kib(pid, "RssAnon")?);

    let cfg = client::config(&[&rustls::version::TLS13], Some(vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256]), &[]);
    let mut held = Vec::with_capacity(conns);
    for i in 0..conns {
        let tls = client::connect(port, "idle.example", cfg.clone()).await.map_err(|e| anyhow::anyhow!("connection {i}: {e}"))?;
        held.push(tls);
    }
    // lbd finishes its side (the kTLS hand-over) after the client's handshake completes.
    let series = format!("lb_tls_connections_total{{offload=\"{}\",reason=\"{}\"}}", if ktls == "auto" { "ktls" } else { "userspace" }, if ktls == "auto" { "installed" } else { "disabled_by_config" });
    let metrics_url = format!("{}/metrics", api.url);
    let mut on_path = 0.0;
    for _ in 0..600 {
        let text = tokio::task::spawn_blocking({
            let url = metrics_url.clone();
            move || std::process::Command::new("curl").args(["-s", &url]).output().map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        })
        .await??;
        on_path = metric(&text, &series);
        if on_path as usize >= conns {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(on_path as usize == conns, "{on_path} of {conns} connections counted as {series}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, anon_after) = (status_kib(pid, "VmRSS")?, status_kib(pid, "RssAnon")?);
    let result = json!({"ktls": ktls, "conns": conns, "rss_before_kib": before, "rss_after_kib": after,
                        "anon_before_kib": anon_before, "anon_after_kib": anon_after, "on_path": on_path});
    println!("lb-guest-idle: {result}");
    std::fs::write(out, result.to_string())?;
    drop(held);
    Ok(())
}
