//! Rolling waves: the plan's `waves:` section (parsing, validation, stages), the routing a
//! waved release publishes (decided by the engine), and the machine's scoped failures,
//! skips and completion.

use serin_core::decision::bench_support::bundle_ref;
use serin_core::decision::{
    AgentRouting, Arm, CompiledSnapshot, Context, Percent, Reason, Snapshot, WaveKey,
};
use serin_core::guardrails::{MetricValue, Verdict, VerdictStatus};
use serin_core::release::{
    Effect, Event, Phase, Plan, Release, WaveEvidence, WaveState, split_comparison, wave_comparison,
};

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

fn waved(extra: &str) -> String {
    format!(
        "steps:
  - canary: {{weight: 10%, min_duration: 5m, min_requests: 100}}
  - canary: {{weight: 100%, min_duration: 5m, min_requests: 100}}
promotion: auto
waves:
  by: region
  bake: 30m
  min_outcomes: 400
{extra}  list:
    - {{name: us, members: [us-east, us-west]}}
    - {{name: eu, members: [eu-west]}}
    - {{name: rest, members: ['*'], open: true}}
"
    )
}

fn plan(extra: &str) -> Plan {
    Plan::parse_and_validate(&waved(extra)).unwrap()
}

fn refused(yaml: &str) -> (String, String) {
    let e = Plan::parse_and_validate(yaml).unwrap_err();
    (e.pointer, e.message)
}

fn release(plan: Plan) -> Release {
    Release::new(
        "r-9",
        "support",
        "prod",
        bundle_ref("support", 5),
        bundle_ref("support", 4),
        plan,
        T0 - MIN,
        "alex",
    )
}

fn verdict(status: VerdictStatus) -> Verdict {
    Verdict {
        guardrail: "error_rate.max_increase".into(),
        status,
        canary: MetricValue {
            value: 0.08,
            n: 900,
        },
        control: MetricValue {
            value: 0.01,
            n: 9_000,
        },
        threshold: "<= control + 1pp".into(),
        statistic: 900.0,
        statistic_threshold: 300.0,
        needs_more_requests: None,
        explanation: "canary errors 8% against 1%".into(),
        latched_at_ms: (status == VerdictStatus::Fail).then_some(T0),
        shadow: false,
        pass_statistic: None,
        pass_threshold: None,
        passed_at_ms: None,
    }
}

fn ev(wave: &str, canary: u64, status: VerdictStatus) -> WaveEvidence {
    WaveEvidence {
        wave: wave.into(),
        canary_requests: canary,
        requests: canary * 10,
        verdicts: vec![verdict(status)],
    }
}

fn tick(waves: Vec<WaveEvidence>) -> Event {
    let total = waves.iter().map(|w| w.canary_requests).sum();
    Event::tick_waves(total, Vec::new(), waves)
}

fn apply(r: &Release, e: &Event, at: i64) -> (Release, Vec<Effect>) {
    r.apply(e, at).unwrap()
}

fn states(r: &Release) -> Vec<(&str, WaveState)> {
    r.waves.iter().map(|w| (w.name.as_str(), w.state)).collect()
}

/// The weight each wave's members get, decided by the engine on the routing the release
/// publishes.
fn weights(r: &Release) -> Vec<(String, u32)> {
    r.routing()
        .unwrap()
        .waves
        .iter()
        .map(|w| (w.name.clone(), w.weight.basis_points().into()))
        .collect()
}

#[test]
fn a_waved_plan_runs_as_stages_with_bake_and_outcomes_on_each_wave_last_step() {
    let p = plan("  one_box: {instance: pod-1}\n");
    let stages = p.stages();
    // one box (1) + us (2) + eu (2) + rest (open: 1)
    assert_eq!(stages.len(), 6);
    assert_eq!(p.last_step(), Some(5));
    let waves: Vec<Option<usize>> = stages.iter().map(|s| s.wave).collect();
    assert_eq!(
        waves,
        vec![Some(0), Some(1), Some(1), Some(2), Some(2), Some(3)]
    );
    // The wave's last step carries the bake and minimum outcomes; the first does not.
    assert_eq!(stages[1].step.min_duration.as_ms(), 5 * 60_000);
    assert_eq!(stages[2].step.min_duration.as_ms(), 30 * 60_000);
    assert_eq!(stages[2].step.min_requests, 400);
    assert!(stages[2].last_of_wave && !stages[1].last_of_wave);
    // The one box and an open wave: 100% at once, gated by the bake and outcomes.
    assert_eq!(stages[0].step.weight, Percent::FULL);
    assert_eq!(stages[5].step.weight, Percent::FULL);
    assert_eq!(stages[5].step.min_requests, 400);
    let defs = p.wave_defs();
    assert_eq!(defs[0].by, WaveKey::Instance);
    assert_eq!(defs[1].by, WaveKey::Region);
}

#[test]
fn bad_waves_are_refused_with_the_field_and_the_reason() {
    let base = waved("");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            base.replace("[eu-west]", "[eu-west, us-east]"),
            "/waves/list/1/members",
            "us-east is in two waves",
        ),
        (
            base.replace("bake: 30m", "bake: 30m\n  max_step: 0%"),
            "/waves/max_step",
            "above 0%",
        ),
        (
            base.replace("bake: 30m", "bake: 30m\n  max_step: 50%")
                .replace(", open: true", ""),
            "/steps/1",
            "more than max_step 50%",
        ),
        (
            base.replace("bake: 30m", "bake: 30m\n  max_step: 50%"),
            "/waves/list/2/open",
            "more than max_step 50%",
        ),
        (
            base.replace("{name: eu, members: [eu-west]}", "{name: eu, members: []}"),
            "/waves/list/1/members",
            "has no members",
        ),
        (
            base.replace("name: eu,", "name: us,"),
            "/waves/list/1/name",
            "two waves are named us",
        ),
        (
            base.replace("members: [eu-west]", "members: ['*']"),
            "/waves/list/2/members",
            "one wave only",
        ),
        (
            base.replace("weight: 100%, min_duration: 5m", "weight: 50%, min_duration: 5m"),
            "/steps",
            "must be 100%",
        ),
        (
            base.replace("by: region", "by: instance"),
            "/waves/by",
            "one_box",
        ),
        (
            base.replace("min_outcomes: 400", "min_outcomes: 0")
                .replace("min_requests: 100}}\npromotion", "min_requests: 0}}\npromotion"),
            "/waves",
            "min_requests of at least 1",
        ),
        (
            format!("{base}holdback: 2%\n"),
            "/holdback",
            "waved plan",
        ),
        (
            base.replace("bake: 30m", "bake: 30m\n  one_box: {instance: 'a b'}"),
            "/waves/one_box/instance",
            "",
        ),
        (
            base.replace("{name: eu, members: [eu-west]}", "{name: eu, members: [eu-west], open: true, steps: [{canary: {weight: 100%, min_requests: 1}}]}"),
            "/waves/list/1/open",
            "not both",
        ),
    ];
    for (yaml, pointer, words) in cases {
        let (p, m) = refused(&yaml);
        assert_eq!(p, pointer, "{m}\n{yaml}");
        assert!(m.contains(words), "{m:?} lacks {words:?}");
    }
}

#[test]
fn a_waved_release_opens_one_wave_at_a_time_and_the_engine_routes_by_region() {
    let r = release(plan(""));
    let (r, effects) = apply(&r, &Event::Start { actor: "a".into() }, T0);
    assert!(matches!(
        effects[0],
        Effect::PublishRouting { routing: Some(_) }
    ));
    assert_eq!(
        states(&r),
        vec![
            ("us", WaveState::Active),
            ("eu", WaveState::Pending),
            ("rest", WaveState::Pending)
        ]
    );
    assert_eq!(
        weights(&r),
        vec![("us".into(), 1000), ("eu".into(), 0), ("rest".into(), 0)]
    );

    // Decided by the engine: eu and unknown regions stay stable, us-east splits 10%.
    let mut agent = AgentRouting {
        stable: Some(bundle_ref("support", 4)),
        ..AgentRouting::default()
    };
    agent.release = r.routing();
    let snap = Snapshot {
        env: "prod".into(),
        version: 3,
        published_at_ms: T0,
        agents: [("support".to_owned(), agent)].into(),
        flags: Default::default(),
        bundles: [
            ("support@4".to_owned(), bench_bundle("support", 4)),
            ("support@5".to_owned(), bench_bundle("support", 5)),
        ]
        .into(),
    };
    let compiled = CompiledSnapshot::compile(snap).unwrap();
    let mut canary = 0;
    for i in 0..2_000 {
        let user = format!("u-{i}");
        let us = compiled
            .decide("support", &Context::new("r").user(&user).region("us-west"))
            .unwrap();
        assert_eq!(us.wave, Some("us"));
        canary += usize::from(us.arm == Arm::Canary);
        let eu = compiled
            .decide("support", &Context::new("r").user(&user).region("eu-west"))
            .unwrap();
        assert_eq!((eu.arm, eu.wave), (Arm::Stable, Some("eu")));
        // No region: the rest wave (still closed).
        let none = compiled
            .decide("support", &Context::new("r").user(&user))
            .unwrap();
        assert_eq!((none.arm, none.wave), (Arm::Stable, Some("rest")));
    }
    assert!((120..=280).contains(&canary), "{canary} of 2000 at 10%");
    let d = compiled
        .decide("support", &Context::new("r").user("u-1").region("eu-west"))
        .unwrap();
    assert!(
        d.explain(&Context::new("r"))
            .contains("in wave eu of release r-9"),
        "{}",
        d.explain(&Context::new("r"))
    );
}

fn bench_bundle(agent: &str, n: u64) -> serin_core::bundle::Bundle {
    serin_core::decision::bench_support::bundle(agent, n)
}

#[test]
fn each_wave_gates_on_its_own_outcomes_and_the_next_opens_after_the_bake() {
    let r = release(plan(""));
    let (r, _) = apply(&r, &Event::Start { actor: "a".into() }, T0);
    // Plenty of canary elsewhere does not move wave us.
    let (same, fx) = apply(
        &r,
        &tick(vec![ev("eu", 5_000, VerdictStatus::Pass)]),
        T0 + 10 * MIN,
    );
    assert!(fx.is_empty() && same.step == 0);
    let (r, _) = apply(
        &r,
        &tick(vec![ev("us", 150, VerdictStatus::Pass)]),
        T0 + 10 * MIN,
    );
    assert_eq!(r.step, 1, "us 10% -> 100%");
    assert_eq!(weights(&r)[0], ("us".into(), 10_000));
    // us at 100%: needs 100 more requests of its own AND the 30m bake, and 400 outcomes.
    let (held, _) = apply(
        &r,
        &tick(vec![ev("us", 600, VerdictStatus::Pass)]),
        T0 + 20 * MIN,
    );
    assert_eq!(held.step, 1, "bake not over");
    let (r, _) = apply(
        &r,
        &tick(vec![ev("us", 600, VerdictStatus::Pass)]),
        T0 + 41 * MIN,
    );
    assert_eq!(r.step, 2, "eu opens");
    assert_eq!(
        states(&r),
        vec![
            ("us", WaveState::Done),
            ("eu", WaveState::Active),
            ("rest", WaveState::Pending)
        ]
    );
    assert_eq!(
        weights(&r),
        vec![
            ("us".into(), 10_000),
            ("eu".into(), 1000),
            ("rest".into(), 0)
        ]
    );
    // eu's step counts eu's requests from the moment it opened.
    assert_eq!(r.step_requests_at_start, 0);
}

#[test]
fn a_breach_in_one_wave_rolls_back_that_wave_only_and_the_release_goes_on() {
    let r = release(plan(""));
    let (r, _) = apply(&r, &Event::Start { actor: "a".into() }, T0);
    let (r, _) = apply(
        &r,
        &tick(vec![ev("us", 150, VerdictStatus::Pass)]),
        T0 + 10 * MIN,
    );
    let (r, _) = apply(
        &r,
        &tick(vec![ev("us", 600, VerdictStatus::Pass)]),
        T0 + 41 * MIN,
    );
    assert_eq!(r.current_wave(), Some(1));
    let (r, effects) = apply(
        &r,
        &tick(vec![
            ev("us", 600, VerdictStatus::Pass),
            ev("eu", 90, VerdictStatus::Fail),
        ]),
        T0 + 45 * MIN,
    );
    assert_eq!(r.phase, Phase::Canary, "the release goes on");
    assert_eq!(
        states(&r),
        vec![
            ("us", WaveState::Done),
            ("eu", WaveState::RolledBack),
            ("rest", WaveState::Active)
        ]
    );
    assert_eq!(
        weights(&r),
        vec![
            ("us".into(), 10_000),
            ("eu".into(), 0),
            ("rest".into(), 10_000)
        ]
    );
    let failure = r.waves[1].failure.as_ref().unwrap();
    assert_eq!(failure.guardrail, "error_rate.max_increase");
    let audit = effects
        .iter()
        .find_map(|e| match e {
            Effect::Audit { action, reason, .. } => Some((action.clone(), reason.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(audit.0, "release.wave_rollback");
    assert!(
        audit
            .1
            .unwrap()
            .starts_with("wave eu: guardrail error_rate")
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Notify(n) if n.failure.is_some()))
    );

    // The last wave's gate holds, but a rolled-back wave keeps the release from completing.
    let g = r.gate_waved(
        T0 + 90 * MIN,
        0,
        &[],
        &[ev("rest", 500, VerdictStatus::Pass)],
    );
    assert!(!g.holds);
    assert!(
        g.missing
            .iter()
            .any(|m| m.contains("wave eu is rolled_back")),
        "{:?}",
        g.missing
    );
    let (r2, _) = apply(
        &r,
        &tick(vec![ev("rest", 500, VerdictStatus::Pass)]),
        T0 + 90 * MIN,
    );
    assert_eq!(r2.phase, Phase::Halted, "no completion: a person decides");
    assert_eq!(r2.waves[2].state, WaveState::Done);
    assert_eq!(
        r2.failure.as_ref().unwrap().guardrail,
        "error_rate.max_increase"
    );
    assert!(
        r2.history
            .last()
            .unwrap()
            .reason
            .as_ref()
            .unwrap()
            .contains("wave eu was rolled back")
    );
    // A person may force it (with a reason), or abort.
    let forced = Event::Promote {
        actor: "jordan".into(),
        force: true,
        reason: Some("eu fixed upstream".into()),
        canary_requests: 0,
        verdicts: Vec::new(),
        waves: vec![ev("rest", 500, VerdictStatus::Pass)],
    };
    let (done, effects) = apply(&r, &forced, T0 + 91 * MIN);
    assert_eq!(done.phase, Phase::Completed);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::PromoteToStable { .. }))
    );
}

#[test]
fn a_wave_at_full_weight_needs_no_fail_and_below_half_pass_is_not_required() {
    use serin_core::release::Requirement;
    let p = plan("");
    // us 10% (no_fail), us 100% (no_fail: no control inside the wave), ..., rest 100%.
    assert_eq!(p.requirement(0), Requirement::NoFail);
    assert_eq!(p.requirement(1), Requirement::NoFail);
    assert_eq!(p.requirement(4), Requirement::NoFail);
    let half = Plan::parse_and_validate(&waved("").replace("weight: 10%", "weight: 50%")).unwrap();
    assert_eq!(half.requirement(0), Requirement::Pass);
}

#[test]
fn halt_freezes_the_failing_wave_and_resume_goes_on_from_it() {
    let r = release(plan("").replace_on_failure());
    let (r, _) = apply(&r, &Event::Start { actor: "a".into() }, T0);
    let (r, effects) = apply(&r, &tick(vec![ev("us", 90, VerdictStatus::Fail)]), T0 + MIN);
    assert_eq!(r.phase, Phase::Halted);
    assert_eq!(r.waves[0].state, WaveState::Halted);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::PublishRouting { .. }))
    );
    assert_eq!(weights(&r)[0], ("us".into(), 1000), "frozen at its weight");
    let (r, _) = apply(&r, &Event::Resume { actor: "a".into() }, T0 + 2 * MIN);
    assert_eq!(
        (r.phase, r.waves[0].state),
        (Phase::Canary, WaveState::Active)
    );
    assert!(r.waves[0].failure.is_none());
}

trait OnFailureHalt {
    fn replace_on_failure(self) -> Plan;
}

impl OnFailureHalt for Plan {
    fn replace_on_failure(mut self) -> Plan {
        self.on_failure = serin_core::release::OnFailure::Halt;
        self
    }
}

#[test]
fn a_wave_without_traffic_is_skipped_when_the_plan_says_so_and_waited_for_otherwise() {
    let skip = release(plan("  no_traffic: skip\n"));
    let (r, _) = apply(&skip, &Event::Start { actor: "a".into() }, T0);
    // us sent nothing at all: skipped once its first step's 5 minutes are over.
    let silent = WaveEvidence {
        wave: "us".into(),
        canary_requests: 0,
        requests: 0,
        verdicts: Vec::new(),
    };
    let (early, fx) = apply(&r, &tick(vec![silent.clone()]), T0 + 4 * MIN);
    assert!(fx.is_empty() && early.current_wave() == Some(0));
    let (r, fx) = apply(&r, &tick(vec![silent.clone()]), T0 + 5 * MIN);
    assert_eq!(r.waves[0].state, WaveState::Skipped);
    assert_eq!(r.current_wave(), Some(1));
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Audit { action, .. } if action == "release.wave_skip"))
    );
    assert_eq!(
        weights(&r)[0],
        ("us".into(), 0),
        "skipped members stay stable"
    );

    let wait = release(plan(""));
    let (r, _) = apply(&wait, &Event::Start { actor: "a".into() }, T0);
    let (r, fx) = apply(&r, &tick(vec![silent]), T0 + 600 * MIN);
    assert!(fx.is_empty());
    assert_eq!(r.waves[0].state, WaveState::Active);
}

#[test]
fn the_pooled_verdicts_never_gate_a_waved_release() {
    let r = release(plan(""));
    let (r, _) = apply(&r, &Event::Start { actor: "a".into() }, T0);
    let pooled_fail = Event::tick_waves(
        500,
        vec![verdict(VerdictStatus::Fail)],
        vec![ev("us", 50, VerdictStatus::Pending)],
    );
    let (next, fx) = apply(&r, &pooled_fail, T0 + MIN);
    assert!(fx.is_empty());
    assert_eq!(next.phase, Phase::Canary);
}

#[test]
fn a_waved_release_round_trips_through_its_stored_json() {
    let p = Plan::parse_and_validate(
        &waved("  one_box: {instance: pod-1}\n  no_traffic: skip\n  max_step: 90%\n")
            .replace(", open: true", ""),
    )
    .unwrap();
    let r = release(p);
    let (r, _) = apply(&r, &Event::Start { actor: "a".into() }, T0);
    let text = serde_json::to_string(&r).unwrap();
    let back: Release = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.waves.len(), 4);
    assert!(text.contains("\"one-box\""));
}

#[test]
fn comparison_ids_name_the_candidate_and_the_wave() {
    let id = wave_comparison("support@5", "eu");
    assert_eq!(id, "support@5~eu");
    assert_eq!(split_comparison(&id), ("support@5", Some("eu")));
    assert_eq!(split_comparison("support@5"), ("support@5", None));
    // Reasons stay Copy and carry no wave: the decision names it.
    let _ = Reason::OutsideWaves.code();
}
