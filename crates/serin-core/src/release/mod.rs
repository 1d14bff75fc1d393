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
//!   began, at least `min_requests` canary requests were served since the step began, and no
//!   verdict is `fail` (`pending` does not block, as SPEC says).
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

pub use duration::{DurationError, DurationSpec, human_ms};
pub use machine::{
    Effect, Event, Failure, GateStatus, Notification, Phase, Refusal, Release, SYSTEM_ACTOR,
    StepEvidence, Transition, verdict_statuses,
};
pub use plan::{
    CanaryStep, MAX_WEBHOOK_CHARS, Notify, OnFailure, Plan, PlanError, Promotion, Step,
};
pub use watch::{CheckpointResult, CheckpointVerdict, Finding, Watch, WatchState};
