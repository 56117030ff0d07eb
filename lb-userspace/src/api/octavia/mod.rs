//! Octavia v2.0 (`/v2.0/lbaas`, also `/v2/lbaas`): load balancers (with the fully populated
//! single-call create), listeners, pools, members, health monitors, quotas; stats, status trees,
//! cascade delete, filtering on any attribute, `fields=`, `limit`/`marker` paging.
//!
//! Writes set the object to PENDING_* and its load balancer to PENDING_UPDATE; the controller
//! sets ACTIVE or ERROR once the data plane really applied the change. A load balancer that is
//! still pending refuses further writes with 409, as Octavia does.

mod input;
mod l7;
mod listeners;
mod loadbalancers;
mod members;
mod pools;
mod providers;
mod quotas;
mod render;

use std::sync::Arc;

use axum::Router;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Principal;
use super::error::{ApiError, Octavia};
use crate::store::octavia::{Common, LoadBalancerRec, PENDING_UPDATE};
use crate::store::{Kind, Txn, TxnExt};

pub type OErr = ApiError<Octavia>;

pub fn routes() -> Router<Arc<ApiState>> {
    let api = Router::new()
        .merge(loadbalancers::routes())
        .merge(listeners::routes())
        .merge(pools::routes())
        .merge(members::routes())
        .merge(quotas::routes())
        .merge(providers::routes())
        .merge(l7::routes());
    let amphorae = providers::amphora_routes();
    Router::new().nest("/v2.0/lbaas", api.clone()).nest("/v2/lbaas", api).nest("/v2.0/octavia", amphorae.clone()).nest("/v2/octavia", amphorae)
}

/// Bookkeeping for a new object owned by `p` (or, for admins, the project they name).
pub fn new_common(p: &Principal, input: &input::Input) -> Result<Common, OErr> {
    let project_id = match input.str("project_id")?.or(input.str("tenant_id")?) {
        Some(other) if other != p.project_id && !p.is_admin() => return Err(OErr::forbidden()),
        Some(other) => other,
        None => p.project_id.clone(),
    };
    Ok(Common {
        id: super::new_id(),
        project_id,
        name: input.str("name")?.unwrap_or_default(),
        description: input.str("description")?.unwrap_or_default(),
        admin_state_up: input.bool("admin_state_up")?.unwrap_or(true),
        provisioning_status: crate::store::octavia::PENDING_CREATE.into(),
        operating_status: "OFFLINE".into(),
        created_at: super::timestamp(),
        updated_at: None,
        tags: input.strs("tags")?.unwrap_or_default(),
    })
}

/// Applies the fields every object can update (name, description, admin_state_up, tags).
pub fn update_common(c: &mut Common, input: &input::Input) -> Result<(), OErr> {
    if let Some(v) = input.nullable_str("name")? {
        c.name = v.unwrap_or_default();
    }
    if let Some(v) = input.nullable_str("description")? {
        c.description = v.unwrap_or_default();
    }
    if let Some(v) = input.bool("admin_state_up")? {
        c.admin_state_up = v;
    }
    if let Some(v) = input.strs("tags")? {
        c.tags = v;
    }
    c.provisioning_status = PENDING_UPDATE.into();
    c.updated_at = Some(super::timestamp());
    Ok(())
}

/// The load balancer `id`, visible to `p` and not pending (Octavia's "immutable" rule); marks it
/// PENDING_UPDATE for the write about to happen.
pub fn lock_lb(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<LoadBalancerRec, OErr> {
    let mut lb = visible::<LoadBalancerRec>(tx, p, Kind::LoadBalancer, "Load Balancer", id, |l| &l.common)?;
    if lb.common.provisioning_status.starts_with("PENDING_") {
        return Err(OErr::conflict(format!("Load Balancer {id} is immutable and cannot be updated.")));
    }
    lb.common.provisioning_status = PENDING_UPDATE.into();
    tx.put(Kind::LoadBalancer, id, &lb)?;
    Ok(lb)
}

/// Object `id` of `kind` if `p` may see it, else 404 in Octavia's words.
pub fn visible<T: serde::de::DeserializeOwned>(
    tx: &mut dyn Txn,
    p: &Principal,
    kind: Kind,
    what: &str,
    id: &str,
    common: impl Fn(&T) -> &Common,
) -> Result<T, OErr> {
    tx.get::<T>(kind, id)?.filter(|o| p.sees(&common(o).project_id)).ok_or_else(|| OErr::not_found(what, id))
}

/// A boolean query parameter (the last one given), read as Octavia's API reads booleans
/// (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, `t`/`f`, `y`/`n`, any case); anything
/// else is a 400 naming the parameter.
pub fn query_bool(query: &[(String, String)], name: &str) -> Result<Option<bool>, OErr> {
    let Some((_, v)) = query.iter().rev().find(|(k, _)| k == name) else { return Ok(None) };
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Ok(Some(true)),
        "false" | "0" | "no" | "off" | "f" | "n" => Ok(Some(false)),
        _ => Err(OErr::bad_request(format!("Invalid input for query parameter {name}. Value: '{v}'. Expected a boolean (true or false)."))),
    }
}

/// Filters (any attribute), `fields=`, and `limit`/`marker`/`page_reverse` paging of a list.
pub fn list_response(items: Vec<Value>, query: &[(String, String)], collection: &str, base: &str) -> Result<Value, OErr> {
    const CONTROL: &[&str] = &["limit", "marker", "page_reverse", "fields", "sort", "sort_key", "sort_dir"];
    let matches = |item: &Value| {
        query.iter().filter(|(k, _)| !CONTROL.contains(&k.as_str())).all(|(k, want)| match item.get(k) {
            Some(Value::String(s)) => s == want,
            Some(Value::Bool(b)) => want.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
            Some(Value::Number(n)) => n.to_string() == *want,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(want.as_str())),
            Some(Value::Null) => want.is_empty() || want.eq_ignore_ascii_case("none"),
            _ => false,
        })
    };
    let mut items: Vec<Value> = items.into_iter().filter(matches).collect();
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.clone());
    if query_bool(query, "page_reverse")? == Some(true) {
        items.reverse();
    }
    if let Some(marker) = get("marker") {
        let at = items.iter().position(|i| i["id"] == marker.as_str()).ok_or_else(|| OErr::not_found("Marker", &marker))?;
        items.drain(..=at);
    }
    let mut links = Vec::new();
    if let Some(limit) = get("limit") {
        let limit: usize = limit.parse().map_err(|_| OErr::bad_request(format!("limit: {limit:?} is not a non-negative integer")))?;
        if limit > 0 && items.len() > limit {
            items.truncate(limit);
            let last = items.last().and_then(|i| i["id"].as_str()).unwrap_or("");
            links.push(json!({"rel": "next", "href": format!("{base}/v2.0/lbaas/{collection}?limit={limit}&marker={last}")}));
        }
    }
    let fields: Vec<String> = query.iter().filter(|(k, _)| k == "fields").flat_map(|(_, v)| v.split(',').map(str::to_string)).collect();
    if !fields.is_empty() {
        for item in &mut items {
            if let Value::Object(map) = item {
                map.retain(|k, _| fields.contains(k));
            }
        }
    }
    Ok(json!({ collection: items, format!("{collection}_links"): links }))
}
