//! The snapshot being served and the decisions made from it. No async runtime
//! here: this is what the crate offers without the `client` feature.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use serde_json::Value;
use serin_engine::bundle::Bundle;
use serin_engine::decision::{
    Arm, BundleRef, CompiledSnapshot, Context, Decision, FlagEvaluation, Reason, Snapshot,
};

use crate::{AsContext, SdkError};

/// Local routing decisions from the snapshot currently served.
///
/// Cheap to clone (an `Arc` inside); every clone sees the same snapshot.
/// Reads never lock: [`Router::decide`] and [`Router::snapshot`] are a few
/// atomic operations plus the evaluation itself.
#[derive(Clone, Debug)]
pub struct Router {
    pub(crate) state: Arc<State>,
}

/// Where the served snapshot stands relative to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Freshness {
    /// Static router, or the stream is connected and the snapshot is current.
    Fresh,
    /// Loaded from the disk cache and not yet confirmed by the server.
    FromCache,
    /// The stream is down: the server may have moved on.
    Disconnected,
}

impl Freshness {
    fn stale(self) -> bool {
        self != Freshness::Fresh
    }
}

/// State shared by the router's readers and the stream task (its only
/// writer).
pub(crate) struct State {
    current: ArcSwapOption<CompiledSnapshot>,
    /// Static routers have no server to be stale against.
    live: bool,
    connected: AtomicBool,
    from_cache: AtomicBool,
    /// Unix ms of the last swap; `i64::MIN` for never.
    last_update_ms: AtomicI64,
    reconnects: AtomicU64,
    reports_sent: AtomicU64,
    reports_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl State {
    pub(crate) fn new(live: bool) -> State {
        State {
            current: ArcSwapOption::empty(),
            live,
            connected: AtomicBool::new(false),
            from_cache: AtomicBool::new(false),
            last_update_ms: AtomicI64::new(i64::MIN),
            reconnects: AtomicU64::new(0),
            reports_sent: AtomicU64::new(0),
            reports_failed: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn current(&self) -> Option<Arc<CompiledSnapshot>> {
        self.current.load_full()
    }

    pub(crate) fn version(&self) -> Option<u64> {
        self.current.load().as_ref().map(|s| s.version())
    }

    /// Swaps `snapshot` in. `from_cache` marks it stale until the stream
    /// connects.
    pub(crate) fn install(&self, snapshot: Arc<CompiledSnapshot>, from_cache: bool) {
        self.current.store(Some(snapshot));
        self.from_cache.store(from_cache, Ordering::Release);
        self.last_update_ms.store(now_ms(), Ordering::Release);
    }

    /// The stream connected: whatever we serve is current or about to be
    /// replaced by the server's first event.
    #[cfg(feature = "client")]
    pub(crate) fn set_connected(&self, connected: bool) {
        if connected {
            self.from_cache.store(false, Ordering::Release);
        }
        self.connected.store(connected, Ordering::Release);
    }

    #[cfg(feature = "client")]
    pub(crate) fn count_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one applied-version report the server took (`sent`) or that
    /// failed.
    #[cfg(feature = "client")]
    pub(crate) fn count_report(&self, sent: bool) {
        let counter = if sent {
            &self.reports_sent
        } else {
            &self.reports_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(feature = "client")]
    pub(crate) fn set_error(&self, error: String) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(error);
        }
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn freshness(&self) -> Freshness {
        if !self.live {
            Freshness::Fresh
        } else if !self.connected.load(Ordering::Acquire) {
            if self.from_cache.load(Ordering::Acquire) {
                Freshness::FromCache
            } else {
                Freshness::Disconnected
            }
        } else {
            Freshness::Fresh
        }
    }
}

/// Summarises instead of dumping every bundle of the snapshot.
impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("version", &self.version())
            .field("live", &self.live)
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .field("from_cache", &self.from_cache.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How the SDK is doing, for a readiness probe or a dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The snapshot stream is connected right now.
    pub connected: bool,
    /// Decisions are being made from a snapshot that may be behind the
    /// server's (loaded from disk and not yet confirmed, or the stream is
    /// down). Always `false` for a static [`Router::from_snapshot`].
    pub stale: bool,
    /// The version served, if any.
    pub version: Option<u64>,
    /// Unix milliseconds when the served snapshot was swapped in (or loaded
    /// from the disk cache).
    pub last_update_ms: Option<i64>,
    /// How many times the stream task has tried to connect again after its
    /// first attempt.
    pub reconnects: u64,
    /// Applied-version reports (`POST /v1/sdk/applied`) the server took.
    pub reports_sent: u64,
    /// Applied-version reports that failed (network, timeout, refusal); a
    /// server too old to know the route (404) counts as neither.
    pub reports_failed: u64,
    /// The most recent connection or stream error, kept after recovery so a
    /// flapping connection can be diagnosed; `connected` says whether it is
    /// still current.
    pub last_error: Option<String>,
}

/// One owned routing decision, as [`Router::decide`] returns it.
///
/// It keeps the snapshot it was made from alive, so
/// [`SdkDecision::bundle_contents`] can hand out the full bundle without a
/// copy. For hot loops see the crate docs ("The zero-copy path").
#[derive(Clone, Debug)]
pub struct SdkDecision {
    /// Which side of a release the request lands on.
    pub arm: Arm,
    /// The bundle to run; `None` when the agent is killed or has nothing
    /// deployed.
    pub bundle: Option<BundleRef>,
    /// The snapshot the decision was made from; report it in the outcome
    /// event so the decision can be explained later.
    pub snapshot_version: u64,
    /// The engine's reason (stable `code()`, human `Display`).
    pub reason: Reason,
    /// The reason in words, naming the release and tenant, and saying so
    /// when the decision is stale.
    pub reason_text: String,
    /// The release in progress, if the decision looked at one.
    pub release: Option<String>,
    /// The wave of a waved release the request was routed by.
    pub wave: Option<String>,
    /// Made from a snapshot loaded from disk, or while the stream is down.
    pub stale: bool,
    /// The values of the flags this agent sees for this request, by key.
    pub flags: BTreeMap<String, Value>,
    snapshot: Arc<CompiledSnapshot>,
}

impl SdkDecision {
    /// The stable code of the reason (`release_canary`, ...).
    pub fn reason_code(&self) -> &'static str {
        self.reason.code()
    }

    /// The full contents of the chosen bundle (prompt, model, tools, ...).
    pub fn bundle_contents(&self) -> Option<&Bundle> {
        self.bundle
            .as_ref()
            .and_then(|b| self.snapshot.bundle(&b.id))
    }

    /// A flag's value for this request.
    pub fn flag(&self, key: &str) -> Option<&Value> {
        self.flags.get(key)
    }

    /// The snapshot this decision was made from.
    pub fn snapshot(&self) -> &Arc<CompiledSnapshot> {
        &self.snapshot
    }
}

impl Router {
    /// A router that serves `snapshot` forever: static local decisions, no
    /// server, no runtime. All its bundles must be in `snapshot.bundles`.
    pub fn from_snapshot(snapshot: Snapshot) -> Result<Router, SdkError> {
        let compiled = CompiledSnapshot::compile(snapshot)?;
        let state = State::new(false);
        state.install(Arc::new(compiled), false);
        Ok(Router {
            state: Arc::new(state),
        })
    }

    /// The snapshot served right now; hold it to make many decisions on one
    /// consistent version without touching the shared state again.
    pub fn snapshot(&self) -> Option<Arc<CompiledSnapshot>> {
        self.state.current()
    }

    /// The snapshot served right now, for deciding without allocating: this is the
    /// documented per-request path.
    ///
    /// ```
    /// # fn run(router: &serin_sdk::Router) -> Result<(), serin_sdk::SdkError> {
    /// use serin_sdk::Context;
    ///
    /// let snap = router.current()?;
    /// let d = snap.decide("support", &Context::new("r-1").user("u-42").tenant("acme"))?;
    /// let _ = (d.arm, d.bundle_contents(), d.reason_code(), d.snapshot_version);
    /// for flag in d.flags() {
    ///     let _ = (flag.key, flag.value);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// Taking it is a few atomic operations and never waits for a writer; the guard keeps
    /// its version alive (and unchanged) while a newer one is swapped in. Hold one per
    /// request, not for the life of the process: a held guard keeps an old version's
    /// memory.
    pub fn current(&self) -> Result<SnapshotGuard, SdkError> {
        let guard = self.state.current.load();
        if guard.is_none() {
            return Err(SdkError::NoSnapshot);
        }
        Ok(SnapshotGuard {
            guard,
            freshness: self.state.freshness(),
        })
    }

    /// The version served right now.
    pub fn snapshot_version(&self) -> Option<u64> {
        self.state.version()
    }

    /// Decides which bundle serves `agent` for this request. `ctx` is a
    /// `&RequestContext` or a `&Context`.
    ///
    /// Allocates the owned result (bundle reference, reason text, flag map), about ten
    /// allocations per call: convenient to keep or send elsewhere, but per request prefer
    /// [`Router::current`] and [`SnapshotGuard::decide`], which allocate nothing.
    pub fn decide<C: AsContext + ?Sized>(
        &self,
        agent: &str,
        ctx: &C,
    ) -> Result<SdkDecision, SdkError> {
        let snapshot = self.state.current().ok_or(SdkError::NoSnapshot)?;
        let ctx = ctx.as_context();
        let freshness = self.state.freshness();
        let decision = snapshot.decide(agent, &ctx)?;
        let (arm, bundle, snapshot_version, reason, release, wave) = (
            decision.arm,
            decision.bundle.cloned(),
            decision.snapshot_version,
            decision.reason,
            decision.release.map(str::to_owned),
            decision.wave.map(str::to_owned),
        );
        let reason_text = Explained {
            decision,
            tenant: ctx.tenant,
            freshness,
        }
        .to_string();
        let flags = snapshot
            .agent_flags(agent, &ctx)
            .map(|f| (f.key.to_owned(), f.value.clone()))
            .collect();
        Ok(SdkDecision {
            arm,
            bundle,
            snapshot_version,
            reason,
            reason_text,
            release,
            wave,
            stale: freshness.stale(),
            flags,
            snapshot,
        })
    }

    /// Connection and freshness, for probes and dashboards.
    pub fn health(&self) -> Health {
        let last = self.state.last_update_ms.load(Ordering::Acquire);
        Health {
            connected: self.state.connected.load(Ordering::Acquire),
            stale: self.state.freshness().stale(),
            version: self.state.version(),
            last_update_ms: (last != i64::MIN).then_some(last),
            reconnects: self.state.reconnects.load(Ordering::Relaxed),
            reports_sent: self.state.reports_sent.load(Ordering::Relaxed),
            reports_failed: self.state.reports_failed.load(Ordering::Relaxed),
            last_error: self.state.last_error(),
        }
    }
}

/// The reason in words, with the staleness said when it applies.
struct Explained<'d> {
    decision: Decision<'d>,
    tenant: Option<&'d str>,
    freshness: Freshness,
}

impl std::fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.decision.explained(self.tenant))?;
        let v = self.decision.snapshot_version;
        match self.freshness {
            Freshness::Fresh => Ok(()),
            Freshness::FromCache => write!(
                f,
                " (stale: snapshot v{v} loaded from the disk cache, server not reached yet)"
            ),
            Freshness::Disconnected => write!(
                f,
                " (stale: snapshot stream disconnected, serving last known v{v})"
            ),
        }
    }
}

/// The snapshot being served, held for one request (or a batch): see [`Router::current`].
///
/// `Send`, so it may be held across an `.await`, though holding it long keeps an old
/// version alive.
pub struct SnapshotGuard {
    guard: arc_swap::Guard<Option<Arc<CompiledSnapshot>>>,
    freshness: Freshness,
}

impl std::fmt::Debug for SnapshotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotGuard")
            .field("version", &self.version())
            .field("stale", &self.stale())
            .finish()
    }
}

impl SnapshotGuard {
    /// Decides which bundle serves `agent` for this request, borrowing everything from this
    /// snapshot and `ctx`: no allocation, whatever the list sizes and flags (an unknown agent
    /// is an error, and only building that error allocates).
    pub fn decide<'a>(
        &'a self,
        agent: &'a str,
        ctx: &Context<'a>,
    ) -> Result<SdkDecisionRef<'a>, SdkError> {
        // `current` only hands out guards holding a snapshot.
        let snapshot = self.guard.as_deref().ok_or(SdkError::NoSnapshot)?;
        let decision = snapshot.decide(agent, ctx)?;
        Ok(SdkDecisionRef {
            arm: decision.arm,
            bundle: decision.bundle,
            snapshot_version: decision.snapshot_version,
            reason: decision.reason,
            release: decision.release,
            wave: decision.wave,
            stale: self.freshness.stale(),
            snapshot,
            agent,
            ctx: *ctx,
            freshness: self.freshness,
        })
    }

    /// The compiled snapshot itself (flag lookups by key, bundles by id).
    pub fn compiled(&self) -> Option<&CompiledSnapshot> {
        self.guard.as_deref()
    }

    /// An owned handle on this version, to keep beyond the request.
    pub fn to_arc(&self) -> Option<Arc<CompiledSnapshot>> {
        (*self.guard).clone()
    }

    pub fn version(&self) -> Option<u64> {
        self.guard.as_deref().map(CompiledSnapshot::version)
    }

    /// Loaded from the disk cache and not yet confirmed, or the stream is down.
    pub fn stale(&self) -> bool {
        self.freshness.stale()
    }
}

/// One routing decision borrowed from a [`SnapshotGuard`]: what [`SdkDecision`] says, but
/// with the bundle, the release and the flags by reference and the reason text formatted
/// only when asked for.
#[derive(Clone, Copy, Debug)]
pub struct SdkDecisionRef<'a> {
    /// Which side of a release the request lands on.
    pub arm: Arm,
    /// The bundle to run; `None` when the agent is killed.
    pub bundle: Option<&'a BundleRef>,
    /// The snapshot the decision was made from; report it in the outcome event.
    pub snapshot_version: u64,
    /// The engine's reason (stable `code()`, human `Display`).
    pub reason: Reason,
    /// The release in progress, if the decision looked at one.
    pub release: Option<&'a str>,
    /// The wave of a waved release the request was routed by.
    pub wave: Option<&'a str>,
    /// Made from a snapshot loaded from disk, or while the stream is down.
    pub stale: bool,
    snapshot: &'a CompiledSnapshot,
    agent: &'a str,
    ctx: Context<'a>,
    freshness: Freshness,
}

impl<'a> SdkDecisionRef<'a> {
    /// The stable code of the reason (`release_canary`, ...).
    pub fn reason_code(&self) -> &'static str {
        self.reason.code()
    }

    /// The reason in words, naming the release and tenant and saying so when the decision
    /// is stale; formatted when displayed, so it costs nothing until then.
    pub fn explain(&self) -> impl std::fmt::Display + '_ {
        Explained {
            decision: Decision {
                arm: self.arm,
                bundle: self.bundle,
                snapshot_version: self.snapshot_version,
                reason: self.reason,
                release: self.release,
                wave: self.wave,
            },
            tenant: self.ctx.tenant,
            freshness: self.freshness,
        }
    }

    /// [`SdkDecisionRef::explain`] as a `String` (allocates).
    pub fn reason_text(&self) -> String {
        self.explain().to_string()
    }

    /// The full contents of the chosen bundle (prompt, model, tools, ...).
    pub fn bundle_contents(&self) -> Option<&'a Bundle> {
        self.bundle.and_then(|b| self.snapshot.bundle(&b.id))
    }

    /// The flags of this agent (keys `<agent>.…`) evaluated for this request, in key order.
    /// Evaluated as the iterator is walked; allocates nothing.
    pub fn flags(&self) -> impl Iterator<Item = FlagEvaluation<'a>> + '_ {
        self.snapshot.agent_flags(self.agent, &self.ctx)
    }

    /// One flag of this agent by its full key (`support.tone`), evaluated for this request;
    /// `None` for an unknown key or another agent's flag.
    pub fn flag(&self, key: &str) -> Option<FlagEvaluation<'a>> {
        key.strip_prefix(self.agent)?.strip_prefix('.')?;
        self.snapshot.flag(key, &self.ctx)
    }

    /// The snapshot this decision was made from.
    pub fn snapshot(&self) -> &'a CompiledSnapshot {
        self.snapshot
    }
}
