//! Outcome ingestion and the guardrail monitors.
//!
//! Each canary bundle of an agent in an env gets a `Monitor` (serin-core) that
//! compares it with the stable arm. A batch of outcomes is applied to copies
//! of the monitors and minute rollups it touches, those copies are written in
//! one store transaction, and only then do they replace the in-memory state
//! and is the batch acknowledged: an acknowledged outcome is never lost, and a
//! failed write leaves memory as it was.
//!
//! Durable evidence: the minute rollups are written as the batch's deltas and
//! merged with the stored row inside the transaction (so a restart, or another
//! replica, never makes a batch overwrite counted outcomes), and the batch's
//! request ids are recorded in the store in that same transaction, so a batch
//! retried after a restart counts as duplicates.
//!
//! Replicas (PostgreSQL): only the leader judges. Its own batches take the path above, with the
//! monitor write fenced by its leadership epoch; a replica that does not lead never writes a
//! monitor from its own copy (which may be older than the leader's): it records the dedup keys,
//! merges the rollups and appends the accepted events to the outcome journal in one
//! transaction, and the leader applies journal rows in id order through the same code
//! (`observe_batch`, one latch per batch) and stores the monitors with the journal cursor under
//! its epoch (`journal.rs` runs it, and keeps non-leaders' views on the stored monitors). A
//! leader deposed mid-batch (its write refused as fenced) sends that batch through the journal.
//! SQLite has one server per data directory and always takes the direct path.
//!
//! Quarantine: a stored monitor that cannot be read is not loaded and no fresh
//! monitor replaces it. Its comparison keeps no evidence, its release holds at
//! its step with `needs_attention` (the controller never promotes it; pause,
//! abort and rollback still work) until an operator starts a new release of
//! that candidate, which replaces the row. Outcomes keep counting in rollups.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use serin_core::approvals::{ApprovalRequest, Counted, Owed};
use serin_core::decision::Arm;
pub use serin_core::guardrails::ApprovalSignal;
use serin_core::guardrails::{ArmAggregate, GuardrailConfig, Monitor};
use serin_core::outcome::{EventLimits, OutcomeEvent, OutcomeWindow};
use serin_store::{BatchEvidence, MonitorRow, RollupRow, Store, StoreError};
use tokio::sync::Mutex;

use crate::error::{ApiError, ErrorCode};
use crate::hub::Hub;
use crate::quarantine::{self, Quarantine};

mod batch;

pub use batch::{ParsedEvent, parse_batch};

/// A monitor stops taking control traffic (and leaves memory) after this long
/// without a canary outcome; its persisted evidence stays readable.
const MONITOR_IDLE_MS: i64 = 3_600_000;
/// Request ids are remembered this long to drop retried duplicates.
const DEDUP_WINDOW_MS: i64 = 10 * 60_000;
/// Instances tracked by the per-second rate limit; past this, instances not yet
/// seen this second are refused until the second turns (instance names are
/// chosen by clients, so the map must not grow with them).
const MAX_RATE_INSTANCES: usize = 100_000;
/// Attempts at a batch whose request ids another writer recorded meanwhile.
const DEDUP_ATTEMPTS: usize = 3;
/// Events accepted per instance per second; a flooding instance is cut off
/// rather than allowed to dominate a window.
pub const INSTANCE_EVENTS_PER_SECOND: u32 = 50_000;
/// Events per batch.
pub const MAX_BATCH_EVENTS: usize = 10_000;

type MonitorKey = (String, String, String);

/// (env, agent) -> when it was read, and the waved release then running.
type WavedMap = HashMap<(String, String), (i64, Option<Arc<Waved>>)>;

/// How long a reading of an agent's waved release is trusted before the store is asked again
/// (a release started or ended through another replica reaches this one within it).
const WAVED_TTL_MS: i64 = 1_000;

/// A waved release's candidate and its waves: which wave an outcome belongs to, so each
/// wave's monitor (`candidate~wave`) sees only its own members' canary and control.
#[derive(Debug)]
pub struct Waved {
    pub candidate: String,
    pub index: serin_core::decision::WaveIndex,
}

impl Waved {
    /// The release's waves, or `None` when it has none (or they cannot route).
    pub fn of(release: &serin_core::release::Release) -> Option<Arc<Waved>> {
        let waves = release.wave_routing();
        let index = serin_core::decision::WaveIndex::new(&release.agent, waves).ok()??;
        Some(Arc::new(Waved {
            candidate: release.candidate.id.clone(),
            index,
        }))
    }

    /// The wave an outcome with these attributes belongs to (the engine's own rule).
    fn wave_of(
        &self,
        instance: Option<&str>,
        region: Option<&str>,
        pool: Option<&str>,
    ) -> Option<&str> {
        let mut ctx = serin_core::decision::Context::new("");
        ctx.instance = instance;
        ctx.region = region;
        ctx.pool = pool;
        self.index.route(&ctx).map(|w| w.name.as_str())
    }

    fn key(&self, env: &str, agent: &str, wave: &str) -> MonitorKey {
        (
            env.to_owned(),
            agent.to_owned(),
            serin_core::release::wave_comparison(&self.candidate, wave),
        )
    }
}

/// Whether a stable outcome in `wave` (of a waved release, if any) counts towards monitor
/// `key`: a wave's monitor takes only its own wave's control.
fn counts_towards(key: &MonitorKey, waved: Option<&Waved>, wave: Option<&str>) -> bool {
    match serin_core::release::split_comparison(&key.2) {
        (_, None) => true,
        (candidate, Some(w)) => waved.is_some_and(|x| x.candidate == candidate) && wave == Some(w),
    }
}
/// env, agent, bundle, arm (of the batch's minute), borrowed from the batch's events.
type RollupKey<'a> = (&'a str, &'a str, &'a str, &'static str);

#[derive(Debug, Clone)]
struct MonitorEntry {
    monitor: Monitor,
    created_at_ms: i64,
    last_canary_ms: i64,
    /// The release's excluded tenants: their outcomes could never be canary while the
    /// exclusion routes, so they are left out of the comparison (counting them as control
    /// would make canary look better than it is).
    excluded: Arc<BTreeSet<String>>,
    /// The first snapshot version that routes without the exclusion (the final step).
    excluded_before: Option<u64>,
}

impl MonitorEntry {
    fn is_excluded(&self, e: &OutcomeEvent) -> bool {
        !self.excluded.is_empty()
            && self.excluded_before.is_none_or(|v| e.snapshot_version < v)
            && e.tenant.as_ref().is_some_and(|t| self.excluded.contains(t))
    }
}

/// What the release controller tells a monitor at each transition.
#[derive(Debug, Clone)]
pub struct Exposure {
    /// The canary's share of (non-excluded) traffic, 0..1.
    pub share: f64,
    /// The snapshot version from which that share routes.
    pub version: u64,
    /// The plan's excluded tenants.
    pub excluded: Arc<BTreeSet<String>>,
    /// Whether that version routes without the exclusion (the final step).
    pub exclusion_dropped: bool,
}

impl MonitorEntry {
    fn row(&self, (env, agent, candidate): &MonitorKey) -> Result<MonitorRow, ApiError> {
        Ok(MonitorRow {
            env: env.clone(),
            agent: agent.clone(),
            candidate: candidate.clone(),
            state: serde_json::to_string(&self.monitor).map_err(ApiError::internal)?,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.last_canary_ms,
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    monitors: HashMap<MonitorKey, MonitorEntry>,
    /// Monitors of running releases: never idled out of memory.
    pinned: HashSet<MonitorKey>,
    /// Monitors whose stored row is unreadable (see the module docs).
    quarantined: HashSet<MonitorKey>,
    /// instance -> (second, events accepted in it)
    instance_rate: HashMap<String, (i64, u32)>,
}

#[derive(Debug)]
pub struct Guardrails {
    store: Store,
    hub: Arc<Hub>,
    limits: EventLimits,
    quarantine: Arc<Quarantine>,
    inner: Mutex<Inner>,
    /// Bundles found to exist (see [`Guardrails::bundle_exists`]); its own lock, because
    /// events are checked before `inner` is taken.
    known_bundles: std::sync::Mutex<HashSet<String>>,
    /// Which agents have a waved release running, and its waves (see [`Guardrails::waved`]).
    waved: std::sync::Mutex<WavedMap>,
    /// Woken when a batch latches a `fail` (see [`Guardrails::latched`]).
    latched: Arc<tokio::sync::Notify>,
    /// The committed state of every monitor in memory, for readers: the release
    /// controller and the views read here and never queue behind an ingestion
    /// holding `inner` across its store write (with several 10,000-event
    /// batches in flight, that queue delayed a latched fail's rollback by minutes).
    views: std::sync::RwLock<HashMap<MonitorKey, View>>,
    /// Exposures the controller committed and no ingestion has applied yet, in
    /// commit order. The controller notes them here without waiting (an ingestion
    /// holds `inner` across its store write, and a rollback queued behind ten
    /// 10,000-event batches took seconds to drain); every ingestion applies them
    /// before judging anything, so no outcome is judged at a stale share.
    pending_shares: std::sync::Mutex<Vec<(MonitorKey, Option<Exposure>)>>,
    /// Counts stored batches that latched a `fail`, so a controller pass can see
    /// that one arrived while it was busy with other releases.
    latches: std::sync::atomic::AtomicU64,
    /// Comparisons with a `fail` latched by a batch that is being stored: a promotion
    /// committed meanwhile would come after the fail it never saw, so the controller
    /// treats these as failed already (see [`Guardrails::has_failed`]).
    latching: std::sync::Mutex<HashSet<MonitorKey>>,
    /// Checked batches waiting to be stored (see [`Guardrails::ingest`]).
    queue: std::sync::Mutex<VecDeque<Queued>>,
    /// Who leads, once the app has started the election: on PostgreSQL it decides whether a
    /// batch goes to this replica's monitors or to the journal (until set: the journal, which
    /// is always safe).
    leader: std::sync::OnceLock<Arc<crate::leader::Leader>>,
    /// Agent requests whose approval signals were counted, so a request that asks several
    /// times counts once per signal (the test assumes one event per request).
    approval_seen: std::sync::Mutex<Seen>,
}

/// Events stored per transaction at most by group commit (a single batch larger than this,
/// up to [`MAX_BATCH_EVENTS`], still goes alone).
pub const GROUP_EVENTS: usize = 20_000;

/// One queued batch's accepted outcomes, as a group's store write judges them.
#[derive(Clone, Copy)]
struct Batch<'a> {
    events: &'a [&'a OutcomeEvent],
    windows: &'a [&'a OutcomeWindow],
    at_ms: i64,
}

/// A checked batch waiting for its group's store write.
#[derive(Debug)]
struct Queued {
    valid: Vec<(usize, OutcomeEvent)>,
    /// Outcome windows (their own route; a queued batch holds events or windows).
    windows: Vec<(usize, OutcomeWindow)>,
    now_ms: i64,
    done: tokio::sync::oneshot::Sender<Result<Tally, ApiError>>,
}

/// What the store write made of one queued batch.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    duplicates: usize,
    /// Requests the accepted windows stood for.
    requests: u64,
    errors: Vec<Rejection>,
}

impl Queued {
    fn len(&self) -> usize {
        self.valid.len() + self.windows.len()
    }

    /// Events and window requests, for the group's size bound.
    fn weight(&self) -> usize {
        self.valid.len()
            + self
                .windows
                .iter()
                .map(|(_, w)| usize::try_from(w.requests()).unwrap_or(usize::MAX))
                .sum::<usize>()
    }
}

/// A committed monitor and when its candidate last had a canary outcome.
type View = (i64, Arc<Monitor>);

/// Journal rows a leader applies per store transaction (each holds at most
/// [`MAX_BATCH_EVENTS`] events, so this bounds one pass's memory).
pub const JOURNAL_CHUNK_ROWS: usize = 16;

/// Where a replica keeps a batch's monitor evidence (see [`Guardrails::ingest`]).
#[derive(Clone, Copy, Debug)]
enum EvidencePath {
    /// Into its own monitors and their rows, fenced by the epoch it leads under (`None` on
    /// SQLite, one server per data directory).
    Direct(Option<i64>),
    /// Into the outcome journal, for the leader to apply.
    Journal,
}

enum StoredMonitor {
    Live(Box<MonitorEntry>),
    Unreadable,
    Absent,
}

/// Latches every monitor of a batch (see [`Monitor::latch`]) and answers those that latched a
/// fail. Stamped when latched, not when the batch arrived.
fn latch_all(monitors: &mut HashMap<MonitorKey, MonitorEntry>, at_ms: i64) -> Vec<MonitorKey> {
    let latch_ms = crate::clock::now_ms().max(at_ms);
    let mut latching = Vec::new();
    for (key, m) in monitors.iter_mut() {
        if m.monitor.latch(latch_ms) {
            tracing::warn!(env = %key.0, agent = %key.1, candidate = %key.2, "a guardrail latched fail");
            latching.push(key.clone());
        }
    }
    latching
}

/// Sets aside a monitor whose stored row cannot be read: recorded for operators, out of
/// memory, and never replaced by fresh evidence until a new release of the candidate (see the
/// module docs).
fn quarantine_monitor(
    registry: &Quarantine,
    inner: &mut Inner,
    key: MonitorKey,
    error: &dyn std::fmt::Display,
    state: &str,
) {
    registry.record(
        quarantine::MONITOR,
        &quarantine::monitor_key(&key.0, &key.1, &key.2),
        &error.to_string(),
        state,
    );
    inner.monitors.remove(&key);
    inner.quarantined.insert(key);
}

/// A batch's accepted events as a journal row stores them.
pub fn encode_events(events: &[&OutcomeEvent]) -> Result<String, ApiError> {
    serde_json::to_string(events).map_err(ApiError::internal)
}

/// A journal row's events.
pub fn decode_events(text: &str) -> Result<Vec<OutcomeEvent>, serde_json::Error> {
    serde_json::from_str(text)
}

/// A journal row with outcome windows: `{"events": [...], "windows": [...]}`. Rows of events
/// alone stay the bare array every earlier version wrote and reads.
#[derive(Serialize, serde::Deserialize)]
struct JournalRow<E, W> {
    events: E,
    windows: W,
}

/// A group's accepted events and windows as one journal row (see [`JournalRow`]).
pub fn encode_journal(
    events: &[&OutcomeEvent],
    windows: &[&OutcomeWindow],
) -> Result<String, ApiError> {
    if windows.is_empty() {
        return encode_events(events);
    }
    serde_json::to_string(&JournalRow { events, windows }).map_err(ApiError::internal)
}

/// A journal row's events and windows, in either form.
pub fn decode_journal(
    text: &str,
) -> Result<(Vec<OutcomeEvent>, Vec<OutcomeWindow>), serde_json::Error> {
    if text.trim_start().starts_with('[') {
        return Ok((decode_events(text)?, Vec::new()));
    }
    let row: JournalRow<Vec<OutcomeEvent>, Vec<OutcomeWindow>> = serde_json::from_str(text)?;
    Ok((row.events, row.windows))
}

fn rollup_rows(
    rollups: &HashMap<(i64, RollupKey<'_>), ArmAggregate>,
) -> Result<Vec<RollupRow>, ApiError> {
    let mut rows = Vec::with_capacity(rollups.len());
    for ((minute_ms, (env, agent, bundle, arm)), agg) in rollups {
        rows.push(RollupRow {
            env: (*env).to_owned(),
            agent: (*agent).to_owned(),
            bundle: (*bundle).to_owned(),
            arm: (*arm).to_owned(),
            minute_ms: *minute_ms,
            data: serde_json::to_string(agg).map_err(ApiError::internal)?,
        });
    }
    Ok(rows)
}

/// A batch write's error for the ingestion loop: `Conflict` (request ids counted meanwhile)
/// stays a conflict, so the batch is looked at again.
fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
        e => e.into(),
    }
}

/// One refused event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rejection {
    /// Position in `events`.
    pub index: usize,
    pub request_id: Option<String>,
    /// Stable code (`invalid_latency`, `unknown_agent`, `rate_limited`, ...).
    pub code: String,
    /// JSON pointer inside the request body.
    pub field: String,
    pub reason: String,
}

/// What happened to a body of outcome windows.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct WindowReport {
    /// Windows counted.
    pub accepted: usize,
    /// Windows whose id was already counted in their env (a retry).
    pub duplicates: usize,
    pub rejected: usize,
    /// Requests the accepted windows stood for.
    pub requests: u64,
    /// The first 100 rejections, with reasons.
    pub errors: Vec<Rejection>,
}

impl WindowReport {
    fn reject(&mut self, r: Rejection) {
        metrics::counter!("serin_outcome_windows_total", "result" => "rejected", "code" => r.code.clone())
            .increment(1);
        self.rejected += 1;
        if self.errors.len() < 100 {
            self.errors.push(r);
        }
    }
}

/// What happened to a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestReport {
    pub accepted: usize,
    /// Events whose request id was already counted (a retried batch).
    pub duplicates: usize,
    pub rejected: usize,
    /// The first 100 rejections, with reasons.
    pub errors: Vec<Rejection>,
}

/// Which agent requests have had an approval signal counted: bounded, oldest forgotten first.
#[derive(Debug, Default)]
struct Seen {
    keys: HashSet<String>,
    order: VecDeque<String>,
}

/// Agent requests remembered for deduplicating approval signals.
const SEEN_CAP: usize = 200_000;

impl Seen {
    /// True the first time `key` is offered.
    fn first(&mut self, key: String) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        if self.order.len() >= SEEN_CAP
            && let Some(old) = self.order.pop_front()
        {
            self.keys.remove(&old);
        }
        self.order.push_back(key.clone());
        self.keys.insert(key);
        true
    }
}

impl Guardrails {
    /// Loads persisted monitors so verdicts resume where they were.
    /// An unreadable row is quarantined, never fatal.
    pub async fn load(
        store: Store,
        hub: Arc<Hub>,
        quarantine: Arc<Quarantine>,
        now_ms: i64,
    ) -> Result<Guardrails, ApiError> {
        let mut inner = Inner::default();
        for row in store.load_monitors().await? {
            if now_ms - row.updated_at_ms > MONITOR_IDLE_MS {
                continue;
            }
            let monitor: Monitor = match serde_json::from_str(&row.state) {
                Ok(m) => m,
                Err(e) => {
                    quarantine_monitor(
                        &quarantine,
                        &mut inner,
                        (row.env, row.agent, row.candidate),
                        &e,
                        &row.state,
                    );
                    continue;
                }
            };
            inner.monitors.insert(
                (row.env, row.agent, row.candidate),
                MonitorEntry {
                    monitor,
                    created_at_ms: row.created_at_ms,
                    last_canary_ms: row.updated_at_ms,
                    excluded: Arc::default(),
                    excluded_before: None,
                },
            );
        }
        let views = inner
            .monitors
            .iter()
            .map(|(k, m)| (k.clone(), (m.last_canary_ms, Arc::new(m.monitor.clone()))))
            .collect();
        Ok(Guardrails {
            store,
            hub,
            limits: EventLimits::DEFAULT,
            quarantine,
            inner: Mutex::new(inner),
            known_bundles: std::sync::Mutex::new(HashSet::new()),
            waved: std::sync::Mutex::new(HashMap::new()),
            latched: Arc::new(tokio::sync::Notify::new()),
            views: std::sync::RwLock::new(views),
            pending_shares: std::sync::Mutex::new(Vec::new()),
            latches: std::sync::atomic::AtomicU64::new(0),
            latching: std::sync::Mutex::new(HashSet::new()),
            leader: std::sync::OnceLock::new(),
            queue: std::sync::Mutex::new(VecDeque::new()),
            approval_seen: std::sync::Mutex::new(Seen::default()),
        })
    }

    /// Tells ingestion who leads (see [`Guardrails::ingest`]); set once, after the election
    /// has started.
    pub fn attach_leader(&self, leader: Arc<crate::leader::Leader>) {
        let _ = self.leader.set(leader);
    }

    /// Notified after a stored batch latched a guardrail `fail`, so the release
    /// controller can act within the batch's round trip instead of its tick.
    pub fn latched(&self) -> Arc<tokio::sync::Notify> {
        self.latched.clone()
    }

    /// How many stored batches have latched a `fail` so far.
    pub fn latches(&self) -> u64 {
        self.latches.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a gating bound of this comparison has latched `fail`, counting a batch
    /// that latched one and is still being stored.
    pub fn has_failed(&self, env: &str, agent: &str, candidate: &str) -> bool {
        let key = (env.to_owned(), agent.to_owned(), candidate.to_owned());
        self.latching_set().contains(&key) || self.view(&key).is_some_and(|(_, m)| m.any_fail())
    }

    fn latching_set(&self) -> std::sync::MutexGuard<'_, HashSet<MonitorKey>> {
        match self.latching.lock() {
            Ok(s) => s,
            // Inserting or removing keys cannot leave the set half-changed.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The registry of unreadable rows this server found.
    pub fn quarantine(&self) -> &Arc<Quarantine> {
        &self.quarantine
    }

    /// Whether the stored monitor of this comparison is unreadable (its release
    /// needs attention).
    pub async fn monitor_quarantined(&self, env: &str, agent: &str, candidate: &str) -> bool {
        // The registry mirrors `inner.quarantined` (every insert records, every removal
        // clears) and is read without waiting for an ingestion to finish: the controller
        // asks this of every release on every tick.
        self.quarantine.contains(
            quarantine::MONITOR,
            &quarantine::monitor_key(env, agent, candidate),
        )
    }

    /// The agent's thresholds; `None` while its stored config is unreadable
    /// (nothing is judged against thresholds nobody can read).
    async fn config_for(
        &self,
        env: &str,
        agent: &str,
    ) -> Result<Option<GuardrailConfig>, ApiError> {
        match self.store.guardrail_config(env, agent).await? {
            Some(json) => match serde_json::from_str(&json) {
                Ok(c) => Ok(Some(c)),
                Err(e) => {
                    self.quarantine.record(
                        quarantine::GUARDRAIL_CONFIG,
                        &format!("{env}/{agent}"),
                        &e.to_string(),
                        &json,
                    );
                    Ok(None)
                }
            },
            None => Ok(Some(GuardrailConfig::spec_default())),
        }
    }

    /// Whether bundle `agent@N` exists. Remembered once found: every event names its bundle,
    /// and a store read per event would cost more than all its other checks.
    async fn bundle_exists(&self, id: &str) -> Result<bool, ApiError> {
        if self.known_bundles_set().contains(id) {
            return Ok(true);
        }
        let Some((agent, n)) = id.split_once('@') else {
            return Ok(false);
        };
        let Ok(n) = n.parse::<i64>() else {
            return Ok(false);
        };
        let found = self.store.get_bundle(agent, n).await?.is_some();
        if found {
            self.known_bundles_set().insert(id.to_owned());
        }
        Ok(found)
    }

    fn known_bundles_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        match self.known_bundles.lock() {
            Ok(s) => s,
            // Inserting a name cannot leave the set half-changed.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Validates, deduplicates, aggregates and persists a batch.
    ///
    /// Each event is checked against shared, read-only state (its own fields, the env's
    /// snapshot, the agent, the bundle) before `inner` is taken: concurrent batches wait for
    /// one another only to deduplicate, aggregate and store, which need the monitors.
    ///
    /// Group commit: a checked batch joins a queue, and whoever takes `inner` next stores
    /// every queued batch (up to [`GROUP_EVENTS`] events) in one transaction, judging them
    /// one after another in arrival order exactly as if each had been stored alone. With
    /// many clients sending small batches, one fsync then covers many of them instead of
    /// each waiting for its own. The group is stored by a task of its own, so a client that
    /// hangs up never cancels the write other batches wait on.
    pub async fn ingest(
        self: &Arc<Self>,
        events: Vec<ParsedEvent>,
        now_ms: i64,
    ) -> Result<IngestReport, ApiError> {
        let mut report = IngestReport {
            accepted: 0,
            duplicates: 0,
            rejected: 0,
            errors: Vec::new(),
        };
        let valid = self.admit(events, now_ms, &mut report).await?;
        if valid.is_empty() {
            return Ok(report);
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        let tally = self
            .enqueue(
                Queued {
                    valid,
                    windows: Vec::new(),
                    now_ms,
                    done,
                },
                answer,
            )
            .await?;
        report.accepted = tally.accepted;
        report.duplicates = tally.duplicates;
        for r in tally.errors {
            reject(&mut report, r);
        }
        Ok(report)
    }

    /// Validates, deduplicates (by window id, per env), aggregates and persists outcome
    /// windows: [`Guardrails::ingest`] for windows, through the same group commit.
    pub async fn ingest_windows(
        self: &Arc<Self>,
        windows: Vec<OutcomeWindow>,
        now_ms: i64,
    ) -> Result<WindowReport, ApiError> {
        let mut report = WindowReport::default();
        let valid = self.admit_windows(windows, now_ms, &mut report).await?;
        if valid.is_empty() {
            return Ok(report);
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        let tally = self
            .enqueue(
                Queued {
                    valid: Vec::new(),
                    windows: valid,
                    now_ms,
                    done,
                },
                answer,
            )
            .await?;
        report.accepted = tally.accepted;
        report.duplicates = tally.duplicates;
        report.requests = tally.requests;
        for r in tally.errors {
            report.reject(r);
        }
        Ok(report)
    }

    /// Queues a checked batch and waits for the group that stores it.
    async fn enqueue(
        self: &Arc<Self>,
        queued: Queued,
        answer: tokio::sync::oneshot::Receiver<Result<Tally, ApiError>>,
    ) -> Result<Tally, ApiError> {
        self.queue().push_back(queued);
        let this = Arc::clone(self);
        tokio::spawn(async move { this.commit_queued().await });
        answer
            .await
            .map_err(|_| ApiError::internal("the batch's store write was interrupted"))?
    }

    /// The windows of a body that may be counted, each with its index; the others are
    /// rejected into `report`, in order.
    async fn admit_windows(
        &self,
        windows: Vec<OutcomeWindow>,
        now_ms: i64,
        report: &mut WindowReport,
    ) -> Result<Vec<(usize, OutcomeWindow)>, ApiError> {
        let mut valid = Vec::with_capacity(windows.len());
        for (index, w) in windows.into_iter().enumerate() {
            let refuse = |code: &str, field: &str, reason: String| Rejection {
                index,
                request_id: Some(w.window_id.clone()),
                code: code.to_owned(),
                field: format!("/windows/{index}{field}"),
                reason,
            };
            if let Err(e) = w.validate(now_ms, &self.limits) {
                report.reject(refuse(e.code, &e.field, e.reason));
                continue;
            }
            let mut snapshot = self.hub.current(&w.env).await?;
            if w.snapshot_version > snapshot.version {
                self.hub.refresh_env(&w.env).await?;
                snapshot = self.hub.current(&w.env).await?;
            }
            if w.snapshot_version > snapshot.version {
                let reason = format!(
                    "snapshot version {} is newer than env {}'s newest ({})",
                    w.snapshot_version, w.env, snapshot.version
                );
                report.reject(refuse(
                    "unknown_snapshot_version",
                    "/snapshot_version",
                    reason,
                ));
                continue;
            }
            if !snapshot.compiled.snapshot().agents.contains_key(&w.agent) {
                let reason = format!("agent {} is not routed in env {}", w.agent, w.env);
                report.reject(refuse("unknown_agent", "/agent", reason));
                continue;
            }
            let mut missing = None;
            for (i, a) in w.arms.iter().enumerate() {
                if !self.bundle_exists(&a.bundle).await? {
                    missing = Some((i, a.bundle.clone()));
                    break;
                }
            }
            if let Some((i, bundle)) = missing {
                report.reject(refuse(
                    "unknown_bundle",
                    &format!("/arms/{i}/bundle"),
                    format!("no bundle {bundle}"),
                ));
                continue;
            }
            valid.push((index, w));
        }
        Ok(valid)
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Queued>> {
        match self.queue.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Takes `inner` and stores the batches queued by then (see [`Guardrails::ingest`]).
    /// Every queued batch spawned one of these after queueing and each stores at least one
    /// batch while any is queued, so none is left behind.
    async fn commit_queued(&self) {
        let mut inner = self.inner.lock().await;
        let group: Vec<Queued> = {
            let mut queue = self.queue();
            let mut events = 0;
            let mut n = 0;
            for q in queue.iter() {
                if n > 0 && events + q.weight() > GROUP_EVENTS {
                    break;
                }
                events += q.weight();
                n += 1;
            }
            queue.drain(..n).collect()
        };
        if group.is_empty() {
            return;
        }
        metrics::histogram!("serin_outcome_group_batches").record(group.len() as f64);
        let outcome = self.commit_group(&mut inner, &group).await;
        drop(inner);
        match outcome {
            Ok(tallies) => {
                for (q, tally) in group.into_iter().zip(tallies) {
                    let _ = q.done.send(Ok(tally));
                }
            }
            Err(e) => {
                for q in group {
                    let _ = q.done.send(Err(e.clone()));
                }
            }
        }
    }

    async fn commit_group(
        &self,
        inner: &mut Inner,
        group: &[Queued],
    ) -> Result<Vec<Tally>, ApiError> {
        // Still before judging anything: an exposure is noted before its version is published,
        // so every exposure of a version an event above was admitted under is queued by now.
        self.apply_pending_shares(inner).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.ingest_valid(inner, group).await {
                Err(ApiError {
                    code: ErrorCode::Conflict,
                    ..
                }) if attempt < DEDUP_ATTEMPTS => {
                    // Another writer recorded some of these request ids since we looked:
                    // look again, and they count as duplicates.
                    continue;
                }
                other => return other,
            }
        }
    }

    /// The events of a batch that may be counted, each with its index; the others are
    /// rejected into `report`, in order.
    async fn admit(
        &self,
        events: Vec<ParsedEvent>,
        now_ms: i64,
        report: &mut IngestReport,
    ) -> Result<Vec<(usize, OutcomeEvent)>, ApiError> {
        let mut valid: Vec<(usize, OutcomeEvent)> = Vec::with_capacity(events.len());
        // The newest snapshot of each env of the batch (almost always one), read once per
        // batch rather than once per event, and again only for an event naming a newer one.
        let mut snapshots: HashMap<String, Arc<crate::hub::Published>> = HashMap::new();
        for (index, parsed) in events.into_iter().enumerate() {
            let event = match parsed {
                ParsedEvent::Event(event) => event,
                ParsedEvent::Unreadable { rejection, .. } => {
                    reject(report, rejection);
                    continue;
                }
            };
            if let Err(e) = event.validate(now_ms, &self.limits) {
                reject(report, rejection(index, &event, e.code, &e.field, e.reason));
                continue;
            }
            let cached = snapshots.get(event.env.as_str()).cloned();
            let mut changed = cached.is_none();
            let mut snapshot = match cached {
                Some(snapshot) => snapshot,
                None => self.hub.current(&event.env).await?,
            };
            if event.snapshot_version > snapshot.version {
                // Another replica may have committed it before this one's poller saw it.
                self.hub.refresh_env(&event.env).await?;
                snapshot = self.hub.current(&event.env).await?;
                changed = true;
            }
            if changed {
                snapshots.insert(event.env.clone(), Arc::clone(&snapshot));
            }
            if event.snapshot_version > snapshot.version {
                // Its routing weight is unknown, so it could not be judged exactly.
                let reason = format!(
                    "snapshot version {} is newer than env {}'s newest ({})",
                    event.snapshot_version, event.env, snapshot.version
                );
                reject(
                    report,
                    rejection(
                        index,
                        &event,
                        "unknown_snapshot_version",
                        "/snapshot_version",
                        reason,
                    ),
                );
                continue;
            }
            if !snapshot
                .compiled
                .snapshot()
                .agents
                .contains_key(&event.agent)
            {
                let reason = format!("agent {} is not routed in env {}", event.agent, event.env);
                reject(
                    report,
                    rejection(index, &event, "unknown_agent", "/agent", reason),
                );
                continue;
            }
            if !self.bundle_exists(&event.bundle).await? {
                let reason = format!("no bundle {}", event.bundle);
                reject(
                    report,
                    rejection(index, &event, "unknown_bundle", "/bundle", reason),
                );
                continue;
            }
            valid.push((index, event));
        }
        Ok(valid)
    }

    /// Deduplicates (against the store and within and across the group's batches, in
    /// order), rate limits, aggregates and persists validated batches in one transaction.
    /// `Conflict` when another writer recorded some of their request ids meanwhile; nothing
    /// is written then.
    async fn ingest_valid(
        &self,
        inner: &mut Inner,
        group: &[Queued],
    ) -> Result<Vec<Tally>, ApiError> {
        let oldest_ms = group.iter().map(|q| q.now_ms).min().unwrap_or_default();
        let newest_ms = group.iter().map(|q| q.now_ms).max().unwrap_or_default();
        // The oldest batch's window: an id seen just inside it counts as a duplicate for the
        // whole group, the careful side.
        let since = oldest_ms - DEDUP_WINDOW_MS;
        // A window's dedup key, apart from request ids (`window:` cannot start one the SDKs
        // mint, and a clash would only make one of them count as a duplicate).
        let window_keys: Vec<Vec<String>> = group
            .iter()
            .map(|q| {
                q.windows
                    .iter()
                    .map(|(_, w)| format!("window:{}", w.window_id))
                    .collect()
            })
            .collect();
        let mut by_env: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (_, e) in group.iter().flat_map(|q| &q.valid) {
            by_env
                .entry(e.env.as_str())
                .or_default()
                .push(e.request_id.as_str());
        }
        for (q, keys) in group.iter().zip(&window_keys) {
            for ((_, w), key) in q.windows.iter().zip(keys) {
                by_env.entry(w.env.as_str()).or_default().push(key.as_str());
            }
        }
        // Owned here so that `seen` can borrow them beside the batch's own ids.
        let mut counted: Vec<(&str, Vec<String>)> = Vec::with_capacity(by_env.len());
        for (env, ids) in &by_env {
            counted.push((*env, self.store.seen_request_ids(env, ids, since).await?));
        }
        let events: usize = group.iter().map(Queued::len).sum();
        let mut seen: HashSet<(&str, &str)> =
            HashSet::with_capacity(events + counted.iter().map(|c| c.1.len()).sum::<usize>());
        for (env, ids) in &counted {
            seen.extend(ids.iter().map(|id| (*env, id.as_str())));
        }
        if inner.instance_rate.len() > MAX_RATE_INSTANCES / 2 {
            let second = oldest_ms.div_euclid(1000);
            inner.instance_rate.retain(|_, (s, _)| *s >= second);
        }
        let mut tallies: Vec<Tally> = Vec::with_capacity(group.len());
        let mut accepted: Vec<Vec<&OutcomeEvent>> = Vec::with_capacity(group.len());
        let mut accepted_windows: Vec<Vec<&OutcomeWindow>> = Vec::with_capacity(group.len());
        let mut dedup: Vec<(&str, &str)> = Vec::with_capacity(events);
        let mut rollups: HashMap<(i64, RollupKey<'_>), ArmAggregate> = HashMap::new();
        for (q, keys) in group.iter().zip(&window_keys) {
            let mut tally = Tally::default();
            let mut batch: Vec<&OutcomeEvent> = Vec::with_capacity(q.valid.len());
            let second = q.now_ms.div_euclid(1000);
            let minute = q.now_ms - q.now_ms.rem_euclid(60_000);
            for (index, event) in &q.valid {
                let key = (event.env.as_str(), event.request_id.as_str());
                if !seen.insert(key) {
                    tally.duplicates += 1;
                    metrics::counter!("serin_outcomes_total", "result" => "duplicate").increment(1);
                    continue;
                }
                if let Some(reason) = self.rate_limited(inner, event.instance.as_ref(), 1, second) {
                    tally.errors.push(rejection(
                        *index,
                        event,
                        "rate_limited",
                        "/instance",
                        reason,
                    ));
                    continue;
                }
                dedup.push(key);
                rollup(
                    &mut rollups,
                    minute,
                    &event.env,
                    &event.agent,
                    &event.bundle,
                    event.arm,
                )
                .record(event);
                batch.push(event);
            }
            let mut windows: Vec<&OutcomeWindow> = Vec::with_capacity(q.windows.len());
            for ((index, w), key) in q.windows.iter().zip(keys) {
                let dedup_key = (w.env.as_str(), key.as_str());
                if !seen.insert(dedup_key) {
                    tally.duplicates += 1;
                    metrics::counter!("serin_outcome_windows_total", "result" => "duplicate")
                        .increment(1);
                    continue;
                }
                let n = u32::try_from(w.requests()).unwrap_or(u32::MAX);
                if let Some(reason) = self.rate_limited(inner, w.instance.as_ref(), n, second) {
                    tally.errors.push(Rejection {
                        index: *index,
                        request_id: Some(w.window_id.clone()),
                        code: "rate_limited".into(),
                        field: format!("/windows/{index}/instance"),
                        reason,
                    });
                    continue;
                }
                dedup.push(dedup_key);
                for part in &w.arms {
                    rollup(
                        &mut rollups,
                        minute,
                        &w.env,
                        &w.agent,
                        &part.bundle,
                        part.arm,
                    )
                    .record_window(part);
                }
                tally.requests += w.requests();
                windows.push(w);
            }
            tally.accepted = batch.len() + windows.len();
            tallies.push(tally);
            accepted.push(batch);
            accepted_windows.push(windows);
        }
        if dedup.is_empty() {
            return Ok(tallies);
        }
        let rollup_rows = rollup_rows(&rollups)?;
        let batches: Vec<Batch<'_>> = accepted
            .iter()
            .zip(&accepted_windows)
            .zip(group)
            .map(|((a, w), q)| Batch {
                events: a.as_slice(),
                windows: w.as_slice(),
                at_ms: q.now_ms,
            })
            .collect();
        match self.evidence_path() {
            EvidencePath::Direct(epoch) => {
                // Batches journalled before this one was received are applied first, so a
                // client sending batches one after another to several replicas has them judged
                // in the order it sent them, as on one replica.
                let consumed = match epoch {
                    Some(epoch) => self.consume_pending(inner, epoch).await,
                    None => Ok(()),
                };
                let stored = match consumed {
                    Ok(()) => {
                        self.ingest_direct(
                            inner,
                            &batches,
                            &rollup_rows,
                            &dedup,
                            since,
                            newest_ms,
                            epoch,
                        )
                        .await?
                    }
                    Err(e) => Err(e),
                };
                match (stored, epoch) {
                    (Err(StoreError::Fenced { .. }), Some(epoch)) => {
                        // Deposed while the batch was being judged: a newer leader owns the
                        // monitors now, so the batch goes to it through the journal (and this
                        // replica stops leading) rather than failing an outcome we can keep.
                        if let Some(leader) = self.leader.get() {
                            leader.superseded(epoch).await;
                        }
                        self.ingest_journalled(&batches, &rollup_rows, &dedup, since, newest_ms)
                            .await?;
                    }
                    (stored, _) => stored.map_err(store_error)?,
                }
            }
            EvidencePath::Journal => {
                self.ingest_journalled(&batches, &rollup_rows, &dedup, since, newest_ms)
                    .await?;
            }
        }
        let all: Vec<&OutcomeEvent> = accepted.iter().flatten().copied().collect();
        metrics::counter!("serin_outcomes_total", "result" => "accepted")
            .increment(all.len() as u64);
        count_accepted(&all);
        let windows: usize = accepted_windows.iter().map(Vec::len).sum();
        if windows > 0 {
            metrics::counter!("serin_outcome_windows_total", "result" => "accepted")
                .increment(windows as u64);
        }
        Ok(tallies)
    }

    /// Why `event` is refused by its instance's rate limit, if it is; counts it otherwise.
    /// Why `n` requests of `instance` are refused by its rate limit, if they are; counts
    /// them otherwise.
    fn rate_limited(
        &self,
        inner: &mut Inner,
        instance: Option<&String>,
        n: u32,
        second: i64,
    ) -> Option<String> {
        let instance = instance?;
        if let Some(slot) = inner.instance_rate.get_mut(instance) {
            if slot.0 != second {
                *slot = (second, 0);
            }
            if slot.1.saturating_add(n) > INSTANCE_EVENTS_PER_SECOND {
                Some(format!(
                    "instance {instance} sent over {INSTANCE_EVENTS_PER_SECOND} events this second"
                ))
            } else {
                slot.1 += n;
                None
            }
        } else if inner.instance_rate.len() >= MAX_RATE_INSTANCES {
            Some(format!(
                "over {MAX_RATE_INSTANCES} instances reported this second; retry shortly"
            ))
        } else {
            if n > INSTANCE_EVENTS_PER_SECOND {
                return Some(format!(
                    "instance {instance} sent over {INSTANCE_EVENTS_PER_SECOND} events this second"
                ));
            }
            // Cloned only for an instance new to the map, not once per event.
            inner.instance_rate.insert(instance.clone(), (second, n));
            None
        }
    }

    /// Applies every journal row past the cursor under `epoch` (see [`Guardrails::ingest`]).
    /// `Fenced` when a newer leader exists; other failures are left to the consumer task to
    /// retry (the direct batch then goes ahead: it cannot wait on them).
    async fn consume_pending(&self, inner: &mut Inner, epoch: i64) -> Result<(), StoreError> {
        loop {
            match self.consume_journal_locked(inner, epoch).await {
                Ok(n) if n >= JOURNAL_CHUNK_ROWS => {}
                Ok(_) => return Ok(()),
                Err(e) => {
                    if let Ok(l) = self.store.leadership().await
                        && l.epoch != epoch
                    {
                        return Err(StoreError::Fenced {
                            epoch,
                            current: l.epoch,
                        });
                    }
                    tracing::warn!(error = %e.message, "applying journalled outcomes before a batch failed; the consumer retries");
                    return Ok(());
                }
            }
        }
    }

    /// Where this replica keeps a batch's monitor evidence right now.
    fn evidence_path(&self) -> EvidencePath {
        if self.store.backend_name() == "sqlite" {
            // One server per data directory, leading or not (`--no-release-controller`):
            // nobody else could hold a newer copy of its monitors.
            return EvidencePath::Direct(None);
        }
        match self.leader.get().and_then(|l| l.epoch()) {
            Some(epoch) => EvidencePath::Direct(Some(epoch)),
            None => EvidencePath::Journal,
        }
    }

    /// The leader's (and SQLite's) path: judges the batches on copies of the monitors, one
    /// after another, latching after each as if it had been stored alone, and stores
    /// monitors, rollups and dedup keys in one transaction (fenced by `epoch`), and only then
    /// swaps the copies into memory.
    #[allow(clippy::too_many_arguments)] // one caller; the group's parts, already split
    async fn ingest_direct(
        &self,
        inner: &mut Inner,
        batches: &[Batch<'_>],
        rollup_rows: &[RollupRow],
        dedup: &[(&str, &str)],
        since: i64,
        now_ms: i64,
        epoch: Option<i64>,
    ) -> Result<Result<(), StoreError>, ApiError> {
        let mut monitors: HashMap<MonitorKey, MonitorEntry> = HashMap::new();
        let mut latching: Vec<MonitorKey> = Vec::new();
        for b in batches {
            self.observe_batch(inner, b.events, b.at_ms, &mut monitors)
                .await?;
            self.observe_windows(inner, b.windows, b.at_ms, &mut monitors)
                .await?;
            for key in latch_all(&mut monitors, b.at_ms) {
                if !latching.contains(&key) {
                    latching.push(key);
                }
            }
        }
        let mut monitor_rows = Vec::with_capacity(monitors.len());
        for (key, m) in &monitors {
            monitor_rows.push(m.row(key)?);
        }
        let quarantine = &self.quarantine;
        let merge = |stored: &RollupRow, delta: &str| merge_rollup(quarantine, stored, delta);
        let stored = self
            .while_latching(&latching, async {
                self.store
                    .store_outcome_batch(
                        BatchEvidence::Monitors {
                            rows: &monitor_rows,
                            epoch,
                        },
                        rollup_rows,
                        merge,
                        dedup,
                        since,
                        now_ms,
                    )
                    .await
            })
            .await;
        if let Err(e) = stored {
            return Ok(Err(e));
        }
        self.commit_monitors(inner, monitors, now_ms, !latching.is_empty());
        Ok(Ok(()))
    }

    /// The path of a PostgreSQL replica that does not lead: dedup keys, rollups and the
    /// accepted events (for the leader to apply) in one transaction; no monitor is written
    /// from this replica's copy. A group's batches go in as one journal row, which the
    /// leader judges as one batch received at the newest of their times.
    async fn ingest_journalled(
        &self,
        batches: &[Batch<'_>],
        rollup_rows: &[RollupRow],
        dedup: &[(&str, &str)],
        since: i64,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let all: Vec<&OutcomeEvent> = batches
            .iter()
            .flat_map(|b| b.events.iter().copied())
            .collect();
        let windows: Vec<&OutcomeWindow> = batches
            .iter()
            .flat_map(|b| b.windows.iter().copied())
            .collect();
        let events = encode_journal(&all, &windows)?;
        let quarantine = &self.quarantine;
        let merge = |stored: &RollupRow, delta: &str| merge_rollup(quarantine, stored, delta);
        self.store
            .store_outcome_batch(
                BatchEvidence::Journal { events: &events },
                rollup_rows,
                merge,
                dedup,
                since,
                now_ms,
            )
            .await
            .map_err(store_error)?;
        metrics::counter!("serin_outcome_journal_appended_total").increment(1);
        Ok(())
    }

    /// Applies accepted events to copies of the monitors they touch (taken from memory into
    /// `monitors` on first touch; created with the agent's thresholds when new). The direct
    /// path and the journal consumer both judge through here, so a batch counts the same
    /// whichever replica received it.
    async fn observe_batch(
        &self,
        inner: &mut Inner,
        accepted: &[&OutcomeEvent],
        now_ms: i64,
        monitors: &mut HashMap<MonitorKey, MonitorEntry>,
    ) -> Result<(), ApiError> {
        let mut unconfigured: HashSet<(String, String)> = HashSet::new();
        // The monitor key of the last canary event: a batch is mostly one agent's, so the key
        // is built (three strings) when it changes rather than once per event.
        let mut canary_key: MonitorKey = Default::default();
        // The monitors a stable outcome of (env, agent, bundle) counts towards, worked out
        // once per batch rather than per event by scanning every monitor. Forgotten whenever a
        // monitor joins the batch's copies, so a stable outcome counts towards exactly the
        // monitors known when it is observed, as it always has.
        let mut stable_targets: HashMap<(&str, &str, &str), Vec<MonitorKey>> = HashMap::new();
        // Each agent's waved release, looked up once per batch.
        let mut waved_of: HashMap<(&str, &str), Option<Arc<Waved>>> = HashMap::new();
        for e in accepted {
            let waved = match waved_of.get(&(e.env.as_str(), e.agent.as_str())) {
                Some(w) => w.clone(),
                None => {
                    let w = self.waved(&e.env, &e.agent).await?;
                    waved_of.insert((e.env.as_str(), e.agent.as_str()), w.clone());
                    w
                }
            };
            let wave = waved.as_deref().and_then(|w| {
                w.wave_of(
                    e.instance.as_deref(),
                    e.region.as_deref(),
                    e.pool.as_deref(),
                )
            });
            match e.arm {
                Arm::Canary => {
                    let wave_key = match (&waved, wave) {
                        (Some(w), Some(name)) if w.candidate == e.bundle => {
                            Some(w.key(&e.env, &e.agent, name))
                        }
                        // A waved release's canary outside every wave was not routed by it.
                        (Some(w), None) if w.candidate == e.bundle => continue,
                        _ => None,
                    };
                    if let Some(k) = wave_key {
                        canary_key = k;
                    } else if canary_key.0 != e.env
                        || canary_key.1 != e.agent
                        || canary_key.2 != e.bundle
                    {
                        canary_key = (e.env.clone(), e.agent.clone(), e.bundle.clone());
                    }
                    let mkey = &canary_key;
                    if inner.quarantined.contains(mkey) {
                        continue;
                    }
                    if !monitors.contains_key(mkey) {
                        if !self
                            .take_monitor(inner, mkey, now_ms, monitors, &mut unconfigured)
                            .await?
                        {
                            continue;
                        }
                        stable_targets.clear();
                    }
                    if let Some(m) = monitors.get_mut(mkey)
                        && !m.is_excluded(e)
                    {
                        m.monitor.observe(e);
                        m.last_canary_ms = m.last_canary_ms.max(now_ms);
                    }
                }
                Arm::Stable => {
                    let keys = stable_targets
                        .entry((e.env.as_str(), e.agent.as_str(), e.bundle.as_str()))
                        .or_insert_with(|| {
                            inner
                                .monitors
                                .keys()
                                .chain(monitors.keys())
                                .filter(|(env, agent, cand)| {
                                    env == &e.env && agent == &e.agent && cand != &e.bundle
                                })
                                .cloned()
                                .collect::<HashSet<_>>()
                                .into_iter()
                                .collect()
                        });
                    for mkey in keys.iter() {
                        if !counts_towards(mkey, waved.as_deref(), wave) {
                            continue;
                        }
                        if !monitors.contains_key(mkey)
                            && let Some(m) = inner.monitors.get(mkey)
                        {
                            monitors.insert(mkey.clone(), m.clone());
                        }
                        if let Some(m) = monitors.get_mut(mkey)
                            && !m.is_excluded(e)
                        {
                            m.monitor.observe(e);
                        }
                    }
                }
                Arm::Killed => {}
            }
        }
        Ok(())
    }

    /// Puts a copy of canary monitor `mkey` into `monitors`: from memory, from its stored row
    /// (begun on another replica or kept by an earlier leader: the row holds its share
    /// schedule and evidence so far, which a fresh monitor would overwrite), or new with the
    /// agent's thresholds. `false` when there is none to feed (no guardrails configured, or
    /// an unreadable row).
    async fn take_monitor(
        &self,
        inner: &mut Inner,
        mkey: &MonitorKey,
        now_ms: i64,
        monitors: &mut HashMap<MonitorKey, MonitorEntry>,
        unconfigured: &mut HashSet<(String, String)>,
    ) -> Result<bool, ApiError> {
        let pair = (mkey.0.clone(), mkey.1.clone());
        let entry = match inner.monitors.get(mkey) {
            Some(m) => m.clone(),
            None if unconfigured.contains(&pair) => return Ok(false),
            None => match self.stored_monitor(inner, mkey, now_ms).await? {
                StoredMonitor::Live(entry) => *entry,
                StoredMonitor::Unreadable => return Ok(false),
                StoredMonitor::Absent => {
                    let Some(config) = self.config_for(&mkey.0, &mkey.1).await? else {
                        unconfigured.insert(pair);
                        return Ok(false);
                    };
                    MonitorEntry {
                        monitor: Monitor::new(config),
                        created_at_ms: now_ms,
                        last_canary_ms: now_ms,
                        excluded: Arc::default(),
                        excluded_before: None,
                    }
                }
            },
        };
        monitors.insert(mkey.clone(), entry);
        Ok(true)
    }

    /// Applies accepted windows to copies of the monitors they touch, as
    /// [`Guardrails::observe_batch`] does events: a window's canary part counts towards its
    /// bundle's monitor, its stable part towards every monitor of the agent whose candidate
    /// is another bundle, both at one step ([`Monitor::observe_window`]). Windows carry no
    /// tenants: an SDK sends the outcomes of a release's excluded tenants as events.
    async fn observe_windows(
        &self,
        inner: &mut Inner,
        windows: &[&OutcomeWindow],
        now_ms: i64,
        monitors: &mut HashMap<MonitorKey, MonitorEntry>,
    ) -> Result<(), ApiError> {
        let mut unconfigured: HashSet<(String, String)> = HashSet::new();
        for w in windows {
            let waved = self.waved(&w.env, &w.agent).await?;
            let wave = waved.as_deref().and_then(|x| {
                x.wave_of(
                    w.instance.as_deref(),
                    w.region.as_deref(),
                    w.pool.as_deref(),
                )
            });
            let mut keys: Vec<MonitorKey> = Vec::new();
            if let Some(part) = w.arms.iter().find(|a| a.arm == Arm::Canary) {
                let mkey = match (&waved, wave) {
                    (Some(x), Some(name)) if x.candidate == part.bundle => {
                        x.key(&w.env, &w.agent, name)
                    }
                    _ => (w.env.clone(), w.agent.clone(), part.bundle.clone()),
                };
                let outside = waved
                    .as_deref()
                    .is_some_and(|x| x.candidate == part.bundle && wave.is_none());
                if !outside
                    && !inner.quarantined.contains(&mkey)
                    && (monitors.contains_key(&mkey)
                        || self
                            .take_monitor(inner, &mkey, now_ms, monitors, &mut unconfigured)
                            .await?)
                {
                    keys.push(mkey);
                }
            }
            if let Some(part) = w.arms.iter().find(|a| a.arm == Arm::Stable) {
                let mut others: Vec<MonitorKey> = inner
                    .monitors
                    .keys()
                    .chain(monitors.keys())
                    .filter(|(env, agent, cand)| {
                        env == &w.env && agent == &w.agent && cand != &part.bundle
                    })
                    .filter(|k| counts_towards(k, waved.as_deref(), wave))
                    .cloned()
                    .collect();
                others.sort();
                others.dedup();
                for mkey in others {
                    if !keys.contains(&mkey) {
                        keys.push(mkey);
                    }
                }
            }
            for mkey in keys {
                if !monitors.contains_key(&mkey)
                    && let Some(m) = inner.monitors.get(&mkey)
                {
                    monitors.insert(mkey.clone(), m.clone());
                }
                if let Some(m) = monitors.get_mut(&mkey) {
                    // A wave's monitor judges its candidate (the id without the wave).
                    let candidate = serin_core::release::split_comparison(&mkey.2).0;
                    m.monitor.observe_window(w, candidate);
                    if w.arms
                        .iter()
                        .any(|a| a.arm == Arm::Canary && a.bundle == candidate)
                    {
                        m.last_canary_ms = m.last_canary_ms.max(now_ms);
                    }
                }
            }
        }
        Ok(())
    }

    /// The stored row of a monitor not in memory, when it is recent enough to be live (an
    /// older one idled out, and a new canary outcome starts fresh evidence as it always has).
    /// An unreadable row is quarantined.
    async fn stored_monitor(
        &self,
        inner: &mut Inner,
        key: &MonitorKey,
        now_ms: i64,
    ) -> Result<StoredMonitor, ApiError> {
        let Some(row) = self.store.load_monitor(&key.0, &key.1, &key.2).await? else {
            return Ok(StoredMonitor::Absent);
        };
        if now_ms - row.updated_at_ms > MONITOR_IDLE_MS {
            return Ok(StoredMonitor::Absent);
        }
        match serde_json::from_str::<Monitor>(&row.state) {
            Ok(monitor) => Ok(StoredMonitor::Live(Box::new(MonitorEntry {
                monitor,
                created_at_ms: row.created_at_ms,
                last_canary_ms: row.updated_at_ms,
                excluded: Arc::default(),
                excluded_before: None,
            }))),
            Err(e) => {
                quarantine_monitor(&self.quarantine, inner, key.clone(), &e, &row.state);
                Ok(StoredMonitor::Unreadable)
            }
        }
    }

    /// Runs a store write with `latching` announced as failed (see [`Guardrails::has_failed`]):
    /// a promotion committed while the write is in flight would come after a fail it never saw.
    async fn while_latching<T>(
        &self,
        latching: &[MonitorKey],
        write: impl std::future::Future<Output = T>,
    ) -> T {
        if latching.is_empty() {
            return write.await;
        }
        self.latching_set().extend(latching.iter().cloned());
        let out = write.await;
        let mut set = self.latching_set();
        for key in latching {
            set.remove(key);
        }
        out
    }

    /// Swaps stored monitors into memory and the views, and wakes the controller when they
    /// latched a fail.
    fn commit_monitors(
        &self,
        inner: &mut Inner,
        monitors: HashMap<MonitorKey, MonitorEntry>,
        now_ms: i64,
        latched: bool,
    ) {
        let fresh: Vec<(MonitorKey, View)> = monitors
            .iter()
            .map(|(k, m)| (k.clone(), (m.last_canary_ms, Arc::new(m.monitor.clone()))))
            .collect();
        inner.monitors.extend(monitors);
        inner
            .monitors
            .retain(|_, m| now_ms - m.last_canary_ms <= MONITOR_IDLE_MS);
        self.publish_views(fresh, Some(&inner.monitors));
        if latched {
            // The controller acts on a latched fail now, not at its next periodic tick.
            self.latches
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            self.latched.notify_one();
        }
    }

    /// The leader's consumer: applies the journal rows past the stored cursor (one bounded
    /// chunk, in id order) to its monitors exactly as the direct path would have (one latch per
    /// journalled batch, judged at the time it was received), then stores the monitors and the
    /// new cursor in one transaction under `epoch`. Answers how many rows it consumed.
    pub async fn consume_journal(&self, epoch: i64) -> Result<usize, ApiError> {
        let mut inner = self.inner.lock().await;
        self.apply_pending_shares(&mut inner).await?;
        self.consume_journal_locked(&mut inner, epoch).await
    }

    async fn consume_journal_locked(
        &self,
        inner: &mut Inner,
        epoch: i64,
    ) -> Result<usize, ApiError> {
        let (_, rows) = self
            .store
            .journal_pending(JOURNAL_CHUNK_ROWS as i64)
            .await?;
        let Some(last) = rows.last().map(|r| r.id) else {
            return Ok(0);
        };
        let mut monitors: HashMap<MonitorKey, MonitorEntry> = HashMap::new();
        let mut latching: Vec<MonitorKey> = Vec::new();
        let mut newest_ms = 0;
        for row in &rows {
            let (events, windows) = match decode_journal(&row.events) {
                Ok(decoded) => decoded,
                Err(e) => {
                    // Skipped, not retried forever: the row stays in the store (until pruned)
                    // and in the quarantine listing, and the outcomes after it still count.
                    self.quarantine.record(
                        quarantine::OUTCOME_JOURNAL,
                        &row.id.to_string(),
                        &e.to_string(),
                        &row.events,
                    );
                    continue;
                }
            };
            let accepted: Vec<&OutcomeEvent> = events.iter().collect();
            self.observe_batch(inner, &accepted, row.received_ms, &mut monitors)
                .await?;
            let windows: Vec<&OutcomeWindow> = windows.iter().collect();
            self.observe_windows(inner, &windows, row.received_ms, &mut monitors)
                .await?;
            for key in latch_all(&mut monitors, row.received_ms) {
                if !latching.contains(&key) {
                    latching.push(key);
                }
            }
            newest_ms = newest_ms.max(row.received_ms);
        }
        let mut monitor_rows = Vec::with_capacity(monitors.len());
        for (key, m) in &monitors {
            monitor_rows.push(m.row(key)?);
        }
        self.while_latching(
            &latching,
            self.store.consume_journal(&monitor_rows, last, epoch),
        )
        .await?;
        let now_ms = crate::clock::now_ms().max(newest_ms);
        self.commit_monitors(inner, monitors, now_ms, !latching.is_empty());
        metrics::counter!("serin_outcome_journal_consumed_total").increment(rows.len() as u64);
        Ok(rows.len())
    }

    /// Consumes the journal until nothing is left past the cursor: a new leader runs this
    /// before it resumes releases, so no evidence accepted under the old one is left out of
    /// the verdicts it acts on.
    pub async fn catch_up_journal(&self, epoch: i64) -> Result<(), ApiError> {
        while self.consume_journal(epoch).await? >= JOURNAL_CHUNK_ROWS {}
        Ok(())
    }

    /// On a replica that does not lead: takes the monitor rows written since revision `rev`
    /// (by the leader, or a command anywhere) into memory and the views, so this replica's
    /// verdicts are the leader's stored ones, not its own stale copy. Answers the revision
    /// read up to. The leader's memory is the source of those rows, so it skips this.
    pub async fn refresh_from_store(&self, rev: i64) -> Result<i64, ApiError> {
        let changes = self.store.monitors_changed_since(rev).await?;
        if changes.rows.is_empty() {
            return Ok(changes.rev);
        }
        let now_ms = crate::clock::now_ms();
        let mut inner = self.inner.lock().await;
        if self.leader.get().is_some_and(|l| l.is_leader()) {
            return Ok(changes.rev);
        }
        let mut fresh = Vec::new();
        for row in changes.rows {
            if now_ms - row.updated_at_ms > MONITOR_IDLE_MS {
                continue;
            }
            let key = (row.env, row.agent, row.candidate);
            match serde_json::from_str::<Monitor>(&row.state) {
                Ok(monitor) => {
                    let entry = inner
                        .monitors
                        .entry(key.clone())
                        .or_insert_with(|| MonitorEntry {
                            monitor: monitor.clone(),
                            created_at_ms: row.created_at_ms,
                            last_canary_ms: row.updated_at_ms,
                            excluded: Arc::default(),
                            excluded_before: None,
                        });
                    entry.monitor = monitor;
                    entry.last_canary_ms = row.updated_at_ms;
                    fresh.push((key, (entry.last_canary_ms, Arc::new(entry.monitor.clone()))));
                }
                Err(e) => {
                    quarantine_monitor(&self.quarantine, &mut inner, key, &e, &row.state);
                }
            }
        }
        self.publish_views(fresh, Some(&inner.monitors));
        Ok(changes.rev)
    }

    /// Starts fresh evidence for a release's candidate with the plan's
    /// thresholds (replacing any earlier comparison of the same bundle), and
    /// keeps it in memory for as long as the release runs. Outcomes routed
    /// under `current_version` or earlier predate the release and are never
    /// judged; later versions route no canary until the controller tells the
    /// first step's share ([`Guardrails::set_share`]).
    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    pub async fn begin(
        &self,
        env: &str,
        agent: &str,
        candidate: &str,
        config: GuardrailConfig,
        current_version: u64,
        excluded: Arc<BTreeSet<String>>,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let mut inner = self.inner.lock().await;
        let key = (env.to_owned(), agent.to_owned(), candidate.to_owned());
        let mut monitor = Monitor::new(config);
        monitor.set_canary_share_from(current_version.saturating_add(1), 0.0);
        let entry = MonitorEntry {
            monitor,
            created_at_ms: now_ms,
            last_canary_ms: now_ms,
            excluded,
            excluded_before: None,
        };
        self.store.save_outcomes(&[entry.row(&key)?], &[]).await?;
        // A new release of this candidate replaces an unreadable row: the
        // operator's act that ends its quarantine.
        if inner.quarantined.remove(&key) {
            self.quarantine.clear(
                quarantine::MONITOR,
                &quarantine::monitor_key(env, agent, candidate),
            );
        }
        inner.pinned.insert(key.clone());
        self.publish_views(
            vec![(
                key.clone(),
                (entry.last_canary_ms, Arc::new(entry.monitor.clone())),
            )],
            None,
        );
        inner.monitors.insert(key, entry);
        Ok(())
    }

    /// The running release's pooled monitor key for (env, agent), if any.
    fn running_key(inner: &Inner, env: &str, agent: &str) -> Option<MonitorKey> {
        inner
            .pinned
            .iter()
            .find(|(e, a, c)| e == env && a == agent && !c.contains('~'))
            .cloned()
    }

    /// How long an agent-side approval request of (env, agent) may wait before the running
    /// release's approval guardrail counts it overdue; `None` when nothing judges approvals.
    pub async fn approval_wait_ms(&self, req: &ApprovalRequest) -> Option<u64> {
        let inner = self.inner.lock().await;
        let key = Self::running_key(&inner, &req.env, &req.agent)?;
        inner.monitors.get(&key)?.monitor.approval_wait_ms()
    }

    /// The leader's count of approval signals: every agent-side request that owes one (filed,
    /// denied or expired, overdue) is counted into the running release's pooled monitor as
    /// canary (its bundle is the candidate) or control, at the share of the snapshot version
    /// it decided under, and latched like a batch of outcomes. The monitors and the requests'
    /// `counted` marks are written in one transaction, so a signal counts once. Requests of an
    /// agent with no running release, or without a snapshot version, are marked and not
    /// judged. Returns how many requests were looked at.
    pub async fn count_approval_signals(&self, now_ms: i64) -> Result<usize, ApiError> {
        let rows = self
            .store
            .approvals_owing_signals(crate::approvals::SIGNAL_BATCH as i64)
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut inner = self.inner.lock().await;
        let mut changed: HashMap<MonitorKey, Monitor> = HashMap::new();
        let mut marks: HashMap<String, Counted> = HashMap::new();
        let mut fresh_keys: HashSet<String> = HashSet::new();
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.id.clone());
            let Ok(req) = crate::approvals::from_row(row) else {
                continue;
            };
            let (owed, next) = req.owed();
            marks.insert(req.id.clone(), next.counted);
            let (Some(version), Some(bundle)) = (req.snapshot_version, req.bundle) else {
                continue;
            };
            let Some(key) = Self::running_key(&inner, &req.env, &req.agent) else {
                continue;
            };
            let Some(entry) = inner.monitors.get(&key) else {
                continue;
            };
            let canary = key.2 == format!("{}@{bundle}", req.agent);
            let monitor = changed.entry(key).or_insert_with(|| entry.monitor.clone());
            // One event per agent request and signal: an agent asking three times for one
            // request is one request that needed a person.
            let request = req
                .details
                .get("request_id")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| req.id.clone(), str::to_owned);
            let seen = self
                .approval_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for o in owed {
                let signal = match o {
                    Owed::Requested => ApprovalSignal::Requested,
                    Owed::Denied => ApprovalSignal::Denied,
                    Owed::Overdue => ApprovalSignal::Overdue,
                };
                let key = format!("{}/{}/{bundle}/{request}/{o:?}", req.env, req.agent);
                // Remembered only once the count is stored (below), so a failed write is
                // counted again at the next sweep rather than lost.
                if !seen.keys.contains(&key) && fresh_keys.insert(key) {
                    monitor.observe_approval(canary, signal, version);
                }
            }
        }
        let mut latched = false;
        let mut monitor_rows = Vec::with_capacity(changed.len());
        for (key, monitor) in &mut changed {
            latched |= monitor.latch(now_ms);
            if let Some(entry) = inner.monitors.get(key) {
                monitor_rows.push(MonitorRow {
                    env: key.0.clone(),
                    agent: key.1.clone(),
                    candidate: key.2.clone(),
                    state: serde_json::to_string(&*monitor).map_err(ApiError::internal)?,
                    created_at_ms: entry.created_at_ms,
                    updated_at_ms: entry.last_canary_ms,
                });
            }
        }
        self.store
            .settle_approval_signals(&monitor_rows, &ids, |row| {
                let mut r = crate::approvals::from_row(row).ok()?;
                if let Some(c) = marks.get(&r.id) {
                    r.counted.requested |= c.requested;
                    r.counted.denied |= c.denied;
                    r.counted.overdue |= c.overdue;
                }
                let owes = !r.owed().0.is_empty();
                Some((crate::approvals::to_row(&r).ok()?, owes))
            })
            .await?;
        {
            let mut seen = self
                .approval_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for k in fresh_keys {
                seen.first(k);
            }
        }
        let mut fresh = Vec::with_capacity(changed.len());
        for (key, monitor) in changed {
            if let Some(entry) = inner.monitors.get_mut(&key) {
                entry.monitor = monitor;
                fresh.push((key, (entry.last_canary_ms, Arc::new(entry.monitor.clone()))));
            }
        }
        self.publish_views(fresh, None);
        if latched {
            self.latches
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            self.latched.notify_one();
        }
        Ok(rows.len())
    }

    /// Makes committed monitors visible to readers; with `live`, also forgets
    /// views of monitors that left memory.
    fn publish_views(
        &self,
        fresh: Vec<(MonitorKey, View)>,
        live: Option<&HashMap<MonitorKey, MonitorEntry>>,
    ) {
        let mut views = match self.views.write() {
            Ok(v) => v,
            // A panic while holding it cannot leave a half-written map entry.
            Err(poisoned) => poisoned.into_inner(),
        };
        views.extend(fresh);
        if let Some(live) = live {
            views.retain(|k, _| live.contains_key(k));
        }
    }

    fn view(&self, key: &MonitorKey) -> Option<View> {
        let views = match self.views.read() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        views.get(key).cloned()
    }

    /// Tells the release's monitor the canary's traffic share from a snapshot
    /// version on (at every transition, so every outcome is judged at the
    /// weight it was routed under). Unpins it when `exposure` is None. Waits
    /// until the monitor has it, durably; the controller uses
    /// [`Guardrails::note_share`] instead.
    pub async fn set_share(
        &self,
        env: &str,
        agent: &str,
        candidate: &str,
        exposure: Option<Exposure>,
    ) -> Result<(), ApiError> {
        self.note_share(env, agent, candidate, exposure);
        let mut inner = self.inner.lock().await;
        self.apply_pending_shares(&mut inner).await
    }

    /// Records an exposure without waiting for ingestion. Call it after the
    /// version is committed and before it is published: the next ingestion
    /// applies it before judging any outcome, and so before any outcome routed
    /// under that version. [`Guardrails::flush_shares`] makes it durable.
    pub fn note_share(&self, env: &str, agent: &str, candidate: &str, exposure: Option<Exposure>) {
        let key = (env.to_owned(), agent.to_owned(), candidate.to_owned());
        self.pending_queue().push((key, exposure));
    }

    /// Applies and stores noted exposures in the background.
    pub fn flush_shares(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut inner = this.inner.lock().await;
            if let Err(e) = this.apply_pending_shares(&mut inner).await {
                // Still queued: the next ingestion or flush stores them.
                tracing::warn!(error = %e.message, "storing a release's canary share failed");
            }
        });
    }

    fn pending_queue(&self) -> std::sync::MutexGuard<'_, Vec<(MonitorKey, Option<Exposure>)>> {
        match self.pending_shares.lock() {
            Ok(q) => q,
            // Pushing or taking a Vec cannot leave it half-changed.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Applies every noted exposure in order. On a store error the unapplied
    /// ones go back to the front of the queue (applying one twice is harmless:
    /// a share is keyed by its version).
    async fn apply_pending_shares(&self, inner: &mut Inner) -> Result<(), ApiError> {
        let queued = std::mem::take(&mut *self.pending_queue());
        let mut queued = queued.into_iter();
        while let Some((key, exposure)) = queued.next() {
            if let Err(e) = self.apply_exposure(inner, &key, exposure.clone()).await {
                let mut rest: Vec<_> = std::iter::once((key, exposure)).chain(queued).collect();
                let mut q = self.pending_queue();
                rest.append(&mut q);
                *q = rest;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn apply_exposure(
        &self,
        inner: &mut Inner,
        key: &MonitorKey,
        exposure: Option<Exposure>,
    ) -> Result<(), ApiError> {
        let key = key.clone();
        let Some(exposure) = exposure else {
            inner.pinned.remove(&key);
            return Ok(());
        };
        if inner.quarantined.contains(&key) {
            // Held with needs_attention: no fresh monitor replaces the unreadable one.
            return Ok(());
        }
        let mut entry = match inner.monitors.get(&key) {
            Some(e) => e.clone(),
            // Idled out of memory (e.g. a long pause before a restart): the
            // store still has it.
            None => {
                let row = self
                    .store
                    .load_monitors()
                    .await?
                    .into_iter()
                    .find(|r| r.env == key.0 && r.agent == key.1 && r.candidate == key.2);
                let Some(row) = row else { return Ok(()) };
                match serde_json::from_str(&row.state) {
                    Ok(monitor) => MonitorEntry {
                        monitor,
                        created_at_ms: row.created_at_ms,
                        last_canary_ms: row.updated_at_ms,
                        excluded: Arc::default(),
                        excluded_before: None,
                    },
                    Err(e) => {
                        quarantine_monitor(&self.quarantine, inner, key, &e, &row.state);
                        return Ok(());
                    }
                }
            }
        };
        entry
            .monitor
            .set_canary_share_from(exposure.version, exposure.share);
        entry.excluded = exposure.excluded;
        if exposure.exclusion_dropped {
            // Versions before the one that dropped the exclusion still excluded; after a
            // restart the final step's share entry marks that version.
            let dropped_at = entry
                .monitor
                .share_since(exposure.version)
                .unwrap_or(exposure.version);
            entry.excluded_before = Some(
                entry
                    .excluded_before
                    .map_or(dropped_at, |v| v.min(dropped_at)),
            );
        }
        self.store.save_outcomes(&[entry.row(&key)?], &[]).await?;
        inner.pinned.insert(key.clone());
        self.publish_views(
            vec![(
                key.clone(),
                (entry.last_canary_ms, Arc::new(entry.monitor.clone())),
            )],
            None,
        );
        inner.monitors.insert(key, entry);
        Ok(())
    }

    /// Replaces every monitor in memory with its stored row. A replica taking the release
    /// controller's leadership calls this before resuming releases: while it did not lead,
    /// others moved the stored monitors on, and its older copy would otherwise be what
    /// `set_share` writes back over them (a latched fail included). Monitors not in memory
    /// are read when first needed, as always; an unreadable row is quarantined.
    pub async fn reload_monitors(&self) -> Result<(), ApiError> {
        let mut inner = self.inner.lock().await;
        let mut fresh = Vec::new();
        for row in self.store.load_monitors().await? {
            let key = (row.env, row.agent, row.candidate);
            if !inner.monitors.contains_key(&key) {
                continue;
            }
            match serde_json::from_str::<Monitor>(&row.state) {
                Ok(monitor) => {
                    if let Some(entry) = inner.monitors.get_mut(&key) {
                        entry.monitor = monitor;
                        entry.last_canary_ms = entry.last_canary_ms.max(row.updated_at_ms);
                        fresh.push((key, (entry.last_canary_ms, Arc::new(entry.monitor.clone()))));
                    }
                }
                Err(e) => {
                    quarantine_monitor(&self.quarantine, &mut inner, key, &e, &row.state);
                }
            }
        }
        self.publish_views(fresh, Some(&inner.monitors));
        Ok(())
    }

    /// The waved release of `agent` in `env`, if one runs: read from the store at most once
    /// per [`WAVED_TTL_MS`] (the controller also sets it at once, [`Guardrails::set_waved`]).
    async fn waved(&self, env: &str, agent: &str) -> Result<Option<Arc<Waved>>, ApiError> {
        let now = crate::clock::now_ms();
        let key = (env.to_owned(), agent.to_owned());
        if let Some((at, w)) = self.waved_map().get(&key)
            && now.saturating_sub(*at) < WAVED_TTL_MS
        {
            return Ok(w.clone());
        }
        let found = match self.store.active_release(env, agent).await? {
            Some(row) => serde_json::from_str::<serin_core::release::Release>(&row.state)
                .ok()
                .and_then(|r| Waved::of(&r)),
            None => None,
        };
        self.waved_map().insert(key, (now, found.clone()));
        Ok(found)
    }

    /// What the controller knows at once: `agent`'s release in `env` now routes these waves
    /// (`None`: it has none, or it ended).
    pub fn set_waved(&self, env: &str, agent: &str, waved: Option<Arc<Waved>>) {
        let now = crate::clock::now_ms();
        self.waved_map()
            .insert((env.to_owned(), agent.to_owned()), (now, waved));
    }

    fn waved_map(&self) -> std::sync::MutexGuard<'_, WavedMap> {
        match self.waved.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Each wave's own comparison of a waved release (in wave order).
    pub async fn wave_evidence(
        &self,
        release: &serin_core::release::Release,
    ) -> Vec<serin_core::release::WaveEvidence> {
        let mut out = Vec::with_capacity(release.waves.len());
        for w in &release.waves {
            let key = (
                release.env.clone(),
                release.agent.clone(),
                serin_core::release::wave_comparison(&release.candidate.id, &w.name),
            );
            let (canary_requests, requests, verdicts) = match self.view(&key) {
                Some((_, m)) => (
                    m.canary().requests,
                    m.canary().requests.saturating_add(m.control().requests),
                    m.verdicts(),
                ),
                None => (0, 0, Vec::new()),
            };
            out.push(serin_core::release::WaveEvidence {
                wave: w.name.clone(),
                canary_requests,
                requests,
                verdicts,
            });
        }
        out
    }

    /// Canary requests and verdicts of one comparison (zero and none if it
    /// has no evidence yet).
    pub async fn evidence(
        &self,
        env: &str,
        agent: &str,
        candidate: &str,
    ) -> (u64, Vec<serin_core::guardrails::Verdict>) {
        let key = (env.to_owned(), agent.to_owned(), candidate.to_owned());
        match self.view(&key) {
            Some((_, m)) => (m.canary().requests, m.verdicts()),
            None => (0, Vec::new()),
        }
    }

    /// Every live comparison of `agent` in `env`, newest candidate first.
    pub async fn comparisons(&self, env: &str, agent: &str) -> Vec<(String, i64, Monitor)> {
        let views = match self.views.read() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out: Vec<(String, i64, Monitor)> = views
            .iter()
            .filter(|((e, a, _), _)| e == env && a == agent)
            .map(|((_, _, c), (last, m))| (c.clone(), *last, Monitor::clone(m)))
            .collect();
        drop(views);
        out.sort_by_key(|c| std::cmp::Reverse(c.1));
        out
    }
}

fn reject(report: &mut IngestReport, r: Rejection) {
    metrics::counter!("serin_outcomes_total", "result" => "rejected", "code" => r.code.clone())
        .increment(1);
    report.rejected += 1;
    if report.errors.len() < 100 {
        report.errors.push(r);
    }
}

fn rejection(
    index: usize,
    event: &OutcomeEvent,
    code: &str,
    field: &str,
    reason: String,
) -> Rejection {
    Rejection {
        index,
        request_id: Some(event.request_id.clone()),
        code: code.to_owned(),
        field: format!("/events/{index}{field}"),
        reason,
    }
}

/// A stored minute rollup plus a batch's delta. A stored row that cannot be
/// read is quarantined (its text kept in the registry and the log) and the
/// delta alone is written, so one bad row never refuses a minute of outcomes.
fn merge_rollup(quarantine: &Quarantine, stored: &RollupRow, delta: &str) -> String {
    let key = || {
        format!(
            "{}/{}/{}/{}/{}",
            stored.env, stored.agent, stored.bundle, stored.arm, stored.minute_ms
        )
    };
    let mut total: ArmAggregate = match serde_json::from_str(&stored.data) {
        Ok(a) => a,
        Err(e) => {
            quarantine.record(quarantine::ROLLUP, &key(), &e.to_string(), &stored.data);
            return delta.to_owned();
        }
    };
    let Ok(delta_agg) = serde_json::from_str::<ArmAggregate>(delta) else {
        return delta.to_owned();
    };
    total.merge(&delta_agg);
    serde_json::to_string(&total).unwrap_or_else(|_| delta.to_owned())
}

/// The per-minute rollup of one (env, agent, bundle, arm), for events and windows alike.
fn rollup<'a, 'm>(
    rollups: &'m mut HashMap<(i64, RollupKey<'a>), ArmAggregate>,
    minute: i64,
    env: &'a str,
    agent: &'a str,
    bundle: &'a str,
    arm: Arm,
) -> &'m mut ArmAggregate {
    rollups
        .entry((minute, (env, agent, bundle, arm_name(arm))))
        .or_default()
}

fn arm_name(arm: Arm) -> &'static str {
    match arm {
        Arm::Stable => "stable",
        Arm::Canary => "canary",
        Arm::Killed => "killed",
    }
}

/// Accepted events name an agent with bundles and a registered env (both checked before
/// acceptance), so these labels stay bounded by what is deployed.
fn count_accepted(accepted: &[&OutcomeEvent]) {
    let mut counts: std::collections::BTreeMap<(&str, &str, &'static str), u64> =
        std::collections::BTreeMap::new();
    for e in accepted {
        *counts
            .entry((&e.agent, &e.env, arm_name(e.arm)))
            .or_default() += 1;
    }
    for ((agent, env, arm), n) in counts {
        metrics::counter!("serin_outcomes_accepted_total", "agent" => agent.to_owned(), "env" => env.to_owned(), "arm" => arm)
            .increment(n);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn journalled_events_read_back_as_they_were_accepted() {
        assert_eq!(encode_events(&[]).unwrap(), "[]");
        assert!(decode_events("[]").unwrap().is_empty());
        let events: Vec<OutcomeEvent> = (0..3)
            .map(|i| {
                let version = [0, 7, u64::MAX][i];
                let arm = ["stable", "canary", "killed"][i];
                let at_ms = [i64::MIN, 0, i64::MAX][i];
                serde_json::from_value(serde_json::json!({
                    "request_id": format!("r-{i}"), "agent": "support", "env": "prod",
                    "snapshot_version": version, "bundle": "support@2",
                    "arm": arm, "latency_ms": 12.5,
                    "tenant": "ünïcödé \"t\"", "at_ms": at_ms,
                }))
                .unwrap()
            })
            .collect();
        let refs: Vec<&OutcomeEvent> = events.iter().collect();
        assert_eq!(
            decode_events(&encode_events(&refs).unwrap()).unwrap(),
            events
        );
        // A row that is not an array of events is an error (quarantined), never a panic.
        assert!(decode_events("{}").is_err());
        assert!(decode_events("[{\"request_id\": 1}]").is_err());
    }

    #[test]
    fn journal_rows_with_windows_read_back_and_rows_of_events_keep_their_form() {
        let event: OutcomeEvent = serde_json::from_value(serde_json::json!({
            "request_id": "r", "agent": "support", "env": "prod", "snapshot_version": 3,
            "bundle": "support@2", "arm": "canary", "latency_ms": 12.5,
        }))
        .unwrap();
        let window: OutcomeWindow = serde_json::from_value(serde_json::json!({
            "window_id": "i/1", "agent": "support", "env": "prod", "snapshot_version": 3,
            "arms": [{"arm": "stable", "bundle": "support@1", "latency_ms": [1.5, 0.0],
                      "cost_usd": [0.0, 1e-9], "errors": {"transient": 2}}],
        }))
        .unwrap();
        // Events alone: the bare array every earlier version wrote.
        let plain = encode_journal(&[&event], &[]).unwrap();
        assert!(plain.starts_with('['));
        assert_eq!(
            decode_journal(&plain).unwrap(),
            (vec![event.clone()], vec![])
        );
        let both = encode_journal(&[&event], &[&window]).unwrap();
        assert_eq!(decode_journal(&both).unwrap(), (vec![event], vec![window]));
        assert!(decode_journal("{\"events\": []}").is_err());
        assert!(decode_journal("7").is_err());
    }
}
