//! `serin bench interop`: the interop endpoints measured beside their native twins in the
//! same run, on the same embedded server: OFREP single and bulk evaluation against
//! `POST /v1/decide`, and OTLP/HTTP trace ingestion (protobuf, as SDK exporters send it)
//! against `POST /v1/outcomes` carrying the same outcomes.

// `serde_json::Value["key"]` yields Null for a missing key; it cannot panic.
#![allow(clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use prost::Message;
use serde_json::{Value, json};
use serin_server::otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serin_server::otlp::proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serin_server::otlp::proto::tonic::resource::v1::Resource;
use serin_server::otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::bench::{Embedded, outcome, percentile};
use crate::out;

pub struct Args {
    pub requests: usize,
    pub events: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub output_json: bool,
}

/// One request body to send, with its route and content type.
#[derive(Clone)]
struct Call {
    path: &'static str,
    content_type: &'static str,
    body: Arc<Vec<u8>>,
    env: bool,
}

struct Timed {
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

async fn drive(
    server: &Arc<Embedded>,
    calls: Vec<Call>,
    concurrency: usize,
) -> anyhow::Result<Timed> {
    let queue = Arc::new(std::sync::Mutex::new(calls));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let queue = queue.clone();
        let server = server.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let next = queue.lock().map_err(|_| anyhow!("queue poisoned"))?.pop();
                let Some(call) = next else { break };
                let t = Instant::now();
                let mut req = server
                    .http
                    .post(format!("{}{}", server.base, call.path))
                    .bearer_auth(&server.admin)
                    .header("content-type", call.content_type)
                    .body(call.body.as_ref().clone());
                if call.env {
                    req = req.header("Serin-Env", "dev");
                }
                let resp = req.send().await?;
                let status = resp.status();
                let bytes = resp.bytes().await?;
                if !status.is_success() {
                    return Err(anyhow!(
                        "{} refused: HTTP {status}: {}",
                        call.path,
                        String::from_utf8_lossy(&bytes)
                    ));
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<Vec<f64>, anyhow::Error>(lat)
        }));
    }
    let mut latencies_ms = Vec::new();
    for w in workers {
        latencies_ms.extend(w.await??);
    }
    latencies_ms.sort_by(f64::total_cmp);
    Ok(Timed {
        elapsed: started.elapsed(),
        latencies_ms,
    })
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// The outcome `e` (from `bench::outcome`) as the three spans an instrumented agent emits.
fn spans_of(e: &Value, i: usize, now_ns: u64) -> Vec<Span> {
    use any_value::Value as V;
    let s = |v: &Value| V::StringValue(v.as_str().unwrap_or_default().to_owned());
    let trace_id = (i as u128 + 1).to_be_bytes().to_vec();
    let id = |k: u64| (3 * i as u64 + k).to_be_bytes().to_vec();
    let latency_ns = (e["latency_ms"].as_f64().unwrap_or(0.0) * 1e6) as u64;
    let root = Span {
        trace_id: trace_id.clone(),
        span_id: id(1),
        name: "invoke_agent bench".into(),
        start_time_unix_nano: now_ns - latency_ns,
        end_time_unix_nano: now_ns,
        attributes: vec![
            kv(
                "gen_ai.operation.name",
                V::StringValue("invoke_agent".into()),
            ),
            kv("gen_ai.agent.name", s(&e["agent"])),
            kv("serin.bundle", s(&e["bundle"])),
            kv("serin.arm", s(&e["arm"])),
            kv("serin.snapshot_version", V::IntValue(2)),
            kv("serin.request_id", V::StringValue(format!("otlp-{i}"))),
            kv("serin.user", s(&e["user"])),
            kv("serin.tenant", s(&e["tenant"])),
            kv("serin.instance", s(&e["instance"])),
        ],
        ..Default::default()
    };
    let chat = Span {
        trace_id: trace_id.clone(),
        span_id: id(2),
        parent_span_id: id(1),
        name: "chat".into(),
        start_time_unix_nano: now_ns - latency_ns,
        end_time_unix_nano: now_ns - latency_ns + 300_000_000,
        attributes: vec![
            kv("gen_ai.operation.name", V::StringValue("chat".into())),
            kv("gen_ai.usage.input_tokens", V::IntValue(900)),
            kv("gen_ai.usage.output_tokens", V::IntValue(200)),
        ],
        ..Default::default()
    };
    let tool = Span {
        trace_id,
        span_id: id(3),
        parent_span_id: id(1),
        name: "execute_tool".into(),
        start_time_unix_nano: now_ns - 60_000_000,
        end_time_unix_nano: now_ns - 10_000_000,
        attributes: vec![kv(
            "gen_ai.operation.name",
            V::StringValue("execute_tool".into()),
        )],
        ..Default::default()
    };
    vec![root, chat, tool]
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let server = Arc::new(Embedded::start(16).await?);
    let batch = args.batch.clamp(1, 6000);
    let n = args.requests.max(1);
    let ctx = |i: usize| {
        Arc::new(
            json!({"context": {"targetingKey": format!("user-{i}"), "tenant": format!("t-{}", i % 100)}})
                .to_string()
                .into_bytes(),
        )
    };
    let single: Vec<Call> = (0..n)
        .map(|i| Call {
            path: "/ofrep/v1/evaluate/flags/serin.agent.bench",
            content_type: "application/json",
            body: ctx(i),
            env: true,
        })
        .collect();
    let bulk: Vec<Call> = (0..n)
        .map(|i| Call {
            path: "/ofrep/v1/evaluate/flags",
            content_type: "application/json",
            body: ctx(i),
            env: true,
        })
        .collect();
    let decide: Vec<Call> = (0..n)
        .map(|i| Call {
            path: "/v1/decide",
            content_type: "application/json",
            body: Arc::new(
                json!({"agent": "bench", "env": "dev", "request_id": format!("user-{i}"),
                    "user": format!("user-{i}"), "tenant": format!("t-{}", i % 100)})
                .to_string()
                .into_bytes(),
            ),
            env: false,
        })
        .collect();

    let now_ns = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos(),
    )?;
    let events = args.events.max(1);
    let mut outcomes = Vec::new();
    let mut traces = Vec::new();
    for start in (0..events).step_by(batch) {
        let range = start..(start + batch).min(events);
        let evs: Vec<Value> = range
            .clone()
            .map(|i| outcome(i, i.is_multiple_of(10)))
            .collect();
        let spans: Vec<Span> = range
            .clone()
            .zip(&evs)
            .flat_map(|(i, e)| spans_of(e, i, now_ns))
            .collect();
        let export = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("serin.env", any_value::Value::StringValue("dev".into()))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        traces.push(Call {
            path: "/v1/traces",
            content_type: "application/x-protobuf",
            body: Arc::new(export.encode_to_vec()),
            env: false,
        });
        outcomes.push(Call {
            path: "/v1/outcomes",
            content_type: "application/json",
            body: Arc::new(json!({ "events": evs }).to_string().into_bytes()),
            env: false,
        });
    }

    let c = args.concurrency;
    let decide = drive(&server, decide, c).await?;
    let single = drive(&server, single, c).await?;
    let bulk = drive(&server, bulk, c).await?;
    let outcomes = drive(&server, outcomes, c).await?;
    let traces = drive(&server, traces, c).await?;
    if let Ok(s) = Arc::try_unwrap(server) {
        s.stop().await;
    }

    let lat = |t: &Timed| {
        json!({
            "per_second": n as f64 / t.elapsed.as_secs_f64(),
            "p50_ms": percentile(&t.latencies_ms, 50.0),
            "p99_ms": percentile(&t.latencies_ms, 99.0),
        })
    };
    let spans = events * 3;
    let report = json!({
        "requests": n, "concurrency": c, "events": events, "batch": batch,
        "decide": lat(&decide),
        "ofrep_single": lat(&single),
        "ofrep_bulk": lat(&bulk),
        "outcomes": {"events_per_second": events as f64 / outcomes.elapsed.as_secs_f64(),
                     "batch_p50_ms": percentile(&outcomes.latencies_ms, 50.0)},
        "otlp": {"spans_per_second": spans as f64 / traces.elapsed.as_secs_f64(),
                 "outcomes_per_second": events as f64 / traces.elapsed.as_secs_f64(),
                 "export_p50_ms": percentile(&traces.latencies_ms, 50.0)},
    });
    if args.output_json {
        out::json(&report);
        return Ok(());
    }
    out::line(&format!(
        "{n} evaluations each, {c} concurrent clients, embedded SQLite, one agent and its flags"
    ));
    for (name, t) in [
        ("POST /v1/decide (baseline)", &decide),
        ("OFREP single (serin.agent.bench)", &single),
        ("OFREP bulk", &bulk),
    ] {
        out::line(&format!(
            "  {name:34} {:>8.0}/s  p50 {:.2} ms  p99 {:.2} ms",
            n as f64 / t.elapsed.as_secs_f64(),
            percentile(&t.latencies_ms, 50.0),
            percentile(&t.latencies_ms, 99.0)
        ));
    }
    out::line(&format!(
        "{events} outcomes in batches of {batch} ({spans} spans over OTLP)"
    ));
    out::line(&format!(
        "  POST /v1/outcomes (baseline)       {:>8.0} events/s",
        events as f64 / outcomes.elapsed.as_secs_f64()
    ));
    out::line(&format!(
        "  POST /v1/traces (protobuf)         {:>8.0} spans/s = {:.0} outcomes/s",
        spans as f64 / traces.elapsed.as_secs_f64(),
        events as f64 / traces.elapsed.as_secs_f64()
    ));
    Ok(())
}
