//! Member choice against a real lbd, real curl clients and hyper members: `SOURCE_IP`,
//! `SOURCE_IP_PORT`, `LEAST_CONNECTIONS`, backup members, and `HTTP_COOKIE`, `APP_COOKIE` and
//! `SOURCE_IP` session persistence, set through the API and the `openstack` CLI; and what
//! members are told of the client: `PROXY` / `PROXYV2` pools with Debian's nginx as the member.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lb_tests::api::Api;
use lb_tests::lbd::Lbd;
use lb_tests::{free_port, serve_http};
use serde_json::{Value, json};

/// A member answering `backend=<name> cookie=<Cookie header>`; `/slow` answers after 3 s and
/// `/login` sets `JSESSIONID=<name>-<n>`.
async fn member(name: &'static str) -> std::net::SocketAddr {
    let logins = Arc::new(AtomicU32::new(0));
    serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let logins = logins.clone();
        async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            let cookie = req.headers().get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            let mut resp = hyper::Response::builder();
            if req.uri().path() == "/login" {
                resp = resp.header("set-cookie", format!("JSESSIONID={name}-{}; Path=/; HttpOnly", logins.fetch_add(1, Ordering::Relaxed)));
            }
            Ok::<_, std::io::Error>(resp.body(format!("backend={name} cookie={cookie}\n")).unwrap())
        }
    })
    .await
}

/// `curl` with extra arguments; the body's `backend=` name.
fn backend(url: &str, extra: &[&str]) -> String {
    let out = Command::new("curl").args(["-s", "-m", "10"]).args(extra).arg(url).output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    body.split_whitespace().next().unwrap_or_default().trim_start_matches("backend=").to_string()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithms_backups_and_persistence_choose_members_as_octavia_does() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = [member("a").await, member("b").await, member("c").await];
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lbd = Lbd::start(&work);
        let api = Api::login(&lbd);
        let port = free_port();
        let members: Vec<Value> = addrs.iter().map(|a| json!({"address": "127.0.0.1", "protocol_port": a.port()})).collect();
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": "bal", "vip_address": "127.0.0.1",
            "listeners": [{"protocol": "HTTP", "protocol_port": port,
                           "default_pool": {"protocol": "HTTP", "lb_algorithm": "SOURCE_IP", "members": members}}]}}));
        assert_eq!(code, 201, "{lb}");
        let lb_id = lb["loadbalancer"]["id"].as_str().unwrap().to_string();
        api.wait_active(&lb_id);
        let pool = api.get("/v2.0/lbaas/pools").1["pools"][0]["id"].as_str().unwrap().to_string();
        let url = format!("http://127.0.0.1:{port}/");
        let update = |body: Value| {
            let (code, answer) = api.put(&format!("/v2.0/lbaas/pools/{pool}"), json!({"pool": body}));
            assert_eq!(code, 200, "{answer}");
            api.wait_active(&lb_id);
            answer
        };

        // SOURCE_IP: each client address keeps one member; addresses spread over all three.
        let mut seen = BTreeSet::new();
        for i in 1..40 {
            let source = format!("127.0.0.{i}");
            let firsts: BTreeSet<String> = (0..3).map(|_| backend(&url, &["--interface", &source])).collect();
            assert_eq!(firsts.len(), 1, "{source} moved between members: {firsts:?}");
            seen.extend(firsts);
        }
        assert_eq!(seen, set(&["a", "b", "c"]));

        // SOURCE_IP_PORT: one address's connections spread.
        update(json!({"lb_algorithm": "SOURCE_IP_PORT"}));
        let spread: BTreeSet<String> = (0..24).map(|_| backend(&url, &[])).collect();
        assert!(spread.len() >= 2, "{spread:?}");

        // LEAST_CONNECTIONS: two slow requests hold two members; the rest go to the third.
        update(json!({"lb_algorithm": "LEAST_CONNECTIONS"}));
        let slow: Vec<_> = (0..2)
            .map(|_| {
                let child = Command::new("curl").args(["-s", "-m", "10", &format!("{url}slow")]).stdout(Stdio::piped()).spawn().unwrap();
                std::thread::sleep(Duration::from_millis(300));
                child
            })
            .collect();
        let quick: BTreeSet<String> = (0..6).map(|_| backend(&url, &[])).collect();
        let held: BTreeSet<String> = slow
            .into_iter()
            .map(|c| String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).split_whitespace().next().unwrap().trim_start_matches("backend=").to_string())
            .collect();
        assert_eq!(held.len(), 2, "the two slow requests went to different members: {held:?}");
        assert_eq!(quick.len(), 1, "{quick:?}");
        assert!(held.is_disjoint(&quick), "held {held:?}, quick {quick:?}");

        // Backup member: c serves only while a and b cannot (set through the CLI).
        update(json!({"lb_algorithm": "ROUND_ROBIN"}));
        let member_id = |port: u16| api.get(&format!("/v2.0/lbaas/pools/{pool}/members?protocol_port={port}")).1["members"][0]["id"].as_str().unwrap().to_string();
        let (a, b, c) = (member_id(addrs[0].port()), member_id(addrs[1].port()), member_id(addrs[2].port()));
        lbd.os(&["loadbalancer", "member", "set", "--enable-backup", &pool, &c]);
        api.wait_active(&lb_id);
        let shown = lbd.os(&["loadbalancer", "member", "show", "-f", "value", "-c", "backup", &pool, &c]);
        assert_eq!(shown, "True");
        let served = || -> BTreeSet<String> { (0..12).map(|_| backend(&url, &[])).collect() };
        assert_eq!(served(), set(&["a", "b"]));
        for m in [&a, &b] {
            assert_eq!(api.put(&format!("/v2.0/lbaas/pools/{pool}/members/{m}"), json!({"member": {"admin_state_up": false}})).0, 200);
            api.wait_active(&lb_id);
        }
        assert_eq!(served(), set(&["c"]), "the backup takes over when no other member can");
        assert_eq!(api.put(&format!("/v2.0/lbaas/pools/{pool}/members/{a}"), json!({"member": {"admin_state_up": true}})).0, 200);
        api.wait_active(&lb_id);
        assert_eq!(served(), set(&["a"]), "and hands back as soon as one can");
        assert_eq!(api.put(&format!("/v2.0/lbaas/pools/{pool}/members/{b}"), json!({"member": {"admin_state_up": true}})).0, 200);
        api.wait_active(&lb_id);

        // HTTP_COOKIE (through the CLI): lbd sets SRV=<member id>; a client sending it back stays
        // on that member, and the member never sees lbd's cookie.
        lbd.os(&["loadbalancer", "pool", "set", "--session-persistence", "type=HTTP_COOKIE", &pool]);
        api.wait_active(&lb_id);
        let shown = api.get(&format!("/v2.0/lbaas/pools/{pool}")).1["pool"]["session_persistence"].clone();
        assert_eq!(shown, json!({"type": "HTTP_COOKIE", "cookie_name": null, "persistence_timeout": null, "persistence_granularity": null}));
        let jar = work.join("jar");
        let first = backend(&url, &["-c", jar.to_str().unwrap()]);
        let stored = std::fs::read_to_string(&jar).unwrap();
        assert!(stored.lines().any(|l| l.ends_with(&format!("SRV\t{}", [&a, &b][usize::from(first == "b")]))), "{first}: {stored}");
        for _ in 0..8 {
            let out = Command::new("curl").args(["-s", "-b", jar.to_str().unwrap(), "-H", "Cookie: theme=dark", &url]).output().unwrap();
            let body = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(body.starts_with(&format!("backend={first} ")), "{body}");
            assert!(!body.contains("SRV="), "lbd's cookie reached the member: {body}");
            assert!(body.contains("theme=dark"), "{body}");
        }
        let fresh: BTreeSet<String> = (0..8).map(|_| backend(&url, &[])).collect();
        assert_eq!(fresh, set(&["a", "b"]), "clients without the cookie are balanced");

        // APP_COOKIE: the member's own JSESSIONID keeps its client there.
        update(json!({"session_persistence": {"type": "APP_COOKIE", "cookie_name": "JSESSIONID"}}));
        for _ in 0..4 {
            let out = Command::new("curl").args(["-s", "-i", &format!("{url}login")]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let session = text.lines().find_map(|l| l.strip_prefix("set-cookie: JSESSIONID=")).unwrap().split(';').next().unwrap().to_string();
            let owner = session.split('-').next().unwrap().to_string();
            for _ in 0..4 {
                assert_eq!(backend(&url, &["-H", &format!("Cookie: JSESSIONID={session}")]), owner, "{session}");
            }
        }

        // SOURCE_IP persistence over round robin: one address stays, others spread.
        update(json!({"session_persistence": {"type": "SOURCE_IP"}}));
        let one: BTreeSet<String> = (0..8).map(|_| backend(&url, &["--interface", "127.0.0.9"])).collect();
        assert_eq!(one.len(), 1, "{one:?}");
        let many: BTreeSet<String> = (10..20).map(|i| backend(&url, &["--interface", &format!("127.0.0.{i}")])).collect();
        assert_eq!(many, set(&["a", "b"]));

        // Bad settings: a precise 400 naming the field, and nothing changes.
        let (code, tcp) = api.post("/v2.0/lbaas/pools", json!({"pool": {"loadbalancer_id": lb_id, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}));
        assert_eq!(code, 201, "{tcp}");
        api.wait_active(&lb_id);
        let tcp = tcp["pool"]["id"].as_str().unwrap().to_string();
        for (target, body, says) in [
            (&pool, json!({"session_persistence": {"type": "APP_COOKIE"}}), "cookie_name' must be provided"),
            (&pool, json!({"session_persistence": {"type": "HTTP_COOKIE", "cookie_name": "x"}}), "should not be specified"),
            (&pool, json!({"session_persistence": {"type": "APP_COOKIE", "cookie_name": "a;b"}}), "cookie_name"),
            (&pool, json!({"session_persistence": {"type": "STICKY"}}), "type"),
            (&pool, json!({"session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 30}}), "only for UDP"),
            (&pool, json!({"session_persistence": {"type": "SOURCE_IP", "colour": 1}}), "colour"),
            (&tcp, json!({"session_persistence": {"type": "HTTP_COOKIE"}}), "needs an HTTP pool"),
            (&pool, json!({"lb_algorithm": "FASTEST"}), "lb_algorithm"),
        ] {
            let (code, answer) = api.put(&format!("/v2.0/lbaas/pools/{target}"), json!({"pool": body}));
            assert_eq!(code, 400, "{body} -> {answer}");
            assert!(answer["faultstring"].as_str().unwrap().contains(says), "{body} -> {answer}");
        }
        let (code, answer) = api.post("/v2.0/lbaas/pools", json!({"pool": {"loadbalancer_id": lb_id, "protocol": "UDP", "lb_algorithm": "LEAST_CONNECTIONS"}}));
        assert_eq!(code, 400, "{answer}");
        assert!(answer["faultstring"].as_str().unwrap().contains("LEAST_CONNECTIONS"), "{answer}");
        let (code, answer) = api.post("/v2.0/lbaas/pools", json!({"pool": {"loadbalancer_id": lb_id, "protocol": "UDP", "lb_algorithm": "SOURCE_IP",
            "session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 60, "persistence_granularity": "255.0.255.0"}}}));
        assert_eq!(code, 400, "{answer}");
        assert!(answer["faultstring"].as_str().unwrap().contains("persistence_granularity") && answer["faultstring"].as_str().unwrap().contains("netmask"), "{answer}");
        let kept = api.get(&format!("/v2.0/lbaas/pools/{pool}")).1["pool"].clone();
        assert_eq!(kept["session_persistence"]["type"], "SOURCE_IP");
        assert_eq!(kept["lb_algorithm"], "ROUND_ROBIN");
    })
    .await
    .unwrap();
}

/// `PROXY` and `PROXYV2` pools behind TCP listeners: each member connection opens with the
/// header, which nginx (`listen … proxy_protocol`) reads the client's address and port and the
/// listener's address from; an HTTP health monitor passes only because its checks send it too.
/// HTTP listeners refuse such pools with a 400 that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_pools_tell_members_the_clients_address() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let nginx_dir = work.join("nginx");
        std::fs::create_dir_all(&nginx_dir).unwrap();
        let nginx = lb_tests::peers::Nginx::proxy_protocol(&nginx_dir);
        let lbd = Lbd::start(&work);
        let api = Api::login(&lbd);
        let mut lb_id = String::new();
        for protocol in ["PROXY", "PROXYV2"] {
            let port = free_port();
            let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": protocol, "vip_address": "127.0.0.1",
                "listeners": [{"protocol": "TCP", "protocol_port": port,
                    "default_pool": {"protocol": protocol, "lb_algorithm": "ROUND_ROBIN",
                                     "members": [{"address": "127.0.0.1", "protocol_port": nginx.addr.port()}],
                                     "healthmonitor": {"type": "HTTP", "delay": 1, "timeout": 2, "max_retries": 1, "url_path": "/"}}}]}}));
            assert_eq!(code, 201, "{lb}");
            lb_id = lb["loadbalancer"]["id"].as_str().unwrap().to_string();
            api.wait_active(&lb_id);
            let pool = lb["loadbalancer"]["pools"][0]["id"].as_str().unwrap().to_string();
            let client_port = free_port();
            let out = Command::new("curl").args(["-s", "-m", "10", "--local-port", &client_port.to_string(), &format!("http://127.0.0.1:{port}/")]).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("client 127.0.0.1:{client_port} server 127.0.0.1:{port}\n"), "{protocol}: {}", lbd.log());
            // The monitor's HTTP checks are answered only with the header.
            let start = std::time::Instant::now();
            loop {
                let status = api.get(&format!("/v2.0/lbaas/pools/{pool}/members")).1["members"][0]["operating_status"].clone();
                if status == "ONLINE" {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(20), "{protocol}: member {status}");
                std::thread::sleep(Duration::from_millis(200));
            }
            let (_, shown) = api.get(&format!("/v2.0/lbaas/pools/{pool}"));
            assert_eq!(shown["pool"]["protocol"], protocol);
        }
        // The same through the openstack CLI.
        let port = free_port().to_string();
        lbd.os(&["loadbalancer", "listener", "create", "--protocol", "TCP", "--protocol-port", &port, "--name", "tcp-cli", "--wait", &lb_id]);
        lbd.os(&["loadbalancer", "pool", "create", "--protocol", "PROXYV2", "--lb-algorithm", "ROUND_ROBIN", "--listener", "tcp-cli", "--name", "pp-cli", "--wait"]);
        lbd.os(&["loadbalancer", "member", "create", "--address", "127.0.0.1", "--protocol-port", &nginx.addr.port().to_string(), "--wait", "pp-cli"]);
        let client_port = free_port();
        let out = Command::new("curl").args(["-s", "-m", "10", "--local-port", &client_port.to_string(), &format!("http://127.0.0.1:{port}/")]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("client 127.0.0.1:{client_port} server 127.0.0.1:{port}\n"), "CLI: {}", lbd.log());
        // An HTTP listener: the header names the client, so a member connection serves that
        // client connection alone (kept for its next request, never another client's).
        let port = free_port();
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": "http-pp", "vip_address": "127.0.0.1",
            "listeners": [{"protocol": "HTTP", "protocol_port": port,
                "default_pool": {"protocol": "PROXY", "lb_algorithm": "ROUND_ROBIN",
                                 "members": [{"address": "127.0.0.1", "protocol_port": nginx.addr.port()}]}}]}}));
        assert_eq!(code, 201, "{lb}");
        api.wait_active(lb["loadbalancer"]["id"].as_str().unwrap());
        let pool = lb["loadbalancer"]["pools"][0]["id"].as_str().unwrap().to_string();
        let member = api.get(&format!("/v2.0/lbaas/pools/{pool}/members")).1["members"][0]["id"].as_str().unwrap().to_string();
        let opened = || {
            let out = Command::new("curl").args(["-s", &format!("{}/metrics", lbd.url())]).output().unwrap();
            lb_tests::metric(&String::from_utf8_lossy(&out.stdout), &format!("lb_member_connections_total{{pool=\"{pool}\",member=\"{member}\"}}"))
        };
        let url = format!("http://127.0.0.1:{port}/");
        for (round, requests) in [(1.0, 2), (2.0, 1)] {
            let client_port = free_port();
            let out = Command::new("curl").args(["-s", "-m", "10", "--local-port", &client_port.to_string()]).args(vec![url.as_str(); requests]).output().unwrap();
            let want = format!("client 127.0.0.1:{client_port} server 127.0.0.1:{port}\n").repeat(requests);
            assert_eq!(String::from_utf8_lossy(&out.stdout), want, "HTTP listener, client connection {round}: {}", lbd.log());
            assert_eq!(opened(), round, "one member connection per client connection");
        }

        // TERMINATED_HTTPS with a PROXYV2 pool: the header names the TLS client.
        let secret_ref = api.pkcs12_secret(&work, "pp.example", "pp");
        let port = free_port();
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": "https-pp", "vip_address": "127.0.0.1",
            "listeners": [{"protocol": "TERMINATED_HTTPS", "protocol_port": port, "default_tls_container_ref": secret_ref,
                "default_pool": {"protocol": "PROXYV2", "lb_algorithm": "ROUND_ROBIN",
                                 "members": [{"address": "127.0.0.1", "protocol_port": nginx.addr.port()}]}}]}}));
        assert_eq!(code, 201, "{lb}");
        api.wait_active(lb["loadbalancer"]["id"].as_str().unwrap());
        let client_port = free_port();
        let out = Command::new("curl")
            .args(["-sk", "-m", "10", "--local-port", &client_port.to_string(), "--resolve", &format!("pp.example:{port}:127.0.0.1"), &format!("https://pp.example:{port}/")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("client 127.0.0.1:{client_port} server 127.0.0.1:{port}\n"), "TERMINATED_HTTPS: {}", lbd.log());
    })
    .await
    .unwrap();
}
