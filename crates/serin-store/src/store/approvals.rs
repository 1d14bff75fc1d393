//! Approval policies and the approval queue. A child module of `store` so the write macros
//! (textually scoped there) apply unchanged. A request is kept whole as JSON (`record`); which
//! transitions are allowed is the caller's rule (pure, in `serin_core::approvals`), run inside
//! the transaction that writes its outcome.

use super::{
    AuditEntry, Backend, GENESIS_HASH, HashedFields, NewAudit, PG_WRITE_LOCK_CLASS, Store,
    StoreError, canonical_json, clamp_limit, entry_hash,
};
use crate::model::{ApprovalPolicyRow, ApprovalRow, MonitorRow};

type ApprovalTuple = (String, String, String, String, String, i64, i64, String);
type PolicyTuple = (String, i64, String, i64, String);

macro_rules! approval_cols {
    () => {
        "id, env, agent, kind, status, created_at_ms, expires_at_ms, record"
    };
}

fn approval_row(t: ApprovalTuple) -> ApprovalRow {
    let (id, env, agent, kind, status, created_at_ms, expires_at_ms, record) = t;
    ApprovalRow {
        id,
        env,
        agent,
        kind,
        status,
        created_at_ms,
        expires_at_ms,
        record,
    }
}

fn policy_row(t: PolicyTuple) -> ApprovalPolicyRow {
    let (env, version, policy, applied_at_ms, applied_by) = t;
    ApprovalPolicyRow {
        env,
        version,
        policy,
        applied_at_ms,
        applied_by,
    }
}

/// The audit details of a request: its record as JSON.
fn record_json(row: &ApprovalRow) -> serde_json::Value {
    serde_json::from_str(&row.record)
        .unwrap_or_else(|_| serde_json::Value::String(row.record.clone()))
}

macro_rules! approval_in {
    ($tx:ident, $id:expr) => {{
        let t: Option<ApprovalTuple> = sqlx::query_as(concat!(
            "SELECT ",
            approval_cols!(),
            " FROM approvals WHERE id = $1"
        ))
        .bind($id)
        .fetch_optional(&mut *$tx)
        .await?;
        t.map(approval_row)
    }};
}

macro_rules! rewrite_in {
    ($tx:ident, $row:expr, $at_ms:expr, $actor:expr, $action:expr) => {{
        let row: &ApprovalRow = $row;
        sqlx::query(
            "UPDATE approvals SET status = $2, expires_at_ms = $3, record = $4, \
             owes_signal = CASE WHEN kind = 'tool_call' THEN 1 ELSE 0 END WHERE id = $1",
        )
        .bind(&row.id)
        .bind(&row.status)
        .bind(row.expires_at_ms)
        .bind(&row.record)
        .execute(&mut *$tx)
        .await?;
        append_audit_in!(
            $tx,
            &NewAudit {
                at_ms: $at_ms,
                actor: $actor.to_owned(),
                action: $action.to_owned(),
                subject: row.id.clone(),
                details: record_json(row),
            }
        );
    }};
}

/// Queues one webhook delivery per URL of `{"event": action, "approval": record}` in the
/// current transaction, so a committed change is always announced and an uncommitted one
/// never is (the release notifier delivers the outbox, with retries).
macro_rules! notify_in {
    ($tx:ident, $row:expr, $at_ms:expr, $action:expr, $urls:expr) => {{
        let row: &ApprovalRow = $row;
        let urls: &[String] = $urls;
        if !urls.is_empty() {
            let payload = serde_json::json!({ "event": $action, "approval": record_json(row) })
                .to_string();
            for url in urls {
                sqlx::query(
                    "INSERT INTO notifications \
                     (release_id, url, payload, created_at_ms, attempts, next_attempt_ms) \
                     VALUES ($1, $2, $3, $4, 0, $4)",
                )
                .bind(&row.id)
                .bind(url)
                .bind(&payload)
                .bind($at_ms)
                .execute(&mut *$tx)
                .await?;
            }
        }
    }};
}

/// What [`Store::update_approval`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Updated<E> {
    /// No request has this id; nothing was written.
    NoSuchId,
    /// The caller's rule refused; nothing was written.
    Refused(E),
    /// The request as stored now.
    Done(Box<ApprovalRow>),
}

impl Store {
    /// Stores `policy` as the env's next approval-policy version and audits
    /// `approvals.policy`. A policy identical to the one in force writes nothing and returns
    /// `(current, false)`.
    pub async fn apply_approval_policy(
        &self,
        env: &str,
        policy: &str,
        at_ms: i64,
        actor: &str,
    ) -> Result<(ApprovalPolicyRow, bool), StoreError> {
        with_tx!(self, |tx| {
            let current: Option<PolicyTuple> = sqlx::query_as(
                "SELECT env, version, policy, applied_at_ms, applied_by FROM approval_policies \
                 WHERE env = $1 ORDER BY version DESC LIMIT 1",
            )
            .bind(env)
            .fetch_optional(&mut *tx)
            .await?;
            let version = match current {
                Some(t) if t.2 == policy => return Ok((policy_row(t), false)),
                Some(t) => t.1 + 1,
                None => 1,
            };
            sqlx::query(
                "INSERT INTO approval_policies (env, version, policy, applied_at_ms, applied_by) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(env)
            .bind(version)
            .bind(policy)
            .bind(at_ms)
            .bind(actor)
            .execute(&mut *tx)
            .await?;
            let parsed: serde_json::Value = serde_json::from_str(policy)
                .unwrap_or_else(|_| serde_json::Value::String(policy.to_owned()));
            append_audit_in!(
                tx,
                &NewAudit {
                    at_ms,
                    actor: actor.to_owned(),
                    action: "approvals.policy".to_owned(),
                    subject: env.to_owned(),
                    details: serde_json::json!({ "version": version, "policy": parsed }),
                }
            );
            Ok((
                ApprovalPolicyRow {
                    env: env.to_owned(),
                    version,
                    policy: policy.to_owned(),
                    applied_at_ms: at_ms,
                    applied_by: actor.to_owned(),
                },
                true,
            ))
        })
    }

    /// The env's approval policy in force, if one was ever applied.
    pub async fn current_approval_policy(
        &self,
        env: &str,
    ) -> Result<Option<ApprovalPolicyRow>, StoreError> {
        let t: Option<PolicyTuple> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT env, version, policy, applied_at_ms, applied_by FROM approval_policies \
                 WHERE env = $1 ORDER BY version DESC LIMIT 1",
            )
            .bind(env)
            .fetch_optional(db)
            .await?
        });
        Ok(t.map(policy_row))
    }

    /// Files a request with its `approval.request` audit entry. With `cap`, refuses (returns
    /// `None`, writes nothing) when the agent already has that many pending requests of the
    /// same kind in the env: counted inside the transaction, so a flood cannot race past it.
    pub async fn insert_approval(
        &self,
        row: &ApprovalRow,
        actor: &str,
        cap: Option<i64>,
        notify: &[String],
    ) -> Result<Option<ApprovalRow>, StoreError> {
        with_tx!(self, |tx| {
            if let Some(cap) = cap {
                let pending: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM approvals WHERE env = $1 AND agent = $2 AND kind = $3 \
                     AND status = 'pending'",
                )
                .bind(&row.env)
                .bind(&row.agent)
                .bind(&row.kind)
                .fetch_one(&mut *tx)
                .await?;
                if pending >= cap {
                    return Ok(None);
                }
            }
            sqlx::query(concat!(
                "INSERT INTO approvals (",
                approval_cols!(),
                ", owes_signal) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&row.id)
            .bind(&row.env)
            .bind(&row.agent)
            .bind(&row.kind)
            .bind(&row.status)
            .bind(row.created_at_ms)
            .bind(row.expires_at_ms)
            .bind(&row.record)
            .bind(i64::from(row.kind == "tool_call"))
            .execute(&mut *tx)
            .await?;
            append_audit_in!(
                tx,
                &NewAudit {
                    at_ms: row.created_at_ms,
                    actor: actor.to_owned(),
                    action: "approval.request".to_owned(),
                    subject: row.id.clone(),
                    details: record_json(row),
                }
            );
            notify_in!(tx, row, row.created_at_ms, "approval.request", notify);
            Ok(Some(row.clone()))
        })
    }

    /// Read-modify-write of one request in one serialized transaction: `decide` gets the
    /// stored row and returns the new one (`None`: nothing to write) or its refusal. A change
    /// is written with an audit entry named `action`. Only status, expiry and record change.
    pub async fn update_approval<E>(
        &self,
        id: &str,
        at_ms: i64,
        actor: &str,
        action: &str,
        notify: &[String],
        decide: impl FnOnce(&ApprovalRow) -> Result<Option<ApprovalRow>, E>,
    ) -> Result<Updated<E>, StoreError> {
        let mut decide = Some(decide);
        with_tx!(self, |tx| {
            let Some(current) = approval_in!(tx, id) else {
                return Ok(Updated::NoSuchId);
            };
            let Some(decide) = decide.take() else {
                return Err(StoreError::Corrupt("approval decided twice".into()));
            };
            match decide(&current) {
                Err(e) => Ok(Updated::Refused(e)),
                Ok(None) => Ok(Updated::Done(Box::new(current))),
                Ok(Some(next)) => {
                    if next.id != current.id
                        || next.env != current.env
                        || next.agent != current.agent
                        || next.kind != current.kind
                    {
                        return Err(StoreError::Invalid(
                            "an approval's update cannot change what it is about".into(),
                        ));
                    }
                    rewrite_in!(tx, &next, at_ms, actor, action);
                    notify_in!(tx, &next, at_ms, action, notify);
                    Ok(Updated::Done(Box::new(next)))
                }
            }
        })
    }

    /// The sweep: hands each pending request at or past its expiry (oldest first, at most
    /// `limit`) to `expire` and writes what it returns with an `approval.expire` audit entry,
    /// and its webhooks (the URLs `expire` returns), all in one transaction. Returns the rows written.
    pub async fn expire_approvals(
        &self,
        now_ms: i64,
        limit: i64,
        actor: &str,
        expire: impl Fn(&ApprovalRow) -> Option<(ApprovalRow, Vec<String>)>,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        with_tx!(self, |tx| {
            let due: Vec<ApprovalTuple> = sqlx::query_as(concat!(
                "SELECT ",
                approval_cols!(),
                " FROM approvals WHERE status = 'pending' AND expires_at_ms <= $1 \
                 ORDER BY expires_at_ms, id LIMIT $2"
            ))
            .bind(now_ms)
            .bind(clamp_limit(limit))
            .fetch_all(&mut *tx)
            .await?;
            let mut written = Vec::new();
            for row in due.into_iter().map(approval_row) {
                let Some((next, urls)) = expire(&row) else {
                    continue;
                };
                if next.id != row.id {
                    return Err(StoreError::Invalid(
                        "an approval's expiry cannot change its id".into(),
                    ));
                }
                rewrite_in!(tx, &next, now_ms, actor, "approval.expire");
                notify_in!(tx, &next, now_ms, "approval.expire", &urls);
                written.push(next);
            }
            Ok(written)
        })
    }

    /// One request by id.
    pub async fn get_approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        let t: Option<ApprovalTuple> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                approval_cols!(),
                " FROM approvals WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(db)
            .await?
        });
        Ok(t.map(approval_row))
    }

    /// Requests newest first, filtered by env, agent, status and kind when given; at most
    /// `limit` (clamped to [`super::MAX_PAGE`]).
    pub async fn list_approvals(
        &self,
        env: Option<&str>,
        agent: Option<&str>,
        status: Option<&str>,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        let rows: Vec<ApprovalTuple> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                approval_cols!(),
                " FROM approvals WHERE ($1 IS NULL OR env = $1) AND ($2 IS NULL OR agent = $2) \
                 AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR kind = $4) \
                 ORDER BY created_at_ms DESC, id DESC LIMIT $5"
            ))
            .bind(env)
            .bind(agent)
            .bind(status)
            .bind(kind)
            .bind(clamp_limit(limit))
            .fetch_all(db)
            .await?
        });
        Ok(rows.into_iter().map(approval_row).collect())
    }

    /// Agent-side requests that owe the approval guardrails a signal, oldest first, at most
    /// `limit`.
    pub async fn approvals_owing_signals(
        &self,
        limit: i64,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        let rows: Vec<ApprovalTuple> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                approval_cols!(),
                " FROM approvals WHERE owes_signal = 1 ORDER BY created_at_ms, id LIMIT $1"
            ))
            .bind(clamp_limit(limit))
            .fetch_all(db)
            .await?
        });
        Ok(rows.into_iter().map(approval_row).collect())
    }

    /// Counts signals in one transaction: writes the `monitors` they changed and, for each of
    /// `ids`, the request as `merge` returns it from its current row (which may have changed
    /// since it was read) with whether it still owes a signal. Not audited: the counting is
    /// bookkeeping of the guardrail, whose verdicts are in the release's own record.
    pub async fn settle_approval_signals(
        &self,
        monitors: &[MonitorRow],
        ids: &[String],
        merge: impl Fn(&ApprovalRow) -> Option<(ApprovalRow, bool)>,
    ) -> Result<(), StoreError> {
        with_tx!(self, |tx| {
            upsert_monitors_in!(tx, monitors);
            for id in ids {
                let Some(current) = approval_in!(tx, id) else {
                    continue;
                };
                let Some((next, owes)) = merge(&current) else {
                    continue;
                };
                if next.id != current.id || next.status != current.status {
                    return Err(StoreError::Invalid(
                        "counting a signal cannot change a request's id or status".into(),
                    ));
                }
                sqlx::query("UPDATE approvals SET record = $2, owes_signal = $3 WHERE id = $1")
                    .bind(&next.id)
                    .bind(&next.record)
                    .bind(i64::from(owes))
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(())
        })
    }
}
