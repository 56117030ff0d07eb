//! Per-secret and per-container read ACLs (`/v1/{secrets,containers}/{id}/acl`): extra users who
//! may read, and whether the rest of the owning project may (`project-access`).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::BErr;
use crate::api::auth::{Auth, Principal};
use crate::api::error::{Barbican, parse_body};
use crate::api::{ApiState, timestamp};
use crate::store::barbican::{ContainerRec, SecretRec};
use crate::store::{Kind, StoreError, Txn, TxnExt};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Acl {
    pub users: Vec<String>,
    pub project_access: bool,
    pub created: String,
    pub updated: String,
}

fn key(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

pub fn get_acl(tx: &mut dyn Txn, kind: &str, id: &str) -> Result<Option<Acl>, StoreError> {
    tx.get(Kind::Acl, &key(kind, id))
}

/// Whether `p` may read an object of `project_id` created by `creator_id` under its ACL.
pub fn may_read(tx: &mut dyn Txn, p: &Principal, kind: &str, id: &str, project_id: &str, creator_id: &str) -> Result<bool, StoreError> {
    if p.is_admin() {
        return Ok(true);
    }
    let acl = get_acl(tx, kind, id)?;
    let same_project = p.project_id == project_id;
    Ok(match acl {
        None => same_project,
        Some(a) => (same_project && (a.project_access || p.user_id == creator_id)) || a.users.contains(&p.user_id),
    })
}

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/secrets/{id}/acl", get(show_secret).put(put_secret).patch(patch_secret).delete(delete_secret))
        .route("/v1/containers/{id}/acl", get(show_container).put(put_container).patch(patch_container).delete(delete_container))
}

/// The owner (project, creator) of the object, for callers allowed to manage its ACL.
fn owner(tx: &mut dyn Txn, p: &Principal, kind: &str, id: &str) -> Result<(String, String), BErr> {
    let found = match kind {
        "secret" => tx.get::<SecretRec>(Kind::Secret, id)?.map(|s| (s.project_id, s.creator_id)),
        _ => tx.get::<ContainerRec>(Kind::Container, id)?.map(|c| (c.project_id, c.creator_id)),
    };
    found.filter(|(project, _)| p.sees(project)).ok_or_else(|| BErr::not_found(if kind == "secret" { "Secret" } else { "Container" }, id))
}

fn render(acl: Option<&Acl>) -> Value {
    match acl {
        None => json!({"read": {"project-access": true}}),
        Some(a) => json!({"read": {"users": a.users, "project-access": a.project_access, "created": a.created, "updated": a.updated}}),
    }
}

async fn show(s: Arc<ApiState>, p: Principal, kind: &'static str, id: String) -> Result<Json<Value>, BErr> {
    s.read(|tx| {
        owner(tx, &p, kind, &id)?;
        Ok(Json(render(get_acl(tx, kind, &id)?.as_ref())))
    })
}

/// PUT replaces the ACL; PATCH changes only what the body names.
async fn set(s: Arc<ApiState>, p: Principal, kind: &'static str, id: String, body: Bytes, replace: bool) -> Result<Json<Value>, BErr> {
    p.require_write()?;
    let req: Value = parse_body(&body)?;
    let read = req.get("read").cloned().unwrap_or_else(|| json!({}));
    let users = match read.get("users") {
        None => None,
        Some(Value::Array(a)) => Some(a.iter().map(|u| u.as_str().map(str::to_string).ok_or_else(|| BErr::bad_request("read.users: expected a list of user ids"))).collect::<Result<Vec<_>, _>>()?),
        Some(_) => return Err(BErr::bad_request("read.users: expected a list of user ids")),
    };
    let project_access = match read.get("project-access") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(BErr::bad_request("read.project-access: expected true or false")),
    };
    let acl = s.write(|tx| -> Result<Acl, BErr> {
        owner(tx, &p, kind, &id)?;
        let now = timestamp();
        let old = if replace { None } else { get_acl(tx, kind, &id)? };
        let acl = Acl {
            users: users.clone().or(old.as_ref().map(|a| a.users.clone())).unwrap_or_default(),
            project_access: project_access.or(old.as_ref().map(|a| a.project_access)).unwrap_or(true),
            created: old.map(|a| a.created).unwrap_or_else(|| now.clone()),
            updated: now,
        };
        tx.put(Kind::Acl, &key(kind, &id), &acl)?;
        Ok(acl)
    })?;
    tracing::info!(kind, id = %id, users = acl.users.len(), project_access = acl.project_access, "ACL set");
    Ok(Json(json!({"acl_ref": format!("{}/v1/{kind}s/{id}/acl", s.public_url)})))
}

async fn remove(s: Arc<ApiState>, p: Principal, kind: &'static str, id: String) -> Result<Json<Value>, BErr> {
    p.require_write()?;
    s.write(|tx| -> Result<(), BErr> {
        owner(tx, &p, kind, &id)?;
        tx.delete(Kind::Acl, &key(kind, &id))?;
        Ok(())
    })?;
    Ok(Json(json!({})))
}

type A = Auth<Barbican>;
type S = State<Arc<ApiState>>;

async fn show_secret(State(s): S, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, BErr> {
    show(s, p, "secret", id).await
}
async fn put_secret(State(s): S, Auth(p, _): A, Path(id): Path<String>, b: Bytes) -> Result<Json<Value>, BErr> {
    set(s, p, "secret", id, b, true).await
}
async fn patch_secret(State(s): S, Auth(p, _): A, Path(id): Path<String>, b: Bytes) -> Result<Json<Value>, BErr> {
    set(s, p, "secret", id, b, false).await
}
async fn delete_secret(State(s): S, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, BErr> {
    remove(s, p, "secret", id).await
}
async fn show_container(State(s): S, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, BErr> {
    show(s, p, "container", id).await
}
async fn put_container(State(s): S, Auth(p, _): A, Path(id): Path<String>, b: Bytes) -> Result<Json<Value>, BErr> {
    set(s, p, "container", id, b, true).await
}
async fn patch_container(State(s): S, Auth(p, _): A, Path(id): Path<String>, b: Bytes) -> Result<Json<Value>, BErr> {
    set(s, p, "container", id, b, false).await
}
async fn delete_container(State(s): S, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, BErr> {
    remove(s, p, "container", id).await
}
