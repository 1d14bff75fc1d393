//! The approval queue's server half: policies as stored, the gate every reserved operator
//! action passes through, agent-side requests, and the leader's expiry sweep (which also feeds
//! the approval guardrails).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use serin_core::approvals::{
    self, ApprovalError, ApprovalKind, ApprovalPolicy, ApprovalRequest, ApprovalStatus, Gated,
    Permit,
};
use serin_store::{ApprovalRow, Store, Updated};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::Caller;
use crate::guardrails::Guardrails;
use crate::{AppState, clock, leader};

/// Requests the sweep settles per transaction.
const SWEEP_BATCH: i64 = 500;

/// Requests whose guardrail signals are counted per transaction.
pub const SIGNAL_BATCH: usize = 500;

/// The actor the sweep's audit entries name.
pub const SWEEP_ACTOR: &str = "system:approvals-sweep";

pub fn to_row(r: &ApprovalRequest) -> Result<ApprovalRow, ApiError> {
    Ok(ApprovalRow {
        id: r.id.clone(),
        env: r.env.clone(),
        agent: r.agent.clone(),
        kind: r.kind.as_str().to_owned(),
        status: r.status.as_str().to_owned(),
        created_at_ms: r.created_at_ms,
        expires_at_ms: r.expires_at_ms,
        record: serde_json::to_string(r).map_err(ApiError::internal)?,
    })
}

/// A stored row as a request; a row this server cannot read is an internal error naming it.
pub fn from_row(row: &ApprovalRow) -> Result<ApprovalRequest, ApiError> {
    serde_json::from_str(&row.record)
        .map_err(|e| ApiError::internal(format!("approval {} cannot be read: {e}", row.id)))
}

/// The env's policy in force and its version (0: none was applied; the default holds).
pub async fn policy(store: &Store, env: &str) -> ApiResult<(ApprovalPolicy, i64)> {
    match store.current_approval_policy(env).await? {
        None => Ok((ApprovalPolicy::default(), 0)),
        Some(row) => {
            let v: Value = serde_json::from_str(&row.policy).map_err(ApiError::internal)?;
            let p = ApprovalPolicy::from_value(v).map_err(|e| {
                ApiError::internal(format!(
                    "approval policy v{} of {env} cannot be read: {e}",
                    row.version
                ))
            })?;
            Ok((p, row.version))
        }
    }
}

fn webhooks(p: &ApprovalPolicy) -> Vec<String> {
    p.notify.iter().map(|n| n.webhook.clone()).collect()
}

/// A refusal of the pure rules, as HTTP.
pub fn refusal(e: ApprovalError, field: &str) -> ApiError {
    let code = match e {
        ApprovalError::OwnRequest | ApprovalError::NotRequester => ErrorCode::Forbidden,
        ApprovalError::Reason => ErrorCode::InvalidField,
        _ => ErrorCode::Conflict,
    };
    ApiError::field(code, field, e.to_string())
}

/// A fresh request id.
pub fn new_id() -> String {
    approvals::new_id(rand::random::<u128>())
}

/// What the gate decided about a reserved action.
#[derive(Debug)]
pub enum Gate {
    /// Not reserved, or permitted by a spent approval (give it back if the action is then
    /// refused: [`give_back`]).
    Proceed(Option<ApprovalRequest>),
    /// Reserved: this request waits for an approver.
    Pending(ApprovalRequest),
}

/// What a reserved action answers instead of acting: 202 with the pending request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalPending {
    pub approval: ApprovalRequest,
    /// What to do next.
    pub message: String,
}

impl IntoResponse for ApprovalPending {
    fn into_response(self) -> Response {
        (StatusCode::ACCEPTED, Json(self)).into_response()
    }
}

pub fn pending(r: ApprovalRequest) -> Response {
    let message = format!(
        "{} of {} in {} needs an approver under the env's approval policy: request {} waits \
         until {} (Unix ms); an approver runs `serin approvals approve {} --reason ...`, then \
         repeat this action with approval {}",
        r.kind.as_str(),
        r.agent,
        r.env,
        r.id,
        r.expires_at_ms,
        r.id,
        r.id
    );
    ApprovalPending {
        approval: r,
        message,
    }
    .into_response()
}

/// One reserved action on its way through the gate.
#[derive(Debug)]
pub struct Reserved<'a> {
    pub kind: ApprovalKind,
    pub env: &'a str,
    pub agent: &'a str,
    pub bundle: Option<u64>,
    /// The requester's reason (the action's own, or a generated summary).
    pub reason: String,
    /// What the approver sees.
    pub details: Value,
}

/// The gate: an action the env's policy reserves either spends the approval it names or
/// becomes (or finds) a pending request. `reserved` is `None` when the policy does not reserve
/// this action; an `approval` named then is refused, so nobody believes it was checked.
pub async fn gate(
    store: &Store,
    actor: &str,
    reserved: Option<Reserved<'_>>,
    approval: Option<&str>,
) -> ApiResult<Gate> {
    let Some(r) = reserved else {
        if let Some(id) = approval {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/approval",
                format!("this action needs no approval under the env's policy; drop approval {id}"),
            ));
        }
        return Ok(Gate::Proceed(None));
    };
    let actor = actor.to_owned();
    let now = clock::now_ms();
    let permit = Permit {
        kind: r.kind,
        env: r.env,
        agent: r.agent,
        bundle: r.bundle,
    };
    if let Some(id) = approval {
        if !approvals::is_id(id) {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/approval",
                format!("{id:?} is not an approval id (apr-…)"),
            ));
        }
        let mut spent = None;
        let outcome = store
            .update_approval(id, now, &actor, "approval.use", &[], |row| {
                let req = from_row(row).map_err(|e| ApprovalUseError::Unreadable(e.message))?;
                let next = req
                    .spend(&permit, &actor, now)
                    .map_err(ApprovalUseError::Rule)?;
                let next_row =
                    to_row(&next).map_err(|e| ApprovalUseError::Unreadable(e.message))?;
                spent = Some(next);
                Ok(Some(next_row))
            })
            .await?;
        return match outcome {
            Updated::NoSuchId => Err(ApiError::field(
                ErrorCode::NotFound,
                "/approval",
                format!("no approval request {id}"),
            )),
            Updated::Refused(ApprovalUseError::Rule(e)) => Err(refusal(e, "/approval")),
            Updated::Refused(ApprovalUseError::Unreadable(m)) => Err(ApiError::internal(m)),
            Updated::Done(_) => {
                metrics::counter!("serin_approvals_total", "event" => "used").increment(1);
                Ok(Gate::Proceed(spent))
            }
        };
    }
    // A repeated action finds its own pending request rather than filing another.
    let mine = store
        .list_approvals(
            Some(r.env),
            Some(r.agent),
            Some("pending"),
            Some(r.kind.as_str()),
            200,
        )
        .await?;
    for row in &mine {
        let req = from_row(row)?;
        if req.requested_by == actor
            && req.bundle == r.bundle
            && req.status_at(now) == ApprovalStatus::Pending
        {
            return Ok(Gate::Pending(req));
        }
    }
    let (policy, _) = policy(store, r.env).await?;
    let expiry = i64::try_from(policy.expiry.as_ms()).unwrap_or(i64::MAX);
    let req = ApprovalRequest {
        id: new_id(),
        kind: r.kind,
        env: r.env.to_owned(),
        agent: r.agent.to_owned(),
        bundle: r.bundle,
        requested_by: actor.clone(),
        reason: r.reason,
        details: r.details,
        status: ApprovalStatus::Pending,
        created_at_ms: now,
        expires_at_ms: now.saturating_add(expiry),
        decided_by: None,
        decided_at_ms: None,
        decision_reason: None,
        used_at_ms: None,
        snapshot_version: None,
        overdue: false,
        counted: Default::default(),
    };
    store
        .insert_approval(&to_row(&req)?, &actor, None, &webhooks(&policy))
        .await?;
    metrics::counter!("serin_approvals_total", "event" => "requested").increment(1);
    Ok(Gate::Pending(req))
}

#[derive(Debug)]
enum ApprovalUseError {
    Rule(ApprovalError),
    Unreadable(String),
}

/// Returns a spent approval after its action was refused, so the requester can try again
/// with it. Best effort: if this write fails the permit stays spent (the safe side).
pub async fn give_back(store: &Store, spent: Option<ApprovalRequest>) {
    let Some(spent) = spent else { return };
    let now = clock::now_ms();
    let result = store
        .update_approval(
            &spent.id,
            now,
            "system:approvals",
            "approval.unuse",
            &[],
            |row| {
                let req = from_row(row).map_err(|e| e.message)?;
                if req.used_at_ms != spent.used_at_ms {
                    return Ok(None);
                }
                to_row(&req.unspend()).map(Some).map_err(|e| e.message)
            },
        )
        .await;
    if let Err(e) = result {
        tracing::warn!(approval = %spent.id, error = %e, "could not give back a spent approval");
    }
}

/// Decides a request as `caller` (who must be allowed by the env's policy and must not be
/// the requester).
pub async fn decide(
    state: &AppState,
    caller: &Caller,
    id: &str,
    approve: bool,
    reason: &str,
) -> ApiResult<ApprovalRequest> {
    let Some(row) = state.store.get_approval(id).await? else {
        return Err(ApiError::not_found(format!("no approval request {id}")));
    };
    let (policy, _) = policy(&state.store, &row.env).await?;
    if !policy.may_decide(caller.role) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "env {}'s approval policy lets {} decide; this token is {}",
                row.env,
                policy
                    .approvers
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" and "),
                caller.role.as_str()
            ),
        ));
    }
    let actor = caller.actor();
    let now = clock::now_ms();
    let action = if approve {
        "approval.approve"
    } else {
        "approval.deny"
    };
    let mut decided = None;
    let outcome = state
        .store
        .update_approval(id, now, &actor, action, &webhooks(&policy), |row| {
            let req = from_row(row).map_err(|e| ApprovalUseError::Unreadable(e.message))?;
            let next = req
                .decide(approve, &actor, reason, now, policy.expiry.as_ms())
                .map_err(ApprovalUseError::Rule)?;
            let next_row = to_row(&next).map_err(|e| ApprovalUseError::Unreadable(e.message))?;
            decided = Some(next);
            Ok(Some(next_row))
        })
        .await?;
    match outcome {
        Updated::NoSuchId => Err(ApiError::not_found(format!("no approval request {id}"))),
        Updated::Refused(ApprovalUseError::Rule(e)) => Err(refusal(e, "/reason")),
        Updated::Refused(ApprovalUseError::Unreadable(m)) => Err(ApiError::internal(m)),
        Updated::Done(_) => {
            let req = decided.ok_or_else(|| ApiError::internal("decision not recorded"))?;
            metrics::counter!("serin_approvals_total", "event" => if approve { "approved" } else { "denied" })
                .increment(1);
            Ok(req)
        }
    }
}

/// Expires every overdue pending request (a denial, audited `approval.expire`, webhooks
/// queued), marks agent-side requests pending past their release's `wait` overdue, and counts
/// every signal agent-side requests owe into their release's monitor. Returns how many
/// requests expired.
pub async fn sweep(store: &Store, guardrails: &Guardrails, now_ms: i64) -> Result<usize, ApiError> {
    let mut total = 0;
    loop {
        let mut policies: std::collections::HashMap<String, Vec<String>> = Default::default();
        for row in store
            .list_approvals(None, None, Some("pending"), None, SWEEP_BATCH)
            .await?
        {
            if row.expires_at_ms <= now_ms && !policies.contains_key(&row.env) {
                let urls = match policy(store, &row.env).await {
                    Ok((p, _)) => webhooks(&p),
                    Err(_) => Vec::new(),
                };
                policies.insert(row.env.clone(), urls);
            }
        }
        let swept = store
            .expire_approvals(now_ms, SWEEP_BATCH, SWEEP_ACTOR, |row| {
                // A row this server cannot read is left for a person, never guessed at.
                let req = from_row(row).ok()?;
                let next = req.expire(now_ms)?;
                let urls = policies.get(&row.env).cloned().unwrap_or_default();
                Some((to_row(&next).ok()?, urls))
            })
            .await?;
        total += swept.len();
        if i64::try_from(swept.len()).unwrap_or(i64::MAX) < SWEEP_BATCH {
            break;
        }
    }
    if total > 0 {
        metrics::counter!("serin_approvals_total", "event" => "expired").increment(total as u64);
    }
    overdue(store, guardrails, now_ms).await?;
    // Filed, denied, expired and overdue requests owe their release's monitor a signal (the
    // store flags them in the transaction that changes them); count them, each once.
    while guardrails.count_approval_signals(now_ms).await? >= SIGNAL_BATCH {}
    Ok(total)
}

/// Marks agent-side requests pending past their release's approval `wait` as overdue (once
/// each; the store then flags the signal they owe).
async fn overdue(store: &Store, guardrails: &Guardrails, now_ms: i64) -> Result<(), ApiError> {
    let pending = store
        .list_approvals(None, None, Some("pending"), Some("tool_call"), SWEEP_BATCH)
        .await?;
    let mut waits: std::collections::HashMap<(String, String), Option<u64>> = Default::default();
    for row in pending {
        let Ok(req) = from_row(&row) else { continue };
        if req.overdue {
            continue;
        }
        // Once per (env, agent) per sweep: the lookup takes the monitors' lock, which
        // ingestion holds for every batch.
        let key = (req.env.clone(), req.agent.clone());
        let wait = match waits.get(&key) {
            Some(w) => *w,
            None => {
                let w = guardrails.approval_wait_ms(&req).await;
                waits.insert(key, w);
                w
            }
        };
        let Some(wait) = wait else {
            continue;
        };
        if now_ms.saturating_sub(req.created_at_ms) < i64::try_from(wait).unwrap_or(i64::MAX) {
            continue;
        }
        store
            .update_approval(
                &req.id,
                now_ms,
                SWEEP_ACTOR,
                "approval.overdue",
                &[],
                |row| {
                    let mut r = from_row(row).map_err(|e| e.message)?;
                    if r.overdue || r.status != ApprovalStatus::Pending {
                        return Ok(None);
                    }
                    r.overdue = true;
                    to_row(&r).map(Some).map_err(|e| e.message)
                },
            )
            .await?;
    }
    Ok(())
}

/// The leader's periodic sweep.
pub fn spawn_sweep(
    store: Store,
    guardrails: Arc<Guardrails>,
    every: Duration,
    leader: Arc<leader::Leader>,
) -> tokio::task::JoinHandle<()> {
    leader::spawn_duty(every, leader, "sweep approval requests", move |now| {
        let (store, guardrails) = (store.clone(), guardrails.clone());
        async move { sweep(&store, &guardrails, now).await }
    })
}

/// What starting a release of agent@`bundle` (`candidate`) over the stable (`stable`) asks of
/// the env's policy: `None` when nothing it does is reserved. The approver sees every
/// capability change (those needing approval first) and the readiness report.
#[allow(clippy::too_many_arguments)] // one call site; the release start's own facts
pub async fn release_start_reservation<'a>(
    store: &Store,
    env: &'a str,
    agent: &'a str,
    bundle: u64,
    stable: &serin_core::bundle::Bundle,
    candidate: &serin_core::bundle::Bundle,
    overriding: bool,
    readiness: Value,
) -> ApiResult<Option<Reserved<'a>>> {
    let (policy, _) = policy(store, env).await?;
    let changes = serin_core::bundle::capabilities::changes(stable, candidate);
    let risky: Vec<String> = changes
        .iter()
        .filter(|c| c.needs_approval())
        .map(|c| c.detail.clone())
        .collect();
    let capability = policy.requires(Gated::CapabilityChange) && !risky.is_empty();
    let override_needed = policy.requires(Gated::ReadinessOverride) && overriding;
    if !capability && !override_needed {
        return Ok(None);
    }
    let mut because = Vec::new();
    let mut said = Vec::new();
    if capability {
        because.push("capability_change");
        said.push(risky.join("; "));
    }
    if override_needed {
        because.push("readiness_override");
        said.push("overrides a refusing readiness gate".to_owned());
    }
    let kind = if capability {
        ApprovalKind::ReleaseStart
    } else {
        ApprovalKind::ReadinessOverride
    };
    Ok(Some(Reserved {
        kind,
        env,
        agent,
        bundle: Some(bundle),
        reason: format!(
            "start a release of {agent}@{bundle} in {env}: {}",
            said.join("; ")
        ),
        details: serde_json::json!({
            "because": because,
            "capabilities": changes
                .iter()
                .map(|c| {
                    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("needs_approval".into(), Value::Bool(c.needs_approval()));
                    }
                    v
                })
                .collect::<Vec<_>>(),
            "readiness": readiness,
        }),
    }))
}
