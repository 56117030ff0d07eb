//! Test hosts in network namespaces the test creates: each host is a namespace joined to the
//! root namespace (the lb node, where lbd runs) by a veth pair on a /24 of its own, with its
//! default route via the lb node. Sockets opened from a thread that entered a host's namespace
//! live in that namespace, so test servers and clients can run inside the test process.
//! Everything is deleted when the topology is dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sh;

/// One host: namespace `ns`, reached from the lb node through `link`.
pub struct Host {
    pub ns: String,
    /// The lb node's end of the veth pair.
    pub link: String,
    /// The lb node's address on this host's subnet (the host's gateway).
    pub gateway: Ipv4Addr,
    /// The host's addresses (the first is primary).
    pub addrs: Vec<Ipv4Addr>,
    /// The subnet's name in lbd's Neutron lookup (`<link>-<network>`).
    pub subnet: String,
}

pub struct Topology {
    pub hosts: Vec<Host>,
    children: Vec<Child>,
    prefix: String,
    net: u8,
}

/// Second octets handed out so far (topologies of one test binary run in parallel).
static NEXT_NET: AtomicU32 = AtomicU32::new(0);

impl Topology {
    /// An empty topology. Needs root.
    #[expect(clippy::new_without_default, reason = "it needs root and takes one of the binary's network numbers: not a default value")]
    pub fn new() -> Topology {
        assert_eq!(unsafe { libc::geteuid() }, 0, "network namespace tests need root");
        let n = NEXT_NET.fetch_add(1, Ordering::SeqCst);
        assert!(n < 30, "too many topologies in one test binary");
        let prefix = format!("lt{}{}", std::process::id() % 10_000, (b'a' + n as u8) as char);
        Topology { hosts: vec![], children: vec![], prefix, net: 220 + n as u8 }
    }

    /// Adds host number `i` (its subnet is 10.<net>.<i>.0/24) with `addrs` addresses.
    pub fn add_host(&mut self, name: &str, addrs: usize) -> &Host {
        let i = self.hosts.len() as u8 + 1;
        let ns = format!("{}{name}", self.prefix);
        let link = format!("{}{i}", self.prefix);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let gateway = Ipv4Addr::new(10, self.net, i, 1);
        let addrs: Vec<Ipv4Addr> = (0..addrs).map(|a| Ipv4Addr::new(10, self.net, i, 2 + a as u8)).collect();
        sh(Command::new("ip").args(["netns", "add", &ns]));
        sh(Command::new("ip").args(["link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns]));
        sh(Command::new("ip").args(["addr", "add", &format!("{gateway}/24"), "dev", &link]));
        sh(Command::new("ip").args(["link", "set", &link, "up"]));
        for a in &addrs {
            sh(Command::new("ip").args(["-n", &ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"]));
        }
        sh(Command::new("ip").args(["-n", &ns, "link", "set", "eth0", "up"]));
        sh(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
        sh(Command::new("ip").args(["-n", &ns, "route", "add", "default", "via", &gateway.to_string()]));
        // veth offers checksum offload, so a host's packets would carry partial checksums that
        // XDP cannot complete; and frames redirected into a veth need NAPI on the receiving
        // end, which GRO turns on. Real NICs need neither.
        sh(Command::new("ip").args(["netns", "exec", &ns, "ethtool", "-K", "eth0", "tx", "off", "gro", "on"]));
        let subnet = format!("{link}-10.{}.{i}.0", self.net);
        self.hosts.push(Host { ns, link, gateway, addrs, subnet });
        self.hosts.last().unwrap()
    }

    /// The lb node's ends of every host link (where lbd attaches XDP).
    pub fn links(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.link.clone()).collect()
    }

    /// Starts a process inside host `i`'s namespace; it is killed with the topology.
    pub fn spawn(&mut self, i: usize, argv: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i].ns])
            .args(argv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).output();
        }
    }
}

impl Host {
    /// A command run inside this host (`ip netns exec`).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Runs `f` on a thread that has entered this host's network namespace: sockets it opens
    /// belong to the host.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) on a namespace fd we hold open; it changes only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }

    /// A TCP listener bound inside this host.
    pub fn tcp_listener(&self, addr: SocketAddr) -> std::net::TcpListener {
        self.run(move || std::net::TcpListener::bind(addr).unwrap())
    }

    /// A UDP socket bound inside this host.
    pub fn udp_socket(&self, addr: SocketAddr) -> std::net::UdpSocket {
        self.run(move || std::net::UdpSocket::bind(addr).unwrap())
    }

    /// A TCP connection from `from` (port 0: any) inside this host to `to`, within `timeout`.
    pub fn connect(&self, from: SocketAddr, to: SocketAddr, timeout: std::time::Duration) -> std::io::Result<std::net::TcpStream> {
        self.run(move || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.bind(&from.into())?;
            s.connect_timeout(&to.into(), timeout)?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            Ok(s.into())
        })
    }
}
