//! `serin approvals list|show|approve|deny|policy`, and the wait every reserved action
//! (release start, promote to 100%, unkill) goes through when the env's approval policy
//! holds it for a second person.
// serde_json's `Value` indexing never panics (a missing key reads as null).
#![allow(clippy::indexing_slicing)]

use std::time::Duration;

use anyhow::anyhow;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::CheckFailed;
use crate::cli::{ApprovalArgs, ApprovalsCommand, ClientArgs, Output};
use crate::client::Client;
use crate::out;

/// How a reserved action waits.
#[derive(Clone, Debug, Default)]
pub struct Wait {
    /// An approved request to spend on the action.
    pub approval: Option<String>,
    /// File the request and return instead of waiting for its decision.
    pub no_wait: bool,
}

impl From<&ApprovalArgs> for Wait {
    fn from(a: &ApprovalArgs) -> Wait {
        Wait {
            approval: a.approval.clone(),
            no_wait: a.no_wait,
        }
    }
}

/// What a reserved action came to.
pub enum Acted {
    /// The action ran: the server's answer.
    Done(Value),
    /// `--no-wait`: the pending request.
    Filed(Value),
}

/// POSTs `body` to `path`. When the server answers 202 (the env's approval policy reserves
/// the action), says so on stderr, waits for an approver's decision, and on approval repeats
/// the action with the approval; a denial or expiry is a refusal (exit 1).
pub async fn act(c: &Client, path: &str, mut body: Value, wait: &Wait) -> anyhow::Result<Acted> {
    if let Some(id) = &wait.approval {
        body["approval"] = json!(id);
    }
    let (status, v): (StatusCode, Value) = c.post(path, &body).await?;
    if status != StatusCode::ACCEPTED {
        return Ok(Acted::Done(v));
    }
    let request = &v["approval"];
    let id = request["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the server's 202 names no approval request"))?
        .to_owned();
    out::note(&format!(
        "approval {id} pending: {}\n  an approver runs: serin approvals approve {id} --reason \"...\"",
        request["reason"].as_str().unwrap_or("-")
    ));
    if wait.no_wait {
        return Ok(Acted::Filed(request.clone()));
    }
    out::note(&format!(
        "waiting for a decision until {} (Ctrl-C stops waiting; the request stays)",
        time(request["expires_at_ms"].as_i64())
    ));
    let decided = await_decision(c, &id).await?;
    match decided["status"].as_str() {
        Some("approved") => {
            out::note(&format!(
                "approval {id} approved by {}: {}",
                decided["decided_by"].as_str().unwrap_or("-"),
                decided["decision_reason"].as_str().unwrap_or("-")
            ));
            body["approval"] = json!(id);
            let (_, v): (StatusCode, Value) = c.post(path, &body).await?;
            Ok(Acted::Done(v))
        }
        Some("denied") => Err(CheckFailed(format!(
            "approval {id} denied by {}: {}",
            decided["decided_by"].as_str().unwrap_or("-"),
            decided["decision_reason"].as_str().unwrap_or("-")
        ))
        .into()),
        Some("expired") => Err(CheckFailed(format!(
            "approval {id} expired undecided (an expired request is denied); ask again"
        ))
        .into()),
        other => Err(anyhow!("approval {id} is in an unexpected state {other:?}")),
    }
}

/// Long-polls the request until it is no longer pending.
async fn await_decision(c: &Client, id: &str) -> anyhow::Result<Value> {
    loop {
        let v: Value = c.get(&format!("/v1/approvals/{id}?wait_ms=25000")).await?;
        if v["status"] != "pending" {
            return Ok(v);
        }
        // The server answered at the end of its wait; ask again at once. A short pause keeps
        // a server that answers early (an old version) from being spun on.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn time(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| {
            jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
        },
    )
}

fn subject(v: &Value) -> String {
    let agent = v["agent"].as_str().unwrap_or("-");
    match v["bundle"].as_u64() {
        Some(b) => format!("{agent}@{b}"),
        None => agent.to_owned(),
    }
}

/// One line per request.
pub fn render_list(items: &[Value]) -> Vec<String> {
    if items.is_empty() {
        return vec!["no approval requests".to_owned()];
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
            vec![
                s("id"),
                s("kind"),
                s("env"),
                subject(v),
                s("status"),
                s("requested_by"),
                time(v["expires_at_ms"].as_i64()),
                s("reason"),
            ]
        })
        .collect();
    out::table_lines(
        &[
            "ID", "KIND", "ENV", "SUBJECT", "STATUS", "BY", "EXPIRES", "REASON",
        ],
        &rows,
    )
}

/// A request in full: who asked, why, and what the approver is approving.
pub fn render_one(v: &Value) -> Vec<String> {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    let mut lines = vec![
        format!("{}  {}  {}", s("id"), s("kind"), s("status")),
        format!("env: {}  subject: {}", s("env"), subject(v)),
        format!(
            "requested by {} at {}: {}",
            s("requested_by"),
            time(v["created_at_ms"].as_i64()),
            s("reason")
        ),
        format!("expires: {}", time(v["expires_at_ms"].as_i64())),
    ];
    if v["decided_by"].is_string() {
        lines.push(format!(
            "decided by {} at {}: {}",
            s("decided_by"),
            time(v["decided_at_ms"].as_i64()),
            s("decision_reason")
        ));
    }
    if let Some(used) = v["used_at_ms"].as_i64() {
        lines.push(format!("used at {}", time(Some(used))));
    }
    let d = &v["details"];
    if let Some(changes) = d["capabilities"].as_array()
        && !changes.is_empty()
    {
        lines.push("capability changes:".to_owned());
        for c in changes {
            let flag = if c["needs_approval"] == true {
                "!"
            } else {
                " "
            };
            lines.push(format!("  {flag} {}", c["detail"].as_str().unwrap_or("-")));
        }
    }
    if let Some(verdict) = d["readiness"]["verdict"].as_str() {
        lines.push(format!("readiness: {verdict}"));
    }
    if let Some(tool) = d["tool"].as_str() {
        lines.push(format!(
            "tool call: {tool} (arguments {}, request {})",
            d["args_digest"].as_str().unwrap_or("-"),
            d["request_id"].as_str().unwrap_or("-")
        ));
    }
    lines
}

fn print(client: &ClientArgs, v: &Value, lines: Vec<String>) {
    if client.output == Output::Json {
        out::json(v);
    } else {
        for l in lines {
            out::line(&l);
        }
    }
}

pub async fn run(cmd: ApprovalsCommand) -> anyhow::Result<()> {
    match cmd {
        ApprovalsCommand::List {
            env,
            agent,
            status,
            kind,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut q = Vec::new();
            if status != "all" {
                q.push(format!("status={status}"));
            }
            if let Some(e) = env {
                q.push(format!("env={}", crate::commands::urlencode(&e)));
            }
            if let Some(a) = agent {
                q.push(format!("agent={}", crate::commands::urlencode(&a)));
            }
            if let Some(k) = kind {
                q.push(format!("kind={k}"));
            }
            let path = if q.is_empty() {
                "/v1/approvals".to_owned()
            } else {
                format!("/v1/approvals?{}", q.join("&"))
            };
            let items: Vec<Value> = c.get(&path).await?;
            print(&client, &Value::Array(items.clone()), render_list(&items));
            Ok(())
        }
        ApprovalsCommand::Show { id, client } => {
            let c = Client::new(&client)?;
            let v: Value = c
                .get(&format!(
                    "/v1/approvals/{}",
                    crate::commands::urlencode(&id)
                ))
                .await?;
            print(&client, &v, render_one(&v));
            Ok(())
        }
        ApprovalsCommand::Approve { id, reason, client } => {
            decide(&id, "approve", &reason, &client).await
        }
        ApprovalsCommand::Deny { id, reason, client } => {
            decide(&id, "deny", &reason, &client).await
        }
        ApprovalsCommand::Policy { env, file, client } => {
            let c = Client::new(&client)?;
            let path = format!(
                "/v1/envs/{}/approval-policy",
                crate::commands::urlencode(&env)
            );
            let v: Value = match file {
                None => c.get(&path).await?,
                Some(f) => {
                    let text = std::fs::read_to_string(&f)
                        .map_err(|e| anyhow!("cannot read {}: {e}", f.display()))?;
                    let policy = serin_core::approvals::ApprovalPolicy::parse_yaml(&text)
                        .map_err(|e| CheckFailed(format!("{}: {e}", f.display())))?;
                    c.send_json(reqwest::Method::PUT, &path, &serde_json::to_value(policy)?)
                        .await?
                }
            };
            let p = &v["policy"];
            let list = |k: &str| {
                p[k].as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "nothing".to_owned())
            };
            let mut lines = vec![
                format!(
                    "{} approval policy v{}{}",
                    v["env"].as_str().unwrap_or("-"),
                    v["version"],
                    match v["changed"].as_bool() {
                        Some(false) => " (unchanged)",
                        _ => "",
                    }
                ),
                format!("require: {}", list("require")),
                format!("approvers: {}", list("approvers")),
                format!(
                    "expiry: {}; agent requests: expiry {}, at most {} pending per agent",
                    p["expiry"].as_str().unwrap_or("-"),
                    p["agent_requests"]["expiry"].as_str().unwrap_or("-"),
                    p["agent_requests"]["max_pending"]
                ),
            ];
            if let Some(n) = p["notify"].as_array() {
                for w in n {
                    lines.push(format!("notify: {}", w["webhook"].as_str().unwrap_or("-")));
                }
            }
            print(&client, &v, lines);
            Ok(())
        }
    }
}

async fn decide(id: &str, verb: &str, reason: &str, client: &ClientArgs) -> anyhow::Result<()> {
    let c = Client::new(client)?;
    let (_, v): (_, Value) = c
        .post(
            &format!("/v1/approvals/{}/{verb}", crate::commands::urlencode(id)),
            &json!({ "reason": reason }),
        )
        .await?;
    print(client, &v, render_one(&v));
    Ok(())
}
