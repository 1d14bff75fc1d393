//! The background task: follows `GET /v1/envs/{env}/snapshot/stream`,
//! assembles each event into a complete snapshot (merging bundles sent as
//! deltas, fetching the full snapshot when something is missing), swaps it in,
//! and reconnects forever with jittered exponential backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventsource_stream::{Event, Eventsource as _};
use futures_util::StreamExt as _;
use serin_engine::decision::CompiledSnapshot;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Config;
use crate::delta::{MergeError, merge_json};
use crate::router::State;

/// The SSE event type carrying a snapshot.
const SNAPSHOT_EVENT: &str = "snapshot";

pub(super) struct Task {
    pub(super) config: Arc<Config>,
    pub(super) http: reqwest::Client,
    pub(super) state: Arc<State>,
    /// The version last swapped in: tells `Serin::start` that a snapshot is
    /// available, and the reporter what to report.
    pub(super) version_tx: watch::Sender<Option<u64>>,
    /// Hands applied snapshots to the cache writer.
    pub(super) cache_tx: Option<watch::Sender<Option<Arc<CompiledSnapshot>>>>,
}

impl Task {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            () = self.follow() => {}
        }
        self.state.set_connected(false);
    }

    /// Connects, reads, and reconnects; never returns on its own. No server
    /// answer ends it: 401 and 403 are logged and retried like the rest, so
    /// a token fixed on the server heals the SDK without a restart.
    async fn follow(&mut self) {
        let mut attempt: u32 = 0;
        loop {
            let (connected_for, error) = self.session().await;
            self.state.set_connected(false);
            tracing::warn!(env = %self.config.env, error = %error, "snapshot stream down; serving the last snapshot, stale");
            self.state.set_error(error);
            if connected_for >= self.config.backoff_reset_after {
                attempt = 0;
            }
            let delay = backoff(self.config.backoff_min, self.config.backoff_max, attempt);
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
            self.state.count_reconnect();
        }
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}/v1/envs/{}/snapshot{tail}",
            self.config.server, self.config.env
        )
    }

    /// One connection: returns how long it was up and why it ended.
    async fn session(&mut self) -> (Duration, String) {
        // The instance id is validated to URL-safe characters, so it needs no
        // escaping.
        let mut url = format!("{}?instance={}", self.url("/stream"), self.config.instance);
        // Region and pool are validated like the instance id.
        for (key, v) in [("region", &self.config.region), ("pool", &self.config.pool)] {
            if let Some(v) = v {
                url.push_str(&format!("&{key}={v}"));
            }
        }
        let mut request = self
            .http
            .get(&url)
            .bearer_auth(&self.config.token)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(version) = self.state.version() {
            request = request.header("last-event-id", version.to_string());
        }
        let response = match tokio::time::timeout(self.config.request_timeout, request.send()).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return (Duration::ZERO, format!("GET {url}: {e}")),
            Err(_) => {
                return (
                    Duration::ZERO,
                    format!(
                        "GET {url}: no answer within {:?}",
                        self.config.request_timeout
                    ),
                );
            }
        };
        let status = response.status();
        if !status.is_success() {
            let body = error_body(response, self.config.request_timeout).await;
            return (Duration::ZERO, format!("GET {url}: {status}{body}"));
        }
        tracing::info!(env = %self.config.env, last_event_id = ?self.state.version(), "snapshot stream connected");
        self.state.set_connected(true);
        let since = Instant::now();
        let why = self.read(response).await;
        (since.elapsed(), why)
    }

    /// Reads events until the stream ends, breaks, or stays silent longer
    /// than the idle timeout. Keep-alive comments count as life even though
    /// the SSE parser swallows them: the byte stream is watched before it.
    async fn read(&mut self, response: reqwest::Response) -> String {
        let origin = Instant::now();
        let last_bytes_ms = Arc::new(AtomicU64::new(0));
        let seen = last_bytes_ms.clone();
        let mut events = response
            .bytes_stream()
            .inspect(move |_| seen.store(millis(origin.elapsed()), Ordering::Relaxed))
            .eventsource();
        let idle = self.config.idle_timeout;
        let mut first = true;
        loop {
            let last = origin
                .checked_add(Duration::from_millis(last_bytes_ms.load(Ordering::Relaxed)))
                .unwrap_or(origin);
            let deadline = last.checked_add(idle).unwrap_or_else(Instant::now);
            let next = tokio::select! {
                next = events.next() => next,
                () = tokio::time::sleep_until(deadline) => {
                    let silent_since = origin
                        .checked_add(Duration::from_millis(last_bytes_ms.load(Ordering::Relaxed)))
                        .unwrap_or(origin);
                    if silent_since.elapsed() >= idle {
                        return format!("snapshot stream silent for {idle:?}; reconnecting");
                    }
                    continue;
                }
            };
            match next {
                None => return "the server closed the snapshot stream".to_owned(),
                Some(Err(e)) => return format!("snapshot stream broke: {e}"),
                Some(Ok(event)) => {
                    let opening = first && event.event == SNAPSHOT_EVENT;
                    first = first && !opening;
                    if let Err(e) = self.on_event(event, opening).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Applies one event. An `Err` ends the connection (and so triggers a
    /// reconnect, whose first event carries every bundle).
    ///
    /// The `opening` event of a connection is the server's current snapshot.
    /// The server sends one older than the version served only when it does
    /// not know that version (its store was restored from a backup, say): the
    /// server is the source of truth, so the SDK adopts it rather than wait,
    /// silent, for the server to count past a version it will never publish.
    async fn on_event(&mut self, event: Event, opening: bool) -> Result<(), String> {
        if event.event != SNAPSHOT_EVENT {
            tracing::debug!(event = %event.event, "ignoring an unknown stream event");
            return Ok(());
        }
        let held = self.state.version();
        let behind = opening
            && matches!((held, event.id.trim().parse::<u64>()), (Some(h), Ok(id)) if id < h);
        if behind {
            tracing::warn!(
                served = ?held,
                server = %event.id,
                "the server is behind the snapshot this SDK serves (restored store?); adopting the server's"
            );
        }
        let served = if behind { None } else { held };
        if let (Some(served), Ok(id)) = (served, event.id.trim().parse::<u64>())
            && id <= served
        {
            tracing::debug!(id, served, "ignoring a snapshot event that is not newer");
            return Ok(());
        }
        // Read straight into the compiled form, bundles it does not carry shared with the
        // snapshot served: the SDK's whole cost of applying a version.
        let current = self.state.current();
        let compiled = match merge_json(current.as_deref(), event.data.as_bytes()) {
            Ok(c) => c,
            Err(MergeError::Json(e)) => {
                tracing::warn!(error = %e, "unreadable snapshot event; fetching the full snapshot");
                return self.fetch_full().await;
            }
            Err(why) => {
                // As before the fast path: a snapshot of another env is refused and an old
                // one ignored whether or not it would compile.
                #[derive(serde::Deserialize)]
                struct Header {
                    env: String,
                    version: u64,
                }
                if let Ok(h) = serde_json::from_str::<Header>(&event.data) {
                    if h.env != self.config.env {
                        return Err(format!(
                            "the stream sent a snapshot of env {:?}, expected {:?}",
                            h.env, self.config.env
                        ));
                    }
                    if served.is_some_and(|s| h.version <= s) {
                        tracing::debug!(
                            version = h.version,
                            "ignoring a snapshot that is not newer"
                        );
                        return Ok(());
                    }
                }
                tracing::info!(event = %event.id, why = %why, "fetching the full snapshot");
                return self.fetch_full().await;
            }
        };
        if compiled.env() != self.config.env {
            return Err(format!(
                "the stream sent a snapshot of env {:?}, expected {:?}",
                compiled.env(),
                self.config.env
            ));
        }
        if served.is_some_and(|s| compiled.version() <= s) {
            tracing::debug!(
                version = compiled.version(),
                "ignoring a snapshot that is not newer"
            );
            return Ok(());
        }
        self.apply(compiled);
        Ok(())
    }

    /// `GET /v1/envs/{env}/snapshot`: the whole snapshot with every bundle.
    async fn fetch_full(&mut self) -> Result<(), String> {
        let url = self.url("");
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.config.token)
            .timeout(self.config.request_timeout)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = error_body(response, self.config.request_timeout).await;
            return Err(format!("GET {url}: {status}{body}"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: unreadable snapshot: {e}"))?;
        let current = self.state.current();
        let compiled = merge_json(current.as_deref(), &body).map_err(|e| match e {
            MergeError::Json(e) => format!("GET {url}: unreadable snapshot: {e}"),
            e => format!("GET {url}: full snapshot: {e}"),
        })?;
        if compiled.env() != self.config.env {
            return Err(format!(
                "GET {url}: snapshot of env {:?}, expected {:?}",
                compiled.env(),
                self.config.env
            ));
        }
        if self
            .state
            .version()
            .is_some_and(|served| compiled.version() <= served)
        {
            return Ok(());
        }
        self.apply(compiled);
        Ok(())
    }

    fn apply(&self, compiled: CompiledSnapshot) {
        let snapshot = Arc::new(compiled);
        let version = snapshot.version();
        self.state.install(snapshot.clone(), false);
        self.version_tx.send_replace(Some(version));
        if let Some(cache) = &self.cache_tx {
            cache.send_replace(Some(snapshot));
        }
        tracing::info!(env = %self.config.env, version, "snapshot applied");
    }
}

/// The start of an error answer's body, for the log and `Health::last_error`.
async fn error_body(response: reqwest::Response, timeout: Duration) -> String {
    const MAX: usize = 300;
    match tokio::time::timeout(timeout, response.text()).await {
        Ok(Ok(text)) if !text.trim().is_empty() => {
            let text = text.trim();
            let cut = text
                .char_indices()
                .map(|(i, _)| i)
                .take_while(|i| *i <= MAX)
                .last()
                .unwrap_or(0);
            if text.len() > MAX {
                format!(": {}...", text.get(..cut).unwrap_or_default())
            } else {
                format!(": {text}")
            }
        }
        _ => String::new(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Full jitter: uniform in `0..=min(max, min * 2^attempt)`.
pub(super) fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(24)).unwrap_or(u32::MAX);
    let cap = min.saturating_mul(factor).min(max);
    let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::random_range(0..=cap_us))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_stays_within_it() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        for attempt in [0, 1, 2, 4, 5, 10, 40, u32::MAX] {
            let cap = min.saturating_mul(1 << attempt.min(5)).min(max);
            for _ in 0..50 {
                assert!(backoff(min, max, attempt) <= cap, "{attempt}");
            }
        }
        // Full jitter actually spreads.
        let draws: BTreeSet<_> = (0..50).map(|_| backoff(min, max, 10)).collect();
        assert!(draws.len() > 10);
    }
}
