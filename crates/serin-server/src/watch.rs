//! The post-promotion watch (serin-core `release::watch`): at each due checkpoint of a
//! completed release, compare the new stable's outcomes since completion with the old
//! stable's during the release, store the result in the release, notify the plan's
//! webhooks, and roll back within the plan's window. The checkpoint's result, the rollback
//! (if any), its audit entries and its webhook rows are one store transaction; the release
//! controller runs it under its lock, so it never races a release transition.

use serde_json::json;
use serin_core::decision::{Command, EnvState};
use serin_core::guardrails::ArmAggregate;
use serin_core::release::watch::judge;
use serin_core::release::{CheckpointResult, CheckpointVerdict, Release};
use serin_store::{EnvStateChange, NewAudit, NewNotification, ReleaseRow, ReleaseWrite, Store};

use crate::error::{ApiError, ErrorCode};
use crate::hub::{self, Hub};

const ROLLUP_MINUTE_MS: i64 = 60_000;

/// Runs the due checkpoint of one completed release, written under the controller's
/// leadership `epoch` (refused if a newer leader exists) and only if the row is still as read.
pub async fn checkpoint(
    store: &Store,
    hub: &Hub,
    row: &ReleaseRow,
    now: i64,
    epoch: i64,
) -> Result<(), ApiError> {
    let release: Release = match serde_json::from_str(&row.state) {
        Ok(r) => r,
        Err(e) => {
            // Its text is kept as it is (GET answers 409 naming it); only the watch ends,
            // so the controller does not pick the row up again every tick.
            tracing::error!(release = %row.id, error = %e, "release under watch is unreadable; its watch ends");
            return end_unreadable(store, row, now, epoch).await;
        }
    };
    let (Some(plan_watch), Some(mut state)) = (release.plan.watch.clone(), release.watch.clone())
    else {
        return end_unreadable(store, row, now, epoch).await;
    };
    let index = state.results.len();
    let due_ms = state.next_due_ms.unwrap_or(now);
    let env_state: EnvState = match store.latest_env_state(&release.env).await? {
        Some(s) => hub::parse_state(&s)?,
        None => EnvState::default(),
    };
    let stable = env_state
        .routing()
        .get(&release.agent)
        .and_then(|r| r.stable.as_ref())
        .map(|b| b.id.clone());
    let config = release.plan.guardrails();
    let min_requests = plan_watch
        .min_requests
        .unwrap_or(config.settings.min_requests);
    let (verdict, findings) = if stable.as_deref() != Some(release.candidate.id.as_str()) {
        (CheckpointVerdict::Superseded, Vec::new())
    } else {
        let (baseline, current) = aggregates(store, &release, state.completed_ms).await?;
        judge(&config, &baseline, &current, min_requests)
    };
    let roll_back =
        verdict == CheckpointVerdict::Breach && plan_watch.may_roll_back(state.completed_ms, now);
    let result = CheckpointResult {
        checkpoint: index,
        due_ms,
        at_ms: now,
        verdict,
        findings,
        action: if roll_back { "rolled_back" } else { "none" }.to_owned(),
    };
    state.next_due_ms = if roll_back || verdict == CheckpointVerdict::Superseded {
        None
    } else {
        plan_watch.due_ms(state.completed_ms, index + 1)
    };
    state.results.push(result.clone());
    let mut next = release.clone();
    next.watch = Some(state.clone());

    let verdict_name = match verdict {
        CheckpointVerdict::Ok => "ok",
        CheckpointVerdict::Breach => "breach",
        CheckpointVerdict::InsufficientData => "insufficient_data",
        CheckpointVerdict::Superseded => "superseded",
    };
    let subject = format!("{}/{} {}", release.agent, release.env, release.id);
    let breached: Vec<String> = result
        .findings
        .iter()
        .filter(|f| f.breached && !f.shadow)
        .map(|f| {
            format!(
                "{} ({} vs baseline {}, {})",
                f.guardrail, f.current, f.baseline, f.threshold
            )
        })
        .collect();
    let reason = if breached.is_empty() {
        None
    } else {
        Some(format!(
            "post-promotion checkpoint {}: {}",
            index + 1,
            breached.join("; ")
        ))
    };
    let mut audits = vec![NewAudit {
        at_ms: now,
        actor: crate::releases::SYSTEM.to_owned(),
        action: "release.watch_checkpoint".to_owned(),
        subject: subject.clone(),
        details: json!({
            "release": release.id, "checkpoint": index, "verdict": verdict_name,
            "action": result.action, "reason": reason,
        }),
    }];
    if roll_back {
        audits.push(NewAudit {
            at_ms: now,
            actor: crate::releases::SYSTEM.to_owned(),
            action: "release.watch_rollback".to_owned(),
            subject,
            details: json!({
                "release": release.id, "from": release.candidate.id,
                "to": release.baseline.id, "reason": reason,
            }),
        });
    }
    let payload = json!({
        "release": release.id, "agent": release.agent, "env": release.env,
        "action": format!("release.watch_{verdict_name}"),
        "phase": release.phase, "candidate": release.candidate.id,
        "baseline": release.baseline.id, "checkpoint": result,
        "rolled_back": roll_back, "initiator": crate::releases::SYSTEM,
        "reason": reason, "at_ms": now,
    })
    .to_string();
    let notifications: Vec<NewNotification> = release
        .plan
        .notify
        .iter()
        .map(|n| NewNotification {
            release_id: release.id.clone(),
            url: n.webhook.clone(),
            payload: payload.clone(),
        })
        .collect();
    let text = serde_json::to_string(&next).map_err(ApiError::internal)?;
    let env = release.env.clone();
    let agent = release.agent.clone();
    let mut bundles = crate::servable::known_bundles(hub, &env).await;
    if roll_back {
        crate::servable::load_into(
            hub,
            &mut bundles,
            &std::collections::BTreeSet::from([release.baseline.id.clone()]),
        )
        .await?;
    }
    let written = store
        .write_release(
            ReleaseWrite {
                id: release.id.clone(),
                env: release.env.clone(),
                agent: release.agent.clone(),
                state: text,
                active: false,
                is_new: false,
                watch_due_ms: state.next_due_ms,
                expected_revision: Some(row.revision),
                epoch: Some(epoch),
            },
            now,
            crate::releases::SYSTEM,
            |current| {
                if !roll_back {
                    return Ok(None);
                }
                let st: EnvState = match current {
                    Some(json) => serde_json::from_str(json).map_err(ApiError::internal)?,
                    None => EnvState::default(),
                };
                let st = st
                    .apply(&Command::Rollback {
                        agent: agent.clone(),
                    })
                    .map_err(|e| ApiError::new(ErrorCode::Conflict, e.to_string()))?;
                crate::servable::check(&env, &st, &bundles, "/bundle")
                    .map_err(crate::servable::Refusal::into_api)?;
                Ok::<_, ApiError>(Some(EnvStateChange {
                    state: serde_json::to_string(&st).map_err(ApiError::internal)?,
                    action: "rollback".to_owned(),
                    subject: agent.clone(),
                    details: json!({ "release": release.id, "reason": reason }),
                }))
            },
            audits,
            notifications,
        )
        .await??;
    if let Some(stored) = written {
        hub.publish(&stored).await?;
    }
    metrics::counter!("serin_release_watch_checkpoints_total", "verdict" => verdict_name)
        .increment(1);
    tracing::info!(release = %release.id, checkpoint = index, verdict = verdict_name, rolled_back = roll_back, "post-promotion checkpoint");
    Ok(())
}

/// The old stable during the release (the control arm's rollups from the release's start
/// to its completion) and the new stable since completion.
async fn aggregates(
    store: &Store,
    release: &Release,
    completed_ms: i64,
) -> Result<(ArmAggregate, ArmAggregate), ApiError> {
    let started = release
        .history
        .first()
        .map_or(release.created_ms, |t| t.at_ms);
    let from_minute = started - started.rem_euclid(ROLLUP_MINUTE_MS);
    let done_minute = completed_ms - completed_ms.rem_euclid(ROLLUP_MINUTE_MS);
    let mut baseline = ArmAggregate::default();
    let mut current = ArmAggregate::default();
    for r in store
        .rollups(&release.env, &release.agent, from_minute)
        .await?
    {
        if r.arm != "stable" {
            continue;
        }
        let Ok(agg) = serde_json::from_str::<ArmAggregate>(&r.data) else {
            // An unreadable rollup is quarantined where it is read for the live view;
            // here it only means less data.
            continue;
        };
        if r.bundle == release.baseline.id && r.minute_ms <= done_minute {
            baseline.merge(&agg);
        } else if r.bundle == release.candidate.id && r.minute_ms >= done_minute {
            current.merge(&agg);
        }
    }
    Ok((baseline, current))
}

/// Ends the watch of a row that cannot be judged, keeping its text as it is.
async fn end_unreadable(
    store: &Store,
    row: &ReleaseRow,
    now: i64,
    epoch: i64,
) -> Result<(), ApiError> {
    store
        .write_release(
            ReleaseWrite {
                id: row.id.clone(),
                env: row.env.clone(),
                agent: row.agent.clone(),
                state: row.state.clone(),
                active: row.active,
                is_new: false,
                watch_due_ms: None,
                expected_revision: Some(row.revision),
                epoch: Some(epoch),
            },
            now,
            crate::releases::SYSTEM,
            |_| Ok::<_, ApiError>(None),
            Vec::new(),
            Vec::new(),
        )
        .await??;
    Ok(())
}
