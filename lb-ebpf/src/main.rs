//! lb's XDP program: the L4 data path.
//!
//! For every IPv4 TCP/UDP packet:
//! 1. A member's reply to a translated flow (found in `NAT`) is translated back (source becomes
//!    the VIP, destination the client) and sent towards the client.
//! 2. A packet for a known service (`SERVICES`, VIP:port:protocol) is checked against the
//!    service's `allowed_cidrs` (LPM trie); a new connection also against the per-source SYN
//!    rate and the service's `connection_limit`. Refused packets are dropped and counted.
//! 3. Filtering-only services (TERMINATED_HTTPS, HTTP: lbd terminates those) are then passed
//!    to the kernel. Forwarding services (TCP, UDP, HTTPS passthrough) look the flow up in
//!    `CONNTRACK`; a new flow picks its member in the service's Maglev ring and a translated
//!    source port, and is recorded in `CONNTRACK` and `NAT`. The packet is rewritten (source:
//!    lb's address towards the member and the translated port; destination: the member; the
//!    client's TCP timestamp shifted to lb's clock, see `Flow::ts_delta`, and shifted back in
//!    the member's replies), checksums are fixed incrementally, the next hop is resolved by `bpf_fib_lookup`, and the
//!    frame is redirected.
//!
//! Everything else (ARP, IPv6, fragments, IPv4 options, unknown destinations, mid-stream TCP
//! segments of flows this program did not start) goes to the kernel untouched.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action};
use aya_ebpf::helpers::{bpf_fib_lookup, bpf_ktime_get_ns, bpf_redirect};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::lpm_trie::Key as LpmKey;
use aya_ebpf::maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray};
use aya_ebpf::programs::XdpContext;
use lb_common::csum;
use lb_common::xdp::*;

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);
#[map]
static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);
#[map]
static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);
#[map]
static MAGLEV: Array<u32> = Array::with_max_entries(MAX_L4_SERVICES * 2 * RING_STRIDE, 0);
#[map]
static CONNTRACK: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(MAX_FLOWS, 0);
#[map]
static NAT: LruHashMap<FlowKey, Reverse> = LruHashMap::with_max_entries(MAX_FLOWS, 0);
#[map]
static CIDRS: LpmTrie<CidrData, u8> = LpmTrie::with_max_entries(MAX_CIDRS, 0);
#[map]
static RATE: LruHashMap<RateKey, Bucket> = LruHashMap::with_max_entries(MAX_RATE_BUCKETS, 0);
/// Open flows per service: incremented here for each new flow, recounted by lbd every second
/// (which also writes the userspace connection count of filtering-only services).
#[map]
static ACTIVE: Array<u64> = Array::with_max_entries(MAX_SERVICES, 0);
#[map]
static SERVICE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_SERVICES * SVC_COUNTERS, 0);
#[map]
static BACKEND_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_BACKENDS * BE_COUNTERS, 0);
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
/// Destinations whose link-layer address the kernel does not know yet (the lb node never
/// talked to them itself): lbd makes the kernel resolve them; the sender's retransmission
/// then goes through.
#[map]
static NEIGH_MISS: LruHashMap<[u8; 16], u64> = LruHashMap::with_max_entries(MAX_NEIGH_MISSES, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const L4_OFF: usize = ETH_LEN + IP_LEN;
const AF_INET: u8 = 2;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_TIMESTAMP: u8 = 8;
/// TCP options walked looking for the timestamp (RFC 9293 layouts put it within the first few).
const TCP_OPTIONS_WALKED: usize = 10;
const NANO: u64 = 1_000_000_000;
/// Translated-port candidates tried before a new flow is refused.
const NAT_PROBES: u32 = 8;
/// How long a closing flow's translated port rests before another client connection takes
/// it: enough for lb's millisecond clock to tick past the flow's last timestamp twice.
const REUSE_AFTER_NS: u64 = 2_000_000;

#[repr(C)]
struct Eth {
    dst: [u8; 6],
    src: [u8; 6],
    proto: u16,
}

/// IPv4 header without options. Addresses as 16-bit words: the header is only 2-byte aligned
/// behind Ethernet, and checksum arithmetic works on 16-bit words anyway.
#[repr(C)]
struct Ip4 {
    vihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag: u16,
    ttl: u8,
    proto: u8,
    csum: u16,
    saddr: [u16; 2],
    daddr: [u16; 2],
}

#[repr(C)]
struct Ports {
    sport: u16,
    dport: u16,
}

/// Where the L4 header's fields are in this packet.
struct L4 {
    ports: *mut Ports,
    csum: *mut u16,
    udp: bool,
    /// TCP flags (0 for UDP).
    flags: u8,
    /// TCP sequence number, raw (0 for UDP).
    seq: u32,
}

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    count(Counter::Packets, 1);
    count(Counter::Bytes, (ctx.data_end() - ctx.data()) as u64);
    // SAFETY: every packet access below goes through `ptr_at`, which checks bounds.
    let action = unsafe { process(&ctx) }.unwrap_or(xdp_action::XDP_PASS);
    match action {
        xdp_action::XDP_PASS => count(Counter::Passed, 1),
        xdp_action::XDP_DROP | xdp_action::XDP_ABORTED => count(Counter::Dropped, 1),
        _ => count(Counter::Forwarded, 1),
    }
    action
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
unsafe fn process(ctx: &XdpContext) -> Option<u32> {
    let eth: *mut Eth = ptr_at(ctx, 0)?;
    if unsafe { (*eth).proto } != ETH_P_IP.to_be() {
        return Some(xdp_action::XDP_PASS);
    }
    let ip: *mut Ip4 = ptr_at(ctx, ETH_LEN)?;
    // No options, not a fragment (MF set or a fragment offset).
    if unsafe { (*ip).vihl } != 0x45 || unsafe { (*ip).frag } & 0x3fffu16.to_be() != 0 {
        return Some(xdp_action::XDP_PASS);
    }
    let proto = unsafe { (*ip).proto };
    let l4 = match proto {
        PROTO_TCP => {
            let flags: *const u8 = ptr_at(ctx, L4_OFF + 13)?;
            let seq: *const [u8; 4] = ptr_at(ctx, L4_OFF + 4)?;
            let (flags, seq) = unsafe { (*flags, u32::from_ne_bytes(*seq)) };
            L4 { ports: ptr_at(ctx, L4_OFF)?, csum: ptr_at(ctx, L4_OFF + 16)?, udp: false, flags, seq }
        }
        PROTO_UDP => L4 { ports: ptr_at(ctx, L4_OFF)?, csum: ptr_at(ctx, L4_OFF + 6)?, udp: true, flags: 0, seq: 0 },
        _ => return Some(xdp_action::XDP_PASS),
    };
    let (src, dst) = unsafe { (addr16((*ip).saddr), addr16((*ip).daddr)) };
    let (sport, dport) = unsafe { ((*l4.ports).sport, (*l4.ports).dport) };
    let ip_len = u16::from_be(unsafe { (*ip).tot_len }) as u64;
    let now = unsafe { bpf_ktime_get_ns() };

    let key = FlowKey { src, dst, sport, dport, proto, family: FAMILY_V4, _pad: 0 };
    if let Some(rev) = NAT.get_ptr(&key) {
        let rev = unsafe { *rev };
        return Some(unsafe { reply(ctx, eth, ip, &l4, &rev, ip_len, now) });
    }

    let Some(svc) = (unsafe { SERVICES.get(&ServiceKey { addr: dst, port: dport, proto, family: FAMILY_V4 }) }) else {
        return Some(xdp_action::XDP_PASS);
    };
    let svc = *svc;
    svc_add(svc.id, SvcCounter::PacketsIn, 1);
    svc_add(svc.id, SvcCounter::BytesIn, ip_len);
    if svc.flags & SVC_CIDRS != 0 {
        let mut be = [0u8; 4];
        be.copy_from_slice(&svc.id.to_be_bytes());
        if CIDRS.get(LpmKey::new(32 + 128, CidrData { service_be: be, addr: src })).is_none() {
            return Some(drop_for(svc.id, SvcCounter::DropCidr));
        }
    }
    let syn = !l4.udp && l4.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if svc.flags & SVC_FORWARD == 0 {
        if syn {
            if let Err(reason) = admit(&svc, src, now) {
                return Some(drop_for(svc.id, reason));
            }
            svc_add(svc.id, SvcCounter::NewFlows, 1);
        }
        return Some(xdp_action::XDP_PASS);
    }

    let flow = match CONNTRACK.get_ptr_mut(&key) {
        // A SYN on a closed tuple starts a new flow, unless it is the SYN that opened the old
        // one, retransmitted and arriving late; anything else continues the old flow.
        Some(f) if !(syn && unsafe { (*f).state == FLOW_CLOSING && (*f).syn_seq != l4.seq }) => unsafe {
            (*f).last_seen_ns = now;
            if l4.flags & (TCP_FIN | TCP_RST) != 0 {
                (*f).state = FLOW_CLOSING;
            }
            *f
        },
        _ => {
            // A mid-stream TCP segment of a flow this program did not start (it began before
            // lbd attached, or went to lbd's own listener): the kernel decides.
            if !l4.udp && !syn {
                return Some(xdp_action::XDP_PASS);
            }
            if let Err(reason) = admit(&svc, src, now) {
                return Some(drop_for(svc.id, reason));
            }
            let tsval = if l4.udp { None } else { timestamp_at(ctx).and_then(|at| ptr_at::<[u8; 4]>(ctx, at)).map(|p| u32::from_be_bytes(unsafe { *p })) };
            match new_flow(&svc, &key, l4.seq, tsval, now) {
                Ok(f) => f,
                Err(reason) => return Some(drop_for(svc.id, reason)),
            }
        }
    };
    let backend = *BACKENDS.get(flow.backend)?;
    be_add(flow.backend, BeCounter::PacketsTo, 1);
    be_add(flow.backend, BeCounter::BytesTo, ip_len);
    unsafe {
        rewrite(ip, &l4, words(&backend.snat), words(&backend.addr), flow.nat_port, backend.port);
        if flow.ts_delta != 0 {
            // The client's TSval, shifted (see `Flow::ts_delta`).
            shift_timestamp(ctx, &l4, 0, flow.ts_delta);
        }
        Some(send(ctx, eth, ip, flow.service))
    }
}

/// A member's packet for a translated flow: back to the client as if from the VIP.
#[inline(always)]
unsafe fn reply(ctx: &XdpContext, eth: *mut Eth, ip: *mut Ip4, l4: &L4, rev: &Reverse, ip_len: u64, now: u64) -> u32 {
    let client_key = FlowKey {
        src: rev.client,
        dst: rev.vip,
        sport: rev.client_port,
        dport: rev.vip_port,
        proto: unsafe { (*ip).proto },
        family: FAMILY_V4,
        _pad: 0,
    };
    if let Some(f) = CONNTRACK.get_ptr_mut(&client_key) {
        unsafe {
            (*f).last_seen_ns = now;
            if l4.flags & (TCP_FIN | TCP_RST) != 0 {
                (*f).state = FLOW_CLOSING;
            }
        }
    }
    be_add(rev.backend, BeCounter::PacketsFrom, 1);
    be_add(rev.backend, BeCounter::BytesFrom, ip_len);
    svc_add(rev.service, SvcCounter::PacketsOut, 1);
    svc_add(rev.service, SvcCounter::BytesOut, ip_len);
    unsafe {
        rewrite(ip, l4, words(&rev.vip), words(&rev.client), rev.vip_port, rev.client_port);
        if rev.ts_delta != 0 {
            // The member's echo of the shifted TSval (TSecr), back to the client's own value.
            shift_timestamp(ctx, l4, 4, rev.ts_delta.wrapping_neg());
        }
        send(ctx, eth, ip, rev.service)
    }
}

/// Checks a new connection against the service's connection limit and the source's SYN rate.
#[inline(always)]
fn admit(svc: &Service, src: [u8; 16], now: u64) -> Result<(), SvcCounter> {
    if svc.conn_limit != 0 {
        if let Some(active) = ACTIVE.get(svc.id) {
            if *active >= svc.conn_limit as u64 {
                return Err(SvcCounter::DropConnLimit);
            }
        }
    }
    if svc.syn_rate != 0 {
        let key = RateKey { addr: src, service: svc.id };
        let cap = (if svc.syn_burst == 0 { 1 } else { svc.syn_burst }) as u64 * NANO;
        match RATE.get_ptr_mut(&key) {
            Some(b) => unsafe {
                let elapsed = now.saturating_sub((*b).last_ns).min(10 * NANO);
                let tokens = ((*b).nano_tokens + elapsed * svc.syn_rate as u64).min(cap);
                (*b).last_ns = now;
                if tokens < NANO {
                    (*b).nano_tokens = tokens;
                    return Err(SvcCounter::DropSynRate);
                }
                (*b).nano_tokens = tokens - NANO;
            },
            None => {
                let _ = RATE.insert(&key, &Bucket { nano_tokens: cap - NANO, last_ns: now }, 0);
            }
        }
    }
    Ok(())
}

/// Picks the member (Maglev) and a translated source port for a new flow, and records it.
#[inline(always)]
fn new_flow(svc: &Service, key: &FlowKey, syn_seq: u32, tsval: Option<u32>, now: u64) -> Result<Flow, SvcCounter> {
    let hash = flow_hash(key, true);
    // SOURCE_IP: every flow of one client address (or network, with a persistence granularity)
    // lands on the same slot (the NAT port below still comes from the whole tuple, so one
    // client's flows do not compete for ports).
    let place = if svc.flags & SVC_HASH_SOURCE != 0 {
        let mut client = *key;
        for i in 0..4 {
            client.src[i] &= svc.source_mask[i];
        }
        flow_hash(&client, false)
    } else {
        hash
    };
    let slot = place.checked_rem(svc.ring_size).ok_or(SvcCounter::DropNoMember)?;
    let backend_id = *MAGLEV.get(svc.ring.wrapping_mul(RING_STRIDE).wrapping_add(slot)).ok_or(SvcCounter::DropNoMember)?;
    if backend_id == NO_BACKEND {
        return Err(SvcCounter::DropNoMember);
    }
    let backend = *BACKENDS.get(backend_id).ok_or(SvcCounter::DropNoMember)?;
    let config = *CONFIG.get(0).ok_or(SvcCounter::DropNatPorts)?;
    let span = (config.nat_port_max as u32).wrapping_sub(config.nat_port_min as u32).wrapping_add(1);
    let first = (hash >> 7).checked_rem(span).ok_or(SvcCounter::DropNatPorts)?;
    let mut chosen = None;
    let mut rkey = FlowKey { src: backend.addr, dst: backend.snat, sport: backend.port, dport: 0, proto: key.proto, family: key.family, _pad: 0 };
    for i in 0..NAT_PROBES {
        let port = config.nat_port_min as u32 + (first + i).checked_rem(span).unwrap_or(0);
        rkey.dport = (port as u16).to_be();
        match NAT.get_ptr(&rkey) {
            None => {
                chosen = Some(rkey.dport);
                break;
            }
            // The same client tuple (a SYN that starts over on a closed flow), or a flow that
            // is closing or already gone: the port is free to take. Without this, flows in
            // their closing grace would hold the port range at high connection rates. The
            // member may still hold the tuple in TIME_WAIT; it takes the new SYN because the
            // shifted timestamps grow (`ts_delta`), once lb's millisecond clock has moved past
            // the closing flow's last packet.
            Some(r) => {
                let r = unsafe { *r };
                let same_client = r.client == key.src && r.client_port == key.sport;
                let owner = FlowKey { src: r.client, dst: r.vip, sport: r.client_port, dport: r.vip_port, proto: key.proto, family: key.family, _pad: 0 };
                let released = match CONNTRACK.get_ptr(&owner) {
                    None => true,
                    Some(f) => unsafe { (*f).state == FLOW_CLOSING && now.saturating_sub((*f).last_seen_ns) >= REUSE_AFTER_NS },
                };
                if same_client || released {
                    chosen = Some(rkey.dport);
                    break;
                }
            }
        }
    }
    let nat_port = chosen.ok_or(SvcCounter::DropNatPorts)?;
    let shift = tsval.map_or(0, |v| ts_delta(now, v));
    let flow = Flow { backend: backend_id, service: svc.id, nat_port, state: FLOW_OPEN, _pad: 0, syn_seq, ts_delta: shift, _pad2: 0, last_seen_ns: now };
    let reverse = Reverse {
        client: key.src,
        vip: key.dst,
        client_port: key.sport,
        vip_port: key.dport,
        service: svc.id,
        backend: backend_id,
        ts_delta: shift,
    };
    CONNTRACK.insert(key, &flow, 0).map_err(|_| SvcCounter::DropNatPorts)?;
    NAT.insert(&rkey, &reverse, 0).map_err(|_| SvcCounter::DropNatPorts)?;
    if let Some(active) = ACTIVE.get_ptr_mut(svc.id) {
        // SAFETY: an aligned u64 slot of an array map. Not atomic (the BPF target has no
        // 64-bit atomics in core): two CPUs may lose an increment, which lbd's recount every
        // second repairs.
        unsafe { *active += 1 };
    }
    svc_add(svc.id, SvcCounter::NewFlows, 1);
    be_add(backend_id, BeCounter::NewFlows, 1);
    Ok(flow)
}

/// Rewrites addresses and ports, fixing the IPv4 and TCP/UDP checksums incrementally.
#[inline(always)]
unsafe fn rewrite(ip: *mut Ip4, l4: &L4, src: [u16; 2], dst: [u16; 2], sport: u16, dport: u16) {
    unsafe {
        let (old_src, old_dst) = ((*ip).saddr, (*ip).daddr);
        let (old_sport, old_dport) = ((*l4.ports).sport, (*l4.ports).dport);
        let mut c = (*ip).csum;
        for i in 0..2 {
            c = csum::replace16(c, old_src[i], src[i]);
            c = csum::replace16(c, old_dst[i], dst[i]);
        }
        (*ip).csum = c;
        let mut c = *l4.csum;
        // A UDP checksum of 0 means "none": leave it so.
        if !(l4.udp && c == 0) {
            for i in 0..2 {
                c = csum::replace16(c, old_src[i], src[i]);
                c = csum::replace16(c, old_dst[i], dst[i]);
            }
            c = csum::replace16(c, old_sport, sport);
            c = csum::replace16(c, old_dport, dport);
            if l4.udp && c == 0 {
                c = 0xffff;
            }
            *l4.csum = c;
        }
        (*ip).saddr = src;
        (*ip).daddr = dst;
        (*l4.ports).sport = sport;
        (*l4.ports).dport = dport;
    }
}

/// Where the TSval of the segment's TCP timestamp option is (its TSecr follows), if it carries
/// one.
#[inline(always)]
fn timestamp_at(ctx: &XdpContext) -> Option<usize> {
    let doff: *const u8 = ptr_at(ctx, L4_OFF + 12)?;
    let end = L4_OFF + ((unsafe { *doff } >> 4) as usize) * 4;
    let mut at = L4_OFF + 20;
    for _ in 0..TCP_OPTIONS_WALKED {
        // The timestamp option is 10 bytes: nothing shorter left can hold it.
        if at + 10 > end {
            return None;
        }
        let option: *const [u8; 2] = ptr_at(ctx, at)?;
        let [kind, len] = unsafe { *option };
        match kind {
            TCPOPT_EOL => return None,
            TCPOPT_NOP => at += 1,
            TCPOPT_TIMESTAMP if len == 10 => return Some(at + 2),
            _ if len < 2 => return None,
            _ => at += len as usize,
        }
    }
    None
}

/// Adds `delta` to the segment's TSval (`field` 0) or TSecr (`field` 4), if it has a timestamp
/// option, and fixes the TCP checksum.
#[inline(always)]
unsafe fn shift_timestamp(ctx: &XdpContext, l4: &L4, field: usize, delta: u32) {
    let Some(at) = timestamp_at(ctx).map(|a| a + field) else { return };
    let Some(value) = ptr_at::<[u8; 4]>(ctx, at) else { return };
    unsafe {
        let old = *value;
        let new = u32::from_be_bytes(old).wrapping_add(delta).to_be_bytes();
        // The TCP header starts at an even offset, so `at`'s parity is its parity in the header.
        *l4.csum = csum::replace32(*l4.csum, at, old, new);
        *value = new;
    }
}

/// Resolves the next hop of the (rewritten) packet and sends it there.
#[inline(always)]
unsafe fn send(ctx: &XdpContext, eth: *mut Eth, ip: *mut Ip4, service: u32) -> u32 {
    // SAFETY: a plain C struct of integers; all-zero is its documented initial state.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    unsafe {
        p.family = AF_INET;
        p.l4_protocol = (*ip).proto;
        p.__bindgen_anon_1.tot_len = u16::from_be((*ip).tot_len);
        p.__bindgen_anon_2.tos = (*ip).tos;
        p.ifindex = ctx.ingress_ifindex() as u32;
        p.__bindgen_anon_3.ipv4_src = u32_of((*ip).saddr);
        p.__bindgen_anon_4.ipv4_dst = u32_of((*ip).daddr);
        let rc = bpf_fib_lookup(ctx.ctx as *mut _, &mut p, size_of::<FibParams>() as i32, 0);
        if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
            if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
                let _ = NEIGH_MISS.insert(&addr16((*ip).daddr), &bpf_ktime_get_ns(), 0);
            }
            return drop_for(service, SvcCounter::DropNoRoute);
        }
        (*eth).dst = p.dmac;
        (*eth).src = p.smac;
        if p.ifindex == ctx.ingress_ifindex() as u32 {
            return xdp_action::XDP_TX;
        }
        bpf_redirect(p.ifindex, 0) as u32
    }
}

/// murmur3-style mix of the flow's source address, and with `ports` its ports and protocol:
/// what Maglev slots on.
#[inline(always)]
fn flow_hash(k: &FlowKey, ports: bool) -> u32 {
    let mut h: u32 = 0x5eed_1b0b;
    let mut mix = |w: u32| {
        let mut k1 = w.wrapping_mul(0xcc9e_2d51);
        k1 = k1.rotate_left(15).wrapping_mul(0x1b87_3593);
        h ^= k1;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    };
    for i in 0..4 {
        mix(u32::from_ne_bytes([k.src[i * 4], k.src[i * 4 + 1], k.src[i * 4 + 2], k.src[i * 4 + 3]]));
    }
    if ports {
        mix(((k.sport as u32) << 16) | k.dport as u32);
        mix(k.proto as u32);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn addr16(w: [u16; 2]) -> [u8; 16] {
    let (a, b) = (w[0].to_ne_bytes(), w[1].to_ne_bytes());
    v4([a[0], a[1], b[0], b[1]])
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u16; 2] {
    [u16::from_ne_bytes([a[0], a[1]]), u16::from_ne_bytes([a[2], a[3]])]
}

#[inline(always)]
fn u32_of(w: [u16; 2]) -> u32 {
    let (a, b) = (w[0].to_ne_bytes(), w[1].to_ne_bytes());
    u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
}

#[inline(always)]
fn drop_for(service: u32, reason: SvcCounter) -> u32 {
    svc_add(service, reason, 1);
    xdp_action::XDP_DROP
}

#[inline(always)]
fn add(map: &PerCpuArray<u64>, index: u32, n: u64) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += n };
    }
}

#[inline(always)]
fn count(counter: Counter, n: u64) {
    add(&COUNTERS, counter as u32, n);
}

#[inline(always)]
fn svc_add(service: u32, counter: SvcCounter, n: u64) {
    add(&SERVICE_STATS, service.wrapping_mul(SVC_COUNTERS).wrapping_add(counter as u32), n);
}

#[inline(always)]
fn be_add(backend: u32, counter: BeCounter, n: u64) {
    add(&BACKEND_STATS, backend.wrapping_mul(BE_COUNTERS).wrapping_add(counter as u32), n);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
