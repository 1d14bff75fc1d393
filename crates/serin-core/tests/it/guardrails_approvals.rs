//! Approval-queue guardrails: `approvals.max_ratio`, `denial_max_ratio`, `overdue_max_ratio`.
//!
//! The simulated releases below feed the monitor what the server feeds it: every request's
//! outcome, an approval event when an agent asks a human (before the request's outcome
//! arrives, since the request waits on the answer), and the denials and overdue requests
//! later, at the snapshot version the agent decided under, after the ramp may have moved on.

use std::collections::VecDeque;

use proptest::prelude::*;
use rand::Rng;
use serin_core::decision::Arm;
use serin_core::guardrails::sim::{parallel_runs, run_seed, sim_rng};
use serin_core::guardrails::{
    ApprovalCounts, ApprovalSignal, GuardrailConfig, Monitor, Verdict, VerdictStatus,
};
use serin_core::outcome::{ArmWindow, OutcomeEvent, OutcomeWindow};

fn parse(yaml: &str) -> Result<GuardrailConfig, String> {
    serde_saphyr::from_str::<GuardrailConfig>(yaml).map_err(|e| e.to_string())
}

fn config(yaml: &str) -> GuardrailConfig {
    let c = parse(yaml).unwrap();
    c.validate().unwrap();
    c
}

const ALL_2: &str = "approvals: {max_ratio: 2, denial_max_ratio: 2, overdue_max_ratio: 2}";
const ALL_1: &str = "approvals: {max_ratio: 1, denial_max_ratio: 1, overdue_max_ratio: 1}";

fn request(arm: Arm, version: u64, i: u64) -> OutcomeEvent {
    let mut e: OutcomeEvent = serde_json::from_value(serde_json::json!({
        "request_id": format!("r-{i}"), "agent": "support", "env": "prod",
        "snapshot_version": version, "bundle": "support@1", "arm": "stable", "latency_ms": 100.0
    }))
    .unwrap();
    e.arm = arm;
    if arm == Arm::Canary {
        e.bundle = "support@2".into();
    }
    e
}

// ----- config ---------------------------------------------------------------------------------

#[test]
fn the_approvals_block_parses_with_its_defaults_and_round_trips() {
    let c = config(
        "approvals: {max_ratio: 2, denial_max_ratio: 2, overdue_max_ratio: 2, wait: 5m, shadow: false}",
    );
    let a = c.approvals.clone().unwrap();
    assert_eq!(
        (a.max_ratio, a.denial_max_ratio, a.overdue_max_ratio),
        (Some(2.0), Some(2.0), Some(2.0))
    );
    assert_eq!(a.wait.as_ms(), 300_000);
    assert!(!a.shadow);
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["approvals"]["wait"], "5m");
    let back: GuardrailConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, c);

    // `wait` defaults to 5m and accepts the plan's duration syntax.
    let c = config("approvals: {max_ratio: 1.5}");
    assert_eq!(c.approvals.as_ref().unwrap().wait.as_ms(), 300_000);
    assert_eq!(Monitor::new(c).approval_wait_ms(), Some(300_000));
    for (wait, ms) in [
        ("90s", 90_000),
        ("2h", 7_200_000),
        ("1s", 1_000),
        ("24h", 86_400_000),
    ] {
        let c = config(&format!("approvals: {{denial_max_ratio: 3, wait: {wait}}}"));
        assert_eq!(Monitor::new(c).approval_wait_ms(), Some(ms), "{wait}");
    }

    // Without the block there is nothing to wait for and nothing to judge.
    let m = Monitor::new(GuardrailConfig::spec_default());
    assert_eq!(m.approval_wait_ms(), None);
    assert!(
        m.verdicts()
            .iter()
            .all(|v| !v.guardrail.starts_with("approvals."))
    );
    assert!(
        !serde_json::to_string(&GuardrailConfig::spec_default())
            .unwrap()
            .contains("approvals")
    );
}

#[test]
fn bad_approval_values_are_refused_with_a_pointer() {
    for (yaml, pointer) in [
        ("approvals: {}", "/approvals"),
        ("approvals: {wait: 5m}", "/approvals"),
        ("approvals: {max_ratio: 0.5}", "/approvals/max_ratio"),
        ("approvals: {max_ratio: -2}", "/approvals/max_ratio"),
        ("approvals: {max_ratio: .nan}", "/approvals/max_ratio"),
        ("approvals: {max_ratio: 5000}", "/approvals/max_ratio"),
        (
            "approvals: {max_ratio: 2, denial_max_ratio: 0.9}",
            "/approvals/denial_max_ratio",
        ),
        (
            "approvals: {overdue_max_ratio: 0}",
            "/approvals/overdue_max_ratio",
        ),
        ("approvals: {max_ratio: 2, wait: 0s}", "/approvals/wait"),
        ("approvals: {max_ratio: 2, wait: 500ms}", "/approvals/wait"),
        ("approvals: {max_ratio: 2, wait: 25h}", "/approvals/wait"),
        ("approvals: {max_ratio: 2, wait: 2d}", "/approvals/wait"),
    ] {
        let c = parse(yaml).unwrap();
        let err = c.validate().unwrap_err();
        assert_eq!(err.pointer(), pointer, "{yaml}");
        assert!(err.to_string().starts_with(pointer), "{err}");
    }
    for yaml in [
        "approvals: {max_ratio: 2, typo: 1}",
        "approvals: {max_ratio: 2, backlog_max_ratio: 2}",
    ] {
        let err = parse(yaml).unwrap_err();
        assert!(err.contains("unknown field"), "{yaml}: {err}");
    }
    // A wait that is not a duration is refused when the block is read.
    for yaml in [
        "approvals: {max_ratio: 2, wait: 5 minutes}",
        "approvals: {max_ratio: 2, wait: 300}",
        "approvals: {max_ratio: 2, wait: -5m}",
    ] {
        assert!(parse(yaml).is_err(), "{yaml}");
    }
}

// ----- stored monitors ------------------------------------------------------------------------

/// A monitor serialized by the code before approvals existed (`error_rate.max_ratio` and
/// `refusal_rate.max_increase`, 400 requests at 25% across two versions), and its verdicts then.
const STORED: &str = include_str!("fixtures/monitor_before_approvals.json");
const STORED_VERDICTS: &str = include_str!("fixtures/monitor_before_approvals.verdicts.json");

#[test]
fn a_monitor_stored_before_approvals_reads_back_with_the_same_verdicts() {
    let mut m: Monitor = serde_json::from_str(STORED).unwrap();
    let then: Vec<Verdict> = serde_json::from_str(STORED_VERDICTS).unwrap();
    assert_eq!(m.verdicts(), then);
    assert_eq!(m.approval_wait_ms(), None);
    assert_eq!(m.approvals(true), ApprovalCounts::default());
    assert_eq!(m.unattributed(), 5);
    assert_eq!(m.arm_summary(true).approvals, None);
    // Written back without any trace of approvals: the stored form is unchanged.
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    let stored: serde_json::Value = serde_json::from_str(STORED).unwrap();
    assert_eq!(json, stored);
    // Approval events for a release that does not judge them are counted, nothing else.
    m.observe_approval(true, ApprovalSignal::Requested, 4);
    assert_eq!(m.verdicts(), then);
    assert_eq!(m.approvals(true).requested, 1);
    assert_eq!(m.arm_summary(true).approvals.map(|a| a.requested), Some(1));
}

// ----- the simulated queue --------------------------------------------------------------------

/// One arm's approval behaviour: the chance a request asks, and given that it asked, the
/// chance it is denied (or expires) and the chance it is still undecided after `wait`.
#[derive(Clone, Copy, Debug)]
struct Queue {
    ask: f64,
    deny: f64,
    overdue: f64,
}

/// 5% of requests ask; a fifth of those are denied, a tenth wait too long.
const BASE: Queue = Queue {
    ask: 0.05,
    deny: 0.2,
    overdue: 0.1,
};

/// Requests between an ask and its overdue signal, and between an ask and its denial.
const OVERDUE_AFTER: u64 = 300;
const DENIED_AFTER: u64 = 700;
const LOOK_EVERY: u64 = 100;

#[derive(Debug)]
struct Run {
    /// The first failing bound and canary requests at that look.
    failed: Option<(String, u64)>,
    /// Canary requests at the first look where every bound passed.
    passed: Option<u64>,
}

/// A release over `ramp` (canary share, requests), one snapshot version per step, latched
/// and looked at every 100 requests as the server does after each batch.
fn release(config: &GuardrailConfig, canary: Queue, ramp: &[(f64, u64)], seed: u64) -> Run {
    let mut rng = sim_rng(seed);
    let mut m = Monitor::new(config.clone());
    let mut overdue: VecDeque<(u64, bool, u64)> = VecDeque::new();
    let mut denied: VecDeque<(u64, bool, u64)> = VecDeque::new();
    let mut i = 0u64;
    let mut run = Run {
        failed: None,
        passed: None,
    };
    for (step, &(share, n)) in ramp.iter().enumerate() {
        let version = step as u64 + 1;
        m.set_canary_share_from(version, share);
        for _ in 0..n {
            i += 1;
            let is_canary = rng.random::<f64>() < share;
            let q = if is_canary { canary } else { BASE };
            if rng.random::<f64>() < q.ask {
                m.observe_approval(is_canary, ApprovalSignal::Requested, version);
                if rng.random::<f64>() < q.overdue {
                    overdue.push_back((i + OVERDUE_AFTER, is_canary, version));
                }
                if rng.random::<f64>() < q.deny {
                    denied.push_back((i + DENIED_AFTER, is_canary, version));
                }
            }
            let arm = if is_canary { Arm::Canary } else { Arm::Stable };
            m.observe(&request(arm, version, i));
            for (queue, signal) in [
                (&mut overdue, ApprovalSignal::Overdue),
                (&mut denied, ApprovalSignal::Denied),
            ] {
                while let Some(&(due, c, v)) = queue.front()
                    && due <= i
                {
                    queue.pop_front();
                    m.observe_approval(c, signal, v);
                }
            }
            if i.is_multiple_of(LOOK_EVERY) {
                m.latch(i as i64);
                if let Some(b) = m.first_fail() {
                    run.failed = Some((b.name().to_owned(), m.canary().requests));
                    return run;
                }
                if run.passed.is_none() && m.overall() == VerdictStatus::Pass {
                    run.passed = Some(m.canary().requests);
                }
            }
        }
    }
    run
}

/// 10% of 4,000 requests, then 50% of 6,000.
const AA_RAMP: [(f64, u64); 2] = [(0.1, 4_000), (0.5, 6_000)];

#[test]
fn aa_false_fail_rate_of_approval_bounds_is_within_alpha() {
    let runs = 1_000usize;
    let mut report = Vec::new();
    for yaml in [ALL_2, ALL_1] {
        let c = config(yaml);
        let alpha = c.settings.alpha.fraction();
        let results = parallel_runs(runs, 2, |i| {
            release(&c, BASE, &AA_RAMP, run_seed(0xA99, i)).failed
        })
        .unwrap();
        let fails: Vec<_> = results.into_iter().flatten().collect();
        let rate = fails.len() as f64 / runs as f64;
        report.push(format!(
            "{yaml}: {} of {runs} runs failed ({:.2}%)",
            fails.len(),
            rate * 100.0
        ));
        assert!(
            rate <= alpha,
            "{yaml}: A/A false fail rate {rate} above alpha {alpha}: {fails:?}"
        );
    }
    eprintln!("A/A approvals: {}", report.join("; "));
}

/// Canary requests to the first fail of `bound` over `runs` seeded releases of 50% x 20,000
/// after 10% x 2,000; panics when a run fails another bound or never fails.
fn time_to_fail(canary: Queue, bound: &str, runs: usize, seed: u64) -> Vec<u64> {
    let c = config(ALL_2);
    let mut at: Vec<u64> = parallel_runs(runs, 2, |i| {
        release(
            &c,
            canary,
            &[(0.1, 2_000), (0.5, 20_000)],
            run_seed(seed, i),
        )
    })
    .unwrap()
    .into_iter()
    .map(|r| match r.failed {
        Some((b, n)) if b == bound => n,
        other => panic!("{bound}: expected a fail of {bound}, got {other:?}"),
    })
    .collect();
    at.sort_unstable();
    at
}

#[test]
fn a_canary_asking_five_times_as_often_fails_approvals_max_ratio() {
    let at = time_to_fail(Queue { ask: 0.25, ..BASE }, "approvals.max_ratio", 40, 0xA5);
    let median = at[at.len() / 2];
    eprintln!(
        "5x approval requests: failed in 40 of 40 runs, median {median} canary requests, max {}",
        at[at.len() - 1]
    );
    assert!(median <= 1_500, "median canary requests to fail {median}");
}

#[test]
fn a_canary_denied_five_times_as_often_fails_approvals_denial_max_ratio() {
    let at = time_to_fail(
        Queue { deny: 1.0, ..BASE },
        "approvals.denial_max_ratio",
        40,
        0xD5,
    );
    let median = at[at.len() / 2];
    eprintln!(
        "5x denials: failed in 40 of 40 runs, median {median} canary requests, max {}",
        at[at.len() - 1]
    );
    assert!(median <= 4_000, "median canary requests to fail {median}");
}

#[test]
fn a_canary_whose_requests_wait_five_times_as_often_fails_approvals_overdue_max_ratio() {
    let at = time_to_fail(
        Queue {
            overdue: 0.5,
            ..BASE
        },
        "approvals.overdue_max_ratio",
        40,
        0x0D5,
    );
    let median = at[at.len() / 2];
    eprintln!(
        "5x overdue: failed in 40 of 40 runs, median {median} canary requests, max {}",
        at[at.len() - 1]
    );
    assert!(median <= 6_000, "median canary requests to fail {median}");
}

#[test]
fn equal_approval_rates_eventually_pass_every_approval_bound() {
    let c = config(ALL_2);
    let runs = 20;
    let results = parallel_runs(runs, 2, |i| {
        release(&c, BASE, &[(0.1, 2_000), (0.5, 60_000)], run_seed(0xE0, i))
    })
    .unwrap();
    let mut at: Vec<u64> = results
        .iter()
        .map(|r| {
            assert!(r.failed.is_none(), "{r:?}");
            r.passed.unwrap_or_else(|| panic!("never passed: {r:?}"))
        })
        .collect();
    at.sort_unstable();
    eprintln!(
        "equal rates: all three approval bounds passed in {runs} of {runs} runs, median {} canary requests, max {}",
        at[at.len() / 2],
        at[at.len() - 1]
    );
}

// ----- latching, values, attribution ----------------------------------------------------------

#[test]
fn an_approval_fail_is_latched_with_its_evidence_and_stays_failed() {
    let c = config("approvals: {max_ratio: 1}\nsettings: {min_requests: 50}");
    let mut m = Monitor::new(c);
    m.set_canary_share_from(1, 0.5);
    let mut i = 0;
    // Every canary request asks, control never does.
    while !m.any_fail() {
        i += 1;
        assert!(i < 10_000, "never failed");
        m.observe_approval(true, ApprovalSignal::Requested, 1);
        m.observe(&request(Arm::Canary, 1, i));
        m.observe(&request(Arm::Stable, 1, 1_000_000 + i));
    }
    assert_eq!(
        m.first_fail().map(|b| b.name()),
        Some("approvals.max_ratio")
    );
    assert!(m.latch(42_000), "the first crossing latches");
    assert!(!m.latch(43_000), "a latch is taken once");
    let at_crossing = m.verdicts().remove(0);
    assert_eq!(at_crossing.latched_at_ms, Some(42_000));

    // Then control asks far more often: the live e-value falls back below the bar ...
    for k in 0..5_000 {
        m.observe_approval(false, ApprovalSignal::Requested, 1);
        m.observe(&request(Arm::Stable, 1, 2_000_000 + k));
    }
    let json = serde_json::to_string(&m).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for t in v["tests"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("latched");
    }
    let unlatched: Monitor = serde_json::from_value(v).unwrap();
    assert!(
        !unlatched.any_fail(),
        "the live e-value did not fall back; the test proves nothing"
    );
    // ... but the verdict stays the latched fail, with the evidence of the crossing.
    let m: Monitor = serde_json::from_str(&json).unwrap();
    assert_eq!(m.overall(), VerdictStatus::Fail);
    let v = m.verdicts().remove(0);
    assert_eq!(v.status, VerdictStatus::Fail);
    assert_eq!(
        (v.canary, v.control, v.statistic, v.latched_at_ms),
        (
            at_crossing.canary,
            at_crossing.control,
            at_crossing.statistic,
            Some(42_000)
        )
    );
    assert!(v.explanation.contains("latched"), "{}", v.explanation);
}

#[test]
fn approval_verdicts_report_events_per_thousand_requests_and_share_alpha() {
    let c = config(&format!("error_rate: {{max_ratio: 1.5}}\n{ALL_2}"));
    let mut m = Monitor::new(c);
    m.set_canary_share_from(1, 0.5);
    // 400 canary requests with 20 asks, 5 denials, 2 overdue; 600 control with 6, 3, 0.
    for i in 0..1_000u64 {
        let canary = i < 400;
        m.observe(&request(
            if canary { Arm::Canary } else { Arm::Stable },
            1,
            i,
        ));
    }
    let signals = [
        (true, ApprovalSignal::Requested, 20),
        (true, ApprovalSignal::Denied, 5),
        (true, ApprovalSignal::Overdue, 2),
        (false, ApprovalSignal::Requested, 6),
        (false, ApprovalSignal::Denied, 3),
    ];
    for (canary, signal, k) in signals {
        for _ in 0..k {
            m.observe_approval(canary, signal, 1);
        }
    }
    let v = m.verdicts();
    let names: Vec<&str> = v.iter().map(|v| v.guardrail.as_str()).collect();
    assert_eq!(
        names,
        [
            "error_rate.max_ratio",
            "approvals.max_ratio",
            "approvals.denial_max_ratio",
            "approvals.overdue_max_ratio"
        ]
    );
    let values: Vec<(f64, u64, f64, u64)> = v[1..]
        .iter()
        .map(|v| (v.canary.value, v.canary.n, v.control.value, v.control.n))
        .collect();
    assert_eq!(
        values,
        [
            (50.0, 400, 10.0, 600),
            (12.5, 400, 5.0, 600),
            (5.0, 400, 0.0, 600)
        ]
    );
    for x in &v {
        // Four bounds share alpha = 1%: each bar is 400.
        assert!((x.statistic_threshold - 400.0).abs() < 1e-6, "{x:#?}");
    }
    for x in &v[1..] {
        assert_eq!(x.threshold, "<= control x 2");
        assert!(x.explanation.contains("per 1,000 requests"), "{x:#?}");
    }
    assert!(v[3].explanation.contains("after 5m"), "{:#?}", v[3]);
    // Canary asks five times as often per request: the point estimate is beyond the bound,
    // so it is not passed.
    assert_ne!(v[1].status, VerdictStatus::Pass, "{:#?}", v[1]);
    assert_eq!(
        m.arm_summary(true).approvals,
        Some(ApprovalCounts {
            requested: 20,
            denied: 5,
            overdue: 2
        })
    );
    assert_eq!(
        m.arm_summary(false).approvals,
        Some(ApprovalCounts {
            requested: 6,
            denied: 3,
            overdue: 0
        })
    );
    let json = serde_json::to_value(m.arm_summary(true)).unwrap();
    assert_eq!(json["approvals"]["requested"], 20);
    assert!(
        serde_json::to_value(m.canary().summary())
            .unwrap()
            .get("approvals")
            .is_none()
    );
}

#[test]
fn approval_events_are_not_requests_and_old_versions_are_ignored() {
    let c = config(&format!("error_rate: {{max_ratio: 1}}\n{ALL_1}"));
    let mut with = Monitor::new(c.clone());
    let mut without = Monitor::new(c);
    for m in [&mut with, &mut without] {
        m.set_canary_share_from(5, 0.0);
        m.set_canary_share_from(7, 0.2);
    }
    let mut rng = sim_rng(3);
    for i in 0..3_000u64 {
        let canary = rng.random::<f64>() < 0.2;
        let arm = if canary { Arm::Canary } else { Arm::Stable };
        let mut e = request(arm, 7, i);
        if rng.random::<f64>() < 0.02 {
            e.error =
                Some(serde_json::from_value(serde_json::json!({"class": "permanent"})).unwrap());
        }
        if rng.random::<f64>() < 0.1 {
            with.observe_approval(canary, ApprovalSignal::Requested, 7);
        }
        with.observe(&e);
        without.observe(&e);
    }
    // The error bound and the exposure are exactly as without approval events.
    assert_eq!(with.verdicts()[0], without.verdicts()[0]);
    assert_eq!(with.canary().requests, without.canary().requests);
    let before = with.verdicts();
    let counts = (with.approvals(true), with.approvals(false));
    // Events routed before the release routed anything (version 4 < 5) are ignored.
    for signal in [
        ApprovalSignal::Requested,
        ApprovalSignal::Denied,
        ApprovalSignal::Overdue,
    ] {
        with.observe_approval(true, signal, 4);
    }
    assert_eq!(with.verdicts(), before);
    assert_eq!((with.approvals(true), with.approvals(false)), counts);
    assert_eq!(with.unattributed(), 0);
    assert!(
        counts.0.requested > 0 && counts.1.requested > 0,
        "{counts:?}"
    );
}

/// Outcome windows tally the approval bounds' requests exactly as single events do.
#[test]
fn windows_and_events_judge_approvals_alike() {
    let c = config(&format!("error_rate: {{max_ratio: 1.5}}\n{ALL_2}"));
    let mut by_event = Monitor::new(c.clone());
    let mut by_window = Monitor::new(c);
    for m in [&mut by_event, &mut by_window] {
        m.set_canary_share_from(1, 0.3);
    }
    let mut rng = sim_rng(11);
    for i in 0..4_000u64 {
        let canary = rng.random::<f64>() < 0.3;
        let arm = if canary { Arm::Canary } else { Arm::Stable };
        let e = request(arm, 1, i);
        let ask = rng.random::<f64>() < if canary { 0.2 } else { 0.05 };
        by_event.observe(&e);
        let mut part = ArmWindow::new(e.arm, e.bundle.clone());
        part.add(&e);
        by_window.observe_window(
            &OutcomeWindow {
                window_id: format!("w{i}"),
                agent: "support".into(),
                env: "prod".into(),
                snapshot_version: 1,
                instance: None,
                region: None,
                pool: None,
                at_ms: None,
                arms: vec![part],
            },
            "support@2",
        );
        if ask {
            by_event.observe_approval(canary, ApprovalSignal::Requested, 1);
            by_window.observe_approval(canary, ApprovalSignal::Requested, 1);
        }
    }
    assert_eq!(
        serde_json::to_value(&by_event).unwrap(),
        serde_json::to_value(&by_window).unwrap()
    );
    assert_eq!(by_event.verdicts()[1].status, VerdictStatus::Fail);
}

// ----- serde ----------------------------------------------------------------------------------

fn signal() -> impl Strategy<Value = ApprovalSignal> {
    prop_oneof![
        Just(ApprovalSignal::Requested),
        Just(ApprovalSignal::Denied),
        Just(ApprovalSignal::Overdue),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A monitor with approval tests survives the store at any point: the same verdicts and,
    /// fed the same events afterwards, the same evidence.
    #[test]
    fn a_monitor_with_approval_tests_round_trips_through_json(
        ratios in (1.0f64..4.0, 1.0f64..4.0, 1.0f64..4.0),
        shadow in any::<bool>(),
        share in 0.05f64..0.95,
        steps in prop::collection::vec((any::<bool>(), prop::option::of(signal()), 0u64..3), 1..400),
        after in prop::collection::vec((any::<bool>(), signal()), 0..50),
    ) {
        let c = config(&format!(
            "approvals: {{max_ratio: {}, denial_max_ratio: {}, overdue_max_ratio: {}, wait: 90s, shadow: {shadow}}}\nsettings: {{min_requests: 20}}",
            ratios.0, ratios.1, ratios.2
        ));
        let mut m = Monitor::new(c);
        m.set_canary_share_from(1, share);
        for (i, (canary, sig, version)) in steps.iter().enumerate() {
            let arm = if *canary { Arm::Canary } else { Arm::Stable };
            m.observe(&request(arm, 1, i as u64));
            if let Some(s) = sig {
                // Version 0 predates the release: ignored.
                m.observe_approval(*canary, *s, *version);
            }
        }
        m.latch(7);
        let json = serde_json::to_string(&m).unwrap();
        let mut back: Monitor = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back.verdicts(), m.verdicts());
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), json);
        prop_assert_eq!(back.approval_wait_ms(), Some(90_000));
        prop_assert_eq!(back.approvals(true), m.approvals(true));
        for (canary, s) in &after {
            m.observe_approval(*canary, *s, 1);
            back.observe_approval(*canary, *s, 1);
        }
        prop_assert_eq!(back.verdicts(), m.verdicts());
    }
}
