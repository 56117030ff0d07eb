//! A bound listener: the accept loop, the connection limit, and dispatch of each connection to
//! TLS termination and then HTTP or raw forwarding.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::ListenerRuntime;
use super::http::{self, ConnContext};
use super::raw;
use super::workers;
use crate::metrics::{HandshakeLabels, ListenerLabels, ListenerReasonLabels, OffloadLabels, ReasonLabels};
use crate::tls::verify;
use crate::tls::accept::{AcceptError, OffloadPolicy, accept};
use crate::tls::stream::{PeerStream, KtlsClosed};
use lb_common::model::{ListenerProtocol, PoolProtocol};

/// Binds `addr` with the options a load balancer listener wants (non-blocking, for [`spawn`]).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Runs the accept loop on `listener`, on one of the data-plane workers, until the task is
/// aborted; each connection runs on that worker or the least busy one ([`workers`]).
pub fn spawn(listener: std::net::TcpListener, shared: Arc<ArcSwap<ListenerRuntime>>, policy: Arc<OffloadPolicy>) -> JoinHandle<()> {
    workers::spawn_acceptor(async move {
        // SAFETY: the std listener owns its descriptor and keeps it open for as long as the
        // AsyncFd, which owns the listener, lives.
        let listener = match unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) } {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listener = %shared.load().id, error = %e, "cannot poll the listening socket");
                return;
            }
        };
        loop {
            // Wait for room under the connection limit before accepting: excess connections wait
            // in the kernel's backlog, as with HAProxy's maxconn.
            let limit = shared.load().connection_limit.clone();
            let permit = match limit {
                Some(sem) => match sem.acquire_owned().await {
                    Ok(p) => Some(p),
                    Err(_) => continue,
                },
                None => None,
            };
            let (tcp, peer) = match next_connection(&listener).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let rt = shared.load();
            if !rt.allowed_cidrs.is_empty() && !rt.allowed_cidrs.iter().any(|c| c.contains(peer.ip())) {
                rt.metrics.connections_denied.get_or_create(&ListenerReasonLabels { listener: rt.id.clone(), reason: "allowed_cidrs" }).inc();
                tracing::debug!(listener = %rt.id, %peer, "connection refused: source outside allowed_cidrs");
                continue;
            }
            // `handle`'s future is the task itself (no wrapping block holding copies of its
            // arguments), and the socket comes boxed (an argument keeps its slot in the task
            // for the connection's life, a box pointer is smaller): an idle connection's task
            // stays small.
            let (shared, policy) = (shared.clone(), policy.clone());
            if let Err(e) = workers::run_connection(tcp, |tcp, assigned| handle(Box::new(tcp), peer, shared, policy, permit, assigned)) {
                tracing::warn!(%peer, error = %e, "cannot register an accepted connection");
            }
        }
    })
}

/// The next connection on `listener`, already non-blocking.
async fn next_connection(listener: &AsyncFd<std::net::TcpListener>) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        if let Ok(accepted) = ready.try_io(|l| accept_nonblocking(l.get_ref())) {
            return accepted;
        }
    }
}

fn accept_nonblocking(listener: &std::net::TcpListener) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    let (stream, addr) = socket2::SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let peer = addr.as_socket().ok_or_else(|| std::io::Error::other("accepted a connection without an IP address"))?;
    Ok((stream.into(), peer))
}

/// One accepted connection, holding its place under the connection limit (`_permit`) and in
/// its worker's count (`_assigned`) until it ends.
async fn handle(tcp: Box<TcpStream>, peer: SocketAddr, shared: Arc<ArcSwap<ListenerRuntime>>, policy: Arc<OffloadPolicy>, _permit: Option<tokio::sync::OwnedSemaphorePermit>, _assigned: workers::Assigned) {
    let rt = shared.load_full();
    let _ = tcp.set_nodelay(true);
    // The labels (a copy of the listener id) are dropped here rather than kept in the task.
    let active = {
        let labels = ListenerLabels { listener: rt.id.clone() };
        rt.metrics.connections.get_or_create(&labels).inc();
        rt.metrics.active_connections.get_or_create(&labels).clone()
    };
    active.inc();

    let (client, h2, client_cert) = match (&rt.protocol, &rt.tls) {
        (ListenerProtocol::TerminatedHttps, Some(config)) => {
            // Boxed, like the handlers below: the handshake's state is freed once it completes.
            let handshake = tokio::time::timeout(rt.timeouts.client_data, Box::pin(accept(*tcp, config.clone(), &policy)))
                .await
                .unwrap_or_else(|_| {
                    Err(AcceptError::Handshake(std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out")))
                });
            let outcome = if handshake.is_ok() { "ok" } else { "failed" };
            rt.metrics.handshakes.get_or_create(&HandshakeLabels { listener: rt.id.clone(), result: outcome }).inc();
            match handshake {
                Ok(a) => {
                    let (offload, reason) = a.offload.labels();
                    rt.metrics.tls_connections.get_or_create(&OffloadLabels { offload, reason }).inc();
                    tracing::debug!(listener = %rt.id, %peer, version = a.version, cipher = a.cipher,
                        sni = a.sni.as_deref().unwrap_or(""), offload, reason, "handshake complete");
                    (a.stream, a.alpn.as_deref() == Some(b"h2"), a.client_cert)
                }
                Err(e) => {
                    if matches!(e, AcceptError::Offload(_)) {
                        rt.metrics.tls_connections.get_or_create(&OffloadLabels { offload: "none", reason: "install_failed" }).inc();
                        tracing::warn!(listener = %rt.id, %peer, error = %e, "kTLS installation failed; connection closed");
                    }
                    if let AcceptError::Handshake(io) = &e {
                        let reason = verify::failure_reason(io);
                        rt.metrics.handshake_failures.get_or_create(&ListenerReasonLabels { listener: rt.id.clone(), reason }).inc();
                        tracing::debug!(listener = %rt.id, %peer, reason, error = %e, "handshake failed");
                    }
                    active.dec();
                    return;
                }
            }
        }
        _ => (PeerStream::Plain(*tcp), false, None),
    };

    let is_tls = rt.tls.is_some();
    let http_pool = rt.pool.as_ref().map(|p| matches!(p.protocol, PoolProtocol::Http | PoolProtocol::Proxy | PoolProtocol::ProxyV2)).unwrap_or(rt.protocol != ListenerProtocol::Tcp);
    let result = if http_pool && matches!(rt.protocol, ListenerProtocol::Http | ListenerProtocol::TerminatedHttps) {
        // HTTP/1.1 clients may connect well before their first request (pre-opened, pooled
        // connections): hyper's buffers are only allocated once it arrives. h2 clients send
        // their preface at once.
        if !h2 {
            let waited = match tokio::time::timeout(rt.timeouts.client_data, std::future::poll_fn(|cx| client.poll_readable(cx))).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no request within the client data timeout")),
            };
            if let Err(e) = waited {
                tracing::debug!(listener = %rt.id, %peer, error = %e, "connection closed before its first request");
                active.dec();
                return;
            }
        }
        let record_budget = client.record_budget();
        let Ok(local) = client.tcp().local_addr() else {
            active.dec();
            return;
        };
        let ctx = Arc::new(ConnContext { listener: shared.clone(), peer, tls: is_tls, client_cert, record_budget, local, private: Default::default() });
        // Counts client bytes and closes a connection idle (no byte either way) for client_data.
        let (rx, tx) = rt.byte_counters();
        let client = super::io::Idle::new(client, rt.timeouts.client_data).counted(rx, tx);
        // Boxed: the task of a connection still waiting for its first request stays small.
        Box::pin(http::serve(client, h2, ctx)).await.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    } else {
        Box::pin(raw::forward(client, peer, &rt)).await.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    };
    if let Err(e) = result {
        if let Some(closed) = ktls_closed(e.as_ref()) {
            rt.metrics.ktls_closed.get_or_create(&ReasonLabels { reason: closed.reason() }).inc();
        }
        tracing::debug!(listener = %rt.id, %peer, error = %e, "connection ended with an error");
    }
    active.dec();
}

/// Why lbd ended an offloaded connection (a control record, the record limit), wherever it
/// sits in an error chain.
fn ktls_closed<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a KtlsClosed> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<KtlsClosed>() {
            return Some(c);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(c) = io.get_ref().and_then(|i| i.downcast_ref::<KtlsClosed>())
        {
            return Some(c);
        }
        cur = err.source();
    }
    None
}
