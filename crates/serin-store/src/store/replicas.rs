//! The replica registry: one heartbeat row per server process. A child module of `store`.
//!
//! Operational state like the leadership epoch: not audited, and written without the store's
//! write lock on PostgreSQL (each replica writes only its own row, and nothing is numbered),
//! so a heartbeat never queues behind a release write.

use std::collections::BTreeMap;

use super::{Backend, Store, StoreError};
use crate::model::ReplicaRow;

type ReplicaTuple = (
    String,
    String,
    i64,
    String,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    i64,
    String,
    String,
    i64,
    Option<i64>,
);

macro_rules! replica_cols {
    () => {
        "id, host, pid, version, started_ms, last_seen_ms, is_leader, epoch, \
         listener_connected, caught_up, behind, published, sdk_streams, gone_ms"
    };
}

/// Runs one statement (an expression, expanded once per backend) outside any transaction on
/// the backend's writing connection; evaluates to the rows affected.
macro_rules! execute_plain {
    ($store:expr, $query:expr) => {{
        match &$store.backend {
            Backend::Sqlite { writer, .. } => $query.execute(writer).await?.rows_affected(),
            Backend::Postgres(pool) => $query.execute(pool).await?.rows_affected(),
        }
    }};
}

fn replica_row(t: ReplicaTuple) -> Result<ReplicaRow, StoreError> {
    let behind: Vec<String> = serde_json::from_str(&t.10)
        .map_err(|e| StoreError::Corrupt(format!("replica {}: behind: {e}", t.0)))?;
    let published: BTreeMap<String, i64> = serde_json::from_str(&t.11)
        .map_err(|e| StoreError::Corrupt(format!("replica {}: published: {e}", t.0)))?;
    Ok(ReplicaRow {
        id: t.0,
        host: t.1,
        pid: t.2,
        version: t.3,
        started_ms: t.4,
        last_seen_ms: t.5,
        is_leader: t.6 != 0,
        epoch: t.7,
        listener_connected: t.8.map(|c| c != 0),
        caught_up: t.9 != 0,
        behind,
        published,
        sdk_streams: t.12,
        gone_ms: t.13,
    })
}

impl Store {
    /// Inserts or replaces a replica's row (its heartbeat), keyed by `id`.
    pub async fn upsert_replica(&self, row: &ReplicaRow) -> Result<(), StoreError> {
        let behind = serde_json::to_string(&row.behind)
            .map_err(|e| StoreError::Invalid(format!("replica behind: {e}")))?;
        let published = serde_json::to_string(&row.published)
            .map_err(|e| StoreError::Invalid(format!("replica published: {e}")))?;
        let sql = concat!(
            "INSERT INTO replicas (",
            replica_cols!(),
            ") \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
             version = excluded.version, started_ms = excluded.started_ms, \
             last_seen_ms = excluded.last_seen_ms, is_leader = excluded.is_leader, \
             epoch = excluded.epoch, listener_connected = excluded.listener_connected, \
             caught_up = excluded.caught_up, behind = excluded.behind, \
             published = excluded.published, sdk_streams = excluded.sdk_streams, \
             gone_ms = excluded.gone_ms"
        );
        execute_plain!(
            self,
            sqlx::query(sql)
                .bind(&row.id)
                .bind(&row.host)
                .bind(row.pid)
                .bind(&row.version)
                .bind(row.started_ms)
                .bind(row.last_seen_ms)
                .bind(i64::from(row.is_leader))
                .bind(row.epoch)
                .bind(row.listener_connected.map(i64::from))
                .bind(i64::from(row.caught_up))
                .bind(&behind)
                .bind(&published)
                .bind(row.sdk_streams)
                .bind(row.gone_ms)
        );
        Ok(())
    }

    /// Every replica row, oldest start first.
    pub async fn list_replicas(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            replica_cols!(),
            " FROM replicas ORDER BY started_ms, id"
        );
        let rows: Vec<ReplicaTuple> =
            with_read!(self, |db| sqlx::query_as(sql).fetch_all(db).await?);
        rows.into_iter().map(replica_row).collect()
    }

    /// Records that a replica shut down at `at_ms` (it stays listed, gone, until pruned).
    /// Whether its row existed.
    pub async fn mark_replica_gone(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let changed = execute_plain!(
            self,
            sqlx::query("UPDATE replicas SET gone_ms = $1 WHERE id = $2")
                .bind(at_ms)
                .bind(id)
        );
        Ok(changed > 0)
    }

    /// Deletes the rows last seen before `seen_before_ms`; how many.
    pub async fn prune_replicas(&self, seen_before_ms: i64) -> Result<u64, StoreError> {
        Ok(execute_plain!(
            self,
            sqlx::query("DELETE FROM replicas WHERE last_seen_ms < $1").bind(seen_before_ms)
        ))
    }
}
