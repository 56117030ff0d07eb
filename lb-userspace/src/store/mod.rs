//! Persistence: every control-plane object is a JSON document keyed by (kind, id) and owned by a
//! project, in an embedded SQLite database under the state directory. One transaction per API
//! request; nothing is half-written. The [`Store`] trait is the boundary a PostgreSQL store for
//! multi-node deployments will implement.

pub mod barbican;
pub mod identity;
pub mod octavia;
pub mod seal;
pub mod sqlite;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What kind of object a document is (its table, in effect).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Project,
    User,
    Secret,
    /// A secret's payload, sealed under the key-encryption key; never returned by the API as is.
    SecretPayload,
    Container,
    Order,
    Acl,
    /// Bookkeeping: the write revision (`meta/rev`).
    Meta,
    LoadBalancer,
    Listener,
    Pool,
    Member,
    HealthMonitor,
    L7Policy,
    L7Rule,
    /// Octavia quotas, one per project that has any set.
    Quota,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Project => "project",
            Kind::User => "user",
            Kind::Secret => "secret",
            Kind::SecretPayload => "secret_payload",
            Kind::Container => "container",
            Kind::Order => "order",
            Kind::Acl => "acl",
            Kind::Meta => "meta",
            Kind::LoadBalancer => "loadbalancer",
            Kind::Listener => "listener",
            Kind::Pool => "pool",
            Kind::Member => "member",
            Kind::HealthMonitor => "healthmonitor",
            Kind::L7Policy => "l7policy",
            Kind::L7Rule => "l7rule",
            Kind::Quota => "quota",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("stored {kind} {id} is not readable: {error}")]
    Corrupt { kind: &'static str, id: String, error: String },
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
}

/// One open transaction. Dropping it without [`Txn::commit`] rolls everything back.
pub trait Txn {
    fn get_raw(&mut self, kind: Kind, id: &str) -> Result<Option<Value>, StoreError>;
    /// All documents of `kind`, oldest first.
    fn list_raw(&mut self, kind: Kind) -> Result<Vec<Value>, StoreError>;
    fn put_raw(&mut self, kind: Kind, id: &str, body: &Value) -> Result<(), StoreError>;
    /// True when something was deleted.
    fn delete(&mut self, kind: Kind, id: &str) -> Result<bool, StoreError>;
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

pub trait Store: Send + Sync {
    /// Starts a write transaction (serialised with every other writer).
    fn begin(&self) -> Result<Box<dyn Txn + '_>, StoreError>;
}

/// Typed access on top of a [`Txn`].
pub trait TxnExt {
    fn get<T: DeserializeOwned>(&mut self, kind: Kind, id: &str) -> Result<Option<T>, StoreError>;
    fn list<T: DeserializeOwned>(&mut self, kind: Kind) -> Result<Vec<T>, StoreError>;
    fn put<T: Serialize>(&mut self, kind: Kind, id: &str, value: &T) -> Result<(), StoreError>;
}

impl<X: Txn + ?Sized> TxnExt for X {
    fn get<T: DeserializeOwned>(&mut self, kind: Kind, id: &str) -> Result<Option<T>, StoreError> {
        self.get_raw(kind, id)?.map(|v| decode(kind, id, v)).transpose()
    }

    fn list<T: DeserializeOwned>(&mut self, kind: Kind) -> Result<Vec<T>, StoreError> {
        self.list_raw(kind)?.into_iter().map(|v| decode(kind, "?", v)).collect()
    }

    fn put<T: Serialize>(&mut self, kind: Kind, id: &str, value: &T) -> Result<(), StoreError> {
        let v = serde_json::to_value(value).map_err(|e| StoreError::Corrupt { kind: kind.name(), id: id.into(), error: e.to_string() })?;
        self.put_raw(kind, id, &v)
    }
}

fn decode<T: DeserializeOwned>(kind: Kind, id: &str, v: Value) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt { kind: kind.name(), id: id.into(), error: e.to_string() })
}
