//! `/loadbalancers`: create (also fully populated, with nested listeners, pools, members and
//! health monitors in one call), list, show, update, delete (`?cascade=True`), stats, status,
//! failover.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::input::Input;
use super::render::{self, World};
use super::quotas::Usage;
use super::{OErr, list_response, lock_lb, new_common, update_common, visible};
use crate::api::auth::{Auth, Principal};
use crate::api::error::Octavia;
use crate::api::neutron::{host_owns, host_subnets};
use crate::api::{ApiState, query_pairs};
use crate::store::octavia::LoadBalancerRec;
use crate::store::{Kind, Txn, TxnExt};

type A = Auth<Octavia>;

const FIELDS: &[&str] = &[
    "name", "description", "admin_state_up", "vip_address", "vip_subnet_id", "vip_network_id", "vip_port_id",
    "vip_qos_policy_id", "provider", "flavor_id", "availability_zone", "project_id", "tenant_id", "tags", "listeners", "pools",
];
const UPDATABLE: &[&str] = &["name", "description", "admin_state_up", "vip_qos_policy_id", "tags"];

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/loadbalancers", get(list).post(create))
        .route("/loadbalancers/{id}", get(show).put(update).delete(delete))
        .route("/loadbalancers/{id}/stats", get(stats))
        .route("/loadbalancers/{id}/status", get(status))
        .route("/loadbalancers/{id}/failover", axum::routing::put(failover))
}

/// `openstack loadbalancer failover`: lbd runs no amphorae to replace, so a failover rebuilds
/// the load balancer's data-plane state from the store (certificates read anew, TLS contexts
/// with new session-ticket keys, member pools and their connections) without closing its
/// listening sockets or established connections. Admin only, as in Octavia; 202, then
/// `PENDING_UPDATE` until the controller has applied it.
async fn failover(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<StatusCode, OErr> {
    p.require_write()?;
    if !p.is_admin() {
        return Err(OErr::forbidden());
    }
    s.write(|tx| -> Result<(), OErr> {
        let mut lb = lock_lb(tx, &p, &id)?;
        lb.failovers += 1;
        tx.put(Kind::LoadBalancer, &id, &lb)?;
        Ok(())
    })?;
    Ok(StatusCode::ACCEPTED)
}

fn lb_of(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<LoadBalancerRec, OErr> {
    visible(tx, p, Kind::LoadBalancer, "Load Balancer", id, |l: &LoadBalancerRec| &l.common)
}

/// The VIP: `vip_address` if given (it must be this host's), else the host address of the named
/// subnet or network.
fn vip(input: &Input) -> Result<(String, Option<String>, Option<String>), OErr> {
    if input.str("vip_port_id")?.is_some() {
        return Err(OErr::bad_request("vip_port_id: lbd has no Neutron ports; give vip_address and/or vip_subnet_id"));
    }
    let subnets = host_subnets();
    let subnet = match input.str("vip_subnet_id")? {
        Some(id) => Some(subnets.iter().find(|s| s.id == id || s.name == id).ok_or_else(|| OErr::bad_request(format!("Subnet {id} not found.")))?),
        None => None,
    };
    let network = input.str("vip_network_id")?;
    let net_subnet = match &network {
        Some(n) => Some(subnets.iter().find(|s| &s.network_id == n).ok_or_else(|| OErr::bad_request(format!("Network {n} not found.")))?),
        None => None,
    };
    let address = match input.str("vip_address")? {
        Some(a) => {
            let ip: std::net::IpAddr = a.parse().map_err(|_| OErr::bad_request(format!("Invalid input for field/attribute vip_address. Value: '{a}'. Not an IP address.")))?;
            if !host_owns(ip) {
                return Err(OErr::bad_request(format!(
                    "vip_address {ip} is not an address of this host; lbd serves VIPs on its own addresses (see GET /v2.0/subnets)"
                )));
            }
            if let Some(s) = subnet.filter(|s| !s.contains(ip) && !ip.is_loopback()) {
                return Err(OErr::bad_request(format!("vip_address {ip} is not in subnet {} ({})", s.id, s.cidr())));
            }
            ip.to_string()
        }
        None => subnet
            .or(net_subnet)
            .map(|s| s.address.to_string())
            .ok_or_else(|| OErr::bad_request("One of vip_address, vip_subnet_id or vip_network_id is required."))?,
    };
    let subnet_id = subnet.or(net_subnet).map(|s| s.id.clone());
    let network_id = subnet.or(net_subnet).map(|s| s.network_id.clone()).or(network);
    Ok((address, subnet_id, network_id))
}

async fn create(State(s): State<Arc<ApiState>>, Auth(p, _): A, body: Bytes) -> Result<(StatusCode, Json<Value>), OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "loadbalancer", FIELDS)?;
    if let Some(provider) = input.str("provider")?
        && !super::providers::PROVIDERS.contains(&provider.as_str())
    {
        return Err(OErr::bad_request(format!("Provider '{provider}' is not enabled.")));
    }
    if input.str("flavor_id")?.is_some() {
        return Err(OErr::bad_request("flavor_id: lbd has no flavors"));
    }
    let (vip_address, vip_subnet_id, vip_network_id) = vip(&input)?;
    let lb = LoadBalancerRec {
        common: new_common(&p, &input)?,
        vip_address,
        vip_subnet_id,
        vip_network_id,
        vip_port_id: None,
        vip_qos_policy_id: input.str("vip_qos_policy_id")?,
        provider: "lbd".into(),
        flavor_id: None,
        availability_zone: input.str("availability_zone")?,
        failovers: 0,
    };
    let out = s.write(|tx| -> Result<Value, OErr> {
        let usage = Usage::before(tx, &lb.common.project_id)?;
        tx.put(Kind::LoadBalancer, &lb.common.id, &lb)?;
        super::pools::create_nested_lb_children(tx, &s, &p, &lb, &input)?;
        usage.check(tx)?;
        let w = World::load(tx)?;
        Ok(render::loadbalancer(&w, &lb))
    })?;
    tracing::info!(loadbalancer = %lb.common.id, vip = %lb.vip_address, "load balancer created");
    Ok((StatusCode::CREATED, Json(json!({"loadbalancer": out}))))
}

async fn list(State(s): State<Arc<ApiState>>, Auth(p, _): A, RawQuery(q): RawQuery) -> Result<Json<Value>, OErr> {
    let w = s.read(|tx| World::load(tx).map_err(OErr::from))?;
    let items = w.lbs.iter().filter(|l| p.sees(&l.common.project_id)).map(|l| render::loadbalancer(&w, l)).collect();
    Ok(Json(list_response(items, &query_pairs(q.as_deref()), "loadbalancers", &s.public_url)?))
}

async fn show(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, OErr> {
    s.read(|tx| {
        let lb = lb_of(tx, &p, &id)?;
        let w = World::load(tx)?;
        Ok(Json(json!({"loadbalancer": render::loadbalancer(&w, &lb)})))
    })
}

async fn update(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, body: Bytes) -> Result<Json<Value>, OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "loadbalancer", UPDATABLE)?;
    let out = s.write(|tx| -> Result<Value, OErr> {
        let mut lb = lock_lb(tx, &p, &id)?;
        update_common(&mut lb.common, &input)?;
        if let Some(v) = input.nullable_str("vip_qos_policy_id")? {
            lb.vip_qos_policy_id = v;
        }
        tx.put(Kind::LoadBalancer, &id, &lb)?;
        Ok(render::loadbalancer(&World::load(tx)?, &lb))
    })?;
    Ok(Json(json!({"loadbalancer": out})))
}

async fn delete(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<StatusCode, OErr> {
    p.require_write()?;
    let cascade = super::query_bool(&query_pairs(q.as_deref()), "cascade")?.unwrap_or(false);
    s.write(|tx| -> Result<(), OErr> {
        lock_lb(tx, &p, &id)?;
        let w = World::load(tx)?;
        let listeners: Vec<&str> = w.listeners.iter().filter(|l| l.loadbalancer_id == id).map(|l| l.common.id.as_str()).collect();
        let pools: Vec<&str> = w.pools.iter().filter(|x| x.loadbalancer_id == id).map(|x| x.common.id.as_str()).collect();
        if !cascade && (!listeners.is_empty() || !pools.is_empty()) {
            return Err(OErr::bad_request(format!("Cannot delete Load Balancer {id} - it has children")));
        }
        for pool in &pools {
            for m in w.members.iter().filter(|m| m.pool_id == *pool) {
                tx.delete(Kind::Member, &m.common.id)?;
            }
            for h in w.monitors.iter().filter(|h| h.pool_id == *pool) {
                tx.delete(Kind::HealthMonitor, &h.common.id)?;
            }
            tx.delete(Kind::Pool, pool)?;
        }
        for l in &listeners {
            for x in w.l7policies.iter().filter(|x| x.listener_id == *l) {
                super::l7::delete_policy(tx, &x.common.id)?;
            }
            tx.delete(Kind::Listener, l)?;
        }
        tx.delete(Kind::LoadBalancer, &id)?;
        Ok(())
    })?;
    tracing::info!(loadbalancer = %id, cascade, "load balancer deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, OErr> {
    let listeners: Vec<String> = s.read(|tx| -> Result<_, OErr> {
        lb_of(tx, &p, &id)?;
        Ok(World::load(tx)?.listeners.iter().filter(|l| l.loadbalancer_id == id).map(|l| l.common.id.clone()).collect())
    })?;
    let m = &s.controller.daemon.metrics;
    let total = listeners.iter().map(|l| m.listener_stats(l)).fold(Default::default(), |a: crate::metrics::ListenerStats, b| a + b);
    Ok(Json(json!({"stats": total})))
}

async fn status(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, OErr> {
    s.read(|tx| {
        let lb = lb_of(tx, &p, &id)?;
        Ok(Json(render::status_tree(&World::load(tx)?, &lb)))
    })
}
