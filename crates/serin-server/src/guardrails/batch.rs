//! Reading a `POST /v1/outcomes` body into events.
//!
//! The fast path reads each event straight from the request bytes into an
//! [`OutcomeEvent`], with no `serde_json::Value` tree in between: the body is
//! split into raw event texts (`RawValue`, borrowed), and each is typed once.
//! Anything the fast path cannot vouch for takes the general path, which
//! answers exactly as a body read through [`crate::extract::parse_json`]
//! always has:
//!
//! - a body that is not `{"events": [...]}` of at most [`MAX_BATCH_EVENTS`]
//!   events, or that is not well formed JSON, is read again through the
//!   general path as a whole, so its error (code, field, reason, and which
//!   error wins when there are several) is the one it always was;
//! - an event that does not type cleanly is read through the general path on
//!   its own, for its rejection (field pointer and reason), its request id and
//!   its env; when that read finds a body-level fault (a repeated key, a number
//!   out of range) the whole body goes through the general path;
//! - an event containing `[` anywhere (no field of an event is an array) is
//!   read through the general path too, because serde's derive would fill a
//!   struct from an array of its fields, which the general path refuses.
//!
//! Repeated keys: the general path refuses a body naming any key twice. A
//! typed read refuses a repeated struct field (serde's derive) and unknown
//! fields (`deny_unknown_fields`), and `stages` refuses a repeated stage name
//! itself, so a typed read that succeeds saw no repeated key.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use serin_core::outcome::OutcomeEvent;

use super::{MAX_BATCH_EVENTS, Rejection};
use crate::error::{ApiError, ErrorCode};

/// One event of a batch, as read.
// Nearly every event is the large variant: boxing it would be one more allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ParsedEvent {
    Event(OutcomeEvent),
    /// An event that could not be read as one, with its rejection and the env
    /// it names (when it names one as a string), which the batch's env check
    /// still looks at.
    Unreadable {
        env: Option<String>,
        rejection: Rejection,
    },
}

impl ParsedEvent {
    /// The env the event names, if it names one as a string.
    pub fn env(&self) -> Option<&str> {
        match self {
            ParsedEvent::Event(e) => Some(&e.env),
            ParsedEvent::Unreadable { env, .. } => env.as_deref(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// Reads a body `{"events": [...]}` into its events, refusing a malformed body
/// or an oversized batch as a whole; a malformed event is one
/// [`ParsedEvent::Unreadable`].
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<ParsedEvent>, ApiError> {
    match fast(bytes) {
        Some(events) => Ok(events),
        None => general(bytes),
    }
}

/// `None` when the general path must read the whole body.
fn fast(bytes: &[u8]) -> Option<Vec<ParsedEvent>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let batch = RawBatch::deserialize(&mut de).ok()?;
    de.end().ok()?;
    if batch.events.len() > MAX_BATCH_EVENTS {
        return None;
    }
    let mut out = Vec::with_capacity(batch.events.len());
    for (index, raw) in batch.events.iter().enumerate() {
        let text = raw.get();
        if !text.as_bytes().contains(&b'[')
            && let Ok(event) = serde_json::from_str::<OutcomeEvent>(text)
        {
            out.push(ParsedEvent::Event(event));
            continue;
        }
        // The general path's first pass over this event's bytes: refuses what it would
        // have refused in the whole body.
        let value = crate::extract::parse_json::<Value>(text.as_bytes()).ok()?;
        out.push(read_event(index, value));
    }
    Some(out)
}

/// The body read as a whole into a value, then event by event.
fn general(bytes: &[u8]) -> Result<Vec<ParsedEvent>, ApiError> {
    let body: Value = crate::extract::parse_json(bytes)?;
    Ok(batch_events(body)?
        .into_iter()
        .enumerate()
        .map(|(index, raw)| read_event(index, raw))
        .collect())
}

fn read_event(index: usize, raw: Value) -> ParsedEvent {
    let request_id = raw
        .get("request_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let env = raw.get("env").and_then(Value::as_str).map(str::to_owned);
    match crate::extract::parse_value::<OutcomeEvent>(raw) {
        Ok(event) => ParsedEvent::Event(event),
        Err(e) => {
            let field = e.field.unwrap_or_else(|| "/".into());
            ParsedEvent::Unreadable {
                env,
                rejection: Rejection {
                    index,
                    request_id,
                    code: "invalid_event".into(),
                    field: format!("/events/{index}{}", if field == "/" { "" } else { &field }),
                    reason: e.message,
                },
            }
        }
    }
}

/// Splits a body `{"events": [...]}` into raw events, refusing oversized batches.
fn batch_events(body: Value) -> Result<Vec<Value>, ApiError> {
    let Value::Object(mut map) = body else {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/",
            "the body must be {\"events\": [...]}",
        ));
    };
    if let Some(k) = map.keys().find(|k| k.as_str() != "events") {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            format!("/{k}"),
            format!("unknown field `{k}`; the body is {{\"events\": [...]}}"),
        ));
    }
    match map.remove("events") {
        Some(Value::Array(events)) => {
            if events.len() > MAX_BATCH_EVENTS {
                return Err(ApiError::field(
                    ErrorCode::InvalidField,
                    "/events",
                    format!(
                        "{} events in one batch; send at most {MAX_BATCH_EVENTS}",
                        events.len()
                    ),
                ));
            }
            Ok(events)
        }
        _ => Err(ApiError::field(
            ErrorCode::InvalidField,
            "/events",
            "events must be an array",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"request_id":"r-1","agent":"a","env":"prod","snapshot_version":2,
        "bundle":"a@1","arm":"canary","latency_ms":10,"stages":{"llm":5.0}}"#;

    /// Every body answers what the general path (the whole body read into a value) answers.
    fn same(body: &str) {
        let fast = parse_batch(body.as_bytes());
        let general = general(body.as_bytes());
        assert_eq!(format!("{fast:?}"), format!("{general:?}"), "{body}");
    }

    #[test]
    fn the_fast_path_answers_as_the_general_path() {
        let bodies = [
            format!(r#"{{"events":[{GOOD},{GOOD}]}}"#),
            r#"{"events":[]}"#.to_owned(),
            r#"{"events":{}}"#.to_owned(),
            r#"{"events":null}"#.to_owned(),
            r#"{}"#.to_owned(),
            r#"[]"#.to_owned(),
            r#"{"events":[],"extra":1}"#.to_owned(),
            r#"{"events":[],"events":[]}"#.to_owned(),
            r#"{"events":[1, "x", null, []]}"#.to_owned(),
            format!(r#"{{"events":[{GOOD}]}} trailing"#),
            format!(r#"{{"events":[{GOOD},{{"request_id":"r-2","latency_ms":"slow"}}]}}"#),
            // A wrong type in a nested field names the field.
            format!(
                r#"{{"events":[{GOOD},{}]}}"#,
                GOOD.replace(r#""stages":{"llm":5.0}"#, r#""tokens":{"input":"many"}"#)
            ),
            // Arrays where an object is expected.
            format!(
                r#"{{"events":[{GOOD},{}]}}"#,
                GOOD.replace(r#""stages":{"llm":5.0}"#, r#""tokens":[1,2]"#)
            ),
            r#"{"events":[["r-1","a","prod"]]}"#.to_owned(),
            // A `[` inside a string is no array.
            format!(r#"{{"events":[{}]}}"#, GOOD.replace("r-1", "r-[1]")),
            // Repeated keys, at the top of an event, in a struct and in the stages.
            format!(
                r#"{{"events":[{GOOD},{}]}}"#,
                GOOD.replace(r#""agent":"a""#, r#""agent":"a","agent":"a""#)
            ),
            format!(
                r#"{{"events":[{GOOD},{}]}}"#,
                GOOD.replace(
                    r#""stages":{"llm":5.0}"#,
                    r#""tokens":{"input":1,"input":2}"#
                )
            ),
            format!(
                r#"{{"events":[{GOOD},{}]}}"#,
                GOOD.replace(r#"{"llm":5.0}"#, r#"{"llm":5.0,"llm":6.0}"#)
            ),
            // Out of range numbers are malformed JSON.
            format!(
                r#"{{"events":[{}]}}"#,
                GOOD.replace(r#""latency_ms":10"#, r#""latency_ms":1e400"#)
            ),
            format!(
                r#"{{"events":[{}]}}"#,
                GOOD.replace(r#""stages":{"llm":5.0}"#, r#""stages":null"#)
            ),
            format!(r#"{{"events":[{}]}}"#, GOOD.replace("canary", "blue")),
            format!(r#"{{"events":[{}]}}"#, GOOD.replace(r#""env":"prod","#, "")),
            format!(
                r#"{{"events":[{}]}}"#,
                GOOD.replace(r#""env":"prod""#, r#""env":7"#)
            ),
        ];
        for body in &bodies {
            same(body);
        }
        let many = format!(
            r#"{{"events":[{}]}}"#,
            vec![GOOD; MAX_BATCH_EVENTS + 1].join(",")
        );
        same(&many);
    }

    #[test]
    fn unreadable_events_keep_their_request_id_env_and_field() {
        let body = format!(
            r#"{{"events":[{GOOD},{}]}}"#,
            GOOD.replace(r#""stages":{"llm":5.0}"#, r#""tokens":{"input":"many"}"#)
        );
        let events = parse_batch(body.as_bytes()).unwrap();
        assert!(matches!(events[0], ParsedEvent::Event(_)));
        let ParsedEvent::Unreadable { env, rejection } = &events[1] else {
            panic!("{:?}", events[1]);
        };
        assert_eq!(env.as_deref(), Some("prod"));
        assert_eq!(rejection.request_id.as_deref(), Some("r-1"));
        assert_eq!(rejection.field, "/events/1/tokens/input");
        assert_eq!(rejection.code, "invalid_event");
    }
}
