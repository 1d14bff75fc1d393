//! Applied-version reports: after each snapshot is swapped in, tell the
//! server which version this instance serves (`POST /v1/sdk/applied`), so a
//! rollback drill can measure when the fleet actually serves a change rather
//! than when it was sent.
//!
//! The stream task only replaces the value of a `watch` channel; this task
//! does the HTTP, so reporting never slows the stream or decisions. The
//! channel holds only the latest version: several swaps during one request
//! coalesce into one report of the newest.

use std::sync::Arc;

use tokio::sync::watch;

use super::Config;
use super::stream::backoff;
use crate::router::State;

/// How the SDK names itself in reports.
pub(super) const SDK_NAME: &str = concat!("serin-rust/", env!("CARGO_PKG_VERSION"));

pub(super) struct Reporter {
    pub(super) config: Arc<Config>,
    pub(super) http: reqwest::Client,
    /// The version last swapped in; its current value at start is not
    /// reported (it is the cache's, or none, and the stream's `Last-Event-ID`
    /// tells the server about it).
    pub(super) applied: watch::Receiver<Option<u64>>,
    /// Where the report counters live (shown in `Health`).
    pub(super) state: Arc<State>,
}

/// What became of one report.
enum Outcome {
    /// Taken, or not worth sending again (404: a server that predates the
    /// route; another 4xx: refused as sent).
    Done,
    /// Network error, timeout, 429 or 5xx: try again after a backoff.
    Retry,
}

impl Reporter {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let url = format!("{}/v1/sdk/applied", self.config.server);
        let mut pending: Option<u64> = None;
        let mut attempt: u32 = 0;
        loop {
            let Some(version) = pending else {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    changed = self.applied.changed() => if changed.is_err() { return },
                }
                pending = *self.applied.borrow_and_update();
                attempt = 0;
                continue;
            };
            let outcome = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                outcome = self.send(&url, version) => outcome,
            };
            match outcome {
                Outcome::Done => pending = None,
                Outcome::Retry => {
                    let delay = backoff(self.config.backoff_min, self.config.backoff_max, attempt);
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        () = tokio::time::sleep(delay) => {}
                        // A newer version replaces the one that failed.
                        changed = self.applied.changed() => if changed.is_err() { return },
                    }
                    // Versions only grow, so the channel's value is at least
                    // as new as the pending one.
                    pending = (*self.applied.borrow_and_update()).or(pending);
                }
            }
        }
    }

    async fn send(&self, url: &str, version: u64) -> Outcome {
        let mut body = serde_json::json!({
            "env": self.config.env,
            "instance": self.config.instance,
            "version": version,
            "sdk": SDK_NAME,
        });
        // Only what the instance says about itself: an unset place is left out, not null.
        for (key, v) in [("region", &self.config.region), ("pool", &self.config.pool)] {
            if let (Some(v), Some(map)) = (v, body.as_object_mut()) {
                map.insert(key.to_owned(), serde_json::Value::from(v.as_str()));
            }
        }
        let result = self
            .http
            .post(url)
            .bearer_auth(&self.config.token)
            .timeout(self.config.request_timeout)
            .json(&body)
            .send()
            .await;
        let status = match result {
            Ok(resp) => resp.status(),
            Err(e) => {
                tracing::debug!(version, error = %e, "could not report the applied version");
                self.state.count_report(false);
                return Outcome::Retry;
            }
        };
        if status.is_success() {
            self.state.count_report(true);
            Outcome::Done
        } else if status == reqwest::StatusCode::NOT_FOUND {
            tracing::debug!(
                version,
                "the server does not take applied-version reports (404)"
            );
            Outcome::Done
        } else {
            tracing::debug!(version, %status, "the server did not take the applied-version report");
            self.state.count_report(false);
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                Outcome::Retry
            } else {
                Outcome::Done
            }
        }
    }
}
