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
    Proxy,
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

/// Which `X-Forwarded-*` headers to add to requests sent to HTTP members (`insert_headers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertHeaders {
    pub forwarded_for: bool,
    pub forwarded_port: bool,
    pub forwarded_proto: bool,
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
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub id: Id,
    pub protocol: PoolProtocol,
    pub lb_algorithm: LbAlgorithm,
    pub admin_state_up: bool,
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub id: Id,
    pub address: IpAddr,
    pub protocol_port: u16,
    /// 0 drains the member: no new connections.
    pub weight: u32,
    pub admin_state_up: bool,
}

impl Member {
    /// Weight as used for balancing: 0 when administratively down.
    pub fn effective_weight(&self) -> u32 {
        if self.admin_state_up { self.weight } else { 0 }
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
