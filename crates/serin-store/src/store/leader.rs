//! Leadership of the release controller: the epoch row, and on PostgreSQL the dedicated
//! session that holds the leader's advisory lock. A child module of `store` so the write
//! macros (textually scoped there) apply unchanged.
//!
//! The lock says who may lead; the epoch makes a deposed leader harmless. A leader that lost
//! its session (terminated, network cut, process frozen past the idle limit) may not know it
//! yet and may still be mid-tick; its writes carry its epoch and `write_release` refuses them
//! once a newer leader has raised it.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::{Backend, PG_WRITE_LOCK_CLASS, Store, StoreError};
use crate::model::Leadership;

/// First key of the PostgreSQL session advisory lock the leader holds (the second key is
/// `hashtext(current_schema())`, like the write lock, so stores in different schemas each
/// have their own leader).
const PG_LEADER_LOCK_CLASS: i32 = 0x5345_524C; // "SERL"

/// Raises the epoch and names the holder, inside the caller's write transaction; evaluates to
/// the new epoch.
macro_rules! raise_epoch_in {
    ($tx:ident, $holder:expr, $at_ms:expr) => {{
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE leadership SET epoch = epoch + 1, holder = $1, since_ms = $2 \
             WHERE id = 1 RETURNING epoch",
        )
        .bind($holder)
        .bind($at_ms)
        .fetch_one(&mut *$tx)
        .await?;
        epoch
    }};
}

impl Store {
    /// The current leadership epoch and who took it.
    pub async fn leadership(&self) -> Result<Leadership, StoreError> {
        let row: (i64, Option<String>, Option<i64>) = with_read!(self, |db| {
            sqlx::query_as("SELECT epoch, holder, since_ms FROM leadership WHERE id = 1")
                .fetch_one(db)
                .await?
        });
        Ok(Leadership {
            epoch: row.0,
            holder: row.1,
            since_ms: row.2,
        })
    }

    /// Takes the leadership of a single-node store (SQLite: one process per data directory)
    /// and returns its epoch, one above the last. `Invalid` on PostgreSQL, where only the
    /// holder of the leader lock may raise the epoch: use [`Store::leader_session`].
    pub async fn take_leadership(&self, holder: &str, at_ms: i64) -> Result<i64, StoreError> {
        if let Backend::Postgres(_) = self.backend {
            return Err(StoreError::Invalid(
                "on PostgreSQL the leadership is taken through a leader session".into(),
            ));
        }
        with_tx!(self, |tx| { Ok(raise_epoch_in!(tx, holder, at_ms)) })
    }

    /// Opens a dedicated PostgreSQL session (not from the pool: the lock lives as long as the
    /// session, and a pooled connection is shared and recycled) named `application_name` in
    /// `pg_stat_activity`. With `idle_limit`, the server ends the session when its holder has
    /// sent nothing for that long (PostgreSQL 14+, `idle_session_timeout`; ignored by older
    /// servers), so a frozen or cut-off leader frees the lock without waiting for TCP to
    /// notice. `Invalid` on SQLite, which always leads.
    pub async fn leader_session(
        &self,
        application_name: &str,
        idle_limit: Option<Duration>,
    ) -> Result<LeaderSession, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Err(StoreError::Invalid(
                "a SQLite store has one process per data directory and needs no leader lock".into(),
            ));
        };
        let opts = pool
            .connect_options()
            .as_ref()
            .clone()
            .application_name(application_name);
        let mut conn = PgConnection::connect_with(&opts).await?;
        if let Some(limit) = idle_limit {
            let ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX).max(1);
            // `SET` takes no bind parameters; `set_config` does.
            let set = sqlx::query("SELECT set_config('idle_session_timeout', $1, false)")
                .bind(format!("{ms}ms"))
                .execute(&mut conn)
                .await;
            if let Err(e) = set {
                tracing::debug!(error = %e, "idle_session_timeout not available; relying on TCP to notice a dead leader");
            }
        }
        Ok(LeaderSession { conn })
    }
}

/// A dedicated PostgreSQL session that may hold the leader lock. Dropping it (or losing it:
/// terminated backend, broken connection) releases the lock.
#[derive(Debug)]
pub struct LeaderSession {
    conn: PgConnection,
}

impl LeaderSession {
    /// Tries to take the leader lock without waiting. On success raises the epoch in a
    /// transaction on this same session (so only a lock holder can ever raise it) and returns
    /// the new epoch; `None` when another session holds the lock. Already holding it counts as
    /// taking it again, with a new epoch.
    pub async fn try_lead(&mut self, holder: &str, at_ms: i64) -> Result<Option<i64>, StoreError> {
        let got: Option<bool> =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))")
                .bind(PG_LEADER_LOCK_CLASS)
                .fetch_one(&mut self.conn)
                .await?;
        match got {
            Some(true) => {}
            Some(false) => return Ok(None),
            None => {
                return Err(StoreError::Unavailable(
                    "the leader session has no schema to lead in (its search_path names none)"
                        .into(),
                ));
            }
        }
        match self.raise_epoch(holder, at_ms).await {
            Ok(epoch) => Ok(Some(epoch)),
            Err(e) => {
                // Leading without an epoch would fence every write: give the lock back.
                let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut self.conn)
                    .await;
                Err(e)
            }
        }
    }

    async fn raise_epoch(&mut self, holder: &str, at_ms: i64) -> Result<i64, StoreError> {
        let mut txn = self.conn.begin().await?;
        let tx: &mut PgConnection = &mut txn;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
            .bind(PG_WRITE_LOCK_CLASS)
            .execute(&mut *tx)
            .await?;
        let epoch = raise_epoch_in!(tx, holder, at_ms);
        txn.commit().await?;
        Ok(epoch)
    }

    /// Succeeds while the session (and so any lock it holds) is alive.
    pub async fn check(&mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&mut self.conn).await?;
        Ok(())
    }

    /// Releases the lock and ends the session. The lock is free when this returns (a session
    /// merely dropped frees it only once the server notices the closed connection).
    pub async fn close(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}
