//! `serin status [--watch]`: the overview of every env and agent (`GET /v1/status`), then
//! the replicas sharing the store and the leader. `--watch` follows `/v1/status/stream` and
//! redraws on every update until Ctrl-C.

// Answers are read as `serde_json::Value`, whose `value["key"]` yields Null for
// a missing key instead of panicking, so the indexing lint does not apply.
#![allow(clippy::indexing_slicing)]

use std::io::IsTerminal;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::cli::{ClientArgs, Output};
use crate::client::Client;
use crate::out;

pub async fn run(args: &ClientArgs, watch: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    if !watch {
        let v: Value = client.get("/v1/status").await?;
        if args.output == Output::Json {
            out::json(&v);
        } else {
            for l in render(&v) {
                out::line(&l);
            }
        }
        return Ok(());
    }
    tokio::select! {
        r = follow(args) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Follows the stream, reconnecting with backoff (1 s doubling to 30 s). The first
/// connection must succeed (a wrong URL or token should fail at once, exit 2 or 1);
/// once the stream has been up, a lost connection is retried until Ctrl-C.
async fn follow(args: &ClientArgs) -> anyhow::Result<()> {
    let client = Client::streaming(args)?;
    let tty = std::io::stdout().is_terminal();
    let json = args.output == Output::Json;
    let mut connected_once = false;
    let mut backoff = Duration::from_secs(1);
    loop {
        let resp = match client.stream("/v1/status/stream").await {
            Ok(r) => r,
            Err(e) if !connected_once => return Err(e),
            Err(e) => {
                out::note(&format!(
                    "status stream: {e:#}; retrying in {}s",
                    backoff.as_secs()
                ));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        connected_once = true;
        backoff = Duration::from_secs(1);
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        let ended = loop {
            match body.next().await {
                None => break "the server closed the stream".to_owned(),
                Some(Err(e)) => break format!("{e}"),
                Some(Ok(chunk)) => {
                    for (event, data) in parser.feed(&chunk) {
                        show(&event, &data, json, tty);
                    }
                }
            }
        };
        out::note(&format!(
            "status stream: {ended}; reconnecting in {}s",
            backoff.as_secs()
        ));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn show(event: &str, data: &str, json: bool, tty: bool) {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        out::note("status stream: an event that is not JSON was skipped");
        return;
    };
    match event {
        "overview" if json => out::line(&v.to_string()),
        "overview" => {
            let text = render(&v).join("\n");
            if tty {
                // Redraw in place: clear the screen, cursor home.
                out::line(&format!("\x1b[2J\x1b[H{text}"));
            } else {
                out::line(&format!("{text}\n"));
            }
        }
        "error" => out::note(&format!(
            "status stream: the server could not read the overview: {}",
            v["error"]["message"].as_str().unwrap_or("unknown error")
        )),
        _ => {}
    }
}

/// Server-sent events from a byte stream: `(event, data)` per complete event; comments
/// (the heartbeats) and ids are dropped.
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    let event = if self.event.is_empty() {
                        "message".to_owned()
                    } else {
                        std::mem::take(&mut self.event)
                    };
                    out.push((event, self.data.join("\n")));
                }
                self.event.clear();
                self.data.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        out
    }
}

/// The overview table, then the replicas table and the leader line.
pub fn render(v: &Value) -> Vec<String> {
    let empty = Vec::new();
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for env in v["envs"].as_array().unwrap_or(&empty) {
        let name = env["env"].as_str().unwrap_or("?");
        let sdks = &env["sdks"];
        let sdk_cell = format!(
            "{} (lag {})",
            sdks["connected"].as_u64().unwrap_or(0),
            sdks["max_lag"].as_u64().unwrap_or(0)
        );
        for a in env["agents"].as_array().unwrap_or(&empty) {
            let r = &a["release"];
            let release = if r.is_object() {
                format!(
                    "{} {} {}/{} {}",
                    r["candidate"].as_str().unwrap_or("?"),
                    r["phase"].as_str().unwrap_or("?"),
                    r["step_index"].as_u64().unwrap_or(0) + 1,
                    r["steps"].as_u64().unwrap_or(0),
                    r["weight"].as_str().unwrap_or("?"),
                )
            } else {
                "-".to_owned()
            };
            let verdicts: Vec<String> = r["verdicts"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|v| {
                    format!(
                        "{}={}",
                        v["guardrail"].as_str().unwrap_or("?"),
                        v["verdict"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            let kill = &a["kill"];
            let tenants: Vec<&str> = kill["tenants"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let kill_cell = match (kill["killed"].as_bool() == Some(true), tenants.is_empty()) {
                (true, _) => "killed".to_owned(),
                (false, false) => format!("tenants: {}", tenants.join(",")),
                (false, true) => "-".to_owned(),
            };
            rows.push(vec![
                name.to_owned(),
                a["agent"].as_str().unwrap_or("?").to_owned(),
                a["stable"].as_str().unwrap_or("-").to_owned(),
                a["previous"].as_str().unwrap_or("-").to_owned(),
                release,
                if verdicts.is_empty() {
                    "-".to_owned()
                } else {
                    verdicts.join(" ")
                },
                kill_cell,
                sdk_cell.clone(),
            ]);
        }
    }
    if rows.is_empty() {
        lines.push("no agent has routing state in any env yet".to_owned());
    } else {
        lines.extend(out::table_lines(
            &[
                "ENV", "AGENT", "STABLE", "PREVIOUS", "RELEASE", "VERDICTS", "KILL", "SDKS",
            ],
            &rows,
        ));
    }
    lines.push(String::new());
    lines.extend(replicas(v));
    lines
}

fn replicas(list: &Value) -> Vec<String> {
    let yes_no = |v: &Value| match v.as_bool() {
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
        None => "-".to_owned(),
    };
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = list["replicas"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|r| {
            let role = if r["is_leader"].as_bool() == Some(true) {
                format!("leader/{}", r["epoch"])
            } else {
                format!("follower/{}", r["epoch"])
            };
            let id = r["id"].as_str().unwrap_or("?");
            let me = if r["id"] == list["served_by"] {
                " *"
            } else {
                ""
            };
            let caught_up = if r["caught_up"].as_bool() == Some(true) {
                "yes".to_owned()
            } else {
                format!("no (lag {})", r["lag_versions"])
            };
            vec![
                format!("{id}{me}"),
                format!(
                    "{}:{}",
                    r["host"].as_str().unwrap_or("?"),
                    r["pid"].as_i64().unwrap_or(0)
                ),
                role,
                yes_no(&r["alive"]),
                ago(r["last_seen_ago_ms"].as_i64().unwrap_or(0)),
                yes_no(&r["listener_connected"]),
                caught_up,
                r["sdk_streams"].as_i64().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    let mut lines = out::table_lines(
        &[
            "ID",
            "HOST:PID",
            "ROLE/EPOCH",
            "ALIVE",
            "LAST SEEN",
            "LISTENER",
            "CAUGHT UP",
            "SDKS",
        ],
        &rows,
    );
    let leader = &list["leader"];
    lines.push(if leader.is_object() {
        format!(
            "leader: {} ({}:{}), epoch {}",
            leader["id"].as_str().unwrap_or("?"),
            leader["host"].as_str().unwrap_or("?"),
            leader["pid"].as_i64().unwrap_or(0),
            leader["epoch"],
        )
    } else {
        format!("leader: none alive (store epoch {})", list["epoch"])
    });
    lines
}

/// `1.2s ago`, `3m4s ago`.
pub(crate) fn ago(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{}.{}s ago", ms / 1000, (ms % 1000) / 100)
    } else {
        format!("{}m{}s ago", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn events_split_across_chunks_come_out_whole_and_heartbeats_are_dropped() {
        let mut p = SseParser::default();
        assert!(p.feed(b": keep-alive\n\nevent: over").is_empty());
        let got = p.feed(b"view\ndata: {\"a\":\r\ndata: 1}\n\n");
        assert_eq!(got, vec![("overview".to_owned(), "{\"a\":\n1}".to_owned())]);
        assert_eq!(
            p.feed(b"data: x\n\n"),
            vec![("message".to_owned(), "x".to_owned())]
        );
    }

    #[test]
    fn the_table_shows_the_release_step_and_verdicts() {
        let v = serde_json::json!({
            "envs": [{"env": "prod", "sdks": {"connected": 2, "max_lag": 1}, "agents": [{
                "agent": "support", "stable": "support@1", "previous": null,
                "kill": {"killed": false, "tenants": ["acme"]},
                "release": {"candidate": "support@2", "phase": "canary", "step_index": 1,
                    "steps": 4, "weight": "5%",
                    "verdicts": [{"guardrail": "error_rate.max", "verdict": "pending"}]}
            }]}],
            "replicas": [], "epoch": 1
        });
        let lines = render(&v);
        assert!(lines[0].starts_with("ENV"), "{lines:?}");
        assert!(lines[1].contains("support@2 canary 2/4 5%"), "{lines:?}");
        assert!(lines[1].contains("error_rate.max=pending"), "{lines:?}");
        assert!(lines[1].contains("tenants: acme"), "{lines:?}");
        assert!(lines[1].contains("2 (lag 1)"), "{lines:?}");
        assert_eq!(lines.last().unwrap(), "leader: none alive (store epoch 1)");
    }
}
