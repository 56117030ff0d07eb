//! What the service offers, read-only: one provider (`lbd`), and no flavors, availability
//! zones (lbd refuses `flavor_id`; `availability_zone` is stored as given) or amphorae (lbd
//! serves in its own process). Lists answer in Octavia's shapes so `openstack loadbalancer
//! provider|flavor|availabilityzone|amphora list` work.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use serde_json::{Value, json};

use super::{OErr, list_response};
use crate::api::auth::Auth;
use crate::api::error::Octavia;
use crate::api::{ApiState, query_pairs};

type A = Auth<Octavia>;

/// The provider names `POST /loadbalancers` accepts (Octavia's default names are aliases).
pub const PROVIDERS: [&str; 3] = ["lbd", "amphora", "octavia"];

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/providers", get(providers))
        .route("/providers/{provider}/flavor_capabilities", get(|a: A, p: Path<String>| capabilities(a, p, "flavor_capabilities")))
        .route("/providers/{provider}/availability_zone_capabilities", get(|a: A, p: Path<String>| capabilities(a, p, "availability_zone_capabilities")))
        .route("/flavors", get(|s: State<Arc<ApiState>>, a: A, q: RawQuery| empty(s, a, q, "flavors")))
        .route("/flavors/{id}", get(|_: A, Path(id): Path<String>| async move { Err::<Json<Value>, _>(OErr::not_found("Flavor", &id)) }))
        .route("/flavorprofiles", get(|s: State<Arc<ApiState>>, a: A, q: RawQuery| empty(s, a, q, "flavorprofiles")))
        .route("/availabilityzones", get(|s: State<Arc<ApiState>>, a: A, q: RawQuery| empty(s, a, q, "availability_zones")))
        .route("/availabilityzones/{name}", get(|_: A, Path(name): Path<String>| async move { Err::<Json<Value>, _>(OErr::not_found("Availability Zone", &name)) }))
        .route("/availabilityzoneprofiles", get(|s: State<Arc<ApiState>>, a: A, q: RawQuery| empty(s, a, q, "availability_zone_profiles")))
}

async fn providers(State(s): State<Arc<ApiState>>, _caller: A, RawQuery(q): RawQuery) -> Result<Json<Value>, OErr> {
    let items = vec![json!({"name": "lbd", "description": "lbd: rustls handshakes with kTLS bulk crypto, XDP/Maglev L4 forwarding (also answers to amphora and octavia)"})];
    Ok(Json(list_response(items, &query_pairs(q.as_deref()), "providers", &s.public_url)?))
}

async fn capabilities(_caller: A, Path(provider): Path<String>, key: &'static str) -> Result<Json<Value>, OErr> {
    if !PROVIDERS.contains(&provider.as_str()) {
        return Err(OErr::bad_request(format!("Provider '{provider}' is not enabled.")));
    }
    Ok(Json(json!({ key: [] })))
}

/// `/v2.0/octavia/amphorae` (admin only, as in Octavia): always empty; one amphora, its
/// stats, failover or configuration: 404.
pub fn amphora_routes() -> Router<Arc<ApiState>> {
    let none = |Path(id): Path<String>| async move { Err::<Json<Value>, _>(OErr::not_found("Amphora", &id)) };
    Router::new()
        .route(
            "/amphorae",
            get(|s: State<Arc<ApiState>>, a: A, q: RawQuery| async move {
                if !a.0.is_admin() {
                    return Err(OErr::forbidden());
                }
                empty(s, a, q, "amphorae").await
            }),
        )
        .route("/amphorae/{id}", get(none))
        .route("/amphorae/{id}/stats", get(none))
        .route("/amphorae/{id}/failover", axum::routing::put(none))
        .route("/amphorae/{id}/config", axum::routing::put(none))
}

async fn empty(State(s): State<Arc<ApiState>>, _caller: A, RawQuery(q): RawQuery, key: &'static str) -> Result<Json<Value>, OErr> {
    Ok(Json(list_response(vec![], &query_pairs(q.as_deref()), key, &s.public_url)?))
}
