//! Snapshots and bundles built from serin-core types.

use std::collections::BTreeMap;

use serin_core::bundle::{Bundle, Metadata, ModelSpec};
use serin_core::decision::{AgentRouting, BundleRef, Flag, Percent, ReleaseRouting, Snapshot};

pub const ENV: &str = "prod";
pub const AGENT: &str = "support";

pub fn bundle(agent: &str, n: u64) -> (BundleRef, Bundle) {
    let bundle = Bundle {
        agent: agent.to_owned(),
        model: ModelSpec {
            provider: "anthropic".into(),
            snapshot: "claude-opus-4-7-20260108".into(),
            params: BTreeMap::new(),
        },
        prompt: format!("You are {agent}, version {n}."),
        examples: vec![],
        tools: vec![],
        eval_set: None,
        metadata: Metadata::default(),
    };
    let r = BundleRef {
        id: format!("{agent}@{n}"),
        number: n,
        digest: bundle.digest().as_str().to_owned(),
    };
    (r, bundle)
}

/// `support` with stable `support@stable` (and `support@previous`), every
/// referenced bundle carried.
pub fn snapshot(version: u64, stable: u64, previous: Option<u64>) -> Snapshot {
    let (stable_ref, stable_bundle) = bundle(AGENT, stable);
    let mut bundles = BTreeMap::from([(stable_ref.id.clone(), stable_bundle)]);
    let previous = previous.map(|n| {
        let (r, b) = bundle(AGENT, n);
        bundles.insert(r.id.clone(), b);
        r
    });
    Snapshot {
        env: ENV.to_owned(),
        version,
        published_at_ms: 1_780_000_000_000,
        agents: BTreeMap::from([(
            AGENT.to_owned(),
            AgentRouting {
                stable: Some(stable_ref),
                previous,
                ..AgentRouting::default()
            },
        )]),
        flags: BTreeMap::new(),
        bundles,
    }
}

/// Adds a release of `support@candidate` at `weight` (carrying its bundle).
pub fn with_release(mut s: Snapshot, candidate: u64, weight: &str) -> Snapshot {
    let (r, b) = bundle(AGENT, candidate);
    s.bundles.insert(r.id.clone(), b);
    if let Some(a) = s.agents.get_mut(AGENT) {
        a.release = Some(ReleaseRouting {
            id: "rel-1".into(),
            candidate: r,
            weight: Percent::parse(weight).unwrap(),
            stickiness: Default::default(),
            exclude_tenants: Default::default(),
            waves: Vec::new(),
        });
    }
    s
}

/// Adds a flag `support.fast-path` that is on for everyone.
pub fn with_flag(mut s: Snapshot) -> Snapshot {
    let flag: Flag = serde_json::from_value(serde_json::json!({
        "key": "support.fast-path",
        "on": {"mode": "fast"},
        "off": {"mode": "slow"},
    }))
    .unwrap();
    s.flags.insert(flag.key.clone(), flag);
    s
}
