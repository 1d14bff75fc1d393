//! `serin effects AGENT --bundle N [--status S]`: the side-effect ledger of one bundle.

use serin_core::ledger::{Effect, EffectStatus, count_by_status};

use crate::cli::{ClientArgs, Output};
use crate::client::Client;
use crate::out;

pub async fn run(
    agent: &str,
    bundle: u64,
    status: Option<&str>,
    args: &ClientArgs,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let mut path = format!("/v1/agents/{agent}/effects?bundle={bundle}");
    if let Some(s) = status {
        path.push_str("&status=");
        path.push_str(s);
    }
    let effects: Vec<Effect> = client.get(&path).await?;
    if args.output == Output::Json {
        out::json(&effects);
        return Ok(());
    }
    for line in render(&effects, agent, bundle) {
        out::line(&line);
    }
    Ok(())
}

fn time(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| {
            jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
        },
    )
}

/// The table and the summary line.
pub fn render(effects: &[Effect], agent: &str, bundle: u64) -> Vec<String> {
    let rows: Vec<Vec<String>> = effects
        .iter()
        .map(|e| {
            vec![
                e.key.clone(),
                e.tool.clone(),
                e.request_id.clone(),
                e.status.as_str().to_owned(),
                time(Some(e.created_at_ms)),
                time(e.resolved_at_ms),
                e.detail.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let mut lines = if rows.is_empty() {
        vec![format!("no effects recorded for {agent}@{bundle}")]
    } else {
        out::table_lines(
            &[
                "KEY", "TOOL", "REQUEST", "STATUS", "CREATED", "RESOLVED", "DETAIL",
            ],
            &rows,
        )
    };
    let counts = count_by_status(effects);
    let mut summary = counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    let unknown = counts
        .iter()
        .find(|(s, _)| *s == EffectStatus::Unknown)
        .map_or(0, |(_, n)| *n);
    if unknown > 0 {
        // Unknown calls may or may not have happened: someone has to look at the other side.
        summary.push_str(&format!(
            "; WARNING: {unknown} unknown (check whether these calls took effect)"
        ));
    }
    lines.push(summary);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_each_status_and_flags_unknown_ones() {
        let e = Effect {
            key: "k1".into(),
            agent: "support".into(),
            bundle: 2,
            request_id: "r1".into(),
            tool: "refund".into(),
            args_digest: "d".into(),
            timeout_ms: 1,
            status: EffectStatus::Unknown,
            detail: None,
            created_at_ms: 0,
            created_by: "t".into(),
            resolved_at_ms: Some(1),
        };
        let lines = render(&[e], "support", 2);
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("0 intent, 0 committed, 0 failed, 1 unknown; WARNING"),
            "{last}"
        );
        assert!(
            lines[1].contains("k1") && lines[1].contains("refund"),
            "{lines:?}"
        );
        let none = render(&[], "support", 2);
        assert_eq!(
            none,
            [
                "no effects recorded for support@2",
                "0 intent, 0 committed, 0 failed, 0 unknown"
            ]
        );
    }
}
