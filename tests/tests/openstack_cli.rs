//! The stock `openstack` CLI (python-openstackclient + octaviaclient + barbicanclient, in the
//! venv `cargo xtask setup` installs) against a real `lbd` process: the Octavia/Barbican how-to
//! commands run verbatim in bash, then real clients (curl, openssl s_client) check what the data
//! plane serves. Negative cases go through the CLI and raw HTTP; a restart test kills lbd with
//! SIGKILL and checks that everything comes back and serves.

use std::path::Path;
use std::process::Command;

use lb_tests::lbd::Lbd;
use lb_tests::{chain, echo_backend, free_port, pkcs12, self_signed, sh};

/// The certificate subject lbd serves for `sni` on `port`, and how many certificates it sent.
fn served(port: u16, sni: &str) -> (String, usize) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", sni, "-showcerts"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let subject = text.lines().find(|l| l.starts_with("subject=")).unwrap_or("").to_string();
    (subject, text.matches("-----BEGIN CERTIFICATE-----").count())
}

fn curl_body(port: u16, host: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "--resolve", &format!("{host}:{port}:127.0.0.1"), &format!("https://{host}:{port}/howto")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Waits until the listener on `port` serves `host` (the controller applies asynchronously).
fn wait_serving(port: u16, host: &str) -> String {
    for _ in 0..100 {
        let body = curl_body(port, host);
        if body.contains("backend=") {
            return body;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("listener on {port} never served {host}");
}

fn write_pkcs12(dir: &Path, name: &str) {
    let (c, k) = self_signed(dir, name, "30");
    let der = pkcs12(dir, &c, &k, "", false);
    std::fs::write(dir.join(format!("{name}.p12")), der).unwrap();
}

/// The Octavia cookbook's TLS-terminated HTTPS load balancer, verbatim: a PKCS12 secret, a load
/// balancer, a TERMINATED_HTTPS listener on `port`, a pool and one member on `backend_port`.
fn howto(lbd: &Lbd, work: &Path, port: u16, backend_port: u16) {
    lbd.script(work, &format!(r#"
openstack secret store --name='tls_secret1' -t 'application/octet-stream' -e 'base64' --payload="$(base64 < www.example.p12)"
openstack loadbalancer create --name lb1 --vip-subnet-id lo-127.0.0.0 --vip-address 127.0.0.1 --wait
openstack loadbalancer listener create --protocol-port {port} --protocol TERMINATED_HTTPS --name listener1 --default-tls-container=$(openstack secret list | awk '/ tls_secret1 / {{print $2}}') --wait lb1
openstack loadbalancer pool create --name pool1 --lb-algorithm ROUND_ROBIN --listener listener1 --protocol HTTP --wait
openstack loadbalancer member create --address 127.0.0.1 --protocol-port {backend_port} --wait pool1
"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn howto_terminated_https_with_pkcs12_containers_sni_rotation_and_cascade_delete() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("one").await;
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lbd = Lbd::start(&work);
        let port = free_port();
        write_pkcs12(&work, "www.example");
        // Octavia cookbook: TLS-terminated HTTPS load balancer with a PKCS12 secret.
        howto(&lbd, &work, port, backend.port());
        lbd.script(&work, "openstack loadbalancer healthmonitor create --delay 5 --max-retries 4 --timeout 10 --type HTTP --url-path / --wait pool1");
        let body = wait_serving(port, "www.example");
        assert!(body.contains("x-forwarded-proto: https") || body.contains("backend=one"), "{body}");
        assert!(served(port, "www.example").0.contains("CN = www.example"));

        // Typed secrets (certificate, key, intermediate) in a certificate container, as an SNI
        // certificate: the full chain is served for that name.
        let pki = chain(&work, "two.example");
        lbd.script(&work, &format!(r#"
openstack secret store --name cert2 -s certificate -t text/plain --payload "$(cat {leaf})"
openstack secret store --name key2 -s private -t text/plain --payload "$(cat {key})"
openstack secret store --name chain2 -s certificate -t text/plain --payload "$(cat {inter})"
ref() {{ openstack secret list --name "$1" -f value -c 'Secret href'; }}
openstack secret container create --name tls_container2 --type certificate \
  --secret "certificate=$(ref cert2)" --secret "private_key=$(ref key2)" --secret "intermediates=$(ref chain2)"
C2=$(openstack secret container list -f value -c 'Container href' -c Name | awk '/ tls_container2$/ {{print $1}}')
openstack loadbalancer listener set --sni-container-refs "$C2" --wait listener1
"#, leaf = pki.leaf.display(), key = pki.leaf_key.display(), inter = pki.intermediate.display()));
        let (subject, certs) = (0..50)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(100));
                served(port, "two.example")
            })
            .find(|(s, _)| s.contains("two.example"))
            .expect("SNI certificate served");
        assert!(subject.contains("CN = two.example"));
        assert_eq!(certs, 2, "leaf + intermediate");
        assert!(served(port, "other.example").0.contains("CN = www.example"), "default for unknown names");

        // Rotation: a new PKCS12 secret becomes the default certificate.
        write_pkcs12(&work, "www3.example");
        lbd.script(&work, r#"
openstack secret store --name='tls_secret3' -t 'application/octet-stream' -e 'base64' --payload="$(base64 < www3.example.p12)"
openstack loadbalancer listener set --default-tls-container-ref $(openstack secret list | awk '/ tls_secret3 / {print $2}') --wait listener1
"#);
        assert!((0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            served(port, "www.example").0.contains("CN = www3.example")
        }));

        // Reading back: stats, status tree, lists, the payload byte for byte.
        let stats = lbd.os(&["loadbalancer", "stats", "show", "lb1", "-f", "value", "-c", "total_connections"]);
        assert!(stats.parse::<u64>().unwrap() >= 3, "{stats}");
        let status = lbd.os(&["loadbalancer", "status", "show", "lb1"]);
        assert!(status.contains("\"operating_status\": \"ONLINE\"") && !status.contains("ERROR"), "{status}");
        // The HTTP health monitor created above checks the member: ONLINE, not NO_MONITOR.
        assert_eq!(lbd.os(&["loadbalancer", "member", "list", "pool1", "-f", "value", "-c", "operating_status"]), "ONLINE");
        assert!(lbd.os(&["loadbalancer", "list", "-f", "value", "-c", "name", "-c", "provisioning_status"]).contains("lb1 ACTIVE"));
        assert!(lbd.os(&["loadbalancer", "member", "list", "pool1", "-f", "value", "-c", "protocol_port"]).contains(&backend.port().to_string()));
        lbd.script(&work, r#"
REF=$(openstack secret list | awk '/ tls_secret1 / {print $2}')
openstack secret get "$REF"
openstack secret get "$REF" --file roundtrip.p12 -t application/octet-stream
cmp roundtrip.p12 www.example.p12
"#);

        // L7 policies and rules, created with the CLI, are enforced: /old/... is redirected.
        let l7 = lbd.script(&work, r#"
openstack loadbalancer l7policy create --action REDIRECT_TO_URL --redirect-url https://example.com/ --name policy1 --wait listener1
openstack loadbalancer l7rule create --compare-type STARTS_WITH --type PATH --value /old --wait policy1
openstack loadbalancer l7policy show policy1 -f value -c action -c operating_status
openstack loadbalancer l7rule list policy1 -f value -c type -c compare_type -c value
"#);
        assert!(l7.contains("REDIRECT_TO_URL") && l7.contains("ONLINE") && l7.contains("STARTS_WITH PATH /old"), "{l7}");
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--resolve", &format!("www.example:{port}:127.0.0.1"), &format!("https://www.example:{port}/old/page")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "302 https://example.com/");
        assert!(curl_body(port, "www.example").contains("backend=one"), "other paths still reach the pool");

        // HSTS set with the CLI: every response carries Strict-Transport-Security, redirects too;
        // HSTS options without a max age, and HSTS on a plain HTTP listener, are refused.
        lbd.os(&["loadbalancer", "listener", "set", "--hsts-max-age", "31536000", "--hsts-include-subdomains", "--hsts-preload", "--wait", "listener1"]);
        let hsts = |path: &str| {
            let out = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{header_json}", "--resolve", &format!("www.example:{port}:127.0.0.1"), &format!("https://www.example:{port}{path}")])
                .output()
                .unwrap();
            let headers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            headers["strict-transport-security"][0].as_str().unwrap_or_default().to_string()
        };
        assert!((0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            hsts("/") == "max-age=31536000; includeSubDomains; preload"
        }), "{}", hsts("/"));
        assert_eq!(hsts("/old/page"), "max-age=31536000; includeSubDomains; preload");
        let shown = lbd.os(&["loadbalancer", "listener", "show", "listener1", "-f", "value", "-c", "hsts_max_age", "-c", "hsts_include_subdomains", "-c", "hsts_preload"]);
        assert_eq!(shown.split_whitespace().collect::<Vec<_>>(), ["31536000", "True", "True"], "{shown}");
        let err = lbd.os_fails(&["loadbalancer", "listener", "create", "--protocol", "HTTP", "--protocol-port", &free_port().to_string(), "--hsts-max-age", "10", "lb1"]);
        assert!(err.contains("TERMINATED_HTTPS"), "{err}");

        // Deleting what is in use is refused; cascade delete removes everything and stops serving.
        let err = lbd.os_fails(&["secret", "delete", &lbd.script(&work, "openstack secret list | awk '/ tls_secret3 / {print $2}'")]);
        assert!(err.contains("in use") || err.contains("consumer"), "{err}");
        let err = lbd.os_fails(&["loadbalancer", "delete", "lb1"]);
        assert!(err.contains("has children"), "{err}");
        lbd.os(&["loadbalancer", "delete", "--cascade", "--wait", "lb1"]);
        assert!(lbd.os(&["loadbalancer", "list", "-f", "value"]).is_empty());
        assert!((0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        }), "listener closed after the cascade delete");
        lbd.script(&work, "openstack secret delete $(openstack secret list | awk '/ tls_secret3 / {print $2}')");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_precisely_and_projects_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lbd = Lbd::start(&work);
        let url = lbd.url();
        let err = lbd.os_fails(&["secret", "store", "--name", "bad", "-t", "text/plain", "-e", "base64", "--payload", "aGVsbG8="]);
        assert!(err.contains("base64 is not allowed with payload_content_type text/plain"), "{err}");
        let err = lbd.os_fails(&["secret", "store", "--name", "bad", "-t", "application/octet-stream", "-e", "base64", "--payload", "!!not base64!!"]);
        assert!(err.contains("not valid base64"), "{err}");
        let err = lbd.os_fails(&["secret", "store", "--name", "bad", "-t", "application/x-unknown", "--payload", "x"]);
        assert!(err.contains("not supported"), "{err}");
        let big = "A".repeat(70 * 1024);
        let err = lbd.os_fails(&["secret", "store", "--name", "big", "-t", "text/plain", "--payload", &big]);
        assert!(err.contains("exceeds the limit of 65536 bytes") && err.contains("Payload Too Large"), "{err}");
        assert!(lbd.os(&["secret", "list", "-f", "value"]).is_empty(), "nothing stored by refused requests");

        // A certificate container whose key is not the certificate's; an expired certificate;
        // a reference to nothing.
        let (c1, _) = self_signed(&work, "one.example", "2");
        let (_, k2) = self_signed(&work, "two.example", "2");
        let mut params = rcgen::CertificateParams::new(vec!["old.example".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(work.join("old.crt"), params.self_signed(&key).unwrap().pem()).unwrap();
        std::fs::write(work.join("old.key"), key.serialize_pem()).unwrap();
        let port = free_port();
        lbd.script(&work, &format!(r#"
ref() {{ openstack secret list --name "$1" -f value -c 'Secret href'; }}
openstack secret store --name c1 -t text/plain --payload "$(cat {c1})"
openstack secret store --name k2 -t text/plain --payload "$(cat {k2})"
openstack secret store --name oldc -t text/plain --payload "$(cat old.crt)"
openstack secret store --name oldk -t text/plain --payload "$(cat old.key)"
openstack secret container create --name mismatch --type certificate --secret "certificate=$(ref c1)" --secret "private_key=$(ref k2)"
openstack secret container create --name expired --type certificate --secret "certificate=$(ref oldc)" --secret "private_key=$(ref oldk)"
openstack loadbalancer create --name lb1 --vip-subnet-id lo-127.0.0.0 --vip-address 127.0.0.1 --wait
"#, c1 = c1.display(), k2 = k2.display()));
        let container = |name: &str| lbd.script(&work, &format!("openstack secret container list -f value -c 'Container href' -c Name | awk '/ {name}$/ {{print $1}}'"));
        let listener = |reference: &str| {
            lbd.os_fails(&["loadbalancer", "listener", "create", "--protocol", "TERMINATED_HTTPS", "--protocol-port", &port.to_string(), "--default-tls-container-ref", reference, "lb1"])
        };
        let err = listener(&container("mismatch"));
        assert!(err.contains("private_key does not match the certificate") && err.contains("HTTP 400"), "{err}");
        let err = listener(&container("expired"));
        assert!(err.contains("expired"), "{err}");
        let err = listener(&format!("{url}/v1/secrets/9b6a3d4e-1f2a-4c3b-8d7e-0a1b2c3d4e5f"));
        assert!(err.contains("no secret or container 9b6a3d4e-1f2a-4c3b-8d7e-0a1b2c3d4e5f"), "{err}");
        let err = lbd.os_fails(&["loadbalancer", "create", "--name", "x", "--vip-subnet-id", "lo-127.0.0.0", "--vip-address", "192.0.2.250"]);
        assert!(err.contains("not an address of this host") || err.contains("not in subnet"), "{err}");
        let err = lbd.os_fails(&["loadbalancer", "listener", "create", "--protocol", "SCTP", "--protocol-port", "53", "lb1"]);
        assert!(err.contains("SCTP") && err.contains("HTTP 400"), "{err}");
        let err = lbd.os_fails(&["loadbalancer", "listener", "create", "--protocol", "TCP", "--protocol-port", "5353", "--allowed-cidr", "127.0.0.1/8", "lb1"]);
        assert!(err.contains("'127.0.0.1/8' has host bits set; the network is 127.0.0.0/8"), "{err}");
        let err = lbd.os_fails(&["loadbalancer", "listener", "create", "--protocol", "TCP", "--protocol-port", "5353", "--allowed-cidr", "::/0", "lb1"]);
        assert!(err.contains("IP version incompatible"), "{err}");

        // allowed_cidrs through the CLI: enforced by lbd's own listener where no XDP program
        // runs (loopback); a source outside is closed at once and counted.
        let open_port = lb_tests::free_port();
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in backend.incoming() {
                let Ok(mut c) = c else { return };
                let _ = std::io::Write::write_all(&mut c, b"hello from the member\n");
            }
        });
        lbd.script(&work, &format!(r#"
openstack loadbalancer listener create --name cidr --protocol TCP --protocol-port {open_port} --allowed-cidr 127.0.0.2/32 --wait lb1
openstack loadbalancer pool create --name cidrpool --lb-algorithm ROUND_ROBIN --listener cidr --protocol TCP --wait
openstack loadbalancer member create --address 127.0.0.1 --protocol-port {backend_port} --wait cidrpool
"#));
        assert_eq!(lbd.os(&["loadbalancer", "listener", "show", "cidr", "-f", "value", "-c", "allowed_cidrs"]), "['127.0.0.2/32']");
        let from = |src: &str| {
            let out = Command::new("curl").args(["-s", "--max-time", "3", "--interface", src, &format!("telnet://127.0.0.1:{open_port}")]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        assert_eq!(from("127.0.0.2"), "hello from the member\n");
        assert_eq!(from("127.0.0.1"), "", "a source outside allowed_cidrs gets nothing");
        let metrics = String::from_utf8_lossy(&sh(Command::new("curl").args(["-s", &format!("{url}/metrics")])).stdout).to_string();
        assert!(metrics.contains("lb_connections_denied_total{") && metrics.contains("reason=\"allowed_cidrs\"} 1"), "{metrics}");
        // A UDP listener needs the XDP data path: ERROR, with the reason in the log.
        lbd.os(&["loadbalancer", "listener", "create", "--name", "dns", "--protocol", "UDP", "--protocol-port", "53", "--wait", "lb1"]);
        assert_eq!(lbd.os(&["loadbalancer", "listener", "show", "dns", "-f", "value", "-c", "provisioning_status"]), "ERROR");
        lbd.os(&["loadbalancer", "listener", "delete", "dns", "--wait"]);
        lbd.os(&["loadbalancer", "listener", "delete", "cidr", "--wait"]);

        // Missing token: 401 in each service's format.
        for path in ["/v2.0/lbaas/loadbalancers", "/v1/secrets"] {
            let out = sh(Command::new("curl").args(["-s", "-w", "\n%{http_code}", &format!("{url}{path}")]));
            assert!(String::from_utf8_lossy(&out.stdout).ends_with("401"), "{path}");
        }

        // Projects: a member of p2 cannot see or use p1's objects; a reader cannot write.
        let state = work.join("state");
        let lbd_cmd = |args: &[&str]| sh(Command::new(lb_tests::lbd::lbd_binary()).args(args).env("LBD_STATE_DIR", &state));
        lbd_cmd(&["project", "add", "p1"]);
        lbd_cmd(&["project", "add", "p2"]);
        lbd_cmd(&["user", "add", "alice", "--password", "pw-alice", "--project", "p1", "--role", "member"]);
        lbd_cmd(&["user", "add", "bob", "--password", "pw-bob", "--project", "p2", "--role", "member"]);
        lbd_cmd(&["user", "add", "rita", "--password", "pw-rita", "--project", "p1", "--role", "reader"]);
        let as_user = |user: &str, project: &str, args: &[&str]| {
            let pw = format!("pw-{user}");
            lbd.openstack_as(&[("OS_USERNAME", user), ("OS_PASSWORD", &pw), ("OS_PROJECT_NAME", project)], args)
        };
        let out = as_user("alice", "p1", &["secret", "store", "--name", "alice-secret", "-t", "text/plain", "--payload", "hello"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = as_user("alice", "p1", &["loadbalancer", "create", "--name", "alice-lb", "--vip-subnet-id", "lo-127.0.0.0", "--vip-address", "127.0.0.2", "--wait"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Failover is for admins, as in Octavia (what it does: tests/api_http.rs).
        let out = as_user("alice", "p1", &["loadbalancer", "failover", "alice-lb"]);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Policy does not allow"), "{}", String::from_utf8_lossy(&out.stderr));
        let out = as_user("bob", "p2", &["secret", "list", "-f", "value"]);
        assert!(out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("alice-secret"));
        let out = as_user("bob", "p2", &["loadbalancer", "show", "alice-lb"]);
        assert!(!out.status.success(), "another project's load balancer is invisible");
        let alice_lb = String::from_utf8(as_user("alice", "p1", &["loadbalancer", "show", "alice-lb", "-f", "value", "-c", "id"]).stdout).unwrap();
        let out = as_user("bob", "p2", &["loadbalancer", "show", alice_lb.trim()]);
        assert!(!out.status.success());
        let alice_secret = String::from_utf8(as_user("alice", "p1", &["secret", "list", "-f", "value", "-c", "Secret href"]).stdout).unwrap();
        let out = as_user("bob", "p2", &["loadbalancer", "create", "--name", "bob-lb", "--vip-subnet-id", "lo-127.0.0.0", "--vip-address", "127.0.0.3", "--wait"]);
        assert!(out.status.success());
        let out = as_user("bob", "p2", &["loadbalancer", "listener", "create", "--protocol", "TERMINATED_HTTPS", "--protocol-port", "9443", "--default-tls-container-ref", alice_secret.trim(), "bob-lb"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("no secret or container"), "{}", String::from_utf8_lossy(&out.stderr));
        // A read ACL lets bob (another project) read alice's secret; project-access off hides it
        // from the rest of p1 (rita).
        let bob_id = String::from_utf8(lbd_cmd(&["user", "list"]).stdout).unwrap().lines().find(|l| l.contains(" bob ")).unwrap().split(' ').next().unwrap().to_string();
        let href = alice_secret.trim();
        assert!(!as_user("bob", "p2", &["secret", "get", href, "--payload"]).status.success());
        assert!(as_user("rita", "p1", &["secret", "get", href, "--payload"]).status.success(), "project members read by default");
        let out = as_user("alice", "p1", &["acl", "submit", "--user", &bob_id, "--no-project-access", href]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = as_user("bob", "p2", &["secret", "get", href, "--payload", "-f", "value"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("hello"), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!as_user("rita", "p1", &["secret", "get", href, "--payload"]).status.success(), "project access withdrawn");
        let out = as_user("rita", "p1", &["loadbalancer", "list", "-f", "value", "-c", "name"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("alice-lb"), "readers read");
        let out = as_user("rita", "p1", &["loadbalancer", "create", "--name", "rita-lb", "--vip-subnet-id", "lo-127.0.0.0", "--vip-address", "127.0.0.4"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 403"), "{}", String::from_utf8_lossy(&out.stderr));
        let admin_sees = lbd.os(&["loadbalancer", "list", "-f", "value", "-c", "name"]);
        assert!(admin_sees.contains("alice-lb") && admin_sees.contains("bob-lb"), "admin sees all: {admin_sees}");

        // Quotas: the admin limits p2 (named; the CLI resolves it through /v3/projects) to the one
        // load balancer it has; bob's second is refused with Octavia's 403, reading his own quota
        // is allowed, setting it is not, and a reset lifts the limit.
        assert_eq!(lbd.os(&["loadbalancer", "quota", "defaults", "show", "-f", "value", "-c", "load_balancer"]), "-1");
        lbd.os(&["loadbalancer", "quota", "set", "--loadbalancer", "1", "--member", "5", "p2"]);
        assert_eq!(lbd.os(&["loadbalancer", "quota", "show", "p2", "-f", "value", "-c", "load_balancer", "-c", "member", "-c", "pool"]), "1\n-1\n5", "rows in the CLI's order: load_balancer, pool, member");
        assert_eq!(lbd.os(&["loadbalancer", "quota", "list", "-f", "value", "-c", "load_balancer"]), "1");
        let out = as_user("bob", "p2", &["loadbalancer", "create", "--name", "bob-lb2", "--vip-subnet-id", "lo-127.0.0.0", "--vip-address", "127.0.0.5"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("Quota has been met for resources: load_balancer") && err.contains("HTTP 403"), "{err}");
        let out = as_user("bob", "p2", &["loadbalancer", "quota", "show", "p2", "-f", "value", "-c", "load_balancer"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{}", String::from_utf8_lossy(&out.stderr));
        let out = as_user("bob", "p2", &["loadbalancer", "quota", "set", "--loadbalancer", "9", "p2"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 403"), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(lbd.os_fails(&["loadbalancer", "quota", "set", "--loadbalancer", "-2", "p2"]).contains("load_balancer"));
        lbd.os(&["loadbalancer", "quota", "reset", "p2"]);

        // What the service offers: one provider, no flavors, availability zones or amphorae.
        assert_eq!(lbd.os(&["loadbalancer", "provider", "list", "-f", "value", "-c", "name"]), "lbd");
        assert_eq!(lbd.os(&["loadbalancer", "provider", "capability", "list", "lbd", "-f", "value"]), "");
        assert!(lbd.os_fails(&["loadbalancer", "provider", "capability", "list", "f5"]).contains("Provider 'f5' is not enabled"));
        assert_eq!(lbd.os(&["loadbalancer", "flavor", "list", "-f", "value"]), "");
        assert_eq!(lbd.os(&["loadbalancer", "availabilityzone", "list", "-f", "value"]), "");
        // No amphorae: an empty list for admins, 403 for others, 404 for any one amphora.
        assert_eq!(lbd.os(&["loadbalancer", "amphora", "list", "-f", "value"]), "");
        let out = as_user("bob", "p2", &["loadbalancer", "amphora", "list"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 403"), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(lbd.os_fails(&["loadbalancer", "amphora", "show", "6f3d1f3e-0b7c-4c1e-9a57-1d2b3c4d5e6f"]).contains("not found"));
        let out = as_user("bob", "p2", &["loadbalancer", "create", "--name", "bob-lb2", "--vip-subnet-id", "lo-127.0.0.0", "--vip-address", "127.0.0.5", "--wait"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_kill_9_and_traffic_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("after-restart").await;
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut lbd = Lbd::start(&work);
        let port = free_port();
        write_pkcs12(&work, "www.example");
        howto(&lbd, &work, port, backend.port());
        wait_serving(port, "www.example");
        let before = lbd.os(&["loadbalancer", "listener", "show", "listener1", "-f", "json"]);

        lbd.crash_and_restart();
        let body = wait_serving(port, "www.example");
        assert!(body.contains("backend=after-restart"), "{body}");
        assert!(served(port, "www.example").0.contains("CN = www.example"));
        let after = lbd.os(&["loadbalancer", "listener", "show", "listener1", "-f", "json"]);
        assert_eq!(before, after, "the listener came back unchanged");
        lbd.script(&work, r#"
openstack secret get $(openstack secret list | awk '/ tls_secret1 / {print $2}') --file back.p12 -t application/octet-stream
cmp back.p12 www.example.p12
"#);
        assert!(lbd.os(&["loadbalancer", "show", "lb1", "-f", "value", "-c", "provisioning_status"]).contains("ACTIVE"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_key_asymmetric_and_a_certificate_from_the_local_ca_that_a_listener_serves() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("ordered").await;
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lbd = Lbd::start(&work);
        // barbicanclient 7.x: key and asymmetric orders.
        let out = lbd.script(&work, r#"
K=$(openstack secret order create key --name k1 --algorithm aes --bit-length 256 --payload-content-type application/octet-stream -f value -c 'Order href')
openstack secret order get "$K" -f value -c Status -c 'Secret href'
A=$(openstack secret order create asymmetric --name kp1 --algorithm rsa --bit-length 2048 -f value -c 'Order href')
openstack secret order get "$A" -f value -c Status -c 'Container href'
openstack secret order list -f value -c Status
"#);
        assert_eq!(out.matches("ACTIVE").count(), 4, "{out}");
        assert!(out.contains("/v1/secrets/") && out.contains("/v1/containers/"), "{out}");
        let key_len = lbd.script(&work, r#"
S=$(openstack secret list --name k1 -f value -c 'Secret href')
openstack secret get "$S" --file k1.bin -t application/octet-stream
stat -c %s k1.bin
"#);
        assert_eq!(key_len, "32");

        // barbicanclient 6.0.0: a certificate order by subject DN, issued by the local CA into a
        // certificate container that a listener then serves.
        let port = free_port();
        lbd.script_in(&lb_tests::lbd::venv_barbican6(), &work, r#"
openstack secret order create certificate --name web-cert --subject-dn "CN=orders.example,O=lb tests"
"#);
        lbd.script(&work, &format!(r#"
C=$(openstack secret container list -f value -c 'Container href' -c Name | awk '/ web-cert$/ {{print $1}}')
openstack loadbalancer create --name lb1 --vip-subnet-id lo-127.0.0.0 --vip-address 127.0.0.1 --wait
openstack loadbalancer listener create --protocol-port {port} --protocol TERMINATED_HTTPS --name l1 --default-tls-container-ref "$C" --wait lb1
openstack loadbalancer pool create --name p1 --lb-algorithm ROUND_ROBIN --listener l1 --protocol HTTP --wait
openstack loadbalancer member create --address 127.0.0.1 --protocol-port {backend_port} --wait p1
"#, backend_port = backend.port()));
        assert!(wait_serving(port, "orders.example").contains("backend=ordered"));
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "orders.example"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("CN = orders.example") && text.contains("CN = lbd local CA"), "{text}");
    })
    .await
    .unwrap();
}

/// The Gcore/Octavia mTLS how-to through the CLI: a listener that requires client certificates
/// from a CA (with a CRL) and inserts X-SSL-* headers; a pool that verifies its members with a CA
/// and presents lb's own client certificate (PKCS12) to an nginx member with
/// `ssl_verify_client on`. Then curl with and without certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_both_ways_configured_with_the_openstack_cli() {
    use lb_tests::peers::Nginx;
    use lb_tests::pki::Ca;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let client_ca = Ca::new(&work, "client ca");
        let member_ca = Ca::new(&work, "member ca");
        let good = client_ca.issue("good client", 2, &["good.example"]);
        let revoked = client_ca.issue("revoked client", 3, &["revoked.example"]);
        client_ca.crl("client.crl", &[3]);
        let lb_client = member_ca.issue("lb client", 5, &["lb.internal"]);
        std::fs::write(work.join("lb_client.p12"), pkcs12(&work, &lb_client.cert, &lb_client.key, "", false)).unwrap();
        let member_cert = member_ca.issue("nginx member", 6, &["127.0.0.1"]);
        let nginx_dir = work.join("nginx");
        std::fs::create_dir_all(&nginx_dir).unwrap();
        let nginx = Nginx::start(&nginx_dir, &member_cert, &member_ca.cert_path, "member-verify=$ssl_client_verify lb-dn=$ssl_client_s_dn cn=$http_x_ssl_client_cn has=$http_x_ssl_client_has_cert");
        write_pkcs12(&work, "www.example");
        let lbd = Lbd::start(&work);
        let port = free_port();
        lbd.script(&work, &format!(r#"
ref() {{ openstack secret list --name "$1" -f value -c 'Secret href'; }}
openstack secret store --name='tls_secret1' -t 'application/octet-stream' -e 'base64' --payload="$(base64 < www.example.p12)"
openstack secret store --name client_ca -t text/plain --payload "$(cat client_ca.ca.crt)"
openstack secret store --name client_crl -t text/plain --payload "$(cat client.crl)"
openstack secret store --name member_ca -t text/plain --payload "$(cat member_ca.ca.crt)"
openstack secret store --name lb_client -t 'application/octet-stream' -e 'base64' --payload="$(base64 < lb_client.p12)"
openstack loadbalancer create --name lb1 --vip-subnet-id lo-127.0.0.0 --vip-address 127.0.0.1 --wait
openstack loadbalancer listener create --protocol-port {port} --protocol TERMINATED_HTTPS --name l1 \
  --default-tls-container-ref "$(ref tls_secret1)" --client-ca-tls-container-ref "$(ref client_ca)" \
  --client-authentication MANDATORY --client-crl-container-ref "$(ref client_crl)" \
  --insert-headers X-SSL-Client-Verify=true,X-SSL-Client-CN=true,X-SSL-Client-Has-Cert=true --wait lb1
openstack loadbalancer pool create --name p1 --lb-algorithm ROUND_ROBIN --listener l1 --protocol HTTP \
  --enable-tls --ca-tls-container-ref "$(ref member_ca)" --tls-container-ref "$(ref lb_client)" --wait
openstack loadbalancer member create --address 127.0.0.1 --protocol-port {member_port} --wait p1
"#, member_port = nginx.addr.port()));
        let shown = lbd.os(&["loadbalancer", "listener", "show", "l1", "-f", "value", "-c", "client_authentication"]);
        assert_eq!(shown, "MANDATORY");
        let pool_tls = lbd.os(&["loadbalancer", "pool", "show", "p1", "-f", "value", "-c", "tls_enabled"]);
        assert_eq!(pool_tls, "True");

        let curl = |cert: Option<&lb_tests::pki::Issued>| {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "-k", "--max-time", "10", "--resolve", &format!("www.example:{port}:127.0.0.1")]);
            if let Some(c) = cert {
                cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
            }
            cmd.arg(format!("https://www.example:{port}/")).output().unwrap()
        };
        let mut body = String::new();
        for _ in 0..100 {
            let out = curl(Some(&good));
            body = String::from_utf8_lossy(&out.stdout).to_string();
            if body.contains("member-verify=") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(body.contains("member-verify=SUCCESS") && body.contains("CN=lb client"), "nginx verified lb's PKCS12 client certificate: {body}");
        assert!(body.contains("cn=\"good client\" has=1"), "lb verified the client and told the member: {body}");
        assert!(!curl(None).status.success(), "MANDATORY refuses a client without a certificate");
        assert!(!curl(Some(&revoked)).status.success(), "the CRL refuses the revoked client");

        // Bad combinations are refused with the field named, and change nothing.
        let err = lbd.os_fails(&["loadbalancer", "listener", "set", "--client-ca-tls-container-ref", "", "l1"]);
        assert!(err.contains("client_ca_tls_container_ref is required") || err.contains("HTTP 400"), "{err}");
        let err = lbd.os_fails(&["loadbalancer", "pool", "create", "--name", "p2", "--lb-algorithm", "ROUND_ROBIN", "--loadbalancer", "lb1", "--protocol", "HTTP", "--enable-tls", "--crl-container-ref", &lbd.script(&work, "openstack secret list --name client_crl -f value -c 'Secret href'")]);
        assert!(err.contains("crl_container_ref: a CRL needs ca_tls_container_ref"), "{err}");
        assert_eq!(lbd.os(&["loadbalancer", "listener", "show", "l1", "-f", "value", "-c", "client_authentication"]), "MANDATORY");
        assert!(curl(Some(&good)).status.success());
    })
    .await
    .unwrap();
}
