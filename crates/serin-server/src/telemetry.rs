//! What `/metrics` says: the help text of every series the server records, and the state
//! gauges rendered at scrape time from what is deployed.
//!
//! Counters and histograms go through the `metrics` facade as events happen. State (each
//! agent's release weight and phase, verdicts, kill switches, snapshot versions, SDK lag) is
//! read fresh on every scrape instead: a gauge set when something happened would outlive the
//! agent or release it describes, and Prometheus would keep a dead series alive. Labels
//! `agent` and `env` appear only on series whose values come from the env registry and the
//! published snapshots (or from events already validated against them), so their
//! cardinality is bounded by what is deployed, never by what a client sends.
//! Series names and alert rules: docs/metrics.md.

use std::fmt::Write as _;

use metrics::{describe_counter, describe_gauge, describe_histogram};
use serin_core::guardrails::VerdictStatus;

use crate::AppState;

/// Every series the server records through the facade, with its help text. A unit test
/// checks that the source records no name missing here.
pub const DESCRIBED: &[(&str, Kind, &str)] = &[
    (
        "serin_effect_intents_limited_total",
        Kind::Counter,
        "Side-effect intents refused with 429 because their token recorded too many in one second.",
    ),
    (
        "serin_effects_swept_total",
        Kind::Counter,
        "Side-effect intents marked unknown by the sweep because no result came within their timeout.",
    ),
    (
        "serin_approvals_total",
        Kind::Counter,
        "Approval requests by event: requested, approved, denied, expired, used, refused (an agent over its pending cap)",
    ),
    (
        "serin_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by method, route template and status.",
    ),
    (
        "serin_http_request_duration_seconds",
        Kind::Histogram,
        "Time to answer an HTTP request, by method and route template.",
    ),
    (
        "serin_http_shed_total",
        Kind::Counter,
        "Requests refused with 429 because too many were in flight.",
    ),
    (
        "serin_http_connections_open",
        Kind::Gauge,
        "Client connections open.",
    ),
    (
        "serin_http_connections_evicted_total",
        Kind::Counter,
        "Idle connections closed to make room for new ones.",
    ),
    (
        "serin_http_connections_refused_total",
        Kind::Counter,
        "Connections refused at the connection cap.",
    ),
    (
        "serin_http_header_timeouts_total",
        Kind::Counter,
        "Connections closed because request headers did not arrive in time.",
    ),
    (
        "serin_bundles_created_total",
        Kind::Counter,
        "Bundles pushed that were new.",
    ),
    (
        "serin_drills_total",
        Kind::Counter,
        "Rollback drills run, by result.",
    ),
    (
        "serin_drill_rollback_seconds",
        Kind::Histogram,
        "Time from a drill's rollback commit until every connected SDK applied it.",
    ),
    (
        "serin_audit_head_webhook_total",
        Kind::Counter,
        "Audit tree heads sent to the head webhook, by result.",
    ),
    (
        "serin_leader",
        Kind::Gauge,
        "1 while this replica leads (runs the release controller), else 0.",
    ),
    (
        "serin_leader_epoch",
        Kind::Gauge,
        "The leadership epoch this replica last held.",
    ),
    (
        "serin_leader_elections_total",
        Kind::Counter,
        "Times this replica took the leadership.",
    ),
    (
        "serin_outcome_journal_appended_total",
        Kind::Counter,
        "Outcome events a non-leading replica journalled for the leader.",
    ),
    (
        "serin_outcome_journal_consumed_total",
        Kind::Counter,
        "Journalled outcome events the leader applied to its monitors.",
    ),
    (
        "serin_outcome_journal_behind",
        Kind::Gauge,
        "Journal rows the leader has not applied yet.",
    ),
    (
        "serin_outcomes_total",
        Kind::Counter,
        "Outcome events received, by result (accepted, duplicate, rejected) and rejection code.",
    ),
    (
        "serin_outcome_windows_total",
        Kind::Counter,
        "Outcome windows received, by result (accepted, duplicate, rejected) and rejection code.",
    ),
    (
        "serin_outcome_group_batches",
        Kind::Histogram,
        "Outcome batches stored together in one transaction by group commit.",
    ),
    (
        "serin_outcomes_accepted_total",
        Kind::Counter,
        "Outcome events accepted, by agent, env and arm.",
    ),
    (
        "serin_ingest_duration_seconds",
        Kind::Histogram,
        "Time to validate, judge and store one outcome batch, by source (outcomes, otlp).",
    ),
    (
        "serin_decide_duration_seconds",
        Kind::Histogram,
        "Server-side decision time (POST /v1/decide and OFREP), by env and route.",
    ),
    (
        "serin_propagation_seconds",
        Kind::Histogram,
        "From a snapshot's commit to an SDK reporting it applied, by env.",
    ),
    (
        "serin_release_transitions_total",
        Kind::Counter,
        "Release state transitions, by agent, env and the phase entered.",
    ),
    (
        "serin_release_watch_checkpoints_total",
        Kind::Counter,
        "Post-promotion watch checkpoints evaluated.",
    ),
    (
        "serin_routing_changes_total",
        Kind::Counter,
        "Routing changes through the API (deploy, rollback, kill, unkill, flag), by action.",
    ),
    (
        "serin_snapshot_announcements_total",
        Kind::Counter,
        "Snapshot versions announced by other replicas through PostgreSQL.",
    ),
    (
        "serin_snapshot_listener_reconnects_total",
        Kind::Counter,
        "Reconnections of the PostgreSQL snapshot listener.",
    ),
    (
        "serin_snapshot_listener_connected",
        Kind::Gauge,
        "1 while the PostgreSQL snapshot listener session is up.",
    ),
    (
        "serin_snapshots_published_total",
        Kind::Counter,
        "Snapshot versions this replica published to its streams.",
    ),
    (
        "serin_snapshots_quarantined_total",
        Kind::Counter,
        "Stored env states that could not be served and were skipped.",
    ),
    (
        "serin_snapshot_streams",
        Kind::Gauge,
        "Snapshot streams (SSE) open.",
    ),
    (
        "serin_live_streams",
        Kind::Gauge,
        "Live views (overview and release streams, SSE) open.",
    ),
    (
        "serin_live_streams_refused_total",
        Kind::Counter,
        "Live view streams refused with 429 because all were taken.",
    ),
    (
        "serin_quarantined_rows",
        Kind::Gauge,
        "Stored rows this server could not read, by kind.",
    ),
    (
        "serin_webhook_deliveries_total",
        Kind::Counter,
        "Release webhook deliveries, by result.",
    ),
    (
        "serin_ofrep_evaluations_total",
        Kind::Counter,
        "OFREP evaluations answered, by kind (single, bulk).",
    ),
    (
        "serin_ofrep_errors_total",
        Kind::Counter,
        "OFREP evaluations refused, by the protocol's error code.",
    ),
    (
        "serin_otlp_spans_total",
        Kind::Counter,
        "Spans received on POST /v1/traces, by result (outcome, ignored, rejected).",
    ),
    (
        "serin_otlp_errors_total",
        Kind::Counter,
        "OTLP exports refused whole, by reason.",
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Registers the help text of every series, so the exporter writes `# HELP` for each.
pub fn describe() {
    for &(name, kind, help) in DESCRIBED {
        match kind {
            Kind::Counter => describe_counter!(name, help),
            Kind::Gauge => describe_gauge!(name, help),
            Kind::Histogram => describe_histogram!(name, help),
        }
    }
}

/// The label value escaped as the text format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

const PHASES: [&str; 5] = ["pending", "canary", "paused", "promoting", "halted"];
const VERDICTS: [(VerdictStatus, &str); 3] = [
    (VerdictStatus::Pass, "pass"),
    (VerdictStatus::Fail, "fail"),
    (VerdictStatus::Pending, "pending"),
];

/// The state gauges, in the text format, for every env this replica serves.
pub async fn render_state(state: &AppState) -> String {
    let now_ms = crate::clock::now_ms();
    let mut versions = String::new();
    let mut weight = String::new();
    let mut killed = String::new();
    let mut phase = String::new();
    let mut verdict = String::new();
    let mut sdks = String::new();
    let mut lag = String::new();
    let mut envs = state.hub.published_versions();
    envs.sort();
    for (env, _) in envs {
        let Ok(published) = state.hub.current(&env).await else {
            continue;
        };
        let snap = published.compiled.snapshot();
        let e = esc(&env);
        let _ = writeln!(
            versions,
            "serin_snapshot_version{{env=\"{e}\"}} {}",
            snap.version
        );
        for (agent, routing) in &snap.agents {
            let a = esc(agent);
            let w = routing
                .release
                .as_ref()
                .map_or(0.0, |r| f64::from(r.weight.basis_points()) / 10_000.0);
            let _ = writeln!(
                weight,
                "serin_release_weight{{agent=\"{a}\",env=\"{e}\"}} {w}"
            );
            let _ = writeln!(
                killed,
                "serin_agent_killed{{agent=\"{a}\",env=\"{e}\"}} {}",
                u8::from(routing.killed)
            );
            if let Ok(Some(release)) = state.releases.active(&env, agent).await {
                for p in PHASES {
                    let _ = writeln!(
                        phase,
                        "serin_release_phase{{agent=\"{a}\",env=\"{e}\",phase=\"{p}\"}} {}",
                        u8::from(release.phase.as_str() == p)
                    );
                }
                let (_, verdicts) = state
                    .guardrails
                    .evidence(&env, agent, &release.candidate.id)
                    .await;
                for v in verdicts {
                    let g = esc(&v.guardrail);
                    for (status, name) in VERDICTS {
                        let _ = writeln!(
                            verdict,
                            "serin_guardrail_verdict{{agent=\"{a}\",env=\"{e}\",guardrail=\"{g}\",verdict=\"{name}\"}} {}",
                            u8::from(v.status == status)
                        );
                    }
                }
            }
        }
        let fleet = state.sdks.list(&env);
        let connected: Vec<_> = fleet.iter().filter(|i| i.connected).collect();
        let behind = connected
            .iter()
            .filter(|i| i.applied_version.is_none_or(|v| v < snap.version))
            .count();
        let _ = writeln!(
            sdks,
            "serin_sdks_connected{{env=\"{e}\"}} {}",
            connected.len()
        );
        let _ = writeln!(sdks, "serin_sdks_behind{{env=\"{e}\"}} {behind}");
        // How long the oldest unapplied change has been waiting on the slowest connected
        // SDK; 0 when every connected SDK serves the current version.
        let seconds = if behind > 0 {
            (now_ms - snap.published_at_ms).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        let _ = writeln!(lag, "serin_sdk_lag_seconds{{env=\"{e}\"}} {seconds}");
    }
    let mut out = String::new();
    for (name, help, body) in [
        (
            "serin_snapshot_version",
            "The snapshot version this replica serves, by env.",
            versions,
        ),
        (
            "serin_release_weight",
            "Share of traffic (0 to 1) routed to the release candidate, by agent and env; 0 without a release.",
            weight,
        ),
        (
            "serin_agent_killed",
            "1 while the agent's kill switch is on in the env.",
            killed,
        ),
        (
            "serin_release_phase",
            "1 for the phase the agent's active release is in, 0 for the others.",
            phase,
        ),
        (
            "serin_guardrail_verdict",
            "1 for each guardrail bound's current verdict (pass, fail, pending) in the agent's active release.",
            verdict,
        ),
        (
            "serin_sdk_lag_seconds",
            "Seconds the current snapshot has waited on connected SDKs that have not applied it; 0 when none lags.",
            lag,
        ),
    ] {
        header(&mut out, name, help);
        out.push_str(&body);
    }
    let (connected, behind): (Vec<&str>, Vec<&str>) = sdks
        .lines()
        .partition(|l| l.starts_with("serin_sdks_connected"));
    header(
        &mut out,
        "serin_sdks_connected",
        "SDK instances with a snapshot stream open to this replica, by env.",
    );
    for l in connected {
        let _ = writeln!(out, "{l}");
    }
    header(
        &mut out,
        "serin_sdks_behind",
        "Connected SDK instances that have not reported applying the current snapshot, by env.",
    );
    for l in behind {
        let _ = writeln!(out, "{l}");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Every `metrics::counter!("name"`-style call in the server's source names a described
    /// series, so `/metrics` never shows one without `# HELP`.
    #[test]
    fn every_series_the_server_records_has_help_text() {
        let mut missing = Vec::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                    for (i, _) in text.match_indices(macro_name) {
                        let rest = text[i + macro_name.len()..].trim_start();
                        let Some(rest) = rest.strip_prefix('"') else {
                            continue;
                        };
                        let name = rest.split('"').next().unwrap_or("");
                        if !name.starts_with("serin_") {
                            continue;
                        }
                        if !DESCRIBED.iter().any(|(n, _, _)| *n == name) {
                            missing.push(format!("{name} ({})", p.display()));
                        }
                    }
                }
            }
        }
        assert!(missing.is_empty(), "series without help text: {missing:?}");
    }
}
