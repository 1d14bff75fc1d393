//! `serin release ...`.

// Answers are read as `serde_json::Value`, whose `value["key"]` yields Null for
// a missing key instead of panicking, so the indexing lint does not apply.
#![allow(clippy::indexing_slicing)]

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::{Value, json};
use serin_core::slug;

use crate::cli::{Output, ReleaseCommand, ReleaseTarget};
use crate::client::{ApiFailure, Client};
use crate::{CheckFailed, out};

fn base(t: &ReleaseTarget) -> anyhow::Result<(Client, String)> {
    slug::validate_agent(&t.agent).map_err(|e| anyhow!("{e}"))?;
    slug::validate_env(&t.env).map_err(|e| anyhow!("--env: {e}"))?;
    Ok((
        Client::new(&t.client)?,
        format!("/v1/envs/{}/agents/{}", t.env, t.agent),
    ))
}

fn bar(done: f64, width: usize) -> String {
    let filled = ((done.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!(
        "[{}{}]",
        "#".repeat(filled),
        ".".repeat(width.saturating_sub(filled))
    )
}

/// A release view in a few lines (what `status` prints).
pub fn render(v: &Value) -> Vec<String> {
    let r = &v["release"];
    // A waved plan runs every wave's steps in turn: count them as the server does.
    let stages = serde_json::from_value::<serin_core::release::Plan>(r["plan"].clone())
        .ok()
        .filter(|p| p.waves.is_some())
        .map(|p| p.stages().len());
    let steps = stages.unwrap_or_else(|| r["plan"]["steps"].as_array().map_or(0, Vec::len));
    let step = r["step"].as_u64().unwrap_or(0);
    // The routed share (a holdback lowers the final step's); servers before it had none.
    let weight = v["weight"]
        .as_str()
        .or_else(|| r["plan"]["steps"][step as usize]["canary"]["weight"].as_str())
        .unwrap_or("?");
    let mut lines = vec![format!(
        "release {} of {} in {}: {} -> {}, {} at step {}/{} ({})",
        r["id"].as_str().unwrap_or("?"),
        r["agent"].as_str().unwrap_or("?"),
        r["env"].as_str().unwrap_or("?"),
        r["baseline"]["id"].as_str().unwrap_or("?"),
        r["candidate"]["id"].as_str().unwrap_or("?"),
        r["phase"].as_str().unwrap_or("?").to_uppercase(),
        step + 1,
        steps,
        weight,
    )];
    if let Some(why) = v["needs_attention"].as_str() {
        lines.push(format!("  NEEDS ATTENTION: {why}"));
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        lines.push(format!("  warning  {}", w.as_str().unwrap_or("?")));
    }
    let g = &v["gate"];
    if g.is_object() {
        let t = g["elapsed_ms"].as_f64().unwrap_or(0.0);
        let tn = g["needed_ms"].as_f64().unwrap_or(0.0);
        let q = g["requests"].as_f64().unwrap_or(0.0);
        let qn = g["needed_requests"].as_f64().unwrap_or(0.0);
        lines.push(format!(
            "  time     {} {:.0}s / {:.0}s",
            bar(if tn > 0.0 { t / tn } else { 1.0 }, 24),
            t / 1000.0,
            tn / 1000.0
        ));
        lines.push(format!(
            "  requests {} {q:.0} / {qn:.0}",
            bar(if qn > 0.0 { q / qn } else { 1.0 }, 24)
        ));
        lines.push(format!(
            "  gate     {}",
            if g["holds"] == true {
                "holds".to_owned()
            } else {
                g["missing"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default()
            }
        ));
    }
    if let Some(f) = r["failure"].as_object() {
        let mut line = format!(
            "  failure  {} canary {} (n={}) vs stable {} (n={}), {}",
            f.get("guardrail").and_then(Value::as_str).unwrap_or("?"),
            f.get("canary_value")
                .and_then(Value::as_f64)
                .map_or_else(String::new, num),
            f.get("canary_n").map(Value::to_string).unwrap_or_default(),
            f.get("control_value")
                .and_then(Value::as_f64)
                .map_or_else(String::new, num),
            f.get("control_n").map(Value::to_string).unwrap_or_default(),
            f.get("threshold").and_then(Value::as_str).unwrap_or(""),
        );
        if let (Some(e), Some(b)) = (
            f.get("statistic").and_then(Value::as_f64),
            f.get("statistic_threshold").and_then(Value::as_f64),
        ) {
            line.push_str(&format!(", e {} >= bar {}", sig(e), sig(b)));
        }
        if let Some(at) = f.get("latched_at_ms").and_then(Value::as_i64) {
            line.push_str(&format!(", latched {}", time(at)));
        }
        lines.push(line);
    }
    lines.extend(wave_lines(v));
    if r["phase"]
        .as_str()
        .is_some_and(|p| matches!(p, "completed" | "rolled_back" | "aborted"))
    {
        lines.push("  verdicts as recorded at the final transition:".to_owned());
    }
    let inconclusive = &g["inconclusive"];
    for verdict in v["verdicts"].as_array().into_iter().flatten() {
        let name = verdict["guardrail"].as_str().unwrap_or("?");
        lines.push(verdict_line(verdict));
        let waiting = inconclusive
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["guardrail"] == name);
        if let Some(i) = waiting {
            lines.push(format!("      {}", inconclusive_text(i)));
        }
    }
    for c in v["shadow_calibration"].as_array().into_iter().flatten() {
        if let Some(text) = c["summary"].as_str() {
            lines.push(format!("  calibration  {text}"));
        }
    }
    let w = &r["watch"];
    if w.is_object() {
        lines.push(match w["next_due_ms"].as_i64() {
            Some(due) => format!("  watch    next checkpoint at {}", time(due)),
            None => "  watch    ended".to_owned(),
        });
        for c in w["results"].as_array().into_iter().flatten() {
            let breached: Vec<String> = c["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["breached"] == true)
                .map(|f| {
                    format!(
                        "{}{} {} vs baseline {} ({})",
                        f["guardrail"].as_str().unwrap_or("?"),
                        if f["shadow"] == true { " (shadow)" } else { "" },
                        f["current"].as_f64().map_or_else(String::new, num),
                        f["baseline"].as_f64().map_or_else(String::new, num),
                        f["threshold"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            lines.push(format!(
                "    checkpoint {} at {}: {}{}{}",
                c["checkpoint"].as_u64().map_or(0, |i| i + 1),
                c["at_ms"].as_i64().map_or_else(String::new, time),
                c["verdict"].as_str().unwrap_or("?"),
                if c["action"] == "rolled_back" {
                    ", rolled back"
                } else {
                    ""
                },
                if breached.is_empty() {
                    String::new()
                } else {
                    format!(": {}", breached.join("; "))
                },
            ));
        }
    }
    lines
}

/// One guardrail: status, both arms with n, threshold, e-value and bar, the
/// non-inferiority e-value and bar when present, latch time, shadow marker.
fn verdict_line(v: &Value) -> String {
    let name = v["guardrail"].as_str().unwrap_or("?");
    let label = if v["shadow"] == true {
        format!("{name} (shadow)")
    } else {
        name.to_owned()
    };
    let arm = |a: &Value| {
        format!(
            "{} (n={})",
            a["value"].as_f64().map_or_else(|| "?".to_owned(), num),
            a["n"]
        )
    };
    let mut line = format!(
        "  {label:<28} {:<8} canary {} vs stable {}  {}  e {} / {}",
        v["status"].as_str().unwrap_or("?"),
        arm(&v["canary"]),
        arm(&v["control"]),
        v["threshold"].as_str().unwrap_or(""),
        v["statistic"].as_f64().map_or_else(|| "?".to_owned(), sig),
        v["statistic_threshold"]
            .as_f64()
            .map_or_else(|| "?".to_owned(), sig),
    );
    if let (Some(e), Some(b)) = (v["pass_statistic"].as_f64(), v["pass_threshold"].as_f64()) {
        line.push_str(&format!("  non-inferiority e {} / {}", sig(e), sig(b)));
    }
    if let Some(at) = v["latched_at_ms"].as_i64() {
        line.push_str(&format!("  latched {}", time(at)));
    }
    line
}

/// The gate's words for a guardrail it waits on (`inconclusive: 140 of ~900 canary
/// requests, about 6 min`), rebuilt from the structured fields.
fn inconclusive_text(i: &Value) -> String {
    let parsed: Option<serin_core::release::Inconclusive> = serde_json::from_value(i.clone()).ok();
    parsed.map_or_else(|| "inconclusive".to_owned(), |i| i.describe())
}

fn num(x: f64) -> String {
    format!("{x:.4}")
}

fn sig(x: f64) -> String {
    serin_core::release::sig(x)
}

fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

pub async fn run(cmd: ReleaseCommand) -> anyhow::Result<()> {
    match cmd {
        ReleaseCommand::Start {
            target,
            bundle,
            plan,
            override_readiness,
            reason,
            approval,
        } => {
            let (c, path) = base(&target)?;
            // Parse and check locally first, so mistakes name the line.
            let parsed = crate::readiness::read_plan(&plan)?;
            let mut body = json!({ "bundle": bundle, "plan": parsed });
            if override_readiness {
                body["override_readiness"] = Value::Bool(true);
                body["reason"] = json!(reason);
            }
            let answer =
                crate::approvals::act(&c, &format!("{path}/releases"), body, &(&approval).into())
                    .await;
            let v = match answer {
                Ok(crate::approvals::Acted::Done(v)) => v,
                Ok(crate::approvals::Acted::Filed(r)) => {
                    crate::routing::print_filed(&target.client, &r);
                    return Ok(());
                }
                Err(e) => {
                    // The gate said no: show the same table as `readiness check`, exit 1.
                    if let Some(f) = e.downcast_ref::<ApiFailure>()
                        && f.code == "not_ready"
                        && let Some(report) = &f.details
                    {
                        if target.client.output == Output::Json {
                            out::json(report);
                        } else {
                            crate::readiness::render_check(report, false);
                        }
                        return Err(CheckFailed(format!(
                            "release refused: {} (an admin may pass --override-readiness --reason)",
                            f.message
                        ))
                        .into());
                    }
                    return Err(e);
                }
            };
            if target.client.output == Output::Json {
                out::json(&v);
            } else {
                for l in render(&v) {
                    out::line(&l);
                }
            }
            Ok(())
        }
        ReleaseCommand::Status { target, watch } => {
            let (c, path) = base(&target)?;
            let tty = std::io::stdout().is_terminal();
            let mut last = String::new();
            loop {
                let v: Value = c.get(&format!("{path}/release")).await?;
                if target.client.output == Output::Json {
                    out::json(&v);
                } else {
                    let text = render(&v).join("\n");
                    if tty && watch {
                        // Redraw in place: clear the screen, cursor home.
                        out::line(&format!("\x1b[2J\x1b[H{text}"));
                    } else if text != last {
                        out::line(&text);
                    }
                    last = text;
                }
                let finished = !matches!(
                    v["release"]["phase"].as_str(),
                    Some("pending" | "canary" | "paused" | "halted" | "promoting")
                );
                if !watch || finished {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        ReleaseCommand::Promote {
            target,
            force,
            reason,
            approval,
        } => {
            let (c, path) = base(&target)?;
            let body = json!({ "force": force, "reason": reason });
            match crate::approvals::act(
                &c,
                &format!("{path}/release/promote"),
                body,
                &(&approval).into(),
            )
            .await
            {
                Ok(crate::approvals::Acted::Done(v)) => {
                    if target.client.output == Output::Json {
                        out::json(&v);
                    } else {
                        for l in render(&v) {
                            out::line(&l);
                        }
                    }
                    Ok(())
                }
                Ok(crate::approvals::Acted::Filed(r)) => {
                    crate::routing::print_filed(&target.client, &r);
                    Ok(())
                }
                Err(e) => Err(missing_gate(e)),
            }
        }
        ReleaseCommand::Pause { target, reason } => {
            act(&target, "pause", json!({ "reason": reason })).await
        }
        ReleaseCommand::Resume { target } => act(&target, "resume", Value::Null).await,
        ReleaseCommand::Abort { target, reason } => {
            act(&target, "abort", json!({ "reason": reason })).await
        }
        ReleaseCommand::Report { target, release } => {
            let (c, path) = base(&target)?;
            let format = if target.client.output == Output::Json {
                "json"
            } else {
                "markdown"
            };
            let mut url = format!("{path}/release/report?format={format}");
            if let Some(id) = release {
                url.push_str(&format!("&release={}", crate::commands::urlencode(&id)));
            }
            let text = c.get_text(&url).await?;
            out::line(text.trim_end());
            Ok(())
        }
    }
}

async fn act(target: &ReleaseTarget, verb: &str, body: Value) -> anyhow::Result<()> {
    let (c, path) = base(target)?;
    let result: anyhow::Result<Value> = c
        .send_json(
            reqwest::Method::POST,
            &format!("{path}/release/{verb}"),
            &body,
        )
        .await;
    match result {
        Ok(v) => {
            if target.client.output == Output::Json {
                out::json(&v);
            } else {
                for l in render(&v) {
                    out::line(&l);
                }
            }
            Ok(())
        }
        Err(e) => Err(missing_gate(e)),
    }
}

/// A gate that does not hold is the check saying no: list what is missing.
fn missing_gate(e: anyhow::Error) -> anyhow::Error {
    if let Some(f) = e.downcast_ref::<crate::client::ApiFailure>()
        && let Some(missing) = f.details.as_ref().and_then(|d| d["missing"].as_array())
        && !missing.is_empty()
    {
        for m in missing.iter().filter_map(Value::as_str) {
            out::line(&format!("missing: {m}"));
        }
        return CheckFailed(f.message.clone()).into();
    }
    e
}

/// A waved release's waves: state, canary requests, and the worst verdict of each (its own
/// comparison), with what rolled back or halted it.
fn wave_lines(v: &Value) -> Vec<String> {
    let r = &v["release"];
    let Some(waves) = r["waves"].as_array().filter(|w| !w.is_empty()) else {
        return Vec::new();
    };
    let evidence = v["waves"].as_array();
    let mut lines = vec![format!(
        "  waves    by {}",
        r["plan"]["waves"]["by"].as_str().unwrap_or("?")
    )];
    for w in waves {
        let name = w["name"].as_str().unwrap_or("?");
        let ev = evidence
            .into_iter()
            .flatten()
            .find(|e| e["wave"].as_str() == Some(name));
        let canary = ev.and_then(|e| e["canary_requests"].as_u64()).unwrap_or(0);
        let verdicts: Vec<&Value> = ev
            .and_then(|e| e["verdicts"].as_array())
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let worst = ["fail", "pending", "pass"]
            .into_iter()
            .find(|s| verdicts.iter().any(|x| x["status"] == *s))
            .unwrap_or("-");
        lines.push(format!(
            "    {name:<12} {:<12} canary {canary:<8} verdicts {worst}",
            w["state"].as_str().unwrap_or("?")
        ));
        if let Some(f) = w["failure"].as_object() {
            lines.push(format!(
                "      {} canary {} (n={}) vs control {} (n={}), {}",
                f.get("guardrail").and_then(Value::as_str).unwrap_or("?"),
                f.get("canary_value")
                    .and_then(Value::as_f64)
                    .map_or_else(String::new, num),
                f.get("canary_n").map(Value::to_string).unwrap_or_default(),
                f.get("control_value")
                    .and_then(Value::as_f64)
                    .map_or_else(String::new, num),
                f.get("control_n").map(Value::to_string).unwrap_or_default(),
                f.get("threshold").and_then(Value::as_str).unwrap_or(""),
            ));
        }
    }
    lines
}
