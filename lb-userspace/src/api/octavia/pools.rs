//! `/pools` and `/healthmonitors`, and the nested children of a fully populated load balancer
//! create.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::input::Input;
use super::listeners::{compatible, incompatible};
use super::render::{self, World};
use super::quotas::Usage;
use super::{OErr, list_response, lock_lb, new_common, update_common, visible};
use crate::api::auth::{Auth, Principal};
use crate::api::error::Octavia;
use crate::api::{ApiState, query_pairs};
use crate::store::octavia::{HealthMonitorRec, ListenerRec, LoadBalancerRec, PENDING_UPDATE, PoolRec};
use crate::desired;
use crate::store::{Kind, Txn, TxnExt};

type A = Auth<Octavia>;

const PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "TCP", "UDP", "PROXY", "PROXYV2", "SCTP"];
const ALGORITHMS: &[&str] = &["ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT"];
const UPDATABLE: &[&str] = &[
    "name", "description", "admin_state_up", "tags", "lb_algorithm", "session_persistence", "tls_enabled",
    "tls_container_ref", "ca_tls_container_ref", "crl_container_ref", "tls_versions", "tls_ciphers", "alpn_protocols",
];
const CREATE_ONLY: &[&str] = &["protocol", "listener_id", "loadbalancer_id", "project_id", "tenant_id", "members", "healthmonitor"];
const HM_TYPES: &[&str] = &["HTTP", "HTTPS", "PING", "TCP", "TLS-HELLO", "UDP-CONNECT", "SCTP"];
const HM_UPDATABLE: &[&str] = &[
    "name", "admin_state_up", "tags", "delay", "timeout", "max_retries", "max_retries_down", "http_method", "url_path",
    "expected_codes", "http_version", "domain_name",
];

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/pools", get(list).post(create))
        .route("/pools/{id}", get(show).put(update).delete(delete))
        .route("/healthmonitors", get(list_hm).post(create_hm))
        .route("/healthmonitors/{id}", get(show_hm).put(update_hm).delete(delete_hm))
}

fn fields() -> Vec<&'static str> {
    UPDATABLE.iter().chain(CREATE_ONLY).copied().collect()
}

pub fn pool_of(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<PoolRec, OErr> {
    visible(tx, p, Kind::Pool, "Pool", id, |x: &PoolRec| &x.common)
}

fn apply(pool: &mut PoolRec, input: &Input) -> Result<(), OErr> {
    if let Some(a) = input.choice("lb_algorithm", ALGORITHMS)? {
        pool.lb_algorithm = a;
    }
    if let Some(v) = input.raw("session_persistence") {
        pool.session_persistence = if v.is_null() { None } else { Some(session_persistence(v)?) };
    }
    if let Some(v) = input.bool("tls_enabled")? {
        pool.tls_enabled = v;
    }
    for (name, slot) in [
        ("tls_container_ref", &mut pool.tls_container_ref),
        ("ca_tls_container_ref", &mut pool.ca_tls_container_ref),
        ("crl_container_ref", &mut pool.crl_container_ref),
        ("tls_ciphers", &mut pool.tls_ciphers),
    ] {
        if let Some(v) = input.nullable_str(name)? {
            *slot = v;
        }
    }
    if let Some(v) = input.strs("tls_versions")? {
        pool.tls_versions = v;
    }
    if let Some(v) = input.strs("alpn_protocols")? {
        pool.alpn_protocols = v;
    }
    Ok(())
}

/// A pool's `session_persistence` checked field by field, with every Octavia attribute present
/// (`null` where not set).
fn session_persistence(v: &serde_json::Value) -> Result<serde_json::Value, OErr> {
    let sp = Input::from_value(v.clone(), "session_persistence", &["type", "cookie_name", "persistence_timeout", "persistence_granularity"])?;
    let kind = sp
        .choice("type", &["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"])?
        .ok_or_else(|| OErr::bad_request("Invalid input for field/attribute type. Mandatory field missing."))?;
    let cookie = sp.str("cookie_name")?;
    match (&*kind, &cookie) {
        ("APP_COOKIE", None) => return Err(OErr::bad_request("Field 'cookie_name' must be provided when using the APP_COOKIE session persistence type.")),
        ("APP_COOKIE", Some(name)) if name.is_empty() || name.len() > 255 || !name.bytes().all(cookie_name_byte) => {
            return Err(OErr::bad_request(format!(
                "Invalid input for field/attribute cookie_name. Value: '{name}'. A cookie name is 1 to 255 visible ASCII characters without separators ( ) < > @ , ; : \\ \" / [ ] ? = {{ }}."
            )));
        }
        ("APP_COOKIE", _) => {}
        (_, Some(_)) => return Err(OErr::bad_request(format!("Field 'cookie_name' should not be specified when using the {kind} session persistence type."))),
        _ => {}
    }
    let timeout = sp.int("persistence_timeout", 1, i32::MAX as i64)?;
    let granularity = sp.str("persistence_granularity")?;
    if let Some(g) = &granularity
        && desired::netmask_prefix(g).is_none()
    {
        return Err(OErr::bad_request(format!(
            "Invalid input for field/attribute persistence_granularity. Value: '{g}'. An IPv4 netmask is expected (contiguous ones, as 255.255.255.0)."
        )));
    }
    Ok(serde_json::json!({"type": kind, "cookie_name": cookie, "persistence_timeout": timeout, "persistence_granularity": granularity}))
}

/// A byte RFC 6265 allows in a cookie name (a token: visible ASCII without separators).
fn cookie_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

/// What lbd's data plane can do with a pool; everything else is refused with the reason. TLS
/// references are resolved and the member TLS settings built now, so bad input is a 400 here.
fn validate(tx: &mut dyn Txn, s: &ApiState, pool: &PoolRec) -> Result<(), OErr> {
    if !matches!(pool.protocol.as_str(), "HTTP" | "HTTPS" | "TCP" | "UDP" | "PROXY" | "PROXYV2") {
        return Err(OErr::bad_request(format!("protocol {}: lbd does not forward to {} pools yet (supported: HTTP, HTTPS, TCP, UDP, PROXY, PROXYV2)", pool.protocol, pool.protocol)));
    }
    if pool.protocol == "UDP" && pool.lb_algorithm == "LEAST_CONNECTIONS" {
        return Err(OErr::bad_request(
            "lb_algorithm LEAST_CONNECTIONS: UDP pools are forwarded by XDP, which places flows by hashing and does not count member connections (use ROUND_ROBIN, SOURCE_IP or SOURCE_IP_PORT)",
        ));
    }
    if let Some(sp) = &pool.session_persistence {
        let kind = sp["type"].as_str().unwrap_or_default();
        if kind != "SOURCE_IP" && pool.protocol != "HTTP" {
            return Err(OErr::bad_request(format!(
                "session_persistence: type {kind} needs an HTTP pool, where lbd reads and sets cookies; {} pools support SOURCE_IP",
                pool.protocol
            )));
        }
        if pool.protocol != "UDP" && (!sp["persistence_timeout"].is_null() || !sp["persistence_granularity"].is_null()) {
            return Err(OErr::bad_request("session_persistence: persistence_timeout and persistence_granularity is only for UDP and SCTP protocol pools."));
        }
    }
    if pool.crl_container_ref.is_some() && pool.ca_tls_container_ref.is_none() {
        return Err(OErr::bad_request("crl_container_ref: a CRL needs ca_tls_container_ref (member certificates are only checked against a CA)"));
    }
    for version in &pool.tls_versions {
        if desired::tls_version(version).is_none() {
            return Err(OErr::bad_request(format!("Invalid input for field/attribute tls_versions. Value: '{version}'. lbd supports TLSv1.2 and TLSv1.3.")));
        }
    }
    if let Some(name) = pool.common.tags.iter().find_map(|t| t.strip_prefix(desired::SERVER_NAME_TAG))
        && rustls_pki_types::DnsName::try_from(name).is_err()
    {
        return Err(OErr::bad_request(format!("tags: {}{name} is not a valid DNS name", desired::SERVER_NAME_TAG)));
    }
    // References are resolved even while tls_enabled is false, so they are usable when it is set.
    let mut check = pool.clone();
    check.tls_enabled = true;
    let tls = desired::pool_tls(tx, &s.kek, &check, Some(&pool.common.project_id)).map_err(|e| OErr::bad_request(format!("Could not retrieve certificate: {e}")))?;
    if let Some(tls) = tls {
        crate::tls::client::member_tls(&tls, pool.protocol == "HTTP", false).map_err(|e| OErr::bad_request(e.to_string()))?;
    }
    Ok(())
}

/// A new pool on `lb` from `input`, stored, with its nested members and health monitor; made
/// the default pool of `listener` when given.
pub fn create_in(tx: &mut dyn Txn, s: &ApiState, p: &Principal, input: &Input, lb: &LoadBalancerRec, listener: Option<&mut ListenerRec>) -> Result<PoolRec, OErr> {
    let mut pool = PoolRec {
        common: new_common(p, input)?,
        loadbalancer_id: lb.common.id.clone(),
        protocol: input.choice("protocol", PROTOCOLS)?.ok_or_else(|| OErr::bad_request("Invalid input for field/attribute protocol. Mandatory field missing."))?,
        lb_algorithm: input.choice("lb_algorithm", ALGORITHMS)?.ok_or_else(|| OErr::bad_request("Invalid input for field/attribute lb_algorithm. Mandatory field missing."))?,
        session_persistence: None,
        tls_enabled: false,
        tls_container_ref: None,
        ca_tls_container_ref: None,
        crl_container_ref: None,
        tls_versions: vec![],
        tls_ciphers: None,
        alpn_protocols: vec![],
    };
    pool.common.project_id = lb.common.project_id.clone();
    apply(&mut pool, input)?;
    validate(tx, s, &pool)?;
    if let Some(l) = listener {
        if let Some(existing) = &l.default_pool_id {
            return Err(OErr::conflict(format!("Listener {} already has default pool {existing}.", l.common.id)));
        }
        if !compatible(&l.protocol, &pool.protocol) {
            return Err(incompatible(&l.protocol, &pool.protocol));
        }
        l.default_pool_id = Some(pool.common.id.clone());
        l.common.provisioning_status = PENDING_UPDATE.into();
        tx.put(Kind::Listener, &l.common.id, &*l)?;
    }
    tx.put(Kind::Pool, &pool.common.id, &pool)?;
    for m in input.objects("members")? {
        let mi = Input::from_value(m, "members", &super::members::fields())?;
        let member = super::members::build(tx, p, &mi, &pool)?;
        tx.put(Kind::Member, &member.common.id, &member)?;
    }
    if let Some(h) = input.raw("healthmonitor").filter(|h| !h.is_null()) {
        let hi = Input::from_value(h.clone(), "healthmonitor", &hm_fields())?;
        let hm = build_hm(tx, p, &hi, &pool)?;
        tx.put(Kind::HealthMonitor, &hm.common.id, &hm)?;
    }
    Ok(pool)
}

/// The `pools` and `listeners` of a fully populated load balancer create. Pools come first, so
/// a listener's `default_pool: {"name": ...}` can name one of them; a full `default_pool`
/// object is created as a new pool.
pub fn create_nested_lb_children(tx: &mut dyn Txn, s: &ApiState, p: &Principal, lb: &LoadBalancerRec, input: &Input) -> Result<(), OErr> {
    let mut by_name: HashMap<String, String> = HashMap::new();
    for pv in input.objects("pools")? {
        let pi = Input::from_value(pv, "pools", &fields())?;
        let pool = create_in(tx, s, p, &pi, lb, None)?;
        by_name.insert(pool.common.name.clone(), pool.common.id.clone());
    }
    for lv in input.objects("listeners")? {
        let Value::Object(mut obj) = lv else { return Err(OErr::bad_request("listeners: expected a list of objects")) };
        let nested_pool = obj.remove("default_pool");
        let li = Input::from_value(Value::Object(obj), "listeners", &super::listeners::fields())?;
        if !li.objects("l7policies")?.is_empty() {
            return Err(OErr::bad_request("listeners.l7policies: create L7 policies with POST /v2.0/lbaas/l7policies after the load balancer"));
        }
        let mut l = super::listeners::build(tx, s, p, &li, lb)?;
        tx.put(Kind::Listener, &l.common.id, &l)?;
        match nested_pool {
            None | Some(Value::Null) => {}
            Some(Value::Object(pool)) if pool.len() == 1 && pool.contains_key("name") => {
                let name = pool["name"].as_str().unwrap_or("");
                let id = by_name.get(name).ok_or_else(|| OErr::bad_request(format!("default_pool: no pool named {name:?} in this request")))?;
                l.default_pool_id = Some(id.clone());
                tx.put(Kind::Listener, &l.common.id, &l)?;
            }
            Some(pool) => {
                let pi = Input::from_value(pool, "default_pool", &fields())?;
                create_in(tx, s, p, &pi, lb, Some(&mut l))?;
            }
        }
    }
    Ok(())
}

async fn create(State(s): State<Arc<ApiState>>, Auth(p, _): A, body: Bytes) -> Result<(StatusCode, Json<Value>), OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "pool", &fields())?;
    let out = s.write(|tx| -> Result<Value, OErr> {
        let mut listener = match input.str("listener_id")? {
            Some(id) => Some(visible(tx, &p, Kind::Listener, "Listener", &id, |l: &ListenerRec| &l.common)?),
            None => None,
        };
        let lb_id = match (input.str("loadbalancer_id")?, &listener) {
            (Some(lb), Some(l)) if lb != l.loadbalancer_id => return Err(OErr::bad_request("listener_id and loadbalancer_id name different load balancers")),
            (Some(lb), _) => lb,
            (None, Some(l)) => l.loadbalancer_id.clone(),
            (None, None) => return Err(OErr::bad_request("Either listener_id or loadbalancer_id must be specified.")),
        };
        let lb = lock_lb(tx, &p, &lb_id)?;
        let usage = Usage::before(tx, &lb.common.project_id)?;
        let pool = create_in(tx, &s, &p, &input, &lb, listener.as_mut())?;
        usage.check(tx)?;
        tracing::info!(pool = %pool.common.id, "pool created");
        Ok(render::pool(&World::load(tx)?, &pool))
    })?;
    Ok((StatusCode::CREATED, Json(json!({"pool": out}))))
}

async fn list(State(s): State<Arc<ApiState>>, Auth(p, _): A, RawQuery(q): RawQuery) -> Result<Json<Value>, OErr> {
    let w = s.read(|tx| World::load(tx).map_err(OErr::from))?;
    let items = w.pools.iter().filter(|x| p.sees(&x.common.project_id)).map(|x| render::pool(&w, x)).collect();
    Ok(Json(list_response(items, &query_pairs(q.as_deref()), "pools", &s.public_url)?))
}

async fn show(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, OErr> {
    s.read(|tx| {
        let pool = pool_of(tx, &p, &id)?;
        Ok(Json(json!({"pool": render::pool(&World::load(tx)?, &pool)})))
    })
}

async fn update(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, body: Bytes) -> Result<Json<Value>, OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "pool", UPDATABLE)?;
    let out = s.write(|tx| -> Result<Value, OErr> {
        let mut pool = pool_of(tx, &p, &id)?;
        lock_lb(tx, &p, &pool.loadbalancer_id)?;
        update_common(&mut pool.common, &input)?;
        apply(&mut pool, &input)?;
        validate(tx, &s, &pool)?;
        tx.put(Kind::Pool, &id, &pool)?;
        Ok(render::pool(&World::load(tx)?, &pool))
    })?;
    Ok(Json(json!({"pool": out})))
}

async fn delete(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<StatusCode, OErr> {
    p.require_write()?;
    s.write(|tx| -> Result<(), OErr> {
        let pool = pool_of(tx, &p, &id)?;
        lock_lb(tx, &p, &pool.loadbalancer_id)?;
        let w = World::load(tx)?;
        for mut l in w.pool_listeners(&id).into_iter().cloned() {
            l.default_pool_id = None;
            l.common.provisioning_status = PENDING_UPDATE.into();
            tx.put(Kind::Listener, &l.common.id, &l)?;
        }
        for m in w.members.iter().filter(|m| m.pool_id == id) {
            tx.delete(Kind::Member, &m.common.id)?;
        }
        for h in w.monitors.iter().filter(|h| h.pool_id == id) {
            tx.delete(Kind::HealthMonitor, &h.common.id)?;
        }
        tx.delete(Kind::Pool, &id)?;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

fn hm_fields() -> Vec<&'static str> {
    HM_UPDATABLE.iter().chain(&["pool_id", "type", "project_id", "tenant_id"]).copied().collect()
}

fn apply_hm(h: &mut HealthMonitorRec, input: &Input) -> Result<(), OErr> {
    if let Some(v) = input.int("delay", 0, i32::MAX as i64)? {
        h.delay = v as u64;
    }
    if let Some(v) = input.int("timeout", 0, i32::MAX as i64)? {
        h.timeout = v as u64;
    }
    if let Some(v) = input.int("max_retries", 1, 10)? {
        h.max_retries = v as u32;
    }
    if let Some(v) = input.int("max_retries_down", 1, 10)? {
        h.max_retries_down = v as u32;
    }
    if let Some(v) = input.choice("http_method", &["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"])? {
        h.http_method = Some(v);
    }
    if let Some(v) = input.str("url_path")? {
        if !v.starts_with('/') {
            return Err(OErr::bad_request(format!("Invalid input for field/attribute url_path. Value: '{v}'. Must start with '/'.")));
        }
        h.url_path = Some(v);
    }
    if let Some(v) = input.str("expected_codes")? {
        lb_common::model::HttpCheck::parse_codes(&v).map_err(|e| OErr::bad_request(format!("Invalid input for field/attribute expected_codes. Value: '{v}'. {e}.")))?;
        h.expected_codes = Some(v);
    }
    if let Some(v) = input.str("domain_name")? {
        h.domain_name = Some(v);
    }
    if let Some(v) = input.raw("http_version").and_then(Value::as_f64) {
        h.http_version = Some(v);
    }
    Ok(())
}

fn build_hm(tx: &mut dyn Txn, p: &Principal, input: &Input, pool: &PoolRec) -> Result<HealthMonitorRec, OErr> {
    let w = World::load(tx)?;
    if let Some(existing) = w.monitors.iter().find(|h| h.pool_id == pool.common.id) {
        return Err(OErr::conflict(format!("Pool {} already has health monitor {}.", pool.common.id, existing.common.id)));
    }
    let kind = input.choice("type", HM_TYPES)?.ok_or_else(|| OErr::bad_request("Invalid input for field/attribute type. Mandatory field missing."))?;
    if kind == "SCTP" {
        return Err(OErr::bad_request("Invalid input for field/attribute type. Value: 'SCTP'. SCTP health monitors are not supported by lbd."));
    }
    let http = kind == "HTTP" || kind == "HTTPS";
    let mut h = HealthMonitorRec {
        common: new_common(p, input)?,
        pool_id: pool.common.id.clone(),
        kind,
        delay: input.required_int("delay", 0, i32::MAX as i64)? as u64,
        timeout: input.required_int("timeout", 0, i32::MAX as i64)? as u64,
        max_retries: input.required_int("max_retries", 1, 10)? as u32,
        max_retries_down: 3,
        http_method: http.then(|| "GET".into()),
        url_path: http.then(|| "/".into()),
        expected_codes: http.then(|| "200".into()),
        http_version: None,
        domain_name: None,
    };
    h.common.project_id = pool.common.project_id.clone();
    apply_hm(&mut h, input)?;
    Ok(h)
}

fn hm_of(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<HealthMonitorRec, OErr> {
    visible(tx, p, Kind::HealthMonitor, "Health Monitor", id, |h: &HealthMonitorRec| &h.common)
}

async fn create_hm(State(s): State<Arc<ApiState>>, Auth(p, _): A, body: Bytes) -> Result<(StatusCode, Json<Value>), OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "healthmonitor", &hm_fields())?;
    let pool_id = input.required_str("pool_id")?;
    let out = s.write(|tx| -> Result<Value, OErr> {
        let pool = pool_of(tx, &p, &pool_id)?;
        let lb = lock_lb(tx, &p, &pool.loadbalancer_id)?;
        let usage = Usage::before(tx, &lb.common.project_id)?;
        let h = build_hm(tx, &p, &input, &pool)?;
        tx.put(Kind::HealthMonitor, &h.common.id, &h)?;
        usage.check(tx)?;
        Ok(render::monitor(&h))
    })?;
    Ok((StatusCode::CREATED, Json(json!({"healthmonitor": out}))))
}

async fn list_hm(State(s): State<Arc<ApiState>>, Auth(p, _): A, RawQuery(q): RawQuery) -> Result<Json<Value>, OErr> {
    let w = s.read(|tx| World::load(tx).map_err(OErr::from))?;
    let items = w.monitors.iter().filter(|h| p.sees(&h.common.project_id)).map(render::monitor).collect();
    Ok(Json(list_response(items, &query_pairs(q.as_deref()), "healthmonitors", &s.public_url)?))
}

async fn show_hm(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, OErr> {
    let h = s.read(|tx| hm_of(tx, &p, &id))?;
    Ok(Json(json!({"healthmonitor": render::monitor(&h)})))
}

async fn update_hm(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, body: Bytes) -> Result<Json<Value>, OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "healthmonitor", HM_UPDATABLE)?;
    let out = s.write(|tx| -> Result<Value, OErr> {
        let mut h = hm_of(tx, &p, &id)?;
        let pool = pool_of(tx, &p, &h.pool_id)?;
        lock_lb(tx, &p, &pool.loadbalancer_id)?;
        update_common(&mut h.common, &input)?;
        apply_hm(&mut h, &input)?;
        tx.put(Kind::HealthMonitor, &id, &h)?;
        Ok(render::monitor(&h))
    })?;
    Ok(Json(json!({"healthmonitor": out})))
}

async fn delete_hm(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<StatusCode, OErr> {
    p.require_write()?;
    s.write(|tx| -> Result<(), OErr> {
        let h = hm_of(tx, &p, &id)?;
        let pool = pool_of(tx, &p, &h.pool_id)?;
        lock_lb(tx, &p, &pool.loadbalancer_id)?;
        tx.delete(Kind::HealthMonitor, &id)?;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
