//! Desired-state snapshots for one TERMINATED_HTTPS listener, and an in-process data plane
//! serving them (until the control API lands, tests drive the reconciler directly).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use lb_common::model::*;
use lb_userspace::certs;
use lb_userspace::daemon::Daemon;

/// A validated bundle for a fresh self-signed certificate named `name`.
pub fn bundle(dir: &Path, name: &str) -> Arc<CertificateBundle> {
    let (c, k) = crate::self_signed(dir, name, "2");
    Arc::new(certs::from_pem(name, &std::fs::read(c).unwrap(), &std::fs::read(k).unwrap(), None, None).unwrap())
}

/// TLS settings with `default` and `sni` certificates and everything else at its default.
pub fn tls_settings(default: Arc<CertificateBundle>, sni: Vec<Arc<CertificateBundle>>) -> ListenerTls {
    ListenerTls {
        default_certificate: default,
        sni_certificates: sni,
        tls_versions: vec![],
        tls_ciphers: vec![],
        alpn_protocols: vec![],
        client_auth: None,
    }
}

/// One load balancer with listener `l1` on 127.0.0.1:`port` and pool `p1` of `backends`.
pub fn state(port: u16, backends: &[SocketAddr], tls: ListenerTls, pool_protocol: PoolProtocol) -> DesiredState {
    DesiredState {
        generation: 1,
        load_balancers: vec![LoadBalancer {
            id: "lb1".into(),
            vip_address: "127.0.0.1".parse().unwrap(),
            admin_state_up: true,
            epoch: 0,
            listeners: vec![Listener {
                id: "l1".into(),
                protocol: ListenerProtocol::TerminatedHttps,
                protocol_port: port,
                admin_state_up: true,
                connection_limit: None,
                default_pool_id: Some("p1".into()),
                timeouts: Timeouts::default(),
                insert_headers: InsertHeaders { forwarded_for: true, forwarded_port: true, forwarded_proto: true, ssl: SslHeaders::default() },
                tls: Some(tls),
                allowed_cidrs: vec![],
                syn_rate: None,
                l7policies: vec![],
                hsts: None,
            }],
            pools: vec![Pool {
                id: "p1".into(),
                protocol: pool_protocol,
                lb_algorithm: LbAlgorithm::RoundRobin,
                admin_state_up: true,
                tls: None,
                health_monitor: None,
                persistence: None,
                members: backends
                    .iter()
                    .enumerate()
                    .map(|(i, a)| Member { id: format!("m{i}"), address: a.ip(), protocol_port: a.port(), weight: 1, admin_state_up: true, monitor_address: None, monitor_port: None, healthy: true, backup: false })
                    .collect(),
            }],
        }],
    }
}

/// `daemon` serving `state(..)` on a free port; panics unless the listener applied.
pub async fn serve(daemon: Arc<Daemon>, backends: &[SocketAddr], tls: ListenerTls, pool: PoolProtocol) -> (Arc<Daemon>, u16) {
    let port = crate::free_port();
    assert_eq!(daemon.apply(&state(port, backends, tls, pool)).await.listeners["l1"], Ok(()));
    (daemon, port)
}

/// Runs blocking work (a client process) off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}
