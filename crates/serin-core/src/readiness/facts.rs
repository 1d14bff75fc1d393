//! Facts Serin knows about a candidate, and the computed items evaluated from them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::evaluate::ItemStatus;
use super::policy::Policy;
use crate::decision::Percent;
use crate::release::{OnFailure, Plan, human_ms};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A monitoring axis a release plan's guardrails can cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    Eval,
    Latency,
    Cost,
    Errors,
}

impl Axis {
    pub const ALL: [Axis; 4] = [Axis::Eval, Axis::Latency, Axis::Cost, Axis::Errors];

    pub fn as_str(self) -> &'static str {
        match self {
            Axis::Eval => "eval",
            Axis::Latency => "latency",
            Axis::Cost => "cost",
            Axis::Errors => "errors",
        }
    }
}

/// The latest offline eval recorded for the candidate (`serin eval record`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalResult {
    pub set: String,
    pub score: f64,
    pub threshold: f64,
    /// Whether the eval ran on the candidate's exact bundle digest.
    pub digest_matches: bool,
}

/// What the server knows about the candidate and the env, gathered before evaluation.
/// `None` means unknown (e.g. no release plan attached yet); such items report `missing`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// Whether the candidate pins a dated model snapshot (not a moving alias).
    #[serde(default)]
    pub candidate_pinned: Option<bool>,
    /// The model the candidate names, for the explanation.
    #[serde(default)]
    pub candidate_alias: Option<String>,
    /// The previous stable bundle (`agent@N`) still ready to take all traffic.
    #[serde(default)]
    pub previous_stable: Option<String>,
    #[serde(default)]
    pub last_successful_drill_ms: Option<i64>,
    /// Axes the release plan's guardrails cover.
    #[serde(default)]
    pub plan_axes: Option<BTreeSet<Axis>>,
    /// Weight of the plan's first step.
    #[serde(default)]
    pub plan_first_weight: Option<Percent>,
    /// Whether the plan rolls back on its own when a gate fails.
    #[serde(default)]
    pub plan_on_failure_rollback: Option<bool>,
    #[serde(default)]
    pub plan_excluded_tenants: BTreeSet<String>,
    #[serde(default)]
    pub eval_result: Option<EvalResult>,
    /// `(outcomes with a trace, all outcomes)` over the recent window.
    #[serde(default)]
    pub trace_coverage: Option<(u64, u64)>,
    /// The evaluation instant, passed in: this crate never reads the clock.
    pub now_ms: i64,
}

/// An item Serin computes itself.
impl Facts {
    /// Fills the plan-derived facts: which of the four axes the plan's guardrails watch
    /// (the SPEC defaults when the plan names none), the first step's weight, whether a
    /// failed gate rolls back, and the excluded tenants.
    pub fn set_plan(&mut self, plan: &Plan) {
        let g = plan.guardrails();
        let mut axes = BTreeSet::new();
        if g.eval_pass_rate.is_some() {
            axes.insert(Axis::Eval);
        }
        if g.latency_p95_ms.is_some() {
            axes.insert(Axis::Latency);
        }
        if g.cost_per_request.is_some() {
            axes.insert(Axis::Cost);
        }
        // Tool-call failures are errors the agent sees, so either rule covers the axis.
        if g.error_rate.is_some() || g.tool_call_success.is_some() {
            axes.insert(Axis::Errors);
        }
        self.plan_axes = Some(axes);
        self.plan_first_weight = plan.steps.first().map(|s| s.canary().weight);
        self.plan_on_failure_rollback = Some(plan.on_failure == OnFailure::Rollback);
        self.plan_excluded_tenants = plan.exclude_tenants.clone();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ComputedItem {
    pub key: &'static str,
    pub title: &'static str,
    /// One of the keys of [`super::CATEGORIES`].
    pub category: &'static str,
}

const COMPUTED: [ComputedItem; 9] = [
    ComputedItem {
        key: "candidate_pinned",
        title: "Candidate pins an exact model snapshot",
        category: "deploy_hygiene",
    },
    ComputedItem {
        key: "rollback_target_warm",
        title: "Previous stable bundle can take all traffic back",
        category: "rollback",
    },
    ComputedItem {
        key: "rollback_drill_recent",
        title: "Rollback rehearsed recently",
        category: "rollback",
    },
    ComputedItem {
        key: "guardrails_four_axes",
        title: "Plan guardrails watch eval, latency, cost and errors",
        category: "rollback",
    },
    ComputedItem {
        key: "initial_exposure_bounded",
        title: "First canary step stays within the exposure cap",
        category: "canary",
    },
    ComputedItem {
        key: "auto_rollback_wired",
        title: "A failed gate rolls back without waiting for a person",
        category: "canary",
    },
    ComputedItem {
        key: "high_value_tenants_excluded",
        title: "High-value tenants kept out of the canary",
        category: "canary",
    },
    ComputedItem {
        key: "offline_eval_passed",
        title: "Offline eval on this exact bundle met its threshold",
        category: "capability_gate",
    },
    ComputedItem {
        key: "trace_coverage",
        title: "Production outcomes carry traces",
        category: "monitoring",
    },
];

/// The computed items, in a stable order.
pub fn computed_items() -> &'static [ComputedItem] {
    &COMPUTED
}

/// The computed item named `key`.
pub fn computed_item(key: &str) -> Option<&'static ComputedItem> {
    COMPUTED.iter().find(|c| c.key == key)
}

/// The outcome of one computed item.
pub(super) struct Computed {
    pub status: ItemStatus,
    pub how: String,
    pub next_action: Option<String>,
}

fn pass(how: String) -> Computed {
    Computed {
        status: ItemStatus::Pass,
        how,
        next_action: None,
    }
}

fn not(status: ItemStatus, how: String, next: &str) -> Computed {
    Computed {
        status,
        how,
        next_action: Some(next.to_owned()),
    }
}

fn ago(now_ms: i64, then_ms: i64) -> String {
    let age = u64::try_from(now_ms.saturating_sub(then_ms)).unwrap_or(0);
    human_ms(age)
}

fn join(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    items
        .into_iter()
        .map(|s| s.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Evaluates computed item `key` (`None` when `key` is not computed).
/// `eval_needed`: the eval item is required, so an absent eval is `missing`, not `n/a`.
pub(super) fn evaluate_computed(
    key: &str,
    policy: &Policy,
    facts: &Facts,
    eval_needed: bool,
) -> Option<Computed> {
    use ItemStatus::{Fail, Missing, NotApplicable, Partial};
    let no_plan = "no release plan is attached, so this is unknown";
    let attach = "start the release with a plan (serin release start --plan)";
    let c = match key {
        "candidate_pinned" => {
            let model = facts
                .candidate_alias
                .as_deref()
                .map(|m| format!("model {m:?}"))
                .unwrap_or_else(|| "its model".to_owned());
            match facts.candidate_pinned {
                Some(true) => pass(format!("the candidate pins {model} to a dated snapshot")),
                Some(false) => not(
                    Fail,
                    format!(
                        "the candidate names {model}, a moving alias that can change underneath it"
                    ),
                    "pin the model to a dated snapshot in bundle.yaml and push a new bundle",
                ),
                None => not(
                    Missing,
                    "the candidate's pin state is unknown".to_owned(),
                    "name the candidate bundle (--bundle N)",
                ),
            }
        }
        "rollback_target_warm" => match &facts.previous_stable {
            Some(prev) => pass(format!(
                "{prev} is the previous stable bundle in this env and can take all traffic back"
            )),
            None => not(
                Fail,
                "this env has no previous stable bundle, so a rollback has nowhere to go"
                    .to_owned(),
                "deploy a known-good bundle to this env first, or list rollback_target_warm under warn for a first launch",
            ),
        },
        "rollback_drill_recent" => {
            let days = policy.settings.drill_max_age_days;
            let limit_ms = i64::from(days).saturating_mul(DAY_MS);
            match facts.last_successful_drill_ms {
                Some(at) if facts.now_ms.saturating_sub(at) <= limit_ms => pass(format!(
                    "last successful rollback drill {} ago (limit {days}d)",
                    ago(facts.now_ms, at)
                )),
                Some(at) => not(
                    Fail,
                    format!(
                        "last successful rollback drill {} ago, older than the {days}d limit",
                        ago(facts.now_ms, at)
                    ),
                    "run serin drill rollback in this env",
                ),
                None => not(
                    Fail,
                    "no successful rollback drill is recorded in this env".to_owned(),
                    "run serin drill rollback in this env",
                ),
            }
        }
        "guardrails_four_axes" => match &facts.plan_axes {
            None => not(Missing, no_plan.to_owned(), attach),
            Some(axes) => {
                let missing: Vec<&str> = Axis::ALL
                    .iter()
                    .filter(|a| !axes.contains(a))
                    .map(|a| a.as_str())
                    .collect();
                let covered = join(axes.iter().map(|a| a.as_str()));
                if missing.is_empty() {
                    pass(format!("plan guardrails cover {covered}"))
                } else if axes.is_empty() {
                    not(
                        Fail,
                        "plan guardrails cover no axis".to_owned(),
                        "add guardrails for eval, latency, cost and errors to the plan",
                    )
                } else {
                    not(
                        Partial,
                        format!(
                            "plan guardrails cover {covered}; {} missing",
                            join(&missing)
                        ),
                        "add the missing axes to the plan's guardrails",
                    )
                }
            }
        },
        "initial_exposure_bounded" => {
            let cap = policy.rollout_mode.max_exposure;
            match facts.plan_first_weight {
                None => not(Missing, no_plan.to_owned(), attach),
                Some(w) if w <= cap => pass(format!(
                    "the plan's first step sends {w} to the candidate (cap {cap})"
                )),
                Some(w) => not(
                    Fail,
                    format!(
                        "the plan's first step sends {w} to the candidate, above the {cap} cap"
                    ),
                    "lower the first step's weight in the plan",
                ),
            }
        }
        "auto_rollback_wired" => match facts.plan_on_failure_rollback {
            None => not(Missing, no_plan.to_owned(), attach),
            Some(true) => pass("the plan rolls back by itself when a gate fails".to_owned()),
            Some(false) => not(
                Fail,
                "the plan halts when a gate fails and waits for an operator".to_owned(),
                "set on_failure: rollback in the plan",
            ),
        },
        "high_value_tenants_excluded" => {
            let wanted = &policy.rollout_mode.high_value_tenants;
            let left: Vec<&String> = wanted
                .iter()
                .filter(|t| !facts.plan_excluded_tenants.contains(*t))
                .collect();
            if wanted.is_empty() {
                pass("the policy names no high-value tenants; nothing to exclude".to_owned())
            } else if left.is_empty() {
                pass(format!(
                    "the plan excludes every high-value tenant ({})",
                    join(wanted)
                ))
            } else {
                not(
                    Fail,
                    format!(
                        "the plan does not exclude high-value tenant(s) {}",
                        join(&left)
                    ),
                    "add them to exclude_tenants in the plan",
                )
            }
        }
        "offline_eval_passed" => match &facts.eval_result {
            None if eval_needed => not(
                Missing,
                "no offline eval is recorded for this bundle".to_owned(),
                "run the eval and record it (serin eval record)",
            ),
            None => Computed {
                status: NotApplicable,
                how: "no offline eval is recorded and the policy does not require one".to_owned(),
                next_action: None,
            },
            Some(r) if !r.digest_matches => not(
                Fail,
                format!(
                    "the eval on set {:?} ran on a different bundle digest",
                    r.set
                ),
                "rerun the eval on this exact bundle and record it",
            ),
            Some(r) if r.score >= r.threshold => pass(format!(
                "set {:?} scored {} (threshold {})",
                r.set, r.score, r.threshold
            )),
            Some(r) => not(
                Fail,
                format!(
                    "set {:?} scored {}, below its threshold {}",
                    r.set, r.score, r.threshold
                ),
                "fix the regressions and record a new eval",
            ),
        },
        "trace_coverage" => {
            let min = policy.settings.trace_coverage_min;
            match facts.trace_coverage {
                None | Some((_, 0)) => not(
                    Missing,
                    format!(
                        "no outcomes of this bundle are recorded in {} over the last {}d, so trace coverage is unknown",
                        policy.settings.trace_coverage_env,
                        super::policy::TRACE_COVERAGE_WINDOW_DAYS
                    ),
                    "run the bundle in that env and send outcomes with trace ids from the SDK",
                ),
                Some((with, total)) => {
                    // Counts far below 2^53: the conversion is exact enough for a ratio.
                    #[allow(clippy::cast_precision_loss)]
                    let share = with.min(total) as f64 / total as f64;
                    let text = format!(
                        "{with} of {total} outcomes carry a trace ({:.1}%, minimum {:.1}%)",
                        share * 100.0,
                        min * 100.0
                    );
                    if share >= min {
                        pass(text)
                    } else {
                        not(
                            Fail,
                            text,
                            "attach trace ids to outcomes on every code path",
                        )
                    }
                }
            }
        }
        _ => return None,
    };
    Some(c)
}
