//! API tokens and the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serin_core::auth::Role;
use serin_store::{AuditEntry, TokenInfo};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{AdminAccess, ApiJson, ApiPath, ApiQuery, Auth, ReadAccess};
use crate::{AppState, clock};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(list_audit))
        .routes(routes!(verify_audit))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// `admin`, `deployer`, `approver`, `viewer` or `sdk`.
    pub role: String,
    /// A label to recognise the token by (e.g. `ci-staging`); 1..=100 characters.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub created_by: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTokenResponse {
    /// The secret. It is shown only in this answer; the store keeps a hash.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenResponse,
}

fn token_response(t: TokenInfo) -> TokenResponse {
    TokenResponse {
        id: t.id,
        name: t.name,
        role: t.role,
        created_at: clock::rfc3339(t.created_at_ms),
        created_by: t.created_by,
        revoked_at: t.revoked_at_ms.map(clock::rfc3339),
    }
}

/// Create an API token.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedTokenResponse)),
    security(("bearer" = ["admin"]))
)]
async fn create_token(
    State(state): State<AppState>,
    auth: Auth<AdminAccess>,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedTokenResponse>)> {
    let role: Role = req
        .role
        .parse()
        .map_err(|e: serin_core::auth::UnknownRole| {
            ApiError::field(ErrorCode::InvalidField, "/role", e.to_string())
        })?;
    let name = req.name.unwrap_or_else(|| role.as_str().to_owned());
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/name",
            "name must be 1 to 100 printable characters",
        ));
    }
    let issued = state
        .store
        .create_token(role.as_str(), &name, clock::now_ms(), &auth.caller.actor())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenResponse {
            token: issued.token,
            info: token_response(issued.info),
        }),
    ))
}

/// Every token (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    responses((status = 200, body = Vec<TokenResponse>)),
    security(("bearer" = ["admin"]))
)]
async fn list_tokens(
    State(state): State<AppState>,
    _auth: Auth<AdminAccess>,
) -> ApiResult<Json<Vec<TokenResponse>>> {
    let tokens = state.store.list_tokens().await?;
    Ok(Json(tokens.into_iter().map(token_response).collect()))
}

/// Revoke a token; it stops authenticating at once, and the snapshot streams it
/// opened end (on this replica at once, on others within 1 s).
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "Token id (the part after `serin_`)")),
    responses((status = 204, description = "Revoked")),
    security(("bearer" = ["admin"]))
)]
async fn revoke_token(
    State(state): State<AppState>,
    auth: Auth<AdminAccess>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if id == auth.caller.token_id {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "a token cannot revoke itself; use another admin token",
        ));
    }
    if state
        .store
        .revoke_token(&id, clock::now_ms(), &auth.caller.actor())
        .await?
    {
        state.revocations.revoked(&id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no active token with id {id:?}"
        )))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At most this many (1..=1000, default 100).
    pub limit: Option<i64>,
    /// Only entries with an id below this (newest first).
    pub before: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditResponse {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub hash: String,
}

fn audit_response(e: AuditEntry) -> AuditResponse {
    AuditResponse {
        id: e.id,
        at: clock::rfc3339(e.at_ms),
        actor: e.actor,
        action: e.action,
        subject: e.subject,
        details: e.details,
        hash: e.hash,
    }
}

/// The audit log, newest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditResponse>)),
    security(("bearer" = ["viewer"]))
)]
async fn list_audit(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditResponse>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            ErrorCode::BadRequest,
            "limit",
            "limit must be between 1 and 1000",
        ));
    }
    let entries = state.store.list_audit(limit, q.before).await?;
    Ok(Json(entries.into_iter().map(audit_response).collect()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerifyResponse {
    /// True when every entry's hash matches its content and its predecessor.
    pub ok: bool,
    pub entries: i64,
    /// The first entry whose hash does not verify.
    pub first_broken: Option<i64>,
    /// Why that entry does not verify.
    pub reason: Option<String>,
}

/// Recompute the audit hash chain.
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    tag = "audit",
    responses((status = 200, body = AuditVerifyResponse)),
    security(("bearer" = ["viewer"]))
)]
async fn verify_audit(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
) -> ApiResult<Json<AuditVerifyResponse>> {
    let v = state.store.verify_audit().await?;
    Ok(Json(AuditVerifyResponse {
        ok: v.ok,
        entries: v.entries,
        first_broken: v.first_broken_id,
        reason: v.reason,
    }))
}
