//! The release state machine: every transition, every refusal, gates, failures, notifications
//! and resuming a persisted release.

use serin_core::decision::Percent;
use serin_core::decision::bench_support::bundle_ref;
use serin_core::guardrails::{MetricValue, Verdict, VerdictStatus};
use serin_core::release::{
    Effect, Event, GateStatus, Phase, Plan, Release, Requirement, SYSTEM_ACTOR,
};

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

/// Three steps; `bigcorp` excluded until the last.
fn plan_yaml(extra: &str) -> String {
    format!(
        "steps:
  - canary: {{weight: 1%, min_duration: 5m, min_requests: 500}}
  - canary: {{weight: 5%, min_duration: 30m, min_requests: 5000}}
  - canary: {{weight: 25%, min_duration: 2h, min_requests: 100}}
exclude_tenants: [bigcorp]
stickiness: tenant
notify: [{{webhook: \"https://hooks.example.com/serin\"}}]
{extra}"
    )
}

fn plan(extra: &str) -> Plan {
    Plan::parse_and_validate(&plan_yaml(extra)).unwrap()
}

fn release_with(plan: Plan) -> Release {
    Release::new(
        "r-7",
        "support",
        "prod",
        bundle_ref("support", 5),
        bundle_ref("support", 4),
        plan,
        T0 - MIN,
        "alex",
    )
}

fn apply(r: &Release, e: &Event, at: i64) -> (Release, Vec<Effect>) {
    r.apply(e, at)
        .unwrap_or_else(|refusal| panic!("{e:?} in {}: {refusal:?}", r.phase))
}

fn start() -> Event {
    Event::Start {
        actor: "alex".into(),
    }
}

/// A verdict of `guardrail` with `status`, the canary at 5.1% of 1200 against 0.9% of
/// 98,000 (the values matter only where a test reads them).
fn verdict(guardrail: &str, status: VerdictStatus) -> Verdict {
    Verdict {
        guardrail: guardrail.into(),
        status,
        canary: MetricValue {
            value: 0.051,
            n: 1200,
        },
        control: MetricValue {
            value: 0.009,
            n: 98_000,
        },
        threshold: "<= 2%".into(),
        statistic: 812.0,
        statistic_threshold: 600.0,
        needs_more_requests: None,
        explanation: "canary error rate 5.1% is above 2%".into(),
        latched_at_ms: (status == VerdictStatus::Fail).then_some(T0 - 1),
        shadow: false,
        pass_statistic: None,
        pass_threshold: None,
        passed_at_ms: None,
    }
}

fn shadow(mut v: Verdict) -> Verdict {
    v.shadow = true;
    v
}

/// One bound shown harmless, one still undecided: enough for a `no_fail` step only.
fn pass_verdicts() -> Vec<Verdict> {
    vec![
        verdict("error_rate.max", VerdictStatus::Pass),
        pending("latency_p95_ms.max_increase", Some(760)),
    ]
}

/// Every bound shown harmless: enough for a `pass` step.
fn all_pass() -> Vec<Verdict> {
    vec![
        verdict("error_rate.max", VerdictStatus::Pass),
        verdict("latency_p95_ms.max_increase", VerdictStatus::Pass),
    ]
}

fn pending(guardrail: &str, needs: Option<u64>) -> Verdict {
    Verdict {
        needs_more_requests: needs,
        ..verdict(guardrail, VerdictStatus::Pending)
    }
}

fn fail_verdicts() -> Vec<Verdict> {
    vec![
        verdict("error_rate.max", VerdictStatus::Fail),
        verdict("latency_p95_ms.max_increase", VerdictStatus::Pass),
    ]
}

fn tick(requests: u64) -> Event {
    Event::tick(requests, pass_verdicts())
}

fn tick_with(requests: u64, verdicts: Vec<Verdict>) -> Event {
    Event::tick(requests, verdicts)
}

fn tick_fail(requests: u64) -> Event {
    Event::tick(requests, fail_verdicts())
}

fn promote(requests: u64) -> Event {
    promote_with(requests, pass_verdicts())
}

fn promote_with(requests: u64, verdicts: Vec<Verdict>) -> Event {
    Event::Promote {
        actor: "jordan".into(),
        force: false,
        reason: None,
        canary_requests: requests,
        verdicts,
        waves: Vec::new(),
    }
}

fn force(reason: Option<&str>) -> Event {
    Event::Promote {
        actor: "jordan".into(),
        force: true,
        reason: reason.map(Into::into),
        canary_requests: 3,
        verdicts: fail_verdicts(),
        waves: Vec::new(),
    }
}

fn pause() -> Event {
    Event::Pause {
        actor: "jordan".into(),
        reason: Some("lunch".into()),
    }
}

fn resume() -> Event {
    Event::Resume {
        actor: "jordan".into(),
    }
}

fn abort(reason: &str) -> Event {
    Event::Abort {
        actor: "jordan".into(),
        reason: reason.into(),
    }
}

fn rollback(reason: &str) -> Event {
    Event::Rollback {
        actor: "jordan".into(),
        reason: reason.into(),
    }
}

/// `publish:5%[bigcorp]`, `publish:none`, `stable:support@5`, `audit:release.start`,
/// `notify:release.halt`.
fn render_effects(effects: &[Effect]) -> String {
    effects
        .iter()
        .map(|e| match e {
            Effect::PublishRouting { routing: Some(r) } => format!(
                "publish:{}[{}]",
                r.weight,
                r.exclude_tenants
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Effect::PublishRouting { routing: None } => "publish:none".into(),
            Effect::PromoteToStable { candidate } => format!("stable:{}", candidate.id),
            Effect::Audit { action, .. } => format!("audit:{action}"),
            Effect::Notify(n) => format!("notify:{}", n.action),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A release of the halt plan brought to `phase` by real events at T0.
fn in_phase(phase: Phase) -> Release {
    let pending = release_with(plan("on_failure: halt\n"));
    if phase == Phase::Pending {
        return pending;
    }
    let (canary, _) = apply(&pending, &start(), T0);
    let (r, _) = match phase {
        Phase::Pending => (pending.clone(), vec![]),
        Phase::Canary => return canary,
        Phase::Paused => apply(&canary, &pause(), T0),
        Phase::Halted => apply(&canary, &tick_fail(10), T0),
        Phase::RolledBack => apply(&canary, &rollback("bad"), T0),
        Phase::Aborted => apply(&canary, &abort("stop"), T0),
        Phase::Completed => {
            let mut r = canary;
            while r.phase == Phase::Canary {
                r = apply(&r, &force(Some("ship it")), T0).0;
            }
            (r, vec![])
        }
        Phase::Promoting => {
            // Never produced by the machine; a persisted release could still carry it.
            let mut r = canary;
            r.phase = Phase::Promoting;
            (r, vec![])
        }
    };
    assert_eq!(r.phase, phase);
    r
}

#[test]
fn every_phase_and_event() {
    // Events applied 10 minutes after the release entered its phase at T0: step 0's five
    // minutes have passed; 1000 canary requests meet its 500.
    let at = T0 + 10 * MIN;
    let events: Vec<(&str, Event)> = vec![
        ("start", start()),
        ("tick", tick(10)),
        ("tick_fail", tick_fail(10)),
        ("promote", promote(1000)),
        ("promote_unmet", promote(10)),
        ("force_no_reason", force(None)),
        ("force_blank_reason", force(Some("  "))),
        ("force", force(Some("hotfix verified by hand"))),
        ("pause", pause()),
        ("resume", resume()),
        ("abort", abort("not needed")),
        ("abort_no_reason", abort(" ")),
        ("rollback", rollback("looks wrong")),
        ("rollback_no_reason", rollback("")),
    ];
    // (phase, event) -> `phase@step effects` or `refused:code`.
    let expected: &[(Phase, &[(&str, &str)])] = &[
        (
            Phase::Pending,
            &[
                ("start", "canary@0 publish:1%[bigcorp] audit:release.start"),
                ("tick", "pending@0"),
                ("tick_fail", "pending@0"),
                ("promote", "refused:not_running"),
                ("promote_unmet", "refused:not_running"),
                ("force_no_reason", "refused:not_running"),
                ("force_blank_reason", "refused:not_running"),
                ("force", "refused:not_running"),
                ("pause", "refused:not_running"),
                ("resume", "refused:not_paused"),
                (
                    "abort",
                    "aborted@0 audit:release.abort notify:release.abort",
                ),
                ("abort_no_reason", "refused:reason_required"),
                (
                    "rollback",
                    "rolled_back@0 audit:release.rollback notify:release.rollback",
                ),
                ("rollback_no_reason", "refused:reason_required"),
            ],
        ),
        (
            Phase::Canary,
            &[
                ("start", "refused:already_started"),
                ("tick", "canary@0"),
                (
                    "tick_fail",
                    "halted@0 audit:release.halt notify:release.halt",
                ),
                (
                    "promote",
                    "canary@1 publish:5%[bigcorp] audit:release.promote",
                ),
                ("promote_unmet", "refused:gate_not_met"),
                ("force_no_reason", "refused:reason_required"),
                ("force_blank_reason", "refused:reason_required"),
                (
                    "force",
                    "canary@1 publish:5%[bigcorp] audit:release.promote",
                ),
                ("pause", "paused@0 audit:release.pause"),
                ("resume", "refused:not_paused"),
                (
                    "abort",
                    "aborted@0 publish:none audit:release.abort notify:release.abort",
                ),
                ("abort_no_reason", "refused:reason_required"),
                (
                    "rollback",
                    "rolled_back@0 publish:none audit:release.rollback notify:release.rollback",
                ),
                ("rollback_no_reason", "refused:reason_required"),
            ],
        ),
        (
            Phase::Paused,
            &[
                ("start", "refused:already_started"),
                ("tick", "paused@0"),
                ("tick_fail", "paused@0"),
                ("promote", "refused:not_running"),
                ("promote_unmet", "refused:not_running"),
                ("force_no_reason", "refused:not_running"),
                ("force_blank_reason", "refused:not_running"),
                ("force", "refused:not_running"),
                ("pause", "refused:not_running"),
                ("resume", "canary@0 audit:release.resume"),
                (
                    "abort",
                    "aborted@0 publish:none audit:release.abort notify:release.abort",
                ),
                ("abort_no_reason", "refused:reason_required"),
                (
                    "rollback",
                    "rolled_back@0 publish:none audit:release.rollback notify:release.rollback",
                ),
                ("rollback_no_reason", "refused:reason_required"),
            ],
        ),
        (
            Phase::Halted,
            &[
                ("start", "refused:already_started"),
                ("tick", "halted@0"),
                ("tick_fail", "halted@0"),
                ("promote", "refused:not_running"),
                ("promote_unmet", "refused:not_running"),
                ("force_no_reason", "refused:not_running"),
                ("force_blank_reason", "refused:not_running"),
                ("force", "refused:not_running"),
                ("pause", "refused:not_running"),
                ("resume", "canary@0 audit:release.resume"),
                (
                    "abort",
                    "aborted@0 publish:none audit:release.abort notify:release.abort",
                ),
                ("abort_no_reason", "refused:reason_required"),
                (
                    "rollback",
                    "rolled_back@0 publish:none audit:release.rollback notify:release.rollback",
                ),
                ("rollback_no_reason", "refused:reason_required"),
            ],
        ),
        (
            Phase::Promoting,
            &[
                ("start", "refused:already_started"),
                ("tick", "promoting@0"),
                ("tick_fail", "promoting@0"),
                ("promote", "refused:not_running"),
                ("promote_unmet", "refused:not_running"),
                ("force_no_reason", "refused:not_running"),
                ("force_blank_reason", "refused:not_running"),
                ("force", "refused:not_running"),
                ("pause", "refused:not_running"),
                ("resume", "refused:not_paused"),
                (
                    "abort",
                    "aborted@0 publish:none audit:release.abort notify:release.abort",
                ),
                ("abort_no_reason", "refused:reason_required"),
                (
                    "rollback",
                    "rolled_back@0 publish:none audit:release.rollback notify:release.rollback",
                ),
                ("rollback_no_reason", "refused:reason_required"),
            ],
        ),
    ];
    let terminal = [Phase::Completed, Phase::RolledBack, Phase::Aborted];

    let mut failures = Vec::new();
    let mut check = |phase: Phase, name: &str, want: String| {
        let r = in_phase(phase);
        let (_, event) = events.iter().find(|(n, _)| *n == name).unwrap();
        let got = match r.apply(event, at) {
            Err(refusal) => {
                assert!(!refusal.message.is_empty());
                format!("refused:{}", refusal.code)
            }
            Ok((next, effects)) => {
                // Applied events append one transition; no-op ticks append none.
                if effects.is_empty() && matches!(event, Event::Tick { .. }) {
                    assert_eq!(next, r, "{phase} {name}: a no-op tick changed the release");
                } else {
                    assert_eq!(next.history.len(), r.history.len() + 1, "{phase} {name}");
                    let t = next.history.last().unwrap();
                    assert_eq!(
                        (t.from, t.to, t.step, t.at_ms),
                        (phase, next.phase, next.step, at)
                    );
                    assert_eq!(t.event, event.name());
                }
                // The routing effect always matches the release's own view.
                for e in &effects {
                    if let Effect::PublishRouting { routing } = e {
                        assert_eq!(*routing, next.routing(), "{phase} {name}");
                    }
                }
                let effects = render_effects(&effects);
                format!("{}@{} {effects}", next.phase, next.step)
                    .trim_end()
                    .to_owned()
            }
        };
        if got != want {
            failures.push(format!("{phase} + {name}: want {want}, got {got}"));
        }
    };
    for (phase, rows) in expected {
        assert_eq!(rows.len(), events.len(), "{phase}: one row per event");
        for (name, want) in rows.iter() {
            check(*phase, name, (*want).to_owned());
        }
    }
    for phase in terminal {
        assert!(phase.is_terminal() && !phase.is_active());
        for (name, event) in &events {
            let want = match event {
                Event::Tick { .. } => format!("{phase}@{}", in_phase(phase).step),
                _ => "refused:release_finished".to_owned(),
            };
            check(phase, name, want);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for phase in [
        Phase::Pending,
        Phase::Canary,
        Phase::Paused,
        Phase::Halted,
        Phase::Promoting,
    ] {
        assert!(phase.is_active() && !phase.is_terminal(), "{phase}");
    }
}

/// One gate evaluation: evidence in, verdict out.
struct GateCase {
    elapsed_ms: i64,
    requests: u64,
    verdicts: Vec<Verdict>,
    /// (holds, duration_ok, requests_ok, no_fail)
    want: (bool, bool, bool, bool),
    missing: &'static [&'static str],
}

#[test]
fn gate_needs_time_and_requests_and_no_failure() {
    let (r, _) = apply(&release_with(plan("")), &start(), T0);
    let case = |elapsed_ms, requests, verdicts, want, missing| GateCase {
        elapsed_ms,
        requests,
        verdicts,
        want,
        missing,
    };
    let cases = vec![
        case(
            0,
            0,
            vec![],
            (false, false, false, true),
            &["needs 5m more", "needs 500 more canary requests"][..],
        ),
        case(
            100_000,
            160,
            pass_verdicts(),
            (false, false, false, true),
            &["needs 3m 20s more", "needs 340 more canary requests"],
        ),
        case(
            5 * MIN,
            160,
            vec![],
            (false, true, false, true),
            &["needs 340 more canary requests"],
        ),
        case(
            100_000,
            500,
            vec![],
            (false, false, true, true),
            &["needs 3m 20s more"],
        ),
        case(5 * MIN, 500, pass_verdicts(), (true, true, true, true), &[]),
        case(
            90 * MIN,
            9_000,
            fail_verdicts(),
            (false, true, true, false),
            &["guardrail error_rate.max is failing"],
        ),
        // A clock that went backwards counts as no time at all.
        case(
            -MIN,
            500,
            vec![],
            (false, false, true, true),
            &["needs 5m more"],
        ),
    ];
    for c in cases {
        let g: GateStatus = r.gate(T0 + c.elapsed_ms, c.requests, &c.verdicts);
        let label = format!("{}ms {} requests", c.elapsed_ms, c.requests);
        assert_eq!(
            (g.holds, g.duration_ok, g.requests_ok, g.no_fail),
            c.want,
            "{label}"
        );
        assert_eq!(g.missing, c.missing, "{label}");
        assert_eq!(g.needed_ms, 300_000);
        assert_eq!(g.needed_requests, 500);
        assert_eq!(g.requests, c.requests);
        assert_eq!(g.no_fail, g.failing.is_empty());
    }
}

#[test]
fn gate_with_duration_only_or_requests_only() {
    let duration_only =
        Plan::parse_and_validate("steps:\n  - canary: {weight: 10%, min_duration: 1h}\n").unwrap();
    let (r, _) = apply(&release_with(duration_only), &start(), T0);
    assert!(!r.gate(T0 + 59 * MIN, 1_000_000, &all_pass()).holds);
    assert!(r.gate(T0 + 60 * MIN, 0, &all_pass()).holds);
    assert!(!r.gate(T0 + 60 * MIN, 0, &fail_verdicts()).holds);

    let requests_only =
        Plan::parse_and_validate("steps:\n  - canary: {weight: 10%, min_requests: 50}\n").unwrap();
    let (r, _) = apply(&release_with(requests_only), &start(), T0);
    assert!(r.gate(T0, 50, &all_pass()).holds);
    let g = r.gate(T0 + 1000 * MIN, 49, &all_pass());
    assert!(!g.holds);
    assert_eq!(g.missing, vec!["needs 1 more canary requests"]);
}

#[test]
fn requests_count_from_the_start_of_the_step() {
    let (r, _) = apply(&release_with(plan("")), &start(), T0);
    let (r, _) = apply(&r, &promote(1_000), T0 + 6 * MIN);
    assert_eq!(
        (r.step, r.step_started_ms, r.step_requests_at_start),
        (1, T0 + 6 * MIN, 1_000)
    );
    // Step 1 needs 5000 of its own: 5999 in total is one short.
    let g = r.gate(T0 + 60 * MIN, 5_999, &[]);
    assert_eq!(g.requests, 4_999);
    assert_eq!(g.missing, vec!["needs 1 more canary requests"]);
    // Its 30 minutes count from the promotion.
    let g = r.gate(T0 + 30 * MIN, 6_000, &[]);
    assert_eq!(g.missing, vec!["needs 6m more"]);
}

#[test]
fn manual_promotion_is_refused_with_what_is_missing_then_accepted() {
    let (r, _) = apply(&release_with(plan("")), &start(), T0);
    let refusal = r.apply(&promote(120), T0 + 2 * MIN).unwrap_err();
    assert_eq!(refusal.code, "gate_not_met");
    assert_eq!(
        refusal.missing,
        vec!["needs 3m more", "needs 380 more canary requests"]
    );
    assert!(
        refusal.message.contains("step 1 (1%)"),
        "{}",
        refusal.message
    );
    // A failing guardrail blocks too, whatever time and traffic say.
    let blocked = Event::Promote {
        actor: "jordan".into(),
        force: false,
        reason: None,
        canary_requests: 10_000,
        verdicts: fail_verdicts(),
        waves: Vec::new(),
    };
    let refusal = r.apply(&blocked, T0 + 60 * MIN).unwrap_err();
    assert_eq!(refusal.missing, vec!["guardrail error_rate.max is failing"]);
    // Manual promotion never happens on a tick, however long the gate has held.
    let (same, effects) = apply(&r, &tick(1_000_000), T0 + 1000 * MIN);
    assert_eq!((same.step, effects.len()), (0, 0));

    let (next, effects) = apply(&r, &promote(500), T0 + 5 * MIN);
    assert_eq!(next.step, 1);
    assert_eq!(next.weight(), Percent::parse("5%").unwrap());
    assert_eq!(
        render_effects(&effects),
        "publish:5%[bigcorp] audit:release.promote"
    );
    assert_eq!(next.history.last().unwrap().actor, "jordan");
}

#[test]
fn force_needs_a_reason_and_the_audit_says_it_was_forced() {
    let (r, _) = apply(&release_with(plan("")), &start(), T0);
    assert_eq!(
        r.apply(&force(None), T0).unwrap_err().code,
        "reason_required"
    );
    let (next, effects) = apply(&r, &force(Some("hotfix verified by hand")), T0);
    assert_eq!(next.step, 1);
    let Some(Effect::Audit {
        action,
        actor,
        reason,
    }) = effects.get(1)
    else {
        panic!("{effects:?}");
    };
    assert_eq!(
        (action.as_str(), actor.as_str()),
        ("release.promote", "jordan")
    );
    let reason = reason.as_deref().unwrap();
    assert!(reason.starts_with("forced past unmet gate ("), "{reason}");
    assert!(
        reason.contains("guardrail error_rate.max is failing"),
        "{reason}"
    );
    assert!(reason.ends_with(": hotfix verified by hand"), "{reason}");
    assert_eq!(next.history.last().unwrap().reason.as_deref(), Some(reason));
}

#[test]
fn promoting_the_last_step_completes_and_makes_the_candidate_stable() {
    let (mut r, _) = apply(&release_with(plan("")), &start(), T0);
    let mut at = T0;
    let mut requests = 0;
    for _ in 0..2 {
        at += 3 * 60 * MIN;
        requests += 10_000;
        r = apply(&r, &promote(requests), at).0;
    }
    assert_eq!((r.phase, r.step), (Phase::Canary, 2));
    at += 3 * 60 * MIN;
    let (done, effects) = apply(&r, &promote_with(requests + 100, all_pass()), at);
    assert_eq!(done.phase, Phase::Completed);
    assert_eq!(
        render_effects(&effects),
        "publish:none stable:support@5 audit:release.complete notify:release.complete"
    );
    assert_eq!(done.weight(), Percent::FULL);
    assert_eq!(done.routing(), None);
    let Some(Effect::Notify(n)) = effects.last() else {
        panic!("{effects:?}")
    };
    assert_eq!(
        (n.initiator.as_str(), n.phase, n.step),
        ("jordan", Phase::Completed, 2)
    );
    assert_eq!(n.weight, Percent::parse("25%").unwrap());
    assert_eq!(
        (n.candidate.as_str(), n.baseline.as_str()),
        ("support@5", "support@4")
    );
    assert_eq!(done.history.len(), 4);
    assert!(done.apply(&promote(1), at).is_err());
}

#[test]
fn excluded_tenants_stay_on_stable_until_the_final_step() {
    let r = release_with(plan(""));
    assert_eq!(r.routing(), None, "pending routes nothing");
    let (mut r, _) = apply(&r, &start(), T0);
    let mut seen = Vec::new();
    for i in 0..3 {
        let routing = r.routing().unwrap();
        assert_eq!(routing.id, "r-7");
        assert_eq!(routing.candidate.id, "support@5");
        assert_eq!(routing.stickiness, serin_core::decision::Stickiness::Tenant);
        seen.push(format!(
            "{}:{}",
            routing.weight,
            routing
                .exclude_tenants
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        ));
        if i < 2 {
            r = apply(&r, &force(Some("test")), T0).0;
        }
    }
    assert_eq!(seen, vec!["1%:bigcorp", "5%:bigcorp", "25%:"]);
}

#[test]
fn auto_promotion_needs_requests_never_time_alone() {
    let (r, _) = apply(&release_with(plan("promotion: auto\n")), &start(), T0);
    // A hundred days later with too few canary requests: nothing moves.
    let (same, effects) = apply(&r, &tick(499), T0 + 100 * 24 * 60 * MIN);
    assert!(effects.is_empty());
    assert_eq!(same, r);
    // Enough requests but not enough time: nothing either.
    let (same, effects) = apply(&r, &tick(10_000), T0 + 4 * MIN);
    assert!(effects.is_empty() && same.step == 0);
    // Both: the tick promotes, as the system.
    let (next, effects) = apply(&r, &tick(500), T0 + 5 * MIN);
    assert_eq!(next.step, 1);
    assert_eq!(
        render_effects(&effects),
        "publish:5%[bigcorp] audit:release.promote"
    );
    let t = next.history.last().unwrap();
    assert_eq!((t.event.as_str(), t.actor.as_str()), ("tick", SYSTEM_ACTOR));
    // Paused: the gate holds, yet nothing moves until resumed.
    let (paused, _) = apply(&next, &pause(), T0 + 6 * MIN);
    let (still, effects) = apply(&paused, &tick(1_000_000), T0 + 1000 * MIN);
    assert!(effects.is_empty() && still == paused);
    // Pausing does not stop the clock: resumed, the time spent paused counts.
    let (resumed, _) = apply(&paused, &resume(), T0 + 40 * MIN);
    assert!(resumed.gate(T0 + 40 * MIN, 5_500, &[]).holds);
    // Through the last step to completion on ticks alone.
    let (r2, _) = apply(&resumed, &tick(5_500), T0 + 40 * MIN);
    assert_eq!(r2.step, 2);
    let (done, effects) = apply(
        &r2,
        &tick_with(5_600, all_pass()),
        T0 + 40 * MIN + 2 * 60 * MIN,
    );
    assert_eq!(done.phase, Phase::Completed);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::PromoteToStable { .. }))
    );
}

#[test]
fn auto_promotion_never_passes_a_failing_guardrail() {
    let (r, _) = apply(
        &release_with(plan("promotion: auto\non_failure: halt\n")),
        &start(),
        T0,
    );
    let (next, effects) = apply(&r, &tick_fail(1_000_000), T0 + 1000 * MIN);
    assert_eq!((next.phase, next.step), (Phase::Halted, 0));
    assert_eq!(
        render_effects(&effects),
        "audit:release.halt notify:release.halt"
    );
}

#[test]
fn on_failure_rollback_drains_and_halt_freezes() {
    let verdict = verdict("error_rate.max", VerdictStatus::Fail);
    let pass = Verdict {
        guardrail: "cost_per_request.max_ratio".into(),
        status: VerdictStatus::Pass,
        ..verdict.clone()
    };
    let event = Event::tick(1_200, vec![pass, verdict]);

    // rollback (the default)
    let (r, _) = apply(&release_with(plan("")), &start(), T0);
    let (rolled, effects) = apply(&r, &event, T0 + MIN);
    assert_eq!(rolled.phase, Phase::RolledBack);
    assert_eq!(
        render_effects(&effects),
        "publish:none audit:release.rollback notify:release.rollback"
    );
    assert_eq!(rolled.routing(), None);
    assert_eq!(rolled.weight(), Percent::ZERO);
    let Some(Effect::Notify(n)) = effects.last() else {
        panic!("{effects:?}")
    };
    assert_eq!(n.initiator, SYSTEM_ACTOR);
    let f = n.failure.as_ref().unwrap();
    assert_eq!(f.guardrail, "error_rate.max");
    assert_eq!((f.canary_value, f.canary_n), (0.051, 1200));
    assert_eq!((f.control_value, f.control_n), (0.009, 98_000));
    assert_eq!(f.threshold, "<= 2%");
    assert_eq!(
        (n.release.as_str(), n.agent.as_str(), n.env.as_str()),
        ("r-7", "support", "prod")
    );
    assert_eq!((n.step, n.weight), (0, Percent::parse("1%").unwrap()));
    let Some(Effect::Audit { actor, reason, .. }) = effects.get(1) else {
        panic!("{effects:?}")
    };
    assert_eq!(actor, SYSTEM_ACTOR);
    assert!(
        reason
            .as_deref()
            .unwrap()
            .contains("canary 0.051 (n=1200) vs control 0.009 (n=98000)")
    );
    assert_eq!(rolled.failure.as_ref(), Some(f));

    // halt
    let (r, _) = apply(&release_with(plan("on_failure: halt\n")), &start(), T0);
    let (r, _) = apply(&r, &force(Some("on")), T0);
    let (halted, effects) = apply(&r, &event, T0 + MIN);
    assert_eq!(halted.phase, Phase::Halted);
    assert_eq!(
        render_effects(&effects),
        "audit:release.halt notify:release.halt"
    );
    // Weight frozen: the routing is what it was.
    assert_eq!(halted.routing(), r.routing());
    assert_eq!(halted.weight(), Percent::parse("5%").unwrap());
    assert_eq!(halted.failure.as_ref().unwrap().control_value, 0.009);
    // Resume clears the failure; a still-failing guardrail halts again at the next tick.
    let (resumed, _) = apply(&halted, &resume(), T0 + 2 * MIN);
    assert_eq!(
        (resumed.phase, resumed.failure.as_ref()),
        (Phase::Canary, None)
    );
    let (again, _) = apply(&resumed, &event, T0 + 3 * MIN);
    assert_eq!(again.phase, Phase::Halted);
    // A person's rollback names them as the initiator.
    let (rolled, effects) = apply(&again, &rollback("confirmed regression"), T0 + 4 * MIN);
    assert_eq!(rolled.phase, Phase::RolledBack);
    let Some(Effect::Notify(n)) = effects.last() else {
        panic!("{effects:?}")
    };
    assert_eq!(n.initiator, "jordan");
    assert_eq!(n.reason.as_deref(), Some("confirmed regression"));
    assert_eq!(n.failure.as_ref().unwrap().guardrail, "error_rate.max");
}

#[test]
fn start_refuses_an_invalid_plan() {
    let mut p = plan("");
    p.steps.clear();
    let refusal = release_with(p).apply(&start(), T0).unwrap_err();
    assert_eq!(refusal.code, "invalid_plan");
    assert!(refusal.message.contains("/steps"), "{}", refusal.message);
}

#[test]
fn a_persisted_release_resumes_identically() {
    let (r, _) = apply(
        &release_with(plan("promotion: auto\non_failure: halt\n")),
        &start(),
        T0,
    );
    let (r, _) = apply(&r, &tick(600), T0 + 6 * MIN);
    let (r, _) = apply(&r, &pause(), T0 + 7 * MIN);
    let (r, _) = apply(&r, &resume(), T0 + 8 * MIN);
    assert_eq!((r.phase, r.step, r.history.len()), (Phase::Canary, 1, 4));

    let json = serde_json::to_string(&r).unwrap();
    let back: Release = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["phase"], "canary");
    assert_eq!(value["history"][0]["to"], "canary");

    let script = [
        (tick(3_000), T0 + 20 * MIN),
        (promote(3_000), T0 + 21 * MIN),
        (tick(5_600), T0 + 37 * MIN),
        (tick_fail(5_700), T0 + 38 * MIN),
        (resume(), T0 + 39 * MIN),
        (force(Some("accepted risk")), T0 + 40 * MIN),
        (tick(6_000), T0 + 41 * MIN),
    ];
    let (mut a, mut b) = (r, back);
    for (event, at) in &script {
        let ra = a.apply(event, *at);
        let rb = b.apply(event, *at);
        assert_eq!(ra, rb, "{event:?}");
        if let (Ok((na, _)), Ok((nb, _))) = (ra, rb) {
            a = na;
            b = nb;
        }
        // And through JSON again at every step.
        b = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
    }
    assert_eq!(a, b);
    assert_eq!(a.phase, Phase::Completed);
}

#[test]
fn events_round_trip_as_json() {
    for e in [
        start(),
        tick_fail(3),
        force(Some("x")),
        pause(),
        resume(),
        abort("a"),
        rollback("b"),
    ] {
        let json = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e, "{json}");
    }
    let json = serde_json::to_value(start()).unwrap();
    assert_eq!(json["type"], "start");
}

#[test]
fn steps_require_pass_at_the_end_and_from_half_the_traffic_unless_they_say_otherwise() {
    let p = Plan::parse_and_validate(
        "steps:
  - canary: {weight: 1%, min_requests: 10}
  - canary: {weight: 20%, min_requests: 10, require: pass}
  - canary: {weight: 50%, min_requests: 10}
  - canary: {weight: 60%, min_requests: 10, require: no_fail}
  - canary: {weight: 80%, min_requests: 10}
",
    )
    .unwrap();
    let got: Vec<Requirement> = (0..5).map(|i| p.requirement(i)).collect();
    use Requirement::{NoFail, Pass};
    assert_eq!(got, vec![NoFail, Pass, Pass, NoFail, Pass]);
    // A one-step plan's only step is its final one.
    let one =
        Plan::parse_and_validate("steps:\n  - canary: {weight: 5%, min_requests: 1}\n").unwrap();
    assert_eq!(one.requirement(0), Pass);
    // Only the two words are accepted, and they survive the JSON form.
    let err =
        Plan::parse_yaml("steps:\n  - canary: {weight: 5%, min_requests: 1, require: maybe}\n")
            .unwrap_err();
    assert_eq!(err.pointer, "/steps/0/canary/require", "{err:?}");
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["steps"][1]["canary"]["require"], "pass");
    assert!(
        json["steps"][0]["canary"].get("require").is_none(),
        "{json}"
    );
    assert_eq!(Plan::from_value(json).unwrap(), p);
}

/// A one-step plan (so its step requires `pass`) started at T0.
fn pass_step_release(extra: &str) -> Release {
    let p = Plan::parse_and_validate(&format!(
        "steps:\n  - canary: {{weight: 10%, min_duration: 1m, min_requests: 100}}\n{extra}"
    ))
    .unwrap();
    apply(&release_with(p), &start(), T0).0
}

#[test]
fn a_pass_gate_waits_naming_each_inconclusive_guardrail_with_its_requests_and_eta() {
    let r = pass_step_release("");
    assert_eq!(r.requirement(), Requirement::Pass);
    // 140 canary requests in 2 minutes; the latency bound needs about 760 more: at 70 a
    // minute that is about 11 minutes. The error bound is shown harmless.
    let verdicts = vec![
        verdict("error_rate.max", VerdictStatus::Pass),
        pending("latency_p95_ms.max_increase", Some(760)),
    ];
    let g = r.gate(T0 + 2 * MIN, 140, &verdicts);
    assert_eq!(
        (
            g.holds,
            g.duration_ok,
            g.requests_ok,
            g.no_fail,
            g.verdicts_ok
        ),
        (false, true, true, true, false)
    );
    assert_eq!(g.requirement, Requirement::Pass);
    assert_eq!(g.inconclusive.len(), 1);
    let i = &g.inconclusive[0];
    assert_eq!(
        (
            i.guardrail.as_str(),
            i.canary_requests,
            i.needs_more_requests
        ),
        ("latency_p95_ms.max_increase", 140, Some(760))
    );
    assert_eq!(i.eta_ms, Some(760 * 2 * MIN as u64 / 140));
    assert_eq!(
        g.missing,
        vec![
            "guardrail latency_p95_ms.max_increase inconclusive: 140 of ~900 canary requests, about 11 min"
        ]
    );
    // The same evidence is enough for a no_fail step: inconclusive does not block there.
    let lenient = Plan::parse_and_validate(
        "steps:\n  - canary: {weight: 10%, min_duration: 1m, min_requests: 100, require: no_fail}\n",
    )
    .unwrap();
    let r2 = apply(&release_with(lenient), &start(), T0).0;
    let g2 = r2.gate(T0 + 2 * MIN, 140, &verdicts);
    assert!(g2.holds && g2.inconclusive.is_empty(), "{g2:?}");

    // Without an estimate, and without traffic at this step to time one.
    let g = r.gate(
        T0 + 2 * MIN,
        140,
        &[pending("refusal_rate.max_ratio", None)],
    );
    assert_eq!(
        g.missing,
        vec![
            "guardrail refusal_rate.max_ratio inconclusive: 140 canary requests so far; canary looks worse but the evidence is not growing, so no estimate"
        ]
    );
    let g = r.gate(T0 + 2 * MIN, 0, &[pending("error_rate.max", Some(500))]);
    assert_eq!(g.inconclusive[0].eta_ms, None);
    assert!(
        g.missing.iter().any(|m| m
            .ends_with("0 of ~500 canary requests, no canary traffic at this step yet to time it")),
        "{:?}",
        g.missing
    );
    // No verdicts at all is not a pass.
    let g = r.gate(T0 + 2 * MIN, 140, &[]);
    assert!(!g.holds && !g.verdicts_ok);
    assert_eq!(
        g.missing,
        vec!["no guardrail verdicts yet (this step requires every guardrail to pass)"]
    );
    // Every bound shown harmless: it holds.
    let g = r.gate(T0 + 2 * MIN, 140, &all_pass());
    assert!(g.holds, "{g:?}");
    // A manual promotion is refused with the same lines; auto waits on ticks.
    let refusal = r
        .apply(&promote_with(140, verdicts.clone()), T0 + 2 * MIN)
        .unwrap_err();
    assert_eq!(refusal.code, "gate_not_met");
    assert_eq!(refusal.missing.len(), 1);
    let auto = pass_step_release("promotion: auto\n");
    let (same, effects) = apply(&auto, &tick_with(1_000_000, verdicts), T0 + 1000 * MIN);
    assert!(effects.is_empty() && same == auto);
    let (done, _) = apply(&auto, &tick_with(140, all_pass()), T0 + 2 * MIN);
    assert_eq!(done.phase, Phase::Completed);
}

#[test]
fn shadow_verdicts_never_halt_roll_back_or_block_a_gate() {
    let shadow_fail = shadow(verdict("refusal_rate.max_increase", VerdictStatus::Fail));
    let shadow_pending = shadow(pending("cost_per_request.max_ratio", Some(10_000)));
    // Rollback plan: a failing shadow bound is reported, nothing happens.
    let (r, _) = apply(&release_with(plan("")), &start(), T0);
    let mut verdicts = pass_verdicts();
    verdicts.insert(0, shadow_fail.clone());
    let (same, effects) = apply(&r, &tick_with(10, verdicts.clone()), T0 + MIN);
    assert!(effects.is_empty() && same == r, "{effects:?}");
    let g = r.gate(T0 + 10 * MIN, 600, &verdicts);
    assert!(g.holds && g.no_fail && g.failing.is_empty(), "{g:?}");
    // Halt plan, auto: the shadow fail does not halt and the gate promotes past it.
    let (r, _) = apply(
        &release_with(plan("promotion: auto\non_failure: halt\n")),
        &start(),
        T0,
    );
    let (next, _) = apply(&r, &tick_with(600, verdicts.clone()), T0 + 10 * MIN);
    assert_eq!((next.phase, next.step), (Phase::Canary, 1));
    // A pass step is not held by a shadow bound that is pending or failing either.
    let r = pass_step_release("");
    let mut with_shadows = all_pass();
    with_shadows.push(shadow_fail.clone());
    with_shadows.push(shadow_pending);
    assert!(r.gate(T0 + 2 * MIN, 140, &with_shadows).holds);
    // A real fail still acts, named as the failure even when a shadow fail comes first.
    let (r, _) = apply(&release_with(plan("")), &start(), T0);
    let real = vec![
        shadow_fail,
        verdict("error_rate.max_increase", VerdictStatus::Fail),
    ];
    let (rolled, _) = apply(&r, &tick_with(10, real), T0 + MIN);
    assert_eq!(rolled.phase, Phase::RolledBack);
    assert_eq!(rolled.failure.unwrap().guardrail, "error_rate.max_increase");
}

#[test]
fn a_holdback_keeps_a_control_during_the_final_step_then_completes_at_full_weight() {
    let yaml = |steps: &str, holdback: &str| {
        format!("steps:\n{steps}holdback: {holdback}\nexclude_tenants: [bigcorp]\n")
    };
    let steps = "  - canary: {weight: 10%, min_requests: 10}\n  - canary: {weight: 100%, min_duration: 1h, min_requests: 10}\n";
    let p = Plan::parse_and_validate(&yaml(steps, "2%")).unwrap();
    assert_eq!(p.routed_weight(0), Some(Percent::parse("10%").unwrap()));
    assert_eq!(p.routed_weight(1), Some(Percent::parse("98%").unwrap()));
    let (r, _) = apply(&release_with(p), &start(), T0);
    let (last, effects) = apply(&r, &promote(10), T0 + MIN);
    // The final step routes 98%, exclusions dropped; its gate is judged against control.
    assert_eq!(
        render_effects(&effects),
        "publish:98%[] audit:release.promote"
    );
    assert_eq!(last.weight(), Percent::parse("98%").unwrap());
    assert_eq!(last.requirement(), Requirement::Pass);
    // The step's min_duration is the bake time: the gate does not hold before it.
    let refusal = last
        .apply(&promote_with(500, all_pass()), T0 + 30 * MIN)
        .unwrap_err();
    assert_eq!(refusal.missing, vec!["needs 31m more"]);
    let (done, effects) = apply(&last, &promote_with(500, all_pass()), T0 + 62 * MIN);
    assert_eq!(
        render_effects(&effects),
        "publish:none stable:support@5 audit:release.complete notify:release.complete"
    );
    assert_eq!(done.weight(), Percent::FULL);
    let Some(Effect::Notify(n)) = effects.last() else {
        panic!("{effects:?}")
    };
    assert_eq!(n.weight, Percent::parse("98%").unwrap());

    // Refused: too large, zero, without a 100% final step, or an earlier step at or above
    // the final routing (the routed share would shrink).
    let refused = [
        (yaml(steps, "11%"), "/holdback"),
        (yaml(steps, "0%"), "/holdback"),
        (
            yaml(
                "  - canary: {weight: 10%, min_requests: 10}\n  - canary: {weight: 90%, min_requests: 10}\n",
                "2%",
            ),
            "/holdback",
        ),
        (
            yaml(
                "  - canary: {weight: 99%, min_requests: 10}\n  - canary: {weight: 100%, min_requests: 10}\n",
                "2%",
            ),
            "/steps/0/canary/weight",
        ),
    ];
    for (text, pointer) in refused {
        let err = Plan::parse_and_validate(&text).unwrap_err();
        assert_eq!(err.pointer, pointer, "{text}: {err}");
    }
    assert!(Plan::parse_and_validate(&yaml(steps, "10%")).is_ok());
}

#[test]
fn the_recorded_evidence_is_exactly_what_the_gate_decided_on() {
    let (r, _) = apply(&release_with(plan("")), &start(), T0);
    let mut verdicts = fail_verdicts();
    // An e-value that overflowed: JSON cannot carry it, the stored release must read back.
    verdicts[1].statistic = f64::INFINITY;
    verdicts[1].pass_statistic = Some(f64::INFINITY);
    let event = tick_with(1_000, verdicts.clone());
    let (mut rolled, mut effects) = apply(&r, &event, T0 + MIN);
    let (requests, judged) = event.evidence().unwrap();
    assert_eq!((requests, judged), (1_000, &verdicts[..]));
    rolled.attach_evidence(&r, &mut effects, T0 + MIN, requests, judged, &[]);
    let e = rolled.evidence.last().unwrap();
    assert_eq!(
        (e.at_ms, e.step, e.phase, e.canary_requests),
        (T0 + MIN, 0, Phase::RolledBack, 1_000)
    );
    assert_eq!(e.verdicts[0], verdicts[0]);
    assert_eq!(e.verdicts[1].statistic, f64::MAX);
    assert_eq!(e.verdicts[1].pass_statistic, Some(f64::MAX));
    let Some(Effect::Notify(n)) = effects.last() else {
        panic!("{effects:?}")
    };
    assert_eq!((n.canary_requests, &n.verdicts), (1_000, &e.verdicts));
    let back: Release = serde_json::from_str(&serde_json::to_string(&rolled).unwrap()).unwrap();
    assert_eq!(back, rolled);
    // Finished: these verdicts are the release's for good, the fail with its latch.
    let frozen = rolled.final_evidence().unwrap();
    assert_eq!(frozen.verdicts[0].status, VerdictStatus::Fail);
    assert_eq!(frozen.verdicts[0].latched_at_ms, Some(T0 - 1));
    let f = rolled.failure.as_ref().unwrap();
    assert_eq!(
        (f.statistic, f.statistic_threshold, f.latched_at_ms),
        (Some(812.0), Some(600.0), Some(T0 - 1))
    );
    assert_eq!(
        f.summary(),
        "guardrail error_rate.max failed: canary 0.051 (n=1200) vs control 0.009 (n=98000), threshold <= 2%, e-value 812 reached bar 600"
    );
    // A running release has no frozen verdicts; promotions record at the step they left.
    assert!(r.final_evidence().is_none());
    let promote = promote(600);
    let (mut next, mut effects) = apply(&r, &promote, T0 + 10 * MIN);
    let (requests, judged) = promote.evidence().unwrap();
    next.attach_evidence(&r, &mut effects, T0 + 10 * MIN, requests, judged, &[]);
    let e = next.evidence.last().unwrap();
    assert_eq!((e.step, next.step, e.canary_requests), (0, 1, 600));
    assert!(pause().evidence().is_none());
}

#[test]
fn a_failure_stored_before_its_evidence_was_kept_still_reads() {
    let old = serde_json::json!({
        "guardrail": "error_rate.max", "canary_value": 0.05, "canary_n": 1200,
        "control_value": 0.01, "control_n": 9000, "threshold": "<= 2%",
        "explanation": "x",
    });
    let f: serin_core::release::Failure = serde_json::from_value(old).unwrap();
    assert_eq!((f.statistic, f.latched_at_ms), (None, None));
    assert_eq!(
        f.summary(),
        "guardrail error_rate.max failed: canary 0.05 (n=1200) vs control 0.01 (n=9000), threshold <= 2%"
    );
}
