//! The side-effect ledger's server half: the store rows as ledger records, the per-token
//! bound on intents, and the leader's sweep of overdue intents to `unknown`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serin_core::ledger::{Effect, EffectStatus};
use serin_store::{EffectRow, Store};

use crate::error::{ApiError, ErrorCode};
use crate::leader;

/// Intents one token may record per second. An agent records one per side-effecting tool
/// call; a token far above this is a loop gone wrong, and every intent is a write with an
/// audit row, so it must not be able to starve the store's one writer.
pub const INTENTS_PER_SECOND: u32 = 200;

/// Intents the sweep settles per transaction, so one sweep never holds the writer for long.
const SWEEP_BATCH: i64 = 500;

/// The actor the sweep's audit entries name.
pub const SWEEP_ACTOR: &str = "system:effects-sweep";

pub fn to_row(e: &Effect) -> EffectRow {
    EffectRow {
        key: e.key.clone(),
        agent: e.agent.clone(),
        bundle: e.bundle,
        request_id: e.request_id.clone(),
        tool: e.tool.clone(),
        args_digest: e.args_digest.clone(),
        timeout_ms: e.timeout_ms,
        status: e.status.as_str().to_owned(),
        detail: e.detail.clone(),
        created_at_ms: e.created_at_ms,
        created_by: e.created_by.clone(),
        resolved_at_ms: e.resolved_at_ms,
        deadline_ms: e.deadline_ms(),
    }
}

/// A stored row as a ledger record; a status the ledger does not know is a corrupt row (the
/// schema's CHECK should make that impossible).
pub fn from_row(r: EffectRow) -> Result<Effect, ApiError> {
    let status = EffectStatus::parse(&r.status).ok_or_else(|| {
        ApiError::internal(format!(
            "effect {} has unknown status {:?}",
            r.key, r.status
        ))
    })?;
    Ok(Effect {
        key: r.key,
        agent: r.agent,
        bundle: r.bundle,
        request_id: r.request_id,
        tool: r.tool,
        args_digest: r.args_digest,
        timeout_ms: r.timeout_ms,
        status,
        detail: r.detail,
        created_at_ms: r.created_at_ms,
        created_by: r.created_by,
        resolved_at_ms: r.resolved_at_ms,
    })
}

/// A fixed one-second window per token: simple, and a burst at most doubles across a window
/// edge, which is all a bound on runaway loops needs.
#[derive(Debug, Default)]
pub struct IntentLimiter {
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl IntentLimiter {
    /// Counts one intent of `token_id` at `now_ms`; 429 with `Retry-After` past the bound.
    pub fn admit(&self, token_id: &str, now_ms: i64) -> Result<(), ApiError> {
        let second = now_ms.div_euclid(1000);
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget other tokens' past windows, so the map holds only this second's callers.
        if windows.len() > 1024 {
            windows.retain(|_, (s, _)| *s == second);
        }
        let entry = windows.entry(token_id.to_owned()).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        if entry.1 >= INTENTS_PER_SECOND {
            metrics::counter!("serin_effect_intents_limited_total").increment(1);
            return Err(ApiError::new(
                ErrorCode::Overloaded,
                format!(
                    "this token recorded {INTENTS_PER_SECOND} intents in the last second; retry after `Retry-After` s"
                ),
            ));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// Marks every overdue intent `unknown`, in batches; returns how many.
pub async fn sweep(store: &Store, now_ms: i64) -> Result<usize, ApiError> {
    let mut total = 0;
    loop {
        let swept = store
            .expire_effects(now_ms, SWEEP_BATCH, SWEEP_ACTOR, |row| {
                // A row this server cannot read is left for a person, never guessed at.
                from_row(row.clone())
                    .ok()
                    .and_then(|e| e.expire(now_ms))
                    .map(|e| to_row(&e))
            })
            .await?;
        total += swept.len();
        if i64::try_from(swept.len()).unwrap_or(i64::MAX) < SWEEP_BATCH {
            break;
        }
    }
    if total > 0 {
        metrics::counter!("serin_effects_swept_total").increment(total as u64);
    }
    Ok(total)
}

/// The leader's periodic sweep (on SQLite, the one server leads).
pub fn spawn_sweep(
    store: Store,
    every: Duration,
    leader: Arc<leader::Leader>,
) -> tokio::task::JoinHandle<()> {
    leader::spawn_duty(every, leader, "sweep overdue effect intents", move |now| {
        let store = store.clone();
        async move { sweep(&store, now).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_bounds_each_token_per_second_and_resets_next_second() {
        let l = IntentLimiter::default();
        for _ in 0..INTENTS_PER_SECOND {
            l.admit("a", 5_000).unwrap();
        }
        let err = l.admit("a", 5_999).unwrap_err();
        assert_eq!(err.code, ErrorCode::Overloaded);
        // Another token is not affected; the next second starts afresh.
        l.admit("b", 5_999).unwrap();
        l.admit("a", 6_000).unwrap();
    }
}
