//! Verbs that change or explain routing: deploy, rollback, kill, unkill,
//! flags, explain, snapshot.

// Answers are read as `serde_json::Value`, whose `value["key"]` yields Null for
// a missing key instead of panicking, so the indexing lint does not apply.
#![allow(clippy::indexing_slicing)]

use anyhow::{Context, anyhow};
use serde_json::{Map, Value, json};
use serin_core::slug;

use crate::cli::{ClientArgs, EnvCommand, FlagCommand, KillArgs, Output};
use crate::client::Client;
use crate::out;

fn check(agent: &str, env: &str) -> anyhow::Result<()> {
    slug::validate_agent(agent).map_err(|e| anyhow!("{e}"))?;
    slug::validate_env(env).map_err(|e| anyhow!("--env: {e}"))?;
    Ok(())
}

fn print_change(args: &ClientArgs, v: &Value) {
    if args.output == Output::Json {
        out::json(v);
        return;
    }
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    let mut line = format!(
        "{} {} in {}: snapshot v{}",
        s("action"),
        s("agent"),
        s("env"),
        v["version"]
    );
    if v["agent"].is_string() {
        line.push_str(&format!(
            "; stable {}, previous {}",
            s("stable"),
            s("previous")
        ));
        if v["killed"] == true {
            line.push_str("; KILLED");
        }
        if let Some(t) = v["killed_tenants"].as_array().filter(|t| !t.is_empty()) {
            let names: Vec<&str> = t.iter().filter_map(Value::as_str).collect();
            line.push_str(&format!("; killed for {}", names.join(", ")));
        }
    }
    out::line(&line);
}

pub async fn deploy(
    agent: &str,
    env: &str,
    bundle: u64,
    force: bool,
    reason: Option<String>,
    args: &ClientArgs,
) -> anyhow::Result<()> {
    check(agent, env)?;
    let client = Client::new(args)?;
    let (_, v): (_, Value) = client
        .post(
            &format!("/v1/envs/{env}/agents/{agent}/deploy"),
            &json!({ "bundle": bundle, "force": force, "reason": reason }),
        )
        .await?;
    print_change(args, &v);
    Ok(())
}

pub async fn rollback(
    agent: &str,
    env: &str,
    reason: &str,
    args: &ClientArgs,
) -> anyhow::Result<()> {
    check(agent, env)?;
    let client = Client::new(args)?;
    let (_, v): (_, Value) = client
        .post(
            &format!("/v1/envs/{env}/agents/{agent}/rollback"),
            &json!({ "reason": reason }),
        )
        .await?;
    print_change(args, &v);
    Ok(())
}

pub async fn kill(k: &KillArgs, lift: bool) -> anyhow::Result<()> {
    check(&k.agent, &k.env)?;
    let client = Client::new(&k.client)?;
    let verb = if lift { "unkill" } else { "kill" };
    let path = format!("/v1/envs/{}/agents/{}/{verb}", k.env, k.agent);
    let body = json!({ "tenant": k.tenant, "reason": k.reason });
    if !lift {
        let (_, v): (_, Value) = client.post(&path, &body).await?;
        print_change(&k.client, &v);
        return Ok(());
    }
    match crate::approvals::act(&client, &path, body, &(&k.approval).into()).await? {
        crate::approvals::Acted::Done(v) => print_change(&k.client, &v),
        crate::approvals::Acted::Filed(r) => print_filed(&k.client, &r),
    }
    Ok(())
}

/// `--no-wait`: the pending request, for scripts (JSON) or people.
pub fn print_filed(client: &crate::cli::ClientArgs, r: &Value) {
    if client.output == crate::cli::Output::Json {
        crate::out::json(r);
    } else {
        for l in crate::approvals::render_one(r) {
            crate::out::line(&l);
        }
    }
}

fn env_line(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    let policy = if v["strict"] == true {
        "strict"
    } else {
        "lenient"
    };
    format!(
        "{}\t{policy}\tv{}\tcreated {} by {}",
        s("env"),
        v["version"],
        s("created_at"),
        s("created_by")
    )
}

/// `serin env create|list|show`.
pub async fn env(cmd: EnvCommand) -> anyhow::Result<()> {
    match cmd {
        EnvCommand::Create {
            name,
            strict,
            lenient,
            client: args,
        } => {
            slug::validate_env(&name).map_err(|e| anyhow!("{e}"))?;
            let mut body = json!({ "name": name });
            if strict || lenient {
                body["strict"] = Value::Bool(strict);
            }
            let client = Client::new(&args)?;
            let (_, v): (_, Value) = client.post("/v1/envs", &body).await?;
            if args.output == Output::Json {
                out::json(&v);
            } else {
                out::line(&format!("created {}", env_line(&v)));
            }
        }
        EnvCommand::List { client: args } => {
            let client = Client::new(&args)?;
            let v: Value = client.get("/v1/envs").await?;
            if args.output == Output::Json {
                out::json(&v);
            } else {
                for e in v.as_array().into_iter().flatten() {
                    out::line(&env_line(e));
                }
            }
        }
        EnvCommand::Show { name, client: args } => {
            slug::validate_env(&name).map_err(|e| anyhow!("{e}"))?;
            let client = Client::new(&args)?;
            let v: Value = client.get(&format!("/v1/envs/{name}")).await?;
            if args.output == Output::Json {
                out::json(&v);
            } else {
                out::line(&env_line(&v));
            }
        }
    }
    Ok(())
}

/// A command-line value: JSON when it parses as JSON, otherwise a string.
fn loose_json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

fn add_targets(flag: &mut Map<String, Value>, list: &str, kind: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    let lists = flag.entry(list).or_insert_with(|| json!({}));
    if let Value::Object(lists) = lists {
        let entry = lists.entry(kind).or_insert_with(|| json!([]));
        if let Value::Array(a) = entry {
            a.extend(values.iter().map(|v| Value::String(v.clone())));
        }
    }
}

pub async fn flag(cmd: FlagCommand) -> anyhow::Result<()> {
    match cmd {
        FlagCommand::Set {
            key,
            env,
            file,
            rollout,
            on,
            off,
            disable,
            enable,
            allow_user,
            allow_tenant,
            allow_workload,
            deny_user,
            deny_tenant,
            deny_workload,
            stickiness,
            description,
            reason,
            client,
        } => {
            slug::validate_flag_key(&key).map_err(|e| anyhow!("{e}"))?;
            slug::validate_env(&env).map_err(|e| anyhow!("--env: {e}"))?;
            let c = Client::new(&client)?;
            let mut flag: Map<String, Value> = match &file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("could not read {}", path.display()))?;
                    let v: Value = serde_saphyr::from_str(&text)
                        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
                    match v {
                        Value::Object(m) => m,
                        _ => return Err(anyhow!("{}: a flag is a mapping", path.display())),
                    }
                }
                None => {
                    // Without a file, options amend the flag as it is now.
                    match c.get::<Value>(&format!("/v1/envs/{env}/flags/{key}")).await {
                        Ok(Value::Object(m)) => m,
                        _ => Map::new(),
                    }
                }
            };
            flag.insert("key".into(), key.clone().into());
            if let Some(r) = rollout {
                flag.insert("rollout".into(), r.into());
            }
            if let Some(v) = on {
                flag.insert("on".into(), loose_json(&v));
            }
            if let Some(v) = off {
                flag.insert("off".into(), loose_json(&v));
            }
            if disable {
                flag.insert("enabled".into(), false.into());
            }
            if enable {
                flag.insert("enabled".into(), true.into());
            }
            if let Some(s) = stickiness {
                flag.insert("stickiness".into(), s.into());
            }
            if let Some(d) = description {
                flag.insert("description".into(), d.into());
            }
            add_targets(&mut flag, "allow", "users", &allow_user);
            add_targets(&mut flag, "allow", "tenants", &allow_tenant);
            add_targets(&mut flag, "allow", "workloads", &allow_workload);
            add_targets(&mut flag, "deny", "users", &deny_user);
            add_targets(&mut flag, "deny", "tenants", &deny_tenant);
            add_targets(&mut flag, "deny", "workloads", &deny_workload);
            let body = json!({ "flag": Value::Object(flag), "reason": reason });
            let v: Value = c
                .send_json(
                    reqwest::Method::PUT,
                    &format!("/v1/envs/{env}/flags/{key}"),
                    &body,
                )
                .await?;
            if client.output == Output::Json {
                out::json(&v);
            } else {
                out::line(&format!(
                    "set flag {key} in {env}: snapshot v{}",
                    v["version"]
                ));
            }
            Ok(())
        }
        FlagCommand::Get { key, env, client } => {
            slug::validate_env(&env).map_err(|e| anyhow!("--env: {e}"))?;
            let c = Client::new(&client)?;
            let v: Value = c.get(&format!("/v1/envs/{env}/flags/{key}")).await?;
            out::json(&v);
            Ok(())
        }
        FlagCommand::List { env, client } => {
            slug::validate_env(&env).map_err(|e| anyhow!("--env: {e}"))?;
            let c = Client::new(&client)?;
            let v: Map<String, Value> = c.get(&format!("/v1/envs/{env}/flags")).await?;
            if client.output == Output::Json {
                out::json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|(k, f)| {
                    vec![
                        k.clone(),
                        if f["enabled"] == false {
                            "off".into()
                        } else {
                            "on".into()
                        },
                        f["rollout"].as_str().unwrap_or("-").to_owned(),
                        f["rules"].as_array().map_or(0, Vec::len).to_string(),
                        f["on"].to_string(),
                        f["off"].to_string(),
                    ]
                })
                .collect();
            out::table(&["FLAG", "ENABLED", "ROLLOUT", "RULES", "ON", "OFF"], &rows);
            Ok(())
        }
        FlagCommand::Delete {
            key,
            env,
            reason,
            client,
        } => {
            slug::validate_env(&env).map_err(|e| anyhow!("--env: {e}"))?;
            let c = Client::new(&client)?;
            let mut path = format!("/v1/envs/{env}/flags/{key}");
            if let Some(r) = &reason {
                path.push_str(&format!("?reason={}", crate::commands::urlencode(r)));
            }
            let v: Value = c
                .send_json(reqwest::Method::DELETE, &path, &Value::Null)
                .await?;
            if client.output == Output::Json {
                out::json(&v);
            } else {
                out::line(&format!(
                    "deleted flag {key} in {env}: snapshot v{}",
                    v["version"]
                ));
            }
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn explain(
    snapshot: u64,
    request_id: String,
    agent: Option<String>,
    user: Option<String>,
    tenant: Option<String>,
    workload: Option<String>,
    region: Option<String>,
    instance: Option<String>,
    args: &ClientArgs,
) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    let body = json!({
        "snapshot_version": snapshot, "agent": agent, "request_id": request_id,
        "user": user, "tenant": tenant, "workload": workload, "region": region, "instance": instance,
    });
    let (_, v): (_, Value) = c.post("/v1/explain", &body).await?;
    if args.output == Output::Json {
        out::json(&v);
        return Ok(());
    }
    out::line(&format!(
        "{} in {} at snapshot v{}: {} ({})",
        v["agent"].as_str().unwrap_or("?"),
        v["env"].as_str().unwrap_or("?"),
        v["snapshot_version"],
        v["arm"].as_str().unwrap_or("?"),
        v["bundle"]["id"].as_str().unwrap_or("no bundle"),
    ));
    out::line(&format!("rule    {}", v["rule"].as_str().unwrap_or("?")));
    out::line(&format!("why     {}", v["reason"].as_str().unwrap_or("?")));
    if let Some(flags) = v["flags"].as_object().filter(|f| !f.is_empty()) {
        for (k, f) in flags {
            out::line(&format!(
                "flag    {k} = {} ({})",
                f["value"],
                f["reason"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(())
}

pub async fn snapshot(env: &str, version: Option<u64>, args: &ClientArgs) -> anyhow::Result<()> {
    slug::validate_env(env).map_err(|e| anyhow!("--env: {e}"))?;
    let c = Client::new(args)?;
    let v: Value = match version {
        Some(n) => c.get(&format!("/v1/snapshots/{n}")).await?,
        None => c.get(&format!("/v1/envs/{env}/snapshot")).await?,
    };
    if version.is_some() && v["env"].as_str() != Some(env) {
        return Err(anyhow!(
            "snapshot v{} belongs to env {}, not {env}",
            v["version"],
            v["env"].as_str().unwrap_or("?")
        ));
    }
    if args.output == Output::Json {
        out::json(&v);
        return Ok(());
    }
    out::line(&format!("env {} at snapshot v{}", env, v["version"]));
    let rows: Vec<Vec<String>> = v["agents"]
        .as_object()
        .map(|agents| {
            agents
                .iter()
                .map(|(name, a)| {
                    let id = |x: &Value| x["id"].as_str().unwrap_or("-").to_owned();
                    let release = if a["release"].is_object() {
                        format!(
                            "{} at {}",
                            id(&a["release"]["candidate"]),
                            a["release"]["weight"].as_str().unwrap_or("?")
                        )
                    } else {
                        "-".to_owned()
                    };
                    let killed = if a["killed"] == true {
                        "all".to_owned()
                    } else {
                        a["killed_tenants"]
                            .as_array()
                            .map(|t| {
                                t.iter()
                                    .filter_map(Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "-".to_owned())
                    };
                    vec![
                        name.clone(),
                        id(&a["stable"]),
                        id(&a["previous"]),
                        release,
                        killed,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out::table(&["AGENT", "STABLE", "PREVIOUS", "RELEASE", "KILLED"], &rows);
    let flags = v["flags"].as_object().map_or(0, Map::len);
    out::line(&format!(
        "{flags} flag(s); `serin flag list --env {env}` shows them"
    ));
    Ok(())
}
