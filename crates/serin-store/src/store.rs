//! The `Store`: one set of methods, two backends.
//!
//! Every method body is written once and expanded for both backends by `with_tx!` (writes: one
//! transaction, committed only if the body returns `Ok`) or `with_read!` (reads: straight off the
//! read pool). Queries are runtime `sqlx::query*` with `$N` placeholders, which both SQLite and
//! PostgreSQL understand, and decode only i64, String and Option<i64>.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use subtle::ConstantTimeEq;

use crate::audit::{GENESIS_HASH, HashedFields, canonical_json, entry_body, entry_hash};
use crate::error::StoreError;
use crate::model::{
    AgentSummary, AuditEntry, AuditLeaf, AuditVerification, BundleSummary, EnvStateChange,
    EnvSummary, IssuedToken, MonitorRow, NewAudit, NewBundle, NewNotification, NotificationRow,
    PutBundle, ReleaseRow, ReleaseWrite, RollupRow, StoredBundle, StoredEnvState, TokenInfo,
};
use crate::token;

/// File name of the SQLite database inside the data directory.
pub const SQLITE_FILE_NAME: &str = "serin.db";

/// Largest page any list method returns.
pub const MAX_PAGE: i64 = 1000;

/// How often `put_bundle` retries a transaction that lost a race on a unique constraint.
const PUT_RETRIES: u32 = 5;

/// First key of the PostgreSQL advisory lock that serializes all writes (the second key is
/// `hashtext(current_schema())`, so stores in different schemas do not contend).
const PG_WRITE_LOCK_CLASS: i32 = 0x5345_5249; // "SERI"

/// Request ids per statement when recording or looking up outcome dedup keys. They travel
/// as one JSON array parameter: SQLite looks a numbered parameter up by a linear scan of the
/// statement's parameter names, so a row of `$N`s per id made binding a 10,000-event batch
/// quadratic (a third of all ingestion CPU).
pub const DEDUP_CHUNK: usize = 5000;

/// A JSON array of strings, for the dedup statements' one array parameter.
fn json_array(items: &[&str]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Name and creator of the token made by [`Store::bootstrap_admin`].
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";
const BOOTSTRAP_ACTOR: &str = "bootstrap";
const META_TOKENS_INITIALIZED: &str = "tokens_initialized";

/// Handle on Serin's database. Cheap to clone (pools are reference-counted).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    /// The PostgreSQL channel env-state commits are announced on (None on SQLite, which has
    /// one server per data directory and nobody to tell).
    env_channel: Option<std::sync::Arc<str>>,
    /// The PostgreSQL channel journalled outcome batches are announced on (None on SQLite).
    outcome_channel: Option<std::sync::Arc<str>>,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite {
        /// Exactly one connection: SQLite has one writer, so every mutation queues here and
        /// deferred-transaction upgrade deadlocks cannot happen.
        writer: SqlitePool,
        /// A few connections for reads; WAL lets them run beside the writer.
        reader: SqlitePool,
    },
    Postgres(PgPool),
}

/// Runs `$body` inside one write transaction on whichever backend `$store` uses; `$tx` is bound
/// to `&mut <Backend>Connection`. `?` and `return` inside the body leave the body only: `Ok`
/// commits, `Err` rolls back. Evaluates to `Result<T, StoreError>`.
///
/// On PostgreSQL the transaction first takes the store's advisory write lock, so writes are
/// serialized exactly like on SQLite (audit chain never forks, numbers are decided in order).
macro_rules! with_tx {
    ($store:expr, |$tx:ident| $body:block) => {{
        match &$store.backend {
            Backend::Sqlite { writer, .. } => {
                let mut txn = writer.begin_with("BEGIN IMMEDIATE").await?;
                let out: Result<_, StoreError> = {
                    let $tx: &mut sqlx::SqliteConnection = &mut *txn;
                    async { $body }.await
                };
                match out {
                    Ok(v) => {
                        txn.commit().await?;
                        Ok(v)
                    }
                    Err(e) => {
                        if let Err(rb) = txn.rollback().await {
                            tracing::warn!(error = %rb, "rollback failed");
                        }
                        Err(e)
                    }
                }
            }
            Backend::Postgres(pool) => {
                let mut txn = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
                    .bind(PG_WRITE_LOCK_CLASS)
                    .execute(&mut *txn)
                    .await?;
                let out: Result<_, StoreError> = {
                    let $tx: &mut sqlx::PgConnection = &mut *txn;
                    async { $body }.await
                };
                match out {
                    Ok(v) => {
                        txn.commit().await?;
                        Ok(v)
                    }
                    Err(e) => {
                        if let Err(rb) = txn.rollback().await {
                            tracing::warn!(error = %rb, "rollback failed");
                        }
                        Err(e)
                    }
                }
            }
        }
    }};
}

/// Evaluates `$body` with `$db` bound to the read pool (`&SqlitePool` or `&PgPool`).
macro_rules! with_read {
    ($store:expr, |$db:ident| $body:expr) => {{
        match &$store.backend {
            Backend::Sqlite { reader, .. } => {
                let $db = reader;
                $body
            }
            Backend::Postgres(pool) => {
                let $db = pool;
                $body
            }
        }
    }};
}

/// Appends `$entry: &NewAudit` to the chain inside the current transaction `$tx`; evaluates to
/// the `AuditEntry`. Only valid inside `with_tx!` (writes are serialized there).
macro_rules! append_audit_in {
    ($tx:ident, $entry:expr) => {{
        let e: &NewAudit = $entry;
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
                .fetch_optional(&mut *$tx)
                .await?;
        let (id, prev_hash) = match last {
            Some((id, hash)) => (id + 1, hash),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let details = canonical_json(&e.details);
        let hash = entry_hash(
            &prev_hash,
            &HashedFields {
                id,
                at_ms: e.at_ms,
                actor: &e.actor,
                action: &e.action,
                subject: &e.subject,
                details: &details,
            },
        );
        sqlx::query(
            "INSERT INTO audit (id, at_ms, actor, action, subject, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(e.at_ms)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.subject)
        .bind(&details)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *$tx)
        .await?;
        AuditEntry {
            id,
            at_ms: e.at_ms,
            actor: e.actor.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            details: e.details.clone(),
            prev_hash,
            hash,
        }
    }};
}

/// Upserts guardrail monitors inside a transaction (one row per env, agent and candidate),
/// stamped with a newly raised `monitors_rev` so replicas that do not lead can read just the
/// rows changed since they last looked ([`Store::monitors_changed_since`]).
macro_rules! upsert_monitors_in {
    ($tx:ident, $monitors:expr) => {{
        let monitors: &[MonitorRow] = $monitors;
        if !monitors.is_empty() {
            let rev: i64 = sqlx::query_scalar(
                "UPDATE outcome_journal_cursor SET monitors_rev = monitors_rev + 1 \
                 WHERE id = 1 RETURNING monitors_rev",
            )
            .fetch_one(&mut *$tx)
            .await?;
            for m in monitors {
                sqlx::query(
                    "INSERT INTO guardrail_monitors \
                     (env, agent, candidate, state, created_at_ms, updated_at_ms, rev) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (env, agent, candidate) DO UPDATE \
                     SET state = excluded.state, updated_at_ms = excluded.updated_at_ms, \
                     rev = excluded.rev",
                )
                .bind(&m.env)
                .bind(&m.agent)
                .bind(&m.candidate)
                .bind(&m.state)
                .bind(m.created_at_ms)
                .bind(m.updated_at_ms)
                .bind(rev)
                .execute(&mut *$tx)
                .await?;
            }
        }
    }};
}

/// Refuses the current transaction with `Fenced` unless `$epoch` is still the leadership
/// epoch. Epochs are raised under the same write lock every `with_tx!` holds, so the value read
/// here cannot change before commit.
macro_rules! check_epoch_in {
    ($tx:ident, $epoch:expr) => {{
        let epoch: i64 = $epoch;
        let current: i64 = sqlx::query_scalar("SELECT epoch FROM leadership WHERE id = 1")
            .fetch_one(&mut *$tx)
            .await?;
        if current != epoch {
            return Err(StoreError::Fenced { epoch, current });
        }
    }};
}

/// Appends one journal row (a batch's accepted events as JSON) inside the current write
/// transaction; evaluates to its id. Every `with_tx!` holds the store's write lock until it
/// commits, so appends commit in id order: a reader past id `n` never later finds a row below
/// `n` committing (the order the leader's cursor relies on).
macro_rules! append_journal_in {
    ($tx:ident, $received_ms:expr, $events:expr) => {{
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outcome_journal (received_ms, events) VALUES ($1, $2) RETURNING id",
        )
        .bind($received_ms)
        .bind($events)
        .fetch_one(&mut *$tx)
        .await?;
        id
    }};
}

/// The newest state JSON of `$env` inside the current transaction `$tx` (None for a fresh env);
/// evaluates to `Option<String>`.
macro_rules! latest_env_state_in {
    ($tx:ident, $env:expr) => {{
        let env: &str = $env;
        let current: Option<String> = sqlx::query_scalar(
            "SELECT state FROM env_states WHERE env = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(env)
        .fetch_optional(&mut *$tx)
        .await?;
        current
    }};
}

/// Appends `$next: EnvStateChange` as the newest version of `$env` (global maximum plus one)
/// with its audit entry (details get `env` and `version`) inside `$tx`, and announces it to the
/// other replicas of `$store` (delivered only if the transaction commits); evaluates to the
/// `StoredEnvState`. Only valid inside `with_tx!`.
macro_rules! append_env_state_in {
    ($store:expr, $tx:ident, $env:expr, $at_ms:expr, $actor:expr, $next:expr) => {{
        let (env, at_ms, actor, next): (&str, i64, &str, EnvStateChange) =
            ($env, $at_ms, $actor, $next);
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM env_states")
            .fetch_one(&mut *$tx)
            .await?;
        let version = max.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO env_states (version, env, state, created_at_ms, created_by) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(version)
        .bind(env)
        .bind(&next.state)
        .bind(at_ms)
        .bind(actor)
        .execute(&mut *$tx)
        .await?;
        let mut details = next.details;
        if let serde_json::Value::Object(map) = &mut details {
            map.insert("env".into(), env.into());
            map.insert("version".into(), version.into());
        }
        append_audit_in!(
            $tx,
            &NewAudit {
                at_ms,
                actor: actor.to_owned(),
                action: next.action,
                subject: next.subject,
                details,
            }
        );
        $crate::store::fanout::announce_env_state(
            &mut *$tx,
            $store.env_channel.as_deref(),
            env,
            version,
        )
        .await?;
        StoredEnvState {
            version,
            env: env.to_owned(),
            state: next.state,
            created_at_ms: at_ms,
            created_by: actor.to_owned(),
        }
    }};
}

/// Inserts a new token (and marks the store as having had tokens) inside `$tx`, audits
/// `token.create`; evaluates to the `IssuedToken`.
macro_rules! insert_token_in {
    ($tx:ident, role: $role:expr, name: $name:expr, at_ms: $at:expr, actor: $actor:expr, bootstrap: $boot:expr) => {{
        let (role, name, at_ms, actor): (&str, &str, i64, &str) = ($role, $name, $at, $actor);
        sqlx::query(
            "INSERT INTO store_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(META_TOKENS_INITIALIZED)
        .bind(at_ms.to_string())
        .execute(&mut *$tx)
        .await?;
        let mut minted = None;
        for _ in 0..8 {
            let (id, secret) = token::mint();
            let taken: Option<String> = sqlx::query_scalar("SELECT id FROM tokens WHERE id = $1")
                .bind(&id)
                .fetch_optional(&mut *$tx)
                .await?;
            if taken.is_none() {
                minted = Some((id, secret));
                break;
            }
        }
        let Some((id, secret)) = minted else {
            return Err(StoreError::Conflict("could not allocate a token id".into()));
        };
        sqlx::query(
            "INSERT INTO tokens (id, name, role, secret_sha256, created_at_ms, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(name)
        .bind(role)
        .bind(token::secret_hash(&secret))
        .bind(at_ms)
        .bind(actor)
        .execute(&mut *$tx)
        .await?;
        let details = if $boot {
            serde_json::json!({ "name": name, "role": role, "bootstrap": true })
        } else {
            serde_json::json!({ "name": name, "role": role })
        };
        append_audit_in!(
            $tx,
            &NewAudit {
                at_ms,
                actor: actor.to_owned(),
                action: "token.create".to_owned(),
                subject: id.clone(),
                details,
            }
        );
        IssuedToken {
            token: token::format(&id, &secret),
            info: TokenInfo {
                id,
                name: name.to_owned(),
                role: role.to_owned(),
                created_at_ms: at_ms,
                created_by: actor.to_owned(),
                revoked_at_ms: None,
            },
        }
    }};
}

/// The columns of `StoredBundle`, as a literal usable in `concat!`.
macro_rules! bundle_cols {
    () => {
        "agent, number, digest, content, size_bytes, created_at_ms, created_by"
    };
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    name: String,
    role: String,
    secret_sha256: String,
    created_at_ms: i64,
    created_by: String,
    revoked_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct EnvStateRow {
    version: i64,
    env: String,
    state: String,
    created_at_ms: i64,
    created_by: String,
}

impl EnvStateRow {
    fn into_state(self) -> StoredEnvState {
        StoredEnvState {
            version: self.version,
            env: self.env,
            state: self.state,
            created_at_ms: self.created_at_ms,
            created_by: self.created_by,
        }
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at_ms: i64,
    actor: String,
    action: String,
    subject: String,
    details: String,
    prev_hash: String,
    hash: String,
}

impl AuditRow {
    fn into_entry(self) -> AuditEntry {
        let details =
            serde_json::from_str(&self.details).unwrap_or(serde_json::Value::String(self.details));
        AuditEntry {
            id: self.id,
            at_ms: self.at_ms,
            actor: self.actor,
            action: self.action,
            subject: self.subject,
            details,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// The columns of `ReleaseRow`, as a literal usable in `concat!`.
macro_rules! release_cols {
    () => {
        "id, env, agent, state, active, created_at_ms, updated_at_ms, revision, leader_epoch"
    };
}

/// The columns of `NotificationRow`, as a literal usable in `concat!`.
macro_rules! notification_cols {
    () => {
        "id, release_id, url, payload, created_at_ms, attempts, next_attempt_ms, \
         delivered_at_ms, last_error, failed_at_ms"
    };
}

#[derive(sqlx::FromRow)]
struct ReleaseDbRow {
    id: String,
    env: String,
    agent: String,
    state: String,
    active: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
    revision: i64,
    leader_epoch: Option<i64>,
}

impl ReleaseDbRow {
    fn into_row(self) -> ReleaseRow {
        ReleaseRow {
            id: self.id,
            env: self.env,
            agent: self.agent,
            state: self.state,
            active: self.active != 0,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            revision: self.revision,
            leader_epoch: self.leader_epoch,
        }
    }
}

#[derive(sqlx::FromRow)]
struct NotificationDbRow {
    id: i64,
    release_id: String,
    url: String,
    payload: String,
    created_at_ms: i64,
    attempts: i64,
    next_attempt_ms: i64,
    delivered_at_ms: Option<i64>,
    last_error: Option<String>,
    failed_at_ms: Option<i64>,
}

impl NotificationDbRow {
    fn into_row(self) -> NotificationRow {
        NotificationRow {
            id: self.id,
            release_id: self.release_id,
            url: self.url,
            payload: self.payload,
            created_at_ms: self.created_at_ms,
            attempts: self.attempts,
            next_attempt_ms: self.next_attempt_ms,
            delivered_at_ms: self.delivered_at_ms,
            last_error: self.last_error,
            failed_at_ms: self.failed_at_ms,
        }
    }
}

/// Creates the data directory (0700) and an empty database file (0600) when they do not
/// exist, so the file holding token hashes, bundles and audit is never readable by other
/// users whatever the umask. SQLite creates `-wal` and `-shm` with the database file's mode.
/// Existing ones keep their mode: an operator may have chosen it.
fn create_private(dir: &Path) -> std::io::Result<()> {
    create_private_dir(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(SQLITE_FILE_NAME))
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        Ok(())
    }
}

/// Creates the data directory (0700) when it does not exist; an existing one keeps its mode.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

fn active_release_conflict(env: &str, agent: &str, existing: Option<&str>) -> StoreError {
    let which = existing.map(|id| format!(" ({id})")).unwrap_or_default();
    StoreError::Conflict(format!(
        "agent {agent} in env {env} already has an active release{which}"
    ))
}

/// Turns the unique-index rejection of a release write into the same `Conflict` the pre-check
/// reports (the index is the backstop; writes are serialized, so the pre-check normally wins).
fn release_write_error(e: sqlx::Error, env: &str, agent: &str) -> StoreError {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            active_release_conflict(env, agent, None)
        }
        other => other.into(),
    }
}

fn clamp_limit(limit: i64) -> i64 {
    limit.clamp(1, MAX_PAGE)
}

impl Store {
    /// Opens (creating if needed) the embedded SQLite store in `dir` (file [`SQLITE_FILE_NAME`]),
    /// in WAL mode with `synchronous=FULL` (an acknowledged write is durable), foreign keys on and
    /// a 5 s busy timeout, and applies the embedded migrations.
    pub async fn open_sqlite(dir: &Path) -> Result<Store, StoreError> {
        create_private(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let opts = SqliteConnectOptions::new()
            .filename(dir.join(SQLITE_FILE_NAME))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        tracing::debug!(dir = %dir.display(), "opened sqlite store");
        Ok(Store {
            backend: Backend::Sqlite { writer, reader },
            env_channel: None,
            outcome_channel: None,
        })
    }

    /// Connects to PostgreSQL and applies the embedded migrations (several replicas may do this
    /// at once: sqlx serializes migrations with an advisory lock).
    ///
    /// Everything is created in, and read from, the first schema of the connection's
    /// `search_path` (normally `public`). To use another schema, put it in the URL the libpq way:
    /// `postgres://host/db?options=-c%20search_path%3Dmy_schema` (the schema must exist).
    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("invalid PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let schema = fanout::current_schema(&pool).await?;
        let env_channel = fanout::channel_for_schema(&schema);
        let outcome_channel = journal::channel_for_schema(&schema);
        tracing::debug!(%env_channel, %outcome_channel, "opened postgres store");
        Ok(Store {
            backend: Backend::Postgres(pool),
            env_channel: Some(env_channel.into()),
            outcome_channel: Some(outcome_channel.into()),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Succeeds when the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_read!(self, |db| {
            sqlx::query("SELECT 1").execute(db).await?;
        });
        Ok(())
    }

    /// Closes every connection, waiting for those in use to be returned. Later calls fail with
    /// [`StoreError::Unavailable`].
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    // ----- bundles -------------------------------------------------------------------------

    /// Stores a bundle, content-addressed per agent.
    ///
    /// If `(agent, digest)` already exists, returns it with `created = false` and writes nothing
    /// (no audit row either). Otherwise assigns `number = max(number for agent) + 1` (starting at
    /// 1), inserts it and appends audit `bundle.push`, in one transaction. A transaction that
    /// loses a race on a unique constraint is retried whole, so concurrent pushes of the same
    /// content get the same number and different contents get consecutive numbers.
    pub async fn put_bundle(&self, b: NewBundle) -> Result<PutBundle, StoreError> {
        if b.size_bytes < 0 {
            return Err(StoreError::Invalid(
                "size_bytes must not be negative".into(),
            ));
        }
        if let Some(existing) = self.get_bundle_by_digest(&b.agent, &b.digest).await? {
            return Ok(PutBundle {
                bundle: existing,
                created: false,
            });
        }
        let mut attempt = 0u32;
        loop {
            match self.put_bundle_once(&b).await {
                Err(e) if e.is_unique_violation() => {
                    attempt += 1;
                    if attempt > PUT_RETRIES {
                        return Err(StoreError::Conflict(format!(
                            "bundle number for agent {} kept colliding",
                            b.agent
                        )));
                    }
                    tracing::debug!(agent = %b.agent, attempt, "retrying bundle push after a race");
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    async fn put_bundle_once(&self, b: &NewBundle) -> Result<PutBundle, StoreError> {
        with_tx!(self, |tx| {
            let existing: Option<StoredBundle> = sqlx::query_as(concat!(
                "SELECT ",
                bundle_cols!(),
                " FROM bundles WHERE agent = $1 AND digest = $2"
            ))
            .bind(&b.agent)
            .bind(&b.digest)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(bundle) = existing {
                return Ok(PutBundle {
                    bundle,
                    created: false,
                });
            }
            let number: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM bundles WHERE agent = $1",
            )
            .bind(&b.agent)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO bundles \
                 (agent, number, digest, content, size_bytes, created_at_ms, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&b.agent)
            .bind(number)
            .bind(&b.digest)
            .bind(&b.content)
            .bind(b.size_bytes)
            .bind(b.at_ms)
            .bind(&b.actor)
            .execute(&mut *tx)
            .await?;
            append_audit_in!(
                tx,
                &NewAudit {
                    at_ms: b.at_ms,
                    actor: b.actor.clone(),
                    action: "bundle.push".to_owned(),
                    subject: format!("{}@{}", b.agent, number),
                    details: serde_json::json!({
                        "digest": b.digest,
                        "size_bytes": b.size_bytes,
                    }),
                }
            );
            Ok(PutBundle {
                bundle: StoredBundle {
                    agent: b.agent.clone(),
                    number,
                    digest: b.digest.clone(),
                    content: b.content.clone(),
                    size_bytes: b.size_bytes,
                    created_at_ms: b.at_ms,
                    created_by: b.actor.clone(),
                },
                created: true,
            })
        })
    }

    /// `agent@number`, if it exists.
    pub async fn get_bundle(
        &self,
        agent: &str,
        number: i64,
    ) -> Result<Option<StoredBundle>, StoreError> {
        Ok(with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                bundle_cols!(),
                " FROM bundles WHERE agent = $1 AND number = $2"
            ))
            .bind(agent)
            .bind(number)
            .fetch_optional(db)
            .await?
        }))
    }

    /// The bundle of `agent` with this `sha256:` digest, if any.
    pub async fn get_bundle_by_digest(
        &self,
        agent: &str,
        digest: &str,
    ) -> Result<Option<StoredBundle>, StoreError> {
        Ok(with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                bundle_cols!(),
                " FROM bundles WHERE agent = $1 AND digest = $2"
            ))
            .bind(agent)
            .bind(digest)
            .fetch_optional(db)
            .await?
        }))
    }

    /// Bundles of `agent`, newest first. `before` keeps only numbers `< before` (keyset
    /// pagination: pass the last number of the previous page); `limit` is clamped to 1..=1000.
    pub async fn list_bundles(
        &self,
        agent: &str,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<BundleSummary>, StoreError> {
        Ok(with_read!(self, |db| {
            sqlx::query_as(
                "SELECT agent, number, digest, size_bytes, created_at_ms, created_by \
                 FROM bundles WHERE agent = $1 AND number < $2 \
                 ORDER BY number DESC LIMIT $3",
            )
            .bind(agent)
            .bind(before.unwrap_or(i64::MAX))
            .bind(clamp_limit(limit))
            .fetch_all(db)
            .await?
        }))
    }

    /// The newest bundle of every agent, ordered by agent name.
    pub async fn latest_bundles(&self) -> Result<Vec<StoredBundle>, StoreError> {
        Ok(with_read!(self, |db| {
            sqlx::query_as(
                "SELECT b.agent, b.number, b.digest, b.content, b.size_bytes, b.created_at_ms, \
                        b.created_by \
                 FROM bundles b \
                 JOIN (SELECT agent, MAX(number) AS number FROM bundles GROUP BY agent) m \
                   ON b.agent = m.agent AND b.number = m.number \
                 ORDER BY b.agent",
            )
            .fetch_all(db)
            .await?
        }))
    }

    /// Every agent with at least one bundle, ordered by name.
    pub async fn list_agents(&self) -> Result<Vec<AgentSummary>, StoreError> {
        Ok(with_read!(self, |db| {
            sqlx::query_as(
                "SELECT agent AS name, COUNT(*) AS bundles, MAX(number) AS latest, \
                        MAX(created_at_ms) AS updated_at_ms \
                 FROM bundles GROUP BY agent ORDER BY agent",
            )
            .fetch_all(db)
            .await?
        }))
    }

    // ----- tokens --------------------------------------------------------------------------

    /// Creates an API token with an opaque `role`; audits `token.create`. The returned
    /// [`IssuedToken::token`] is the only copy of the secret.
    pub async fn create_token(
        &self,
        role: &str,
        name: &str,
        at_ms: i64,
        actor: &str,
    ) -> Result<IssuedToken, StoreError> {
        with_tx!(self, |tx| {
            Ok(
                insert_token_in!(tx, role: role, name: name, at_ms: at_ms, actor: actor, bootstrap: false),
            )
        })
    }

    /// Creates an `admin` token named [`BOOTSTRAP_TOKEN_NAME`] only if no token was ever created
    /// in this store, else returns `None`. Race-free: the first transaction to insert the
    /// `tokens_initialized` meta row wins, on every backend and across replicas.
    pub async fn bootstrap_admin(&self, at_ms: i64) -> Result<Option<IssuedToken>, StoreError> {
        with_tx!(self, |tx| {
            let won = sqlx::query(
                "INSERT INTO store_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(META_TOKENS_INITIALIZED)
            .bind(at_ms.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if won == 0 {
                return Ok(None);
            }
            Ok(Some(insert_token_in!(
                tx,
                role: "admin",
                name: BOOTSTRAP_TOKEN_NAME,
                at_ms: at_ms,
                actor: BOOTSTRAP_ACTOR,
                bootstrap: true
            )))
        })
    }

    /// Resolves a presented `serin_<id>_<secret>` token. Malformed, unknown, revoked or wrong
    /// secret → `Ok(None)`. The secret hash is compared in constant time. Read-only.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<TokenInfo>, StoreError> {
        let Some((id, secret)) = token::parse(presented) else {
            return Ok(None);
        };
        let row: Option<TokenRow> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT id, name, role, secret_sha256, created_at_ms, created_by, revoked_at_ms \
                 FROM tokens WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(db)
            .await?
        });
        let Some(row) = row else {
            return Ok(None);
        };
        let presented_hash = token::secret_hash(secret);
        let matches: bool = presented_hash
            .as_bytes()
            .ct_eq(row.secret_sha256.as_bytes())
            .into();
        if !matches || row.revoked_at_ms.is_some() {
            return Ok(None);
        }
        Ok(Some(TokenInfo {
            id: row.id,
            name: row.name,
            role: row.role,
            created_at_ms: row.created_at_ms,
            created_by: row.created_by,
            revoked_at_ms: row.revoked_at_ms,
        }))
    }

    /// Every token, revoked ones included, oldest first. Never includes secrets or hashes.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        Ok(with_read!(self, |db| {
            sqlx::query_as(
                "SELECT id, name, role, created_at_ms, created_by, revoked_at_ms \
                 FROM tokens ORDER BY created_at_ms, id",
            )
            .fetch_all(db)
            .await?
        }))
    }

    /// Revokes a token; audits `token.revoke`. `false` (and nothing written) if the id is
    /// unknown or already revoked.
    pub async fn revoke_token(
        &self,
        id: &str,
        at_ms: i64,
        actor: &str,
    ) -> Result<bool, StoreError> {
        with_tx!(self, |tx| {
            let done = sqlx::query(
                "UPDATE tokens SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
            )
            .bind(id)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done == 0 {
                return Ok(false);
            }
            append_audit_in!(
                tx,
                &NewAudit {
                    at_ms,
                    actor: actor.to_owned(),
                    action: "token.revoke".to_owned(),
                    subject: id.to_owned(),
                    details: serde_json::json!({}),
                }
            );
            Ok(true)
        })
    }

    /// How many tokens were ever revoked. Revocation is final and tokens are never deleted, so
    /// the count only grows: a poller that sees it change knows some token was revoked (on
    /// this replica, another one, or by an offline CLI) with one cheap query.
    pub async fn revoked_token_count(&self) -> Result<i64, StoreError> {
        Ok(with_read!(self, |db| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM tokens WHERE revoked_at_ms IS NOT NULL",
            )
            .fetch_one(db)
            .await?
        }))
    }

    /// Whether a token with this id exists and is not revoked (its secret is not checked:
    /// the caller authenticated it already). Read-only.
    pub async fn token_active(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = with_read!(self, |db| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM tokens WHERE id = $1 AND revoked_at_ms IS NULL",
            )
            .bind(id)
            .fetch_one(db)
            .await?
        });
        Ok(n > 0)
    }

    // ----- audit ---------------------------------------------------------------------------

    // ----- env states -----------------------------------------------------------------------

    /// The newest state of `env`, if anything was ever changed there.
    pub async fn latest_env_state(&self, env: &str) -> Result<Option<StoredEnvState>, StoreError> {
        let row: Option<EnvStateRow> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT version, env, state, created_at_ms, created_by FROM env_states \
                 WHERE env = $1 ORDER BY version DESC LIMIT 1",
            )
            .bind(env)
            .fetch_optional(db)
            .await?
        });
        Ok(row.map(EnvStateRow::into_state))
    }

    /// The state stored as `version` (of whichever env it belongs to).
    pub async fn env_state_at(&self, version: i64) -> Result<Option<StoredEnvState>, StoreError> {
        let row: Option<EnvStateRow> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT version, env, state, created_at_ms, created_by FROM env_states \
                 WHERE version = $1",
            )
            .bind(version)
            .fetch_optional(db)
            .await?
        });
        Ok(row.map(EnvStateRow::into_state))
    }

    /// Every env with its newest version, by name.
    pub async fn list_envs(&self) -> Result<Vec<EnvSummary>, StoreError> {
        let rows: Vec<(String, i64, i64)> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT s.env, s.version, s.created_at_ms FROM env_states s \
                 JOIN (SELECT env, MAX(version) AS v FROM env_states GROUP BY env) m \
                 ON s.env = m.env AND s.version = m.v ORDER BY s.env",
            )
            .fetch_all(db)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(env, version, updated_at_ms)| EnvSummary {
                env,
                version,
                updated_at_ms,
            })
            .collect())
    }

    /// Read-modify-write of an env's state in one serialized transaction: `change` gets the
    /// newest state's JSON (None for a fresh env) and returns the new state with its audit entry,
    /// or its own error, in which case nothing is written. The new version is the global maximum
    /// plus one, so versions only grow, across envs too.
    pub async fn update_env_state<E>(
        &self,
        env: &str,
        at_ms: i64,
        actor: &str,
        change: impl FnOnce(Option<&str>) -> Result<EnvStateChange, E>,
    ) -> Result<Result<StoredEnvState, E>, StoreError> {
        let mut change = Some(change);
        with_tx!(self, |tx| {
            let current = latest_env_state_in!(tx, env);
            let Some(change) = change.take() else {
                return Err(StoreError::Corrupt("env state change ran twice".into()));
            };
            let next = match change(current.as_deref()) {
                Ok(next) => next,
                Err(e) => return Ok(Err(e)),
            };
            Ok(Ok(append_env_state_in!(self, tx, env, at_ms, actor, next)))
        })
    }

    // ----- releases and webhook outbox ----------------------------------------------------

    /// Writes a release and everything it causes in one serialized transaction:
    ///
    /// 0. with `release.epoch`, the current leadership epoch must still be that one
    ///    (`Fenced` otherwise: a newer leader exists);
    /// 1. the release row: inserted when `release.is_new` at revision 1 (`Conflict` if the id
    ///    exists, or if the release is active and the agent already has an active release in
    ///    that env), otherwise its state, active flag, `updated_at_ms` and epoch are updated and
    ///    its revision raised by one, provided it is still at `release.expected_revision`
    ///    (`Stale` otherwise; `Conflict` if no release has this id, env and agent, or if it
    ///    becomes active beside another one);
    /// 2. `env_change` runs against the env's newest state exactly like in
    ///    [`Store::update_env_state`]: `None` leaves the env alone, `Some` appends a new version
    ///    and its audit entry;
    /// 3. every entry of `audits`, in order;
    /// 4. `notifications`, due at `at_ms`.
    ///
    /// Returns the new env state, if any. If `env_change` fails, nothing is written and its
    /// error is returned as `Ok(Err(e))`.
    pub async fn write_release<E>(
        &self,
        release: ReleaseWrite,
        at_ms: i64,
        actor: &str,
        env_change: impl FnOnce(Option<&str>) -> Result<Option<EnvStateChange>, E>,
        audits: Vec<NewAudit>,
        notifications: Vec<NewNotification>,
    ) -> Result<Result<Option<StoredEnvState>, E>, StoreError> {
        let r = &release;
        let mut env_change = Some(env_change);
        let mut refused: Option<E> = None;
        if r.is_new == r.expected_revision.is_some() {
            return Err(StoreError::Invalid(format!(
                "release {}: an insert names no revision and an update names the one it read",
                r.id
            )));
        }
        let written = with_tx!(self, |tx| {
            if let Some(epoch) = r.epoch {
                // Epochs are raised under the same write lock this transaction holds, so the
                // one read here cannot change before commit.
                let current: i64 = sqlx::query_scalar("SELECT epoch FROM leadership WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
                if current != epoch {
                    return Err(StoreError::Fenced { epoch, current });
                }
            }
            let other_active: Option<String> = if r.active {
                sqlx::query_scalar(
                    "SELECT id FROM releases \
                     WHERE env = $1 AND agent = $2 AND active = 1 AND id <> $3",
                )
                .bind(&r.env)
                .bind(&r.agent)
                .bind(&r.id)
                .fetch_optional(&mut *tx)
                .await?
            } else {
                None
            };
            if r.is_new {
                let taken: Option<String> =
                    sqlx::query_scalar("SELECT id FROM releases WHERE id = $1")
                        .bind(&r.id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if taken.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "release {} already exists",
                        r.id
                    )));
                }
            }
            if let Some(existing) = other_active {
                return Err(active_release_conflict(&r.env, &r.agent, Some(&existing)));
            }
            if r.is_new && r.active {
                let drill: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM drills WHERE env = $1 AND agent = $2 AND running = 1",
                )
                .bind(&r.env)
                .bind(&r.agent)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(drill) = drill {
                    return Err(StoreError::Conflict(format!(
                        "{} has a rollback drill running in {} ({drill}); wait for it to finish",
                        r.agent, r.env
                    )));
                }
            }
            if r.is_new {
                sqlx::query(
                    "INSERT INTO releases \
                     (id, env, agent, state, active, created_at_ms, updated_at_ms, watch_due_ms, \
                      revision, leader_epoch) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $7, 1, $8)",
                )
                .bind(&r.id)
                .bind(&r.env)
                .bind(&r.agent)
                .bind(&r.state)
                .bind(i64::from(r.active))
                .bind(at_ms)
                .bind(r.watch_due_ms)
                .bind(r.epoch)
                .execute(&mut *tx)
                .await
                .map_err(|e| release_write_error(e, &r.env, &r.agent))?;
            } else {
                let expected = r.expected_revision.unwrap_or_default();
                let updated = sqlx::query(
                    "UPDATE releases SET state = $4, active = $5, updated_at_ms = $6, \
                     watch_due_ms = $7, leader_epoch = $8, revision = revision + 1 \
                     WHERE id = $1 AND env = $2 AND agent = $3 AND revision = $9",
                )
                .bind(&r.id)
                .bind(&r.env)
                .bind(&r.agent)
                .bind(&r.state)
                .bind(i64::from(r.active))
                .bind(at_ms)
                .bind(r.watch_due_ms)
                .bind(r.epoch)
                .bind(expected)
                .execute(&mut *tx)
                .await
                .map_err(|e| release_write_error(e, &r.env, &r.agent))?
                .rows_affected();
                if updated == 0 {
                    let stored: Option<i64> = sqlx::query_scalar(
                        "SELECT revision FROM releases WHERE id = $1 AND env = $2 AND agent = $3",
                    )
                    .bind(&r.id)
                    .bind(&r.env)
                    .bind(&r.agent)
                    .fetch_optional(&mut *tx)
                    .await?;
                    return Err(match stored {
                        Some(current) => StoreError::Stale {
                            id: r.id.clone(),
                            expected,
                            current,
                        },
                        None => StoreError::Conflict(format!(
                            "no release {} of agent {} in env {}",
                            r.id, r.agent, r.env
                        )),
                    });
                }
            }
            let current = latest_env_state_in!(tx, &r.env);
            let Some(env_change) = env_change.take() else {
                return Err(StoreError::Corrupt("env state change ran twice".into()));
            };
            let stored = match env_change(current.as_deref()) {
                Ok(None) => None,
                Ok(Some(next)) => Some(append_env_state_in!(self, tx, &r.env, at_ms, actor, next)),
                Err(e) => {
                    // Roll back the release row too; the caller gets `e` below.
                    refused = Some(e);
                    return Err(StoreError::Invalid("release write refused".into()));
                }
            };
            for a in &audits {
                append_audit_in!(tx, a);
            }
            for n in &notifications {
                sqlx::query(
                    "INSERT INTO notifications \
                     (release_id, url, payload, created_at_ms, attempts, next_attempt_ms) \
                     VALUES ($1, $2, $3, $4, 0, $4)",
                )
                .bind(&n.release_id)
                .bind(&n.url)
                .bind(&n.payload)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            }
            Ok(stored)
        });
        if let Some(e) = refused {
            return Ok(Err(e));
        }
        written.map(Ok)
    }

    /// The release with this id, if any.
    pub async fn get_release(&self, id: &str) -> Result<Option<ReleaseRow>, StoreError> {
        let row: Option<ReleaseDbRow> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                release_cols!(),
                " FROM releases WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(db)
            .await?
        });
        Ok(row.map(ReleaseDbRow::into_row))
    }

    /// Every active release, in every env, oldest first.
    pub async fn active_releases(&self) -> Result<Vec<ReleaseRow>, StoreError> {
        let rows: Vec<ReleaseDbRow> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                release_cols!(),
                " FROM releases WHERE active = 1 ORDER BY created_at_ms, id"
            ))
            .fetch_all(db)
            .await?
        });
        Ok(rows.into_iter().map(ReleaseDbRow::into_row).collect())
    }

    /// Completed releases whose next post-promotion checkpoint is due at `now_ms`, most
    /// overdue first; `limit` clamped to 1..=1000.
    pub async fn due_watches(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<ReleaseRow>, StoreError> {
        let rows: Vec<ReleaseDbRow> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                release_cols!(),
                " FROM releases WHERE watch_due_ms IS NOT NULL AND watch_due_ms <= $1 \
                 ORDER BY watch_due_ms, id LIMIT $2"
            ))
            .bind(now_ms)
            .bind(clamp_limit(limit))
            .fetch_all(db)
            .await?
        });
        Ok(rows.into_iter().map(ReleaseDbRow::into_row).collect())
    }

    /// The active release of `agent` in `env`, if any.
    pub async fn active_release(
        &self,
        env: &str,
        agent: &str,
    ) -> Result<Option<ReleaseRow>, StoreError> {
        let row: Option<ReleaseDbRow> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                release_cols!(),
                " FROM releases WHERE env = $1 AND agent = $2 AND active = 1"
            ))
            .bind(env)
            .bind(agent)
            .fetch_optional(db)
            .await?
        });
        Ok(row.map(ReleaseDbRow::into_row))
    }

    /// Releases of `agent` in `env`, newest first; `limit` clamped to 1..=1000.
    pub async fn list_releases(
        &self,
        env: &str,
        agent: &str,
        limit: i64,
    ) -> Result<Vec<ReleaseRow>, StoreError> {
        let rows: Vec<ReleaseDbRow> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                release_cols!(),
                " FROM releases WHERE env = $1 AND agent = $2 \
                 ORDER BY created_at_ms DESC, id DESC LIMIT $3"
            ))
            .bind(env)
            .bind(agent)
            .bind(clamp_limit(limit))
            .fetch_all(db)
            .await?
        });
        Ok(rows.into_iter().map(ReleaseDbRow::into_row).collect())
    }

    /// Finished releases of every agent in `env`, newest first; `limit` clamped to 1..=1000.
    pub async fn finished_releases_in_env(
        &self,
        env: &str,
        limit: i64,
    ) -> Result<Vec<ReleaseRow>, StoreError> {
        let rows: Vec<ReleaseDbRow> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                release_cols!(),
                " FROM releases WHERE env = $1 AND active = 0 \
                 ORDER BY created_at_ms DESC, id DESC LIMIT $2"
            ))
            .bind(env)
            .bind(clamp_limit(limit))
            .fetch_all(db)
            .await?
        });
        Ok(rows.into_iter().map(ReleaseDbRow::into_row).collect())
    }

    /// How many releases `agent` has (had) in `env`, active or not.
    pub async fn count_releases(&self, env: &str, agent: &str) -> Result<i64, StoreError> {
        Ok(with_read!(self, |db| {
            sqlx::query_scalar("SELECT COUNT(*) FROM releases WHERE env = $1 AND agent = $2")
                .bind(env)
                .bind(agent)
                .fetch_one(db)
                .await?
        }))
    }

    /// Undelivered notifications with `next_attempt_ms <= now_ms`, oldest (queued first) first;
    /// `limit` clamped to 1..=1000.
    pub async fn due_notifications(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let rows: Vec<NotificationDbRow> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                notification_cols!(),
                " FROM notifications \
                 WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL \
                 AND next_attempt_ms <= $1 \
                 ORDER BY id LIMIT $2"
            ))
            .bind(now_ms)
            .bind(clamp_limit(limit))
            .fetch_all(db)
            .await?
        });
        Ok(rows.into_iter().map(NotificationDbRow::into_row).collect())
    }

    /// Records one delivery attempt of notification `id`: `attempts` grows by one and
    /// `delivered_at_ms`, `last_error` and `next_attempt_ms` are set as given (a notification
    /// with `delivered_at_ms` set is never due again). `Invalid` if the id is unknown.
    pub async fn mark_notification(
        &self,
        id: i64,
        delivered_at_ms: Option<i64>,
        error: Option<&str>,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError> {
        with_tx!(self, |tx| {
            let updated = sqlx::query(
                "UPDATE notifications SET attempts = attempts + 1, delivered_at_ms = $2, \
                 last_error = $3, next_attempt_ms = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(delivered_at_ms)
            .bind(error)
            .bind(next_attempt_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::Invalid(format!("no notification {id}")));
            }
            Ok(())
        })
    }

    /// Records the last failed attempt of notification `id` and gives up on it: `attempts` grows
    /// by one, `last_error` is set and `failed_at_ms` marks it failed, so it is never due again.
    /// Only an undelivered, not yet failed notification can fail; otherwise `Invalid`.
    pub async fn fail_notification(
        &self,
        id: i64,
        error: &str,
        failed_at_ms: i64,
    ) -> Result<(), StoreError> {
        with_tx!(self, |tx| {
            let updated = sqlx::query(
                "UPDATE notifications SET attempts = attempts + 1, last_error = $2, \
                 failed_at_ms = $3 \
                 WHERE id = $1 AND delivered_at_ms IS NULL AND failed_at_ms IS NULL",
            )
            .bind(id)
            .bind(error)
            .bind(failed_at_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::Invalid(format!("no pending notification {id}")));
            }
            Ok(())
        })
    }

    /// Every notification queued for `release_id`, delivered or not, in queue order.
    pub async fn release_notifications(
        &self,
        release_id: &str,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let rows: Vec<NotificationDbRow> = with_read!(self, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                notification_cols!(),
                " FROM notifications WHERE release_id = $1 ORDER BY id"
            ))
            .bind(release_id)
            .fetch_all(db)
            .await?
        });
        Ok(rows.into_iter().map(NotificationDbRow::into_row).collect())
    }

    // ----- guardrail evidence ------------------------------------------------------------

    /// Every persisted monitor (loaded at start so verdicts resume where they were).
    pub async fn load_monitors(&self) -> Result<Vec<MonitorRow>, StoreError> {
        let rows: Vec<(String, String, String, String, i64, i64)> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT env, agent, candidate, state, created_at_ms, updated_at_ms \
                 FROM guardrail_monitors ORDER BY env, agent, candidate",
            )
            .fetch_all(db)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(env, agent, candidate, state, created_at_ms, updated_at_ms)| MonitorRow {
                    env,
                    agent,
                    candidate,
                    state,
                    created_at_ms,
                    updated_at_ms,
                },
            )
            .collect())
    }

    /// One persisted monitor, if stored.
    pub async fn load_monitor(
        &self,
        env: &str,
        agent: &str,
        candidate: &str,
    ) -> Result<Option<MonitorRow>, StoreError> {
        let row: Option<(String, String, String, String, i64, i64)> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT env, agent, candidate, state, created_at_ms, updated_at_ms \
                 FROM guardrail_monitors WHERE env = $1 AND agent = $2 AND candidate = $3",
            )
            .bind(env)
            .bind(agent)
            .bind(candidate)
            .fetch_optional(db)
            .await?
        });
        Ok(row.map(
            |(env, agent, candidate, state, created_at_ms, updated_at_ms)| MonitorRow {
                env,
                agent,
                candidate,
                state,
                created_at_ms,
                updated_at_ms,
            },
        ))
    }

    /// Writes the monitors and minute rollups a batch of outcomes changed, in one
    /// transaction: the batch is acknowledged only once this returns.
    pub async fn save_outcomes(
        &self,
        monitors: &[MonitorRow],
        rollups: &[RollupRow],
    ) -> Result<(), StoreError> {
        with_tx!(self, |tx| {
            upsert_monitors_in!(tx, monitors);
            for r in rollups {
                sqlx::query(
                    "INSERT INTO outcome_rollups (env, agent, bundle, arm, minute_ms, data) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (env, agent, bundle, arm, minute_ms) DO UPDATE \
                     SET data = excluded.data",
                )
                .bind(&r.env)
                .bind(&r.agent)
                .bind(&r.bundle)
                .bind(&r.arm)
                .bind(r.minute_ms)
                .bind(&r.data)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
    }

    /// Acknowledges one batch of outcomes in one transaction:
    ///
    /// 1. request ids seen before `dedup_since_ms` are pruned, so the dedup table holds one
    ///    window of ids at most;
    /// 2. each `(env, request_id)` of `dedup` is recorded at `at_ms`; if any is already there
    ///    (another writer counted it since the caller looked), nothing is written and the
    ///    answer is `Conflict`, so the caller looks again and counts it as a duplicate;
    /// 3. `monitors` are upserted as in [`Store::save_outcomes`];
    /// 4. each rollup is the batch's *delta* for its minute: a stored row of the same key is
    ///    replaced by `merge(stored, delta)`, so rows written before a restart, or by another
    ///    replica, are added to rather than overwritten.
    pub async fn save_outcome_batch(
        &self,
        monitors: &[MonitorRow],
        rollups: &[RollupRow],
        merge: impl FnMut(&RollupRow, &str) -> String,
        dedup: &[(String, String)],
        dedup_since_ms: i64,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.store_outcome_batch(
            BatchEvidence::Monitors {
                rows: monitors,
                epoch: None,
            },
            rollups,
            merge,
            dedup,
            dedup_since_ms,
            at_ms,
        )
        .await
        .map(|_| ())
    }

    /// [`Store::save_outcome_batch`] with the monitor evidence chosen by `evidence`: monitor
    /// rows (refused whole with `Fenced` when written under an epoch that is no longer the
    /// current one), or a journal row appended and announced for the leader to apply. Answers
    /// the journal row's id when one was appended.
    pub async fn store_outcome_batch(
        &self,
        evidence: BatchEvidence<'_>,
        rollups: &[RollupRow],
        mut merge: impl FnMut(&RollupRow, &str) -> String,
        dedup: &[(impl AsRef<str>, impl AsRef<str>)],
        dedup_since_ms: i64,
        at_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let insert_dedup = match self.backend {
            Backend::Sqlite { .. } => {
                // `WHERE true`: SQLite's documented way to keep an upsert's ON CONFLICT
                // from parsing as part of the SELECT.
                "INSERT INTO outcome_dedup (env, request_id, seen_at_ms) \
                 SELECT $1, value, $2 FROM json_each($3) WHERE true \
                 ON CONFLICT (env, request_id) DO NOTHING"
            }
            Backend::Postgres(_) => {
                "INSERT INTO outcome_dedup (env, request_id, seen_at_ms) \
                 SELECT $1, value, $2 FROM json_array_elements_text($3::json) \
                 ON CONFLICT (env, request_id) DO NOTHING"
            }
        };
        let channel = self.outcome_channel.as_deref();
        with_tx!(self, |tx| {
            if let BatchEvidence::Monitors {
                epoch: Some(epoch), ..
            } = evidence
            {
                check_epoch_in!(tx, epoch);
            }
            sqlx::query("DELETE FROM outcome_dedup WHERE seen_at_ms < $1")
                .bind(dedup_since_ms)
                .execute(&mut *tx)
                .await?;
            let mut by_env: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (env, id) in dedup {
                by_env.entry(env.as_ref()).or_default().push(id.as_ref());
            }
            for (env, ids) in &by_env {
                for chunk in ids.chunks(DEDUP_CHUNK) {
                    let inserted = sqlx::query(insert_dedup)
                        .bind(*env)
                        .bind(at_ms)
                        .bind(json_array(chunk)?)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if usize::try_from(inserted).ok() != Some(chunk.len()) {
                        return Err(StoreError::Conflict(
                            "some request ids of this batch were counted meanwhile".into(),
                        ));
                    }
                }
            }
            let journalled = match evidence {
                BatchEvidence::Monitors { rows, .. } => {
                    upsert_monitors_in!(tx, rows);
                    None
                }
                BatchEvidence::Journal { events } => {
                    let id = append_journal_in!(tx, at_ms, events);
                    journal::announce_journal(&mut *tx, channel, id).await?;
                    Some(id)
                }
            };
            for r in rollups {
                let stored: Option<String> = sqlx::query_scalar(
                    "SELECT data FROM outcome_rollups WHERE env = $1 AND agent = $2 \
                     AND bundle = $3 AND arm = $4 AND minute_ms = $5",
                )
                .bind(&r.env)
                .bind(&r.agent)
                .bind(&r.bundle)
                .bind(&r.arm)
                .bind(r.minute_ms)
                .fetch_optional(&mut *tx)
                .await?;
                let data = match stored {
                    Some(data) => merge(&RollupRow { data, ..r.clone() }, &r.data),
                    None => r.data.clone(),
                };
                sqlx::query(
                    "INSERT INTO outcome_rollups (env, agent, bundle, arm, minute_ms, data) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (env, agent, bundle, arm, minute_ms) DO UPDATE \
                     SET data = excluded.data",
                )
                .bind(&r.env)
                .bind(&r.agent)
                .bind(&r.bundle)
                .bind(&r.arm)
                .bind(r.minute_ms)
                .bind(&data)
                .execute(&mut *tx)
                .await?;
            }
            Ok(journalled)
        })
    }

    /// Which of `request_ids` were acknowledged in `env` at or after `since_ms` (one query per
    /// [`DEDUP_CHUNK`] ids).
    pub async fn seen_request_ids(
        &self,
        env: &str,
        request_ids: &[impl AsRef<str>],
        since_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite { .. } => {
                "SELECT request_id FROM outcome_dedup WHERE env = $1 AND seen_at_ms >= $2 \
                 AND request_id IN (SELECT value FROM json_each($3))"
            }
            Backend::Postgres(_) => {
                "SELECT request_id FROM outcome_dedup WHERE env = $1 AND seen_at_ms >= $2 \
                 AND request_id IN (SELECT json_array_elements_text($3::json))"
            }
        };
        let mut seen = Vec::new();
        let ids: Vec<&str> = request_ids.iter().map(AsRef::as_ref).collect();
        for chunk in ids.chunks(DEDUP_CHUNK) {
            let array = json_array(chunk)?;
            let rows: Vec<String> = with_read!(self, |db| {
                sqlx::query_scalar(sql)
                    .bind(env)
                    .bind(since_ms)
                    .bind(&array)
                    .fetch_all(db)
                    .await?
            });
            seen.extend(rows);
        }
        Ok(seen)
    }

    /// Minute rollups of `agent` in `env` from `since_ms` on, oldest first.
    pub async fn rollups(
        &self,
        env: &str,
        agent: &str,
        since_ms: i64,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let rows: Vec<(String, String, String, String, i64, String)> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT env, agent, bundle, arm, minute_ms, data FROM outcome_rollups \
                 WHERE env = $1 AND agent = $2 AND minute_ms >= $3 \
                 ORDER BY minute_ms, bundle, arm",
            )
            .bind(env)
            .bind(agent)
            .bind(since_ms)
            .fetch_all(db)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(env, agent, bundle, arm, minute_ms, data)| RollupRow {
                env,
                agent,
                bundle,
                arm,
                minute_ms,
                data,
            })
            .collect())
    }

    /// Sets the guardrail thresholds of `agent` in `env` (audited `guardrails.set`).
    pub async fn put_guardrail_config(
        &self,
        env: &str,
        agent: &str,
        config: &str,
        at_ms: i64,
        actor: &str,
    ) -> Result<(), StoreError> {
        with_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO guardrail_configs (env, agent, config, updated_at_ms, updated_by) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (env, agent) DO UPDATE SET config = excluded.config, \
                 updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by",
            )
            .bind(env)
            .bind(agent)
            .bind(config)
            .bind(at_ms)
            .bind(actor)
            .execute(&mut *tx)
            .await?;
            let details: serde_json::Value =
                serde_json::from_str(config).unwrap_or(serde_json::Value::String(config.into()));
            append_audit_in!(
                tx,
                &NewAudit {
                    at_ms,
                    actor: actor.to_owned(),
                    action: "guardrails.set".to_owned(),
                    subject: format!("{agent}/{env}"),
                    details: serde_json::json!({ "config": details }),
                }
            );
            Ok(())
        })
    }

    /// The guardrail thresholds set for `agent` in `env`, if any.
    pub async fn guardrail_config(
        &self,
        env: &str,
        agent: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(with_read!(self, |db| {
            sqlx::query_scalar("SELECT config FROM guardrail_configs WHERE env = $1 AND agent = $2")
                .bind(env)
                .bind(agent)
                .fetch_optional(db)
                .await?
        }))
    }

    /// Appends one entry to the hash-chained audit log, for actions that write nothing else.
    pub async fn append_audit(&self, e: NewAudit) -> Result<AuditEntry, StoreError> {
        with_tx!(self, |tx| { Ok(append_audit_in!(tx, &e)) })
    }

    /// Audit entries newest first; `before` keeps only ids `< before`; `limit` clamped to
    /// 1..=1000.
    pub async fn list_audit(
        &self,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT id, at_ms, actor, action, subject, details, prev_hash, hash \
                 FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(before.unwrap_or(i64::MAX))
            .bind(clamp_limit(limit))
            .fetch_all(db)
            .await?
        });
        Ok(rows.into_iter().map(AuditRow::into_entry).collect())
    }

    /// The canonical bytes of the entries with an id above `after_id`, in id order, at most
    /// `limit` (clamped to 1..=1000): the leaves of the audit Merkle tree. Rows are returned as
    /// stored, whatever their ids, so a reader sees exactly what the table holds.
    pub async fn audit_leaves(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<AuditLeaf>, StoreError> {
        let rows: Vec<(i64, i64, String, String, String, String)> = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT id, at_ms, actor, action, subject, details \
                 FROM audit WHERE id > $1 ORDER BY id ASC LIMIT $2",
            )
            .bind(after_id)
            .bind(clamp_limit(limit))
            .fetch_all(db)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, at_ms, actor, action, subject, details)| AuditLeaf {
                id,
                canonical: entry_body(&HashedFields {
                    id,
                    at_ms,
                    actor: &actor,
                    action: &action,
                    subject: &subject,
                    details: &details,
                }),
            })
            .collect())
    }

    /// Recomputes the whole chain from the first entry: ids must be 1, 2, 3, ..., each
    /// `prev_hash` must equal the previous entry's hash (64 zeros for the first), and each hash
    /// must match the entry's content. Reports the first entry that breaks any of these.
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        const BATCH: i64 = 500;
        let mut checked = 0i64;
        let mut last_id = 0i64;
        let mut prev_hash = GENESIS_HASH.to_owned();
        let mut head = None;
        loop {
            let rows: Vec<AuditRow> = with_read!(self, |db| {
                sqlx::query_as(
                    "SELECT id, at_ms, actor, action, subject, details, prev_hash, hash \
                     FROM audit WHERE id > $1 ORDER BY id ASC LIMIT $2",
                )
                .bind(last_id)
                .bind(BATCH)
                .fetch_all(db)
                .await?
            });
            let n = rows.len();
            for row in rows {
                let problem = if row.id != last_id + 1 {
                    Some(format!(
                        "entry {} follows entry {last_id}: entries are missing",
                        row.id
                    ))
                } else if row.prev_hash != prev_hash {
                    Some("prev_hash does not match the previous entry's hash".to_owned())
                } else {
                    let recomputed = entry_hash(
                        &prev_hash,
                        &HashedFields {
                            id: row.id,
                            at_ms: row.at_ms,
                            actor: &row.actor,
                            action: &row.action,
                            subject: &row.subject,
                            details: &row.details,
                        },
                    );
                    (recomputed != row.hash)
                        .then(|| "stored hash does not match the entry's content".to_owned())
                };
                if let Some(reason) = problem {
                    return Ok(AuditVerification {
                        ok: false,
                        entries: checked,
                        head_hash: head,
                        first_broken_id: Some(row.id),
                        reason: Some(reason),
                    });
                }
                checked += 1;
                last_id = row.id;
                prev_hash = row.hash;
                head = Some(prev_hash.clone());
            }
            if i64::try_from(n).unwrap_or(i64::MAX) < BATCH {
                break;
            }
        }
        Ok(AuditVerification {
            ok: true,
            entries: checked,
            head_hash: head,
            first_broken_id: None,
            reason: None,
        })
    }

    // ----- test hooks ----------------------------------------------------------------------

    /// Runs arbitrary SQL (possibly several statements) on the write connection, outside any
    /// store invariant. For tests that tamper with the database; never use in product code.
    #[cfg(feature = "testing")]
    pub async fn execute_unchecked_for_tests(&self, sql: &str) -> Result<u64, StoreError> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        Ok(match &self.backend {
            Backend::Sqlite { writer, .. } => {
                sqlx::raw_sql(sql).execute(writer).await?.rows_affected()
            }
            Backend::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await?.rows_affected(),
        })
    }

    /// Runs one query and returns the first column of the first row, which must be text (use
    /// `CAST(... AS TEXT)` for numbers). For tests only.
    #[cfg(feature = "testing")]
    pub async fn query_text_for_tests(&self, sql: &str) -> Result<Option<String>, StoreError> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        let v: Option<Option<String>> = match &self.backend {
            Backend::Sqlite { writer, .. } => {
                sqlx::query_scalar(sql).fetch_optional(writer).await?
            }
            Backend::Postgres(pool) => sqlx::query_scalar(sql).fetch_optional(pool).await?,
        };
        Ok(v.flatten())
    }
}

mod approvals;
mod effects;
mod envs;
pub(crate) mod fanout;
pub(crate) mod journal;
mod leader;
mod readiness;
mod replicas;
mod sdk_instances;

pub use approvals::Updated;
pub use effects::Resolved;
pub use journal::{BatchEvidence, JournalListener, JournalMarks, JournalRow, MonitorChanges};
pub use leader::LeaderSession;
