//! Releases: moving an agent in an env from its stable to a candidate bundle under a plan.
//!
//! - [`plan`]: `plan.yaml` (SPEC "Release plan"): steps, promotion, stickiness, excluded
//!   tenants, guardrails, failure policy, webhooks; parsing with located errors and
//!   validation.
//! - [`duration`]: `30s`, `5m`, `1h30m` durations.
//! - [`machine`]: the pure release state machine. The caller passes the clock (`now_ms`),
//!   the canary request count and the guardrail verdicts; the machine answers the next
//!   [`Release`] and the [`Effect`]s to carry out (routing, promotion to stable, audit,
//!   notification), or a [`Refusal`] with a stable code.
//!
//! # Decisions
//!
//! - **Gate.** A step's gate holds when its `min_duration` has elapsed since the step
//!   began, at least `min_requests` canary requests were served since the step began, and the
//!   non-shadow verdicts meet the step's requirement ([`Requirement`]): `no_fail` (no
//!   verdict is `fail`; `pending` does not block, as SPEC says) or `pass` (every verdict is
//!   `pass`: shown not worse than its bound allows). Unless a step says `require:`, the
//!   final step and any step of weight 50% or more require `pass`, the others `no_fail`:
//!   a small early step only has to do no visible harm, while the steps that expose most
//!   users have to show harmlessness. A `pass` gate that waits names each guardrail still
//!   inconclusive, the canary requests it needs and when, at the step's rate so far.
//! - **Shadow** verdicts (rules with `shadow: true`) are carried and recorded like any
//!   other but never gate: their `fail` neither halts nor rolls back nor blocks a gate.
//! - **Evidence.** Ticks and promotions carry the full verdicts and canary request count
//!   they are judged on; the controller records exactly those in `Release::evidence`
//!   ([`Release::attach_evidence`]) and in the transition's notifications. A finished
//!   release shows its last recorded evidence for good ([`Release::final_evidence`]).
//! - **Holdback.** `holdback: 2%` (at most 10%, final weight 100%) routes the final step at
//!   `100% - holdback`, so it still has a control; completing makes the candidate the stable
//!   for everyone.
//! - **Never time alone.** Every step must wait for something (`min_duration` or
//!   `min_requests` above zero), and with `promotion: auto` every step needs
//!   `min_requests >= 1`, so an automatic promotion always rests on traffic seen at that
//!   weight. Manual promotion is a person's decision and may rest on time alone.
//! - **Pause** holds the weight and blocks promotion (manual and automatic) but does not stop
//!   the step's clock: the canary keeps serving at that weight, so that time is evidence.
//!   Promote needs `canary` (resume first).
//! - **Failure** (a tick with a failing verdict, in `canary` only): `on_failure: rollback`
//!   drains at once (`rolled_back`); `halt` freezes the weight (`halted`, no routing
//!   change) until a person resumes, rolls back or aborts. Resuming with the guardrail
//!   still failing halts again at the next tick; `promote --force --reason` is the override.
//! - **Completion** is one transition from the last step's gate to `completed`, with effects
//!   `[PublishRouting(None), PromoteToStable, Audit, Notify]`; `Promoting` is reserved.
//! - **Excluded tenants** are routed to stable at every step but the final one.
//! - **History.** Every applied event appends a transition; ticks that change nothing
//!   append nothing.

pub mod duration;
pub mod machine;
pub mod plan;
pub mod watch;
pub mod waves;

pub use duration::{DurationError, DurationSpec, human_ms};
pub use machine::{
    Effect, Event, Failure, GateStatus, Inconclusive, Notification, Phase, Refusal, Release,
    SYSTEM_ACTOR, StepEvidence, Transition, WaveEvidence, WaveState, WaveStatus, sig,
};
pub use plan::{
    CanaryStep, MAX_HOLDBACK_BP, MAX_WEBHOOK_CHARS, Notify, OnFailure, Plan, PlanError, Promotion,
    Requirement, Step,
};
pub use watch::{CheckpointResult, CheckpointVerdict, Finding, Watch, WatchState};
pub use waves::{
    NoTraffic, ONE_BOX, OneBox, Stage, WAVE_SEP, WaveDef, WaveSpec, Waves, split_comparison,
    wave_comparison,
};
