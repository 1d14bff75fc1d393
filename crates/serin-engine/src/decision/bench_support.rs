//! The reference rule set of `TARGETS.md` ("The hot path"), shared by `benches/decide.rs` and
//! the peer-comparison bench so every figure is measured on identical data. Not a stable API.
//!
//! One agent (`support`) with its kill switch off and a release (`r-12`) at 10% sticky by
//! user; the release excludes a list of tenants. Requests come from [`REQUEST_TENANTS`]
//! tenants, every tenth of which is on the exclusion list (10% of requests), and each request
//! has its own user. Larger exclusion lists add tenants that never send requests, so the share
//! of excluded requests stays at 10% whatever the list size.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::model::{
    AgentRouting, Attribute, BundleRef, Context, Flag, FlagRule, Operator, Percent, ReleaseRouting,
    Snapshot, Stickiness, Targets, WAVE_REST, WaveKey, WaveRouting,
};
use crate::bundle::{Bundle, Metadata, ModelSpec};

/// The agent of the reference rule set.
pub const AGENT: &str = "support";
/// The release id (bucketing salt) of the reference rule set.
pub const RELEASE_ID: &str = "r-12";
/// How many distinct tenants send requests.
pub const REQUEST_TENANTS: usize = 1_000;
/// The reference exclusion list size.
pub const REFERENCE_EXCLUSIONS: usize = 100;

/// A well-mixed 64-bit function of `i` (splitmix64), so ids look random but are reproducible.
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The id of request-sending tenant `i` (`tenant-00042`).
pub fn tenant_id(i: usize) -> String {
    format!("tenant-{i:05}")
}

/// A user id of realistic length (`user-` and 16 hex digits).
pub fn user_id(i: usize) -> String {
    format!("user-{:016x}", mix(i as u64))
}

/// A request id (`req-` and 16 hex digits).
pub fn request_id(i: usize) -> String {
    format!("req-{:016x}", mix(!(i as u64)))
}

/// A small but real bundle of `agent`.
pub fn bundle(agent: &str, n: u64) -> Bundle {
    Bundle {
        agent: agent.to_owned(),
        model: ModelSpec {
            provider: "anthropic".to_owned(),
            snapshot: "claude-sonnet-4-5-20250929".to_owned(),
            params: BTreeMap::new(),
        },
        prompt: format!("You are {agent}, version {n}. Answer briefly.\n"),
        examples: Vec::new(),
        tools: Vec::new(),
        eval_set: None,
        metadata: Metadata::default(),
    }
}

/// The reference to [`bundle`]`(agent, n)`, with its real digest.
pub fn bundle_ref(agent: &str, n: u64) -> BundleRef {
    BundleRef {
        id: format!("{agent}@{n}"),
        number: n,
        digest: bundle(agent, n).digest().to_string(),
    }
}

/// `len` excluded tenants: every tenth request-sending tenant first (100 of them), then
/// tenants that send no requests.
pub fn excluded_tenants(len: usize) -> BTreeSet<String> {
    (0..REQUEST_TENANTS)
        .step_by(10)
        .map(tenant_id)
        .chain((0..).map(|i| format!("tenant-idle-{i:06}")))
        .take(len)
        .collect()
}

/// Routing of one agent: stable `@2`, previous `@1`, and a release of `@3` at `weight` sticky
/// by user excluding `exclusions` tenants (see [`excluded_tenants`]).
pub fn agent_routing(
    agent: &str,
    release_id: &str,
    weight: Percent,
    exclusions: usize,
) -> AgentRouting {
    AgentRouting {
        stable: Some(bundle_ref(agent, 2)),
        previous: Some(bundle_ref(agent, 1)),
        release: Some(ReleaseRouting {
            id: release_id.to_owned(),
            candidate: bundle_ref(agent, 3),
            weight,
            stickiness: Stickiness::User,
            exclude_tenants: excluded_tenants(exclusions),
            waves: Vec::new(),
        }),
        killed: false,
        killed_tenants: BTreeSet::new(),
    }
}

fn bundles_of(agents: &BTreeMap<String, AgentRouting>) -> BTreeMap<String, Bundle> {
    agents
        .keys()
        .flat_map(|name| (1..=3).map(move |n| (format!("{name}@{n}"), bundle(name, n))))
        .collect()
}

/// The reference rule set with an exclusion list of `exclusions` tenants (100 in TARGETS.md)
/// and `flags` flags of [`AGENT`] (see [`reference_flags`]).
pub fn reference_snapshot(exclusions: usize, flags: usize) -> Snapshot {
    let ten_percent = Percent::from_basis_points(1_000).unwrap_or(Percent::ZERO);
    let agents = BTreeMap::from([(
        AGENT.to_owned(),
        agent_routing(AGENT, RELEASE_ID, ten_percent, exclusions),
    )]);
    Snapshot {
        env: "prod".to_owned(),
        version: 1,
        published_at_ms: 1_767_225_600_000,
        bundles: bundles_of(&agents),
        agents,
        flags: reference_flags(AGENT, flags)
            .into_iter()
            .map(|f| (f.key.clone(), f))
            .collect(),
    }
}

/// Regions the waved requests come from, and the instance each region's pods are named by.
pub const REGIONS: [&str; 4] = ["us-east", "us-west", "eu-west", "ap-south"];

/// [`reference_snapshot`] with its release rolling out in waves: a one-box instance at 100%,
/// `us` (us-east, us-west) at 10%, `eu` (eu-west) at 0%, and the rest at 0%: the shape of a
/// waved release at its first wave. A request is routed by an instance lookup, then a
/// region lookup.
pub fn waved_snapshot(exclusions: usize) -> Snapshot {
    let mut snap = reference_snapshot(exclusions, 0);
    let wave = |name: &str, by: WaveKey, members: &[&str], weight: u32| WaveRouting {
        name: name.to_owned(),
        by,
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        weight: pct(weight),
    };
    if let Some(r) = snap.agents.get_mut(AGENT).and_then(|a| a.release.as_mut()) {
        r.waves = vec![
            wave("one-box", WaveKey::Instance, &["pod-us-east-0"], 10_000),
            wave("us", WaveKey::Region, &["us-east", "us-west"], 1_000),
            wave("eu", WaveKey::Region, &["eu-west"], 0),
            wave("rest", WaveKey::Region, &[WAVE_REST], 0),
        ];
    }
    snap
}

fn region_of(i: usize) -> &'static str {
    REGIONS.get(i % REGIONS.len()).copied().unwrap_or("us-east")
}

fn pct(bp: u32) -> Percent {
    Percent::from_basis_points(bp).unwrap_or(Percent::ZERO)
}

/// `n` flags `<agent>.flag-NN` cycling through ten shapes: plain on, 50% rollout, disabled,
/// a 50-tenant deny list, a 100-user allow list, a tenant rule, a workload rule before a 25%
/// rollout, a region `not_in` rule, string values sticky by tenant, numeric values with two
/// rules.
pub fn reference_flags(agent: &str, n: usize) -> Vec<Flag> {
    (0..n)
        .map(|i| {
            let mut f = Flag {
                key: format!("{agent}.flag-{i:02}"),
                enabled: true,
                on: Value::Bool(true),
                off: Value::Bool(false),
                stickiness: Stickiness::User,
                allow: Targets::default(),
                deny: Targets::default(),
                rules: Vec::new(),
                rollout: Percent::FULL,
                description: None,
            };
            let rule = |attribute, op, values: BTreeSet<String>, rollout| FlagRule {
                attribute,
                op,
                values,
                rollout,
            };
            match i % 10 {
                1 => f.rollout = pct(5_000),
                2 => f.enabled = false,
                3 => f.deny.tenants = (0..50).map(|t| tenant_id(t * 7)).collect(),
                4 => f.allow.users = (0..100).map(|u| user_id(u * 13)).collect(),
                5 => {
                    let tenants = (0..50).map(|t| tenant_id(t * 3)).collect();
                    f.rules = vec![rule(
                        Attribute::Tenant,
                        Operator::In,
                        tenants,
                        Percent::FULL,
                    )];
                    f.rollout = Percent::ZERO;
                }
                6 => {
                    let batch = BTreeSet::from(["batch".to_owned()]);
                    f.rules = vec![rule(
                        Attribute::Workload,
                        Operator::In,
                        batch,
                        Percent::ZERO,
                    )];
                    f.rollout = pct(2_500);
                }
                7 => {
                    let eu = BTreeSet::from(["eu-west-1".to_owned()]);
                    f.rules = vec![rule(Attribute::Region, Operator::NotIn, eu, pct(7_500))];
                }
                8 => {
                    f.on = json!("fast");
                    f.off = json!("slow");
                    f.stickiness = Stickiness::Tenant;
                    f.rollout = pct(1_000);
                }
                9 => {
                    f.on = json!(4096);
                    f.off = json!(1024);
                    let big = (0..20).map(|t| tenant_id(t * 11)).collect();
                    let batch = BTreeSet::from(["batch".to_owned()]);
                    f.rules = vec![
                        rule(Attribute::Tenant, Operator::In, big, Percent::FULL),
                        rule(Attribute::Workload, Operator::In, batch, pct(5_000)),
                    ];
                    f.rollout = Percent::ZERO;
                }
                _ => {}
            }
            f
        })
        .collect()
}

/// `agents` agents (`agent-000`, ...), each with stable, previous and a release excluding
/// 100 tenants, and five flags each: the snapshot-apply benchmark.
pub fn many_agents_snapshot(agents: usize) -> Snapshot {
    let routing: BTreeMap<String, AgentRouting> = (0..agents)
        .map(|i| {
            let name = format!("agent-{i:03}");
            let r = agent_routing(&name, &format!("r-{i}"), pct(1_000), REFERENCE_EXCLUSIONS);
            (name, r)
        })
        .collect();
    let flags = routing
        .keys()
        .flat_map(|a| reference_flags(a, 5))
        .map(|f| (f.key.clone(), f))
        .collect();
    Snapshot {
        env: "prod".to_owned(),
        version: 1,
        published_at_ms: 1_767_225_600_000,
        bundles: bundles_of(&routing),
        agents: routing,
        flags,
    }
}

/// Owned request attributes, so contexts can borrow them outside the timed loop.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    pub request_ids: Vec<String>,
    pub users: Vec<String>,
    pub tenants: Vec<String>,
    /// Each request's region (for waved releases), cycling through [`REGIONS`].
    pub regions: Vec<&'static str>,
    /// Each request's instance: one of 16 pods of its region.
    pub instances: Vec<String>,
}

/// `n` requests with distinct users, from tenants drawn uniformly from [`REQUEST_TENANTS`].
pub fn reference_requests(n: usize) -> Requests {
    Requests {
        request_ids: (0..n).map(request_id).collect(),
        users: (0..n).map(user_id).collect(),
        tenants: (0..n)
            .map(|i| tenant_id((mix(i as u64 ^ 0xA5A5) % REQUEST_TENANTS as u64) as usize))
            .collect(),
        regions: (0..n).map(region_of).collect(),
        instances: (0..n)
            .map(|i| format!("pod-{}-{}", region_of(i), (i / 4) % 16))
            .collect(),
    }
}

impl Requests {
    /// Prebuilt contexts, one per request.
    pub fn contexts(&self) -> Vec<Context<'_>> {
        self.request_ids
            .iter()
            .zip(&self.users)
            .zip(&self.tenants)
            .map(|((r, u), t)| Context {
                request_id: r,
                user: Some(u),
                tenant: Some(t),
                workload: None,
                instance: None,
                region: None,
                pool: None,
            })
            .collect()
    }

    /// [`Requests::contexts`] with each request's region and instance set, as an SDK in a
    /// multi-region fleet sends them.
    pub fn placed_contexts(&self) -> Vec<Context<'_>> {
        self.contexts()
            .into_iter()
            .zip(&self.regions)
            .zip(&self.instances)
            .map(|((c, r), i)| c.region(r).instance(i))
            .collect()
    }
}
