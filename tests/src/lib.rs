//! Test support: certificates made with the `openssl` CLI, a real hyper backend, free ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Runs a command, panicking with its stderr when it fails.
pub fn sh(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A self-signed P-256 certificate for `name` in `dir`: returns (cert.pem, key.pem).
pub fn self_signed(dir: &Path, name: &str, days: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    sh(Command::new("openssl").args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .arg("-keyout").arg(&key).arg("-out").arg(&cert)
        .args(["-days", days, "-subj", &format!("/CN={name}"), "-addext", &format!("subjectAltName=DNS:{name}")]));
    (cert, key)
}

/// Exports `cert` + `key` as PKCS#12 with `pass`; `legacy` uses OpenSSL's RC2/3DES encoding.
pub fn pkcs12(dir: &Path, cert: &Path, key: &Path, pass: &str, legacy: bool) -> Vec<u8> {
    let out = dir.join(format!("bundle-{legacy}-{}.p12", pass.len()));
    let mut cmd = Command::new("openssl");
    cmd.args(["pkcs12", "-export"]).arg("-in").arg(cert).arg("-inkey").arg(key).arg("-out").arg(&out)
        .args(["-passout", &format!("pass:{pass}")]);
    if legacy {
        cmd.arg("-legacy");
    }
    sh(&mut cmd);
    std::fs::read(out).unwrap()
}

/// A free TCP port on loopback, never one this process has handed out before: the tests of
/// one binary run as threads of one process, and the kernel may give two of them the same
/// port between the probe here and the bind by whoever uses it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Serves HTTP/1.1 and h2 on a free loopback port with `handler`, one task per connection.
pub async fn serve_http<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<hyper::Response<B>, std::io::Error>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_http_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), handler)
}

/// Serves HTTP/1.1 and h2 on `listener` (bound anywhere, in any network namespace) with
/// `handler`, one task per connection. Must be called within a tokio runtime.
pub fn serve_http_on<F, Fut, B>(listener: std::net::TcpListener, handler: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<hyper::Response<B>, std::io::Error>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(handler))
                    .await;
            });
        }
    });
    addr
}

/// An HTTP backend that answers every request with the request's headers, one per line,
/// prefixed by `name`.
pub async fn echo_backend(name: &'static str) -> SocketAddr {
    serve_http(move |req: hyper::Request<hyper::body::Incoming>| async move {
        let mut body = format!("backend={name}\npath={}\n", req.uri());
        for (k, v) in req.headers() {
            body.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        Ok(hyper::Response::new(Full::new(Bytes::from(body))))
    })
    .await
}

pub mod api;
pub mod bulk;
pub mod client;
pub mod fixture;
pub mod lbd;
pub mod netns;
pub mod peers;
pub mod pki;

/// The `--name value` flags of a small helper binary (`lb-guest-*`), each one of `names`.
pub fn flags(names: &[&str]) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut args = std::env::args().skip(1);
    let mut out = std::collections::HashMap::new();
    while let Some(a) = args.next() {
        anyhow::ensure!(names.contains(&a.as_str()), "unknown argument {a:?} (expected {})", names.join(", "));
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"))?;
        out.insert(a, value);
    }
    Ok(out)
}

/// The value of the Prometheus sample `series` (name with labels, exactly as exposed), 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The sum of the Prometheus samples whose series starts with `prefix` (e.g. a name and `{`
/// for every label set, or a name and its first labels).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// A three-level PKI written to `dir` as PEM: `root.crt`, `inter.crt`, `leaf.crt`, `leaf.key`
/// (leaf for DNS name `name`, issued by the intermediate, issued by the root).
pub struct Chain {
    pub root: PathBuf,
    pub intermediate: PathBuf,
    pub leaf: PathBuf,
    pub leaf_key: PathBuf,
}

pub fn chain(dir: &Path, name: &str) -> Chain {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_params = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root = ca_params("lb test root").self_signed(&root_key).unwrap();
    let inter_key = KeyPair::generate().unwrap();
    let inter = ca_params("lb test intermediate").signed_by(&inter_key, &root, &root_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec![name.to_string()]).unwrap();
    leaf_params.distinguished_name.push(DnType::CommonName, name);
    let leaf = leaf_params.signed_by(&leaf_key, &inter, &inter_key).unwrap();
    let write = |file: &str, pem: String| {
        let p = dir.join(file);
        std::fs::write(&p, pem).unwrap();
        p
    };
    Chain {
        root: write("root.crt", root.pem()),
        intermediate: write("inter.crt", inter.pem()),
        leaf: write("leaf.crt", leaf.pem()),
        leaf_key: write("leaf.key", leaf_key.serialize_pem()),
    }
}
