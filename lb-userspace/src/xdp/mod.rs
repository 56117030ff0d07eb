//! The XDP data path's userspace half: load and attach the program ([`loader`]), keep its maps
//! in step with the desired state ([`sync`]), expire flows and recount open ones ([`flows`]),
//! and publish its counters ([`stats`]). The program itself is `lb-ebpf`; the map layouts are
//! `lb_common::xdp`.

pub mod flows;
pub mod loader;
pub mod maps;
pub mod stats;
pub mod sync;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::Ebpf;
use lb_common::model::{DesiredState, Id};
use lb_common::xdp::Config;

use crate::metrics::{ListenerLabels, Metrics, XdpAttachLabels};
pub use loader::Interface;
pub use sync::Settings;

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("cannot load the XDP object {path}: {error} (build it with `cargo xtask build-ebpf`)")]
    Load { path: String, error: String },
    #[error("the XDP object has no program {0:?}")]
    NoProgram(&'static str),
    #[error("the XDP object has no map {0:?}")]
    NoMap(&'static str),
    #[error("the kernel refused the XDP program: {0}")]
    Verify(String),
    #[error("cannot attach XDP to {interface}: native mode: {native}; generic mode: {generic}")]
    Attach { interface: String, native: String, generic: String },
    #[error("cannot enable IPv4 forwarding on {interface}: {error}")]
    Forwarding { interface: String, error: String },
    #[error("XDP map {map}: {error}")]
    Map { map: &'static str, error: String },
    #[error("the XDP maps hold at most {max} {what}")]
    Full { what: &'static str, max: u32 },
    #[error("no route to member {member}: {error}")]
    NoRoute { member: SocketAddr, error: String },
    #[error("member {0}: the XDP data path forwards to IPv4 members only so far")]
    Ipv6Member(SocketAddr),
    #[error("Maglev table: {0}")]
    Maglev(String),
    #[error("--xdp-table-size {0}: must be a prime no larger than {max}", max = lb_common::xdp::RING_STRIDE)]
    TableSize(u32),
    #[error("--xdp-nat-ports {0}-{1}: the range must be non-empty and above 1023")]
    NatPorts(u16, u16),
}

/// The loaded program, its maps and what lbd has written to them.
pub struct XdpPlane {
    pub interfaces: Vec<Interface>,
    settings: Settings,
    inner: Mutex<Inner>,
}

struct Inner {
    maps: maps::Maps,
    written: sync::Written,
    published: stats::Published,
    /// The program and its links: dropping it detaches the program everywhere.
    ebpf: Option<Ebpf>,
}

impl XdpPlane {
    /// Loads `object`, attaches it to `interfaces` and writes the settings.
    pub fn start(object: &Path, interfaces: &[String], settings: Settings) -> Result<Arc<XdpPlane>, XdpError> {
        if !lb_common::maglev::is_prime(settings.table_size) || settings.table_size > lb_common::xdp::RING_STRIDE {
            return Err(XdpError::TableSize(settings.table_size));
        }
        let (lo, hi) = settings.nat_ports;
        if lo < 1024 || hi < lo {
            return Err(XdpError::NatPorts(lo, hi));
        }
        let (mut ebpf, interfaces) = loader::load(object, interfaces)?;
        let mut maps = maps::Maps::take(&mut ebpf)?;
        let config = Config { nat_port_min: lo, nat_port_max: hi, _pad: 0 };
        maps.config.set(0, config, 0).map_err(maps::write_err("CONFIG"))?;
        let inner = Inner { maps, written: Default::default(), published: Default::default(), ebpf: Some(ebpf) };
        Ok(Arc::new(XdpPlane { interfaces, settings, inner: Mutex::new(inner) }))
    }

    /// Makes the maps match `state`; an outcome per listener the XDP path serves.
    pub fn sync(&self, state: &DesiredState) -> BTreeMap<Id, Result<(), String>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { maps, written, .. } = &mut *inner;
        sync::sync(maps, written, state, &self.settings)
    }

    /// One maintenance round: expire flows, recount open ones into `ACTIVE` (userspace
    /// connection counts for the listeners lbd terminates), free unused backends, publish
    /// counters.
    pub fn maintain(&self, metrics: &Metrics) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { maps, written, published, .. } = &mut *inner;
        let sweep = flows::sweep(maps, written, flows::monotonic_ns());
        for s in written.services.values() {
            let labels = ListenerLabels { listener: s.listener.clone() };
            let active = if s.forwards() {
                let open = sweep.open.get(&s.id).copied().unwrap_or(0);
                metrics.xdp_active_flows.get_or_create(&labels).set(open as i64);
                open
            } else {
                metrics.active_connections.get_or_create(&labels).get().max(0) as u64
            };
            let _ = maps.active.set(s.id, active, 0);
        }
        sync::release_backends(maps, written, &sweep.referenced);
        stats::publish(maps, written, published, metrics);
    }

    /// Has the kernel resolve the next hops the program found no neighbour for (clients and
    /// members the lb node never exchanged a packet with itself): an empty datagram to each
    /// one's discard port makes the kernel send the ARP request.
    pub fn resolve_neighbours(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let missed: Vec<[u8; 16]> = inner.maps.neigh_miss.keys().filter_map(Result::ok).collect();
        for addr in missed {
            let ip = std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
            tracing::debug!(%ip, "resolving a next hop XDP found no neighbour entry for");
            sync::warm_neighbour(ip);
            let _ = inner.maps.neigh_miss.remove(&addr);
        }
    }

    /// Runs [`XdpPlane::maintain`] every second and [`XdpPlane::resolve_neighbours`] every
    /// 100 ms on a thread of its own (map walks are system calls; they stay off the async
    /// workers).
    pub fn spawn_maintenance(self: &Arc<Self>, metrics: Arc<Metrics>) {
        for i in &self.interfaces {
            metrics.xdp_attached.get_or_create(&XdpAttachLabels { interface: i.name.clone(), mode: i.mode }).set(1);
        }
        let plane = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("xdp-maintenance".into())
            .spawn(move || {
                let mut round = 0u64;
                while let Some(p) = plane.upgrade() {
                    // Neighbour misses every 100 ms (a sender retransmits within a second),
                    // everything else every second.
                    p.resolve_neighbours();
                    if round.is_multiple_of(10) {
                        p.maintain(&metrics);
                    }
                    if p.inner.lock().map(|i| i.ebpf.is_none()).unwrap_or(true) {
                        return;
                    }
                    drop(p);
                    round += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .expect("spawning a thread");
    }

    /// Detaches the program from every interface (also done by the kernel when lbd exits).
    pub fn detach(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.ebpf.take().is_some() {
            for i in &self.interfaces {
                tracing::info!(interface = %i.name, "XDP program detached");
            }
        }
    }
}
