//! One rule set, three engines: the shared inputs of the `decide()` comparison.
//!
//! The reference rule set of `TARGETS.md` ("The hot path: `decide()`"): one agent with a kill
//! switch (off), a release at 10% sticky by user, and a tenant exclusion list of 100 entries;
//! requests come from 1,000 tenants, 10% of them excluded, each from a distinct user.
//!
//! This crate builds that rule set for every engine from one [`RuleSet`]:
//! - Serin: a [`Snapshot`] ([`serin_snapshot`]);
//! - `unleash-yggdrasil`: a `ClientFeatures` document ([`unleash_features_json`]);
//! - `launchdarkly-server-sdk-evaluation`: two flags ([`launchdarkly_flags_json`]).
//!
//! The peers' documents are plain JSON here so that the peers stay dev-dependencies: they are
//! parsed into the peers' own types in `peers/mod.rs`, which the bench, the example and the
//! equivalence test include.
//!
//! **Architecture invariant:** nothing here is used by a shipped binary; `publish = false`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use serin_core::decision::Snapshot;
use serin_core::decision::bench_support as reference;

/// The exclusion list size of the reference rule set.
pub const REFERENCE_EXCLUSIONS: usize = reference::REFERENCE_EXCLUSIONS;
/// Requests in the pre-generated set the benches cycle through.
pub const REQUESTS: usize = 4_096;
/// The release's canary share.
pub const CANARY_PERCENT: u32 = 10;

/// Where one request is routed, in terms all three engines can express.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// The agent's kill switch is on.
    Killed,
    Stable,
    Canary,
}

/// The reference rule set, engine-neutral. The data (agent, release id, tenant ids, the
/// exclusion list) comes from `serin_core::decision::bench_support`, the same source as
/// Serin's own `decide` bench, so every engine sees identical strings.
#[derive(Clone, Debug)]
pub struct RuleSet {
    pub agent: String,
    /// The release id: Serin's bucketing salt, the Unleash group id, the LaunchDarkly salt.
    pub release: String,
    pub canary_percent: u32,
    /// The kill switch; `false` in the reference set.
    pub killed: bool,
    /// Tenants that always get the stable bundle: every tenth of the 1,000 request tenants
    /// first, then tenants that send no requests.
    pub excluded_tenants: BTreeSet<String>,
}

impl RuleSet {
    /// The reference rule set: 100 excluded tenants out of the 1,000 requests come from.
    pub fn reference() -> RuleSet {
        RuleSet::with_exclusions(REFERENCE_EXCLUSIONS)
    }

    /// The reference rule set with an exclusion list of `n` entries (`n >= 100`). The same 100
    /// request tenants stay excluded; the other entries are tenants that send no requests, so
    /// only the size of the list changes, not the share of excluded requests.
    pub fn with_exclusions(n: usize) -> RuleSet {
        RuleSet {
            agent: reference::AGENT.to_owned(),
            release: reference::RELEASE_ID.to_owned(),
            canary_percent: CANARY_PERCENT,
            killed: false,
            excluded_tenants: reference::excluded_tenants(n),
        }
    }

    /// The kill switch's flag key in the peers.
    pub fn kill_flag(&self) -> String {
        format!("{}-kill", self.agent)
    }

    /// The release's flag key in the peers.
    pub fn release_flag(&self) -> String {
        format!("{}-release", self.agent)
    }
}

/// One request's identity, owned; each engine builds its own context from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub request_id: String,
    pub user: String,
    pub tenant: String,
    /// Whether `tenant` is on the reference exclusion list (ground truth for the tests).
    pub excluded: bool,
}

/// `n` requests from distinct users, tenants drawn uniformly (fixed seed) from the 1,000
/// request tenants, so about 10% are excluded and no branch predictor can learn a period.
pub fn requests(n: usize) -> Vec<Request> {
    let excluded = reference::excluded_tenants(REFERENCE_EXCLUSIONS);
    let r = reference::reference_requests(n);
    r.request_ids
        .into_iter()
        .zip(r.users)
        .zip(r.tenants)
        .map(|((request_id, user), tenant)| Request {
            excluded: excluded.contains(&tenant),
            request_id,
            user,
            tenant,
        })
        .collect()
}

/// The rule set as a Serin snapshot: `bench_support::reference_snapshot` (stable `@2`,
/// candidate `@3` at 10% sticky by user, the exclusion list on the release, no flags), with
/// the kill switch and share of this rule set.
pub fn serin_snapshot(rules: &RuleSet) -> Snapshot {
    let mut snapshot = reference::reference_snapshot(0, 0);
    for routing in snapshot.agents.values_mut() {
        routing.killed = rules.killed;
        if let Some(release) = routing.release.as_mut() {
            release.exclude_tenants = rules.excluded_tenants.clone();
            release.weight =
                serin_core::decision::Percent::from_basis_points(rules.canary_percent * 100)
                    .unwrap_or(serin_core::decision::Percent::ZERO);
        }
    }
    snapshot
}

/// [`serin_snapshot`] plus `flags` flags of the agent (`bench_support::reference_flags`: ten
/// shapes, from a plain boolean to deny lists and rules), for the rows "with 10 flags".
pub fn serin_snapshot_with_flags(rules: &RuleSet, flags: usize) -> Snapshot {
    let mut snapshot = serin_snapshot(rules);
    snapshot.flags = reference::reference_flags(&rules.agent, flags)
        .into_iter()
        .map(|f| (f.key.clone(), f))
        .collect();
    snapshot
}

/// `agents` rule sets like the reference one, for agents `agent-000`, ..., each with its own
/// release id and an exclusion list of `exclusions` tenants: what an SDK loads for a fleet.
pub fn fleet(agents: usize, exclusions: usize) -> Vec<RuleSet> {
    let excluded = reference::excluded_tenants(exclusions);
    (0..agents)
        .map(|i| RuleSet {
            agent: format!("agent-{i:03}"),
            release: format!("r-{i}"),
            canary_percent: CANARY_PERCENT,
            killed: false,
            excluded_tenants: excluded.clone(),
        })
        .collect()
}

/// A fleet as a Serin snapshot: one agent per rule set (stable, previous, release) with its
/// three bundles, as `GET /v1/envs/{env}/snapshot` sends it.
fn serin_fleet_snapshot(fleet: &[RuleSet]) -> serin_core::decision::Snapshot {
    let mut snapshot = reference::reference_snapshot(0, 0);
    snapshot.agents.clear();
    snapshot.bundles.clear();
    let weight = serin_core::decision::Percent::from_basis_points(CANARY_PERCENT * 100)
        .unwrap_or(serin_core::decision::Percent::ZERO);
    for rules in fleet {
        let mut routing = reference::agent_routing(&rules.agent, &rules.release, weight, 0);
        routing.killed = rules.killed;
        if let Some(release) = routing.release.as_mut() {
            release.exclude_tenants = rules.excluded_tenants.clone();
        }
        snapshot.agents.insert(rules.agent.clone(), routing);
        for n in 1..=3 {
            snapshot.bundles.insert(
                format!("{}@{n}", rules.agent),
                reference::bundle(&rules.agent, n),
            );
        }
    }
    snapshot
}

/// A fleet as Serin snapshot JSON (see `serin_fleet_snapshot`).
pub fn serin_fleet_json(fleet: &[RuleSet]) -> Vec<u8> {
    serde_json::to_vec(&serin_fleet_snapshot(fleet)).unwrap_or_default()
}

/// The stream event that follows [`serin_fleet_json`] when one release takes a step: the
/// first agent's canary weight changes, every agent is sent again, and no bundle is (the
/// stream carries only bundles the SDK does not hold yet).
pub fn serin_fleet_push_json(fleet: &[RuleSet]) -> Vec<u8> {
    let mut snapshot = serin_fleet_snapshot(fleet);
    snapshot.version += 1;
    snapshot.bundles.clear();
    if let Some(release) = snapshot
        .agents
        .values_mut()
        .next()
        .and_then(|a| a.release.as_mut())
    {
        release.weight = serin_core::decision::Percent::from_basis_points(CANARY_PERCENT * 500)
            .unwrap_or(serin_core::decision::Percent::ZERO);
    }
    serde_json::to_vec(&snapshot).unwrap_or_default()
}

/// A fleet as one Unleash `ClientFeatures` document (two toggles per agent).
pub fn unleash_fleet_json(fleet: &[RuleSet]) -> Vec<u8> {
    let features: Vec<Value> = fleet
        .iter()
        .flat_map(|rules| match unleash_features_json(rules) {
            Value::Object(mut doc) => match doc.remove("features") {
                Some(Value::Array(f)) => f,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        })
        .collect();
    serde_json::to_vec(&json!({"version": 2, "features": features})).unwrap_or_default()
}

/// A fleet as LaunchDarkly flags by key (two flags per agent), the `flags` of a `put`.
pub fn launchdarkly_fleet_json(fleet: &[RuleSet]) -> Vec<u8> {
    let flags: BTreeMap<String, Value> = fleet.iter().flat_map(launchdarkly_flags_json).collect();
    serde_json::to_vec(&flags).unwrap_or_default()
}

/// The rule set as an Unleash `ClientFeatures` document (`GET /api/client/features`):
///
/// - `<agent>-kill`, a `kill-switch` toggle, enabled = killed;
/// - `<agent>-release`, a `release` toggle with one `flexibleRollout` strategy at
///   `canary_percent`, stickiness `userId`, group id = release id, constrained by
///   `tenantId NOT_IN [excluded]`. Enabled for a request = canary.
pub fn unleash_features_json(rules: &RuleSet) -> Value {
    json!({
        "version": 2,
        "features": [
            {
                "name": rules.kill_flag(),
                "type": "kill-switch",
                "enabled": rules.killed,
                "strategies": [{"name": "default", "constraints": [], "parameters": {}}],
            },
            {
                "name": rules.release_flag(),
                "type": "release",
                "enabled": true,
                "strategies": [{
                    "name": "flexibleRollout",
                    "constraints": [{
                        "contextName": "tenantId",
                        "operator": "NOT_IN",
                        "values": rules.excluded_tenants,
                        "caseInsensitive": false,
                        "inverted": false,
                    }],
                    "parameters": {
                        "rollout": rules.canary_percent.to_string(),
                        "stickiness": "userId",
                        "groupId": rules.release,
                    },
                }],
            },
        ],
    })
}

/// The rule set in Unleash's variant encoding, as teams that split traffic between two
/// versions usually write it: the same kill toggle, and a `<agent>-release` toggle enabled for
/// every tenant not excluded (`flexibleRollout` at 100%, `tenantId NOT_IN [excluded]`) whose
/// variants are `canary` (weight `canary_percent` x 10 of 1,000) and `stable`, sticky by
/// `userId`. The variant named for a request is its arm; a disabled toggle means stable.
pub fn unleash_variant_features_json(rules: &RuleSet) -> Value {
    let canary = i64::from(rules.canary_percent) * 10;
    let mut doc = unleash_features_json(rules);
    if let Some(rollout) = doc.pointer_mut("/features/1/strategies/0/parameters/rollout") {
        *rollout = json!("100");
    }
    if let Some(release) = doc
        .pointer_mut("/features/1")
        .and_then(Value::as_object_mut)
    {
        release.insert(
            "variants".to_owned(),
            json!([
                {"name": "canary", "weight": canary, "weightType": "variable", "stickiness": "userId"},
                {"name": "stable", "weight": 1000 - canary, "weightType": "variable", "stickiness": "userId"},
            ]),
        );
    }
    doc
}

/// The rule set as two LaunchDarkly flags, keyed by flag key:
///
/// - `<agent>-kill`: `on` = killed, variations `[false, true]`, off variation 0 (not killed),
///   fallthrough 1 (killed);
/// - `<agent>-release`: variations `["stable", "canary"]`; rule 0: `tenant in [excluded]`
///   (context kind `user`) -> stable; fallthrough: a rollout bucketed by key, canary weight
///   `canary_percent` x 1,000 of 100,000.
pub fn launchdarkly_flags_json(rules: &RuleSet) -> BTreeMap<String, Value> {
    let canary = rules.canary_percent * 1_000;
    let kill = json!({
        "key": rules.kill_flag(),
        "version": 1,
        "on": rules.killed,
        "targets": [],
        "rules": [],
        "prerequisites": [],
        "fallthrough": {"variation": 1},
        "offVariation": 0,
        "variations": [false, true],
        "clientSide": false,
        "salt": format!("{}-kill", rules.agent),
    });
    let release = json!({
        "key": rules.release_flag(),
        "version": 1,
        "on": true,
        "targets": [],
        "rules": [{
            "id": "exclude-tenants",
            "clauses": [{
                "contextKind": "user",
                "attribute": "tenant",
                "op": "in",
                "values": rules.excluded_tenants,
                "negate": false,
            }],
            "variation": 0,
            "trackEvents": false,
        }],
        "prerequisites": [],
        "fallthrough": {
            "rollout": {
                "variations": [
                    {"variation": 0, "weight": 100_000 - canary},
                    {"variation": 1, "weight": canary},
                ],
            },
        },
        "offVariation": 0,
        "variations": ["stable", "canary"],
        "clientSide": false,
        "salt": rules.release,
    });
    BTreeMap::from([(rules.kill_flag(), kill), (rules.release_flag(), release)])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn reference_rule_set_excludes_a_tenth_of_the_request_tenants() {
        let rules = RuleSet::reference();
        assert_eq!(rules.excluded_tenants.len(), 100);
        let big = RuleSet::with_exclusions(10_000);
        assert_eq!(big.excluded_tenants.len(), 10_000);
        assert!(rules.excluded_tenants.is_subset(&big.excluded_tenants));
    }

    #[test]
    fn requests_come_from_distinct_users_and_about_a_tenth_from_excluded_tenants() {
        let reqs = requests(REQUESTS);
        let users: BTreeSet<_> = reqs.iter().map(|r| r.user.as_str()).collect();
        assert_eq!(users.len(), REQUESTS);
        let excluded = reqs.iter().filter(|r| r.excluded).count();
        assert!((300..=520).contains(&excluded), "{excluded}");
        let tenants: BTreeSet<_> = reqs.iter().map(|r| r.tenant.as_str()).collect();
        assert!(tenants.len() > 950, "{}", tenants.len());
    }

    #[test]
    fn serin_snapshot_carries_the_rule_set() {
        let rules = RuleSet::with_exclusions(1_000);
        let s = serin_snapshot(&rules);
        let routing = &s.agents[reference::AGENT];
        let release = routing.release.as_ref().unwrap();
        assert_eq!(release.exclude_tenants.len(), 1_000);
        assert_eq!(release.weight.basis_points(), 1_000);
        assert_eq!(release.id, rules.release);
        assert!(!routing.killed);
    }
}
