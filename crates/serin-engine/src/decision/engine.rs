//! The hot path: a snapshot compiled once per version, then `decide` per request without
//! allocating, at a cost that does not depend on the size of exclusion or kill lists.
//!
//! Decision order: unknown agent → error; agent killed → `killed` (a kill wins over everything,
//! even an agent without a stable); the request's tenant killed → `killed`; no stable → error;
//! a release in progress: an excluded tenant gets the stable, every other unit is bucketed
//! under the release id and lands on the candidate iff its bucket is below the weight; no
//! release → the stable.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::bucket::{bucket, in_share};
use super::flags::{CompiledFlag, FlagError, FlagEvaluation};
use super::model::{
    AgentRouting, Arm, BundleRef, Context, Flag, Percent, ReleaseRouting, Snapshot, Stickiness,
    WAVE_REST, WaveKey, WaveRouting,
};
use super::strset::StrSet;
use crate::bundle::Bundle;

/// Why a snapshot cannot be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompileError {
    MissingBundle {
        id: String,
    },
    InvalidFlag(FlagError),
    FlagKeyMismatch {
        key: String,
        flag_key: String,
    },
    ReleaseWithoutStable {
        agent: String,
    },
    /// A release's waves cannot route: a nameless or duplicate wave, a member listed twice,
    /// two rest waves, or more than [`MAX_WAVES`].
    InvalidWaves {
        agent: String,
        reason: String,
    },
}

/// The most waves one release may have.
pub const MAX_WAVES: usize = 64;

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::MissingBundle { id } => {
                write!(f, "snapshot references bundle {id} but does not carry it")
            }
            CompileError::InvalidFlag(e) => write!(f, "{e}"),
            CompileError::FlagKeyMismatch { key, flag_key } => {
                write!(f, "snapshot lists flag {flag_key} under the key {key}")
            }
            CompileError::ReleaseWithoutStable { agent } => {
                write!(f, "{agent} has a release in progress but no stable bundle")
            }
            CompileError::InvalidWaves { agent, reason } => {
                write!(f, "the waves of {agent}'s release cannot route: {reason}")
            }
        }
    }
}

impl std::error::Error for CompileError {}

/// Why a request could not be routed. Constructing one allocates (the error path only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecideError {
    UnknownAgent { agent: String },
    NoStable { agent: String },
}

impl fmt::Display for DecideError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecideError::UnknownAgent { agent } => {
                write!(f, "agent {agent} is not known in this env")
            }
            DecideError::NoStable { agent } => {
                write!(
                    f,
                    "{agent} has no stable bundle in this env; deploy one first"
                )
            }
        }
    }
}

impl std::error::Error for DecideError {}

/// Which unit a share was computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Unit {
    /// The stickiness the release asked for.
    pub by: Stickiness,
    /// The stickiness attribute was missing, so the request id was bucketed instead.
    pub fell_back_to_request: bool,
}

/// Why a decision picked its arm. Only `Copy` data, so building it costs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code")]
pub enum Reason {
    /// The whole agent is switched off.
    #[serde(rename = "kill_switch")]
    AgentKilled,
    /// The agent is switched off for the request's tenant.
    #[serde(rename = "tenant_killed")]
    TenantKilled,
    /// The request's tenant is excluded from the release.
    #[serde(rename = "tenant_excluded")]
    TenantExcluded,
    /// No release is in progress.
    #[serde(rename = "no_release")]
    NoRelease,
    /// The release rolls out in waves and the request belongs to none of them.
    #[serde(rename = "outside_waves")]
    OutsideWaves,
    /// `bucket < weight`.
    #[serde(rename = "canary_bucket")]
    Canary {
        bucket: u16,
        weight: Percent,
        unit: Unit,
    },
    /// `bucket >= weight`.
    #[serde(rename = "stable_bucket")]
    Stable {
        bucket: u16,
        weight: Percent,
        unit: Unit,
    },
}

impl Reason {
    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::AgentKilled => "kill_switch",
            Reason::TenantKilled => "tenant_killed",
            Reason::TenantExcluded => "tenant_excluded",
            Reason::NoRelease => "no_release",
            Reason::OutsideWaves => "outside_waves",
            Reason::Canary { .. } => "canary_bucket",
            Reason::Stable { .. } => "stable_bucket",
        }
    }

    fn write(
        &self,
        f: &mut fmt::Formatter<'_>,
        release: Option<&str>,
        wave: Option<&str>,
        tenant: Option<&str>,
    ) -> fmt::Result {
        let of_release = |f: &mut fmt::Formatter<'_>| {
            if let Some(w) = wave {
                write!(f, " in wave {w}")?;
            }
            match release {
                Some(id) => write!(f, " of release {id}"),
                None => Ok(()),
            }
        };
        match *self {
            Reason::AgentKilled => f.write_str("the agent is switched off (kill switch): killed"),
            Reason::TenantKilled => match tenant {
                Some(t) => write!(f, "the agent is switched off for tenant {t}: killed"),
                None => f.write_str("the agent is switched off for this tenant: killed"),
            },
            Reason::TenantExcluded => {
                match tenant {
                    Some(t) => write!(f, "tenant {t} is excluded from ")?,
                    None => f.write_str("the tenant is excluded from ")?,
                }
                match release {
                    Some(id) => write!(f, "release {id}: stable"),
                    None => f.write_str("the release: stable"),
                }
            }
            Reason::NoRelease => f.write_str("no release in progress: stable"),
            Reason::OutsideWaves => match release {
                Some(id) => write!(f, "in no wave of release {id}: stable"),
                None => f.write_str("in no wave of the release: stable"),
            },
            Reason::Canary {
                bucket,
                weight,
                unit,
            }
            | Reason::Stable {
                bucket,
                weight,
                unit,
            } => {
                let by = stickiness_name(unit.by);
                let (cmp, arm) = if in_share(bucket, weight) {
                    ("<", "canary")
                } else {
                    (">=", "stable")
                };
                if unit.fell_back_to_request {
                    write!(f, "{by} missing; bucketed by request id: request")?;
                } else {
                    f.write_str(by)?;
                }
                write!(
                    f,
                    " bucket {bucket} {cmp} {} ({weight})",
                    weight.basis_points()
                )?;
                of_release(f)?;
                write!(f, ": {arm}")
            }
        }
    }
}

fn stickiness_name(s: Stickiness) -> &'static str {
    match s {
        Stickiness::User => "user",
        Stickiness::Tenant => "tenant",
        Stickiness::Request => "request",
    }
}

/// `user bucket 317 < 500 (5%): canary`. [`Decision::explain`] adds the release and tenant.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, None, None, None)
    }
}

/// Where one request goes, borrowed from the compiled snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'s> {
    pub arm: Arm,
    /// The bundle to serve; `None` iff the arm is `killed`.
    pub bundle: Option<&'s BundleRef>,
    pub snapshot_version: u64,
    pub reason: Reason,
    /// The id of the release in progress, if the decision got as far as looking at it.
    pub release: Option<&'s str>,
    /// The wave of a waved release the request was routed by.
    pub wave: Option<&'s str>,
}

impl Decision<'_> {
    /// The reason as a sentence naming the release and tenant:
    /// `user bucket 317 < 500 (5%) of release r-12: canary`. Allocates.
    pub fn explain(&self, ctx: &Context<'_>) -> String {
        self.explained(ctx.tenant).to_string()
    }

    /// [`Decision::explain`] without the `String`: formats when displayed, so a caller that
    /// never shows the reason never pays for it.
    pub fn explained<'d>(&'d self, tenant: Option<&'d str>) -> impl fmt::Display + 'd {
        struct Explained<'a>(&'a Decision<'a>, Option<&'a str>);
        impl fmt::Display for Explained<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.reason.write(f, self.0.release, self.0.wave, self.1)
            }
        }
        Explained(self, tenant)
    }
}

/// The unit key a stickiness picks from a request, falling back to the request id (and
/// saying so) when the attribute is missing.
#[inline]
pub(crate) fn unit_key<'c>(by: Stickiness, ctx: &Context<'c>) -> (&'c str, bool) {
    let key = match by {
        Stickiness::User => ctx.user,
        Stickiness::Tenant => ctx.tenant,
        Stickiness::Request => return (ctx.request_id, false),
    };
    match key {
        Some(k) => (k, false),
        None => (ctx.request_id, true),
    }
}

#[derive(Debug)]
pub(super) struct CompiledRelease {
    pub(super) id: String,
    pub(super) candidate: BundleRef,
    pub(super) weight: Percent,
    pub(super) stickiness: Stickiness,
    pub(super) excluded: StrSet,
    pub(super) waves: Option<WaveIndex>,
}

/// A release's waves, indexed so finding a request's wave costs one hash lookup per
/// attribute in use (at most three) and allocates nothing.
#[derive(Debug)]
pub struct WaveIndex {
    pub(super) list: Vec<WaveRouting>,
    /// For each attribute some wave splits on: value -> the first wave naming it.
    by_key: Vec<(WaveKey, FxHashMap<Box<str>, u16>)>,
    /// The wave whose members include [`WAVE_REST`].
    rest: Option<u16>,
}

impl WaveIndex {
    /// `None` for an empty list (no waves: the release's weight applies to everyone).
    pub fn new(agent: &str, list: Vec<WaveRouting>) -> Result<Option<WaveIndex>, CompileError> {
        if list.is_empty() {
            return Ok(None);
        }
        let invalid = |reason: String| CompileError::InvalidWaves {
            agent: agent.to_owned(),
            reason,
        };
        if list.len() > MAX_WAVES {
            return Err(invalid(format!(
                "{} waves; at most {MAX_WAVES}",
                list.len()
            )));
        }
        let mut by_key: Vec<(WaveKey, FxHashMap<Box<str>, u16>)> = Vec::new();
        let mut rest = None;
        let mut names: Vec<&str> = Vec::with_capacity(list.len());
        for (i, w) in list.iter().enumerate() {
            // At most MAX_WAVES entries.
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            if w.name.is_empty() || names.contains(&w.name.as_str()) {
                return Err(invalid(format!(
                    "wave name {:?} is empty or repeated",
                    w.name
                )));
            }
            names.push(&w.name);
            if w.members.is_empty() {
                return Err(invalid(format!("wave {} has no members", w.name)));
            }
            for m in &w.members {
                if m == WAVE_REST {
                    if rest.is_some() {
                        return Err(invalid(format!(
                            "wave {} is a second wave of the rest (\"*\")",
                            w.name
                        )));
                    }
                    rest = Some(i);
                    continue;
                }
                let p = match by_key.iter().position(|(k, _)| *k == w.by) {
                    Some(p) => p,
                    None => {
                        by_key.push((w.by, FxHashMap::default()));
                        by_key.len() - 1
                    }
                };
                let Some((_, map)) = by_key.get_mut(p) else {
                    continue;
                };
                if map.insert(m.as_str().into(), i).is_some() {
                    return Err(invalid(format!("{} {m} is in two waves", w.by.as_str())));
                }
            }
        }
        // The most specific attribute first, so a one-box instance wins over its region.
        by_key.sort_by_key(|(k, _)| WaveKey::ALL.iter().position(|a| a == k));
        Ok(Some(WaveIndex { list, by_key, rest }))
    }

    /// The request's wave: the first wave (in plan order) naming one of its attributes, else
    /// the rest wave.
    #[inline]
    pub fn route(&self, ctx: &Context<'_>) -> Option<&WaveRouting> {
        let mut found: Option<u16> = None;
        for (key, map) in &self.by_key {
            if let Some(v) = key.of(ctx)
                && let Some(&i) = map.get(v)
            {
                found = Some(found.map_or(i, |f| f.min(i)));
            }
        }
        found
            .or(self.rest)
            .and_then(|i| self.list.get(usize::from(i)))
    }
}

#[derive(Debug)]
pub(super) struct CompiledAgent {
    pub(super) stable: Option<BundleRef>,
    /// Not used to decide; kept so the wire snapshot can be rebuilt from the compiled one.
    pub(super) previous: Option<BundleRef>,
    pub(super) release: Option<CompiledRelease>,
    pub(super) killed: bool,
    pub(super) killed_tenants: StrSet,
    /// XXH3-128 of the agent's JSON text when it was read from JSON: a stream update whose
    /// text for this agent hashes the same shares this compiled form instead of rebuilding it.
    pub(super) fingerprint: Option<u128>,
}

impl CompiledAgent {
    fn new(name: &str, r: &AgentRouting) -> Result<CompiledAgent, CompileError> {
        if r.release.is_some() && r.stable.is_none() {
            return Err(CompileError::ReleaseWithoutStable {
                agent: name.to_owned(),
            });
        }
        Ok(CompiledAgent {
            stable: r.stable.clone(),
            previous: r.previous.clone(),
            release: match r.release.as_ref() {
                None => None,
                Some(rel) => Some(CompiledRelease {
                    id: rel.id.clone(),
                    candidate: rel.candidate.clone(),
                    weight: rel.weight,
                    stickiness: rel.stickiness,
                    excluded: StrSet::new(&rel.exclude_tenants),
                    waves: WaveIndex::new(name, rel.waves.clone())?,
                }),
            },
            killed: r.killed,
            killed_tenants: StrSet::new(&r.killed_tenants),
            fingerprint: None,
        })
    }

    /// The bundles this agent's routing can pick: stable, previous stable, candidate.
    pub(super) fn referenced(&self) -> impl Iterator<Item = &BundleRef> {
        [
            self.stable.as_ref(),
            self.previous.as_ref(),
            self.release.as_ref().map(|r| &r.candidate),
        ]
        .into_iter()
        .flatten()
    }

    /// The wire form again, for [`CompiledSnapshot::snapshot`] on a snapshot read from JSON.
    fn routing(&self) -> AgentRouting {
        AgentRouting {
            stable: self.stable.clone(),
            previous: self.previous.clone(),
            release: self.release.as_ref().map(|r| ReleaseRouting {
                id: r.id.clone(),
                candidate: r.candidate.clone(),
                weight: r.weight,
                stickiness: r.stickiness,
                exclude_tenants: r.excluded.iter().map(str::to_owned).collect(),
                waves: r.waves.as_ref().map(|w| w.list.clone()).unwrap_or_default(),
            }),
            killed: self.killed,
            killed_tenants: self.killed_tenants.iter().map(str::to_owned).collect(),
        }
    }
}

/// Compiled flags and their indexes.
#[derive(Debug, Default)]
pub(super) struct CompiledFlags {
    flags: Vec<CompiledFlag>,
    flag_index: FxHashMap<String, usize>,
    /// Indices into `flags` of the keys `<agent>.…`, in key order.
    agent_flags: FxHashMap<String, Vec<usize>>,
}

impl CompiledFlags {
    pub(super) fn new(defs: &BTreeMap<String, Flag>) -> Result<CompiledFlags, CompileError> {
        let mut flags = Vec::with_capacity(defs.len());
        let mut flag_index = FxHashMap::with_capacity_and_hasher(defs.len(), Default::default());
        let mut agent_flags: FxHashMap<String, Vec<usize>> = FxHashMap::default();
        for (key, flag) in defs {
            if *key != flag.key {
                return Err(CompileError::FlagKeyMismatch {
                    key: key.clone(),
                    flag_key: flag.key.clone(),
                });
            }
            let compiled = CompiledFlag::new(flag).map_err(CompileError::InvalidFlag)?;
            let i = flags.len();
            if let Some((prefix, _)) = compiled.key().split_once('.') {
                agent_flags.entry(prefix.to_owned()).or_default().push(i);
            }
            flag_index.insert(key.clone(), i);
            flags.push(compiled);
        }
        Ok(CompiledFlags {
            flags,
            flag_index,
            agent_flags,
        })
    }
}

/// What a compiled snapshot was built from, and so where its bundles, flag definitions and
/// wire form live.
#[derive(Debug)]
enum Source {
    /// [`CompiledSnapshot::compile`]: the server's owned snapshot, kept as is.
    Owned(Snapshot),
    /// [`CompiledSnapshot::from_json`]: only what deciding cannot do without; the wire form
    /// is rebuilt on first demand (the SDK's disk cache, tests), never on the load path.
    Parsed(Parsed),
}

#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) env: String,
    pub(super) published_at_ms: i64,
    pub(super) flags: BTreeMap<String, Flag>,
    /// Shared with the previous version when a stream update does not carry them again.
    pub(super) bundles: BTreeMap<String, Arc<Bundle>>,
    pub(super) rebuilt: OnceLock<Snapshot>,
}

/// A snapshot prepared for deciding: built once per version, then shared by every request
/// (`Send + Sync`; swap whole instances to apply a new version).
#[derive(Debug)]
pub struct CompiledSnapshot {
    version: u64,
    /// Shared with the previous version when a stream update carries an agent unchanged.
    agents: FxHashMap<String, Arc<CompiledAgent>>,
    flags: CompiledFlags,
    source: Source,
}

impl CompiledSnapshot {
    /// Checks that every referenced bundle is carried and every flag is valid, and
    /// precomputes hash sets and per-agent flag lists.
    pub fn compile(snapshot: Snapshot) -> Result<CompiledSnapshot, CompileError> {
        let mut agents =
            FxHashMap::with_capacity_and_hasher(snapshot.agents.len(), Default::default());
        for (name, routing) in &snapshot.agents {
            let referenced = [
                routing.stable.as_ref(),
                routing.previous.as_ref(),
                routing.release.as_ref().map(|r| &r.candidate),
            ];
            if let Some(missing) = referenced
                .into_iter()
                .flatten()
                .find(|b| !snapshot.bundles.contains_key(&b.id))
            {
                return Err(CompileError::MissingBundle {
                    id: missing.id.clone(),
                });
            }
            agents.insert(name.clone(), Arc::new(CompiledAgent::new(name, routing)?));
        }
        let flags = CompiledFlags::new(&snapshot.flags)?;
        Ok(CompiledSnapshot {
            version: snapshot.version,
            agents,
            flags,
            source: Source::Owned(snapshot),
        })
    }

    /// Assembles a snapshot read from JSON (see `load.rs`), already checked there.
    pub(super) fn parsed(
        version: u64,
        agents: FxHashMap<String, Arc<CompiledAgent>>,
        flags: CompiledFlags,
        parsed: Parsed,
    ) -> CompiledSnapshot {
        CompiledSnapshot {
            version,
            agents,
            flags,
            source: Source::Parsed(parsed),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn env(&self) -> &str {
        match &self.source {
            Source::Owned(s) => &s.env,
            Source::Parsed(p) => &p.env,
        }
    }

    /// The snapshot this was compiled from. For one read with
    /// [`CompiledSnapshot::from_json`] it is rebuilt (and kept) on the first call, which
    /// copies every list and bundle: not for the request path.
    pub fn snapshot(&self) -> &Snapshot {
        match &self.source {
            Source::Owned(s) => s,
            Source::Parsed(p) => p.rebuilt.get_or_init(|| {
                let mut agents: Vec<(&String, &Arc<CompiledAgent>)> = self.agents.iter().collect();
                agents.sort_unstable_by(|a, b| a.0.cmp(b.0));
                Snapshot {
                    env: p.env.clone(),
                    version: self.version,
                    published_at_ms: p.published_at_ms,
                    agents: agents
                        .into_iter()
                        .map(|(name, a)| (name.clone(), a.routing()))
                        .collect(),
                    flags: p.flags.clone(),
                    bundles: p
                        .bundles
                        .iter()
                        .map(|(id, b)| (id.clone(), Bundle::clone(b)))
                        .collect(),
                }
            }),
        }
    }

    pub fn bundle(&self, id: &str) -> Option<&Bundle> {
        match &self.source {
            Source::Owned(s) => s.bundles.get(id),
            Source::Parsed(p) => p.bundles.get(id).map(|b| &**b),
        }
    }

    /// A bundle to carry into the next version: shared when this snapshot was read from
    /// JSON, copied once when it was compiled from an owned snapshot.
    pub(super) fn shared_bundle(&self, id: &str) -> Option<Arc<Bundle>> {
        match &self.source {
            Source::Owned(s) => s.bundles.get(id).map(|b| Arc::new(b.clone())),
            Source::Parsed(p) => p.bundles.get(id).cloned(),
        }
    }

    /// This version's compiled form of `agent` if it was read from JSON whose text hashed to
    /// `fingerprint`.
    pub(super) fn agent_with_fingerprint(
        &self,
        agent: &str,
        fingerprint: u128,
    ) -> Option<&Arc<CompiledAgent>> {
        self.agents
            .get(agent)
            .filter(|a| a.fingerprint == Some(fingerprint))
    }

    /// Routes one request of `agent`. Allocates nothing unless it returns an error.
    pub fn decide<'s>(
        &'s self,
        agent: &str,
        ctx: &Context<'_>,
    ) -> Result<Decision<'s>, DecideError> {
        let Some(a) = self.agents.get(agent) else {
            return Err(DecideError::UnknownAgent {
                agent: agent.to_owned(),
            });
        };
        let version = self.version;
        let killed = |reason| Decision {
            arm: Arm::Killed,
            bundle: None,
            snapshot_version: version,
            reason,
            release: None,
            wave: None,
        };
        if a.killed {
            return Ok(killed(Reason::AgentKilled));
        }
        if let Some(t) = ctx.tenant
            && !a.killed_tenants.is_empty()
            && a.killed_tenants.contains(t)
        {
            return Ok(killed(Reason::TenantKilled));
        }
        let Some(stable) = a.stable.as_ref() else {
            return Err(DecideError::NoStable {
                agent: agent.to_owned(),
            });
        };
        let Some(r) = a.release.as_ref() else {
            return Ok(Decision {
                arm: Arm::Stable,
                bundle: Some(stable),
                snapshot_version: version,
                reason: Reason::NoRelease,
                release: None,
                wave: None,
            });
        };
        let release = Some(r.id.as_str());
        if let Some(t) = ctx.tenant
            && !r.excluded.is_empty()
            && r.excluded.contains(t)
        {
            return Ok(Decision {
                arm: Arm::Stable,
                bundle: Some(stable),
                snapshot_version: version,
                reason: Reason::TenantExcluded,
                release,
                wave: None,
            });
        }
        let (weight, wave) = match r.waves.as_ref() {
            None => (r.weight, None),
            Some(waves) => match waves.route(ctx) {
                Some(w) => (w.weight, Some(w.name.as_str())),
                None => {
                    return Ok(Decision {
                        arm: Arm::Stable,
                        bundle: Some(stable),
                        snapshot_version: version,
                        reason: Reason::OutsideWaves,
                        release,
                        wave: None,
                    });
                }
            },
        };
        let (key, fell_back_to_request) = unit_key(r.stickiness, ctx);
        let b = bucket(&r.id, key);
        let unit = Unit {
            by: r.stickiness,
            fell_back_to_request,
        };
        let (arm, bundle, reason) = if in_share(b, weight) {
            (
                Arm::Canary,
                &r.candidate,
                Reason::Canary {
                    bucket: b,
                    weight,
                    unit,
                },
            )
        } else {
            (
                Arm::Stable,
                stable,
                Reason::Stable {
                    bucket: b,
                    weight,
                    unit,
                },
            )
        };
        Ok(Decision {
            arm,
            bundle: Some(bundle),
            snapshot_version: version,
            reason,
            release,
            wave,
        })
    }

    /// Evaluates one flag; `None` if the snapshot has no flag `key`. Allocates nothing.
    pub fn flag<'s>(&'s self, key: &str, ctx: &Context<'_>) -> Option<FlagEvaluation<'s>> {
        let i = *self.flags.flag_index.get(key)?;
        self.flags.flags.get(i).map(|f| f.evaluate(ctx))
    }

    /// Evaluates every flag whose key starts with `<agent>.`, in key order. Allocates nothing.
    pub fn agent_flags<'s, 'c>(
        &'s self,
        agent: &str,
        ctx: &'c Context<'c>,
    ) -> impl Iterator<Item = FlagEvaluation<'s>> + 'c
    where
        's: 'c,
    {
        self.flags
            .agent_flags
            .get(agent)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(move |&i| self.flags.flags.get(i))
            .map(move |f| f.evaluate(ctx))
    }
}
