//! `diff`: what changed between two bundles.

use serin_core::bundle::{Bundle, ChangeKind, PinPolicy, diff, diff_labeled};

use crate::{edited, run, support_files};

fn bundle(files: &serin_core::bundle::BundleFiles) -> Bundle {
    let v = run(files, PinPolicy::Strict);
    v.bundle
        .unwrap_or_else(|| panic!("invalid bundle: {:#?}", v.problems))
}

#[test]
fn identical_bundles_have_an_empty_diff() {
    let b = bundle(&support_files());
    let d = diff(&b, &b);
    assert!(d.is_empty());
    assert!(d.to_string().contains("no changes"), "{d}");
}

#[test]
fn prompt_change_shows_as_a_unified_diff_with_named_headers() {
    let old = bundle(&support_files());
    let new = bundle(&edited(
        "prompt.md",
        "No apologies beyond one.",
        "Never apologise.",
    ));
    let d = diff_labeled(&old, "support@1", &new, "support@2");
    let prompt = d.prompt.as_deref().unwrap();
    assert!(
        prompt.starts_with("--- support@1/prompt\n+++ support@2/prompt\n@@"),
        "{prompt}"
    );
    assert!(
        prompt.contains("\n-Short, plain sentences. No apologies beyond one."),
        "{prompt}"
    );
    assert!(
        prompt.contains("\n+Short, plain sentences. Never apologise."),
        "{prompt}"
    );
    assert!(d.tools.is_empty() && d.model.is_empty());
    assert!(
        d.to_string().contains("prompt:\n  --- support@1/prompt"),
        "{d}"
    );
}

#[test]
fn model_change_lists_before_and_after() {
    let old = bundle(&support_files());
    let new = bundle(&edited(
        "bundle.yaml",
        "snapshot: claude-opus-4-7-20260108\n  params: {temperature: 0.2,",
        "snapshot: claude-opus-4-5-20251101\n  params: {temperature: 0.3,",
    ));
    let d = diff(&old, &new);
    let snap = d.model.snapshot.as_ref().unwrap();
    assert_eq!(snap.old.as_deref(), Some("claude-opus-4-7-20260108"));
    assert_eq!(snap.new.as_deref(), Some("claude-opus-4-5-20251101"));
    assert_eq!(d.model.params.len(), 1);
    assert_eq!(d.model.params[0].path, "/temperature");
    let text = d.to_string();
    assert!(
        text.contains("snapshot: claude-opus-4-7-20260108 → claude-opus-4-5-20251101"),
        "{text}"
    );
    assert!(text.contains("~ params/temperature: 0.2 → 0.3"), "{text}");
}

#[test]
fn tool_schema_change_lists_the_changed_paths() {
    let old = bundle(&support_files());
    let mut files = edited(
        "tools/create_support_ticket.json",
        r#""maxLength": 200"#,
        r#""maxLength": 500"#,
    );
    files.insert(
        "tools/close_ticket.json",
        r#"{"name": "close_ticket", "description": "Close a ticket.", "input_schema": {"type": "object"}}"#,
    );
    let new = bundle(&files);
    let d = diff(&old, &new);
    let summary: Vec<_> = d
        .tools
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.kind,
                t.changes
                    .iter()
                    .map(|c| c.path.as_str())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("close_ticket", ChangeKind::Added, vec![]),
            (
                "create_support_ticket",
                ChangeKind::Changed,
                vec!["/input_schema/properties/summary/maxLength"]
            ),
        ]
    );
    let text = d.to_string();
    assert!(text.contains("  + close_ticket\n"), "{text}");
    assert!(
        text.contains("      ~ /input_schema/properties/summary/maxLength: 200 → 500"),
        "{text}"
    );
}

#[test]
fn example_eval_set_and_metadata_changes_are_listed() {
    let old = bundle(&support_files());
    let files = edited(
        "bundle.yaml",
        "eval_set: golden-v3\nmetadata: {author: alex, reviewer: jordan",
        "eval_set: golden-v4\nmetadata: {author: alex, reviewer: sam",
    );
    let files = {
        let mut f = files;
        let text = std::str::from_utf8(f.get("examples/locked-account.yaml").unwrap())
            .unwrap()
            .replace("priority: high", "priority: normal");
        f.insert("examples/locked-account.yaml", text);
        f
    };
    let d = diff(&old, &bundle(&files));
    assert_eq!(
        d.eval_set.as_ref().unwrap().new.as_deref(),
        Some("golden-v4")
    );
    assert_eq!(d.metadata.len(), 1);
    assert_eq!(d.metadata[0].field, "reviewer");
    assert_eq!(d.examples.len(), 1);
    assert_eq!(
        d.examples[0].changes[0].path,
        "/messages/3/tool_calls/0/arguments/priority"
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["examples"][0]["kind"], "changed");
}
