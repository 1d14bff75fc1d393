//! Signed heads of the audit Merkle tree and the proofs that tie an old head to today's log.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serin_core::audit::SignedHead;
use serin_core::audit::merkle;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{ApiQuery, Auth, ReadAccess};
use crate::{AppState, audit, clock};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(audit_head))
        .routes(routes!(audit_proof))
        .routes(routes!(audit_subtrees))
}

/// One node of the tree: the root of entries `start + 1 ..= start + size`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditSubtree {
    /// Index of its first leaf (entry id minus one).
    pub start: u64,
    /// How many leaves it covers (a power of two).
    pub size: u64,
    /// Hex; null when the log no longer reaches that far.
    pub hash: Option<String>,
}

/// A signed tree head (see the audit section of `docs/api.md` for the signed bytes).
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditHeadResponse {
    /// How many audit entries (ids 1..=tree_size) the root covers.
    pub tree_size: u64,
    /// Hex of the RFC 9162 Merkle tree hash over the canonical entries.
    pub root_hash: String,
    pub timestamp_ms: i64,
    /// `hex(sha256(public_key))`.
    pub key_id: String,
    /// Ed25519 public key, hex.
    pub public_key: String,
    /// Ed25519 signature, hex.
    pub signature: String,
    /// Unsigned nodes that hash up to `root_hash`; a verifier uses them to name where a later
    /// log first differs.
    pub subtrees: Vec<AuditSubtree>,
}

impl From<SignedHead> for AuditHeadResponse {
    fn from(h: SignedHead) -> AuditHeadResponse {
        AuditHeadResponse {
            tree_size: h.tree_size,
            root_hash: h.root_hash,
            timestamp_ms: h.timestamp_ms,
            key_id: h.key_id,
            public_key: h.public_key,
            signature: h.signature,
            subtrees: h
                .subtrees
                .into_iter()
                .map(|s| AuditSubtree {
                    start: s.start,
                    size: s.size,
                    hash: Some(s.hash),
                })
                .collect(),
        }
    }
}

fn no_key() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "this server was started without an audit signing key",
    )
}

/// The current signed head of the audit log, computed from the entries stored now.
#[utoipa::path(
    get,
    path = "/v1/audit/head",
    tag = "audit",
    responses((status = 200, body = AuditHeadResponse)),
    security(("bearer" = ["viewer"]))
)]
async fn audit_head(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
) -> ApiResult<Json<AuditHeadResponse>> {
    let signer = state.audit_signer.clone().ok_or_else(no_key)?;
    let leaves = audit::leaves(&state.store).await?;
    Ok(Json(audit::sign(&signer, &leaves, clock::now_ms()).into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProofQuery {
    /// Size of the older tree (a saved head's `tree_size`).
    pub from: u64,
    /// Size of the newer tree; defaults to the whole log.
    pub to: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditProofResponse {
    pub from: u64,
    pub to: u64,
    /// Hex of the tree over the first `to` entries stored now.
    pub to_root: String,
    /// RFC 9162 §2.1.4 consistency proof from `from` to `to`, hex nodes.
    pub proof: Vec<String>,
}

/// A consistency proof between two tree sizes of the log as stored now. A verifier checks it
/// against roots it trusts (a saved head and a fresh one); it fails if any of the first `from`
/// entries changed since the older root was signed.
#[utoipa::path(
    get,
    path = "/v1/audit/proof",
    tag = "audit",
    params(ProofQuery),
    responses((status = 200, body = AuditProofResponse)),
    security(("bearer" = ["viewer"]))
)]
async fn audit_proof(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiQuery(q): ApiQuery<ProofQuery>,
) -> ApiResult<Json<AuditProofResponse>> {
    let leaves = audit::leaves(&state.store).await?;
    let size = u64::try_from(leaves.len()).unwrap_or(u64::MAX);
    let to = q.to.unwrap_or(size);
    if to > size {
        return Err(ApiError::field(
            ErrorCode::BadRequest,
            "to",
            format!("to is {to} but the log holds {size} entries"),
        ));
    }
    if q.from > to {
        return Err(ApiError::field(
            ErrorCode::BadRequest,
            "from",
            format!("from ({}) is larger than to ({to})", q.from),
        ));
    }
    let newer = leaves
        .get(..usize::try_from(to).unwrap_or(usize::MAX))
        .unwrap_or(&leaves);
    let proof = merkle::consistency_proof(newer, usize::try_from(q.from).unwrap_or(usize::MAX))
        .unwrap_or_default();
    Ok(Json(AuditProofResponse {
        from: q.from,
        to,
        to_root: hex::encode(merkle::root(newer)),
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubtreesQuery {
    /// The `tree_size` of the head to compare with.
    pub size: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditSubtreesResponse {
    /// How many entries the log holds now.
    pub entries: u64,
    /// The same ranges as a head of `size` carries, hashed over the entries stored now.
    pub subtrees: Vec<AuditSubtree>,
}

/// The nodes a head of `size` carries, recomputed over the log as stored now, so a verifier
/// can name the first range whose entries changed.
#[utoipa::path(
    get,
    path = "/v1/audit/subtrees",
    tag = "audit",
    params(SubtreesQuery),
    responses((status = 200, body = AuditSubtreesResponse)),
    security(("bearer" = ["viewer"]))
)]
async fn audit_subtrees(
    State(state): State<AppState>,
    _auth: Auth<ReadAccess>,
    ApiQuery(q): ApiQuery<SubtreesQuery>,
) -> ApiResult<Json<AuditSubtreesResponse>> {
    let leaves = audit::leaves(&state.store).await?;
    let ranges = merkle::subtree_ranges(q.size);
    let hashes = merkle::subtree_hashes(&leaves, &ranges);
    Ok(Json(AuditSubtreesResponse {
        entries: u64::try_from(leaves.len()).unwrap_or(u64::MAX),
        subtrees: ranges
            .into_iter()
            .zip(hashes)
            .map(|((start, size), hash)| AuditSubtree {
                start,
                size,
                hash: hash.map(hex::encode),
            })
            .collect(),
    }))
}
