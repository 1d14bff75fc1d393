//! The registry of SDK instances: which SDKs follow each env's snapshot
//! stream, and which snapshot version each one says it serves.
//!
//! The stream tells the server what it *sent*; only the SDK knows what it
//! *applied* (a delta it could not merge, a snapshot that did not compile, a
//! process that froze). A rollback drill must measure the latter, so each SDK
//! reports the version it swapped in (`POST /v1/sdk/applied`), and a stream
//! opened with `Last-Event-ID: V` counts as having applied V (the SDK already
//! serves it, and the server sends nothing until the next change).
//!
//! The registry itself is in memory and per replica: it describes live
//! connections, which a restart ends anyway. On PostgreSQL, where several
//! replicas serve one fleet, each replica also publishes its entries to the
//! store's `sdk_instances` table ([`SdkRegistry::share`]), and the reads that
//! describe the fleet ([`SdkRegistry::list_fleet`],
//! [`SdkRegistry::wait_applied`]) add the other replicas' rows to the local
//! entries. Writes are coalesced: requests only mark an entry changed, and a
//! background flusher ([`SdkRegistry::spawn_flusher`]) writes the changed
//! entries every [`FLUSH_EVERY`] in one transaction, and refreshes the rows
//! of connected entries every [`REFRESH_EVERY`] so the others can tell a live
//! stream from one whose replica died ([`CONNECTED_TTL`]). Entries without an open stream
//! are kept [`RETAIN_AFTER_DISCONNECT`] after they were last seen, so
//! operators can see recently gone SDKs, and are pruned lazily. The number of
//! entries is bounded ([`MAX_INSTANCES`]) so a buggy client minting instance
//! ids cannot grow memory without limit, and so is each token's share
//! ([`MAX_INSTANCES_PER_TOKEN`]), so one token minting ids cannot fill the
//! registry and lock every other SDK out.
//!
//! An instance belongs to the token that first registered it (its stream or
//! its first report): another token's stream or report for the same id is
//! refused, so nobody can confirm a drill on behalf of an SDK it does not
//! run. Revoking a token frees its instance ids at once ([`SdkRegistry::forget_token`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};
use serin_store::{SdkInstanceRow, Store, StoreError};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::clock;
use crate::error::{ApiError, ErrorCode};

/// Default bound on the number of (env, instance) entries.
pub const MAX_INSTANCES: usize = 100_000;

/// Default bound on the entries one token may hold. A fleet larger than this
/// should use several sdk tokens (one per service, say).
pub const MAX_INSTANCES_PER_TOKEN: usize = 1_000;

/// How long an entry without an open stream is kept after it was last seen.
pub const RETAIN_AFTER_DISCONNECT: Duration = Duration::from_secs(10 * 60);

/// Expired entries are swept at most this often (and whenever the registry is
/// full), so a busy registry does not walk every entry on each request.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// How often a sharing replica writes its changed entries to the fleet table. A remote
/// apply reaches a waiting drill within this plus [`REMOTE_POLL`].
pub const FLUSH_EVERY: Duration = Duration::from_millis(150);

/// How often a sharing replica rewrites the rows of its connected entries, so the other
/// replicas know the streams are still open.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// A connected row not refreshed for this long belongs to a replica that stopped (crashed or
/// cut off): its instance counts as disconnected. Six refreshes, so a slow store or a paused
/// flusher does not make a live SDK vanish.
pub const CONNECTED_TTL: Duration = Duration::from_secs(30);

/// How often a drill waiting on SDKs of other replicas reads their rows.
pub const REMOTE_POLL: Duration = Duration::from_millis(50);

/// How often a sharing replica deletes rows older than the retention (every replica does;
/// the delete is idempotent and hits an index).
const PRUNE_ROWS_EVERY: Duration = Duration::from_secs(60);

const CONNECTED_GAUGE: &str = "serin_sdk_instances_connected";

/// Why the registry refused a stream or a report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A new instance, and the registry holds its maximum.
    #[error("the server tracks {limit} SDK instances already; retry later")]
    Full { limit: usize },
    /// A new instance, and its token holds its share of the registry.
    #[error(
        "this token already holds {limit} SDK instance ids on this server (the per-token limit); \
         an id is freed 10 minutes after its last stream closed. Reuse instance ids, or give \
         part of the fleet its own sdk token"
    )]
    OverQuota { limit: usize },
    /// The instance id belongs to another token.
    #[error(
        "instance {instance:?} of env {env:?} belongs to another token; pick another instance id \
         (revoking the other token frees its ids)"
    )]
    NotOwner { env: String, instance: String },
}

impl From<Refused> for ApiError {
    fn from(e: Refused) -> Self {
        let code = match e {
            Refused::Full { .. } | Refused::OverQuota { .. } => ErrorCode::Overloaded,
            Refused::NotOwner { .. } => ErrorCode::Conflict,
        };
        ApiError::new(code, e.to_string())
    }
}

/// One SDK instance of one env, as `GET /v1/envs/{env}/sdks` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SdkInstance {
    pub instance: String,
    /// The id of the token the instance belongs to (the part after `serin_`).
    pub token_id: String,
    /// What the SDK calls itself (`serin-rust/0.1.0`), from its reports.
    pub sdk: Option<String>,
    /// At least one snapshot stream is open.
    pub connected: bool,
    /// Open snapshot streams (more than one while a reconnect overlaps the
    /// old connection's teardown).
    pub streams: u32,
    /// Unix ms when the current connection opened; `None` while disconnected.
    pub connected_since_ms: Option<i64>,
    /// The newest version the stream sent this instance.
    pub last_sent_version: Option<u64>,
    /// The newest version the instance says it serves; never decreases.
    pub applied_version: Option<u64>,
    /// Unix ms when `applied_version` was first reported.
    pub applied_at_ms: Option<i64>,
    /// Unix ms of the last connect, disconnect or report (for an instance
    /// on another replica: when that replica last vouched for it).
    pub last_seen_ms: i64,
    /// The id of the replica the instance's stream and reports reach
    /// (`GET /v1/system/replicas`); absent on a single-node (SQLite) server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// Where the instance says it runs (its stream's `region`/`pool` query, its reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// Where an SDK instance runs, as it reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub region: Option<String>,
    pub pool: Option<String>,
}

/// What [`SdkRegistry::wait_applied`] found. Every list is sorted by instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AppliedWait {
    /// The instances connected to the env when the wait began.
    pub waited_for: Vec<String>,
    /// Those that applied the version (or a later one).
    pub confirmed: Vec<Confirmation>,
    /// Those whose every stream closed before they confirmed.
    pub disconnected: Vec<String>,
    /// Those still connected but behind when the timeout elapsed.
    pub lagging: Vec<Lagging>,
}

/// One instance that applied the awaited version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Confirmation {
    pub instance: String,
    /// From the wait's `since` to the instance's apply (zero if it applied
    /// before `since`). Serialized as `after_ms`, fractional milliseconds, so
    /// sub-millisecond propagation stays visible.
    #[serde(rename = "after_ms", serialize_with = "as_millis_f64")]
    pub after: Duration,
}

/// One instance still behind when the wait timed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lagging {
    pub instance: String,
    /// What it serves, as far as the server knows.
    pub applied_version: Option<u64>,
    /// The replica it is connected to (None on a single-node server).
    pub replica: Option<String>,
}

fn as_millis_f64<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// The registry; one per server (`AppState::sdks`).
#[derive(Debug)]
pub struct SdkRegistry {
    inner: Mutex<Inner>,
    /// Bumped on every apply and every disconnect; waiters re-check on it.
    changed: watch::Sender<u64>,
    max_instances: usize,
    max_per_token: usize,
    retain: Duration,
    /// Set on PostgreSQL: where entries are published, and as whom.
    fleet: std::sync::OnceLock<Fleet>,
}

#[derive(Debug)]
struct Fleet {
    store: Store,
    replica_id: String,
}

#[derive(Debug, Default)]
struct Inner {
    /// (env, instance) of the entries changed since the last flush; kept only
    /// while sharing.
    dirty: BTreeSet<(String, String)>,
    /// env → instance → entry; the inner map is ordered so listings are sorted.
    envs: HashMap<String, BTreeMap<String, Entry>>,
    len: usize,
    /// token id → entries it holds; keys are authenticated token ids, so this
    /// grows only with tokens an admin minted.
    per_token: HashMap<String, usize>,
    last_prune: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    /// The token that registered the instance; only it may report for it.
    owner: String,
    sdk: Option<String>,
    streams: u32,
    connected_since_ms: Option<i64>,
    last_sent_version: Option<u64>,
    applied_version: Option<u64>,
    applied_at_ms: Option<i64>,
    /// The precise moment of the apply, for drill timings.
    applied_at: Option<Instant>,
    last_seen_ms: i64,
    /// Monotonic twin of `last_seen_ms`; an entry without streams expires
    /// `retain` after it.
    seen: Instant,
    place: Place,
}

impl Entry {
    fn new(owner: &str, now: Instant, now_ms: i64) -> Entry {
        Entry {
            owner: owner.to_owned(),
            sdk: None,
            streams: 0,
            connected_since_ms: None,
            last_sent_version: None,
            applied_version: None,
            applied_at_ms: None,
            applied_at: None,
            last_seen_ms: now_ms,
            seen: now,
            place: Place::default(),
        }
    }

    fn touch(&mut self, now: Instant, now_ms: i64) {
        self.seen = now;
        self.last_seen_ms = now_ms;
    }

    /// Records `version` as applied unless a version at least as new was;
    /// returns whether anything changed.
    fn apply(&mut self, version: u64, now: Instant, now_ms: i64) -> bool {
        if self.applied_version.is_some_and(|v| v >= version) {
            return false;
        }
        self.applied_version = Some(version);
        self.applied_at_ms = Some(now_ms);
        self.applied_at = Some(now);
        true
    }

    fn expired(&self, now: Instant, retain: Duration) -> bool {
        self.streams == 0 && now.saturating_duration_since(self.seen) >= retain
    }

    fn view(&self, instance: &str, replica: Option<&String>) -> SdkInstance {
        SdkInstance {
            instance: instance.to_owned(),
            token_id: self.owner.clone(),
            sdk: self.sdk.clone(),
            connected: self.streams > 0,
            streams: self.streams,
            connected_since_ms: self.connected_since_ms,
            last_sent_version: self.last_sent_version,
            applied_version: self.applied_version,
            applied_at_ms: self.applied_at_ms,
            last_seen_ms: self.last_seen_ms,
            replica: replica.cloned(),
            region: self.place.region.clone(),
            pool: self.place.pool.clone(),
        }
    }
}

impl Inner {
    fn prune(&mut self, now: Instant, retain: Duration) {
        let mut removed: Vec<String> = Vec::new();
        self.envs.retain(|_, instances| {
            instances.retain(|_, e| {
                let expired = e.expired(now, retain);
                if expired {
                    removed.push(e.owner.clone());
                }
                !expired
            });
            !instances.is_empty()
        });
        for owner in &removed {
            self.release_slot(owner);
        }
        self.last_prune = Some(now);
    }

    fn release_slot(&mut self, owner: &str) {
        self.len = self.len.saturating_sub(1);
        if let Some(n) = self.per_token.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_token.remove(owner);
            }
        }
    }

    fn prune_if_due(&mut self, now: Instant, retain: Duration) {
        let due = self
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= PRUNE_EVERY);
        if due {
            self.prune(now, retain);
        }
    }

    fn held_by(&self, owner: &str) -> usize {
        self.per_token.get(owner).copied().unwrap_or(0)
    }

    /// The entry of (env, instance), created for `owner` if there is room;
    /// refused if another token holds it.
    fn entry(
        &mut self,
        key: &Key<'_>,
        now: Instant,
        now_ms: i64,
        limits: &Limits,
    ) -> Result<&mut Entry, Refused> {
        self.prune_if_due(now, limits.retain);
        let mut holder = self
            .envs
            .get(key.env)
            .and_then(|m| m.get(key.instance))
            .map(|e| (e.owner != key.owner, e.expired(now, limits.retain)));
        if let Some((true, true)) = holder {
            // Another token's id, but gone past the retention: sweep it so
            // the id can be taken.
            self.prune(now, limits.retain);
            holder = None;
        }
        match holder {
            Some((true, _)) => {
                return Err(Refused::NotOwner {
                    env: key.env.to_owned(),
                    instance: key.instance.to_owned(),
                });
            }
            Some((false, _)) => {}
            None => {
                if self.len >= limits.max || self.held_by(key.owner) >= limits.per_token {
                    self.prune(now, limits.retain);
                }
                if self.held_by(key.owner) >= limits.per_token {
                    return Err(Refused::OverQuota {
                        limit: limits.per_token,
                    });
                }
                if self.len >= limits.max {
                    return Err(Refused::Full { limit: limits.max });
                }
                self.len = self.len.saturating_add(1);
                let held = self.per_token.entry(key.owner.to_owned()).or_default();
                *held = held.saturating_add(1);
            }
        }
        Ok(self
            .envs
            .entry(key.env.to_owned())
            .or_default()
            .entry(key.instance.to_owned())
            .or_insert_with(|| Entry::new(key.owner, now, now_ms)))
    }

    /// The entry of (env, instance) if `owner` holds it.
    fn owned(&mut self, env: &str, instance: &str, owner: &str) -> Option<&mut Entry> {
        self.envs
            .get_mut(env)
            .and_then(|m| m.get_mut(instance))
            .filter(|e| e.owner == owner)
    }
}

fn ttl_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether another replica's row describes an open stream: it says so, and
/// its replica refreshed it within [`CONNECTED_TTL`].
fn row_connected(row: &SdkInstanceRow, now_ms: i64) -> bool {
    row.connected && row.last_seen_ms >= now_ms.saturating_sub(ttl_ms(CONNECTED_TTL))
}

/// Who asks for which instance of which env.
struct Key<'a> {
    env: &'a str,
    instance: &'a str,
    owner: &'a str,
}

struct Limits {
    max: usize,
    per_token: usize,
    retain: Duration,
}

impl Default for SdkRegistry {
    fn default() -> Self {
        SdkRegistry::new()
    }
}

impl SdkRegistry {
    /// A registry with the default bounds and retention.
    pub fn new() -> SdkRegistry {
        SdkRegistry::with_limits(
            MAX_INSTANCES,
            MAX_INSTANCES_PER_TOKEN,
            RETAIN_AFTER_DISCONNECT,
        )
    }

    /// A registry holding at most `max_instances` entries, at most
    /// `max_per_token` of them for any one token, keeping each stream-less
    /// one `retain` after it was last seen.
    pub fn with_limits(
        max_instances: usize,
        max_per_token: usize,
        retain: Duration,
    ) -> SdkRegistry {
        SdkRegistry {
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
            max_instances,
            max_per_token,
            retain,
            fleet: std::sync::OnceLock::new(),
        }
    }

    /// Publishes this registry to the fleet table of `store` as replica
    /// `replica_id` from now on, and reads the other replicas' rows there
    /// (PostgreSQL). Only the first call counts.
    pub fn share(&self, store: Store, replica_id: String) {
        let _ = self.fleet.set(Fleet { store, replica_id });
    }

    /// This replica's id when sharing.
    fn me(&self) -> Option<String> {
        self.fleet.get().map(|f| f.replica_id.clone())
    }

    fn mark(&self, inner: &mut Inner, env: &str, instance: &str) {
        if self.fleet.get().is_some() {
            inner.dirty.insert((env.to_owned(), instance.to_owned()));
        }
    }

    /// Writes the entries changed since the last flush to the fleet table in
    /// one transaction (on failure they stay marked for the next flush), then
    /// with `refresh` marks every connected row of this replica seen now (one
    /// statement, however large the fleet). Answers the rows written. A
    /// no-op while not sharing.
    pub async fn flush(&self, refresh: bool) -> Result<u64, StoreError> {
        let Some(fleet) = self.fleet.get() else {
            return Ok(0);
        };
        let now_ms = clock::now_ms();
        let (keys, rows) = {
            let mut inner = self.lock();
            let keys = std::mem::take(&mut inner.dirty);
            let rows: Vec<SdkInstanceRow> = keys
                .iter()
                .filter_map(|(env, id)| {
                    let e = inner.envs.get(env)?.get(id)?;
                    Some(SdkInstanceRow {
                        env: env.clone(),
                        instance: id.clone(),
                        replica_id: fleet.replica_id.clone(),
                        token_id: e.owner.clone(),
                        sdk: e.sdk.clone(),
                        connected: e.streams > 0,
                        applied_version: e
                            .applied_version
                            .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
                        applied_at_ms: e.applied_at_ms,
                        region: e.place.region.clone(),
                        pool: e.place.pool.clone(),
                        // A connected row is vouched for now; a closed one ages
                        // from its last sighting, like the local entry.
                        last_seen_ms: if e.streams > 0 {
                            now_ms
                        } else {
                            e.last_seen_ms
                        },
                    })
                })
                .collect();
            (keys, rows)
        };
        let stale = now_ms.saturating_sub(ttl_ms(CONNECTED_TTL));
        if let Err(e) = fleet.store.publish_sdk_instances(&rows, stale).await {
            self.lock().dirty.extend(keys);
            return Err(e);
        }
        let mut written = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        if refresh {
            // After the changed rows, so a stream closed before this flush
            // is already written closed and is not vouched for again.
            let refreshed = fleet
                .store
                .refresh_sdk_instances(&fleet.replica_id, now_ms)
                .await?;
            written = written.saturating_add(refreshed);
        }
        Ok(written)
    }

    /// Flushes every [`FLUSH_EVERY`], refreshes connected rows every
    /// [`REFRESH_EVERY`] and prunes rows past the retention now and then,
    /// until aborted. `None` while not sharing.
    pub fn spawn_flusher(self: Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.fleet.get()?;
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut refresh_at = Instant::now();
            let mut prune_at = Instant::now();
            loop {
                tick.tick().await;
                let now = Instant::now();
                let refresh = now >= refresh_at;
                if refresh {
                    refresh_at = now + REFRESH_EVERY;
                }
                if let Err(e) = self.flush(refresh).await {
                    tracing::warn!(error = %e, "could not publish SDK instances to the fleet table; retrying");
                }
                if now >= prune_at {
                    prune_at = now + PRUNE_ROWS_EVERY;
                    if let Some(fleet) = self.fleet.get() {
                        let cutoff = clock::now_ms().saturating_sub(ttl_ms(self.retain));
                        match fleet.store.prune_sdk_instances(cutoff).await {
                            Ok(0) => {}
                            Ok(n) => tracing::debug!(rows = n, "pruned gone SDK instances"),
                            Err(e) => tracing::debug!(error = %e, "could not prune SDK instances"),
                        }
                    }
                }
            }
        }))
    }

    /// Refuses `owner` an instance id that another token holds on another
    /// replica (its row seen within the retention). Cheap: one primary-key
    /// read, and none when the id is known here already (the local check
    /// then decides) or while not sharing.
    pub async fn check_fleet_owner(
        &self,
        env: &str,
        instance: &str,
        owner: &str,
    ) -> Result<(), crate::error::ApiError> {
        let Some(fleet) = self.fleet.get() else {
            return Ok(());
        };
        let known = self
            .lock()
            .envs
            .get(env)
            .is_some_and(|m| m.contains_key(instance));
        if known {
            return Ok(());
        }
        let Some(row) = fleet.store.sdk_instance(env, instance).await? else {
            return Ok(());
        };
        let fresh = row.last_seen_ms >= clock::now_ms().saturating_sub(ttl_ms(self.retain));
        if fresh && row.replica_id != fleet.replica_id && row.token_id != owner {
            return Err(Refused::NotOwner {
                env: env.to_owned(),
                instance: instance.to_owned(),
            }
            .into());
        }
        Ok(())
    }

    /// Every instance of `env` seen within the retention on any replica:
    /// this registry's entries, plus (while sharing) the other replicas'
    /// rows, sorted by instance. Where both know an instance, this
    /// replica's entry wins.
    pub async fn list_fleet(&self, env: &str) -> Result<Vec<SdkInstance>, StoreError> {
        let mut local = self.list(env);
        let Some(fleet) = self.fleet.get() else {
            return Ok(local);
        };
        let now_ms = clock::now_ms();
        let rows = fleet
            .store
            .fleet_sdk_instances(env, now_ms.saturating_sub(ttl_ms(self.retain)))
            .await?;
        let known: BTreeSet<String> = local.iter().map(|v| v.instance.clone()).collect();
        for row in rows {
            if row.replica_id == fleet.replica_id || known.contains(&row.instance) {
                continue;
            }
            let connected = row_connected(&row, now_ms);
            local.push(SdkInstance {
                instance: row.instance,
                token_id: row.token_id,
                sdk: row.sdk,
                connected,
                streams: u32::from(connected),
                connected_since_ms: None,
                last_sent_version: None,
                applied_version: row.applied_version.and_then(|v| u64::try_from(v).ok()),
                applied_at_ms: row.applied_at_ms,
                last_seen_ms: row.last_seen_ms,
                replica: Some(row.replica_id),
                region: row.region,
                pool: row.pool,
            });
        }
        local.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(local)
    }

    /// The other replicas' rows of `env` seen within the retention, by
    /// instance; `None` while not sharing or when the read failed (logged).
    async fn remote_rows(&self, env: &str) -> Option<BTreeMap<String, SdkInstanceRow>> {
        let fleet = self.fleet.get()?;
        let now_ms = clock::now_ms();
        match fleet
            .store
            .fleet_sdk_instances(env, now_ms.saturating_sub(ttl_ms(self.retain)))
            .await
        {
            Ok(rows) => Some(
                rows.into_iter()
                    .filter(|r| r.replica_id != fleet.replica_id)
                    .map(|r| (r.instance.clone(), r))
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(env, error = %e, "could not read the other replicas' SDK instances");
                None
            }
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max: self.max_instances,
            per_token: self.max_per_token,
            retain: self.retain,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A snapshot stream of `instance` opened with token `owner`. `applied`
    /// is the version the SDK holds according to its `Last-Event-ID`, when
    /// the caller checked it is the env's current one (so the server sends
    /// nothing and the SDK has nothing to report). The returned guard closes
    /// the stream in the registry when dropped.
    pub fn connect(
        self: &Arc<Self>,
        env: &str,
        instance: &str,
        owner: &str,
        applied: Option<u64>,
    ) -> Result<StreamGuard, Refused> {
        let (now, now_ms) = (Instant::now(), clock::now_ms());
        let key = Key {
            env,
            instance,
            owner,
        };
        let applied = {
            let mut inner = self.lock();
            let entry = inner.entry(&key, now, now_ms, &self.limits())?;
            if entry.streams == 0 {
                entry.connected_since_ms = Some(now_ms);
                metrics::gauge!(CONNECTED_GAUGE).increment(1.0);
            }
            entry.streams = entry.streams.saturating_add(1);
            entry.touch(now, now_ms);
            let applied = applied
                .filter(|v| *v >= 1)
                .is_some_and(|v| entry.apply(v, now, now_ms));
            self.mark(&mut inner, env, instance);
            applied
        };
        if applied {
            self.bump();
        }
        Ok(StreamGuard {
            registry: self.clone(),
            env: env.to_owned(),
            instance: instance.to_owned(),
            owner: owner.to_owned(),
        })
    }

    fn disconnect(&self, env: &str, instance: &str, owner: &str) {
        let (now, now_ms) = (Instant::now(), clock::now_ms());
        {
            let mut inner = self.lock();
            // Not found when the token was revoked meanwhile (its entries are
            // gone, and the id may belong to another token by now).
            let Some(entry) = inner.owned(env, instance, owner) else {
                return;
            };
            entry.streams = entry.streams.saturating_sub(1);
            if entry.streams == 0 {
                entry.connected_since_ms = None;
                metrics::gauge!(CONNECTED_GAUGE).decrement(1.0);
            }
            entry.touch(now, now_ms);
            self.mark(&mut inner, env, instance);
        }
        self.bump();
    }

    fn sent(&self, env: &str, instance: &str, owner: &str, version: u64) {
        let mut inner = self.lock();
        if let Some(entry) = inner.owned(env, instance, owner) {
            entry.last_sent_version =
                Some(entry.last_sent_version.map_or(version, |v| v.max(version)));
        }
    }

    /// An SDK reports, with token `owner`, the version it swapped in (the
    /// caller checked the version is one of the env's). Versions only grow,
    /// so an older report (a delayed request) leaves `applied_version` as it
    /// is. An instance that never opened a stream is recorded all the same,
    /// and belongs to `owner` from then on.
    pub fn report_applied(
        &self,
        env: &str,
        instance: &str,
        owner: &str,
        version: u64,
        sdk: Option<String>,
    ) -> Result<(), Refused> {
        let (now, now_ms) = (Instant::now(), clock::now_ms());
        let key = Key {
            env,
            instance,
            owner,
        };
        let applied = {
            let mut inner = self.lock();
            let entry = inner.entry(&key, now, now_ms, &self.limits())?;
            entry.touch(now, now_ms);
            if sdk.is_some() {
                entry.sdk = sdk;
            }
            let applied = entry.apply(version, now, now_ms);
            self.mark(&mut inner, env, instance);
            applied
        };
        if applied {
            self.bump();
        }
        Ok(())
    }

    /// Records where `instance` (of `owner`) runs; a `None` part keeps what it said before.
    /// Called after [`SdkRegistry::connect`] or [`SdkRegistry::report_applied`] registered it.
    pub fn set_place(&self, env: &str, instance: &str, owner: &str, place: Place) {
        if place == Place::default() {
            return;
        }
        let mut inner = self.lock();
        let Some(entry) = inner.owned(env, instance, owner) else {
            return;
        };
        let mut next = entry.place.clone();
        if place.region.is_some() {
            next.region = place.region;
        }
        if place.pool.is_some() {
            next.pool = place.pool;
        }
        if next != entry.place {
            entry.place = next;
            self.mark(&mut inner, env, instance);
        }
    }

    /// Drops every instance `owner` holds (its token was revoked): their ids
    /// are free for another token at once, and a drill stops waiting on them.
    /// Returns how many were dropped.
    pub fn forget_token(&self, owner: &str) -> usize {
        let removed = {
            let mut inner = self.lock();
            let mut removed = 0usize;
            let mut connected = 0usize;
            inner.envs.retain(|_, instances| {
                instances.retain(|_, e| {
                    let theirs = e.owner == owner;
                    if theirs {
                        removed = removed.saturating_add(1);
                        if e.streams > 0 {
                            connected = connected.saturating_add(1);
                        }
                    }
                    !theirs
                });
                !instances.is_empty()
            });
            inner.len = inner.len.saturating_sub(removed);
            inner.per_token.remove(owner);
            if connected > 0 {
                metrics::gauge!(CONNECTED_GAUGE).decrement(connected as f64);
            }
            removed
        };
        // Every replica sees the revocation (and runs this); the delete is
        // idempotent. Entries it had marked are gone, so no flush writes
        // them back.
        if let Some(fleet) = self.fleet.get()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (store, owner) = (fleet.store.clone(), owner.to_owned());
            rt.spawn(async move {
                if let Err(e) = store.forget_sdk_token(&owner).await {
                    tracing::warn!(token = owner, error = %e, "could not delete a revoked token's SDK instances");
                }
            });
        }
        if removed > 0 {
            self.bump();
        }
        removed
    }

    /// The tokens holding at least one instance.
    pub fn token_ids(&self) -> Vec<String> {
        self.lock().per_token.keys().cloned().collect()
    }

    /// Every instance of `env` seen within the retention, sorted by instance.
    pub fn list(&self, env: &str) -> Vec<SdkInstance> {
        let now = Instant::now();
        let me = self.me();
        let mut inner = self.lock();
        inner.prune_if_due(now, self.retain);
        inner
            .envs
            .get(env)
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| !e.expired(now, self.retain))
                    .map(|(id, e)| e.view(id, me.as_ref()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The instances with an open stream on `env`, sorted.
    pub fn connected(&self, env: &str) -> Vec<String> {
        self.lock()
            .envs
            .get(env)
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| e.streams > 0)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Instances with an open stream, across every env.
    pub fn connected_count(&self) -> usize {
        self.lock()
            .envs
            .values()
            .flat_map(BTreeMap::values)
            .filter(|e| e.streams > 0)
            .count()
    }

    /// Waits until every instance connected to `env` at call time has applied
    /// `version` (or later), has disconnected, or `timeout` elapsed (counted
    /// from the call). Each confirmation's `after` is measured from `since`
    /// (typically the moment the change was published), saturating at zero.
    ///
    /// Local applies and disconnects wake the wait at once. While sharing, the
    /// instances connected to other replicas count too: their rows are read
    /// every [`REMOTE_POLL`] while any of them is pending, their `after` comes
    /// from the wall clock (millisecond precision, and subject to clock skew
    /// between hosts), and a laggard is reported with its replica.
    pub async fn wait_applied(
        &self,
        env: &str,
        version: u64,
        since: Instant,
        timeout: Duration,
    ) -> AppliedWait {
        let deadline = tokio::time::Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
        let since_ms = clock::now_ms()
            .saturating_sub(i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX));
        let me = self.me();
        let wanted = i64::try_from(version).unwrap_or(i64::MAX);
        // Subscribe before the first look, so no change can slip between.
        let mut rx = self.changed.subscribe();
        let mut pending: BTreeMap<String, Option<String>> = self
            .connected(env)
            .into_iter()
            .map(|id| (id, me.clone()))
            .collect();
        let mut remote = self.remote_rows(env).await.unwrap_or_default();
        let now_ms = clock::now_ms();
        for (id, row) in &remote {
            if row_connected(row, now_ms) && !pending.contains_key(id) {
                pending.insert(id.clone(), Some(row.replica_id.clone()));
            }
        }
        let waited_for: Vec<String> = pending.keys().cloned().collect();
        let mut confirmed = Vec::new();
        let mut disconnected = Vec::new();
        loop {
            rx.borrow_and_update();
            let now_ms = clock::now_ms();
            {
                let inner = self.lock();
                let entries = inner.envs.get(env);
                pending.retain(|id, replica| {
                    let local = entries.and_then(|m| m.get(id));
                    let row = remote.get(id);
                    if let Some(e) =
                        local.filter(|e| e.applied_version.is_some_and(|v| v >= version))
                    {
                        let after = e
                            .applied_at
                            .map_or(Duration::ZERO, |t| t.saturating_duration_since(since));
                        confirmed.push(Confirmation {
                            instance: id.clone(),
                            after,
                        });
                        return false;
                    }
                    if let Some(r) = row.filter(|r| r.applied_version.is_some_and(|v| v >= wanted))
                    {
                        let after_ms = r.applied_at_ms.map_or(0, |t| t.saturating_sub(since_ms));
                        confirmed.push(Confirmation {
                            instance: id.clone(),
                            after: Duration::from_millis(u64::try_from(after_ms).unwrap_or(0)),
                        });
                        return false;
                    }
                    if local.is_some_and(|e| e.streams > 0) {
                        *replica = me.clone();
                        return true;
                    }
                    if let Some(r) = row.filter(|r| row_connected(r, now_ms)) {
                        *replica = Some(r.replica_id.clone());
                        return true;
                    }
                    disconnected.push(id.clone());
                    false
                });
            }
            if pending.is_empty() {
                break;
            }
            let remote_pending = pending.values().any(|r| r.is_some() && *r != me);
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(REMOTE_POLL), if remote_pending => {
                    // Keep the last rows when a read fails: a store hiccup
                    // must not turn pending instances into disconnected ones.
                    if let Some(rows) = self.remote_rows(env).await {
                        remote = rows;
                    }
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let lagging = {
            let inner = self.lock();
            let entries = inner.envs.get(env);
            pending
                .into_iter()
                .map(|(id, replica)| {
                    let applied_version = if replica.is_some() && replica != me {
                        remote
                            .get(&id)
                            .and_then(|r| r.applied_version)
                            .and_then(|v| u64::try_from(v).ok())
                    } else {
                        entries
                            .and_then(|m| m.get(&id))
                            .and_then(|e| e.applied_version)
                    };
                    Lagging {
                        applied_version,
                        instance: id,
                        replica,
                    }
                })
                .collect()
        };
        confirmed.sort_by(|a, b| a.instance.cmp(&b.instance));
        disconnected.sort();
        AppliedWait {
            waited_for,
            confirmed,
            disconnected,
            lagging,
        }
    }
}

/// One open snapshot stream of one instance; closes it in the registry when
/// dropped (the client went away, or the server is shutting down).
#[derive(Debug)]
pub struct StreamGuard {
    registry: Arc<SdkRegistry>,
    env: String,
    instance: String,
    owner: String,
}

impl StreamGuard {
    /// The stream sent `version` to this instance.
    pub fn sent(&self, version: u64) {
        self.registry
            .sent(&self.env, &self.instance, &self.owner, version);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.registry
            .disconnect(&self.env, &self.instance, &self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(600);

    fn registry() -> Arc<SdkRegistry> {
        Arc::new(SdkRegistry::new())
    }

    #[tokio::test]
    async fn wait_returns_at_once_when_every_connected_instance_has_applied() {
        let r = registry();
        let since = Instant::now();
        let _a = r.connect("prod", "a", "t", Some(7)).unwrap();
        let _b = r.connect("prod", "b", "t", None).unwrap();
        r.report_applied("prod", "b", "t", 8, None).unwrap();
        let _other = r.connect("dev", "c", "t", None).unwrap();
        let started = Instant::now();
        let w = r.wait_applied("prod", 7, since, LONG).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(w.waited_for, ["a", "b"]);
        let names: Vec<_> = w.confirmed.iter().map(|c| c.instance.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(w.disconnected.is_empty() && w.lagging.is_empty());
        // Applied before `since`: zero, not negative.
        let early = r.wait_applied("prod", 7, Instant::now(), LONG).await;
        assert!(early.confirmed.iter().all(|c| c.after == Duration::ZERO));
    }

    #[tokio::test]
    async fn wait_wakes_on_a_later_apply_and_times_it_from_since() {
        let r = registry();
        let _a = r.connect("prod", "a", "t", Some(1)).unwrap();
        let since = Instant::now();
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_applied("prod", 2, since, LONG).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        r.report_applied("prod", "a", "t", 2, Some("serin-rust/0.1.0".into()))
            .unwrap();
        let w = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.confirmed.len(), 1);
        assert!(w.confirmed[0].after >= Duration::from_millis(30));
        let json = serde_json::to_value(&w).unwrap();
        assert!(json["confirmed"][0]["after_ms"].as_f64().unwrap() >= 30.0);
    }

    #[tokio::test]
    async fn a_disconnect_removes_an_instance_from_the_wait() {
        let r = registry();
        let a = r.connect("prod", "a", "t", Some(1)).unwrap();
        let _b = r.connect("prod", "b", "t", Some(1)).unwrap();
        // A second stream of the same instance: one closing is not enough.
        let a2 = r.connect("prod", "a", "t", Some(1)).unwrap();
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_applied("prod", 2, Instant::now(), LONG).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a2);
        r.report_applied("prod", "b", "t", 2, None).unwrap();
        let w = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.disconnected, ["a"]);
        assert_eq!(w.confirmed.len(), 1);
        assert_eq!(w.confirmed[0].instance, "b");
        assert!(w.lagging.is_empty());
    }

    #[tokio::test]
    async fn a_timeout_reports_the_laggards_with_what_they_serve() {
        let r = registry();
        let _a = r.connect("prod", "a", "t", Some(4)).unwrap();
        let _b = r.connect("prod", "b", "t", None).unwrap();
        let _c = r.connect("prod", "c", "t", Some(5)).unwrap();
        let started = Instant::now();
        let w = r
            .wait_applied("prod", 5, started, Duration::from_millis(50))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(
            w.lagging,
            [
                Lagging {
                    instance: "a".into(),
                    applied_version: Some(4),
                    replica: None,
                },
                Lagging {
                    instance: "b".into(),
                    applied_version: None,
                    replica: None,
                }
            ]
        );
        assert_eq!(w.confirmed.len(), 1);
        // Nobody connected: nothing to wait for.
        let empty = r.wait_applied("staging", 5, started, LONG).await;
        assert_eq!(empty, AppliedWait::default());
    }

    #[test]
    fn the_applied_version_never_decreases_and_keeps_its_first_time() {
        let r = registry();
        r.report_applied("prod", "a", "t", 5, Some("x/1".into()))
            .unwrap();
        let first = r.list("prod")[0].clone();
        assert_eq!(first.applied_version, Some(5));
        assert!(!first.connected);
        assert_eq!(first.streams, 0);
        r.report_applied("prod", "a", "t", 3, None).unwrap();
        r.report_applied("prod", "a", "t", 5, None).unwrap();
        let later = &r.list("prod")[0];
        assert_eq!(later.applied_version, Some(5));
        assert_eq!(later.applied_at_ms, first.applied_at_ms);
        assert_eq!(later.sdk.as_deref(), Some("x/1"));
        // A reconnect with an older Last-Event-ID does not move it back either.
        let _g = r.connect("prod", "a", "t", Some(2)).unwrap();
        assert_eq!(r.list("prod")[0].applied_version, Some(5));
    }

    #[test]
    fn streams_are_counted_and_sent_versions_recorded() {
        let r = registry();
        let g = r.connect("prod", "a", "t", None).unwrap();
        g.sent(3);
        g.sent(2);
        let v = &r.list("prod")[0];
        assert!(v.connected && v.connected_since_ms.is_some());
        assert_eq!(v.last_sent_version, Some(3));
        assert_eq!(r.connected("prod"), ["a"]);
        assert_eq!(r.connected_count(), 1);
        drop(g);
        let v = &r.list("prod")[0];
        assert!(!v.connected && v.connected_since_ms.is_none());
        assert_eq!(v.streams, 0);
        assert!(r.connected("prod").is_empty());
    }

    #[test]
    fn gone_instances_are_pruned_after_the_retention_and_make_room() {
        // Zero retention: an entry expires as soon as its last stream closes.
        let r = Arc::new(SdkRegistry::with_limits(2, 100, Duration::ZERO));
        let a = r.connect("prod", "a", "t", None).unwrap();
        r.report_applied("prod", "b", "t", 1, None).unwrap();
        assert!(r.list("prod").iter().all(|v| v.instance != "b"));
        let _c = r.connect("prod", "c", "t", None).unwrap();
        drop(a);
        assert!(r.list("prod").iter().all(|v| v.instance != "a"));
        let _d = r.connect("dev", "d", "t", None).unwrap();
        assert_eq!(r.connected("dev"), ["d"]);

        // Kept for the retention: they occupy their slot, and a full registry
        // refuses new instances but still serves known ones.
        let r = Arc::new(SdkRegistry::with_limits(2, 100, LONG));
        drop(r.connect("prod", "a", "t", None).unwrap());
        let _b = r.connect("prod", "b", "t", None).unwrap();
        let listed = r.list("prod");
        assert_eq!(listed.len(), 2);
        assert!(!listed[0].connected && listed[1].connected);
        assert_eq!(
            r.connect("prod", "c", "t", None).unwrap_err(),
            Refused::Full { limit: 2 }
        );
        assert!(r.report_applied("prod", "c", "t", 1, None).is_err());
        r.report_applied("prod", "a", "t", 1, None).unwrap();
        let err = ApiError::from(Refused::Full { limit: 2 });
        assert_eq!(err.code, ErrorCode::Overloaded);
    }

    #[test]
    fn an_instance_belongs_to_the_token_that_registered_it() {
        let r = registry();
        let g = r.connect("prod", "pod-1", "alice", None).unwrap();
        // Another token may neither report for it nor open a stream as it.
        let err = r
            .report_applied("prod", "pod-1", "mallory", 9, None)
            .unwrap_err();
        assert!(matches!(err, Refused::NotOwner { .. }), "{err}");
        assert_eq!(ApiError::from(err).code, ErrorCode::Conflict);
        assert!(r.connect("prod", "pod-1", "mallory", None).is_err());
        assert_eq!(r.list("prod")[0].applied_version, None);
        assert_eq!(r.list("prod")[0].token_id, "alice");
        // The same id in another env is another instance.
        r.report_applied("dev", "pod-1", "mallory", 1, None)
            .unwrap();
        // The owner's own reports are taken, after a reconnect too.
        drop(g);
        let _g = r.connect("prod", "pod-1", "alice", None).unwrap();
        r.report_applied("prod", "pod-1", "alice", 2, None).unwrap();
        assert_eq!(r.list("prod")[0].applied_version, Some(2));
    }

    #[tokio::test]
    async fn forgetting_a_token_frees_its_ids_and_ends_waits_on_them() {
        let r = registry();
        let g = r.connect("prod", "pod-1", "old", Some(1)).unwrap();
        let _b = r.connect("prod", "pod-2", "other", Some(1)).unwrap();
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_applied("prod", 2, Instant::now(), LONG).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(r.forget_token("old"), 1);
        r.report_applied("prod", "pod-2", "other", 2, None).unwrap();
        let w = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.disconnected, ["pod-1"]);
        // The id is free for the new token, and the old stream's late close
        // does not touch the new owner's entry.
        let _new = r.connect("prod", "pod-1", "new", None).unwrap();
        drop(g);
        let listed = r.list("prod");
        assert_eq!(listed[0].token_id, "new");
        assert_eq!(listed[0].streams, 1);
        assert_eq!(r.connected_count(), 2);
    }

    #[test]
    fn each_token_holds_at_most_its_quota_and_others_still_register() {
        let r = Arc::new(SdkRegistry::with_limits(10, 3, LONG));
        for i in 0..3 {
            r.report_applied("prod", &format!("fake-{i}"), "mallory", 1, None)
                .unwrap();
        }
        let err = r
            .report_applied("prod", "fake-3", "mallory", 1, None)
            .unwrap_err();
        assert_eq!(err, Refused::OverQuota { limit: 3 });
        assert_eq!(ApiError::from(err).code, ErrorCode::Overloaded);
        assert!(r.connect("dev", "fake-4", "mallory", None).is_err());
        // Known ids of the same token still work; other tokens register.
        r.report_applied("prod", "fake-0", "mallory", 2, None)
            .unwrap();
        let _g = r.connect("prod", "real", "fleet", None).unwrap();
        assert_eq!(r.list("prod").len(), 4);
        // Expired entries give the slots back.
        let r = Arc::new(SdkRegistry::with_limits(10, 1, Duration::ZERO));
        r.report_applied("prod", "a", "t", 1, None).unwrap();
        r.report_applied("prod", "b", "t", 1, None).unwrap();
    }

    fn remote(instance: &str, replica: &str, applied: Option<i64>, seen_ms: i64) -> SdkInstanceRow {
        SdkInstanceRow {
            env: "prod".into(),
            instance: instance.into(),
            replica_id: replica.into(),
            token_id: "t".into(),
            sdk: None,
            connected: true,
            applied_version: applied,
            applied_at_ms: applied.map(|_| clock::now_ms()),
            last_seen_ms: seen_ms,
            region: None,
            pool: None,
        }
    }

    // The shared path on a SQLite store: the table is the same on both
    // backends, and the server only chooses to share on PostgreSQL.
    #[tokio::test]
    async fn a_shared_registry_waits_for_other_replicas_and_names_their_laggards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("data")).await.unwrap();
        let r = registry();
        r.share(store.clone(), "me".into());
        let _a = r.connect("prod", "a", "t", Some(1)).unwrap();
        r.flush(false).await.unwrap();
        let now = clock::now_ms();
        let dead = now - ttl_ms(CONNECTED_TTL) - 1;
        store
            .publish_sdk_instances(
                &[
                    remote("b", "other", Some(1), now),
                    remote("c", "other", Some(1), now),
                    remote("dead", "gone", Some(1), dead),
                ],
                0,
            )
            .await
            .unwrap();
        // The list covers both replicas; a row its replica stopped refreshing is not connected.
        let listed = r.list_fleet("prod").await.unwrap();
        let seen: Vec<_> = listed
            .iter()
            .map(|v| (v.instance.as_str(), v.replica.as_deref(), v.connected))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", Some("me"), true),
                ("b", Some("other"), true),
                ("c", Some("other"), true),
                ("dead", Some("gone"), false)
            ]
        );
        let since = Instant::now();
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move {
                r.wait_applied("prod", 2, since, Duration::from_millis(800))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.report_applied("prod", "a", "t", 2, None).unwrap();
        store
            .publish_sdk_instances(&[remote("b", "other", Some(2), clock::now_ms())], 0)
            .await
            .unwrap();
        let w = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.waited_for, ["a", "b", "c"]);
        let confirmed: Vec<_> = w.confirmed.iter().map(|c| c.instance.as_str()).collect();
        assert_eq!(confirmed, ["a", "b"]);
        assert!(w.confirmed[1].after >= Duration::from_millis(50), "{w:?}");
        assert_eq!(
            w.lagging,
            [Lagging {
                instance: "c".into(),
                applied_version: Some(1),
                replica: Some("other".into()),
            }]
        );
        // Only changed entries are flushed; a refresh vouches for the
        // connected rows of this replica only.
        assert_eq!(r.flush(false).await.unwrap(), 1);
        assert_eq!(r.flush(false).await.unwrap(), 0);
        let before = store.sdk_instance("prod", "a").await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(r.flush(true).await.unwrap(), 1);
        let row = store.sdk_instance("prod", "a").await.unwrap().unwrap();
        assert_eq!(
            (row.replica_id.as_str(), row.applied_version),
            ("me", Some(2))
        );
        assert!(row.last_seen_ms > before.last_seen_ms);
        // Another token may not take an id held on another replica; revoking frees it.
        assert!(r.check_fleet_owner("prod", "b", "mallory").await.is_err());
        r.check_fleet_owner("prod", "b", "t").await.unwrap();
        r.check_fleet_owner("prod", "new", "mallory").await.unwrap();
        store.close().await;
    }
}
