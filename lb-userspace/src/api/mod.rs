//! The control API: Keystone v3 (token subset), Barbican v1, Octavia v2.0 and a Neutron subnet
//! lookup on one axum server, wire-compatible with the stock `openstack` CLI. Handlers validate,
//! write the store in one transaction, and kick the controller; they never touch sockets.

pub mod auth;
pub mod barbican;
pub mod error;
pub mod keystone;
pub mod neutron;
pub mod octavia;

use std::sync::Arc;

use axum::Router;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::controller::Controller;
use crate::store::seal::Kek;
use crate::store::{Store, Txn};

/// Everything the handlers share.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub kek: Arc<Kek>,
    pub tokens: auth::Tokens,
    /// The URL clients reach lbd at (catalog entries and hrefs), without a trailing slash.
    pub public_url: String,
    pub controller: Arc<Controller>,
    /// Largest secret payload accepted, in bytes (Barbican answers 413 above it).
    pub max_payload: usize,
}

impl ApiState {
    /// Runs `f` in one store transaction and commits it; errors roll everything back.
    pub fn write<T, E: From<crate::store::StoreError>>(&self, f: impl FnOnce(&mut dyn Txn) -> Result<T, E>) -> Result<T, E> {
        let mut tx = self.store.begin()?;
        let out = f(&mut *tx)?;
        crate::controller::bump(&mut *tx)?;
        tx.commit()?;
        self.controller.kick();
        Ok(out)
    }

    /// Runs `f` in a transaction that is rolled back (reads only).
    pub fn read<T, E: From<crate::store::StoreError>>(&self, f: impl FnOnce(&mut dyn Txn) -> Result<T, E>) -> Result<T, E> {
        let mut tx = self.store.begin()?;
        f(&mut *tx)
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/openapi.json", axum::routing::get(openapi))
        .merge(keystone::routes())
        .merge(barbican::routes())
        .merge(octavia::routes())
        .merge(neutron::routes())
        .with_state(state)
}

/// `GET /openapi.json`: the routes lbd serves (OpenAPI 3.0 outline; request and response bodies
/// follow the Octavia v2.0, Barbican v1 and Keystone v3 references).
async fn openapi() -> axum::Json<serde_json::Value> {
    const ROUTES: &[(&str, &str, &[&str])] = &[
        ("Keystone", "/v3", &["get"]),
        ("Keystone", "/v3/auth/tokens", &["get", "post"]),
        ("Keystone", "/v3/projects", &["get"]),
        ("Keystone", "/v3/projects/{id}", &["get"]),
        ("Barbican", "/", &["get"]),
        ("Barbican", "/v1/", &["get"]),
        ("Barbican", "/v1/secrets", &["get", "post"]),
        ("Barbican", "/v1/secrets/{id}", &["get", "put", "delete"]),
        ("Barbican", "/v1/secrets/{id}/payload", &["get"]),
        ("Barbican", "/v1/secrets/{id}/acl", &["get", "put", "patch", "delete"]),
        ("Barbican", "/v1/containers", &["get", "post"]),
        ("Barbican", "/v1/containers/{id}", &["get", "delete"]),
        ("Barbican", "/v1/containers/{id}/acl", &["get", "put", "patch", "delete"]),
        ("Barbican", "/v1/orders", &["get", "post"]),
        ("Barbican", "/v1/orders/{id}", &["get", "delete"]),
        ("Octavia", "/v2.0/lbaas/loadbalancers", &["get", "post"]),
        ("Octavia", "/v2.0/lbaas/loadbalancers/{id}", &["get", "put", "delete"]),
        ("Octavia", "/v2.0/lbaas/loadbalancers/{id}/stats", &["get"]),
        ("Octavia", "/v2.0/lbaas/loadbalancers/{id}/status", &["get"]),
        ("Octavia", "/v2.0/lbaas/loadbalancers/{id}/failover", &["put"]),
        ("Octavia", "/v2.0/octavia/amphorae", &["get"]),
        ("Octavia", "/v2.0/lbaas/listeners", &["get", "post"]),
        ("Octavia", "/v2.0/lbaas/listeners/{id}", &["get", "put", "delete"]),
        ("Octavia", "/v2.0/lbaas/listeners/{id}/stats", &["get"]),
        ("Octavia", "/v2.0/lbaas/pools", &["get", "post"]),
        ("Octavia", "/v2.0/lbaas/pools/{id}", &["get", "put", "delete"]),
        ("Octavia", "/v2.0/lbaas/pools/{pool_id}/members", &["get", "post", "put"]),
        ("Octavia", "/v2.0/lbaas/pools/{pool_id}/members/{id}", &["get", "put", "delete"]),
        ("Octavia", "/v2.0/lbaas/providers", &["get"]),
        ("Octavia", "/v2.0/lbaas/providers/{provider}/flavor_capabilities", &["get"]),
        ("Octavia", "/v2.0/lbaas/providers/{provider}/availability_zone_capabilities", &["get"]),
        ("Octavia", "/v2.0/lbaas/flavors", &["get"]),
        ("Octavia", "/v2.0/lbaas/flavorprofiles", &["get"]),
        ("Octavia", "/v2.0/lbaas/availabilityzones", &["get"]),
        ("Octavia", "/v2.0/lbaas/availabilityzoneprofiles", &["get"]),
        ("Octavia", "/v2.0/lbaas/quotas", &["get"]),
        ("Octavia", "/v2.0/lbaas/quotas/defaults", &["get"]),
        ("Octavia", "/v2.0/lbaas/quotas/{project_id}", &["get", "put", "delete"]),
        ("Octavia", "/v2.0/lbaas/healthmonitors", &["get", "post"]),
        ("Octavia", "/v2.0/lbaas/healthmonitors/{id}", &["get", "put", "delete"]),
        ("Octavia", "/v2.0/lbaas/l7policies", &["get", "post"]),
        ("Octavia", "/v2.0/lbaas/l7policies/{id}", &["get", "put", "delete"]),
        ("Octavia", "/v2.0/lbaas/l7policies/{id}/rules", &["get", "post"]),
        ("Octavia", "/v2.0/lbaas/l7policies/{id}/rules/{rule_id}", &["get", "put", "delete"]),
        ("Neutron", "/v2.0/subnets", &["get"]),
        ("Neutron", "/v2.0/subnets/{id}", &["get"]),
        ("Neutron", "/v2.0/networks", &["get"]),
        ("lbd", "/metrics", &["get"]),
        ("lbd", "/healthz", &["get"]),
    ];
    let mut paths = serde_json::Map::new();
    for (tag, path, methods) in ROUTES {
        let ops: serde_json::Map<String, serde_json::Value> = methods
            .iter()
            .map(|m| (m.to_string(), serde_json::json!({"tags": [tag], "responses": {"default": {"description": format!("{tag} wire format")}}})))
            .collect();
        paths.insert(path.to_string(), serde_json::Value::Object(ops));
    }
    axum::Json(serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "lbd control API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Octavia v2.0, Barbican v1, Keystone v3 (token subset) and a Neutron subnet lookup; authenticate with X-Auth-Token from POST /v3/auth/tokens"},
        "paths": paths,
    }))
}

/// A new object id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `2026-11-22T21:40:00` (UTC), the timestamp format Octavia and Barbican use.
pub fn timestamp() -> String {
    OffsetDateTime::now_utc()
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"))
        .expect("formattable timestamp")
}

/// Query parameters in order, repeated keys kept.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}
