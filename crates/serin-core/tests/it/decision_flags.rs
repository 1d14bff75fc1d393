//! Flags: each evaluation branch, rule order, shares, and what validation refuses.

use serde_json::{Value, json};
use serin_core::decision::{
    Attribute, CompiledSnapshot, Context, EnvState, Flag, FlagReason, Percent, Snapshot, bucket,
    validate_flag,
};

fn flag(v: Value) -> Flag {
    serde_json::from_value(v).unwrap()
}

fn compiled(flags: Vec<Flag>) -> CompiledSnapshot {
    let snap = Snapshot {
        env: "prod".into(),
        version: 3,
        published_at_ms: 0,
        agents: Default::default(),
        flags: flags.into_iter().map(|f| (f.key.clone(), f)).collect(),
        bundles: Default::default(),
    };
    CompiledSnapshot::compile(snap).unwrap()
}

struct Req {
    user: Option<&'static str>,
    tenant: Option<&'static str>,
    workload: Option<&'static str>,
    region: Option<&'static str>,
}

const R: Req = Req {
    user: None,
    tenant: None,
    workload: None,
    region: None,
};

impl Req {
    fn ctx(&self) -> Context<'static> {
        Context {
            request_id: "req-1",
            user: self.user,
            tenant: self.tenant,
            workload: self.workload,
            region: self.region,
            instance: None,
            pool: None,
        }
    }
}

/// Evaluates `f` for `req` and compares `value code | reason sentence`.
fn check(f: Value, req: Req, expect: &str) {
    let f = flag(f);
    let key = f.key.clone();
    let snap = compiled(vec![f]);
    let c = req.ctx();
    let e = snap.flag(&key, &c).unwrap();
    assert_eq!(e.key, key);
    let got = format!("{} {} | {}", e.value, e.reason.code(), e.reason);
    assert_eq!(got, expect);
    assert_eq!(e.on, e.value == &snap.snapshot().flags[&key].on);
}

fn b(key: &str, unit: &str) -> u16 {
    bucket(key, unit)
}

#[test]
fn each_evaluation_branch_gives_its_value_and_reason() {
    let lists = json!({
        "key": "support.fast-path", "on": "fast", "off": "slow",
        "allow": {"users": ["vip", "both-ways"], "tenants": ["acme"]},
        "deny": {"tenants": ["initech"], "workloads": ["batch"]},
        "rollout": "0%"
    });
    check(
        json!({"key": "support.off", "enabled": false, "allow": {"users": ["vip"]}}),
        Req {
            user: Some("vip"),
            ..R
        },
        "false disabled | the flag is disabled: off",
    );
    check(
        lists.clone(),
        Req {
            user: Some("vip"),
            tenant: Some("initech"),
            ..R
        },
        r#""slow" denied | the tenant is on the deny list: off"#,
    );
    check(
        lists.clone(),
        Req {
            user: Some("vip"),
            workload: Some("batch"),
            ..R
        },
        r#""slow" denied | the workload is on the deny list: off"#,
    );
    check(
        lists.clone(),
        Req {
            user: Some("vip"),
            ..R
        },
        r#""fast" allowed | the user is on the allow list: on"#,
    );
    check(
        lists.clone(),
        Req {
            user: Some("nobody"),
            tenant: Some("acme"),
            ..R
        },
        r#""fast" allowed | the tenant is on the allow list: on"#,
    );
    check(
        lists,
        Req {
            user: Some("nobody"),
            ..R
        },
        &format!(
            r#""slow" rollout | no rule matched; bucket {} >= 0 (0%): off"#,
            b("support.fast-path", "nobody")
        ),
    );
    let k = "support.rules";
    let rules = json!({
        "key": k, "rollout": "100%",
        "rules": [
            {"attribute": "region", "op": "not_in", "values": ["eu-west-1"], "rollout": "0%"},
            {"attribute": "tenant", "op": "in", "values": ["acme"]}
        ]
    });
    check(
        rules.clone(),
        Req {
            user: Some("u1"),
            region: Some("us-east-1"),
            ..R
        },
        &format!(
            "false rule | rule 0 matched; bucket {} >= 0 (0%): off",
            b(k, "u1")
        ),
    );
    check(
        rules.clone(),
        Req {
            user: Some("u1"),
            region: Some("eu-west-1"),
            tenant: Some("acme"),
            ..R
        },
        &format!(
            "true rule | rule 1 matched; bucket {} < 10000 (100%): on",
            b(k, "u1")
        ),
    );
    // A request without the rule's attribute matches neither `in` nor `not_in`.
    check(
        rules,
        Req {
            user: Some("u1"),
            ..R
        },
        &format!(
            "true rollout | no rule matched; bucket {} < 10000 (100%): on",
            b(k, "u1")
        ),
    );
}

#[test]
fn the_first_matching_rule_decides_even_if_a_later_one_would_say_otherwise() {
    let f = json!({
        "key": "support.order", "rollout": "0%",
        "rules": [
            {"attribute": "tenant", "op": "in", "values": ["acme"], "rollout": "0%"},
            {"attribute": "user", "op": "in", "values": ["u1"], "rollout": "100%"}
        ]
    });
    check(
        f.clone(),
        Req {
            user: Some("u1"),
            tenant: Some("acme"),
            ..R
        },
        &format!(
            "false rule | rule 0 matched; bucket {} >= 0 (0%): off",
            b("support.order", "u1")
        ),
    );
    check(
        f,
        Req {
            user: Some("u1"),
            tenant: Some("globex"),
            ..R
        },
        &format!(
            "true rule | rule 1 matched; bucket {} < 10000 (100%): on",
            b("support.order", "u1")
        ),
    );
}

#[test]
fn deny_wins_over_allow_across_attributes() {
    let f = json!({"key": "support.x", "allow": {"users": ["u1"]}, "deny": {"tenants": ["acme"]}});
    let snap = compiled(vec![flag(f)]);
    let c = Req {
        user: Some("u1"),
        tenant: Some("acme"),
        ..R
    }
    .ctx();
    let e = snap.flag("support.x", &c).unwrap();
    assert_eq!(
        (e.on, e.reason),
        (false, FlagReason::Denied(Attribute::Tenant))
    );
}

#[test]
fn a_rollout_turns_on_its_share_of_users_and_sticks_by_tenant_when_asked() {
    let snap = compiled(vec![
        flag(json!({"key": "support.half", "rollout": "50%"})),
        flag(json!({"key": "support.tenanted", "rollout": "20%", "stickiness": "tenant"})),
    ]);
    let n = 20_000;
    let users: Vec<String> = (0..n).map(|i| format!("user-{i}")).collect();
    let on = users
        .iter()
        .filter(|u| {
            let c = Context {
                request_id: "r",
                user: Some(u),
                ..Context::default()
            };
            snap.flag("support.half", &c).unwrap().on
        })
        .count() as f64;
    let sigma = (f64::from(n) * 0.25).sqrt();
    assert!((on - f64::from(n) / 2.0).abs() < 5.0 * sigma, "{on}");
    for t in ["acme", "globex", "initech", "umbrella"] {
        let expect = bucket("support.tenanted", t) < 2_000;
        for u in users.iter().take(20) {
            let c = Context {
                request_id: "r",
                user: Some(u),
                tenant: Some(t),
                ..Context::default()
            };
            assert_eq!(snap.flag("support.tenanted", &c).unwrap().on, expect, "{t}");
        }
    }
}

#[test]
fn agent_flags_are_the_flags_prefixed_by_the_agent_in_key_order() {
    let snap = compiled(vec![
        flag(json!({"key": "support.b"})),
        flag(json!({"key": "support.a", "enabled": false})),
        flag(json!({"key": "supportive.c"})),
        flag(json!({"key": "billing.d"})),
        flag(json!({"key": "global"})),
    ]);
    let c = Context {
        request_id: "r",
        ..Context::default()
    };
    let got: Vec<(&str, bool)> = snap
        .agent_flags("support", &c)
        .map(|e| (e.key, e.on))
        .collect();
    assert_eq!(got, [("support.a", false), ("support.b", true)]);
    assert_eq!(snap.agent_flags("nobody", &c).count(), 0);
    assert!(snap.flag("missing", &c).is_none());
    assert!(snap.flag("global", &c).unwrap().on);
}

#[test]
fn flag_reasons_serialize_with_their_code() {
    let check = |r: FlagReason, expect: Value| assert_eq!(serde_json::to_value(r).unwrap(), expect);
    check(FlagReason::Disabled, json!({"code": "disabled"}));
    check(
        FlagReason::Denied(Attribute::Workload),
        json!({"code": "denied", "attribute": "workload"}),
    );
    check(
        FlagReason::Rule {
            index: 1,
            bucket: 42,
            rollout: Percent::parse("12.5%").unwrap(),
        },
        json!({"code": "rule", "index": 1, "bucket": 42, "rollout": "12.5%"}),
    );
}

/// Validates `f` and compares `pointer | message`.
fn check_invalid(f: Value, expect: &str) {
    let f = flag(f);
    let err = validate_flag(&f).unwrap_err();
    assert_eq!(format!("{} | {}", err.pointer(), err), expect);
    // The same refusal through a command.
    let err = EnvState::default()
        .apply(&serin_core::decision::Command::SetFlag(f))
        .unwrap_err();
    assert_eq!(err.to_string(), expect.split(" | ").nth(1).unwrap());
}

#[test]
fn validation_refuses_flags_that_cannot_do_what_they_say() {
    check_invalid(
        json!({"key": "Support.X"}),
        r#"/key | flag key "Support.X" is invalid: must match [a-z0-9][a-z0-9._-]{0,127}."#,
    );
    check_invalid(
        json!({"key": "support.x", "description": "d".repeat(501)}),
        "/description | The description of flag support.x has 501 characters; at most 500 are allowed.",
    );
    check_invalid(
        json!({"key": "support.x", "rules": [
            {"attribute": "tenant", "op": "in", "values": ["acme"]},
            {"attribute": "user", "op": "in", "values": []}
        ]}),
        "/rules/1/values | Rule 1 of flag support.x (user in) has no values, so it can never match.",
    );
    check_invalid(
        json!({"key": "support.x", "rules": [{"attribute": "region", "op": "not_in", "values": []}]}),
        "/rules/0/values | Rule 0 of flag support.x (region not_in) has no values, so it matches every request that has the attribute; use the flag-wide rollout instead.",
    );
    check_invalid(
        json!({"key": "support.x", "rules": [
            {"attribute": "tenant", "op": "in", "values": ["acme", "globex"], "rollout": "10%"},
            {"attribute": "user", "op": "in", "values": ["u1"]},
            {"attribute": "tenant", "op": "in", "values": ["acme"], "rollout": "90%"}
        ]}),
        "/rules/2 | Rule 2 of flag support.x can never match: rule 0 matches every request it would, and the first matching rule decides.",
    );
    check_invalid(
        json!({"key": "support.x", "rules": [
            {"attribute": "region", "op": "not_in", "values": ["eu"]},
            {"attribute": "region", "op": "not_in", "values": ["eu", "us"]}
        ]}),
        "/rules/1 | Rule 1 of flag support.x can never match: rule 0 matches every request it would, and the first matching rule decides.",
    );
    check_invalid(
        json!({"key": "support.x", "allow": {"users": ["a", "b"]}, "deny": {"users": ["b"]}}),
        r#"/allow/users | Flag support.x both allows and denies user "b"; deny would win, so remove it from one of the lists."#,
    );
}

#[test]
fn validation_accepts_rules_that_can_still_match() {
    for f in [
        json!({"key": "support.x", "description": "é".repeat(500)}),
        json!({"key": "support.x", "rules": [
            {"attribute": "tenant", "op": "in", "values": ["acme"]},
            {"attribute": "tenant", "op": "in", "values": ["acme", "globex"]},
            {"attribute": "tenant", "op": "not_in", "values": ["acme"]},
            {"attribute": "user", "op": "in", "values": ["acme"]}
        ]}),
        json!({"key": "support.x", "allow": {"users": ["a"]}, "deny": {"tenants": ["a"]}}),
    ] {
        assert_eq!(validate_flag(&flag(f.clone())), Ok(()), "{f}");
    }
}
