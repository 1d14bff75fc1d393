//! Outcome reporting: `Serin::record` queues an event without blocking; a
//! background task sends batches to `POST /v1/outcomes`. When the server is
//! away the batch is retried with backoff while new events wait in a bounded
//! queue; once the queue is full, new events are dropped and counted, never
//! allowed to block or grow the agent's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;

use serde::Serialize;
use serin_engine::decision::Arm;
use serin_engine::outcome::{ArmWindow, EventLimits, OutcomeEvent, OutcomeWindow};
use tokio::sync::{mpsc, watch};

use super::Config;
use super::stream::backoff;

/// Counters of the outcome pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeStats {
    /// Accepted by the server (duplicates of a retried batch included).
    pub sent: u64,
    /// Refused by the server as invalid (see the server's answer in the log).
    pub rejected: u64,
    /// Dropped because the queue was full or the SDK was shut down.
    pub dropped: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    sent: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> OutcomeStats {
        OutcomeStats {
            sent: self.sent.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    pub(super) fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Debug, serde::Deserialize)]
struct Answer {
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    #[serde(default)]
    errors: Vec<AnswerError>,
}

#[derive(Debug, serde::Deserialize)]
struct AnswerError {
    index: usize,
}

pub(super) struct Recorder {
    pub(super) config: Arc<Config>,
    pub(super) http: reqwest::Client,
    pub(super) rx: mpsc::Receiver<OutcomeEvent>,
    pub(super) counters: Arc<Counters>,
    /// For the exclusions of the snapshot in force (windows mode).
    pub(super) router: crate::router::Router,
    /// Windows minted so far: the last part of their ids.
    pub(super) windows_sent: u64,
    /// Drawn once per process: with a stable instance id (a pod name) a restarted process
    /// counts windows from 1 again, and without it those ids would repeat the last
    /// process's, which the server would drop as retries for 10 minutes.
    pub(super) windows_nonce: u32,
}

impl Recorder {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let url = format!("{}/v1/outcomes", self.config.server);
        let windows_url = format!("{}/v1/outcomes/windows", self.config.server);
        let mut batch: Vec<OutcomeEvent> = Vec::with_capacity(self.config.outcome_batch);
        loop {
            // Fill a batch: up to `outcome_batch` events or `outcome_flush` time.
            let deadline = tokio::time::Instant::now() + self.config.outcome_flush;
            let mut stopping = false;
            while batch.len() < self.config.outcome_batch {
                tokio::select! {
                    ev = self.rx.recv() => match ev {
                        Some(e) => batch.push(e),
                        None => { stopping = true; break; }
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.changed() => { stopping = true; break; }
                }
            }
            if stopping {
                while let Ok(e) = self.rx.try_recv() {
                    batch.push(e);
                }
            }
            if !batch.is_empty() && self.config.outcome_windows {
                let windows = self.windows_of(&mut batch);
                if !windows.is_empty() {
                    self.send_windows(&windows_url, windows, &mut stop, stopping)
                        .await;
                }
            }
            if !batch.is_empty() {
                self.send(&url, &mut batch, &mut stop, stopping).await;
            }
            if stopping || *stop.borrow() {
                return;
            }
        }
    }

    /// Takes the outcomes of `batch` that can go as windows out of it: one window per
    /// (env, agent, snapshot version), both arms together. Outcomes of a tenant the current
    /// snapshot's release excludes stay in `batch`, to go as events: the server leaves them
    /// out of the comparison by tenant, which a window cannot carry.
    fn windows_of(&mut self, batch: &mut Vec<OutcomeEvent>) -> Vec<OutcomeWindow> {
        let snapshot = self.router.snapshot();
        let excluded = |e: &OutcomeEvent| {
            let (Some(t), Some(s)) = (&e.tenant, &snapshot) else {
                return false;
            };
            s.snapshot()
                .agents
                .get(&e.agent)
                .and_then(|a| a.release.as_ref())
                .is_some_and(|r| r.exclude_tenants.contains(t))
        };
        // A window holds one place's outcomes (a waved release judges each wave on its
        // own): an outcome's own region and pool, else this instance's.
        type Key = (String, String, u64, Option<String>, Option<String>);
        let mut parts: BTreeMap<Key, Vec<ArmWindow>> = BTreeMap::new();
        let mut raw = Vec::new();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        for e in batch.drain(..) {
            // An invalid outcome would sink its whole window; as an event the server refuses
            // it alone, with its reason.
            if e.arm == Arm::Killed
                || excluded(&e)
                || e.validate(now_ms, &EventLimits::DEFAULT).is_err()
            {
                raw.push(e);
                continue;
            }
            let arms = parts
                .entry((
                    e.env.clone(),
                    e.agent.clone(),
                    e.snapshot_version,
                    e.region.clone().or_else(|| self.config.region.clone()),
                    e.pool.clone().or_else(|| self.config.pool.clone()),
                ))
                .or_default();
            if !arms.iter().any(|a| a.arm == e.arm) {
                arms.push(ArmWindow::new(e.arm, e.bundle.clone()));
            }
            let Some(part) = arms.iter_mut().find(|a| a.arm == e.arm) else {
                raw.push(e);
                continue;
            };
            // Two bundles on one arm under one version cannot happen in a snapshot; should
            // it, the outcome goes as an event rather than be misfiled.
            if part.bundle != e.bundle {
                raw.push(e);
                continue;
            }
            if part.requests() >= serin_engine::outcome::MAX_WINDOW_REQUESTS as u64 {
                raw.push(e);
                continue;
            }
            part.add(&e);
        }
        *batch = raw;
        parts
            .into_iter()
            .map(|((env, agent, version, region, pool), arms)| {
                self.windows_sent += 1;
                OutcomeWindow {
                    // Unique per process (instance and nonce) and per window; a retry sends
                    // the same id, which the server counts once.
                    window_id: format!(
                        "{}/{:08x}/{}",
                        self.config.instance, self.windows_nonce, self.windows_sent
                    ),
                    agent,
                    env,
                    snapshot_version: version,
                    instance: Some(self.config.instance.clone()),
                    region,
                    pool,
                    at_ms: Some(now_ms),
                    arms,
                }
            })
            .collect()
    }

    /// Sends windows as [`Recorder::send`] sends events.
    async fn send_windows(
        &self,
        url: &str,
        windows: Vec<OutcomeWindow>,
        stop: &mut watch::Receiver<bool>,
        stopping: bool,
    ) {
        let requests: Vec<u64> = windows.iter().map(OutcomeWindow::requests).collect();
        let total: u64 = requests.iter().sum();
        let body = serde_json::json!({ "windows": windows });
        if let Some(a) = self.deliver(url, &body, total, stop, stopping).await {
            let refused: u64 = a.errors.iter().filter_map(|e| requests.get(e.index)).sum();
            self.counters
                .sent
                .fetch_add(total.saturating_sub(refused), Ordering::Relaxed);
            self.counters.rejected.fetch_add(refused, Ordering::Relaxed);
            if a.rejected > 0 {
                tracing::warn!(
                    rejected = a.rejected,
                    "the server refused some outcome windows"
                );
            }
        }
    }

    /// Sends `batch`, retrying with backoff until it is delivered (or, when
    /// stopping, after one attempt).
    async fn send(
        &self,
        url: &str,
        batch: &mut Vec<OutcomeEvent>,
        stop: &mut watch::Receiver<bool>,
        stopping: bool,
    ) {
        let body = serde_json::json!({ "events": &*batch });
        let n = batch.len() as u64;
        batch.clear();
        if let Some(a) = self.deliver(url, &body, n, stop, stopping).await {
            self.counters
                .sent
                .fetch_add(a.accepted + a.duplicates, Ordering::Relaxed);
            self.counters
                .rejected
                .fetch_add(a.rejected, Ordering::Relaxed);
            if a.rejected > 0 {
                tracing::warn!(
                    rejected = a.rejected,
                    "the server refused some outcome events"
                );
            }
        }
    }

    /// Posts `body` (standing for `n` outcomes), retrying with backoff until it is delivered
    /// (or, when stopping, after one attempt); the server's answer, or `None` when the body
    /// was refused whole or dropped (both counted here).
    async fn deliver(
        &self,
        url: &str,
        body: &serde_json::Value,
        n: u64,
        stop: &mut watch::Receiver<bool>,
        stopping: bool,
    ) -> Option<Answer> {
        let mut attempt = 0u32;
        loop {
            let result = self
                .http
                .post(url)
                .bearer_auth(&self.config.token)
                .timeout(self.config.request_timeout)
                .json(body)
                .send()
                .await;
            match result {
                Ok(resp) if resp.status().is_success() => {
                    return match resp.json::<Answer>().await {
                        Ok(a) => Some(a),
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable answer to an outcome batch");
                            None
                        }
                    };
                }
                Ok(resp) if resp.status().is_client_error() && resp.status().as_u16() != 429 => {
                    // The whole batch is unacceptable as sent (e.g. too large,
                    // wrong token role): retrying cannot help, and holding it
                    // would block every later event.
                    tracing::warn!(status = %resp.status(), outcomes = n, "outcome batch refused");
                    self.counters.rejected.fetch_add(n, Ordering::Relaxed);
                    return None;
                }
                Ok(resp) => {
                    tracing::warn!(status = %resp.status(), "outcome batch not taken; will retry")
                }
                Err(e) => tracing::warn!(error = %e, "could not send outcomes; will retry"),
            }
            if stopping || *stop.borrow() {
                self.counters.dropped(n);
                return None;
            }
            let delay = backoff(self.config.backoff_min, self.config.backoff_max, attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Default capacity of the outcome queue.
pub const DEFAULT_QUEUE: usize = 10_000;
/// Default largest batch.
pub const DEFAULT_BATCH: usize = 500;
/// Default longest wait before a partial batch is sent.
pub const DEFAULT_FLUSH: Duration = Duration::from_secs(1);
