//! Rollback drills: roll an agent back in an env, time how long until every connected SDK
//! reports serving the previous bundle, roll forward again, time that too, and keep the
//! record (readiness item `rollback_drill_recent`; `serin drill history`).
//!
//! A drill is one row in `drills`, `running` from the rollback's transaction until the
//! final record is written. The rollback and the roll-forward are each one transaction with
//! the drill row and their audit entries. If the server dies in between, [`Drills::resume_all`]
//! rolls forward at start (when the env still serves the rollback target) and records the
//! drill as `interrupted`, so a crash never leaves an env rolled back by a rehearsal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use serin_core::decision::{BundleRef, Command, EnvState};
use serin_store::{DrillWrite, EnvStateChange, NewAudit, Store, StoreError};
use tokio::sync::Mutex;
use utoipa::ToSchema;

use crate::clock;
use crate::error::{ApiError, ErrorCode};
use crate::hub::{self, Hub};
use crate::sdks::{AppliedWait, SdkRegistry};

/// Default and largest wait for SDKs, per leg.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// The audit action of a drill's first write, which also creates its row.
const START: &str = "drill.start";

/// Per-SDK confirmations kept in a record (the counts are always complete).
const MAX_LISTED: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrillOutcome {
    Running,
    /// Both legs committed and every connected SDK confirmed both in time.
    Succeeded,
    /// An SDK did not confirm in time, or the roll-forward could not be applied.
    Failed,
    /// Both legs committed, but a leg had no SDK confirming it (none was
    /// connected to this server, or every one disconnected): nothing was
    /// measured, so it is not drill evidence.
    Inconclusive,
    /// The server running it stopped mid-drill; it was rolled forward at the next start
    /// (one node) or by the leader once overdue (replicas).
    Interrupted,
}

/// One SDK's confirmation of a leg.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SdkConfirmation {
    pub instance: String,
    /// From the start of the leg's transaction to the SDK's report.
    pub after_ms: f64,
}

/// One SDK still behind when a leg timed out, and where it is connected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SdkLaggard {
    pub instance: String,
    /// The replica its stream is on (`GET /v1/system/replicas`); absent on a
    /// single-node server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The version it serves, as far as the server knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<u64>,
}

/// One direction of a drill: rollback or roll-forward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DrillLeg {
    /// The snapshot version the leg published.
    pub version: u64,
    /// From the start of the transaction to its commit.
    pub commit_ms: f64,
    /// SDKs connected when the leg was published: to this server, and on
    /// PostgreSQL to any live replica.
    pub sdks: usize,
    pub confirmed: usize,
    /// Until the last SDK confirmed (until the publish when none confirmed).
    pub duration_ms: f64,
    /// Median of the SDK confirmations.
    pub p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lagging: Vec<String>,
    /// The entries of `lagging`, each with its replica and applied version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub laggards: Vec<SdkLaggard>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disconnected: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirmations: Vec<SdkConfirmation>,
}

impl DrillLeg {
    fn complete(&self) -> bool {
        self.lagging.is_empty()
    }
}

/// A drill as stored (the `state` column) and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DrillRecord {
    pub id: String,
    pub env: String,
    pub agent: String,
    /// The stable before the drill, restored by the roll-forward.
    pub from: String,
    /// The previous stable the drill rolled back to.
    pub to: String,
    /// `from` in full, so a restarted server can roll forward after the stack was popped.
    #[schema(value_type = Object)]
    pub from_bundle: BundleRef,
    pub outcome: DrillOutcome,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub started_by: String,
    pub timeout_ms: u64,
    pub rollback: Option<DrillLeg>,
    pub forward: Option<DrillLeg>,
    /// Why the drill failed or was interrupted.
    pub error: Option<String>,
}

impl DrillRecord {
    pub fn succeeded(&self) -> bool {
        self.outcome == DrillOutcome::Succeeded
    }
}

/// Drills of an agent in an env and their trend.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DrillHistory {
    /// Newest first.
    pub drills: Vec<DrillRecord>,
    pub summary: DrillSummary,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct DrillSummary {
    pub count: usize,
    pub succeeded: usize,
    /// Median rollback duration over the successful drills.
    pub median_rollback_ms: Option<f64>,
    /// Median over the newest half of the successful drills, and over the older half.
    pub recent_median_ms: Option<f64>,
    pub earlier_median_ms: Option<f64>,
    /// `falling`, `rising`, `flat`, or `unknown` (fewer than 4 successful drills).
    pub trend: String,
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values.get(mid).copied()
    } else {
        Some((values.get(mid - 1)? + values.get(mid)?) / 2.0)
    }
}

/// The trend of rollback durations over successful drills (`newest_first`). Seed 004 asks
/// that it falls as a team practises; within 10% either way counts as flat.
pub fn summarize(newest_first: &[DrillRecord]) -> DrillSummary {
    let mut durations: Vec<f64> = newest_first
        .iter()
        .filter(|d| d.succeeded())
        .filter_map(|d| d.rollback.as_ref().map(|l| l.duration_ms))
        .collect();
    let succeeded = durations.len();
    let half = succeeded / 2;
    let (mut recent, mut earlier) = if succeeded >= 4 {
        (
            durations
                .get(..half)
                .map(<[f64]>::to_vec)
                .unwrap_or_default(),
            durations
                .get(succeeded - half..)
                .map(<[f64]>::to_vec)
                .unwrap_or_default(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let recent_median_ms = median(&mut recent);
    let earlier_median_ms = median(&mut earlier);
    let trend = match (recent_median_ms, earlier_median_ms) {
        (Some(r), Some(e)) if r < e * 0.9 => "falling",
        (Some(r), Some(e)) if r > e * 1.1 => "rising",
        (Some(_), Some(_)) => "flat",
        _ => "unknown",
    };
    DrillSummary {
        count: newest_first.len(),
        succeeded,
        median_rollback_ms: median(&mut durations),
        recent_median_ms,
        earlier_median_ms,
        trend: trend.to_owned(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn leg(version: i64, commit: Duration, published: Duration, wait: AppliedWait) -> DrillLeg {
    let mut confirmations: Vec<SdkConfirmation> = wait
        .confirmed
        .iter()
        .map(|c| SdkConfirmation {
            instance: c.instance.clone(),
            after_ms: ms(c.after),
        })
        .collect();
    confirmations.sort_by(|a, b| a.after_ms.total_cmp(&b.after_ms));
    let mut afters: Vec<f64> = confirmations.iter().map(|c| c.after_ms).collect();
    let duration_ms = afters.iter().copied().fold(ms(published), f64::max);
    let p50_ms = median(&mut afters);
    confirmations.truncate(MAX_LISTED);
    let mut laggards: Vec<SdkLaggard> = wait
        .lagging
        .into_iter()
        .map(|l| SdkLaggard {
            instance: l.instance,
            replica: l.replica,
            applied_version: l.applied_version,
        })
        .collect();
    laggards.truncate(MAX_LISTED);
    let lagging: Vec<String> = laggards.iter().map(|l| l.instance.clone()).collect();
    let mut disconnected = wait.disconnected;
    disconnected.truncate(MAX_LISTED);
    DrillLeg {
        version: u64::try_from(version).unwrap_or(0),
        commit_ms: ms(commit),
        sdks: wait.waited_for.len(),
        confirmed: wait.confirmed.len(),
        duration_ms,
        p50_ms,
        lagging,
        laggards,
        disconnected,
        confirmations,
    }
}

fn store_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
        other => ApiError::from(other),
    }
}

#[derive(Debug)]
pub struct Drills {
    store: Store,
    hub: Arc<Hub>,
    sdks: Arc<SdkRegistry>,
    /// One drill at a time on this replica: drills are rare and each moves traffic.
    lock: Mutex<()>,
}

impl Drills {
    pub fn new(store: Store, hub: Arc<Hub>, sdks: Arc<SdkRegistry>) -> Drills {
        Drills {
            store,
            hub,
            sdks,
            lock: Mutex::new(()),
        }
    }

    /// Runs one drill to the end (both legs) and returns its record.
    pub async fn run(
        &self,
        env: &str,
        agent: &str,
        timeout: Duration,
        actor: &str,
    ) -> Result<DrillRecord, ApiError> {
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/timeout_ms",
                format!(
                    "timeout must be between 1 ms and {} s",
                    MAX_TIMEOUT.as_secs()
                ),
            ));
        }
        let _guard = self.lock.lock().await;
        let state: EnvState = match self.store.latest_env_state(env).await? {
            Some(s) => hub::parse_state(&s)?,
            None => EnvState::default(),
        };
        let routing = state.routing().get(agent).cloned().unwrap_or_default();
        if routing.release.is_some() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{agent} has a release in progress in {env}; drills are refused while a release is active"
                ),
            ));
        }
        let (Some(from), Some(to)) = (routing.stable.clone(), routing.previous.clone()) else {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{agent} has no previous stable in {env}, so there is nothing to roll back to; deploy two bundles first"
                ),
            ));
        };
        let n = self.store.count_drills(env, agent).await? + 1;
        let mut record = DrillRecord {
            id: format!("{agent}-{env}-drill-{n}"),
            env: env.to_owned(),
            agent: agent.to_owned(),
            from: from.id.clone(),
            to: to.id.clone(),
            from_bundle: from.clone(),
            outcome: DrillOutcome::Running,
            started_ms: clock::now_ms(),
            finished_ms: None,
            started_by: actor.to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            rollback: None,
            forward: None,
            error: None,
        };

        // Leg 1: roll back.
        let t0 = Instant::now();
        let stored = self
            .write(&record, true, actor, Some(rollback_change(&record)), START)
            .await?
            .ok_or_else(|| ApiError::internal("drill rollback wrote no env state"))?;
        let commit = t0.elapsed();
        self.hub.publish(&stored).await?;
        let published = t0.elapsed();
        let version = u64::try_from(stored.version).unwrap_or(0);
        let wait = self.sdks.wait_applied(env, version, t0, timeout).await;
        record.rollback = Some(leg(stored.version, commit, published, wait));

        // Leg 2: roll forward, unless someone changed the stable meanwhile.
        let t1 = Instant::now();
        let forward = self
            .write(
                &record,
                true,
                actor,
                Some(forward_change(&record, &from)),
                "drill.forward",
            )
            .await;
        match forward {
            Ok(Some(stored)) => {
                let commit = t1.elapsed();
                self.hub.publish(&stored).await?;
                let published = t1.elapsed();
                let version = u64::try_from(stored.version).unwrap_or(0);
                let wait = self.sdks.wait_applied(env, version, t1, timeout).await;
                record.forward = Some(leg(stored.version, commit, published, wait));
            }
            Ok(None) => {}
            Err(e) if e.code == ErrorCode::Conflict => record.error = Some(e.message),
            Err(e) => return Err(e),
        }

        let back_ok = record.rollback.as_ref().is_some_and(DrillLeg::complete);
        let forward_ok = record.forward.as_ref().is_some_and(DrillLeg::complete);
        let measured = [&record.rollback, &record.forward]
            .iter()
            .all(|l| l.as_ref().is_some_and(|l| l.confirmed > 0));
        record.outcome = match (back_ok && forward_ok && record.error.is_none(), measured) {
            (true, true) => DrillOutcome::Succeeded,
            (true, false) => DrillOutcome::Inconclusive,
            (false, _) => DrillOutcome::Failed,
        };
        if record.outcome == DrillOutcome::Inconclusive {
            record.error = Some(format!(
                "no SDK was connected to env {} (on this server, or on PostgreSQL on any live \
                 replica) to confirm both legs, so nothing was measured and this drill is not \
                 evidence (the env was rolled back and forward all the same); connect the \
                 agent's SDKs and run it again",
                record.env
            ));
        }
        if record.error.is_none() && !(back_ok && forward_ok) {
            let lagging: Vec<String> = record
                .rollback
                .iter()
                .chain(record.forward.iter())
                .flat_map(|l| {
                    l.lagging.iter().map(|i| {
                        match l
                            .laggards
                            .iter()
                            .find(|g| &g.instance == i)
                            .and_then(|g| g.replica.as_deref())
                        {
                            Some(r) => format!("{i} (on replica {r})"),
                            None => i.clone(),
                        }
                    })
                })
                .collect();
            record.error = Some(format!(
                "{} SDK(s) did not confirm within {} ms: {}",
                lagging.len(),
                record.timeout_ms,
                lagging.join(", ")
            ));
        }
        record.finished_ms = Some(clock::now_ms());
        self.write(&record, false, actor, None, "drill.finish")
            .await?;
        if let Some(l) = &record.rollback {
            metrics::histogram!("serin_drill_rollback_seconds").record(l.duration_ms / 1000.0);
        }
        metrics::counter!("serin_drills_total", "outcome" => outcome_str(record.outcome))
            .increment(1);
        Ok(record)
    }

    /// Writes the drill row (created by its first write, `drill.start`), an optional env change and
    /// one audit entry, in one transaction.
    async fn write(
        &self,
        record: &DrillRecord,
        running: bool,
        actor: &str,
        change: Option<EnvChange>,
        action: &str,
    ) -> Result<Option<serin_store::StoredEnvState>, ApiError> {
        // Only the first write of a drill (its rollback) creates the row.
        let is_new = action == START;
        let state = serde_json::to_string(record).map_err(ApiError::internal)?;
        let now = clock::now_ms();
        let audit = NewAudit {
            at_ms: now,
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: format!("{}/{} {}", record.agent, record.env, record.id),
            details: json!({
                "drill": record.id, "from": record.from, "to": record.to,
                "outcome": record.outcome,
                "rollback_ms": record.rollback.as_ref().map(|l| l.duration_ms),
                "forward_ms": record.forward.as_ref().map(|l| l.duration_ms),
                "error": record.error,
            }),
        };
        let mut bundles = std::collections::BTreeMap::new();
        if change.is_some() {
            bundles = crate::servable::known_bundles(&self.hub, &record.env).await;
            let from = std::collections::BTreeSet::from([record.from_bundle.id.clone()]);
            crate::servable::load_into(&self.hub, &mut bundles, &from).await?;
        }
        let env = record.env.clone();
        let written = self
            .store
            .write_drill(
                DrillWrite {
                    id: record.id.clone(),
                    env: record.env.clone(),
                    agent: record.agent.clone(),
                    state,
                    running,
                    is_new,
                },
                now,
                actor,
                |current| match change {
                    None => Ok::<_, ApiError>(None),
                    Some(f) => {
                        let c = f(current)?;
                        let next: EnvState =
                            serde_json::from_str(&c.state).map_err(ApiError::internal)?;
                        crate::servable::check(&env, &next, &bundles, "/")
                            .map_err(crate::servable::Refusal::into_api)?;
                        Ok(Some(c))
                    }
                },
                vec![audit],
            )
            .await
            .map_err(store_conflict)??;
        Ok(written)
    }

    /// The agent's drills in `env`, newest first, with their trend.
    pub async fn history(&self, env: &str, agent: &str) -> Result<DrillHistory, ApiError> {
        let drills: Vec<DrillRecord> = self
            .store
            .list_drills(env, agent, serin_store::MAX_PAGE)
            .await?
            .iter()
            .map(|r| serde_json::from_str(&r.state).map_err(ApiError::internal))
            .collect::<Result<_, _>>()?;
        let summary = summarize(&drills);
        Ok(DrillHistory { drills, summary })
    }

    /// Finishes drills a dead process left running: rolls forward when the env still
    /// serves the rollback target, then records them as interrupted. Returns how many.
    /// A drill row that cannot be read is quarantined and left as it is.
    ///
    /// `overdue_at: None` takes every running drill as orphaned (a single-node store at
    /// start: no other process can be running one). With replicas a running drill may be
    /// another replica's, alive, so `Some(now)` takes only drills past [`Drills::deadline`].
    pub async fn resume_all(
        &self,
        quarantine: &crate::quarantine::Quarantine,
        overdue_at: Option<i64>,
    ) -> Result<usize, ApiError> {
        let rows = self.store.running_drills().await?;
        let mut count = 0;
        for row in rows {
            let mut record: DrillRecord = match serde_json::from_str(&row.state) {
                Ok(r) => r,
                Err(e) => {
                    quarantine.record(
                        crate::quarantine::DRILL,
                        &row.id,
                        &e.to_string(),
                        &row.state,
                    );
                    continue;
                }
            };
            if overdue_at.is_some_and(|now| now < Drills::deadline(&record)) {
                continue;
            }
            count += 1;
            let state: EnvState = match self.store.latest_env_state(&record.env).await? {
                Some(s) => hub::parse_state(&s)?,
                None => EnvState::default(),
            };
            let routing = state
                .routing()
                .get(&record.agent)
                .cloned()
                .unwrap_or_default();
            let on_target = routing.stable.as_ref().is_some_and(|s| s.id == record.to);
            let from = on_target.then(|| record.from_bundle.clone());
            record.outcome = DrillOutcome::Interrupted;
            record.finished_ms = Some(clock::now_ms());
            let change = match from {
                Some(from) => {
                    record.error = Some(format!(
                        "the server stopped mid-drill; rolled forward to {} afterwards",
                        record.from
                    ));
                    Some(forward_change(&record, &from))
                }
                None => {
                    record.error = Some(
                        "the server stopped mid-drill; the env no longer served the rollback target, so it was left as it was"
                            .to_owned(),
                    );
                    None
                }
            };
            let written = self
                .write(
                    &record,
                    false,
                    crate::releases::SYSTEM,
                    change,
                    "drill.resume",
                )
                .await?;
            if let Some(stored) = written {
                self.hub.publish(&stored).await?;
            }
            tracing::warn!(drill = %record.id, "finished a drill its server left running");
        }
        Ok(count)
    }
}

impl Drills {
    /// When a drill still running must have lost its replica: both legs wait at most its
    /// timeout, so past twice that (and a minute for the writes) nobody is running it.
    pub fn deadline(record: &DrillRecord) -> i64 {
        let timeout = i64::try_from(record.timeout_ms).unwrap_or(i64::MAX);
        record
            .started_ms
            .saturating_add(timeout.saturating_mul(2))
            .saturating_add(ORPHAN_GRACE_MS)
    }
}

/// See [`Drills::deadline`].
const ORPHAN_GRACE_MS: i64 = 60_000;

fn outcome_str(o: DrillOutcome) -> &'static str {
    match o {
        DrillOutcome::Running => "running",
        DrillOutcome::Succeeded => "succeeded",
        DrillOutcome::Failed => "failed",
        DrillOutcome::Interrupted => "interrupted",
        DrillOutcome::Inconclusive => "inconclusive",
    }
}

type EnvChange = Box<dyn FnOnce(Option<&str>) -> Result<EnvStateChange, ApiError> + Send>;

fn parse_current(current: Option<&str>) -> Result<EnvState, ApiError> {
    match current {
        Some(json) => serde_json::from_str(json).map_err(ApiError::internal),
        None => Ok(EnvState::default()),
    }
}

fn change_of(
    st: &EnvState,
    action: &str,
    agent: &str,
    drill: &str,
) -> Result<EnvStateChange, ApiError> {
    Ok(EnvStateChange {
        state: serde_json::to_string(st).map_err(ApiError::internal)?,
        action: action.to_owned(),
        subject: agent.to_owned(),
        details: json!({ "drill": drill }),
    })
}

/// Pops the deploy stack, refusing if the stable moved since the drill looked at it.
fn rollback_change(record: &DrillRecord) -> EnvChange {
    let (agent, id, from) = (record.agent.clone(), record.id.clone(), record.from.clone());
    Box::new(move |current| {
        let st = parse_current(current)?;
        let routing = st.routing().get(&agent).cloned().unwrap_or_default();
        if routing.release.is_some() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{agent} has a release in progress; drills are refused while a release is active"
                ),
            ));
        }
        if routing.stable.as_ref().map(|s| s.id.as_str()) != Some(from.as_str()) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the stable of {agent} changed while the drill started; try again"),
            ));
        }
        let next = st
            .apply(&Command::Rollback {
                agent: agent.clone(),
            })
            .map_err(|e| ApiError::new(ErrorCode::Conflict, e.to_string()))?;
        change_of(&next, "drill.rollback", &agent, &id)
    })
}

/// Re-deploys the drill's original stable, only if the env still serves the rollback target.
fn forward_change(record: &DrillRecord, from: &BundleRef) -> EnvChange {
    let (agent, id, to) = (record.agent.clone(), record.id.clone(), record.to.clone());
    let from = from.clone();
    Box::new(move |current| {
        let st = parse_current(current)?;
        let routing = st.routing().get(&agent).cloned().unwrap_or_default();
        let stable = routing.stable.as_ref().map(|s| s.id.clone());
        if stable.as_deref() != Some(to.as_str()) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "the stable of {agent} changed during the drill (now {}); not rolled forward",
                    stable.as_deref().unwrap_or("none")
                ),
            ));
        }
        let next = st
            .apply(&Command::Deploy {
                agent: agent.clone(),
                bundle: from,
            })
            .map_err(|e| ApiError::new(ErrorCode::Conflict, e.to_string()))?;
        change_of(&next, "drill.forward", &agent, &id)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn record(outcome: DrillOutcome, rollback_ms: f64) -> DrillRecord {
        DrillRecord {
            id: "d".into(),
            env: "prod".into(),
            agent: "support".into(),
            from: "support@2".into(),
            to: "support@1".into(),
            from_bundle: BundleRef {
                id: "support@2".into(),
                number: 2,
                digest: "sha256:2".into(),
            },
            outcome,
            started_ms: 0,
            finished_ms: Some(1),
            started_by: "t".into(),
            timeout_ms: 1000,
            rollback: Some(DrillLeg {
                version: 1,
                commit_ms: 1.0,
                sdks: 1,
                confirmed: 1,
                duration_ms: rollback_ms,
                p50_ms: Some(rollback_ms),
                lagging: vec![],
                laggards: vec![],
                disconnected: vec![],
                confirmations: vec![],
            }),
            forward: None,
            error: None,
        }
    }

    #[test]
    fn the_trend_compares_newer_and_older_successful_drills() {
        use DrillOutcome::{Failed, Succeeded};
        // Newest first: practice made rollbacks faster; the failed drill does not count.
        let falling = [
            record(Succeeded, 10.0),
            record(Failed, 1.0),
            record(Succeeded, 12.0),
            record(Succeeded, 40.0),
            record(Succeeded, 50.0),
        ];
        let s = summarize(&falling);
        assert_eq!((s.count, s.succeeded), (5, 4));
        assert_eq!(s.recent_median_ms, Some(11.0));
        assert_eq!(s.earlier_median_ms, Some(45.0));
        assert_eq!(s.median_rollback_ms, Some(26.0));
        assert_eq!(s.trend, "falling");
        let mut rising = falling.clone();
        rising.reverse();
        assert_eq!(summarize(&rising).trend, "rising");
        let flat: Vec<_> = (0..4)
            .map(|i| record(Succeeded, 20.0 + f64::from(i)))
            .collect();
        assert_eq!(summarize(&flat).trend, "flat");
        assert_eq!(summarize(&falling[..3]).trend, "unknown");
        assert_eq!(summarize(&[]).median_rollback_ms, None);
    }
}
