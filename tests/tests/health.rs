//! Health monitors against a real lbd: members that fail their checks leave the rotation and
//! come back, statuses say so as Octavia's do, and every check type runs against a real peer
//! (hyper, `openssl s_server`, a UDP socket, the loopback's ICMP echo).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use lb_tests::api::Api;
use lb_tests::lbd::Lbd;
use lb_tests::peers::SServer;
use lb_tests::pki::Ca;
use lb_tests::{echo_backend, free_port, metric, serve_http};
use serde_json::{Value, json};

/// An HTTP member whose `/health` answers with the status in `health`, and `backend=<name>`
/// on every other path.
async fn member_with_health(name: &'static str, health: Arc<AtomicU16>) -> std::net::SocketAddr {
    serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let health = health.clone();
        async move {
            let status = if req.uri().path() == "/health" { health.load(Ordering::Relaxed) } else { 200 };
            Ok::<_, std::io::Error>(hyper::Response::builder().status(status).body(format!("backend={name}\n")).unwrap())
        }
    })
    .await
}

fn member_json(addr: std::net::SocketAddr) -> Value {
    json!({"address": addr.ip().to_string(), "protocol_port": addr.port()})
}

/// Polls until `f` holds (checks run every second), or fails with what was seen last.
fn eventually(what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(seen) if start.elapsed() > Duration::from_secs(30) => panic!("{what}: never happened; last seen {seen}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `{member port: operating_status}` of a pool.
fn member_status(api: &Api, pool: &str) -> std::collections::BTreeMap<u64, String> {
    api.get(&format!("/v2.0/lbaas/pools/{pool}/members")).1["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["protocol_port"].as_u64().unwrap(), m["operating_status"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_members_leave_the_rotation_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let b_health = Arc::new(AtomicU16::new(200));
    let a_health = Arc::new(AtomicU16::new(200));
    let a = member_with_health("a", a_health.clone()).await;
    let b = member_with_health("b", b_health.clone()).await;
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut lbd = Lbd::start(&work);
        let api = Api::login(&lbd);
        let port = free_port();
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": "hm", "vip_address": "127.0.0.1",
            "listeners": [{"protocol": "HTTP", "protocol_port": port,
                           "default_pool": {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": [member_json(a), member_json(b)],
                                            "healthmonitor": {"type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 2, "max_retries_down": 2,
                                                              "url_path": "/health", "expected_codes": "200-204"}}}]}}));
        assert_eq!(code, 201, "{lb}");
        let lb_id = lb["loadbalancer"]["id"].as_str().unwrap().to_string();
        api.wait_active(&lb_id);
        let pool = api.get("/v2.0/lbaas/pools").1["pools"][0]["id"].as_str().unwrap().to_string();
        let (ap, bp) = (u64::from(a.port()), u64::from(b.port()));
        let served = || -> BTreeSet<String> {
            (0..16)
                .map(|_| {
                    let out = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/")]).output().unwrap();
                    String::from_utf8_lossy(&out.stdout).trim().to_string()
                })
                .collect()
        };
        let statuses = |api: &Api, want_a: &str, want_b: &str, want_pool: &str, want_lb: &str| {
            let members = member_status(api, &pool);
            let pool_op = api.get(&format!("/v2.0/lbaas/pools/{pool}")).1["pool"]["operating_status"].as_str().unwrap_or_default().to_string();
            let lb_op = api.get(&format!("/v2.0/lbaas/loadbalancers/{lb_id}")).1["loadbalancer"]["operating_status"].as_str().unwrap_or_default().to_string();
            let seen = (members[&ap].clone(), members[&bp].clone(), pool_op, lb_op);
            if (seen.0.as_str(), seen.1.as_str(), seen.2.as_str(), seen.3.as_str()) == (want_a, want_b, want_pool, want_lb) { Ok(()) } else { Err(format!("{seen:?}")) }
        };
        eventually("both members checked ONLINE", || statuses(&api, "ONLINE", "ONLINE", "ONLINE", "ONLINE"));
        assert_eq!(served(), ["backend=a", "backend=b"].map(String::from).into());

        // b's check answers 503 (not in 200-204): after two failures it is out of service.
        b_health.store(503, Ordering::Relaxed);
        eventually("b taken out", || statuses(&api, "ONLINE", "ERROR", "DEGRADED", "DEGRADED"));
        assert_eq!(served(), ["backend=a"].map(String::from).into(), "a member out of service gets no requests");
        let metrics = String::from_utf8_lossy(&Command::new("curl").args(["-s", &format!("{}/metrics", lbd.url())]).output().unwrap().stdout).to_string();
        let b_id = api.get(&format!("/v2.0/lbaas/pools/{pool}/members?protocol_port={bp}")).1["members"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(metric(&metrics, &format!("lb_member_healthy{{pool=\"{pool}\",member=\"{b_id}\"}}")), 0.0, "{metrics}");
        assert!(metric(&metrics, &format!("lb_health_check_failures_total{{pool=\"{pool}\",member=\"{b_id}\",reason=\"status\"}}")) >= 2.0, "{metrics}");

        // kill -9 and start again: b's verdict is restored, so b gets no requests while its
        // checks start over (without it b would serve until two checks had failed again).
        lbd.crash_and_restart();
        let api = Api::login(&lbd);
        eventually("the listener serves after the restart", || {
            let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{port}/")]).output().unwrap();
            if out.stdout == b"200" { Ok(()) } else { Err(String::from_utf8_lossy(&out.stdout).to_string()) }
        });
        assert_eq!(served(), ["backend=a"].map(String::from).into(), "a member out of service before a restart stays out after it");
        assert!(lbd.log().contains("health verdicts restored"), "{}", lbd.log());
        statuses(&api, "ONLINE", "ERROR", "DEGRADED", "DEGRADED").unwrap();

        // 204 is expected too: two passes bring b back.
        b_health.store(204, Ordering::Relaxed);
        eventually("b back", || statuses(&api, "ONLINE", "ONLINE", "ONLINE", "ONLINE"));
        assert_eq!(served(), ["backend=a", "backend=b"].map(String::from).into());

        // Both failing: the pool is ERROR and clients get 503, not a hang.
        a_health.store(500, Ordering::Relaxed);
        b_health.store(500, Ordering::Relaxed);
        eventually("both out", || statuses(&api, "ERROR", "ERROR", "ERROR", "DEGRADED"));
        let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", &format!("http://127.0.0.1:{port}/")]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "503");
        let (code, hm) = api.get("/v2.0/lbaas/healthmonitors");
        assert_eq!(code, 200);
        let hm_id = hm["healthmonitors"][0]["id"].as_str().unwrap().to_string();
        // Disabling the monitor puts every member back in service.
        let (code, body) = api.put(&format!("/v2.0/lbaas/healthmonitors/{hm_id}"), json!({"healthmonitor": {"admin_state_up": false}}));
        assert_eq!(code, 200, "{body}");
        api.wait_active(&lb_id);
        eventually("monitor off", || statuses(&api, "NO_MONITOR", "NO_MONITOR", "ONLINE", "ONLINE"));
        assert_eq!(served(), ["backend=a", "backend=b"].map(String::from).into());

        // Bad monitor settings are refused with the field named, and change nothing.
        for (body, says) in [
            (json!({"healthmonitor": {"expected_codes": "2xx"}}), "expected_codes"),
            (json!({"healthmonitor": {"expected_codes": "204-200"}}), "backwards"),
            (json!({"healthmonitor": {"max_retries_down": 11}}), "max_retries_down"),
        ] {
            let (code, answer) = api.put(&format!("/v2.0/lbaas/healthmonitors/{hm_id}"), body.clone());
            assert_eq!(code, 400, "{body} -> {answer}");
            assert!(answer["faultstring"].as_str().unwrap().contains(says), "{body} -> {answer}");
        }
        let (code, answer) = api.post("/v2.0/lbaas/pools", json!({"pool": {"loadbalancer_id": lb_id, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN",
            "healthmonitor": {"type": "SCTP", "delay": 1, "timeout": 1, "max_retries": 1}}}));
        assert_eq!(code, 400, "{answer}");
        assert!(answer["faultstring"].as_str().unwrap().contains("SCTP"), "{answer}");
    })
    .await
    .unwrap();
}

/// Every check type against a live and a dead peer: TCP (connect), HTTPS and TLS-HELLO
/// (`openssl s_server -www`, a plain TCP listener that is no TLS server), UDP-CONNECT (a bound
/// socket, and a port where the kernel answers ICMP port unreachable), PING (loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_monitor_type_tells_a_live_member_from_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let live_http = echo_backend("live").await;
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let ca = Ca::new(&work, "member ca");
        let tls = SServer::start(&ca.issue("member", 1, &["127.0.0.1"]), None, "-www");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = free_port();
        let lbd = Lbd::start(&work);
        let api = Api::login(&lbd);
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": "types", "vip_address": "127.0.0.1"}}));
        assert_eq!(code, 201, "{lb}");
        let lb_id = lb["loadbalancer"]["id"].as_str().unwrap().to_string();
        api.wait_active(&lb_id);
        let udp_port = udp.local_addr().unwrap().port();
        let cases: [(&str, &str, u16, u16); 5] = [
            ("TCP", "TCP", live_http.port(), dead),
            ("HTTPS", "HTTPS", tls.addr.port(), live_http.port()),
            ("TLS-HELLO", "HTTPS", tls.addr.port(), live_http.port()),
            ("UDP-CONNECT", "UDP", udp_port, dead),
            ("PING", "TCP", live_http.port(), 0),
        ];
        for (kind, protocol, live, dead) in cases {
            let mut members = vec![json!({"address": "127.0.0.1", "protocol_port": live})];
            if dead != 0 {
                members.push(json!({"address": "127.0.0.1", "protocol_port": dead}));
            }
            let (code, pool) = api.post("/v2.0/lbaas/pools", json!({"pool": {"name": kind, "loadbalancer_id": lb_id, "protocol": protocol, "lb_algorithm": "ROUND_ROBIN",
                "members": members, "healthmonitor": {"type": kind, "delay": 1, "timeout": 1, "max_retries": 1, "max_retries_down": 1}}}));
            assert_eq!(code, 201, "{kind}: {pool}");
            let pool_id = pool["pool"]["id"].as_str().unwrap().to_string();
            api.wait_active(&lb_id);
            eventually(kind, || {
                let seen = member_status(&api, &pool_id);
                let want_dead = if dead == 0 { None } else { Some("ERROR") };
                if seen.get(&u64::from(live)).map(String::as_str) == Some("ONLINE") && (dead == 0 || seen.get(&u64::from(dead)).map(String::as_str) == want_dead) {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            });
        }
        drop(udp);
    })
    .await
    .unwrap();
}
