//! One function per verb: resolve arguments, call the server or the library,
//! render for humans or as JSON.

// Answers are read as `serde_json::Value`, whose `value["key"]` yields Null for
// a missing key instead of panicking, so the indexing lint does not apply.
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow};
use serde_json::{Value, json};
use serin_core::bundle::{self, Bundle, Limits, PinPolicy, Problem, Severity, ValidateOptions};
use serin_core::{auth::Role, slug};

use crate::cli::{AuditCommand, BundleCommand, ClientArgs, Command, Output, TokenCommand};
use crate::client::{ApiFailure, Client};
use crate::{CheckFailed, bundle_dir, out, routing, server};

pub async fn run(cli: crate::cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => server::run(args).await,
        Command::Bundle(cmd) => bundle(cmd).await,
        Command::Pins { agent, client } => pins(agent, &client).await,
        Command::Deploy {
            agent,
            env,
            bundle,
            force,
            reason,
            client,
        } => routing::deploy(&agent, &env, bundle, force, reason, &client).await,
        Command::Rollback {
            agent,
            env,
            reason,
            client,
        } => routing::rollback(&agent, &env, &reason, &client).await,
        Command::Kill(k) => routing::kill(&k, false).await,
        Command::Unkill(k) => routing::kill(&k, true).await,
        Command::Flag(cmd) => routing::flag(cmd).await,
        Command::Env(cmd) => routing::env(cmd).await,
        Command::Explain {
            snapshot,
            request_id,
            agent,
            user,
            tenant,
            workload,
            region,
            instance,
            client,
        } => {
            routing::explain(
                snapshot, request_id, agent, user, tenant, workload, region, instance, &client,
            )
            .await
        }
        Command::Snapshot {
            env,
            version,
            client,
        } => routing::snapshot(&env, version, &client).await,
        Command::Token(cmd) => token(cmd).await,
        Command::Status { watch, client } => crate::status::run(&client, watch).await,
        Command::Fleet { target, watch } => crate::fleet::run(&target, watch).await,
        Command::Approvals(cmd) => crate::approvals::run(cmd).await,
        Command::Capabilities { target } => crate::capabilities::run(&target).await,
        Command::Effects {
            agent,
            bundle,
            status,
            client,
        } => crate::effects::run(&agent, bundle, status.as_deref(), &client).await,
        Command::Release(cmd) => crate::release::run(cmd).await,
        Command::Demo { healthy } => crate::demo::run(healthy).await,
        Command::Readiness(crate::cli::ReadinessCommand::Init {
            template,
            file,
            force,
        }) => readiness_init(&template, &file, force),
        Command::Readiness(cmd) => crate::readiness::readiness(cmd).await,
        Command::Evidence(cmd) => crate::readiness::evidence(cmd).await,
        Command::Eval(cmd) => crate::readiness::eval(cmd).await,
        Command::Drill(cmd) => crate::readiness::drill(cmd).await,
        Command::Guardrails {
            agent,
            env,
            budget,
            set,
            client,
        } => crate::guardrails::run(&agent, &env, budget, set.as_deref(), &client).await,
        Command::Bench(crate::cli::BenchCommand::Ingest {
            events,
            batch,
            concurrency,
            windows,
            output,
        }) => {
            crate::bench::ingest(crate::bench::IngestArgs {
                events,
                batch,
                concurrency,
                windows,
                output_json: output == Output::Json,
            })
            .await
        }
        Command::Bench(crate::cli::BenchCommand::Interop {
            requests,
            events,
            batch,
            concurrency,
            output,
        }) => {
            crate::bench_interop::run(crate::bench_interop::Args {
                requests,
                events,
                batch,
                concurrency,
                output_json: output == Output::Json,
            })
            .await
        }
        Command::Bench(crate::cli::BenchCommand::Detect { runs, seed, output }) => {
            let report = serin_core::guardrails::sim::detect_report(runs.max(1), seed)?;
            if output == Output::Json {
                out::json(&report);
            } else {
                out::line(report.to_string().trim_end());
            }
            Ok(())
        }
        Command::Bench(crate::cli::BenchCommand::Judge {
            releases,
            batch,
            guardrails,
            scenario,
            seed,
            concurrency,
            min_requests,
            users,
            volume_shape,
            delay,
            sim_runs,
            tick_ms,
            output,
        }) => {
            use crate::bench_judge::Guardrails;
            use crate::cli::{JudgeGuardrails, JudgeScenarioArg};
            use serin_core::guardrails::sim::JudgeScenario;
            crate::bench_judge::judge(crate::bench_judge::JudgeArgs {
                releases,
                batch,
                guardrails: match guardrails {
                    JudgeGuardrails::Spec => Guardrails::Spec,
                    JudgeGuardrails::Zero => Guardrails::Zero,
                },
                scenario: match scenario {
                    JudgeScenarioArg::Aa => JudgeScenario::Aa,
                    JudgeScenarioArg::Errors2x => JudgeScenario::Errors2x,
                    JudgeScenarioArg::Latency200 => JudgeScenario::Latency200,
                    JudgeScenarioArg::BelowMargin => JudgeScenario::BelowMargin,
                    JudgeScenarioArg::AboveMargin => JudgeScenario::AboveMargin,
                },
                seed,
                concurrency,
                min_requests,
                users,
                volume_shape,
                mean_delay: delay,
                sim_runs,
                tick_ms,
                output_json: output == Output::Json,
            })
            .await
        }
        Command::Bench(crate::cli::BenchCommand::Propagation {
            subscribers,
            rollbacks,
            database_url,
            replicas,
            agents,
            output,
        }) => {
            crate::bench_propagation::propagation(crate::bench_propagation::PropagationArgs {
                subscribers,
                rollbacks,
                replicas,
                database_url,
                agents,
                output_json: output == Output::Json,
            })
            .await
        }
        Command::Audit(cmd) => audit(cmd).await,
    }
}

/// `agent@N` as typed by a user.
fn parse_bundle_id(id: &str) -> anyhow::Result<(String, i64)> {
    let (agent, n) = id
        .split_once('@')
        .ok_or_else(|| anyhow!("{id:?} is not a bundle id; write AGENT@N, e.g. support@3"))?;
    slug::validate_agent(agent).map_err(|e| anyhow!("{e}"))?;
    let n: i64 = n
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| anyhow!("{id:?}: the bundle number must be a positive integer"))?;
    Ok((agent.to_owned(), n))
}

fn print_problems(problems: &[Problem]) {
    for p in problems {
        out::line(&p.to_string());
    }
}

fn count(problems: &[Problem], severity: Severity) -> usize {
    problems
        .iter()
        .filter(|p| std::mem::discriminant(&p.severity) == std::mem::discriminant(&severity))
        .count()
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn env_policy(env: Option<&str>) -> anyhow::Result<PinPolicy> {
    match env {
        None => Ok(PinPolicy::Strict),
        Some(env) => {
            slug::validate_env(env).map_err(|e| anyhow!("--env: {e}"))?;
            Ok(PinPolicy::for_env(env))
        }
    }
}

/// Reads and validates a bundle directory exactly as the server will.
fn validate_dir(
    dir: &Path,
    env: Option<&str>,
    catalog_path: Option<&Path>,
) -> anyhow::Result<(bundle::BundleFiles, bundle::Validation)> {
    let policy = env_policy(env)?;
    let catalog = server::load_catalog(catalog_path)?;
    let limits = Limits::DEFAULT;
    let (files, mut load_problems) = bundle_dir::load(dir, &limits);
    let mut validation = bundle::validate(
        &files,
        &ValidateOptions {
            pin_policy: policy,
            catalog: &catalog,
            limits: &limits,
        },
    );
    if load_problems
        .iter()
        .any(|p| matches!(p.severity, Severity::Error))
    {
        validation.bundle = None;
    }
    load_problems.append(&mut validation.problems);
    validation.problems = load_problems;
    Ok((files, validation))
}

async fn bundle(cmd: BundleCommand) -> anyhow::Result<()> {
    match cmd {
        BundleCommand::Validate {
            dir,
            env,
            catalog,
            output,
        } => {
            let (_, v) = validate_dir(&dir, env.as_deref(), catalog.as_deref())?;
            let errors = count(&v.problems, Severity::Error);
            let warnings = count(&v.problems, Severity::Warning);
            if output == Output::Json {
                out::json(&json!({
                    "valid": v.bundle.is_some(),
                    "agent": v.bundle.as_ref().map(|b| b.agent.clone()),
                    "digest": v.bundle.as_ref().map(|b| b.digest().to_string()),
                    "problems": v.problems,
                }));
            } else {
                print_problems(&v.problems);
                if let Some(b) = &v.bundle {
                    out::line(&format!(
                        "ok: {} {} ({})",
                        b.agent,
                        b.digest(),
                        plural(warnings, "warning")
                    ));
                }
            }
            if v.bundle.is_none() {
                return Err(CheckFailed(format!(
                    "{} is not a valid bundle: {}, {}",
                    dir.display(),
                    plural(errors, "error"),
                    plural(warnings, "warning")
                ))
                .into());
            }
            Ok(())
        }
        BundleCommand::Push { dir, env, client } => push(&dir, env, &client).await,
        BundleCommand::List {
            agent,
            limit,
            client,
        } => list(agent, limit, &client).await,
        BundleCommand::Show { id, client } => show(&id, &client).await,
        BundleCommand::Diff { old, new, client } => diff(&old, &new, &client).await,
    }
}

async fn push(dir: &Path, env: Option<String>, args: &ClientArgs) -> anyhow::Result<()> {
    let (files, v) = validate_dir(dir, env.as_deref(), None)?;
    if v.bundle.is_none() {
        print_problems(&v.problems);
        return Err(CheckFailed(format!(
            "{} is not a valid bundle ({}); nothing was pushed",
            dir.display(),
            plural(count(&v.problems, Severity::Error), "error")
        ))
        .into());
    }
    let mut text = BTreeMap::new();
    for (path, bytes) in files.iter() {
        let s = std::str::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8"))?;
        text.insert(path.to_owned(), s.to_owned());
    }
    let client = Client::new(args)?;
    let body = json!({ "files": text, "env": env });
    let result: anyhow::Result<(reqwest::StatusCode, Value)> =
        client.post("/v1/bundles", &body).await;
    let (_, resp) = match result {
        Ok(r) => r,
        Err(e) => {
            // The server's catalog may know aliases this CLI's does not.
            if let Some(f) = e.downcast_ref::<ApiFailure>()
                && f.code == "invalid_bundle"
            {
                if let Some(problems) = f
                    .details
                    .as_ref()
                    .and_then(|d| d.get("problems"))
                    .and_then(|p| serde_json::from_value::<Vec<Problem>>(p.clone()).ok())
                {
                    print_problems(&problems);
                }
                return Err(
                    CheckFailed(format!("the server refused the bundle: {}", f.message)).into(),
                );
            }
            return Err(e);
        }
    };
    if args.output == Output::Json {
        out::json(&resp);
        return Ok(());
    }
    if let Some(problems) = resp
        .get("problems")
        .and_then(|p| serde_json::from_value::<Vec<Problem>>(p.clone()).ok())
    {
        print_problems(&problems);
    }
    let id = resp["id"].as_str().unwrap_or("?");
    let digest = resp["digest"].as_str().unwrap_or("?");
    if resp["created"].as_bool() == Some(true) {
        out::line(&format!("pushed {id} ({digest})"));
    } else {
        out::line(&format!(
            "unchanged: {id} already holds this content ({digest})"
        ));
    }
    Ok(())
}

async fn list(agent: Option<String>, limit: i64, args: &ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    match agent {
        None => {
            let agents: Vec<Value> = client.get("/v1/agents").await?;
            if args.output == Output::Json {
                out::json(&agents);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = agents
                .iter()
                .map(|a| {
                    vec![
                        a["name"].as_str().unwrap_or("").to_owned(),
                        a["bundles"].to_string(),
                        format!("{}@{}", a["name"].as_str().unwrap_or(""), a["latest"]),
                        a["updated_at"].as_str().unwrap_or("").to_owned(),
                    ]
                })
                .collect();
            out::table(&["AGENT", "BUNDLES", "LATEST", "UPDATED"], &rows);
        }
        Some(agent) => {
            slug::validate_agent(&agent).map_err(|e| anyhow!("{e}"))?;
            let list: Vec<Value> = client
                .get(&format!("/v1/agents/{agent}/bundles?limit={limit}"))
                .await?;
            if args.output == Output::Json {
                out::json(&list);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|b| {
                    vec![
                        b["id"].as_str().unwrap_or("").to_owned(),
                        short_digest(b["digest"].as_str().unwrap_or("")),
                        b["created_at"].as_str().unwrap_or("").to_owned(),
                        b["created_by"].as_str().unwrap_or("").to_owned(),
                    ]
                })
                .collect();
            out::table(&["BUNDLE", "DIGEST", "CREATED", "BY"], &rows);
        }
    }
    Ok(())
}

fn short_digest(d: &str) -> String {
    d.get(..19).unwrap_or(d).to_owned()
}

async fn fetch_bundle(client: &Client, id: &str) -> anyhow::Result<(Value, Bundle)> {
    let (agent, n) = parse_bundle_id(id)?;
    let resp: Value = client
        .get(&format!("/v1/agents/{agent}/bundles/{n}"))
        .await?;
    let bundle: Bundle = serde_json::from_value(resp["bundle"].clone()).with_context(|| {
        format!("the server's copy of {id} is not a bundle this CLI understands")
    })?;
    Ok((resp, bundle))
}

async fn show(id: &str, args: &ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let (resp, b) = fetch_bundle(&client, id).await?;
    if args.output == Output::Json {
        out::json(&resp);
        return Ok(());
    }
    out::line(&format!("bundle    {}", resp["id"].as_str().unwrap_or(id)));
    out::line(&format!(
        "digest    {}",
        resp["digest"].as_str().unwrap_or("")
    ));
    out::line(&format!(
        "created   {} by {}",
        resp["created_at"].as_str().unwrap_or(""),
        resp["created_by"].as_str().unwrap_or("")
    ));
    out::line(&format!(
        "model     {} {}",
        b.model.provider, b.model.snapshot
    ));
    if !b.model.params.is_empty() {
        let params: Vec<String> = b
            .model
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out::line(&format!("params    {}", params.join(" ")));
    }
    let tools: Vec<&str> = b.tools.iter().map(|t| t.name.as_str()).collect();
    out::line(&format!(
        "tools     {}",
        if tools.is_empty() {
            "-".to_owned()
        } else {
            tools.join(", ")
        }
    ));
    let examples: Vec<&str> = b.examples.iter().map(|e| e.name.as_str()).collect();
    out::line(&format!(
        "examples  {}",
        if examples.is_empty() {
            "-".to_owned()
        } else {
            examples.join(", ")
        }
    ));
    if let Some(set) = &b.eval_set {
        out::line(&format!("eval set  {set}"));
    }
    let m = &b.metadata;
    for (k, v) in [
        ("author", &m.author),
        ("reviewer", &m.reviewer),
        ("commit", &m.commit),
        ("about", &m.description),
    ] {
        if let Some(v) = v {
            out::line(&format!("{k:<9} {v}"));
        }
    }
    out::line("");
    out::line("--- prompt ---");
    out::line(b.prompt.trim_end());
    Ok(())
}

async fn diff(old: &str, new: &str, args: &ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let (_, a) = fetch_bundle(&client, old).await?;
    let (_, b) = fetch_bundle(&client, new).await?;
    let d = bundle::diff_labeled(&a, old, &b, new);
    if args.output == Output::Json {
        out::json(&d);
    } else if d.is_empty() {
        out::line(&format!("{old} and {new} have identical content"));
    } else {
        out::line(&format!("diff {old} -> {new}"));
        out::line(d.to_string().trim_end());
    }
    Ok(())
}

async fn pins(agent: Option<String>, args: &ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let path = match &agent {
        Some(a) => {
            slug::validate_agent(a).map_err(|e| anyhow!("{e}"))?;
            format!("/v1/pins?agent={a}")
        }
        None => "/v1/pins".to_owned(),
    };
    let pins: Vec<Value> = client.get(&path).await?;
    if args.output == Output::Json {
        out::json(&pins);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = pins
        .iter()
        .map(|p| {
            let r = &p["report"];
            let s = |v: &Value| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| "-".to_owned())
            };
            vec![
                s(&p["bundle"]),
                s(&p["provider"]),
                s(&r["snapshot"]),
                s(&r["status"]),
                s(&r["newest"]),
                r["lag_days"]
                    .as_i64()
                    .map(|d| format!("{d}d"))
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    out::table(
        &["BUNDLE", "PROVIDER", "PINNED", "STATUS", "NEWEST", "LAG"],
        &rows,
    );
    Ok(())
}

async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            role,
            name,
            store,
            client,
        } => {
            let parsed: Role = role.parse().map_err(|e| anyhow!("--role: {e}"))?;
            let offline = store.data.is_some() || store.database_url.is_some();
            let created: Value = if offline {
                let store_args = crate::cli::StoreArgs {
                    data: store.data.clone().unwrap_or_default(),
                    database_url: store.database_url.clone(),
                };
                let st = server::open_store(&store_args).await?;
                let name = name.unwrap_or_else(|| parsed.as_str().to_owned());
                let issued = st
                    .create_token(
                        parsed.as_str(),
                        &name,
                        serin_server::clock::now_ms(),
                        "local:cli",
                    )
                    .await
                    .context("could not create the token")?;
                st.close().await;
                json!({"token": issued.token, "id": issued.info.id, "role": issued.info.role, "name": issued.info.name})
            } else {
                let c = Client::new(&client)?;
                let (_, v): (_, Value) = c
                    .post(
                        "/v1/tokens",
                        &json!({"role": parsed.as_str(), "name": name}),
                    )
                    .await?;
                v
            };
            if client.output == Output::Json {
                out::json(&created);
            } else {
                out::note(&format!(
                    "created {} token {} (shown once):",
                    created["role"].as_str().unwrap_or(""),
                    created["id"].as_str().unwrap_or("")
                ));
                out::line(created["token"].as_str().unwrap_or(""));
            }
            Ok(())
        }
        TokenCommand::List { client } => {
            let c = Client::new(&client)?;
            let tokens: Vec<Value> = c.get("/v1/tokens").await?;
            if client.output == Output::Json {
                out::json(&tokens);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    let s = |k: &str| t[k].as_str().unwrap_or("-").to_owned();
                    vec![
                        s("id"),
                        s("role"),
                        s("name"),
                        s("created_at"),
                        s("created_by"),
                        s("revoked_at"),
                    ]
                })
                .collect();
            out::table(&["ID", "ROLE", "NAME", "CREATED", "BY", "REVOKED"], &rows);
            Ok(())
        }
        TokenCommand::Revoke { id, store, client } => {
            if store.data.is_some() || store.database_url.is_some() {
                let store_args = crate::cli::StoreArgs {
                    data: store.data.clone().unwrap_or_default(),
                    database_url: store.database_url.clone(),
                };
                let st = server::open_store(&store_args).await?;
                let revoked = st
                    .revoke_token(&id, serin_server::clock::now_ms(), "local:cli")
                    .await
                    .context("could not revoke the token");
                st.close().await;
                if !revoked? {
                    return Err(
                        CheckFailed(format!("no unrevoked token {id} in that store")).into(),
                    );
                }
            } else {
                let c = Client::new(&client)?;
                c.delete(&format!("/v1/tokens/{}", urlencode(&id))).await?;
            }
            out::line(&format!("revoked token {id}"));
            Ok(())
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn audit(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List { limit, client } => {
            let c = Client::new(&client)?;
            let entries: Vec<Value> = c.get(&format!("/v1/audit?limit={limit}")).await?;
            if client.output == Output::Json {
                out::json(&entries);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
                    vec![
                        e["id"].to_string(),
                        s("at"),
                        s("actor"),
                        s("action"),
                        s("subject"),
                    ]
                })
                .collect();
            out::table(&["ID", "AT", "ACTOR", "ACTION", "SUBJECT"], &rows);
            Ok(())
        }
        AuditCommand::Head { client } => crate::audit::head(&client).await,
        AuditCommand::Verify {
            head: Some(head),
            public_key,
            client,
        } => crate::audit::verify_head(&head, public_key.as_deref(), &client).await,
        AuditCommand::Verify { client, .. } => {
            let c = Client::new(&client)?;
            let v: Value = c.get("/v1/audit/verify").await?;
            if client.output == Output::Json {
                out::json(&v);
            }
            if v["ok"].as_bool() == Some(true) {
                if client.output == Output::Human {
                    out::line(&format!(
                        "audit chain intact: {} entries verified",
                        v["entries"]
                    ));
                }
                Ok(())
            } else {
                Err(
                    CheckFailed(format!("audit chain broken at entry {}", v["first_broken"]))
                        .into(),
                )
            }
        }
    }
}

fn readiness_init(template: &str, file: &Path, force: bool) -> anyhow::Result<()> {
    let text = serin_core::readiness::template(template).ok_or_else(|| {
        anyhow!(
            "unknown template {template:?}; known: {}",
            serin_core::readiness::TEMPLATE_NAMES.join(", ")
        )
    })?;
    if file.exists() && !force {
        return Err(anyhow!(
            "{} exists; pass --force to overwrite it",
            file.display()
        ));
    }
    std::fs::write(file, text).with_context(|| format!("could not write {}", file.display()))?;
    out::line(&format!(
        "wrote {} ({template}: {} checks)",
        file.display(),
        serin_core::readiness::template_items().len()
    ));
    Ok(())
}
