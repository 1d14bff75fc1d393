//! Outcome ingestion and the guardrail monitors.
//!
//! Each canary bundle of an agent in an env gets a `Monitor` (serin-core) that
//! compares it with the stable arm. A batch of outcomes is applied to copies
//! of the monitors and minute rollups it touches, those copies are written in
//! one store transaction, and only then do they replace the in-memory state
//! and is the batch acknowledged: an acknowledged outcome is never lost, and a
//! failed write leaves memory as it was.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use serin_core::decision::Arm;
use serin_core::guardrails::{ArmAggregate, GuardrailConfig, Monitor};
use serin_core::outcome::{EventLimits, OutcomeEvent};
use serin_store::{MonitorRow, RollupRow, Store};
use tokio::sync::Mutex;

use crate::error::{ApiError, ErrorCode};
use crate::hub::Hub;

/// A monitor stops taking control traffic (and leaves memory) after this long
/// without a canary outcome; its persisted evidence stays readable.
const MONITOR_IDLE_MS: i64 = 3_600_000;
/// Request ids are remembered this long to drop retried duplicates.
const DEDUP_WINDOW_MS: i64 = 10 * 60_000;
/// At most this many request ids are remembered (bounded memory under floods).
const DEDUP_MAX: usize = 1_000_000;
/// Events accepted per instance per second; a flooding instance is cut off
/// rather than allowed to dominate a window.
pub const INSTANCE_EVENTS_PER_SECOND: u32 = 50_000;
/// Events per batch.
pub const MAX_BATCH_EVENTS: usize = 10_000;

type MonitorKey = (String, String, String);
type RollupKey = (String, String, String, String, i64);

#[derive(Debug, Clone)]
struct MonitorEntry {
    monitor: Monitor,
    created_at_ms: i64,
    last_canary_ms: i64,
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
struct Dedup {
    seen: HashSet<(String, String)>,
    order: VecDeque<(i64, (String, String))>,
}

impl Dedup {
    fn contains(&self, key: &(String, String)) -> bool {
        self.seen.contains(key)
    }

    fn insert(&mut self, key: (String, String), now_ms: i64) {
        if self.seen.insert(key.clone()) {
            self.order.push_back((now_ms, key));
        }
        while let Some((at, _)) = self.order.front() {
            if *at >= now_ms - DEDUP_WINDOW_MS && self.order.len() <= DEDUP_MAX {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    monitors: HashMap<MonitorKey, MonitorEntry>,
    /// Monitors of running releases: never idled out of memory.
    pinned: HashSet<MonitorKey>,
    rollups: HashMap<RollupKey, ArmAggregate>,
    dedup: Dedup,
    /// instance -> (second, events accepted in it)
    instance_rate: HashMap<String, (i64, u32)>,
    known_bundles: HashSet<String>,
}

#[derive(Debug)]
pub struct Guardrails {
    store: Store,
    hub: Arc<Hub>,
    limits: EventLimits,
    inner: Mutex<Inner>,
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

impl Guardrails {
    /// Loads persisted monitors so verdicts resume where they were.
    pub async fn load(store: Store, hub: Arc<Hub>, now_ms: i64) -> Result<Guardrails, ApiError> {
        let mut inner = Inner::default();
        for row in store.load_monitors().await? {
            if now_ms - row.updated_at_ms > MONITOR_IDLE_MS {
                continue;
            }
            let monitor: Monitor = serde_json::from_str(&row.state).map_err(|e| {
                ApiError::internal(format!(
                    "monitor {}/{} unreadable: {e}",
                    row.candidate, row.env
                ))
            })?;
            inner.monitors.insert(
                (row.env, row.agent, row.candidate),
                MonitorEntry {
                    monitor,
                    created_at_ms: row.created_at_ms,
                    last_canary_ms: row.updated_at_ms,
                },
            );
        }
        Ok(Guardrails {
            store,
            hub,
            limits: EventLimits::DEFAULT,
            inner: Mutex::new(inner),
        })
    }

    async fn config_for(&self, env: &str, agent: &str) -> Result<GuardrailConfig, ApiError> {
        match self.store.guardrail_config(env, agent).await? {
            Some(json) => serde_json::from_str(&json).map_err(ApiError::internal),
            None => Ok(GuardrailConfig::spec_default()),
        }
    }

    async fn bundle_exists(&self, inner: &mut Inner, id: &str) -> Result<bool, ApiError> {
        if inner.known_bundles.contains(id) {
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
            inner.known_bundles.insert(id.to_owned());
        }
        Ok(found)
    }

    /// Validates, deduplicates, aggregates and persists a batch.
    pub async fn ingest(&self, events: Vec<Value>, now_ms: i64) -> Result<IngestReport, ApiError> {
        let mut report = IngestReport {
            accepted: 0,
            duplicates: 0,
            rejected: 0,
            errors: Vec::new(),
        };
        let reject = |report: &mut IngestReport, r: Rejection| {
            metrics::counter!("serin_outcomes_total", "result" => "rejected", "code" => r.code.clone())
                .increment(1);
            report.rejected += 1;
            if report.errors.len() < 100 {
                report.errors.push(r);
            }
        };
        let mut inner = self.inner.lock().await;
        let mut accepted: Vec<OutcomeEvent> = Vec::with_capacity(events.len());
        let mut batch_ids: HashSet<(String, String)> = HashSet::new();
        for (index, raw) in events.into_iter().enumerate() {
            let request_id = raw
                .get("request_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let event: OutcomeEvent = match crate::extract::parse_value(raw) {
                Ok(e) => e,
                Err(e) => {
                    let field = e.field.clone().unwrap_or_else(|| "/".into());
                    reject(
                        &mut report,
                        Rejection {
                            index,
                            request_id,
                            code: "invalid_event".into(),
                            field: format!(
                                "/events/{index}{}",
                                if field == "/" { "" } else { &field }
                            ),
                            reason: e.message,
                        },
                    );
                    continue;
                }
            };
            let fail = |code: &str, field: &str, reason: String| Rejection {
                index,
                request_id: Some(event.request_id.clone()),
                code: code.to_owned(),
                field: format!("/events/{index}{field}"),
                reason,
            };
            if let Err(e) = event.validate(now_ms, &self.limits) {
                reject(&mut report, fail(e.code, &e.field, e.reason));
                continue;
            }
            let snapshot = self.hub.current(&event.env).await?;
            if !snapshot
                .compiled
                .snapshot()
                .agents
                .contains_key(&event.agent)
            {
                reject(
                    &mut report,
                    fail(
                        "unknown_agent",
                        "/agent",
                        format!("agent {} is not routed in env {}", event.agent, event.env),
                    ),
                );
                continue;
            }
            if !self.bundle_exists(&mut inner, &event.bundle).await? {
                reject(
                    &mut report,
                    fail(
                        "unknown_bundle",
                        "/bundle",
                        format!("no bundle {}", event.bundle),
                    ),
                );
                continue;
            }
            let key = (event.env.clone(), event.request_id.clone());
            if inner.dedup.contains(&key) || !batch_ids.insert(key) {
                report.duplicates += 1;
                metrics::counter!("serin_outcomes_total", "result" => "duplicate").increment(1);
                continue;
            }
            if let Some(instance) = &event.instance {
                let second = now_ms.div_euclid(1000);
                let slot = inner
                    .instance_rate
                    .entry(instance.clone())
                    .or_insert((second, 0));
                if slot.0 != second {
                    *slot = (second, 0);
                }
                if slot.1 >= INSTANCE_EVENTS_PER_SECOND {
                    reject(
                        &mut report,
                        fail(
                            "rate_limited",
                            "/instance",
                            format!(
                                "instance {instance} sent over {INSTANCE_EVENTS_PER_SECOND} events this second"
                            ),
                        ),
                    );
                    continue;
                }
                slot.1 += 1;
            }
            accepted.push(event);
        }
        if accepted.is_empty() {
            return Ok(report);
        }

        // Apply to copies; swap them in only after the store has them.
        let mut monitors: HashMap<MonitorKey, MonitorEntry> = HashMap::new();
        let mut rollups: HashMap<RollupKey, ArmAggregate> = HashMap::new();
        let minute = now_ms - now_ms.rem_euclid(60_000);
        for e in &accepted {
            let rkey = (
                e.env.clone(),
                e.agent.clone(),
                e.bundle.clone(),
                arm_name(e.arm).to_owned(),
                minute,
            );
            if !rollups.contains_key(&rkey) {
                let current = inner.rollups.get(&rkey).cloned().unwrap_or_default();
                rollups.insert(rkey.clone(), current);
            }
            if let Some(agg) = rollups.get_mut(&rkey) {
                agg.record(e);
            }
            match e.arm {
                Arm::Canary => {
                    let mkey = (e.env.clone(), e.agent.clone(), e.bundle.clone());
                    if !monitors.contains_key(&mkey) {
                        let entry = match inner.monitors.get(&mkey) {
                            Some(m) => m.clone(),
                            None => MonitorEntry {
                                monitor: Monitor::new(self.config_for(&e.env, &e.agent).await?),
                                created_at_ms: now_ms,
                                last_canary_ms: now_ms,
                            },
                        };
                        monitors.insert(mkey.clone(), entry);
                    }
                    if let Some(m) = monitors.get_mut(&mkey) {
                        m.monitor.observe(e);
                        m.last_canary_ms = now_ms;
                    }
                }
                Arm::Stable => {
                    let keys: Vec<MonitorKey> = inner
                        .monitors
                        .keys()
                        .chain(monitors.keys())
                        .filter(|(env, agent, cand)| {
                            env == &e.env && agent == &e.agent && cand != &e.bundle
                        })
                        .cloned()
                        .collect::<HashSet<_>>()
                        .into_iter()
                        .collect();
                    for mkey in keys {
                        if !monitors.contains_key(&mkey)
                            && let Some(m) = inner.monitors.get(&mkey)
                        {
                            monitors.insert(mkey.clone(), m.clone());
                        }
                        if let Some(m) = monitors.get_mut(&mkey) {
                            m.monitor.observe(e);
                        }
                    }
                }
                Arm::Killed => {}
            }
        }
        let mut monitor_rows = Vec::with_capacity(monitors.len());
        for (key, m) in &monitors {
            monitor_rows.push(m.row(key)?);
        }
        let mut rollup_rows = Vec::with_capacity(rollups.len());
        for ((env, agent, bundle, arm, minute_ms), agg) in &rollups {
            rollup_rows.push(RollupRow {
                env: env.clone(),
                agent: agent.clone(),
                bundle: bundle.clone(),
                arm: arm.clone(),
                minute_ms: *minute_ms,
                data: serde_json::to_string(agg).map_err(ApiError::internal)?,
            });
        }
        self.store
            .save_outcomes(&monitor_rows, &rollup_rows)
            .await?;

        // Durable: now it may become visible.
        for e in &accepted {
            inner
                .dedup
                .insert((e.env.clone(), e.request_id.clone()), now_ms);
        }
        inner.monitors.extend(monitors);
        inner
            .monitors
            .retain(|_, m| now_ms - m.last_canary_ms <= MONITOR_IDLE_MS);
        inner.rollups.extend(rollups);
        inner.rollups.retain(|(_, _, _, _, m), _| *m >= minute);
        report.accepted = accepted.len();
        metrics::counter!("serin_outcomes_total", "result" => "accepted")
            .increment(accepted.len() as u64);
        Ok(report)
    }

    /// Starts fresh evidence for a release's candidate with the plan's
    /// thresholds (replacing any earlier comparison of the same bundle), and
    /// keeps it in memory for as long as the release runs.
    pub async fn begin(
        &self,
        env: &str,
        agent: &str,
        candidate: &str,
        config: GuardrailConfig,
        share: f64,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let mut inner = self.inner.lock().await;
        let key = (env.to_owned(), agent.to_owned(), candidate.to_owned());
        let mut monitor = Monitor::new(config);
        monitor.set_canary_share(share);
        let entry = MonitorEntry {
            monitor,
            created_at_ms: now_ms,
            last_canary_ms: now_ms,
        };
        self.store.save_outcomes(&[entry.row(&key)?], &[]).await?;
        inner.pinned.insert(key.clone());
        inner.monitors.insert(key, entry);
        Ok(())
    }

    /// Tells the release's monitor the canary's traffic share (at every step,
    /// so its tests are exact across the ramp). Unpins it when `share` is None.
    pub async fn set_share(
        &self,
        env: &str,
        agent: &str,
        candidate: &str,
        share: Option<f64>,
    ) -> Result<(), ApiError> {
        let mut inner = self.inner.lock().await;
        let key = (env.to_owned(), agent.to_owned(), candidate.to_owned());
        let Some(share) = share else {
            inner.pinned.remove(&key);
            return Ok(());
        };
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
                MonitorEntry {
                    monitor: serde_json::from_str(&row.state).map_err(ApiError::internal)?,
                    created_at_ms: row.created_at_ms,
                    last_canary_ms: row.updated_at_ms,
                }
            }
        };
        entry.monitor.set_canary_share(share);
        self.store.save_outcomes(&[entry.row(&key)?], &[]).await?;
        inner.pinned.insert(key.clone());
        inner.monitors.insert(key, entry);
        Ok(())
    }

    /// Canary requests and verdicts of one comparison (zero and none if it
    /// has no evidence yet).
    pub async fn evidence(
        &self,
        env: &str,
        agent: &str,
        candidate: &str,
    ) -> (u64, Vec<serin_core::guardrails::Verdict>) {
        let inner = self.inner.lock().await;
        let key = (env.to_owned(), agent.to_owned(), candidate.to_owned());
        match inner.monitors.get(&key) {
            Some(m) => (m.monitor.canary().requests, m.monitor.verdicts()),
            None => (0, Vec::new()),
        }
    }

    /// Every live comparison of `agent` in `env`, newest candidate first.
    pub async fn comparisons(&self, env: &str, agent: &str) -> Vec<(String, i64, Monitor)> {
        let inner = self.inner.lock().await;
        let mut out: Vec<(String, i64, Monitor)> = inner
            .monitors
            .iter()
            .filter(|((e, a, _), _)| e == env && a == agent)
            .map(|((_, _, c), m)| (c.clone(), m.last_canary_ms, m.monitor.clone()))
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.1));
        out
    }
}

fn arm_name(arm: Arm) -> &'static str {
    match arm {
        Arm::Stable => "stable",
        Arm::Canary => "canary",
        Arm::Killed => "killed",
    }
}

/// Splits a body `{"events": [...]}` into raw events, refusing oversized batches.
pub fn batch_events(body: Value) -> Result<Vec<Value>, ApiError> {
    let Value::Object(mut map) = body else {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/",
            "the body must be {\"events\": [...]}",
        ));
    };
    if let Some(k) = map.keys().find(|k| k.as_str() != "events") {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            format!("/{k}"),
            format!("unknown field `{k}`; the body is {{\"events\": [...]}}"),
        ));
    }
    match map.remove("events") {
        Some(Value::Array(events)) => {
            if events.len() > MAX_BATCH_EVENTS {
                return Err(ApiError::field(
                    ErrorCode::InvalidField,
                    "/events",
                    format!(
                        "{} events in one batch; send at most {MAX_BATCH_EVENTS}",
                        events.len()
                    ),
                ));
            }
            Ok(events)
        }
        _ => Err(ApiError::field(
            ErrorCode::InvalidField,
            "/events",
            "events must be an array",
        )),
    }
}
