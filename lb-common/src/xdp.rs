//! Layouts of the maps shared with the XDP program: plain `#[repr(C)]` data, explicit padding,
//! addresses and ports in network byte order exactly as they sit in packets.
//!
//! The program (lb-ebpf) reads services, backends and Maglev rings written by lbd, and keeps
//! the per-flow conntrack and NAT maps itself; lbd reads the counters and expires idle flows.
//! Addresses are 16 bytes everywhere (an IPv4 address occupies the first four), so IPv6 needs no
//! layout change.

/// Address family tags used in keys (`family` fields).
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers used in keys (`proto` fields).
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// How many services (VIP:port:protocol) the maps hold.
pub const MAX_SERVICES: u32 = 256;
/// How many of those may forward in XDP (each owns two Maglev rings).
pub const MAX_L4_SERVICES: u32 = 32;
/// Slots reserved per Maglev ring; a service's table size is a prime up to this.
pub const RING_STRIDE: u32 = 65_537;
/// How many backends (member addresses) the maps hold.
pub const MAX_BACKENDS: u32 = 4096;
/// Conntrack / NAT map capacity (LRU).
pub const MAX_FLOWS: u32 = 262_144;
/// Per-source SYN rate buckets (LRU).
pub const MAX_RATE_BUCKETS: u32 = 65_536;
/// `allowed_cidrs` entries over all services.
pub const MAX_CIDRS: u32 = 16_384;
/// Next hops the program found no neighbour entry for (LRU), for lbd to resolve.
pub const MAX_NEIGH_MISSES: u32 = 4096;
/// A backend slot / Maglev entry meaning "no member".
pub const NO_BACKEND: u32 = u32::MAX;

/// Key of the `SERVICES` hash map: what a client connects to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// The service forwards new flows in XDP through its Maglev ring (TCP, UDP, HTTPS passthrough).
pub const SVC_FORWARD: u32 = 1;
/// Only sources in the service's `allowed_cidrs` (the `CIDRS` trie) are let through.
pub const SVC_CIDRS: u32 = 2;
/// New flows are placed by the client's source address alone (`SOURCE_IP`), not the whole tuple.
pub const SVC_HASH_SOURCE: u32 = 4;

/// Value of the `SERVICES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// Index of the service's counters and `ACTIVE` slot, and its `CIDRS` key prefix.
    pub id: u32,
    /// `SVC_*` bits.
    pub flags: u32,
    /// Active ring: entries `ring * RING_STRIDE ..+ ring_size` of `MAGLEV`.
    pub ring: u32,
    pub ring_size: u32,
    /// Concurrent flow limit (`connection_limit`); 0 is unlimited.
    pub conn_limit: u32,
    /// New connections per second allowed from one source address; 0 is unlimited.
    pub syn_rate: u32,
    /// Bucket depth of that limit (connections allowed at once after an idle period).
    pub syn_burst: u32,
    /// With `SVC_HASH_SOURCE`: the part of the IPv4 source address that places a flow
    /// (network order; `persistence_granularity`), all ones for single addresses.
    pub source_mask: [u8; 4],
}

/// A member as the data path sees it: value of the `BACKENDS` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    pub addr: [u8; 16],
    /// lb's own address on the route to the member: the translated source address.
    pub snat: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub family: u8,
    pub _pad: u8,
    pub _pad2: u32,
}

/// A flow as seen on the wire in one direction: key of `CONNTRACK` (client → VIP) and of `NAT`
/// (member → lb's translated address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Network byte order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: u16,
}

/// Flow states (`Flow::state`).
pub const FLOW_OPEN: u8 = 0;
/// A FIN or RST was seen: the flow no longer counts against `connection_limit`, and a new SYN
/// on the same tuple is a new flow.
pub const FLOW_CLOSING: u8 = 1;

/// Value of `CONNTRACK`: where a client flow goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flow {
    pub backend: u32,
    pub service: u32,
    /// The translated source port (network byte order).
    pub nat_port: u16,
    pub state: u8,
    pub _pad: u8,
    /// The TCP initial sequence number of the SYN that opened the flow (raw, network order):
    /// a SYN with it again is that SYN retransmitted, not a new flow.
    pub syn_seq: u32,
    /// Added to the client's TCP timestamp (TSval) towards the member, so that the member sees
    /// every flow on a translated tuple start at lb's millisecond clock (see [`ts_delta`]);
    /// 0 when the SYN carried no timestamp.
    pub ts_delta: u32,
    pub _pad2: u32,
    /// `bpf_ktime_get_ns` of the last packet in either direction.
    pub last_seen_ns: u64,
}

/// The timestamp shift of a new flow whose SYN carries TSval `tsval`, at `now_ns`
/// (`bpf_ktime_get_ns`).
///
/// A member that closed a connection first holds its tuple in TIME_WAIT (60 s on Linux) and
/// accepts a new SYN on it only if the SYN's timestamp is newer than the last one it saw there
/// (PAWS), or else its sequence number is higher. Clients' timestamp clocks start at an offset
/// of their own per connection (RFC 7323; Linux does so per address and port pair), so when lb
/// gives a translated port to a different client connection, the member would refuse about
/// half of those SYNs (`TcpExtPAWSTimewait`), and each refused one costs the client a
/// retransmitted SYN and its wait. Shifted so every flow
/// starts at lb's clock in milliseconds (the fastest rate RFC 7323 allows clients, and
/// Linux's), a translated tuple's timestamps only grow from one flow to the next.
#[inline(always)]
pub fn ts_delta(now_ns: u64, tsval: u32) -> u32 {
    ((now_ns / 1_000_000) as u32).wrapping_sub(tsval)
}

/// Value of `NAT`: how to turn a member's reply back into the VIP's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Reverse {
    pub client: [u8; 16],
    pub vip: [u8; 16],
    /// Network byte order.
    pub client_port: u16,
    pub vip_port: u16,
    pub service: u32,
    pub backend: u32,
    /// The flow's [`Flow::ts_delta`], taken off the member's timestamp echo (TSecr) on the
    /// way back.
    pub ts_delta: u32,
}

/// Key of the `RATE` LRU map: one bucket per service and source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RateKey {
    pub addr: [u8; 16],
    pub service: u32,
}

/// Value of `RATE`: a token bucket in nano-tokens.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Bucket {
    pub nano_tokens: u64,
    pub last_ns: u64,
}

/// Data of a `CIDRS` LPM key: the service id (big-endian, always matched in full) then the
/// source address. Prefix length = 32 + the CIDR's prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CidrData {
    pub service_be: [u8; 4],
    pub addr: [u8; 16],
}

/// Value of the `CONFIG` array (one slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Translated source ports are taken from `nat_port_min..=nat_port_max` (host byte order);
    /// keep that range out of the kernel's `ip_local_port_range`.
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    pub _pad: u32,
}

/// Global counters: index into the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the program saw.
    Packets = 0,
    /// Bytes of those packets (L2 frame length).
    Bytes = 1,
    /// Packets passed to the kernel stack.
    Passed = 2,
    /// Packets translated and sent on (redirect or XDP_TX).
    Forwarded = 3,
    /// Packets dropped (any reason; per-service reasons are in `SERVICE_STATS`).
    Dropped = 4,
}

/// Number of slots in the `COUNTERS` array.
pub const COUNTER_SLOTS: u32 = 5;

/// Per-service counters: `SERVICE_STATS[service * SVC_COUNTERS + counter]`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvcCounter {
    /// Client → service packets and bytes (IP length).
    PacketsIn = 0,
    BytesIn = 1,
    /// Service → client packets and bytes (forwarding services only).
    PacketsOut = 2,
    BytesOut = 3,
    /// New flows (forwarding) or admitted new connections (filtering).
    NewFlows = 4,
    /// Dropped: source outside `allowed_cidrs`.
    DropCidr = 5,
    /// Dropped: the source's new-connection rate limit.
    DropSynRate = 6,
    /// Dropped: `connection_limit` reached.
    DropConnLimit = 7,
    /// Dropped: no member with weight.
    DropNoMember = 8,
    /// Dropped: no route or neighbour to the member or client.
    DropNoRoute = 9,
    /// Dropped: no free translated source port.
    DropNatPorts = 10,
}

pub const SVC_COUNTERS: u32 = 11;

/// Per-backend counters: `BACKEND_STATS[backend * BE_COUNTERS + counter]`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeCounter {
    /// lb → member.
    PacketsTo = 0,
    BytesTo = 1,
    /// member → lb.
    PacketsFrom = 2,
    BytesFrom = 3,
    NewFlows = 4,
}

pub const BE_COUNTERS: u32 = 5;

/// Puts an IPv4 address (network order bytes) into a 16-byte address field.
pub const fn v4(octets: [u8; 4]) -> [u8; 16] {
    [octets[0], octets[1], octets[2], octets[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

#[cfg(feature = "aya")]
mod pod {
    // SAFETY: every type is #[repr(C)], made of integers and byte arrays, with explicit padding
    // fields, so any bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::Reverse {}
    unsafe impl aya::Pod for super::RateKey {}
    unsafe impl aya::Pod for super::Bucket {}
    unsafe impl aya::Pod for super::CidrData {}
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<Service>(), 32);
        assert_eq!(size_of::<Backend>(), 40);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<Flow>(), 32);
        assert_eq!(size_of::<Reverse>(), 48);
        assert_eq!(size_of::<RateKey>(), 20);
        assert_eq!(size_of::<Bucket>(), 16);
        assert_eq!(size_of::<CidrData>(), 20);
        assert_eq!(size_of::<Config>(), 8);
    }

    #[test]
    fn shifted_timestamps_start_at_lbs_millisecond_clock_and_wrap() {
        let now_ns = 7_000_123_456;
        for tsval in [0, 1, 6_999, 7_000, 7_001, u32::MAX] {
            assert_eq!(tsval.wrapping_add(ts_delta(now_ns, tsval)), 7_000, "tsval {tsval}");
        }
        // A later flow on the same tuple starts above an earlier flow's timestamps, whatever
        // the two clients' own clocks read.
        let (first, second) = (ts_delta(1_000_000_000, 4_000_000_000), ts_delta(1_005_000_000, 17));
        let first_last = (4_000_000_000u32 + 4).wrapping_add(first);
        assert!(((17u32.wrapping_add(second)).wrapping_sub(first_last) as i32) > 0);
    }
}
