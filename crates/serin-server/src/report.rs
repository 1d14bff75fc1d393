//! The deploy report of a release, in Markdown and JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::clock;
use crate::releases::ReleaseView;

pub fn json(view: &ReleaseView) -> Value {
    let r = &view.release;
    json!({
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
        "failure": r.failure,
        "readiness": r.readiness,
        "evidence": r.evidence,
        "canary_requests": view.canary_requests,
        "verdicts": view.verdicts,
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
        r.plan.steps.len(),
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
        let _ = writeln!(s, "- failure: {}", f.summary());
    }
    let _ = writeln!(s);
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
    let _ = writeln!(s, "## Guardrails (canary vs stable)");
    let _ = writeln!(s);
    if view.verdicts.is_empty() {
        let _ = writeln!(s, "No outcomes were reported for the candidate.");
    } else {
        let _ = writeln!(
            s,
            "| guardrail | verdict | canary | stable | threshold | e-value / bar |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for v in &view.verdicts {
            let _ = writeln!(
                s,
                "| {} | {} | {:.4} (n={}) | {:.4} (n={}) | {} | {:.3} / {:.0} |",
                v.guardrail,
                format!("{:?}", v.status).to_lowercase(),
                v.canary.value,
                v.canary.n,
                v.control.value,
                v.control.n,
                v.threshold,
                v.statistic,
                v.statistic_threshold
            );
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
            let _ = writeln!(s, "| guardrail | verdict | canary | stable |");
            let _ = writeln!(s, "|---|---|---|---|");
            for v in &e.verdicts {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.4} (n={}) | {:.4} (n={}) |",
                    v.guardrail,
                    format!("{:?}", v.status).to_lowercase(),
                    v.canary.value,
                    v.canary.n,
                    v.control.value,
                    v.control.n
                );
            }
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
