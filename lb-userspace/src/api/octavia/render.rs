//! Octavia objects as clients see them: the stored record plus derived relationship lists
//! (`listeners`, `pools`, `members`, `loadbalancers`, ...) and `tenant_id`.

use serde::Serialize;
use serde_json::{Value, json};

use crate::store::octavia::{HealthMonitorRec, L7PolicyRec, L7RuleRec, ListenerRec, LoadBalancerRec, MemberRec, PoolRec};
use crate::store::{Kind, StoreError, Txn, TxnExt};

/// Every Octavia object, loaded once per request.
pub struct World {
    pub lbs: Vec<LoadBalancerRec>,
    pub listeners: Vec<ListenerRec>,
    pub pools: Vec<PoolRec>,
    pub members: Vec<MemberRec>,
    pub monitors: Vec<HealthMonitorRec>,
    pub l7policies: Vec<L7PolicyRec>,
    pub l7rules: Vec<L7RuleRec>,
}

impl World {
    pub fn load(tx: &mut dyn Txn) -> Result<Self, StoreError> {
        Ok(World {
            lbs: tx.list(Kind::LoadBalancer)?,
            listeners: tx.list(Kind::Listener)?,
            pools: tx.list(Kind::Pool)?,
            members: tx.list(Kind::Member)?,
            monitors: tx.list(Kind::HealthMonitor)?,
            l7policies: tx.list(Kind::L7Policy)?,
            l7rules: tx.list(Kind::L7Rule)?,
        })
    }

    /// Listeners whose default pool is `pool_id`.
    pub fn pool_listeners(&self, pool_id: &str) -> Vec<&ListenerRec> {
        self.listeners.iter().filter(|l| l.default_pool_id.as_deref() == Some(pool_id)).collect()
    }
}

fn ids<'a>(it: impl Iterator<Item = &'a str>) -> Value {
    Value::Array(it.map(|id| json!({"id": id})).collect())
}

fn base<T: Serialize>(rec: &T, project_id: &str) -> Value {
    let mut v = serde_json::to_value(rec).expect("records serialize");
    v["tenant_id"] = Value::from(project_id);
    v
}

pub fn loadbalancer(w: &World, lb: &LoadBalancerRec) -> Value {
    let mut v = base(lb, &lb.common.project_id);
    if let Some(o) = v.as_object_mut() {
        o.remove("failovers");
    }
    let id = lb.common.id.as_str();
    v["listeners"] = ids(w.listeners.iter().filter(|l| l.loadbalancer_id == id).map(|l| l.common.id.as_str()));
    v["pools"] = ids(w.pools.iter().filter(|p| p.loadbalancer_id == id).map(|p| p.common.id.as_str()));
    v
}

pub fn listener(w: &World, l: &ListenerRec) -> Value {
    let mut v = base(l, &l.common.project_id);
    v["loadbalancers"] = json!([{"id": l.loadbalancer_id}]);
    v["l7policies"] = ids(w.l7policies.iter().filter(|x| x.listener_id == l.common.id).map(|x| x.common.id.as_str()));
    v
}

pub fn l7policy(w: &World, x: &L7PolicyRec) -> Value {
    let mut v = base(x, &x.common.project_id);
    v["rules"] = ids(w.l7rules.iter().filter(|r| r.l7policy_id == x.common.id).map(|r| r.common.id.as_str()));
    v
}

pub fn l7rule(r: &L7RuleRec) -> Value {
    base(r, &r.common.project_id)
}

pub fn pool(w: &World, p: &PoolRec) -> Value {
    let mut v = base(p, &p.common.project_id);
    let id = p.common.id.as_str();
    v["loadbalancers"] = json!([{"id": p.loadbalancer_id}]);
    let listeners = w.pool_listeners(id);
    v["listeners"] = ids(listeners.iter().map(|l| l.common.id.as_str()));
    v["listener_id"] = listeners.first().map(|l| Value::from(l.common.id.clone())).unwrap_or(Value::Null);
    v["members"] = ids(w.members.iter().filter(|m| m.pool_id == id).map(|m| m.common.id.as_str()));
    v["healthmonitor_id"] = w.monitors.iter().find(|h| h.pool_id == id).map(|h| Value::from(h.common.id.clone())).unwrap_or(Value::Null);
    v
}

pub fn member(m: &MemberRec) -> Value {
    base(m, &m.common.project_id)
}

pub fn monitor(h: &HealthMonitorRec) -> Value {
    let mut v = base(h, &h.common.project_id);
    v["pools"] = json!([{"id": h.pool_id}]);
    v
}

/// `GET /loadbalancers/{id}/status`: the status tree.
pub fn status_tree(w: &World, lb: &LoadBalancerRec) -> Value {
    let st = |c: &crate::store::octavia::Common| json!({"id": c.id, "name": c.name, "provisioning_status": c.provisioning_status, "operating_status": c.operating_status});
    let pool_tree = |p: &PoolRec| {
        let mut v = st(&p.common);
        v["members"] = Value::Array(
            w.members
                .iter()
                .filter(|m| m.pool_id == p.common.id)
                .map(|m| {
                    let mut mv = st(&m.common);
                    mv["address"] = Value::from(m.address.clone());
                    mv["protocol_port"] = Value::from(m.protocol_port);
                    mv
                })
                .collect(),
        );
        if let Some(h) = w.monitors.iter().find(|h| h.pool_id == p.common.id) {
            let mut hv = st(&h.common);
            hv["type"] = Value::from(h.kind.clone());
            v["health_monitor"] = hv;
        }
        v
    };
    let listeners: Vec<Value> = w
        .listeners
        .iter()
        .filter(|l| l.loadbalancer_id == lb.common.id)
        .map(|l| {
            let mut v = st(&l.common);
            v["pools"] = Value::Array(w.pools.iter().filter(|p| l.default_pool_id.as_deref() == Some(p.common.id.as_str())).map(&pool_tree).collect());
            v
        })
        .collect();
    let mut root = st(&lb.common);
    root["listeners"] = Value::Array(listeners);
    json!({"statuses": {"loadbalancer": root}})
}
