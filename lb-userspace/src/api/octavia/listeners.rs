//! `/listeners`: create, list, show, update (certificate rotation is an update of
//! `default_tls_container_ref` / `sni_container_refs`), delete, stats. TLS references are
//! resolved and validated at request time, so a bad bundle is a 400 now, not an ERROR later.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::input::Input;
use super::render::{self, World};
use super::quotas::Usage;
use super::{OErr, list_response, lock_lb, new_common, update_common, visible};
use crate::api::auth::{Auth, Principal};
use crate::api::error::Octavia;
use crate::api::{ApiState, query_pairs};
use crate::desired;
use crate::store::octavia::{ListenerRec, LoadBalancerRec, PoolRec};
use crate::store::{Kind, Txn, TxnExt};

type A = Auth<Octavia>;

const PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "TCP", "TERMINATED_HTTPS", "UDP", "SCTP", "PROMETHEUS"];
const UPDATABLE: &[&str] = &[
    "name", "description", "admin_state_up", "tags", "connection_limit", "default_pool_id", "default_tls_container_ref",
    "sni_container_refs", "insert_headers", "timeout_client_data", "timeout_member_connect", "timeout_member_data",
    "timeout_tcp_inspect", "tls_versions", "tls_ciphers", "alpn_protocols", "allowed_cidrs", "client_ca_tls_container_ref",
    "client_authentication", "client_crl_container_ref", "hsts_max_age", "hsts_include_subdomains", "hsts_preload",
];
/// Fields only a create takes (plus the nested `default_pool` of a fully populated create).
const CREATE_ONLY: &[&str] = &["loadbalancer_id", "protocol", "protocol_port", "project_id", "tenant_id", "default_pool", "l7policies"];
const HEADERS: &[&str] = &["X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto"];
use lb_common::model::SslHeaders;
const MAX_TIMEOUT_MS: i64 = 24 * 3600 * 1000;

pub fn fields() -> Vec<&'static str> {
    UPDATABLE.iter().chain(CREATE_ONLY).copied().collect()
}

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/listeners", get(list).post(create))
        .route("/listeners/{id}", get(show).put(update).delete(delete))
        .route("/listeners/{id}/stats", get(stats))
}

fn listener_of(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<ListenerRec, OErr> {
    visible(tx, p, Kind::Listener, "Listener", id, |l: &ListenerRec| &l.common)
}

/// Pool protocols a listener protocol can forward to, in lbd's data plane.
pub fn compatible(listener: &str, pool: &str) -> bool {
    matches!(
        (listener, pool),
        ("HTTP", "HTTP" | "PROXY" | "PROXYV2")
            | ("TERMINATED_HTTPS", "HTTP" | "TCP" | "PROXY" | "PROXYV2")
            | ("TCP", "TCP" | "HTTP" | "HTTPS" | "PROXY" | "PROXYV2")
            | ("HTTPS", "HTTPS" | "TCP" | "PROXY" | "PROXYV2")
            | ("UDP", "UDP")
    )
}

/// The 400 for a listener and pool protocol that do not go together, in Octavia's words.
pub fn incompatible(listener: &str, pool: &str) -> OErr {
    OErr::bad_request(format!("The pool protocol '{pool}' is invalid while the listener protocol is '{listener}'."))
}

/// Sets the updatable fields present in `input` on `l`.
fn apply(l: &mut ListenerRec, input: &Input) -> Result<(), OErr> {
    if let Some(n) = input.int("connection_limit", -1, i32::MAX as i64)? {
        l.connection_limit = n;
    }
    if let Some(v) = input.nullable_str("default_pool_id")? {
        l.default_pool_id = v;
    }
    if let Some(v) = input.nullable_str("default_tls_container_ref")? {
        l.default_tls_container_ref = v;
    }
    if let Some(v) = input.strs("sni_container_refs")? {
        l.sni_container_refs = v;
    }
    if let Some(v) = input.raw("insert_headers") {
        l.insert_headers = insert_headers(v)?;
    }
    for (name, slot) in [
        ("timeout_client_data", &mut l.timeout_client_data),
        ("timeout_member_connect", &mut l.timeout_member_connect),
        ("timeout_member_data", &mut l.timeout_member_data),
        ("timeout_tcp_inspect", &mut l.timeout_tcp_inspect),
    ] {
        if let Some(ms) = input.int(name, 0, MAX_TIMEOUT_MS)? {
            *slot = ms as u64;
        }
    }
    if let Some(v) = input.strs("tls_versions")? {
        for version in &v {
            if desired::tls_version(version).is_none() {
                return Err(OErr::bad_request(format!(
                    "Invalid input for field/attribute tls_versions. Value: '{version}'. lbd supports TLSv1.2 and TLSv1.3."
                )));
            }
        }
        l.tls_versions = v;
    }
    if let Some(v) = input.nullable_str("tls_ciphers")? {
        l.tls_ciphers = v;
    }
    if let Some(v) = input.strs("alpn_protocols")? {
        for proto in &v {
            if !["h2", "http/1.1", "http/1.0"].contains(&proto.as_str()) {
                return Err(OErr::bad_request(format!("Invalid input for field/attribute alpn_protocols. Value: '{proto}'. Supported: h2, http/1.1, http/1.0.")));
            }
        }
        l.alpn_protocols = v;
    }
    if let Some(v) = input.strs("allowed_cidrs")? {
        l.allowed_cidrs = v;
    }
    if let Some(v) = input.nullable_str("client_ca_tls_container_ref")? {
        l.client_ca_tls_container_ref = v;
    }
    if let Some(v) = input.choice("client_authentication", &["NONE", "OPTIONAL", "MANDATORY"])? {
        l.client_authentication = v;
    }
    if let Some(v) = input.nullable_str("client_crl_container_ref")? {
        l.client_crl_container_ref = v;
    }
    if input.has("hsts_max_age") {
        l.hsts_max_age = input.int("hsts_max_age", 0, i32::MAX as i64)?.map(|v| v as u64);
    }
    if let Some(v) = input.bool("hsts_include_subdomains")? {
        l.hsts_include_subdomains = v;
    }
    if let Some(v) = input.bool("hsts_preload")? {
        l.hsts_preload = v;
    }
    Ok(())
}

fn insert_headers(v: &Value) -> Result<Map<String, Value>, OErr> {
    let Value::Object(map) = v else {
        return Err(OErr::bad_request("Invalid input for field/attribute insert_headers. Expected an object."));
    };
    let mut out = Map::new();
    for (k, val) in map {
        let on = match val {
            Value::Bool(b) => *b,
            Value::String(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => s.eq_ignore_ascii_case("true"),
            other => return Err(OErr::bad_request(format!("Invalid input for field/attribute insert_headers. {k}: '{other}' is not true or false."))),
        };
        if !HEADERS.contains(&k.as_str()) && !SslHeaders::NAMES.contains(&k.as_str()) {
            return Err(OErr::bad_request(format!(
                "Invalid input for field/attribute insert_headers. {k} is not supported (supported: {}, {}).",
                HEADERS.join(", "),
                SslHeaders::NAMES.join(", ")
            )));
        }
        out.insert(k.clone(), Value::from(if on { "true" } else { "false" }));
    }
    Ok(out)
}

/// Everything that must hold for `l` to be stored: protocol support, port uniqueness, the default
/// pool, and the TLS references (resolved and validated now).
fn validate(tx: &mut dyn Txn, s: &ApiState, l: &ListenerRec, lb: &LoadBalancerRec) -> Result<(), OErr> {
    match l.protocol.as_str() {
        "HTTP" | "HTTPS" | "TCP" | "TERMINATED_HTTPS" | "UDP" => {}
        other => return Err(OErr::bad_request(format!("protocol {other}: lbd does not serve {other} listeners yet (supported: HTTP, HTTPS, TCP, TERMINATED_HTTPS, UDP)"))),
    }
    let vip_v6 = lb.vip_address.contains(':');
    for c in &l.allowed_cidrs {
        let cidr: lb_common::cidr::Cidr = c.parse().map_err(|e: lb_common::cidr::CidrError| OErr::bad_request(format!("Invalid input for field/attribute allowed_cidrs. {e}.")))?;
        if cidr.addr.is_ipv6() != vip_v6 {
            return Err(OErr::bad_request(format!(
                "Validation failure: CIDR {c} IP version incompatible with VIP {} IP version.",
                lb.vip_address
            )));
        }
    }
    crate::desired::syn_rate(&l.common.tags).map_err(|e| OErr::bad_request(format!("Invalid input for field/attribute tags. {e}.")))?;
    let terminated = l.protocol == "TERMINATED_HTTPS";
    if let Some(h) = l.insert_headers.keys().find(|k| SslHeaders::NAMES.contains(&k.as_str()))
        && !terminated
    {
        return Err(OErr::bad_request(format!("insert_headers: {h} is only valid on TERMINATED_HTTPS listeners, not {}.", l.protocol)));
    }
    if !terminated && (l.client_authentication != "NONE" || l.client_ca_tls_container_ref.is_some() || l.client_crl_container_ref.is_some()) {
        return Err(OErr::bad_request(format!("client_authentication, client_ca_tls_container_ref and client_crl_container_ref are only valid on TERMINATED_HTTPS listeners, not {}.", l.protocol)));
    }
    if l.client_authentication != "NONE" && l.client_ca_tls_container_ref.is_none() {
        return Err(OErr::bad_request(format!("client_authentication {}: a client_ca_tls_container_ref is required to verify client certificates.", l.client_authentication)));
    }
    if l.client_crl_container_ref.is_some() && l.client_ca_tls_container_ref.is_none() {
        return Err(OErr::bad_request("client_crl_container_ref: a CRL needs client_ca_tls_container_ref."));
    }
    let hsts_options = l.hsts_include_subdomains || l.hsts_preload;
    if !terminated && (l.hsts_max_age.is_some() || hsts_options) {
        return Err(OErr::bad_request("The HSTS feature can only be used for listeners using the TERMINATED_HTTPS protocol."));
    }
    if hsts_options && l.hsts_max_age.is_none() {
        return Err(OErr::bad_request("HSTS configuration options hsts_include_subdomains and hsts_preload only make sense if hsts_max_age is set as well."));
    }
    let w = World::load(tx)?;
    for other in w.listeners.iter().filter(|o| o.common.id != l.common.id && o.protocol_port == l.protocol_port) {
        let other_lb = w.lbs.iter().find(|x| x.common.id == other.loadbalancer_id);
        if other.loadbalancer_id == lb.common.id || other_lb.is_some_and(|x| x.vip_address == lb.vip_address) {
            return Err(OErr::conflict(format!("Another Listener on this Load Balancer (or VIP) is already using protocol_port {}", l.protocol_port)));
        }
    }
    if let Some(pool_id) = &l.default_pool_id {
        let pool: &PoolRec = w.pools.iter().find(|p| &p.common.id == pool_id && p.loadbalancer_id == lb.common.id).ok_or_else(|| OErr::not_found("Pool", pool_id))?;
        if !compatible(&l.protocol, &pool.protocol) {
            return Err(incompatible(&l.protocol, &pool.protocol));
        }
        if let Some(other) = w.pool_listeners(pool_id).iter().find(|o| o.common.id != l.common.id) {
            return Err(OErr::conflict(format!("Pool {pool_id} is already the default pool of listener {}", other.common.id)));
        }
    }
    if terminated && l.default_tls_container_ref.is_none() {
        return Err(OErr::bad_request("An SNI or default certificate container reference must be provided for TERMINATED_HTTPS listeners."));
    }
    if !terminated && (l.default_tls_container_ref.is_some() || !l.sni_container_refs.is_empty()) {
        return Err(OErr::bad_request(format!("Certificate container references are not allowed on {} listeners.", l.protocol)));
    }
    // A client CA stored while client_authentication is NONE is checked too, so it works when
    // authentication is switched on later.
    let mut check = l.clone();
    if check.client_authentication == "NONE" && check.client_ca_tls_container_ref.is_some() {
        check.client_authentication = "OPTIONAL".into();
    }
    if let Some(tls) = desired::listener_tls(tx, &s.kek, &check, Some(&l.common.project_id)).map_err(|e| OErr::bad_request(format!("Could not retrieve certificate: {e}")))? {
        crate::tls::config::server_config(&tls, false).map_err(|e| OErr::bad_request(e.to_string()))?;
    }
    Ok(())
}

/// A new listener on `lb` from `input` (validated, not yet stored).
pub fn build(tx: &mut dyn Txn, s: &ApiState, p: &Principal, input: &Input, lb: &LoadBalancerRec) -> Result<ListenerRec, OErr> {
    let protocol = input.choice("protocol", PROTOCOLS)?.ok_or_else(|| OErr::bad_request("Invalid input for field/attribute protocol. Mandatory field missing."))?;
    let terminated = protocol == "TERMINATED_HTTPS";
    let mut l = ListenerRec {
        common: new_common(p, input)?,
        loadbalancer_id: lb.common.id.clone(),
        protocol,
        protocol_port: input.required_int("protocol_port", 1, 65535)? as u16,
        connection_limit: -1,
        default_pool_id: None,
        default_tls_container_ref: None,
        sni_container_refs: vec![],
        insert_headers: Map::new(),
        timeout_client_data: 50_000,
        timeout_member_connect: 5_000,
        timeout_member_data: 50_000,
        timeout_tcp_inspect: 0,
        tls_versions: if terminated { vec!["TLSv1.2".into(), "TLSv1.3".into()] } else { vec![] },
        tls_ciphers: None,
        alpn_protocols: if terminated { vec!["h2".into(), "http/1.1".into(), "http/1.0".into()] } else { vec![] },
        allowed_cidrs: vec![],
        client_ca_tls_container_ref: None,
        client_authentication: "NONE".into(),
        client_crl_container_ref: None,
        hsts_max_age: None,
        hsts_include_subdomains: false,
        hsts_preload: false,
    };
    l.common.project_id = lb.common.project_id.clone();
    apply(&mut l, input)?;
    validate(tx, s, &l, lb)?;
    Ok(l)
}

async fn create(State(s): State<Arc<ApiState>>, Auth(p, _): A, body: Bytes) -> Result<(StatusCode, Json<Value>), OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "listener", &fields())?;
    if input.has("default_pool") || input.has("l7policies") {
        return Err(OErr::bad_request("default_pool and l7policies are only accepted in a fully populated load balancer create"));
    }
    let lb_id = input.required_str("loadbalancer_id")?;
    let out = s.write(|tx| -> Result<Value, OErr> {
        let lb = lock_lb(tx, &p, &lb_id)?;
        let usage = Usage::before(tx, &lb.common.project_id)?;
        let l = build(tx, &s, &p, &input, &lb)?;
        tx.put(Kind::Listener, &l.common.id, &l)?;
        usage.check(tx)?;
        tracing::info!(listener = %l.common.id, protocol = %l.protocol, port = l.protocol_port, "listener created");
        Ok(render::listener(&World::load(tx)?, &l))
    })?;
    Ok((StatusCode::CREATED, Json(json!({"listener": out}))))
}

async fn list(State(s): State<Arc<ApiState>>, Auth(p, _): A, RawQuery(q): RawQuery) -> Result<Json<Value>, OErr> {
    let w = s.read(|tx| World::load(tx).map_err(OErr::from))?;
    let items = w.listeners.iter().filter(|l| p.sees(&l.common.project_id)).map(|l| render::listener(&w, l)).collect();
    Ok(Json(list_response(items, &query_pairs(q.as_deref()), "listeners", &s.public_url)?))
}

async fn show(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, OErr> {
    s.read(|tx| {
        let l = listener_of(tx, &p, &id)?;
        Ok(Json(json!({"listener": render::listener(&World::load(tx)?, &l)})))
    })
}

async fn update(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, body: Bytes) -> Result<Json<Value>, OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "listener", UPDATABLE)?;
    let out = s.write(|tx| -> Result<Value, OErr> {
        let mut l = listener_of(tx, &p, &id)?;
        let lb = lock_lb(tx, &p, &l.loadbalancer_id)?;
        update_common(&mut l.common, &input)?;
        apply(&mut l, &input)?;
        validate(tx, &s, &l, &lb)?;
        tx.put(Kind::Listener, &id, &l)?;
        tracing::info!(listener = %id, "listener updated");
        Ok(render::listener(&World::load(tx)?, &l))
    })?;
    Ok(Json(json!({"listener": out})))
}

async fn delete(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<StatusCode, OErr> {
    p.require_write()?;
    s.write(|tx| -> Result<(), OErr> {
        let l = listener_of(tx, &p, &id)?;
        lock_lb(tx, &p, &l.loadbalancer_id)?;
        let policies: Vec<String> = World::load(tx)?.l7policies.iter().filter(|x| x.listener_id == id).map(|x| x.common.id.clone()).collect();
        for x in policies {
            super::l7::delete_policy(tx, &x)?;
        }
        tx.delete(Kind::Listener, &id)?;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, OErr> {
    s.read(|tx| listener_of(tx, &p, &id))?;
    Ok(Json(json!({"stats": s.controller.daemon.metrics.listener_stats(&id)})))
}
