//! The control API: Keystone v3 (token subset), Barbican v1, Octavia v2.0 and a Neutron subnet
//! lookup on one axum server, wire-compatible with the stock `openstack` CLI. Handlers validate,
//! write the store in one transaction, and kick the controller; they never touch sockets.

pub mod auth;
pub mod barbican;
pub mod error;
pub mod keystone;
pub mod neutron;
pub mod octavia;

use std::sync::Arc;

use axum::Router;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::controller::Controller;
use crate::store::seal::Kek;
use crate::store::{Store, Txn};

/// Everything the handlers share.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub kek: Arc<Kek>,
    pub tokens: auth::Tokens,
    /// The URL clients reach lbd at (catalog entries and hrefs), without a trailing slash.
    pub public_url: String,
    pub controller: Arc<Controller>,
    /// Largest secret payload accepted, in bytes (Barbican answers 413 above it).
    pub max_payload: usize,
}

impl ApiState {
    /// Runs `f` in one store transaction and commits it; errors roll everything back.
    pub fn write<T, E: From<crate::store::StoreError>>(&self, f: impl FnOnce(&mut dyn Txn) -> Result<T, E>) -> Result<T, E> {
        let mut tx = self.store.begin()?;
        let out = f(&mut *tx)?;
        crate::controller::bump(&mut *tx)?;
        tx.commit()?;
        self.controller.kick();
        Ok(out)
    }

    /// Runs `f` in a transaction that is rolled back (reads only).
    pub fn read<T, E: From<crate::store::StoreError>>(&self, f: impl FnOnce(&mut dyn Txn) -> Result<T, E>) -> Result<T, E> {
        let mut tx = self.store.begin()?;
        f(&mut *tx)
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .merge(keystone::routes())
        .merge(barbican::routes())
        .merge(octavia::routes())
        .merge(neutron::routes())
        .with_state(state)
}

/// A new object id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `2026-11-22T21:40:00` (UTC), the timestamp format Octavia and Barbican use.
pub fn timestamp() -> String {
    OffsetDateTime::now_utc()
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"))
        .expect("formattable timestamp")
}

/// Query parameters in order, repeated keys kept.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}
