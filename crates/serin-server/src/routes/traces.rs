//! `POST /v1/traces`: OTLP/HTTP trace exports as outcome events (see `crate::otlp`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serin_core::outcome::OutcomeEvent;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::{Auth, OutcomeAccess};
use crate::guardrails::ParsedEvent;
use crate::otlp::{self, Encoding, OtlpError};
use crate::{AppState, clock};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_traces))
}

/// `google.rpc.Status`, the shape of OTLP/HTTP failures (JSON here; protobuf for protobuf
/// requests).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct OtlpStatus {
    /// The gRPC status code: 3 invalid argument, 8 resource exhausted, 13 internal,
    /// 14 unavailable.
    pub code: i32,
    pub message: String,
}

fn answer(encoding: Encoding, status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    resp
}

fn refuse(encoding: Encoding, e: OtlpError) -> Response {
    metrics::counter!("serin_otlp_errors_total", "reason" => e.reason).increment(1);
    answer(
        encoding,
        e.status,
        otlp::status_body(encoding, e.grpc, &e.message),
    )
}

/// A failure of Serin's own (store down, overload) in OTLP's shape, keeping `Retry-After`,
/// which OTLP exporters honour on 429 and 503.
fn refuse_api(encoding: Encoding, e: ApiError) -> Response {
    let status = e.code.status();
    let grpc = match status.as_u16() {
        429 => 8,
        503 => 14,
        _ => 13,
    };
    let message = if status.is_server_error() {
        "the server could not store the outcomes; retry".to_owned()
    } else {
        e.message.clone()
    };
    let retry_after = e
        .into_response()
        .headers()
        .get(header::RETRY_AFTER)
        .cloned();
    let mut resp = answer(
        encoding,
        status,
        otlp::status_body(encoding, grpc, &message),
    );
    if let Some(v) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, OtlpError> {
    let too_large = || {
        OtlpError::too_large(
            "too_large",
            format!(
                "the body exceeds {} bytes; send smaller exports",
                otlp::MAX_BODY_BYTES
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > otlp::MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, otlp::MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                too_large()
            } else {
                OtlpError::bad("unreadable_body", format!("could not read the body: {e}"))
            }
        })
}

/// Receive an OTLP/HTTP trace export (protobuf or JSON, optionally gzip). Each
/// `invoke_agent` span with `serin.*` attributes becomes one outcome event, judged exactly
/// as by `POST /v1/outcomes`; spans of other traces are ignored, and spans that cannot be
/// attached are counted in `partialSuccess.rejectedSpans`. The answer is an
/// `ExportTraceServiceResponse` in the request's encoding. See docs/otlp.md.
#[utoipa::path(post, path = "/v1/traces", tag = "guardrails",
    request_body(description = "ExportTraceServiceRequest", content_type = "application/x-protobuf"),
    responses(
        (status = 200, description = "ExportTraceServiceResponse, in the request's encoding", content_type = "application/x-protobuf"),
        (status = 400, description = "Not a decodable export (google.rpc.Status)", body = OtlpStatus),
        (status = 413, description = "Over 8 MiB on the wire, 32 MiB inflated, or 20,000 spans (google.rpc.Status)", body = OtlpStatus),
        (status = 415, description = "Neither protobuf nor JSON, or an unsupported Content-Encoding (google.rpc.Status)", body = OtlpStatus),
    ),
    security(("bearer" = ["sdk"])))]
async fn post_traces(
    State(state): State<AppState>,
    _auth: Auth<OutcomeAccess>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(encoding) = Encoding::from_content_type(content_type) else {
        return refuse(
            Encoding::Json,
            OtlpError::unsupported("send Content-Type: application/x-protobuf or application/json"),
        );
    };
    let bytes = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(e) => return refuse(encoding, e),
    };
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let req = match otlp::decode(encoding, content_encoding, &bytes) {
        Ok(r) => r,
        Err(e) => return refuse(encoding, e),
    };
    drop(bytes);
    let started = std::time::Instant::now();
    let priced = bundle_prices(&state, &req).await;
    let prices = |bundle: &str| priced.get(bundle).copied();
    let mut conv = otlp::convert(&req, &prices);
    drop(req);

    let mut events = Vec::with_capacity(conv.events.len());
    let mut spans_of = Vec::with_capacity(conv.events.len());
    for (value, spans) in std::mem::take(&mut conv.events) {
        let env = value
            .get("env")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if serin_core::slug::validate_env(&env).is_err()
            || state.envs.require(&env, "serin.env").await.is_err()
        {
            conv_reject(
                &mut conv,
                spans,
                format!("serin.env {env:?} is not an env of this server"),
            );
            continue;
        }
        match crate::extract::parse_value::<OutcomeEvent>(value) {
            Ok(e) => {
                events.push(ParsedEvent::Event(e));
                spans_of.push(spans);
            }
            Err(e) => conv_reject(&mut conv, spans, e.message),
        }
    }
    let outcomes = events.len();
    let report = if events.is_empty() {
        None
    } else {
        match state.guardrails.ingest(events, clock::now_ms()).await {
            Ok(r) => Some(r),
            Err(e) => return refuse_api(encoding, e),
        }
    };
    metrics::histogram!("serin_ingest_duration_seconds", "source" => "otlp")
        .record(started.elapsed().as_secs_f64());
    if let Some(report) = &report {
        let listed: usize = report
            .errors
            .iter()
            .map(|r| spans_of.get(r.index).copied().unwrap_or(1))
            .sum();
        // Only the first 100 rejections are itemised; count each further one as its root.
        let unlisted = report.rejected.saturating_sub(report.errors.len());
        conv.rejected += listed + unlisted;
        for r in report
            .errors
            .iter()
            .take(5usize.saturating_sub(conv.reasons.len()))
        {
            conv.reasons.push(format!(
                "outcome {}: {}",
                r.request_id.as_deref().unwrap_or("?"),
                r.reason
            ));
        }
    }
    let used = spans_of.iter().sum::<usize>();
    metrics::counter!("serin_otlp_spans_total", "result" => "ignored")
        .increment(conv.ignored as u64);
    metrics::counter!("serin_otlp_spans_total", "result" => "rejected")
        .increment(conv.rejected as u64);
    metrics::counter!("serin_otlp_spans_total", "result" => "outcome")
        .increment(used.saturating_sub(conv.rejected) as u64);
    let mut message = Vec::new();
    if conv.rejected > 0 {
        message.push(format!(
            "{} spans rejected: {}",
            conv.rejected,
            conv.reasons.join("; ")
        ));
    }
    if conv.ignored > 0 {
        message.push(format!(
            "{} spans ignored: their traces have no invoke_agent span with serin.* attributes",
            conv.ignored
        ));
    }
    tracing::debug!(
        outcomes,
        rejected = conv.rejected,
        ignored = conv.ignored,
        "otlp export"
    );
    answer(
        encoding,
        StatusCode::OK,
        otlp::response_body(encoding, conv.rejected, &message.join(". ")),
    )
}

/// The catalog price of the model of every bundle the export's roots name, looked up in the
/// snapshots this server publishes (a bundle no env serves gets no price, and its outcome
/// no cost unless the span says `serin.cost_usd`).
async fn bundle_prices(
    state: &AppState,
    req: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> std::collections::HashMap<String, (f64, f64)> {
    let mut out = std::collections::HashMap::new();
    let named = otlp::bundles_named(req);
    if named.is_empty() {
        return out;
    }
    for (env, _) in state.hub.published_versions() {
        let Ok(published) = state.hub.current(&env).await else {
            continue;
        };
        for id in &named {
            if out.contains_key(id) {
                continue;
            }
            if let Some(b) = published.compiled.bundle(id)
                && let Some(info) = state.catalog.snapshot(&b.model.provider, &b.model.snapshot)
                && let Some(price) = info.price
            {
                out.insert(id.clone(), price.per_token_usd());
            }
        }
    }
    out
}

fn conv_reject(conv: &mut otlp::Conversion, spans: usize, reason: String) {
    conv.rejected += spans;
    if conv.reasons.len() < 5 {
        conv.reasons.push(reason);
    }
}
