//! lb's XDP program on a real interface: a veth pair into a network namespace the test creates,
//! a real lbd attaching the program (native mode on veth), traffic from the namespace passing
//! through it and counted in `/metrics`, and no program left on the interface after lbd stops —
//! by SIGTERM or by SIGKILL. Runs as root on the host and, via `cargo xtask vm-test`, on
//! Debian's 6.1 kernel in the guest.

use std::process::Command;

use lb_tests::lbd::Lbd;
use lb_tests::{metric, sh};

/// A namespace with a veth pair: `host` (10.201.0.1/24) here, `peer` (10.201.0.2/24) inside.
struct Topology {
    ns: String,
    host: String,
}

impl Topology {
    fn new() -> Topology {
        assert_eq!(unsafe { libc::geteuid() }, 0, "the XDP tests need root (network namespaces, XDP attach)");
        let id = std::process::id() % 100_000;
        let t = Topology { ns: format!("lbt{id}"), host: format!("lbx{id}a") };
        let peer = format!("lbx{id}b");
        let _ = Command::new("ip").args(["netns", "del", &t.ns]).output();
        sh(Command::new("ip").args(["netns", "add", &t.ns]));
        sh(Command::new("ip").args(["link", "add", &t.host, "type", "veth", "peer", "name", &peer, "netns", &t.ns]));
        sh(Command::new("ip").args(["addr", "add", "10.201.0.1/24", "dev", &t.host]));
        sh(Command::new("ip").args(["link", "set", &t.host, "up"]));
        sh(Command::new("ip").args(["-n", &t.ns, "addr", "add", "10.201.0.2/24", "dev", &peer]));
        sh(Command::new("ip").args(["-n", &t.ns, "link", "set", &peer, "up"]));
        sh(Command::new("ip").args(["-n", &t.ns, "link", "set", "lo", "up"]));
        t
    }

    /// What `ip link show` says about XDP on the host end: "xdp" (native), "xdpgeneric", or "".
    fn xdp_mode(&self) -> String {
        let out = sh(Command::new("ip").args(["-d", "link", "show", "dev", &self.host]));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        ["xdpgeneric", "xdpdrv", "xdp"].iter().find(|m| text.split_whitespace().any(|w| w == **m || w.starts_with(&format!("{m}/")))).map(|m| m.to_string()).unwrap_or_default()
    }

    /// Runs curl inside the namespace.
    fn curl(&self, url: &str) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.ns, "curl", "-s", "--max-time", "10", url]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

#[test]
fn xdp_attaches_natively_counts_passing_traffic_and_detaches_on_sigterm_and_sigkill() {
    let topo = Topology::new();
    let dir = tempfile::tempdir().unwrap();
    let ip = "10.201.0.1".parse().unwrap();
    let mut lbd = Lbd::start_with(dir.path(), ip, &["--xdp-interface", &topo.host]);
    assert_eq!(topo.xdp_mode(), "xdp", "native mode on veth");

    // Traffic from the namespace reaches lbd through the program (XDP_PASS) ...
    for _ in 0..5 {
        assert_eq!(topo.curl(&format!("{}/healthz", lbd.url())), "ok\n");
    }
    // ... and is counted (the counters are copied into /metrics once a second).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let metrics = topo.curl(&format!("{}/metrics", lbd.url()));
    let series = |name: &str| metric(&metrics, &format!("{name}{{interface=\"{}\"}}", topo.host));
    println!("XDP counters: packets={} bytes={} passed={}", series("lb_xdp_packets_total"), series("lb_xdp_bytes_total"), series("lb_xdp_passed_total"));
    assert!(series("lb_xdp_packets_total") >= 20.0, "{metrics}");
    assert_eq!(series("lb_xdp_packets_total"), series("lb_xdp_passed_total"));
    assert!(series("lb_xdp_bytes_total") > series("lb_xdp_packets_total") * 40.0);
    assert!(metrics.contains(&format!("lb_xdp_attached{{interface=\"{}\",mode=\"native\"}} 1", topo.host)), "{metrics}");

    // SIGTERM: clean exit, nothing left on the interface.
    assert!(lbd.stop(), "lbd exits cleanly on SIGTERM: {}", lbd.log());
    assert_eq!(topo.xdp_mode(), "", "no XDP program left after SIGTERM");

    // SIGKILL: the kernel drops the program with lbd's bpf_link.
    let mut lbd = Lbd::start_with(dir.path(), ip, &["--xdp-interface", &topo.host]);
    assert_eq!(topo.xdp_mode(), "xdp");
    lbd.kill9();
    let gone = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        topo.xdp_mode().is_empty()
    });
    assert!(gone, "no XDP program left after SIGKILL");
    // And a restart attaches again cleanly.
    let lbd = Lbd::start_with(dir.path(), ip, &["--xdp-interface", &topo.host]);
    assert_eq!(topo.xdp_mode(), "xdp");
    drop(lbd);
}

#[test]
fn a_missing_interface_or_object_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(lb_tests::lbd::lbd_binary())
        .args(["serve", "--api-listen", "127.0.0.1:0", "--xdp-interface", "no-such-if0"])
        .env("LBD_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot attach XDP to no-such-if0"), "{err}");
    let out = Command::new(lb_tests::lbd::lbd_binary())
        .args(["serve", "--api-listen", "127.0.0.1:0", "--xdp-interface", "lo", "--xdp-object", "/nonexistent/lb-xdp"])
        .env("LBD_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot load the XDP object /nonexistent/lb-xdp"), "{err}");
}
