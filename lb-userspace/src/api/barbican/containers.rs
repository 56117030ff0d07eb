//! `/v1/containers`: generic, rsa and certificate containers of secret references.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{BErr, acl, page, refuse_if_used, users_of};
use crate::api::auth::{Auth, Principal};
use crate::api::error::{Barbican, parse_body};
use crate::api::{ApiState, new_id, query_pairs, timestamp};
use crate::store::barbican::{ContainerRec, SecretRec, SecretRefEntry, ref_id};
use crate::store::{Kind, StoreError, Txn, TxnExt};

type A = Auth<Barbican>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/containers", get(list).post(create))
        .route("/v1/containers/", get(list).post(create))
        .route("/v1/containers/{id}", get(show).delete(delete))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewContainer {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    secret_refs: Vec<SecretRefEntry>,
}

/// (allowed entry names, required entry names) per container type.
fn schema(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    match kind {
        "generic" => Some((&[], &[])),
        "certificate" => Some((&["certificate", "private_key", "private_key_passphrase", "intermediates"], &["certificate"])),
        "rsa" => Some((&["public_key", "private_key", "private_key_passphrase"], &["public_key", "private_key"])),
        _ => None,
    }
}

fn render(tx: &mut dyn Txn, c: &ContainerRec, base: &str) -> Result<Value, StoreError> {
    let consumers: Vec<Value> = users_of(tx, &c.id)?
        .into_iter()
        .map(|u| json!({"name": "lbaas", "URL": format!("{base}/v2.0/lbaas/{}s/{}", u.kind, u.id)}))
        .collect();
    Ok(json!({
        "container_ref": format!("{base}/v1/containers/{}", c.id),
        "name": c.name, "type": c.kind, "status": "ACTIVE",
        "secret_refs": c.secret_refs.iter().map(|r| json!({"name": r.name, "secret_ref": r.secret_ref})).collect::<Vec<_>>(),
        "created": c.created, "updated": c.updated, "creator_id": c.creator_id, "consumers": consumers,
    }))
}

fn visible(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<ContainerRec, BErr> {
    tx.get::<ContainerRec>(Kind::Container, id)?.filter(|c| p.sees(&c.project_id)).ok_or_else(|| BErr::not_found("Container", id))
}

async fn create(State(s): State<Arc<ApiState>>, Auth(p, _): A, body: Bytes) -> Result<Response, BErr> {
    p.require_write()?;
    let req: NewContainer = parse_body(&body)?;
    let (allowed, required) = schema(&req.kind)
        .ok_or_else(|| BErr::bad_request(format!("type: {:?} is not one of generic, rsa, certificate", req.kind)))?;
    for r in &req.secret_refs {
        if !allowed.is_empty() && !allowed.contains(&r.name.as_str()) {
            return Err(BErr::bad_request(format!("secret_refs: {:?} is not allowed in a {} container (allowed: {})", r.name, req.kind, allowed.join(", "))));
        }
        if req.secret_refs.iter().filter(|o| o.name == r.name).count() > 1 {
            return Err(BErr::bad_request(format!("secret_refs: {:?} appears more than once", r.name)));
        }
    }
    for need in required {
        if !req.secret_refs.iter().any(|r| r.name == *need) {
            return Err(BErr::bad_request(format!("secret_refs: a {} container needs a {need:?} secret", req.kind)));
        }
    }
    let now = timestamp();
    let rec = ContainerRec {
        id: new_id(),
        project_id: p.project_id.clone(),
        creator_id: p.user_id.clone(),
        name: req.name,
        kind: req.kind,
        secret_refs: req.secret_refs,
        created: now.clone(),
        updated: now,
    };
    s.write(|tx| -> Result<(), BErr> {
        for r in &rec.secret_refs {
            let id = ref_id(&r.secret_ref)
                .ok_or_else(|| BErr::bad_request(format!("secret_refs: {:?} does not end in a secret UUID", r.secret_ref)))?;
            tx.get::<SecretRec>(Kind::Secret, &id)?
                .filter(|x| p.sees(&x.project_id))
                .ok_or_else(|| BErr::not_found(&format!("Secret provided for {:?}:", r.name), &id))?;
        }
        tx.put(Kind::Container, &rec.id, &rec)?;
        Ok(())
    })?;
    let href = format!("{}/v1/containers/{}", s.public_url, rec.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, href.clone())], Json(json!({"container_ref": href}))).into_response())
}

async fn list(State(s): State<Arc<ApiState>>, Auth(p, _): A, RawQuery(q): RawQuery) -> Result<Json<Value>, BErr> {
    let query = query_pairs(q.as_deref());
    let name = query.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone());
    let items = s.read(|tx| -> Result<Vec<Value>, BErr> {
        let all: Vec<ContainerRec> = tx.list(Kind::Container)?;
        let mut out = Vec::new();
        for c in all.iter().filter(|c| name.as_ref().is_none_or(|n| c.name.as_ref() == Some(n))) {
            if acl::may_read(tx, &p, "container", &c.id, &c.project_id, &c.creator_id)? {
                out.push(render(tx, c, &s.public_url)?);
            }
        }
        Ok(out)
    })?;
    Ok(Json(page(items, &query, "containers", &format!("{}/v1/containers", s.public_url))?))
}

async fn show(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, BErr> {
    s.read(|tx| -> Result<_, BErr> {
        match tx.get::<ContainerRec>(Kind::Container, &id)? {
            Some(c) if acl::may_read(tx, &p, "container", &id, &c.project_id, &c.creator_id)? => Ok(Json(render(tx, &c, &s.public_url)?)),
            _ => Err(BErr::not_found("Container", &id)),
        }
    })
}

async fn delete(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<StatusCode, BErr> {
    p.require_write()?;
    s.write(|tx| -> Result<(), BErr> {
        visible(tx, &p, &id)?;
        refuse_if_used(tx, "Container", &id)?;
        tx.delete(Kind::Container, &id)?;
        tx.delete(Kind::Acl, &format!("container:{id}"))?;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
