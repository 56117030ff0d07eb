//! Typed handles to the XDP program's maps (layouts in `lb_common::xdp`), and the few
//! operations on them that more than one module needs.

use aya::Ebpf;
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues};
use lb_common::xdp::*;

use super::XdpError;

pub struct Maps {
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub backends: Array<MapData, Backend>,
    pub maglev: Array<MapData, u32>,
    pub conntrack: HashMap<MapData, FlowKey, Flow>,
    pub nat: HashMap<MapData, FlowKey, Reverse>,
    pub cidrs: LpmTrie<MapData, CidrData, u8>,
    pub active: Array<MapData, u64>,
    pub counters: PerCpuArray<MapData, u64>,
    pub service_stats: PerCpuArray<MapData, u64>,
    pub backend_stats: PerCpuArray<MapData, u64>,
    pub config: Array<MapData, Config>,
    pub neigh_miss: HashMap<MapData, [u8; 16], u64>,
    /// Possible CPUs: the length of every per-CPU value.
    pub cpus: usize,
}

fn take<T: TryFrom<Map>>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, XdpError>
where
    T::Error: std::fmt::Display,
{
    let map = ebpf.take_map(name).ok_or(XdpError::NoMap(name))?;
    T::try_from(map).map_err(|e| XdpError::Map { map: name, error: e.to_string() })
}

impl Maps {
    /// Takes the maps out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps, XdpError> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| XdpError::Map { map: "COUNTERS", error: format!("{what}: {e}") })?;
        Ok(Maps {
            services: take(ebpf, "SERVICES")?,
            backends: take(ebpf, "BACKENDS")?,
            maglev: take(ebpf, "MAGLEV")?,
            conntrack: take(ebpf, "CONNTRACK")?,
            nat: take(ebpf, "NAT")?,
            cidrs: take(ebpf, "CIDRS")?,
            active: take(ebpf, "ACTIVE")?,
            counters: take(ebpf, "COUNTERS")?,
            service_stats: take(ebpf, "SERVICE_STATS")?,
            backend_stats: take(ebpf, "BACKEND_STATS")?,
            config: take(ebpf, "CONFIG")?,
            neigh_miss: take(ebpf, "NEIGH_MISS")?,
            cpus,
        })
    }

    /// Sum over CPUs of slot `index` of a per-CPU counter array (0 when unreadable).
    pub fn sum(array: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
        array.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Zeroes `n` consecutive slots from `first` on every CPU (a slot handed to a new owner).
    pub fn zero(array: &mut PerCpuArray<MapData, u64>, cpus: usize, first: u32, n: u32) -> Result<(), XdpError> {
        for i in first..first + n {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus]).map_err(|e| XdpError::Map { map: "stats", error: e.to_string() })?;
            array.set(i, zeros, 0).map_err(|e| XdpError::Map { map: "stats", error: e.to_string() })?;
        }
        Ok(())
    }
}

/// A map write that failed, as an error naming the map.
pub fn write_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError {
    move |e| XdpError::Map { map, error: e.to_string() }
}
