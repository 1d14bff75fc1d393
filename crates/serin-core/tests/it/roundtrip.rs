//! Everything the store persists as JSON round-trips: encode, decode, encode gives the same
//! text, for generated values with empty and extreme parts (zero counts, huge counts, f64
//! extremes, empty maps, long strings). And rows written by earlier code (an empty sketch's
//! bounds as `null`) still read.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use serin_core::decision::bench_support::bundle_ref;
use serin_core::decision::{Command, EnvState, Kill};
use serin_core::guardrails::{
    ArmAggregate, GuardrailConfig, MetricValue, Monitor, Sketch, Verdict, VerdictStatus,
};
use serin_core::outcome::OutcomeEvent;
use serin_core::readiness::{GateOverride, GateRecord, Policy, template};
use serin_core::release::{
    CheckpointResult, CheckpointVerdict, Event, Failure, Finding, Notification, Plan, Release,
    WatchState,
};

/// encode → decode → encode gives the same text; returns the decoded value.
fn roundtrip<T: Serialize + DeserializeOwned>(v: &T) -> T {
    let first = serde_json::to_string(v).unwrap();
    let back: T =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("does not read back: {e}\n{first}"));
    let second = serde_json::to_string(&back).unwrap();
    assert_eq!(first, second);
    back
}

/// Values a latency, cost or stage can take, extremes first.
fn amount() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(f64::MIN_POSITIVE),
        Just(1e-300),
        Just(3_600_000.0),
        Just(1_000.0),
        0.0f64..5_000.0,
    ]
}

/// Any finite float, extremes included, for sums and totals.
fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(f64::EPSILON),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ]
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(u64::MAX), Just(1u64 << 53), any::<u64>()]
}

fn sketch() -> impl Strategy<Value = Sketch> {
    prop::collection::vec(amount(), 0..40).prop_map(|vs| {
        let mut s = Sketch::default();
        for v in vs {
            s.add(v);
        }
        s
    })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_]{1,8}", "\\PC{1,300}"]
}

prop_compose! {
    fn aggregate()(
        counts in prop::collection::vec(count(), 14),
        sums in prop::collection::vec(finite(), 3),
        latency in sketch(),
        cost in sketch(),
        stages in prop::collection::btree_map(name(), sketch(), 0..4),
    ) -> ArmAggregate {
        ArmAggregate {
            requests: counts[0],
            traced: counts[1],
            errors: counts[2],
            errors_transient: counts[3],
            errors_permanent: counts[4],
            errors_external: counts[5],
            tool_calls_ok: counts[6],
            tool_calls_failed: counts[7],
            refusals: counts[8],
            eval_samples: counts[9],
            eval_passed: counts[10],
            eval_score_sum: sums[0],
            cost_usd_sum: sums[1],
            latency_ms_sum: sums[2],
            tokens_input: counts[11],
            tokens_output: counts[12],
            latency,
            stages,
            cost,
        }
    }
}

prop_compose! {
    fn event()(
        i in 0u32..1_000_000,
        canary in any::<bool>(),
        latency in amount(),
        cost in prop_oneof![Just(0.0), Just(1_000.0), 0.0f64..2.0],
        error in prop::option::of(prop_oneof![Just("transient"), Just("permanent"), Just("external")]),
        refused in any::<bool>(),
        tools in (0u64..5, 0u64..5),
        eval in prop::option::of((any::<bool>(), 0.0f64..=1.0)),
        stage in prop::option::of(amount()),
    ) -> OutcomeEvent {
        let mut v = json!({
            "request_id": format!("r{i}"), "agent": "support", "env": "prod",
            "snapshot_version": 1, "bundle": if canary { "support@2" } else { "support@1" },
            "arm": if canary { "canary" } else { "stable" }, "user": format!("u{i}"),
            "latency_ms": latency, "cost_usd": cost, "refused": refused,
            "tool_calls": {"ok": tools.0, "failed": tools.1},
        });
        if let Some(class) = error {
            v["error"] = json!({ "class": class });
        }
        if let Some((passed, score)) = eval {
            v["eval"] = json!({ "passed": passed, "score": score });
        }
        if let Some(s) = stage {
            v["stages"] = json!({ "llm": s });
        }
        serde_json::from_value(v).unwrap()
    }
}

/// Guardrail configs as a plan would give them, from empty to every bound.
fn config() -> impl Strategy<Value = GuardrailConfig> {
    let share = prop_oneof![Just("0%"), Just("5%"), Just("100%"), Just("0.001%")];
    let points = prop_oneof![Just("0pp"), Just("2pp"), Just("100pp")];
    let ratio = prop_oneof![Just(1.0), Just(1.5), Just(1e6)];
    let ms = prop_oneof![Just(0.0), Just(1.0), Just(3_600_000.0), Just(1e12)];
    (
        prop::option::of((share.clone(), points.clone(), ratio.clone())),
        prop::option::of((ms.clone(), ms.clone(), ratio.clone())),
        prop::option::of((share.clone(), points.clone())),
        prop::option::of((share, points, ratio.clone())),
        prop::option::of((ms.clone(), ms, ratio)),
        (
            1u64..100_000,
            prop_oneof![Just("1%"), Just("0.1%"), Just("10%")],
        ),
    )
        .prop_map(|(err, lat, tool, refusal, cost, (min_requests, alpha))| {
            let mut v = json!({ "settings": { "min_requests": min_requests, "alpha": alpha } });
            if let Some((max, inc, ratio)) = err {
                v["error_rate"] = json!({ "max": max, "max_increase": inc, "max_ratio": ratio });
            }
            if let Some((max, inc, ratio)) = lat {
                v["latency_p95_ms"] =
                    json!({ "max": max, "max_increase": inc, "max_ratio": ratio });
            }
            if let Some((min, dec)) = tool {
                v["tool_call_success"] = json!({ "min": min, "max_decrease": dec });
            }
            if let Some((max, inc, ratio)) = refusal {
                v["refusal_rate"] = json!({ "max": max, "max_increase": inc, "max_ratio": ratio });
            }
            if let Some((max, inc, ratio)) = cost {
                v["cost_per_request"] =
                    json!({ "max": max, "max_increase": inc, "max_ratio": ratio });
            }
            serde_json::from_value(v).unwrap()
        })
}

/// Plans with and without the per-step requirement and the holdback.
fn plan() -> impl Strategy<Value = Plan> {
    let require = prop_oneof![
        Just(""),
        Just(", require: pass"),
        Just(", require: no_fail")
    ];
    (require, prop::option::of(1u32..=10)).prop_map(|(require, holdback)| {
        let (last, holdback) = match holdback {
            Some(h) => ("100%".to_owned(), format!("holdback: {h}%\n")),
            None => ("50%".to_owned(), String::new()),
        };
        Plan::parse_and_validate(&format!(
            "steps:\n  - canary: {{weight: 1%, min_duration: 1s, min_requests: 10{require}}}\n  - canary: {{weight: {last}, min_duration: 1s, min_requests: 10}}\n\
             exclude_tenants: [bigcorp]\nstickiness: user\nnotify: [{{webhook: \"https://hooks.example.com/x\"}}]\n\
             guardrails:\n  error_rate: {{max: 5%}}\n{holdback}",
        ))
        .unwrap()
    })
}

/// Verdicts as a monitor gives them, with the extremes a stored release must survive:
/// e-values that overflowed, NaN, latches, shadow bounds, the non-inferiority fields.
fn verdict() -> impl Strategy<Value = Verdict> {
    let stat = prop_oneof![
        Just(0.0),
        Just(f64::INFINITY),
        Just(f64::NAN),
        Just(f64::MAX),
        0.0f64..1e6,
    ];
    (
        prop_oneof![Just("error_rate.max".to_owned()), name()],
        prop_oneof![
            Just(VerdictStatus::Pass),
            Just(VerdictStatus::Pending),
            Just(VerdictStatus::Fail),
        ],
        (count(), count(), finite(), finite()),
        (stat.clone(), stat.clone(), prop::option::of(stat)),
        (
            prop::option::of(count()),
            prop::option::of(any::<i64>()),
            any::<bool>(),
            prop::option::of(any::<i64>()),
        ),
    )
        .prop_map(
            |(
                guardrail,
                status,
                (cn, sn, cv, sv),
                (e, bar, pass_e),
                (needs, latched, shadow, passed),
            )| {
                Verdict {
                    guardrail,
                    status,
                    canary: MetricValue { value: cv, n: cn },
                    control: MetricValue { value: sv, n: sn },
                    threshold: "<= control + 1pp".into(),
                    statistic: e,
                    statistic_threshold: bar,
                    needs_more_requests: needs,
                    explanation: "because".into(),
                    latched_at_ms: latched,
                    shadow,
                    pass_statistic: pass_e,
                    pass_threshold: pass_e.map(|_| 400.0),
                    passed_at_ms: passed,
                }
            },
        )
}

fn finding() -> impl Strategy<Value = Finding> {
    (
        "[a-z_.]{0,30}",
        ".{0,20}",
        finite(),
        any::<u64>(),
        finite(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(guardrail, threshold, baseline, baseline_n, current, current_n, breached, shadow)| {
                Finding {
                    guardrail,
                    threshold,
                    baseline,
                    baseline_n,
                    current,
                    current_n,
                    breached,
                    shadow,
                    how: "point estimates".into(),
                }
            },
        )
}

fn watch_state() -> impl Strategy<Value = WatchState> {
    let result = (
        0usize..10,
        any::<i64>(),
        any::<i64>(),
        prop_oneof![
            Just(CheckpointVerdict::Ok),
            Just(CheckpointVerdict::Breach),
            Just(CheckpointVerdict::InsufficientData),
            Just(CheckpointVerdict::Superseded),
        ],
        prop::collection::vec(finding(), 0..4),
        prop_oneof![Just("none".to_owned()), Just("rolled_back".to_owned())],
    )
        .prop_map(
            |(checkpoint, due_ms, at_ms, verdict, findings, action)| CheckpointResult {
                checkpoint,
                due_ms,
                at_ms,
                verdict,
                findings,
                action,
            },
        );
    (
        any::<i64>(),
        prop::collection::vec(result, 0..4),
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(completed_ms, results, next_due_ms)| WatchState {
            completed_ms,
            results,
            next_due_ms,
        })
}

fn release_event() -> impl Strategy<Value = Event> {
    let statuses = prop::collection::vec(verdict(), 0..3).boxed();
    prop_oneof![
        Just(Event::Start {
            actor: "alex".into()
        }),
        (count(), statuses.clone()).prop_map(|(canary_requests, verdicts)| Event::Tick {
            canary_requests,
            verdicts,
            waves: Vec::new(),
        }),
        (count(), statuses, any::<bool>(), name()).prop_map(|(n, verdicts, force, reason)| {
            Event::Promote {
                actor: "alex".into(),
                force,
                reason: Some(reason),
                canary_requests: n,
                verdicts,
                waves: Vec::new(),
            }
        }),
        prop::option::of(name()).prop_map(|reason| Event::Pause {
            actor: "alex".into(),
            reason
        }),
        Just(Event::Resume {
            actor: "alex".into()
        }),
        name().prop_map(|reason| Event::Abort {
            actor: "alex".into(),
            reason
        }),
        name().prop_map(|reason| Event::Rollback {
            actor: "alex".into(),
            reason
        }),
    ]
}

prop_compose! {
    fn gate_record()(
        at in any::<i64>(),
        version in prop::option::of(any::<i64>()),
        ready in any::<bool>(),
        verdict in name(),
        unmet in prop::collection::vec(name(), 0..3),
        blocked_by in prop::collection::vec(name(), 0..3),
        warnings in prop::collection::vec(name(), 0..3),
        over in prop::option::of((name(), name())),
    ) -> GateRecord {
        GateRecord {
            evaluated_at_ms: at,
            policy_version: version,
            ready,
            verdict,
            unmet,
            blocked_by,
            warnings,
            gate_override: over.map(|(by, reason)| GateOverride { by, reason }),
            items: Vec::new(),
        }
    }
}

fn env_command() -> impl Strategy<Value = Command> {
    let agent = prop_oneof![Just("support".to_owned()), Just("billing".to_owned())];
    prop_oneof![
        (agent.clone(), 1u64..6).prop_map(|(agent, n)| Command::Deploy {
            bundle: bundle_ref(&agent, n),
            agent,
        }),
        agent.clone().prop_map(|agent| Command::Rollback { agent }),
        (
            agent.clone(),
            prop::option::of("[a-z0-9-]{1,64}"),
            name(),
            any::<i64>()
        )
            .prop_map(|(agent, tenant, reason, at_ms)| Command::Kill {
                agent,
                tenant,
                kill: Kill {
                    reason,
                    actor: "alex".into(),
                    at_ms,
                },
            }),
        (agent, prop::option::of("[a-z0-9-]{1,64}"))
            .prop_map(|(agent, tenant)| Command::Unkill { agent, tenant }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sketches_round_trip_empty_or_not(s in sketch()) {
        let back = roundtrip(&s);
        prop_assert_eq!(back.count(), s.count());
        for q in [0.0, 0.5, 0.99, 1.0] {
            prop_assert_eq!(back.quantile(q), s.quantile(q));
        }
    }

    #[test]
    fn arm_aggregates_round_trip_with_extreme_counts_and_sums(a in aggregate()) {
        let back = roundtrip(&a);
        prop_assert_eq!(back.requests, a.requests);
        prop_assert_eq!(back.cost_usd_sum.to_bits(), a.cost_usd_sum.to_bits());
        prop_assert_eq!(back.stages.len(), a.stages.len());
    }

    #[test]
    fn merged_aggregates_round_trip(a in aggregate(), b in aggregate()) {
        let mut a = a;
        // Counts that would overflow are not what merging is for; keep them summable.
        let clamp = |x: &mut ArmAggregate| {
            x.requests >>= 2;
            x.traced >>= 2;
            x.errors >>= 2; x.errors_transient >>= 2; x.errors_permanent >>= 2;
            x.errors_external >>= 2; x.tool_calls_ok >>= 2; x.tool_calls_failed >>= 2;
            x.refusals >>= 2; x.eval_samples >>= 2; x.eval_passed >>= 2;
            x.tokens_input >>= 2; x.tokens_output >>= 2;
            x.eval_score_sum /= 4.0; x.cost_usd_sum /= 4.0; x.latency_ms_sum /= 4.0;
        };
        let mut b = b;
        clamp(&mut a);
        clamp(&mut b);
        a.merge(&b);
        roundtrip(&a);
    }

    #[test]
    fn monitors_round_trip_before_and_after_any_traffic(
        config in config(),
        events in prop::collection::vec(event(), 0..60),
        share in prop::option::of(prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0]),
    ) {
        let mut m = Monitor::new(config);
        roundtrip(&m);
        if let Some(s) = share {
            m.set_canary_share(s);
        }
        for e in &events {
            m.observe(e);
        }
        let back = roundtrip(&m);
        // The evidence resumes exactly where it was.
        prop_assert_eq!(back.verdicts(), m.verdicts());
    }

    #[test]
    fn guardrail_configs_round_trip(c in config()) {
        roundtrip(&c);
    }

    #[test]
    fn env_states_round_trip_after_any_commands(cmds in prop::collection::vec(env_command(), 0..20)) {
        let mut st = EnvState::default();
        roundtrip(&st);
        for c in &cmds {
            if let Ok(next) = st.apply(c) {
                st = next;
            }
        }
        let back: EnvState = roundtrip(&st);
        prop_assert_eq!(back, st);
    }

    #[test]
    fn releases_round_trip_through_any_events(
        events in prop::collection::vec(release_event(), 0..12),
        gate in prop::option::of(gate_record()),
        watch in prop::option::of(watch_state()),
        t in prop_oneof![Just(0i64), Just(1_700_000_000_000i64), Just(i64::MAX / 4)],
        plan in plan(),
    ) {
        let mut r = Release::new(
            "r-1", "support", "prod", bundle_ref("support", 2), bundle_ref("support", 1),
            plan, t, "alex",
        );
        r.readiness = gate;
        r.watch = watch;
        roundtrip(&r);
        for (i, e) in events.iter().enumerate() {
            let at = t + i as i64 * 1000;
            if let Ok((mut next, mut effects)) = r.apply(e, at) {
                // What the controller stores: the transition's evidence, also in its
                // notifications (which are stored in the webhook outbox).
                let (requests, verdicts) = e.evidence().unwrap_or((0, &[]));
                next.attach_evidence(&r, &mut effects, at, requests, verdicts, e.wave_evidence());
                for effect in &effects {
                    if let serin_core::release::Effect::Notify(n) = effect {
                        let back: Notification = roundtrip(n.as_ref());
                        prop_assert_eq!(&back, n.as_ref());
                    }
                }
                r = next;
            }
            let back: Release = roundtrip(&r);
            prop_assert_eq!(&back, &r);
        }
    }

    #[test]
    fn failures_round_trip_from_any_failing_verdict(v in verdict()) {
        let f = Failure::from_verdict(&v);
        let back: Failure = roundtrip(&f);
        prop_assert_eq!(back, f);
    }

    #[test]
    fn watch_states_round_trip(w in watch_state()) {
        let back: WatchState = roundtrip(&w);
        prop_assert_eq!(back, w);
    }

    #[test]
    fn gate_records_round_trip(g in gate_record()) {
        let back: GateRecord = roundtrip(&g);
        prop_assert_eq!(back, g);
    }
}

#[test]
fn readiness_policies_round_trip_from_empty_to_the_full_template() {
    let full = Policy::parse_and_validate(&template("seed-checklist").unwrap()).unwrap();
    for p in [Policy::default(), full] {
        let back: Policy = roundtrip(&p);
        assert_eq!(back, p);
    }
}

/// What the derived encoding wrote for an empty sketch (bounds as `null`), as found in
/// stores written before the explicit encoding.
fn old_empty_sketch() -> Value {
    let mut v = serde_json::to_value(&Sketch::default().0).unwrap();
    assert_eq!((&v["min"], &v["max"]), (&Value::Null, &Value::Null));
    v["sum"] = json!(0.0);
    v
}

#[test]
fn an_empty_sketch_written_by_the_old_encoding_reads_as_empty() {
    let s: Sketch = serde_json::from_value(old_empty_sketch()).unwrap();
    assert_eq!(s.count(), 0);
    assert_eq!(s.quantile(0.5), None);
    let again = serde_json::to_value(&s).unwrap();
    assert_eq!(
        (&again["min"], &again["max"]),
        (&json!("inf"), &json!("-inf"))
    );
    // And it still merges as an empty sketch.
    let mut one = Sketch::default();
    one.add(7.0);
    let mut merged = s.clone();
    merged.merge(&one);
    assert_eq!(merged.0.min(), Some(7.0));
    assert_eq!(merged.0.max(), Some(7.0));
}

#[test]
fn a_monitor_written_by_the_old_encoding_with_empty_arms_loads() {
    let mut m = Monitor::new(GuardrailConfig::spec_default());
    let e: OutcomeEvent = serde_json::from_value(json!({
        "request_id": "r1", "agent": "support", "env": "prod", "snapshot_version": 1,
        "bundle": "support@2", "arm": "canary", "latency_ms": 10.0, "cost_usd": 0.0,
    }))
    .unwrap();
    m.observe(&e);
    // Rewrite every explicit bound of an empty sketch the way the old code wrote it.
    let mut v = serde_json::to_value(&m).unwrap();
    fn to_null(v: &mut Value) -> usize {
        match v {
            Value::Object(map) => {
                let mut n = 0;
                for (k, x) in map.iter_mut() {
                    if (k == "min" || k == "max") && (x == "inf" || x == "-inf") {
                        *x = Value::Null;
                        n += 1;
                    } else {
                        n += to_null(x);
                    }
                }
                n
            }
            Value::Array(xs) => xs.iter_mut().map(to_null).sum(),
            _ => 0,
        }
    }
    assert!(
        to_null(&mut v) >= 2,
        "the control arm's sketches are empty: {v}"
    );
    let back: Monitor = serde_json::from_value(v).unwrap();
    assert_eq!(back.verdicts(), m.verdicts());
    assert_eq!(back.canary().requests, 1);
}

#[test]
fn non_finite_sketch_fields_are_written_as_strings_not_null() {
    let text = serde_json::to_string(&Sketch::default()).unwrap();
    assert!(!text.contains("null"), "{text}");
    let back: Sketch = serde_json::from_str(&text).unwrap();
    assert_eq!(back.0.min(), None);
    for bad in [r#""infinity""#, "true", "[1]"] {
        let mut v = serde_json::to_value(Sketch::default()).unwrap();
        v["min"] = serde_json::from_str(bad).unwrap();
        assert!(serde_json::from_value::<Sketch>(v).is_err(), "{bad}");
    }
}

#[test]
fn stage_maps_with_many_long_names_round_trip() {
    let mut a = ArmAggregate::default();
    let mut stages = BTreeMap::new();
    for i in 0..32 {
        let mut s = Sketch::default();
        s.add(f64::from(i));
        stages.insert(format!("{}{i}", "stage-".repeat(100)), s);
    }
    a.stages = stages;
    roundtrip(&a);
}
