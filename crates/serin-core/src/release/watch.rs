//! The post-promotion watch: checkpoints after a release completed (for example 1 h, 24 h and
//! 72 h later) compare the new stable with the old stable as it was measured during the
//! release, notify, and can roll back within a window the plan sets.
//!
//! A completed release has no control arm any more, so the checkpoints compare against a
//! baseline: the old stable's outcomes while the release ran (the control arm, same users,
//! same weeks). Rates are compared with time-uniform confidence bounds (the same as the
//! guardrail monitor's, at `alpha / 2` per side), so judging at several checkpoints does not
//! inflate false breaches; quantiles (latency p95, median cost) are compared as point
//! estimates once both sides have the minimum sample, which the findings say.

use serde::{Deserialize, Serialize};

use super::duration::DurationSpec;
use crate::guardrails::{ArmAggregate, GuardrailConfig, rate_lower_bound, rate_upper_bound};

/// Most checkpoints a plan may list.
pub const MAX_CHECKPOINTS: usize = 10;
/// Longest a watch may run after completion (30 days).
pub const MAX_WATCH_MS: u64 = 30 * 24 * 3_600_000;

/// The plan's `watch:` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Watch {
    /// Times after completion at which the new stable is judged, increasing.
    pub checkpoints: Vec<DurationSpec>,
    /// A breach found at a checkpoint no later than this after completion rolls the agent
    /// back to the old stable (if it is still the stable); later breaches only notify.
    /// Absent: breaches only notify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_within: Option<DurationSpec>,
    /// Requests of the new stable a checkpoint needs before it judges (default: the
    /// guardrails' `min_requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
}

impl Watch {
    /// `(pointer suffix, reason)` of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.checkpoints.is_empty() {
            return Err((
                "/checkpoints".into(),
                "a watch needs at least one checkpoint".into(),
            ));
        }
        if self.checkpoints.len() > MAX_CHECKPOINTS {
            return Err((
                "/checkpoints".into(),
                format!("at most {MAX_CHECKPOINTS} checkpoints"),
            ));
        }
        let mut previous = 0;
        for (i, c) in self.checkpoints.iter().enumerate() {
            let ms = c.as_ms();
            if ms == 0 || ms <= previous {
                return Err((
                    format!("/checkpoints/{i}"),
                    "checkpoints must be above 0s and increase".into(),
                ));
            }
            if ms > MAX_WATCH_MS {
                return Err((
                    format!("/checkpoints/{i}"),
                    "checkpoints are at most 30 days after completion".into(),
                ));
            }
            previous = ms;
        }
        if let Some(w) = &self.rollback_within
            && w.as_ms() > MAX_WATCH_MS
        {
            return Err((
                "/rollback_within".into(),
                "at most 30 days after completion".into(),
            ));
        }
        if self.min_requests.is_some_and(|n| n > 1_000_000_000) {
            return Err(("/min_requests".into(), "must be at most 1e9".into()));
        }
        Ok(())
    }

    /// When checkpoint `i` is due for a release completed at `completed_ms`.
    pub fn due_ms(&self, completed_ms: i64, i: usize) -> Option<i64> {
        let c = self.checkpoints.get(i)?;
        Some(completed_ms.saturating_add(i64::try_from(c.as_ms()).unwrap_or(i64::MAX)))
    }

    /// Whether a breach at `at_ms` may roll back.
    pub fn may_roll_back(&self, completed_ms: i64, at_ms: i64) -> bool {
        self.rollback_within.as_ref().is_some_and(|w| {
            at_ms.saturating_sub(completed_ms) <= i64::try_from(w.as_ms()).unwrap_or(i64::MAX)
        })
    }
}

/// What a checkpoint concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CheckpointVerdict {
    /// No gating guardrail is breached.
    Ok,
    /// Some gating guardrail is breached.
    Breach,
    /// The new stable has fewer requests than the watch's minimum (or the baseline has none).
    InsufficientData,
    /// Another bundle became the stable since: nothing left to judge.
    Superseded,
}

/// One guardrail at one checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Finding {
    /// `error_rate.max_increase` style.
    pub guardrail: String,
    /// The bound in words.
    pub threshold: String,
    pub baseline: f64,
    pub baseline_n: u64,
    pub current: f64,
    pub current_n: u64,
    pub breached: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// How it was judged: the confidence bounds compared, or the point estimates.
    pub how: String,
}

/// A checkpoint's result, stored in the release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointResult {
    /// Index into the plan's `watch.checkpoints`.
    pub checkpoint: usize,
    pub due_ms: i64,
    pub at_ms: i64,
    pub verdict: CheckpointVerdict,
    pub findings: Vec<Finding>,
    /// `rolled_back` when this checkpoint rolled the agent back, else `none`.
    pub action: String,
}

/// The watch's progress, kept in the completed release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatchState {
    pub completed_ms: i64,
    pub results: Vec<CheckpointResult>,
    /// The next checkpoint's due time; `None` once the watch ended.
    pub next_due_ms: Option<i64>,
}

/// Judges the new stable (`current`, since completion) against the old stable during the
/// release (`baseline`) under the release's guardrails, at `alpha` (the guardrails' own).
pub fn judge(
    config: &GuardrailConfig,
    baseline: &ArmAggregate,
    current: &ArmAggregate,
    min_requests: u64,
) -> (CheckpointVerdict, Vec<Finding>) {
    let delta = config.settings.alpha.fraction() / 2.0;
    let mut findings = Vec::new();
    let (b, c) = (baseline, current);
    let mut rate = |name: &str,
                    shadow: bool,
                    (bh, bn): (u64, u64),
                    (ch, cn): (u64, u64),
                    max: Option<f64>,
                    increase: Option<f64>,
                    ratio: Option<f64>,
                    higher_is_better: bool| {
        // Rates are failure rates (errors, refusals, failed tool calls, failed evals).
        let point = |h: u64, n: u64| if n == 0 { 0.0 } else { h as f64 / n as f64 }; // counts → f64
        let show = |p: f64| if higher_is_better { 1.0 - p } else { p };
        let lo = rate_lower_bound(ch, cn, delta);
        let hi_base = rate_upper_bound(bh, bn, delta);
        let pct = |p: f64| format!("{}%", crate::guardrails::trim_pct(p));
        let mut push = |suffix: &str, threshold: String, breached: bool, how: String| {
            findings.push(Finding {
                guardrail: format!("{name}.{suffix}"),
                threshold,
                baseline: show(point(bh, bn)),
                baseline_n: bn,
                current: show(point(ch, cn)),
                current_n: cn,
                breached,
                shadow,
                how,
            });
        };
        if let Some(m) = max {
            let cap = if higher_is_better { 1.0 - m } else { m };
            let (word, limit) = if higher_is_better {
                ("min", format!(">= {}", pct(m)))
            } else {
                ("max", format!("<= {}", pct(m)))
            };
            push(
                word,
                limit,
                lo > cap,
                format!("failure rate lower bound {} against {}", pct(lo), pct(cap)),
            );
        }
        if let Some(d) = increase {
            let (word, limit) = if higher_is_better {
                (
                    "max_decrease",
                    format!(">= baseline - {}pp", crate::guardrails::trim_pct(d)),
                )
            } else {
                (
                    "max_increase",
                    format!("<= baseline + {}pp", crate::guardrails::trim_pct(d)),
                )
            };
            push(
                word,
                limit,
                lo > hi_base + d,
                format!(
                    "failure rate lower bound {} against baseline upper bound {} + {}pp",
                    pct(lo),
                    pct(hi_base),
                    crate::guardrails::trim_pct(d)
                ),
            );
        }
        if let Some(r) = ratio {
            push(
                "max_ratio",
                format!("<= baseline x {r}"),
                lo > hi_base * r,
                format!(
                    "rate lower bound {} against baseline upper bound {} x {r}",
                    pct(lo),
                    pct(hi_base)
                ),
            );
        }
    };
    if let Some(r) = &config.error_rate {
        rate(
            "error_rate",
            r.shadow,
            (b.errors, b.requests),
            (c.errors, c.requests),
            r.max.map(|s| s.fraction()),
            r.max_increase.map(|p| p.fraction()),
            r.max_ratio,
            false,
        );
    }
    if let Some(r) = &config.refusal_rate {
        rate(
            "refusal_rate",
            r.shadow,
            (b.refusals, b.requests),
            (c.refusals, c.requests),
            r.max.map(|s| s.fraction()),
            r.max_increase.map(|p| p.fraction()),
            r.max_ratio,
            false,
        );
    }
    if let Some(r) = &config.tool_call_success {
        rate(
            "tool_call_success",
            r.shadow,
            (b.tool_calls_failed, b.tool_calls_ok + b.tool_calls_failed),
            (c.tool_calls_failed, c.tool_calls_ok + c.tool_calls_failed),
            r.min.map(|s| s.fraction()),
            r.max_decrease.map(|p| p.fraction()),
            None,
            true,
        );
    }
    if let Some(r) = &config.eval_pass_rate {
        rate(
            "eval_pass_rate",
            r.shadow,
            (
                b.eval_samples - b.eval_passed.min(b.eval_samples),
                b.eval_samples,
            ),
            (
                c.eval_samples - c.eval_passed.min(c.eval_samples),
                c.eval_samples,
            ),
            r.min.map(|s| s.fraction()),
            r.max_decrease.map(|p| p.fraction()),
            None,
            true,
        );
    }
    let mut quantile = |name: &str,
                        shadow: bool,
                        q: f64,
                        bv: Option<f64>,
                        cv: Option<f64>,
                        max: Option<f64>,
                        increase: Option<f64>,
                        ratio: Option<f64>,
                        unit: &str| {
        let (Some(bv), Some(cv)) = (bv, cv) else {
            return;
        };
        let mut push = |suffix: &str, threshold: String, breached: bool| {
            findings.push(Finding {
                guardrail: format!("{name}.{suffix}"),
                threshold,
                baseline: bv,
                baseline_n: b.requests,
                current: cv,
                current_n: c.requests,
                breached,
                shadow,
                how: format!(
                    "point estimates of the {} quantile, each side with at least the minimum sample",
                    q
                ),
            });
        };
        if let Some(m) = max {
            push("max", format!("<= {m} {unit}"), cv > m);
        }
        if let Some(d) = increase {
            push(
                "max_increase",
                format!("<= baseline + {d} {unit}"),
                cv > bv + d,
            );
        }
        if let Some(r) = ratio {
            push("max_ratio", format!("<= baseline x {r}"), cv > bv * r);
        }
    };
    if let Some(r) = &config.latency_p95_ms {
        quantile(
            "latency_p95_ms",
            r.shadow,
            0.95,
            b.latency.quantile(0.95),
            c.latency.quantile(0.95),
            r.max,
            r.max_increase,
            r.max_ratio,
            "ms",
        );
    }
    if let Some(r) = &config.cost_per_request {
        quantile(
            "cost_per_request",
            r.shadow,
            0.5,
            b.cost.quantile(0.5),
            c.cost.quantile(0.5),
            r.max,
            r.max_increase,
            r.max_ratio,
            "USD",
        );
    }
    if c.requests < min_requests.max(1) || b.requests == 0 {
        return (CheckpointVerdict::InsufficientData, findings);
    }
    let breach = findings.iter().any(|f| f.breached && !f.shadow);
    let verdict = if breach {
        CheckpointVerdict::Breach
    } else {
        CheckpointVerdict::Ok
    };
    (verdict, findings)
}
