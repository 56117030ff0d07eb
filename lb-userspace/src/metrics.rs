//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

use crate::tls::accept::OffloadPolicy;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XdpAttachLabels {
    pub interface: String,
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XdpMemberLabels {
    /// `address:port`.
    pub member: String,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XdpMemberFlowLabels {
    pub member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub listener: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OffloadLabels {
    pub offload: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SuiteLabels {
    pub tls_version: &'static str,
    pub cipher: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub listener: String,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub pool: String,
    pub member: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolMemberLabels {
    pub pool: String,
    pub member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerReasonLabels {
    pub listener: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolOffloadLabels {
    pub pool: String,
    pub offload: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolVerificationLabels {
    pub pool: String,
    pub verification: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Every metric lbd exports.
pub struct Metrics {
    registry: Registry,
    pub connections: Family<ListenerLabels, Counter>,
    pub active_connections: Family<ListenerLabels, Gauge>,
    pub handshakes: Family<HandshakeLabels, Counter>,
    pub tls_connections: Family<OffloadLabels, Counter>,
    pub ktls_supported: Family<SuiteLabels, Gauge>,
    pub ktls_available: Family<ReasonLabels, Gauge>,
    pub ktls_closed: Family<ReasonLabels, Counter>,
    pub bytes: Family<BytesLabels, Counter>,
    pub http_responses: Family<RequestLabels, Counter>,
    pub request_errors: Family<ListenerLabels, Counter>,
    pub xdp_attached: Family<XdpAttachLabels, Gauge>,
    pub xdp_packets: Counter,
    pub xdp_bytes: Counter,
    pub xdp_passed: Counter,
    pub xdp_forwarded: Counter,
    pub xdp_dropped: Counter,
    pub xdp_listener_packets: Family<BytesLabels, Counter>,
    pub xdp_listener_bytes: Family<BytesLabels, Counter>,
    pub xdp_listener_flows: Family<ListenerLabels, Counter>,
    pub xdp_active_flows: Family<ListenerLabels, Gauge>,
    pub xdp_drops: Family<ListenerReasonLabels, Counter>,
    pub xdp_member_packets: Family<XdpMemberLabels, Counter>,
    pub xdp_member_bytes: Family<XdpMemberLabels, Counter>,
    pub xdp_member_flows: Family<XdpMemberFlowLabels, Counter>,
    pub connections_denied: Family<ListenerReasonLabels, Counter>,
    pub member_errors: Family<MemberLabels, Counter>,
    pub member_connections: Family<PoolMemberLabels, Counter>,
    pub member_healthy: Family<PoolMemberLabels, Gauge>,
    pub health_check_failures: Family<MemberLabels, Counter>,
    pub handshake_failures: Family<ListenerReasonLabels, Counter>,
    pub member_tls: Family<PoolOffloadLabels, Counter>,
    pub member_tls_verification: Family<PoolVerificationLabels, Gauge>,
    pub worker_threads: Gauge,
    pub worker_connections: Family<WorkerLabels, Gauge>,
}

impl Metrics {
    pub fn new(policy: &OffloadPolicy) -> Self {
        let caps = &policy.capabilities;
        let mut registry = Registry::with_prefix("lb");
        let m = Metrics {
            connections: Family::default(),
            active_connections: Family::default(),
            handshakes: Family::default(),
            tls_connections: Family::default(),
            ktls_supported: Family::default(),
            ktls_available: Family::default(),
            ktls_closed: Family::default(),
            bytes: Family::default(),
            http_responses: Family::default(),
            request_errors: Family::default(),
            xdp_attached: Family::default(),
            xdp_packets: Counter::default(),
            xdp_bytes: Counter::default(),
            xdp_passed: Counter::default(),
            xdp_forwarded: Counter::default(),
            xdp_dropped: Counter::default(),
            xdp_listener_packets: Family::default(),
            xdp_listener_bytes: Family::default(),
            xdp_listener_flows: Family::default(),
            xdp_active_flows: Family::default(),
            xdp_drops: Family::default(),
            xdp_member_packets: Family::default(),
            xdp_member_bytes: Family::default(),
            xdp_member_flows: Family::default(),
            connections_denied: Family::default(),
            member_errors: Family::default(),
            member_connections: Family::default(),
            member_healthy: Family::default(),
            health_check_failures: Family::default(),
            handshake_failures: Family::default(),
            member_tls: Family::default(),
            member_tls_verification: Family::default(),
            worker_threads: Gauge::default(),
            worker_connections: Family::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Client connections accepted", m.connections.clone());
        registry.register("active_connections", "Client connections open now", m.active_connections.clone());
        registry.register("tls_handshakes", "TLS handshakes by result", m.handshakes.clone());
        registry.register(
            "tls_connections",
            "TLS connections by where records are processed (ktls or userspace) and why",
            m.tls_connections.clone(),
        );
        registry.register("ktls_supported", "1 where the kernel accepted kTLS keys at start-up", m.ktls_supported.clone());
        registry.register(
            "ktls_available",
            "1 when the kernel offers kTLS; the reason label says why not otherwise",
            m.ktls_available.clone(),
        );
        registry.register("ktls_closed", "Offloaded connections lbd ended, by reason: a control record (alert, key_update, unexpected_handshake, unknown_record) or the transmit key's record limit (record_limit)", m.ktls_closed.clone());
        let updates = &policy.key_update_counts;
        registry.register("ktls_key_updates_sent", "TLS 1.3 KeyUpdates lbd sent on offloaded connections (a transmit key renewed at its record limit, or when the peer asked); needs a kernel that takes new keys (6.14+)", updates.sent.clone());
        registry.register("ktls_key_updates_received", "TLS 1.3 KeyUpdates peers sent on offloaded connections, followed by installing the next receive key (6.14+; older kernels end such connections: lb_ktls_closed_total{reason=\"key_update\"})", updates.received.clone());
        registry.register("bytes", "Client-side bytes by direction (in: from clients)", m.bytes.clone());
        registry.register("http_responses", "HTTP responses sent to clients by status code", m.http_responses.clone());
        registry.register("xdp_attached", "1 per interface lbd's XDP program is attached to, with the mode", m.xdp_attached.clone());
        registry.register("xdp_packets", "Packets seen by the XDP program (all interfaces)", m.xdp_packets.clone());
        registry.register("xdp_bytes", "Bytes seen by the XDP program", m.xdp_bytes.clone());
        registry.register("xdp_passed", "Packets the XDP program passed to the kernel stack", m.xdp_passed.clone());
        registry.register("xdp_forwarded", "Packets the XDP program translated and sent on", m.xdp_forwarded.clone());
        registry.register("xdp_dropped", "Packets the XDP program dropped (reasons per listener in lb_xdp_drops_total)", m.xdp_dropped.clone());
        registry.register("xdp_listener_packets", "Packets of a listener's VIP:port in XDP (in: from clients, out: to clients)", m.xdp_listener_packets.clone());
        registry.register("xdp_listener_bytes", "IP bytes of a listener's VIP:port in XDP", m.xdp_listener_bytes.clone());
        registry.register("xdp_listener_flows", "New flows XDP forwarded, or new connections it admitted, per listener", m.xdp_listener_flows.clone());
        registry.register("xdp_active_flows", "Open flows of a listener forwarded in XDP", m.xdp_active_flows.clone());
        registry.register("xdp_drops", "Packets XDP dropped per listener, by reason", m.xdp_drops.clone());
        registry.register("xdp_member_packets", "Packets XDP forwarded to or from a member", m.xdp_member_packets.clone());
        registry.register("xdp_member_bytes", "IP bytes XDP forwarded to or from a member", m.xdp_member_bytes.clone());
        registry.register("xdp_member_flows", "New flows XDP sent to a member", m.xdp_member_flows.clone());
        registry.register("connections_denied", "Connections lbd's own listeners closed at once, by reason (allowed_cidrs)", m.connections_denied.clone());
        registry.register("request_errors", "Requests answered with a 5xx by lbd or the member, per listener", m.request_errors.clone());
        registry.register("member_errors", "Failures talking to members, by reason (TLS verification failures by their reason)", m.member_errors.clone());
        registry.register("member_healthy", "1 while a monitored member is in service, 0 while its health checks have taken it out", m.member_healthy.clone());
        registry.register("health_check_failures", "Failed health checks of a member, by reason", m.health_check_failures.clone());
        registry.register("member_connections", "TCP connections lbd opened to a member (a pooled HTTP connection reused is not counted again)", m.member_connections.clone());
        registry.register(
            "tls_handshake_failures",
            "Client handshakes that failed, by reason (no_certificate, expired, revoked, unknown_issuer, ...)",
            m.handshake_failures.clone(),
        );
        registry.register("member_tls_connections", "TLS connections to members by where records are processed and why", m.member_tls.clone());
        registry.register(
            "member_tls_verification",
            "1 per TLS pool with how member certificates are checked: ca, or none (no ca_tls_container_ref)",
            m.member_tls_verification.clone(),
        );
        registry.register("worker_threads", "Data-plane worker threads, each running its connections from accept to close (--worker-threads)", m.worker_threads.clone());
        m.worker_threads.set(crate::proxy::workers::count() as i64);
        registry.register("worker_connections", "Client connections open on each data-plane worker thread", m.worker_connections.clone());
        let (available, reason) = match &caps.ulp {
            _ if !policy.enabled => (0, "disabled_by_config"),
            Ok(()) => (1, "available"),
            Err(_) => (0, "kernel_without_ktls"),
        };
        m.ktls_available.get_or_create(&ReasonLabels { reason }).set(available);
        for ((v, c), ok) in &caps.suites {
            m.ktls_supported.get_or_create(&SuiteLabels { tls_version: v.name(), cipher: c.name() }).set(*ok as i64);
        }
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        for (i, open) in crate::proxy::workers::open_connections().into_iter().enumerate() {
            self.worker_connections.get_or_create(&WorkerLabels { worker: i.to_string() }).set(open as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Octavia's `stats` for one listener (summed for a load balancer).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ListenerStats {
    pub active_connections: u64,
    pub total_connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub request_errors: u64,
}

impl std::ops::Add for ListenerStats {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        ListenerStats {
            active_connections: self.active_connections + o.active_connections,
            total_connections: self.total_connections + o.total_connections,
            bytes_in: self.bytes_in + o.bytes_in,
            bytes_out: self.bytes_out + o.bytes_out,
            request_errors: self.request_errors + o.request_errors,
        }
    }
}

impl Metrics {
    /// The counters of listener `id` (zero for one that never served).
    pub fn listener_stats(&self, id: &str) -> ListenerStats {
        let listener = ListenerLabels { listener: id.to_string() };
        let bytes = |direction| self.bytes.get_or_create(&BytesLabels { listener: id.to_string(), direction }).get();
        ListenerStats {
            active_connections: (self.active_connections.get_or_create(&listener).get().max(0)
                + self.xdp_active_flows.get_or_create(&listener).get().max(0)) as u64,
            total_connections: self.connections.get_or_create(&listener).get(),
            bytes_in: bytes("in"),
            bytes_out: bytes("out"),
            request_errors: self.request_errors.get_or_create(&listener).get(),
        }
    }
}

/// One listener's `lb_http_responses_total` (by status code) and `lb_request_errors_total`
/// counters, each looked up in its family once: recording a response is then one atomic add,
/// without building label strings and hashing them per request.
pub struct ResponseCounters {
    family: Family<RequestLabels, Counter>,
    listener: String,
    /// Codes 100–599, filled on first use.
    by_code: Box<[OnceLock<Counter>]>,
    errors: Counter,
}

impl ResponseCounters {
    pub fn new(metrics: &Metrics, listener: &str) -> Self {
        ResponseCounters {
            family: metrics.http_responses.clone(),
            listener: listener.to_string(),
            by_code: (100..600).map(|_| OnceLock::new()).collect(),
            errors: metrics.request_errors.get_or_create(&ListenerLabels { listener: listener.to_string() }).clone(),
        }
    }

    /// Counts one response with `status`, and a 5xx as a request error.
    pub fn record(&self, status: http::StatusCode) {
        let code = status.as_u16();
        let lookup = || self.family.get_or_create(&RequestLabels { listener: self.listener.clone(), code: status.as_str().to_string() }).clone();
        match self.by_code.get(usize::from(code).wrapping_sub(100)) {
            Some(cell) => cell.get_or_init(lookup).inc(),
            None => lookup().inc(),
        };
        if status.is_server_error() {
            self.errors.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_counters_count_every_code_and_5xx_as_errors() {
        let metrics = Metrics::new(&OffloadPolicy::disabled());
        let counters = ResponseCounters::new(&metrics, "l1");
        for code in [200, 200, 404, 503, 599, 999] {
            counters.record(http::StatusCode::from_u16(code).unwrap());
        }
        // A runtime rebuilt by the reconciler counts into the same series.
        ResponseCounters::new(&metrics, "l1").record(http::StatusCode::OK);
        let text = metrics.encode();
        for (code, n) in [("200", 3), ("404", 1), ("503", 1), ("599", 1), ("999", 1)] {
            assert!(text.contains(&format!("lb_http_responses_total{{listener=\"l1\",code=\"{code}\"}} {n}")), "{code}: {text}");
        }
        assert!(text.contains(r#"lb_request_errors_total{listener="l1"} 2"#), "{text}");
    }
}
