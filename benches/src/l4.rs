//! The L4 comparison: lbd's XDP path against userspace TCP proxies (HAProxy `mode tcp`, and
//! lbd's own userspace forwarding) on one namespace topology — a client namespace running wrk,
//! the lb node (the root namespace) and a member namespace running Debian's nginx, joined by
//! veth pairs. Each contender runs alone while it is measured (the XDP program is attached
//! only while lbd-xdp runs), in turn, for each repetition.
//!
//! What the load balancer costs is measured two ways:
//! - **lb CPU**: for the userspace proxies, utime+stime of their processes (their system calls
//!   and the socket work done in them); for lbd-xdp, lbd's process time plus the XDP program's
//!   own run time as the kernel accounts it (`kernel.bpf_stats_enabled`, `run_time_ns` of the
//!   program). XDP runs in the receive path of whoever sent the packet, and this kernel has no
//!   IRQ time accounting, so no process's or /proc/stat's figure isolates it. Not in the XDP
//!   figure: the driver's redirect and transmit work after the program returns.
//! - **machine CPU per request**: all busy CPU of the machine (wall time × CPUs − idle time from
//!   /proc/stat) per request, generator
//!   and member included, the same for every contender: it shows the end-to-end difference
//!   without attributing anything.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::load::{self, Load};
use crate::procs;

const CLIENT_NS: &str = "lbbench-c";
const MEMBER_NS: &str = "lbbench-m";
const CLIENT_LINK: &str = "lbbench1";
const MEMBER_LINK: &str = "lbbench2";
const VIP: &str = "10.250.1.1";
const MEMBER: &str = "10.250.2.2";
const MEMBER_PORT: u16 = 8080;
const VIP_PORT: u16 = 80;

pub const SCENARIOS: [(&str, &str); 2] = [
    ("l4-keepalive", "1 KiB responses over 32 keep-alive TCP connections (packets forwarded)"),
    ("l4-connections", "a new TCP connection per 1 KiB request (Connection: close; connections/s)"),
];

pub const CONTENDERS: [&str; 3] = ["lbd-xdp", "lbd-userspace", "haproxy-tcp"];

/// One L4 measurement.
#[derive(Clone, Debug)]
pub struct L4Sample {
    pub scenario: &'static str,
    pub contender: &'static str,
    pub load: Load,
    /// Packets the client's interface sent and received.
    pub client_packets: f64,
    /// The load balancer's CPU (see the module doc).
    pub lb_cpu: f64,
    /// The contender's own processes.
    pub process_cpu: f64,
    /// The XDP program's run time (lbd-xdp only).
    pub xdp_cpu: f64,
    /// Busy CPU of the whole machine.
    pub machine_cpu: f64,
    pub generator_cpu: f64,
    pub member_cpu: f64,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> anyhow::Result<Proc> {
    use std::os::unix::process::CommandExt;
    let child = cmd.process_group(0).stdin(Stdio::null()).stdout(Stdio::null()).spawn().with_context(|| format!("failed to run {cmd:?}"))?;
    Ok(Proc(child))
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    crate::run(Command::new("ip").args(args))
}

/// The topology; deleted when dropped.
struct Topology;

impl Topology {
    fn new() -> anyhow::Result<Topology> {
        Topology::remove();
        for (ns, link, host, peer) in [(CLIENT_NS, CLIENT_LINK, "10.250.1.1", "10.250.1.2"), (MEMBER_NS, MEMBER_LINK, "10.250.2.1", MEMBER)] {
            ip(&["netns", "add", ns])?;
            ip(&["link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
            ip(&["addr", "add", &format!("{host}/24"), "dev", link])?;
            ip(&["link", "set", link, "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{peer}/24"), "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "route", "add", "default", "via", host])?;
            // As in the XDP tests: no partial checksums from veth, NAPI on for redirected frames.
            crate::run(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off", "gro", "on"]))?;
        }
        // wrk closes each connection itself after a `Connection: close` response, so its
        // single address would run out of ports to TIME_WAIT within a second at these rates:
        // let the client reuse them (timestamps keep that safe) across the whole port range.
        crate::run(Command::new("ip").args(["netns", "exec", CLIENT_NS, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65535"]))?;
        Ok(Topology)
    }
}

impl Topology {
    /// Deletes the links and namespaces (the links explicitly: a deleted namespace's veths
    /// go away asynchronously, too late for a run that starts right after).
    fn remove() {
        for link in [CLIENT_LINK, MEMBER_LINK] {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        for ns in [CLIENT_NS, MEMBER_NS] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        Topology::remove();
    }
}

/// Idle CPU seconds of the whole machine since boot (idle + iowait). Idle time is measured
/// exactly on tickless kernels; user and system time are sampled at ticks and miss short
/// bursts, so busy time is derived as wall time × CPUs − idle time.
fn machine_idle() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    (f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0)) / 100.0
}

fn client_packets() -> f64 {
    let read = |what: &str| -> f64 {
        Command::new("ip")
            .args(["netns", "exec", CLIENT_NS, "cat", &format!("/sys/class/net/eth0/statistics/{what}")])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0.0)
    };
    read("rx_packets") + read("tx_packets")
}

/// The member: nginx in the member namespace serving /1k.
fn member(dir: &Path) -> anyhow::Result<Proc> {
    let root = dir.join("www");
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("1k"), vec![b'x'; 1024])?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\nevents {{ worker_connections 16384; }}\n\
             http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n\
               fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
               server {{ listen {MEMBER}:{MEMBER_PORT} reuseport; root {r}; location / {{ }} }} }}\n",
            d = dir.display(),
            r = root.display()
        ),
    )?;
    let p = spawn(Command::new("ip").args(["netns", "exec", MEMBER_NS, "nginx", "-c"]).arg(&conf).arg("-p").arg(dir).arg("-e").arg(dir.join("error.log")))?;
    wait_for(&["netns", "exec", MEMBER_NS, "curl", "-sf", "-o", "/dev/null", &format!("http://{MEMBER}:{MEMBER_PORT}/1k")])?;
    Ok(p)
}

fn wait_for(ip_args: &[&str]) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if Command::new("ip").args(ip_args).output().map(|o| o.status.success()).unwrap_or(false) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("timed out waiting for `ip {}`", ip_args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `name` on the lb node, forwarding VIP:80 to the member, and waits until a request
/// from the client passes.
fn contender(name: &str, lbd: &Path, dir: &Path) -> anyhow::Result<Proc> {
    let p = match name {
        "haproxy-tcp" => {
            let conf = dir.join("haproxy-l4.cfg");
            std::fs::write(
                &conf,
                format!(
                    "global\n  nbthread 2\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                     frontend f\n  bind {VIP}:{VIP_PORT}\n  default_backend b\nbackend b\n  server s1 {MEMBER}:{MEMBER_PORT} maxconn 4000\n"
                ),
            )?;
            spawn(Command::new("haproxy").arg("-db").arg("-f").arg(&conf).stderr(std::fs::File::create(dir.join("haproxy-l4.log"))?))?
        }
        _ => {
            let state = dir.join(format!("state-{name}"));
            let _ = std::fs::remove_dir_all(&state);
            let api = crate::servers::free_port();
            let mut cmd = Command::new(lbd);
            cmd.args(["serve", "--api-listen", &format!("127.0.0.1:{api}"), "--ktls", "off"]);
            if name == "lbd-xdp" {
                cmd.args(["--xdp-interface", CLIENT_LINK, "--xdp-interface", MEMBER_LINK]);
            }
            cmd.env("LBD_STATE_DIR", &state).env("LBD_LOG", "warn").stderr(std::fs::File::create(dir.join(format!("{name}.log")))?);
            let mut p = spawn(&mut cmd)?;
            let url = format!("http://127.0.0.1:{api}");
            crate::servers::wait_listening(name, api, &mut p.0, Duration::from_secs(20))
                .with_context(|| format!("{name}'s log: {}", std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()))?;
            let password = std::fs::read_to_string(state.join("admin-password")).context("lbd admin password")?;
            let token = crate::servers::token(&url, password.trim())?;
            let lb = json!({"loadbalancer": {"name": "l4", "vip_address": VIP, "vip_subnet_id": format!("{CLIENT_LINK}-10.250.1.0"),
                "listeners": [{"name": "l", "protocol": "TCP", "protocol_port": VIP_PORT,
                    "default_pool": {"name": "p", "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN",
                        "members": [{"address": MEMBER, "protocol_port": MEMBER_PORT}]}}]}});
            crate::servers::call(&url, &token, "/v2.0/lbaas/loadbalancers", lb)?;
            p
        }
    };
    wait_for(&["netns", "exec", CLIENT_NS, "curl", "-sf", "--max-time", "2", "-o", "/dev/null", &format!("http://{VIP}:{VIP_PORT}/1k")])
        .with_context(|| format!("{name} does not forward; its log: {}", std::fs::read_to_string(dir.join(format!("{name}.log"))).or_else(|_| std::fs::read_to_string(dir.join("haproxy-l4.log"))).unwrap_or_default()))?;
    Ok(p)
}

/// Run time of the BPF programs process `pid` holds (kernel statistics), in seconds.
fn bpf_run_seconds(pid: u32) -> f64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return 0.0 };
    fds.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|info| info.contains("prog_type:"))
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("run_time_ns:")).and_then(|v| v.trim().parse::<f64>().ok()))
        .sum::<f64>()
        / 1e9
}

/// A sysctl set for as long as this lives; the old value comes back after.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> anyhow::Result<Sysctl> {
        let old = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        std::fs::write(path, value).with_context(|| format!("writing {path}"))?;
        Ok(Sysctl { path, old: old.trim().to_string() })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.old);
    }
}


/// Runs each wanted L4 scenario against each of `contenders`, `reps` times, `seconds` each.
pub fn run(lbd: &Path, dir: &Path, reps: usize, seconds: u32, wanted: &dyn Fn(&str) -> bool, contenders: &[&'static str]) -> anyhow::Result<Vec<L4Sample>> {
    let scenarios: Vec<(&'static str, &'static str)> = SCENARIOS.iter().copied().filter(|(n, _)| wanted(n)).collect();
    if scenarios.is_empty() || contenders.is_empty() {
        return Ok(vec![]);
    }
    let dir: PathBuf = dir.join("l4");
    std::fs::create_dir_all(&dir)?;
    let _topology = Topology::new()?;
    // The kernel's BPF run-time statistics (`run_time_ns`), for the XDP program's CPU.
    let _stats = Sysctl::set("/proc/sys/kernel/bpf_stats_enabled", "1")?;
    // The same for the userspace proxies' own connections to the member, on the lb node.
    let _tw_reuse = Sysctl::set("/proc/sys/net/ipv4/tcp_tw_reuse", "1")?;
    let member = member(&dir.join("member"))?;
    let mut samples = Vec::new();
    for rep in 0..reps {
        for &name in contenders {
            let c = contender(name, lbd, &dir).with_context(|| format!("starting {name}"))?;
            for (scenario, _) in &scenarios {
                let headers: &[&str] = if *scenario == "l4-connections" { &["Connection: close"] } else { &[] };
                let pids = procs::tree(c.0.id());
                let member_pids = procs::tree(member.0.id());
                let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
                let (t0, m0, p0, mem0, g0, pk0, x0) =
                    (Instant::now(), machine_idle(), procs::cpu_seconds(&pids), procs::cpu_seconds(&member_pids), procs::children_cpu_seconds(), client_packets(), bpf_run_seconds(c.0.id()));
                let load = load::Wrk { url: format!("http://{VIP}:{VIP_PORT}/1k"), threads: 2, connections: 32, seconds, headers, lua: String::new() }.run_in(CLIENT_NS, &dir)?;
                let generator_cpu = procs::children_cpu_seconds() - g0;
                let member_cpu = procs::cpu_seconds(&procs::tree(member.0.id())) - mem0;
                let process_cpu = procs::cpu_seconds(&procs::tree(c.0.id())) - p0;
                let xdp_cpu = bpf_run_seconds(c.0.id()) - x0;
                let machine_cpu = t0.elapsed().as_secs_f64() * cpus - (machine_idle() - m0);
                let lb_cpu = (process_cpu + xdp_cpu).max(1e-4);
                let s = L4Sample { scenario, contender: name, client_packets: client_packets() - pk0, load, lb_cpu, process_cpu, xdp_cpu, machine_cpu, generator_cpu, member_cpu };
                eprintln!(
                    "rep {} {:>15} {:>14}: {:>8.0} req/s {:>9.0} pkt/s, lb CPU {:.3}s (process {:.3}s, XDP program {:.3}s), machine {:.2}s, generator {:.2}s, member {:.2}s",
                    rep + 1,
                    scenario,
                    name,
                    s.load.requests / s.load.seconds.max(1e-9),
                    s.client_packets / s.load.seconds.max(1e-9),
                    s.lb_cpu,
                    s.process_cpu,
                    s.xdp_cpu,
                    s.machine_cpu,
                    s.generator_cpu,
                    s.member_cpu
                );
                samples.push(s);
            }
        }
    }
    Ok(samples)
}
