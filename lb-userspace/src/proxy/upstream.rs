//! Members of a pool as the data plane uses them: choice ([`super::choose`]), connecting (TCP,
//! then TLS for pools with `tls_enabled`) with retry on the next member, and idle HTTP/1.1
//! connections kept per member for reuse.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::choose::{Affinity, Chooser};
use super::io::Idle;
use super::workers;
use crate::metrics::{MemberLabels, Metrics, PoolMemberLabels, PoolOffloadLabels};
use crate::tls::accept::OffloadPolicy;
use crate::tls::budget::RecordBudget;
use crate::tls::client::{self, MemberTls};
use crate::tls::stream::PeerStream;
use crate::tls::verify;
use lb_common::model::{Pool, PoolProtocol};

/// Request body sent to members: the client's streamed body, or nothing (replayable).
pub type UpBody = Either<Incoming, Empty<Bytes>>;

/// Idle HTTP/1.1 connections kept per member on each worker. Each request holds one connection, so a pool
/// that keeps fewer than the peak number of concurrent requests closes the excess after every
/// burst and opens it again on the next (64 did so under 16 h2 connections × 10 streams, and cost
/// lbd a third of its requests per CPU-second there). Idle ones close after the pool's
/// `timeout_member_data`.
const MAX_IDLE_PER_MEMBER: usize = 512;

/// Why no member could be reached.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("pool has no member able to take traffic")]
    NoMembers,
    #[error("every member refused or timed out (last: {0})")]
    AllFailed(String),
}

/// One member: its address and idle HTTP connections, kept per data-plane worker: a
/// connection's driver task runs on the worker that opened it, so a request reuses only its
/// own worker's connections and never waits on another thread.
pub struct MemberRuntime {
    pub id: Arc<str>,
    pub addr: SocketAddr,
    idle: Box<[Mutex<Vec<MemberConn>>]>,
    /// Requests (HTTP) or connections (raw) in flight, counted for `LEAST_CONNECTIONS` only.
    in_flight: AtomicUsize,
}

/// One request or connection counted in its member's in-flight number until dropped (nothing
/// is counted unless the pool is `LEAST_CONNECTIONS`).
pub struct InFlight(Option<Arc<MemberRuntime>>);

impl InFlight {
    fn start(member: &Arc<MemberRuntime>, counted: bool) -> InFlight {
        InFlight(counted.then(|| {
            member.in_flight.fetch_add(1, Ordering::Relaxed);
            member.clone()
        }))
    }

    /// No longer counted (the member has sent its whole answer).
    pub fn end(&mut self) {
        if let Some(m) = self.0.take() {
            m.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.end();
    }
}

/// An HTTP/1.1 connection to a member.
pub struct MemberConn {
    pub sender: SendRequest<UpBody>,
    /// The connection's transmit record budget when the kernel encrypts it (kTLS).
    budget: Option<Arc<RecordBudget>>,
}

impl MemberConn {
    /// Whether the connection may serve another request: open, and not an offloaded one nearly
    /// through its key's record limit (that one is closed instead, cleanly, with close_notify,
    /// when its driver ends, before a request could run into the limit).
    fn reusable(&self) -> bool {
        !self.sender.is_closed() && !self.budget.as_ref().is_some_and(|b| b.nearly_spent())
    }
}

/// Idle member connections kept for one client connection alone: those of `PROXY` / `PROXYV2`
/// pools, whose PROXY header names that client (HAProxy keeps such connections private too).
/// Dropped, and so closed, with the client connection.
#[derive(Default)]
pub struct PrivateConns(Mutex<Vec<(Arc<str>, MemberConn)>>);

impl PrivateConns {
    /// At most this many idle connections per client connection (h2 streams may hold more
    /// at once; the rest are closed when their response ends).
    const MAX: usize = 16;

    fn take(&self, member: &str) -> Option<MemberConn> {
        let mut idle = self.0.lock().expect("private connections lock");
        while let Some(at) = idle.iter().position(|(id, _)| &**id == member) {
            let (_, c) = idle.swap_remove(at);
            if c.sender.is_ready() {
                return Some(c);
            }
        }
        None
    }

    /// Keeps a connection whose response has been fully read for this client's next request.
    pub fn release(&self, member: Arc<str>, conn: MemberConn) {
        let mut idle = self.0.lock().expect("private connections lock");
        if conn.reusable() && idle.len() < Self::MAX {
            idle.push((member, conn));
        }
    }
}

impl MemberRuntime {
    /// Returns a connection whose response has been fully read, for the next request (see
    /// [`MemberConn::reusable`]).
    pub fn release(&self, conn: MemberConn) {
        if !conn.reusable() {
            return;
        }
        let mut idle = self.idle_here().lock().expect("idle pool lock");
        if idle.len() < MAX_IDLE_PER_MEMBER {
            idle.push(conn);
        }
    }

    fn take_idle(&self) -> Option<MemberConn> {
        let mut idle = self.idle_here().lock().expect("idle pool lock");
        while let Some(c) = idle.pop() {
            if c.sender.is_ready() {
                return Some(c);
            }
        }
        None
    }

    fn idle_here(&self) -> &Mutex<Vec<MemberConn>> {
        &self.idle[workers::current() % self.idle.len()]
    }
}

/// A pool as the data plane uses it.
pub struct PoolRuntime {
    pub id: String,
    pub protocol: PoolProtocol,
    members: Vec<Arc<MemberRuntime>>,
    chooser: Chooser,
    /// TLS to members (`tls_enabled`).
    tls: Option<Arc<MemberTls>>,
    policy: Arc<OffloadPolicy>,
    metrics: Arc<Metrics>,
}

/// An HTTP connection to a member, ready for one request.
pub struct Checkout {
    pub member: Arc<MemberRuntime>,
    pub conn: MemberConn,
    /// True when the connection served an earlier request (it may have been closed meanwhile).
    pub reused: bool,
    pub in_flight: InFlight,
}

impl PoolRuntime {
    /// Builds the runtime for `pool`, keeping the idle connections of members that did not
    /// change (same id and address) from `previous` (pass `None` when the TLS settings changed).
    pub fn new(pool: &Pool, previous: Option<&PoolRuntime>, tls: Option<Arc<MemberTls>>, policy: Arc<OffloadPolicy>, metrics: Arc<Metrics>) -> Result<Self, String> {
        let members: Vec<Arc<MemberRuntime>> = pool
            .members
            .iter()
            .map(|m| {
                let addr = SocketAddr::new(m.address, m.protocol_port);
                previous.and_then(|p| p.members.iter().find(|old| *old.id == *m.id && old.addr == addr).cloned()).unwrap_or_else(|| {
                    Arc::new(MemberRuntime { id: m.id.as_str().into(), addr, idle: (0..workers::count()).map(|_| Mutex::new(Vec::new())).collect(), in_flight: AtomicUsize::new(0) })
                })
            })
            .collect();
        let ids: Vec<Arc<str>> = members.iter().map(|m| m.id.clone()).collect();
        let chooser = Chooser::new(pool, &ids, previous.map(|p| &p.chooser))?;
        Ok(PoolRuntime { id: pool.id.clone(), protocol: pool.protocol, members, chooser, tls, policy, metrics })
    }

    /// How members are chosen (persistence settings included).
    pub fn chooser(&self) -> &Chooser {
        &self.chooser
    }

    /// Members to try for a client, the chosen one first.
    fn candidates(&self, affinity: &Affinity<'_>) -> Vec<Arc<MemberRuntime>> {
        let counted = self.chooser.counts_in_flight();
        let in_flight = |i: usize| if counted { self.members[i].in_flight.load(Ordering::Relaxed) } else { 0 };
        self.chooser.order(affinity, in_flight).into_iter().map(|i| self.members[i].clone()).collect()
    }

    /// Opens a connection to the chosen member, moving on to the next on refusal or timeout.
    /// `first`: bytes sent before anything else (a PROXY protocol header), TLS included.
    pub async fn connect(&self, affinity: &Affinity<'_>, timeout: Duration, first: Option<&[u8]>) -> Result<(Arc<MemberRuntime>, PeerStream, InFlight), UpstreamError> {
        let candidates = self.candidates(affinity);
        if candidates.is_empty() {
            return Err(UpstreamError::NoMembers);
        }
        let mut last = String::new();
        for member in candidates {
            let in_flight = InFlight::start(&member, self.chooser.counts_in_flight());
            match self.connect_member(&member, timeout, first).await {
                Ok(stream) => {
                    self.chooser.learn_source(affinity.peer, &member.id);
                    return Ok((member, stream, in_flight));
                }
                Err(e) => last = format!("{}: {e}", member.addr),
            }
        }
        Err(UpstreamError::AllFailed(last))
    }

    /// An HTTP/1.1 connection for one request: an idle one of the scheduled member, else a new one,
    /// moving on to the next member when a connection cannot be made. `timeouts` are
    /// (member_connect, member_data). `private`: a client connection's own connections and the
    /// PROXY header a new one starts with (`PROXY` / `PROXYV2` pools), instead of the shared ones.
    pub async fn checkout(&self, affinity: &Affinity<'_>, timeouts: (Duration, Duration), private: Option<(&PrivateConns, &[u8])>) -> Result<Checkout, UpstreamError> {
        let candidates = self.candidates(affinity);
        if candidates.is_empty() {
            return Err(UpstreamError::NoMembers);
        }
        let mut last = String::new();
        for member in candidates {
            let in_flight = InFlight::start(&member, self.chooser.counts_in_flight());
            let idle = match private {
                Some((conns, _)) => conns.take(&member.id),
                None => member.take_idle(),
            };
            let (conn, reused) = match idle {
                Some(conn) => (conn, true),
                None => match self.open_http(&member, timeouts, private.map(|(_, header)| header)).await {
                    Ok(conn) => (conn, false),
                    Err(e) => {
                        last = format!("{}: {e}", member.addr);
                        continue;
                    }
                },
            };
            self.chooser.learn_source(affinity.peer, &member.id);
            return Ok(Checkout { member, conn, reused, in_flight });
        }
        Err(UpstreamError::AllFailed(last))
    }

    /// A fresh HTTP/1.1 connection to `member` (used to retry on a reused connection that closed),
    /// opened with `first` (a PROXY header) if given. The connection fails with `TimedOut` once no byte has moved either way for `member_data`:
    /// a member that stops answering, mid-response or before it, or a pooled connection left
    /// idle that long.
    ///
    /// The returned future is boxed: the connect and TLS handshake state, needed only for a new
    /// connection, would otherwise make every request's future (`proxy::http::serve`, which
    /// awaits this) 40 % larger.
    pub fn open_http<'a>(
        &'a self,
        member: &'a MemberRuntime,
        (connect, member_data): (Duration, Duration),
        first: Option<&'a [u8]>,
    ) -> impl Future<Output = std::io::Result<MemberConn>> + 'a {
        Box::pin(async move {
            let stream = self.connect_member(member, connect, first).await?;
            let budget = stream.record_budget();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(Idle::new(stream, member_data)))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(MemberConn { sender, budget })
        })
    }

    /// A connection to `member`: TCP, `first` (if any), then the TLS handshake for pools with
    /// TLS, each within `timeout`. A member whose certificate fails verification is counted with
    /// the reason and treated like one that refused the connection.
    async fn connect_member(&self, member: &MemberRuntime, timeout: Duration, first: Option<&[u8]>) -> std::io::Result<PeerStream> {
        let mut tcp = self.connect_tcp(member, timeout).await?;
        if let Some(bytes) = first {
            match tokio::time::timeout(timeout, tcp.write_all(bytes)).await {
                Ok(r) => r?,
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "sending the PROXY header timed out")),
            }
        }
        let Some(tls) = &self.tls else { return Ok(PeerStream::Plain(tcp)) };
        let result = match tokio::time::timeout(timeout, client::connect(tcp, tls, member.addr.ip(), &self.policy)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")),
        };
        match result {
            Ok(connected) => {
                let (offload, reason) = connected.offload.labels();
                self.metrics.member_tls.get_or_create(&PoolOffloadLabels { pool: self.id.clone(), offload, reason }).inc();
                Ok(connected.stream)
            }
            Err(e) => {
                let reason = verify::failure_reason(&e);
                tracing::debug!(pool = %self.id, member = %member.addr, reason, error = %e, "TLS to member failed");
                self.metrics.member_errors.get_or_create(&MemberLabels { pool: self.id.clone(), member: member.id.to_string(), reason }).inc();
                Err(e)
            }
        }
    }

    async fn connect_tcp(&self, member: &MemberRuntime, timeout: Duration) -> std::io::Result<TcpStream> {
        let result = match tokio::time::timeout(timeout, TcpStream::connect(member.addr)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
        };
        match result {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                self.metrics.member_connections.get_or_create(&PoolMemberLabels { pool: self.id.clone(), member: member.id.to_string() }).inc();
                Ok(tcp)
            }
            Err(e) => {
                let reason = if e.kind() == std::io::ErrorKind::TimedOut { "connect_timeout" } else { "connect_failed" };
                self.metrics
                    .member_errors
                    .get_or_create(&MemberLabels { pool: self.id.clone(), member: member.id.to_string(), reason })
                    .inc();
                Err(e)
            }
        }
    }
}
