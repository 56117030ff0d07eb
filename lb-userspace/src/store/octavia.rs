//! Octavia objects as stored: the v2.0 wire field names and defaults. Relationship lists
//! (`listeners`, `pools`, `members`, ...) are not stored; they are derived when rendering, so
//! they can never disagree with the objects themselves.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const PENDING_CREATE: &str = "PENDING_CREATE";
pub const PENDING_UPDATE: &str = "PENDING_UPDATE";
pub const ACTIVE: &str = "ACTIVE";
pub const ERROR: &str = "ERROR";

fn yes() -> bool {
    true
}

fn minus_one() -> i64 {
    -1
}

fn one() -> u32 {
    1
}

/// Status and bookkeeping fields every Octavia object has.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Common {
    pub id: String,
    pub project_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    pub provisioning_status: String,
    pub operating_status: String,
    pub created_at: String,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadBalancerRec {
    #[serde(flatten)]
    pub common: Common,
    pub vip_address: String,
    #[serde(default)]
    pub vip_subnet_id: Option<String>,
    #[serde(default)]
    pub vip_network_id: Option<String>,
    #[serde(default)]
    pub vip_port_id: Option<String>,
    #[serde(default)]
    pub vip_qos_policy_id: Option<String>,
    pub provider: String,
    #[serde(default)]
    pub flavor_id: Option<String>,
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// `PUT /loadbalancers/{id}/failover` calls so far (internal, not rendered).
    #[serde(default)]
    pub failovers: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListenerRec {
    #[serde(flatten)]
    pub common: Common,
    pub loadbalancer_id: String,
    pub protocol: String,
    pub protocol_port: u16,
    #[serde(default = "minus_one")]
    pub connection_limit: i64,
    #[serde(default)]
    pub default_pool_id: Option<String>,
    #[serde(default)]
    pub default_tls_container_ref: Option<String>,
    #[serde(default)]
    pub sni_container_refs: Vec<String>,
    #[serde(default)]
    pub insert_headers: Map<String, Value>,
    pub timeout_client_data: u64,
    pub timeout_member_connect: u64,
    pub timeout_member_data: u64,
    pub timeout_tcp_inspect: u64,
    #[serde(default)]
    pub tls_versions: Vec<String>,
    #[serde(default)]
    pub tls_ciphers: Option<String>,
    #[serde(default)]
    pub alpn_protocols: Vec<String>,
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    #[serde(default)]
    pub client_ca_tls_container_ref: Option<String>,
    #[serde(default = "none_auth")]
    pub client_authentication: String,
    #[serde(default)]
    pub client_crl_container_ref: Option<String>,
    #[serde(default)]
    pub hsts_max_age: Option<u64>,
    #[serde(default)]
    pub hsts_include_subdomains: bool,
    #[serde(default)]
    pub hsts_preload: bool,
}

fn none_auth() -> String {
    "NONE".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolRec {
    #[serde(flatten)]
    pub common: Common,
    pub loadbalancer_id: String,
    pub protocol: String,
    pub lb_algorithm: String,
    #[serde(default)]
    pub session_persistence: Option<Value>,
    #[serde(default)]
    pub tls_enabled: bool,
    #[serde(default)]
    pub tls_container_ref: Option<String>,
    #[serde(default)]
    pub ca_tls_container_ref: Option<String>,
    #[serde(default)]
    pub crl_container_ref: Option<String>,
    #[serde(default)]
    pub tls_versions: Vec<String>,
    #[serde(default)]
    pub tls_ciphers: Option<String>,
    #[serde(default)]
    pub alpn_protocols: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberRec {
    #[serde(flatten)]
    pub common: Common,
    pub pool_id: String,
    pub address: String,
    pub protocol_port: u16,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub backup: bool,
    #[serde(default)]
    pub subnet_id: Option<String>,
    #[serde(default)]
    pub monitor_address: Option<String>,
    #[serde(default)]
    pub monitor_port: Option<u16>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HealthMonitorRec {
    #[serde(flatten)]
    pub common: Common,
    pub pool_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub delay: u64,
    pub timeout: u64,
    pub max_retries: u32,
    pub max_retries_down: u32,
    #[serde(default)]
    pub http_method: Option<String>,
    #[serde(default)]
    pub url_path: Option<String>,
    #[serde(default)]
    pub expected_codes: Option<String>,
    #[serde(default)]
    pub http_version: Option<f64>,
    #[serde(default)]
    pub domain_name: Option<String>,
}

/// An L7 policy (enforced by its listener's HTTP proxy: `proxy/l7.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct L7PolicyRec {
    #[serde(flatten)]
    pub common: Common,
    pub listener_id: String,
    pub action: String,
    pub position: u32,
    #[serde(default)]
    pub redirect_pool_id: Option<String>,
    #[serde(default)]
    pub redirect_url: Option<String>,
    #[serde(default)]
    pub redirect_prefix: Option<String>,
    #[serde(default)]
    pub redirect_http_code: Option<u16>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct L7RuleRec {
    #[serde(flatten)]
    pub common: Common,
    pub l7policy_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub compare_type: String,
    #[serde(default)]
    pub key: Option<String>,
    pub value: String,
    #[serde(default)]
    pub invert: bool,
}
