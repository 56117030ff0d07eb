//! TLS members played by real servers: `openssl s_server` and Debian's nginx, on free loopback
//! ports, stopped when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;
use crate::pki::Issued;

/// `openssl s_server` as a TLS member on a free port: `-Verify 1 -verify_return_error` when
/// `require_client_ca` is given (mTLS member), `-www` (HTTP status page) or `-rev` (raw mode).
pub struct SServer {
    child: Child,
    pub addr: SocketAddr,
}

impl SServer {
    pub fn start(cert: &Issued, require_client_ca: Option<&Path>, mode: &str) -> SServer {
        let port = free_port();
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-quiet", "-accept", &format!("127.0.0.1:{port}"), mode, "-cert"]).arg(&cert.cert).arg("-key").arg(&cert.key);
        if let Some(ca) = require_client_ca {
            cmd.args(["-Verify", "2", "-verify_return_error", "-CAfile"]).arg(ca);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr);
        SServer { child, addr }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something listens on `addr`, without connecting to it (a probe connection would be
/// a failed handshake in the server's log): reads the kernel's listening sockets.
pub fn wait_listening(addr: SocketAddr) {
    let want = format!("{:08X}:{:04X}", u32::from_le_bytes(match addr.ip() { std::net::IpAddr::V4(v) => v.octets(), _ => unreachable!() }), addr.port());
    for _ in 0..200 {
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        if tcp.lines().any(|l| l.split_whitespace().nth(1) == Some(want.as_str()) && l.split_whitespace().nth(3) == Some("0A")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {addr}");
}

/// Debian's nginx as a member, answering with what it saw.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
}

impl Nginx {
    /// An mTLS member (`ssl_verify_client on`) answering `body`.
    pub fn start(dir: &Path, cert: &Issued, ca: &Path, body: &str) -> Nginx {
        Self::with_server(dir, &format!(
            "ssl; ssl_certificate {c}; ssl_certificate_key {k}; ssl_client_certificate {ca}; ssl_verify_client on;\n\
             location / {{ return 200 \"{body}\\n\"; }}",
            c = cert.cert.display(),
            k = cert.key.display(),
            ca = ca.display()
        ))
    }

    /// A member that takes only connections opening with a PROXY protocol header (v1 or v2)
    /// and answers `client CLIENT_ADDR:PORT server SERVER_ADDR:PORT` from it.
    pub fn proxy_protocol(dir: &Path) -> Nginx {
        Self::with_server(
            dir,
            "proxy_protocol;\n\
             location / { return 200 \"client $proxy_protocol_addr:$proxy_protocol_port server $proxy_protocol_server_addr:$proxy_protocol_server_port\\n\"; }",
        )
    }

    /// nginx with one server on a free port: `server` follows `listen 127.0.0.1:PORT ` (listen
    /// parameters, `;`, then the rest of the server block).
    pub fn with_server(dir: &Path, server: &str) -> Nginx {
        let port = free_port();
        let conf = dir.join("nginx.conf");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::write(
            &conf,
            format!(
                "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
                 events {{}}\n\
                 http {{ access_log off; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
                   uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
                   server {{ listen 127.0.0.1:{port} {server} }} }}\n",
                d = dir.display(),
            ),
        )
        .unwrap();
        let child = Command::new("nginx").arg("-c").arg(&conf).arg("-p").arg(dir).arg("-e").arg(dir.join("error.log")).spawn().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        if std::panic::catch_unwind(|| wait_listening(addr)).is_err() {
            panic!("nginx did not start: {}", std::fs::read_to_string(dir.join("error.log")).unwrap_or_default());
        }
        Nginx { child, addr }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

