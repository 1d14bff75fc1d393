use serin_core::bundle::PinPolicy;
#[test]
fn scratch_print() {
    let mut files = crate::edited("bundle.yaml", "claude-opus-4-7-20260108", "claude-opus-4-7");
    files.insert("tools/lookup_account.json", r#"{"name": "lookup_account", "description": "x", "input_schema": {"type": 12}}"#);
    files.insert("tools/broken.json", "{");
    files.insert("examples/stuck-access-request.yaml", "messages:\n  - role: assistant\n    tool_calls: [{name: create_support_ticket, arguments: {summary: 5}}]\n");
    files.insert("examples/bad.yaml", "messages: [");
    files.insert("examples/bad2.yaml", "messages:\n  - {role: bot, content: x}\n");
    files.insert("examples/bad3.yaml", "messages:\n  - {role: user, content: x, extra: 1}\n");
    files.insert("notes.txt", "x");
    let v = crate::run(&files, PinPolicy::Strict);
    for p in &v.problems { eprintln!("{p}"); }
    for s in ["latest", "acme-large"] {
        let v = crate::run(&crate::edited("bundle.yaml", "claude-opus-4-7-20260108", s), PinPolicy::Dev);
        for p in &v.problems { eprintln!("{p}"); }
    }
    for y in ["agent: [x]\n", "agent: x\nmodel: 3\nprompt: p\n", "agent: x\nmodel: {provider: a, snapshot: b, params: [1]}\nprompt: p\n", "- a\n"] {
        let v = crate::run(&crate::with_file("bundle.yaml", y), PinPolicy::Dev);
        for p in &v.problems { eprintln!("{p}"); }
    }
    let b = crate::run(&crate::support_files(), PinPolicy::Strict).bundle.unwrap();
    let b2 = crate::run(&crate::edited("prompt.md", "Short, plain", "Short and plain"), PinPolicy::Strict).bundle.unwrap();
    eprintln!("{}", serin_core::bundle::diff(&b, &b2));
}
