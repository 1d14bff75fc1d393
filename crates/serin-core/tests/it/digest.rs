//! The digest: stable across formatting, sensitive to content.

use serin_core::bundle::{Bundle, BundleFiles, Digest, PinPolicy};

use crate::{edited, run, support_files, with_file};

fn bundle_of(files: &BundleFiles) -> Bundle {
    let v = run(files, PinPolicy::Strict);
    v.bundle
        .unwrap_or_else(|| panic!("invalid bundle: {:#?}", v.problems))
}

fn digest_of(files: &BundleFiles) -> Digest {
    bundle_of(files).digest()
}

#[test]
fn digest_has_the_documented_format() {
    let d = digest_of(&support_files());
    assert!(d.as_str().starts_with("sha256:"));
    assert_eq!(d.as_str().len(), 7 + 64);
    assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
}

#[test]
fn digest_ignores_yaml_key_order_whitespace_comments_and_quoting() {
    let base = digest_of(&support_files());
    let reformatted = "metadata:\n  commit: '9af3c21'\n  reviewer: jordan\n  author: \"alex\"\n\
        eval_set: golden-v3   # the golden set\n\
        tools: ./tools\n\
        examples: examples\n\
        prompt: ./prompt.md\n\
        model:\n    params:\n        max_tokens: 1024\n        temperature: 0.2\n    snapshot: claude-opus-4-7-20260108\n    provider: anthropic\n\
        agent:   support\n\
        capabilities:\n  lookup_account:\n    owner: \"identity-team\"\n    effect: read\n";
    assert_eq!(digest_of(&with_file("bundle.yaml", reformatted)), base);

    let tool = r#"{"input_schema":{"additionalProperties":false,"required":["account_id"],"properties":{"account_id":{"description":"Account id (acct-NNNN) or the employee's email address.","type":"string"}},"type":"object"},"description":"Fetch an employee account: status, groups and open access requests.","name":"lookup_account"}"#;
    assert_eq!(
        digest_of(&with_file("tools/lookup_account.json", tool)),
        base
    );

    let example = "messages:\n- role: user\n  content: My access request is stuck.\n- role: assistant\n  content: I'll open a ticket so the access team can look at it.\n  tool_calls:\n  - arguments:\n      summary: stuck\n      request_id: AR-1\n    name: create_support_ticket\n- role: tool\n  content: '{\"ticket_id\": \"SUP-4812\"}'\n- role: assistant\n  content: \"Done: ticket SUP-4812 is with the access team. They pick up new tickets within the working day.\"\n";
    assert_eq!(
        digest_of(&with_file("examples/stuck-access-request.yaml", example)),
        base
    );
}

#[test]
fn digest_normalises_crlf_in_the_prompt() {
    let files = support_files();
    let prompt = std::str::from_utf8(files.get("prompt.md").unwrap()).unwrap();
    let crlf = prompt.replace('\n', "\r\n");
    assert_ne!(crlf, prompt);
    assert_eq!(digest_of(&with_file("prompt.md", crlf)), digest_of(&files));
}

#[test]
fn tool_file_names_do_not_matter_but_example_file_names_do() {
    let base = digest_of(&support_files());
    let mut files = support_files();
    let tool = files.get("tools/lookup_account.json").unwrap().to_vec();
    let mut renamed = BundleFiles::new();
    for (path, bytes) in files.iter() {
        if path != "tools/lookup_account.json" {
            renamed.insert(path, bytes);
        }
    }
    renamed.insert("tools/accounts.json", tool);
    assert_eq!(digest_of(&renamed), base);

    let example = files.get("examples/locked-account.yaml").unwrap().to_vec();
    files = BundleFiles::from_iter(
        files
            .iter()
            .filter(|(p, _)| *p != "examples/locked-account.yaml")
            .map(|(p, b)| (p.to_owned(), b.to_vec())),
    );
    files.insert("examples/locked.yaml", example);
    assert_ne!(digest_of(&files), base);
}

#[test]
fn digest_changes_when_any_meaningful_content_changes() {
    let base = digest_of(&support_files());
    let edits: &[(&str, &str, &str)] = &[
        (
            "tools/lookup_account.json",
            r#""additionalProperties": false"#,
            r#""additionalProperties": true"#,
        ),
        (
            "tools/lookup_account.json",
            r#""required": ["account_id"],"#,
            "",
        ),
        (
            "tools/lookup_account.json",
            "or the employee's email",
            "or the employee email",
        ),
        (
            "tools/create_support_ticket.json",
            r#""maxLength": 200"#,
            r#""maxLength": 201"#,
        ),
        (
            "tools/create_support_ticket.json",
            r#""enum": ["low", "normal", "high"]"#,
            r#""enum": ["normal", "low", "high"]"#,
        ),
        ("bundle.yaml", "temperature: 0.2", "temperature: 0.3"),
        (
            "bundle.yaml",
            "temperature: 0.2",
            "temperature: 0.2, top_p: 1",
        ),
        ("bundle.yaml", "reviewer: jordan", "reviewer: sam"),
        ("bundle.yaml", "eval_set: golden-v3\n", ""),
        (
            "prompt.md",
            "Short, plain sentences.",
            "Short,  plain sentences.",
        ),
        ("prompt.md", "data.\n", "data."),
        (
            "examples/locked-account.yaml",
            "priority: high",
            "priority: low",
        ),
    ];
    for (file, from, to) in edits {
        assert_ne!(
            digest_of(&edited(file, from, to)),
            base,
            "{file}: {from:?} -> {to:?}"
        );
    }
}

#[test]
fn canonical_json_is_sorted_compact_and_round_trips() {
    let bundle = bundle_of(&support_files());
    let json = bundle.canonical_json();
    assert!(
        json.starts_with(r#"{"agent":"support","eval_set":"golden-v3","examples":[{"messages":"#),
        "{json}"
    );
    // No whitespace outside strings, keys sorted: serde_json's compact, BTreeMap-ordered
    // rendering of the same value is identical.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&value).unwrap(), json);
    let back = Bundle::from_canonical_json(&json).unwrap();
    assert_eq!(back, bundle);
    assert_eq!(back.canonical_json(), json);
    // The derived Serialize is the same document (modulo key order).
    let derived = serde_json::to_value(&bundle).unwrap();
    let canonical: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(derived, canonical);
}

#[test]
fn from_canonical_json_rejects_unknown_fields() {
    let bundle = bundle_of(&support_files());
    let json = bundle.canonical_json().replacen('{', r#"{"extra":1,"#, 1);
    let err = Bundle::from_canonical_json(&json).unwrap_err();
    assert!(err.to_string().contains("extra"), "{err}");
}

/// A bundle stored before tools could declare capabilities keeps the digest it was stored
/// under (computed then, by the code of the time), and declaring one changes it.
#[test]
fn bundles_without_capabilities_keep_their_digest() {
    const OLD: &str = r#"{"agent":"support","examples":[],"metadata":{"author":"alex"},"model":{"params":{"max_tokens":1024},"provider":"anthropic","snapshot":"claude-opus-4-7-20260108"},"prompt":"Help.\n","tools":[{"description":"Fetch an account.","input_schema":{"properties":{"account_id":{"maxLength":64,"type":"string"}},"required":["account_id"],"type":"object"},"name":"lookup_account"}]}"#;
    let b = Bundle::from_canonical_json(OLD).unwrap();
    assert_eq!(b.canonical_json(), OLD);
    assert_eq!(
        b.digest().as_str(),
        "sha256:1ebe701ef8d41cc71e70586c144d11713d5ff90e2d2e9b1c4241448247e9bd84"
    );
    let mut declared = b.clone();
    declared.tools[0].capability =
        Some(serde_json::from_str(r#"{"effect": "read", "owner": "identity-team"}"#).unwrap());
    assert_ne!(declared.digest(), b.digest());
    // Removing the declaration again gives the old digest back.
    declared.tools[0].capability = None;
    assert_eq!(declared.digest(), b.digest());
}
