//! Commands on an env's control state: the deploy stack, rollback, kills, flags, releases.

use serin_core::decision::bench_support::bundle_ref;
use serin_core::decision::{
    AgentRouting, Command, EnvState, Flag, Kill, MAX_STACK, Percent, ReleaseRouting, Stickiness,
};

fn deploy(agent: &str, n: u64) -> Command {
    Command::Deploy {
        agent: agent.into(),
        bundle: bundle_ref(agent, n),
    }
}

fn rollback() -> Command {
    Command::Rollback {
        agent: "support".into(),
    }
}

fn kill(tenant: Option<&str>) -> Command {
    Command::Kill {
        agent: "support".into(),
        tenant: tenant.map(Into::into),
        kill: Kill {
            reason: "incident".into(),
            actor: "ops".into(),
            at_ms: 5,
        },
    }
}

fn unkill(tenant: Option<&str>) -> Command {
    Command::Unkill {
        agent: "support".into(),
        tenant: tenant.map(Into::into),
    }
}

fn start_release(n: u64) -> Command {
    Command::SetRelease {
        agent: "support".into(),
        release: Some(ReleaseRouting {
            id: "r-1".into(),
            candidate: bundle_ref("support", n),
            weight: Percent::parse("5%").unwrap(),
            stickiness: Stickiness::User,
            exclude_tenants: Default::default(),
            waves: Vec::new(),
        }),
    }
}

/// Renders `support`'s routing: `stable/previous [release] [killed] [killed:tenants]`.
fn render(s: &EnvState) -> String {
    let routing = s.routing();
    let Some(r) = routing.get("support") else {
        return "-".into();
    };
    let AgentRouting {
        stable,
        previous,
        release,
        killed,
        killed_tenants,
    } = r;
    let id = |b: &Option<_>| {
        b.as_ref()
            .map_or("-".to_owned(), |b: &serin_core::decision::BundleRef| {
                b.id.clone()
            })
    };
    let mut out = format!("{}/{}", id(stable), id(previous));
    if let Some(rel) = release {
        out += &format!(" release:{}", rel.candidate.id);
    }
    if *killed {
        out += " killed";
    }
    if !killed_tenants.is_empty() {
        out += &format!(
            " killed:{}",
            killed_tenants.iter().cloned().collect::<Vec<_>>().join(",")
        );
    }
    out
}

/// Applies each command to the state so far; each step's expectation is the rendered routing
/// after it, or `error: <message>` (the state then stays as it was).
fn check(steps: &[(Command, &str)]) -> EnvState {
    let mut s = EnvState::default();
    for (i, (cmd, expect)) in steps.iter().enumerate() {
        let got = match s.apply(cmd) {
            Ok(next) => {
                s = next;
                render(&s)
            }
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, *expect, "step {i}: {cmd:?}");
    }
    s
}

#[test]
fn rollback_restores_the_previous_stable_and_the_one_before_becomes_previous() {
    check(&[
        (
            rollback(),
            "error: no agent support in this env; deploy it here first",
        ),
        (deploy("support", 1), "support@1/-"),
        (
            deploy("support", 1),
            "error: support@1 is already the stable of support in this env.",
        ),
        (
            rollback(),
            "error: support has no previous stable to roll back to in this env.",
        ),
        (deploy("support", 2), "support@2/support@1"),
        (deploy("support", 3), "support@3/support@2"),
        (rollback(), "support@2/support@1"),
        (rollback(), "support@1/-"),
        (
            rollback(),
            "error: support has no previous stable to roll back to in this env.",
        ),
        // Redeploying an older bundle is a new deploy.
        (deploy("support", 3), "support@3/support@1"),
    ]);
}

#[test]
fn rollback_during_a_release_drains_it_and_keeps_the_stack() {
    check(&[
        (
            start_release(2),
            "error: support has no stable in this env; deploy one before starting a release.",
        ),
        (deploy("support", 1), "support@1/-"),
        (
            start_release(1),
            "error: Release r-1 of support has the stable support@1 as its candidate.",
        ),
        (start_release(2), "support@1/- release:support@2"),
        (
            deploy("support", 3),
            "error: support has release r-1 in progress in this env; finish or roll it back before deploying.",
        ),
        (rollback(), "support@1/-"),
        (deploy("support", 2), "support@2/support@1"),
    ]);
}

#[test]
fn the_deploy_stack_keeps_the_newest_fifty() {
    let mut s = EnvState::default();
    for n in 1..=60 {
        s = s.apply(&deploy("support", n)).unwrap();
    }
    let stack = &s.agents["support"].stack;
    assert_eq!(stack.len(), MAX_STACK);
    assert_eq!(stack.first().unwrap().id, "support@11");
    assert_eq!(stack.last().unwrap().id, "support@60");
    for _ in 0..MAX_STACK - 1 {
        s = s.apply(&rollback()).unwrap();
    }
    assert_eq!(render(&s), "support@11/-");
    assert!(s.apply(&rollback()).is_err());
}

#[test]
fn kills_need_a_routed_agent_cannot_repeat_and_unkill_needs_a_kill() {
    check(&[
        (
            kill(None),
            "error: no agent support in this env; deploy it here first",
        ),
        (
            unkill(None),
            "error: no agent support in this env; deploy it here first",
        ),
        (deploy("support", 1), "support@1/-"),
        (unkill(None), "error: support is not killed in this env."),
        (kill(None), "support@1/- killed"),
        (kill(None), "error: support is already killed in this env."),
        (kill(Some("acme")), "support@1/- killed killed:acme"),
        (
            kill(Some("acme")),
            "error: support is already killed for tenant acme in this env.",
        ),
        (
            unkill(Some("globex")),
            "error: support is not killed for tenant globex in this env.",
        ),
        (unkill(None), "support@1/- killed:acme"),
        (unkill(Some("acme")), "support@1/-"),
    ]);
}

#[test]
fn a_mistyped_agent_is_refused_with_the_nearest_routed_one() {
    let s = EnvState::default().apply(&deploy("support", 1)).unwrap();
    let typo = Command::Kill {
        agent: "suport".into(),
        tenant: None,
        kill: Kill {
            reason: "incident".into(),
            actor: "t".into(),
            at_ms: 0,
        },
    };
    let err = s.apply(&typo).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no agent suport in this env; did you mean support?"
    );
    assert!(
        s.apply(&Command::Rollback {
            agent: "suport".into()
        })
        .unwrap_err()
        .to_string()
        .contains("did you mean support?")
    );
}

#[test]
fn deploy_refuses_bad_names_and_other_agents_bundles() {
    check(&[
        (
            Command::Deploy {
                agent: "Support".into(),
                bundle: bundle_ref("Support", 1),
            },
            r#"error: agent name "Support" is invalid: must match [a-z0-9][a-z0-9-]{0,62}."#,
        ),
        (
            Command::Deploy {
                agent: "support".into(),
                bundle: bundle_ref("supporter", 1),
            },
            "error: Bundle supporter@1 belongs to another agent than support.",
        ),
    ]);
}

#[test]
fn flags_are_set_replaced_and_deleted() {
    let f = |rollout: &str| -> Flag {
        serde_json::from_value(serde_json::json!({"key": "support.x", "rollout": rollout})).unwrap()
    };
    let s = EnvState::default()
        .apply(&Command::SetFlag(f("5%")))
        .unwrap();
    let s = s.apply(&Command::SetFlag(f("50%"))).unwrap();
    assert_eq!(s.flags["support.x"].rollout, Percent::parse("50%").unwrap());
    let s = s
        .apply(&Command::DeleteFlag {
            key: "support.x".into(),
        })
        .unwrap();
    assert!(s.flags.is_empty());
    let err = s
        .apply(&Command::DeleteFlag {
            key: "support.x".into(),
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Flag support.x does not exist in this env."
    );
}

#[test]
fn commands_name_their_audit_action_and_subject() {
    let flag: Flag = serde_json::from_value(serde_json::json!({"key": "support.x"})).unwrap();
    let cases = [
        (deploy("support", 1), "deploy support"),
        (rollback(), "rollback support"),
        (kill(None), "kill support"),
        (kill(Some("acme")), "kill support tenant=acme"),
        (unkill(Some("acme")), "unkill support tenant=acme"),
        (Command::SetFlag(flag), "flag.set support.x"),
        (
            Command::DeleteFlag {
                key: "support.x".into(),
            },
            "flag.delete support.x",
        ),
        (start_release(2), "release.set support"),
    ];
    for (cmd, expect) in cases {
        assert_eq!(format!("{} {}", cmd.action(), cmd.subject()), expect);
    }
}

#[test]
fn referenced_bundles_cover_stable_previous_and_candidate_only() {
    let s = check(&[
        (deploy("support", 1), "support@1/-"),
        (deploy("support", 2), "support@2/support@1"),
        (deploy("support", 3), "support@3/support@2"),
        (start_release(4), "support@3/support@2 release:support@4"),
    ]);
    let ids: Vec<String> = s.referenced_bundles().into_iter().collect();
    assert_eq!(ids, ["support@2", "support@3", "support@4"]);
    let snap = s.snapshot("prod", 9, 123, Default::default());
    assert_eq!(
        (snap.env.as_str(), snap.version, snap.published_at_ms),
        ("prod", 9, 123)
    );
    assert_eq!(snap.agents, s.routing());
}
