//! The release controller: runs serin-core's release state machine for every
//! active release, and turns its effects into one store transaction each
//! (release row + routing change + audit + webhook outbox) before anything
//! becomes visible. A restarted server loads the active releases and carries
//! on from their persisted state.
//!
//! A release needs attention when its stored state, or its monitor's, cannot
//! be read (both are quarantined, never fatal at start). The controller then
//! leaves it alone: it is never ticked or promoted and holds its routing. With
//! an unreadable monitor, status shows `needs_attention` and pause, abort and
//! rollback work as usual; starting a new release of the candidate (after an
//! abort) replaces the monitor. With an unreadable release row, status
//! answers 409 naming the row, and a rollback drains the canary from the env
//! and closes the row (its text kept as it was, for diagnosis).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use serin_core::bundle::Bundle;
use serin_core::catalog::{ModelCatalog, ModelStatus};
use serin_core::decision::Percent;
use serin_core::decision::{BundleRef, Command, EnvState};
use serin_core::guardrails::Verdict;
use serin_core::guardrails::VerdictStatus;
use serin_core::readiness::{GateOverride, GateRecord};
use serin_core::release::{Effect, Event, GateStatus, Phase, Plan, Release, WaveEvidence};
use serin_store::{EnvStateChange, NewAudit, NewNotification, ReleaseRow, ReleaseWrite, Store};
use tokio::sync::Mutex;

use crate::error::{ApiError, ErrorCode};
use crate::guardrails::{Exposure, Guardrails};
use crate::hub::Hub;
use crate::readiness::Readiness;
use crate::{clock, hub};

/// What the API shows of a release.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReleaseView {
    pub release: Release,
    /// The share of traffic the current step routes (routed, paused or halted) or routed
    /// (finished) to the candidate: its weight, less the plan's holdback at the final step.
    pub weight: Percent,
    pub gate: Option<GateStatus>,
    /// With `verdicts`: the live monitor's while the release runs; a finished release's
    /// are frozen at its final transition (its last recorded evidence).
    pub canary_requests: u64,
    pub verdicts: Vec<Verdict>,
    /// A waved release: each wave's own comparison (what gates it), in wave order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveEvidence>,
    /// Said when the release started: a wave whose members no connected SDK reports, etc.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// For each shadow guardrail of this release, how often it failed in completed
    /// releases of the env: its observed A/A false-fail rate.
    pub shadow_calibration: Vec<ShadowCalibration>,
    /// Webhook deliveries of this release.
    #[schema(value_type = Vec<Object>)]
    pub notifications: Vec<Value>,
    /// Why an operator must act before this release can move on (its
    /// monitor's stored state is unreadable); absent when all is well.
    pub needs_attention: Option<String>,
}

/// How often a shadow bound latched `fail` in releases that completed (the candidate was
/// accepted, so those fails were false alarms as far as anyone knows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ShadowCalibration {
    pub guardrail: String,
    /// Completed releases whose final evidence has this bound `fail`.
    pub failed: u64,
    /// Completed releases whose final evidence has this bound at all.
    pub completed: u64,
    /// `refusal_rate.max_increase (shadow): failed in 1 of 37 completed releases`.
    pub summary: String,
}

/// Finished releases of an env read for [`ShadowCalibration`]: the newest this many.
pub const CALIBRATION_WINDOW: i64 = 200;

/// The evidence a transition was decided on (or, for a person's command, what the monitor
/// showed when it was made), recorded with it.
struct Judged<'a> {
    before: &'a Release,
    canary_requests: u64,
    verdicts: &'a [Verdict],
    /// A waved release: each wave's comparison.
    waves: &'a [WaveEvidence],
    /// The stored revision `before` was read at (`None` for a start): the write is refused
    /// if anyone wrote the release since.
    revision: Option<i64>,
    /// The controller's leadership epoch (`None` for a person's command, which leadership
    /// does not fence).
    epoch: Option<i64>,
}

/// What starting a release did.
#[derive(Debug)]
pub enum Started {
    Release(Box<ReleaseView>),
    /// The env's approval policy reserves this start: it waits for an approver.
    Pending(Box<serin_core::approvals::ApprovalRequest>),
}

#[derive(Debug)]
pub struct Releases {
    store: Store,
    hub: Arc<Hub>,
    guardrails: Arc<Guardrails>,
    /// The fleet, to warn at start about waves no SDK instance reports.
    sdks: Arc<crate::sdks::SdkRegistry>,
    catalog: Arc<ModelCatalog>,
    readiness: Arc<Readiness>,
    /// One transition at a time on this replica, so a tick and a command
    /// never race on the same release.
    lock: Mutex<()>,
}

fn refusal(r: serin_core::release::Refusal) -> ApiError {
    let code = if r.code == "release_finished" || r.code == "already_started" {
        ErrorCode::Conflict
    } else {
        ErrorCode::PolicyViolation
    };
    ApiError::new(code, r.message.clone())
        .with_details(json!({ "refusal": r.code, "missing": r.missing }))
}

/// What the release's monitor must know from snapshot `version` on: the
/// canary's share and the exclusion in force (`None` once the release ended).
fn exposure_of(release: &Release, version: u64) -> Option<Exposure> {
    exposure_at(release, version, release.weight())
}

fn exposure_at(release: &Release, version: u64, weight: Percent) -> Option<Exposure> {
    if release.phase.is_terminal() {
        return None;
    }
    let routing = release.routing();
    Some(Exposure {
        share: f64::from(weight.basis_points()) / 10_000.0,
        version,
        excluded: Arc::new(release.plan.exclude_tenants.clone()),
        exclusion_dropped: !release.plan.exclude_tenants.is_empty()
            && routing.is_some_and(|r| r.exclude_tenants.is_empty()),
    })
}

/// The release's comparisons (monitor ids) with what each must know from snapshot `version`
/// on: the candidate's own for a plan without waves, one per wave (at that wave's weight)
/// for a waved plan, whose waves are judged apart.
fn comparisons_of(release: &Release, version: u64) -> Vec<(String, Option<Exposure>)> {
    if release.plan.waves.is_none() {
        return vec![(release.candidate.id.clone(), exposure_of(release, version))];
    }
    release
        .wave_routing()
        .into_iter()
        .map(|w| {
            (
                serin_core::release::wave_comparison(&release.candidate.id, &w.name),
                exposure_at(release, version, w.weight),
            )
        })
        .collect()
}

impl Releases {
    pub fn new(
        store: Store,
        hub: Arc<Hub>,
        guardrails: Arc<Guardrails>,
        catalog: Arc<ModelCatalog>,
        readiness: Arc<Readiness>,
        sdks: Arc<crate::sdks::SdkRegistry>,
    ) -> Releases {
        Releases {
            store,
            hub,
            guardrails,
            catalog,
            readiness,
            sdks,
            lock: Mutex::new(()),
        }
    }

    /// Re-pins the monitors of releases that were running when the server
    /// stopped, with their current canary share.
    /// Unreadable rows are quarantined and skipped.
    pub async fn resume_all(&self) -> Result<usize, ApiError> {
        let rows = self.store.active_releases().await?;
        let mut resumed = 0;
        for row in &rows {
            let Some(r) = self.read(row) else { continue };
            let version = self.hub.current(&r.env).await?.version;
            for (id, exposure) in comparisons_of(&r, version) {
                self.guardrails
                    .set_share(&r.env, &r.agent, &id, exposure)
                    .await?;
            }
            self.guardrails
                .set_waved(&r.env, &r.agent, crate::guardrails::Waved::of(&r));
            if let Some(why) = self.needs_attention(&r).await {
                tracing::error!(release = %r.id, "release needs attention: {why}");
            }
            resumed += 1;
        }
        Ok(resumed)
    }

    /// The release stored in `row`, or `None` (quarantined) when it cannot be read.
    fn read(&self, row: &ReleaseRow) -> Option<Release> {
        match serde_json::from_str(&row.state) {
            Ok(r) => Some(r),
            Err(e) => {
                self.guardrails.quarantine().record(
                    crate::quarantine::RELEASE,
                    &row.id,
                    &e.to_string(),
                    &row.state,
                );
                None
            }
        }
    }

    /// Why the release cannot move on without an operator, if it cannot.
    async fn needs_attention(&self, r: &Release) -> Option<String> {
        if r.phase.is_terminal() {
            return None;
        }
        self.guardrails
            .monitor_quarantined(&r.env, &r.agent, &r.candidate.id)
            .await
            .then(|| {
                format!(
                    "the stored guardrail monitor of {} in {} is unreadable (quarantined); \
                     the release holds at its step: abort or roll it back, or start a new release",
                    r.candidate.id, r.env
                )
            })
    }

    /// Parses a release row for a reader, answering 409 naming the row when it
    /// is unreadable.
    fn read_or_conflict(&self, row: &ReleaseRow) -> Result<Release, ApiError> {
        self.read(row).ok_or_else(|| unreadable(row))
    }

    /// Drains the canary of an agent whose active release row is unreadable
    /// and closes that row (its stored text unchanged), in one transaction
    /// with its audit entry. `Ok(None)` when the agent's active release is
    /// readable (the caller goes through the state machine).
    pub async fn close_unreadable(
        &self,
        env: &str,
        agent: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Option<()>, ApiError> {
        let _guard = self.lock.lock().await;
        let Some(row) = self.store.active_release(env, agent).await? else {
            return Ok(None);
        };
        if self.read(&row).is_some() {
            return Ok(None);
        }
        let now = clock::now_ms();
        let release_id = row.id.clone();
        let written = self
            .store
            .write_release(
                ReleaseWrite {
                    id: row.id.clone(),
                    env: row.env.clone(),
                    agent: row.agent.clone(),
                    state: row.state.clone(),
                    active: false,
                    is_new: false,
                    watch_due_ms: None,
                    expected_revision: Some(row.revision),
                    epoch: None,
                },
                now,
                actor,
                |current| {
                    let mut st: EnvState = match current {
                        Some(json) => serde_json::from_str(json).map_err(ApiError::internal)?,
                        None => EnvState::default(),
                    };
                    st = st
                        .apply(&Command::SetRelease {
                            agent: agent.to_owned(),
                            release: None,
                        })
                        .map_err(|e| ApiError::new(ErrorCode::Conflict, e.to_string()))?;
                    Ok::<_, ApiError>(Some(EnvStateChange {
                        state: serde_json::to_string(&st).map_err(ApiError::internal)?,
                        action: "release.rolled_back".to_owned(),
                        subject: agent.to_owned(),
                        details: json!({
                            "release": release_id, "reason": reason,
                            "quarantined": true,
                        }),
                    }))
                },
                Vec::new(),
                Vec::new(),
            )
            .await
            .map_err(|e| match e {
                serin_store::StoreError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
                other => ApiError::from(other),
            })??;
        if let Some(stored) = written {
            self.hub.publish(&stored).await?;
        }
        tracing::warn!(release = %row.id, "unreadable release rolled back and closed");
        Ok(Some(()))
    }

    /// Runs the controller until the returned handle is dropped or aborted. It ticks only
    /// while `leader` says this replica leads, and writes under its epoch.
    pub fn spawn(
        self: &Arc<Self>,
        every: Duration,
        leader: Arc<crate::leader::Leader>,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let latched = match weak.upgrade() {
                Some(this) => this.guardrails.latched(),
                None => return,
            };
            let mut elected = leader.subscribe();
            loop {
                // A latched fail is acted on at once, and so is a new term (its releases
                // were resumed just before); the periodic tick covers the rest.
                tokio::select! {
                    _ = tick.tick() => {}
                    () = latched.notified() => {}
                    changed = elected.changed() => if changed.is_err() { break },
                }
                let Some(epoch) = leader.epoch() else {
                    continue;
                };
                let Some(this) = weak.upgrade() else { break };
                let result = match this.tick_all(epoch).await {
                    // Fenced: it stepped down (and said so); the new leader carries on.
                    Err(_) if leader.superseded(epoch).await => continue,
                    Err(e) if e.code == ErrorCode::Conflict => {
                        // Lost a race with a command on another replica: the release moved
                        // since it was read, so decide again from what is stored now.
                        tracing::debug!(error = %e.message, "release changed under the tick; ticking again");
                        this.tick_all(epoch).await
                    }
                    other => other,
                };
                if let Err(e) = result
                    && !leader.superseded(epoch).await
                {
                    tracing::warn!(error = %e.message, "release controller tick failed");
                }
            }
        })
    }

    /// One look at every active release: the machine decides whether the
    /// evidence promotes, halts or rolls it back.
    pub async fn tick_all(&self, epoch: i64) -> Result<(), ApiError> {
        let latches = self.guardrails.latches();
        let mut rows = self.store.active_releases().await?;
        // Releases whose canary has failed drain first: each transition waits its turn
        // for the store's writer, and a promotion elsewhere must not delay a rollback.
        let failed: HashSet<String> = rows
            .iter()
            .filter_map(|row| self.read(row))
            .filter(|r| {
                comparisons_of(r, 0)
                    .iter()
                    .any(|(id, _)| self.guardrails.has_failed(&r.env, &r.agent, id))
            })
            .map(|r| r.id)
            .collect();
        rows.sort_by_key(|row| !failed.contains(&row.id));
        for row in rows {
            if !failed.contains(&row.id) && self.guardrails.latches() != latches {
                // A fail latched during this pass: start over with it first (the
                // controller's loop runs again at once, its wake-up is pending).
                return Ok(());
            }
            let _guard = self.lock.lock().await;
            // Re-read under the lock: a command may have moved it meanwhile.
            let Some(row) = self.store.get_release(&row.id).await? else {
                continue;
            };
            if !row.active {
                continue;
            }
            let Some(r) = self.read(&row) else { continue };
            if self.needs_attention(&r).await.is_some() {
                // Held: no evidence to judge it by until an operator acts.
                continue;
            }
            let (requests, verdicts, waves) = self.evidence_of(&r).await;
            let event = Event::tick_waves(requests, verdicts, waves);
            let now = clock::now_ms();
            // A tick is never refused.
            let Ok((next, effects)) = r.apply(&event, now) else {
                continue;
            };
            if effects.is_empty() && next.history.len() == r.history.len() {
                continue;
            }
            let (canary_requests, verdicts) = event.evidence().unwrap_or((requests, &[]));
            self.persist(
                next,
                effects,
                Judged {
                    before: &r,
                    canary_requests,
                    verdicts,
                    waves: event.wave_evidence(),
                    revision: Some(row.revision),
                    epoch: Some(epoch),
                },
                crate::releases::SYSTEM,
                now,
                Vec::new(),
            )
            .await?;
        }
        for row in self.store.due_watches(clock::now_ms(), 100).await? {
            let _guard = self.lock.lock().await;
            crate::watch::checkpoint(&self.store, &self.hub, &row, clock::now_ms(), epoch).await?;
        }
        Ok(())
    }

    /// Starts a release of `agent@bundle` in `env` under `plan`.
    #[allow(clippy::too_many_arguments)] // the route's request, field by field
    pub async fn start(
        &self,
        env: &str,
        agent: &str,
        bundle: u64,
        plan: Plan,
        actor: &str,
        gate_override: Option<GateOverride>,
        approval: Option<&str>,
    ) -> Result<Started, ApiError> {
        plan.validate().map_err(|e| {
            ApiError::field(
                ErrorCode::InvalidField,
                format!("/plan{}", e.pointer),
                e.to_string(),
            )
        })?;
        let _guard = self.lock.lock().await;
        if let Some(active) = self.store.active_release(env, agent).await? {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{agent} already has an active release in {env}: {} (abort or finish it first)",
                    active.id
                ),
            ));
        }
        let number = i64::try_from(bundle)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ApiError::field(
                    ErrorCode::InvalidField,
                    "/bundle",
                    "bundle must be a positive integer",
                )
            })?;
        let stored = self
            .store
            .get_bundle(agent, number)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no bundle {agent}@{number}")))?;
        let candidate_bundle =
            Bundle::from_canonical_json(&stored.content).map_err(ApiError::internal)?;
        // The policy is the registry's (routes refuse unknown envs before getting here).
        let strict = self.store.get_env(env).await?.is_none_or(|e| e.strict);
        if strict
            && let ModelStatus::Alias { .. } = self.catalog.classify(
                &candidate_bundle.model.provider,
                &candidate_bundle.model.snapshot,
            )
        {
            return Err(ApiError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "{agent}@{number} uses the moving model alias {:?}; {env} only accepts pinned snapshots",
                    candidate_bundle.model.snapshot
                ),
            ));
        }
        let state: EnvState = match self.store.latest_env_state(env).await? {
            Some(s) => hub::parse_state(&s)?,
            None => EnvState::default(),
        };
        let baseline = state
            .routing()
            .get(agent)
            .and_then(|r| r.stable.clone())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Conflict,
                    format!("{agent} has no stable in {env} to release against; deploy one first"),
                )
            })?;
        let candidate = BundleRef {
            id: format!("{agent}@{number}"),
            number: bundle,
            digest: stored.digest,
        };
        if candidate.id == baseline.id {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("{} is already the stable in {env}", candidate.id),
            ));
        }
        // The gate: a release that is not ready does not start, unless an admin overrides
        // it, which is audited in the start's transaction and kept in the release.
        let check = self
            .readiness
            .check(env, agent, bundle, Some(&plan))
            .await?;
        let report = check.report();
        if !report.ready && gate_override.is_none() {
            return Err(ApiError::new(
                ErrorCode::NotReady,
                format!(
                    "{} is not ready for {env}: {}",
                    candidate.id, report.verdict
                ),
            )
            .with_details(serde_json::to_value(&check).map_err(ApiError::internal)?));
        }
        // An override of a gate that holds changes nothing; keep it out of the record.
        let gate_override = gate_override.filter(|_| !report.ready);
        // The env's approval policy: a reserved start waits for a second person, or spends
        // the approval it names (given back if the start is refused after all).
        let stable_bundle = self
            .store
            .get_bundle(agent, i64::try_from(baseline.number).unwrap_or(i64::MAX))
            .await?
            .ok_or_else(|| ApiError::internal(format!("stable {} is not stored", baseline.id)))
            .and_then(|b| Bundle::from_canonical_json(&b.content).map_err(ApiError::internal))?;
        let reserved = crate::approvals::release_start_reservation(
            &self.store,
            env,
            agent,
            bundle,
            &stable_bundle,
            &candidate_bundle,
            gate_override.is_some(),
            serde_json::to_value(&report).map_err(ApiError::internal)?,
        )
        .await?;
        let spent = match crate::approvals::gate(&self.store, actor, reserved, approval).await? {
            crate::approvals::Gate::Pending(r) => return Ok(Started::Pending(Box::new(r))),
            crate::approvals::Gate::Proceed(spent) => spent,
        };
        let result: Result<ReleaseView, ApiError> = async {
            let n = self.store.count_releases(env, agent).await? + 1;
            let id = format!("{agent}-{env}-{n}");
            let now = clock::now_ms();
            let config = plan.guardrails();
            let mut release = Release::new(id, agent, env, candidate, baseline, plan, now, actor);
            release.readiness = Some(GateRecord::from_report(
                &report,
                check.policy_version,
                check.evaluated_at_ms,
                gate_override.clone(),
            ));
            let extra: Vec<NewAudit> = gate_override
                .iter()
                .map(|o| NewAudit {
                    at_ms: now,
                    actor: actor.to_owned(),
                    action: "release.readiness_override".to_owned(),
                    subject: format!("{agent}/{env} {}", release.id),
                    details: json!({
                        "release": release.id, "candidate": release.candidate.id,
                        "reason": o.reason, "policy_version": check.policy_version,
                        "verdict": report.verdict,
                        "unmet": report.unmet().map(|i| i.key.clone()).collect::<Vec<_>>(),
                        "blocked_by": report.blocked_by,
                    }),
                })
                .collect();
            let mut extra = extra;
            if let Some(a) = &spent {
                extra.push(NewAudit {
                    at_ms: now,
                    actor: actor.to_owned(),
                    action: "release.approved".to_owned(),
                    subject: format!("{agent}/{env} {}", release.id),
                    details: json!({
                        "release": release.id, "approval": a.id,
                        "approved_by": a.decided_by, "reason": a.decision_reason,
                    }),
                });
            }
            let (started, effects) = release
                .apply(
                    &Event::Start {
                        actor: actor.to_owned(),
                    },
                    now,
                )
                .map_err(refusal)?;
            let current_version = self.hub.current(env).await?.version;
            let comparisons = comparisons_of(&started, current_version);
            // Each wave is judged apart; the release's false-fail budget is split between them,
            // so a waved release halts an identical candidate no more often than an unwaved one.
            let waves = u32::try_from(comparisons.len()).unwrap_or(u32::MAX).max(1);
            let mut config = config;
            if started.plan.waves.is_some() {
                config.settings.alpha = serin_core::guardrails::Share::from_fraction(
                    config.settings.alpha.fraction() / f64::from(waves),
                );
            }
            for (id, _) in &comparisons {
                self.guardrails
                    .begin(
                        env,
                        agent,
                        id,
                        config.clone(),
                        current_version,
                        Arc::new(started.plan.exclude_tenants.clone()),
                        now,
                    )
                    .await?;
            }
            let warnings = self.wave_warnings(env, &started).await?;
            let (requests, verdicts, wave_evidence) = self.evidence_of(&started).await;
            let started = self
                .persist(
                    started,
                    effects,
                    Judged {
                        before: &release,
                        canary_requests: requests,
                        verdicts: &verdicts,
                        waves: &wave_evidence,
                        revision: None,
                        epoch: None,
                    },
                    actor,
                    now,
                    extra,
                )
                .await?;
            let mut view = self.view(&started).await?;
            view.warnings = warnings;
            Ok(view)
        }
        .await;
        match result {
            Ok(view) => Ok(Started::Release(Box::new(view))),
            Err(e) => {
                crate::approvals::give_back(&self.store, spent).await;
                Err(e)
            }
        }
    }

    /// What a waved plan names that the fleet does not report: a wave's region or pool no
    /// SDK instance of the env has reported, or a one-box instance that is not connected.
    /// Said at start and never blocking (SDKs may not have connected yet); the plan's
    /// `no_traffic` says what a wave without traffic does.
    async fn wave_warnings(&self, env: &str, r: &Release) -> Result<Vec<String>, ApiError> {
        let Some(waves) = &r.plan.waves else {
            return Ok(Vec::new());
        };
        let fleet = self.sdks.list_fleet(env).await?;
        let key = waves.by;
        let reported: std::collections::BTreeSet<&str> = fleet
            .iter()
            .filter_map(|i| match key {
                serin_core::decision::WaveKey::Region => i.region.as_deref(),
                serin_core::decision::WaveKey::Pool => i.pool.as_deref(),
                serin_core::decision::WaveKey::Instance => Some(i.instance.as_str()),
            })
            .collect();
        let mut out = Vec::new();
        for w in &waves.list {
            for m in &w.members {
                if m != serin_core::decision::WAVE_REST && !reported.contains(m.as_str()) {
                    let nearest = serin_core::slug::nearest(m, reported.iter().copied());
                    out.push(format!(
                        "wave {}: no SDK instance of {env} reports {} {m}{} (no_traffic: {})",
                        w.name,
                        key.as_str(),
                        nearest
                            .map(|n| format!("; did you mean {n}?"))
                            .unwrap_or_default(),
                        match waves.no_traffic {
                            serin_core::release::NoTraffic::Wait =>
                                "wait: the wave waits for its outcomes",
                            serin_core::release::NoTraffic::Skip =>
                                "skip: the wave is skipped after its first step's time",
                        }
                    ));
                }
            }
        }
        if let Some(b) = &waves.one_box
            && !fleet
                .iter()
                .any(|i| i.instance == b.instance && i.connected)
        {
            let names = fleet.iter().map(|i| i.instance.as_str());
            let nearest = serin_core::slug::nearest(&b.instance, names);
            out.push(format!(
                "one_box: instance {} is not connected to {env}{}",
                b.instance,
                nearest
                    .map(|n| format!("; did you mean {n}?"))
                    .unwrap_or_default()
            ));
        }
        Ok(out)
    }

    /// Applies a command (promote, pause, resume, abort, rollback) to the
    /// agent's active release.
    pub async fn command(
        &self,
        env: &str,
        agent: &str,
        actor: &str,
        make: impl FnOnce(u64, &[Verdict], &[WaveEvidence]) -> Event,
    ) -> Result<ReleaseView, ApiError> {
        let _guard = self.lock.lock().await;
        let row = self
            .store
            .active_release(env, agent)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!("{agent} has no active release in {env}"))
            })?;
        let r = self.read_or_conflict(&row)?;
        let (requests, verdicts, waves) = self.evidence_of(&r).await;
        let now = clock::now_ms();
        let event = make(requests, &verdicts, &waves);
        if let Some(why) = self.needs_attention(&r).await
            && matches!(event, Event::Promote { .. } | Event::Resume { .. })
        {
            return Err(ApiError::new(ErrorCode::Conflict, why)
                .with_details(json!({ "needs_attention": true, "release": r.id })));
        }
        let (next, effects) = r.apply(&event, now).map_err(refusal)?;
        // A promotion records the evidence it carried (the same reading as for other
        // commands, taken once above).
        let (canary_requests, judged) = event.evidence().unwrap_or((requests, &verdicts));
        let judged_waves = match event.wave_evidence() {
            [] => waves.as_slice(),
            w => w,
        };
        let next = self
            .persist(
                next,
                effects,
                Judged {
                    before: &r,
                    canary_requests,
                    verdicts: judged,
                    waves: judged_waves,
                    revision: Some(row.revision),
                    epoch: None,
                },
                actor,
                now,
                Vec::new(),
            )
            .await?;
        self.view(&next).await
    }

    /// Whether the agent has a release running (then a manual rollback goes
    /// through it).
    pub async fn is_active(&self, env: &str, agent: &str) -> Result<bool, ApiError> {
        Ok(self.store.active_release(env, agent).await?.is_some())
    }

    /// The agent's active release; `None` also when its row is unreadable (quarantined).
    pub async fn active(&self, env: &str, agent: &str) -> Result<Option<Release>, ApiError> {
        Ok(self
            .store
            .active_release(env, agent)
            .await?
            .and_then(|row| self.read(&row)))
    }

    /// The active release, or the newest one.
    pub async fn current(&self, env: &str, agent: &str) -> Result<ReleaseView, ApiError> {
        let row = match self.store.active_release(env, agent).await? {
            Some(r) => r,
            None => self
                .store
                .list_releases(env, agent, 1)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::not_found(format!("{agent} has no release in {env}")))?,
        };
        self.view(&self.read_or_conflict(&row)?).await
    }

    pub async fn by_id(&self, id: &str) -> Result<ReleaseView, ApiError> {
        let row = self
            .store
            .get_release(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no release {id}")))?;
        self.view(&self.read_or_conflict(&row)?).await
    }

    /// Unreadable rows are left out (and quarantined).
    pub async fn list(&self, env: &str, agent: &str) -> Result<Vec<Release>, ApiError> {
        Ok(self
            .store
            .list_releases(env, agent, 100)
            .await?
            .iter()
            .filter_map(|row| self.read(row))
            .collect())
    }

    /// The release's evidence now: its canary requests and verdicts and, for a waved
    /// release, each wave's comparison (the release's requests are then the waves' sum and
    /// its verdicts the current wave's).
    async fn evidence_of(&self, r: &Release) -> (u64, Vec<Verdict>, Vec<WaveEvidence>) {
        if r.plan.waves.is_none() {
            let (requests, verdicts) = self
                .guardrails
                .evidence(&r.env, &r.agent, &r.candidate.id)
                .await;
            return (requests, verdicts, Vec::new());
        }
        let waves = self.guardrails.wave_evidence(r).await;
        let requests = waves.iter().map(|w| w.canary_requests).sum();
        let current = r
            .current_wave()
            .and_then(|i| r.waves.get(i))
            .and_then(|st| waves.iter().find(|w| w.wave == st.name))
            .map(|w| w.verdicts.clone())
            .unwrap_or_default();
        (requests, current, waves)
    }

    async fn view(&self, r: &Release) -> Result<ReleaseView, ApiError> {
        let (requests, verdicts, waves) = match r.final_evidence() {
            Some(e) => (e.canary_requests, e.verdicts.clone(), e.waves.clone()),
            None => self.evidence_of(r).await,
        };
        let gate = (r.phase == Phase::Canary || r.phase == Phase::Paused)
            .then(|| r.gate_waved(clock::now_ms(), requests, &verdicts, &waves));
        let shadow_calibration = self.shadow_calibration(r, &verdicts).await?;
        let notifications = self
            .store
            .release_notifications(&r.id)
            .await?
            .into_iter()
            .map(|n| {
                let state = if n.delivered_at_ms.is_some() {
                    "delivered"
                } else if n.failed_at_ms.is_some() {
                    "failed"
                } else {
                    "pending"
                };
                json!({
                    "url": n.url, "attempts": n.attempts, "state": state,
                    "delivered_at": n.delivered_at_ms.map(clock::rfc3339),
                    "failed_at": n.failed_at_ms.map(clock::rfc3339),
                    "last_error": n.last_error,
                    "payload": serde_json::from_str::<Value>(&n.payload).unwrap_or(Value::Null),
                })
            })
            .collect();
        Ok(ReleaseView {
            release: r.clone(),
            weight: r.plan.routed_weight(r.step).unwrap_or(Percent::ZERO),
            gate,
            canary_requests: requests,
            verdicts,
            waves,
            warnings: Vec::new(),
            shadow_calibration,
            notifications,
            needs_attention: self.needs_attention(r).await,
        })
    }

    /// For each shadow guardrail among `verdicts`, its fails among the completed releases
    /// of the env (the newest [`CALIBRATION_WINDOW`] finished ones, this one left out, and
    /// those whose post-promotion watch found a breach).
    /// Unreadable rows are skipped (and quarantined).
    async fn shadow_calibration(
        &self,
        r: &Release,
        verdicts: &[Verdict],
    ) -> Result<Vec<ShadowCalibration>, ApiError> {
        let shadows: Vec<&str> = verdicts
            .iter()
            .filter(|v| v.shadow)
            .map(|v| v.guardrail.as_str())
            .collect();
        if shadows.is_empty() {
            return Ok(Vec::new());
        }
        let past: Vec<Release> = self
            .store
            .finished_releases_in_env(&r.env, CALIBRATION_WINDOW)
            .await?
            .iter()
            .filter(|row| row.id != r.id)
            .filter_map(|row| self.read(row))
            // A breach after completion means the candidate was not harmless after all,
            // so its shadow fails are no evidence of false alarms.
            .filter(|p| {
                p.phase == Phase::Completed
                    && !p.watch.as_ref().is_some_and(|w| {
                        w.results
                            .iter()
                            .any(|c| c.verdict == serin_core::release::CheckpointVerdict::Breach)
                    })
            })
            .collect();
        Ok(shadows
            .into_iter()
            .map(|g| {
                let mut out = ShadowCalibration {
                    guardrail: g.to_owned(),
                    failed: 0,
                    completed: 0,
                    summary: String::new(),
                };
                for v in past
                    .iter()
                    .filter_map(|p| p.final_evidence())
                    .filter_map(|e| e.verdicts.iter().find(|v| v.guardrail == g))
                {
                    out.completed += 1;
                    if v.status == VerdictStatus::Fail {
                        out.failed += 1;
                    }
                }
                out.summary = format!(
                    "{g} (shadow): failed in {} of {} completed releases",
                    out.failed, out.completed
                );
                out
            })
            .collect())
    }

    /// One transaction: the release row with the evidence of this transition,
    /// the routing change its effects ask for, the audit entries and the
    /// webhook outbox rows. Then publish. Answers the release as stored.
    async fn persist(
        &self,
        next: Release,
        mut effects: Vec<Effect>,
        judged: Judged<'_>,
        actor: &str,
        now: i64,
        extra_audits: Vec<NewAudit>,
    ) -> Result<Release, ApiError> {
        // Releases are stored from their start on, so only a start leaves `pending`.
        let is_new = judged.before.phase == Phase::Pending;
        let mut next = next;
        // A completion under a plan with a watch starts it: its first checkpoint is due
        // relative to this moment.
        if next.phase == Phase::Completed
            && next.watch.is_none()
            && let Some(w) = &next.plan.watch
        {
            next.watch = Some(serin_core::release::WatchState {
                completed_ms: now,
                results: Vec::new(),
                next_due_ms: w.due_ms(now, 0),
            });
        }
        next.attach_evidence(
            judged.before,
            &mut effects,
            now,
            judged.canary_requests,
            judged.verdicts,
            judged.waves,
        );
        let next = &next;
        let agent = next.agent.clone();
        let mut commands = Vec::new();
        let mut audits = extra_audits;
        let mut notifications = Vec::new();
        for effect in &effects {
            match effect {
                Effect::PublishRouting { routing } => commands.push(Command::SetRelease {
                    agent: agent.clone(),
                    release: routing.clone(),
                }),
                Effect::PromoteToStable { candidate } => commands.push(Command::Deploy {
                    agent: agent.clone(),
                    bundle: candidate.clone(),
                }),
                Effect::Audit {
                    action,
                    actor,
                    reason,
                } => audits.push(NewAudit {
                    at_ms: now,
                    actor: actor.clone(),
                    action: action.clone(),
                    subject: format!("{agent}/{} {}", next.env, next.id),
                    details: json!({
                        "release": next.id, "phase": next.phase, "step": next.step,
                        "weight": next.weight(), "candidate": next.candidate.id, "reason": reason,
                    }),
                }),
                Effect::Notify(n) => {
                    let payload = serde_json::to_string(n).map_err(ApiError::internal)?;
                    for target in &next.plan.notify {
                        notifications.push(NewNotification {
                            release_id: next.id.clone(),
                            url: target.webhook.clone(),
                            payload: payload.clone(),
                        });
                    }
                }
            }
        }
        let state = serde_json::to_string(next).map_err(ApiError::internal)?;
        let action = format!("release.{}", next.phase.as_str());
        let release_id = next.id.clone();
        let mut bundles = crate::servable::known_bundles(&self.hub, &next.env).await;
        if !commands.is_empty() {
            crate::servable::load_into(
                &self.hub,
                &mut bundles,
                &std::collections::BTreeSet::from([next.candidate.id.clone()]),
            )
            .await?;
        }
        let env = next.env.clone();
        // A controller promotion decided before a batch latched `fail` must not commit after
        // it: checked again inside the transaction, once the store's writer is ours (an
        // ingestion announces its latch before it queues for the writer).
        let guard_fail = judged.epoch.is_some()
            && (next.step > judged.before.step
                || (next.phase == Phase::Completed && judged.before.phase != Phase::Completed));
        let guardrails = &self.guardrails;
        let candidate = next.candidate.id.clone();
        let written = self
            .store
            .write_release(
                ReleaseWrite {
                    id: next.id.clone(),
                    env: next.env.clone(),
                    agent: agent.clone(),
                    state,
                    active: !next.phase.is_terminal(),
                    is_new,
                    watch_due_ms: next.watch.as_ref().and_then(|w| w.next_due_ms),
                    expected_revision: judged.revision,
                    epoch: judged.epoch,
                },
                now,
                actor,
                |current| {
                    if guard_fail && guardrails.has_failed(&env, &agent, &candidate) {
                        return Err(ApiError::new(
                            ErrorCode::Conflict,
                            "a guardrail latched fail while this promotion was being decided",
                        ));
                    }
                    if commands.is_empty() {
                        return Ok(None);
                    }
                    let mut st: EnvState = match current {
                        Some(json) => serde_json::from_str(json).map_err(ApiError::internal)?,
                        None => EnvState::default(),
                    };
                    for c in &commands {
                        st = st
                            .apply(c)
                            .map_err(|e| ApiError::new(ErrorCode::Conflict, e.to_string()))?;
                    }
                    crate::servable::check(&env, &st, &bundles, "/bundle")
                        .map_err(crate::servable::Refusal::into_api)?;
                    Ok::<_, ApiError>(Some(EnvStateChange {
                        state: serde_json::to_string(&st).map_err(ApiError::internal)?,
                        action,
                        subject: agent.clone(),
                        details: json!({ "release": release_id }),
                    }))
                },
                audits,
                notifications,
            )
            .await
            .map_err(|e| match e {
                serin_store::StoreError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
                other => ApiError::from(other),
            })??;
        let version = match &written {
            Some(stored) => u64::try_from(stored.version).unwrap_or_default(),
            None => self.hub.current(&next.env).await?.version,
        };
        // Noted before the version is published, so no outcome routed under it can be
        // judged at the old share; not awaited, so draining a canary never queues
        // behind outcome batches being ingested.
        for (id, exposure) in comparisons_of(next, version) {
            self.guardrails.note_share(&next.env, &agent, &id, exposure);
        }
        self.guardrails.set_waved(
            &next.env,
            &agent,
            if next.phase.is_terminal() {
                None
            } else {
                crate::guardrails::Waved::of(next)
            },
        );
        if let Some(stored) = &written {
            self.hub.publish(stored).await?;
        }
        self.guardrails.flush_shares();
        metrics::counter!("serin_release_transitions_total", "agent" => next.agent.clone(), "env" => next.env.clone(), "phase" => next.phase.as_str())
            .increment(1);
        tracing::info!(
            release = %next.id,
            agent = %next.agent,
            env = %next.env,
            action = "release_transition",
            phase = next.phase.as_str(),
            step = next.step,
            reason = next.failure.as_ref().map(|f| f.guardrail.as_str()).unwrap_or(""),
            "routing changed"
        );
        Ok(next.clone())
    }
}

/// The actor of controller-made transitions.
pub const SYSTEM: &str = serin_core::release::SYSTEM_ACTOR;

fn unreadable(row: &ReleaseRow) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!(
            "release {} needs attention: its stored state is unreadable (quarantined, see \
             GET /v1/system/quarantine); roll it back to drain its canary",
            row.id
        ),
    )
    .with_details(json!({ "needs_attention": true, "release": row.id, "quarantined": true }))
}

/// When the webhook notifier stops retrying a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all; after the last one fails the notification is `failed`.
    pub max_attempts: u32,
    /// A notification queued longer ago than this is `failed` at its next failure.
    pub max_age: Duration,
    /// Wait after the first failure; doubled after each further one ...
    pub backoff: Duration,
    /// ... up to this.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// 20 attempts, waits doubling from 1 s up to 2 h, at most 24 h after queueing: a
    /// receiver down for a working day still gets its notifications; a dead one stops costing
    /// requests after a day (about 16 h of retries if every attempt fails quickly).
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 20,
        max_age: Duration::from_secs(24 * 3600),
        backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(2 * 3600),
    };

    /// The wait after failed attempt number `attempts` (1-based), or `None` to give up.
    pub fn next_wait(&self, attempts: i64, age: Duration) -> Option<Duration> {
        if attempts >= i64::from(self.max_attempts) || age >= self.max_age {
            return None;
        }
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        Some(
            self.backoff
                .saturating_mul(1u32 << doublings)
                .min(self.max_backoff),
        )
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::DEFAULT
    }
}

/// Delivers queued webhook notifications, retrying with backoff until `retry` gives up on
/// them (they are then `failed` and never retried); never blocks the controller (it only
/// reads the outbox). Only while `leader` says this replica leads: replicas draining one
/// outbox side by side would deliver each notification once per replica.
pub fn spawn_notifier(
    store: Store,
    every: Duration,
    retry: RetryPolicy,
    leader: Arc<crate::leader::Leader>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(http) = reqwest_client() else {
            tracing::error!("could not build the webhook HTTP client; notifications stay queued");
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !leader.is_leader() {
                continue;
            }
            let now = clock::now_ms();
            let due = match store.due_notifications(now, 50).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the webhook outbox");
                    continue;
                }
            };
            for n in due {
                if !leader.is_leader() {
                    // Deposed mid-batch: the new leader delivers the rest.
                    break;
                }
                let result = http
                    .post(&n.url)
                    .header("content-type", "application/json")
                    .body(n.payload.clone())
                    .send()
                    .await;
                let outcome = match result {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                let now = clock::now_ms();
                let mark = match &outcome {
                    Ok(()) => {
                        metrics::counter!("serin_webhook_deliveries_total", "result" => "delivered").increment(1);
                        store.mark_notification(n.id, Some(now), None, now).await
                    }
                    Err(err) => {
                        metrics::counter!("serin_webhook_deliveries_total", "result" => "failed")
                            .increment(1);
                        let attempts = n.attempts.saturating_add(1);
                        let age = Duration::from_millis(
                            u64::try_from(now.saturating_sub(n.created_at_ms)).unwrap_or(0),
                        );
                        match retry.next_wait(attempts, age) {
                            Some(wait) => {
                                tracing::warn!(url = %n.url, error = %err, attempts, "webhook delivery failed; will retry");
                                let wait = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                                store
                                    .mark_notification(
                                        n.id,
                                        None,
                                        Some(err),
                                        now.saturating_add(wait),
                                    )
                                    .await
                            }
                            None => {
                                metrics::counter!("serin_webhook_deliveries_total", "result" => "gave_up").increment(1);
                                tracing::error!(url = %n.url, error = %err, attempts, release = %n.release_id, "webhook delivery failed for good; giving up");
                                store.fail_notification(n.id, err, now).await
                            }
                        }
                    }
                };
                if let Err(e) = mark {
                    tracing::warn!(error = %e, "could not record a webhook delivery");
                }
            }
        }
    })
}

fn reqwest_client() -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a bundled crypto provider (see Cargo.toml).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
}
