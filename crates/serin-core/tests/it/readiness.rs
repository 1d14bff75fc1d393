//! Readiness policies: the seed template, refusals naming their field, evidence rules and
//! the JSON Schema.

use std::collections::BTreeSet;

use serin_core::decision::Percent;
use serin_core::readiness::{
    BlockRule, BlockStatus, CATEGORIES, Evidence, EvidenceStatus, Policy, computed_items,
    parse_expiry, policy_json_schema, template, template_items,
};

#[test]
fn seed_template_parses_validates_and_has_thirty_checks_in_six_categories() {
    let text = template("seed-checklist").unwrap();
    let policy = Policy::parse_and_validate(&text).unwrap();

    let items = template_items();
    assert_eq!(items.len(), 30);
    let cats: BTreeSet<&str> = items.iter().map(|i| i.category).collect();
    assert_eq!(cats.len(), 6);
    for (cat, _) in CATEGORIES {
        assert_eq!(
            items.iter().filter(|i| i.category == cat).count(),
            5,
            "{cat}"
        );
    }
    let keys: BTreeSet<&str> = items.iter().map(|i| i.key).collect();
    assert_eq!(keys.len(), 30, "keys are unique");
    for item in items {
        assert!(
            serin_core::readiness::is_valid_key(item.key),
            "{}",
            item.key
        );
        if let Some(c) = item.computed {
            assert!(computed_items().iter().any(|ci| ci.key == c), "{c}");
        }
        // Every check is listed by the template policy, under require or warn.
        assert!(
            policy
                .require
                .iter()
                .chain(&policy.warn)
                .any(|k| k == item.key),
            "{} not in the template policy",
            item.key
        );
    }
    assert!(items.iter().filter(|i| i.computed.is_some()).count() >= 7);
    assert!(template("nope").is_none());
}

#[test]
fn template_validates_against_the_json_schema() {
    let text = template("seed-checklist").unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&policy_json_schema()).unwrap();
    assert!(validator.is_valid(&value));
    let bad = serde_json::json!({"require": ["x"], "surprise": 1});
    assert!(!validator.is_valid(&bad));
}

#[test]
fn schema_is_json_and_names_the_top_level_keys() {
    let schema = policy_json_schema();
    let text = serde_json::to_string_pretty(&schema).unwrap();
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    let props = back["properties"].as_object().unwrap();
    let names: BTreeSet<&str> = props.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "require",
            "warn",
            "block_if",
            "rollout_mode",
            "settings",
            "items"
        ])
    );
    assert_eq!(back["additionalProperties"], false);
}

#[test]
fn defaults() {
    let p = Policy::parse_and_validate("require: [candidate_pinned]").unwrap();
    assert_eq!(p.rollout_mode.max_exposure, Percent::parse("5%").unwrap());
    assert_eq!(p.settings.drill_max_age_days, 7);
    assert!((p.settings.trace_coverage_min - 0.95).abs() < 1e-12);
    assert!(!p.settings.eval_required);
    assert_eq!(Policy::parse_and_validate("").unwrap(), Policy::default());
}

#[test]
fn block_rules_parse_in_each_form_and_round_trip() {
    let p = Policy::parse_and_validate(
        "block_if:\n  - {item: dashboard_linked, status: fail}\n  - computed: rollback_target_warm\n  - evidence_missing: oncall_owner\nitems:\n  oncall_owner: {title: On-call owner named, category: operations, owner_hint: sre}\n",
    )
    .unwrap();
    assert_eq!(
        p.block_if,
        vec![
            BlockRule::ItemStatus {
                item: "dashboard_linked".into(),
                status: BlockStatus::Fail
            },
            BlockRule::Computed("rollback_target_warm".into()),
            BlockRule::EvidenceMissing("oncall_owner".into()),
        ]
    );
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(Policy::from_value(json).unwrap(), p);
}

/// `(yaml, code, pointer, message fragment)`: each refused, naming where.
const REFUSALS: &[(&str, &str, &str, &str)] = &[
    (
        "require: [candidate_pinned, not_a_thing]",
        "unknown_item",
        "/require/1",
        "not_a_thing",
    ),
    (
        "warn: [nope]",
        "unknown_item",
        "/warn/0",
        "never be evaluated",
    ),
    (
        "block_if: [{computed: imaginary}]",
        "unknown_item",
        "/block_if/0/computed",
        "imaginary",
    ),
    (
        "block_if: [{item: ghost, status: fail}]",
        "unknown_item",
        "/block_if/0/item",
        "ghost",
    ),
    (
        "block_if: [{evidence_missing: ghost}]",
        "unknown_item",
        "/block_if/0/evidence_missing",
        "ghost",
    ),
    (
        "block_if: [{computed: dashboard_linked}]",
        "invalid_policy",
        "/block_if/0/computed",
        "attested",
    ),
    (
        "block_if: [{evidence_missing: candidate_pinned}]",
        "invalid_policy",
        "/block_if/0/evidence_missing",
        "computed",
    ),
    (
        "block_if: [{item: candidate_pinned, status: expired}]",
        "invalid_policy",
        "/block_if/0/status",
        "never",
    ),
    (
        "block_if: [{item: candidate_pinned}]",
        "invalid_field",
        "/block_if/0",
        "status",
    ),
    (
        "block_if: [{computed: candidate_pinned, evidence_missing: dashboard_linked}]",
        "invalid_field",
        "/block_if/0",
        "exactly one",
    ),
    (
        "block_if: [{item: candidate_pinned, status: pass}]",
        "invalid_field",
        "/block_if/0/status",
        "pass",
    ),
    (
        "requires: [candidate_pinned]",
        "unknown_field",
        "/requires",
        "requires",
    ),
    (
        "rollout_mode: {initial: canary, max_exposur: 5%}",
        "unknown_field",
        "/rollout_mode/max_exposur",
        "max_exposur",
    ),
    (
        "rollout_mode: {max_exposure: 150%}",
        "invalid_field",
        "/rollout_mode/max_exposure",
        "150%",
    ),
    (
        "rollout_mode: {max_exposure: 0%}",
        "invalid_policy",
        "/rollout_mode/max_exposure",
        "above 0%",
    ),
    (
        "rollout_mode: {initial: dark}",
        "invalid_field",
        "/rollout_mode/initial",
        "dark",
    ),
    (
        "rollout_mode: {high_value_tenants: [acme, acme]}",
        "invalid_policy",
        "/rollout_mode/high_value_tenants/1",
        "twice",
    ),
    (
        "settings: {trace_coverage_min: 95}",
        "invalid_policy",
        "/settings/trace_coverage_min",
        "fraction",
    ),
    (
        "settings: {drill_max_age_days: 0}",
        "invalid_policy",
        "/settings/drill_max_age_days",
        "between",
    ),
    (
        "require: [candidate_pinned, candidate_pinned]",
        "invalid_policy",
        "/require/1",
        "/require/0",
    ),
    (
        "require: [dashboard_linked]\nwarn: [dashboard_linked]",
        "invalid_policy",
        "/warn/0",
        "/require/0",
    ),
    (
        "items: {Bad-Key: {title: t, category: c}}",
        "invalid_policy",
        "/items/Bad-Key",
        "snake_case",
    ),
    (
        "items: {trace_coverage: {title: t, category: c}}",
        "invalid_policy",
        "/items/trace_coverage",
        "computed",
    ),
    (
        "items: {oncall: {title: '  ', category: ops}}",
        "invalid_policy",
        "/items/oncall/title",
        "title",
    ),
    (
        "items: {oncall: {title: On-call}}",
        "missing_field",
        "/items/oncall",
        "category",
    ),
    ("require: [a", "invalid_yaml", "", ""),
];

#[test]
fn refusals_name_their_field() {
    for (yaml, code, pointer, fragment) in REFUSALS {
        let err = Policy::parse_and_validate(yaml).unwrap_err();
        assert_eq!(err.code, *code, "{yaml}: {err}");
        assert_eq!(err.pointer, *pointer, "{yaml}: {err}");
        assert!(err.message.contains(fragment), "{yaml}: {err}");
        if *code == "invalid_yaml" {
            assert!(err.location.is_some(), "{yaml}: {err}");
        }
    }
}

#[test]
fn custom_items_make_keys_known() {
    let yaml = "require: [oncall_owner]\nitems:\n  oncall_owner: {title: On-call owner named, category: operations}\n";
    Policy::parse_and_validate(yaml).unwrap();
    assert_eq!(
        Policy::parse_and_validate("require: [oncall_owner]")
            .unwrap_err()
            .pointer,
        "/require/0"
    );
}

fn evidence() -> Evidence {
    Evidence {
        key: "dashboard_linked".into(),
        status: EvidenceStatus::Pass,
        owner: "ana".into(),
        evidence: Some("https://grafana.example/d/support".into()),
        next_action: None,
        recorded_at_ms: 1_000,
        recorded_by: "ana@example.com".into(),
        expires_at_ms: Some(2_000),
    }
}

#[test]
fn evidence_validation() {
    evidence().validate().unwrap();
    let cases: Vec<(Evidence, &str)> = vec![
        (
            Evidence {
                owner: "  ".into(),
                ..evidence()
            },
            "owner",
        ),
        (
            Evidence {
                owner: String::new(),
                ..evidence()
            },
            "owner",
        ),
        (
            Evidence {
                key: "Dashboard".into(),
                ..evidence()
            },
            "key",
        ),
        (
            Evidence {
                recorded_by: String::new(),
                ..evidence()
            },
            "recorded_by",
        ),
        (
            Evidence {
                evidence: Some(String::new()),
                ..evidence()
            },
            "evidence",
        ),
        (
            Evidence {
                next_action: Some("a\u{7}b".into()),
                ..evidence()
            },
            "next_action",
        ),
        (
            Evidence {
                expires_at_ms: Some(1_000),
                ..evidence()
            },
            "expires_at_ms",
        ),
    ];
    for (e, field) in cases {
        assert_eq!(e.validate().unwrap_err().field, field, "{e:?}");
    }
}

#[test]
fn evidence_status_on_the_wire() {
    let mut json = serde_json::to_value(evidence()).unwrap();
    assert_eq!(json["status"], "pass");
    for (text, status) in [
        ("pass", EvidenceStatus::Pass),
        ("fail", EvidenceStatus::Fail),
        ("partial", EvidenceStatus::Partial),
        ("n/a", EvidenceStatus::NotApplicable),
    ] {
        json["status"] = text.into();
        let e: Evidence = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(e.status, status);
        assert_eq!(EvidenceStatus::parse(text), Some(status));
    }
    for bad in ["PASS", "na", "ok", "done"] {
        json["status"] = bad.into();
        assert!(
            serde_json::from_value::<Evidence>(json.clone()).is_err(),
            "{bad}"
        );
        assert_eq!(EvidenceStatus::parse(bad), None);
    }
}

#[test]
fn evidence_expiry() {
    let e = evidence();
    assert!(!e.is_expired(1_999));
    assert!(e.is_expired(2_000));
    assert!(
        !Evidence {
            expires_at_ms: None,
            ..evidence()
        }
        .is_expired(i64::MAX)
    );
}

#[test]
fn expiry_parsing() {
    const MIN: u64 = 60_000;
    for (text, ms) in [
        ("30m", 30 * MIN),
        ("5s", 5_000),
        ("12h", 12 * 60 * MIN),
        ("7d", 7 * 24 * 60 * MIN),
        (" 1d ", 24 * 60 * MIN),
        ("365d", 365 * 24 * 60 * MIN),
    ] {
        assert_eq!(parse_expiry(text).unwrap(), ms, "{text}");
    }
    for bad in [
        "",
        "7",
        "d",
        "0d",
        "-1d",
        "1.5h",
        "7w",
        "366d",
        "1h30m",
        "99999999999d",
    ] {
        assert!(parse_expiry(bad).is_err(), "{bad}");
    }
}

#[test]
fn committed_policy_json_schema_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/readiness-policy.schema.json");
    let mut generated =
        serde_json::to_string_pretty(&serin_core::readiness::policy_json_schema()).unwrap();
    generated.push('\n');
    if std::env::var_os("SERIN_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/readiness-policy.schema.json is stale; run `SERIN_UPDATE_SCHEMAS=1 cargo test -p serin-core committed_policy_json_schema_is_current`"
    );
}

#[test]
fn plan_facts_come_from_the_plan_and_its_guardrails() {
    use serin_core::readiness::{Axis, Facts};
    let plan = serin_core::release::Plan::parse_and_validate(
        "steps:\n  - canary: {weight: 2%, min_duration: 5m}\n\
         exclude_tenants: [bigcorp]\non_failure: halt\n\
         guardrails:\n  error_rate: {max: 5%}\n  latency_p95_ms: {max_increase: 200}\n",
    )
    .unwrap();
    let mut f = Facts::default();
    f.set_plan(&plan);
    assert_eq!(
        f.plan_axes,
        Some([Axis::Latency, Axis::Errors].into_iter().collect())
    );
    assert_eq!(f.plan_first_weight.unwrap().to_string(), "2%");
    assert_eq!(f.plan_on_failure_rollback, Some(false));
    assert!(f.plan_excluded_tenants.contains("bigcorp"));
    // Without a guardrails block the SPEC defaults apply, which watch all four axes.
    let plan = serin_core::release::Plan::parse_and_validate(
        "steps:\n  - canary: {weight: 1%, min_requests: 10}\n",
    )
    .unwrap();
    let mut f = Facts::default();
    f.set_plan(&plan);
    assert_eq!(f.plan_axes.unwrap().len(), 4);
    assert_eq!(f.plan_on_failure_rollback, Some(true));
}
