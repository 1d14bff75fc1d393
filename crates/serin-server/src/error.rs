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
            ErrorCode::Unavailable => "the store is unreachable; retry later",
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

#[derive(Debug)]
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
    fn from(err: serin_store::StoreError) -> Self {
        tracing::error!(error = %err, "store error");
        ApiError::new(
            ErrorCode::Unavailable,
            "the store could not complete the request; retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message,
                field: self.field,
                details: self.details,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if self.code == ErrorCode::Overloaded {
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

    #[test]
    fn overload_answers_429_with_retry_after_in_whole_seconds() {
        let resp = ApiError::new(ErrorCode::Overloaded, "busy").into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
