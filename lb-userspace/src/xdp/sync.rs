//! Desired state → the program's `SERVICES`, `BACKENDS`, `MAGLEV` and `CIDRS` maps.
//!
//! Every enabled listener on an IPv4 VIP becomes a service. TCP, UDP and HTTPS (passthrough)
//! listeners forward in XDP through a Maglev ring over their default pool's members with
//! weight (on the whole tuple, or on the source address for `SOURCE_IP`); HTTP and
//! TERMINATED_HTTPS listeners, and those whose pool is `LEAST_CONNECTIONS`, are only filtered
//! there (`allowed_cidrs`, SYN rate, `connection_limit`) and passed on to lbd's own listener. What was written is
//! remembered, so a sync writes only what changed; a changed ring is written to the service's
//! spare ring first and then switched to in one map update, so no packet sees half a table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use aya::maps::lpm_trie::Key;
use lb_common::cidr::Cidr;
use lb_common::maglev::Table;
use lb_common::model::{DesiredState, Id, LbAlgorithm, Listener, ListenerProtocol, Pool, SynRate};
use lb_common::xdp::*;

use super::XdpError;
use super::maps::{Maps, write_err};

/// Operator settings of the XDP data path (`lbd serve --xdp-*`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Maglev table size per service: a prime no larger than [`RING_STRIDE`].
    pub table_size: u32,
    /// Per-source new-connection limit for listeners without a `syn_rate=` tag.
    pub syn_rate: SynRate,
    /// Translated source ports (keep out of `net.ipv4.ip_local_port_range`).
    pub nat_ports: (u16, u16),
}

/// A service lbd has written.
pub struct SvcSlot {
    pub id: u32,
    pub listener: Id,
    pub key: ServiceKey,
    pub value: Service,
    /// Index of its ring pair when it forwards.
    l4: Option<u32>,
    /// Backend ids of the active ring, as written.
    ring: Vec<u32>,
    cidrs: BTreeSet<Cidr>,
    /// Idle time after which lbd expires a flow (`timeout_client_data`).
    pub idle: Duration,
}

impl SvcSlot {
    pub fn forwards(&self) -> bool {
        self.l4.is_some()
    }
}

/// A backend lbd has written.
pub struct BeSlot {
    pub id: u32,
    pub value: Backend,
    /// `address:port`, the metrics label.
    pub label: String,
    /// In some service's ring (else kept only while flows still use it).
    pub in_ring: bool,
}

/// Everything lbd has written to the maps.
pub struct Written {
    pub services: HashMap<Id, SvcSlot>,
    free_ids: Vec<u32>,
    free_l4: Vec<u32>,
    pub backends: HashMap<SocketAddr, BeSlot>,
    free_backends: Vec<u32>,
}

impl Default for Written {
    fn default() -> Self {
        Written {
            services: HashMap::new(),
            free_ids: (0..MAX_SERVICES).rev().collect(),
            free_l4: (0..MAX_L4_SERVICES).rev().collect(),
            backends: HashMap::new(),
            free_backends: (0..MAX_BACKENDS).rev().collect(),
        }
    }
}

/// Makes the maps match `state`; returns an outcome per listener the XDP path serves.
pub fn sync(maps: &mut Maps, w: &mut Written, state: &DesiredState, settings: &Settings) -> BTreeMap<Id, Result<(), String>> {
    let pools = state.pools();
    let mut report = BTreeMap::new();
    let mut wanted = HashSet::new();
    for (lb, l) in state.listeners() {
        if !(lb.admin_state_up && l.admin_state_up) {
            continue;
        }
        let IpAddr::V4(vip) = lb.vip_address else {
            if l.protocol == ListenerProtocol::Udp {
                report.insert(l.id.clone(), Err("UDP listeners need an IPv4 VIP: the XDP data path forwards IPv4 only so far".into()));
            }
            continue;
        };
        wanted.insert(l.id.clone());
        let pool = l.default_pool_id.as_deref().and_then(|id| pools.get(id).copied());
        let result = sync_listener(maps, w, vip, l, pool, settings);
        if let Err(e) = &result {
            tracing::warn!(listener = %l.id, error = %e, "XDP service not applied");
        }
        report.insert(l.id.clone(), result.map_err(|e| e.to_string()));
    }
    let gone: Vec<Id> = w.services.keys().filter(|id| !wanted.contains(*id)).cloned().collect();
    for id in gone {
        remove_service(maps, w, &id);
    }
    let in_rings: HashSet<u32> = w.services.values().flat_map(|s| s.ring.iter().copied()).collect();
    for b in w.backends.values_mut() {
        b.in_ring = in_rings.contains(&b.id);
    }
    report
}

/// Whether the program forwards the listener's flows itself. `LEAST_CONNECTIONS` pools are left
/// to lbd's userspace proxy, which counts each member's connections: a hash cannot (UDP
/// pools cannot have that algorithm; the API refuses it).
/// Whether XDP forwards the listener's flows itself; otherwise they go to lbd's userspace proxy:
/// `LEAST_CONNECTIONS` (counted there) and PROXY protocol pools (a header to send first).
fn forwards(protocol: ListenerProtocol, pool: Option<&Pool>) -> bool {
    matches!(protocol, ListenerProtocol::Tcp | ListenerProtocol::Udp | ListenerProtocol::Https)
        && !pool.is_some_and(|p| (p.lb_algorithm == LbAlgorithm::LeastConnections && protocol != ListenerProtocol::Udp) || p.protocol.proxy_header().is_some())
}

fn sync_listener(maps: &mut Maps, w: &mut Written, vip: Ipv4Addr, l: &Listener, pool: Option<&Pool>, settings: &Settings) -> Result<(), XdpError> {
    let proto = if l.protocol == ListenerProtocol::Udp { PROTO_UDP } else { PROTO_TCP };
    let key = ServiceKey { addr: v4(vip.octets()), port: l.protocol_port.to_be(), proto, family: FAMILY_V4 };
    if !w.services.contains_key(&l.id) {
        let id = w.free_ids.pop().ok_or(XdpError::Full { what: "listeners", max: MAX_SERVICES })?;
        Maps::zero(&mut maps.service_stats, maps.cpus, id * SVC_COUNTERS, SVC_COUNTERS)?;
        maps.active.set(id, 0, 0).map_err(write_err("ACTIVE"))?;
        let slot = SvcSlot { id, listener: l.id.clone(), key, value: Service::default(), l4: None, ring: vec![], cidrs: BTreeSet::new(), idle: l.timeouts.client_data };
        w.services.insert(l.id.clone(), slot);
    }
    let Written { services, free_l4, backends, free_backends, .. } = w;
    let slot = services.get_mut(&l.id).expect("inserted above");
    if slot.key != key {
        let _ = maps.services.remove(&slot.key);
        slot.key = key;
    }
    match (forwards(l.protocol, pool), slot.l4) {
        (true, None) => {
            slot.l4 = Some(free_l4.pop().ok_or(XdpError::Full { what: "TCP/UDP/HTTPS listeners", max: MAX_L4_SERVICES })?);
            slot.ring.clear();
        }
        (false, Some(l4)) => {
            free_l4.push(l4);
            slot.l4 = None;
            slot.ring.clear();
        }
        _ => {}
    }
    let rate = l.syn_rate.unwrap_or(settings.syn_rate);
    let mut value = Service {
        id: slot.id,
        flags: 0,
        ring: slot.value.ring,
        ring_size: 0,
        conn_limit: l.connection_limit.unwrap_or(0),
        syn_rate: rate.rate,
        syn_burst: rate.burst,
        source_mask: [255; 4],
    };
    if let Some(l4) = slot.l4 {
        value.flags |= SVC_FORWARD;
        if let Some(pool) = pool.filter(|p| p.hashes_source_only()) {
            value.flags |= SVC_HASH_SOURCE;
            value.source_mask = pool.source_mask_v4();
        }
        let ring = ring(maps, backends, free_backends, pool, settings.table_size)?;
        let current = [l4 * 2, l4 * 2 + 1];
        if ring != slot.ring || !current.contains(&value.ring) {
            let next = if value.ring == l4 * 2 { l4 * 2 + 1 } else { l4 * 2 };
            for (i, backend) in ring.iter().enumerate() {
                maps.maglev.set(next * RING_STRIDE + i as u32, backend, 0).map_err(write_err("MAGLEV"))?;
            }
            value.ring = next;
            slot.ring = ring;
        }
        value.ring_size = slot.ring.len() as u32;
    }
    let cidrs: BTreeSet<Cidr> = l.allowed_cidrs.iter().filter(|c| c.addr.is_ipv4()).copied().collect();
    for c in cidrs.difference(&slot.cidrs) {
        maps.cidrs.insert(&cidr_key(slot.id, c), 1, 0).map_err(write_err("CIDRS"))?;
    }
    if !cidrs.is_empty() {
        value.flags |= SVC_CIDRS;
    }
    maps.services.insert(key, value, 0).map_err(write_err("SERVICES"))?;
    for c in slot.cidrs.difference(&cidrs) {
        let _ = maps.cidrs.remove(&cidr_key(slot.id, c));
    }
    slot.cidrs = cidrs;
    slot.value = value;
    slot.idle = l.timeouts.client_data;
    Ok(())
}

/// The Maglev ring (backend ids) for `pool`: members taking traffic (backups only while no
/// other member can), with their weight, keyed by address:port so a
/// member re-created at the same address gets the same slots. Empty when none can take flows.
fn ring(maps: &mut Maps, backends: &mut HashMap<SocketAddr, BeSlot>, free: &mut Vec<u32>, pool: Option<&Pool>, size: u32) -> Result<Vec<u32>, XdpError> {
    let Some(pool) = pool.filter(|p| p.admin_state_up) else { return Ok(vec![]) };
    let mut members = Vec::new();
    for (m, weight) in pool.members.iter().zip(pool.serving_weights()).filter(|(_, w)| *w > 0) {
        let addr = SocketAddr::new(m.address, m.protocol_port);
        match backend(maps, backends, free, addr) {
            Ok(id) => members.push((addr.to_string(), weight, id)),
            Err(e @ (XdpError::NoRoute { .. } | XdpError::Ipv6Member(_))) => {
                tracing::warn!(pool = %pool.id, member = %m.id, error = %e, "member left out of the XDP ring");
            }
            Err(e) => return Err(e),
        }
    }
    if members.is_empty() {
        return Ok(vec![]);
    }
    let keyed: Vec<(&[u8], u32)> = members.iter().map(|(k, w, _)| (k.as_bytes(), *w)).collect();
    let table = Table::build(&keyed, size).map_err(|e| XdpError::Maglev(e.to_string()))?;
    Ok(table.slots.iter().map(|i| members[*i as usize].2).collect())
}

/// The backend slot for `addr`, written (with lb's source address towards it) on first use.
fn backend(maps: &mut Maps, backends: &mut HashMap<SocketAddr, BeSlot>, free: &mut Vec<u32>, addr: SocketAddr) -> Result<u32, XdpError> {
    if let Some(b) = backends.get(&addr) {
        return Ok(b.id);
    }
    let IpAddr::V4(ip) = addr.ip() else { return Err(XdpError::Ipv6Member(addr)) };
    let IpAddr::V4(snat) = source_towards(addr)? else { return Err(XdpError::Ipv6Member(addr)) };
    let id = free.pop().ok_or(XdpError::Full { what: "members", max: MAX_BACKENDS })?;
    let value = Backend { addr: v4(ip.octets()), snat: v4(snat.octets()), port: addr.port().to_be(), family: FAMILY_V4, _pad: 0, _pad2: 0 };
    Maps::zero(&mut maps.backend_stats, maps.cpus, id * BE_COUNTERS, BE_COUNTERS)?;
    maps.backends.set(id, value, 0).map_err(write_err("BACKENDS"))?;
    tracing::info!(member = %addr, source = %snat, backend = id, "XDP backend added");
    warm_neighbour(ip);
    backends.insert(addr, BeSlot { id, value, label: addr.to_string(), in_ring: true });
    Ok(id)
}

/// lb's own address on the route to `member` (what the kernel would pick as source).
fn source_towards(member: SocketAddr) -> Result<IpAddr, XdpError> {
    let any: SocketAddr = if member.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let socket = UdpSocket::bind(any).map_err(|e| XdpError::NoRoute { member, error: e.to_string() })?;
    socket.connect(member).map_err(|e| XdpError::NoRoute { member, error: e.to_string() })?;
    Ok(socket.local_addr().map_err(|e| XdpError::NoRoute { member, error: e.to_string() })?.ip())
}

/// Makes the kernel resolve `next_hop`'s link-layer address, which `bpf_fib_lookup` needs
/// (until then the program drops packets to it as `no_route`): an empty datagram to its discard
/// port, sent from whatever source the route gives (for a member, its `snat` address).
pub fn warm_neighbour(next_hop: Ipv4Addr) {
    if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
        let _ = s.send_to(&[], (next_hop, 9));
    }
}

fn cidr_key(service: u32, c: &Cidr) -> Key<CidrData> {
    let IpAddr::V4(a) = c.addr else { unreachable!("IPv4 CIDRs only are written") };
    Key::new(32 + c.prefix as u32, CidrData { service_be: service.to_be_bytes(), addr: v4(a.octets()) })
}

fn remove_service(maps: &mut Maps, w: &mut Written, id: &Id) {
    let Some(slot) = w.services.remove(id) else { return };
    let _ = maps.services.remove(&slot.key);
    for c in &slot.cidrs {
        let _ = maps.cidrs.remove(&cidr_key(slot.id, c));
    }
    if let Some(l4) = slot.l4 {
        w.free_l4.push(l4);
    }
    w.free_ids.push(slot.id);
    tracing::info!(listener = %id, "XDP service removed");
}

/// Forgets backends that are in no ring and carried by no flow (`referenced`), so their slots
/// can serve other members.
pub fn release_backends(maps: &mut Maps, w: &mut Written, referenced: &HashSet<u32>) {
    let Written { backends, free_backends, .. } = w;
    backends.retain(|addr, b| {
        let keep = b.in_ring || referenced.contains(&b.id);
        if !keep {
            let _ = maps.backends.set(b.id, Backend::default(), 0);
            free_backends.push(b.id);
            tracing::info!(member = %addr, backend = b.id, "XDP backend released: no ring and no flow uses it");
        }
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::model::PoolProtocol;

    #[test]
    fn pools_that_need_lbds_proxy_are_not_forwarded_in_xdp() {
        let pool = |protocol, lb_algorithm| Pool {
            id: "p".into(),
            protocol,
            lb_algorithm,
            admin_state_up: true,
            members: vec![],
            tls: None,
            health_monitor: None,
            persistence: None,
        };
        let forwarded = |l, p: Pool| forwards(l, Some(&p));
        assert!(forwarded(ListenerProtocol::Tcp, pool(PoolProtocol::Tcp, LbAlgorithm::RoundRobin)));
        assert!(forwarded(ListenerProtocol::Https, pool(PoolProtocol::Https, LbAlgorithm::SourceIp)));
        assert!(forwarded(ListenerProtocol::Udp, pool(PoolProtocol::Udp, LbAlgorithm::RoundRobin)));
        assert!(!forwarded(ListenerProtocol::Tcp, pool(PoolProtocol::Tcp, LbAlgorithm::LeastConnections)));
        assert!(!forwarded(ListenerProtocol::Tcp, pool(PoolProtocol::Proxy, LbAlgorithm::RoundRobin)));
        assert!(!forwarded(ListenerProtocol::Https, pool(PoolProtocol::ProxyV2, LbAlgorithm::RoundRobin)));
        assert!(!forwards(ListenerProtocol::TerminatedHttps, None));
        assert!(forwards(ListenerProtocol::Tcp, None));
    }
}
