//! `/pools/{pool_id}/members`: create, list, show, update (weight 0 drains), delete, and
//! Octavia's batch update (`PUT` on the collection: the pool's members become the list given).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::input::Input;
use super::pools::pool_of;
use super::render::{self, World};
use super::quotas::Usage;
use super::{OErr, list_response, lock_lb, new_common, update_common};
use crate::api::auth::{Auth, Principal};
use crate::api::error::Octavia;
use crate::api::{ApiState, query_pairs};
use crate::store::octavia::{MemberRec, PoolRec};
use crate::store::{Kind, Txn, TxnExt};

type A = Auth<Octavia>;

const UPDATABLE: &[&str] = &["name", "admin_state_up", "tags", "weight", "backup", "monitor_address", "monitor_port"];
const CREATE_ONLY: &[&str] = &["address", "protocol_port", "subnet_id", "project_id", "tenant_id"];

pub fn fields() -> Vec<&'static str> {
    UPDATABLE.iter().chain(CREATE_ONLY).copied().collect()
}

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/pools/{pool_id}/members", get(list).post(create).put(replace))
        .route("/pools/{pool_id}/members/{id}", get(show).put(update).delete(delete))
}

fn apply(m: &mut MemberRec, input: &Input) -> Result<(), OErr> {
    if let Some(w) = input.int("weight", 0, 256)? {
        m.weight = w as u32;
    }
    if let Some(b) = input.bool("backup")? {
        m.backup = b;
    }
    if let Some(a) = input.nullable_str("monitor_address")? {
        if let Some(addr) = &a {
            addr.parse::<std::net::IpAddr>().map_err(|_| OErr::bad_request(format!("Invalid input for field/attribute monitor_address. Value: '{addr}'. Not an IP address.")))?;
        }
        m.monitor_address = a;
    }
    if let Some(port) = input.int("monitor_port", 1, 65535)? {
        m.monitor_port = Some(port as u16);
    }
    Ok(())
}

/// What identifies a member within its pool: its address (in canonical form) and port.
fn identity(input: &Input) -> Result<(String, u16), OErr> {
    let address = input.required_str("address")?;
    let ip: std::net::IpAddr = address
        .parse()
        .map_err(|_| OErr::bad_request(format!("Invalid input for field/attribute address. Value: '{address}'. Not an IP address.")))?;
    Ok((ip.to_string(), input.required_int("protocol_port", 1, 65535)? as u16))
}

/// A new member of `pool` from `input` (validated, not yet stored).
pub fn build(tx: &mut dyn Txn, p: &Principal, input: &Input, pool: &PoolRec) -> Result<MemberRec, OErr> {
    let (address, protocol_port) = identity(input)?;
    let mut m = MemberRec {
        common: new_common(p, input)?,
        pool_id: pool.common.id.clone(),
        address,
        protocol_port,
        weight: 1,
        backup: false,
        subnet_id: input.str("subnet_id")?,
        monitor_address: None,
        monitor_port: None,
    };
    m.common.project_id = pool.common.project_id.clone();
    m.common.operating_status = "NO_MONITOR".into();
    apply(&mut m, input)?;
    let members: Vec<MemberRec> = tx.list(Kind::Member)?;
    if members.iter().any(|o| o.pool_id == m.pool_id && o.address == m.address && o.protocol_port == m.protocol_port) {
        return Err(OErr::conflict(format!("Another member on this pool is already using ip {} on protocol_port {}", m.address, m.protocol_port)));
    }
    Ok(m)
}

fn member_of(tx: &mut dyn Txn, p: &Principal, pool_id: &str, id: &str) -> Result<MemberRec, OErr> {
    tx.get::<MemberRec>(Kind::Member, id)?
        .filter(|m| m.pool_id == pool_id && p.sees(&m.common.project_id))
        .ok_or_else(|| OErr::not_found("Member", id))
}

async fn create(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(pool_id): Path<String>, body: Bytes) -> Result<(StatusCode, Json<Value>), OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "member", &fields())?;
    let m = s.write(|tx| -> Result<MemberRec, OErr> {
        let pool = pool_of(tx, &p, &pool_id)?;
        let lb = lock_lb(tx, &p, &pool.loadbalancer_id)?;
        let usage = Usage::before(tx, &lb.common.project_id)?;
        let m = build(tx, &p, &input, &pool)?;
        tx.put(Kind::Member, &m.common.id, &m)?;
        usage.check(tx)?;
        Ok(m)
    })?;
    tracing::info!(member = %m.common.id, address = %m.address, port = m.protocol_port, "member created");
    Ok((StatusCode::CREATED, Json(json!({"member": render::member(&m)}))))
}

/// `PUT /pools/{pool_id}/members`: members of the list that match an existing member by address
/// and port update it, the others are created, and existing members the list leaves out are
/// deleted unless `?additive_only=true`. Every entry is validated before anything changes (one
/// transaction); 202 as Octavia answers, the new state visible to GETs at once.
async fn replace(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(pool_id): Path<String>, RawQuery(q): RawQuery, body: Bytes) -> Result<StatusCode, OErr> {
    p.require_write()?;
    let additive_only = super::query_bool(&query_pairs(q.as_deref()), "additive_only")?.unwrap_or(false);
    let root: Value = serde_json::from_slice(&body).map_err(|e| OErr::bad_request(format!("Invalid JSON body: {e}")))?;
    let root = Input::from_value(root, "members", &["members"])?;
    if !root.has("members") {
        return Err(OErr::bad_request("Missing mandatory field: members"));
    }
    let inputs = root.objects("members")?.into_iter().map(|m| Input::from_value(m, "members", &fields())).collect::<Result<Vec<_>, _>>()?;
    let (created, updated, deleted) = s.write(|tx| -> Result<(usize, usize, usize), OErr> {
        let pool = pool_of(tx, &p, &pool_id)?;
        let lb = lock_lb(tx, &p, &pool.loadbalancer_id)?;
        let usage = Usage::before(tx, &lb.common.project_id)?;
        let existing: Vec<MemberRec> = tx.list::<MemberRec>(Kind::Member)?.into_iter().filter(|m| m.pool_id == pool_id).collect();
        let mut listed: Vec<(String, u16)> = Vec::with_capacity(inputs.len());
        let (mut created, mut updated) = (0, 0);
        for (i, input) in inputs.iter().enumerate() {
            let entry = |e: OErr| OErr::new(e.status, format!("members[{i}]: {}", e.message));
            let key = identity(input).map_err(entry)?;
            if listed.contains(&key) {
                return Err(OErr::bad_request(format!("members[{i}]: address {} with protocol_port {} is in the list more than once", key.0, key.1)));
            }
            match existing.iter().find(|m| m.address == key.0 && m.protocol_port == key.1) {
                Some(old) => {
                    let mut m = old.clone();
                    update_common(&mut m.common, input).and_then(|()| apply(&mut m, input)).map_err(entry)?;
                    tx.put(Kind::Member, &m.common.id, &m)?;
                    updated += 1;
                }
                None => {
                    let m = build(tx, &p, input, &pool).map_err(entry)?;
                    tx.put(Kind::Member, &m.common.id, &m)?;
                    created += 1;
                }
            }
            listed.push(key);
        }
        let mut deleted = 0;
        for m in existing.iter().filter(|m| !additive_only && !listed.iter().any(|(a, port)| *a == m.address && *port == m.protocol_port)) {
            tx.delete(Kind::Member, &m.common.id)?;
            deleted += 1;
        }
        usage.check(tx)?;
        Ok((created, updated, deleted))
    })?;
    tracing::info!(pool = %pool_id, created, updated, deleted, additive_only, "pool members replaced");
    Ok(StatusCode::ACCEPTED)
}

async fn list(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(pool_id): Path<String>, RawQuery(q): RawQuery) -> Result<Json<Value>, OErr> {
    let w = s.read(|tx| -> Result<World, OErr> {
        pool_of(tx, &p, &pool_id)?;
        Ok(World::load(tx)?)
    })?;
    let items = w.members.iter().filter(|m| m.pool_id == pool_id && p.sees(&m.common.project_id)).map(render::member).collect();
    Ok(Json(list_response(items, &query_pairs(q.as_deref()), "members", &s.public_url)?))
}

async fn show(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path((pool_id, id)): Path<(String, String)>) -> Result<Json<Value>, OErr> {
    let m = s.read(|tx| member_of(tx, &p, &pool_id, &id))?;
    Ok(Json(json!({"member": render::member(&m)})))
}

async fn update(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path((pool_id, id)): Path<(String, String)>, body: Bytes) -> Result<Json<Value>, OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "member", UPDATABLE)?;
    let m = s.write(|tx| -> Result<MemberRec, OErr> {
        let mut m = member_of(tx, &p, &pool_id, &id)?;
        let pool = pool_of(tx, &p, &pool_id)?;
        lock_lb(tx, &p, &pool.loadbalancer_id)?;
        update_common(&mut m.common, &input)?;
        apply(&mut m, &input)?;
        tx.put(Kind::Member, &id, &m)?;
        Ok(m)
    })?;
    Ok(Json(json!({"member": render::member(&m)})))
}

async fn delete(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path((pool_id, id)): Path<(String, String)>) -> Result<StatusCode, OErr> {
    p.require_write()?;
    s.write(|tx| -> Result<(), OErr> {
        member_of(tx, &p, &pool_id, &id)?;
        let pool = pool_of(tx, &p, &pool_id)?;
        lock_lb(tx, &p, &pool.loadbalancer_id)?;
        tx.delete(Kind::Member, &id)?;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
