//! The shared fleet table: each replica publishes the SDK instances its in-memory registry
//! holds, so every replica can list (and a rollback drill wait for) the whole fleet. A child
//! module of `store`.
//!
//! Operational state like the replica registry: not audited, and written without the store's
//! write lock (each replica writes only the instances it serves, and nothing is numbered), so a
//! flush never queues behind a release write.

use super::{Backend, Store, StoreError};
use crate::model::SdkInstanceRow;

type SdkTuple = (
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
);

macro_rules! sdk_cols {
    () => {
        "env, instance, replica_id, token_id, sdk, connected, applied_version, applied_at_ms, \
         last_seen_ms, region, pool"
    };
}

// A replica's row is replaced by another replica's only when that one has the stream now, or
// the stored row no longer claims one (closed, or its replica stopped refreshing it): otherwise
// a late close on the replica an SDK left would hide it on the replica it moved to.
const UPSERT: &str = concat!(
    "INSERT INTO sdk_instances (",
    sdk_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (env, instance) DO UPDATE SET replica_id = excluded.replica_id, \
     token_id = excluded.token_id, sdk = excluded.sdk, connected = excluded.connected, \
     applied_version = excluded.applied_version, applied_at_ms = excluded.applied_at_ms, \
     last_seen_ms = excluded.last_seen_ms, region = excluded.region, pool = excluded.pool \
     WHERE sdk_instances.replica_id = excluded.replica_id OR excluded.connected = 1 \
     OR sdk_instances.connected = 0 OR sdk_instances.last_seen_ms < $12"
);

fn sdk_row(t: SdkTuple) -> SdkInstanceRow {
    SdkInstanceRow {
        env: t.0,
        instance: t.1,
        replica_id: t.2,
        token_id: t.3,
        sdk: t.4,
        connected: t.5 != 0,
        applied_version: t.6,
        applied_at_ms: t.7,
        last_seen_ms: t.8,
        region: t.9,
        pool: t.10,
    }
}

/// Runs one statement outside any transaction on the backend's writing connection; evaluates
/// to the rows affected.
macro_rules! execute_plain {
    ($store:expr, $query:expr) => {{
        match &$store.backend {
            Backend::Sqlite { writer, .. } => $query.execute(writer).await?.rows_affected(),
            Backend::Postgres(pool) => $query.execute(pool).await?.rows_affected(),
        }
    }};
}

impl Store {
    /// Upserts `rows` in one transaction (all or none). A row of another replica whose stream
    /// is still open (refreshed at or after `stale_before_ms`) is not replaced by a closed one.
    pub async fn publish_sdk_instances(
        &self,
        rows: &[SdkInstanceRow],
        stale_before_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(bad) = rows
            .iter()
            .find(|r| r.applied_version.is_some_and(|v| v < 0))
        {
            return Err(StoreError::Invalid(format!(
                "sdk instance {} of env {}: negative applied version",
                bad.instance, bad.env
            )));
        }
        if rows.is_empty() {
            return Ok(());
        }
        macro_rules! upsert_all {
            ($txn:expr) => {{
                for r in rows {
                    sqlx::query(UPSERT)
                        .bind(&r.env)
                        .bind(&r.instance)
                        .bind(&r.replica_id)
                        .bind(&r.token_id)
                        .bind(&r.sdk)
                        .bind(i64::from(r.connected))
                        .bind(r.applied_version)
                        .bind(r.applied_at_ms)
                        .bind(r.last_seen_ms)
                        .bind(&r.region)
                        .bind(&r.pool)
                        .bind(stale_before_ms)
                        .execute(&mut *$txn)
                        .await?;
                }
            }};
        }
        match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut txn = writer.begin_with("BEGIN IMMEDIATE").await?;
                upsert_all!(txn);
                txn.commit().await?;
            }
            Backend::Postgres(pool) => {
                let mut txn = pool.begin().await?;
                upsert_all!(txn);
                txn.commit().await?;
            }
        }
        Ok(())
    }

    /// The rows of `env` last seen at or after `seen_since_ms`, by instance.
    pub async fn fleet_sdk_instances(
        &self,
        env: &str,
        seen_since_ms: i64,
    ) -> Result<Vec<SdkInstanceRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            sdk_cols!(),
            " FROM sdk_instances WHERE env = $1 AND last_seen_ms >= $2 ORDER BY instance"
        );
        let rows: Vec<SdkTuple> = with_read!(self, |db| sqlx::query_as(sql)
            .bind(env)
            .bind(seen_since_ms)
            .fetch_all(db)
            .await?);
        Ok(rows.into_iter().map(sdk_row).collect())
    }

    /// The row of one instance, if any (however old).
    pub async fn sdk_instance(
        &self,
        env: &str,
        instance: &str,
    ) -> Result<Option<SdkInstanceRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            sdk_cols!(),
            " FROM sdk_instances WHERE env = $1 AND instance = $2"
        );
        let row: Option<SdkTuple> = with_read!(self, |db| sqlx::query_as(sql)
            .bind(env)
            .bind(instance)
            .fetch_optional(db)
            .await?);
        Ok(row.map(sdk_row))
    }

    /// Marks every connected row of `replica_id` seen at `now_ms` (its streams are still open),
    /// in one statement whatever the fleet's size; how many.
    pub async fn refresh_sdk_instances(
        &self,
        replica_id: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(execute_plain!(
            self,
            sqlx::query(
                "UPDATE sdk_instances SET last_seen_ms = $1 WHERE replica_id = $2 AND connected = 1"
            )
            .bind(now_ms)
            .bind(replica_id)
        ))
    }

    /// Deletes every row of a token (it was revoked); how many.
    pub async fn forget_sdk_token(&self, token_id: &str) -> Result<u64, StoreError> {
        Ok(execute_plain!(
            self,
            sqlx::query("DELETE FROM sdk_instances WHERE token_id = $1").bind(token_id)
        ))
    }

    /// Deletes the rows last seen before `seen_before_ms`; how many.
    pub async fn prune_sdk_instances(&self, seen_before_ms: i64) -> Result<u64, StoreError> {
        Ok(execute_plain!(
            self,
            sqlx::query("DELETE FROM sdk_instances WHERE last_seen_ms < $1").bind(seen_before_ms)
        ))
    }
}
