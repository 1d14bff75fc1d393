// The SDK half of the snapshot fuzz target: a stream event merged into the snapshot being
// served. Compiled into serin-sdk's test suite too (`crates/serin-sdk/tests/it/fuzz_corpus.rs`),
// which replays the committed corpus; it depends on serin-sdk and serde_json only.

use serin_sdk::{CompiledSnapshot, Snapshot, merge_snapshot, referenced_bundles};

/// Splits at the first NUL byte: (served snapshot, stream event), or just an event.
fn parts(data: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(at) => (
            data.get(..at),
            data.get(at.saturating_add(1)..).unwrap_or_default(),
        ),
        None => (None, data),
    }
}

/// An event merged into the served snapshot (or into nothing, as at start) carries exactly the
/// bundles its routing references: those it brought itself, the rest unchanged from what was
/// served.
pub fn snapshot_delta(data: &[u8]) -> Result<(), String> {
    let (served, event) = parts(data);
    let served: Option<CompiledSnapshot> = served
        .and_then(|s| serde_json::from_slice::<Snapshot>(s).ok())
        .and_then(|s| CompiledSnapshot::compile(s).ok());
    let Ok(event) = serde_json::from_slice::<Snapshot>(event) else {
        return Ok(());
    };
    let referenced = referenced_bundles(&event);
    let Ok(merged) = merge_snapshot(served.as_ref(), event.clone()) else {
        return Ok(());
    };
    let carried: Vec<&String> = merged.snapshot().bundles.keys().collect();
    if !carried.iter().copied().eq(referenced.iter()) {
        return Err(format!(
            "merged snapshot carries {carried:?}, its routing references {referenced:?}"
        ));
    }
    for id in &referenced {
        let expected = match event.bundles.get(id) {
            Some(b) => Some(b),
            None => served.as_ref().and_then(|s| s.bundle(id)),
        };
        if merged.bundle(id) != expected {
            return Err(format!(
                "bundle {id} is not the one the event or the served snapshot had"
            ));
        }
    }
    if merged.version() != event.version || merged.env() != event.env {
        return Err("the merge changed the event's version or env".into());
    }
    Ok(())
}
