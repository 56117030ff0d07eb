//! Members of a pool as the data plane uses them: weighted round-robin choice, connecting (TCP,
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
use tokio::net::TcpStream;

use super::io::Idle;
use super::workers;
use crate::metrics::{MemberLabels, Metrics, PoolMemberLabels, PoolOffloadLabels};
use crate::tls::accept::OffloadPolicy;
use crate::tls::client::{self, MemberTls};
use crate::tls::stream::PeerStream;
use crate::tls::verify;
use lb_common::balance::Schedule;
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
    pub id: String,
    pub addr: SocketAddr,
    idle: Box<[Mutex<Vec<SendRequest<UpBody>>>]>,
}

impl MemberRuntime {
    /// Returns a connection whose response has been fully read, for the next request.
    pub fn release(&self, sender: SendRequest<UpBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle_here().lock().expect("idle pool lock");
        if idle.len() < MAX_IDLE_PER_MEMBER {
            idle.push(sender);
        }
    }

    fn take_idle(&self) -> Option<SendRequest<UpBody>> {
        let mut idle = self.idle_here().lock().expect("idle pool lock");
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn idle_here(&self) -> &Mutex<Vec<SendRequest<UpBody>>> {
        &self.idle[workers::current() % self.idle.len()]
    }
}

/// A pool as the data plane uses it.
pub struct PoolRuntime {
    pub id: String,
    pub protocol: PoolProtocol,
    members: Vec<Arc<MemberRuntime>>,
    schedule: Schedule,
    cursor: AtomicUsize,
    /// TLS to members (`tls_enabled`).
    tls: Option<Arc<MemberTls>>,
    policy: Arc<OffloadPolicy>,
    metrics: Arc<Metrics>,
}

/// An HTTP connection to a member, ready for one request.
pub struct Checkout {
    pub member: Arc<MemberRuntime>,
    pub sender: SendRequest<UpBody>,
    /// True when the connection served an earlier request (it may have been closed meanwhile).
    pub reused: bool,
}

impl PoolRuntime {
    /// Builds the runtime for `pool`, keeping the idle connections of members that did not
    /// change (same id and address) from `previous` (pass `None` when the TLS settings changed).
    pub fn new(pool: &Pool, previous: Option<&PoolRuntime>, tls: Option<Arc<MemberTls>>, policy: Arc<OffloadPolicy>, metrics: Arc<Metrics>) -> Self {
        let members: Vec<Arc<MemberRuntime>> = pool
            .members
            .iter()
            .map(|m| {
                let addr = SocketAddr::new(m.address, m.protocol_port);
                previous
                    .and_then(|p| p.members.iter().find(|old| old.id == m.id && old.addr == addr).cloned())
                    .unwrap_or_else(|| Arc::new(MemberRuntime { id: m.id.clone(), addr, idle: (0..workers::count()).map(|_| Mutex::new(Vec::new())).collect() }))
            })
            .collect();
        let weights: Vec<u32> = if pool.admin_state_up {
            pool.members.iter().map(|m| m.effective_weight()).collect()
        } else {
            vec![0; pool.members.len()]
        };
        let cursor = previous.map(|p| p.cursor.load(Ordering::Relaxed)).unwrap_or(0);
        PoolRuntime {
            id: pool.id.clone(),
            protocol: pool.protocol,
            members,
            schedule: Schedule::smooth_weighted(&weights),
            cursor: AtomicUsize::new(cursor),
            tls,
            policy,
            metrics,
        }
    }

    /// Members to try for the next connection, the scheduled one first.
    fn candidates(&self) -> Vec<Arc<MemberRuntime>> {
        let cursor = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.schedule.candidates(cursor, self.members.len()).into_iter().map(|i| self.members[i].clone()).collect()
    }

    /// Opens a TCP connection to the scheduled member, moving on to the next on refusal or timeout.
    pub async fn connect(&self, timeout: Duration) -> Result<(Arc<MemberRuntime>, PeerStream), UpstreamError> {
        let candidates = self.candidates();
        if candidates.is_empty() {
            return Err(UpstreamError::NoMembers);
        }
        let mut last = String::new();
        for member in candidates {
            match self.connect_member(&member, timeout).await {
                Ok(stream) => return Ok((member, stream)),
                Err(e) => last = format!("{}: {e}", member.addr),
            }
        }
        Err(UpstreamError::AllFailed(last))
    }

    /// An HTTP/1.1 connection for one request: an idle one of the scheduled member, else a new one,
    /// moving on to the next member when a connection cannot be made. `timeouts` are
    /// (member_connect, member_data).
    pub async fn checkout(&self, timeouts: (Duration, Duration)) -> Result<Checkout, UpstreamError> {
        let candidates = self.candidates();
        if candidates.is_empty() {
            return Err(UpstreamError::NoMembers);
        }
        let mut last = String::new();
        for member in candidates {
            if let Some(sender) = member.take_idle() {
                return Ok(Checkout { member, sender, reused: true });
            }
            match self.open_http(&member, timeouts).await {
                Ok(sender) => return Ok(Checkout { member, sender, reused: false }),
                Err(e) => last = format!("{}: {e}", member.addr),
            }
        }
        Err(UpstreamError::AllFailed(last))
    }

    /// A fresh HTTP/1.1 connection to `member` (used to retry on a reused connection that closed).
    /// The connection fails with `TimedOut` once no byte has moved either way for `member_data`:
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
    ) -> impl Future<Output = std::io::Result<SendRequest<UpBody>>> + 'a {
        Box::pin(async move {
            let stream = self.connect_member(member, connect).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(Idle::new(stream, member_data)))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(sender)
        })
    }

    /// A connection to `member`: TCP, then the TLS handshake for pools with TLS, each within
    /// `timeout`. A member whose certificate fails verification is counted with the reason and
    /// treated like one that refused the connection.
    async fn connect_member(&self, member: &MemberRuntime, timeout: Duration) -> std::io::Result<PeerStream> {
        let tcp = self.connect_tcp(member, timeout).await?;
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
                self.metrics.member_errors.get_or_create(&MemberLabels { pool: self.id.clone(), member: member.id.clone(), reason }).inc();
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
                self.metrics.member_connections.get_or_create(&PoolMemberLabels { pool: self.id.clone(), member: member.id.clone() }).inc();
                Ok(tcp)
            }
            Err(e) => {
                let reason = if e.kind() == std::io::ErrorKind::TimedOut { "connect_timeout" } else { "connect_failed" };
                self.metrics
                    .member_errors
                    .get_or_create(&MemberLabels { pool: self.id.clone(), member: member.id.clone(), reason })
                    .inc();
                Err(e)
            }
        }
    }
}
