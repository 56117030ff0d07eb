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
        // Since the walk, the program may have opened a new flow on the same client tuple (a
        // client reusing its port at once, as soon as the old flow closed): remove only the
        // flow that was seen expiring, never its successor (a new flow has its own SYN's
        // sequence number and a later last packet).
        if !maps.conntrack.get(key, 0).is_ok_and(|current| current == *flow) {
            continue;
        }
        let _ = maps.conntrack.remove(key);
        if let Some(b) = backends.get(&flow.backend) {
            let reverse = FlowKey { src: b.addr, dst: b.snat, sport: b.port, dport: flow.nat_port, proto: key.proto, family: key.family, _pad: 0 };
            // The program gives a closing flow's translated port to a new flow before the
            // closing one expires: the entry is then the new flow's, and stays.
            if maps.nat.get(&reverse, 0).is_ok_and(|r| owned_by(&r, key)) {
                let _ = maps.nat.remove(&reverse);
            }
        }
    }
    out
}

/// Whether the translation `r` is that of the client flow `key`.
fn owned_by(r: &Reverse, key: &FlowKey) -> bool {
    r.client == key.src && r.vip == key.dst && r.client_port == key.sport && r.vip_port == key.dport
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_translation_belongs_only_to_the_client_flow_it_names() {
        let key = FlowKey { src: v4([10, 0, 0, 2]), dst: v4([10, 0, 0, 1]), sport: 41000u16.to_be(), dport: 80u16.to_be(), proto: PROTO_TCP, family: FAMILY_V4, _pad: 0 };
        let r = Reverse { client: key.src, vip: key.dst, client_port: key.sport, vip_port: key.dport, ..Default::default() };
        assert!(owned_by(&r, &key));
        let taken = Reverse { client_port: 41001u16.to_be(), ..r };
        assert!(!owned_by(&taken, &key), "the port went to another client connection");
        assert!(!owned_by(&Reverse { client: v4([10, 0, 0, 3]), ..r }, &key));
    }
}
