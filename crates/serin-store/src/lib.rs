//! Serin's persistence layer: one [`Store`] over SQLite (embedded default) or PostgreSQL.
//!
//! # Architecture invariants
//! - **The store persists as given.** Callers mint times (unix ms), digests and canonical content;
//!   the store never reads a clock and never interprets bundle content or token roles.
//! - **Every mutation is one transaction and appends its audit entry in that transaction.** A
//!   failure leaves nothing behind.
//! - **Writes are serialized.** SQLite: a single writer connection (`BEGIN IMMEDIATE`). PostgreSQL:
//!   each write transaction first takes `pg_advisory_xact_lock(0x53455249,
//!   hashtext(current_schema()))`. So the audit chain never forks and bundle numbers are dense.
//! - **Bundles, audit entries, readiness policies, evidence and eval records are immutable**,
//!   enforced by triggers in both databases.
//! - **Token secrets are never stored**: only `hex(sha256(secret))`, compared in constant time.
//! - **Committed env states are announced.** On PostgreSQL every env-state write also issues
//!   `pg_notify` on the store's channel (per schema) in its transaction, so it is delivered at
//!   commit and never for a rolled-back write; [`Store::listen_env_changes`] hears them.
//! - **Journalled outcomes are applied in id order.** Outcome journal rows are appended under
//!   the write lock (so they commit in id order) and announced on the per-schema outcome
//!   channel; only the leader's epoch may store monitors with a new journal cursor.
//! - Both backends share every query (runtime `sqlx::query*`, `$N` placeholders) and decode only
//!   `i64`, `String` and `Option<i64>`; schemas live in `migrations/{sqlite,postgres}` and must
//!   stay in step. The contract suite in `tests/contract.rs` runs every case on both.
//!
//! # Audit chain
//! Entry `n` has `prev_hash` = hash of entry `n-1` (64 zeros for entry 1) and
//! `hash = hex(sha256(prev_hash ‖ canonical_json({action, actor, at_ms, details, id, subject})))`,
//! where canonical JSON is compact with object keys sorted bytewise and `details` is embedded as
//! the stored text. It can be checked with standard tools:
//! `printf '%s%s' "$prev" "$body" | sha256sum`.
//!
//! The chain proves only that rows agree with each other; anyone who can write the database can
//! recompute it. [`Store::audit_leaves`] hands out the same canonical bodies, in order, as the
//! leaves of the signed Merkle tree in `serin_core::audit`, whose key lives outside the database.

mod audit;
mod dir_lock;
mod error;
mod model;
pub mod scratch;
mod store;
mod token;

#[cfg(feature = "testing")]
pub mod testing;

pub use audit::{GENESIS_HASH, canonical_json};
pub use dir_lock::{DataDirLock, DirLockError, LOCK_FILE_NAME};
pub use error::StoreError;
pub use model::{
    AgentSummary, ApprovalPolicyRow, ApprovalRow, AuditEntry, AuditLeaf, AuditVerification,
    BundleSummary, DrillRow, DrillWrite, EffectCounts, EffectRow, EnvRecord, EnvStateChange,
    EnvSummary, EvalRow, EvidenceRow, IssuedToken, Leadership, MonitorRow, NewAudit, NewBundle,
    NewNotification, NotificationRow, PolicyRow, PutBundle, ReleaseRow, ReleaseWrite, ReplicaRow,
    RollupRow, SdkInstanceRow, StoredBundle, StoredEnvState, TokenInfo,
};
pub use store::fanout::{EnvChange, EnvListener};
pub use store::{
    BOOTSTRAP_TOKEN_NAME, BatchEvidence, DEDUP_CHUNK, JournalListener, JournalMarks, JournalRow,
    LeaderSession, MAX_PAGE, MonitorChanges, Resolved, SQLITE_FILE_NAME, Store, Updated,
};
