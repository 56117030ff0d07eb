//! The XDP data path with real packets: a topology of network namespaces the test builds (a
//! client host, three member hosts, lbd in the root namespace with its program attached in
//! native mode to every link), real servers in the members (HTTP and UDP echo servers in this
//! process, `openssl s_server` for HTTPS passthrough), real clients, and the configuration
//! written through lbd's Octavia API. Runs as root on the host and, via `cargo xtask vm-test`,
//! on Debian's 6.1 kernel in the guest.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_tests::api::Api;
use lb_tests::lbd::Lbd;
use lb_tests::netns::Topology;
use lb_tests::{metric, sh};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CLIENT: usize = 0;
const MEMBERS: [usize; 3] = [1, 2, 3];
const HTTP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const TLS_PORT: u16 = 8443;

/// A client host (with `client_addrs` addresses), three members running servers, lbd with XDP
/// on every link, and one load balancer whose VIP is the lb node's address on the client link.
struct Rig {
    topo: Topology,
    lbd: Lbd,
    api: Api,
    lb: String,
    vip: Ipv4Addr,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(client_addrs: usize) -> Rig {
        Rig::with_args(client_addrs, &[])
    }

    /// [`Rig::new`] with `extra` arguments for lbd.
    fn with_args(client_addrs: usize, extra: &[&str]) -> Rig {
        let mut topo = Topology::new();
        topo.add_host("c", client_addrs);
        for m in MEMBERS {
            topo.add_host(&format!("m{m}"), 1);
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        for m in MEMBERS {
            let host = &topo.hosts[m];
            let name = format!("member{m}");
            let tcp = host.tcp_listener(SocketAddr::new(host.addrs[0].into(), HTTP_PORT));
            rt.spawn(member_http(tcp, name.clone()));
            let udp = host.udp_socket(SocketAddr::new(host.addrs[0].into(), UDP_PORT));
            std::thread::spawn(move || udp_echo(udp, name));
        }
        let dir = tempfile::tempdir().unwrap();
        let links = topo.links();
        let mut args = extra.to_vec();
        for l in &links {
            args.extend(["--xdp-interface", l.as_str()]);
        }
        let lbd = Lbd::start_with(dir.path(), "127.0.0.1".parse().unwrap(), &args);
        let api = Api::login(&lbd);
        let vip = topo.hosts[CLIENT].gateway;
        let (code, lb) = api.post(
            "/v2.0/lbaas/loadbalancers",
            json!({"loadbalancer": {"name": "xdp", "vip_address": vip.to_string(), "vip_subnet_id": topo.hosts[CLIENT].subnet}}),
        );
        assert_eq!(code, 201, "{lb}");
        let lb = lb["loadbalancer"]["id"].as_str().unwrap().to_string();
        api.wait_active(&lb);
        Rig { topo, lbd, api, lb, vip, _rt: rt, _dir: dir }
    }

    /// Creates a listener (`fields` on top of the load balancer id) with a pool of the three
    /// members on `member_port`; returns (listener id, pool id, member ids by member number).
    fn listener(&self, fields: Value, pool_protocol: &str, member_port: u16) -> (String, String, BTreeMap<usize, String>) {
        let mut body = fields;
        body["loadbalancer_id"] = json!(self.lb);
        let (code, l) = self.api.post("/v2.0/lbaas/listeners", json!({ "listener": body }));
        assert_eq!(code, 201, "{l}");
        let listener = l["listener"]["id"].as_str().unwrap().to_string();
        self.api.wait_active(&self.lb);
        let (code, p) = self.api.post(
            "/v2.0/lbaas/pools",
            json!({"pool": {"listener_id": listener, "protocol": pool_protocol, "lb_algorithm": "ROUND_ROBIN"}}),
        );
        assert_eq!(code, 201, "{p}");
        let pool = p["pool"]["id"].as_str().unwrap().to_string();
        self.api.wait_active(&self.lb);
        let mut members = BTreeMap::new();
        for m in MEMBERS {
            let address = self.topo.hosts[m].addrs[0].to_string();
            let (code, mem) = self.api.post(&format!("/v2.0/lbaas/pools/{pool}/members"), json!({"member": {"address": address, "protocol_port": member_port}}));
            assert_eq!(code, 201, "{mem}");
            members.insert(m, mem["member"]["id"].as_str().unwrap().to_string());
            self.api.wait_active(&self.lb);
        }
        let (_, shown) = self.api.get(&format!("/v2.0/lbaas/listeners/{listener}"));
        assert_eq!(shown["listener"]["operating_status"], "ONLINE", "{shown}\n{}", self.lbd.log());
        (listener, pool, members)
    }

    fn metrics(&self) -> String {
        // The XDP counters are copied into /metrics once a second: wait for two rounds (the
        // guest runs under emulation).
        std::thread::sleep(Duration::from_millis(2500));
        let out = sh(Command::new("curl").args(["-s", &format!("{}/metrics", self.lbd.url())]));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn client(&self, addr: usize, port: u16) -> SocketAddr {
        SocketAddr::new(self.topo.hosts[CLIENT].addrs[addr].into(), port)
    }

    fn vip(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.vip.into(), port)
    }

    /// One HTTP request on a new connection from the client address `from`; the member's
    /// answer body.
    fn get(&self, from: SocketAddr, port: u16, path: &str) -> std::io::Result<String> {
        let mut s = self.topo.hosts[CLIENT].connect(from, self.vip(port), Duration::from_secs(3))?;
        request(&mut s, path, true)
    }

    /// Which member answers each of `n` new connections from the first client address.
    fn spread(&self, n: usize, port: u16) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let body = self.get(self.client(0, 0), port, "/").expect("request through XDP");
            *seen.entry(member_of(&body)).or_insert(0) += 1;
        }
        seen
    }
}

/// An HTTP member: `/` answers `member=<name> peer=<addr>`; `/bytes/N` sends N pattern bytes.
async fn member_http(listener: std::net::TcpListener, name: String) {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((tcp, peer)) = listener.accept().await else { return };
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let body = match req.uri().path().strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) => pattern(n),
                    None => format!("member={name} peer={peer}\n").into_bytes(),
                };
                async move { Ok::<_, std::io::Error>(hyper::Response::new(Full::new(Bytes::from(body)))) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

/// A member behind a `PROXY` pool: reads the PROXY protocol v1 line and the HTTP request head,
/// answers `member=<name> proxy=<the PROXY line>` and closes.
fn member_proxy_v1(listener: std::net::TcpListener, name: String) {
    for mut s in listener.incoming().map_while(Result::ok) {
        let name = name.clone();
        std::thread::spawn(move || {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let body = format!("member={name} proxy={}\n", head.lines().next().unwrap_or(""));
            let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes());
        });
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Echoes each datagram back prefixed with `<name>:`.
fn udp_echo(socket: std::net::UdpSocket, name: String) {
    let mut buf = [0u8; 2048];
    while let Ok((n, peer)) = socket.recv_from(&mut buf) {
        let mut out = format!("{name}:").into_bytes();
        out.extend_from_slice(&buf[..n]);
        let _ = socket.send_to(&out, peer);
    }
}

/// Sends one HTTP/1.1 request on `s` and reads the response body (by Content-Length).
fn request(s: &mut TcpStream, path: &str, close: bool) -> std::io::Result<String> {
    let conn = if close { "close" } else { "keep-alive" };
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: vip\r\nConnection: {conn}\r\n\r\n").as_bytes())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed in the response head"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).to_string())
}

fn member_of(body: &str) -> String {
    body.split_whitespace().next().and_then(|w| w.strip_prefix("member=")).unwrap_or("?").to_string()
}

fn series(metrics: &str, name: &str, labels: &str) -> f64 {
    metric(metrics, &format!("{name}{{{labels}}}"))
}

#[test]
fn tcp_connections_spread_over_members_and_each_flow_stays_on_its_member() {
    let rig = Rig::new(1);
    let (listener, _, _) = rig.listener(json!({"protocol": "TCP", "protocol_port": 80}), "TCP", HTTP_PORT);

    // 300 new connections: Maglev over equal weights gives each member about a third.
    let seen = rig.spread(300, 80);
    println!("300 connections over 3 members: {seen:?}");
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (member, n) in &seen {
        assert!((60..=140).contains(n), "{member} got {n} of 300 (expected about 100): {seen:?}");
    }

    // The member sees lb's own address on its link (source NAT), so replies come back through lb.
    let body = rig.get(rig.client(0, 0), 80, "/").unwrap();
    let m: usize = member_of(&body).trim_start_matches("member").parse().unwrap();
    assert!(body.contains(&format!("peer={}:", rig.topo.hosts[m].gateway)), "{body}");

    // One keep-alive connection: every request reaches the same member.
    let mut s = rig.topo.hosts[CLIENT].connect(rig.client(0, 0), rig.vip(80), Duration::from_secs(3)).unwrap();
    let first = member_of(&request(&mut s, "/", false).unwrap());
    for _ in 0..50 {
        assert_eq!(member_of(&request(&mut s, "/", false).unwrap()), first, "a flow's packets all reach one member");
    }
    // 8 MiB through the rewritten path arrive intact (checksums, ordering).
    let n = 8 << 20;
    let mut s = rig.topo.hosts[CLIENT].connect(rig.client(0, 0), rig.vip(80), Duration::from_secs(3)).unwrap();
    s.write_all(format!("GET /bytes/{n} HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let body = &all[all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(hex::encode(Sha256::digest(body)), hex::encode(Sha256::digest(pattern(n))), "8 MiB body intact");

    // Every connection was forwarded by XDP: lbd's own listener accepted none of them, and the
    // Octavia stats count them.
    let metrics = rig.metrics();
    let l = format!("listener=\"{listener}\"");
    let flows = series(&metrics, "lb_xdp_listener_flows_total", &l);
    assert_eq!(flows, 303.0, "{metrics}");
    assert_eq!(series(&metrics, "lb_connections_total", &l), flows, "no connection reached lbd's userspace listener");
    let per_member: f64 = MEMBERS.iter().map(|m| series(&metrics, "lb_xdp_member_flows_total", &format!("member=\"{}:{HTTP_PORT}\"", rig.topo.hosts[*m].addrs[0]))).sum();
    assert_eq!(per_member, flows);
    assert!(series(&metrics, "lb_xdp_listener_bytes_total", &format!("{l},direction=\"out\"")) > n as f64);
    let (_, stats) = rig.api.get(&format!("/v2.0/lbaas/listeners/{listener}/stats"));
    assert_eq!(stats["stats"]["total_connections"], 303, "{stats}");
    assert!(stats["stats"]["bytes_out"].as_u64().unwrap() > n as u64, "{stats}");
}

#[test]
fn removing_a_member_moves_only_its_flows_and_established_flows_drain() {
    let rig = Rig::new(1);
    let (listener, pool, members) = rig.listener(json!({"protocol": "TCP", "protocol_port": 80}), "TCP", HTTP_PORT);
    // Fixed client ports, so each flow's tuple (and Maglev slot) is the same in both rounds.
    let ports: Vec<u16> = (41_000..41_240).collect();
    let round = || -> Vec<String> { ports.iter().map(|p| member_of(&rig.get(rig.client(0, *p), 80, "/").unwrap())).collect() };
    let before = round();

    // An established connection to member 2 before it is removed.
    let mut held = rig.topo.hosts[CLIENT].connect(rig.client(0, 0), rig.vip(80), Duration::from_secs(3)).unwrap();
    let mut held_member = member_of(&request(&mut held, "/", false).unwrap());
    let mut tries = 0;
    while held_member != "member2" {
        tries += 1;
        assert!(tries < 50, "no connection landed on member2");
        held = rig.topo.hosts[CLIENT].connect(rig.client(0, 0), rig.vip(80), Duration::from_secs(3)).unwrap();
        held_member = member_of(&request(&mut held, "/", false).unwrap());
    }

    let (code, _) = rig.api.delete(&format!("/v2.0/lbaas/pools/{pool}/members/{}", members[&2]));
    assert_eq!(code, 204);
    rig.api.wait_active(&rig.lb);
    let after = round();
    let on_removed = before.iter().filter(|m| *m == "member2").count();
    let survivors_moved = before.iter().zip(&after).filter(|(b, a)| *b != "member2" && b != a).count();
    assert!(after.iter().all(|m| m != "member2"), "no new flow goes to the removed member");
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    println!(
        "removing 1 of 3 members: {moved} of {} flows moved ({:.1}%; {on_removed} were on it), {survivors_moved} of the others' flows moved",
        ports.len(),
        100.0 * moved as f64 / ports.len() as f64
    );
    assert_eq!(moved, on_removed + survivors_moved);
    assert!(survivors_moved * 20 <= ports.len() - on_removed, "at most 5% of the surviving members' flows move: {survivors_moved}");
    // The established flow drains on its member through conntrack.
    assert_eq!(member_of(&request(&mut held, "/", false).unwrap()), "member2", "established flow keeps its member");

    // admin_state_up=false takes a member out of the ring the same way.
    let (code, _) = rig.api.put(&format!("/v2.0/lbaas/pools/{pool}/members/{}", members[&3]), json!({"member": {"admin_state_up": false}}));
    assert_eq!(code, 200);
    rig.api.wait_active(&rig.lb);
    let seen = rig.spread(30, 80);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["member1"], "{seen:?}");
    let metrics = rig.metrics();
    assert!(series(&metrics, "lb_xdp_active_flows", &format!("listener=\"{listener}\"")) >= 1.0, "{metrics}");
}

/// A member whose health checks fail leaves XDP's Maglev ring (no new flows) and returns when
/// they pass again: the checks of member 3 are pointed at a closed port, then back.
#[test]
fn members_failing_health_checks_get_no_new_flows_in_xdp() {
    let rig = Rig::new(1);
    let (_, pool, members) = rig.listener(json!({"protocol": "TCP", "protocol_port": 80}), "TCP", HTTP_PORT);
    let (code, hm) = rig.api.post("/v2.0/lbaas/healthmonitors", json!({"healthmonitor": {"pool_id": pool, "type": "TCP", "delay": 1, "timeout": 2, "max_retries": 1, "max_retries_down": 1}}));
    assert_eq!(code, 201, "{hm}");
    rig.api.wait_active(&rig.lb);
    let member3 = format!("/v2.0/lbaas/pools/{pool}/members/{}", members[&3]);
    let wait_status = |want: &str| {
        for _ in 0..600 {
            if rig.api.get(&member3).1["member"]["operating_status"] == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("member 3 never became {want}: {}", rig.api.get(&member3).1);
    };
    wait_status("ONLINE");
    let (code, body) = rig.api.put(&member3, json!({"member": {"monitor_port": 9}}));
    assert_eq!(code, 200, "{body}");
    rig.api.wait_active(&rig.lb);
    wait_status("ERROR");
    let seen = rig.spread(30, 80);
    assert!(!seen.contains_key("member3") && seen.len() == 2, "{seen:?}");
    let (code, body) = rig.api.put(&member3, json!({"member": {"monitor_port": HTTP_PORT}}));
    assert_eq!(code, 200, "{body}");
    rig.api.wait_active(&rig.lb);
    wait_status("ONLINE");
    let seen = rig.spread(30, 80);
    assert!(seen.contains_key("member3"), "{seen:?}");
}

/// `SOURCE_IP` hashes the source address alone (every connection of one client reaches one
/// member), backup members get flows only while no other member can take them, and a
/// `LEAST_CONNECTIONS` pool is passed to lbd's userspace proxy, which counts connections.
#[test]
fn source_ip_backups_and_least_connections_on_xdp_listeners() {
    let rig = Rig::new(6);
    let (listener, pool, members) = rig.listener(json!({"protocol": "TCP", "protocol_port": 80}), "TCP", HTTP_PORT);
    let set_pool = |body: Value| {
        let (code, answer) = rig.api.put(&format!("/v2.0/lbaas/pools/{pool}"), json!({ "pool": body }));
        assert_eq!(code, 200, "{answer}");
        rig.api.wait_active(&rig.lb);
    };
    set_pool(json!({"lb_algorithm": "SOURCE_IP"}));
    let mut used = std::collections::BTreeSet::new();
    for a in 0..6 {
        let seen: std::collections::BTreeSet<String> = (0..8).map(|_| member_of(&rig.get(rig.client(a, 0), 80, "/").unwrap())).collect();
        assert_eq!(seen.len(), 1, "client address {a} reached {seen:?}");
        used.extend(seen);
    }
    assert!(used.len() >= 2, "six client addresses all hashed to {used:?}");

    set_pool(json!({"lb_algorithm": "ROUND_ROBIN"}));
    let (code, body) = rig.api.put(&format!("/v2.0/lbaas/pools/{pool}/members/{}", members[&3]), json!({"member": {"backup": true}}));
    assert_eq!(code, 200, "{body}");
    rig.api.wait_active(&rig.lb);
    let seen = rig.spread(30, 80);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["member1", "member2"], "{seen:?}");
    for m in [1, 2] {
        let (code, body) = rig.api.put(&format!("/v2.0/lbaas/pools/{pool}/members/{}", members[&m]), json!({"member": {"admin_state_up": false}}));
        assert_eq!(code, 200, "{body}");
        rig.api.wait_active(&rig.lb);
    }
    let seen = rig.spread(10, 80);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["member3"], "{seen:?}");
    for m in [1, 2] {
        let (code, body) = rig.api.put(&format!("/v2.0/lbaas/pools/{pool}/members/{}", members[&m]), json!({"member": {"admin_state_up": true}}));
        assert_eq!(code, 200, "{body}");
        rig.api.wait_active(&rig.lb);
    }

    set_pool(json!({"lb_algorithm": "LEAST_CONNECTIONS"}));
    let userspace = |metrics: &str| -> f64 { members.values().map(|m| series(metrics, "lb_member_connections_total", &format!("pool=\"{pool}\",member=\"{m}\""))).sum() };
    // Only forwarded flows have packets going out through the program.
    let forwarded = |metrics: &str| series(metrics, "lb_xdp_listener_packets_total", &format!("listener=\"{listener}\",direction=\"out\""));
    let before = rig.metrics();
    let seen = rig.spread(12, 80);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["member1", "member2"], "{seen:?}");
    let after = rig.metrics();
    assert!(forwarded(&before) > 0.0, "{before}");
    assert_eq!(forwarded(&after), forwarded(&before), "XDP forwarded no packet of these connections");
    assert_eq!(userspace(&after) - userspace(&before), 12.0, "lbd's proxy opened one member connection per client connection");
}

/// A TCP listener whose pool speaks `PROXY`: the header must be written by lbd's userspace
/// proxy, so XDP passes the listener's packets to it instead of forwarding them, and each member
/// connection starts with the client's address and the VIP.
#[test]
fn a_proxy_protocol_pool_on_an_xdp_listener_is_served_by_lbds_proxy_with_the_clients_address() {
    const PROXY_PORT: u16 = 8081;
    let rig = Rig::new(1);
    for m in MEMBERS {
        let host = &rig.topo.hosts[m];
        let tcp = host.tcp_listener(SocketAddr::new(host.addrs[0].into(), PROXY_PORT));
        let name = format!("member{m}");
        std::thread::spawn(move || member_proxy_v1(tcp, name));
    }
    let (listener, pool, members) = rig.listener(json!({"protocol": "TCP", "protocol_port": 81}), "PROXY", PROXY_PORT);
    let userspace = |metrics: &str| -> f64 { members.values().map(|m| series(metrics, "lb_member_connections_total", &format!("pool=\"{pool}\",member=\"{m}\""))).sum() };
    let forwarded = |metrics: &str| series(metrics, "lb_xdp_listener_packets_total", &format!("listener=\"{listener}\",direction=\"out\""));
    let before = rig.metrics();
    let mut seen = BTreeMap::new();
    for _ in 0..9 {
        let mut s = rig.topo.hosts[CLIENT].connect(rig.client(0, 0), rig.vip(81), Duration::from_secs(3)).unwrap();
        let client_port = s.local_addr().unwrap().port();
        let body = request(&mut s, "/", true).unwrap();
        let expected = format!("proxy=PROXY TCP4 {} {} {client_port} 81", rig.topo.hosts[CLIENT].addrs[0], rig.vip);
        assert!(body.trim_end().ends_with(&expected), "{body:?} should end with {expected:?}");
        *seen.entry(member_of(&body)).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "round robin over the three members: {seen:?}");
    let after = rig.metrics();
    assert_eq!(forwarded(&after), forwarded(&before), "XDP forwarded no packet of these connections");
    assert_eq!(userspace(&after) - userspace(&before), 9.0, "lbd's proxy opened one member connection per client connection");
}

/// UDP `SOURCE_IP` persistence: each client address keeps one member; with a
/// `persistence_granularity` of 255.255.255.0 the whole client network does.
#[test]
fn udp_source_ip_persistence_keeps_a_client_network_on_one_member_with_a_granularity() {
    let rig = Rig::new(6);
    let (_, pool, _) = rig.listener(json!({"protocol": "UDP", "protocol_port": 53}), "UDP", UDP_PORT);
    let vip = rig.vip(53);
    // Which members answer `rounds` datagrams from each client address. A new socket (so a new
    // source port and flow) per datagram; the sockets are returned, to be kept open to the end
    // so that no two flows share a source port.
    let members_by_address = |rounds: usize| -> (Vec<BTreeMap<String, usize>>, Vec<std::net::UdpSocket>) {
        let sources: Vec<SocketAddr> = (0..6).map(|a| rig.client(a, 0)).collect();
        rig.topo.hosts[CLIENT].run(move || {
            let mut sockets = Vec::new();
            let seen = sources
                .iter()
                .map(|from| {
                    let mut seen = BTreeMap::new();
                    for _ in 0..rounds {
                        let s = std::net::UdpSocket::bind(from).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                        let mut buf = [0u8; 64];
                        // Sent again, as a UDP client would, while the answer is lost: the first
                        // answer to a new client address waits for lbd to resolve its neighbour.
                        let len = (0..3)
                            .find_map(|_| {
                                s.send_to(b"q", vip).unwrap();
                                s.recv_from(&mut buf).ok().map(|(len, _)| len)
                            })
                            .unwrap_or_else(|| panic!("no UDP answer through XDP from {from}"));
                        let member = String::from_utf8_lossy(&buf[..len]).split(':').next().unwrap().to_string();
                        *seen.entry(member).or_insert(0) += 1;
                        sockets.push(s);
                    }
                    seen
                })
                .collect();
            (seen, sockets)
        })
    };
    let set_persistence = |sp: Value| {
        let (code, answer) = rig.api.put(&format!("/v2.0/lbaas/pools/{pool}"), json!({"pool": {"session_persistence": sp}}));
        assert_eq!(code, 200, "{answer}");
        rig.api.wait_active(&rig.lb);
    };
    set_persistence(json!({"type": "SOURCE_IP"}));
    let (single, _open) = members_by_address(5);
    assert!(single.iter().all(|m| m.len() == 1), "one member per client address: {single:?}");
    let used: std::collections::BTreeSet<&String> = single.iter().flat_map(|m| m.keys()).collect();
    assert!(used.len() >= 2, "six client addresses all hashed to {used:?}");

    set_persistence(json!({"type": "SOURCE_IP", "persistence_granularity": "255.255.255.0"}));
    let (network, _open2) = members_by_address(3);
    let used: std::collections::BTreeSet<&String> = network.iter().flat_map(|m| m.keys()).collect();
    assert_eq!(used.len(), 1, "a /24 granularity keeps the client network on one member: {network:?}");
    let (_, shown) = rig.api.get(&format!("/v2.0/lbaas/pools/{pool}"));
    assert_eq!(shown["pool"]["session_persistence"]["persistence_granularity"], "255.255.255.0", "{shown}");
}

#[test]
fn udp_datagrams_are_balanced_answered_from_the_vip_and_counted_exactly() {
    let rig = Rig::new(1);
    let (listener, _, _) = rig.listener(json!({"protocol": "UDP", "protocol_port": 53}), "UDP", UDP_PORT);
    let vip = rig.vip(53);
    let n = 90usize;
    let payload = b"query-0123456789";
    let answers: Vec<(String, SocketAddr)> = rig.topo.hosts[CLIENT].run(move || {
        // A new socket per datagram, each kept open to the end so that no two share a source
        // port: every datagram is a flow of its own.
        let mut sockets = Vec::new();
        (0..n)
            .map(|_| {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                s.send_to(payload, vip).unwrap();
                let mut buf = [0u8; 256];
                let (len, from) = s.recv_from(&mut buf).expect("a UDP answer through XDP");
                sockets.push(s);
                (String::from_utf8_lossy(&buf[..len]).to_string(), from)
            })
            .collect()
    });
    let mut seen = BTreeMap::new();
    for (text, from) in &answers {
        assert_eq!(*from, vip, "answers come from the VIP");
        let (member, echoed) = text.split_once(':').unwrap();
        assert_eq!(echoed.as_bytes(), payload);
        *seen.entry(member.to_string()).or_insert(0) += 1;
    }
    println!("{n} UDP flows over 3 members: {seen:?}");
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|c| *c >= 15), "{seen:?}");

    // Counters match the traffic: n datagrams in, n answers out, IP length each.
    let metrics = rig.metrics();
    let l = format!("listener=\"{listener}\"");
    let ip_in = (20 + 8 + payload.len()) as f64;
    assert_eq!(series(&metrics, "lb_xdp_listener_packets_total", &format!("{l},direction=\"in\"")), n as f64, "{metrics}");
    assert_eq!(series(&metrics, "lb_xdp_listener_bytes_total", &format!("{l},direction=\"in\"")), n as f64 * ip_in);
    assert_eq!(series(&metrics, "lb_xdp_listener_packets_total", &format!("{l},direction=\"out\"")), n as f64);
    assert_eq!(series(&metrics, "lb_xdp_listener_flows_total", &l), n as f64);
    let to_members: f64 = MEMBERS
        .iter()
        .map(|m| series(&metrics, "lb_xdp_member_packets_total", &format!("member=\"{}:{UDP_PORT}\",direction=\"to_member\"", rig.topo.hosts[*m].addrs[0])))
        .sum();
    assert_eq!(to_members, n as f64);
}

#[test]
fn allowed_cidrs_drop_other_sources_in_xdp_for_forwarded_and_terminated_listeners() {
    let rig = Rig::new(2);
    let allowed = format!("{}/32", rig.topo.hosts[CLIENT].addrs[0]);
    let (tcp, _, _) = rig.listener(json!({"protocol": "TCP", "protocol_port": 80, "allowed_cidrs": [allowed]}), "TCP", HTTP_PORT);
    let (http, _, _) = rig.listener(json!({"protocol": "HTTP", "protocol_port": 81, "allowed_cidrs": [allowed]}), "HTTP", HTTP_PORT);
    for port in [80, 81] {
        assert!(rig.get(rig.client(0, 0), port, "/").unwrap().starts_with("member="), "allowed source served on {port}");
        let refused = rig.get(rig.client(1, 0), port, "/");
        assert!(refused.is_err(), "source outside allowed_cidrs gets nothing on {port}: {refused:?}");
    }
    let metrics = rig.metrics();
    for l in [&tcp, &http] {
        let drops = series(&metrics, "lb_xdp_drops_total", &format!("listener=\"{l}\",reason=\"allowed_cidrs\""));
        assert!(drops >= 1.0, "{metrics}");
    }
    // The terminated listener's refusal happened in XDP: lbd's own listener never saw it.
    assert_eq!(series(&metrics, "lb_connections_denied_total", &format!("listener=\"{http}\",reason=\"allowed_cidrs\"")), 0.0);

    // Widening allowed_cidrs applies to the next connection.
    let wider = format!("{}/24", Ipv4Addr::from(u32::from(rig.topo.hosts[CLIENT].addrs[0]) & 0xffff_ff00));
    let (code, body) = rig.api.put(&format!("/v2.0/lbaas/listeners/{tcp}"), json!({"listener": {"allowed_cidrs": [wider]}}));
    assert_eq!(code, 200, "{body}");
    rig.api.wait_active(&rig.lb);
    assert!(rig.get(rig.client(1, 0), 80, "/").unwrap().starts_with("member="));

    // Bad CIDRs are refused precisely and change nothing.
    let (code, body) = rig.api.put(&format!("/v2.0/lbaas/listeners/{tcp}"), json!({"listener": {"allowed_cidrs": ["10.0.0.1/24"]}}));
    assert_eq!(code, 400);
    assert!(body.to_string().contains("'10.0.0.1/24' has host bits set; the network is 10.0.0.0/24"), "{body}");
    let (_, shown) = rig.api.get(&format!("/v2.0/lbaas/listeners/{tcp}"));
    assert_eq!(shown["listener"]["allowed_cidrs"], json!([wider]));
}

#[test]
fn a_syn_flood_from_one_source_is_limited_without_hurting_another() {
    let rig = Rig::new(2);
    let (listener, _, _) = rig.listener(json!({"protocol": "TCP", "protocol_port": 80, "tags": ["syn_rate=20:20"]}), "TCP", HTTP_PORT);
    let vip = rig.vip(80);
    let flooder = rig.client(1, 0);
    // 400 connection attempts from one source as fast as the client can send SYNs.
    let flood = std::thread::spawn({
        let host_ns = rig.topo.hosts[CLIENT].ns.clone();
        move || {
            let path = format!("/var/run/netns/{host_ns}");
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns(2) on this thread only.
            assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) }, 0);
            let mut sockets = Vec::new();
            for _ in 0..400 {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                s.bind(&flooder.into()).unwrap();
                s.set_nonblocking(true).unwrap();
                let _ = s.connect(&vip.into());
                sockets.push(s);
            }
            std::thread::sleep(Duration::from_millis(500));
            drop(sockets);
        }
    });
    // Meanwhile the other source is served every time.
    for _ in 0..15 {
        assert!(rig.get(rig.client(0, 0), 80, "/").unwrap().starts_with("member="), "the other source is not limited");
    }
    flood.join().unwrap();
    let metrics = rig.metrics();
    let drops = series(&metrics, "lb_xdp_drops_total", &format!("listener=\"{listener}\",reason=\"syn_rate\""));
    println!("SYN flood: {drops} of 400 SYNs dropped by the 20/s (burst 20) per-source limit");
    assert!(drops >= 300.0, "{metrics}");
}

/// `TcpExt` counter `name` of `host`'s network namespace (/proc/net/netstat), if this kernel
/// has it.
fn tcp_ext(host: &lb_tests::netns::Host, name: &str) -> Option<u64> {
    let out = sh(host.cmd("cat").arg("/proc/net/netstat"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (names, values) = (lines[0].split_whitespace(), lines[1].split_whitespace());
    names.zip(values).find(|(n, _)| *n == name).and_then(|(_, v)| v.parse().ok())
}

#[test]
fn translated_ports_are_reused_while_the_member_holds_them_in_time_wait() {
    // Four translated ports per member for 150 connections: every port is taken again and
    // again while the member, which closes first here (`Connection: close`), still holds the
    // tuple in TIME_WAIT. Each new client connection starts its timestamps at its own offset
    // (this host's kernel: per connection); unless XDP shifts them, the member refuses about
    // half of those SYNs (PAWS) and each refusal costs the client a retransmitted SYN. (The
    // guest's 6.1 kernel keeps one offset per address pair, so there the test passes either
    // way.)
    let rig = Rig::with_args(1, &["--xdp-nat-ports", "20000-20003"]);
    rig.listener(json!({"protocol": "TCP", "protocol_port": 80}), "TCP", HTTP_PORT);
    let client = &rig.topo.hosts[CLIENT];
    // This host's 6.18 counts PAWSTimewait, the guest's 6.1 does not; SYN retransmissions
    // tell either way.
    let members = || MEMBERS.iter().map(|m| tcp_ext(&rig.topo.hosts[*m], "PAWSTimewait")).sum::<Option<u64>>();
    let syn_retransmissions = || tcp_ext(client, "TCPSynRetrans").expect("TcpExt TCPSynRetrans");
    let (syn_retrans, paws) = (syn_retransmissions(), members());
    let started = Instant::now();
    for _ in 0..150 {
        assert!(rig.get(rig.client(0, 0), 80, "/").expect("request through XDP").starts_with("member="));
        // A closing flow's port rests 2 ms before another connection takes it.
        std::thread::sleep(Duration::from_millis(3));
    }
    let elapsed = started.elapsed();
    let (syn_retrans, paws) = (syn_retransmissions() - syn_retrans, members().zip(paws).map(|(a, b)| a - b));
    // TIME_WAIT lasts 60 s: a translated tuple in it now was in it between all its uses.
    let time_wait: usize = MEMBERS
        .iter()
        .map(|m| {
            let out = sh(rig.topo.hosts[*m].cmd("ss").args(["-Htan", "state", "time-wait"]));
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.split_whitespace().any(|a| (20000..=20003).any(|p| a.ends_with(&format!(":{p}"))))).count()
        })
        .sum();
    println!("150 connections over 4 translated ports per member in {elapsed:?}: {time_wait} translated tuples in TIME_WAIT on the members, {} SYNs refused by PAWS, {syn_retrans} SYN retransmissions", paws.map_or("(not counted by this kernel)".to_string(), |p| p.to_string()));
    assert!((3..=12).contains(&time_wait), "the members closed first and hold the translated tuples in TIME_WAIT ({time_wait})");
    assert!(paws.is_none_or(|p| p == 0), "members refused SYNs on their TIME_WAIT tuples (PAWS)");
    assert_eq!(syn_retrans, 0, "the client had to retransmit SYNs");
}

#[test]
fn a_flow_given_a_closing_flows_port_outlives_that_flows_expiry() {
    // One translated port and one member: a connection opened just after another closed
    // takes the closed one's port while that flow is still in its closing grace.
    let rig = Rig::with_args(1, &["--xdp-nat-ports", "20000-20000"]);
    let (_, pool, members) = rig.listener(json!({"protocol": "TCP", "protocol_port": 80}), "TCP", HTTP_PORT);
    for m in [2, 3] {
        let (code, _) = rig.api.delete(&format!("/v2.0/lbaas/pools/{pool}/members/{}", members[&m]));
        assert_eq!(code, 204);
        rig.api.wait_active(&rig.lb);
    }
    assert!(rig.get(rig.client(0, 0), 80, "/").unwrap().starts_with("member=member1"));
    std::thread::sleep(Duration::from_millis(10));
    let mut held = rig.topo.hosts[CLIENT].connect(rig.client(0, 0), rig.vip(80), Duration::from_secs(3)).unwrap();
    assert!(request(&mut held, "/", false).unwrap().contains(":20000"), "the new flow has the only translated port");
    // The closed flow expires (5 s grace, swept every second); the translation it handed on
    // must stay with the flow that holds it now.
    std::thread::sleep(Duration::from_secs(8));
    for _ in 0..3 {
        assert!(request(&mut held, "/", false).expect("the flow still has its translation").starts_with("member=member1"));
    }
}

/// Regression: the reconciler once bound a forwarding listener's socket before it wrote the
/// listener's XDP service (65537 Maglev slots, one system call each), and a connection opened in
/// between stayed in lbd's userspace for its whole life. A client that keeps connecting while
/// the listener is created must have every connection forwarded by XDP, the first ones too.
#[test]
fn connections_opened_while_a_listener_is_created_are_all_forwarded_by_xdp() {
    const HELD: usize = 20;
    let rig = Rig::new(1);
    // The pool and its members first, so that creating the listener brings its socket and its
    // Maglev ring in the same update.
    let (code, p) = rig.api.post("/v2.0/lbaas/pools", json!({"pool": {"loadbalancer_id": rig.lb, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}));
    assert_eq!(code, 201, "{p}");
    let pool = p["pool"]["id"].as_str().unwrap().to_string();
    rig.api.wait_active(&rig.lb);
    for m in MEMBERS {
        let address = rig.topo.hosts[m].addrs[0].to_string();
        let (code, mem) = rig.api.post(&format!("/v2.0/lbaas/pools/{pool}/members"), json!({"member": {"address": address, "protocol_port": HTTP_PORT}}));
        assert_eq!(code, 201, "{mem}");
        rig.api.wait_active(&rig.lb);
    }
    // Refused until the listener exists, then held open: the first connections land right as
    // the listener comes up.
    let vip = rig.vip(80);
    let ns = format!("/var/run/netns/{}", rig.topo.hosts[CLIENT].ns);
    let knocker = std::thread::spawn(move || {
        let ns = std::fs::File::open(&ns).unwrap();
        // SAFETY: setns(2) on this thread only.
        assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) }, 0);
        let (mut held, mut refused) = (Vec::new(), 0);
        let deadline = Instant::now() + Duration::from_secs(120);
        while held.len() < HELD && Instant::now() < deadline {
            match TcpStream::connect_timeout(&vip, Duration::from_secs(3)) {
                Ok(s) => held.push(s),
                Err(_) => {
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let answers: Vec<String> = held.iter_mut().map(|s| {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            request(s, "/", false).unwrap_or_else(|e| format!("error: {e}"))
        }).collect();
        (answers, refused)
    });
    std::thread::sleep(Duration::from_millis(300));
    let (code, l) = rig.api.post(
        "/v2.0/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": rig.lb, "protocol": "TCP", "protocol_port": 80, "default_pool_id": pool}}),
    );
    assert_eq!(code, 201, "{l}");
    let listener = l["listener"]["id"].as_str().unwrap().to_string();
    rig.api.wait_active(&rig.lb);
    let (answers, refused) = knocker.join().unwrap();
    println!("{refused} attempts refused before the listener existed, then {} connections held", answers.len());
    assert!(refused > 0, "the client started before the listener existed");
    assert_eq!(answers.len(), HELD);
    for a in &answers {
        assert!(a.starts_with("member="), "{a}");
    }
    let metrics = rig.metrics();
    let l = format!("listener=\"{listener}\"");
    assert_eq!(series(&metrics, "lb_xdp_listener_flows_total", &l), HELD as f64, "{metrics}");
    assert_eq!(series(&metrics, "lb_connections_total", &l), HELD as f64, "no connection reached lbd's userspace listener: {metrics}");
}

#[test]
fn connection_limit_drops_new_flows_while_the_listener_is_full() {
    let rig = Rig::new(1);
    let (listener, _, _) = rig.listener(json!({"protocol": "TCP", "protocol_port": 80, "connection_limit": 2}), "TCP", HTTP_PORT);
    let open = |rig: &Rig| rig.topo.hosts[CLIENT].connect(rig.client(0, 0), rig.vip(80), Duration::from_millis(1500));
    let mut a = open(&rig).unwrap();
    let mut b = open(&rig).unwrap();
    request(&mut a, "/", false).unwrap();
    request(&mut b, "/", false).unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // lbd recounts open flows every second
    assert!(open(&rig).is_err(), "a third connection is dropped at the limit");
    let metrics = rig.metrics();
    assert!(series(&metrics, "lb_xdp_drops_total", &format!("listener=\"{listener}\",reason=\"connection_limit\"")) >= 1.0, "{metrics}");
    drop(a);
    // A closed flow frees its place by the next recount.
    let started = Instant::now();
    let mut c = loop {
        match open(&rig) {
            Ok(c) => break c,
            Err(e) => assert!(started.elapsed() < Duration::from_secs(10), "room never came back: {e}"),
        }
    };
    assert!(request(&mut c, "/", false).unwrap().starts_with("member="));
    assert!(request(&mut b, "/", false).unwrap().starts_with("member="), "existing connections are untouched");
}

#[test]
fn https_passthrough_reaches_the_members_tls_servers() {
    let mut rig = Rig::new(1);
    let dir = tempfile::tempdir().unwrap();
    for m in MEMBERS {
        let (cert, key) = lb_tests::self_signed(dir.path(), &format!("member{m}"), "2");
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        rig.topo.spawn(m, &["openssl", "s_server", "-quiet", "-www", "-accept", &TLS_PORT.to_string(), "-cert", &cert, "-key", &key]);
    }
    rig.listener(json!({"protocol": "HTTPS", "protocol_port": 443}), "HTTPS", TLS_PORT);
    std::thread::sleep(Duration::from_millis(500));
    let mut seen = BTreeMap::new();
    for _ in 0..24 {
        let out = rig.topo.hosts[CLIENT].cmd("curl").args(["-skv", "--max-time", "5", &format!("https://{}/", rig.vip)]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let subject = err.lines().find_map(|l| l.trim().strip_prefix("*  subject: CN=")).unwrap_or_else(|| panic!("no TLS session through XDP: {err}"));
        assert!(String::from_utf8_lossy(&out.stdout).contains("s_server"), "the member's own TLS server answered");
        *seen.entry(subject.to_string()).or_insert(0) += 1;
    }
    println!("HTTPS passthrough: {seen:?}");
    assert!(seen.len() >= 2, "passthrough spreads over members: {seen:?}");
}

/// What `ip link show` says about XDP on `link`: "xdp" (native), "xdpgeneric", or "".
fn xdp_mode(link: &str) -> String {
    let out = sh(Command::new("ip").args(["-d", "link", "show", "dev", link]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ["xdpgeneric", "xdpdrv", "xdp"].iter().find(|m| text.split_whitespace().any(|w| w == **m || w.starts_with(&format!("{m}/")))).map(|m| m.to_string()).unwrap_or_default()
}

#[test]
fn xdp_attaches_natively_passes_other_traffic_and_detaches_on_sigterm_and_sigkill() {
    let mut topo = Topology::new();
    topo.add_host("c", 1);
    let link = topo.links()[0].clone();
    let gateway = topo.hosts[0].gateway;
    let dir = tempfile::tempdir().unwrap();
    let mut lbd = Lbd::start_with(dir.path(), gateway.into(), &["--xdp-interface", &link]);
    assert_eq!(xdp_mode(&link), "xdp", "native mode on veth");
    let curl = |url: String| String::from_utf8_lossy(&topo.hosts[0].cmd("curl").args(["-s", "--max-time", "10", &url]).output().unwrap().stdout).to_string();

    // Traffic for no service reaches lbd through the program (XDP_PASS) and is counted.
    for _ in 0..5 {
        assert_eq!(curl(format!("{}/healthz", lbd.url())), "ok\n");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let metrics = curl(format!("{}/metrics", lbd.url()));
    let total = |name: &str| metric(&metrics, name);
    println!("XDP counters: packets={} bytes={} passed={}", total("lb_xdp_packets_total"), total("lb_xdp_bytes_total"), total("lb_xdp_passed_total"));
    assert!(total("lb_xdp_packets_total") >= 20.0, "{metrics}");
    assert_eq!(total("lb_xdp_packets_total"), total("lb_xdp_passed_total"));
    assert!(total("lb_xdp_bytes_total") > total("lb_xdp_packets_total") * 40.0);
    assert!(metrics.contains(&format!("lb_xdp_attached{{interface=\"{link}\",mode=\"native\"}} 1")), "{metrics}");
    assert!(lbd.log().contains("XDP program attached in native (driver) mode"));

    // SIGTERM: clean exit, nothing left on the interface.
    assert!(lbd.stop(), "lbd exits cleanly on SIGTERM: {}", lbd.log());
    assert!(lbd.log().contains("XDP program detached"));
    assert_eq!(xdp_mode(&link), "", "no XDP program left after SIGTERM");

    // SIGKILL: the kernel drops the program with lbd's bpf_link.
    let mut lbd = Lbd::start_with(dir.path(), gateway.into(), &["--xdp-interface", &link]);
    assert_eq!(xdp_mode(&link), "xdp");
    lbd.kill9();
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        xdp_mode(&link).is_empty()
    });
    assert!(gone, "no XDP program left after SIGKILL");
    // And a restart attaches again cleanly.
    let lbd = Lbd::start_with(dir.path(), gateway.into(), &["--xdp-interface", &link]);
    assert_eq!(xdp_mode(&link), "xdp");
    drop(lbd);
}

#[test]
fn bad_xdp_settings_are_clear_startup_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(lb_tests::lbd::lbd_binary())
            .args(["serve", "--api-listen", "127.0.0.1:0"])
            .args(extra)
            .env("LBD_STATE_DIR", dir.path().join("state"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run(&["--xdp-interface", "no-such-if0"]).contains("cannot attach XDP to no-such-if0"));
    assert!(run(&["--xdp-interface", "lo", "--xdp-object", "/nonexistent/lb-xdp"]).contains("cannot load the XDP object /nonexistent/lb-xdp"));
    assert!(run(&["--xdp-interface", "lo", "--xdp-table-size", "65536"]).contains("--xdp-table-size 65536: must be a prime no larger than 65537"));
    assert!(run(&["--xdp-interface", "lo", "--xdp-nat-ports", "900-2000"]).contains("--xdp-nat-ports 900-2000"));
}

#[test]
fn udp_listeners_without_xdp_are_an_error_that_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let lbd = Lbd::start(dir.path());
    let api = Api::login(&lbd);
    let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": "u", "vip_address": "127.0.0.1"}}));
    assert_eq!(code, 201);
    let lb = lb["loadbalancer"]["id"].as_str().unwrap().to_string();
    api.wait_active(&lb);
    let (code, l) = api.post("/v2.0/lbaas/listeners", json!({"listener": {"loadbalancer_id": lb, "protocol": "UDP", "protocol_port": 53}}));
    assert_eq!(code, 201, "{l}");
    api.wait_active(&lb);
    let id = l["listener"]["id"].as_str().unwrap();
    let (_, shown) = api.get(&format!("/v2.0/lbaas/listeners/{id}"));
    assert_eq!(shown["listener"]["provisioning_status"], "ERROR", "{shown}");
    assert!(lbd.log().contains("UDP listeners are forwarded by the XDP data path: start lbd with --xdp-interface"));
}
