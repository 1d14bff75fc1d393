//! Request extractors whose failures answer in Serin's error shape.
//!
//! axum's stock extractors answer plain-text rejections; clients of Serin branch
//! on `error.code` and `error.field`, so every rejection is translated here.

use std::marker::PhantomData;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::{header, request::Parts};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serin_core::auth::{Action, Role};

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

mod strict;

/// A JSON body; rejections name the offending field as a JSON pointer.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body's bytes, not yet parsed, for a route that reads them itself (outcome batches);
/// refused as [`ApiJson`] refuses a body that is not JSON or could not be read.
#[derive(Debug)]
pub struct JsonBytes(pub Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON: send Content-Type: application/json",
            ));
        }
        Bytes::from_request(req, state)
            .await
            .map(JsonBytes)
            .map_err(bytes_rejection)
    }
}

fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if crate::transport::is_body_timeout(&rejection) {
        return ApiError::new(
            ErrorCode::RequestTimeout,
            format!("could not read the body: {rejection}"),
        );
    }
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the request body exceeds this route's size limit",
        )
    } else {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("could not read the body: {rejection}"),
        )
    }
}

/// Deserializes with the path of the failing field, so a type error deep in a
/// body names `/events/3/latency_ms` rather than "invalid type".
///
/// Two passes: the bytes are read into a JSON value (syntax errors, trailing
/// garbage and duplicate keys are caught here), then `T` is read from that
/// value through [`strict::Strict`], which refuses a JSON array wherever `T`
/// expects an object. serde's derive would otherwise read a struct from an
/// array of its fields in order (`["viewer","x"]` as a token request), at any
/// depth; a client that sends that has a bug we must not guess around.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize::<_, strict::UniqueKeys>(&mut de) {
        Ok(v) => {
            // Trailing garbage after a valid document is malformed JSON too.
            de.end().map_err(|e| {
                ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON body: {e}"))
            })?;
            v.0
        }
        Err(err) => {
            let pointer = serin_core::pointer::from_path(err.path());
            let inner = err.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("invalid JSON body: {inner}"),
                ));
            }
            return Err(field_error(pointer, &inner));
        }
    };
    parse_value(value)
}

/// Like [`parse_json`], from an already parsed value (one event of a batch).
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize::<_, T>(strict::Strict(value)).map_err(|err| {
        let pointer = serin_core::pointer::from_path(err.path());
        field_error(pointer, &err.into_inner())
    })
}

/// For values a `serin-core` parser has already read leniently (a plan, a
/// policy): refuses the arrays it took for objects, naming the field under
/// `base`. serin-core keeps its own parsers (and their error codes) because
/// the CLI reads the same files from YAML.
pub fn refuse_arrays_as_objects<T: DeserializeOwned>(
    value: &serde_json::Value,
    base: &str,
) -> Result<(), ApiError> {
    parse_value::<T>(value.clone()).map(drop).map_err(|mut e| {
        e.field = e
            .field
            .map(|f| format!("{base}{}", if f == "/" { "" } else { &f }));
        e.message = format!("{base}{}", e.message);
        e
    })
}

fn field_error(pointer: String, inner: &serde_json::Error) -> ApiError {
    let field = if pointer.is_empty() {
        "/".to_owned()
    } else {
        pointer
    };
    ApiError::field(
        ErrorCode::InvalidField,
        field.clone(),
        format!("{field}: {inner}"),
    )
}

/// A query string; rejections answer `bad_request` in Serin's error shape.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("invalid query string: {}", e.body_text()),
                )
            })
    }
}

/// Path parameters; rejections answer `bad_request` in Serin's error shape.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(ApiPath(p.0)),
            Err(rejection) => {
                let template = parts
                    .extensions
                    .get::<MatchedPath>()
                    .map(|m| m.as_str().to_owned())
                    .unwrap_or_default();
                Err(path_rejection(&rejection, &template))
            }
        }
    }
}

/// A path that matched a route but whose parameters do not parse is the
/// client's malformed request (400), never a field error (422), and names the
/// parameter so a client can tell `agent` from `n`.
fn path_rejection(rejection: &PathRejection, template: &str) -> ApiError {
    use axum::extract::path::ErrorKind;
    let names = path_params(template);
    let param = match rejection {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            ErrorKind::ParseErrorAtKey { key, .. }
            | ErrorKind::InvalidUtf8InPathParam { key }
            | ErrorKind::DeserializeError { key, .. } => Some(key.clone()),
            ErrorKind::ParseErrorAtIndex { index, .. } => names.get(*index).cloned(),
            ErrorKind::ParseError { .. } if names.len() == 1 => names.first().cloned(),
            _ => None,
        },
        _ => None,
    };
    let text = rejection.body_text();
    match param {
        Some(param) => ApiError::field(
            ErrorCode::BadRequest,
            param.clone(),
            format!("invalid path parameter {param}: {text}"),
        ),
        None => ApiError::new(ErrorCode::BadRequest, format!("invalid path: {text}")),
    }
}

/// The `{name}` parameters of a route template, in order.
pub fn path_params(template: &str) -> Vec<String> {
    template
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|s| s.trim_start_matches('*').to_owned())
        .collect()
}

/// A bundle number taken from the path (`agent@N`): a positive integer that
/// the store can hold, else 400 naming the parameter.
pub fn path_bundle_number(n: u64, param: &str) -> Result<u64, ApiError> {
    if n >= 1 && i64::try_from(n).is_ok() {
        Ok(n)
    } else {
        Err(ApiError::field(
            ErrorCode::BadRequest,
            param,
            format!("{param} must be a positive bundle number, got {n}"),
        ))
    }
}

/// Who is calling: the token's id and role.
#[derive(Clone, Debug)]
pub struct Caller {
    pub token_id: String,
    pub role: Role,
}

impl Caller {
    /// The actor recorded in the audit log.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }
}

/// The least action a route needs; each route names one in its signature.
pub trait Requires {
    const ACTION: Action;
}

macro_rules! requirement {
    ($($name:ident => $action:expr),* $(,)?) => {$(
        #[derive(Debug)]
        pub struct $name;
        impl Requires for $name {
            const ACTION: Action = $action;
        }
    )*};
}

requirement! {
    ReadAccess => Action::Read,
    BundleWriteAccess => Action::BundleWrite,
    DeployAccess => Action::Deploy,
    ApproveAccess => Action::Approve,
    AttestAccess => Action::Attest,
    SnapshotAccess => Action::SnapshotRead,
    DecideAccess => Action::Decide,
    OutcomeAccess => Action::OutcomeWrite,
    EffectAccess => Action::EffectWrite,
    AdminAccess => Action::Admin,
}

/// An authenticated caller allowed to perform `R::ACTION`.
#[derive(Debug)]
pub struct Auth<R: Requires> {
    pub caller: Caller,
    _requires: PhantomData<R>,
}

impl<R: Requires + Send + Sync> FromRequestParts<AppState> for Auth<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, state).await?;
        if !caller.role.allows(R::ACTION) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "role {} may not {}; this route needs role {} or admin",
                    caller.role.as_str(),
                    R::ACTION.as_str(),
                    R::ACTION.least_role().as_str()
                ),
            ));
        }
        Ok(Auth {
            caller,
            _requires: PhantomData,
        })
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "missing Authorization header; send `Authorization: Bearer <token>`",
            )
        })?
        .to_str()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "the Authorization header is not valid text",
            )
        })?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
    let info = state.store.authenticate(token).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "the token is unknown or revoked",
        )
    })?;
    let role = Role::parse(&info.role).ok_or_else(|| {
        ApiError::internal(format!(
            "token {} has unknown role {:?} in the store",
            info.id, info.role
        ))
    })?;
    Ok(Caller {
        token_id: info.id,
        role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Item>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        n: u32,
    }

    fn check(input: &str, code: ErrorCode, field: Option<&str>) {
        let err = parse_json::<Body>(input.as_bytes()).unwrap_err();
        assert_eq!(err.code, code, "{input}: {}", err.message);
        assert_eq!(err.field.as_deref(), field, "{input}: {}", err.message);
    }

    #[test]
    fn json_errors_name_the_field_as_a_pointer() {
        check(
            r#"{"items":[{"n":1},{"n":"x"}]}"#,
            ErrorCode::InvalidField,
            Some("/items/1/n"),
        );
        check(
            r#"{"items":[],"extra":1}"#,
            ErrorCode::InvalidField,
            Some("/extra"),
        );
        check(r#"{"items":[{"n":1}"#, ErrorCode::InvalidJson, None);
        check(r#"{"items":[]} trailing"#, ErrorCode::InvalidJson, None);
        check(r#"{}"#, ErrorCode::InvalidField, Some("/"));
    }
}
