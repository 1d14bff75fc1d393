//! The one table that maps every failure to an HTTP status and a stable code.
//!
//! Clients (the CLI, SDKs, dashboards) branch on `code`, never on `message`, so
//! codes are part of the public contract: add new ones, never rename.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Every error code the API can answer, with its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    InvalidJson,
    InvalidField,
    InvalidBundle,
    PolicyViolation,
    NotReady,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Overloaded,
    Internal,
    Unavailable,
    UriTooLong,
    HeadersTooLarge,
    RequestTimeout,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidJson,
        ErrorCode::InvalidField,
        ErrorCode::InvalidBundle,
        ErrorCode::PolicyViolation,
        ErrorCode::NotReady,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Overloaded,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
        ErrorCode::RequestTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InvalidBundle => "invalid_bundle",
            ErrorCode::PolicyViolation => "policy_violation",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidJson => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField | ErrorCode::InvalidBundle | ErrorCode::PolicyViolation => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict | ErrorCode::NotReady => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "the request is malformed (query string, path or header)",
            ErrorCode::InvalidJson => "the body is not syntactically valid JSON",
            ErrorCode::InvalidField => {
                "a field is missing, has the wrong type or an invalid value; `field` names it"
            }
            ErrorCode::InvalidBundle => {
                "the bundle failed validation; `details.problems` lists every problem"
            }
            ErrorCode::PolicyViolation => {
                "well-formed, but a policy of the env refuses it (e.g. a direct deploy into a strict env)"
            }
            ErrorCode::NotReady => {
                "the readiness gate refuses the release; `details` is the readiness report"
            }
            ErrorCode::Unauthenticated => "no bearer token, or the token is unknown or revoked",
            ErrorCode::Forbidden => "the token's role does not allow this route",
            ErrorCode::NotFound => "no such route or resource",
            ErrorCode::MethodNotAllowed => "the route exists but not for this method",
            ErrorCode::Conflict => "the request conflicts with the current state",
            ErrorCode::PayloadTooLarge => "the body exceeds the route's size limit",
            ErrorCode::UnsupportedMediaType => "the body must be sent as application/json",
            ErrorCode::Overloaded => "too many requests in flight; retry after `Retry-After` s",
            ErrorCode::Internal => "a server bug; the log has the details",
            ErrorCode::Unavailable => {
                "the store is unreachable right now; retry after `Retry-After` s"
            }
            ErrorCode::UriTooLong => "the request URI (path and query) is over 8 KiB",
            ErrorCode::HeadersTooLarge => "the request head is over 64 KiB or 100 header fields",
            ErrorCode::RequestTimeout => {
                "the request body did not arrive within the body deadline (`--body-timeout-ms`)"
            }
        }
    }
}

/// The error body every route answers with: `{"error": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code; see the error table in docs/api.md.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// JSON pointer to the offending field (or the name of the path/query parameter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Extra structured data, e.g. `problems` for `invalid_bundle`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            details: None,
        }
    }

    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: Some(field.into()),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, what)
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        // The cause goes to the log, never to the client: it may name internals.
        tracing::error!(error = %err, "internal error");
        ApiError::new(ErrorCode::Internal, "internal error; see the server log")
    }
}

impl From<serin_store::StoreError> for ApiError {
    /// Every store failure has one deliberate answer. The match names each
    /// variant (`StoreError` is exhaustive on purpose), so a new variant does
    /// not compile until someone decides what a client should see for it.
    fn from(err: serin_store::StoreError) -> Self {
        use serin_store::StoreError;
        match err {
            // The store's conflict and invalid-input messages describe the
            // caller's request (an active release, a taken id), not internals.
            StoreError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            StoreError::Invalid(message) => ApiError::new(ErrorCode::InvalidField, message),
            // A lost race between writers of one release (a command here, the controller or
            // a command on another replica): the client reads the release again and decides.
            StoreError::Stale {
                id,
                expected,
                current,
            } => ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "release {id} changed while this request was deciding (it is at revision \
                     {current}, the request read {expected}); read it again and retry"
                ),
            )
            .with_details(serde_json::json!({ "release": id, "revision": current })),
            // Only controller writes carry an epoch; no client request is ever fenced.
            StoreError::Fenced { epoch, current } => ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "this replica's leadership (epoch {epoch}) was superseded by epoch {current}; \
                     its write was refused"
                ),
            ),
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "store unavailable");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the store is unavailable right now; retry later",
                )
            }
            e @ (StoreError::Database(_)
            | StoreError::Migrate(_)
            | StoreError::Io { .. }
            | StoreError::Corrupt(_)) => ApiError::internal(format!("store error: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        let status = self.code.status();
        if self.code == ErrorCode::Internal
            && let Some(details) = self.details.take()
        {
            // A 500 is a server bug: whatever explains it goes to the log,
            // never to the client (it may name tables, files or stored data).
            tracing::error!(message = %self.message, %details, "internal error details withheld from the client");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message,
                field: self.field,
                details: self.details,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if matches!(self.code, ErrorCode::Overloaded | ErrorCode::Unavailable) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.code == ErrorCode::Unauthenticated {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"serin\""),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_unique_snake_case_and_map_to_client_or_server_errors() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }

    async fn body_of(resp: Response) -> Value {
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn each_store_error_has_its_own_status_and_a_500_never_shows_its_cause() {
        use serin_store::StoreError;
        let cases = [
            (
                StoreError::Conflict("release r-1 is active".into()),
                409,
                "conflict",
            ),
            (
                StoreError::Invalid("size must not be negative".into()),
                422,
                "invalid_field",
            ),
            (
                StoreError::Stale {
                    id: "r-1".into(),
                    expected: 3,
                    current: 4,
                },
                409,
                "conflict",
            ),
            (
                StoreError::Fenced {
                    epoch: 2,
                    current: 3,
                },
                409,
                "conflict",
            ),
            (
                StoreError::Unavailable("pool timed out".into()),
                503,
                "unavailable",
            ),
            (
                StoreError::Corrupt("table env_states row 7".into()),
                500,
                "internal",
            ),
            (
                StoreError::Io {
                    path: "/var/lib/serin/serin.db".into(),
                    source: std::io::Error::other("disk full"),
                },
                500,
                "internal",
            ),
        ];
        for (err, status, code) in cases {
            let resp = ApiError::from(err).into_response();
            assert_eq!(resp.status().as_u16(), status, "{code}");
            let retry = resp.headers().get(header::RETRY_AFTER).is_some();
            assert_eq!(retry, status == 503, "{code}: Retry-After");
            let body = body_of(resp).await;
            assert_eq!(body["error"]["code"], code, "{body}");
            if status == 500 {
                let text = body.to_string();
                assert!(body["error"].get("details").is_none(), "{body}");
                assert!(
                    !text.contains("env_states") && !text.contains("serin.db"),
                    "{body}"
                );
            }
        }
        let conflict = body_of(
            ApiError::from(StoreError::Conflict("release r-1 is active".into())).into_response(),
        )
        .await;
        assert!(
            conflict.to_string().contains("release r-1 is active"),
            "{conflict}"
        );
    }

    #[tokio::test]
    async fn an_internal_error_drops_its_details_before_answering() {
        let err = ApiError::new(ErrorCode::Internal, "internal error; see the server log")
            .with_details(serde_json::json!({ "cause": "invalid type: null, expected f64" }));
        let body = body_of(err.into_response()).await;
        assert!(body["error"].get("details").is_none(), "{body}");
    }

    #[test]
    fn overload_answers_429_with_retry_after_in_whole_seconds() {
        let resp = ApiError::new(ErrorCode::Overloaded, "busy").into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
