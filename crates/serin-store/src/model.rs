//! Plain data passed into and out of the store. Only i64, String, Option and bool, so rows
//! decode identically on SQLite and PostgreSQL.

use std::collections::BTreeMap;

use serde::Serialize;

/// A bundle to persist. The business logic computed the digest, canonical content, size and
/// time; the store keeps them as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBundle {
    /// Agent slug (`support`).
    pub agent: String,
    /// `sha256:<hex>` of the canonical content.
    pub digest: String,
    /// Canonical JSON of the bundle, opaque to the store.
    pub content: String,
    /// Size of the canonical content in bytes.
    pub size_bytes: i64,
    /// When the push happened, unix milliseconds.
    pub at_ms: i64,
    /// Token id of the pusher, or `"local"`.
    pub actor: String,
}

/// One immutable bundle version, `agent@number`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StoredBundle {
    /// Agent slug.
    pub agent: String,
    /// Version number, 1, 2, ... per agent.
    pub number: i64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Canonical JSON, byte-for-byte as pushed.
    pub content: String,
    /// Size of the content in bytes.
    pub size_bytes: i64,
    /// First push time, unix milliseconds.
    pub created_at_ms: i64,
    /// Who pushed it first.
    pub created_by: String,
}

/// A bundle without its content, for listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BundleSummary {
    /// Agent slug.
    pub agent: String,
    /// Version number.
    pub number: i64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Size of the content in bytes.
    pub size_bytes: i64,
    /// First push time, unix milliseconds.
    pub created_at_ms: i64,
    /// Who pushed it first.
    pub created_by: String,
}

/// One agent that has at least one bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AgentSummary {
    /// Agent slug.
    pub name: String,
    /// How many bundles it has.
    pub bundles: i64,
    /// Its highest bundle number.
    pub latest: i64,
    /// Time of its newest bundle, unix milliseconds.
    pub updated_at_ms: i64,
}

/// Result of [`crate::Store::put_bundle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutBundle {
    /// The stored bundle (the pre-existing one when `created` is false).
    pub bundle: StoredBundle,
    /// False when identical content was already stored for this agent.
    pub created: bool,
}

/// An API token as listed; never contains the secret or its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TokenInfo {
    /// 12 lowercase hex characters, the public part of the token.
    pub id: String,
    /// Human label.
    pub name: String,
    /// Role, opaque to the store.
    pub role: String,
    /// Creation time, unix milliseconds.
    pub created_at_ms: i64,
    /// Token id of the creator, `"local"` or `"bootstrap"`.
    pub created_by: String,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
}

/// A freshly created token. `token` is the only copy of the secret: show it once.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// `serin_<id>_<secret>`.
    pub token: String,
    /// What the store keeps about it.
    pub info: TokenInfo,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// An audit event to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAudit {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Token id, `"local"` or `"system"`.
    pub actor: String,
    /// Dotted verb, e.g. `release.start`.
    pub action: String,
    /// What it acted on, e.g. `support@5` or `support/prod`.
    pub subject: String,
    /// Free-form details, stored as canonical JSON.
    pub details: serde_json::Value,
}

/// One entry of the hash-chained audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Dense, monotonic, starting at 1.
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Who did it.
    pub actor: String,
    /// Dotted verb.
    pub action: String,
    /// What it acted on.
    pub subject: String,
    /// Details as stored (a JSON string value if the stored text is not valid JSON).
    pub details: serde_json::Value,
    /// Hash of the previous entry, 64 zeros for the first.
    pub prev_hash: String,
    /// `hex(sha256(prev_hash ‖ canonical JSON of {action, actor, at_ms, details, id, subject}))`.
    pub hash: String,
}

/// One audit entry as the bytes its hashes cover: the leaf of the audit Merkle tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditLeaf {
    pub id: i64,
    /// `canonical_json({action, actor, at_ms, details, id, subject})` with `details` embedded as
    /// stored.
    pub canonical: String,
}

/// Outcome of [`crate::Store::verify_audit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    /// True when every entry links to its predecessor and hashes to its stored hash.
    pub ok: bool,
    /// How many entries were checked.
    pub entries: i64,
    /// Hash of the last entry checked (the chain head when `ok`).
    pub head_hash: Option<String>,
    /// Id of the first entry that does not verify.
    pub first_broken_id: Option<i64>,
    /// Why that entry does not verify.
    pub reason: Option<String>,
}

/// One version of an env's control state (opaque JSON to the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredEnvState {
    /// Global, only-growing version.
    pub version: i64,
    pub env: String,
    /// The state as given by the caller (JSON text).
    pub state: String,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// A new env state computed from the latest one, with the audit entry describing the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvStateChange {
    pub state: String,
    pub action: String,
    pub subject: String,
    pub details: serde_json::Value,
}

/// A registered env: its pin policy, who created it, and its newest state version (`None`
/// until the first routing or flag change there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnvRecord {
    pub name: String,
    /// Strict pin policy: moving model aliases are refused, direct deploys need force.
    pub strict: bool,
    pub created_at_ms: i64,
    pub created_by: String,
    pub version: Option<i64>,
    pub updated_at_ms: Option<i64>,
}

/// An env and its newest version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnvSummary {
    pub env: String,
    pub version: i64,
    pub updated_at_ms: i64,
}

/// The persisted sequential-test state of one canary bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MonitorRow {
    pub env: String,
    pub agent: String,
    /// `agent@N` of the canary bundle.
    pub candidate: String,
    /// Opaque JSON (serin-core's `Monitor`).
    pub state: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One minute of outcomes of one bundle on one arm (opaque JSON aggregate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RollupRow {
    pub env: String,
    pub agent: String,
    pub bundle: String,
    pub arm: String,
    pub minute_ms: i64,
    pub data: String,
}

/// One release of an agent in an env (its state is opaque JSON to the store). At most one
/// release per `(env, agent)` is active at a time, enforced by a unique partial index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReleaseRow {
    pub id: String,
    pub env: String,
    pub agent: String,
    /// The state as given by the caller (JSON text).
    pub state: String,
    pub active: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Raised by one at every write (1 when inserted; 0 for rows older than revisions). A
    /// writer passes the revision it read back as [`ReleaseWrite::expected_revision`].
    pub revision: i64,
    /// The leadership epoch of the controller that last wrote the row; `None` when an
    /// operator's command (or a server older than leadership) wrote it.
    pub leader_epoch: Option<i64>,
}

/// A release row to write with [`crate::Store::write_release`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseWrite {
    pub id: String,
    pub env: String,
    pub agent: String,
    /// Opaque JSON.
    pub state: String,
    pub active: bool,
    /// True: insert a new release (created and updated at `at_ms`). False: update the existing
    /// release with this id, env and agent (its state, active flag and `updated_at_ms`).
    pub is_new: bool,
    /// When the release's next post-promotion checkpoint is due (`None`: no watch, or
    /// it ended). Written as given on every write.
    pub watch_due_ms: Option<i64>,
    /// For an update, the [`ReleaseRow::revision`] the caller decided from: the write is
    /// refused with [`crate::StoreError::Stale`] when the stored row has moved on since, so a
    /// command on one replica and the controller's tick on another can never both apply to one
    /// stored state. Must be `None` for an insert and `Some` for an update.
    pub expected_revision: Option<i64>,
    /// The leadership epoch of a controller write: refused with [`crate::StoreError::Fenced`]
    /// unless it is still the current epoch, checked in the write's transaction, and stored
    /// with the row. `None` for an operator's command, which leadership does not fence.
    pub epoch: Option<i64>,
}

/// Who leads the release controller: the current epoch (0 before anyone ever led), raised by
/// one each time a replica takes the leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Leadership {
    pub epoch: i64,
    /// The replica that took the current epoch (`host:pid`), if any did.
    pub holder: Option<String>,
    pub since_ms: Option<i64>,
}

/// A webhook delivery to queue in the outbox, in the transaction that causes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub release_id: String,
    pub url: String,
    /// The body to deliver, as given.
    pub payload: String,
}

/// One queued webhook delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotificationRow {
    /// Increasing in queue order.
    pub id: i64,
    pub release_id: String,
    pub url: String,
    pub payload: String,
    pub created_at_ms: i64,
    /// Delivery attempts made so far.
    pub attempts: i64,
    /// Not due before this time, unix milliseconds.
    pub next_attempt_ms: i64,
    /// Set once delivered; delivered notifications are never due again.
    pub delivered_at_ms: Option<i64>,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// Set when the notifier gave up (attempts or age exhausted); never due again.
    pub failed_at_ms: Option<i64>,
}

/// One version of a readiness policy (its JSON is opaque to the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyRow {
    pub env: String,
    pub agent: String,
    /// 1, 2, ... per agent and env; the highest is in force.
    pub version: i64,
    pub policy: String,
    pub applied_at_ms: i64,
    pub applied_by: String,
}

/// One evidence record (its JSON is opaque to the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EvidenceRow {
    /// Increasing in recording order.
    pub id: i64,
    pub env: String,
    pub agent: String,
    pub key: String,
    pub record: String,
    pub recorded_at_ms: i64,
    pub recorded_by: String,
}

/// One offline eval result of a bundle (its JSON is opaque to the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EvalRow {
    pub id: i64,
    pub agent: String,
    /// N of `agent@N`.
    pub bundle: i64,
    /// The digest the eval ran on.
    pub digest: String,
    pub set_name: String,
    pub record: String,
    pub recorded_at_ms: i64,
    pub recorded_by: String,
}

/// One rollback drill (its state is opaque JSON owned by the server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DrillRow {
    pub id: String,
    pub env: String,
    pub agent: String,
    pub state: String,
    /// At most one running drill per agent and env.
    pub running: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A drill row to write with [`crate::Store::write_drill`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrillWrite {
    pub id: String,
    pub env: String,
    pub agent: String,
    pub state: String,
    pub running: bool,
    /// True: insert (created and updated at `at_ms`). False: update the drill with this id,
    /// env and agent.
    pub is_new: bool,
}

/// One server process's heartbeat row in the replica registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRow {
    /// Random per process start.
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// The server's version.
    pub version: String,
    pub started_ms: i64,
    pub last_seen_ms: i64,
    pub is_leader: bool,
    /// The epoch it leads under, or the newest it has seen.
    pub epoch: i64,
    /// PostgreSQL only: whether its fan-out listener session is up.
    pub listener_connected: Option<bool>,
    /// Whether every env it serves was published at the store's newest version.
    pub caught_up: bool,
    /// The envs it serves whose published version was behind.
    pub behind: Vec<String>,
    /// The version it publishes for each env it serves.
    pub published: BTreeMap<String, i64>,
    /// SDK instances with an open snapshot stream on it.
    pub sdk_streams: i64,
    /// When it marked itself gone on shutdown.
    pub gone_ms: Option<i64>,
}

/// One SDK instance as a replica publishes it to the shared fleet table (`sdk_instances`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdkInstanceRow {
    pub env: String,
    pub instance: String,
    /// The replica whose registry holds the instance (the one its stream or reports reach).
    pub replica_id: String,
    /// The token the instance belongs to.
    pub token_id: String,
    /// What the SDK calls itself, from its reports.
    pub sdk: Option<String>,
    /// At least one snapshot stream is open on `replica_id`.
    pub connected: bool,
    /// Non-negative; the store refuses a negative one.
    pub applied_version: Option<i64>,
    pub applied_at_ms: Option<i64>,
    /// When `replica_id` last vouched for the row (refreshed while connected).
    pub last_seen_ms: i64,
    /// Where the instance runs, as it reports it.
    pub region: Option<String>,
    pub pool: Option<String>,
}

/// One side-effect ledger record (`effects`), as the store keeps it. `status` is the ledger's
/// lowercase status name; the store checks nothing about transitions (callers decide them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectRow {
    pub key: String,
    pub agent: String,
    pub bundle: i64,
    pub request_id: String,
    pub tool: String,
    pub args_digest: String,
    pub timeout_ms: i64,
    pub status: String,
    pub detail: Option<String>,
    pub created_at_ms: i64,
    pub created_by: String,
    pub resolved_at_ms: Option<i64>,
    /// When an unanswered intent becomes `unknown` (`created_at_ms + timeout_ms`).
    pub deadline_ms: i64,
}

/// How many effects of one agent@bundle are in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EffectCounts {
    pub intent: i64,
    pub committed: i64,
    pub failed: i64,
    pub unknown: i64,
}

impl EffectCounts {
    pub fn total(&self) -> i64 {
        self.intent + self.committed + self.failed + self.unknown
    }
}

impl EffectRow {
    /// Whether `other` records the same call (every field an intent carries).
    pub fn same_intent(&self, other: &EffectRow) -> bool {
        self.key == other.key
            && self.agent == other.agent
            && self.bundle == other.bundle
            && self.request_id == other.request_id
            && self.tool == other.tool
            && self.args_digest == other.args_digest
            && self.timeout_ms == other.timeout_ms
    }
}

/// One approval request (`approvals`), as the store keeps it: the whole request as JSON in
/// `record` (model: `serin_core::approvals::ApprovalRequest`), a few fields beside it to index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRow {
    pub id: String,
    pub env: String,
    pub agent: String,
    pub kind: String,
    pub status: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub record: String,
}

/// One applied version of an env's approval policy (JSON text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalPolicyRow {
    pub env: String,
    pub version: i64,
    pub policy: String,
    pub applied_at_ms: i64,
    pub applied_by: String,
}
