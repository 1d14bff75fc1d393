//! Validation and digest cost: the sample bundle, and a synthetic 20-tool bundle.
//!
//! `cargo bench -p serin-core` (add `-- --quick` for a fast look). No assertions on timings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serin_core::bundle::{BundleFiles, Limits, PinPolicy, ValidateOptions, validate};
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

fn sample_files() -> BundleFiles {
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

/// A bundle with 20 tools of a realistic size, a prompt naming each, and 10 examples calling them.
fn synthetic_files(tools: usize) -> BundleFiles {
    let mut files = BundleFiles::new();
    files.insert(
        "bundle.yaml",
        "agent: synthetic\nmodel: {provider: anthropic, snapshot: claude-sonnet-4-5-20250929, params: {temperature: 0}}\nprompt: prompt.md\nexamples: examples\ntools: tools\n",
    );
    let mut prompt = String::from("# Tools\n\n");
    for i in 0..tools {
        prompt.push_str(&format!(
            "- Use `tool_{i}(record_id, note)` when the user asks about records of kind {i}.\n"
        ));
        let schema = serde_json::json!({
            "name": format!("tool_{i}"),
            "description": format!("Operate on records of kind {i}."),
            "input_schema": {
                "type": "object",
                "properties": {
                    "record_id": {"type": "string", "pattern": "^R-[0-9]+$"},
                    "note": {"type": "string", "maxLength": 500},
                    "priority": {"type": "string", "enum": ["low", "normal", "high"]},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
                    "amount": {"type": "number", "minimum": 0},
                },
                "required": ["record_id"],
                "additionalProperties": false,
            }
        });
        files.insert(format!("tools/tool_{i}.json"), schema.to_string());
    }
    files.insert("prompt.md", prompt);
    for e in 0..10 {
        let mut yaml = String::from("messages:\n  - {role: user, content: \"please help\"}\n");
        for i in (e % 4..tools).step_by(4) {
            yaml.push_str(&format!(
                "  - role: assistant\n    tool_calls:\n      - {{name: tool_{i}, arguments: {{record_id: R-{i}, note: \"n\", tags: [a, b], amount: 3.5}}}}\n  - {{role: tool, content: ok}}\n"
            ));
        }
        files.insert(format!("examples/ex_{e}.yaml"), yaml);
    }
    files
}

fn benches(c: &mut Criterion) {
    let catalog = ModelCatalog::builtin();
    let limits = Limits::DEFAULT;
    let opts = ValidateOptions {
        pin_policy: PinPolicy::Strict,
        catalog: &catalog,
        limits: &limits,
    };

    let sample = sample_files();
    let v = validate(&sample, &opts);
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let bundle = v.bundle.unwrap();
    c.bench_function("validate/sample", |b| {
        b.iter(|| validate(black_box(&sample), &opts))
    });
    c.bench_function("digest/sample", |b| b.iter(|| black_box(&bundle).digest()));

    let synthetic = synthetic_files(20);
    let v = validate(&synthetic, &opts);
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let bundle = v.bundle.unwrap();
    c.bench_function("validate/synthetic-20-tools", |b| {
        b.iter(|| validate(black_box(&synthetic), &opts))
    });
    c.bench_function("digest/synthetic-20-tools", |b| {
        b.iter(|| black_box(&bundle).digest())
    });
}

criterion_group!(validate_benches, benches);
criterion_main!(validate_benches);
