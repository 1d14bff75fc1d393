//! The release state machine: `(release, event, now_ms) -> (release, effects)` or a refusal.
//!
//! Pure: the caller reads the clock, the canary request count and the guardrail verdicts,
//! passes them in, persists the returned [`Release`] and carries out the [`Effect`]s (in
//! order) in the same store transaction. Nothing here touches the env state itself.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::duration::human_ms;
use super::plan::{CanaryStep, OnFailure, Plan, Promotion, Requirement};
use super::waves::NoTraffic;
use crate::decision::{BundleRef, Percent, ReleaseRouting, WaveRouting};
use crate::guardrails::{Verdict, VerdictStatus};

/// The actor and initiator of everything the machine does on its own (ticks).
pub const SYSTEM_ACTOR: &str = "system";

/// Where a release is.
///
/// `Promoting` is reserved and never produced: completing a release is one transition
/// (`canary -> completed`) because the caller persists the release and the env change in one
/// transaction, so there is no window to protect. A release read in that phase accepts only
/// `abort` and `rollback` (ticks do nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Phase {
    /// Created, not started: nothing routed yet.
    Pending,
    /// Routing the current step's weight; the gate is watched.
    Canary,
    /// Held by a person at the current weight. Promotion waits; the step's clock and
    /// request count keep running (the canary still serves at this weight).
    Paused,
    /// Reserved; see the type's documentation.
    Promoting,
    /// The candidate became the stable.
    Completed,
    /// Frozen at the current weight after a guardrail failure (`on_failure: halt`).
    Halted,
    /// Candidate drained after a failure or a person's rollback.
    RolledBack,
    /// Candidate drained because a person stopped the release.
    Aborted,
}

impl Phase {
    /// Nothing more can happen to the release.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Completed | Phase::RolledBack | Phase::Aborted)
    }

    /// The release still owns its agent in its env (any phase that is not terminal).
    pub fn is_active(&self) -> bool {
        !self.is_terminal()
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Canary => "canary",
            Phase::Paused => "paused",
            Phase::Promoting => "promoting",
            Phase::Completed => "completed",
            Phase::Halted => "halted",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A confirmed guardrail failure, with both arms' values and the evidence that confirmed
/// it (for a latched bound, the evidence at its first crossing of the bar).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Failure {
    /// `error_rate.max` style: metric and bound.
    pub guardrail: String,
    pub canary_value: f64,
    pub canary_n: u64,
    pub control_value: f64,
    pub control_n: u64,
    /// The bound in words: `<= control + 1pp`.
    pub threshold: String,
    pub explanation: String,
    /// The e-value that reached the bar. Absent in failures stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// The bar (1 / the bound's share of alpha). Absent like `statistic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic_threshold: Option<f64>,
    /// When the bound latched its `fail` (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latched_at_ms: Option<i64>,
}

impl Failure {
    pub fn from_verdict(v: &Verdict) -> Failure {
        Failure {
            guardrail: v.guardrail.clone(),
            canary_value: finite(v.canary.value),
            canary_n: v.canary.n,
            control_value: finite(v.control.value),
            control_n: v.control.n,
            threshold: v.threshold.clone(),
            explanation: v.explanation.clone(),
            statistic: Some(finite(v.statistic)),
            statistic_threshold: Some(finite(v.statistic_threshold)),
            latched_at_ms: v.latched_at_ms,
        }
    }

    /// One line for audit reasons and history.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "guardrail {} failed: canary {} (n={}) vs control {} (n={}), threshold {}",
            self.guardrail,
            self.canary_value,
            self.canary_n,
            self.control_value,
            self.control_n,
            self.threshold
        );
        if let (Some(e), Some(bar)) = (self.statistic, self.statistic_threshold) {
            line.push_str(&format!(", e-value {} reached bar {}", sig(e), sig(bar)));
        }
        line
    }
}

/// Three significant digits, as the verdict explanations write them.
pub fn sig(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{v:.2e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// JSON has no infinities or NaN (serde_json writes `null`, which an `f64` field cannot read
/// back), so a value that is kept in a stored release is clamped: an e-value that overflowed
/// is the largest finite one, and NaN (no evidence) is 0.
fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else if v == f64::INFINITY {
        f64::MAX
    } else if v == f64::NEG_INFINITY {
        f64::MIN
    } else {
        0.0
    }
}

/// A verdict as a stored release keeps it (see [`finite`]).
fn storable(v: &Verdict) -> Verdict {
    let mut v = v.clone();
    v.canary.value = finite(v.canary.value);
    v.control.value = finite(v.control.value);
    v.statistic = finite(v.statistic);
    v.statistic_threshold = finite(v.statistic_threshold);
    v.pass_statistic = v.pass_statistic.map(finite);
    v.pass_threshold = v.pass_threshold.map(finite);
    v
}

/// One applied event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transition {
    pub at_ms: i64,
    pub from: Phase,
    pub to: Phase,
    /// The step index after the transition.
    pub step: usize,
    /// `start`, `tick`, `promote`, `pause`, `resume`, `abort`, `rollback`.
    pub event: String,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What happens to a release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Start {
        actor: String,
    },
    /// The server's periodic look at the evidence. Never refused; does nothing unless the
    /// release is in `canary`. The first non-shadow `fail` verdict is the failure.
    Tick {
        /// Canary requests served since the release started (cumulative).
        canary_requests: u64,
        /// Every verdict of the monitor, shadow ones included (they never gate).
        verdicts: Vec<Verdict>,
        /// A waved release: each wave's own comparison (what gates it; see
        /// [`super::waves`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        waves: Vec<WaveEvidence>,
    },
    /// Move to the next step, or complete from the last. The evidence is passed because the
    /// gate is judged against it (unless `force`, which needs a reason).
    Promote {
        actor: String,
        force: bool,
        reason: Option<String>,
        canary_requests: u64,
        verdicts: Vec<Verdict>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        waves: Vec<WaveEvidence>,
    },
    Pause {
        actor: String,
        reason: Option<String>,
    },
    Resume {
        actor: String,
    },
    Abort {
        actor: String,
        reason: String,
    },
    Rollback {
        actor: String,
        reason: String,
    },
}

impl Event {
    /// A tick from the monitor's canary request count and verdicts.
    pub fn tick(canary_requests: u64, verdicts: Vec<Verdict>) -> Event {
        Event::Tick {
            canary_requests,
            verdicts,
            waves: Vec::new(),
        }
    }

    /// A tick of a waved release, with each wave's comparison.
    pub fn tick_waves(
        canary_requests: u64,
        verdicts: Vec<Verdict>,
        waves: Vec<WaveEvidence>,
    ) -> Event {
        Event::Tick {
            canary_requests,
            verdicts,
            waves,
        }
    }

    /// The per-wave evidence a judging event carries (empty for other events).
    pub fn wave_evidence(&self) -> &[WaveEvidence] {
        match self {
            Event::Tick { waves, .. } | Event::Promote { waves, .. } => waves,
            _ => &[],
        }
    }

    /// The evidence a judging event (tick, promote) carries: what the machine decided on.
    pub fn evidence(&self) -> Option<(u64, &[Verdict])> {
        match self {
            Event::Tick {
                canary_requests,
                verdicts,
                ..
            }
            | Event::Promote {
                canary_requests,
                verdicts,
                ..
            } => Some((*canary_requests, verdicts)),
            _ => None,
        }
    }

    /// The name recorded in [`Transition::event`].
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start { .. } => "start",
            Event::Tick { .. } => "tick",
            Event::Promote { .. } => "promote",
            Event::Pause { .. } => "pause",
            Event::Resume { .. } => "resume",
            Event::Abort { .. } => "abort",
            Event::Rollback { .. } => "rollback",
        }
    }
}

/// One wave's own comparison (its members' canary against its members' control) at a
/// tick or promotion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaveEvidence {
    pub wave: String,
    /// The wave's canary requests since the release started (cumulative).
    pub canary_requests: u64,
    /// The wave's requests on either arm since the release started (cumulative): zero for a
    /// wave whose members sent nothing at all.
    pub requests: u64,
    pub verdicts: Vec<Verdict>,
}

/// Where one wave of a waved release is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WaveState {
    /// Not open yet: its members get the stable.
    Pending,
    /// Running its steps: its members get the candidate at the current step's weight.
    Active,
    /// Went through its last step: its members get the candidate.
    Done,
    /// Drained after its own guardrails failed: its members get the stable.
    RolledBack,
    /// Frozen at its weight after its own guardrails failed (`on_failure: halt`).
    Halted,
    /// Skipped for lack of traffic (`no_traffic: skip`): its members get the stable until
    /// the release completes.
    Skipped,
}

impl WaveState {
    pub fn as_str(self) -> &'static str {
        match self {
            WaveState::Pending => "pending",
            WaveState::Active => "active",
            WaveState::Done => "done",
            WaveState::RolledBack => "rolled_back",
            WaveState::Halted => "halted",
            WaveState::Skipped => "skipped",
        }
    }
}

/// One wave of a waved release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaveStatus {
    pub name: String,
    pub state: WaveState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// What rolled back or halted this wave (the release goes on with its other waves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// A webhook payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub release: String,
    pub agent: String,
    pub env: String,
    /// The audit action: `release.halt`, `release.rollback`, `release.abort`,
    /// `release.complete`.
    pub action: String,
    pub phase: Phase,
    pub step: usize,
    /// The weight of that step: where the release was when it halted, drained or completed.
    pub weight: Percent,
    /// Bundle ids (`agent@N`).
    pub candidate: String,
    pub baseline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// `system` for what a tick did, else the person's actor name.
    pub initiator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at_ms: i64,
    /// The canary requests and verdicts of this transition, as recorded in the release's
    /// evidence (filled by `Release::attach_evidence`).
    #[serde(default)]
    pub canary_requests: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<Verdict>,
}

/// What the caller must do, in order, in the transaction that persists the new release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// Set the agent's release routing in the env (`Command::SetRelease`): `Some` with the
    /// current step's weight while the release routes, `None` to drain the candidate.
    PublishRouting { routing: Option<ReleaseRouting> },
    /// Make the candidate the stable (`Command::Deploy`), after the routing was cleared.
    PromoteToStable { candidate: BundleRef },
    /// Write an audit entry.
    Audit {
        action: String,
        actor: String,
        reason: Option<String>,
    },
    /// Send this to every webhook of the plan's `notify` list (emitted even when it is
    /// empty). Emitted on halt, rollback, abort and completion.
    Notify(Box<Notification>),
}

/// Whether the current step's gate holds, and what it still needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateStatus {
    pub holds: bool,
    pub duration_ok: bool,
    pub requests_ok: bool,
    /// No non-shadow verdict is `fail`.
    pub no_fail: bool,
    /// What the step asks of the verdicts.
    pub requirement: Requirement,
    /// The verdicts meet `requirement`.
    pub verdicts_ok: bool,
    pub elapsed_ms: u64,
    pub needed_ms: u64,
    /// Canary requests since the step began.
    pub requests: u64,
    pub needed_requests: u64,
    /// Non-shadow guardrails whose verdict is `fail`.
    pub failing: Vec<String>,
    /// With `requirement: pass`, the non-shadow guardrails not yet shown harmless.
    pub inconclusive: Vec<Inconclusive>,
    /// One line per unmet condition: `needs 3m 20s more`, `needs 340 more canary requests`,
    /// `guardrail error_rate.max is failing`, `guardrail error_rate.max_increase
    /// inconclusive: 140 of ~900 canary requests, about 6 min`.
    pub missing: Vec<String>,
}

/// A guardrail a `pass` gate still waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inconclusive {
    pub guardrail: String,
    /// Canary requests of the release so far (all steps: the tests run across the ramp).
    pub canary_requests: u64,
    /// The monitor's estimate of further canary requests before the bound is decided;
    /// absent when it has none (canary looks worse but the evidence is not growing).
    pub needs_more_requests: Option<u64>,
    /// That many requests at the step's canary request rate so far; absent without an
    /// estimate or without canary traffic at this step yet.
    pub eta_ms: Option<u64>,
}

impl Inconclusive {
    /// `inconclusive: 140 of ~900 canary requests, about 6 min`.
    pub fn describe(&self) -> String {
        match self.needs_more_requests {
            None => format!(
                "inconclusive: {} canary requests so far; canary looks worse but the evidence is not growing, so no estimate",
                self.canary_requests
            ),
            Some(more) => {
                let total = self.canary_requests.saturating_add(more);
                let when = match self.eta_ms {
                    Some(ms) => about(ms),
                    None => "no canary traffic at this step yet to time it".to_owned(),
                };
                format!(
                    "inconclusive: {} of ~{total} canary requests, {when}",
                    self.canary_requests
                )
            }
        }
    }
}

/// A rough wait: `under a minute`, `about 6 min`, `about 3 h`, `about 2 days`.
fn about(ms: u64) -> String {
    const MIN: u64 = 60_000;
    const HOUR: u64 = 60 * MIN;
    if ms < MIN {
        "under a minute".to_owned()
    } else if ms < 2 * HOUR {
        format!("about {} min", (ms + MIN / 2) / MIN)
    } else if ms < 48 * HOUR {
        format!("about {} h", (ms + HOUR / 2) / HOUR)
    } else {
        format!("about {} days", (ms + 12 * HOUR) / (24 * HOUR))
    }
}

/// Why an event was not applied. `code` is stable (`release_finished`, `already_started`,
/// `not_running`, `not_paused`, `gate_not_met`, `reason_required`, `invalid_plan`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    /// For `gate_not_met`: what the gate still needs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        missing: Vec::new(),
    }
}

/// One release of an agent in an env. Serializable: the server persists it as JSON and
/// resumes it after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Release {
    /// Minted by the caller (`r-<n>`); the bucketing salt of the canary arm.
    pub id: String,
    pub agent: String,
    pub env: String,
    pub candidate: BundleRef,
    /// The stable when the release was created.
    pub baseline: BundleRef,
    pub plan: Plan,
    pub phase: Phase,
    /// Index into `plan.steps`.
    pub step: usize,
    pub step_started_ms: i64,
    /// The cumulative canary request count when the step began.
    pub step_requests_at_start: u64,
    pub created_ms: i64,
    pub started_by: String,
    pub history: Vec<Transition>,
    /// The failure that halted or rolled back the release (cleared by `resume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The guardrail evidence at each transition: for a tick or promote exactly what the
    /// machine judged, for other events what the monitor showed when the event was made.
    /// Attached by the controller (`Release::attach_evidence`); `apply` never reads it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<StepEvidence>,
    /// The readiness gate as evaluated at start (set by the server; the machine ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<crate::readiness::GateRecord>,
    /// The post-promotion watch of a completed release whose plan has one (set by the
    /// server's controller; the machine ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<super::watch::WatchState>,
    /// A waved plan's waves, one per [`Plan::wave_defs`] entry, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveStatus>,
}

/// Both arms' guardrail values when a release changed phase or step. The last one of a
/// finished release is its verdicts for good.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepEvidence {
    pub at_ms: i64,
    /// The step the release was at before the transition.
    pub step: usize,
    pub phase: Phase,
    pub canary_requests: u64,
    pub verdicts: Vec<Verdict>,
    /// A waved release: each wave's comparison at that moment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveEvidence>,
}

impl Release {
    /// A `pending` release. The plan should have passed [`Plan::validate`]; `start` refuses
    /// one that does not.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: impl Into<String>,
        agent: impl Into<String>,
        env: impl Into<String>,
        candidate: BundleRef,
        baseline: BundleRef,
        plan: Plan,
        now_ms: i64,
        started_by: impl Into<String>,
    ) -> Release {
        let waves = plan
            .wave_defs()
            .into_iter()
            .map(|d| WaveStatus {
                name: d.name,
                state: WaveState::Pending,
                opened_ms: None,
                finished_ms: None,
                failure: None,
            })
            .collect();
        Release {
            id: id.into(),
            agent: agent.into(),
            env: env.into(),
            candidate,
            baseline,
            plan,
            phase: Phase::Pending,
            step: 0,
            step_started_ms: now_ms,
            step_requests_at_start: 0,
            created_ms: now_ms,
            started_by: started_by.into(),
            history: Vec::new(),
            failure: None,
            evidence: Vec::new(),
            readiness: None,
            watch: None,
            waves,
        }
    }

    /// The current step of the plan (of [`Plan::stages`], for a waved plan).
    pub fn current_step(&self) -> Option<CanaryStep> {
        self.plan.stage(self.step).map(|s| s.step)
    }

    /// The index (into `waves`) of the wave the current step belongs to.
    pub fn current_wave(&self) -> Option<usize> {
        self.plan.stage(self.step).and_then(|s| s.wave)
    }

    /// Each wave's routing now: pending, rolled back and skipped waves at 0%, done waves at
    /// 100%, the active (or halted) wave at the current step's weight.
    pub fn wave_routing(&self) -> Vec<WaveRouting> {
        let weight = self.plan.routed_weight(self.step).unwrap_or(Percent::ZERO);
        self.plan
            .wave_defs()
            .into_iter()
            .zip(&self.waves)
            .map(|(d, st)| WaveRouting {
                name: d.name,
                by: d.by,
                members: d.members,
                weight: match st.state {
                    WaveState::Pending | WaveState::RolledBack | WaveState::Skipped => {
                        Percent::ZERO
                    }
                    WaveState::Done => Percent::FULL,
                    WaveState::Active | WaveState::Halted => weight,
                },
            })
            .collect()
    }

    /// The first and last stage (indexes into [`Plan::stages`]) of wave `w`.
    fn wave_stages(&self, w: usize) -> Option<(usize, usize)> {
        let stages = self.plan.stages();
        let first = stages.iter().position(|s| s.wave == Some(w))?;
        let last = stages.iter().rposition(|s| s.wave == Some(w))?;
        Some((first, last))
    }

    /// Whether the current step is the plan's last.
    pub fn at_final_step(&self) -> bool {
        self.plan.last_step() == Some(self.step)
    }

    /// The candidate's share of traffic: the step's weight while routing (less the plan's
    /// holdback at the final step), 0% before start and after a drain, 100% once completed.
    pub fn weight(&self) -> Percent {
        match self.phase {
            Phase::Pending | Phase::RolledBack | Phase::Aborted => Percent::ZERO,
            Phase::Completed => Percent::FULL,
            Phase::Canary | Phase::Paused | Phase::Promoting | Phase::Halted => {
                self.plan.routed_weight(self.step).unwrap_or(Percent::ZERO)
            }
        }
    }

    /// What the current step's gate asks of the verdicts.
    pub fn requirement(&self) -> Requirement {
        self.plan.requirement(self.step)
    }

    /// The verdicts to show for this release: a finished release's are frozen at its final
    /// transition (the last recorded evidence), whatever its monitor says later; `None`
    /// while it runs, or when it finished without recorded evidence (stored by older code).
    pub fn final_evidence(&self) -> Option<&StepEvidence> {
        if self.phase.is_terminal() {
            self.evidence.last()
        } else {
            None
        }
    }

    /// Records the evidence of the transition from `before` to `self` and copies it into
    /// the transition's notifications. For a tick or promote pass the event's own evidence
    /// ([`Event::evidence`]), so the record is what the gate decided on; non-finite floats
    /// are clamped so the stored release reads back.
    pub fn attach_evidence(
        &mut self,
        before: &Release,
        effects: &mut [Effect],
        at_ms: i64,
        canary_requests: u64,
        verdicts: &[Verdict],
        waves: &[WaveEvidence],
    ) {
        let verdicts: Vec<Verdict> = verdicts.iter().map(storable).collect();
        let waves: Vec<WaveEvidence> = waves
            .iter()
            .map(|w| WaveEvidence {
                verdicts: w.verdicts.iter().map(storable).collect(),
                ..w.clone()
            })
            .collect();
        for e in effects.iter_mut() {
            if let Effect::Notify(n) = e {
                n.canary_requests = canary_requests;
                n.verdicts.clone_from(&verdicts);
            }
        }
        self.evidence.push(StepEvidence {
            at_ms,
            step: before.step,
            phase: self.phase,
            canary_requests,
            verdicts,
            waves,
        });
    }

    /// The routing the env must have while this release routes (`None` before start and
    /// once finished). Excluded tenants stay on the stable until the final step, where the
    /// exclusion is dropped.
    pub fn routing(&self) -> Option<ReleaseRouting> {
        match self.phase {
            Phase::Canary | Phase::Paused | Phase::Promoting | Phase::Halted => {}
            Phase::Pending | Phase::Completed | Phase::RolledBack | Phase::Aborted => {
                return None;
            }
        }
        let weight = self.plan.routed_weight(self.step)?;
        Some(ReleaseRouting {
            id: self.id.clone(),
            candidate: self.candidate.clone(),
            weight,
            stickiness: self.plan.stickiness,
            exclude_tenants: if self.at_final_step() {
                BTreeSet::new()
            } else {
                self.plan.exclude_tenants.clone()
            },
            waves: self.wave_routing(),
        })
    }

    /// The current step's gate: its minimum duration AND minimum canary requests (counted
    /// since the step began) are met, and the non-shadow verdicts meet the step's
    /// requirement: none is `fail` (`no_fail`), or every one is `pass` (`pass`; never
    /// without verdicts). Shadow verdicts never gate.
    pub fn gate(&self, now_ms: i64, canary_requests: u64, verdicts: &[Verdict]) -> GateStatus {
        self.gate_waved(now_ms, canary_requests, verdicts, &[])
    }

    /// [`Release::gate`] of a release that may be waved: for a waved plan the current
    /// wave's own requests and verdicts gate its step (the pooled ones are shown, never
    /// gate: pooled across regions, canary and control differ by where they run, not only
    /// by bundle), and the final step cannot complete while a wave is rolled back or halted.
    pub fn gate_waved(
        &self,
        now_ms: i64,
        canary_requests: u64,
        verdicts: &[Verdict],
        waves: &[WaveEvidence],
    ) -> GateStatus {
        let (canary_requests, verdicts) = match self.current_wave() {
            Some(w) => {
                let name = self.waves.get(w).map(|s| s.name.as_str());
                match waves.iter().find(|e| Some(e.wave.as_str()) == name) {
                    Some(e) => (e.canary_requests, e.verdicts.as_slice()),
                    None => (0, &[][..]),
                }
            }
            None => (canary_requests, verdicts),
        };
        let mut g = self.gate_on(now_ms, canary_requests, verdicts);
        if self.at_final_step() {
            for w in &self.waves {
                if matches!(w.state, WaveState::RolledBack | WaveState::Halted) {
                    g.holds = false;
                    g.missing.push(format!(
                        "wave {} is {}: completing would give it the candidate (promote --force with a reason, or abort)",
                        w.name,
                        w.state.as_str()
                    ));
                }
            }
        }
        g
    }

    fn gate_on(&self, now_ms: i64, canary_requests: u64, verdicts: &[Verdict]) -> GateStatus {
        let step = self.current_step();
        let requirement = self.requirement();
        let needed_ms = step.as_ref().map_or(0, |s| s.min_duration.as_ms());
        let needed_requests = step.as_ref().map_or(0, |s| s.min_requests);
        let elapsed_ms = u64::try_from(now_ms.saturating_sub(self.step_started_ms)).unwrap_or(0);
        let requests = canary_requests.saturating_sub(self.step_requests_at_start);
        let gating = || verdicts.iter().filter(|v| !v.shadow);
        let failing: Vec<String> = gating()
            .filter(|v| v.status == VerdictStatus::Fail)
            .map(|v| v.guardrail.clone())
            .collect();
        let inconclusive: Vec<Inconclusive> = match requirement {
            Requirement::NoFail => Vec::new(),
            Requirement::Pass => gating()
                .filter(|v| v.status == VerdictStatus::Pending)
                .map(|v| Inconclusive {
                    guardrail: v.guardrail.clone(),
                    canary_requests,
                    needs_more_requests: v.needs_more_requests,
                    eta_ms: v
                        .needs_more_requests
                        .and_then(|more| eta_ms(more, requests, elapsed_ms)),
                })
                .collect(),
        };
        let duration_ok = elapsed_ms >= needed_ms;
        let requests_ok = requests >= needed_requests;
        let no_fail = failing.is_empty();
        let no_verdicts = requirement == Requirement::Pass && verdicts.is_empty();
        let verdicts_ok = no_fail && inconclusive.is_empty() && !no_verdicts;
        let mut missing = Vec::new();
        if step.is_none() {
            missing.push("the plan has no such step".to_owned());
        }
        if !duration_ok {
            missing.push(format!("needs {} more", human_ms(needed_ms - elapsed_ms)));
        }
        if !requests_ok {
            missing.push(format!(
                "needs {} more canary requests",
                needed_requests - requests
            ));
        }
        for g in &failing {
            missing.push(format!("guardrail {g} is failing"));
        }
        for i in &inconclusive {
            missing.push(format!("guardrail {} {}", i.guardrail, i.describe()));
        }
        if no_verdicts {
            missing.push(
                "no guardrail verdicts yet (this step requires every guardrail to pass)".to_owned(),
            );
        }
        GateStatus {
            holds: step.is_some() && duration_ok && requests_ok && verdicts_ok,
            duration_ok,
            requests_ok,
            no_fail,
            requirement,
            verdicts_ok,
            elapsed_ms,
            needed_ms,
            requests,
            needed_requests,
            failing,
            inconclusive,
            missing,
        }
    }

    /// Applies one event. Ticks are never refused (outside `canary` they change nothing and
    /// record nothing); every other applied event appends a [`Transition`].
    pub fn apply(&self, event: &Event, now_ms: i64) -> Result<(Release, Vec<Effect>), Refusal> {
        if let Event::Tick {
            canary_requests,
            verdicts,
            waves,
        } = event
        {
            return Ok(self.tick(*canary_requests, verdicts, waves, now_ms));
        }
        if self.phase.is_terminal() {
            return Err(refuse(
                "release_finished",
                format!(
                    "Release {} is {}; nothing more can happen to it.",
                    self.id, self.phase
                ),
            ));
        }
        match event {
            Event::Tick { .. } => Ok((self.clone(), Vec::new())),
            Event::Start { actor } => self.start(actor, now_ms),
            Event::Promote {
                actor,
                force,
                reason,
                canary_requests,
                verdicts,
                waves,
            } => self.promote(
                actor,
                *force,
                reason.as_deref(),
                *canary_requests,
                (verdicts, waves),
                now_ms,
            ),
            Event::Pause { actor, reason } => {
                if self.phase != Phase::Canary {
                    return Err(self.not_running("pause"));
                }
                let mut next = self.clone();
                next.phase = Phase::Paused;
                next.record(self.phase, now_ms, "pause", actor, reason.clone());
                Ok((next, vec![audit("release.pause", actor, reason.clone())]))
            }
            Event::Resume { actor } => {
                if !matches!(self.phase, Phase::Paused | Phase::Halted) {
                    return Err(refuse(
                        "not_paused",
                        format!(
                            "Release {} is {}; only a paused or halted release can resume.",
                            self.id, self.phase
                        ),
                    ));
                }
                let mut next = self.clone();
                next.phase = Phase::Canary;
                next.failure = None;
                for w in &mut next.waves {
                    if w.state == WaveState::Halted {
                        w.state = WaveState::Active;
                        w.failure = None;
                    }
                }
                next.record(self.phase, now_ms, "resume", actor, None);
                Ok((next, vec![audit("release.resume", actor, None)]))
            }
            Event::Abort { actor, reason } => {
                require_reason(reason, "abort")?;
                Ok(self.drain(
                    Phase::Aborted,
                    "abort",
                    "release.abort",
                    actor,
                    reason,
                    None,
                    now_ms,
                ))
            }
            Event::Rollback { actor, reason } => {
                require_reason(reason, "rollback")?;
                Ok(self.drain(
                    Phase::RolledBack,
                    "rollback",
                    "release.rollback",
                    actor,
                    reason,
                    None,
                    now_ms,
                ))
            }
        }
    }

    fn start(&self, actor: &str, now_ms: i64) -> Result<(Release, Vec<Effect>), Refusal> {
        if self.phase != Phase::Pending {
            return Err(refuse(
                "already_started",
                format!("Release {} has already started ({}).", self.id, self.phase),
            ));
        }
        self.plan
            .validate()
            .map_err(|e| refuse("invalid_plan", e.to_string()))?;
        let mut next = self.clone();
        next.phase = Phase::Canary;
        next.step = 0;
        next.step_started_ms = now_ms;
        next.step_requests_at_start = 0;
        if let Some(w) = next.current_wave().and_then(|w| next.waves.get_mut(w)) {
            w.state = WaveState::Active;
            w.opened_ms = Some(now_ms);
        }
        next.record(self.phase, now_ms, "start", actor, None);
        let effects = vec![
            Effect::PublishRouting {
                routing: next.routing(),
            },
            audit("release.start", actor, None),
        ];
        Ok((next, effects))
    }

    fn promote(
        &self,
        actor: &str,
        force: bool,
        reason: Option<&str>,
        canary_requests: u64,
        (verdicts, waves): (&[Verdict], &[WaveEvidence]),
        now_ms: i64,
    ) -> Result<(Release, Vec<Effect>), Refusal> {
        if self.phase != Phase::Canary {
            return Err(self.not_running("promote"));
        }
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if force && reason.is_none() {
            return Err(refuse(
                "reason_required",
                "A forced promotion needs a reason (--reason).",
            ));
        }
        let gate = self.gate_waved(now_ms, canary_requests, verdicts, waves);
        if !gate.holds && !force {
            return Err(Refusal {
                code: "gate_not_met",
                message: format!(
                    "The gate of step {} ({}) does not hold yet: {}.",
                    self.step + 1,
                    self.weight(),
                    gate.missing.join("; ")
                ),
                missing: gate.missing,
            });
        }
        let audit_reason = match (force, reason) {
            (true, Some(r)) if !gate.holds => Some(format!(
                "forced past unmet gate ({}): {r}",
                gate.missing.join("; ")
            )),
            (true, Some(r)) => Some(format!("forced (gate held): {r}")),
            (_, r) => r.map(str::to_owned),
        };
        Ok(self.advance(
            canary_requests,
            waves,
            "promote",
            actor,
            audit_reason,
            now_ms,
        ))
    }

    /// The next step, or completion from the last step.
    fn advance(
        &self,
        canary_requests: u64,
        waves: &[WaveEvidence],
        event: &str,
        actor: &str,
        reason: Option<String>,
        now_ms: i64,
    ) -> (Release, Vec<Effect>) {
        let mut next = self.clone();
        let wave_now = self.current_wave();
        if self.at_final_step() || self.plan.last_step().is_none() {
            if let Some(w) = wave_now.and_then(|w| next.waves.get_mut(w))
                && w.state == WaveState::Active
            {
                w.state = WaveState::Done;
                w.finished_ms = Some(now_ms);
            }
            next.phase = Phase::Completed;
            next.record(self.phase, now_ms, event, actor, reason.clone());
            let note = next.notification("release.complete", actor, reason.clone(), now_ms);
            let effects = vec![
                Effect::PublishRouting { routing: None },
                Effect::PromoteToStable {
                    candidate: self.candidate.clone(),
                },
                audit("release.complete", actor, reason),
                Effect::Notify(Box::new(note)),
            ];
            return (next, effects);
        }
        next.step = self.step + 1;
        next.step_started_ms = now_ms;
        next.step_requests_at_start = canary_requests;
        let wave_next = next.current_wave();
        if wave_next != wave_now {
            if let Some(w) = wave_now.and_then(|w| next.waves.get_mut(w))
                && w.state == WaveState::Active
            {
                w.state = WaveState::Done;
                w.finished_ms = Some(now_ms);
            }
            if let Some(w) = wave_next.and_then(|w| next.waves.get_mut(w)) {
                w.state = WaveState::Active;
                w.opened_ms = Some(now_ms);
            }
        }
        // A waved release counts each step's requests in its own wave.
        if let Some(name) = wave_next.and_then(|w| next.waves.get(w)).map(|w| &w.name) {
            next.step_requests_at_start = waves
                .iter()
                .find(|e| &e.wave == name)
                .map_or(0, |e| e.canary_requests);
        }
        next.record(self.phase, now_ms, event, actor, reason.clone());
        let effects = vec![
            Effect::PublishRouting {
                routing: next.routing(),
            },
            audit("release.promote", actor, reason),
        ];
        (next, effects)
    }

    /// Wave `w` leaves the rollout (rolled back or skipped): the release goes on with the
    /// first step of the next wave, or, after the last wave, halts (rolled back: a person
    /// decides whether the candidate may become everyone's stable) or completes (skipped).
    #[allow(clippy::too_many_arguments)]
    fn leave_wave(
        &self,
        w: usize,
        state: WaveState,
        failure: Option<Failure>,
        canary_requests: u64,
        waves: &[WaveEvidence],
        reason: String,
        now_ms: i64,
    ) -> (Release, Vec<Effect>) {
        let action = if state == WaveState::Skipped {
            "release.wave_skip"
        } else {
            "release.wave_rollback"
        };
        let mut moved = self.clone();
        if let Some(st) = moved.waves.get_mut(w) {
            st.state = state;
            st.finished_ms = Some(now_ms);
            st.failure.clone_from(&failure);
        }
        let last = self.wave_stages(w).map_or(self.step, |(_, last)| last);
        let more = self.plan.last_step().is_some_and(|l| last < l);
        // A wave rolled back earlier: the candidate cannot become everyone's stable unasked.
        let earlier = moved
            .waves
            .iter()
            .find(|st| st.state == WaveState::RolledBack)
            .and_then(|st| st.failure.clone());
        if !more && failure.is_none() && earlier.is_none() {
            // The last wave had nothing to judge: the release is over.
            moved.step = last;
            let (next, mut effects) = moved.advance(
                canary_requests,
                waves,
                "tick",
                SYSTEM_ACTOR,
                Some(reason.clone()),
                now_ms,
            );
            effects.insert(0, audit(action, SYSTEM_ACTOR, Some(reason)));
            return (next, effects);
        }
        let mut next = moved;
        let mut effects = Vec::new();
        if more {
            next.step = last + 1;
            next.step_started_ms = now_ms;
            if let Some(st) = next.current_wave().and_then(|i| next.waves.get_mut(i)) {
                st.state = WaveState::Active;
                st.opened_ms = Some(now_ms);
            }
            let name = next
                .current_wave()
                .and_then(|i| next.waves.get(i))
                .map(|s| s.name.clone());
            next.step_requests_at_start = waves
                .iter()
                .find(|e| Some(&e.wave) == name.as_ref())
                .map_or(0, |e| e.canary_requests);
        } else {
            next.phase = Phase::Halted;
            next.failure = failure.clone().or(earlier);
        }
        next.record(
            self.phase,
            now_ms,
            "tick",
            SYSTEM_ACTOR,
            Some(reason.clone()),
        );
        effects.push(Effect::PublishRouting {
            routing: next.routing(),
        });
        effects.push(audit(action, SYSTEM_ACTOR, Some(reason.clone())));
        let mut note = next.notification(action, SYSTEM_ACTOR, Some(reason), now_ms);
        note.failure = failure;
        effects.push(Effect::Notify(Box::new(note)));
        (next, effects)
    }

    fn tick(
        &self,
        canary_requests: u64,
        verdicts: &[Verdict],
        waves: &[WaveEvidence],
        now_ms: i64,
    ) -> (Release, Vec<Effect>) {
        if self.phase != Phase::Canary {
            return (self.clone(), Vec::new());
        }
        if let Some(w) = self.current_wave() {
            return self.tick_wave(w, canary_requests, verdicts, waves, now_ms);
        }
        // A shadow bound is being calibrated: its fail is reported, never acted on.
        let failure = verdicts
            .iter()
            .find(|v| !v.shadow && v.status == VerdictStatus::Fail)
            .map(Failure::from_verdict);
        if let Some(f) = failure {
            let reason = f.summary();
            return match self.plan.on_failure {
                OnFailure::Rollback => self.drain(
                    Phase::RolledBack,
                    "tick",
                    "release.rollback",
                    SYSTEM_ACTOR,
                    &reason,
                    Some(f),
                    now_ms,
                ),
                OnFailure::Halt => {
                    let mut next = self.clone();
                    next.failure = Some(f);
                    self.system_halt(next, reason, now_ms)
                }
            };
        }
        if self.plan.promotion == Promotion::Auto
            && self.gate(now_ms, canary_requests, verdicts).holds
        {
            return self.advance(
                canary_requests,
                &[],
                "tick",
                SYSTEM_ACTOR,
                Some("gate held (promotion: auto)".to_owned()),
                now_ms,
            );
        }
        (self.clone(), Vec::new())
    }

    /// The controller halts the release (`next` already carries the failure and any wave's
    /// new state): the weight stays, a person resumes, rolls back or aborts.
    fn system_halt(
        &self,
        mut next: Release,
        reason: String,
        now_ms: i64,
    ) -> (Release, Vec<Effect>) {
        next.phase = Phase::Halted;
        next.record(
            self.phase,
            now_ms,
            "tick",
            SYSTEM_ACTOR,
            Some(reason.clone()),
        );
        let note = next.notification("release.halt", SYSTEM_ACTOR, Some(reason.clone()), now_ms);
        let effects = vec![
            audit("release.halt", SYSTEM_ACTOR, Some(reason)),
            Effect::Notify(Box::new(note)),
        ];
        (next, effects)
    }

    /// A tick of a waved release at wave `w`: the wave's own failing verdict rolls back or
    /// halts that wave alone; a wave whose members sent nothing is skipped once its step's
    /// time has passed (`no_traffic: skip`); otherwise the wave's gate may promote.
    fn tick_wave(
        &self,
        w: usize,
        canary_requests: u64,
        verdicts: &[Verdict],
        waves: &[WaveEvidence],
        now_ms: i64,
    ) -> (Release, Vec<Effect>) {
        let Some(name) = self.waves.get(w).map(|s| s.name.clone()) else {
            return (self.clone(), Vec::new());
        };
        let evidence = waves.iter().find(|e| e.wave == name);
        let failure = evidence
            .and_then(|e| {
                e.verdicts
                    .iter()
                    .find(|v| !v.shadow && v.status == VerdictStatus::Fail)
            })
            .map(Failure::from_verdict);
        if let Some(f) = failure {
            let reason = format!("wave {name}: {}", f.summary());
            return match self.plan.on_failure {
                OnFailure::Rollback => self.leave_wave(
                    w,
                    WaveState::RolledBack,
                    Some(f),
                    canary_requests,
                    waves,
                    reason,
                    now_ms,
                ),
                OnFailure::Halt => {
                    let mut next = self.clone();
                    next.failure = Some(f.clone());
                    if let Some(st) = next.waves.get_mut(w) {
                        st.state = WaveState::Halted;
                        st.failure = Some(f);
                    }
                    self.system_halt(next, reason, now_ms)
                }
            };
        }
        let silent = evidence.is_none_or(|e| e.requests == 0);
        let waited = self.current_step().is_some_and(|s| {
            u64::try_from(now_ms.saturating_sub(self.step_started_ms)).unwrap_or(0)
                >= s.min_duration.as_ms()
        });
        let skip = self
            .plan
            .waves
            .as_ref()
            .is_some_and(|p| p.no_traffic == NoTraffic::Skip);
        if skip && silent && waited {
            let reason = format!(
                "wave {name} skipped: its members sent no requests in {} (no_traffic: skip)",
                human_ms(u64::try_from(now_ms.saturating_sub(self.step_started_ms)).unwrap_or(0))
            );
            return self.leave_wave(
                w,
                WaveState::Skipped,
                None,
                canary_requests,
                waves,
                reason,
                now_ms,
            );
        }
        // The last step's own gate holds but a wave was rolled back: every other wave is on
        // the candidate and nothing more can happen without a person.
        let (wave_requests, wave_verdicts) =
            evidence.map_or((0, &[][..]), |e| (e.canary_requests, e.verdicts.as_slice()));
        if self.plan.promotion == Promotion::Auto
            && self.at_final_step()
            && self.gate_on(now_ms, wave_requests, wave_verdicts).holds
            && let Some(failed) = self
                .waves
                .iter()
                .find(|st| st.state == WaveState::RolledBack)
        {
            let reason = format!(
                "every wave but {} serves the candidate; wave {} was rolled back: abort to drain them all, or promote --force with a reason to complete",
                failed.name, failed.name
            );
            let mut next = self.clone();
            next.failure = failed.failure.clone();
            if let Some(st) = next.waves.get_mut(w) {
                st.state = WaveState::Done;
                st.finished_ms = Some(now_ms);
            }
            return self.system_halt(next, reason, now_ms);
        }
        if self.plan.promotion == Promotion::Auto
            && self
                .gate_waved(now_ms, canary_requests, verdicts, waves)
                .holds
        {
            return self.advance(
                canary_requests,
                waves,
                "tick",
                SYSTEM_ACTOR,
                Some("gate held (promotion: auto)".to_owned()),
                now_ms,
            );
        }
        (self.clone(), Vec::new())
    }

    /// Rollback or abort: the candidate leaves the routing.
    #[allow(clippy::too_many_arguments)]
    fn drain(
        &self,
        to: Phase,
        event: &str,
        action: &str,
        actor: &str,
        reason: &str,
        failure: Option<Failure>,
        now_ms: i64,
    ) -> (Release, Vec<Effect>) {
        let mut next = self.clone();
        next.phase = to;
        if failure.is_some() {
            next.failure = failure;
        }
        let reason = Some(reason.trim().to_owned());
        next.record(self.phase, now_ms, event, actor, reason.clone());
        let note = next.notification(action, actor, reason.clone(), now_ms);
        let mut effects = Vec::new();
        // A pending release never published a routing, so there is nothing to drain.
        if self.phase != Phase::Pending {
            effects.push(Effect::PublishRouting { routing: None });
        }
        effects.push(audit(action, actor, reason));
        effects.push(Effect::Notify(Box::new(note)));
        (next, effects)
    }

    fn not_running(&self, what: &str) -> Refusal {
        let hint = match self.phase {
            Phase::Pending => "it has not started",
            Phase::Paused => "it is paused; resume it first",
            Phase::Halted => {
                "it is halted after a guardrail failure; resume, roll back or abort it"
            }
            _ => "it is not in canary",
        };
        refuse(
            "not_running",
            format!("Cannot {what} release {}: {hint}.", self.id),
        )
    }

    fn record(
        &mut self,
        from: Phase,
        at_ms: i64,
        event: &str,
        actor: &str,
        reason: Option<String>,
    ) {
        self.history.push(Transition {
            at_ms,
            from,
            to: self.phase,
            step: self.step,
            event: event.to_owned(),
            actor: actor.to_owned(),
            reason,
        });
    }

    fn notification(
        &self,
        action: &str,
        initiator: &str,
        reason: Option<String>,
        at_ms: i64,
    ) -> Notification {
        Notification {
            release: self.id.clone(),
            agent: self.agent.clone(),
            env: self.env.clone(),
            action: action.to_owned(),
            phase: self.phase,
            step: self.step,
            weight: self.plan.routed_weight(self.step).unwrap_or(Percent::ZERO),
            candidate: self.candidate.id.clone(),
            baseline: self.baseline.id.clone(),
            failure: self.failure.clone(),
            initiator: initiator.to_owned(),
            reason,
            at_ms,
            canary_requests: 0,
            verdicts: Vec::new(),
        }
    }
}

fn audit(action: &str, actor: &str, reason: Option<String>) -> Effect {
    Effect::Audit {
        action: action.to_owned(),
        actor: actor.to_owned(),
        reason,
    }
}

fn require_reason(reason: &str, what: &str) -> Result<(), Refusal> {
    if reason.trim().is_empty() {
        return Err(refuse(
            "reason_required",
            format!("A release {what} needs a reason (--reason)."),
        ));
    }
    Ok(())
}

/// `more` requests at the rate this step has seen so far (`requests` in `elapsed_ms`).
fn eta_ms(more: u64, requests: u64, elapsed_ms: u64) -> Option<u64> {
    if requests == 0 || elapsed_ms == 0 {
        return None;
    }
    let ms = u128::from(more) * u128::from(elapsed_ms) / u128::from(requests);
    Some(u64::try_from(ms).unwrap_or(u64::MAX))
}
