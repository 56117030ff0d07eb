//! `/quotas`: per-project limits on how many load balancers, listeners, pools, health monitors,
//! members, L7 policies and L7 rules a project may have (-1: unlimited, the default). Admins set
//! and reset them; a project reads its own. Every create is checked by [`Usage`]: a kind whose
//! count this request raised past the project's limit fails the whole request with 403.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::input::Input;
use super::{OErr, list_response};
use crate::api::auth::{Auth, Principal};
use crate::api::error::Octavia;
use crate::api::{ApiState, query_pairs};
use crate::store::identity::ProjectRec;
use crate::store::{Kind, Txn, TxnExt};

type A = Auth<Octavia>;

/// The limited resources: the API's field name and the objects it counts.
const RESOURCES: [(&str, Kind); 7] = [
    ("load_balancer", Kind::LoadBalancer),
    ("listener", Kind::Listener),
    ("pool", Kind::Pool),
    ("health_monitor", Kind::HealthMonitor),
    ("member", Kind::Member),
    ("l7policy", Kind::L7Policy),
    ("l7rule", Kind::L7Rule),
];

/// What the store keeps for a project with quotas set: only the limits set (absent: default).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QuotaRec {
    pub project_id: String,
    #[serde(default)]
    pub limits: std::collections::BTreeMap<String, i64>,
}

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/quotas", get(list))
        .route("/quotas/defaults", get(defaults))
        .route("/quotas/{project_id}", get(show).put(set).delete(reset))
}

/// The limit on `resource` for `q` (-1: none).
fn limit(q: Option<&QuotaRec>, resource: &str) -> i64 {
    q.and_then(|q| q.limits.get(resource).copied()).unwrap_or(-1)
}

fn render(project_id: &str, q: Option<&QuotaRec>) -> Value {
    let mut out = Map::new();
    out.insert("project_id".into(), json!(project_id));
    for (name, _) in RESOURCES {
        out.insert(name.into(), json!(limit(q, name)));
    }
    Value::Object(out)
}

/// Admins may read any project's quota; others only their own project's.
fn may_read(p: &Principal, project_id: &str) -> Result<(), OErr> {
    if p.sees(project_id) { Ok(()) } else { Err(OErr::forbidden()) }
}

fn require_admin(p: &Principal) -> Result<(), OErr> {
    if p.is_admin() { Ok(()) } else { Err(OErr::forbidden()) }
}

async fn list(State(s): State<Arc<ApiState>>, Auth(p, _): A, RawQuery(q): RawQuery) -> Result<Json<Value>, OErr> {
    let quotas: Vec<QuotaRec> = s.read(|tx| tx.list(Kind::Quota).map_err(OErr::from))?;
    let items = quotas.iter().filter(|q| p.sees(&q.project_id)).map(|q| render(&q.project_id, Some(q))).collect();
    Ok(Json(list_response(items, &query_pairs(q.as_deref()), "quotas", &s.public_url)?))
}

async fn defaults(Auth(_p, _): A) -> Json<Value> {
    let mut q = render("", None);
    q.as_object_mut().expect("render gives an object").remove("project_id");
    Json(json!({"quota": q}))
}

async fn show(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(project_id): Path<String>) -> Result<Json<Value>, OErr> {
    may_read(&p, &project_id)?;
    let q: Option<QuotaRec> = s.read(|tx| tx.get(Kind::Quota, &project_id).map_err(OErr::from))?;
    Ok(Json(json!({"quota": render(&project_id, q.as_ref())})))
}

async fn set(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(project_id): Path<String>, body: Bytes) -> Result<Json<Value>, OErr> {
    require_admin(&p)?;
    let names: Vec<&str> = RESOURCES.iter().map(|(n, _)| *n).collect();
    let input = Input::parse(&body, "quota", &names)?;
    let q = s.write(|tx| -> Result<QuotaRec, OErr> {
        if tx.get::<ProjectRec>(Kind::Project, &project_id)?.is_none() {
            return Err(OErr::not_found("Project", &project_id));
        }
        let mut q: QuotaRec = tx.get(Kind::Quota, &project_id)?.unwrap_or_else(|| QuotaRec { project_id: project_id.clone(), ..QuotaRec::default() });
        for name in &names {
            if let Some(v) = input.int(name, -1, i64::from(i32::MAX))? {
                q.limits.insert(name.to_string(), v);
            }
        }
        tx.put(Kind::Quota, &project_id, &q)?;
        Ok(q)
    })?;
    tracing::info!(project = %project_id, limits = ?q.limits, "quota set");
    Ok(Json(json!({"quota": render(&project_id, Some(&q))})))
}

async fn reset(State(s): State<Arc<ApiState>>, Auth(p, _): A, Path(project_id): Path<String>) -> Result<StatusCode, OErr> {
    require_admin(&p)?;
    s.write(|tx| -> Result<(), OErr> {
        if !tx.delete(Kind::Quota, &project_id)? {
            return Err(OErr::not_found("Quota for project", &project_id));
        }
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// A project's object counts at the start of a write; [`Usage::check`] at its end refuses the
/// write if it raised any count past the project's limit. Projects without quotas (the usual
/// case) are not counted at all.
pub struct Usage {
    project_id: String,
    /// `None`: the project has no quota, nothing to check.
    counts: Option<[usize; RESOURCES.len()]>,
}

fn count(tx: &mut dyn Txn, project_id: &str) -> Result<[usize; RESOURCES.len()], OErr> {
    let mut counts = [0; RESOURCES.len()];
    for (i, (_, kind)) in RESOURCES.iter().enumerate() {
        counts[i] = tx.list_raw(*kind)?.iter().filter(|o| o["project_id"] == project_id).count();
    }
    Ok(counts)
}

impl Usage {
    pub fn before(tx: &mut dyn Txn, project_id: &str) -> Result<Usage, OErr> {
        let limited = tx.get::<QuotaRec>(Kind::Quota, project_id)?.is_some();
        Ok(Usage { project_id: project_id.to_string(), counts: if limited { Some(count(tx, project_id)?) } else { None } })
    }

    pub fn check(self, tx: &mut dyn Txn) -> Result<(), OErr> {
        let Some(before) = self.counts else { return Ok(()) };
        let Some(q) = tx.get::<QuotaRec>(Kind::Quota, &self.project_id)? else { return Ok(()) };
        let after = count(tx, &self.project_id)?;
        for (i, (name, _)) in RESOURCES.iter().enumerate() {
            let max = limit(Some(&q), name);
            if max >= 0 && after[i] > before[i] && after[i] as i64 > max {
                return Err(OErr::new(
                    StatusCode::FORBIDDEN,
                    format!("Quota has been met for resources: {name} (project {} may have {max}; this request would make {})", self.project_id, after[i]),
                ));
            }
        }
        Ok(())
    }
}
