//! OTLP/HTTP traces read as outcome events (`POST /v1/traces`).
//!
//! An agent already instrumented with the OpenTelemetry GenAI semantic conventions reports
//! its outcomes by exporting the spans it has anyway, plus a few `serin.*` attributes for
//! what the conventions lack (bundle, arm, env, snapshot version). One `invoke_agent` span
//! carrying `serin.*` attributes, with the spans below it in the same export, becomes one
//! [`OutcomeEvent`] (as JSON, read by the same reader as `/v1/outcomes`), which then takes
//! the same ingestion path. Spans of other traces are counted and ignored; spans that
//! cannot be attached are rejected through OTLP's partial success, never failing the export.
//! Decoding is `opentelemetry-proto`'s (prost for protobuf, its serde for JSON). docs/otlp.md.
//!
//! [`OutcomeEvent`]: serin_core::outcome::OutcomeEvent

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message;
use serde_json::{Map, Value, json};

/// The generated OTLP types, for clients of this crate (the interop bench builds exports).
pub use opentelemetry_proto as proto;

/// Largest body on the wire (compressed or not).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Largest body once gunzipped: bounds what a small gzip bomb can make us hold.
pub const MAX_DECODED_BYTES: usize = 32 * 1024 * 1024;
/// Spans in one export. The SDKs' batch processors send 512 by default; far more is a
/// misconfigured collector, and every span of an export is held while it is read.
pub const MAX_SPANS: usize = 20_000;
/// Parent links followed from one span before giving up (a cycle, or a pathological depth).
const MAX_DEPTH: usize = 256;

/// The two encodings OTLP/HTTP defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    /// From a `Content-Type`; `None` for anything else.
    pub fn from_content_type(ct: Option<&str>) -> Option<Encoding> {
        let mime = ct?.split(';').next()?.trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// An export refused whole, answered as a `google.rpc.Status` in the request's encoding.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OtlpError {
    pub status: StatusCode,
    /// The gRPC code OTLP pairs with it (3 invalid argument, 8 resource exhausted, ...).
    pub grpc: i32,
    pub message: String,
    /// For `serin_otlp_errors_total`.
    pub reason: &'static str,
}

impl OtlpError {
    pub fn bad(reason: &'static str, message: impl Into<String>) -> Self {
        OtlpError {
            status: StatusCode::BAD_REQUEST,
            grpc: 3,
            message: message.into(),
            reason,
        }
    }

    pub fn too_large(reason: &'static str, message: impl Into<String>) -> Self {
        OtlpError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            grpc: 8,
            message: message.into(),
            reason,
        }
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        OtlpError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            grpc: 3,
            message: message.into(),
            reason: "unsupported_media_type",
        }
    }
}

/// `google.rpc.Status`, which OTLP/HTTP answers failures with; not part of the OTLP protos.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The body of a refusal in `encoding`.
pub fn status_body(encoding: Encoding, code: i32, message: &str) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => RpcStatus {
            code,
            message: message.to_owned(),
        }
        .encode_to_vec(),
        Encoding::Json => json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
    }
}

/// The success body: partial success when spans were ignored or rejected.
pub fn response_body(encoding: Encoding, rejected_spans: usize, message: &str) -> Vec<u8> {
    let partial = (rejected_spans > 0 || !message.is_empty()).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(rejected_spans).unwrap_or(i64::MAX),
        error_message: message.to_owned(),
    });
    let resp = ExportTraceServiceResponse {
        partial_success: partial,
    };
    match encoding {
        Encoding::Protobuf => resp.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&resp).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// Gunzips (when asked) and decodes an export, refusing one of more than [`MAX_SPANS`].
pub fn decode(
    encoding: Encoding,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<ExportTraceServiceRequest, OtlpError> {
    let inflated;
    let bytes = match content_encoding
        .map(|c| c.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => body,
        Some("gzip") => {
            let mut out = Vec::new();
            let limit = u64::try_from(MAX_DECODED_BYTES).unwrap_or(u64::MAX) + 1;
            flate2::read::GzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| {
                    OtlpError::bad("bad_gzip", format!("the body is not valid gzip: {e}"))
                })?;
            if out.len() > MAX_DECODED_BYTES {
                return Err(OtlpError::too_large(
                    "too_large",
                    format!(
                        "the body inflates past {MAX_DECODED_BYTES} bytes; send smaller exports"
                    ),
                ));
            }
            inflated = out;
            &inflated
        }
        Some(other) => {
            return Err(OtlpError::unsupported(format!(
                "Content-Encoding {other} is not supported; send gzip or none"
            )));
        }
    };
    let req = match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(bytes).map_err(|e| {
            OtlpError::bad(
                "bad_protobuf",
                format!("not an ExportTraceServiceRequest: {e}"),
            )
        })?,
        Encoding::Json => {
            // serde would fill the message from a JSON array of its fields; OTLP/JSON is an
            // object.
            if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                return Err(OtlpError::bad(
                    "bad_json",
                    "not an ExportTraceServiceRequest: the body must be a JSON object",
                ));
            }
            serde_json::from_slice::<ExportTraceServiceRequest>(bytes).map_err(|e| {
                OtlpError::bad("bad_json", format!("not an ExportTraceServiceRequest: {e}"))
            })?
        }
    };
    let spans = span_count(&req);
    if spans > MAX_SPANS {
        return Err(OtlpError::too_large(
            "too_many_spans",
            format!("{spans} spans in one export; send at most {MAX_SPANS}"),
        ));
    }
    Ok(req)
}

pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// The distinct `serin.bundle` values of the export's spans (for pricing).
pub fn bundles_named(req: &ExportTraceServiceRequest) -> std::collections::BTreeSet<String> {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter_map(|span| match attr(&span.attributes, "serin.bundle") {
            Some(Av::StringValue(b)) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// What an export turned into.
#[derive(Debug, Default)]
pub struct Conversion {
    /// Each outcome event as JSON, with the spans it was built from.
    pub events: Vec<(Value, usize)>,
    /// Spans of traces with no Serin root: someone else's telemetry.
    pub ignored: usize,
    /// Spans Serin would use but cannot: missing parents, unreadable `serin.*` attributes.
    pub rejected: usize,
    /// The first few reasons for `rejected`.
    pub reasons: Vec<String>,
}

impl Conversion {
    fn reject(&mut self, spans: usize, reason: String) {
        self.rejected += spans;
        if self.reasons.len() < 5 {
            self.reasons.push(reason);
        }
    }
}

/// Per-token prices of a bundle's model, in USD: (input, output).
pub type Prices<'a> = &'a dyn Fn(&str) -> Option<(f64, f64)>;

struct Item<'a> {
    span: &'a Span,
    resource: &'a [KeyValue],
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Av> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

impl Item<'_> {
    /// The span's attribute, else the resource's.
    fn get(&self, key: &str) -> Option<&Av> {
        attr(&self.span.attributes, key).or_else(|| attr(self.resource, key))
    }

    fn str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Av::StringValue(s)) => Ok(Some(s)),
            Some(_) => Err(format!("attribute {key} must be a string")),
        }
    }

    fn int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Av::IntValue(i)) => Ok(Some(*i)),
            Some(Av::StringValue(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| format!("attribute {key} must be an integer")),
            Some(_) => Err(format!("attribute {key} must be an integer")),
        }
    }

    fn float(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Av::DoubleValue(f)) => Ok(Some(*f)),
            Some(Av::IntValue(i)) => Ok(Some(*i as f64)),
            Some(_) => Err(format!("attribute {key} must be a number")),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Av::BoolValue(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("attribute {key} must be a boolean")),
        }
    }

    fn op(&self) -> Option<&str> {
        match attr(&self.span.attributes, "gen_ai.operation.name") {
            Some(Av::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    /// An `invoke_agent` span carrying any `serin.*` attribute of its own.
    fn is_serin_root(&self) -> bool {
        self.op() == Some("invoke_agent")
            && self
                .span
                .attributes
                .iter()
                .any(|kv| kv.key.starts_with("serin."))
    }

    fn failed(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|s| s.code == SpanStatus::Error as i32)
            || attr(&self.span.attributes, "error.type").is_some()
    }

    fn millis(&self) -> f64 {
        self.span
            .end_time_unix_nano
            .saturating_sub(self.span.start_time_unix_nano) as f64
            / 1e6
    }
}

/// The stage a child span's time counts under.
fn stage_of(item: &Item<'_>) -> Option<String> {
    if let Ok(Some(s)) = item.str("serin.stage") {
        return Some(s.to_owned());
    }
    match item.op()? {
        "chat" | "text_completion" | "generate_content" => Some("llm".into()),
        "execute_tool" => Some("tools".into()),
        "embeddings" => Some("embeddings".into()),
        "invoke_agent" | "create_agent" => None,
        other => Some(other.to_owned()),
    }
}

/// `error.type` into Serin's error classes: the conventions' values are free text, so the
/// class is a best reading of it, overridable with `serin.error.class`.
fn error_class(error_type: &str) -> &'static str {
    let t = error_type.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if any(&[
        "timeout",
        "rate",
        "429",
        "503",
        "unavailable",
        "overload",
        "connection",
        "retry",
    ]) {
        "transient"
    } else if any(&["tool", "external", "upstream", "dependency"]) {
        "external"
    } else {
        "permanent"
    }
}

/// Turns an export into outcome events. Pure: the caller supplies model prices.
pub fn convert(req: &ExportTraceServiceRequest, prices: Prices<'_>) -> Conversion {
    let mut out = Conversion::default();
    let mut traces: HashMap<&[u8], Vec<Item<'_>>> = HashMap::new();
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes);
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                traces
                    .entry(&span.trace_id)
                    .or_default()
                    .push(Item { span, resource });
            }
        }
    }
    for (trace_id, items) in traces {
        convert_trace(trace_id, &items, prices, &mut out);
    }
    out
}

fn convert_trace(trace_id: &[u8], items: &[Item<'_>], prices: Prices<'_>, out: &mut Conversion) {
    if !items.iter().any(Item::is_serin_root) {
        out.ignored += items.len();
        return;
    }
    let by_id: HashMap<&[u8], usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.span.span_id.as_slice(), i))
        .collect();
    // Each Serin root's spans: the ones whose nearest Serin root above is it.
    let mut children: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        if it.is_serin_root() {
            children.entry(i).or_default();
            continue;
        }
        let mut cur = it;
        let mut found = None;
        let mut missing_parent = false;
        for _ in 0..MAX_DEPTH {
            if cur.span.parent_span_id.is_empty() {
                break;
            }
            match by_id.get(cur.span.parent_span_id.as_slice()) {
                Some(&p) if items.get(p).is_some_and(Item::is_serin_root) => {
                    found = Some(p);
                    break;
                }
                Some(&p) => match items.get(p) {
                    Some(parent) => cur = parent,
                    None => break,
                },
                None => {
                    missing_parent = true;
                    break;
                }
            }
        }
        match found {
            Some(root) => {
                children.entry(root).or_default().push(i);
            }
            None if missing_parent => out.reject(
                1,
                format!(
                    "span {} of trace {} has a parent not in this export; send a trace's spans in one export",
                    const_hex_encode(&it.span.span_id),
                    const_hex_encode(trace_id)
                ),
            ),
            None => out.ignored += 1,
        }
    }
    for (root, kids) in children {
        let spans = kids.len() + 1;
        let Some(root_item) = items.get(root) else {
            continue;
        };
        let kid_items: Vec<&Item<'_>> = kids.iter().filter_map(|&k| items.get(k)).collect();
        match event(trace_id, root_item, &kid_items, prices) {
            Ok(ev) => out.events.push((ev, spans)),
            Err(reason) => out.reject(
                spans,
                format!(
                    "invoke_agent span {}: {reason}",
                    const_hex_encode(&root_item.span.span_id)
                ),
            ),
        }
    }
}

fn const_hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn event(
    trace_id: &[u8],
    root: &Item<'_>,
    kids: &[&Item<'_>],
    prices: Prices<'_>,
) -> Result<Value, String> {
    let need = |v: Option<&str>, key: &str| {
        v.map(str::to_owned)
            .ok_or_else(|| format!("attribute {key} is required"))
    };
    let bundle = need(root.str("serin.bundle")?, "serin.bundle")?;
    let env = need(root.str("serin.env")?, "serin.env")?;
    let arm = need(root.str("serin.arm")?, "serin.arm")?;
    let version = root
        .int("serin.snapshot_version")?
        .ok_or("attribute serin.snapshot_version is required")?;
    let agent = match root.str("gen_ai.agent.name")? {
        Some(a) => a.to_owned(),
        None => bundle.split('@').next().unwrap_or_default().to_owned(),
    };
    let request_id = match root.str("serin.request_id")? {
        Some(r) => r.to_owned(),
        None => format!(
            "{}-{}",
            const_hex_encode(trace_id),
            const_hex_encode(&root.span.span_id)
        ),
    };
    let mut ev = Map::new();
    ev.insert("request_id".into(), request_id.into());
    ev.insert("trace_id".into(), const_hex_encode(trace_id).into());
    ev.insert("agent".into(), agent.into());
    ev.insert("env".into(), env.into());
    ev.insert("snapshot_version".into(), version.into());
    ev.insert("bundle".into(), bundle.clone().into());
    ev.insert("arm".into(), arm.into());
    for (field, key, fallback) in [
        ("user", "serin.user", None),
        ("tenant", "serin.tenant", None),
        ("workload", "serin.workload", None),
        ("instance", "serin.instance", Some("service.instance.id")),
        ("region", "serin.region", Some("cloud.region")),
    ] {
        let v = match root.str(key)? {
            Some(v) => Some(v),
            None => match fallback {
                Some(f) => root.str(f).ok().flatten(),
                None => None,
            },
        };
        if let Some(v) = v {
            ev.insert(field.into(), v.into());
        }
    }
    if root.span.end_time_unix_nano > 0 {
        ev.insert(
            "at_ms".into(),
            i64::try_from(root.span.end_time_unix_nano / 1_000_000)
                .unwrap_or(i64::MAX)
                .into(),
        );
    }
    ev.insert("latency_ms".into(), root.millis().into());

    let mut stages: BTreeMap<String, f64> = BTreeMap::new();
    let (mut input, mut output, mut usage_seen) = (0i64, 0i64, false);
    let (mut ok, mut failed) = (0u64, 0u64);
    for kid in kids {
        if let Some(stage) = stage_of(kid) {
            *stages.entry(stage).or_default() += kid.millis();
        }
        let i = kid.int("gen_ai.usage.input_tokens")?;
        let o = kid.int("gen_ai.usage.output_tokens")?;
        if i.is_some() || o.is_some() {
            usage_seen = true;
            input = input.saturating_add(i.unwrap_or(0));
            output = output.saturating_add(o.unwrap_or(0));
        }
        if kid.op() == Some("execute_tool") {
            if kid.failed() {
                failed += 1;
            } else {
                ok += 1;
            }
        }
    }
    if !usage_seen {
        input = root.int("gen_ai.usage.input_tokens")?.unwrap_or(0);
        output = root.int("gen_ai.usage.output_tokens")?.unwrap_or(0);
    }
    if !stages.is_empty() {
        ev.insert("stages".into(), json!(stages));
    }
    ev.insert("tokens".into(), json!({"input": input, "output": output}));
    let cost = match root.float("serin.cost_usd")? {
        Some(c) => c,
        None => prices(&bundle)
            .map(|(pi, po)| input as f64 * pi + output as f64 * po)
            .unwrap_or(0.0),
    };
    ev.insert("cost_usd".into(), cost.into());
    ev.insert("tool_calls".into(), json!({"ok": ok, "failed": failed}));
    let error_type = root.str("error.type")?;
    let class = root.str("serin.error.class")?;
    if error_type.is_some() || class.is_some() || root.failed() {
        let code = error_type.unwrap_or("error");
        let class = class.unwrap_or_else(|| error_class(code));
        ev.insert("error".into(), json!({"class": class, "code": code}));
    }
    if let Some(refused) = root.bool("serin.refused")? {
        ev.insert("refused".into(), refused.into());
    }
    match (
        root.float("serin.eval.score")?,
        root.bool("serin.eval.passed")?,
    ) {
        (Some(score), Some(passed)) => {
            ev.insert("eval".into(), json!({"score": score, "passed": passed}));
        }
        (None, None) => {}
        _ => return Err("serin.eval.score and serin.eval.passed go together".into()),
    }
    Ok(Value::Object(ev))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn kv(key: &str, v: Av) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> Av {
        Av::StringValue(v.into())
    }

    fn span(id: u8, parent: Option<u8>, attrs: Vec<KeyValue>, ms: u64) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("span {id}"),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
            attributes: attrs,
            ..Default::default()
        }
    }

    fn export(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![kv("serin.env", s("prod"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn root(id: u8) -> Span {
        span(
            id,
            None,
            vec![
                kv("gen_ai.operation.name", s("invoke_agent")),
                kv("gen_ai.agent.name", s("support")),
                kv("serin.bundle", s("support@2")),
                kv("serin.arm", s("canary")),
                kv("serin.snapshot_version", Av::IntValue(7)),
                kv("serin.request_id", s("r-1")),
            ],
            900,
        )
    }

    fn no_prices(_: &str) -> Option<(f64, f64)> {
        Some((1e-6, 2e-6))
    }

    #[test]
    fn an_invoke_agent_span_and_its_children_become_one_outcome() {
        let mut tool = span(
            3,
            Some(2),
            vec![kv("gen_ai.operation.name", s("execute_tool"))],
            100,
        );
        tool.status = Some(Status {
            code: SpanStatus::Error as i32,
            message: "boom".into(),
        });
        let spans = vec![
            root(1),
            span(
                2,
                Some(1),
                vec![
                    kv("gen_ai.operation.name", s("chat")),
                    kv("gen_ai.usage.input_tokens", Av::IntValue(1000)),
                    kv("gen_ai.usage.output_tokens", Av::IntValue(100)),
                ],
                600,
            ),
            tool,
            span(
                4,
                Some(1),
                vec![kv("gen_ai.operation.name", s("execute_tool"))],
                50,
            ),
        ];
        let c = convert(&export(spans), &no_prices);
        assert_eq!(
            (c.ignored, c.rejected, c.events.len()),
            (0, 0, 1),
            "{:?}",
            c.reasons
        );
        let (ev, n) = &c.events[0];
        assert_eq!(*n, 4);
        assert_eq!(ev["env"], "prod");
        assert_eq!(ev["agent"], "support");
        assert_eq!(ev["latency_ms"], 900.0);
        assert_eq!(ev["stages"]["llm"], 600.0);
        assert_eq!(ev["stages"]["tools"], 150.0);
        assert_eq!(ev["tokens"], json!({"input": 1000, "output": 100}));
        assert_eq!(ev["tool_calls"], json!({"ok": 1, "failed": 1}));
        assert!((ev["cost_usd"].as_f64().unwrap() - 0.0012).abs() < 1e-12);
        let parsed: serin_core::outcome::OutcomeEvent =
            crate::extract::parse_value(ev.clone()).unwrap();
        assert_eq!(parsed.request_id, "r-1");
    }

    #[test]
    fn foreign_spans_are_ignored_and_orphans_rejected_without_failing_the_export() {
        let mut other = span(9, None, vec![kv("http.method", s("GET"))], 5);
        other.trace_id = vec![2; 16];
        let orphan = span(5, Some(77), vec![kv("gen_ai.operation.name", s("chat"))], 5);
        let c = convert(&export(vec![root(1), orphan, other]), &no_prices);
        assert_eq!((c.ignored, c.rejected, c.events.len()), (1, 1, 1));
        assert!(c.reasons[0].contains("parent"), "{:?}", c.reasons);
    }

    #[test]
    fn a_root_with_unreadable_serin_attributes_is_rejected_whole() {
        let mut r = root(1);
        r.attributes.push(kv("serin.eval.score", s("high")));
        let c = convert(&export(vec![r, span(2, Some(1), vec![], 1)]), &no_prices);
        assert_eq!((c.rejected, c.events.len()), (2, 0));
        assert!(c.reasons[0].contains("serin.eval.score"), "{:?}", c.reasons);
    }

    #[test]
    fn bad_bodies_are_refused_with_the_protocols_codes() {
        let err = decode(Encoding::Protobuf, None, b"\xff\xff\xff").unwrap_err();
        assert_eq!((err.status, err.grpc), (StatusCode::BAD_REQUEST, 3));
        let err = decode(Encoding::Json, None, b"[]").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let err = decode(Encoding::Json, Some("gzip"), b"not gzip").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let many = export(
            (0..=MAX_SPANS)
                .map(|i| span((i % 200) as u8, None, vec![], 1))
                .collect(),
        );
        let err = decode(Encoding::Protobuf, None, &many.encode_to_vec()).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        // A gzip bomb stops at the inflated limit.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &vec![0u8; MAX_DECODED_BYTES + 10]).unwrap();
        let bomb = gz.finish().unwrap();
        let err = decode(Encoding::Protobuf, Some("gzip"), &bomb).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
