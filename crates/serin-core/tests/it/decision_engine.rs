//! The hot path: which arm and bundle a request gets, and why.

use std::collections::{HashMap, HashSet};

use serin_core::decision::bench_support::{bundle, bundle_ref};
use serin_core::decision::{
    Arm, Command, CompileError, CompiledSnapshot, Context, DecideError, EnvState, Kill, Percent,
    Reason, ReleaseRouting, Snapshot, Stickiness, Unit, bucket,
};

fn pct(s: &str) -> Percent {
    Percent::parse(s).unwrap()
}

fn kill() -> Kill {
    Kill {
        reason: "incident 7".into(),
        actor: "ops@example.com".into(),
        at_ms: 1,
    }
}

fn ctx<'a>(request_id: &'a str, user: Option<&'a str>, tenant: Option<&'a str>) -> Context<'a> {
    Context {
        request_id,
        user,
        tenant,
        ..Context::default()
    }
}

/// Applies commands in order to an empty env, panicking with the failing command.
fn state(cmds: &[Command]) -> EnvState {
    cmds.iter().fold(EnvState::default(), |s, c| {
        s.apply(c).unwrap_or_else(|e| panic!("{c:?}: {e}"))
    })
}

fn deploy(agent: &str, n: u64) -> Command {
    Command::Deploy {
        agent: agent.into(),
        bundle: bundle_ref(agent, n),
    }
}

fn release(weight: &str, stickiness: Stickiness, exclude: &[&str]) -> Command {
    Command::SetRelease {
        agent: "support".into(),
        release: Some(ReleaseRouting {
            id: "r-12".into(),
            candidate: bundle_ref("support", 3),
            weight: pct(weight),
            stickiness,
            exclude_tenants: exclude.iter().map(|t| t.to_string()).collect(),
            waves: Vec::new(),
        }),
    }
}

fn kill_cmd(tenant: Option<&str>) -> Command {
    Command::Kill {
        agent: "support".into(),
        tenant: tenant.map(Into::into),
        kill: kill(),
    }
}

/// Compiles the snapshot of `s`, carrying every bundle it references.
fn compile(s: &EnvState) -> CompiledSnapshot {
    CompiledSnapshot::compile(snapshot_of(s)).unwrap()
}

fn snapshot_of(s: &EnvState) -> Snapshot {
    let bundles = s
        .referenced_bundles()
        .into_iter()
        .map(|id| {
            let (agent, n) = id.split_once('@').unwrap();
            let b = bundle(agent, n.parse().unwrap());
            (id, b)
        })
        .collect();
    s.snapshot("prod", 7, 1_000, bundles)
}

/// `support@2` stable with a release of `support@3`.
fn releasing(weight: &str, stickiness: Stickiness, exclude: &[&str]) -> EnvState {
    state(&[
        deploy("support", 1),
        deploy("support", 2),
        release(weight, stickiness, exclude),
    ])
}

/// Decides for `support` and renders `arm bundle code | explanation`.
fn check(s: &EnvState, c: Context<'_>, expect: &str) {
    let compiled = compile(s);
    let d = compiled.decide("support", &c).unwrap();
    assert_eq!(d.snapshot_version, 7);
    assert_eq!(d.bundle.is_none(), d.arm == Arm::Killed);
    let got = format!(
        "{:?} {} {} | {}",
        d.arm,
        d.bundle.map_or("-", |b| b.id.as_str()),
        d.reason.code(),
        d.explain(&c)
    );
    assert_eq!(got, expect);
}

#[test]
fn each_branch_of_the_decision_order_names_its_arm_bundle_and_reason() {
    let u = |user: &str| bucket("r-12", user);
    // Find users on each side of 10%.
    let canary_user = (0..)
        .map(|i| format!("user-{i}"))
        .find(|x| u(x) < 1_000)
        .unwrap();
    let stable_user = (0..)
        .map(|i| format!("user-{i}"))
        .find(|x| u(x) >= 1_000)
        .unwrap();
    let s = releasing("10%", Stickiness::User, &["acme"]);
    check(
        &s,
        ctx("q1", Some(&canary_user), Some("globex")),
        &format!(
            "Canary support@3 canary_bucket | user bucket {} < 1000 (10%) of release r-12: canary",
            u(&canary_user)
        ),
    );
    check(
        &s,
        ctx("q1", Some(&stable_user), Some("globex")),
        &format!(
            "Stable support@2 stable_bucket | user bucket {} >= 1000 (10%) of release r-12: stable",
            u(&stable_user)
        ),
    );
    check(
        &s,
        ctx("q1", Some(&canary_user), Some("acme")),
        "Stable support@2 tenant_excluded | tenant acme is excluded from release r-12: stable",
    );
    let no_release = state(&[deploy("support", 1), deploy("support", 2)]);
    check(
        &no_release,
        ctx("q1", Some("u"), None),
        "Stable support@2 no_release | no release in progress: stable",
    );
    let killed = s.apply(&kill_cmd(None)).unwrap();
    check(
        &killed,
        ctx("q1", Some(&canary_user), Some("acme")),
        "Killed - kill_switch | the agent is switched off (kill switch): killed",
    );
    let tenant_killed = s.apply(&kill_cmd(Some("acme"))).unwrap();
    check(
        &tenant_killed,
        ctx("q1", Some(&canary_user), Some("acme")),
        "Killed - tenant_killed | the agent is switched off for tenant acme: killed",
    );
    check(
        &tenant_killed,
        ctx("q1", Some(&canary_user), Some("globex")),
        &format!(
            "Canary support@3 canary_bucket | user bucket {} < 1000 (10%) of release r-12: canary",
            u(&canary_user)
        ),
    );
}

#[test]
fn a_missing_stickiness_key_falls_back_to_the_request_id_and_says_so() {
    let s = releasing("50%", Stickiness::User, &[]);
    let compiled = compile(&s);
    for req in ["req-1", "req-2", "req-3", "req-4"] {
        let c = ctx(req, None, Some("globex"));
        let d = compiled.decide("support", &c).unwrap();
        let b = bucket("r-12", req);
        let unit = Unit {
            by: Stickiness::User,
            fell_back_to_request: true,
        };
        let weight = pct("50%");
        let expect = if b < 5_000 {
            Reason::Canary {
                bucket: b,
                weight,
                unit,
            }
        } else {
            Reason::Stable {
                bucket: b,
                weight,
                unit,
            }
        };
        assert_eq!(d.reason, expect);
        assert!(
            d.reason.to_string().starts_with(&format!(
                "user missing; bucketed by request id: request bucket {b} "
            )),
            "{}",
            d.reason
        );
    }
}

#[test]
fn stickiness_keeps_a_unit_on_one_arm_across_requests() {
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let tenants: Vec<String> = (0..200).map(|i| format!("tenant-{i}")).collect();
    // By user: one user, many requests and tenants, one arm; the bucket is the user's.
    let by_user = compile(&releasing("30%", Stickiness::User, &[]));
    for u in &users {
        let arms: HashSet<_> = (0..5)
            .map(|r| {
                let req = format!("req-{r}");
                let t = format!("tenant-{r}");
                by_user
                    .decide("support", &ctx(&req, Some(u), Some(&t)))
                    .unwrap()
                    .arm
            })
            .collect();
        assert_eq!(arms.len(), 1, "{u}");
    }
    // By tenant: every user of a tenant gets the tenant's arm.
    let by_tenant = compile(&releasing("30%", Stickiness::Tenant, &[]));
    for t in &tenants {
        let expect = if bucket("r-12", t) < 3_000 {
            Arm::Canary
        } else {
            Arm::Stable
        };
        for u in users.iter().take(5) {
            let d = by_tenant
                .decide("support", &ctx("req", Some(u), Some(t)))
                .unwrap();
            assert_eq!(d.arm, expect, "{t} {u}");
        }
    }
    // By request: the request id decides, whoever sends it, and nothing "fell back".
    let by_request = compile(&releasing("30%", Stickiness::Request, &[]));
    let mut arms = HashSet::new();
    for r in &users {
        let d = by_request
            .decide("support", &ctx(r, Some("same-user"), None))
            .unwrap();
        let b = bucket("r-12", r);
        assert_eq!(d.arm == Arm::Canary, b < 3_000);
        match d.reason {
            Reason::Canary { unit, .. } | Reason::Stable { unit, .. } => {
                assert!(!unit.fell_back_to_request);
                assert_eq!(unit.by, Stickiness::Request);
            }
            other => panic!("{other:?}"),
        }
        arms.insert(d.arm);
    }
    assert_eq!(
        arms.len(),
        2,
        "one user's requests are spread over both arms"
    );
}

#[test]
fn the_canary_share_over_distinct_users_matches_the_weight() {
    let n = 100_000_u32;
    let users: Vec<String> = (0..n).map(|i| format!("u{i:08}")).collect();
    for weight in ["1%", "5%", "25%", "50%"] {
        let compiled = compile(&releasing(weight, Stickiness::User, &[]));
        let canary = users
            .iter()
            .filter(|u| {
                compiled
                    .decide("support", &ctx("q", Some(u), None))
                    .unwrap()
                    .arm
                    == Arm::Canary
            })
            .count() as f64;
        let p = f64::from(pct(weight).basis_points()) / 10_000.0;
        let expected = f64::from(n) * p;
        let sigma = (f64::from(n) * p * (1.0 - p)).sqrt();
        assert!(
            (canary - expected).abs() < 5.0 * sigma,
            "{weight}: {canary} canaries, expected {expected} ± {}",
            5.0 * sigma
        );
    }
}

#[test]
fn the_weight_ends_send_nobody_and_everybody_to_the_canary_but_excluded_tenants_stay() {
    let none = compile(&releasing("0%", Stickiness::User, &["acme"]));
    let all = compile(&releasing("100%", Stickiness::User, &["acme"]));
    for i in 0..1_000 {
        let u = format!("user-{i}");
        assert_eq!(
            none.decide("support", &ctx("q", Some(&u), Some("x")))
                .unwrap()
                .arm,
            Arm::Stable
        );
        assert_eq!(
            all.decide("support", &ctx("q", Some(&u), Some("x")))
                .unwrap()
                .arm,
            Arm::Canary
        );
        let excluded = all
            .decide("support", &ctx("q", Some(&u), Some("acme")))
            .unwrap();
        assert_eq!(excluded.arm, Arm::Stable);
        assert_eq!(excluded.reason, Reason::TenantExcluded);
        assert_eq!(excluded.bundle.unwrap().id, "support@2");
    }
}

#[test]
fn a_kill_wins_even_without_a_stable_and_a_tenant_kill_only_hits_that_tenant() {
    // Commands only kill routed agents, but a snapshot may carry a kill without a stable
    // (one written by an older server): the kill still wins.
    let mut killed_only = EnvState::default();
    killed_only.agents.insert(
        "support".into(),
        serin_core::decision::AgentState {
            kill: Some(kill()),
            ..Default::default()
        },
    );
    let compiled = compile(&killed_only);
    let d = compiled.decide("support", &ctx("q", None, None)).unwrap();
    assert_eq!(
        (d.arm, d.bundle, d.reason),
        (Arm::Killed, None, Reason::AgentKilled)
    );

    let mut tenant_only = EnvState::default();
    tenant_only.agents.insert(
        "support".into(),
        serin_core::decision::AgentState {
            killed_tenants: [("acme".to_owned(), kill())].into(),
            ..Default::default()
        },
    );
    let compiled = compile(&tenant_only);
    let d = compiled
        .decide("support", &ctx("q", None, Some("acme")))
        .unwrap();
    assert_eq!(d.reason, Reason::TenantKilled);
    let err = compiled
        .decide("support", &ctx("q", None, Some("globex")))
        .unwrap_err();
    assert_eq!(
        err,
        DecideError::NoStable {
            agent: "support".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "support has no stable bundle in this env; deploy one first"
    );
}

#[test]
fn an_unknown_agent_is_an_error_naming_it() {
    let compiled = compile(&releasing("10%", Stickiness::User, &[]));
    let err = compiled
        .decide("billing", &ctx("q", None, None))
        .unwrap_err();
    assert_eq!(err.to_string(), "agent billing is not known in this env");
}

#[test]
fn compile_refuses_a_snapshot_missing_a_referenced_bundle_or_with_an_invalid_flag() {
    let s = releasing("10%", Stickiness::User, &[]);
    for missing in ["support@1", "support@2", "support@3"] {
        let mut snap = snapshot_of(&s);
        snap.bundles.remove(missing);
        let err = CompiledSnapshot::compile(snap).unwrap_err();
        assert_eq!(err, CompileError::MissingBundle { id: missing.into() });
        assert_eq!(
            err.to_string(),
            format!("snapshot references bundle {missing} but does not carry it")
        );
    }
    let mut snap = snapshot_of(&s);
    let bad: serin_core::decision::Flag = serde_json::from_value(serde_json::json!({
        "key": "support.x", "rules": [{"attribute": "tenant", "op": "in", "values": []}]
    }))
    .unwrap();
    snap.flags.insert(bad.key.clone(), bad);
    let err = CompiledSnapshot::compile(snap).unwrap_err();
    assert!(
        matches!(&err, CompileError::InvalidFlag(e) if e.pointer() == "/rules/0/values"),
        "{err:?}"
    );
}

#[test]
fn compiled_snapshot_exposes_its_version_env_and_bundles() {
    let compiled = compile(&releasing("10%", Stickiness::User, &[]));
    assert_eq!(compiled.version(), 7);
    assert_eq!(compiled.env(), "prod");
    assert_eq!(compiled.bundle("support@3").unwrap().agent, "support");
    assert!(compiled.bundle("support@9").is_none());
    assert_eq!(compiled.snapshot().agents.len(), 1);
    fn send_sync<T: Send + Sync>(_: &T) {}
    send_sync(&compiled);
}

#[test]
fn snapshot_and_control_state_round_trip_through_json() {
    let s = releasing("12.5%", Stickiness::Tenant, &["acme", "initech"])
        .apply(&kill_cmd(Some("globex")))
        .unwrap();
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<EnvState>(&text).unwrap(), s);
    let snap = snapshot_of(&s);
    let text = serde_json::to_string(&snap).unwrap();
    let back: Snapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(back, snap);
    let routing = serde_json::to_value(&snap.agents["support"]).unwrap();
    assert_eq!(routing["release"]["weight"], "12.5%");
    assert_eq!(routing["release"]["stickiness"], "tenant");
    assert_eq!(routing["killed_tenants"], serde_json::json!(["globex"]));
    assert_eq!(routing["previous"]["id"], "support@1");
    // Deciding from the parsed copy gives the same answers.
    let a = CompiledSnapshot::compile(snap).unwrap();
    let b = CompiledSnapshot::compile(back).unwrap();
    for i in 0..100 {
        let t = format!("tenant-{i}");
        let c = ctx("q", None, Some(&t));
        assert_eq!(
            a.decide("support", &c).unwrap(),
            b.decide("support", &c).unwrap()
        );
    }
}

#[test]
fn absurd_weights_cannot_be_expressed() {
    assert!(Percent::from_basis_points(10_001).is_err());
    let text =
        r#"{"id":"r","candidate":{"id":"a@1","number":1,"digest":"sha256:x"},"weight":"150%"}"#;
    let err = serde_json::from_str::<ReleaseRouting>(text).unwrap_err();
    assert!(
        err.to_string().contains("\"150%\" is not a percentage"),
        "{err}"
    );
    assert!(serde_json::from_str::<ReleaseRouting>(&text.replace("\"150%\"", "-1")).is_err());
}

#[test]
fn reasons_serialize_with_their_code() {
    let check = |r: Reason, expect: serde_json::Value| {
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v, expect);
        assert_eq!(v["code"], r.code());
    };
    check(
        Reason::AgentKilled,
        serde_json::json!({"code": "kill_switch"}),
    );
    check(
        Reason::TenantExcluded,
        serde_json::json!({"code": "tenant_excluded"}),
    );
    check(
        Reason::Canary {
            bucket: 317,
            weight: pct("5%"),
            unit: Unit {
                by: Stickiness::User,
                fell_back_to_request: false,
            },
        },
        serde_json::json!({"code": "canary_bucket", "bucket": 317, "weight": "5%",
            "unit": {"by": "user", "fell_back_to_request": false}}),
    );
    assert_eq!(
        Reason::Canary {
            bucket: 317,
            weight: pct("5%"),
            unit: Unit {
                by: Stickiness::User,
                fell_back_to_request: false
            }
        }
        .to_string(),
        "user bucket 317 < 500 (5%): canary"
    );
}

#[test]
fn decisions_borrow_bundles_that_the_snapshot_carries() {
    let compiled = compile(&releasing("50%", Stickiness::User, &[]));
    let ids: HashMap<Arm, usize> = (0..100)
        .map(|i| format!("user-{i}"))
        .map(|u| {
            let d = compiled
                .decide("support", &ctx("q", Some(&u), None))
                .unwrap();
            assert!(compiled.bundle(&d.bundle.unwrap().id).is_some());
            assert_eq!(d.release, Some("r-12"));
            d.arm
        })
        .fold(HashMap::new(), |mut m, a| {
            *m.entry(a).or_default() += 1;
            m
        });
    assert_eq!(ids.len(), 2);
}
