//! Fills in `expect` for conformance cases that have none, from this engine, so a new case
//! starts from the engine's answer; a person then reviews it before committing. Cases that
//! already have an `expect` are never touched: the committed values are the contract.
//!
//! `cargo run -p serin-engine --example conformance_fill`

#![allow(clippy::print_stdout, clippy::indexing_slicing)]

use std::path::Path;

use serde_json::Value;
use serin_engine::conformance::{CaseContext, observe};
use serin_engine::decision::CompiledSnapshot;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/conformance");
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let snapshot =
            CompiledSnapshot::from_json(serde_json::to_string(&doc["snapshot"])?.as_bytes())?;
        let mut filled = 0;
        if let Some(cases) = doc.get_mut("cases").and_then(Value::as_array_mut) {
            for case in cases {
                if case.get("expect").is_some() {
                    continue;
                }
                let ctx: CaseContext = serde_json::from_value(case["context"].clone())?;
                let agent = case["agent"].as_str().unwrap_or_default().to_owned();
                let expect = observe(&snapshot, &agent, &ctx.as_context());
                if let Some(obj) = case.as_object_mut() {
                    obj.insert("expect".into(), serde_json::to_value(expect)?);
                    filled += 1;
                }
            }
        }
        let mut text = serde_json::to_string_pretty(&doc)?;
        text.push('\n');
        std::fs::write(&path, text)?;
        println!("{}: filled {filled} cases", path.display());
    }
    Ok(())
}
