//! `serin readiness apply|check|show|history`, `serin evidence`, `serin eval`, `serin drill`.

// Answers are read as `serde_json::Value`, whose `value["key"]` yields Null for a missing
// key instead of panicking, so the indexing lint does not apply.
#![allow(clippy::indexing_slicing)]

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use reqwest::Method;
use serde_json::{Value, json};
use serin_core::release::DurationSpec;
use serin_core::slug;

use crate::CheckFailed;
use crate::cli::{
    DrillCommand, EvalCommand, EvidenceCommand, Output, ReadinessCommand, ReleaseTarget,
};
use crate::client::Client;
use crate::out;

fn base(t: &ReleaseTarget) -> anyhow::Result<(Client, String)> {
    slug::validate_agent(&t.agent).map_err(|e| anyhow!("{e}"))?;
    slug::validate_env(&t.env).map_err(|e| anyhow!("--env: {e}"))?;
    Ok((
        Client::new(&t.client)?,
        format!("/v1/envs/{}/agents/{}", t.env, t.agent),
    ))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn when(ms: &Value) -> String {
    ms.as_i64()
        .map(serin_server::clock::rfc3339)
        .unwrap_or_default()
}

/// Cuts a cell to `max` characters so one long link does not wreck the table.
fn cell(s: &str, max: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The readiness table: required and warn items (every item with `all`), then the
/// `block_if` rules that fired and the verdict.
pub fn render_check(v: &Value, all: bool) {
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    let mut hidden = 0;
    for i in &items {
        let level = text(&i["level"]);
        if level == "info" && !all {
            hidden += 1;
            continue;
        }
        let source = text(&i["source"]);
        // A computed item's evidence is how it was computed.
        let evidence = if source == "computed" {
            text(&i["how"])
        } else {
            text(&i["evidence"])
        };
        rows.push(vec![
            text(&i["key"]),
            level,
            text(&i["status"]),
            text(&i["owner"]),
            cell(&evidence, 70),
            cell(&text(&i["next_action"]), 60),
            source,
        ]);
    }
    let policy = match v["policy_version"].as_i64() {
        Some(p) => format!("policy v{p}"),
        None => "no policy".to_owned(),
    };
    out::line(&format!(
        "{} in {} ({policy}, {})",
        text(&v["bundle"]),
        text(&v["env"]),
        text(&v["digest"])
    ));
    if !rows.is_empty() {
        out::table(
            &[
                "ITEM",
                "LEVEL",
                "STATUS",
                "OWNER",
                "EVIDENCE",
                "NEXT ACTION",
                "SOURCE",
            ],
            &rows,
        );
    }
    if hidden > 0 {
        out::line(&format!(
            "({hidden} more item(s) shown for context with --all)"
        ));
    }
    for b in v["blocked_by"].as_array().into_iter().flatten() {
        out::line(&format!("blocked: {}", text(b)));
    }
    if v["plan_attached"] == Value::Bool(false) && v["policy_version"].is_i64() {
        out::line("note: no --plan given, so plan items are missing");
    }
    out::line(&text(&v["verdict"]));
}

pub async fn readiness(cmd: ReadinessCommand) -> anyhow::Result<()> {
    match cmd {
        ReadinessCommand::Init { .. } => Err(anyhow!("readiness init is handled offline")),
        ReadinessCommand::Apply { target, policy } => {
            let (c, path) = base(&target)?;
            let yaml = std::fs::read_to_string(&policy)
                .with_context(|| format!("could not read {}", policy.display()))?;
            // Validate locally first so a mistake names the file and line.
            serin_core::readiness::Policy::parse_and_validate(&yaml)
                .map_err(|e| anyhow!("{}: {e}", policy.display()))?;
            let v: Value = c
                .send_json(
                    Method::PUT,
                    &format!("{path}/readiness/policy"),
                    &json!({ "yaml": yaml }),
                )
                .await?;
            if target.client.output == Output::Json {
                out::json(&v);
            } else if v["changed"] == Value::Bool(false) {
                out::line(&format!(
                    "unchanged: {} in {} stays at policy v{}",
                    target.agent, target.env, v["version"]
                ));
            } else {
                out::line(&format!(
                    "applied {} as policy v{} of {} in {}",
                    policy.display(),
                    v["version"],
                    target.agent,
                    target.env
                ));
            }
            Ok(())
        }
        ReadinessCommand::Check {
            target,
            bundle,
            plan,
            all,
        } => {
            let (c, path) = base(&target)?;
            let plan = match plan {
                Some(p) => Some(read_plan(&p)?),
                None => None,
            };
            let mut body = json!({ "bundle": bundle });
            if let Some(p) = plan {
                body["plan"] = p;
            }
            let (_, v): (_, Value) = c.post(&format!("{path}/readiness/check"), &body).await?;
            if target.client.output == Output::Json {
                out::json(&v);
            } else {
                render_check(&v, all);
            }
            if v["ready"] == Value::Bool(true) {
                Ok(())
            } else {
                Err(CheckFailed(format!(
                    "{} is not ready for {}",
                    text(&v["bundle"]),
                    target.env
                ))
                .into())
            }
        }
        ReadinessCommand::Show { target, version } => {
            let (c, path) = base(&target)?;
            let q = version.map(|v| format!("?version={v}")).unwrap_or_default();
            let v: Value = c.get(&format!("{path}/readiness/policy{q}")).await?;
            if target.client.output == Output::Json {
                out::json(&v);
            } else {
                out::line(&format!(
                    "# policy v{} of {} in {}, applied {} by {}",
                    v["version"],
                    target.agent,
                    target.env,
                    when(&v["applied_at_ms"]),
                    text(&v["applied_by"])
                ));
                // JSON is YAML too: the output can be fed back to `readiness apply`.
                out::json(&v["policy"]);
            }
            Ok(())
        }
        ReadinessCommand::History { target } => {
            let (c, path) = base(&target)?;
            let v: Value = c.get(&format!("{path}/readiness/policy/history")).await?;
            if target.client.output == Output::Json {
                out::json(&v);
            } else {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        vec![
                            format!("v{}", p["version"]),
                            when(&p["applied_at_ms"]),
                            text(&p["applied_by"]),
                            p["policy"]["require"]
                                .as_array()
                                .map_or(0, Vec::len)
                                .to_string(),
                        ]
                    })
                    .collect();
                out::table(&["VERSION", "APPLIED", "BY", "REQUIRED"], &rows);
            }
            Ok(())
        }
    }
}

/// Reads and checks a plan file, returning it as JSON for the API.
pub fn read_plan(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let parsed = serin_core::release::Plan::parse_and_validate(&text)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    serde_json::to_value(parsed).context("could not encode the plan")
}

fn evidence_rows(list: &[Value]) -> Vec<Vec<String>> {
    let now = serin_server::clock::now_ms();
    list.iter()
        .map(|e| {
            let expires = match e["expires_at_ms"].as_i64() {
                Some(t) if t <= now => format!("expired {}", serin_server::clock::rfc3339(t)),
                Some(t) => serin_server::clock::rfc3339(t),
                None => String::new(),
            };
            vec![
                text(&e["key"]),
                text(&e["status"]),
                text(&e["owner"]),
                cell(&text(&e["evidence"]), 60),
                when(&e["recorded_at_ms"]),
                expires,
            ]
        })
        .collect()
}

pub async fn evidence(cmd: EvidenceCommand) -> anyhow::Result<()> {
    match cmd {
        EvidenceCommand::Set {
            target,
            key,
            status,
            owner,
            evidence,
            next_action,
            expires,
        } => {
            let (c, path) = base(&target)?;
            if !serin_core::readiness::is_valid_key(&key) {
                return Err(anyhow!(
                    "{key:?} is not an item key (snake_case, at most 64 characters)"
                ));
            }
            let v: Value = c
                .send_json(
                    Method::PUT,
                    &format!("{path}/readiness/evidence/{key}"),
                    &json!({
                        "status": status, "owner": owner, "evidence": evidence,
                        "next_action": next_action, "expires": expires,
                    }),
                )
                .await?;
            if target.client.output == Output::Json {
                out::json(&v);
            } else {
                let until = v["expires_at_ms"]
                    .as_i64()
                    .map(|t| format!(", expires {}", serin_server::clock::rfc3339(t)))
                    .unwrap_or_default();
                out::line(&format!(
                    "recorded {key} = {} for {} in {} (owner {}{until})",
                    text(&v["status"]),
                    target.agent,
                    target.env,
                    text(&v["owner"])
                ));
            }
            Ok(())
        }
        EvidenceCommand::List { target, key } => {
            let (c, path) = base(&target)?;
            let url = match &key {
                Some(k) => format!("{path}/readiness/evidence/{k}"),
                None => format!("{path}/readiness/evidence"),
            };
            let v: Value = c.get(&url).await?;
            if target.client.output == Output::Json {
                out::json(&v);
            } else {
                let list = v.as_array().cloned().unwrap_or_default();
                out::table(
                    &["KEY", "STATUS", "OWNER", "EVIDENCE", "RECORDED", "EXPIRES"],
                    &evidence_rows(&list),
                );
            }
            Ok(())
        }
    }
}

pub async fn eval(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Record {
            agent,
            bundle,
            set,
            score,
            threshold,
            evidence,
            client,
        } => {
            slug::validate_agent(&agent).map_err(|e| anyhow!("{e}"))?;
            let c = Client::new(&client)?;
            let (_, v): (_, Value) = c
                .post(
                    &format!("/v1/agents/{agent}/bundles/{bundle}/evals"),
                    &json!({
                        "set": set, "score": score, "threshold": threshold, "evidence": evidence,
                    }),
                )
                .await?;
            if client.output == Output::Json {
                out::json(&v);
            } else {
                let verdict = if v["passed"] == Value::Bool(true) {
                    "pass"
                } else {
                    "FAIL"
                };
                out::line(&format!(
                    "recorded eval {} on {} ({}): score {} vs threshold {} → {verdict}",
                    text(&v["set"]),
                    text(&v["bundle"]),
                    text(&v["digest"]),
                    v["score"],
                    v["threshold"]
                ));
            }
            Ok(())
        }
        EvalCommand::List {
            agent,
            bundle,
            client,
        } => {
            slug::validate_agent(&agent).map_err(|e| anyhow!("{e}"))?;
            let c = Client::new(&client)?;
            let v: Value = c
                .get(&format!("/v1/agents/{agent}/bundles/{bundle}/evals"))
                .await?;
            if client.output == Output::Json {
                out::json(&v);
            } else {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            text(&e["set"]),
                            e["score"].to_string(),
                            e["threshold"].to_string(),
                            if e["passed"] == Value::Bool(true) {
                                "pass".to_owned()
                            } else {
                                "fail".to_owned()
                            },
                            when(&e["recorded_at_ms"]),
                            text(&e["recorded_by"]),
                        ]
                    })
                    .collect();
                out::table(
                    &["SET", "SCORE", "THRESHOLD", "RESULT", "RECORDED", "BY"],
                    &rows,
                );
            }
            Ok(())
        }
    }
}

fn ms_text(v: &Value) -> String {
    v.as_f64().map(|m| format!("{m:.1} ms")).unwrap_or_default()
}

fn render_drill(d: &Value) {
    out::line(&format!(
        "drill {}: {} ({} → {} → {})",
        text(&d["id"]),
        text(&d["outcome"]),
        text(&d["from"]),
        text(&d["to"]),
        text(&d["from"])
    ));
    for (name, leg) in [
        ("rollback", &d["rollback"]),
        ("roll-forward", &d["forward"]),
    ] {
        if leg.is_null() {
            out::line(&format!("  {name}: not done"));
            continue;
        }
        let sdks = leg["sdks"].as_u64().unwrap_or(0);
        let who = if sdks == 0 {
            "no SDK connected; measured commit to publish".to_owned()
        } else {
            format!(
                "{}/{sdks} SDKs confirmed, p50 {}",
                leg["confirmed"],
                ms_text(&leg["p50_ms"])
            )
        };
        out::line(&format!(
            "  {name}: snapshot v{} in {} (commit {}; {who})",
            leg["version"],
            ms_text(&leg["duration_ms"]),
            ms_text(&leg["commit_ms"])
        ));
        for l in leg["lagging"].as_array().into_iter().flatten() {
            // Older servers send only the ids; newer ones also say which
            // replica each laggard's stream is on.
            let replica = leg["laggards"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|g| g["instance"] == *l)
                .and_then(|g| g["replica"].as_str());
            match replica {
                Some(r) => out::line(&format!("    lagging: {} (on replica {r})", text(l))),
                None => out::line(&format!("    lagging: {}", text(l))),
            }
        }
    }
    if !d["error"].is_null() {
        out::line(&format!("  error: {}", text(&d["error"])));
    }
}

pub async fn drill(cmd: DrillCommand) -> anyhow::Result<()> {
    match cmd {
        DrillCommand::Rollback { target, timeout } => {
            let spec = DurationSpec::parse(&timeout).map_err(|e| anyhow!("--timeout: {e}"))?;
            let wait = Duration::from_millis(spec.as_ms());
            if wait.is_zero() || wait > Duration::from_secs(120) {
                return Err(anyhow!("--timeout must be above 0 and at most 120s"));
            }
            slug::validate_agent(&target.agent).map_err(|e| anyhow!("{e}"))?;
            slug::validate_env(&target.env).map_err(|e| anyhow!("--env: {e}"))?;
            // Two legs of waiting plus the commits: give the request room beyond both.
            let c = Client::with_timeout(&target.client, wait * 2 + Duration::from_secs(30))?;
            let path = format!("/v1/envs/{}/agents/{}", target.env, target.agent);
            let (_, v): (_, Value) = c
                .post(
                    &format!("{path}/drills"),
                    &json!({ "timeout_ms": spec.as_ms() }),
                )
                .await?;
            if target.client.output == Output::Json {
                out::json(&v);
            } else {
                render_drill(&v);
            }
            if v["outcome"] == "succeeded" {
                Ok(())
            } else if v["error"].is_string() {
                Err(CheckFailed(format!(
                    "drill {} {}: {}",
                    text(&v["id"]),
                    text(&v["outcome"]),
                    text(&v["error"])
                ))
                .into())
            } else {
                Err(CheckFailed(format!("drill {} {}", text(&v["id"]), text(&v["outcome"]))).into())
            }
        }
        DrillCommand::History { target } => {
            let (c, path) = base(&target)?;
            let v: Value = c.get(&format!("{path}/drills")).await?;
            if target.client.output == Output::Json {
                out::json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["drills"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    vec![
                        text(&d["id"]),
                        when(&d["started_ms"]),
                        text(&d["outcome"]),
                        d["rollback"]["sdks"].as_u64().unwrap_or(0).to_string(),
                        ms_text(&d["rollback"]["duration_ms"]),
                        ms_text(&d["forward"]["duration_ms"]),
                        text(&d["started_by"]),
                    ]
                })
                .collect();
            if rows.is_empty() {
                out::line(&format!(
                    "no drills of {} in {} yet (serin drill rollback)",
                    target.agent, target.env
                ));
                return Ok(());
            }
            out::table(
                &[
                    "DRILL", "STARTED", "OUTCOME", "SDKS", "ROLLBACK", "FORWARD", "BY",
                ],
                &rows,
            );
            let s = &v["summary"];
            out::line(&format!(
                "{} drill(s), {} succeeded; median rollback {}; trend {} (newer half {}, older half {})",
                s["count"],
                s["succeeded"],
                ms_text(&s["median_rollback_ms"]),
                text(&s["trend"]),
                ms_text(&s["recent_median_ms"]),
                ms_text(&s["earlier_median_ms"])
            ));
            Ok(())
        }
    }
}
