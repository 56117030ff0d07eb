//! Barbican v1: version discovery, secrets (with sealed payloads), containers, and who uses
//! them (Octavia listeners and pools, containers) so nothing in use can be deleted.

pub mod acl;
mod ca;
mod containers;
mod orders;
mod secrets;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use super::ApiState;
use super::error::{ApiError, Barbican};
use crate::store::barbican::{ContainerRec, ref_id};
use crate::store::octavia::{ListenerRec, PoolRec};
use crate::store::{Kind, StoreError, Txn, TxnExt};

pub type BErr = ApiError<Barbican>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/", get(root))
        .route("/v1", get(version))
        .route("/v1/", get(version))
        .merge(secrets::routes())
        .merge(containers::routes())
        .merge(orders::routes())
        .merge(acl::routes())
}

async fn root(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    let href = format!("{}/v1/", s.public_url);
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": {"values": [{
            "id": "v1", "status": "CURRENT", "min_version": "1.0", "max_version": "1.1",
            "links": [{"rel": "self", "href": href}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.key-manager-v1+json"}]
        }]}})),
    )
}

async fn version(State(s): State<Arc<ApiState>>) -> Json<Value> {
    Json(json!({"version": {
        "id": "v1", "status": "CURRENT", "min_version": "1.0", "max_version": "1.1",
        "links": [{"rel": "self", "href": format!("{}/v1/", s.public_url)}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.key-manager-v1+json"}]
    }}))
}

/// Something that references a secret or container.
pub struct User {
    pub kind: &'static str,
    pub id: String,
    pub field: &'static str,
}

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.kind, self.id, self.field)
    }
}

/// Every listener, pool and container that references `id`.
pub fn users_of(tx: &mut dyn Txn, id: &str) -> Result<Vec<User>, StoreError> {
    let mut users = Vec::new();
    let mut check = |kind: &'static str, owner: &str, field: &'static str, href: Option<&String>| {
        if href.and_then(|h| ref_id(h)).as_deref() == Some(id) {
            users.push(User { kind, id: owner.to_string(), field });
        }
    };
    for l in tx.list::<ListenerRec>(Kind::Listener)? {
        let lid = &l.common.id;
        check("listener", lid, "default_tls_container_ref", l.default_tls_container_ref.as_ref());
        for r in &l.sni_container_refs {
            check("listener", lid, "sni_container_refs", Some(r));
        }
        check("listener", lid, "client_ca_tls_container_ref", l.client_ca_tls_container_ref.as_ref());
        check("listener", lid, "client_crl_container_ref", l.client_crl_container_ref.as_ref());
    }
    for p in tx.list::<PoolRec>(Kind::Pool)? {
        let pid = &p.common.id;
        check("pool", pid, "tls_container_ref", p.tls_container_ref.as_ref());
        check("pool", pid, "ca_tls_container_ref", p.ca_tls_container_ref.as_ref());
        check("pool", pid, "crl_container_ref", p.crl_container_ref.as_ref());
    }
    for c in tx.list::<ContainerRec>(Kind::Container)? {
        for r in &c.secret_refs {
            check("container", &c.id, "secret_refs", Some(&r.secret_ref));
        }
    }
    Ok(users)
}

/// 409 naming the first user when `id` is referenced.
pub fn refuse_if_used(tx: &mut dyn Txn, what: &str, id: &str) -> Result<(), BErr> {
    let users = users_of(tx, id)?;
    match users.first() {
        None => Ok(()),
        Some(u) => Err(BErr::conflict(format!(
            "{what} {id} is in use by {u}{}; remove the reference first",
            if users.len() > 1 { format!(" and {} more", users.len() - 1) } else { String::new() }
        ))),
    }
}

/// `limit`/`offset` paging of a Barbican collection.
pub fn page(items: Vec<Value>, query: &[(String, String)], key: &str, base: &str) -> Result<Value, BErr> {
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let num = |k: &str, default: usize| -> Result<usize, BErr> {
        get(k).map_or(Ok(default), |v| v.parse().map_err(|_| BErr::bad_request(format!("{k}: {v:?} is not a non-negative integer"))))
    };
    let (limit, offset) = (num("limit", 10)?, num("offset", 0)?);
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let mut out = json!({ key: page, "total": total });
    if offset + limit < total {
        out["next"] = Value::from(format!("{base}?limit={limit}&offset={}", offset + limit));
    }
    if offset > 0 {
        out["previous"] = Value::from(format!("{base}?limit={limit}&offset={}", offset.saturating_sub(limit)));
    }
    Ok(out)
}
