//! `/l7policies` and `/l7policies/{id}/rules`: stored, validated and served like Octavia's; the
//! data plane enforces them per request (`proxy/l7.rs`).

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
use crate::api::{ApiState, query_pairs};
use crate::store::octavia::{L7PolicyRec, L7RuleRec, ListenerRec};
use crate::store::{Kind, Txn, TxnExt};

type A = Auth<Octavia>;

const ACTIONS: &[&str] = &["REJECT", "REDIRECT_TO_URL", "REDIRECT_TO_POOL", "REDIRECT_PREFIX"];
const POLICY_UPDATABLE: &[&str] = &[
    "name", "description", "admin_state_up", "tags", "action", "position", "redirect_pool_id", "redirect_url",
    "redirect_prefix", "redirect_http_code",
];
const RULE_TYPES: &[&str] = &["HOST_NAME", "PATH", "FILE_TYPE", "HEADER", "COOKIE", "SSL_CONN_HAS_CERT", "SSL_VERIFY_RESULT", "SSL_DN_FIELD"];
const COMPARE: &[&str] = &["REGEX", "STARTS_WITH", "ENDS_WITH", "CONTAINS", "EQUAL_TO"];
const RULE_UPDATABLE: &[&str] = &["admin_state_up", "tags", "type", "compare_type", "key", "value", "invert"];

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/l7policies", get(list).post(create))
        .route("/l7policies/{id}", get(show).put(update).delete(delete))
        .route("/l7policies/{id}/rules", get(list_rules).post(create_rule))
        .route("/l7policies/{id}/rules/{rule_id}", get(show_rule).put(update_rule).delete(delete_rule))
}

fn policy_of(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<L7PolicyRec, OErr> {
    visible(tx, p, Kind::L7Policy, "L7 Policy", id, |x: &L7PolicyRec| &x.common)
}

fn listener_of(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<ListenerRec, OErr> {
    visible(tx, p, Kind::Listener, "Listener", id, |x: &ListenerRec| &x.common)
}

fn apply_policy(tx: &mut dyn Txn, x: &mut L7PolicyRec, input: &Input, listener: &ListenerRec) -> Result<(), OErr> {
    if let Some(a) = input.choice("action", ACTIONS)? {
        x.action = a;
    }
    if let Some(pos) = input.int("position", 1, 2147483647)? {
        x.position = pos as u32;
    }
    for (name, slot) in [("redirect_pool_id", &mut x.redirect_pool_id), ("redirect_url", &mut x.redirect_url), ("redirect_prefix", &mut x.redirect_prefix)] {
        if let Some(v) = input.nullable_str(name)? {
            *slot = v;
        }
    }
    if let Some(code) = input.int("redirect_http_code", 301, 308)? {
        x.redirect_http_code = Some(code as u16);
    }
    let need = |field: &str, v: &Option<String>| {
        v.as_ref().map(|_| ()).ok_or_else(|| OErr::bad_request(format!("{field} is required for action {}", x.action)))
    };
    match x.action.as_str() {
        "REDIRECT_TO_POOL" => {
            need("redirect_pool_id", &x.redirect_pool_id)?;
            let pool = x.redirect_pool_id.clone().unwrap_or_default();
            let w = World::load(tx)?;
            if !w.pools.iter().any(|p| p.common.id == pool && p.loadbalancer_id == listener.loadbalancer_id) {
                return Err(OErr::not_found("Pool", &pool));
            }
        }
        "REDIRECT_TO_URL" => need("redirect_url", &x.redirect_url)?,
        "REDIRECT_PREFIX" => need("redirect_prefix", &x.redirect_prefix)?,
        _ => {}
    }
    Ok(())
}

async fn create(State(s): State<Arc<ApiState>>, Auth(p, _): A, body: Bytes) -> Result<(StatusCode, Json<Value>), OErr> {
    p.require_write()?;
    let fields: Vec<&str> = POLICY_UPDATABLE.iter().chain(&["listener_id", "project_id", "tenant_id", "rules"]).copied().collect();
    let input = Input::parse(&body, "l7policy", &fields)?;
    let listener_id = input.required_str("listener_id")?;
    let out = s.write(|tx| -> Result<Value, OErr> {
        let l = listener_of(tx, &p, &listener_id)?;
        if !matches!(l.protocol.as_str(), "HTTP" | "TERMINATED_HTTPS") {
            return Err(OErr::bad_request(format!("L7 policies need an HTTP or TERMINATED_HTTPS listener, not {}", l.protocol)));
        }
        lock_lb(tx, &p, &l.loadbalancer_id)?;
        let existing = World::load(tx)?.l7policies.iter().filter(|x| x.listener_id == l.common.id).count() as u32;
        let mut x = L7PolicyRec {
            common: new_common(&p, &input)?,
            listener_id: l.common.id.clone(),
            action: input.choice("action", ACTIONS)?.ok_or_else(|| OErr::bad_request("Invalid input for field/attribute action. Mandatory field missing."))?,
            position: existing + 1,
            redirect_pool_id: None,
            redirect_url: None,
            redirect_prefix: None,
            redirect_http_code: None,
        };
        x.common.project_id = l.common.project_id.clone();
        let usage = Usage::before(tx, &x.common.project_id)?;
        apply_policy(tx, &mut x, &input, &l)?;
        tx.put(Kind::L7Policy, &x.common.id, &x)?;
        for r in input.objects("rules")? {
            let ri = Input::from_value(r, "rules", &rule_fields())?;
            let rule = build_rule(&p, &ri, &x)?;
            tx.put(Kind::L7Rule, &rule.common.id, &rule)?;
        }
        usage.check(tx)?;
        Ok(render::l7policy(&World::load(tx)?, &x))
    })?;
    Ok((StatusCode::CREATED, Json(json!({"l7policy": out}))))
}

async fn list(State(s): State<Arc<ApiState>>, Auth(p, _): A, RawQuery(q): RawQuery) -> Result<Json<Value>, OErr> {
    let w = s.read(|tx| World::load(tx).map_err(OErr::from))?;
    let items = w.l7policies.iter().filter(|x| p.sees(&x.common.project_id)).map(|x| render::l7policy(&w, x)).collect();
    Ok(Json(list_response(items, &query_pairs(q.as_deref()), "l7policies", &s.public_url)?))
}

async fn show(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, OErr> {
    s.read(|tx| {
        let x = policy_of(tx, &p, &id)?;
        Ok(Json(json!({"l7policy": render::l7policy(&World::load(tx)?, &x)})))
    })
}

async fn update(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, body: Bytes) -> Result<Json<Value>, OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "l7policy", POLICY_UPDATABLE)?;
    let out = s.write(|tx| -> Result<Value, OErr> {
        let mut x = policy_of(tx, &p, &id)?;
        let l = listener_of(tx, &p, &x.listener_id)?;
        lock_lb(tx, &p, &l.loadbalancer_id)?;
        update_common(&mut x.common, &input)?;
        apply_policy(tx, &mut x, &input, &l)?;
        tx.put(Kind::L7Policy, &id, &x)?;
        Ok(render::l7policy(&World::load(tx)?, &x))
    })?;
    Ok(Json(json!({"l7policy": out})))
}

/// Deletes a policy and its rules (also used when its listener goes).
pub fn delete_policy(tx: &mut dyn Txn, id: &str) -> Result<(), OErr> {
    for r in World::load(tx)?.l7rules.iter().filter(|r| r.l7policy_id == id) {
        tx.delete(Kind::L7Rule, &r.common.id)?;
    }
    tx.delete(Kind::L7Policy, id)?;
    Ok(())
}

async fn delete(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<StatusCode, OErr> {
    p.require_write()?;
    s.write(|tx| -> Result<(), OErr> {
        let x = policy_of(tx, &p, &id)?;
        let l = listener_of(tx, &p, &x.listener_id)?;
        lock_lb(tx, &p, &l.loadbalancer_id)?;
        delete_policy(tx, &id)
    })?;
    Ok(StatusCode::NO_CONTENT)
}

fn rule_fields() -> Vec<&'static str> {
    RULE_UPDATABLE.iter().chain(&["project_id", "tenant_id"]).copied().collect()
}

fn apply_rule(r: &mut L7RuleRec, input: &Input) -> Result<(), OErr> {
    if let Some(t) = input.choice("type", RULE_TYPES)? {
        r.kind = t;
    }
    if let Some(c) = input.choice("compare_type", COMPARE)? {
        r.compare_type = c;
    }
    if let Some(k) = input.nullable_str("key")? {
        r.key = k;
    }
    if let Some(v) = input.str("value")? {
        r.value = v;
    }
    if let Some(i) = input.bool("invert")? {
        r.invert = i;
    }
    if matches!(r.kind.as_str(), "HEADER" | "COOKIE" | "SSL_DN_FIELD") && r.key.is_none() {
        return Err(OErr::bad_request(format!("key is required for rule type {}", r.kind)));
    }
    if r.compare_type == "REGEX" {
        regex_check(&r.value)?;
    }
    Ok(())
}

/// Refuses a value the data plane could not compile.
fn regex_check(v: &str) -> Result<(), OErr> {
    crate::desired::l7_regex(v, false)
        .map(drop)
        .map_err(|e| OErr::bad_request(format!("Invalid input for field/attribute value. Value: '{v}'. Not a valid regular expression: {e}")))
}

fn build_rule(p: &Principal, input: &Input, policy: &L7PolicyRec) -> Result<L7RuleRec, OErr> {
    let mut r = L7RuleRec {
        common: new_common(p, input)?,
        l7policy_id: policy.common.id.clone(),
        kind: input.choice("type", RULE_TYPES)?.ok_or_else(|| OErr::bad_request("Invalid input for field/attribute type. Mandatory field missing."))?,
        compare_type: input.choice("compare_type", COMPARE)?.ok_or_else(|| OErr::bad_request("Invalid input for field/attribute compare_type. Mandatory field missing."))?,
        key: None,
        value: input.required_str("value")?,
        invert: false,
    };
    r.common.project_id = policy.common.project_id.clone();
    apply_rule(&mut r, input)?;
    Ok(r)
}

fn rule_of(tx: &mut dyn Txn, p: &Principal, policy: &str, id: &str) -> Result<L7RuleRec, OErr> {
    tx.get::<L7RuleRec>(Kind::L7Rule, id)?
        .filter(|r| r.l7policy_id == policy && p.sees(&r.common.project_id))
        .ok_or_else(|| OErr::not_found("L7 Rule", id))
}

/// Locks the load balancer behind `policy` for a rule change.
fn lock_for(tx: &mut dyn Txn, p: &Principal, policy: &str) -> Result<L7PolicyRec, OErr> {
    let x = policy_of(tx, p, policy)?;
    let l = listener_of(tx, p, &x.listener_id)?;
    lock_lb(tx, p, &l.loadbalancer_id)?;
    Ok(x)
}

async fn create_rule(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, body: Bytes) -> Result<(StatusCode, Json<Value>), OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "rule", &rule_fields())?;
    let r = s.write(|tx| -> Result<L7RuleRec, OErr> {
        let x = lock_for(tx, &p, &id)?;
        let usage = Usage::before(tx, &x.common.project_id)?;
        let r = build_rule(&p, &input, &x)?;
        tx.put(Kind::L7Rule, &r.common.id, &r)?;
        usage.check(tx)?;
        Ok(r)
    })?;
    Ok((StatusCode::CREATED, Json(json!({"rule": render::l7rule(&r)}))))
}

async fn list_rules(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Json<Value>, OErr> {
    let w = s.read(|tx| -> Result<World, OErr> {
        policy_of(tx, &p, &id)?;
        Ok(World::load(tx)?)
    })?;
    let items = w.l7rules.iter().filter(|r| r.l7policy_id == id).map(render::l7rule).collect();
    Ok(Json(list_response(items, &query_pairs(q.as_deref()), "rules", &s.public_url)?))
}

async fn show_rule(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path((id, rule)): Path<(String, String)>) -> Result<Json<Value>, OErr> {
    let r = s.read(|tx| rule_of(tx, &p, &id, &rule))?;
    Ok(Json(json!({"rule": render::l7rule(&r)})))
}

async fn update_rule(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path((id, rule)): Path<(String, String)>, body: Bytes) -> Result<Json<Value>, OErr> {
    p.require_write()?;
    let input = Input::parse(&body, "rule", RULE_UPDATABLE)?;
    let r = s.write(|tx| -> Result<L7RuleRec, OErr> {
        let mut r = rule_of(tx, &p, &id, &rule)?;
        lock_for(tx, &p, &id)?;
        update_common(&mut r.common, &input)?;
        apply_rule(&mut r, &input)?;
        tx.put(Kind::L7Rule, &rule, &r)?;
        Ok(r)
    })?;
    Ok(Json(json!({"rule": render::l7rule(&r)})))
}

async fn delete_rule(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path((id, rule)): Path<(String, String)>) -> Result<StatusCode, OErr> {
    p.require_write()?;
    s.write(|tx| -> Result<(), OErr> {
        rule_of(tx, &p, &id, &rule)?;
        lock_for(tx, &p, &id)?;
        tx.delete(Kind::L7Rule, &rule)?;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
