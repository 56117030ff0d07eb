//! Flow bookkeeping the program leaves to lbd: expiring idle and closed flows from `CONNTRACK`
//! and `NAT`, recounting open flows per service into `ACTIVE` (what `connection_limit` is
//! checked against), and telling which backends flows still use.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lb_common::xdp::*;

use super::maps::Maps;
use super::sync::Written;

/// How long a flow stays after its first FIN or RST (last ACKs, retransmissions).
pub const CLOSING_GRACE: Duration = Duration::from_secs(5);
/// Idle limit of flows whose service is gone.
const ORPHAN_IDLE: Duration = Duration::from_secs(60);

/// What one sweep found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Open flows per service id.
    pub open: HashMap<u32, u64>,
    /// Backend ids that live flows use.
    pub referenced: HashSet<u32>,
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Removes expired flows (both directions) and counts the rest.
pub fn sweep(maps: &mut Maps, w: &Written, now_ns: u64) -> Sweep {
    let idle: HashMap<u32, u64> = w.services.values().map(|s| (s.id, s.idle.as_nanos() as u64)).collect();
    let backends: HashMap<u32, Backend> = w.backends.values().map(|b| (b.id, b.value)).collect();
    let mut out = Sweep::default();
    let mut expired = Vec::new();
    for entry in maps.conntrack.iter() {
        let Ok((key, flow)) = entry else { continue };
        let limit = match flow.state {
            FLOW_CLOSING => CLOSING_GRACE.as_nanos() as u64,
            _ => idle.get(&flow.service).copied().unwrap_or(ORPHAN_IDLE.as_nanos() as u64),
        };
        if now_ns.saturating_sub(flow.last_seen_ns) > limit {
            expired.push((key, flow));
        } else {
            if flow.state == FLOW_OPEN {
                *out.open.entry(flow.service).or_default() += 1;
            }
            out.referenced.insert(flow.backend);
        }
    }
    for (key, flow) in &expired {
        let _ = maps.conntrack.remove(key);
        if let Some(b) = backends.get(&flow.backend) {
            let reverse = FlowKey { src: b.addr, dst: b.snat, sport: b.port, dport: flow.nat_port, proto: key.proto, family: key.family, _pad: 0 };
            let _ = maps.nat.remove(&reverse);
        }
    }
    out
}
