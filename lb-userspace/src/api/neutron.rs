//! Neutron lookup: the host's own interface networks presented as subnets (and networks) with
//! stable UUIDs, so `openstack loadbalancer create --vip-subnet-id ...` resolves, and the check
//! that a VIP is an address this host owns.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::routing::get;
use serde_json::{Value, json};

use super::auth::Auth;
use super::error::{ApiError, Octavia};
use super::{ApiState, query_pairs};

/// One address network of a host interface.
#[derive(Clone, Debug)]
pub struct Subnet {
    pub id: String,
    pub network_id: String,
    pub name: String,
    pub interface: String,
    pub address: IpAddr,
    pub prefix: u8,
}

impl Subnet {
    pub fn cidr(&self) -> String {
        format!("{}/{}", network(self.address, self.prefix), self.prefix)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        network(ip, self.prefix) == network(self.address, self.prefix) && ip.is_ipv4() == self.address.is_ipv4()
    }

    fn render(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "network_id": self.network_id, "cidr": self.cidr(),
            "ip_version": if self.address.is_ipv4() { 4 } else { 6 }, "gateway_ip": null, "enable_dhcp": false,
            "allocation_pools": [], "dns_nameservers": [], "host_routes": [], "project_id": "", "tenant_id": "",
            "description": format!("addresses of host interface {}", self.interface), "tags": [],
        })
    }
}

fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix.min(32)) };
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix.min(128)) };
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    }
}

fn prefix_of(mask: IpAddr) -> u8 {
    match mask {
        IpAddr::V4(m) => u32::from(m).count_ones() as u8,
        IpAddr::V6(m) => u128::from(m).count_ones() as u8,
    }
}

/// The host's interface networks, one subnet per (interface, network).
pub fn host_subnets() -> Vec<Subnet> {
    let mut out: Vec<Subnet> = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            let (Some(addr), Some(mask)) = (sockaddr_ip(ifa.ifa_addr), sockaddr_ip(ifa.ifa_netmask)) else { continue };
            let interface = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
            let prefix = prefix_of(mask);
            let key = format!("{interface}/{}/{prefix}", network(addr, prefix));
            if out.iter().any(|s| format!("{}/{}/{}", s.interface, network(s.address, s.prefix), s.prefix) == key) {
                continue;
            }
            let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("lbd-subnet:{key}").as_bytes()).to_string();
            let network_id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("lbd-network:{interface}").as_bytes()).to_string();
            out.push(Subnet { id, network_id, name: format!("{interface}-{}", network(addr, prefix)), interface, address: addr, prefix });
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// # Safety
/// `sa` is null or points to a sockaddr of the family it declares.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the family field says which structure this is.
    unsafe {
        match (*sa).sa_family as i32 {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

/// Whether `ip` can be a VIP here: an address of this host (any loopback address counts, since
/// the kernel answers for all of 127.0.0.0/8).
pub fn host_owns(ip: IpAddr) -> bool {
    ip.is_loopback() || host_subnets().iter().any(|s| s.address == ip)
}

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v2.0/subnets", get(list_subnets))
        .route("/v2.0/subnets/{id}", get(show_subnet))
        .route("/v2.0/networks", get(list_networks))
}

#[expect(clippy::cmp_owned, reason = "a non-string field (ip_version=4, enable_dhcp=true) matches its JSON text exactly; the lists are a handful of items")]
fn matches(query: &[(String, String)], item: &Value) -> bool {
    query.iter().filter(|(k, _)| k != "fields" && k != "limit").all(|(k, v)| item.get(k).is_some_and(|x| x.as_str() == Some(v.as_str()) || x.to_string() == *v))
}

async fn list_subnets(_: Auth<Octavia>, RawQuery(q): RawQuery) -> Json<Value> {
    let query = query_pairs(q.as_deref());
    let items: Vec<Value> = host_subnets().iter().map(Subnet::render).filter(|s| matches(&query, s)).collect();
    Json(json!({"subnets": items}))
}

async fn show_subnet(_: Auth<Octavia>, Path(id): Path<String>) -> Result<Json<Value>, ApiError<Octavia>> {
    host_subnets()
        .iter()
        .find(|s| s.id == id || s.name == id)
        .map(|s| Json(json!({"subnet": s.render()})))
        .ok_or_else(|| ApiError::not_found("Subnet", &id))
}

async fn list_networks(_: Auth<Octavia>, RawQuery(q): RawQuery) -> Json<Value> {
    let query = query_pairs(q.as_deref());
    let mut nets: Vec<Value> = Vec::new();
    for s in host_subnets() {
        if !nets.iter().any(|n| n["id"] == s.network_id.as_str()) {
            nets.push(json!({"id": s.network_id, "name": s.interface, "subnets": [], "status": "ACTIVE", "admin_state_up": true}));
        }
        let subnets = nets.iter_mut().find(|n| n["id"] == s.network_id.as_str()).unwrap();
        subnets["subnets"].as_array_mut().unwrap().push(Value::from(s.id.clone()));
    }
    nets.retain(|n| matches(&query, n));
    Json(json!({"networks": nets}))
}
