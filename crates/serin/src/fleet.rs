//! `serin fleet AGENT --env E`: the SDK instances of an env and what each serves of AGENT.

// `serde_json::Value["key"]` yields Null for a missing key; it cannot panic.
#![allow(clippy::indexing_slicing)]

use std::io::IsTerminal as _;
use std::time::Duration;

use serde_json::Value;

use crate::cli::{Output, ReleaseTarget};
use crate::client::Client;
use crate::out;

pub async fn run(target: &ReleaseTarget, watch: bool) -> anyhow::Result<()> {
    let client = Client::new(&target.client)?;
    let path = format!("/v1/envs/{}/sdks?agent={}", target.env, target.agent);
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let v: Value = client.get(&path).await?;
        if target.client.output == Output::Json {
            out::json(&v);
        } else {
            let text = render(&v, &target.agent, &target.env).join("\n");
            if tty && watch {
                // Redraw in place: clear the screen, cursor home.
                out::line(&format!("\x1b[2J\x1b[H{text}"));
            } else if text != last {
                out::line(&text);
            }
            last = text;
        }
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// The table: one row per instance, with its serving of the agent beside its registry entry.
pub fn render(v: &Value, agent: &str, env: &str) -> Vec<String> {
    let empty = Vec::new();
    let instances = v["instances"].as_array().unwrap_or(&empty);
    let serving = v["serving"].as_array().unwrap_or(&empty);
    let mut lines = vec![format!(
        "{agent} in {env}: {} SDK instance(s), env at version {}",
        instances.len(),
        text(&v["version"])
    )];
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            let name = i["instance"].as_str().unwrap_or("?");
            let s = serving
                .iter()
                .find(|s| s["instance"].as_str() == Some(name))
                .unwrap_or(&Value::Null);
            let lag = match s["lag"].as_u64() {
                Some(0) => "0".to_owned(),
                Some(n) => format!("{n} behind"),
                None => "-".to_owned(),
            };
            vec![
                name.to_owned(),
                text(&s["serves"]),
                text(&i["applied_version"]),
                lag,
                text(&i["region"]),
                text(&i["pool"]),
                text(&s["wave"]),
                if i["connected"].as_bool() == Some(true) {
                    "yes".to_owned()
                } else {
                    "no".to_owned()
                },
                crate::status::ago(
                    now_ms().saturating_sub(i["last_seen_ms"].as_i64().unwrap_or(0)),
                ),
            ]
        })
        .collect();
    if rows.is_empty() {
        lines.push("no SDK instance has followed this env in the last 10 minutes".to_owned());
        return lines;
    }
    lines.extend(out::table_lines(
        &[
            "INSTANCE",
            "SERVES",
            "VERSION",
            "LAG",
            "REGION",
            "POOL",
            "WAVE",
            "CONNECTED",
            "LAST SEEN",
        ],
        &rows,
    ));
    lines
}
