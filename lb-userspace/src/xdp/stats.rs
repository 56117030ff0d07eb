//! The program's per-CPU counters, summed and copied into `/metrics` (and so into Octavia's
//! listener `stats` for the listeners XDP forwards).

use std::collections::HashMap;

use lb_common::xdp::*;

use super::maps::Maps;
use super::sync::Written;
use crate::metrics::{BytesLabels, ListenerLabels, ListenerReasonLabels, Metrics, XdpMemberLabels, XdpMemberFlowLabels};

/// Counter values already published, to publish deltas.
#[derive(Default)]
pub struct Published {
    global: [u64; COUNTER_SLOTS as usize],
    services: HashMap<(u32, String), [u64; SVC_COUNTERS as usize]>,
    backends: HashMap<(u32, String), [u64; BE_COUNTERS as usize]>,
}

/// Drop reasons by counter, as metric labels.
const DROPS: [(SvcCounter, &str); 6] = [
    (SvcCounter::DropCidr, "allowed_cidrs"),
    (SvcCounter::DropSynRate, "syn_rate"),
    (SvcCounter::DropConnLimit, "connection_limit"),
    (SvcCounter::DropNoMember, "no_member"),
    (SvcCounter::DropNoRoute, "no_route"),
    (SvcCounter::DropNatPorts, "nat_ports"),
];

fn delta(now: u64, before: u64) -> u64 {
    // A slot handed to a new owner starts from zero again.
    if now >= before { now - before } else { now }
}

/// Reads every counter and adds what is new to `metrics`.
pub fn publish(maps: &Maps, w: &Written, done: &mut Published, m: &Metrics) {
    let mut global = [0u64; COUNTER_SLOTS as usize];
    for (i, g) in global.iter_mut().enumerate() {
        *g = Maps::sum(&maps.counters, i as u32);
    }
    let d = |c: Counter| delta(global[c as usize], done.global[c as usize]);
    m.xdp_packets.inc_by(d(Counter::Packets));
    m.xdp_bytes.inc_by(d(Counter::Bytes));
    m.xdp_passed.inc_by(d(Counter::Passed));
    m.xdp_forwarded.inc_by(d(Counter::Forwarded));
    m.xdp_dropped.inc_by(d(Counter::Dropped));
    done.global = global;

    for s in w.services.values() {
        let mut now = [0u64; SVC_COUNTERS as usize];
        for (i, v) in now.iter_mut().enumerate() {
            *v = Maps::sum(&maps.service_stats, s.id * SVC_COUNTERS + i as u32);
        }
        let before = done.services.entry((s.id, s.listener.clone())).or_default();
        let d = |c: SvcCounter| delta(now[c as usize], before[c as usize]);
        let listener = s.listener.clone();
        let dir = |direction| BytesLabels { listener: listener.clone(), direction };
        m.xdp_listener_packets.get_or_create(&dir("in")).inc_by(d(SvcCounter::PacketsIn));
        m.xdp_listener_bytes.get_or_create(&dir("in")).inc_by(d(SvcCounter::BytesIn));
        m.xdp_listener_flows.get_or_create(&ListenerLabels { listener: listener.clone() }).inc_by(d(SvcCounter::NewFlows));
        if s.forwards() {
            m.xdp_listener_packets.get_or_create(&dir("out")).inc_by(d(SvcCounter::PacketsOut));
            m.xdp_listener_bytes.get_or_create(&dir("out")).inc_by(d(SvcCounter::BytesOut));
            // Octavia's listener stats count what XDP forwards as the listener's own traffic.
            m.bytes.get_or_create(&dir("in")).inc_by(d(SvcCounter::BytesIn));
            m.bytes.get_or_create(&dir("out")).inc_by(d(SvcCounter::BytesOut));
            m.connections.get_or_create(&ListenerLabels { listener: listener.clone() }).inc_by(d(SvcCounter::NewFlows));
        }
        for (c, reason) in DROPS {
            let n = d(c);
            if n > 0 || before[c as usize] == 0 {
                m.xdp_drops.get_or_create(&ListenerReasonLabels { listener: listener.clone(), reason }).inc_by(n);
            }
        }
        *before = now;
    }
    for b in w.backends.values() {
        let mut now = [0u64; BE_COUNTERS as usize];
        for (i, v) in now.iter_mut().enumerate() {
            *v = Maps::sum(&maps.backend_stats, b.id * BE_COUNTERS + i as u32);
        }
        let before = done.backends.entry((b.id, b.label.clone())).or_default();
        let d = |c: BeCounter| delta(now[c as usize], before[c as usize]);
        let dir = |direction| XdpMemberLabels { member: b.label.clone(), direction };
        m.xdp_member_packets.get_or_create(&dir("to_member")).inc_by(d(BeCounter::PacketsTo));
        m.xdp_member_bytes.get_or_create(&dir("to_member")).inc_by(d(BeCounter::BytesTo));
        m.xdp_member_packets.get_or_create(&dir("from_member")).inc_by(d(BeCounter::PacketsFrom));
        m.xdp_member_bytes.get_or_create(&dir("from_member")).inc_by(d(BeCounter::BytesFrom));
        m.xdp_member_flows.get_or_create(&XdpMemberFlowLabels { member: b.label.clone() }).inc_by(d(BeCounter::NewFlows));
        *before = now;
    }
}
