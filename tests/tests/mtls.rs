//! TLS both ways, end to end with real peers: client certificate authentication on a
//! TERMINATED_HTTPS listener (curl with and without certificates, a CRL, Octavia's `X-SSL-*`
//! headers), and TLS/mTLS from lbd to members played by `openssl s_server` and Debian's nginx.
//! Certificates come from a CA made with rcgen at test time.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lb_common::model::*;
use lb_tests::fixture::*;
use lb_tests::peers::{Nginx, SServer};
use lb_tests::pki::{Ca, Issued, crl_ders, ders};
use lb_tests::*;
use lb_userspace::daemon::{Daemon, KtlsMode};

/// The listener of `fixture::state` with client authentication and every `X-SSL-*` header on,
/// and its pool with `pool_tls`.
fn state(port: u16, backends: &[SocketAddr], tls: ListenerTls, pool: PoolProtocol, pool_tls: Option<PoolTls>) -> DesiredState {
    let mut s = lb_tests::fixture::state(port, backends, tls, pool);
    s.load_balancers[0].listeners[0].insert_headers.ssl = SslHeaders::all();
    s.load_balancers[0].pools[0].tls = pool_tls;
    s
}

fn client_auth(mode: ClientAuthMode, ca: &Ca, crl: Option<&Path>) -> ClientAuth {
    ClientAuth { mode, ca_certificates: ders(&ca.cert_path), crls: crl.map(crl_ders).unwrap_or_default() }
}

fn listener_tls(dir: &Path, auth: ClientAuth) -> ListenerTls {
    ListenerTls { client_auth: Some(auth), ..tls_settings(bundle(dir, "lb.example"), vec![]) }
}

/// curl through the listener; `Ok(body)` or `Err(curl's exit code)`.
fn curl(port: u16, cert: Option<&Issued>, extra: &[&str]) -> Result<String, i32> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "--max-time", "20", "--resolve", &format!("lb.example:{port}:127.0.0.1")]);
    if let Some(c) = cert {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    let out = cmd.args(extra).arg(format!("https://lb.example:{port}/")).output().unwrap();
    if out.status.success() { Ok(String::from_utf8_lossy(&out.stdout).into_owned()) } else { Err(out.status.code().unwrap_or(-1)) }
}

/// What `openssl x509 -noout <what>` prints for `cert`, after the first `=`.
fn openssl_x509(cert: &Path, what: &[&str]) -> String {
    let out = sh(Command::new("openssl").args(["x509", "-noout"]).args(what).arg("-in").arg(cert));
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().split_once('=').unwrap().1.to_string()
}

/// The SHA-1 fingerprint as HAProxy's `ssl_c_sha1,hex` prints it.
fn sha1_hex(cert: &Path) -> String {
    openssl_x509(cert, &["-fingerprint", "-sha1"]).replace(':', "").to_uppercase()
}

/// Subject and issuer in OpenSSL's one-line form, as HAProxy's `ssl_c_s_dn` / `ssl_c_i_dn` print them.
fn dns(cert: &Path) -> (String, String) {
    (openssl_x509(cert, &["-subject", "-nameopt", "compat"]), openssl_x509(cert, &["-issuer", "-nameopt", "compat"]))
}

fn header<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_client_auth_refuses_missing_unknown_and_revoked_certificates_and_sends_octavia_headers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "client ca");
    let other = Ca::new(dir.path(), "other ca");
    let good = ca.issue("good client", 2, &["good.example"]);
    let revoked = ca.issue("revoked client", 3, &["revoked.example"]);
    let stranger = other.issue("stranger", 2, &["stranger.example"]);
    let crl = ca.crl("client.crl", &[3]);
    let good_sha1 = sha1_hex(&good.cert);
    let (subject, issuer) = dns(&good.cert);
    let backend = echo_backend("one").await;
    let tls = listener_tls(dir.path(), client_auth(ClientAuthMode::Mandatory, &ca, Some(&crl)));
    let daemon = Daemon::start(KtlsMode::Auto);
    let port = free_port();
    assert_eq!(daemon.apply(&state(port, &[backend], tls, PoolProtocol::Http, None)).await.listeners["l1"], Ok(()));

    // A client cannot smuggle its own values: lb sets the headers, it does not append.
    let body = fixture::blocking(move || curl(port, Some(&good), &["-H", "X-SSL-Client-CN: admin"]))
    .await
    .expect("a certificate from the client CA is accepted");
    assert_eq!(header(&body, "x-ssl-client-verify"), Some("0"), "{body}");
    assert_eq!(header(&body, "x-ssl-client-has-cert"), Some("1"), "{body}");
    assert_eq!(header(&body, "x-ssl-client-dn"), Some(format!("\"{subject}\"").as_str()), "{body}");
    assert_eq!(header(&body, "x-ssl-client-cn"), Some("\"good client\""), "{body}");
    assert_eq!(header(&body, "x-ssl-issuer"), Some(format!("\"{issuer}\"").as_str()), "{body}");
    assert_eq!(header(&body, "x-ssl-client-sha1"), Some(format!("\"{good_sha1}\"").as_str()), "{body}");
    assert_eq!(header(&body, "x-ssl-client-not-before"), Some("\"200101000000Z\""), "{body}");
    assert_eq!(header(&body, "x-ssl-client-not-after"), Some("\"20600630000000Z\""), "{body}");
    assert_eq!(body.matches("x-ssl-client-cn").count(), 1, "{body}");

    let no_cert = fixture::blocking(move || curl(port, None, &[])).await;
    assert!(no_cert.is_err(), "no certificate must be refused: {no_cert:?}");
    let revoked_result = fixture::blocking(move || curl(port, Some(&revoked), &[])).await;
    assert!(revoked_result.is_err(), "a revoked certificate must be refused: {revoked_result:?}");
    let stranger_result = fixture::blocking(move || curl(port, Some(&stranger), &[])).await;
    assert!(stranger_result.is_err(), "a certificate from another CA must be refused: {stranger_result:?}");

    let m = daemon.metrics.encode();
    for reason in ["no_certificate", "revoked", "unknown_issuer"] {
        let series = format!(r#"lb_tls_handshake_failures_total{{listener="l1",reason="{reason}"}}"#);
        assert_eq!(metric(&m, &series), 1.0, "{series} in\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_auth_serves_clients_without_certificates_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "client ca");
    let good = ca.issue("good client", 2, &["good.example"]);
    let revoked = ca.issue("revoked client", 3, &["revoked.example"]);
    let crl = ca.crl("client.crl", &[3]);
    let backend = echo_backend("one").await;
    let tls = listener_tls(dir.path(), client_auth(ClientAuthMode::Optional, &ca, Some(&crl)));
    let daemon = Daemon::start(KtlsMode::Auto);
    let port = free_port();
    assert_eq!(daemon.apply(&state(port, &[backend], tls, PoolProtocol::Http, None)).await.listeners["l1"], Ok(()));

    let anonymous = fixture::blocking(move || curl(port, None, &["-H", "X-SSL-Client-DN: forged"])).await.expect("OPTIONAL serves clients without a certificate");
    assert_eq!(header(&anonymous, "x-ssl-client-verify"), Some("0"), "{anonymous}");
    assert_eq!(header(&anonymous, "x-ssl-client-has-cert"), Some("0"), "{anonymous}");
    assert_eq!(header(&anonymous, "x-ssl-client-dn"), None, "no certificate, no DN (a forged one is removed): {anonymous}");

    let with_cert = fixture::blocking(move || curl(port, Some(&good), &[])).await.unwrap();
    assert_eq!(header(&with_cert, "x-ssl-client-has-cert"), Some("1"), "{with_cert}");
    assert_eq!(header(&with_cert, "x-ssl-client-cn"), Some("\"good client\""), "{with_cert}");

    let revoked_result = fixture::blocking(move || curl(port, Some(&revoked), &[])).await;
    assert!(revoked_result.is_err(), "OPTIONAL still refuses a revoked certificate: {revoked_result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ca_and_crl_are_replaced_live() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::new(dir.path(), "first ca");
    let second = Ca::new(dir.path(), "second ca");
    let client = second.issue("client of second", 7, &["c.example"]);
    let backend = echo_backend("one").await;
    let daemon = Daemon::start(KtlsMode::Auto);
    let port = free_port();
    let server_cert = bundle(dir.path(), "lb.example");
    let with = |auth: ClientAuth| ListenerTls { client_auth: Some(auth), ..tls_settings(server_cert.clone(), vec![]) };

    let apply = |auth: ClientAuth| state(port, &[backend], with(auth), PoolProtocol::Http, None);
    assert_eq!(daemon.apply(&apply(client_auth(ClientAuthMode::Mandatory, &first, None))).await.listeners["l1"], Ok(()));
    let try_client = move || {
        let client = client.clone();
        async move { fixture::blocking(move || curl(port, Some(&client), &[])).await }
    };
    assert!(try_client().await.is_err(), "the first CA does not know this client");

    assert_eq!(daemon.apply(&apply(client_auth(ClientAuthMode::Mandatory, &second, None))).await.listeners["l1"], Ok(()));
    assert!(try_client().await.is_ok(), "after the CA is replaced the client is accepted");

    let crl = second.crl("second.crl", &[7]);
    assert_eq!(daemon.apply(&apply(client_auth(ClientAuthMode::Mandatory, &second, Some(&crl)))).await.listeners["l1"], Ok(()));
    assert!(try_client().await.is_err(), "after a CRL revoking it is added the client is refused");
}

fn pool_tls(ca: Option<&Ca>, crl: Option<&Path>, client: Option<&Issued>) -> PoolTls {
    PoolTls {
        ca_certificates: ca.map(|c| vec![c.der()]),
        crls: crl.map(crl_ders).unwrap_or_default(),
        client_certificate: client.map(Issued::bundle),
        server_name: None,
        tls_versions: vec![],
        tls_ciphers: vec![],
        alpn_protocols: vec![],
    }
}

async fn serve_pool(members: &[SocketAddr], dir: &Path, protocol: PoolProtocol, tls: PoolTls) -> (Arc<Daemon>, u16) {
    let daemon = Daemon::start(KtlsMode::Auto);
    let port = free_port();
    let listener = tls_settings(bundle(dir, "lb.example"), vec![]);
    let report = daemon.apply(&state(port, members, listener, protocol, Some(tls))).await;
    assert_eq!(report.listeners["l1"], Ok(()));
    assert_eq!(report.pools["p1"], Ok(()));
    (daemon, port)
}

fn member_errors(daemon: &Daemon, member: &str, reason: &str) -> f64 {
    metric(&daemon.metrics.encode(), &format!(r#"lb_member_errors_total{{pool="p1",member="{member}",reason="{reason}"}}"#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_member_accepts_lbs_client_certificate_and_refuses_a_connection_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "member ca");
    let member_cert = ca.issue("member", 10, &["127.0.0.1"]);
    let lb_client = ca.issue("lb client", 11, &["lb.internal"]);
    let member = SServer::start(&member_cert, Some(&ca.cert_path), "-www");

    let (_with, port) = serve_pool(&[member.addr], dir.path(), PoolProtocol::Http, pool_tls(Some(&ca), None, Some(&lb_client))).await;
    let page = fixture::blocking(move || curl(port, None, &[])).await.expect("the mTLS member accepts lb's certificate");
    assert!(page.contains("Ciphers"), "s_server -www status page expected: {page}");

    let (_without, port) = serve_pool(&[member.addr], dir.path(), PoolProtocol::Http, pool_tls(Some(&ca), None, None)).await;
    let refused = fixture::blocking(move || curl(port, None, &["-o", "/dev/null", "-w", "%{http_code}"])).await.unwrap();
    // With TLS 1.3 the member's refusal (an alert after the client's Finished) arrives when lb
    // sends the request (502); with TLS 1.2 it ends the handshake (503).
    assert!(refused == "502" || refused == "503", "the member refuses lb without a client certificate: {refused}");
}

/// HTTPS health checks of a pool with TLS to its members speak the pool's TLS: an mTLS member
/// (which refuses connections without a client certificate) passes them because lb presents
/// its certificate, and a member whose certificate the pool's CA did not issue fails them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_health_checks_present_the_pools_client_certificate_and_verify_members() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "member ca");
    let other = Ca::new(dir.path(), "other ca");
    let mtls_member = SServer::start(&ca.issue("member", 30, &["127.0.0.1"]), Some(&ca.cert_path), "-www");
    let foreign = SServer::start(&other.issue("foreign member", 31, &["127.0.0.1"]), None, "-www");
    let lb_client = ca.issue("lb client", 32, &["lb.internal"]);
    let daemon = Daemon::start(KtlsMode::Auto);
    let mut s = state(free_port(), &[mtls_member.addr, foreign.addr], tls_settings(bundle(dir.path(), "lb.example"), vec![]), PoolProtocol::Http, Some(pool_tls(Some(&ca), None, Some(&lb_client))));
    s.load_balancers[0].pools[0].health_monitor = Some(HealthMonitor {
        id: "hm".into(),
        kind: MonitorKind::Https,
        delay: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        rise: 1,
        fall: 1,
        http: Some(HttpCheck { method: "GET".into(), path: "/".into(), expected: vec![(200, 200)], host: None }),
        admin_state_up: true,
    });
    assert_eq!(daemon.apply(&s).await.pools["p1"], Ok(()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // No verdict until a member's first check has finished.
        let (m0, m1) = (daemon.health.verdict("m0"), daemon.health.verdict("m1"));
        if let (Some(m0), Some(m1)) = (m0, m1)
            && !m1.healthy
        {
            assert!(m0.healthy, "the mTLS member answers lb's checks");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "verdicts {m0:?} {m1:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = daemon.metrics.encode();
    assert!(metric(&metrics, r#"lb_health_check_failures_total{pool="p1",member="m1",reason="tls"}"#) >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, r#"lb_health_check_failures_total{pool="p1",member="m0",reason="tls"}"#), 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_refuses_members_from_another_ca_revoked_or_named_for_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "member ca");
    let other = Ca::new(dir.path(), "other ca");
    let crl = ca.crl("members.crl", &[21]);
    let cases = [
        ("unknown_issuer", other.issue("foreign member", 20, &["127.0.0.1"])),
        ("revoked", ca.issue("revoked member", 21, &["127.0.0.1"])),
        ("name_mismatch", ca.issue("misnamed member", 22, &["127.0.0.9", "elsewhere.example"])),
    ];
    for (reason, cert) in cases {
        let member = SServer::start(&cert, None, "-www");
        let (daemon, port) = serve_pool(&[member.addr], dir.path(), PoolProtocol::Http, pool_tls(Some(&ca), Some(&crl), None)).await;
        let code = fixture::blocking(move || curl(port, None, &["-o", "/dev/null", "-w", "%{http_code}"])).await.unwrap();
        assert_eq!(code, "503", "{reason}: lb must not talk to this member");
        assert_eq!(member_errors(&daemon, "m0", reason), 1.0, "{reason}\n{}", daemon.metrics.encode());
    }

    // The same misnamed member is fine when the pool names the host its certificate carries.
    let cert = ca.issue("named member", 23, &["api.internal"]);
    let member = SServer::start(&cert, None, "-www");
    let mut tls = pool_tls(Some(&ca), Some(&crl), None);
    tls.server_name = Some("api.internal".into());
    let (_daemon, port) = serve_pool(&[member.addr], dir.path(), PoolProtocol::Http, tls).await;
    assert!(fixture::blocking(move || curl(port, None, &[])).await.unwrap().contains("Ciphers"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_mode_over_tls_to_members_and_unverified_pools_are_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "member ca");
    let member_cert = ca.issue("member", 30, &["127.0.0.1"]);
    let member = SServer::start(&member_cert, None, "-rev");
    // No ca_tls_container_ref: encrypted, not verified, and lbd says so.
    let (daemon, port) = serve_pool(&[member.addr], dir.path(), PoolProtocol::Tcp, pool_tls(None, None, None)).await;
    let out = fixture::blocking(move || {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}"), "-servername", "lb.example"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello member\n").unwrap();
        std::thread::sleep(Duration::from_secs(1));
        drop(stdin);
        let _ = child.kill();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    })
    .await;
    assert!(out.contains("rebmem olleh"), "s_server -rev answers through lb: {out:?}");
    let m = daemon.metrics.encode();
    assert_eq!(metric(&m, r#"lb_member_tls_verification{pool="p1",verification="none"}"#), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_member_with_ssl_verify_client_sees_lbs_certificate_over_reused_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "member ca");
    let member_cert = ca.issue("nginx member", 40, &["127.0.0.1"]);
    let lb_client = ca.issue("lb client", 41, &["lb.internal"]);
    let nginx = Nginx::start(dir.path(), &member_cert, &ca.cert_path, "verify=$ssl_client_verify dn=$ssl_client_s_dn conn=$connection");

    let (daemon, port) = serve_pool(&[nginx.addr], dir.path(), PoolProtocol::Http, pool_tls(Some(&ca), None, Some(&lb_client))).await;
    let url = format!("https://lb.example:{port}/");
    let five = fixture::blocking(move || curl(port, None, &[&url, &url, &url, &url])).await.unwrap();
    let lines: Vec<&str> = five.lines().collect();
    assert_eq!(lines.len(), 5, "{five}");
    assert!(lines.iter().all(|l| l.starts_with("verify=SUCCESS dn=") && l.contains("CN=lb client")), "{five}");
    // One member connection served all five requests: reused, one TLS handshake.
    let conns: std::collections::BTreeSet<&str> = lines.iter().map(|l| l.rsplit('=').next().unwrap()).collect();
    assert_eq!(conns.len(), 1, "{five}");
    let m = daemon.metrics.encode();
    let handshakes = lb_tests::metric_sum(&m, r#"lb_member_tls_connections_total{pool="p1""#);
    assert_eq!(handshakes, 1.0, "{m}");

    // Without lb's client certificate nginx answers 400 itself, and lb passes that on.
    let (_daemon, port) = serve_pool(&[nginx.addr], dir.path(), PoolProtocol::Http, pool_tls(Some(&ca), None, None)).await;
    let code = fixture::blocking(move || curl(port, None, &["-o", "/dev/null", "-w", "%{http_code}"])).await.unwrap();
    assert_eq!(code, "400");
}

/// L7 rules on the client certificate (OPTIONAL client authentication): no certificate is sent
/// to a login page, a certificate whose CN is `mallory` is rejected, the rest are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_rules_on_the_client_certificate_redirect_reject_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "client ca");
    let good = ca.issue("good client", 2, &["good.example"]);
    let mallory = ca.issue("mallory", 3, &["mallory.example"]);
    let backend = echo_backend("one").await;
    let tls = listener_tls(dir.path(), client_auth(ClientAuthMode::Optional, &ca, None));
    let port = free_port();
    let mut st = state(port, &[backend], tls, PoolProtocol::Http, None);
    let rule = |kind, compare, key: Option<&str>, value: &str, invert| L7Rule { kind, compare, key: key.map(str::to_string), value: value.into(), invert };
    st.load_balancers[0].listeners[0].l7policies = vec![
        L7Policy {
            id: "reject-mallory".into(),
            action: L7Action::Reject,
            rules: vec![rule(L7RuleKind::SslVerifyResult, L7Compare::EqualTo, None, "0", false), rule(L7RuleKind::SslDnField, L7Compare::EqualTo, Some("CN"), "mallory", false)],
        },
        L7Policy {
            id: "login".into(),
            action: L7Action::RedirectToUrl { url: "https://login.example/".into(), code: 303 },
            rules: vec![rule(L7RuleKind::SslConnHasCert, L7Compare::EqualTo, None, "True", true)],
        },
    ];
    let daemon = Daemon::start(KtlsMode::Auto);
    assert_eq!(daemon.apply(&st).await.listeners["l1"], Ok(()));
    let status = |cert: Option<Issued>| fixture::blocking(move || curl(port, cert.as_ref(), &["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"]));
    assert_eq!(status(None).await, Ok("303 https://login.example/".into()));
    assert_eq!(status(Some(mallory)).await, Ok("403 ".into()));
    assert_eq!(status(Some(good.clone())).await, Ok("200 ".into()));
    let body = fixture::blocking(move || curl(port, Some(&good), &[])).await.unwrap();
    assert!(body.contains("backend=one"), "{body}");
}
