//! Snapshot JSON straight into a [`CompiledSnapshot`], the SDK's load path.
//!
//! [`CompiledSnapshot::compile`] takes the owned [`Snapshot`](super::Snapshot), whose tenant
//! lists are `BTreeSet<String>`: one allocation and a tree insertion per tenant, then a second
//! copy into the compiled hash set. That was most of an SDK's cost of applying a version. Here
//! the lists are read from the JSON text directly into the compiled sets (one copy of the
//! bytes, see `strset.rs`), and nothing else is built for the agents. Flags and bundles are
//! read into their owned types, as before: flags need the full definition to be validated,
//! bundles are handed out whole.
//!
//! A stream update resends every agent, but usually changes one. In
//! [`CompiledSnapshot::from_json_update`] each agent's text is first kept raw (a scan, no
//! allocation) and hashed (XXH3-128); an agent whose text hashes as it did in the current
//! version shares that version's compiled form, so applying a push costs a scan of the
//! unchanged agents plus a parse of the changed ones. A first load
//! ([`CompiledSnapshot::from_json`]) has nothing to share and reads agents typed, in one
//! pass. The text comes from our own server over an authenticated stream, so a 128-bit hash
//! is compared, not the bytes (keeping each agent's text would double an SDK's memory for
//! large tenant lists).
//!
//! The wire types below mirror `AgentRouting` and `ReleaseRouting` field for field, with the
//! same defaults and `deny_unknown_fields`, so both paths accept and refuse the same
//! documents and decide identically (`tests/it/decision_load.rs` checks it on random ones).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use xxhash_rust::xxh3::xxh3_128;

use super::engine::{
    CompileError, CompiledAgent, CompiledFlags, CompiledRelease, CompiledSnapshot, Parsed,
    WaveIndex,
};
use super::model::{BundleRef, Flag, Percent, Stickiness, WaveRouting};
use super::strset::StrSet;
use crate::bundle::Bundle;

/// Why snapshot JSON could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    Json(serde_json::Error),
    Compile(CompileError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Json(e) => write!(f, "not a snapshot: {e}"),
            LoadError::Compile(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Json(e) => Some(e),
            // Transparent: the compile error is this error's own message.
            LoadError::Compile(e) => e.source(),
        }
    }
}

impl From<serde_json::Error> for LoadError {
    fn from(e: serde_json::Error) -> LoadError {
        LoadError::Json(e)
    }
}

impl From<CompileError> for LoadError {
    fn from(e: CompileError) -> LoadError {
        LoadError::Compile(e)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRelease {
    id: String,
    candidate: BundleRef,
    weight: Percent,
    #[serde(default)]
    stickiness: Stickiness,
    #[serde(default)]
    exclude_tenants: StrSet,
    #[serde(default)]
    waves: Vec<WaveRouting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAgent {
    stable: Option<BundleRef>,
    previous: Option<BundleRef>,
    #[serde(default)]
    release: Option<WireRelease>,
    #[serde(default)]
    killed: bool,
    #[serde(default)]
    killed_tenants: StrSet,
}

/// The document, with each agent typed (`WireAgent`, a first load) or kept as its raw text
/// (`&RawValue`, a stream update: read only when the current version lacks it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSnapshot<A> {
    env: String,
    version: u64,
    published_at_ms: i64,
    #[serde(default = "BTreeMap::new")]
    agents: BTreeMap<String, A>,
    #[serde(default)]
    flags: BTreeMap<String, Flag>,
    #[serde(default)]
    bundles: BTreeMap<String, Bundle>,
}

impl CompiledSnapshot {
    /// Reads snapshot JSON (the body of `GET /v1/envs/{env}/snapshot`, a disk cache file)
    /// into a compiled snapshot. Accepts exactly what `serde_json` into [`Snapshot`] followed by
    /// [`CompiledSnapshot::compile`] accepts, and decides the same, at a fraction of the cost.
    ///
    /// [`Snapshot`]: super::Snapshot
    pub fn from_json(json: &[u8]) -> Result<CompiledSnapshot, LoadError> {
        load(json, None, false)
    }

    /// Reads a stream event, which may carry only the bundles new since the previous one:
    /// the others are taken from `current` (shared, not copied, when `current` was itself
    /// read from JSON), and bundles nothing references any more are dropped. A bundle
    /// neither carries is [`CompileError::MissingBundle`]; the SDK then fetches the full
    /// snapshot.
    pub fn from_json_update(
        json: &[u8],
        current: Option<&CompiledSnapshot>,
    ) -> Result<CompiledSnapshot, LoadError> {
        load(json, current, true)
    }
}

fn load(
    json: &[u8],
    current: Option<&CompiledSnapshot>,
    update: bool,
) -> Result<CompiledSnapshot, LoadError> {
    // Validating the UTF-8 of the whole document in one pass and parsing it as `str` is much
    // cheaper than `from_slice`, which validates each string on its own: with 10,000 short
    // tenant ids per snapshot, that per-call overhead was a fifth of the load (callgrind). A
    // document that is not UTF-8 goes through `from_slice` to be refused with the same error
    // as the parse-then-compile path.
    let text = match std::str::from_utf8(json) {
        Ok(text) => text,
        // `from_slice` names the first bad byte, as the parse-then-compile path does; it
        // cannot accept a document that is not UTF-8, but say so rather than panic if it did.
        Err(_) => {
            return Err(
                match serde_json::from_slice::<WireSnapshot<WireAgent>>(json) {
                    Err(e) => LoadError::Json(e),
                    Ok(_) => LoadError::Json(serde::de::Error::custom("snapshot is not UTF-8")),
                },
            );
        }
    };
    let (head, agents) = if update {
        let wire: WireSnapshot<&RawValue> = serde_json::from_str(text)?;
        let mut agents = FxHashMap::with_capacity_and_hasher(wire.agents.len(), Default::default());
        for (name, raw) in &wire.agents {
            let fingerprint = xxh3_128(raw.get().as_bytes());
            let agent = match current.and_then(|c| c.agent_with_fingerprint(name, fingerprint)) {
                Some(same) => Arc::clone(same),
                None => Arc::new(compiled_agent(
                    name,
                    read_agent(raw.get(), text)?,
                    Some(fingerprint),
                )?),
            };
            agents.insert(name.clone(), agent);
        }
        (wire.head(), agents)
    } else {
        let mut wire: WireSnapshot<WireAgent> = serde_json::from_str(text)?;
        let agents = std::mem::take(&mut wire.agents)
            .into_iter()
            .map(|(name, a)| {
                let agent = compiled_agent(&name, a, None)?;
                Ok((name, Arc::new(agent)))
            })
            .collect::<Result<_, CompileError>>()?;
        (wire.head(), agents)
    };
    let mut bundles: BTreeMap<String, Arc<Bundle>> = head
        .bundles
        .into_iter()
        .map(|(id, b)| (id, Arc::new(b)))
        .collect();
    // In name order, as `compile` checks them, so both paths name the same problem.
    let mut names: Vec<&String> = agents.keys().collect();
    names.sort_unstable();
    for name in names {
        let Some(agent) = agents.get(name) else {
            continue;
        };
        // Bundles first, then the release: `compile`'s order.
        check_bundles(agent.referenced(), &mut bundles, current, update)?;
        if agent.release.is_some() && agent.stable.is_none() {
            return Err(CompileError::ReleaseWithoutStable {
                agent: name.clone(),
            }
            .into());
        }
    }
    if update {
        let referenced: rustc_hash::FxHashSet<&str> = agents
            .values()
            .flat_map(|a| a.referenced())
            .map(|b| b.id.as_str())
            .collect();
        bundles.retain(|id, _| referenced.contains(id.as_str()));
    }
    let flags = CompiledFlags::new(&head.flags)?;
    Ok(CompiledSnapshot::parsed(
        head.version,
        agents,
        flags,
        Parsed {
            env: head.env,
            published_at_ms: head.published_at_ms,
            flags: head.flags,
            bundles,
            rebuilt: OnceLock::new(),
        },
    ))
}

/// Everything in the document but the agents.
struct Head {
    env: String,
    version: u64,
    published_at_ms: i64,
    flags: BTreeMap<String, Flag>,
    bundles: BTreeMap<String, Bundle>,
}

impl<A> WireSnapshot<A> {
    fn head(self) -> Head {
        Head {
            env: self.env,
            version: self.version,
            published_at_ms: self.published_at_ms,
            flags: self.flags,
            bundles: self.bundles,
        }
    }
}

/// One agent from its own text (already known to be well-formed JSON).
fn read_agent(raw: &str, document: &str) -> Result<WireAgent, LoadError> {
    serde_json::from_str(raw).map_err(|inner| {
        // A position inside the agent's text would mislead: parse the whole document typed,
        // which fails on this agent, for the error the caller would expect.
        LoadError::Json(
            serde_json::from_str::<WireSnapshot<WireAgent>>(document)
                .err()
                .unwrap_or(inner),
        )
    })
}

fn compiled_agent(
    name: &str,
    a: WireAgent,
    fingerprint: Option<u128>,
) -> Result<CompiledAgent, CompileError> {
    let release = match a.release {
        None => None,
        Some(r) => Some(CompiledRelease {
            id: r.id,
            candidate: r.candidate,
            weight: r.weight,
            stickiness: r.stickiness,
            excluded: r.exclude_tenants,
            waves: WaveIndex::new(name, r.waves)?,
        }),
    };
    Ok(CompiledAgent {
        stable: a.stable,
        previous: a.previous,
        release,
        killed: a.killed,
        killed_tenants: a.killed_tenants,
        fingerprint,
    })
}

/// Every bundle in `refs` is carried, or (for an update) taken from `current`.
fn check_bundles<'a>(
    refs: impl Iterator<Item = &'a BundleRef>,
    bundles: &mut BTreeMap<String, Arc<Bundle>>,
    current: Option<&CompiledSnapshot>,
    update: bool,
) -> Result<(), CompileError> {
    for b in refs {
        if bundles.contains_key(&b.id) {
            continue;
        }
        match current
            .filter(|_| update)
            .and_then(|c| c.shared_bundle(&b.id))
        {
            Some(have) => {
                bundles.insert(b.id.clone(), have);
            }
            None => return Err(CompileError::MissingBundle { id: b.id.clone() }),
        }
    }
    Ok(())
}
