//! The embedded SQLite store: one `objects` table, schema versioned with `PRAGMA user_version`,
//! WAL journal with synchronous=FULL so a committed request survives `kill -9` and power loss.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{Kind, Store, StoreError, Txn};

/// Schema migrations, applied in order; `user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE objects (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, id)
    );
    CREATE INDEX objects_by_kind ON objects (kind, seq);",
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1))?;
        }
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }
}

impl Store for SqliteStore {
    fn begin(&self) -> Result<Box<dyn Txn + '_>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Box::new(SqliteTxn { conn, done: false }))
    }
}

struct SqliteTxn<'a> {
    conn: MutexGuard<'a, Connection>,
    done: bool,
}

fn parse(kind: Kind, id: &str, text: String) -> Result<Value, StoreError> {
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt { kind: kind.name(), id: id.into(), error: e.to_string() })
}

impl Txn for SqliteTxn<'_> {
    fn get_raw(&mut self, kind: Kind, id: &str) -> Result<Option<Value>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT body FROM objects WHERE kind = ?1 AND id = ?2", params![kind.name(), id], |r| r.get(0))
            .optional()?;
        text.map(|t| parse(kind, id, t)).transpose()
    }

    fn list_raw(&mut self, kind: Kind) -> Result<Vec<Value>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT id, body FROM objects WHERE kind = ?1 ORDER BY seq")?;
        let rows = stmt.query_map(params![kind.name()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|row| {
            let (id, body) = row?;
            parse(kind, &id, body)
        })
        .collect()
    }

    fn put_raw(&mut self, kind: Kind, id: &str, body: &Value) -> Result<(), StoreError> {
        // `seq` keeps creation order for listings (and pagination markers) across updates.
        self.conn.execute(
            "INSERT INTO objects (kind, id, seq, body) VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM objects), ?3)
             ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body",
            params![kind.name(), id, body.to_string()],
        )?;
        Ok(())
    }

    fn delete(&mut self, kind: Kind, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM objects WHERE kind = ?1 AND id = ?2", params![kind.name(), id])? > 0)
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT")?;
        self.done = true;
        Ok(())
    }
}

impl Drop for SqliteTxn<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TxnExt;

    #[test]
    fn committed_writes_persist_and_dropped_transactions_roll_back() {
        let dir = std::env::temp_dir().join(format!("lbd-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            let mut tx = store.begin().unwrap();
            tx.put(Kind::Project, "p1", &serde_json::json!({"id": "p1", "name": "one"})).unwrap();
            tx.commit().unwrap();
            let mut tx = store.begin().unwrap();
            tx.put(Kind::Project, "p2", &serde_json::json!({"id": "p2"})).unwrap();
            drop(tx);
        }
        let store = SqliteStore::open(&path).unwrap();
        let mut tx = store.begin().unwrap();
        let all: Vec<Value> = tx.list(Kind::Project).unwrap();
        assert_eq!(all, vec![serde_json::json!({"id": "p1", "name": "one"})]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
