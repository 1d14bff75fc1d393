//! Readiness evaluation: required vs warn items, evidence expiry, block rules, and every
//! computed item passing and failing with its explanation.

use std::collections::BTreeSet;

use serin_core::decision::Percent;
use serin_core::readiness::{
    Axis, EvalResult, Evidence, EvidenceStatus, Facts, ItemResult, ItemStatus, Level, Policy,
    Report, Source, computed_items, evaluate, template,
};

const DAY: i64 = 24 * 60 * 60 * 1000;
const NOW: i64 = 100 * DAY;

/// Facts under which every computed item passes.
fn good_facts() -> Facts {
    Facts {
        candidate_pinned: Some(true),
        candidate_alias: Some("gpt-4.1-2025-04-14".into()),
        previous_stable: Some("support@3".into()),
        last_successful_drill_ms: Some(NOW - 2 * DAY),
        plan_axes: Some(Axis::ALL.into_iter().collect()),
        plan_first_weight: Some(Percent::parse("1%").unwrap()),
        plan_on_failure_rollback: Some(true),
        plan_excluded_tenants: BTreeSet::from(["bigcorp".to_owned()]),
        eval_result: Some(EvalResult {
            set: "regression".into(),
            score: 0.93,
            threshold: 0.9,
            digest_matches: true,
        }),
        trace_coverage: Some((980, 1000)),
        now_ms: NOW,
    }
}

fn attest(key: &str, status: EvidenceStatus) -> Evidence {
    Evidence {
        key: key.into(),
        status,
        owner: "ana".into(),
        evidence: Some(format!("https://wiki.example/{key}")),
        next_action: None,
        recorded_at_ms: NOW - DAY,
        recorded_by: "ana@example.com".into(),
        expires_at_ms: None,
    }
}

fn policy(yaml: &str) -> Policy {
    Policy::parse_and_validate(yaml).unwrap()
}

fn item<'r>(report: &'r Report, key: &str) -> &'r ItemResult {
    report
        .items
        .iter()
        .find(|i| i.key == key)
        .unwrap_or_else(|| panic!("{key} not in report"))
}

const SMALL: &str = "require: [candidate_pinned, rollback_runbook_commands, dashboard_linked]\nwarn: [changelog_drafted]\nrollout_mode: {high_value_tenants: [bigcorp]}\n";

#[test]
fn all_pass_is_ready() {
    let p = policy(SMALL);
    let ev = [
        attest("rollback_runbook_commands", EvidenceStatus::Pass),
        attest("dashboard_linked", EvidenceStatus::Pass),
        attest("changelog_drafted", EvidenceStatus::Pass),
    ];
    let r = evaluate(&p, &ev, &good_facts());
    assert!(r.ready, "{}", r.verdict);
    assert!(r.blocked_by.is_empty());
    assert_eq!(r.verdict, "ready: all 3 required items pass");
    let keys: Vec<&str> = r.items.iter().take(4).map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "candidate_pinned",
            "rollback_runbook_commands",
            "dashboard_linked",
            "changelog_drafted"
        ]
    );
    let d = item(&r, "dashboard_linked");
    assert_eq!(d.level, Level::Required);
    assert_eq!(d.source, Source::Attested);
    assert_eq!(d.owner.as_deref(), Some("ana"));
    assert_eq!(d.category, "monitoring");
    // Unlisted computed items are shown as info and never affect readiness.
    assert_eq!(item(&r, "trace_coverage").level, Level::Info);
    // The report serializes for --output json.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["items"][0]["status"], "pass");
    assert_eq!(json["items"][0]["source"], "computed");
    assert_eq!(json["items"][0]["level"], "required");
}

#[test]
fn the_seed_template_is_ready_when_everything_is_attested() {
    let p = policy(&template("seed-checklist").unwrap());
    let ev: Vec<Evidence> = serin_core::readiness::template_items()
        .iter()
        .filter(|t| t.computed.is_none())
        .map(|t| attest(t.key, EvidenceStatus::Pass))
        .collect();
    let r = evaluate(&p, &ev, &good_facts());
    assert!(r.ready, "{} {:?}", r.verdict, r.blocked_by);
    assert_eq!(
        r.items
            .iter()
            .filter(|i| i.level == Level::Required)
            .count(),
        29
    );
    // Nothing attested: not ready, every attested item missing with a next action.
    let r = evaluate(&p, &[], &good_facts());
    assert!(!r.ready);
    assert_eq!(r.unmet().count(), 21);
    assert!(
        r.verdict
            .starts_with("not ready: 21 of 29 required items do not pass (")
    );
    assert!(r.verdict.contains("+16 more"), "{}", r.verdict);
}

#[test]
fn missing_required_attested_item_is_not_ready_with_a_next_action() {
    let p = policy(SMALL);
    let ev = [attest("dashboard_linked", EvidenceStatus::Pass)];
    let r = evaluate(&p, &ev, &good_facts());
    assert!(!r.ready);
    assert_eq!(
        r.verdict,
        "not ready: 1 of 3 required items do not pass (rollback_runbook_commands); 1 warning"
    );
    let i = item(&r, "rollback_runbook_commands");
    assert_eq!(i.status, ItemStatus::Missing);
    assert_eq!(i.owner, None);
    let next = i.next_action.as_deref().unwrap();
    assert!(
        next.contains("serin evidence set") && next.contains("rollback_runbook_commands"),
        "{next}"
    );
}

#[test]
fn owner_hint_of_custom_items_shows_in_the_next_action() {
    let p = policy(
        "require: [oncall_owner]\nitems:\n  oncall_owner: {title: On-call owner named, category: operations, owner_hint: sre-team}\n",
    );
    let r = evaluate(&p, &[], &good_facts());
    let i = item(&r, "oncall_owner");
    assert_eq!(i.title, "On-call owner named");
    assert_eq!(i.category, "operations");
    assert!(i.next_action.as_deref().unwrap().contains("sre-team"));
}

#[test]
fn expired_evidence_counts_as_missing() {
    let p = policy("require: [dashboard_linked]");
    let mut e = attest("dashboard_linked", EvidenceStatus::Pass);
    e.expires_at_ms = Some(NOW);
    let r = evaluate(&p, &[e.clone()], &good_facts());
    assert!(!r.ready);
    let i = item(&r, "dashboard_linked");
    assert_eq!(i.status, ItemStatus::Expired);
    assert!(i.next_action.as_deref().unwrap().contains("expired"));
    e.expires_at_ms = Some(NOW + 1);
    assert!(evaluate(&p, &[e], &good_facts()).ready);
}

#[test]
fn newest_evidence_wins() {
    let p = policy("require: [dashboard_linked]");
    let mut old = attest("dashboard_linked", EvidenceStatus::Pass);
    old.recorded_at_ms = NOW - 3 * DAY;
    let mut new = attest("dashboard_linked", EvidenceStatus::Fail);
    new.next_action = Some("link the new dashboard".into());
    let r = evaluate(&p, &[new.clone(), old.clone()], &good_facts());
    let i = item(&r, "dashboard_linked");
    assert_eq!(i.status, ItemStatus::Fail);
    assert_eq!(i.next_action.as_deref(), Some("link the new dashboard"));
    new.recorded_at_ms = NOW - 4 * DAY;
    assert!(evaluate(&p, &[new, old], &good_facts()).ready);
}

#[test]
fn attested_statuses_against_require() {
    let p = policy("require: [changelog_drafted]");
    for (status, ready) in [
        (EvidenceStatus::Pass, true),
        (EvidenceStatus::NotApplicable, true),
        (EvidenceStatus::Partial, false),
        (EvidenceStatus::Fail, false),
    ] {
        let r = evaluate(&p, &[attest("changelog_drafted", status)], &good_facts());
        assert_eq!(r.ready, ready, "{status}");
        if !ready {
            assert!(item(&r, "changelog_drafted").next_action.is_some());
        }
    }
}

#[test]
fn computed_n_a_does_not_satisfy_require() {
    // eval_required false and no eval: n/a, which counts as pass only for attested items.
    let p = policy("require: [offline_eval_passed]");
    let facts = Facts {
        eval_result: None,
        ..good_facts()
    };
    let r = evaluate(&p, &[], &facts);
    assert_eq!(item(&r, "offline_eval_passed").status, ItemStatus::Missing);
    assert!(!r.ready);
    let r = evaluate(&policy("warn: [offline_eval_passed]"), &[], &facts);
    assert_eq!(
        item(&r, "offline_eval_passed").status,
        ItemStatus::NotApplicable
    );
    assert!(r.ready);
    assert!(!item(&r, "offline_eval_passed").passes());
}

#[test]
fn eval_required_and_shadow_add_required_items() {
    let p = policy("settings: {eval_required: true}\nrollout_mode: {initial: shadow}");
    let facts = Facts {
        eval_result: None,
        ..good_facts()
    };
    let r = evaluate(&p, &[], &facts);
    assert!(!r.ready);
    assert_eq!(item(&r, "offline_eval_passed").level, Level::Required);
    assert_eq!(item(&r, "offline_eval_passed").status, ItemStatus::Missing);
    assert_eq!(item(&r, "shadow_period_completed").level, Level::Required);
    let ev = [attest("shadow_period_completed", EvidenceStatus::Pass)];
    assert!(evaluate(&p, &ev, &good_facts()).ready);
}

#[test]
fn warn_items_never_block() {
    let p = policy("warn: [dashboard_linked, trace_coverage, rollback_target_warm]");
    let facts = Facts {
        previous_stable: None,
        trace_coverage: Some((1, 100)),
        ..good_facts()
    };
    let r = evaluate(
        &p,
        &[attest("dashboard_linked", EvidenceStatus::Fail)],
        &facts,
    );
    assert!(r.ready, "{}", r.verdict);
    assert_eq!(r.warnings().count(), 3);
    assert_eq!(r.verdict, "ready: all 0 required items pass; 3 warnings");
}

#[test]
fn block_rules_fire() {
    let yaml = "block_if:\n  - computed: rollback_target_warm\n  - {item: red_team_report_attached, status: fail}\n  - evidence_missing: rollback_runbook_commands\n";
    let p = policy(yaml);
    let ev = [
        attest("red_team_report_attached", EvidenceStatus::Pass),
        attest("rollback_runbook_commands", EvidenceStatus::Fail),
    ];
    let r = evaluate(&p, &ev, &good_facts());
    assert!(r.ready, "{:?}", r.blocked_by);

    let facts = Facts {
        previous_stable: None,
        ..good_facts()
    };
    let ev = [attest("red_team_report_attached", EvidenceStatus::Fail)];
    let r = evaluate(&p, &ev, &facts);
    assert!(!r.ready);
    assert_eq!(r.blocked_by.len(), 3, "{:?}", r.blocked_by);
    assert!(
        r.blocked_by[0].starts_with(
            "block_if/0 (computed: rollback_target_warm): rollback_target_warm is fail: "
        ),
        "{}",
        r.blocked_by[0]
    );
    assert_eq!(
        r.blocked_by[1],
        "block_if/1 (item: red_team_report_attached, status: fail): red_team_report_attached is fail"
    );
    assert_eq!(
        r.blocked_by[2],
        "block_if/2 (evidence_missing: rollback_runbook_commands): rollback_runbook_commands is missing"
    );
    assert_eq!(r.verdict, "not ready: blocked by 3 rules");
    // Items named only by a rule are shown as info.
    assert_eq!(item(&r, "red_team_report_attached").level, Level::Info);

    // Expired evidence is missing evidence.
    let mut e = attest("rollback_runbook_commands", EvidenceStatus::Pass);
    e.expires_at_ms = Some(NOW - 1);
    let r = evaluate(
        &policy("block_if: [{evidence_missing: rollback_runbook_commands}]"),
        &[e],
        &good_facts(),
    );
    assert_eq!(r.blocked_by.len(), 1);
}

/// `(computed key, facts that fail it, status, fragment of the failing `how`, fragment of
/// the passing `how` under good_facts())`.
type Case = (
    &'static str,
    fn(&mut Facts),
    ItemStatus,
    &'static str,
    &'static str,
);

const COMPUTED_CASES: &[Case] = &[
    (
        "candidate_pinned",
        |f| f.candidate_pinned = Some(false),
        ItemStatus::Fail,
        "moving alias",
        "pins model \"gpt-4.1-2025-04-14\" to a dated snapshot",
    ),
    (
        "candidate_pinned",
        |f| f.candidate_pinned = None,
        ItemStatus::Missing,
        "unknown",
        "dated snapshot",
    ),
    (
        "rollback_target_warm",
        |f| f.previous_stable = None,
        ItemStatus::Fail,
        "no previous stable bundle",
        "support@3 is the previous stable bundle",
    ),
    (
        "rollback_drill_recent",
        |f| f.last_successful_drill_ms = Some(NOW - 12 * DAY),
        ItemStatus::Fail,
        "12d ago, older than the 7d limit",
        "2d ago (limit 7d)",
    ),
    (
        "rollback_drill_recent",
        |f| f.last_successful_drill_ms = None,
        ItemStatus::Fail,
        "no successful rollback drill",
        "2d ago",
    ),
    (
        "guardrails_four_axes",
        |f| {
            f.plan_axes = Some(
                [Axis::Errors, Axis::Latency, Axis::Cost]
                    .into_iter()
                    .collect(),
            )
        },
        ItemStatus::Partial,
        "plan guardrails cover latency, cost, errors; eval missing",
        "plan guardrails cover eval, latency, cost, errors",
    ),
    (
        "guardrails_four_axes",
        |f| f.plan_axes = Some(BTreeSet::new()),
        ItemStatus::Fail,
        "no axis",
        "cover eval",
    ),
    (
        "guardrails_four_axes",
        |f| f.plan_axes = None,
        ItemStatus::Missing,
        "no release plan",
        "cover eval",
    ),
    (
        "initial_exposure_bounded",
        |f| f.plan_first_weight = Some(Percent::parse("10%").unwrap()),
        ItemStatus::Fail,
        "sends 10% to the candidate, above the 5% cap",
        "sends 1% to the candidate (cap 5%)",
    ),
    (
        "auto_rollback_wired",
        |f| f.plan_on_failure_rollback = Some(false),
        ItemStatus::Fail,
        "halts when a gate fails",
        "rolls back by itself",
    ),
    (
        "high_value_tenants_excluded",
        |f| f.plan_excluded_tenants.clear(),
        ItemStatus::Fail,
        "does not exclude high-value tenant(s) bigcorp",
        "excludes every high-value tenant (bigcorp)",
    ),
    (
        "offline_eval_passed",
        |f| f.eval_result.as_mut().unwrap().score = 0.8,
        ItemStatus::Fail,
        "scored 0.8, below its threshold 0.9",
        "set \"regression\" scored 0.93 (threshold 0.9)",
    ),
    (
        "offline_eval_passed",
        |f| f.eval_result.as_mut().unwrap().digest_matches = false,
        ItemStatus::Fail,
        "different bundle digest",
        "scored 0.93",
    ),
    (
        "trace_coverage",
        |f| f.trace_coverage = Some((900, 1000)),
        ItemStatus::Fail,
        "900 of 1000 outcomes carry a trace (90.0%, minimum 95.0%)",
        "980 of 1000 outcomes carry a trace (98.0%, minimum 95.0%)",
    ),
    (
        "trace_coverage",
        |f| f.trace_coverage = Some((0, 0)),
        ItemStatus::Missing,
        "no outcomes",
        "98.0%",
    ),
];

#[test]
fn each_computed_item_passes_and_fails_with_its_explanation() {
    let p =
        policy("rollout_mode: {high_value_tenants: [bigcorp]}\nsettings: {eval_required: true}");
    let good = evaluate(&p, &[], &good_facts());
    let mut covered = BTreeSet::new();
    for (key, spoil, status, fail_how, pass_how) in COMPUTED_CASES {
        covered.insert(*key);
        let g = item(&good, key);
        assert_eq!(g.status, ItemStatus::Pass, "{key}: {:?}", g.how);
        assert_eq!(g.source, Source::Computed);
        assert!(
            g.how.as_deref().unwrap().contains(pass_how),
            "{key}: {:?}",
            g.how
        );

        let mut facts = good_facts();
        spoil(&mut facts);
        let r = evaluate(
            &policy(&format!(
                "require: [{key}]\nrollout_mode: {{high_value_tenants: [bigcorp]}}"
            )),
            &[],
            &facts,
        );
        let i = item(&r, key);
        assert_eq!(i.status, *status, "{key}: {:?}", i.how);
        assert!(
            i.how.as_deref().unwrap().contains(fail_how),
            "{key}: {:?}",
            i.how
        );
        assert!(i.next_action.is_some(), "{key}");
        assert!(!r.ready, "{key}");
    }
    let all: BTreeSet<&str> = computed_items().iter().map(|c| c.key).collect();
    assert_eq!(covered, all);
}

#[test]
fn computed_items_ignore_evidence() {
    let p = policy("require: [rollback_target_warm]");
    let facts = Facts {
        previous_stable: None,
        ..good_facts()
    };
    let r = evaluate(
        &p,
        &[attest("rollback_target_warm", EvidenceStatus::Pass)],
        &facts,
    );
    assert!(!r.ready);
}

#[test]
fn policy_thresholds_apply() {
    let p = policy(
        "require: [rollback_drill_recent, trace_coverage, initial_exposure_bounded]\nrollout_mode: {max_exposure: 10%}\nsettings: {drill_max_age_days: 14, trace_coverage_min: 0.5}",
    );
    let facts = Facts {
        last_successful_drill_ms: Some(NOW - 12 * DAY),
        trace_coverage: Some((600, 1000)),
        plan_first_weight: Some(Percent::parse("10%").unwrap()),
        ..good_facts()
    };
    assert!(evaluate(&p, &[], &facts).ready);
}
