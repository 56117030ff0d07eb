//! The desired-state model: what the control plane wants running, as one immutable snapshot.
//!
//! Field names follow Octavia v2.0 so the API layer maps objects one to one. Certificates arrive
//! here already parsed and validated (DER chain + DER private key); this crate does no I/O and no
//! parsing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Object identifier (a UUID string in the API).
pub type Id = String;

/// Everything `lbd` should be running.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    /// Increases with every change the store publishes.
    pub generation: u64,
    pub load_balancers: Vec<LoadBalancer>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoadBalancer {
    pub id: Id,
    pub vip_address: IpAddr,
    pub admin_state_up: bool,
    /// Failovers requested so far: a change makes the data plane rebuild this load balancer's
    /// TLS contexts and member pools from scratch.
    pub epoch: u64,
    pub listeners: Vec<Listener>,
    pub pools: Vec<Pool>,
}

/// Octavia listener protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ListenerProtocol {
    Http,
    Https,
    TerminatedHttps,
    Tcp,
    Udp,
}

/// Octavia pool protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PoolProtocol {
    Http,
    Https,
    Tcp,
    Udp,
    /// TCP, each member connection opened with a PROXY protocol v1 header.
    Proxy,
    /// TCP, each member connection opened with a PROXY protocol v2 header.
    #[serde(rename = "PROXYV2")]
    ProxyV2,
}

impl PoolProtocol {
    /// The PROXY protocol version members of such a pool are sent first, if any.
    pub fn proxy_header(self) -> Option<ProxyHeader> {
        match self {
            PoolProtocol::Proxy => Some(ProxyHeader::V1),
            PoolProtocol::ProxyV2 => Some(ProxyHeader::V2),
            _ => None,
        }
    }
}

/// HAProxy's PROXY protocol: v1 (a text line) or v2 (binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyHeader {
    V1,
    V2,
}

/// Octavia `lb_algorithm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbAlgorithm {
    RoundRobin,
    LeastConnections,
    SourceIp,
    SourceIpPort,
}

/// TLS protocol versions a listener may allow (Octavia's `tls_versions` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// Listener and member timeouts (Octavia names, milliseconds in the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Client inactivity: no byte from the client for this long closes the connection.
    pub client_data: Duration,
    /// Establishing the TCP connection to a member.
    pub member_connect: Duration,
    /// Member inactivity.
    pub member_data: Duration,
}

impl Default for Timeouts {
    /// Octavia's defaults: 50 s, 5 s, 50 s.
    fn default() -> Self {
        Timeouts {
            client_data: Duration::from_secs(50),
            member_connect: Duration::from_secs(5),
            member_data: Duration::from_secs(50),
        }
    }
}

/// Which headers to add to requests sent to HTTP members (`insert_headers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertHeaders {
    pub forwarded_for: bool,
    pub forwarded_port: bool,
    pub forwarded_proto: bool,
    /// The `X-SSL-*` client-certificate headers (TERMINATED_HTTPS only).
    pub ssl: SslHeaders,
}

/// Octavia's client-certificate headers, each on or off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SslHeaders {
    pub client_verify: bool,
    pub client_has_cert: bool,
    pub client_dn: bool,
    pub client_cn: bool,
    pub issuer: bool,
    pub client_sha1: bool,
    pub client_not_before: bool,
    pub client_not_after: bool,
}

impl SslHeaders {
    /// Octavia's header names, in the order of the fields.
    pub const NAMES: [&'static str; 8] = [
        "X-SSL-Client-Verify",
        "X-SSL-Client-Has-Cert",
        "X-SSL-Client-DN",
        "X-SSL-Client-CN",
        "X-SSL-Issuer",
        "X-SSL-Client-SHA1",
        "X-SSL-Client-Not-Before",
        "X-SSL-Client-Not-After",
    ];

    /// Each header name with whether it is on.
    pub fn named(&self) -> [(&'static str, bool); 8] {
        let on = [
            self.client_verify,
            self.client_has_cert,
            self.client_dn,
            self.client_cn,
            self.issuer,
            self.client_sha1,
            self.client_not_before,
            self.client_not_after,
        ];
        std::array::from_fn(|i| (Self::NAMES[i], on[i]))
    }

    /// Sets the header called `name` (Octavia spelling); false when there is no such header.
    pub fn set(&mut self, name: &str, on: bool) -> bool {
        let slot = match name {
            "X-SSL-Client-Verify" => &mut self.client_verify,
            "X-SSL-Client-Has-Cert" => &mut self.client_has_cert,
            "X-SSL-Client-DN" => &mut self.client_dn,
            "X-SSL-Client-CN" => &mut self.client_cn,
            "X-SSL-Issuer" => &mut self.issuer,
            "X-SSL-Client-SHA1" => &mut self.client_sha1,
            "X-SSL-Client-Not-Before" => &mut self.client_not_before,
            "X-SSL-Client-Not-After" => &mut self.client_not_after,
            _ => return false,
        };
        *slot = on;
        true
    }

    pub fn any(&self) -> bool {
        self.named().iter().any(|(_, on)| *on)
    }

    /// Every header on.
    pub fn all() -> SslHeaders {
        let mut h = SslHeaders::default();
        for name in Self::NAMES {
            h.set(name, true);
        }
        h
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    pub id: Id,
    pub protocol: ListenerProtocol,
    pub protocol_port: u16,
    pub admin_state_up: bool,
    /// Maximum concurrent connections; `None` is unlimited (Octavia's -1).
    pub connection_limit: Option<u32>,
    pub default_pool_id: Option<Id>,
    pub timeouts: Timeouts,
    pub insert_headers: InsertHeaders,
    /// Present for TERMINATED_HTTPS listeners.
    pub tls: Option<ListenerTls>,
    /// Sources allowed to connect; empty allows every source (Octavia's `allowed_cidrs`).
    pub allowed_cidrs: Vec<crate::cidr::Cidr>,
    /// New connections per second one source may open (XDP); `None` uses lbd's default.
    pub syn_rate: Option<SynRate>,
    /// L7 policies with their rules, in evaluation order (`position`); enabled ones only.
    pub l7policies: Vec<L7Policy>,
    /// The `Strict-Transport-Security` value every response carries (TERMINATED_HTTPS
    /// listeners with `hsts_max_age`).
    pub hsts: Option<String>,
}

/// An L7 policy: when every one of its rules matches a request, its action applies instead of
/// the default pool. A policy without rules never matches.
#[derive(Clone, Debug, PartialEq)]
pub struct L7Policy {
    pub id: Id,
    pub action: L7Action,
    pub rules: Vec<L7Rule>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum L7Action {
    /// 403 Forbidden.
    Reject,
    RedirectToPool(Id),
    /// `Location: url` with `code` (301, 302, 303, 307 or 308).
    RedirectToUrl { url: String, code: u16 },
    /// `Location: prefix` followed by the request's path and query.
    RedirectPrefix { prefix: String, code: u16 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct L7Rule {
    pub kind: L7RuleKind,
    pub compare: L7Compare,
    /// Header, cookie or DN field name (`HEADER`, `COOKIE`, `SSL_DN_FIELD`).
    pub key: Option<String>,
    pub value: String,
    pub invert: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L7RuleKind {
    HostName,
    Path,
    FileType,
    Header,
    Cookie,
    SslConnHasCert,
    SslVerifyResult,
    SslDnField,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L7Compare {
    Regex,
    StartsWith,
    EndsWith,
    Contains,
    EqualTo,
}

/// A per-source new-connection rate limit: `rate` per second, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynRate {
    pub rate: u32,
    pub burst: u32,
}

impl SynRate {
    /// Parses `RATE` or `RATE:BURST` (burst defaults to the rate); `0` turns the limit off.
    pub fn parse(s: &str) -> Result<SynRate, String> {
        let (rate, burst) = s.split_once(':').map_or((s, None), |(r, b)| (r, Some(b)));
        let num = |v: &str, what: &str| v.trim().parse::<u32>().map_err(|_| format!("{what} '{v}' is not a whole number of connections"));
        let rate = num(rate, "rate")?;
        let burst = burst.map(|b| num(b, "burst")).transpose()?.unwrap_or(rate);
        if rate > 0 && burst == 0 {
            return Err("burst must be at least 1 when a rate is set".into());
        }
        Ok(SynRate { rate, burst })
    }
}

/// TLS termination settings of a listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerTls {
    /// Served when the client sends no SNI or an SNI no bundle covers.
    pub default_certificate: Arc<CertificateBundle>,
    /// Chosen by SNI among their DNS names.
    pub sni_certificates: Vec<Arc<CertificateBundle>>,
    /// Empty means Octavia's default (TLS 1.2 and 1.3).
    pub tls_versions: Vec<TlsVersion>,
    /// Allowed cipher suites by OpenSSL (TLS 1.2) or IANA (TLS 1.3) name; empty means all.
    pub tls_ciphers: Vec<String>,
    /// ALPN protocols offered, in preference order; empty means `h2`, `http/1.1`.
    pub alpn_protocols: Vec<String>,
    /// Client certificate authentication; `None` is Octavia's `NONE`.
    pub client_auth: Option<ClientAuth>,
}

/// Octavia `client_authentication` other than `NONE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// A certificate is verified when presented; clients without one are served too.
    Optional,
    /// Clients without a valid certificate are refused in the handshake.
    Mandatory,
}

/// Which client certificates a listener accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    pub mode: ClientAuthMode,
    /// Trust anchors (DER), from `client_ca_tls_container_ref`.
    pub ca_certificates: Vec<Vec<u8>>,
    /// Certificate revocation lists (DER), from `client_crl_container_ref`.
    pub crls: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub id: Id,
    pub protocol: PoolProtocol,
    pub lb_algorithm: LbAlgorithm,
    pub admin_state_up: bool,
    pub members: Vec<Member>,
    /// TLS to members (`tls_enabled`); `None` means plain TCP.
    pub tls: Option<PoolTls>,
    /// Active health checking of the members (`healthmonitor`); `None`: members are not checked.
    pub health_monitor: Option<HealthMonitor>,
    /// Keeps a client on the member that served it (`session_persistence`).
    pub persistence: Option<Persistence>,
}

impl Pool {
    /// The weight each member takes new traffic with: its effective weight, except that backup
    /// members take none while a non-backup member can take traffic, and non-backup members
    /// none otherwise. All zero when the pool is disabled or no member can take traffic.
    pub fn serving_weights(&self) -> Vec<u32> {
        if !self.admin_state_up {
            return vec![0; self.members.len()];
        }
        let primaries_up = self.members.iter().any(|m| !m.backup && m.effective_weight() > 0);
        self.members.iter().map(|m| if m.backup == primaries_up { 0 } else { m.effective_weight() }).collect()
    }

    /// Whether new flows are placed by the client's source address alone (`SOURCE_IP`, or
    /// `SOURCE_IP` session persistence), so one client keeps its member across connections.
    pub fn hashes_source_only(&self) -> bool {
        self.lb_algorithm == LbAlgorithm::SourceIp || matches!(self.persistence, Some(Persistence::SourceIp { .. }))
    }

    /// The part of an IPv4 client address that source hashing keeps (network order bytes):
    /// the `SOURCE_IP` persistence granularity, all of it otherwise.
    pub fn source_mask_v4(&self) -> [u8; 4] {
        match self.persistence {
            Some(Persistence::SourceIp { ipv4_prefix, .. }) => v4_mask(ipv4_prefix),
            _ => [255; 4],
        }
    }
}

/// The IPv4 netmask of a prefix length, network order bytes (above 32 counts as 32).
fn v4_mask(prefix: u8) -> [u8; 4] {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0).to_be_bytes()
}

/// Octavia `session_persistence`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// A client address keeps the member it was first sent to; the entry is forgotten after
    /// `timeout` without traffic (`persistence_timeout`). Addresses that agree in their first
    /// `ipv4_prefix` bits count as one client (`persistence_granularity`, a netmask; UDP pools
    /// only, so XDP alone applies it).
    SourceIp { timeout: std::time::Duration, ipv4_prefix: u8 },
    /// lb sets a cookie naming the member (HTTP pools).
    HttpCookie,
    /// The member's own cookie `name`: a value the member set keeps the client on that member
    /// (HTTP pools).
    AppCookie { name: String },
}

/// How a pool's members are checked (Octavia's health monitor).
#[derive(Clone, Debug, PartialEq)]
pub struct HealthMonitor {
    pub id: Id,
    pub kind: MonitorKind,
    /// Time between two checks of a member.
    pub delay: std::time::Duration,
    /// How long one check may take.
    pub timeout: std::time::Duration,
    /// Consecutive successes that bring a failed member back (`max_retries`).
    pub rise: u32,
    /// Consecutive failures that take a member out (`max_retries_down`).
    pub fall: u32,
    /// For `HTTP` and `HTTPS`.
    pub http: Option<HttpCheck>,
    /// `false`: checks stop and every member counts as healthy.
    pub admin_state_up: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorKind {
    /// TCP connect.
    Tcp,
    /// An HTTP request over TCP, answered with an expected status.
    Http,
    /// The same over TLS (the member's certificate is not verified).
    Https,
    /// A TLS handshake (the member's certificate is not verified).
    TlsHello,
    /// A UDP datagram not refused (no ICMP port unreachable) within the timeout.
    UdpConnect,
    /// ICMP echo.
    Ping,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpCheck {
    pub method: String,
    pub path: String,
    /// Expected status codes, as inclusive ranges (`200`, `200-204`, `200,202`).
    pub expected: Vec<(u16, u16)>,
    /// `Host` header (`domain_name`); the member's address when absent.
    pub host: Option<String>,
}

impl HttpCheck {
    /// Parses Octavia's `expected_codes`: codes and ranges separated by commas.
    pub fn parse_codes(codes: &str) -> Result<Vec<(u16, u16)>, String> {
        let code = |c: &str| -> Result<u16, String> {
            c.trim().parse::<u16>().ok().filter(|n| (100..=599).contains(n)).ok_or_else(|| format!("'{}' is not an HTTP status code (100-599)", c.trim()))
        };
        codes
            .split(',')
            .map(|part| match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (code(lo)?, code(hi)?);
                    if lo > hi {
                        return Err(format!("range '{}' runs backwards", part.trim()));
                    }
                    Ok((lo, hi))
                }
                None => code(part).map(|c| (c, c)),
            })
            .collect()
    }

    pub fn expects(&self, status: u16) -> bool {
        self.expected.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// How lb talks TLS to a pool's members.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolTls {
    /// Trust anchors for member certificates (`ca_tls_container_ref`). `None`: member
    /// certificates are not verified (Octavia's behaviour without a CA; traffic is encrypted but
    /// not authenticated, and lb says so in its log and metrics).
    pub ca_certificates: Option<Vec<Vec<u8>>>,
    /// Revocation lists for member certificates (`crl_container_ref`, DER).
    pub crls: Vec<Vec<u8>>,
    /// The client certificate presented to members (`tls_container_ref`).
    pub client_certificate: Option<Arc<CertificateBundle>>,
    /// The name member certificates must carry; `None`: the member's IP address (IP SAN).
    pub server_name: Option<String>,
    /// Empty means TLS 1.2 and 1.3.
    pub tls_versions: Vec<TlsVersion>,
    /// Allowed cipher suites, as for listeners; empty means all.
    pub tls_ciphers: Vec<String>,
    /// ALPN protocols offered to members; empty offers none.
    pub alpn_protocols: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub id: Id,
    pub address: IpAddr,
    pub protocol_port: u16,
    /// 0 drains the member: no new connections.
    pub weight: u32,
    pub admin_state_up: bool,
    /// Where the health monitor checks this member (`monitor_address`/`monitor_port`), when
    /// not at its own address and port.
    pub monitor_address: Option<IpAddr>,
    pub monitor_port: Option<u16>,
    /// `false` when the pool's health monitor has taken it out; always `true` without one.
    pub healthy: bool,
    /// Takes traffic only while no other (non-backup) member of the pool can (`backup`).
    pub backup: bool,
}

impl Member {
    /// Weight as used for balancing: 0 when administratively down or failing its health checks.
    pub fn effective_weight(&self) -> u32 {
        if self.admin_state_up && self.healthy { self.weight } else { 0 }
    }
}

/// A validated certificate with its private key, ready to serve.
///
/// The key bytes are wiped from memory when the last reference is dropped.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct CertificateBundle {
    /// Where it came from (a Barbican reference, or a test name). Not secret.
    #[zeroize(skip)]
    pub source: String,
    /// DER certificates, leaf first, then intermediates in issuing order.
    #[zeroize(skip)]
    pub chain: Vec<Vec<u8>>,
    /// DER private key (PKCS#8, PKCS#1 or SEC1, as `key_format` says).
    pub key: Vec<u8>,
    #[zeroize(skip)]
    pub key_format: KeyFormat,
    /// DNS names (SAN, or CN when there is no SAN) the leaf covers, lower-case; may hold `*.` wildcards.
    #[zeroize(skip)]
    pub dns_names: Vec<String>,
}

/// Encoding of [`CertificateBundle::key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyFormat {
    #[default]
    Pkcs8,
    Pkcs1,
    Sec1,
}

impl std::fmt::Debug for CertificateBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateBundle")
            .field("source", &self.source)
            .field("chain_len", &self.chain.len())
            .field("dns_names", &self.dns_names)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl DesiredState {
    /// Every listener with its load balancer, in a stable order.
    pub fn listeners(&self) -> impl Iterator<Item = (&LoadBalancer, &Listener)> {
        self.load_balancers
            .iter()
            .flat_map(|lb| lb.listeners.iter().map(move |l| (lb, l)))
    }

    /// Pools by id across all load balancers.
    pub fn pools(&self) -> BTreeMap<&str, &Pool> {
        self.load_balancers
            .iter()
            .flat_map(|lb| lb.pools.iter())
            .map(|p| (p.id.as_str(), p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_masks_of_prefix_lengths() {
        assert_eq!(v4_mask(32), [255, 255, 255, 255]);
        assert_eq!(v4_mask(24), [255, 255, 255, 0]);
        assert_eq!(v4_mask(20), [255, 255, 240, 0]);
        assert_eq!(v4_mask(0), [0, 0, 0, 0]);
        assert_eq!(v4_mask(40), [255, 255, 255, 255]);
    }

    #[test]
    fn bundle_debug_never_shows_the_key() {
        let b = CertificateBundle {
            source: "s".into(),
            chain: vec![vec![1]],
            key: b"SECRETKEY".to_vec(),
            key_format: KeyFormat::Pkcs8,
            dns_names: vec!["a.example".into()],
        };
        let text = format!("{b:?}");
        assert!(!text.contains("SECRET") && !text.contains("83, 69"));
    }

    #[test]
    fn tls_version_names_match_octavia() {
        assert_eq!(serde_json::to_string(&TlsVersion::Tls13).unwrap(), "\"TLSv1.3\"");
        assert_eq!(
            serde_json::to_string(&ListenerProtocol::TerminatedHttps).unwrap(),
            "\"TERMINATED_HTTPS\""
        );
    }
}
