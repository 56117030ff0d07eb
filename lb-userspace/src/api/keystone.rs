//! Keystone v3, the subset clients need: version discovery, password authentication with
//! project scope (201 + `X-Subject-Token` + a catalog pointing every service at lbd), token
//! validation. Users and projects are managed with `lbd user|project` (see [`admin`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use super::ApiState;
use super::auth::{Auth, Principal, Token};
use super::error::{ApiError, Keystone};
use crate::store::identity::{ProjectRec, UserRec};
use crate::store::{Kind, TxnExt};

type KErr = ApiError<Keystone>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v3", get(version))
        .route("/v3/", get(version))
        .route("/v3/auth/tokens", get(validate).post(issue))
        .route("/v3/projects", get(list_projects))
        .route("/v3/projects/{id}", get(show_project))
}

fn project_body(p: &ProjectRec, base: &str) -> Value {
    json!({"id": p.id, "name": p.name, "domain_id": "default", "parent_id": "default", "enabled": true, "is_domain": false,
           "description": "", "tags": [], "links": {"self": format!("{base}/v3/projects/{}", p.id)}})
}

/// `GET /v3/projects[?name=N]`: every project for an admin (what clients use to turn a project
/// name into its id, e.g. `openstack loadbalancer quota set ... PROJECT`); others see theirs.
async fn list_projects(State(s): State<Arc<ApiState>>, Auth(caller, _): Auth<Keystone>, axum::extract::RawQuery(q): axum::extract::RawQuery) -> Result<Json<Value>, KErr> {
    let name = super::query_pairs(q.as_deref()).into_iter().find(|(k, _)| k == "name").map(|(_, v)| v);
    let projects: Vec<ProjectRec> = s.read(|tx| tx.list(Kind::Project).map_err(KErr::from))?;
    let items: Vec<Value> = projects
        .iter()
        .filter(|p| caller.sees(&p.id) && name.as_ref().is_none_or(|n| *n == p.name))
        .map(|p| project_body(p, &s.public_url))
        .collect();
    Ok(Json(json!({"projects": items, "links": {"self": format!("{}/v3/projects", s.public_url), "next": null, "previous": null}})))
}

async fn show_project(State(s): State<Arc<ApiState>>, Auth(caller, _): Auth<Keystone>, axum::extract::Path(id): axum::extract::Path<String>) -> Result<Json<Value>, KErr> {
    let p: Option<ProjectRec> = s.read(|tx| tx.get(Kind::Project, &id).map_err(KErr::from))?;
    match p.filter(|p| caller.sees(&p.id)) {
        Some(p) => Ok(Json(json!({"project": project_body(&p, &s.public_url)}))),
        None => Err(KErr::not_found("Project", &id)),
    }
}

async fn version(State(s): State<Arc<ApiState>>) -> Json<Value> {
    Json(json!({"version": {
        "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/v3/", s.public_url)}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
    }}))
}

fn catalog(base: &str) -> Value {
    let entry = |kind: &str, name: &str, url: String| {
        let endpoints: Vec<Value> = ["public", "internal", "admin"]
            .iter()
            .map(|i| json!({"id": format!("{name}-{i}"), "interface": i, "region": "RegionOne", "region_id": "RegionOne", "url": url}))
            .collect();
        json!({"id": name, "type": kind, "name": name, "endpoints": endpoints})
    };
    json!([
        entry("identity", "keystone", format!("{base}/v3")),
        entry("load-balancer", "octavia", base.to_string()),
        entry("key-manager", "barbican", base.to_string()),
        entry("network", "neutron", base.to_string()),
    ])
}

fn token_body(t: &Token, base: &str) -> Value {
    let p = &t.principal;
    let fmt = |d: time::OffsetDateTime| d.format(&Rfc3339).unwrap_or_default();
    json!({"token": {
        "methods": ["password"],
        "user": {"id": p.user_id, "name": p.user_name, "domain": {"id": "default", "name": "Default"}},
        "project": {"id": p.project_id, "name": p.project_name, "domain": {"id": "default", "name": "Default"}},
        "roles": p.roles.iter().map(|r| json!({"id": r, "name": r})).collect::<Vec<_>>(),
        "issued_at": fmt(t.issued_at), "expires_at": fmt(t.expires_at),
        "catalog": catalog(base),
    }})
}

/// `POST /v3/auth/tokens` with the password method; scope by project name or id (default: the
/// user's first project).
async fn issue(State(s): State<Arc<ApiState>>, body: Bytes) -> Result<Response, KErr> {
    let req: Value = serde_json::from_slice(&body).map_err(|e| KErr::bad_request(format!("Invalid JSON: {e}")))?;
    let auth = &req["auth"];
    let methods = auth["identity"]["methods"].as_array().cloned().unwrap_or_default();
    if !methods.iter().any(|m| m == "password") {
        return Err(KErr::bad_request("auth.identity.methods: only \"password\" is supported"));
    }
    let user = &auth["identity"]["password"]["user"];
    let password = user["password"].as_str().ok_or_else(|| KErr::bad_request("auth.identity.password.user.password is required"))?;
    let denied = || KErr::new(StatusCode::UNAUTHORIZED, "The request you have made requires authentication.");
    let (u, project) = s.read(|tx| -> Result<(UserRec, ProjectRec), KErr> {
        let users: Vec<UserRec> = tx.list(Kind::User)?;
        let u = users
            .into_iter()
            .find(|u| Some(u.name.as_str()) == user["name"].as_str() || Some(u.id.as_str()) == user["id"].as_str())
            .ok_or_else(denied)?;
        if !u.password.verify(password) {
            return Err(denied());
        }
        let projects: Vec<ProjectRec> = tx.list(Kind::Project)?;
        let scope = &auth["scope"]["project"];
        let project = match (scope["name"].as_str(), scope["id"].as_str()) {
            (None, None) => u.roles.first().and_then(|r| projects.iter().find(|p| p.id == r.project_id)).cloned(),
            (name, id) => projects.iter().find(|p| Some(p.name.as_str()) == name || Some(p.id.as_str()) == id).cloned(),
        }
        .ok_or_else(denied)?;
        Ok((u, project))
    })?;
    let roles: Vec<String> = u.roles.iter().filter(|r| r.project_id == project.id).map(|r| r.role.clone()).collect();
    if roles.is_empty() {
        return Err(denied());
    }
    let principal = Principal { user_id: u.id, user_name: u.name, project_id: project.id, project_name: project.name, roles };
    let (id, token) = s.tokens.issue(principal);
    tracing::info!(user = %token.principal.user_name, project = %token.principal.project_name, "token issued");
    Ok((StatusCode::CREATED, [("x-subject-token", id)], Json(token_body(&token, &s.public_url))).into_response())
}

/// `GET /v3/auth/tokens`: the caller's token in `X-Auth-Token`, the one to check in
/// `X-Subject-Token`.
async fn validate(State(s): State<Arc<ApiState>>, _caller: Auth<Keystone>, headers: HeaderMap) -> Result<Json<Value>, KErr> {
    let subject = headers.get("x-subject-token").and_then(|v| v.to_str().ok()).ok_or_else(|| KErr::bad_request("X-Subject-Token header is required"))?;
    let t = s.tokens.validate(subject).ok_or_else(|| KErr::not_found("Token", "(subject)"))?;
    Ok(Json(token_body(&t, &s.public_url)))
}

/// Identity administration used by `lbd user|project` and first start.
pub mod admin {
    use crate::store::identity::{PasswordHash, ProjectRec, ROLES, RoleAssignment, UserRec};
    use crate::store::{Kind, Store, TxnExt};

    fn project_by_name(tx: &mut dyn crate::store::Txn, name: &str) -> anyhow::Result<Option<ProjectRec>> {
        Ok(tx.list::<ProjectRec>(Kind::Project)?.into_iter().find(|p| p.name == name))
    }

    pub fn add_project(store: &dyn Store, name: &str) -> anyhow::Result<ProjectRec> {
        let mut tx = store.begin()?;
        if project_by_name(&mut *tx, name)?.is_some() {
            anyhow::bail!("project {name:?} already exists");
        }
        let p = ProjectRec { id: uuid::Uuid::new_v4().simple().to_string(), name: name.into() };
        tx.put(Kind::Project, &p.id, &p)?;
        tx.commit()?;
        Ok(p)
    }

    pub fn projects(store: &dyn Store) -> anyhow::Result<Vec<ProjectRec>> {
        Ok(store.begin()?.list(Kind::Project)?)
    }

    /// Adds `name` with `role` on `project`, or (if the user exists) resets the password and
    /// adds the role assignment.
    pub fn add_user(store: &dyn Store, name: &str, password: &str, project: &str, role: &str) -> anyhow::Result<UserRec> {
        if !ROLES.contains(&role) {
            anyhow::bail!("role {role:?} is not one of {}", ROLES.join(", "));
        }
        if password.is_empty() {
            anyhow::bail!("the password must not be empty");
        }
        let mut tx = store.begin()?;
        let p = project_by_name(&mut *tx, project)?.ok_or_else(|| anyhow::anyhow!("no project {project:?} (lbd project add {project})"))?;
        let existing = tx.list::<UserRec>(Kind::User)?.into_iter().find(|u| u.name == name);
        let mut u = existing.unwrap_or_else(|| UserRec {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: name.into(),
            password: PasswordHash::new(password),
            roles: vec![],
        });
        u.password = PasswordHash::new(password);
        u.roles.retain(|r| r.project_id != p.id);
        u.roles.push(RoleAssignment { project_id: p.id.clone(), role: role.into() });
        tx.put(Kind::User, &u.id, &u)?;
        tx.commit()?;
        Ok(u)
    }

    pub fn users(store: &dyn Store) -> anyhow::Result<Vec<UserRec>> {
        Ok(store.begin()?.list(Kind::User)?)
    }

    pub fn delete_user(store: &dyn Store, name: &str) -> anyhow::Result<()> {
        let mut tx = store.begin()?;
        let u = tx.list::<UserRec>(Kind::User)?.into_iter().find(|u| u.name == name).ok_or_else(|| anyhow::anyhow!("no user {name:?}"))?;
        tx.delete(Kind::User, &u.id)?;
        tx.commit()?;
        Ok(())
    }

    /// First start: project `admin` and user `admin` (role admin) with `password`.
    pub fn bootstrap(store: &dyn Store, password: &str) -> anyhow::Result<()> {
        if !projects(store)?.iter().any(|p| p.name == "admin") {
            add_project(store, "admin")?;
        }
        add_user(store, "admin", password, "admin", "admin")?;
        Ok(())
    }
}
