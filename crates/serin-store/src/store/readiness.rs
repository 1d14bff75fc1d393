//! Readiness policies, evidence, eval records and rollback drills. A child module of `store`
//! so the write macros (textually scoped there) apply unchanged.

use super::{
    AuditEntry, Backend, EnvStateChange, GENESIS_HASH, HashedFields, NewAudit, PG_WRITE_LOCK_CLASS,
    Store, StoreError, StoredEnvState, canonical_json, clamp_limit, entry_hash,
};
use crate::model::{DrillRow, DrillWrite, EvalRow, EvidenceRow, PolicyRow};

type PolicyTuple = (String, String, i64, String, i64, String);
type EvidenceTuple = (i64, String, String, String, String, i64, String);
type EvalTuple = (i64, String, i64, String, String, String, i64, String);
type DrillTuple = (String, String, String, String, i64, i64, i64);

macro_rules! policy_cols {
    () => {
        "env, agent, version, policy, applied_at_ms, applied_by"
    };
}
macro_rules! evidence_cols {
    () => {
        "id, env, agent, key, record, recorded_at_ms, recorded_by"
    };
}
macro_rules! eval_cols {
    () => {
        "id, agent, bundle, digest, set_name, record, recorded_at_ms, recorded_by"
    };
}
macro_rules! drill_cols {
    () => {
        "id, env, agent, state, running, created_at_ms, updated_at_ms"
    };
}

fn policy_row(t: PolicyTuple) -> PolicyRow {
    let (env, agent, version, policy, applied_at_ms, applied_by) = t;
    PolicyRow {
        env,
        agent,
        version,
        policy,
        applied_at_ms,
        applied_by,
    }
}

fn evidence_row(t: EvidenceTuple) -> EvidenceRow {
    let (id, env, agent, key, record, recorded_at_ms, recorded_by) = t;
    EvidenceRow {
        id,
        env,
        agent,
        key,
        record,
        recorded_at_ms,
        recorded_by,
    }
}

fn eval_row(t: EvalTuple) -> EvalRow {
    let (id, agent, bundle, digest, set_name, record, recorded_at_ms, recorded_by) = t;
    EvalRow {
        id,
        agent,
        bundle,
        digest,
        set_name,
        record,
        recorded_at_ms,
        recorded_by,
    }
}

fn drill_row(t: DrillTuple) -> DrillRow {
    let (id, env, agent, state, running, created_at_ms, updated_at_ms) = t;
    DrillRow {
        id,
        env,
        agent,
        state,
        running: running != 0,
        created_at_ms,
        updated_at_ms,
    }
}

/// The unique index on running drills is the backstop; writes are serialized, so the
/// pre-check in `write_drill` normally reports the conflict first.
fn drill_write_error(e: sqlx::Error, env: &str, agent: &str) -> StoreError {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(format!("{agent} already has a drill running in {env}"))
        }
        other => other.into(),
    }
}

/// The JSON of `text`, or the text as a JSON string when it is not JSON.
fn as_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

impl Store {
    /// Stores `policy` as the next version of the agent's policy in `env` and audits
    /// `readiness.apply`. A policy identical (byte for byte) to the current one writes
    /// nothing and returns `(current, false)`.
    pub async fn apply_policy(
        &self,
        env: &str,
        agent: &str,
        policy: &str,
        at_ms: i64,
        actor: &str,
    ) -> Result<(PolicyRow, bool), StoreError> {
        with_tx!(self, |tx| {
            let current: Option<PolicyTuple> = sqlx::query_as(concat!(
                "SELECT ",
                policy_cols!(),
                " FROM readiness_policies \
                 WHERE env = $1 AND agent = $2 ORDER BY version DESC LIMIT 1"
            ))
            .bind(env)
            .bind(agent)
            .fetch_optional(&mut *tx)
            .await?;
            let version = match current {
                Some(t) if t.3 == policy => return Ok((policy_row(t), false)),
                Some(t) => t.2 + 1,
                None => 1,
            };
            sqlx::query(
                "INSERT INTO readiness_policies \
                 (env, agent, version, policy, applied_at_ms, applied_by) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(env)
            .bind(agent)
            .bind(version)
            .bind(policy)
            .bind(at_ms)
            .bind(actor)
            .execute(&mut *tx)
            .await?;
            append_audit_in!(
                tx,
                &NewAudit {
                    at_ms,
                    actor: actor.to_owned(),
                    action: "readiness.apply".to_owned(),
                    subject: format!("{agent}/{env}"),
                    details: serde_json::json!({ "version": version, "policy": as_json(policy) }),
                }
            );
            Ok((
                PolicyRow {
                    env: env.to_owned(),
                    agent: agent.to_owned(),
                    version,
                    policy: policy.to_owned(),
                    applied_at_ms: at_ms,
                    applied_by: actor.to_owned(),
                },
                true,
            ))
        })
    }

    /// The policy in force (the highest version), if any.
    pub async fn current_policy(
        &self,
        env: &str,
        agent: &str,
    ) -> Result<Option<PolicyRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            policy_cols!(),
            " FROM readiness_policies \
             WHERE env = $1 AND agent = $2 ORDER BY version DESC LIMIT 1"
        );
        let row: Option<PolicyTuple> = with_read!(self, |db| {
            sqlx::query_as(sql)
                .bind(env)
                .bind(agent)
                .fetch_optional(db)
                .await?
        });
        Ok(row.map(policy_row))
    }

    /// Policy version `version`, if it exists.
    pub async fn policy_at(
        &self,
        env: &str,
        agent: &str,
        version: i64,
    ) -> Result<Option<PolicyRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            policy_cols!(),
            " FROM readiness_policies \
             WHERE env = $1 AND agent = $2 AND version = $3"
        );
        let row: Option<PolicyTuple> = with_read!(self, |db| {
            sqlx::query_as(sql)
                .bind(env)
                .bind(agent)
                .bind(version)
                .fetch_optional(db)
                .await?
        });
        Ok(row.map(policy_row))
    }

    /// Policy versions newest first; `limit` clamped to 1..=1000.
    pub async fn policy_history(
        &self,
        env: &str,
        agent: &str,
        limit: i64,
    ) -> Result<Vec<PolicyRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            policy_cols!(),
            " FROM readiness_policies \
             WHERE env = $1 AND agent = $2 ORDER BY version DESC LIMIT $3"
        );
        let rows: Vec<PolicyTuple> = with_read!(self, |db| {
            sqlx::query_as(sql)
                .bind(env)
                .bind(agent)
                .bind(clamp_limit(limit))
                .fetch_all(db)
                .await?
        });
        Ok(rows.into_iter().map(policy_row).collect())
    }

    /// Appends an evidence record for `key` and audits `evidence.set` with `details`.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_evidence(
        &self,
        env: &str,
        agent: &str,
        key: &str,
        record: &str,
        at_ms: i64,
        actor: &str,
        details: serde_json::Value,
    ) -> Result<EvidenceRow, StoreError> {
        let mut details = Some(details);
        with_tx!(self, |tx| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO readiness_evidence \
                 (env, agent, key, record, recorded_at_ms, recorded_by) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(env)
            .bind(agent)
            .bind(key)
            .bind(record)
            .bind(at_ms)
            .bind(actor)
            .fetch_one(&mut *tx)
            .await?;
            append_audit_in!(
                tx,
                &NewAudit {
                    at_ms,
                    actor: actor.to_owned(),
                    action: "evidence.set".to_owned(),
                    subject: format!("{agent}/{env}/{key}"),
                    details: details.take().unwrap_or_default(),
                }
            );
            Ok(EvidenceRow {
                id,
                env: env.to_owned(),
                agent: agent.to_owned(),
                key: key.to_owned(),
                record: record.to_owned(),
                recorded_at_ms: at_ms,
                recorded_by: actor.to_owned(),
            })
        })
    }

    /// The newest evidence record of every key, ordered by key.
    pub async fn current_evidence(
        &self,
        env: &str,
        agent: &str,
    ) -> Result<Vec<EvidenceRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            evidence_cols!(),
            " FROM readiness_evidence WHERE id IN \
             (SELECT MAX(id) FROM readiness_evidence WHERE env = $1 AND agent = $2 GROUP BY key) \
             ORDER BY key"
        );
        let rows: Vec<EvidenceTuple> = with_read!(self, |db| {
            sqlx::query_as(sql)
                .bind(env)
                .bind(agent)
                .fetch_all(db)
                .await?
        });
        Ok(rows.into_iter().map(evidence_row).collect())
    }

    /// Every record of `key`, newest first; `limit` clamped to 1..=1000.
    pub async fn evidence_history(
        &self,
        env: &str,
        agent: &str,
        key: &str,
        limit: i64,
    ) -> Result<Vec<EvidenceRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            evidence_cols!(),
            " FROM readiness_evidence \
             WHERE env = $1 AND agent = $2 AND key = $3 ORDER BY id DESC LIMIT $4"
        );
        let rows: Vec<EvidenceTuple> = with_read!(self, |db| {
            sqlx::query_as(sql)
                .bind(env)
                .bind(agent)
                .bind(key)
                .bind(clamp_limit(limit))
                .fetch_all(db)
                .await?
        });
        Ok(rows.into_iter().map(evidence_row).collect())
    }

    /// Appends an offline eval result of `agent@bundle` and audits `eval.record`.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_eval(
        &self,
        agent: &str,
        bundle: i64,
        digest: &str,
        set_name: &str,
        record: &str,
        at_ms: i64,
        actor: &str,
        details: serde_json::Value,
    ) -> Result<EvalRow, StoreError> {
        let mut details = Some(details);
        with_tx!(self, |tx| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO eval_records \
                 (agent, bundle, digest, set_name, record, recorded_at_ms, recorded_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(agent)
            .bind(bundle)
            .bind(digest)
            .bind(set_name)
            .bind(record)
            .bind(at_ms)
            .bind(actor)
            .fetch_one(&mut *tx)
            .await?;
            append_audit_in!(
                tx,
                &NewAudit {
                    at_ms,
                    actor: actor.to_owned(),
                    action: "eval.record".to_owned(),
                    subject: format!("{agent}@{bundle}"),
                    details: details.take().unwrap_or_default(),
                }
            );
            Ok(EvalRow {
                id,
                agent: agent.to_owned(),
                bundle,
                digest: digest.to_owned(),
                set_name: set_name.to_owned(),
                record: record.to_owned(),
                recorded_at_ms: at_ms,
                recorded_by: actor.to_owned(),
            })
        })
    }

    /// Eval results of `agent@bundle`, newest first (at most 1000).
    pub async fn evals(&self, agent: &str, bundle: i64) -> Result<Vec<EvalRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            eval_cols!(),
            " FROM eval_records \
             WHERE agent = $1 AND bundle = $2 ORDER BY id DESC LIMIT $3"
        );
        let rows: Vec<EvalTuple> = with_read!(self, |db| {
            sqlx::query_as(sql)
                .bind(agent)
                .bind(bundle)
                .bind(super::MAX_PAGE)
                .fetch_all(db)
                .await?
        });
        Ok(rows.into_iter().map(eval_row).collect())
    }

    /// Writes a drill and what it causes in one serialized transaction, like
    /// [`Store::write_release`]:
    ///
    /// 1. the drill row: inserted when `drill.is_new` (`Conflict` if the id exists; when
    ///    running, `Conflict` if the agent has an active release in that env), otherwise
    ///    updated (`Conflict` if no drill has this id, env and agent). A running drill beside
    ///    another running drill of the agent in the env is a `Conflict`;
    /// 2. `env_change` against the env's newest state: `None` leaves it alone, `Some` appends
    ///    a new version with its audit entry;
    /// 3. every entry of `audits`, in order.
    ///
    /// If `env_change` fails nothing is written and its error is returned as `Ok(Err(e))`.
    pub async fn write_drill<E>(
        &self,
        drill: DrillWrite,
        at_ms: i64,
        actor: &str,
        env_change: impl FnOnce(Option<&str>) -> Result<Option<EnvStateChange>, E>,
        audits: Vec<NewAudit>,
    ) -> Result<Result<Option<StoredEnvState>, E>, StoreError> {
        let d = &drill;
        let mut env_change = Some(env_change);
        let mut refused: Option<E> = None;
        let written = with_tx!(self, |tx| {
            if d.running {
                let other: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM drills \
                     WHERE env = $1 AND agent = $2 AND running = 1 AND id <> $3",
                )
                .bind(&d.env)
                .bind(&d.agent)
                .bind(&d.id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(other) = other {
                    return Err(StoreError::Conflict(format!(
                        "{} already has a drill running in {} ({other})",
                        d.agent, d.env
                    )));
                }
            }
            if d.is_new {
                let taken: Option<String> =
                    sqlx::query_scalar("SELECT id FROM drills WHERE id = $1")
                        .bind(&d.id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if taken.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "drill {} already exists",
                        d.id
                    )));
                }
                if d.running {
                    let release: Option<String> = sqlx::query_scalar(
                        "SELECT id FROM releases WHERE env = $1 AND agent = $2 AND active = 1",
                    )
                    .bind(&d.env)
                    .bind(&d.agent)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(release) = release {
                        return Err(StoreError::Conflict(format!(
                            "{} has an active release in {} ({release}); drills are refused while a release is active",
                            d.agent, d.env
                        )));
                    }
                }
                sqlx::query(
                    "INSERT INTO drills \
                     (id, env, agent, state, running, created_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(&d.id)
                .bind(&d.env)
                .bind(&d.agent)
                .bind(&d.state)
                .bind(i64::from(d.running))
                .bind(at_ms)
                .execute(&mut *tx)
                .await
                .map_err(|e| drill_write_error(e, &d.env, &d.agent))?;
            } else {
                let updated = sqlx::query(
                    "UPDATE drills SET state = $4, running = $5, updated_at_ms = $6 \
                     WHERE id = $1 AND env = $2 AND agent = $3",
                )
                .bind(&d.id)
                .bind(&d.env)
                .bind(&d.agent)
                .bind(&d.state)
                .bind(i64::from(d.running))
                .bind(at_ms)
                .execute(&mut *tx)
                .await
                .map_err(|e| drill_write_error(e, &d.env, &d.agent))?
                .rows_affected();
                if updated == 0 {
                    return Err(StoreError::Conflict(format!(
                        "no drill {} of agent {} in env {}",
                        d.id, d.agent, d.env
                    )));
                }
            }
            let current = latest_env_state_in!(tx, &d.env);
            let Some(env_change) = env_change.take() else {
                return Err(StoreError::Corrupt("env state change ran twice".into()));
            };
            let stored = match env_change(current.as_deref()) {
                Ok(None) => None,
                Ok(Some(next)) => Some(append_env_state_in!(self, tx, &d.env, at_ms, actor, next)),
                Err(e) => {
                    // Roll back the drill row too; the caller gets `e` below.
                    refused = Some(e);
                    return Err(StoreError::Invalid("drill write refused".into()));
                }
            };
            for a in &audits {
                append_audit_in!(tx, a);
            }
            Ok(stored)
        });
        if let Some(e) = refused {
            return Ok(Err(e));
        }
        written.map(Ok)
    }

    /// The drill with this id, if any.
    pub async fn get_drill(&self, id: &str) -> Result<Option<DrillRow>, StoreError> {
        let sql = concat!("SELECT ", drill_cols!(), " FROM drills WHERE id = $1");
        let row: Option<DrillTuple> = with_read!(self, |db| {
            sqlx::query_as(sql).bind(id).fetch_optional(db).await?
        });
        Ok(row.map(drill_row))
    }

    /// Drills still marked running, in every env, oldest first (to finish after a crash).
    pub async fn running_drills(&self) -> Result<Vec<DrillRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            drill_cols!(),
            " FROM drills WHERE running = 1 ORDER BY created_at_ms, id"
        );
        let rows: Vec<DrillTuple> =
            with_read!(self, |db| sqlx::query_as(sql).fetch_all(db).await?);
        Ok(rows.into_iter().map(drill_row).collect())
    }

    /// The agent's drills in `env`, newest first; `limit` clamped to 1..=1000.
    pub async fn list_drills(
        &self,
        env: &str,
        agent: &str,
        limit: i64,
    ) -> Result<Vec<DrillRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            drill_cols!(),
            " FROM drills WHERE env = $1 AND agent = $2 \
             ORDER BY created_at_ms DESC, id DESC LIMIT $3"
        );
        let rows: Vec<DrillTuple> = with_read!(self, |db| {
            sqlx::query_as(sql)
                .bind(env)
                .bind(agent)
                .bind(clamp_limit(limit))
                .fetch_all(db)
                .await?
        });
        Ok(rows.into_iter().map(drill_row).collect())
    }

    /// How many drills the agent has had in `env` (for drill ids).
    pub async fn count_drills(&self, env: &str, agent: &str) -> Result<i64, StoreError> {
        Ok(with_read!(self, |db| {
            sqlx::query_scalar("SELECT COUNT(*) FROM drills WHERE env = $1 AND agent = $2")
                .bind(env)
                .bind(agent)
                .fetch_one(db)
                .await?
        }))
    }
}
