//! Barbican objects as stored. Payloads are never in these records: they are sealed separately
//! under `Kind::SecretPayload` with the same id.

use serde::{Deserialize, Serialize};

pub const SECRET_TYPES: &[&str] = &["symmetric", "public", "private", "passphrase", "certificate", "opaque"];
pub const CONTENT_TYPES: &[&str] = &["application/octet-stream", "application/pkix-cert", "application/pkcs8", "text/plain"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretRec {
    pub id: String,
    pub project_id: String,
    pub creator_id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub secret_type: String,
    #[serde(default)]
    pub algorithm: Option<String>,
    #[serde(default)]
    pub bit_length: Option<u64>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub expiration: Option<String>,
    /// `payload_content_type`; `None` until a payload is stored (two-step create).
    #[serde(default)]
    pub content_type: Option<String>,
    pub created: String,
    pub updated: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretRefEntry {
    pub name: String,
    pub secret_ref: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRec {
    pub id: String,
    pub project_id: String,
    pub creator_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub secret_refs: Vec<SecretRefEntry>,
    pub created: String,
    pub updated: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderRec {
    pub id: String,
    pub project_id: String,
    pub creator_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub meta: serde_json::Value,
    pub status: String,
    #[serde(default)]
    pub secret_id: Option<String>,
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub error_status_code: Option<String>,
    #[serde(default)]
    pub error_reason: Option<String>,
    pub created: String,
    pub updated: String,
}

/// The UUID at the end of a Barbican href (`.../secrets/<uuid>`), or the value itself if it is
/// a bare UUID. Clients resolve hrefs by their trailing UUID only, and so does lbd.
pub fn ref_id(href: &str) -> Option<String> {
    let last = href.trim_end_matches('/').rsplit('/').next()?;
    uuid::Uuid::parse_str(last).ok().map(|u| u.to_string())
}
