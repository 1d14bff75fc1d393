//! The env registry: envs exist only once created. A child module of `store` so the write
//! macros (textually scoped there) apply unchanged.

use super::EnvStateRow;
use super::{
    AuditEntry, Backend, GENESIS_HASH, HashedFields, NewAudit, PG_WRITE_LOCK_CLASS, Store,
    StoreError, canonical_json, entry_hash,
};
use crate::model::{EnvRecord, StoredEnvState};

type EnvTuple = (String, i64, i64, String, Option<i64>, Option<i64>);

/// Registered envs with their newest state version (if any), as one query for both backends.
macro_rules! env_select {
    () => {
        "SELECT e.name, e.strict, e.created_at_ms, e.created_by, s.version, s.created_at_ms \
         FROM envs e \
         LEFT JOIN (SELECT env, MAX(version) AS v FROM env_states GROUP BY env) m \
         ON m.env = e.name LEFT JOIN env_states s ON s.version = m.v"
    };
}

fn env_record(t: EnvTuple) -> EnvRecord {
    EnvRecord {
        name: t.0,
        strict: t.1 != 0,
        created_at_ms: t.2,
        created_by: t.3,
        version: t.4,
        updated_at_ms: t.5,
    }
}

impl Store {
    /// Registers `name` with its pin policy and audits `env.create`. `Conflict` if an env of
    /// that name exists (whatever its policy): creating is never an update.
    pub async fn create_env(
        &self,
        name: &str,
        strict: bool,
        at_ms: i64,
        actor: &str,
    ) -> Result<EnvRecord, StoreError> {
        with_tx!(self, |tx| {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT name FROM envs WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!("env {name} already exists")));
            }
            sqlx::query(
                "INSERT INTO envs (name, strict, created_at_ms, created_by) VALUES ($1, $2, $3, $4)",
            )
            .bind(name)
            .bind(i64::from(strict))
            .bind(at_ms)
            .bind(actor)
            .execute(&mut *tx)
            .await?;
            append_audit_in!(
                tx,
                &NewAudit {
                    at_ms,
                    actor: actor.to_owned(),
                    action: "env.create".to_owned(),
                    subject: name.to_owned(),
                    details: serde_json::json!({ "strict": strict }),
                }
            );
            Ok(EnvRecord {
                name: name.to_owned(),
                strict,
                created_at_ms: at_ms,
                created_by: actor.to_owned(),
                version: None,
                updated_at_ms: None,
            })
        })
    }

    /// The registered env `name`, if it exists.
    pub async fn get_env(&self, name: &str) -> Result<Option<EnvRecord>, StoreError> {
        let row: Option<EnvTuple> = with_read!(self, |db| {
            sqlx::query_as(concat!(env_select!(), " WHERE e.name = $1"))
                .bind(name)
                .fetch_optional(db)
                .await?
        });
        Ok(row.map(env_record))
    }

    /// Every registered env, by name.
    pub async fn registered_envs(&self) -> Result<Vec<EnvRecord>, StoreError> {
        let rows: Vec<EnvTuple> = with_read!(self, |db| {
            sqlx::query_as(concat!(env_select!(), " ORDER BY e.name"))
                .fetch_all(db)
                .await?
        });
        Ok(rows.into_iter().map(env_record).collect())
    }

    /// The newest state of `env` older than `version`, for serving the last good version when
    /// a newer one cannot be served.
    pub async fn env_state_before(
        &self,
        env: &str,
        version: i64,
    ) -> Result<Option<StoredEnvState>, StoreError> {
        let row: Option<EnvStateRow> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT version, env, state, created_at_ms, created_by FROM env_states \
                 WHERE env = $1 AND version < $2 ORDER BY version DESC LIMIT 1",
            )
            .bind(env)
            .bind(version)
            .fetch_optional(db)
            .await?
        });
        Ok(row.map(EnvStateRow::into_state))
    }
}
