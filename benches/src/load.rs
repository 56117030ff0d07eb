//! Load generators, each a real client process (wrk, h2load, openssl s_time) except the idle
//! connection holder, which is a plain rustls client in this process.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};

/// What one load run produced.
#[derive(Clone, Debug, Default)]
pub struct Load {
    pub requests: f64,
    pub bytes: f64,
    pub seconds: f64,
    pub errors: f64,
    /// Latency percentiles in milliseconds (p50, p99, p99.9) where the generator reports them.
    pub latency_ms: Option<(f64, f64, f64)>,
}

const WRK_REPORT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("LBBENCH %d %d %d %d %f %f %f\n", summary.requests, summary.bytes, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
"#;

/// One `wrk` run: `connections` over `threads` for `seconds` against `url`, with extra headers and
/// Lua added to the report script (a request body, a pause between requests).
pub struct Wrk<'a> {
    pub url: String,
    pub threads: u32,
    pub connections: u32,
    pub seconds: u32,
    pub headers: &'a [&'a str],
    pub lua: String,
}

impl Wrk<'_> {
    /// Runs it here.
    pub fn run(&self, dir: &Path) -> anyhow::Result<Load> {
        self.run_with(Command::new("wrk"), dir)
    }

    /// Runs it inside network namespace `ns`.
    pub fn run_in(&self, ns: &str, dir: &Path) -> anyhow::Result<Load> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "wrk"]);
        self.run_with(cmd, dir)
    }

    fn run_with(&self, mut cmd: Command, dir: &Path) -> anyhow::Result<Load> {
        let script = dir.join("report.lua");
        std::fs::write(&script, format!("{}{WRK_REPORT}", self.lua))?;
        cmd.args(["-t", &self.threads.to_string(), "-c", &self.connections.to_string(), "-d", &format!("{}s", self.seconds), "--timeout", "10s", "-s"]).arg(&script);
        for h in self.headers {
            cmd.args(["-H", h]);
        }
        let out = cmd.arg(&self.url).output().context("failed to run wrk")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find_map(|l| l.strip_prefix("LBBENCH ")).with_context(|| format!("wrk printed no summary: {text}"))?;
        let f: Vec<f64> = line.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
        Ok(Load { requests: f[0], bytes: f[1], seconds: f[2] / 1e6, errors: f[3], latency_ms: Some((f[4], f[5], f[6])) })
    }
}

/// Lua for `wrk` that POSTs a body of `size` bytes with every request.
pub fn upload_lua(size: usize) -> String {
    format!("wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {size})\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n")
}

/// Lua for `wrk` that paces each connection so `connections` together offer about `rate`
/// requests per second: a random pause averaging `connections / rate` between a response and
/// the next request (random, so connections do not fall into step).
pub fn paced_lua(rate: f64, connections: u32) -> String {
    let mean_ms = connections as f64 / rate * 1000.0;
    format!("math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))\nfunction delay() return math.random() * {:.3} end\n", 2.0 * mean_ms)
}

/// `h2load` over h2 for `seconds` with `connections` × `streams` concurrent requests.
pub fn h2load(url: &str, connections: u32, streams: u32, seconds: u32) -> anyhow::Result<Load> {
    let (c, m, d) = (connections.to_string(), streams.to_string(), seconds.to_string());
    h2load_run(&["-c", &c, "-m", &m, "-t", "1", "-D", &d, url], seconds as f64)
}

/// Runs `h2load` with `args` (which end with the URL) and parses its summary; `seconds` stands
/// in for the elapsed time if h2load does not print it.
pub fn h2load_run(args: &[&str], seconds: f64) -> anyhow::Result<Load> {
    let out = Command::new("h2load").args(args).output().context("failed to run h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |prefix: &str, idx: usize| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
        line.split_whitespace().nth(idx)?.trim_end_matches(['s', ',']).parse().ok()
    };
    let done = num("requests:", 5).with_context(|| format!("h2load output: {text}"))?;
    // "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    let failed = num("requests:", 9).unwrap_or(0.0) + num("requests:", 11).unwrap_or(0.0);
    let bytes = num("traffic:", 2).unwrap_or(0.0);
    let seconds = text.lines().find_map(|l| l.strip_prefix("finished in ")?.split(',').next()?.trim_end_matches('s').parse().ok()).unwrap_or(seconds);
    Ok(Load { requests: done, bytes, seconds, errors: failed, latency_ms: None })
}

/// `openssl s_time` new (full) or reused (resumed) handshakes for `seconds`, one request each.
pub fn s_time(port: u16, resumed: bool, seconds: u32) -> anyhow::Result<Load> {
    let out = Command::new("openssl")
        .args(["s_time", "-connect", &format!("127.0.0.1:{port}"), if resumed { "-reuse" } else { "-new" }, "-time", &seconds.to_string(), "-www", "/1k"])
        .output()
        .context("failed to run openssl s_time")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "1234 connections in 5.01s; 246.31 connections/user sec, bytes read 1234567"
    let line = text.lines().find(|l| l.contains("connections in") && l.contains("bytes read")).with_context(|| format!("s_time output: {text}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let conns: f64 = words[0].parse()?;
    let secs: f64 = words[3].trim_end_matches(['s', ';']).parse()?;
    let bytes: f64 = words.last().unwrap().parse()?;
    Ok(Load { requests: conns, bytes, seconds: secs, errors: 0.0, latency_ms: None })
}

/// Opens `n` TLS connections to `port` (completing each handshake) and keeps them open until the
/// returned value is dropped.
pub fn idle_connections(port: u16, n: usize) -> anyhow::Result<Vec<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>> {
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer))
            .with_no_client_auth(),
    );
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let tcp = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("connection {i}"))?;
        // A server that stops completing handshakes (a connection limit) fails the run, not hangs it.
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        let conn = rustls::ClientConnection::new(config.clone(), "bench.example".try_into()?)?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).with_context(|| format!("handshake {i}"))?;
        }
        s.flush()?;
        held.push(s);
    }
    if held.len() != n {
        bail!("opened {} of {n}", held.len());
    }
    Ok(held)
}

/// The benchmark client trusts the certificate it generated itself; verification is not what is
/// being measured.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &rustls::pki_types::CertificateDer<'_>, _: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(&self, _: &[u8], _: &rustls::pki_types::CertificateDer<'_>, _: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
    }
}
