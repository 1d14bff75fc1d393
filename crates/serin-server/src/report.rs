//! The deploy report of a release, in Markdown and JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};
use serin_core::guardrails::Verdict;
use serin_core::release::sig;

use crate::clock;
use crate::error::ApiError;
use crate::releases::ReleaseView;

/// A verdict as the JSON report gives it: the stored fields plus `latched_at` in RFC 3339.
fn verdict_json(v: &Verdict) -> Value {
    let mut out = serde_json::to_value(v).unwrap_or(Value::Null);
    if let (Some(obj), Some(at)) = (out.as_object_mut(), v.latched_at_ms) {
        obj.insert("latched_at".to_owned(), json!(clock::rfc3339(at)));
    }
    out
}

pub fn json(view: &ReleaseView) -> Value {
    let r = &view.release;
    json!({
        "capabilities": capabilities_json(view),
        "release": r.id,
        "agent": r.agent,
        "env": r.env,
        "candidate": r.candidate.id,
        "baseline": r.baseline.id,
        "phase": r.phase,
        "step": r.step,
        "weight": r.weight(),
        "started_by": r.started_by,
        "created_at": clock::rfc3339(r.created_ms),
        "timeline": r.history.iter().map(|t| json!({
            "at": clock::rfc3339(t.at_ms), "event": t.event, "from": t.from, "to": t.to,
            "step": t.step, "actor": t.actor, "reason": t.reason,
        })).collect::<Vec<_>>(),
        "failure": r.failure.as_ref().map(|f| {
            let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
            if let (Some(obj), Some(at)) = (v.as_object_mut(), f.latched_at_ms) {
                obj.insert("latched_at".to_owned(), json!(clock::rfc3339(at)));
            }
            v
        }),
        "readiness": r.readiness,
        "evidence": r.evidence.iter().map(|e| json!({
            "at": clock::rfc3339(e.at_ms), "at_ms": e.at_ms, "step": e.step, "phase": e.phase,
            "canary_requests": e.canary_requests,
            "verdicts": e.verdicts.iter().map(verdict_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "canary_requests": view.canary_requests,
        "verdicts": view.verdicts.iter().map(verdict_json).collect::<Vec<_>>(),
        "verdicts_frozen": r.final_evidence().is_some(),
        "waves": r.waves.iter().map(|w| {
            let ev = view.waves.iter().find(|e| e.wave == w.name);
            json!({
                "wave": w.name, "state": w.state,
                "opened_at": w.opened_ms.map(clock::rfc3339),
                "finished_at": w.finished_ms.map(clock::rfc3339),
                "failure": w.failure,
                "canary_requests": ev.map(|e| e.canary_requests),
                "verdicts": ev.map(|e| e.verdicts.iter().map(verdict_json).collect::<Vec<_>>()),
            })
        }).collect::<Vec<_>>(),
        "shadow_calibration": view.shadow_calibration,
        "notifications": view.notifications,
    })
}

pub fn markdown(view: &ReleaseView) -> String {
    let r = &view.release;
    let mut s = String::new();
    let _ = writeln!(s, "# Release {} of {} in {}", r.id, r.agent, r.env);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "- candidate **{}** against stable **{}**",
        r.candidate.id, r.baseline.id
    );
    let _ = writeln!(
        s,
        "- outcome: **{}** at step {} of {} (weight {})",
        r.phase.as_str(),
        r.step + 1,
        r.plan.stages().len(),
        r.weight()
    );
    let _ = writeln!(
        s,
        "- started by {} at {}",
        r.started_by,
        clock::rfc3339(r.created_ms)
    );
    let _ = writeln!(s, "- canary requests observed: {}", view.canary_requests);
    if let Some(f) = &r.failure {
        let latched = f
            .latched_at_ms
            .map(|at| format!(" (latched {})", clock::rfc3339(at)))
            .unwrap_or_default();
        let _ = writeln!(s, "- failure: {}{latched}", f.summary());
    }
    let _ = writeln!(s);
    capabilities_section(&mut s, view);
    readiness_section(&mut s, r);
    let _ = writeln!(s, "## Timeline");
    let _ = writeln!(s);
    let _ = writeln!(s, "| at | event | phase | step | who | reason |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for t in &r.history {
        let _ = writeln!(
            s,
            "| {} | {} | {} → {} | {} | {} | {} |",
            clock::rfc3339(t.at_ms),
            t.event,
            t.from.as_str(),
            t.to.as_str(),
            t.step + 1,
            t.actor,
            t.reason.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(s);
    if r.final_evidence().is_some() {
        let _ = writeln!(
            s,
            "## Guardrails at the final transition (canary vs stable)"
        );
    } else {
        let _ = writeln!(s, "## Guardrails (canary vs stable)");
    }
    let _ = writeln!(s);
    if view.verdicts.is_empty() {
        let _ = writeln!(s, "No outcomes were reported for the candidate.");
    } else {
        verdict_table(&mut s, &view.verdicts);
    }
    if !r.waves.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "## Waves (each judged on its own members' canary and control)"
        );
        for w in &r.waves {
            let _ = writeln!(s);
            let ev = view.waves.iter().find(|e| e.wave == w.name);
            let _ = writeln!(
                s,
                "**{}** — {}, {} canary requests{}",
                w.name,
                w.state.as_str(),
                ev.map_or(0, |e| e.canary_requests),
                w.failure
                    .as_ref()
                    .map(|f| format!("; {}", f.summary()))
                    .unwrap_or_default()
            );
            if let Some(e) = ev.filter(|e| !e.verdicts.is_empty()) {
                let _ = writeln!(s);
                verdict_table(&mut s, &e.verdicts);
            }
        }
    }
    if !view.shadow_calibration.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "Shadow bounds in completed releases of {}:", r.env);
        let _ = writeln!(s);
        for c in &view.shadow_calibration {
            let _ = writeln!(s, "- {}", c.summary);
        }
    }
    if !r.evidence.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "## Evidence at each transition");
        for e in &r.evidence {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "**{}** — step {}, now {}, {} canary requests",
                clock::rfc3339(e.at_ms),
                e.step + 1,
                e.phase.as_str(),
                e.canary_requests
            );
            if e.verdicts.is_empty() {
                let _ = writeln!(s, "(no outcomes yet)");
                continue;
            }
            let _ = writeln!(s);
            verdict_table(&mut s, &e.verdicts);
        }
    }
    if !view.notifications.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "## Notifications");
        let _ = writeln!(s);
        for n in &view.notifications {
            let _ = writeln!(
                s,
                "- {} — {} attempt(s), {}",
                n["url"].as_str().unwrap_or("?"),
                n["attempts"],
                match n["delivered_at"].as_str() {
                    Some(at) => format!("delivered {at}"),
                    None => format!(
                        "not delivered yet ({})",
                        n["last_error"].as_str().unwrap_or("pending")
                    ),
                }
            );
        }
    }
    s
}

/// Stable → candidate capability changes, each with `needs_approval`.
fn capabilities_json(view: &ReleaseView) -> Value {
    Value::Array(
        view.capabilities
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("needs_approval".to_owned(), json!(c.needs_approval()));
                }
                v
            })
            .collect(),
    )
}

/// What the candidate can do that the stable could not (and every other capability change),
/// first in the report because it is what a reviewer must not miss.
fn capabilities_section(s: &mut String, view: &ReleaseView) {
    let r = &view.release;
    let _ = writeln!(
        s,
        "## Capabilities ({} → {})",
        r.baseline.id, r.candidate.id
    );
    let _ = writeln!(s);
    if view.capabilities.is_empty() {
        let _ = writeln!(s, "No capability changes.");
    }
    for c in &view.capabilities {
        let flag = if c.needs_approval() {
            "**needs approval** — "
        } else {
            ""
        };
        let _ = writeln!(s, "- {flag}{}", c.detail);
    }
    let _ = writeln!(s);
}

/// What the side-effect ledger holds for one arm's bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmEffects {
    /// `stable` or `candidate`.
    pub arm: &'static str,
    pub bundle: u64,
    pub counts: serin_store::EffectCounts,
}

/// The ledger's counts for a release's two bundles. The ledger is keyed by bundle, not env,
/// so these are every effect recorded under each bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectsReport {
    pub agent: String,
    /// Stable first, then candidate.
    pub arms: Vec<ArmEffects>,
}

/// Reads the ledger's counts for the release's stable (its baseline) and candidate.
pub async fn effects(
    store: &serin_store::Store,
    r: &serin_core::release::Release,
) -> Result<EffectsReport, ApiError> {
    let mut arms = Vec::with_capacity(2);
    for (arm, bundle) in [("stable", &r.baseline), ("candidate", &r.candidate)] {
        let n = i64::try_from(bundle.number).unwrap_or(i64::MAX);
        arms.push(ArmEffects {
            arm,
            bundle: bundle.number,
            counts: store.count_effects(&r.agent, n).await?,
        });
    }
    Ok(EffectsReport {
        agent: r.agent.clone(),
        arms,
    })
}

/// The sentence that must not be missed: how many effects of a bundle nobody can account
/// for, and the command that lists them.
fn unknown_warning(agent: &str, a: &ArmEffects) -> Option<String> {
    (a.counts.unknown > 0).then(|| {
        format!(
            "{n} effect{s} of {agent}@{b} {are} unknown: run `serin effects {agent} --bundle {b} --status unknown`",
            n = a.counts.unknown,
            s = if a.counts.unknown == 1 { "" } else { "s" },
            are = if a.counts.unknown == 1 { "is" } else { "are" },
            b = a.bundle,
        )
    })
}

/// The report's `effects` member: counts per arm and the warnings about `unknown` ones.
pub fn effects_json(fx: &EffectsReport) -> Value {
    json!({
        "arms": fx.arms.iter().map(|a| json!({
            "arm": a.arm,
            "bundle": format!("{}@{}", fx.agent, a.bundle),
            "intent": a.counts.intent,
            "committed": a.counts.committed,
            "failed": a.counts.failed,
            "unknown": a.counts.unknown,
        })).collect::<Vec<_>>(),
        "unknown": fx.arms.iter().map(|a| a.counts.unknown).sum::<i64>(),
        "warnings": fx.arms.iter().filter_map(|a| unknown_warning(&fx.agent, a)).collect::<Vec<_>>(),
    })
}

/// Adds the ledger to a Markdown report: a warning under the title for each arm with
/// `unknown` effects (someone must find out whether they happened, above all after a
/// rollback), and an "Effects" section at the end.
pub fn effects_markdown(md: &mut String, fx: &EffectsReport) {
    let warnings: String = fx
        .arms
        .iter()
        .filter_map(|a| unknown_warning(&fx.agent, a))
        .map(|w| format!("> **Warning: {w}**\n"))
        .collect();
    if !warnings.is_empty() {
        let at = md.find("\n\n").map_or(md.len(), |i| i + 2);
        md.insert_str(at, &format!("{warnings}\n"));
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "## Effects (side-effect ledger, every env)");
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| arm | bundle | intent | committed | failed | unknown |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for a in &fx.arms {
        let c = &a.counts;
        let _ = writeln!(
            md,
            "| {} | {}@{} | {} | {} | {} | {} |",
            a.arm, fx.agent, a.bundle, c.intent, c.committed, c.failed, c.unknown
        );
    }
}

/// One row per guardrail: status, threshold, both arms with n, the e-value against "the
/// bound holds" and its bar, the non-inferiority e-value and bar when the bound has one,
/// when a fail latched, and whether the bound is shadow (reported, never gating).
fn verdict_table(s: &mut String, verdicts: &[Verdict]) {
    let _ = writeln!(
        s,
        "| guardrail | status | threshold | canary (n) | stable (n) | e-value / bar | non-inferiority e / bar | latched |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for v in verdicts {
        let name = if v.shadow {
            format!("{} (shadow)", v.guardrail)
        } else {
            v.guardrail.clone()
        };
        let ni = match (v.pass_statistic, v.pass_threshold) {
            (Some(e), Some(bar)) => format!("{} / {}", sig(e), sig(bar)),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {:.4} (n={}) | {:.4} (n={}) | {} / {} | {ni} | {} |",
            format!("{:?}", v.status).to_lowercase(),
            v.threshold.replace('|', "/"),
            v.canary.value,
            v.canary.n,
            v.control.value,
            v.control.n,
            sig(v.statistic),
            sig(v.statistic_threshold),
            v.latched_at_ms.map_or_else(String::new, clock::rfc3339),
        );
    }
}

/// The readiness gate as it stood at start: verdict, any override, and what did not pass.
fn readiness_section(s: &mut String, r: &serin_core::release::Release) {
    let _ = writeln!(s, "## Readiness at start");
    let _ = writeln!(s);
    let Some(g) = &r.readiness else {
        let _ = writeln!(s, "Not recorded (the release predates readiness gates).");
        let _ = writeln!(s);
        return;
    };
    let policy = g.policy_version.map_or_else(
        || "no policy applied".to_owned(),
        |v| format!("policy v{v}"),
    );
    let _ = writeln!(
        s,
        "- {} ({policy}, evaluated {})",
        g.verdict,
        clock::rfc3339(g.evaluated_at_ms)
    );
    if let Some(o) = &g.gate_override {
        let _ = writeln!(
            s,
            "- **gate overridden** by {}: {}",
            o.by,
            o.reason.replace('\n', " ")
        );
    }
    for b in &g.blocked_by {
        let _ = writeln!(s, "- blocked by {b}");
    }
    let shown: Vec<_> = g
        .items
        .iter()
        .filter(|i| g.unmet.contains(&i.key) || g.warnings.contains(&i.key))
        .collect();
    if !shown.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "| item | level | status | owner | next action |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for i in shown {
            let level = if g.unmet.contains(&i.key) {
                "required"
            } else {
                "warn"
            };
            let _ = writeln!(
                s,
                "| {} | {level} | {} | {} | {} |",
                i.key,
                i.status.as_str(),
                i.owner.as_deref().unwrap_or(""),
                i.next_action.as_deref().unwrap_or("").replace('|', "/")
            );
        }
    }
    let _ = writeln!(s);
}

#[cfg(test)]
mod tests {
    use serin_core::decision::bench_support::bundle_ref;
    use serin_core::guardrails::{MetricValue, Verdict, VerdictStatus};
    use serin_core::release::{Event, Plan, Release};

    use super::*;
    use crate::releases::ShadowCalibration;

    const T0: i64 = 1_700_000_000_000;

    fn verdict(guardrail: &str, status: VerdictStatus) -> Verdict {
        Verdict {
            guardrail: guardrail.to_owned(),
            status,
            canary: MetricValue {
                value: 0.25,
                n: 200,
            },
            control: MetricValue {
                value: 0.01,
                n: 1800,
            },
            threshold: "<= 5%".to_owned(),
            statistic: 2.35e16,
            statistic_threshold: 200.0,
            needs_more_requests: None,
            explanation: String::new(),
            latched_at_ms: None,
            shadow: false,
            pass_statistic: None,
            pass_threshold: None,
            passed_at_ms: None,
        }
    }

    /// A release rolled back at T0 + 1 min on a latched error fail, with a shadow bound
    /// and a bound that carries the non-inferiority test.
    fn rolled_back() -> ReleaseView {
        let plan = Plan::parse_and_validate(
            "steps:\n  - canary: {weight: 10%, min_duration: 1s, min_requests: 100}\n",
        )
        .unwrap();
        let r = Release::new(
            "support-prod-1",
            "support",
            "prod",
            bundle_ref("support", 2),
            bundle_ref("support", 1),
            plan,
            T0,
            "alex",
        );
        let (r, _) = r
            .apply(
                &Event::Start {
                    actor: "alex".into(),
                },
                T0,
            )
            .unwrap();
        let mut fail = verdict("error_rate.max", VerdictStatus::Fail);
        fail.latched_at_ms = Some(T0 + 30_000);
        let mut shadow = verdict("refusal_rate.max_ratio", VerdictStatus::Pending);
        shadow.shadow = true;
        shadow.statistic = 3.5;
        let mut ni = verdict("latency_p95_ms.max_increase", VerdictStatus::Pass);
        ni.statistic = 0.42;
        ni.pass_statistic = Some(512.0);
        ni.pass_threshold = Some(400.0);
        let verdicts = vec![fail, shadow, ni];
        let event = Event::tick(200, verdicts.clone());
        let (mut next, mut effects) = r.apply(&event, T0 + 60_000).unwrap();
        next.attach_evidence(&r, &mut effects, T0 + 60_000, 200, &verdicts, &[]);
        ReleaseView {
            weight: next.plan.routed_weight(next.step).unwrap(),
            gate: None,
            canary_requests: 200,
            verdicts: next.final_evidence().unwrap().verdicts.clone(),
            waves: Vec::new(),
            warnings: Vec::new(),
            shadow_calibration: vec![ShadowCalibration {
                guardrail: "refusal_rate.max_ratio".to_owned(),
                failed: 1,
                completed: 37,
                summary: "refusal_rate.max_ratio (shadow): failed in 1 of 37 completed releases"
                    .to_owned(),
            }],
            notifications: Vec::new(),
            needs_attention: None,
            capabilities: Vec::new(),
            release: next,
        }
    }

    #[test]
    fn the_markdown_tables_explain_every_verdict_at_every_transition() {
        let md = markdown(&rolled_back());
        assert!(
            md.contains(
                "- failure: guardrail error_rate.max failed: canary 0.25 (n=200) vs control 0.01 (n=1800), threshold <= 5%, e-value 2.35e16 reached bar 200 (latched 2023-11-14T22:13:50Z)"
            ),
            "{md}"
        );
        assert!(
            md.contains("## Guardrails at the final transition (canary vs stable)"),
            "{md}"
        );
        let rows = [
            "| error_rate.max | fail | <= 5% | 0.2500 (n=200) | 0.0100 (n=1800) | 2.35e16 / 200 | — | 2023-11-14T22:13:50Z |",
            "| refusal_rate.max_ratio (shadow) | pending | <= 5% | 0.2500 (n=200) | 0.0100 (n=1800) | 3.500 / 200 | — |  |",
            "| latency_p95_ms.max_increase | pass | <= 5% | 0.2500 (n=200) | 0.0100 (n=1800) | 0.420 / 200 | 512 / 400 |  |",
        ];
        for row in rows {
            // Once in the final table, once in the rollback's evidence.
            assert_eq!(md.matches(row).count(), 2, "{row}\n{md}");
        }
        assert!(
            md.contains("**2023-11-14T22:14:20Z** — step 1, now rolled_back, 200 canary requests"),
            "{md}"
        );
        assert!(
            md.contains("- refusal_rate.max_ratio (shadow): failed in 1 of 37 completed releases"),
            "{md}"
        );
    }

    fn ledger(unknown: i64) -> EffectsReport {
        let counts = |intent, committed, failed, unknown| serin_store::EffectCounts {
            intent,
            committed,
            failed,
            unknown,
        };
        EffectsReport {
            agent: "support".to_owned(),
            arms: vec![
                ArmEffects {
                    arm: "stable",
                    bundle: 1,
                    counts: counts(0, 12, 1, 0),
                },
                ArmEffects {
                    arm: "candidate",
                    bundle: 2,
                    counts: counts(1, 3, 0, unknown),
                },
            ],
        }
    }

    #[test]
    fn the_effects_section_counts_each_arm_and_flags_unknown_ones_under_the_title() {
        let mut md = markdown(&rolled_back());
        effects_markdown(&mut md, &ledger(2));
        let warning = "> **Warning: 2 effects of support@2 are unknown: run `serin effects support --bundle 2 --status unknown`**";
        assert!(
            md.starts_with(&format!(
                "# Release support-prod-1 of support in prod\n\n{warning}\n\n- candidate"
            )),
            "{md}"
        );
        assert!(
            md.contains("| stable | support@1 | 0 | 12 | 1 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| candidate | support@2 | 1 | 3 | 0 | 2 |"),
            "{md}"
        );
        let v = effects_json(&ledger(1));
        assert_eq!(v["unknown"], 1);
        assert_eq!(
            v["warnings"],
            json!([
                "1 effect of support@2 is unknown: run `serin effects support --bundle 2 --status unknown`"
            ])
        );
        assert_eq!(
            (&v["arms"][1]["bundle"], &v["arms"][1]["intent"]),
            (&json!("support@2"), &json!(1))
        );
        // Nothing unknown: the section, and no warning.
        let mut md = markdown(&rolled_back());
        effects_markdown(&mut md, &ledger(0));
        assert!(!md.contains("Warning"), "{md}");
        assert!(md.contains("## Effects"), "{md}");
        assert_eq!(effects_json(&ledger(0))["warnings"], json!([]));
    }

    #[test]
    fn the_json_report_carries_the_same_facts_with_readable_times() {
        let v = json(&rolled_back());
        assert_eq!(v["verdicts_frozen"], true);
        assert_eq!(v["failure"]["latched_at"], "2023-11-14T22:13:50Z");
        assert_eq!(v["failure"]["statistic_threshold"], 200.0);
        let e = &v["evidence"][0];
        assert_eq!(
            (&e["at"], &e["phase"], &e["canary_requests"]),
            (
                &json!("2023-11-14T22:14:20Z"),
                &json!("rolled_back"),
                &json!(200)
            )
        );
        let rows = e["verdicts"].as_array().unwrap();
        assert_eq!(rows[0]["latched_at"], "2023-11-14T22:13:50Z");
        assert_eq!(rows[0]["statistic"], 2.35e16);
        assert_eq!(rows[1]["shadow"], true);
        assert!(rows[1].get("latched_at").is_none());
        assert_eq!(
            (&rows[2]["pass_statistic"], &rows[2]["pass_threshold"]),
            (&json!(512.0), &json!(400.0))
        );
        assert_eq!(v["verdicts"], e["verdicts"]);
        assert_eq!(v["shadow_calibration"][0]["completed"], 37);
    }
}
