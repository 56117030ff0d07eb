//! The processes a benchmark run starts: the HTTP backend every contender forwards to (Debian's
//! nginx, plain HTTP, static files) and the contenders themselves, all on loopback with the same
//! certificate (ECDSA P-256) and the same TLS policy (TLS 1.3, TLS_AES_128_GCM_SHA256).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::procs;

/// A running server process group, killed when dropped.
pub struct Server {
    pub name: &'static str,
    pub port: u16,
    /// The same service with an RSA-2048 certificate (TLS contenders).
    pub rsa_port: Option<u16>,
    child: Child,
    /// What the run should know about this contender (e.g. whether nginx's kTLS took effect).
    pub note: String,
}

impl Server {
    fn spawn(name: &'static str, port: u16, cmd: &mut Command) -> anyhow::Result<Server> {
        let child = cmd.process_group(0).stdin(Stdio::null()).spawn().with_context(|| format!("failed to run {cmd:?}"))?;
        let mut s = Server { name, port, rsa_port: None, child, note: String::new() };
        s.wait_listening()?;
        Ok(s)
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        // Generous: lbd under valgrind takes several seconds to start.
        wait_listening(self.name, self.port, &mut self.child, Duration::from_secs(60))
    }

    /// The first process (lbd itself, or nginx's and HAProxy's master).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's processes (master and workers).
    pub fn pids(&self) -> Vec<u32> {
        procs::tree(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Connections each server is configured for: what the open-file limit allows a proxy (two
/// descriptors per connection), at most 40000.
pub fn max_connections() -> u64 {
    ((procs::nofile().saturating_sub(200)) / 2).min(40_000)
}

/// Idle TLS connections the idle scenario holds: 10000, or fewer if the open-file limit is
/// lower. An idle connection costs the contender one descriptor (no backend connection) and the
/// harness one, each in its own process.
pub fn idle_connections() -> u64 {
    procs::nofile().saturating_sub(500).min(10_000)
}

/// Starts contender `name` with its files under `dir`.
pub fn start(name: &str, lbd_bin: &Path, dir: &Path, certs: &Certs, backend: u16) -> anyhow::Result<Server> {
    std::fs::create_dir_all(dir)?;
    match name {
        "lbd" => lbd(lbd_bin, dir, certs, backend, "lbd"),
        "lbd-baseline" => lbd(lbd_bin, dir, certs, backend, "lbd-baseline"),
        "lbd-ktls" => lbd(lbd_bin, dir, certs, backend, "lbd-ktls"),
        "lbd-raw" => lbd(lbd_bin, dir, certs, backend, "lbd-raw"),
        "lbd-ktls-raw" => lbd(lbd_bin, dir, certs, backend, "lbd-ktls-raw"),
        "haproxy" => haproxy(dir, Some(certs), backend),
        "nginx" => nginx_tls(&dir.join("nginx"), certs, backend),
        "tcp-proxy" => haproxy(dir, None, backend),
        other => bail!("no contender named {other}"),
    }
}

/// Whether contender `name` is lbd in raw mode.
pub fn is_raw(name: &str) -> bool {
    name.starts_with("lbd") && name.ends_with("-raw")
}

/// Whether contender `name` forwards bytes rather than proxying HTTP: the plain TCP proxy and
/// lbd's raw mode. They run only the scenarios [`Scenario::forwarding_ok`] allows and do not
/// set the half-load rate.
///
/// [`Scenario::forwarding_ok`]: crate::scenarios::Scenario::forwarding_ok
pub fn forwards_bytes(name: &str) -> bool {
    name == "tcp-proxy" || is_raw(name)
}

/// Waits until something accepts on 127.0.0.1:`port`, failing as soon as `child` (the server
/// meant to listen there) exits: a server that cannot bind (the port taken since it was chosen)
/// exits, and waiting on would end up talking to whatever holds the port.
pub fn wait_listening(name: &str, port: u16, child: &mut Child, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited ({status}) before listening on port {port}");
        }
        if started.elapsed() > timeout {
            bail!("{name} did not listen on port {port} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub use lb_tests::free_port;

fn nginx(name: &'static str, dir: &Path, http_block: &str) -> anyhow::Result<Server> {
    std::fs::create_dir_all(dir.join("tmp"))?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2; worker_rlimit_nofile {nofile}; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 32768; }}\n\
             http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n\
               fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n{http_block}\n}}\n",
            d = dir.display(),
            nofile = procs::nofile()
        ),
    )?;
    let port = http_block.split("listen 127.0.0.1:").nth(1).and_then(|r| r.split([' ', ';']).next()).and_then(|p| p.parse().ok()).context("port")?;
    Server::spawn(name, port, Command::new("nginx").arg("-c").arg(&conf).arg("-p").arg(dir).arg("-e").arg(dir.join("error.log")))
}

/// The backend: nginx serving `/1k`, `/1m`, `/64m` over plain HTTP/1.1 keep-alive, and taking
/// request bodies of any size at `/upload`: read whole (in memory) before it answers with `/1k`,
/// as an application accepting an upload would, rather than answering early.
pub fn backend(dir: &Path) -> anyhow::Result<Server> {
    let root = dir.join("www");
    std::fs::create_dir_all(&root)?;
    for (name, size) in [("1k", 1 << 10), ("1m", 1 << 20), ("64m", 64 << 20)] {
        std::fs::write(root.join(name), vec![b'x'; size])?;
    }
    let port = free_port();
    nginx("backend", dir, &format!("server {{ listen 127.0.0.1:{port} reuseport; root {};\n  location / {{ }}\n  location = /upload {{ client_max_body_size 0; client_body_buffer_size 2m;\n    proxy_pass http://127.0.0.1:{port}/1k; proxy_method GET; proxy_pass_request_body off; proxy_set_header Content-Length \"\"; }} }}", root.display()))
}

/// nginx terminating TLS and proxying to the backend, with `ssl_conf_command Options KTLS`, on
/// one port per certificate (ECDSA, RSA).
pub fn nginx_tls(dir: &Path, certs: &Certs, backend: u16) -> anyhow::Result<Server> {
    let (port, rsa_port) = (free_port(), free_port());
    let server = |port: u16, cert: &Path, key: &Path| {
        format!(
            "server {{ listen 127.0.0.1:{port} ssl http2; ssl_certificate {c}; ssl_certificate_key {k};\n\
               ssl_protocols TLSv1.3; ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256; ssl_conf_command Options KTLS;\n\
               ssl_session_cache shared:S:10m; client_max_body_size 0; proxy_request_buffering off;\n\
               location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering on; }} }}\n",
            c = cert.display(),
            k = key.display()
        )
    };
    let mut s = nginx(
        "nginx",
        dir,
        &format!(
            "upstream b {{ server 127.0.0.1:{backend}; keepalive 128; }}\n{}{}",
            server(port, &certs.cert, &certs.key),
            server(rsa_port, &certs.rsa_cert, &certs.rsa_key)
        ),
    )?;
    s.rsa_port = Some(rsa_port);
    s.note = nginx_ktls_note(port);
    Ok(s)
}

/// Whether nginx's `ssl_conf_command Options KTLS` took effect (it needs a kernel with kTLS and
/// an OpenSSL built with it): one HTTPS request through nginx, and the kernel's kTLS socket
/// counters before and after.
fn nginx_ktls_note(port: u16) -> String {
    let Some(before) = lb_userspace::tls::offload::tls_stat() else {
        return "ssl_conf_command Options KTLS set but not in effect: this kernel has no kTLS".into();
    };
    let probe = Command::new("curl").args(["-sk", "-o", "/dev/null", &format!("https://127.0.0.1:{port}/1k")]).status();
    let after = lb_userspace::tls::offload::tls_stat().unwrap_or_default();
    let opened = |keys: [&str; 2]| -> u64 { keys.iter().map(|k| after.get(*k).unwrap_or(&0).saturating_sub(*before.get(*k).unwrap_or(&0))).sum() };
    let (tx, rx) = (opened(["TlsTxSw", "TlsTxDevice"]), opened(["TlsRxSw", "TlsRxDevice"]));
    match probe {
        Ok(st) if st.success() && tx + rx > 0 => format!("ssl_conf_command Options KTLS in effect: one request through nginx opened {tx} kTLS TX and {rx} RX sockets (/proc/net/tls_stat)"),
        Ok(st) if st.success() => "ssl_conf_command Options KTLS set but not in effect: a request through nginx opened no kTLS socket (/proc/net/tls_stat unchanged), so its OpenSSL does not offload".into(),
        _ => "ssl_conf_command Options KTLS set; the probe request through nginx failed, so whether it took effect is unknown".into(),
    }
}

/// HAProxy terminating TLS in `mode http` (a frontend per certificate), or plain `mode tcp`
/// without TLS (the ceiling).
pub fn haproxy(dir: &Path, certs: Option<&Certs>, backend: u16) -> anyhow::Result<Server> {
    let (port, rsa_port) = (free_port(), free_port());
    let (name, mode, frontends) = match certs {
        Some(c) => (
            "haproxy",
            "http",
            format!(
                "frontend f\n  bind 127.0.0.1:{port} ssl crt {} alpn h2,http/1.1\n  default_backend b\n\
                 frontend r\n  bind 127.0.0.1:{rsa_port} ssl crt {} alpn h2,http/1.1\n  default_backend b\n",
                c.pem.display(),
                c.rsa_pem.display()
            ),
        ),
        None => ("tcp-proxy", "tcp", format!("frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n")),
    };
    let conf = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &conf,
        format!(
            "global\n  nbthread 2\n  maxconn {maxconn}\n  no strict-limits\n  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n\
             defaults\n  mode {mode}\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n\
             {frontends}\
             backend b\n  server s1 127.0.0.1:{backend} maxconn 10000\n",
            // Enough for the idle scenario's connections, even when the open-file limit is too
            // low for that many proxied ones (two descriptors each): `no strict-limits` makes
            // HAProxy warn about it instead of refusing to start.
            maxconn = max_connections().max(idle_connections() + 100)
        ),
    )?;
    let mut s = Server::spawn(name, port, Command::new("haproxy").arg("-db").arg("-f").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()))?;
    s.rsa_port = certs.map(|_| rsa_port);
    Ok(s)
}

/// lbd as the contender `name`, configured through its own API (Barbican PKCS#12 secret, a fully
/// populated Octavia load balancer), TLS 1.3 AES-128-GCM: `lbd-ktls` with `--ktls auto`, the
/// others (`lbd`, `lbd-baseline`) with `--ktls off` (userspace rustls).
pub fn lbd(bin: &Path, dir: &Path, certs: &Certs, backend: u16, name: &'static str) -> anyhow::Result<Server> {
    lbd_run(Command::new(bin), dir, certs, backend, name)
}

/// As [`lbd`], with `cmd` (lbd, or a wrapper such as valgrind followed by lbd) as the program.
/// The contender's name says its mode: `lbd-ktls*` runs `--ktls auto --ktls-rx-expect-no-pad`
/// (else `--ktls off`),
/// `*-raw` forwards the decrypted bytes to the backend unparsed (a `TCP` pool: splice(2) between
/// the sockets once kTLS holds the keys, rustls and a copy loop otherwise) instead of proxying
/// HTTP with hyper.
pub fn lbd_run(mut cmd: Command, dir: &Path, certs: &Certs, backend: u16, name: &'static str) -> anyhow::Result<Server> {
    let api = free_port();
    let ktls = name.starts_with("lbd-ktls");
    let (pool_protocol, alpn) = if is_raw(name) { ("TCP", json!(["http/1.1"])) } else { ("HTTP", json!(["h2", "http/1.1"])) };
    let state = dir.join(format!("{name}-state"));
    cmd.args(["serve", "--api-listen", &format!("127.0.0.1:{api}"), "--ktls", if ktls { "auto" } else { "off" }])
        // The generators (OpenSSL, nghttp2, rustls) do not pad their records.
        .args(ktls.then_some("--ktls-rx-expect-no-pad"))
        .env("LBD_STATE_DIR", &state)
        .env("LBD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?);
    let mut server = Server::spawn(name, api, &mut cmd)?;
    let password = std::fs::read_to_string(state.join("admin-password")).context("lbd admin password")?;
    let url = format!("http://127.0.0.1:{api}");
    let token = token(&url, password.trim())?;
    use base64::Engine;
    let mut refs = Vec::new();
    for (name, p12) in [("bench", &certs.p12), ("bench-rsa", &certs.rsa_p12)] {
        let secret = call(&url, &token, "/v1/secrets/", json!({"name": name, "payload": base64::engine::general_purpose::STANDARD.encode(std::fs::read(p12)?),
            "payload_content_type": "application/octet-stream", "payload_content_encoding": "base64"}))?;
        refs.push(secret["secret_ref"].clone());
    }
    let (port, rsa_port) = (free_port(), free_port());
    let listener = |name: &str, port: u16, cert: &Value| {
        json!({"name": name, "protocol": "TERMINATED_HTTPS", "protocol_port": port, "connection_limit": -1,
            "default_tls_container_ref": cert, "tls_versions": ["TLSv1.3"], "tls_ciphers": "TLS_AES_128_GCM_SHA256",
            "alpn_protocols": alpn,
            "default_pool": {"name": format!("p-{name}"), "protocol": pool_protocol, "lb_algorithm": "ROUND_ROBIN",
                "members": [{"address": "127.0.0.1", "protocol_port": backend}]}})
    };
    let lb = json!({"loadbalancer": {"name": "bench", "vip_subnet_id": "lo-127.0.0.0", "vip_address": "127.0.0.1",
        "listeners": [listener("ecdsa", port, &refs[0]), listener("rsa", rsa_port, &refs[1])]}});
    call(&url, &token, "/v2.0/lbaas/loadbalancers", lb)?;
    server.rsa_port = Some(rsa_port);
    server.port = port;
    server.wait_listening()?;
    Ok(server)
}

fn curl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().context("failed to run curl")?;
    if !out.status.success() {
        bail!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn token(url: &str, password: &str) -> anyhow::Result<String> {
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": password}}},
                      "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}});
    let head = curl(&["-D", "-", "-o", "/dev/null", "-X", "POST", "-H", "content-type: application/json", "-d", &body.to_string(), &format!("{url}/v3/auth/tokens")])?;
    head.lines().find_map(|l| l.strip_prefix("x-subject-token: ")).map(|t| t.trim().to_string()).context("no token from lbd")
}

pub fn call(url: &str, token: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let out = curl(&["-X", "POST", "-H", "content-type: application/json", "-H", &format!("x-auth-token: {token}"), "-d", &body.to_string(), &format!("{url}{path}")])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("{path}: {out}"))?;
    if v.get("faultstring").is_some() || v.get("error").is_some() {
        bail!("{path}: {out}");
    }
    Ok(v)
}

/// The certificates: ECDSA P-256 and RSA-2048, each as PEM files, a combined PEM (HAProxy) and
/// PKCS#12 (lbd).
pub struct Certs {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pem: PathBuf,
    pub p12: PathBuf,
    pub rsa_cert: PathBuf,
    pub rsa_key: PathBuf,
    pub rsa_pem: PathBuf,
    pub rsa_p12: PathBuf,
}

pub fn certs(dir: &Path) -> anyhow::Result<Certs> {
    let one = |name: &str, newkey: &[&str]| -> anyhow::Result<[PathBuf; 4]> {
        let [cert, key, pem, p12] = ["crt", "key", "pem", "p12"].map(|ext| dir.join(format!("{name}.{ext}")));
        crate::run(Command::new("openssl").args(["req", "-x509", "-newkey"]).args(newkey).args(["-nodes", "-days", "2"])
            .arg("-keyout").arg(&key).arg("-out").arg(&cert).args(["-subj", "/CN=bench.example", "-addext", "subjectAltName=DNS:bench.example"]))?;
        std::fs::write(&pem, [std::fs::read(&cert)?, std::fs::read(&key)?].concat())?;
        crate::run(Command::new("openssl").args(["pkcs12", "-export", "-passout", "pass:"]).arg("-in").arg(&cert).arg("-inkey").arg(&key).arg("-out").arg(&p12))?;
        Ok([cert, key, pem, p12])
    };
    let [cert, key, pem, p12] = one("b", &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"])?;
    let [rsa_cert, rsa_key, rsa_pem, rsa_p12] = one("rsa", &["rsa:2048"])?;
    Ok(Certs { cert, key, pem, p12, rsa_cert, rsa_key, rsa_pem, rsa_p12 })
}
