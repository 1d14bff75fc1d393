//! `serin._serin`: the Rust SDK (engine, stream client, backoff, disk cache, outcome
//! batching) exposed to Python. Python gets the same decisions as every other Serin SDK
//! because it runs the same code; this crate only translates.
//!
//! The per-call path (`decide`) takes no lock beyond what the Rust SDK takes (two
//! `arc_swap` loads), holds the GIL only for its few hundred nanoseconds, and builds the
//! bundle and flag objects only when Python reads them. Everything that can wait (start,
//! close, restarting after `fork`) runs with the GIL released.

mod convert;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serin_engine::decision::{Stickiness, bucket as bucket_v1};
use serin_sdk::{
    Arm, BeginError, Begun, BundleRef, CompiledSnapshot, Context, DecideError, EffectKey,
    EffectStatus, LedgerError, OutcomeEvent, Reason, RequestContext, RetryPolicy, Router, SdkError,
    Serin, Snapshot,
};

/// Longest request id, as `POST /v1/decide` allows.
const MAX_REQUEST_ID: usize = 256;
/// Longest other context value. Real ids are far shorter; a megabyte "user id" is a bug
/// upstream, better reported than hashed on every request.
const MAX_ATTRIBUTE: usize = 4096;

/// Raises `serin.<class>` (defined in `serin/_errors.py`, each with its stable `code`).
fn serin_error(py: Python<'_>, class: &str, message: String) -> PyErr {
    let made = py
        .import("serin._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1((message.clone(),)));
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

fn sdk_error(py: Python<'_>, e: SdkError) -> PyErr {
    let class = match &e {
        SdkError::NoSnapshot => "NoSnapshotError",
        SdkError::Decide(DecideError::UnknownAgent { .. }) => "UnknownAgentError",
        SdkError::Decide(DecideError::NoStable { .. }) => "NoStableError",
        SdkError::Compile(_) => "SnapshotError",
        SdkError::StartTimeout { .. } => "StartTimeoutError",
        SdkError::InvalidConfig(_) => "ConfigError",
        _ => "SerinError",
    };
    serin_error(py, class, e.to_string())
}

/// Reads one optional context value: a `str` or `None`, within the size limit.
///
/// abi3 for 3.9 has no borrowed UTF-8 view of a `str`, so this may copy; ids are short.
fn attribute<'a>(
    py: Python<'_>,
    name: &str,
    value: Option<&'a Bound<'_, PyAny>>,
    max: usize,
) -> PyResult<Option<Cow<'a, str>>> {
    let Some(v) = value else { return Ok(None) };
    if v.is_none() {
        return Ok(None);
    }
    let Ok(s) = v.cast::<PyString>() else {
        let ty = v
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        return Err(serin_error(
            py,
            "InvalidContextError",
            format!("{name} must be a str or None, not {ty}"),
        ));
    };
    let s = s.to_cow()?;
    if s.len() > max {
        return Err(serin_error(
            py,
            "InvalidContextError",
            format!("{name} is {} bytes; at most {max} are allowed", s.len()),
        ));
    }
    Ok(Some(s))
}

#[allow(clippy::too_many_arguments)]
fn decide_on<'py>(
    py: Python<'py>,
    router: &Router,
    force_stale: bool,
    agent: &str,
    request_id: &Bound<'py, PyAny>,
    user: Option<&Bound<'py, PyAny>>,
    tenant: Option<&Bound<'py, PyAny>>,
    workload: Option<&Bound<'py, PyAny>>,
    instance: Option<&Bound<'py, PyAny>>,
    region: Option<&Bound<'py, PyAny>>,
    pool: Option<&Bound<'py, PyAny>>,
) -> PyResult<Decision> {
    let request_id = attribute(py, "request_id", Some(request_id), MAX_REQUEST_ID)?;
    let user = attribute(py, "user", user, MAX_ATTRIBUTE)?;
    let tenant = attribute(py, "tenant", tenant, MAX_ATTRIBUTE)?;
    let workload = attribute(py, "workload", workload, MAX_ATTRIBUTE)?;
    let instance = attribute(py, "instance", instance, MAX_ATTRIBUTE)?;
    let region = attribute(py, "region", region, MAX_ATTRIBUTE)?;
    let pool = attribute(py, "pool", pool, MAX_ATTRIBUTE)?;
    let request_id = request_id
        .as_deref()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            serin_error(
                py,
                "InvalidContextError",
                "request_id must be a non-empty str".to_owned(),
            )
        })?;
    let ctx = Context {
        request_id,
        user: user.as_deref(),
        tenant: tenant.as_deref(),
        workload: workload.as_deref(),
        instance: instance.as_deref(),
        region: region.as_deref(),
        pool: pool.as_deref(),
    };
    let guard = router.current().map_err(|e| sdk_error(py, e))?;
    let d = guard.decide(agent, &ctx).map_err(|e| sdk_error(py, e))?;
    let snapshot = guard
        .to_arc()
        .ok_or_else(|| sdk_error(py, SdkError::NoSnapshot))?;
    Ok(Decision {
        arm: d.arm,
        bundle: d.bundle.cloned(),
        snapshot_version: d.snapshot_version,
        reason: d.reason,
        release: d.release.map(str::to_owned),
        wave: d.wave.map(str::to_owned),
        stale: d.stale || force_stale,
        agent: agent.to_owned(),
        context: RequestContext {
            request_id: ctx.request_id.to_owned(),
            user: ctx.user.map(str::to_owned),
            tenant: ctx.tenant.map(str::to_owned),
            workload: ctx.workload.map(str::to_owned),
            instance: ctx.instance.map(str::to_owned),
            region: ctx.region.map(str::to_owned),
            pool: ctx.pool.map(str::to_owned),
        },
        snapshot,
    })
}

fn arm_name(arm: Arm) -> &'static str {
    match arm {
        Arm::Stable => "stable",
        Arm::Canary => "canary",
        Arm::Killed => "killed",
    }
}

/// One routing decision. Immutable; the bundle and the flags are built when first read.
#[pyclass(module = "serin._serin", frozen)]
pub struct Decision {
    arm: Arm,
    bundle: Option<BundleRef>,
    snapshot_version: u64,
    reason: Reason,
    release: Option<String>,
    wave: Option<String>,
    stale: bool,
    agent: String,
    context: RequestContext,
    snapshot: Arc<CompiledSnapshot>,
}

#[pymethods]
impl Decision {
    /// `"stable"`, `"canary"` or `"killed"`.
    #[getter]
    fn arm(&self) -> &'static str {
        arm_name(self.arm)
    }

    /// The stable code of the reason (`no_release`, `canary_bucket`, `kill_switch`, ...).
    #[getter]
    fn reason(&self) -> &'static str {
        self.reason.code()
    }

    /// The reason in a sentence, naming the release and tenant.
    #[getter]
    fn reason_text(&self) -> String {
        let d = serin_sdk::Decision {
            arm: self.arm,
            bundle: self.bundle.as_ref(),
            snapshot_version: self.snapshot_version,
            reason: self.reason,
            release: self.release.as_deref(),
            wave: self.wave.as_deref(),
        };
        let mut text = d.explained(self.context.tenant.as_deref()).to_string();
        if self.stale {
            text.push_str(" (stale)");
        }
        text
    }

    #[getter]
    fn snapshot_version(&self) -> u64 {
        self.snapshot_version
    }

    /// The wave of a waved release the request was routed by, else `None`.
    #[getter]
    fn wave(&self) -> Option<&str> {
        self.wave.as_deref()
    }

    #[getter]
    fn stale(&self) -> bool {
        self.stale
    }

    #[getter]
    fn agent(&self) -> &str {
        &self.agent
    }

    #[getter]
    fn env(&self) -> &str {
        self.snapshot.env()
    }

    #[getter]
    fn request_id(&self) -> &str {
        &self.context.request_id
    }

    /// The request's context as decided on (only the attributes given).
    #[getter]
    fn context<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("request_id", &self.context.request_id)?;
        for (k, v) in [
            ("user", &self.context.user),
            ("tenant", &self.context.tenant),
            ("workload", &self.context.workload),
            ("instance", &self.context.instance),
            ("region", &self.context.region),
            ("pool", &self.context.pool),
        ] {
            if let Some(v) = v {
                d.set_item(k, v)?;
            }
        }
        Ok(d)
    }

    /// The release in progress, if the decision looked at one.
    #[getter]
    fn release(&self) -> Option<&str> {
        self.release.as_deref()
    }

    /// The stickiness the release bucketed by (`user`, `tenant`, `request`), or `None`
    /// when no bucketing happened (killed, excluded, no release).
    #[getter]
    fn sticky_by(&self) -> Option<&'static str> {
        match self.reason {
            Reason::Canary { unit, .. } | Reason::Stable { unit, .. } => Some(match unit.by {
                Stickiness::User => "user",
                Stickiness::Tenant => "tenant",
                Stickiness::Request => "request",
            }),
            _ => None,
        }
    }

    /// The stickiness attribute was missing, so the request id was bucketed instead.
    #[getter]
    fn fell_back_to_request(&self) -> bool {
        matches!(
            self.reason,
            Reason::Canary { unit, .. } | Reason::Stable { unit, .. } if unit.fell_back_to_request
        )
    }

    /// The bundle id (`agent@N`), or `None` when killed.
    #[getter]
    fn bundle_id(&self) -> Option<&str> {
        self.bundle.as_ref().map(|b| b.id.as_str())
    }

    /// The bundle to run, or `None` when killed.
    #[getter]
    fn bundle(&self, py: Python<'_>) -> PyResult<Option<Bundle>> {
        let Some(r) = &self.bundle else {
            return Ok(None);
        };
        if self.snapshot.bundle(&r.id).is_none() {
            return Err(serin_error(
                py,
                "SnapshotError",
                format!("the snapshot does not carry bundle {}", r.id),
            ));
        }
        Ok(Some(Bundle {
            reference: r.clone(),
            snapshot: self.snapshot.clone(),
        }))
    }

    /// The values of this agent's flags (`<agent>.*`) for this request, by key.
    #[getter]
    fn flags<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ctx = self.context.as_context();
        let d = PyDict::new(py);
        for f in self.snapshot.agent_flags(&self.agent, &ctx) {
            d.set_item(f.key, convert::to_py(py, f.value)?)?;
        }
        Ok(d)
    }

    /// Each flag's reason code (`disabled`, `denied`, `allowed`, `rule`, `rollout`), by key.
    #[getter]
    fn flag_reasons<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ctx = self.context.as_context();
        let d = PyDict::new(py);
        for f in self.snapshot.agent_flags(&self.agent, &ctx) {
            d.set_item(f.key, f.reason.code())?;
        }
        Ok(d)
    }

    /// One flag's value (full key, `support.tone`), or `default` if this agent has no
    /// such flag.
    #[pyo3(signature = (key, default=None))]
    fn flag<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ctx = self.context.as_context();
        let own = key
            .strip_prefix(self.agent.as_str())
            .and_then(|k| k.strip_prefix('.'))
            .is_some();
        match self.snapshot.flag(key, &ctx).filter(|_| own) {
            Some(f) => convert::to_py(py, f.value),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// The decision as plain data (bundle by id), for logs and JSON.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("agent", &self.agent)?;
        d.set_item("arm", arm_name(self.arm))?;
        d.set_item("bundle", self.bundle.as_ref().map(|b| b.id.as_str()))?;
        d.set_item("reason", self.reason.code())?;
        d.set_item("release", self.release.as_deref())?;
        d.set_item("snapshot_version", self.snapshot_version)?;
        d.set_item("stale", self.stale)?;
        d.set_item("flags", self.flags(py)?)?;
        d.set_item("context", self.context(py)?)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(agent={:?}, arm={:?}, bundle={}, reason={:?}, snapshot_version={}, stale={})",
            self.agent,
            arm_name(self.arm),
            self.bundle
                .as_ref()
                .map_or_else(|| "None".to_owned(), |b| format!("{:?}", b.id)),
            self.reason.code(),
            self.snapshot_version,
            if self.stale { "True" } else { "False" },
        )
    }
}

/// The bundle a decision chose: id, digest and the contents to run.
#[pyclass(module = "serin._serin", frozen)]
pub struct Bundle {
    reference: BundleRef,
    snapshot: Arc<CompiledSnapshot>,
}

impl Bundle {
    fn contents(&self) -> PyResult<serin_sdk::Bundle> {
        self.snapshot
            .bundle(&self.reference.id)
            .cloned()
            .ok_or_else(|| pyo3::exceptions::PyLookupError::new_err(self.reference.id.clone()))
    }
}

#[pymethods]
impl Bundle {
    #[getter]
    fn id(&self) -> &str {
        &self.reference.id
    }

    #[getter]
    fn number(&self) -> u64 {
        self.reference.number
    }

    #[getter]
    fn digest(&self) -> &str {
        &self.reference.digest
    }

    #[getter]
    fn agent(&self) -> PyResult<String> {
        Ok(self.contents()?.agent)
    }

    /// `{"provider": ..., "snapshot": ..., "params": {...}}`.
    #[getter]
    fn model<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::serialize(py, &self.contents()?.model)
    }

    #[getter]
    fn prompt(&self) -> PyResult<String> {
        Ok(self.contents()?.prompt)
    }

    /// Few-shot examples: `[{"name": ..., "messages": [{"role": ..., "content": ...}]}]`.
    #[getter]
    fn examples<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::serialize(py, &self.contents()?.examples)
    }

    /// Tool definitions: `[{"name": ..., "description": ..., "input_schema": {...}, "capability"?: {"effect": ..., "owner"?: ..., "limits"?: {...}}}]`.
    #[getter]
    fn tools<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::serialize(py, &self.contents()?.tools)
    }

    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::serialize(py, &self.contents()?.metadata)
    }

    fn __repr__(&self) -> String {
        format!(
            "Bundle(id={:?}, digest={:?})",
            self.reference.id, self.reference.digest
        )
    }
}

/// Static decisions from one snapshot document: no server, no background work. For tests,
/// the conformance suite and agents that ship a snapshot with themselves.
#[pyclass(module = "serin._serin", frozen)]
pub struct StaticRouter {
    router: Router,
}

#[pymethods]
impl StaticRouter {
    /// Reads snapshot JSON (the body of `GET /v1/envs/{env}/snapshot`).
    #[staticmethod]
    fn from_json(py: Python<'_>, json: &str) -> PyResult<StaticRouter> {
        let snapshot: Snapshot = serde_json::from_str(json)
            .map_err(|e| serin_error(py, "SnapshotError", format!("snapshot JSON: {e}")))?;
        let router = Router::from_snapshot(snapshot).map_err(|e| sdk_error(py, e))?;
        Ok(StaticRouter { router })
    }

    #[pyo3(signature = (agent, *, request_id, user=None, tenant=None, workload=None, instance=None, region=None, pool=None))]
    #[allow(clippy::too_many_arguments)]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        agent: &str,
        request_id: &Bound<'py, PyAny>,
        user: Option<&Bound<'py, PyAny>>,
        tenant: Option<&Bound<'py, PyAny>>,
        workload: Option<&Bound<'py, PyAny>>,
        instance: Option<&Bound<'py, PyAny>>,
        region: Option<&Bound<'py, PyAny>>,
        pool: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Decision> {
        decide_on(
            py,
            &self.router,
            false,
            agent,
            request_id,
            user,
            tenant,
            workload,
            instance,
            region,
            pool,
        )
    }

    #[getter]
    fn snapshot_version(&self) -> Option<u64> {
        self.router.snapshot_version()
    }
}

/// What the client was started with, kept to start again in a forked child.
#[derive(Clone)]
struct Settings {
    config: serin_sdk::Config,
}

/// The background half: a Tokio runtime of its own and the Rust SDK running on it.
struct Live {
    runtime: tokio::runtime::Runtime,
    serin: Serin,
}

fn start_live(settings: &Settings) -> Result<Live, SdkError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Following one stream and sending outcome batches is light work.
        .worker_threads(1)
        .thread_name("serin-sdk")
        .enable_all()
        .build()
        .map_err(|e| SdkError::InvalidConfig(format!("cannot start the SDK's runtime: {e}")))?;
    let serin = runtime.block_on(Serin::start(settings.config.clone()))?;
    Ok(Live { runtime, serin })
}

/// The live SDK: follows the server's snapshot stream in the background and decides
/// locally. `serin.Client` (Python) adds the context manager, asyncio helpers and fork
/// handling on top of this class.
#[pyclass(module = "serin._serin", subclass, weakref)]
pub struct NativeClient {
    settings: Settings,
    /// Read on every decide; replaced only when a forked child starts again.
    router: ArcSwap<Router>,
    live: Mutex<Option<Live>>,
    closed: AtomicBool,
    /// A forked child that could not start again serves the parent's last snapshot, stale.
    orphaned: AtomicBool,
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (server, token, env, cache_dir=None, *, instance=None, start_timeout=5.0, backoff_min=1.0, backoff_max=30.0, outcome_flush=1.0, request_timeout=10.0, outcome_windows=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        server: String,
        token: String,
        env: String,
        cache_dir: Option<PathBuf>,
        instance: Option<String>,
        start_timeout: f64,
        backoff_min: f64,
        backoff_max: f64,
        outcome_flush: f64,
        request_timeout: f64,
        outcome_windows: bool,
    ) -> PyResult<NativeClient> {
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v).map_err(|_| {
                serin_error(
                    py,
                    "ConfigError",
                    format!("{name} must be a non-negative number of seconds, not {v}"),
                )
            })
        };
        let mut config = serin_sdk::Config::new(server, token, env);
        config.cache_dir = cache_dir;
        if let Some(i) = instance {
            config.instance = i;
        }
        config.start_timeout = secs("start_timeout", start_timeout)?;
        config.backoff_min = secs("backoff_min", backoff_min)?;
        config.backoff_max = secs("backoff_max", backoff_max)?.max(config.backoff_min);
        config.outcome_flush = secs("outcome_flush", outcome_flush)?;
        config.request_timeout = secs("request_timeout", request_timeout)?;
        config.outcome_windows = outcome_windows;
        let settings = Settings { config };
        let live = py
            .detach(|| start_live(&settings))
            .map_err(|e| sdk_error(py, e))?;
        Ok(NativeClient {
            router: ArcSwap::from_pointee(live.serin.router().clone()),
            live: Mutex::new(Some(live)),
            settings,
            closed: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
        })
    }

    /// Decides which bundle serves `agent` for this request, locally, in about a
    /// microsecond. Never waits for the network.
    #[pyo3(signature = (agent, *, request_id, user=None, tenant=None, workload=None, instance=None, region=None, pool=None))]
    #[allow(clippy::too_many_arguments)]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        agent: &str,
        request_id: &Bound<'py, PyAny>,
        user: Option<&Bound<'py, PyAny>>,
        tenant: Option<&Bound<'py, PyAny>>,
        workload: Option<&Bound<'py, PyAny>>,
        instance: Option<&Bound<'py, PyAny>>,
        region: Option<&Bound<'py, PyAny>>,
        pool: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Decision> {
        self.check_open(py)?;
        let router = self.router.load();
        decide_on(
            py,
            &router,
            self.orphaned.load(Ordering::Relaxed),
            agent,
            request_id,
            user,
            tenant,
            workload,
            instance,
            region,
            pool,
        )
    }

    /// Queues one outcome (its JSON wire form) for the background sender; never blocks.
    /// Returns `False` when the queue is full (the event is dropped and counted).
    fn _record_json(&self, py: Python<'_>, event: &str) -> PyResult<bool> {
        self.check_open(py)?;
        let event: OutcomeEvent = serde_json::from_str(event)
            .map_err(|e| serin_error(py, "InvalidOutcomeError", format!("outcome: {e}")))?;
        let guard = self
            .live
            .lock()
            .map_err(|_| serin_error(py, "SerinError", "client state poisoned".to_owned()))?;
        Ok(match guard.as_ref() {
            Some(live) => live.serin.record(event),
            None => false,
        })
    }

    /// Connection and freshness, plus the outcome counters.
    fn health<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let router = self.router.load();
        let mut h = router.health();
        if self.orphaned.load(Ordering::Relaxed) || self.closed.load(Ordering::Acquire) {
            h.stale = true;
            h.connected = false;
        }
        let outcomes = self
            .live
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|l| l.serin.outcome_stats()));
        let value = serde_json::json!({
            "connected": h.connected,
            "stale": h.stale,
            "version": h.version,
            "last_update_ms": h.last_update_ms,
            "reconnects": h.reconnects,
            "last_error": h.last_error,
            "closed": self.closed.load(Ordering::Acquire),
            "outcomes": outcomes,
        });
        convert::to_py(py, &value)
    }

    #[getter]
    fn snapshot_version(&self) -> Option<u64> {
        self.router.load().snapshot_version()
    }

    #[getter]
    fn env(&self) -> &str {
        &self.settings.config.env
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops the background work, sending what outcomes it can within `timeout` seconds.
    /// Idempotent. Decisions after it raise `ClosedError`.
    #[pyo3(signature = (timeout=2.0))]
    fn close(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let live = self.live.lock().ok().and_then(|mut g| g.take());
        if let Some(live) = live {
            let timeout = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::from_secs(2));
            py.detach(move || {
                let Live { runtime, serin } = live;
                let _ = runtime
                    .block_on(async { tokio::time::timeout(timeout, serin.shutdown()).await });
                drop(serin);
                runtime.shutdown_timeout(timeout);
            });
        }
        Ok(())
    }

    /// Called in a forked child (`os.register_at_fork`): the parent's runtime threads do
    /// not exist here, so its state is abandoned (never dropped: dropping would wait for
    /// threads that will never answer) and the SDK starts again from the same settings.
    /// If that fails, the parent's last snapshot keeps serving, marked stale.
    fn _after_fork_in_child(&self, py: Python<'_>) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let old = match self.live.lock() {
            Ok(mut g) => g.take(),
            // A lock held by a thread that did not survive the fork: leave it be.
            Err(_) => None,
        };
        std::mem::forget(old);
        let mut settings = self.settings.clone();
        // The child is another instance towards the server.
        settings.config.instance = format!("{}-{}", std::process::id(), settings.config.instance);
        settings.config.instance.truncate(128);
        match py.detach(|| start_live(&settings)) {
            Ok(live) => {
                self.router.store(Arc::new(live.serin.router().clone()));
                if let Ok(mut g) = self.live.lock() {
                    *g = Some(live);
                }
                self.orphaned.store(false, Ordering::Relaxed);
            }
            Err(_) => self.orphaned.store(true, Ordering::Relaxed),
        }
        Ok(())
    }

    /// Records an effect's intent and says what to do: `("run" | "committed" | "failed" |
    /// "open", record)`. Raises `InvalidEffectError` for a refused field and
    /// `EffectNotRecordedError` when the intent could not be recorded (then the call must not
    /// run). The call loop is in `serin/__init__.py` (`Client.effect`).
    #[pyo3(signature = (agent, bundle, request_id, tool, args_digest, key, timeout, ledger_attempts=6, ledger_base=0.1, ledger_cap=2.0))]
    #[allow(clippy::too_many_arguments)]
    fn _effect_begin<'py>(
        &self,
        py: Python<'py>,
        agent: String,
        bundle: u64,
        request_id: String,
        tool: String,
        args_digest: String,
        key: Option<String>,
        timeout: f64,
        ledger_attempts: u32,
        ledger_base: f64,
        ledger_cap: f64,
    ) -> PyResult<(&'static str, Bound<'py, PyAny>)> {
        self.check_open(py)?;
        let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
            serin_error(
                py,
                "InvalidEffectError",
                format!("timeout: {timeout} is not a number of seconds"),
            )
        })?;
        let retry = retry_policy(py, ledger_attempts, ledger_base, ledger_cap)?;
        let mut effect_key = EffectKey::new(agent, bundle, request_id, tool, args_digest);
        effect_key.key = key;
        let begun = self.with_live(py, |serin| async move {
            serin.effects().begin(&effect_key, timeout, &retry).await
        })?;
        let (what, record) = match begun {
            Ok(Begun::Run(r)) => ("run", r),
            Ok(Begun::Committed(r)) => ("committed", r),
            Ok(Begun::Failed(r)) => ("failed", r),
            Ok(Begun::Open(r)) => ("open", r),
            Err(BeginError::Invalid { field, message }) => {
                return Err(serin_error(
                    py,
                    "InvalidEffectError",
                    format!("{field}: {message}"),
                ));
            }
            Err(BeginError::NotRecorded(e)) => return Err(ledger_error(py, e)),
        };
        Ok((what, convert::serialize(py, &record)?))
    }

    /// Records an effect's result (`committed`, `failed` or `unknown`); returns the record.
    /// Raises `EffectNotRecordedError` when it could not be delivered.
    #[pyo3(signature = (key, status, detail=None, ledger_attempts=6, ledger_base=0.1, ledger_cap=2.0))]
    #[allow(clippy::too_many_arguments)]
    fn _effect_result<'py>(
        &self,
        py: Python<'py>,
        key: String,
        status: &str,
        detail: Option<String>,
        ledger_attempts: u32,
        ledger_base: f64,
        ledger_cap: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.check_open(py)?;
        let status = match status {
            "committed" => EffectStatus::Committed,
            "failed" => EffectStatus::Failed,
            "unknown" => EffectStatus::Unknown,
            other => {
                return Err(serin_error(
                    py,
                    "InvalidEffectError",
                    format!("status: {other:?} is not committed, failed or unknown"),
                ));
            }
        };
        let retry = retry_policy(py, ledger_attempts, ledger_base, ledger_cap)?;
        let record = self.with_live(py, |serin| async move {
            serin
                .effects()
                .record_result(&key, status, detail, &retry)
                .await
        })?;
        match record {
            Ok(r) => convert::serialize(py, &r),
            Err(e) => Err(ledger_error(py, e)),
        }
    }
}

/// A ledger post that failed (refused, or the server away through every retry) as
/// `serin.EffectNotRecordedError`, with the server's code in the message.
fn ledger_error(py: Python<'_>, e: LedgerError) -> PyErr {
    serin_error(py, "EffectNotRecordedError", e.to_string())
}

fn retry_policy(py: Python<'_>, attempts: u32, base: f64, cap: f64) -> PyResult<RetryPolicy> {
    let secs = |name: &str, v: f64| {
        Duration::try_from_secs_f64(v).map_err(|_| {
            serin_error(
                py,
                "ConfigError",
                format!("{name} must be a non-negative number of seconds, not {v}"),
            )
        })
    };
    Ok(RetryPolicy::new(
        attempts,
        secs("ledger backoff base", base)?,
        secs("ledger backoff cap", cap)?,
    ))
}

impl NativeClient {
    /// Runs `f` on the live SDK's runtime with the GIL released.
    fn with_live<R, F, Fut>(&self, py: Python<'_>, f: F) -> PyResult<R>
    where
        R: Send,
        F: FnOnce(Serin) -> Fut + Send,
        Fut: std::future::Future<Output = R>,
    {
        let guard = self
            .live
            .lock()
            .map_err(|_| serin_error(py, "SerinError", "client state poisoned".to_owned()))?;
        let Some(live) = guard.as_ref() else {
            return Err(serin_error(
                py,
                "ClosedError",
                "the client was closed".to_owned(),
            ));
        };
        let serin = live.serin.clone();
        let handle = live.runtime.handle().clone();
        // The lock guards start and close; an effect may take long and must not hold it.
        drop(guard);
        Ok(py.detach(move || handle.block_on(f(serin))))
    }

    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(serin_error(
                py,
                "ClosedError",
                "the client was closed".to_owned(),
            ));
        }
        Ok(())
    }
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        if let Ok(mut g) = self.live.lock()
            && let Some(Live { runtime, serin }) = g.take()
        {
            drop(serin);
            runtime.shutdown_background();
        }
    }
}

/// Bucketing v1 (`bucket(salt, key)` in 0..=9999), for checking the golden vectors.
#[pyfunction]
fn bucket(salt: &str, key: &str) -> u16 {
    bucket_v1(salt, key)
}

/// `xxh3-128:<32 hex>` of a text (the arguments' canonical JSON, made in Python), as the
/// Rust SDK's `args_digest_bytes`.
#[pyfunction]
fn args_digest_text(text: &str) -> String {
    serin_sdk::args_digest_bytes(text.as_bytes())
}

#[pymodule]
fn _serin(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeClient>()?;
    m.add_class::<StaticRouter>()?;
    m.add_class::<Decision>()?;
    m.add_class::<Bundle>()?;
    m.add_function(wrap_pyfunction!(bucket, m)?)?;
    m.add_function(wrap_pyfunction!(args_digest_text, m)?)?;
    Ok(())
}
