//! Outcome reporting: `Serin::record` queues an event without blocking; a
//! background task sends batches to `POST /v1/outcomes`. When the server is
//! away the batch is retried with backoff while new events wait in a bounded
//! queue; once the queue is full, new events are dropped and counted, never
//! allowed to block or grow the agent's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serin_engine::outcome::OutcomeEvent;
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
}

pub(super) struct Recorder {
    pub(super) config: Arc<Config>,
    pub(super) http: reqwest::Client,
    pub(super) rx: mpsc::Receiver<OutcomeEvent>,
    pub(super) counters: Arc<Counters>,
}

impl Recorder {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let url = format!("{}/v1/outcomes", self.config.server);
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
            if !batch.is_empty() {
                self.send(&url, &mut batch, &mut stop, stopping).await;
            }
            if stopping || *stop.borrow() {
                return;
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
        let mut attempt = 0u32;
        loop {
            let result = self
                .http
                .post(url)
                .bearer_auth(&self.config.token)
                .timeout(self.config.request_timeout)
                .json(&body)
                .send()
                .await;
            match result {
                Ok(resp) if resp.status().is_success() => {
                    match resp.json::<Answer>().await {
                        Ok(a) => {
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
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable answer to an outcome batch")
                        }
                    }
                    batch.clear();
                    return;
                }
                Ok(resp) if resp.status().is_client_error() && resp.status().as_u16() != 429 => {
                    // The whole batch is unacceptable as sent (e.g. too large,
                    // wrong token role): retrying cannot help, and holding it
                    // would block every later event.
                    tracing::warn!(status = %resp.status(), events = batch.len(), "outcome batch refused");
                    self.counters
                        .rejected
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                Ok(resp) => {
                    tracing::warn!(status = %resp.status(), "outcome batch not taken; will retry")
                }
                Err(e) => tracing::warn!(error = %e, "could not send outcomes; will retry"),
            }
            if stopping || *stop.borrow() {
                self.counters.dropped(batch.len() as u64);
                batch.clear();
                return;
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
