//! `/v1/secrets`: create (one step, or metadata then `PUT` payload), list, get, payload, delete.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{BErr, acl, page, refuse_if_used};
use crate::api::auth::{Auth, Principal};
use crate::api::error::{Barbican, parse_body};
use crate::api::{ApiState, new_id, query_pairs, timestamp};
use crate::desired::tlsref;
use crate::store::barbican::{CONTENT_TYPES, SECRET_TYPES, SecretRec};
use crate::store::{Kind, Txn, TxnExt};

type A = Auth<Barbican>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/secrets", get(list).post(create))
        .route("/v1/secrets/", get(list).post(create))
        .route("/v1/secrets/{id}", get(show).put(put_payload).delete(delete))
        .route("/v1/secrets/{id}/payload", get(payload))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    name: Option<String>,
    secret_type: Option<String>,
    algorithm: Option<String>,
    bit_length: Option<u64>,
    mode: Option<String>,
    expiration: Option<String>,
    payload: Option<String>,
    payload_content_type: Option<String>,
    payload_content_encoding: Option<String>,
}

fn render(s: &SecretRec, base: &str) -> Value {
    let mut v = json!({
        "secret_ref": format!("{base}/v1/secrets/{}", s.id),
        "name": s.name, "status": "ACTIVE", "created": s.created, "updated": s.updated,
        "expiration": s.expiration, "algorithm": s.algorithm, "bit_length": s.bit_length, "mode": s.mode,
        "secret_type": s.secret_type, "creator_id": s.creator_id, "consumers": [],
    });
    if let Some(ct) = &s.content_type {
        v["content_types"] = json!({"default": ct});
    }
    v
}

/// The media type without parameters, checked against what Barbican stores.
fn content_type(raw: &str, field: &str) -> Result<String, BErr> {
    let ct = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if CONTENT_TYPES.contains(&ct.as_str()) {
        Ok(ct)
    } else {
        Err(BErr::bad_request(format!("{field}: content type {raw:?} is not supported (supported: {})", CONTENT_TYPES.join(", "))))
    }
}

/// Turns the payload as sent into bytes, enforcing Barbican's encoding rules and the size limit.
fn decode_payload(payload: &[u8], ct: &str, encoding: Option<&str>, max: usize) -> Result<Zeroizing<Vec<u8>>, BErr> {
    let data = match (ct, encoding.map(|e| e.to_ascii_lowercase())) {
        ("text/plain", Some(e)) if e == "base64" => {
            return Err(BErr::bad_request(
                "payload_content_encoding: base64 is not allowed with payload_content_type text/plain; \
                 send the text itself, or use application/octet-stream for base64-encoded binary data (e.g. PKCS12)",
            ));
        }
        ("text/plain", None) => Zeroizing::new(payload.to_vec()),
        (_, Some(e)) if e == "base64" => {
            let text: Vec<u8> = payload.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            Zeroizing::new(B64.decode(&text).map_err(|e| BErr::bad_request(format!("payload: not valid base64 ({e})")))?)
        }
        (_, Some(e)) => return Err(BErr::bad_request(format!("payload_content_encoding: {e:?} is not supported (only base64)"))),
        (ct, None) => return Err(BErr::bad_request(format!("payload_content_encoding: base64 is required for {ct}"))),
    };
    if data.is_empty() {
        return Err(BErr::bad_request("payload: must not be empty"));
    }
    if data.len() > max {
        return Err(BErr::new(StatusCode::PAYLOAD_TOO_LARGE, format!("payload: {} bytes exceeds the limit of {max} bytes", data.len())));
    }
    Ok(data)
}

/// Metadata for a new secret of `p`'s project.
pub(super) fn new_secret(p: &Principal, name: Option<String>, secret_type: &str, content_type: Option<&str>) -> SecretRec {
    let now = timestamp();
    SecretRec {
        id: new_id(),
        project_id: p.project_id.clone(),
        creator_id: p.user_id.clone(),
        name,
        secret_type: secret_type.into(),
        algorithm: None,
        bit_length: None,
        mode: None,
        expiration: None,
        content_type: content_type.map(str::to_string),
        created: now.clone(),
        updated: now,
    }
}

/// Stores `rec` and, if given, its payload sealed under the KEK.
pub(super) fn store_secret(tx: &mut dyn Txn, kek: &crate::store::seal::Kek, rec: &SecretRec, payload: Option<&[u8]>) -> Result<(), crate::store::StoreError> {
    tx.put(Kind::Secret, &rec.id, rec)?;
    if let Some(data) = payload {
        tx.put(Kind::SecretPayload, &rec.id, &kek.seal(&rec.id, data))?;
    }
    Ok(())
}

/// The secret, if `p` may change it (its project, or admin).
fn visible(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<SecretRec, BErr> {
    tx.get::<SecretRec>(Kind::Secret, id)?.filter(|s| p.sees(&s.project_id)).ok_or_else(|| BErr::not_found("Secret", id))
}

/// The secret, if `p` may read it (project and ACL rules).
fn readable(tx: &mut dyn Txn, p: &Principal, id: &str) -> Result<SecretRec, BErr> {
    match tx.get::<SecretRec>(Kind::Secret, id)? {
        Some(s) if acl::may_read(tx, p, "secret", id, &s.project_id, &s.creator_id)? => Ok(s),
        _ => Err(BErr::not_found("Secret", id)),
    }
}

async fn create(State(s): State<Arc<ApiState>>, Auth(p, _): A, body: Bytes) -> Result<Response, BErr> {
    p.require_write()?;
    let req: NewSecret = parse_body(&body)?;
    let secret_type = req.secret_type.unwrap_or_else(|| "opaque".into());
    if !SECRET_TYPES.contains(&secret_type.as_str()) {
        return Err(BErr::bad_request(format!("secret_type: {secret_type:?} is not one of {}", SECRET_TYPES.join(", "))));
    }
    if let Some(exp) = &req.expiration {
        let parsed = time::PrimitiveDateTime::parse(exp.trim_end_matches('Z'), &time::format_description::well_known::Iso8601::DEFAULT)
            .map_err(|_| BErr::bad_request(format!("expiration: {exp:?} is not an ISO 8601 timestamp")))?;
        if parsed.assume_utc() <= time::OffsetDateTime::now_utc() {
            return Err(BErr::bad_request(format!("expiration: {exp} is in the past")));
        }
    }
    let sealed_payload = match (&req.payload, &req.payload_content_type) {
        (None, None) => None,
        (None, Some(_)) => return Err(BErr::bad_request("payload_content_type given without payload")),
        (Some(_), None) => return Err(BErr::bad_request("payload_content_type is required when payload is given")),
        (Some(payload), Some(ct)) => {
            let ct = content_type(ct, "payload_content_type")?;
            let data = decode_payload(payload.as_bytes(), &ct, req.payload_content_encoding.as_deref(), s.max_payload)?;
            Some((ct, data))
        }
    };
    let mut rec = new_secret(&p, req.name, &secret_type, sealed_payload.as_ref().map(|(ct, _)| ct.as_str()));
    rec.algorithm = req.algorithm;
    rec.bit_length = req.bit_length;
    rec.mode = req.mode;
    rec.expiration = req.expiration;
    s.write(|tx| -> Result<(), BErr> { Ok(store_secret(tx, &s.kek, &rec, sealed_payload.as_ref().map(|(_, d)| d.as_slice()))?) })?;
    tracing::info!(secret = %rec.id, project = %rec.project_id, "secret stored");
    let href = format!("{}/v1/secrets/{}", s.public_url, rec.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, href.clone())], Json(json!({"secret_ref": href}))).into_response())
}

async fn list(State(s): State<Arc<ApiState>>, Auth(p, _): A, RawQuery(q): RawQuery) -> Result<Json<Value>, BErr> {
    let query = query_pairs(q.as_deref());
    let name = query.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone());
    let items = s.read(|tx| -> Result<Vec<Value>, BErr> {
        let mut out = Vec::new();
        for x in tx.list::<SecretRec>(Kind::Secret)? {
            if name.as_ref().is_none_or(|n| x.name.as_ref() == Some(n)) && acl::may_read(tx, &p, "secret", &x.id, &x.project_id, &x.creator_id)? {
                out.push(render(&x, &s.public_url));
            }
        }
        Ok(out)
    })?;
    Ok(Json(page(items, &query, "secrets", &format!("{}/v1/secrets", s.public_url))?))
}

async fn show(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, BErr> {
    // Old clients ask for the payload with a non-JSON Accept on the secret itself.
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
        && !accept.contains("json") && !accept.contains("*/*")
    {
        return payload(State(s), Auth(p, Default::default()), Path(id), headers).await;
    }
    let rec = s.read(|tx| readable(tx, &p, &id))?;
    Ok(Json(render(&rec, &s.public_url)).into_response())
}

async fn payload(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, BErr> {
    let (rec, data) = s.read(|tx| -> Result<_, BErr> {
        let rec = readable(tx, &p, &id)?;
        let data = tlsref::payload(tx, &s.kek, "payload", &id).map_err(|e| match e {
            tlsref::RefError::NoPayload { .. } => BErr::not_found("Payload of secret", &id),
            other => BErr::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        })?;
        Ok((rec, data))
    })?;
    let stored = rec.content_type.clone().unwrap_or_else(|| "application/octet-stream".into());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("*/*").to_ascii_lowercase();
    let wanted = accept.split(',').map(|a| a.split(';').next().unwrap_or("").trim().to_string()).collect::<Vec<_>>();
    let text_ok = std::str::from_utf8(&data).is_ok();
    let serve_as = if wanted.iter().any(|w| w == "*/*" || *w == stored) {
        stored.clone()
    } else if wanted.iter().any(|w| w == "text/plain") && text_ok {
        "text/plain".to_string()
    } else {
        return Err(BErr::new(
            StatusCode::NOT_ACCEPTABLE,
            format!("secret {id} holds {stored}{}; ask for it with Accept: {stored}", if text_ok { "" } else { " (binary)" }),
        ));
    };
    tracing::info!(secret = %id, user = %p.user_id, "secret payload read");
    Ok(([(header::CONTENT_TYPE, serve_as)], data.to_vec()).into_response())
}

async fn put_payload(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Result<StatusCode, BErr> {
    p.require_write()?;
    let raw_ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).ok_or_else(|| BErr::bad_request("Content-Type header is required"))?;
    let ct = content_type(raw_ct, "Content-Type")?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let encoding = match (ct.as_str(), encoding) {
        ("text/plain", None) | (_, Some(_)) => encoding,
        // Binary payloads may arrive raw in the two-step form.
        (_, None) => None,
    };
    let data = if ct != "text/plain" && encoding.is_none() {
        if body.is_empty() {
            return Err(BErr::bad_request("payload: must not be empty"));
        }
        if body.len() > s.max_payload {
            return Err(BErr::new(StatusCode::PAYLOAD_TOO_LARGE, format!("payload: {} bytes exceeds the limit of {} bytes", body.len(), s.max_payload)));
        }
        Zeroizing::new(body.to_vec())
    } else {
        decode_payload(&body, &ct, encoding, s.max_payload)?
    };
    s.write(|tx| -> Result<(), BErr> {
        let mut rec = visible(tx, &p, &id)?;
        if rec.content_type.is_some() {
            return Err(BErr::conflict("Secret already has data, cannot modify it."));
        }
        rec.content_type = Some(ct.clone());
        rec.updated = timestamp();
        Ok(store_secret(tx, &s.kek, &rec, Some(&data))?)
    })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(id): Path<String>) -> Result<StatusCode, BErr> {
    p.require_write()?;
    s.write(|tx| -> Result<(), BErr> {
        visible(tx, &p, &id)?;
        refuse_if_used(tx, "Secret", &id)?;
        tx.delete(Kind::Secret, &id)?;
        tx.delete(Kind::SecretPayload, &id)?;
        tx.delete(Kind::Acl, &format!("secret:{id}"))?;
        Ok(())
    })?;
    tracing::info!(secret = %id, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}
