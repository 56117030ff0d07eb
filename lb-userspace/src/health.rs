//! Active health checks of pool members (Octavia health monitors). Each monitored member gets a
//! task on the control thread that checks it every `delay`: `max_retries_down` consecutive
//! failures take it out of service, `max_retries` consecutive successes bring it back. A member
//! is in service until checks say otherwise, so a new monitor never empties a working pool.
//! After a restart the verdicts recorded before it (members' `operating_status`) hold until
//! checks change them, as HAProxy's server-state file does for Octavia's amphorae: a member that
//! was out stays out until `max_retries` checks pass.
//!
//! The verdicts flow one way: the controller reads them into the desired state (a member out of
//! service has no weight, in the userspace proxy and in XDP's Maglev tables alike) and into each
//! member's `operating_status`; a change of verdict wakes the controller.
//!
//! `HTTPS` and `TLS-HELLO` checks of a pool with TLS to its members speak TLS as the pool's
//! traffic does (as HAProxy's checks inherit a server's `ssl` settings): the member's
//! certificate is verified against the pool's CA and CRLs, and lb's client certificate is
//! presented. Pools without `tls_enabled` are checked without verification.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::metrics::{MemberLabels, Metrics, PoolMemberLabels};
use crate::proxy::proxy_header;
use crate::tls::client::member_tls;
use lb_common::model::{DesiredState, HealthMonitor, HttpCheck, MonitorKind, PoolTls, ProxyHeader};

/// Checks never run closer together than this, whatever `delay` says (Octavia allows 0).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How much of a member's HTTP answer is read to find its status line.
const STATUS_LINE_MAX: usize = 1024;

/// What one member's checker does; a change restarts it.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    pool: String,
    monitor: HealthMonitor,
    addr: SocketAddr,
    /// The pool's TLS to members (`tls_enabled`): HTTPS and TLS-HELLO checks use it, as the
    /// pool's traffic does (trust anchors, CRLs, lb's client certificate, server name).
    tls: Option<PoolTls>,
    /// `PROXY` / `PROXYV2` pools: checks open with the header too (the check connection's own
    /// addresses), as HAProxy's do on servers with `send-proxy`.
    proxy: Option<ProxyHeader>,
}

/// A monitored member's standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// In service (carries traffic).
    pub healthy: bool,
    /// At least one check has finished since monitoring began.
    pub checked: bool,
}

struct Checker {
    target: Target,
    task: JoinHandle<()>,
}

/// The running checkers and their verdicts, by member id.
pub struct HealthChecks {
    checkers: Mutex<HashMap<String, Checker>>,
    verdicts: Arc<Mutex<HashMap<String, Verdict>>>,
    changed: Arc<Notify>,
    tls: tokio_rustls::TlsConnector,
    metrics: Arc<Metrics>,
}

impl HealthChecks {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = crate::tls::verify::member_verifier(None, &[], provider.clone()).expect("a verifier without a CA always builds");
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        HealthChecks {
            checkers: Mutex::new(HashMap::new()),
            verdicts: Arc::new(Mutex::new(HashMap::new())),
            changed: Arc::new(Notify::new()),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            metrics,
        }
    }

    /// Notified whenever a member's verdict changes.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Checks exactly the members `state` monitors (enabled monitors, members administratively
    /// up): starts new checkers, restarts changed ones, stops the rest. A restarted checker
    /// keeps the member's verdict. Must run inside a tokio runtime.
    pub fn apply(&self, state: &DesiredState) {
        let mut wanted: HashMap<String, Target> = HashMap::new();
        for lb in &state.load_balancers {
            for pool in &lb.pools {
                let Some(monitor) = pool.health_monitor.as_ref().filter(|h| h.admin_state_up) else { continue };
                for m in pool.members.iter().filter(|m| m.admin_state_up) {
                    let addr = SocketAddr::new(m.monitor_address.unwrap_or(m.address), m.monitor_port.unwrap_or(m.protocol_port));
                    let target = Target { pool: pool.id.clone(), monitor: monitor.clone(), addr, tls: pool.tls.clone(), proxy: pool.protocol.proxy_header() };
                    wanted.insert(m.id.clone(), target);
                }
            }
        }
        let mut checkers = self.checkers.lock().expect("health checkers lock");
        checkers.retain(|id, c| {
            let keep = wanted.get(id) == Some(&c.target);
            if !keep {
                c.task.abort();
                if !wanted.contains_key(id) {
                    self.metrics.member_healthy.remove(&PoolMemberLabels { pool: c.target.pool.clone(), member: id.clone() });
                }
            }
            keep
        });
        self.verdicts.lock().expect("verdicts lock").retain(|id, _| wanted.contains_key(id));
        // One TLS client configuration per pool (and ALPN), shared by its members' checkers.
        let mut pool_tls: HashMap<(String, bool), Result<CheckTls, String>> = HashMap::new();
        for (id, target) in wanted {
            if checkers.contains_key(&id) {
                continue;
            }
            let https = target.monitor.kind == MonitorKind::Https;
            let tls = match &target.tls {
                None => Ok(CheckTls { connector: self.tls.clone(), server_name: None }),
                Some(settings) => pool_tls
                    .entry((target.pool.clone(), https))
                    .or_insert_with(|| {
                        member_tls(settings, https, false)
                            .map(|t| CheckTls { connector: tokio_rustls::TlsConnector::from(t.config), server_name: t.server_name })
                            .map_err(|e| e.to_string())
                    })
                    .clone(),
            };
            let watch = Watch {
                member: id.clone(),
                target: target.clone(),
                verdicts: self.verdicts.clone(),
                changed: self.changed.clone(),
                tls,
                metrics: self.metrics.clone(),
            };
            checkers.insert(id, Checker { target, task: tokio::spawn(watch.run()) });
        }
    }

    /// Takes back verdicts recorded before a restart; call before the first [`Self::apply`],
    /// which forgets those of members no longer monitored. A restored member out of service
    /// needs `max_retries` passing checks to come back.
    pub fn restore(&self, recorded: impl IntoIterator<Item = (String, Verdict)>) {
        self.verdicts.lock().expect("verdicts lock").extend(recorded);
    }

    /// The verdict on a monitored member; `None` when it is not monitored.
    pub fn verdict(&self, member: &str) -> Option<Verdict> {
        self.verdicts.lock().expect("verdicts lock").get(member).copied()
    }

    /// Marks the members of `state` that checks have taken out of service. Only members that
    /// `state` itself monitors can be out: a verdict outlives neither its enabled monitor nor
    /// its member.
    pub fn overlay(&self, state: &mut DesiredState) {
        let verdicts = self.verdicts.lock().expect("verdicts lock");
        for pool in state.load_balancers.iter_mut().flat_map(|lb| lb.pools.iter_mut()) {
            let monitored = pool.health_monitor.as_ref().is_some_and(|h| h.admin_state_up);
            for m in &mut pool.members {
                m.healthy = !monitored || verdicts.get(&m.id).is_none_or(|v| v.healthy);
            }
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for c in self.checkers.get_mut().expect("health checkers lock").values() {
            c.task.abort();
        }
    }
}

/// How a checker speaks TLS: the pool's member settings, or (pools without `tls_enabled`)
/// unverified without a client certificate.
#[derive(Clone)]
struct CheckTls {
    connector: tokio_rustls::TlsConnector,
    /// The pool's name for its members' certificates, if it sets one.
    server_name: Option<rustls::pki_types::ServerName<'static>>,
}

/// One member's checker.
struct Watch {
    member: String,
    target: Target,
    verdicts: Arc<Mutex<HashMap<String, Verdict>>>,
    changed: Arc<Notify>,
    /// `Err`: the pool's TLS settings do not build (every TLS check fails with the reason).
    tls: Result<CheckTls, String>,
    metrics: Arc<Metrics>,
}

impl Watch {
    async fn run(self) {
        let monitor = &self.target.monitor;
        let labels = PoolMemberLabels { pool: self.target.pool.clone(), member: self.member.clone() };
        let (mut passed, mut failed) = (0u32, 0u32);
        let mut interval = tokio::time::interval(monitor.delay.max(MIN_INTERVAL));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let outcome = check(&self.target, &self.tls).await;
            let before = self.verdicts.lock().expect("verdicts lock").get(&self.member).copied().unwrap_or(Verdict { healthy: true, checked: false });
            let mut after = Verdict { checked: true, ..before };
            match &outcome {
                Ok(()) => {
                    (passed, failed) = (passed.saturating_add(1), 0);
                    if !before.healthy && passed >= monitor.rise {
                        after.healthy = true;
                        tracing::info!(pool = %self.target.pool, member = %self.member, addr = %self.target.addr, "member passed {passed} health checks: back in service");
                    }
                }
                Err(failure) => {
                    (passed, failed) = (0, failed.saturating_add(1));
                    self.metrics.health_check_failures.get_or_create(&MemberLabels { pool: labels.pool.clone(), member: labels.member.clone(), reason: failure.reason }).inc();
                    if before.healthy && failed >= monitor.fall {
                        after.healthy = false;
                        tracing::warn!(pool = %self.target.pool, member = %self.member, addr = %self.target.addr, reason = failure.reason, detail = %failure.detail, "member failed {failed} health checks: out of service");
                    } else {
                        tracing::debug!(member = %self.member, reason = failure.reason, detail = %failure.detail, "health check failed");
                    }
                }
            }
            self.metrics.member_healthy.get_or_create(&labels).set(i64::from(after.healthy));
            if after != before {
                self.verdicts.lock().expect("verdicts lock").insert(self.member.clone(), after);
                self.changed.notify_one();
            }
        }
    }
}

/// Why a check failed: a short reason for metrics, and the detail for the log.
#[derive(Debug)]
struct Failure {
    reason: &'static str,
    detail: String,
}

fn fail(reason: &'static str, detail: impl ToString) -> Failure {
    Failure { reason, detail: detail.to_string() }
}

/// One check of `target`, bounded by the monitor's timeout.
async fn check(target: &Target, tls: &Result<CheckTls, String>) -> Result<(), Failure> {
    let monitor = &target.monitor;
    if monitor.kind == MonitorKind::UdpConnect {
        // Success is the absence of a refusal within the timeout: this check waits it out.
        return udp_connect(target.addr, monitor.timeout).await;
    }
    let work = async {
        match monitor.kind {
            MonitorKind::Ping => ping(target.addr.ip(), monitor.timeout).await,
            MonitorKind::Tcp => connect(target).await.map(drop),
            MonitorKind::Http => http(connect(target).await?, monitor.http.as_ref(), target.addr).await,
            MonitorKind::Https | MonitorKind::TlsHello => {
                let tls = tls.as_ref().map_err(|e| fail("tls_config", e))?;
                let tcp = connect(target).await?;
                let name = tls.server_name.clone().unwrap_or_else(|| {
                    monitor
                        .http
                        .as_ref()
                        .and_then(|h| h.host.clone())
                        .and_then(|h| rustls::pki_types::ServerName::try_from(h).ok())
                        .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(target.addr.ip().into()))
                });
                let stream = tls.connector.connect(name, tcp).await.map_err(|e| fail("tls", e))?;
                match monitor.kind {
                    MonitorKind::Https => http(stream, monitor.http.as_ref(), target.addr).await,
                    _ => Ok(()),
                }
            }
            MonitorKind::UdpConnect => unreachable!("handled above"),
        }
    };
    tokio::time::timeout(monitor.timeout, work).await.unwrap_or_else(|_| Err(fail("timeout", format!("no answer within {:?}", monitor.timeout))))
}

/// A check's connection to the member, opened with the pool's PROXY header if it sends one.
async fn connect(target: &Target) -> Result<TcpStream, Failure> {
    let mut tcp = TcpStream::connect(target.addr).await.map_err(|e| fail(if e.kind() == std::io::ErrorKind::ConnectionRefused { "refused" } else { "connect" }, e))?;
    if let Some(version) = target.proxy {
        let local = tcp.local_addr().map_err(|e| fail("io", e))?;
        tcp.write_all(&proxy_header::encode(version, local, target.addr)).await.map_err(|e| fail("io", e))?;
    }
    Ok(tcp)
}

/// Sends the monitor's request and checks the status line of the answer.
async fn http<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, check: Option<&HttpCheck>, addr: SocketAddr) -> Result<(), Failure> {
    let check = check.ok_or_else(|| fail("config", "HTTP monitor without its HTTP settings"))?;
    let host = check.host.clone().unwrap_or_else(|| match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    });
    let request = format!("{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbd-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n", check.method, check.path);
    stream.write_all(request.as_bytes()).await.map_err(|e| fail("io", e))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < STATUS_LINE_MAX {
        let n = stream.read(&mut buf).await.map_err(|e| fail("io", e))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| fail("protocol", format!("not an HTTP status line: {line:?}")))?;
    if check.expects(status) {
        Ok(())
    } else {
        Err(fail("status", format!("{} {} answered {status}", check.method, check.path)))
    }
}

/// A datagram to the member; an ICMP port unreachable (seen as a refused receive) fails it.
async fn udp_connect(addr: SocketAddr, wait: Duration) -> Result<(), Failure> {
    let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(local).await.map_err(|e| fail("io", e))?;
    socket.connect(addr).await.map_err(|e| fail("connect", e))?;
    socket.send(b"lbd-health-check\n").await.map_err(|e| fail(if e.kind() == std::io::ErrorKind::ConnectionRefused { "refused" } else { "io" }, e))?;
    let mut buf = [0u8; 512];
    match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        Err(_) | Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(fail("refused", "ICMP port unreachable")),
        Ok(Err(e)) => Err(fail("io", e)),
    }
}

/// One ICMP echo over a raw socket (lbd runs as root; the reply is matched by identifier).
async fn ping(ip: IpAddr, wait: Duration) -> Result<(), Failure> {
    tokio::task::spawn_blocking(move || ping_blocking(ip, wait)).await.map_err(|e| fail("io", e))?
}

fn ping_blocking(ip: IpAddr, wait: Duration) -> Result<(), Failure> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, protocol, request, reply) = match ip {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128, 129),
    };
    let socket = Socket::new(domain, Type::RAW, Some(protocol)).map_err(|e| fail("io", format!("raw ICMP socket: {e}")))?;
    let id = u16::from_ne_bytes(crate::store::seal::random::<2>());
    let mut packet = [request, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1, b'l', b'b', b'd', 0];
    if ip.is_ipv4() {
        // The kernel fills in ICMPv6 checksums itself; ICMPv4 ones are ours.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let to = SocketAddr::new(ip, 0);
    socket.send_to(&packet, &to.into()).map_err(|e| fail("io", e))?;
    let deadline = std::time::Instant::now() + wait;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(fail("timeout", "no echo reply"));
        }
        socket.set_read_timeout(Some(left)).map_err(|e| fail("io", e))?;
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Err(fail("timeout", "no echo reply")),
            Err(e) => return Err(fail("io", e)),
        };
        // SAFETY: recv_from initialised the first `n` bytes.
        let data: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
        // ICMPv4 raw sockets hand over the IP header too; ICMPv6 ones do not.
        let icmp = if ip.is_ipv4() { data.get(usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4..).unwrap_or_default() } else { &data[..] };
        let from_ip = from.as_socket().map(|s| s.ip());
        if icmp.len() >= 8 && icmp[0] == reply && u16::from_be_bytes([icmp[4], icmp[5]]) == id && from_ip == Some(ip) {
            return Ok(());
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_codes_take_codes_lists_and_ranges() {
        let codes = HttpCheck::parse_codes("200, 202,300-302").unwrap();
        let check = HttpCheck { method: "GET".into(), path: "/".into(), expected: codes, host: None };
        assert!(check.expects(200) && check.expects(202) && check.expects(301) && !check.expects(201) && !check.expects(303));
        assert!(HttpCheck::parse_codes("20x").unwrap_err().contains("'20x'"));
        assert!(HttpCheck::parse_codes("302-300").unwrap_err().contains("backwards"));
        assert!(HttpCheck::parse_codes("99").is_err());
    }

    #[test]
    fn icmp_checksum_matches_rfc1071() {
        // An echo request with id 1, seq 1 and no payload: 0x08 0x00 [f7 fd] 0x00 0x01 0x00 0x01.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }
}
