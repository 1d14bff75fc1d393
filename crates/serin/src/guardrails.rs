//! `serin guardrails`: the live verdict table, or setting thresholds.

// Answers are read as `serde_json::Value`, whose `value["key"]` yields Null for
// a missing key instead of panicking, so the indexing lint does not apply.
#![allow(clippy::indexing_slicing)]

use std::path::Path;

use anyhow::{Context, anyhow};
use serde_json::Value;
use serin_core::slug;

use crate::cli::{ClientArgs, Output};
use crate::client::Client;
use crate::out;

fn num(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "-".to_owned(),
    }
}

pub async fn run(
    agent: &str,
    env: &str,
    budget: Option<f64>,
    set: Option<&Path>,
    args: &ClientArgs,
) -> anyhow::Result<()> {
    slug::validate_agent(agent).map_err(|e| anyhow!("{e}"))?;
    slug::validate_env(env).map_err(|e| anyhow!("--env: {e}"))?;
    let client = Client::new(args)?;
    let path = format!("/v1/envs/{env}/agents/{agent}/guardrails");
    if let Some(file) = set {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("could not read {}", file.display()))?;
        let config: Value =
            serde_saphyr::from_str(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        let v: Value = client
            .send_json(reqwest::Method::PUT, &path, &config)
            .await?;
        if args.output == Output::Json {
            out::json(&v);
        } else {
            out::line(&format!(
                "guardrails of {agent} in {env} set; new comparisons use them"
            ));
        }
        return Ok(());
    }
    let query = budget
        .map(|b| format!("?budget_usd={b}"))
        .unwrap_or_default();
    let v: Value = client.get(&format!("{path}{query}")).await?;
    if args.output == Output::Json {
        out::json(&v);
        return Ok(());
    }
    let comparisons = v["comparisons"].as_array().cloned().unwrap_or_default();
    if comparisons.is_empty() {
        out::line(&format!("{agent} in {env}: no canary outcomes yet"));
    }
    for c in &comparisons {
        out::line(&format!(
            "{} vs stable in {env}: {} (canary {} requests, control {} requests)",
            c["candidate"].as_str().unwrap_or("?"),
            c["overall"].as_str().unwrap_or("?").to_uppercase(),
            c["canary"]["requests"],
            c["control"]["requests"],
        ));
        let rows: Vec<Vec<String>> = c["verdicts"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .map(|v| {
                        let needs = v["needs_more_requests"]
                            .as_u64()
                            .map(|n| format!("+{n} req"))
                            .unwrap_or_default();
                        let guardrail = v["guardrail"].as_str().unwrap_or("?");
                        let no_harm =
                            match (v["pass_statistic"].as_f64(), v["pass_threshold"].as_f64()) {
                                (Some(_), Some(_)) => format!(
                                    "{} / {}",
                                    num(&v["pass_statistic"], 2),
                                    num(&v["pass_threshold"], 0)
                                ),
                                // Zero tolerance: nothing to show, `pass` is no fail.
                                _ => "-".to_owned(),
                            };
                        let latched = if v["latched_at_ms"].is_i64() {
                            " (latched)"
                        } else {
                            ""
                        };
                        vec![
                            if v["shadow"] == true {
                                format!("{guardrail} (shadow)")
                            } else {
                                guardrail.to_owned()
                            },
                            format!("{}{latched}", v["status"].as_str().unwrap_or("?")),
                            format!("{} (n={})", num(&v["canary"]["value"], 4), v["canary"]["n"]),
                            format!(
                                "{} (n={})",
                                num(&v["control"]["value"], 4),
                                v["control"]["n"]
                            ),
                            v["threshold"].as_str().unwrap_or("").to_owned(),
                            format!(
                                "{} / {}",
                                num(&v["statistic"], 2),
                                num(&v["statistic_threshold"], 0)
                            ),
                            no_harm,
                            needs,
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        out::table(
            &[
                "GUARDRAIL",
                "VERDICT",
                "CANARY",
                "CONTROL",
                "THRESHOLD",
                "HARM E / BAR",
                "NO-HARM E / BAR",
                "NEEDS",
            ],
            &rows,
        );
        out::line("");
    }
    let b = &v["burn_rate"];
    out::line(&format!(
        "cost: ${}/h now vs ${}/h moving average (x{}){}; projected ${}/day{}",
        num(&b["current_hour"], 4),
        num(&b["moving_average"], 4),
        num(&b["ratio"], 2),
        if b["alert"] == true { " ALERT" } else { "" },
        num(&b["projected_daily"], 2),
        if b["budget_warning"] == true {
            " over budget +20%: WARNING"
        } else {
            ""
        },
    ));
    Ok(())
}
