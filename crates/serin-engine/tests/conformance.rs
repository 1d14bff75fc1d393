//! Runs every conformance vector (`testdata/conformance/*.json`) through the engine and
//! compares with the committed expectations, which are never regenerated here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use serin_engine::conformance::{VectorFile, observe};
use serin_engine::decision::CompiledSnapshot;

fn vector_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> (VectorFile, CompiledSnapshot) {
    let file: VectorFile = serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json = serde_json::to_vec(&file.snapshot).unwrap();
    let snapshot = CompiledSnapshot::from_json(&json)
        .unwrap_or_else(|e| panic!("{}: snapshot does not load: {e}", path.display()));
    (file, snapshot)
}

#[test]
fn every_vector_case_decides_as_committed() {
    let files = vector_files();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_owned())
        .collect();
    for topic in [
        "kills",
        "exclusions",
        "stickiness",
        "ramp",
        "flags",
        "unknown-agent",
        "no-stable",
    ] {
        assert!(names.iter().any(|n| n == topic), "missing {topic}.json");
    }
    let mut checked = 0;
    for path in &files {
        let (file, snapshot) = load(path);
        // Both load paths must agree: the SDK reads JSON, the server compiles its `Snapshot`.
        let owned =
            CompiledSnapshot::compile(serde_json::from_value(file.snapshot.clone()).unwrap())
                .unwrap();
        for case in &file.cases {
            let expect = case
                .expect
                .as_ref()
                .unwrap_or_else(|| panic!("{}: case {} has no expect", path.display(), case.name));
            let ctx = case.context.as_context();
            let got = observe(&snapshot, &case.agent, &ctx);
            assert_eq!(&got, expect, "{}: case {}", path.display(), case.name);
            assert_eq!(
                observe(&owned, &case.agent, &ctx),
                got,
                "{}: {}",
                path.display(),
                case.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} cases");
}

#[test]
fn ramp_vectors_are_monotonic() {
    let mut chains = 0;
    for path in vector_files() {
        let (file, snapshot) = load(&path);
        if file.monotonic.is_empty() {
            continue;
        }
        chains += 1;
        let mut contexts: Vec<_> = file.cases.iter().map(|c| c.context.clone()).collect();
        contexts.dedup_by(|a, b| a.request_id == b.request_id);
        for ctx in &contexts {
            let arms: Vec<_> = file
                .monotonic
                .iter()
                .map(|agent| observe(&snapshot, agent, &ctx.as_context()).arm.unwrap())
                .collect();
            if let Some(first) = arms.iter().position(|a| a == "canary") {
                assert!(
                    arms.iter().skip(first).all(|a| a == "canary"),
                    "{}: {ctx:?} leaves the canary as the weight rises: {arms:?}",
                    path.display()
                );
            }
        }
    }
    assert!(chains > 0, "no vector declares a monotonic chain");
}
