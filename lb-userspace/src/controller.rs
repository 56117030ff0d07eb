//! The control loop between the store and the data plane: after every API write (and once at
//! start, to bring persisted state back after a restart) it builds the desired state from the
//! store, applies it through the reconciler, and records the outcome in the objects'
//! `provisioning_status` / `operating_status`.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Notify;

use crate::daemon::Daemon;
use crate::desired;
use crate::health::Verdict;
use crate::store::octavia::{ACTIVE, ERROR};
use crate::store::seal::Kek;
use crate::store::{Kind, Store, StoreError, Txn, TxnExt};

pub struct Controller {
    pub store: Arc<dyn Store>,
    pub kek: Arc<Kek>,
    pub daemon: Arc<Daemon>,
    wake: Notify,
}

/// The store's write revision: every API write transaction increments it.
pub fn revision(tx: &mut dyn Txn) -> Result<u64, StoreError> {
    Ok(tx.get_raw(Kind::Meta, "rev")?.and_then(|v| v.as_u64()).unwrap_or(0))
}

/// Marks a write: call inside every API transaction that changes Octavia or Barbican objects.
pub fn bump(tx: &mut dyn Txn) -> Result<(), StoreError> {
    let next = revision(tx)? + 1;
    tx.put_raw(Kind::Meta, "rev", &Value::from(next))
}

impl Controller {
    pub fn new(store: Arc<dyn Store>, kek: Arc<Kek>, daemon: Arc<Daemon>) -> Arc<Self> {
        Arc::new(Controller { store, kek, daemon, wake: Notify::new() })
    }

    /// Asks for a reconcile round (coalesced with any already pending).
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// Runs forever: one round now, then one per kick or change of a member's health.
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = self.restore_health() {
            tracing::error!(error = %e, "recorded health verdicts not read; members start in service");
        }
        loop {
            if let Err(e) = self.round().await {
                tracing::error!(error = %e, "reconcile round failed; retrying on the next change");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = self.daemon.health.changed().notified() => {}
            }
        }
    }

    /// Gives the health checks back the verdicts this loop recorded before a restart: a member
    /// `ERROR` stays out of service, one `ONLINE` in, until its checks say otherwise.
    fn restore_health(&self) -> Result<(), StoreError> {
        let mut tx = self.store.begin()?;
        let recorded: Vec<(String, Verdict)> = tx
            .list_raw(Kind::Member)?
            .iter()
            .filter_map(|m| {
                let healthy = match m["operating_status"].as_str()? {
                    "ONLINE" => true,
                    "ERROR" => false,
                    _ => return None,
                };
                Some((m["id"].as_str()?.to_string(), Verdict { healthy, checked: true }))
            })
            .collect();
        let out = recorded.iter().filter(|(_, v)| !v.healthy).count();
        if !recorded.is_empty() {
            tracing::info!(members = recorded.len(), out_of_service = out, "health verdicts restored from before the restart");
        }
        self.daemon.health.restore(recorded);
        Ok(())
    }

    async fn round(&self) -> Result<(), StoreError> {
        let (mut built, rev) = {
            let mut tx = self.store.begin()?;
            let rev = revision(&mut *tx)?;
            (desired::build(&mut *tx, &self.kek, rev)?, rev)
        };
        self.daemon.health.overlay(&mut built.state);
        let report = self.daemon.apply(&built.state).await;

        let mut tx = self.store.begin()?;
        if revision(&mut *tx)? != rev {
            // Newer writes arrived meanwhile; their round records the statuses.
            return Ok(());
        }
        let lbs_up: std::collections::HashMap<String, bool> = tx
            .list_raw(Kind::LoadBalancer)?
            .iter()
            .map(|v| (v["id"].as_str().unwrap_or("").to_string(), v["admin_state_up"].as_bool().unwrap_or(true)))
            .collect();
        let mut degraded = std::collections::HashSet::new();
        for mut l in tx.list_raw(Kind::Listener)? {
            let id = l["id"].as_str().unwrap_or("").to_string();
            let lb = l["loadbalancer_id"].as_str().unwrap_or("").to_string();
            let up = l["admin_state_up"].as_bool().unwrap_or(true) && lbs_up.get(&lb).copied().unwrap_or(true);
            let failure = built.errors.get(&id).cloned().or_else(|| report.listeners.get(&id).and_then(|r| r.clone().err()));
            let (prov, op) = match failure {
                Some(e) => {
                    tracing::warn!(listener = %id, error = %e, "listener provisioning failed");
                    degraded.insert(lb);
                    (ERROR, "ERROR")
                }
                None if up => (ACTIVE, "ONLINE"),
                None => (ACTIVE, "OFFLINE"),
            };
            set_status(&mut *tx, Kind::Listener, &id, &mut l, prov, op)?;
        }
        // Members: ONLINE or ERROR by their health checks (NO_MONITOR without a monitor, until
        // its first check); per pool, how many monitored members are out of how many.
        let mut down: std::collections::HashMap<String, (usize, usize)> = std::collections::HashMap::new();
        for mut m in tx.list_raw(Kind::Member)? {
            let id = m["id"].as_str().unwrap_or("").to_string();
            let op = match (m["admin_state_up"].as_bool().unwrap_or(true), self.daemon.health.verdict(&id)) {
                (false, _) => "OFFLINE",
                (true, None) | (true, Some(Verdict { checked: false, .. })) => "NO_MONITOR",
                (true, Some(v)) => {
                    let counts = down.entry(m["pool_id"].as_str().unwrap_or("").to_string()).or_default();
                    counts.1 += 1;
                    if v.healthy {
                        "ONLINE"
                    } else {
                        counts.0 += 1;
                        "ERROR"
                    }
                }
            };
            set_status(&mut *tx, Kind::Member, &id, &mut m, ACTIVE, op)?;
        }
        for mut p in tx.list_raw(Kind::Pool)? {
            let id = p["id"].as_str().unwrap_or("").to_string();
            let failure = built.errors.get(&id).cloned().or_else(|| report.pools.get(&id).and_then(|r| r.clone().err()));
            let (prov, op) = match (failure, down.get(&id).copied().unwrap_or_default()) {
                (Some(e), _) => {
                    tracing::warn!(pool = %id, error = %e, "pool provisioning failed");
                    (ERROR, "ERROR")
                }
                (None, _) if !p["admin_state_up"].as_bool().unwrap_or(true) => (ACTIVE, "OFFLINE"),
                (None, (0, _)) => (ACTIVE, "ONLINE"),
                (None, (out, all)) => {
                    degraded.insert(p["loadbalancer_id"].as_str().unwrap_or("").to_string());
                    (ACTIVE, if out == all { "ERROR" } else { "DEGRADED" })
                }
            };
            set_status(&mut *tx, Kind::Pool, &id, &mut p, prov, op)?;
        }
        for mut h in tx.list_raw(Kind::HealthMonitor)? {
            let id = h["id"].as_str().unwrap_or("").to_string();
            let op = if h["admin_state_up"].as_bool().unwrap_or(true) { "ONLINE" } else { "OFFLINE" };
            set_status(&mut *tx, Kind::HealthMonitor, &id, &mut h, ACTIVE, op)?;
        }
        // L7 policies and rules: enforced by their listener's data plane while enabled.
        for kind in [Kind::L7Policy, Kind::L7Rule] {
            for mut x in tx.list_raw(kind)? {
                let id = x["id"].as_str().unwrap_or("").to_string();
                let op = if x["admin_state_up"].as_bool().unwrap_or(true) { "ONLINE" } else { "OFFLINE" };
                set_status(&mut *tx, kind, &id, &mut x, ACTIVE, op)?;
            }
        }
        for mut lb in tx.list_raw(Kind::LoadBalancer)? {
            let id = lb["id"].as_str().unwrap_or("").to_string();
            let op = match (lbs_up.get(&id).copied().unwrap_or(true), degraded.contains(&id)) {
                (false, _) => "OFFLINE",
                (true, true) => "DEGRADED",
                (true, false) => "ONLINE",
            };
            set_status(&mut *tx, Kind::LoadBalancer, &id, &mut lb, ACTIVE, op)?;
        }
        tx.commit()
    }
}

fn set_status(tx: &mut dyn Txn, kind: Kind, id: &str, doc: &mut Value, prov: &str, op: &str) -> Result<(), StoreError> {
    if doc["provisioning_status"] == prov && doc["operating_status"] == op {
        return Ok(());
    }
    doc["provisioning_status"] = Value::from(prov);
    doc["operating_status"] = Value::from(op);
    tx.put(kind, id, doc)
}
