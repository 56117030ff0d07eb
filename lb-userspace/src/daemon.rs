//! The running daemon: kTLS probe, metrics, the reconciler, and the HTTP endpoints that serve
//! them (the control API joins these endpoints).

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::sync::Mutex;

use crate::health::HealthChecks;
use crate::metrics::Metrics;
use crate::reconcile::{ApplyReport, Reconciler};
use crate::tls::accept::OffloadPolicy;
use crate::xdp::XdpPlane;
use lb_common::model::DesiredState;

/// Whether lbd uses kTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KtlsMode {
    /// Probe the kernel at start and offload every connection it can take.
    Auto,
    /// Keep all TLS in userspace (rustls); for comparison and troubleshooting.
    Off,
}

impl KtlsMode {
    /// The offload policy this mode starts from (probing the kernel for `auto`).
    pub fn policy(self) -> OffloadPolicy {
        match self {
            KtlsMode::Auto => OffloadPolicy::probe(),
            KtlsMode::Off => OffloadPolicy::disabled(),
        }
    }
}

/// A running data plane.
pub struct Daemon {
    pub metrics: Arc<Metrics>,
    pub policy: Arc<OffloadPolicy>,
    /// Health checks of monitored members (their verdicts go into the next desired state).
    pub health: HealthChecks,
    reconciler: Mutex<Reconciler>,
}

impl Daemon {
    /// Probes kTLS (per `mode`) and starts with nothing configured. Logs the kTLS decision.
    pub fn start(mode: KtlsMode) -> Arc<Self> {
        Self::start_with(mode.policy())
    }

    /// Starts with an explicit offload policy (for example ciphers kept in userspace).
    pub fn start_with(policy: OffloadPolicy) -> Arc<Self> {
        Self::start_full(policy, None)
    }

    /// Starts with an offload policy and, when given, the XDP data path (whose maintenance
    /// thread starts here, publishing into this daemon's metrics).
    pub fn start_full(policy: OffloadPolicy, xdp: Option<Arc<XdpPlane>>) -> Arc<Self> {
        if !policy.userspace_ciphers.is_empty() {
            let names: Vec<&str> = policy.userspace_ciphers.iter().map(|c| c.name()).collect();
            tracing::info!("kTLS policy keeps {} in userspace", names.join(", "));
        }
        if policy.client_rx_no_pad && policy.may_offload() {
            tracing::info!("kTLS: clients' TLS 1.3 records are expected unpadded and decrypted straight into lbd's buffers (TLS_RX_EXPECT_NO_PAD)");
        }
        match &policy.capabilities.ulp {
            Ok(()) => tracing::info!("{}", policy.capabilities.summary()),
            Err(_) => tracing::warn!(
                "{}; TLS records stay in userspace (rustls), counted as lb_tls_connections_total{{offload=\"userspace\"}}",
                policy.capabilities.summary()
            ),
        }
        let metrics = Arc::new(Metrics::new(&policy));
        let policy = Arc::new(policy);
        if let Some(x) = &xdp {
            x.spawn_maintenance(metrics.clone());
        }
        let reconciler = Mutex::new(Reconciler::new(policy.clone(), metrics.clone(), xdp));
        let health = HealthChecks::new(metrics.clone());
        Arc::new(Daemon { metrics, policy, health, reconciler })
    }

    /// Makes the data plane match `state`, and checks the members it monitors.
    pub async fn apply(&self, state: &DesiredState) -> ApplyReport {
        let report = self.reconciler.lock().await.apply(state);
        self.health.apply(state);
        report
    }

    /// `/metrics` and `/healthz`.
    pub fn router(self: &Arc<Self>) -> Router {
        let metrics = self.metrics.clone();
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let m = metrics.clone();
                    async move {
                        ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
    }
}
