//! Assembling a stream event into a complete snapshot: the server sends only
//! the bundles new since its previous event, and the SDK keeps the rest.
//!
//! Pure, so the stream task, the tests and the fuzzer run the same code.

use std::collections::BTreeSet;

use serin_engine::decision::{CompileError, CompiledSnapshot, LoadError, Snapshot};

/// Why an event could not be completed; the stream task then fetches the
/// full snapshot.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The routing references a bundle neither the event nor the snapshot
    /// being served carries.
    #[error("bundle {id} is missing")]
    MissingBundle { id: String },
    #[error("does not compile: {0}")]
    Compile(#[from] CompileError),
    /// The event is not snapshot JSON.
    #[error("unreadable: {0}")]
    Json(serde_json::Error),
}

/// [`merge_snapshot`] from the event's JSON, as the stream task does it: the event is read
/// straight into the compiled form ([`CompiledSnapshot::from_json_update`]), with the
/// bundles it does not carry shared with `current`. Same result as parsing it into a
/// [`Snapshot`] and calling [`merge_snapshot`], at a fraction of the cost.
pub fn merge_json(
    current: Option<&CompiledSnapshot>,
    json: &[u8],
) -> Result<CompiledSnapshot, MergeError> {
    CompiledSnapshot::from_json_update(json, current).map_err(|e| match e {
        LoadError::Json(e) => MergeError::Json(e),
        LoadError::Compile(CompileError::MissingBundle { id }) => MergeError::MissingBundle { id },
        LoadError::Compile(e) => MergeError::Compile(e),
    })
}

/// Fills in the bundles `event` does not carry from `current` (the snapshot
/// being served), drops bundles nothing references any more, and compiles.
pub fn merge_snapshot(
    current: Option<&CompiledSnapshot>,
    mut event: Snapshot,
) -> Result<CompiledSnapshot, MergeError> {
    let referenced = referenced_bundles(&event);
    for id in &referenced {
        if event.bundles.contains_key(id) {
            continue;
        }
        let have = current
            .and_then(|c| c.bundle(id))
            .ok_or_else(|| MergeError::MissingBundle { id: id.clone() })?;
        event.bundles.insert(id.clone(), have.clone());
    }
    event.bundles.retain(|id, _| referenced.contains(id));
    Ok(CompiledSnapshot::compile(event)?)
}

/// The ids of the bundles a snapshot's routing can pick: every agent's
/// stable, previous stable and release candidate.
pub fn referenced_bundles(snapshot: &Snapshot) -> BTreeSet<String> {
    snapshot
        .agents
        .values()
        .flat_map(|a| {
            [
                a.stable.as_ref(),
                a.previous.as_ref(),
                a.release.as_ref().map(|r| &r.candidate),
            ]
        })
        .flatten()
        .map(|b| b.id.clone())
        .collect()
}
