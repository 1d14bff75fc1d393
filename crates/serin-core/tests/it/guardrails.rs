//! Guardrail config, aggregates, the monitor's verdicts and burn rate.

use serin_core::decision::Arm;
use serin_core::guardrails::sim::{ArmModel, Scenario, sample_events};
use serin_core::guardrails::{
    ArmAggregate, GuardrailConfig, Monitor, Points, Share, Verdict, VerdictStatus, burn_rate,
};
use serin_core::outcome::{ErrorClass, EvalSample, OutcomeError, OutcomeEvent, ToolCalls};

fn parse(yaml: &str) -> Result<GuardrailConfig, String> {
    serde_saphyr::from_str::<GuardrailConfig>(yaml).map_err(|e| e.to_string())
}

#[test]
fn spec_block_parses_to_spec_default() {
    let yaml = r#"
error_rate:        {max: 2%, max_increase: 1pp}
latency_p95_ms:    {max_increase: 200}
tool_call_success: {min: 98%}
refusal_rate:      {max_ratio: 1.5}
eval_pass_rate:    {min: 95%}
cost_per_request:  {max_ratio: 1.3}
"#;
    let c = parse(yaml).unwrap();
    assert_eq!(c, GuardrailConfig::spec_default());
    c.validate().unwrap();
    assert_eq!(c.settings.alpha, Share::from_fraction(0.01));
    assert_eq!(c.settings.min_requests, 200);
    // JSON round trip writes shares and points back as strings.
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["error_rate"]["max"], "2%");
    assert_eq!(json["error_rate"]["max_increase"], "1pp");
    let back: GuardrailConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, c);
}

#[test]
fn shares_and_points_parse() {
    for (input, fraction) in [
        ("2%", 0.02),
        ("0.5%", 0.005),
        ("2", 0.02),
        (" 12.5 % ", 0.125),
    ] {
        let s = Share::parse(input).unwrap();
        assert!((s.fraction() - fraction).abs() < 1e-12, "{input}");
    }
    for (input, fraction) in [("1pp", 0.01), ("0.5pp", 0.005), ("3", 0.03)] {
        let p = Points::parse(input).unwrap();
        assert!((p.fraction() - fraction).abs() < 1e-12, "{input}");
    }
    for bad in ["", "two%", "1%%", "nan"] {
        assert!(Share::parse(bad).is_err(), "{bad}");
    }
    let c = parse("error_rate: {max: 3}\nsettings: {alpha: 5%, min_requests: 50}").unwrap();
    assert_eq!(c.error_rate.unwrap().max, Some(Share::from_fraction(0.03)));
    assert_eq!(c.settings.alpha, Share::from_fraction(0.05));
    assert_eq!(c.settings.min_requests, 50);
}

#[test]
fn unknown_fields_are_refused() {
    for yaml in [
        "error_rate: {max: 2%, typo: 1}",
        "latency_p99_ms: {max: 3}",
        "settings: {alpha: 1%, beta: 2}",
    ] {
        let err = parse(yaml).unwrap_err();
        assert!(err.contains("unknown field"), "{yaml}: {err}");
    }
}

#[test]
fn nonsense_is_refused_with_a_pointer() {
    for (yaml, pointer) in [
        ("error_rate: {}", "/error_rate"),
        ("error_rate: {max: 120%}", "/error_rate/max"),
        ("error_rate: {max: -1%}", "/error_rate/max"),
        ("error_rate: {max_ratio: 0.8}", "/error_rate/max_ratio"),
        (
            "refusal_rate: {max_increase: -2pp}",
            "/refusal_rate/max_increase",
        ),
        (
            "latency_p95_ms: {max_increase: -200}",
            "/latency_p95_ms/max_increase",
        ),
        (
            "latency_p95_ms: {max_ratio: 0.5}",
            "/latency_p95_ms/max_ratio",
        ),
        ("tool_call_success: {}", "/tool_call_success"),
        ("eval_pass_rate: {min: 101%}", "/eval_pass_rate/min"),
        ("cost_per_request: {max: -0.01}", "/cost_per_request/max"),
        ("cost_per_request: {}", "/cost_per_request"),
        ("settings: {alpha: 0%}", "/settings/alpha"),
        ("settings: {alpha: 60%}", "/settings/alpha"),
    ] {
        let c = parse(yaml).unwrap();
        let err = c.validate().unwrap_err();
        assert_eq!(err.pointer(), pointer, "{yaml}");
        assert!(err.to_string().starts_with(pointer), "{err}");
    }
    GuardrailConfig::no_regression().validate().unwrap();
    GuardrailConfig::default().validate().unwrap();
}

fn event(arm: Arm, latency: f64, cost: f64) -> OutcomeEvent {
    OutcomeEvent {
        request_id: "r".into(),
        trace_id: None,
        agent: "a".into(),
        env: "prod".into(),
        snapshot_version: 1,
        bundle: "a@1".into(),
        arm,
        user: None,
        tenant: None,
        workload: None,
        instance: None,
        region: None,
        pool: None,
        at_ms: None,
        latency_ms: latency,
        stages: Default::default(),
        cost_usd: cost,
        tokens: Default::default(),
        error: None,
        tool_calls: ToolCalls::default(),
        refused: false,
        eval: None,
    }
}

#[test]
fn summary_values() {
    let mut a = ArmAggregate::default();
    for i in 0..100u32 {
        let mut e = event(Arm::Canary, f64::from(i + 1) * 10.0, 0.01);
        e.stages.insert("llm".into(), f64::from(i + 1));
        if i < 4 {
            e.error = Some(OutcomeError {
                class: [
                    ErrorClass::Transient,
                    ErrorClass::Permanent,
                    ErrorClass::External,
                    ErrorClass::Transient,
                ][i as usize],
                code: None,
            });
        }
        e.refused = i % 10 == 0;
        e.tool_calls = ToolCalls {
            ok: 3,
            failed: u64::from(i % 4 == 0),
        };
        if i % 2 == 0 {
            e.eval = Some(EvalSample {
                score: 0.5,
                passed: i % 20 != 0,
            });
        }
        a.record(&e);
    }
    let s = a.summary();
    assert_eq!(s.requests, 100);
    assert!((s.error_rate - 0.04).abs() < 1e-12);
    assert_eq!(
        (s.errors_transient, s.errors_permanent, s.errors_external),
        (2, 1, 1)
    );
    assert!((s.refusal_rate - 0.1).abs() < 1e-12);
    assert_eq!(s.tool_calls, 325);
    assert!((s.tool_call_success.unwrap() - 300.0 / 325.0).abs() < 1e-12);
    assert_eq!(s.eval_samples, 50);
    assert!((s.eval_pass_rate.unwrap() - 0.9).abs() < 1e-12);
    assert!((s.eval_mean_score.unwrap() - 0.5).abs() < 1e-12);
    assert!((s.cost_per_request - 0.01).abs() < 1e-12);
    let close = |got: Option<f64>, want: f64| (got.unwrap() / want - 1.0).abs() < 0.03;
    assert!(close(s.latency_p50_ms, 500.0), "{:?}", s.latency_p50_ms);
    assert!(close(s.latency_p95_ms, 950.0), "{:?}", s.latency_p95_ms);
    assert!(close(s.latency_p99_ms, 990.0), "{:?}", s.latency_p99_ms);
    assert!(close(s.latency_p99_over_p50, 1.98));
    assert!(close(s.stages["llm"].p95_ms, 95.0));
    assert_eq!(s.stages["llm"].count, 100);
    assert!(ArmAggregate::default().summary().latency_p50_ms.is_none());
}

#[test]
fn merge_of_parts_equals_recording_all() {
    let sc = Scenario::aa(Scenario::short_ramp());
    let events = sample_events(&sc, 11, 3_000, 0.5);
    let mut all = ArmAggregate::default();
    let mut parts = vec![ArmAggregate::default(); 3];
    for (i, e) in events.iter().enumerate() {
        let mut e = e.clone();
        e.stages.insert("tools".into(), e.latency_ms / 4.0);
        all.record(&e);
        parts[i * 3 / events.len()].record(&e);
    }
    let mut merged = ArmAggregate::default();
    for p in &parts {
        merged.merge(p);
    }
    // Through JSON too: a persisted minute rollup merges the same.
    let merged: ArmAggregate =
        serde_json::from_str(&serde_json::to_string(&merged).unwrap()).unwrap();
    let (a, m) = (all.summary(), merged.summary());
    assert_eq!(
        (
            a.requests,
            a.errors_transient,
            a.errors_permanent,
            a.errors_external,
            a.tool_calls,
            a.eval_samples
        ),
        (
            m.requests,
            m.errors_transient,
            m.errors_permanent,
            m.errors_external,
            m.tool_calls,
            m.eval_samples
        )
    );
    assert_eq!(
        (a.error_rate, a.refusal_rate, a.eval_pass_rate),
        (m.error_rate, m.refusal_rate, m.eval_pass_rate)
    );
    assert_eq!(
        (a.latency_p50_ms, a.latency_p95_ms, a.latency_p99_ms),
        (m.latency_p50_ms, m.latency_p95_ms, m.latency_p99_ms)
    );
    assert_eq!(a.stages, m.stages);
    assert!((a.cost_usd_sum - m.cost_usd_sum).abs() < 1e-9);
}

fn model(f: impl FnOnce(&mut ArmModel)) -> ArmModel {
    let mut m = ArmModel::baseline();
    f(&mut m);
    m
}

/// Feeds `n` requests at 50% canary share; returns the monitor.
fn feed(config: &GuardrailConfig, canary: ArmModel, n: usize, seed: u64) -> Monitor {
    let sc = Scenario {
        canary,
        ..Scenario::aa(vec![(0.5, n as u64)])
    };
    let mut m = Monitor::new(config.clone());
    m.set_canary_share(0.5);
    // Latch after every batch of 100, as the server does after every ingested batch.
    for (i, e) in sample_events(&sc, seed, n, 0.5).iter().enumerate() {
        m.observe(e);
        if i % 100 == 99 {
            m.latch(i as i64);
        }
    }
    m
}

#[test]
fn each_guardrail_fails_on_a_clear_regression_and_passes_on_identical_arms() {
    type Tweak = fn(&mut ArmModel);
    let cases: &[(&str, &str, Tweak)] = &[
        ("error_rate: {max: 2%}", "error_rate.max", |m| {
            m.error_rate = 0.06
        }),
        (
            "error_rate: {max_increase: 1pp}",
            "error_rate.max_increase",
            |m| m.error_rate = 0.05,
        ),
        (
            "error_rate: {max_ratio: 1.5}",
            "error_rate.max_ratio",
            |m| m.error_rate = 0.04,
        ),
        ("latency_p95_ms: {max: 3000}", "latency_p95_ms.max", |m| {
            m.latency_p50_ms = 2000.0;
            m.latency_p95_ms = 6000.0;
        }),
        (
            "latency_p95_ms: {max_increase: 200}",
            "latency_p95_ms.max_increase",
            |m| {
                m.latency_p50_ms = 1200.0;
                m.latency_p95_ms = 3000.0;
            },
        ),
        (
            "latency_p95_ms: {max_ratio: 1.2}",
            "latency_p95_ms.max_ratio",
            |m| {
                m.latency_p50_ms *= 1.6;
                m.latency_p95_ms *= 1.6;
            },
        ),
        (
            "tool_call_success: {min: 98%}",
            "tool_call_success.min",
            |m| m.tool_call_failure_rate = 0.06,
        ),
        (
            "tool_call_success: {max_decrease: 1pp}",
            "tool_call_success.max_decrease",
            |m| m.tool_call_failure_rate = 0.06,
        ),
        ("refusal_rate: {max: 5%}", "refusal_rate.max", |m| {
            m.refusal_rate = 0.10
        }),
        (
            "refusal_rate: {max_increase: 1pp}",
            "refusal_rate.max_increase",
            // 6pp over: control's rate is bounded conservatively first, so a 2.5pp excess
            // can still be gathering evidence at 5,000 canary requests.
            |m| m.refusal_rate = 0.09,
        ),
        (
            "refusal_rate: {max_ratio: 1.5}",
            "refusal_rate.max_ratio",
            |m| m.refusal_rate = 0.05,
        ),
        ("eval_pass_rate: {min: 95%}", "eval_pass_rate.min", |m| {
            m.eval_pass_rate = 0.85
        }),
        (
            "eval_pass_rate: {max_decrease: 2pp}",
            "eval_pass_rate.max_decrease",
            |m| m.eval_pass_rate = 0.80,
        ),
        (
            "cost_per_request: {max: 0.02}",
            "cost_per_request.max",
            |m| m.cost_mean = 0.04,
        ),
        (
            "cost_per_request: {max_ratio: 1.3}",
            "cost_per_request.max_ratio",
            |m| m.cost_mean *= 2.0,
        ),
        (
            "cost_per_request: {max_increase: 0.005}",
            "cost_per_request.max_increase",
            |m| m.cost_mean *= 2.0,
        ),
    ];
    for (i, (yaml, guardrail, tweak)) in cases.iter().enumerate() {
        let config = parse(yaml).unwrap();
        config.validate().unwrap();
        let bad = feed(&config, model(tweak), 10_000, i as u64);
        let v = bad.verdicts();
        assert_eq!(v.len(), 1, "{yaml}");
        assert_eq!(v[0].guardrail, *guardrail);
        assert_eq!(v[0].status, VerdictStatus::Fail, "{yaml}: {:#?}", v[0]);
        assert!(v[0].statistic >= v[0].statistic_threshold);
        assert_eq!(v[0].needs_more_requests, None);
        assert_eq!(bad.overall(), VerdictStatus::Fail);
        assert!(v[0].canary.n > 0 && v[0].control.n > 0, "{yaml}");

        let good = feed(&config, ArmModel::baseline(), 10_000, 100 + i as u64);
        let v = good.verdicts();
        assert_ne!(v[0].status, VerdictStatus::Fail, "{yaml}: {:#?}", v[0]);
        assert!(v[0].statistic < v[0].statistic_threshold);
    }
}

#[test]
fn verdicts_carry_their_evidence() {
    let m = feed(
        &GuardrailConfig::spec_default(),
        ArmModel::baseline(),
        30_000,
        5,
    );
    let v = m.verdicts();
    let names: Vec<&str> = v.iter().map(|v| v.guardrail.as_str()).collect();
    assert_eq!(
        names,
        [
            "error_rate.max",
            "error_rate.max_increase",
            "latency_p95_ms.max_increase",
            "tool_call_success.min",
            "refusal_rate.max_ratio",
            "eval_pass_rate.min",
            "cost_per_request.max_ratio"
        ]
    );
    let thresholds: Vec<&str> = v.iter().map(|v| v.threshold.as_str()).collect();
    assert_eq!(
        thresholds,
        [
            "<= 2%",
            "<= control + 1pp",
            "<= control + 200 ms",
            ">= 98%",
            "<= control x 1.5",
            ">= 95%",
            "<= control x 1.3"
        ]
    );
    for x in &v {
        // Identical arms: no harm is shown on most bounds; one whose canary happens to look
        // worse (here refusals, 2.2% vs 1.9%) or sits close to its bound (eval pass 96% against a
        // 95% floor) may still be gathering evidence, and says how much.
        assert_ne!(x.status, VerdictStatus::Fail, "{x:#?}");
        // Seven bounds share alpha = 1%; max_increase also pays for control's bound.
        let bar = if x.guardrail == "error_rate.max_increase" {
            1400.0
        } else {
            700.0
        };
        assert!((x.statistic_threshold - bar).abs() < 1e-6, "{x:#?}");
        assert!(x.canary.n > 400 && x.control.n > 400, "{x:#?}");
        assert!(!x.explanation.is_empty());
        // Every bound has a margin here, so `pass` is evidence of no harm, not silence.
        let (pe, pb) = (x.pass_statistic.unwrap(), x.pass_threshold.unwrap());
        if x.status == VerdictStatus::Pass {
            assert!(pe >= pb || x.passed_at_ms.is_some(), "{x:#?}");
        } else {
            assert!(x.needs_more_requests.is_some(), "{x:#?}");
        }
    }
    let passed = v.iter().filter(|x| x.status == VerdictStatus::Pass).count();
    assert!(passed >= 5, "{v:#?}");
    let lat = &v[2];
    assert!((lat.control.value / 2000.0 - 1.0).abs() < 0.1, "{lat:#?}");
    assert_ne!(m.overall(), VerdictStatus::Fail);
    let json = serde_json::to_value(&v[0]).unwrap();
    assert_eq!(json["status"], "pass");
}

#[test]
fn pending_below_min_samples_says_how_many_more() {
    let m = feed(
        &GuardrailConfig::spec_default(),
        ArmModel::baseline(),
        100,
        1,
    );
    assert_eq!(m.overall(), VerdictStatus::Pending);
    for v in m.verdicts() {
        assert_eq!(v.status, VerdictStatus::Pending, "{v:#?}");
        let need = v.needs_more_requests.unwrap();
        let gap = 200 - m.canary().requests;
        assert!(need >= gap, "{v:#?}");
    }
    // A clear regression is still pending below the minimum...
    let bad = model(|m| m.error_rate = 0.3);
    let m = feed(&GuardrailConfig::spec_default(), bad.clone(), 300, 2);
    let v = &m.verdicts()[0];
    assert_eq!(v.status, VerdictStatus::Pending);
    assert!(v.needs_more_requests.unwrap() > 0);
    // ...and fails once both arms have it.
    let m = feed(&GuardrailConfig::spec_default(), bad, 600, 2);
    assert_eq!(m.verdicts()[0].status, VerdictStatus::Fail);
}

#[test]
fn pending_while_suspicious_estimates_more_requests() {
    // Canary slightly worse than the 2% bound: point estimate beyond it, evidence not there yet.
    let config = parse("error_rate: {max: 2%}").unwrap();
    let m = feed(&config, model(|m| m.error_rate = 0.03), 1_000, 9);
    let v = &m.verdicts()[0];
    // Canary beyond the bound is never shown harmless; while undecided it says how much
    // more it needs (an early crossing may already have latched `fail`).
    if v.canary.value > 0.02 {
        assert_ne!(v.status, VerdictStatus::Pass, "{v:#?}");
    }
    if v.status == VerdictStatus::Pending {
        assert!(v.needs_more_requests.is_some(), "{v:#?}");
    }
}

#[test]
fn monitor_round_trips_through_json_with_identical_verdicts() {
    let config = GuardrailConfig::no_regression();
    let mut m = feed(&config, model(|m| m.error_rate = 0.015), 5_000, 21);
    let json = serde_json::to_string(&m).unwrap();
    let mut back: Monitor = serde_json::from_str(&json).unwrap();
    assert_eq!(back.verdicts(), m.verdicts());
    assert_eq!(back.config(), m.config());
    // And keeps accumulating the same evidence.
    let sc = Scenario::aa(vec![(0.5, 2_000)]);
    for e in sample_events(&sc, 22, 2_000, 0.5) {
        m.observe(&e);
        back.observe(&e);
    }
    assert_eq!(back.verdicts(), m.verdicts());
}

#[test]
fn killed_outcomes_are_ignored() {
    let mut m = Monitor::new(GuardrailConfig::spec_default());
    m.observe(&event(Arm::Killed, 10.0, 0.0));
    assert_eq!(m.canary().requests + m.control().requests, 0);
    m.observe(&event(Arm::Canary, 10.0, 0.0));
    m.observe(&event(Arm::Stable, 10.0, 0.0));
    assert_eq!((m.canary().requests, m.control().requests), (1, 1));
}

#[test]
fn burn_rate_alert_and_budget_warning() {
    for (hours, budget, alert, warning) in [
        (vec![1.0; 25], Some(30.0), false, false),
        (vec![1.0, 1.0, 1.0, 1.99], None, false, false),
        (vec![1.0, 1.0, 1.0, 2.0], None, true, false),
        (vec![1.0, 1.0, 1.0, 1.5], Some(30.0), false, false), // 36 = 1.2 x 30: not above
        (vec![1.0, 1.0, 1.0, 1.51], Some(30.0), false, true),
        (vec![2.0], Some(10.0), false, true),
        (vec![], Some(10.0), false, false),
        (vec![0.0, 0.0, 5.0], None, false, false),
    ] {
        let b = burn_rate(&hours, budget);
        assert_eq!(
            (b.alert, b.budget_warning),
            (alert, warning),
            "{hours:?} {b:?}"
        );
    }
    let b = burn_rate(&[1.0, 3.0, 4.0], Some(100.0));
    assert_eq!(b.moving_average, Some(2.0));
    assert_eq!(b.ratio, Some(2.0));
    assert!((b.projected_daily - 96.0).abs() < 1e-12);
    assert!(b.alert);
    // Only the last 24 hours before the current one count.
    let mut hours = vec![100.0; 10];
    hours.extend([1.0; 24]);
    hours.push(2.0);
    assert_eq!(burn_rate(&hours, None).moving_average, Some(1.0));
    serde_json::to_string(&b).unwrap();
}

// ----- latched verdicts ----------------------------------------------------------------------

fn latch_event(arm: Arm, error: bool, i: u64) -> OutcomeEvent {
    let mut e = latch_base(i);
    e.arm = arm;
    e.bundle = if arm == Arm::Canary {
        "support@2".into()
    } else {
        "support@1".into()
    };
    e.error =
        error.then(|| serde_json::from_value(serde_json::json!({"class": "permanent"})).unwrap());
    e
}

fn latch_base(i: u64) -> OutcomeEvent {
    serde_json::from_value(serde_json::json!({
        "request_id": format!("r-{i}"), "agent": "support", "env": "prod",
        "snapshot_version": 1, "bundle": "support@1", "arm": "stable", "latency_ms": 100.0
    }))
    .unwrap()
}

#[test]
fn a_fail_stays_failed_with_its_evidence_after_the_e_value_falls_back() {
    let config: GuardrailConfig = serde_json::from_value(serde_json::json!({
        "error_rate": {"max_ratio": 1.0},
        "settings": {"min_requests": 50}
    }))
    .unwrap();
    let mut m = Monitor::new(config);
    m.set_canary_share(0.5);
    let mut i = 0;
    // The canary errs every time, control never: the bound crosses its bar.
    while !m.any_fail() {
        i += 1;
        assert!(i < 10_000, "never failed");
        m.observe(&latch_event(Arm::Canary, true, i));
        m.observe(&latch_event(Arm::Stable, false, i + 1_000_000));
    }
    assert!(m.latch(42_000), "the first crossing latches");
    let at_crossing = m
        .verdicts()
        .into_iter()
        .find(|v| v.status == VerdictStatus::Fail)
        .unwrap();
    assert_eq!(at_crossing.latched_at_ms, Some(42_000));
    assert!(!m.latch(43_000), "a latch is taken once");

    // Then control errs far more: the live e-value falls back below the bar ...
    for k in 0..20_000 {
        m.observe(&latch_event(Arm::Stable, true, 2_000_000 + k));
    }
    let json = serde_json::to_string(&m).unwrap();
    // The same state without its latch shows what the live test says now.
    let unlatched: Monitor = serde_json::from_str(&strip_latches(&json)).unwrap();
    assert!(
        !unlatched.any_fail(),
        "the live e-value did not fall back; the test proves nothing"
    );

    // ... but the verdict stays the latched fail, with the evidence of the crossing,
    // and survives the store.
    let m: Monitor = serde_json::from_str(&json).unwrap();
    assert!(m.any_fail());
    assert_eq!(m.overall(), VerdictStatus::Fail);
    let v = m
        .verdicts()
        .into_iter()
        .find(|v| v.status == VerdictStatus::Fail)
        .unwrap();
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

/// A monitor's JSON with every latch removed (as a monitor stored before latching existed).
fn strip_latches(json: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    for t in v["tests"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("latched");
    }
    v.to_string()
}

/// Routes identical arms through a 1% -> 5% -> 25% ramp whose outcomes arrive one step late
/// (each step's outcomes are delivered after the next step began), and returns the e-value of
/// `tool_call_success.max_decrease` (zero tolerance) and whether any bound failed.
fn late_ramp(seed: u64, by_version: bool) -> (f64, bool) {
    let sc = Scenario::aa(vec![(0.5, 1)]);
    let mut m = Monitor::new(GuardrailConfig::no_regression());
    let steps = [(10_u64, 0.01), (20, 0.05), (30, 0.25)];
    let mut pending: Vec<OutcomeEvent> = Vec::new();
    for (i, (version, share)) in steps.iter().enumerate() {
        if by_version {
            m.set_canary_share_from(*version, *share);
        } else {
            m.set_canary_share(*share);
        }
        // The previous step's outcomes land now, in one batch, after the change.
        for e in pending.drain(..) {
            m.observe(&e);
        }
        m.latch(i as i64);
        pending = sample_events(&sc, seed * 10 + i as u64, 20_000, *share);
        for e in &mut pending {
            e.snapshot_version = *version;
        }
    }
    for e in pending.drain(..) {
        m.observe(&e);
    }
    m.latch(9);
    let tool = m
        .verdicts()
        .into_iter()
        .find(|v| v.guardrail == "tool_call_success.max_decrease")
        .unwrap();
    (tool.statistic, m.any_fail())
}

#[test]
fn late_outcomes_are_judged_at_the_weight_they_were_routed_under() {
    let mut fails = 0;
    let mut legacy_fails = 0;
    for seed in 0..12 {
        let (_, failed) = late_ramp(seed, true);
        fails += usize::from(failed);
        let (_, legacy) = late_ramp(seed, false);
        legacy_fails += usize::from(legacy);
    }
    // Attributing each outcome to its version's weight keeps identical arms clean; judging
    // late outcomes at the weight in force when they arrive makes canary look worse.
    assert_eq!(fails, 0);
    assert!(
        legacy_fails > 0,
        "the arrival-time share was not biased here"
    );
}

#[test]
fn outcomes_routed_before_the_release_are_counted_not_judged() {
    let sc = Scenario::aa(vec![(0.5, 1)]);
    let mut m = Monitor::new(GuardrailConfig::spec_default());
    m.set_canary_share_from(5, 0.0);
    m.set_canary_share_from(7, 0.1);
    let mut events = sample_events(&sc, 3, 300, 0.1);
    for e in &mut events {
        e.snapshot_version = 4;
    }
    for e in &events {
        m.observe(e);
    }
    assert_eq!(m.unattributed(), 300);
    assert_eq!(m.canary().requests + m.control().requests, 0);
    assert_eq!(m.share_since(9), Some(7));
    assert_eq!(m.share_since(6), Some(5));
    // The monitor's state, with its per-version shares, survives a restart.
    let back: Monitor = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back.share_since(9), Some(7));
    assert_eq!(back.unattributed(), 300);
}

/// Error rate 1% on control; canary's is `canary_rate`; judged against `max_increase: 2pp`.
fn margin_run(canary_rate: f64, seed: u64) -> (Option<usize>, Option<usize>) {
    let config = parse("error_rate: {max_increase: 2pp}").unwrap();
    let mut canary = ArmModel::baseline();
    canary.error_rate = canary_rate;
    let sc = Scenario {
        canary,
        ..Scenario::aa(vec![(0.5, 1)])
    };
    let mut m = Monitor::new(config);
    m.set_canary_share_from(1, 0.5);
    let (mut passed_at, mut failed_at) = (None, None);
    for (i, mut e) in sample_events(&sc, seed, 60_000, 0.5)
        .into_iter()
        .enumerate()
    {
        e.snapshot_version = 1;
        m.observe(&e);
        if i % 100 == 99 {
            m.latch(i as i64);
            match m.overall() {
                VerdictStatus::Pass if passed_at.is_none() => passed_at = Some(i),
                VerdictStatus::Fail if failed_at.is_none() => failed_at = Some(i),
                _ => {}
            }
        }
    }
    (passed_at, failed_at)
}

#[test]
fn a_canary_worse_by_less_than_the_margin_passes_and_by_more_never_does() {
    for seed in 0..3 {
        // +0.5pp against a 2pp margin: no harm is shown, and nothing fails.
        let (passed, failed) = margin_run(0.015, seed);
        assert!(
            passed.is_some() && failed.is_none(),
            "{passed:?} {failed:?}"
        );
        // +4pp: it fails and never passes (a fail wins even over a latched pass).
        let (passed, failed) = margin_run(0.05, seed);
        assert!(
            failed.is_some() && passed.is_none(),
            "{passed:?} {failed:?}"
        );
    }
}

#[test]
fn zero_tolerance_bounds_have_no_margin_to_show() {
    let m = feed(
        &GuardrailConfig::no_regression(),
        ArmModel::baseline(),
        4_000,
        2,
    );
    for v in m.verdicts() {
        assert!(
            v.pass_statistic.is_none() && v.pass_threshold.is_none(),
            "{v:#?}"
        );
        if v.status == VerdictStatus::Pass {
            assert!(v.explanation.contains("zero-tolerance"), "{v:#?}");
        }
    }
}

#[test]
fn zero_tolerance_passes_identical_arms_unless_evidence_of_harm_grows() {
    // Holding a zero-tolerance bound while the canary merely *looks* worse would hold
    // identical arms about half the time, for as long as a random walk keeps its sign;
    // holding on any e > 1 still held some for most of a release. The hold starts halfway
    // to the bar (e >= sqrt(bar)), which identical arms rarely reach (Ville).
    let config = GuardrailConfig::no_regression();
    let halfway = |v: &Verdict| v.statistic >= v.statistic_threshold.sqrt();
    let (mut total, mut pending) = (0, 0);
    for seed in 0..30 {
        let m = feed(&config, ArmModel::baseline(), 4_000, seed);
        for v in m.verdicts() {
            total += 1;
            if v.status == VerdictStatus::Pending {
                pending += 1;
                assert!(
                    halfway(&v),
                    "pending without evidence halfway to the bar: {v:#?}"
                );
            }
        }
    }
    assert!(
        pending * 50 <= total,
        "{pending} of {total} verdicts pending"
    );

    // A real regression too small to fail yet is held, not passed, once its evidence is
    // halfway to the bar.
    let worse = model(|m| m.error_rate *= 2.0);
    let mut held = 0;
    for seed in 0..20 {
        let m = feed(&config, worse.clone(), 3_000, 100 + seed);
        let v = &m.verdicts()[0];
        assert_eq!(v.guardrail, "error_rate.max_ratio", "{v:#?}");
        match v.status {
            VerdictStatus::Pending => held += 1,
            VerdictStatus::Pass => {
                assert!(!halfway(v) || v.canary.value <= v.control.value, "{v:#?}")
            }
            VerdictStatus::Fail => {}
        }
    }
    assert!(held > 0, "a growing regression was never held");
}

#[test]
fn a_zero_tolerance_hold_ends_when_no_control_traffic_can_resolve_it() {
    // At a final step routing everything to canary (no holdback) a hold could never end:
    // a release once stayed at its last step for 900,000 canary requests that way.
    let config = GuardrailConfig::no_regression();
    let worse = model(|m| m.error_rate *= 2.0);
    let mut m = (100..200)
        .map(|seed| feed(&config, worse.clone(), 3_000, seed))
        .find(|m| m.verdicts()[0].status == VerdictStatus::Pending)
        .expect("some seed holds the error bound");
    m.set_canary_share(1.0);
    let v = &m.verdicts()[0];
    assert_eq!(v.guardrail, "error_rate.max_ratio");
    assert_eq!(v.status, VerdictStatus::Pass, "{v:#?}");
    // With control traffic again (a holdback) the hold is back.
    m.set_canary_share(0.95);
    assert_eq!(m.verdicts()[0].status, VerdictStatus::Pending);
}

#[test]
fn a_shadow_bound_is_judged_and_reported_but_never_gates() {
    let config =
        parse("error_rate: {max_increase: 2pp}\nrefusal_rate: {max_ratio: 1.2, shadow: true}")
            .unwrap();
    let mut canary = ArmModel::baseline();
    canary.refusal_rate = 0.08;
    let m = feed(&config, canary, 20_000, 4);
    let v = m.verdicts();
    let refusal = v
        .iter()
        .find(|v| v.guardrail == "refusal_rate.max_ratio")
        .unwrap();
    assert!(refusal.shadow);
    assert_eq!(refusal.status, VerdictStatus::Fail, "{refusal:#?}");
    assert!(refusal.explanation.starts_with("(shadow"), "{refusal:#?}");
    // Judged at the share of alpha it would get if enforced: 1% over (1 gating + 1).
    assert!(
        (refusal.statistic_threshold - 200.0).abs() < 1e-6,
        "{refusal:#?}"
    );
    assert!(!m.any_fail());
    assert_eq!(m.first_fail(), None);
    assert_ne!(m.overall(), VerdictStatus::Fail);
    // The gating bound keeps the whole alpha.
    let error = v
        .iter()
        .find(|v| v.guardrail == "error_rate.max_increase")
        .unwrap();
    assert!(!error.shadow);
    assert!(
        (error.statistic_threshold - 200.0).abs() < 1e-6,
        "{error:#?}"
    );
}

#[test]
fn a_canary_erring_against_a_control_without_errors_fails_an_additive_bound() {
    // A clean control bounds its own rate; before, the additive test waited for the
    // control's first error and a canary failing one request in four never failed.
    let config = parse("error_rate: {max_increase: 2pp}\nsettings: {min_requests: 100}").unwrap();
    let mut m = Monitor::new(config);
    m.set_canary_share(0.5);
    for i in 0..400 {
        m.observe(&event(Arm::Stable, 100.0, 0.01));
        let mut e = event(Arm::Canary, 100.0, 0.01);
        if i % 4 == 0 {
            e.error = Some(OutcomeError {
                class: ErrorClass::Permanent,
                code: None,
            });
        }
        m.observe(&e);
    }
    assert!(m.latch(1), "{:?}", m.verdicts());
    assert_eq!(m.overall(), VerdictStatus::Fail);
}

/// A window of one request moves every test exactly as that request's event does: the window
/// path is the event path with its bets fixed per window.
#[test]
fn one_request_windows_judge_exactly_as_events() {
    use serin_core::outcome::{ArmWindow, OutcomeWindow};
    let configs = [
        GuardrailConfig::spec_default(),
        GuardrailConfig::no_regression(),
        parse(
            "error_rate: {max: 3%, max_ratio: 1.5}\nlatency_p95_ms: {max: 2500, max_ratio: 1.2}\n\
             refusal_rate: {max_increase: 1pp}\ntool_call_success: {max_decrease: 1pp}\n\
             eval_pass_rate: {max_decrease: 2pp}\ncost_per_request: {max_increase: 0.002}\n\
             settings: {min_requests: 50}",
        )
        .unwrap(),
    ];
    let sc = Scenario {
        canary: ArmModel {
            error_rate: 0.03,
            ..ArmModel::baseline()
        },
        ..Scenario::aa(vec![(0.3, 1)])
    };
    for config in configs {
        let mut by_event = Monitor::new(config.clone());
        let mut by_window = Monitor::new(config);
        for m in [&mut by_event, &mut by_window] {
            m.set_canary_share_from(1, 0.3);
            m.set_canary_share_from(3, 0.5);
        }
        for (i, mut e) in sample_events(&sc, 9, 6_000, 0.4).into_iter().enumerate() {
            e.snapshot_version = if i < 2_500 { 1 } else { 3 };
            e.bundle = if e.arm == Arm::Canary {
                "sim@2"
            } else {
                "sim@1"
            }
            .into();
            e.stages.clear();
            by_event.observe(&e);
            let mut part = ArmWindow::new(e.arm, e.bundle.clone());
            part.add(&e);
            let w = OutcomeWindow {
                window_id: format!("w{i}"),
                agent: "sim".into(),
                env: "sim".into(),
                snapshot_version: e.snapshot_version,
                instance: None,
                region: None,
                pool: None,
                at_ms: None,
                arms: vec![part],
            };
            by_window.observe_window(&w, "sim@2");
        }
        assert_eq!(
            serde_json::to_value(&by_event).unwrap(),
            serde_json::to_value(&by_window).unwrap()
        );
        assert!(
            by_event
                .verdicts()
                .iter()
                .any(|v| v.status != VerdictStatus::Pending)
        );
    }
}
