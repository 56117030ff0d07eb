//! The data path after accept: TLS termination hand-off, HTTP proxying or raw forwarding to the
//! members of the listener's pool.
//!
//! - [`listener`]: accept loop and per-connection dispatch.
//! - [`http`]: HTTP/1.1 and h2 proxying with hyper.
//! - [`raw`] and [`splice`]: byte forwarding, zero-copy when the client socket is offloaded.
//! - [`l7`]: L7 policies (reject, redirect, another pool) per request.
//! - [`upstream`]: connecting to members with retry, idle connection reuse.
//! - [`choose`]: member choice (`lb_algorithm`, backups, session persistence).
//! - [`cookie`]: cookies in proxied messages.
//! - [`io`]: byte counting and inactivity timeouts.
//! - [`coalesce`]: one write for the h2 responses that are ready together.
//! - [`workers`]: the threads connections run on, a one-thread runtime each.

pub mod choose;
pub mod coalesce;
pub mod cookie;
pub mod http;
pub mod io;
pub mod l7;
pub mod proxy_header;
pub mod listener;
pub mod raw;
pub mod splice;
pub mod upstream;
pub mod workers;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use rustls::ServerConfig;
use tokio::sync::Semaphore;

use crate::metrics::{BytesLabels, Metrics, ResponseCounters};
use lb_common::model::{InsertHeaders, ListenerProtocol, Timeouts};
use upstream::PoolRuntime;

/// Everything a running listener needs per connection. Swapped atomically by the reconciler:
/// connections pick up the current value at accept (and HTTP requests, per request).
pub struct ListenerRuntime {
    pub id: String,
    pub protocol: ListenerProtocol,
    pub port: u16,
    /// Present for TERMINATED_HTTPS.
    pub tls: Option<Arc<ServerConfig>>,
    pub pool: Option<Arc<PoolRuntime>>,
    /// L7 policies, tried before the default pool (HTTP listeners).
    pub l7: l7::L7Runtime,
    pub timeouts: Timeouts,
    pub insert_headers: InsertHeaders,
    /// `Strict-Transport-Security` for every response (`hsts_max_age`).
    pub hsts: Option<::http::HeaderValue>,
    /// `None`: unlimited.
    pub connection_limit: Option<Arc<Semaphore>>,
    /// Sources allowed to connect; empty allows all. XDP drops the others before they reach
    /// the kernel; this check covers interfaces without the program (loopback, for one).
    pub allowed_cidrs: Vec<lb_common::cidr::Cidr>,
    pub metrics: Arc<Metrics>,
    /// This listener's HTTP response counters.
    pub responses: ResponseCounters,
}

impl ListenerRuntime {
    /// (bytes from clients, bytes to clients) counters of this listener.
    pub fn byte_counters(&self) -> (Counter, Counter) {
        let get = |direction| {
            self.metrics.bytes.get_or_create(&BytesLabels { listener: self.id.clone(), direction }).clone()
        };
        (get("in"), get("out"))
    }
}
