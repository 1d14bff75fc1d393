//! The post-promotion watch: plan validation, checkpoint timing and judgement.

use serin_core::guardrails::sim::{ArmModel, Scenario, sample_events};
use serin_core::guardrails::{ArmAggregate, GuardrailConfig};
use serin_core::release::watch::judge;
use serin_core::release::{CheckpointVerdict, Plan};

fn plan(watch: &str) -> Result<Plan, String> {
    Plan::parse_and_validate(&format!(
        "steps:\n  - canary: {{weight: 10%, min_requests: 10}}\nwatch: {watch}\n"
    ))
    .map_err(|e| e.to_string())
}

#[test]
fn a_watch_block_is_validated_with_pointers() {
    let p = plan("{checkpoints: [1h, 24h, 72h], rollback_within: 24h}").unwrap();
    let w = p.watch.unwrap();
    assert_eq!(w.due_ms(1_000, 0), Some(1_000 + 3_600_000));
    assert_eq!(w.due_ms(1_000, 2), Some(1_000 + 72 * 3_600_000));
    assert_eq!(w.due_ms(1_000, 3), None);
    assert!(w.may_roll_back(0, 24 * 3_600_000));
    assert!(!w.may_roll_back(0, 24 * 3_600_000 + 1));
    for (bad, pointer) in [
        ("{checkpoints: []}", "/watch/checkpoints"),
        ("{checkpoints: [2h, 1h]}", "/watch/checkpoints/1"),
        ("{checkpoints: [0s]}", "/watch/checkpoints/0"),
        ("{checkpoints: [31d]}", "/watch/checkpoints/0"),
        (
            "{checkpoints: [1h], rollback_within: 40d}",
            "/watch/rollback_within",
        ),
        ("{checkpoints: [1h], when: 2h}", "/watch"),
    ] {
        let err = plan(bad).unwrap_err();
        assert!(err.contains(pointer), "{bad}: {err}");
    }
}

fn aggregate(model: ArmModel, seed: u64, n: usize) -> ArmAggregate {
    let sc = Scenario {
        canary: model,
        ..Scenario::aa(vec![(1.0, 1)])
    };
    let mut agg = ArmAggregate::default();
    for e in sample_events(&sc, seed, n, 1.0) {
        agg.record(&e);
    }
    agg
}

#[test]
fn a_checkpoint_finds_a_clear_regression_and_not_an_unchanged_stable() {
    let config = GuardrailConfig::spec_default();
    let baseline = aggregate(ArmModel::baseline(), 1, 20_000);
    let same = aggregate(ArmModel::baseline(), 2, 5_000);
    let (verdict, findings) = judge(&config, &baseline, &same, 200);
    assert_eq!(verdict, CheckpointVerdict::Ok, "{findings:#?}");
    assert!(findings.iter().all(|f| !f.breached), "{findings:#?}");

    let mut worse = ArmModel::baseline();
    worse.error_rate = 0.08;
    let bad = aggregate(worse.clone(), 3, 5_000);
    let (verdict, findings) = judge(&config, &baseline, &bad, 200);
    assert_eq!(verdict, CheckpointVerdict::Breach);
    let f = findings
        .iter()
        .find(|f| f.guardrail == "error_rate.max_increase")
        .unwrap();
    assert!(
        f.breached && f.current > 0.06 && f.baseline < 0.02,
        "{f:#?}"
    );
    assert!(f.how.contains("lower bound"), "{f:#?}");

    // Too little traffic since completion: reported, never acted on.
    let few = aggregate(worse, 4, 50);
    let (verdict, _) = judge(&config, &baseline, &few, 200);
    assert_eq!(verdict, CheckpointVerdict::InsufficientData);
}

#[test]
fn a_shadow_rule_is_reported_but_never_makes_a_breach() {
    let config: GuardrailConfig = serde_json::from_value(
        serde_json::json!({"error_rate": {"max_increase": "1pp", "shadow": true}}),
    )
    .unwrap();
    config.validate().unwrap();
    let baseline = aggregate(ArmModel::baseline(), 1, 20_000);
    let mut worse = ArmModel::baseline();
    worse.error_rate = 0.08;
    let (verdict, findings) = judge(&config, &baseline, &aggregate(worse, 3, 5_000), 200);
    assert_eq!(verdict, CheckpointVerdict::Ok);
    assert!(
        findings.iter().any(|f| f.breached && f.shadow),
        "{findings:#?}"
    );
}
