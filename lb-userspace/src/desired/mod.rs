//! From the store to the data plane's desired state: reads every Octavia object, resolves TLS
//! references into validated certificate bundles, and produces one [`DesiredState`] snapshot.
//! Listeners whose references no longer resolve are left out and reported, so the controller can
//! mark them ERROR with the reason.

pub mod tlsref;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lb_common::model::*;

use crate::store::octavia::{HealthMonitorRec, L7PolicyRec, L7RuleRec, ListenerRec, LoadBalancerRec, MemberRec, PoolRec};
use tlsref::RefError;
use crate::store::seal::Kek;
use crate::store::{Kind, StoreError, Txn, TxnExt};

/// A snapshot plus the listeners and pools that could not be included, with why (by id).
pub struct Built {
    pub state: DesiredState,
    pub errors: BTreeMap<Id, String>,
}

pub fn listener_protocol(p: &str) -> Option<ListenerProtocol> {
    Some(match p {
        "HTTP" => ListenerProtocol::Http,
        "HTTPS" => ListenerProtocol::Https,
        "TERMINATED_HTTPS" => ListenerProtocol::TerminatedHttps,
        "TCP" => ListenerProtocol::Tcp,
        "UDP" => ListenerProtocol::Udp,
        _ => return None,
    })
}

pub fn pool_protocol(p: &str) -> Option<PoolProtocol> {
    Some(match p {
        "HTTP" => PoolProtocol::Http,
        "HTTPS" => PoolProtocol::Https,
        "TCP" => PoolProtocol::Tcp,
        "UDP" => PoolProtocol::Udp,
        "PROXY" => PoolProtocol::Proxy,
        "PROXYV2" => PoolProtocol::ProxyV2,
        _ => return None,
    })
}

pub fn lb_algorithm(a: &str) -> Option<LbAlgorithm> {
    Some(match a {
        "ROUND_ROBIN" => LbAlgorithm::RoundRobin,
        "LEAST_CONNECTIONS" => LbAlgorithm::LeastConnections,
        "SOURCE_IP" => LbAlgorithm::SourceIp,
        "SOURCE_IP_PORT" => LbAlgorithm::SourceIpPort,
        _ => return None,
    })
}

pub fn tls_version(v: &str) -> Option<TlsVersion> {
    match v {
        "TLSv1.2" => Some(TlsVersion::Tls12),
        "TLSv1.3" => Some(TlsVersion::Tls13),
        _ => None,
    }
}

fn header_on(l: &ListenerRec, name: &str) -> bool {
    l.insert_headers.get(name).and_then(|v| v.as_str()).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The TLS settings of a TERMINATED_HTTPS listener, resolving its references.
pub fn listener_tls(tx: &mut dyn Txn, kek: &Kek, l: &ListenerRec, project: Option<&str>) -> Result<Option<ListenerTls>, tlsref::RefError> {
    let Some(default) = &l.default_tls_container_ref else { return Ok(None) };
    let default_certificate = Arc::new(tlsref::bundle(tx, kek, "default_tls_container_ref", default, project)?);
    let mut sni_certificates = Vec::new();
    for r in &l.sni_container_refs {
        sni_certificates.push(Arc::new(tlsref::bundle(tx, kek, "sni_container_refs", r, project)?));
    }
    let client_auth = match (l.client_authentication.as_str(), &l.client_ca_tls_container_ref) {
        ("OPTIONAL" | "MANDATORY", Some(ca)) => Some(ClientAuth {
            mode: if l.client_authentication == "OPTIONAL" { ClientAuthMode::Optional } else { ClientAuthMode::Mandatory },
            ca_certificates: tlsref::ca_certificates(tx, kek, "client_ca_tls_container_ref", ca, project)?,
            crls: match &l.client_crl_container_ref {
                Some(crl) => tlsref::crls(tx, kek, "client_crl_container_ref", crl, project)?,
                None => vec![],
            },
        }),
        _ => None,
    };
    Ok(Some(ListenerTls {
        default_certificate,
        sni_certificates,
        tls_versions: versions(&l.tls_versions),
        tls_ciphers: ciphers(&l.tls_ciphers),
        alpn_protocols: l.alpn_protocols.clone(),
        client_auth,
    }))
}

fn versions(v: &[String]) -> Vec<TlsVersion> {
    v.iter().filter_map(|v| tls_version(v)).collect()
}

fn ciphers(c: &Option<String>) -> Vec<String> {
    c.iter().flat_map(|c| c.split(':')).filter(|c| !c.is_empty()).map(String::from).collect()
}

/// The pool tag that names the DNS name member certificates must carry (Octavia has no field
/// for it): `tls_server_name=api.internal`. Without it, members are checked by IP address.
pub const SERVER_NAME_TAG: &str = "tls_server_name=";

/// The TLS settings of a pool with `tls_enabled`, resolving its references.
pub fn pool_tls(tx: &mut dyn Txn, kek: &Kek, p: &PoolRec, project: Option<&str>) -> Result<Option<PoolTls>, RefError> {
    if !p.tls_enabled {
        return Ok(None);
    }
    let ca_certificates = match &p.ca_tls_container_ref {
        Some(r) => Some(tlsref::ca_certificates(tx, kek, "ca_tls_container_ref", r, project)?),
        None => None,
    };
    let crls = match &p.crl_container_ref {
        Some(r) => tlsref::crls(tx, kek, "crl_container_ref", r, project)?,
        None => vec![],
    };
    let client_certificate = match &p.tls_container_ref {
        Some(r) => Some(Arc::new(tlsref::bundle(tx, kek, "tls_container_ref", r, project)?)),
        None => None,
    };
    Ok(Some(PoolTls {
        ca_certificates,
        crls,
        client_certificate,
        server_name: p.common.tags.iter().find_map(|t| t.strip_prefix(SERVER_NAME_TAG)).map(str::to_string),
        tls_versions: versions(&p.tls_versions),
        tls_ciphers: ciphers(&p.tls_ciphers),
        alpn_protocols: p.alpn_protocols.clone(),
    }))
}

/// The listener's enabled L7 policies in `position` order, each with its enabled rules.
fn l7policies(l: &ListenerRec, policies: &[L7PolicyRec], rules: &[L7RuleRec]) -> Result<Vec<L7Policy>, String> {
    let mut mine: Vec<&L7PolicyRec> = policies.iter().filter(|x| x.listener_id == l.common.id && x.common.admin_state_up).collect();
    mine.sort_by_key(|x| (x.position, x.common.created_at.clone()));
    mine.into_iter()
        .map(|x| {
            let code = x.redirect_http_code.unwrap_or(302);
            let missing = |field: &str| format!("L7 policy {}: {field} missing for {}", x.common.id, x.action);
            let action = match x.action.as_str() {
                "REJECT" => L7Action::Reject,
                "REDIRECT_TO_POOL" => L7Action::RedirectToPool(x.redirect_pool_id.clone().ok_or_else(|| missing("redirect_pool_id"))?),
                "REDIRECT_TO_URL" => L7Action::RedirectToUrl { url: x.redirect_url.clone().ok_or_else(|| missing("redirect_url"))?, code },
                "REDIRECT_PREFIX" => L7Action::RedirectPrefix { prefix: x.redirect_prefix.clone().ok_or_else(|| missing("redirect_prefix"))?, code },
                other => return Err(format!("L7 policy {}: action {other} is not supported", x.common.id)),
            };
            let rules = rules
                .iter()
                .filter(|r| r.l7policy_id == x.common.id && r.common.admin_state_up)
                .map(|r| l7rule(r).map_err(|e| format!("L7 rule {}: {e}", r.common.id)))
                .collect::<Result<_, _>>()?;
            Ok(L7Policy { id: x.common.id.clone(), action, rules })
        })
        .collect()
}

fn l7rule(r: &L7RuleRec) -> Result<L7Rule, String> {
    let kind = match r.kind.as_str() {
        "HOST_NAME" => L7RuleKind::HostName,
        "PATH" => L7RuleKind::Path,
        "FILE_TYPE" => L7RuleKind::FileType,
        "HEADER" => L7RuleKind::Header,
        "COOKIE" => L7RuleKind::Cookie,
        "SSL_CONN_HAS_CERT" => L7RuleKind::SslConnHasCert,
        "SSL_VERIFY_RESULT" => L7RuleKind::SslVerifyResult,
        "SSL_DN_FIELD" => L7RuleKind::SslDnField,
        other => return Err(format!("type {other} is not supported")),
    };
    let compare = match r.compare_type.as_str() {
        "REGEX" => L7Compare::Regex,
        "STARTS_WITH" => L7Compare::StartsWith,
        "ENDS_WITH" => L7Compare::EndsWith,
        "CONTAINS" => L7Compare::Contains,
        "EQUAL_TO" => L7Compare::EqualTo,
        other => return Err(format!("compare_type {other} is not supported")),
    };
    Ok(L7Rule { kind, compare, key: r.key.clone(), value: r.value.clone(), invert: r.invert })
}

fn listener(tx: &mut dyn Txn, kek: &Kek, l: &ListenerRec, policies: &[L7PolicyRec], rules: &[L7RuleRec]) -> Result<Listener, String> {
    let protocol = listener_protocol(&l.protocol).ok_or_else(|| format!("protocol {} is not supported", l.protocol))?;
    let tls = if protocol == ListenerProtocol::TerminatedHttps {
        Some(listener_tls(tx, kek, l, None).map_err(|e| e.to_string())?.ok_or("TERMINATED_HTTPS listener without default_tls_container_ref")?)
    } else {
        None
    };
    Ok(Listener {
        id: l.common.id.clone(),
        protocol,
        protocol_port: l.protocol_port,
        admin_state_up: l.common.admin_state_up,
        connection_limit: u32::try_from(l.connection_limit).ok(),
        default_pool_id: l.default_pool_id.clone(),
        timeouts: Timeouts {
            client_data: Duration::from_millis(l.timeout_client_data),
            member_connect: Duration::from_millis(l.timeout_member_connect),
            member_data: Duration::from_millis(l.timeout_member_data),
        },
        insert_headers: InsertHeaders {
            forwarded_for: header_on(l, "X-Forwarded-For"),
            forwarded_port: header_on(l, "X-Forwarded-Port"),
            forwarded_proto: header_on(l, "X-Forwarded-Proto"),
            ssl: {
                let mut ssl = SslHeaders::default();
                for name in SslHeaders::NAMES {
                    ssl.set(name, header_on(l, name));
                }
                ssl
            },
        },
        tls,
        allowed_cidrs: l.allowed_cidrs.iter().map(|c| c.parse().map_err(|e: lb_common::cidr::CidrError| format!("allowed_cidrs: {e}"))).collect::<Result<_, _>>()?,
        syn_rate: syn_rate(&l.common.tags)?,
        l7policies: l7policies(l, policies, rules)?,
        // TERMINATED_HTTPS only (the API refuses it elsewhere; older stores may hold it).
        hsts: l.hsts_max_age.filter(|_| protocol == ListenerProtocol::TerminatedHttps).map(|age| {
            let mut value = format!("max-age={age}");
            if l.hsts_include_subdomains {
                value.push_str("; includeSubDomains");
            }
            if l.hsts_preload {
                value.push_str("; preload");
            }
            value
        }),
    })
}

/// The listener tag that sets the per-source new-connection rate limit enforced in XDP
/// (Octavia has no field for it): `syn_rate=RATE[:BURST]`, `syn_rate=0` for none.
pub const SYN_RATE_TAG: &str = "syn_rate=";

/// The listener's rate limit tag, if any.
pub fn syn_rate(tags: &[String]) -> Result<Option<SynRate>, String> {
    tags.iter()
        .find_map(|t| t.strip_prefix(SYN_RATE_TAG))
        .map(|v| SynRate::parse(v).map_err(|e| format!("tag {SYN_RATE_TAG}{v}: {e}")))
        .transpose()
}

/// The data plane's form of a stored health monitor.
pub fn health_monitor(h: &HealthMonitorRec) -> Result<HealthMonitor, String> {
    let kind = match h.kind.as_str() {
        "TCP" => MonitorKind::Tcp,
        "HTTP" => MonitorKind::Http,
        "HTTPS" => MonitorKind::Https,
        "TLS-HELLO" => MonitorKind::TlsHello,
        "UDP-CONNECT" => MonitorKind::UdpConnect,
        "PING" => MonitorKind::Ping,
        other => return Err(format!("health monitor type {other} is not supported")),
    };
    let http = match kind {
        MonitorKind::Http | MonitorKind::Https => Some(HttpCheck {
            method: h.http_method.clone().unwrap_or_else(|| "GET".into()),
            path: h.url_path.clone().unwrap_or_else(|| "/".into()),
            expected: HttpCheck::parse_codes(h.expected_codes.as_deref().unwrap_or("200")).map_err(|e| format!("expected_codes: {e}"))?,
            host: h.domain_name.clone(),
        }),
        _ => None,
    };
    Ok(HealthMonitor {
        id: h.common.id.clone(),
        kind,
        delay: Duration::from_secs(h.delay),
        timeout: Duration::from_secs(h.timeout),
        rise: h.max_retries,
        fall: h.max_retries_down,
        http,
        admin_state_up: h.common.admin_state_up,
    })
}

/// Octavia's default `persistence_timeout` (seconds) for source-address persistence.
const PERSISTENCE_TIMEOUT: u64 = 360;

/// An L7 rule's `REGEX` value compiled as the data plane matches it (the `regex` crate's
/// syntax, at most 1 MiB compiled): the API refuses a value this does not take.
pub fn l7_regex(value: &str, case_insensitive: bool) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(value).case_insensitive(case_insensitive).size_limit(1 << 20).build()
}

/// The prefix length of a dotted IPv4 netmask (`255.255.255.0` → 24); `None` when `mask` is
/// not one (not an address, or its ones are not contiguous).
pub fn netmask_prefix(mask: &str) -> Option<u8> {
    let bits = u32::from(mask.parse::<std::net::Ipv4Addr>().ok()?);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

/// A stored `session_persistence` (normalised by the API).
fn persistence(v: &serde_json::Value) -> Result<Persistence, String> {
    Ok(match v["type"].as_str() {
        Some("SOURCE_IP") => Persistence::SourceIp {
            timeout: Duration::from_secs(v["persistence_timeout"].as_u64().unwrap_or(PERSISTENCE_TIMEOUT)),
            ipv4_prefix: match v["persistence_granularity"].as_str() {
                None => 32,
                Some(g) => netmask_prefix(g).ok_or_else(|| format!("session_persistence persistence_granularity {g:?} is not an IPv4 netmask"))?,
            },
        },
        Some("HTTP_COOKIE") => Persistence::HttpCookie,
        Some("APP_COOKIE") => Persistence::AppCookie { name: v["cookie_name"].as_str().ok_or("session_persistence APP_COOKIE without cookie_name")?.to_string() },
        other => return Err(format!("session_persistence type {other:?} is not supported")),
    })
}

fn pool(tx: &mut dyn Txn, kek: &Kek, p: &PoolRec, members: &[MemberRec], monitors: &[HealthMonitorRec]) -> Result<Pool, String> {
    Ok(Pool {
        health_monitor: monitors.iter().find(|h| h.pool_id == p.common.id).map(health_monitor).transpose()?,
        persistence: p.session_persistence.as_ref().map(persistence).transpose()?,
        id: p.common.id.clone(),
        protocol: pool_protocol(&p.protocol).ok_or_else(|| format!("protocol {} is not supported", p.protocol))?,
        lb_algorithm: lb_algorithm(&p.lb_algorithm).ok_or_else(|| format!("lb_algorithm {} is not supported", p.lb_algorithm))?,
        admin_state_up: p.common.admin_state_up,
        tls: pool_tls(tx, kek, p, None).map_err(|e| e.to_string())?,
        members: members
            .iter()
            .filter(|m| m.pool_id == p.common.id)
            .filter_map(|m| {
                Some(Member {
                    id: m.common.id.clone(),
                    address: m.address.parse().ok()?,
                    protocol_port: m.protocol_port,
                    weight: m.weight,
                    admin_state_up: m.common.admin_state_up,
                    monitor_address: m.monitor_address.as_deref().and_then(|a| a.parse().ok()),
                    monitor_port: m.monitor_port,
                    healthy: true,
                    backup: m.backup,
                })
            })
            .collect(),
    })
}

/// Builds the snapshot for `generation` from everything in the store.
pub fn build(tx: &mut dyn Txn, kek: &Kek, generation: u64) -> Result<Built, StoreError> {
    let lbs: Vec<LoadBalancerRec> = tx.list(Kind::LoadBalancer)?;
    let listeners: Vec<ListenerRec> = tx.list(Kind::Listener)?;
    let pools: Vec<PoolRec> = tx.list(Kind::Pool)?;
    let members: Vec<MemberRec> = tx.list(Kind::Member)?;
    let monitors: Vec<HealthMonitorRec> = tx.list(Kind::HealthMonitor)?;
    let policies: Vec<L7PolicyRec> = tx.list(Kind::L7Policy)?;
    let rules: Vec<L7RuleRec> = tx.list(Kind::L7Rule)?;
    let mut errors = BTreeMap::new();
    let mut load_balancers = Vec::new();
    for lb in &lbs {
        let Ok(vip_address) = lb.vip_address.parse() else { continue };
        let mut out = LoadBalancer { id: lb.common.id.clone(), vip_address, admin_state_up: lb.common.admin_state_up, epoch: lb.failovers, listeners: vec![], pools: vec![] };
        for l in listeners.iter().filter(|l| l.loadbalancer_id == lb.common.id) {
            match listener(tx, kek, l, &policies, &rules) {
                Ok(built) => out.listeners.push(built),
                Err(e) => {
                    errors.insert(l.common.id.clone(), e);
                }
            }
        }
        for p in pools.iter().filter(|p| p.loadbalancer_id == lb.common.id) {
            match pool(tx, kek, p, &members, &monitors) {
                Ok(built) => out.pools.push(built),
                Err(e) => {
                    errors.insert(p.common.id.clone(), e);
                }
            }
        }
        load_balancers.push(out);
    }
    Ok(Built { state: DesiredState { generation, load_balancers }, errors })
}

#[cfg(test)]
mod tests {
    use super::netmask_prefix;

    #[test]
    fn netmasks_give_their_prefix_and_others_none() {
        assert_eq!(netmask_prefix("255.255.255.255"), Some(32));
        assert_eq!(netmask_prefix("255.255.255.0"), Some(24));
        assert_eq!(netmask_prefix("255.255.128.0"), Some(17));
        assert_eq!(netmask_prefix("0.0.0.0"), Some(0));
        for bad in ["255.0.255.0", "255.255.255.1", "24", "/24", "255.255.255", "ffff::", ""] {
            assert_eq!(netmask_prefix(bad), None, "{bad}");
        }
    }
}
