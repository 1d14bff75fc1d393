//! `validate`: each kind of bad input gives the expected code, file and location.

use serin_core::bundle::{BundleFiles, Limits, PinPolicy, Severity};

use crate::{edited, render, run, run_with, support_files, with_file};

/// Validates `files` under the strict policy and compares the rendered problems with `expect`
/// (one `severity file location code` per line; `-` for no location).
#[track_caller]
fn check(files: BundleFiles, expect: &str) {
    let v = run(&files, PinPolicy::Strict);
    let want: Vec<&str> = expect
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        render(&v),
        want.join("\n"),
        "\nproblems:\n{:#?}",
        v.problems
    );
    assert_eq!(v.bundle.is_some(), !v.has_errors());
}

/// The message of the only problem with `code`.
#[track_caller]
fn message(files: &BundleFiles, policy: PinPolicy, code: &str) -> String {
    let v = run(files, policy);
    let found: Vec<_> = v.problems.iter().filter(|p| p.code == code).collect();
    assert_eq!(found.len(), 1, "{:#?}", v.problems);
    found[0].message.clone()
}

#[test]
fn the_sample_bundle_is_valid() {
    let v = run(&support_files(), PinPolicy::Strict);
    assert_eq!(v.problems, []);
    let bundle = v.bundle.unwrap();
    assert_eq!(bundle.agent, "support");
    assert_eq!(bundle.model.snapshot, "claude-opus-4-7-20260108");
    assert_eq!(bundle.model.params["max_tokens"], 1024);
    assert_eq!(bundle.model.params["temperature"], 0.2);
    let tools: Vec<_> = bundle.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tools, ["create_support_ticket", "lookup_account"]);
    let examples: Vec<_> = bundle.examples.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        examples,
        ["locked-account.yaml", "stuck-access-request.yaml"]
    );
    assert_eq!(bundle.eval_set.as_deref(), Some("golden-v3"));
    assert_eq!(bundle.metadata.reviewer.as_deref(), Some("jordan"));
}

#[test]
fn a_missing_manifest_is_reported_not_a_panic() {
    check(BundleFiles::new(), "error bundle.yaml - missing_file");
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    check(
        with_file(
            "bundle.yaml",
            "agent: support\nmodel: {provider: anthropic\nprompt: p.md\n",
        ),
        "error bundle.yaml line 3, column 7 invalid_yaml",
    );
}

#[test]
fn unknown_top_level_field_is_an_error_naming_the_field() {
    let files = edited("bundle.yaml", "eval_set:", "evalset:");
    check(
        files.clone(),
        "error bundle.yaml line 10, column 1 unknown_field",
    );
    let msg = message(&files, PinPolicy::Strict, "unknown_field");
    assert!(msg.contains("evalset"), "{msg}");
}

#[test]
fn unknown_nested_field_is_an_error_naming_the_field() {
    let files = edited("bundle.yaml", "  params:", "  temperature: 0.2\n  params:");
    check(
        files.clone(),
        "error bundle.yaml line 6, column 3 unknown_field",
    );
    assert!(message(&files, PinPolicy::Strict, "unknown_field").contains("temperature"));

    let files = edited(
        "bundle.yaml",
        "commit: 9af3c21",
        "commit: 9af3c21, team: core",
    );
    check(
        files.clone(),
        "error bundle.yaml line 11, column 61 unknown_field",
    );
    assert!(message(&files, PinPolicy::Strict, "unknown_field").contains("team"));
}

#[test]
fn missing_and_mistyped_manifest_fields_are_reported() {
    check(
        edited("bundle.yaml", "agent: support\n", ""),
        "error bundle.yaml /agent missing_field",
    );
    // Every missing field at once, as pointers.
    check(
        with_file(
            "bundle.yaml",
            "model: {provider: anthropic}\nprompt: prompt.md\n",
        ),
        "error bundle.yaml /agent missing_field
         error bundle.yaml /model/snapshot missing_field
         error prompt.md line 9 prompt_mentions_unknown_tool
         error prompt.md line 12 prompt_mentions_unknown_tool",
    );
    // Every mistyped field at once, as pointers naming the field.
    let files = with_file(
        "bundle.yaml",
        "agent: [support]\nmodel: {provider: {a: 1}, snapshot: claude-opus-4-7-20260108, params: [1]}\nprompt: prompt.md\nexamples: examples\ntools: tools\nmetadata: {commit: 1234567, author: [a]}\n",
    );
    check(
        files.clone(),
        "error bundle.yaml /agent invalid_field
         error bundle.yaml /model/provider invalid_field
         error bundle.yaml /model/params invalid_field
         error bundle.yaml /metadata/author invalid_field",
    );
    let v = run(&files, PinPolicy::Strict);
    assert_eq!(
        v.problems[0].message,
        "field `agent` must be a string, found a sequence"
    );
    // A scalar where a string is expected is that string.
    let v = run(
        &edited("bundle.yaml", "commit: 9af3c21", "commit: 1234567"),
        PinPolicy::Strict,
    );
    assert_eq!(
        v.bundle.unwrap().metadata.commit.as_deref(),
        Some("1234567")
    );
    check(
        with_file("bundle.yaml", "- agent\n"),
        "error bundle.yaml - invalid_field",
    );
    check(
        edited("bundle.yaml", "agent: support", "agent: Support_Bot"),
        "error bundle.yaml /agent invalid_agent",
    );
    check(
        edited("bundle.yaml", "provider: anthropic", "provider: ''"),
        "error bundle.yaml /model/provider empty_field",
    );
}

#[test]
fn manifest_paths_outside_the_bundle_are_rejected() {
    check(
        edited("bundle.yaml", "prompt: prompt.md", "prompt: ../prompt.md"),
        "error bundle.yaml /prompt path_outside_bundle
         warning prompt.md - unreferenced_file",
    );
    check(
        edited("bundle.yaml", "tools: tools/", "tools: /etc/tools"),
        "error bundle.yaml /tools path_outside_bundle
         warning tools/create_support_ticket.json - unreferenced_file
         warning tools/lookup_account.json - unreferenced_file",
    );
}

#[test]
fn a_huge_prompt_is_too_large_and_not_parsed() {
    let huge = vec![b'a'; 50 * 1024 * 1024];
    let mut limits = Limits::DEFAULT;
    limits.total_bytes = usize::MAX;
    let v = run_with(&with_file("prompt.md", huge), PinPolicy::Strict, &limits);
    assert_eq!(render(&v), "error prompt.md - too_large");
    assert!(v.problems[0].message.contains("1 MiB"), "{}", v.problems[0]);

    // With the default total limit, the bundle as a whole is rejected first.
    let v = run(
        &with_file("prompt.md", vec![b'a'; 50 * 1024 * 1024]),
        PinPolicy::Strict,
    );
    assert_eq!(render(&v), "error . - too_large");
    assert!(v.problems[0].message.contains("8 MiB"), "{}", v.problems[0]);
}

#[test]
fn too_many_tools_is_an_error() {
    let mut limits = Limits::DEFAULT;
    limits.max_tools = 1;
    let v = run_with(&support_files(), PinPolicy::Strict, &limits);
    assert_eq!(render(&v), "error tools - too_large");
}

#[test]
fn a_missing_prompt_file_is_an_error() {
    let mut files = BundleFiles::new();
    for (path, bytes) in support_files().iter() {
        if path != "prompt.md" {
            files.insert(path, bytes);
        }
    }
    check(files, "error prompt.md - missing_file");
}

#[test]
fn a_non_utf8_file_is_named() {
    check(
        with_file(
            "tools/lookup_account.json",
            b"{\n\"name\": \"lookup\xff\"}".to_vec(),
        ),
        "error tools/lookup_account.json line 2 not_utf8",
    );
}

#[test]
fn malformed_json_reports_line_and_column() {
    check(
        with_file(
            "tools/lookup_account.json",
            "{\n  \"name\": \"lookup_account\",\n}",
        ),
        "error tools/lookup_account.json line 3, column 1 invalid_json",
    );
}

#[test]
fn a_tool_with_unknown_missing_and_mistyped_fields_reports_each() {
    check(
        with_file(
            "tools/lookup_account.json",
            r#"{"name": "lookup account", "desc": "x", "input_schema": {"type": "object"}}"#,
        ),
        "error tools/lookup_account.json /desc unknown_field
         error tools/lookup_account.json /name invalid_tool_name
         error tools/lookup_account.json /description missing_field",
    );
}

#[test]
fn a_schema_that_is_not_a_json_schema_is_invalid_schema_with_its_pointer() {
    let files = edited(
        "tools/lookup_account.json",
        r#""type": "string","#,
        r#""type": 12,"#,
    );
    check(
        files.clone(),
        "error tools/lookup_account.json /input_schema/properties/account_id/type invalid_schema",
    );
    let msg = message(&files, PinPolicy::Strict, "invalid_schema");
    assert!(msg.contains("not a valid JSON Schema"), "{msg}");
}

#[test]
fn a_schema_that_is_not_an_object_schema_is_invalid() {
    check(
        edited(
            "tools/lookup_account.json",
            r#""type": "object","#,
            r#""type": "array","#,
        ),
        "error tools/lookup_account.json /input_schema/type invalid_schema",
    );
    check(
        with_file(
            "tools/lookup_account.json",
            r#"{"name": "lookup_account", "description": "x", "input_schema": true}"#,
        ),
        // The examples calling lookup_account cannot be checked, but are not `unknown_tool`.
        "error tools/lookup_account.json /input_schema invalid_schema",
    );
}

#[test]
fn duplicate_tool_names_name_both_files() {
    let mut files = support_files();
    files.insert(
        "tools/zz_copy.json",
        files.get("tools/lookup_account.json").unwrap().to_vec(),
    );
    check(
        files.clone(),
        "error tools/zz_copy.json /name duplicate_tool",
    );
    let msg = message(&files, PinPolicy::Strict, "duplicate_tool");
    assert!(
        msg.contains("tools/lookup_account.json") && msg.contains("tools/zz_copy.json"),
        "{msg}"
    );
}

#[test]
fn an_example_calling_an_unknown_tool_is_an_error() {
    let files = edited(
        "examples/locked-account.yaml",
        "name: lookup_account",
        "name: find_account",
    );
    check(
        files.clone(),
        "error examples/locked-account.yaml /messages/1/tool_calls/0/name unknown_tool",
    );
    let msg = message(&files, PinPolicy::Strict, "unknown_tool");
    assert!(
        msg.contains("find_account") && msg.contains("lookup_account"),
        "{msg}"
    );
}

#[test]
fn example_arguments_are_validated_against_the_tool_schema() {
    // Missing required field.
    let files = edited(
        "examples/locked-account.yaml",
        "account_id: acct-7731",
        "id: acct-7731",
    );
    check(
        files.clone(),
        "error examples/locked-account.yaml /messages/1/tool_calls/0/arguments tool_arguments_invalid
         error examples/locked-account.yaml /messages/1/tool_calls/0/arguments tool_arguments_invalid",
    );
    let v = run(&files, PinPolicy::Strict);
    let messages: Vec<_> = v.problems.iter().map(|p| p.message.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("\"account_id\" is a required property")),
        "{messages:?}"
    );

    // Wrong type, located at the field.
    check(
        edited(
            "examples/locked-account.yaml",
            "account_id: acct-7731",
            "account_id: 7731",
        ),
        "error examples/locked-account.yaml /messages/1/tool_calls/0/arguments/account_id tool_arguments_invalid",
    );
    check(
        edited(
            "examples/stuck-access-request.yaml",
            r#"request_id: "AR-1""#,
            r#"request_id: "X-1""#,
        ),
        "error examples/stuck-access-request.yaml /messages/1/tool_calls/0/arguments/request_id tool_arguments_invalid",
    );
}

#[test]
fn example_structure_errors_are_reported() {
    check(
        edited(
            "examples/locked-account.yaml",
            "  - role: user\n",
            "  - role: customer\n",
        ),
        "error examples/locked-account.yaml line 2, column 11 invalid_field",
    );
    check(
        edited(
            "examples/locked-account.yaml",
            "    content: \"I can't",
            "    text: \"I can't",
        ),
        "error examples/locked-account.yaml line 3, column 5 unknown_field",
    );
    check(
        with_file(
            "examples/locked-account.yaml",
            "messages:\n  - role: user\n    tool_calls: [{name: lookup_account, arguments: {account_id: a}}]\n  - role: assistant\n",
        ),
        "error examples/locked-account.yaml /messages/0/tool_calls invalid_message
         error examples/locked-account.yaml /messages/1 invalid_message",
    );
}

#[test]
fn a_prompt_calling_a_tool_that_does_not_exist_is_an_error() {
    let files = edited(
        "prompt.md",
        "Tell the user the ticket id",
        "If they ask for money back, call refund_order(order_id, reason).\nTell the user the ticket id",
    );
    check(
        files.clone(),
        "error prompt.md line 14 prompt_mentions_unknown_tool",
    );
    let msg = message(&files, PinPolicy::Strict, "prompt_mentions_unknown_tool");
    assert!(msg.contains("refund_order("), "{msg}");
}

#[test]
fn prose_with_parentheses_is_not_a_tool_mention() {
    check(
        edited(
            "prompt.md",
            "# Tone",
            "Some function(s) may apply (see notes).\n# Tone",
        ),
        "",
    );
}

#[test]
fn a_catalog_alias_is_an_error_when_strict_and_a_warning_in_dev_saying_what_it_means() {
    let files = edited("bundle.yaml", "claude-opus-4-7-20260108", "claude-opus-4-7");
    check(
        files.clone(),
        "error bundle.yaml /model/snapshot unpinned_model",
    );
    let msg = message(&files, PinPolicy::Strict, "unpinned_model");
    assert!(
        msg.contains("alias claude-opus-4-7 currently means claude-opus-4-7-20260108"),
        "{msg}"
    );

    let v = crate::run(&files, PinPolicy::Dev);
    assert_eq!(
        render(&v),
        "warning bundle.yaml /model/snapshot unpinned_model"
    );
    assert!(v.bundle.is_some(), "a warning does not block the bundle");
}

#[test]
fn latest_and_suffixless_ids_are_moving_aliases() {
    for snapshot in [
        "latest",
        "claude-opus-latest",
        "claude@latest",
        "claude-opus-4",
    ] {
        check(
            edited("bundle.yaml", "claude-opus-4-7-20260108", snapshot),
            "error bundle.yaml /model/snapshot unpinned_model",
        );
    }
    let files = edited("bundle.yaml", "claude-opus-4-7-20260108", "gpt-4o-latest");
    assert!(message(&files, PinPolicy::Dev, "unpinned_model").contains("`latest`"));
    // A dated snapshot the catalog does not know is fine.
    check(
        edited(
            "bundle.yaml",
            "claude-opus-4-7-20260108",
            "claude-opus-5-20270101",
        ),
        "",
    );
}

#[test]
fn unreferenced_files_are_warnings() {
    let mut files = support_files();
    files.insert("notes.txt", "todo");
    files.insert("tools/README.md", "docs");
    files.insert("examples/nested/a.yaml", "messages: []");
    let v = run(&files, PinPolicy::Strict);
    assert_eq!(
        render(&v),
        "warning examples/nested/a.yaml - unreferenced_file\n\
         warning notes.txt - unreferenced_file\n\
         warning tools/README.md - unreferenced_file"
    );
    assert!(v.problems.iter().all(|p| p.severity == Severity::Warning));
    assert!(v.bundle.is_some());
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut files = edited("bundle.yaml", "claude-opus-4-7-20260108", "claude-opus-4-7");
    files.insert(
        "tools/lookup_account.json",
        r#"{"name": "lookup_account", "description": "x", "input_schema": {"type": 12}}"#,
    );
    files.insert("tools/broken.json", "{");
    let prompt = std::str::from_utf8(files.get("prompt.md").unwrap())
        .unwrap()
        .to_owned();
    files.insert(
        "prompt.md",
        format!("{prompt}\nUse `refund_order(` for refunds.\n"),
    );
    files.insert(
        "examples/stuck-access-request.yaml",
        "messages:\n  - role: assistant\n    tool_calls: [{name: create_support_ticket, arguments: {summary: 5}}]\n",
    );
    files.insert("examples/bad.yaml", "messages: [");
    check(
        files,
        "error bundle.yaml /model/snapshot unpinned_model
         error examples/bad.yaml line 1, column 11 invalid_yaml
         error examples/stuck-access-request.yaml /messages/0/tool_calls/0/arguments/summary tool_arguments_invalid
         error prompt.md line 21 prompt_mentions_unknown_tool
         error tools/broken.json line 1, column 1 invalid_json
         error tools/lookup_account.json /input_schema/type invalid_schema",
    );
}

#[test]
fn problems_display_as_one_line() {
    let files = edited("bundle.yaml", "claude-opus-4-7-20260108", "claude-opus-4-7");
    let v = run(&files, PinPolicy::Strict);
    let line = v.problems[0].to_string();
    assert!(
        line.starts_with("error: bundle.yaml /model/snapshot: model snapshot \"claude-opus-4-7\" is a moving alias"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
    let json = serde_json::to_value(&v.problems[0]).unwrap();
    assert_eq!(json["severity"], "error");
    assert_eq!(json["location"], "/model/snapshot");
}

#[test]
fn duplicate_yaml_keys_are_invalid_yaml() {
    check(
        edited(
            "bundle.yaml",
            "agent: support\n",
            "agent: support\nagent: other\n",
        ),
        "error bundle.yaml line 3, column 1 invalid_yaml",
    );
}

#[test]
fn manifest_paths_tells_the_loader_what_to_read() {
    let paths =
        serin_core::bundle::manifest_paths(support_files().get("bundle.yaml").unwrap()).unwrap();
    assert_eq!(paths.prompt, "prompt.md");
    assert_eq!(paths.examples.as_deref(), Some("examples"));
    assert_eq!(paths.tools.as_deref(), Some("tools"));
}

/// The sample's create_support_ticket tool with its capability replaced by `cap` (JSON).
fn ticket_capability(cap: &str) -> BundleFiles {
    edited(
        "tools/create_support_ticket.json",
        r#""capability": {
    "effect": "write",
    "owner": "support-team",
    "limits": {"max_calls_per_request": 3}
  }"#,
        &format!(r#""capability": {cap}"#),
    )
}

#[test]
fn the_sample_declares_its_capabilities_in_both_places() {
    let bundle = run(&support_files(), PinPolicy::Strict).bundle.unwrap();
    let caps: Vec<String> = bundle
        .tools
        .iter()
        .map(|t| {
            let c = t.capability.as_ref().unwrap();
            format!(
                "{} {} {} {:?}",
                t.name,
                c.effect,
                c.owner.as_deref().unwrap_or("-"),
                c.limits
            )
        })
        .collect();
    assert_eq!(
        caps,
        [
            "create_support_ticket write support-team {\"max_calls_per_request\": Number(3)}",
            "lookup_account read identity-team {}",
        ]
    );
}

#[test]
fn a_write_or_irreversible_tool_needs_an_owner() {
    check(
        ticket_capability(r#"{"effect": "write"}"#),
        "error tools/create_support_ticket.json /capability/owner missing_owner",
    );
    check(
        ticket_capability(r#"{"effect": "irreversible", "owner": "  "}"#),
        "error tools/create_support_ticket.json /capability/owner empty_field",
    );
    check(ticket_capability(r#"{"effect": "read"}"#), "");
    let msg = message(
        &ticket_capability(r#"{"effect": "irreversible", "limits": {"max_amount": 5}}"#),
        PinPolicy::Strict,
        "missing_owner",
    );
    assert!(
        msg.contains("an irreversible tool needs an `owner`"),
        "{msg}"
    );
    // The same rule in bundle.yaml, located there.
    check(
        edited(
            "bundle.yaml",
            "lookup_account: {effect: read, owner: identity-team}",
            "lookup_account: {effect: write}",
        ),
        "error bundle.yaml /capabilities/lookup_account/owner missing_owner",
    );
}

#[test]
fn capability_fields_and_limits_are_checked() {
    check(
        ticket_capability(
            r#"{"effect": "delete", "owner": 5, "scope": "all", "limits": {"Max-Amount": 1, "max_calls": -1, "max_x": "10"}}"#,
        ),
        "error tools/create_support_ticket.json /capability/scope unknown_field
         error tools/create_support_ticket.json /capability/effect invalid_field
         error tools/create_support_ticket.json /capability/owner invalid_field
         error tools/create_support_ticket.json /capability/limits/Max-Amount invalid_limit
         error tools/create_support_ticket.json /capability/limits/max_calls invalid_limit
         error tools/create_support_ticket.json /capability/limits/max_x invalid_limit",
    );
    check(
        ticket_capability(r#"{"owner": "x"}"#),
        "error tools/create_support_ticket.json /capability/effect missing_field",
    );
    check(
        ticket_capability("[]"),
        "error tools/create_support_ticket.json /capability invalid_field",
    );
    check(
        edited(
            "bundle.yaml",
            "lookup_account: {effect: read, owner: identity-team}",
            "lookup_account: {effect: read, limits: {max_pages: null, max_rows: -2}}",
        ),
        "error bundle.yaml /capabilities/lookup_account/limits/max_pages invalid_limit
         error bundle.yaml /capabilities/lookup_account/limits/max_rows invalid_limit",
    );
    check(
        edited(
            "bundle.yaml",
            "lookup_account: {effect: read, owner: identity-team}",
            "lookup_account: {effect: read, limits: {max_rows: 2.5}}",
        ),
        "",
    );
    check(
        edited(
            "bundle.yaml",
            "capabilities:\n  lookup_account: {effect: read, owner: identity-team}",
            "capabilities: [lookup_account]",
        ),
        "error bundle.yaml /capabilities invalid_field
         warning tools/lookup_account.json /capability undeclared_capability",
    );
}

#[test]
fn bundle_yaml_capabilities_name_known_tools_once() {
    let files = edited(
        "bundle.yaml",
        "lookup_account: {effect: read",
        "lookup_acount: {effect: read",
    );
    check(
        files.clone(),
        "error bundle.yaml /capabilities/lookup_acount unknown_tool
         warning tools/lookup_account.json /capability undeclared_capability",
    );
    let msg = message(&files, PinPolicy::Strict, "unknown_tool");
    assert!(msg.ends_with("did you mean lookup_account?"), "{msg}");
    let far = edited(
        "bundle.yaml",
        "lookup_account: {effect: read",
        "zzz: {effect: read",
    );
    let msg = message(&far, PinPolicy::Strict, "unknown_tool");
    assert!(
        msg.contains("tools: create_support_ticket, lookup_account"),
        "{msg}"
    );
    let mut both = support_files();
    let manifest = std::str::from_utf8(both.get("bundle.yaml").unwrap())
        .unwrap()
        .to_owned();
    both.insert(
        "bundle.yaml",
        format!("{manifest}  create_support_ticket: {{effect: read}}\n"),
    );
    check(
        both.clone(),
        "error bundle.yaml /capabilities/create_support_ticket duplicate_capability",
    );
    let msg = message(&both, PinPolicy::Strict, "duplicate_capability");
    assert!(msg.contains("tools/create_support_ticket.json"), "{msg}");
}

#[test]
fn an_undeclared_capability_is_a_warning_in_every_env() {
    let files = edited(
        "bundle.yaml",
        "\ncapabilities:\n  lookup_account: {effect: read, owner: identity-team}\n",
        "\n",
    );
    for policy in [PinPolicy::Strict, PinPolicy::Dev] {
        let v = run(&files, policy);
        assert_eq!(
            render(&v),
            "warning tools/lookup_account.json /capability undeclared_capability"
        );
        assert!(
            v.problems[0]
                .message
                .starts_with("capability undeclared, treated as write")
        );
        let bundle = v.bundle.unwrap();
        let lookup = bundle
            .tools
            .iter()
            .find(|t| t.name == "lookup_account")
            .unwrap();
        assert_eq!(lookup.capability, None);
        assert_eq!(
            serin_core::bundle::capabilities::effective_class(lookup),
            serin_core::bundle::EffectClass::Write
        );
    }
}
