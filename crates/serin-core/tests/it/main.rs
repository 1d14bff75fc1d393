//! Integration tests of serin-core's public API, one test binary (`cargo test -p serin-core`).

// Test code: helpers outside `#[test]` functions are not covered by clippy.toml's test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod audit_merkle;
mod catalog;
mod decision_bucket;
mod decision_commands;
mod decision_engine;
mod decision_flags;
mod decision_load;
mod diff;
mod digest;
mod fuzz_corpus;
mod guardrails;
mod guardrails_approvals;
mod guardrails_sim;
mod ledger;
mod props;
mod readiness;
mod readiness_eval;
mod release_machine;
mod release_plan;
mod release_watch;
mod release_waves;
mod roundtrip;
mod validate;

use serin_core::bundle::{BundleFiles, Limits, PinPolicy, ValidateOptions, Validation, validate};
use serin_core::catalog::ModelCatalog;

macro_rules! sample {
    ($path:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/bundles/support/",
            $path
        ))
        .as_slice()
    };
}

/// The files of `examples/bundles/support`, the sample bundle from the README.
pub fn support_files() -> BundleFiles {
    BundleFiles::from_iter([
        ("bundle.yaml", sample!("bundle.yaml")),
        ("prompt.md", sample!("prompt.md")),
        (
            "examples/locked-account.yaml",
            sample!("examples/locked-account.yaml"),
        ),
        (
            "examples/stuck-access-request.yaml",
            sample!("examples/stuck-access-request.yaml"),
        ),
        (
            "tools/create_support_ticket.json",
            sample!("tools/create_support_ticket.json"),
        ),
        (
            "tools/lookup_account.json",
            sample!("tools/lookup_account.json"),
        ),
    ])
}

/// Validates with the builtin catalog and default limits.
pub fn run(files: &BundleFiles, pin_policy: PinPolicy) -> Validation {
    run_with(files, pin_policy, &Limits::DEFAULT)
}

pub fn run_with(files: &BundleFiles, pin_policy: PinPolicy, limits: &Limits) -> Validation {
    let catalog = ModelCatalog::builtin();
    validate(
        files,
        &ValidateOptions {
            pin_policy,
            catalog: &catalog,
            limits,
        },
    )
}

/// One line per problem: `severity file location code`.
pub fn render(v: &Validation) -> String {
    v.problems
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {}",
                p.severity.as_str(),
                p.file,
                p.location.as_deref().unwrap_or("-"),
                p.code
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces one file's text in the sample bundle.
pub fn with_file(path: &str, text: impl Into<Vec<u8>>) -> BundleFiles {
    let mut files = support_files();
    files.insert(path, text);
    files
}

/// The text of a sample file with `from` replaced by `to` (which must occur).
pub fn edited(path: &str, from: &str, to: &str) -> BundleFiles {
    let files = support_files();
    let text = std::str::from_utf8(files.get(path).unwrap()).unwrap();
    assert!(text.contains(from), "{path} does not contain {from:?}");
    with_file(path, text.replacen(from, to, 1))
}
