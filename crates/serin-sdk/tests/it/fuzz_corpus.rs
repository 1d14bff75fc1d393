//! The snapshot fuzz corpus (`fuzz/corpus/snapshot/*`: a served snapshot, a NUL byte, a stream
//! event) replayed through the SDK's delta merge with the fuzz target's own property check.

#[path = "../../../../fuzz/src/sdk_checks.rs"]
mod sdk_checks;

use std::path::PathBuf;

use serin_sdk::{CompiledSnapshot, MergeError, Snapshot, merge_snapshot};

#[test]
fn the_snapshot_corpus_merges_keeping_exactly_the_referenced_bundles() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/snapshot");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(broken) = sdk_checks::snapshot_delta(&data) {
            panic!("{}: {broken}", path.display());
        }
        n += 1;
    }
    assert!(n > 0, "no corpus in {}", dir.display());
}

fn snapshot(version: u64, stable: &str, carried: &[&str]) -> Snapshot {
    let bundle = serde_json::json!({
        "agent": "support",
        "model": {"provider": "anthropic", "snapshot": "claude-opus-4-7-20260108"},
        "prompt": "p"
    });
    let bundles: serde_json::Map<String, serde_json::Value> = carried
        .iter()
        .map(|id| ((*id).to_owned(), bundle.clone()))
        .collect();
    serde_json::from_value(serde_json::json!({
        "env": "prod",
        "version": version,
        "published_at_ms": 0,
        "agents": {"support": {
            "stable": {"id": stable, "number": 1, "digest": "sha256:00"},
            "previous": null
        }},
        "bundles": bundles
    }))
    .unwrap()
}

#[test]
fn a_delta_without_the_bundle_it_routes_to_is_refused_unless_the_served_snapshot_has_it() {
    let event = snapshot(2, "support@1", &[]);
    assert!(matches!(
        merge_snapshot(None, event.clone()),
        Err(MergeError::MissingBundle { id }) if id == "support@1"
    ));
    let served = CompiledSnapshot::compile(snapshot(1, "support@1", &["support@1"])).unwrap();
    let merged = merge_snapshot(Some(&served), event).unwrap();
    assert_eq!(merged.version(), 2);
    assert!(merged.bundle("support@1").is_some());
}

#[test]
fn bundles_nothing_routes_to_any_more_are_dropped() {
    let event = snapshot(3, "support@2", &["support@1", "support@2"]);
    let merged = merge_snapshot(None, event).unwrap();
    let carried: Vec<&String> = merged.snapshot().bundles.keys().collect();
    assert_eq!(carried, ["support@2"]);
}
