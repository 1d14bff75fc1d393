//! The side-effect ledger (`effects`). A child module of `store` so the write macros (textually
//! scoped there) apply unchanged. Which results may follow which is the caller's rule (pure, in
//! `serin_core::ledger`), run inside the transaction that writes its outcome.

use super::{
    AuditEntry, Backend, GENESIS_HASH, HashedFields, NewAudit, PG_WRITE_LOCK_CLASS, Store,
    StoreError, canonical_json, clamp_limit, entry_hash,
};
use crate::model::{EffectCounts, EffectRow};

type EffectTuple = (
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    i64,
    String,
    Option<i64>,
    i64,
);

macro_rules! effect_cols {
    () => {
        "key, agent, bundle, request_id, tool, args_digest, timeout_ms, status, detail, \
         created_at_ms, created_by, resolved_at_ms, deadline_ms"
    };
}

fn effect_row(t: EffectTuple) -> EffectRow {
    EffectRow {
        key: t.0,
        agent: t.1,
        bundle: t.2,
        request_id: t.3,
        tool: t.4,
        args_digest: t.5,
        timeout_ms: t.6,
        status: t.7,
        detail: t.8,
        created_at_ms: t.9,
        created_by: t.10,
        resolved_at_ms: t.11,
        deadline_ms: t.12,
    }
}

fn audit_details(row: &EffectRow) -> serde_json::Value {
    serde_json::json!({
        "agent": row.agent,
        "bundle": row.bundle,
        "request_id": row.request_id,
        "tool": row.tool,
        "status": row.status,
        "detail": row.detail,
    })
}

/// Reads one effect inside the current transaction.
macro_rules! effect_in {
    ($tx:ident, $key:expr) => {{
        let t: Option<EffectTuple> = sqlx::query_as(concat!(
            "SELECT ",
            effect_cols!(),
            " FROM effects WHERE key = $1"
        ))
        .bind($key)
        .fetch_optional(&mut *$tx)
        .await?;
        t.map(effect_row)
    }};
}

/// Writes a changed effect's result columns and its audit entry inside the current transaction.
macro_rules! settle_in {
    ($tx:ident, $row:expr, $at_ms:expr, $actor:expr, $action:expr) => {{
        let row: &EffectRow = $row;
        sqlx::query(
            "UPDATE effects SET status = $2, detail = $3, resolved_at_ms = $4 WHERE key = $1",
        )
        .bind(&row.key)
        .bind(&row.status)
        .bind(&row.detail)
        .bind(row.resolved_at_ms)
        .execute(&mut *$tx)
        .await?;
        append_audit_in!(
            $tx,
            &NewAudit {
                at_ms: $at_ms,
                actor: $actor.to_owned(),
                action: $action.to_owned(),
                subject: row.key.clone(),
                details: audit_details(row),
            }
        );
    }};
}

/// What [`Store::resolve_effect`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved<E> {
    /// No effect has this key; nothing was written.
    NoSuchKey,
    /// The caller's rule refused the result; nothing was written.
    Refused(E),
    /// The effect as stored now, and whether this call changed it (`false`: the same result
    /// was already recorded).
    Done { row: Box<EffectRow>, changed: bool },
}

impl Store {
    /// Records an intent idempotently, in one transaction with its `effect.intent` audit entry.
    /// Returns the stored row and whether it was created: a row with this key recording the
    /// same call is returned as it is (`false`, nothing written, whatever its status), so a
    /// retry never records twice. The same key for a different call is `Conflict`.
    pub async fn insert_effect(
        &self,
        row: &EffectRow,
        actor: &str,
    ) -> Result<(EffectRow, bool), StoreError> {
        with_tx!(self, |tx| {
            if let Some(existing) = effect_in!(tx, &row.key) {
                if existing.same_intent(row) {
                    return Ok((existing, false));
                }
                return Err(StoreError::Conflict(format!(
                    "idempotency key {} already records another call (agent {}, bundle {}, \
                     request {}, tool {}); derive a new key for a different call",
                    row.key, existing.agent, existing.bundle, existing.request_id, existing.tool
                )));
            }
            sqlx::query(concat!(
                "INSERT INTO effects (",
                effect_cols!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .bind(&row.key)
            .bind(&row.agent)
            .bind(row.bundle)
            .bind(&row.request_id)
            .bind(&row.tool)
            .bind(&row.args_digest)
            .bind(row.timeout_ms)
            .bind(&row.status)
            .bind(&row.detail)
            .bind(row.created_at_ms)
            .bind(&row.created_by)
            .bind(row.resolved_at_ms)
            .bind(row.deadline_ms)
            .execute(&mut *tx)
            .await?;
            append_audit_in!(
                tx,
                &NewAudit {
                    at_ms: row.created_at_ms,
                    actor: actor.to_owned(),
                    action: "effect.intent".to_owned(),
                    subject: row.key.clone(),
                    details: audit_details(row),
                }
            );
            Ok((row.clone(), true))
        })
    }

    /// Read-modify-write of one effect's result in one serialized transaction: `decide` gets
    /// the stored row and returns the new one (`None`: already so, nothing to write) or its own
    /// refusal. A change is written with its `effect.result` audit entry. Only the result
    /// columns (status, detail, resolved_at_ms) are ever updated.
    pub async fn resolve_effect<E>(
        &self,
        key: &str,
        at_ms: i64,
        actor: &str,
        decide: impl FnOnce(&EffectRow) -> Result<Option<EffectRow>, E>,
    ) -> Result<Resolved<E>, StoreError> {
        let mut decide = Some(decide);
        with_tx!(self, |tx| {
            let Some(current) = effect_in!(tx, key) else {
                return Ok(Resolved::NoSuchKey);
            };
            let Some(decide) = decide.take() else {
                return Err(StoreError::Corrupt("effect result decided twice".into()));
            };
            match decide(&current) {
                Err(e) => Ok(Resolved::Refused(e)),
                Ok(None) => Ok(Resolved::Done {
                    row: Box::new(current),
                    changed: false,
                }),
                Ok(Some(next)) => {
                    if next.key != current.key {
                        return Err(StoreError::Invalid(
                            "an effect's result cannot change its key".into(),
                        ));
                    }
                    settle_in!(tx, &next, at_ms, actor, "effect.result");
                    Ok(Resolved::Done {
                        row: Box::new(next),
                        changed: true,
                    })
                }
            }
        })
    }

    /// The sweep: hands each open intent whose deadline is at or before `now_ms` (oldest first,
    /// at most `limit`) to `expire` and writes what it returns, each with an `effect.expire`
    /// audit entry by `actor`, all in one transaction. Returns the rows written.
    pub async fn expire_effects(
        &self,
        now_ms: i64,
        limit: i64,
        actor: &str,
        expire: impl Fn(&EffectRow) -> Option<EffectRow>,
    ) -> Result<Vec<EffectRow>, StoreError> {
        with_tx!(self, |tx| {
            let due: Vec<EffectTuple> = sqlx::query_as(concat!(
                "SELECT ",
                effect_cols!(),
                " FROM effects WHERE status = 'intent' AND deadline_ms <= $1 \
                 ORDER BY deadline_ms, key LIMIT $2"
            ))
            .bind(now_ms)
            .bind(clamp_limit(limit))
            .fetch_all(&mut *tx)
            .await?;
            let mut written = Vec::new();
            for row in due.into_iter().map(effect_row) {
                let Some(next) = expire(&row) else { continue };
                if next.key != row.key {
                    return Err(StoreError::Invalid(
                        "an effect's expiry cannot change its key".into(),
                    ));
                }
                settle_in!(tx, &next, now_ms, actor, "effect.expire");
                written.push(next);
            }
            Ok(written)
        })
    }

    /// One effect by key.
    pub async fn get_effect(&self, key: &str) -> Result<Option<EffectRow>, StoreError> {
        let t: Option<EffectTuple> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                effect_cols!(),
                " FROM effects WHERE key = $1"
            ))
            .bind(key)
            .fetch_optional(db)
            .await?
        });
        Ok(t.map(effect_row))
    }

    /// The effects of agent@bundle, oldest first, optionally only those in `status`; at most
    /// `limit` (clamped to [`super::MAX_PAGE`]).
    pub async fn list_effects(
        &self,
        agent: &str,
        bundle: i64,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EffectRow>, StoreError> {
        let rows: Vec<EffectTuple> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                effect_cols!(),
                " FROM effects WHERE agent = $1 AND bundle = $2 \
                 AND ($3 IS NULL OR status = $3) ORDER BY created_at_ms, key LIMIT $4"
            ))
            .bind(agent)
            .bind(bundle)
            .bind(status)
            .bind(clamp_limit(limit))
            .fetch_all(db)
            .await?
        });
        Ok(rows.into_iter().map(effect_row).collect())
    }

    /// How many effects of agent@bundle are in each status (the release report's counts).
    pub async fn count_effects(
        &self,
        agent: &str,
        bundle: i64,
    ) -> Result<EffectCounts, StoreError> {
        let rows: Vec<(String, i64)> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT status, COUNT(*) FROM effects WHERE agent = $1 AND bundle = $2 \
                 GROUP BY status",
            )
            .bind(agent)
            .bind(bundle)
            .fetch_all(db)
            .await?
        });
        let mut counts = EffectCounts::default();
        for (status, n) in rows {
            match status.as_str() {
                "intent" => counts.intent = n,
                "committed" => counts.committed = n,
                "failed" => counts.failed = n,
                "unknown" => counts.unknown = n,
                // The schema's CHECK admits no other status.
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "effects of {agent}@{bundle} have unknown status {other:?}"
                    )));
                }
            }
        }
        Ok(counts)
    }
}
