//! `serin capabilities AGENT --env E`: what the stable and the running release's candidate
//! of AGENT can do in E (each tool's effect class, owner and limits), then what changes from
//! one to the other, those needing approval first. Read from the env's snapshot, which
//! carries both bundles whole.

// `serde_json::Value["key"]` yields Null for a missing key; it cannot panic.
#![allow(clippy::indexing_slicing)]

use anyhow::{Context, anyhow};
use serde_json::{Value, json};
use serin_core::bundle::Bundle;
use serin_core::bundle::capabilities::{self, CapabilityChange};
use serin_core::slug;

use crate::cli::{Output, ReleaseTarget};
use crate::client::Client;
use crate::{CheckFailed, out};

pub async fn run(target: &ReleaseTarget) -> anyhow::Result<()> {
    let (agent, env) = (target.agent.as_str(), target.env.as_str());
    slug::validate_agent(agent).map_err(|e| anyhow!("{e}"))?;
    slug::validate_env(env).map_err(|e| anyhow!("--env: {e}"))?;
    let client = Client::new(&target.client)?;
    // An unknown env is a 404 naming the nearest one.
    let snapshot: Value = client.get(&format!("/v1/envs/{env}/snapshot")).await?;
    let routing = &snapshot["agents"][agent];
    let Some(stable_id) = routing["stable"]["id"].as_str() else {
        return Err(not_routed(&client, agent, env).await);
    };
    let bundle = |id: &str| -> anyhow::Result<Bundle> {
        serde_json::from_value(snapshot["bundles"][id].clone())
            .with_context(|| format!("the snapshot of {env} does not carry bundle {id}"))
    };
    let stable = bundle(stable_id)?;
    let release = routing["release"]["id"].as_str();
    let candidate = match routing["release"]["candidate"]["id"].as_str() {
        Some(id) => Some((id, bundle(id)?)),
        None => None,
    };
    let changes = candidate
        .as_ref()
        .map(|(_, c)| capabilities::changes(&stable, c))
        .unwrap_or_default();

    if target.client.output == Output::Json {
        out::json(&json!({
            "agent": agent,
            "env": env,
            "stable": arm_json(stable_id, &stable),
            "candidate": candidate.as_ref().map(|(id, b)| arm_json(id, b)),
            "release": release,
            "changes": changes_json(&changes),
        }));
        return Ok(());
    }
    let mut lines = Vec::new();
    match (&candidate, release) {
        (Some((id, _)), Some(rel)) => lines.push(format!(
            "{agent} in {env}: stable {stable_id}, candidate {id} (release {rel}, {})",
            routing["release"]["weight"].as_str().unwrap_or("?")
        )),
        _ => lines.push(format!(
            "{agent} in {env}: stable {stable_id}, no release running"
        )),
    }
    lines.push(String::new());
    lines.push(format!("stable {stable_id}"));
    lines.extend(tool_table(&stable));
    if let Some((id, c)) = &candidate {
        lines.push(String::new());
        lines.push(format!("candidate {id}"));
        lines.extend(tool_table(c));
        lines.push(String::new());
        if changes.is_empty() {
            lines.push(format!("no capability changes from {stable_id} to {id}"));
        } else {
            lines.push(format!(
                "capability changes {stable_id} -> {id} (! needs approval):"
            ));
            lines.extend(change_lines(&changes));
        }
    }
    out::line(&lines.join("\n"));
    Ok(())
}

/// Why AGENT has nothing to list in ENV: it does not exist (nearest name), or it exists but
/// has no stable there.
async fn not_routed(client: &Client, agent: &str, env: &str) -> anyhow::Error {
    let agents: Value = match client.get("/v1/agents").await {
        Ok(v) => v,
        Err(e) => return e,
    };
    let names: Vec<&str> = agents
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    if names.contains(&agent) {
        CheckFailed(format!(
            "{agent} has no stable bundle in {env}; deploy one first (serin deploy {agent} --env {env} --bundle N)"
        ))
        .into()
    } else {
        CheckFailed(slug::not_found_message(
            "agent",
            agent,
            names.iter().copied(),
        ))
        .into()
    }
}

/// `write (undeclared)` for a tool without a declared capability.
fn class_label(t: &serin_core::bundle::Tool) -> String {
    let class = capabilities::effective_class(t);
    if t.capability.is_some() {
        class.to_string()
    } else {
        format!("{class} (undeclared)")
    }
}

fn tool_table(b: &Bundle) -> Vec<String> {
    if b.tools.is_empty() {
        return vec!["  (no tools)".to_owned()];
    }
    let rows: Vec<Vec<String>> = b
        .tools
        .iter()
        .map(|t| {
            let cap = t.capability.as_ref();
            let limits: Vec<String> = cap
                .map(|c| c.limits.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            vec![
                t.name.clone(),
                class_label(t),
                cap.and_then(|c| c.owner.clone())
                    .unwrap_or_else(|| "-".to_owned()),
                if limits.is_empty() {
                    "-".to_owned()
                } else {
                    limits.join(" ")
                },
            ]
        })
        .collect();
    out::table_lines(&["TOOL", "CLASS", "OWNER", "LIMITS"], &rows)
        .into_iter()
        .map(|l| format!("  {l}"))
        .collect()
}

/// `  ! added irreversible tool refund (...)`: `!` marks a change needing approval.
pub fn change_lines(changes: &[CapabilityChange]) -> Vec<String> {
    changes
        .iter()
        .map(|c| {
            let mark = if c.needs_approval() { '!' } else { ' ' };
            format!("  {mark} {}", c.detail)
        })
        .collect()
}

/// Each change with `needs_approval` spelled out for scripts.
pub fn changes_json(changes: &[CapabilityChange]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("needs_approval".into(), json!(c.needs_approval()));
                }
                v
            })
            .collect(),
    )
}

fn arm_json(id: &str, b: &Bundle) -> Value {
    json!({
        "bundle": id,
        "tools": b.tools.iter().map(|t| json!({
            "name": t.name,
            "class": capabilities::effective_class(t),
            "declared": t.capability.is_some(),
            "owner": t.capability.as_ref().and_then(|c| c.owner.clone()),
            "limits": t.capability.as_ref().map(|c| json!(c.limits)).unwrap_or_else(|| json!({})),
        })).collect::<Vec<_>>(),
    })
}
