//! `CompiledSnapshot::from_json` (the SDK's load path: JSON straight into the compiled form)
//! against the old path (JSON into `Snapshot`, then `compile`): on random snapshots and
//! random requests both accept and refuse the same documents, decide identically, evaluate
//! flags identically, and give back the same wire snapshot. Broken JSON is an error on both,
//! never a panic.

use std::collections::{BTreeMap, BTreeSet};

use serin_core::decision::bench_support::{bundle, bundle_ref, mix, reference_flags};
use serin_core::decision::{
    AgentRouting, CompiledSnapshot, Context, FlagEvaluation, LoadError, Percent, ReleaseRouting,
    Snapshot, Stickiness,
};

/// A reproducible stream of random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Tenant ids, some needing JSON escapes (the parser then hands out unescaped copies rather
/// than borrowed slices: both must land in the sets).
const TENANTS: [&str; 12] = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "tenant-\"quoted\"",
    "back\\slash",
    "é-unicode",
    "tab\there",
    "",
    "hooli",
    "stark",
    "wayne",
];

const AGENTS: [&str; 4] = ["support", "billing", "triage", "a-b"];

fn tenants(rng: &mut Rng, max: usize) -> BTreeSet<String> {
    let n = rng.below(max + 1);
    (0..n)
        .map(|_| TENANTS[rng.below(TENANTS.len())].to_owned())
        .collect()
}

fn random_snapshot(rng: &mut Rng) -> Snapshot {
    let mut agents = BTreeMap::new();
    for agent in AGENTS {
        if rng.chance(20) {
            continue;
        }
        let n = 1 + rng.below(5) as u64;
        let stable = rng.chance(85).then(|| bundle_ref(agent, n));
        let release = rng.chance(70).then(|| ReleaseRouting {
            id: format!("r-{}", rng.below(1_000)),
            candidate: bundle_ref(agent, n + 1),
            weight: Percent::from_basis_points(rng.below(10_001) as u32).unwrap(),
            stickiness: [Stickiness::User, Stickiness::Tenant, Stickiness::Request][rng.below(3)],
            exclude_tenants: tenants(rng, 8),
            waves: Vec::new(),
        });
        agents.insert(
            agent.to_owned(),
            AgentRouting {
                previous: (n > 1 && rng.chance(60)).then(|| bundle_ref(agent, n - 1)),
                stable,
                release,
                killed: rng.chance(10),
                killed_tenants: tenants(rng, 3),
            },
        );
    }
    let mut bundles = BTreeMap::new();
    for routing in agents.values() {
        for b in [
            routing.stable.as_ref(),
            routing.previous.as_ref(),
            routing.release.as_ref().map(|r| &r.candidate),
        ]
        .into_iter()
        .flatten()
        {
            // Now and then a referenced bundle is missing: both paths must refuse.
            if !rng.chance(3) {
                let (agent, n) = b.id.split_once('@').unwrap();
                bundles.insert(b.id.clone(), bundle(agent, n.parse().unwrap()));
            }
        }
    }
    let flags = AGENTS
        .iter()
        .flat_map(|a| reference_flags(a, rng.below(4)))
        .map(|f| (f.key.clone(), f))
        .collect();
    Snapshot {
        env: "prod".to_owned(),
        version: rng.next() >> 20,
        published_at_ms: 1_767_225_600_000,
        agents,
        flags,
        bundles,
    }
}

fn old_path(json: &[u8]) -> Result<CompiledSnapshot, String> {
    let snapshot: Snapshot = serde_json::from_slice(json).map_err(|e| format!("json: {e}"))?;
    CompiledSnapshot::compile(snapshot).map_err(|e| e.to_string())
}

fn new_path(json: &[u8]) -> Result<CompiledSnapshot, String> {
    CompiledSnapshot::from_json(json).map_err(|e| match e {
        LoadError::Json(e) => format!("json: {e}"),
        LoadError::Compile(e) => e.to_string(),
    })
}

/// Every agent (and one unknown) decided for `requests` random requests, with its flags.
fn assert_same_decisions(rng: &mut Rng, old: &CompiledSnapshot, new: &CompiledSnapshot) {
    let ids: Vec<String> = (0..64).map(|i| format!("req-{i}-{}", rng.next())).collect();
    let users: Vec<String> = (0..64)
        .map(|i| format!("user-{i}-{}", rng.next()))
        .collect();
    for i in 0..64 {
        let mut ctx = Context::new(&ids[i]);
        if rng.chance(80) {
            ctx = ctx.user(&users[i]);
        }
        if rng.chance(85) {
            ctx = ctx.tenant(if rng.chance(90) {
                TENANTS[rng.below(TENANTS.len())]
            } else {
                "nobody"
            });
        }
        if rng.chance(30) {
            ctx = ctx.workload("batch").region("eu-west-1");
        }
        for agent in AGENTS.iter().chain(&["unknown"]) {
            assert_eq!(
                old.decide(agent, &ctx),
                new.decide(agent, &ctx),
                "{agent} {ctx:?}"
            );
            let a: Vec<FlagEvaluation<'_>> = old.agent_flags(agent, &ctx).collect();
            let b: Vec<FlagEvaluation<'_>> = new.agent_flags(agent, &ctx).collect();
            assert_eq!(a, b, "{agent} {ctx:?}");
        }
    }
}

#[test]
fn from_json_loads_and_decides_exactly_as_parse_then_compile() {
    let mut rng = Rng(7);
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..400 {
        let snapshot = random_snapshot(&mut rng);
        let json = serde_json::to_vec(&snapshot).unwrap();
        match (old_path(&json), new_path(&json)) {
            (Ok(old), Ok(new)) => {
                loaded += 1;
                assert_eq!(new.version(), old.version());
                assert_eq!(new.env(), old.env());
                assert_eq!(new.snapshot(), old.snapshot(), "case {case}");
                for id in snapshot.bundles.keys() {
                    assert_eq!(new.bundle(id), old.bundle(id));
                }
                assert_same_decisions(&mut rng, &old, &new);
            }
            (Err(old), Err(new)) => {
                refused += 1;
                assert_eq!(old, new, "case {case}");
            }
            (old, new) => panic!(
                "case {case}: old {:?}, new {:?}",
                old.map(|s| s.version()),
                new.map(|s| s.version())
            ),
        }
    }
    // Both outcomes were exercised.
    assert!(
        loaded > 100 && refused > 10,
        "{loaded} loaded, {refused} refused"
    );
}

#[test]
fn duplicate_list_entries_mean_what_the_set_means() {
    let b = serde_json::to_value(bundle_ref("support", 2)).unwrap();
    let c = serde_json::to_value(bundle_ref("support", 3)).unwrap();
    let json = serde_json::json!({
        "env": "prod", "version": 3, "published_at_ms": 0,
        "agents": {"support": {
            "stable": b, "previous": null,
            "release": {"id": "r-1", "candidate": c, "weight": "50%",
                        "exclude_tenants": ["acme", "acme", "globex", "acme"]},
            "killed_tenants": ["stark", "stark"],
        }},
        "bundles": {"support@2": bundle("support", 2), "support@3": bundle("support", 3)},
    });
    let json = serde_json::to_vec(&json).unwrap();
    let (old, new) = (old_path(&json).unwrap(), new_path(&json).unwrap());
    assert_eq!(new.snapshot(), old.snapshot());
    assert_eq!(
        new.snapshot().agents["support"].killed_tenants,
        BTreeSet::from(["stark".to_owned()])
    );
    assert_same_decisions(&mut Rng(3), &old, &new);
}

#[test]
fn broken_json_is_an_error_on_both_paths_never_a_panic() {
    let mut rng = Rng(11);
    let mut snapshot = random_snapshot(&mut rng);
    while old_path(&serde_json::to_vec(&snapshot).unwrap()).is_err() {
        snapshot = random_snapshot(&mut rng);
    }
    let json = serde_json::to_vec(&snapshot).unwrap();
    for cut in (0..json.len()).step_by(7) {
        let (old, new) = (old_path(&json[..cut]), new_path(&json[..cut]));
        assert!(old.is_err() && new.is_err(), "cut at {cut}");
    }
    for _ in 0..500 {
        let mut bad = json.clone();
        let at = rng.below(bad.len());
        let junk = b"{}[]\",:0a\\ ";
        bad[at] = junk[rng.below(junk.len())];
        assert_eq!(
            old_path(&bad).is_ok(),
            new_path(&bad).is_ok(),
            "{}",
            String::from_utf8_lossy(&bad)
        );
    }
    for bad in [
        &b""[..],
        b"null",
        b"[]",
        br#"{"env":"prod"}"#,
        br#"{"env":"prod","version":1,"published_at_ms":0,"agents":{"a":{"stable":null,"previous":null,"killed_tenants":[1]}}}"#,
        br#"{"env":"prod","version":1,"published_at_ms":0,"agents":{"a":{"stable":null,"previous":null,"surprise":1}}}"#,
        br#"{"env":"prod","version":1,"published_at_ms":0,"agents":{"a":{"stable":null,"previous":null,"killed_tenants":null}}}"#,
    ] {
        assert!(new_path(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        assert!(old_path(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn an_update_takes_the_bundles_it_lacks_from_the_current_snapshot() {
    let mut rng = Rng(5);
    let mut checked = 0;
    for _ in 0..100 {
        let full = random_snapshot(&mut rng);
        let Ok(current) = old_path(&serde_json::to_vec(&full).unwrap()) else {
            continue;
        };
        // The next version carries no bundle at all and drops one agent.
        let mut next = full.clone();
        next.version += 1;
        next.bundles.clear();
        let dropped = next.agents.keys().next().cloned();
        if let Some(a) = &dropped {
            next.agents.remove(a);
        }
        let json = serde_json::to_vec(&next).unwrap();
        let merged = CompiledSnapshot::from_json_update(&json, Some(&current)).unwrap();
        // Chained updates share bundles rather than copy them, and stay complete.
        let again = CompiledSnapshot::from_json_update(&json, Some(&merged)).unwrap();
        let mut expected = full.clone();
        expected.version += 1;
        if let Some(a) = &dropped {
            expected.agents.remove(a);
            expected
                .bundles
                .retain(|id, _| !id.starts_with(&format!("{a}@")));
        }
        assert_eq!(merged.snapshot(), &expected);
        assert_eq!(again.snapshot(), &expected);
        // Without a current snapshot the same event cannot be completed.
        let missing = !expected.bundles.is_empty();
        assert_eq!(
            CompiledSnapshot::from_json_update(&json, None).is_err(),
            missing
        );
        checked += 1;
    }
    assert!(checked > 50);
}

/// A small change to one agent's routing, as a release step, kill or exclusion makes.
fn mutate(rng: &mut Rng, routing: &mut AgentRouting) {
    match rng.below(5) {
        0 => routing.killed = !routing.killed,
        1 => {
            if let Some(r) = routing.release.as_mut() {
                r.weight = Percent::from_basis_points(rng.below(10_001) as u32).unwrap();
            }
        }
        2 => {
            routing
                .killed_tenants
                .insert(TENANTS[rng.below(TENANTS.len())].to_owned());
        }
        3 => {
            if let Some(r) = routing.release.as_mut() {
                let first = r.exclude_tenants.iter().next().cloned();
                match first {
                    Some(t) => r.exclude_tenants.remove(&t),
                    None => r.exclude_tenants.insert("acme".to_owned()),
                };
            }
        }
        _ => routing.release = None,
    }
}

#[test]
fn an_update_shares_unchanged_agents_and_rereads_changed_ones() {
    let mut rng = Rng(11);
    let (mut applied, mut changed) = (0, 0);
    for _ in 0..150 {
        let mut snapshot = random_snapshot(&mut rng);
        let Ok(mut current) = new_path(&serde_json::to_vec(&snapshot).unwrap()) else {
            continue;
        };
        for _ in 0..4 {
            let names: Vec<String> = snapshot.agents.keys().cloned().collect();
            for name in names {
                if rng.chance(40)
                    && let Some(routing) = snapshot.agents.get_mut(&name)
                {
                    mutate(&mut rng, routing);
                    changed += 1;
                }
            }
            snapshot.version += 1;
            let json = serde_json::to_vec(&snapshot).unwrap();
            let expected = old_path(&json).unwrap();
            let next = CompiledSnapshot::from_json_update(&json, Some(&current)).unwrap();
            // An update drops bundles nothing references; the routing must match exactly.
            assert_eq!(next.snapshot().agents, expected.snapshot().agents);
            assert_same_decisions(&mut rng, &expected, &next);
            current = next;
            applied += 1;
        }
    }
    assert!(
        applied > 300 && changed > 300,
        "{applied} applied, {changed} changed"
    );
}
