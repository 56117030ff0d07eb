//! `/v1/orders`: `key` (random symmetric key → secret), `asymmetric` (key pair → rsa
//! container) and `certificate` (subject DN or CSR → certificate container, issued by the CA
//! plugin). Orders complete while the request is served: ACTIVE with the reference, or ERROR
//! with `error_status_code` / `error_reason`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::ca::{CaPlugin, CertRequest, LocalCa};
use super::secrets::{new_secret, store_secret};
use super::{BErr, page};
use crate::api::auth::{Auth, Principal};
use crate::api::error::{Barbican, parse_body};
use crate::api::{ApiState, new_id, query_pairs, timestamp};
use crate::store::barbican::{ContainerRec, OrderRec, SecretRefEntry};
use crate::store::seal::{Kek, random};
use crate::store::{Kind, Txn, TxnExt};

type A = Auth<Barbican>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/orders", get(list).post(create))
        .route("/v1/orders/", get(list).post(create))
        .route("/v1/orders/{id}", get(show).delete(delete))
}

fn render(o: &OrderRec, base: &str) -> Value {
    let mut v = json!({
        "order_ref": format!("{base}/v1/orders/{}", o.id), "type": o.kind, "status": o.status,
        "created": o.created, "updated": o.updated, "creator_id": o.creator_id,
        "sub_status": "Unknown", "sub_status_message": "Unknown",
        "error_status_code": o.error_status_code, "error_reason": o.error_reason, "meta": o.meta,
    });
    if let Some(sid) = &o.secret_id {
        v["secret_ref"] = Value::from(format!("{base}/v1/secrets/{sid}"));
    }
    if let Some(cid) = &o.container_id {
        v["container_ref"] = Value::from(format!("{base}/v1/containers/{cid}"));
    }
    v
}

fn meta_str(meta: &Value, k: &str) -> Option<String> {
    meta.get(k).and_then(Value::as_str).map(str::to_string)
}

/// A container of fresh secrets (PEM payloads), named as Barbican names container entries.
fn container_of(tx: &mut dyn Txn, kek: &Kek, p: &Principal, kind: &str, name: Option<String>, entries: Vec<(&str, &str, &str, String)>, base: &str) -> Result<String, BErr> {
    let mut refs = Vec::new();
    for (entry, secret_type, content_type, pem) in entries {
        let rec = new_secret(p, name.as_ref().map(|n| format!("{n}-{entry}")), secret_type, Some(content_type));
        store_secret(tx, kek, &rec, Some(pem.as_bytes()))?;
        refs.push(SecretRefEntry { name: entry.into(), secret_ref: format!("{base}/v1/secrets/{}", rec.id) });
    }
    let now = timestamp();
    let c = ContainerRec { id: new_id(), project_id: p.project_id.clone(), creator_id: p.user_id.clone(), name, kind: kind.into(), secret_refs: refs, created: now.clone(), updated: now };
    tx.put(Kind::Container, &c.id, &c)?;
    Ok(c.id)
}

/// Fulfils an order; `Err((code, reason))` marks it ERROR.
fn fulfil(tx: &mut dyn Txn, kek: &Kek, p: &Principal, order: &mut OrderRec, base: &str) -> Result<(), (String, String)> {
    let meta = order.meta.clone();
    let name = meta_str(&meta, "name");
    let bad = |why: String| ("400".to_string(), why);
    let internal = |e: BErr| ("500".to_string(), e.message);
    match order.kind.as_str() {
        "key" => {
            let algorithm = meta_str(&meta, "algorithm").unwrap_or_else(|| "aes".into());
            let bits = meta.get("bit_length").and_then(Value::as_u64).unwrap_or(256);
            if !(bits.is_multiple_of(8) && (64..=4096).contains(&bits)) {
                return Err(bad(format!("meta.bit_length: {bits} is not a multiple of 8 between 64 and 4096")));
            }
            let ct = meta_str(&meta, "payload_content_type").unwrap_or_else(|| "application/octet-stream".into());
            if ct != "application/octet-stream" {
                return Err(bad(format!("meta.payload_content_type: {ct} is not supported for key orders (application/octet-stream)")));
            }
            let key: Vec<u8> = (0..bits / 8 / 32 + 1).flat_map(|_| random::<32>()).take((bits / 8) as usize).collect();
            let mut rec = new_secret(p, name, "symmetric", Some(&ct));
            rec.algorithm = Some(algorithm);
            rec.bit_length = Some(bits);
            rec.mode = meta_str(&meta, "mode");
            rec.expiration = meta_str(&meta, "expiration");
            store_secret(tx, kek, &rec, Some(&key)).map_err(|e| internal(e.into()))?;
            order.secret_id = Some(rec.id);
        }
        "asymmetric" => {
            if meta.get("passphrase").is_some_and(|v| !v.is_null()) {
                return Err(bad("meta.passphrase: passphrase-protected key pairs are not supported; omit it".into()));
            }
            let algorithm = meta_str(&meta, "algorithm").unwrap_or_else(|| "rsa".into()).to_ascii_lowercase();
            let bits = meta.get("bit_length").and_then(Value::as_u64).unwrap_or(2048);
            let key = match (algorithm.as_str(), bits) {
                ("rsa", 2048) => rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
                ("rsa", 3072) => rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072),
                ("rsa", 4096) => rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096),
                ("ec", 256) => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
                ("ec", 384) => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
                (a, b) => return Err(bad(format!("meta: algorithm {a} with bit_length {b} is not supported (rsa 2048/3072/4096, ec 256/384)"))),
            }
            .map_err(|e| ("500".to_string(), e.to_string()))?;
            let entries = vec![
                ("private_key", "private", "application/pkcs8", key.serialize_pem()),
                ("public_key", "public", "application/octet-stream", key.public_key_pem()),
            ];
            order.container_id = Some(container_of(tx, kek, p, "rsa", name, entries, base).map_err(internal)?);
        }
        "certificate" => {
            let request = match (meta_str(&meta, "subject_dn"), meta_str(&meta, "request_data")) {
                (_, Some(data)) => {
                    let pem = B64.decode(data.trim()).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or(data);
                    CertRequest::Csr { pem }
                }
                (Some(subject_dn), None) => CertRequest::Subject { subject_dn },
                (None, None) => return Err(bad("meta: a certificate order needs subject_dn or request_data (a CSR)".into())),
            };
            let issued = LocalCa.issue(tx, kek, &request).map_err(bad)?;
            let mut entries = vec![("certificate", "certificate", "application/pkix-cert", issued.certificate)];
            if let Some(key) = issued.private_key {
                entries.push(("private_key", "private", "application/pkcs8", key));
            }
            entries.push(("intermediates", "certificate", "application/pkix-cert", issued.intermediates));
            order.container_id = Some(container_of(tx, kek, p, "certificate", name, entries, base).map_err(internal)?);
        }
        other => return Err(bad(format!("type: {other:?} is not one of key, asymmetric, certificate"))),
    }
    Ok(())
}

async fn create(State(s): State<Arc<ApiState>>, Auth(p, _): A, body: Bytes) -> Result<Response, BErr> {
    p.require_write()?;
    let req: Value = parse_body(&body)?;
    let kind = req.get("type").and_then(Value::as_str).ok_or_else(|| BErr::bad_request("type is required (key, asymmetric, certificate)"))?.to_string();
    if !["key", "asymmetric", "certificate"].contains(&kind.as_str()) {
        return Err(BErr::bad_request(format!("type: {kind:?} is not one of key, asymmetric, certificate")));
    }
    let meta = req.get("meta").cloned().unwrap_or_else(|| json!({}));
    let now = timestamp();
    let mut order = OrderRec {
        id: new_id(),
        project_id: p.project_id.clone(),
        creator_id: p.user_id.clone(),
        kind,
        meta,
        status: "PENDING".into(),
        secret_id: None,
        container_id: None,
        error_status_code: None,
        error_reason: None,
        created: now.clone(),
        updated: now,
    };
    s.write(|tx| -> Result<(), BErr> {
        match fulfil(tx, &s.kek, &p, &mut order, &s.public_url) {
            Ok(()) => order.status = "ACTIVE".into(),
            Err((code, reason)) => {
                tracing::info!(order = %order.id, %reason, "order failed");
                order.status = "ERROR".into();
                order.error_status_code = Some(code);
                order.error_reason = Some(reason);
            }
        }
        order.updated = timestamp();
        tx.put(Kind::Order, &order.id, &order)?;
        Ok(())
    })?;
    let href = format!("{}/v1/orders/{}", s.public_url, order.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, href.clone())], Json(json!({"order_ref": href}))).into_response())
}

fn visible(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<OrderRec, BErr> {
    tx.get::<OrderRec>(Kind::Order, id)?.filter(|o| p.sees(&o.project_id)).ok_or_else(|| BErr::not_found("Order", id))
}

async fn list(State(s): State<Arc<ApiState>>, Auth(p, _): A, RawQuery(q): RawQuery) -> Result<Json<Value>, BErr> {
    let orders: Vec<OrderRec> = s.read(|tx| tx.list(Kind::Order))?;
    let items = orders.iter().filter(|o| p.sees(&o.project_id)).map(|o| render(o, &s.public_url)).collect();
    Ok(Json(page(items, &query_pairs(q.as_deref()), "orders", &format!("{}/v1/orders", s.public_url))?))
}

async fn show(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<Json<Value>, BErr> {
    let o = s.read(|tx| visible(tx, &p, &id))?;
    Ok(Json(render(&o, &s.public_url)))
}

async fn delete(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<StatusCode, BErr> {
    p.require_write()?;
    s.write(|tx| -> Result<(), BErr> {
        visible(tx, &p, &id)?;
        tx.delete(Kind::Order, &id)?;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
