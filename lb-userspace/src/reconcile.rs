//! Applies a desired-state snapshot to the running data plane: binds new listeners, swaps the
//! settings of existing ones in place (certificates, pools, limits), and closes removed ones.
//!
//! Swapping is atomic per listener: handshakes that start after [`Reconciler::apply`] returns use
//! the new certificates; established connections keep theirs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, PoolVerificationLabels, ResponseCounters};
use crate::proxy::l7::L7Runtime;
use crate::proxy::ListenerRuntime;
use crate::proxy::listener;
use crate::proxy::upstream::PoolRuntime;
use crate::tls::accept::OffloadPolicy;
use crate::tls::client::{MemberTls, member_tls};
use crate::tls::config::server_config;
use crate::xdp::XdpPlane;
use lb_common::model::{DesiredState, Id, Listener, ListenerProtocol, ListenerTls, LoadBalancer, Pool, PoolProtocol, PoolTls};

/// The outcome of one apply, per listener and pool id: `Ok` when it serves as desired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub listeners: BTreeMap<Id, Result<(), String>>,
    pub pools: BTreeMap<Id, Result<(), String>>,
}

/// A running pool and the TLS settings its member `ClientConfig` was built from.
struct RunningPool {
    runtime: Arc<PoolRuntime>,
    tls: Option<(PoolTls, Arc<MemberTls>)>,
}

struct Running {
    bind: SocketAddr,
    shared: Arc<ArcSwap<ListenerRuntime>>,
    task: JoinHandle<()>,
    /// The TLS settings the current `ServerConfig` was built from (rebuilt only when they change,
    /// so session-ticket keys survive unrelated updates).
    tls: Option<(ListenerTls, Arc<ServerConfig>)>,
    limit: Option<(u32, Arc<Semaphore>)>,
}

/// Owns the running listeners. Must be used from within a tokio runtime.
pub struct Reconciler {
    running: HashMap<Id, Running>,
    pools: HashMap<Id, RunningPool>,
    policy: Arc<OffloadPolicy>,
    metrics: Arc<Metrics>,
    /// The XDP data path, when lbd runs it (`--xdp-interface`).
    xdp: Option<Arc<XdpPlane>>,
    /// Each load balancer's `epoch` as last applied.
    epochs: HashMap<Id, u64>,
}

impl Reconciler {
    pub fn new(policy: Arc<OffloadPolicy>, metrics: Arc<Metrics>, xdp: Option<Arc<XdpPlane>>) -> Self {
        Reconciler { running: HashMap::new(), pools: HashMap::new(), policy, metrics, xdp, epochs: HashMap::new() }
    }

    /// Makes the data plane match `state`.
    pub fn apply(&mut self, state: &DesiredState) -> ApplyReport {
        self.forget_failed_over(state);
        let mut report = ApplyReport::default();
        let mut pools = HashMap::new();
        for (id, pool) in state.pools() {
            match self.build_pool(pool) {
                Ok(running) => {
                    pools.insert(id.to_string(), running);
                    report.pools.insert(id.to_string(), Ok(()));
                }
                Err(e) => {
                    tracing::warn!(pool = %id, error = %e, "pool not applied");
                    report.pools.insert(id.to_string(), Err(e));
                }
            }
        }
        self.pools = pools;

        // The XDP maps first: services for every enabled listener, Maglev rings for the
        // forwarding ones. A forwarding listener's own socket only serves flows the program
        // passes (those it did not see start); bound before its service is written, it would
        // take, for their whole life, the connections opened in between.
        let xdp = self.xdp.as_ref().map(|x| x.sync(state)).unwrap_or_default();
        let mut wanted = std::collections::HashSet::new();
        for (lb, l) in state.listeners() {
            if !(lb.admin_state_up && l.admin_state_up) {
                continue;
            }
            wanted.insert(l.id.clone());
            let result = self.apply_listener(lb, l);
            if let Err(e) = &result {
                tracing::warn!(listener = %l.id, error = %e, "listener not applied");
            }
            report.listeners.insert(l.id.clone(), result);
        }
        self.running.retain(|id, running| {
            let keep = wanted.contains(id);
            if !keep {
                tracing::info!(listener = %id, bind = %running.bind, "listener closed");
                running.task.abort();
            }
            keep
        });
        // A listener fails if either half failed.
        for (id, result) in xdp {
            if let Err(e) = result {
                let entry = report.listeners.entry(id).or_insert(Ok(()));
                if entry.is_ok() {
                    *entry = Err(format!("XDP: {e}"));
                }
            }
        }
        report
    }

    /// Drops what is kept between applies (TLS contexts, member pools with their idle
    /// connections, stick tables) for load balancers whose `epoch` changed (a failover), so
    /// they are built again from the desired state: certificates read anew, new session-ticket
    /// keys, new member connections. Listening sockets, connection limits and established
    /// connections are kept.
    fn forget_failed_over(&mut self, state: &DesiredState) {
        let mut epochs = HashMap::new();
        for lb in &state.load_balancers {
            if self.epochs.get(&lb.id).is_some_and(|e| *e != lb.epoch) {
                tracing::info!(loadbalancer = %lb.id, epoch = lb.epoch, "failover: rebuilding TLS contexts and member pools");
                for p in &lb.pools {
                    self.pools.remove(&p.id);
                }
                for l in &lb.listeners {
                    if let Some(running) = self.running.get_mut(&l.id) {
                        running.tls = None;
                    }
                }
            }
            epochs.insert(lb.id.clone(), lb.epoch);
        }
        self.epochs = epochs;
    }

    /// The runtime for `pool`. Idle member connections survive unless the TLS settings changed;
    /// the member `ClientConfig` is rebuilt only when they did (keeping its session cache).
    fn build_pool(&self, pool: &Pool) -> Result<RunningPool, String> {
        let previous = self.pools.get(&pool.id);
        let tls = match (&pool.tls, previous.and_then(|p| p.tls.as_ref())) {
            (None, _) => None,
            (Some(want), Some((old, built))) if want == old => Some((want.clone(), built.clone())),
            (Some(want), _) => {
                let built = member_tls(want, pool.protocol == PoolProtocol::Http, self.policy.may_offload()).map_err(|e| e.to_string())?;
                if !built.verified {
                    tracing::warn!(pool = %pool.id, "TLS to members without ca_tls_container_ref: traffic is encrypted but member certificates are NOT verified");
                }
                Some((want.clone(), Arc::new(built)))
            }
        };
        let same_tls = previous.map(|p| p.tls.as_ref().map(|t| &t.0)) == Some(tls.as_ref().map(|t| &t.0));
        let previous_runtime = previous.filter(|_| same_tls).map(|p| p.runtime.as_ref());
        let member = tls.as_ref().map(|(_, b)| b.clone());
        if let Some(m) = &member {
            let verification = if m.verified { "ca" } else { "none" };
            self.metrics.member_tls_verification.get_or_create(&PoolVerificationLabels { pool: pool.id.clone(), verification }).set(1);
        }
        let runtime = PoolRuntime::new(pool, previous_runtime, member, self.policy.clone(), self.metrics.clone())?;
        Ok(RunningPool { runtime: Arc::new(runtime), tls })
    }

    fn apply_listener(&mut self, lb: &LoadBalancer, l: &Listener) -> Result<(), String> {
        if matches!(l.protocol, ListenerProtocol::Udp) {
            // UDP is forwarded by XDP alone; lbd has no userspace UDP path.
            return match self.xdp {
                Some(_) => Ok(()),
                None => Err("UDP listeners are forwarded by the XDP data path: start lbd with --xdp-interface".into()),
            };
        }
        let bind = SocketAddr::new(lb.vip_address, l.protocol_port);
        let previous = self.running.get(&l.id);
        let tls = match (&l.protocol, &l.tls) {
            (ListenerProtocol::TerminatedHttps, None) => {
                return Err("TERMINATED_HTTPS listener needs default_tls_container_ref".into());
            }
            (ListenerProtocol::TerminatedHttps, Some(settings)) => match previous.and_then(|p| p.tls.as_ref()) {
                Some((old, config)) if old == settings => Some((settings.clone(), config.clone())),
                _ => {
                    let config = server_config(settings, self.policy.may_offload()).map_err(|e| e.to_string())?;
                    Some((settings.clone(), config))
                }
            },
            _ => None,
        };
        let pool = match &l.default_pool_id {
            Some(id) => Some(self.pools.get(id).map(|p| p.runtime.clone()).ok_or_else(|| format!("default_pool_id {id} is not running"))?),
            None => None,
        };
        let limit = match (l.connection_limit, previous.and_then(|p| p.limit.clone())) {
            (None, _) => None,
            (Some(n), Some((old, sem))) if old == n => Some((n, sem)),
            (Some(n), _) => Some((n, Arc::new(Semaphore::new(n as usize)))),
        };
        let l7 = L7Runtime::build(&l.l7policies, |id| self.pools.get(id).map(|p| p.runtime.clone()))?;
        let runtime = Arc::new(ListenerRuntime {
            id: l.id.clone(),
            protocol: l.protocol,
            port: l.protocol_port,
            tls: tls.as_ref().map(|(_, c)| c.clone()),
            pool,
            l7,
            timeouts: l.timeouts,
            insert_headers: l.insert_headers,
            hsts: l.hsts.as_deref().map(http::HeaderValue::from_str).transpose().map_err(|e| format!("hsts: {e}"))?,
            connection_limit: limit.as_ref().map(|(_, s)| s.clone()),
            allowed_cidrs: l.allowed_cidrs.clone(),
            metrics: self.metrics.clone(),
            responses: ResponseCounters::new(&self.metrics, &l.id),
        });

        match self.running.get_mut(&l.id) {
            Some(running) if running.bind == bind => {
                running.shared.store(runtime);
                running.tls = tls;
                running.limit = limit;
            }
            _ => {
                let socket = listener::bind(bind).map_err(|e| format!("cannot listen on {bind}: {e}"))?;
                let shared = Arc::new(ArcSwap::new(runtime));
                let task = listener::spawn(socket, shared.clone(), self.policy.clone());
                tracing::info!(listener = %l.id, %bind, protocol = ?l.protocol, "listener bound");
                if let Some(old) = self.running.insert(l.id.clone(), Running { bind, shared, task, tls, limit }) {
                    old.task.abort();
                }
            }
        }
        Ok(())
    }

    /// Where each running listener is bound (useful with port 0 in tests).
    pub fn bound(&self) -> BTreeMap<Id, SocketAddr> {
        self.running.iter().map(|(id, r)| (id.clone(), r.bind)).collect()
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        for r in self.running.values() {
            r.task.abort();
        }
    }
}
