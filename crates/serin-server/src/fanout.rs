//! Snapshot fan-out between replicas sharing one PostgreSQL store.
//!
//! A replica publishes its own commits at once (the route or controller hands the committed
//! state to the hub). Commits by other replicas arrive here: the store announces every
//! env-state commit with NOTIFY, and this task's listener session hears it and has the hub
//! publish that env's newest version to this replica's subscribers.
//!
//! NOTIFY is not queued for a session that is gone, so after every (re)connect, once the
//! LISTEN is in place, the task reads every env the hub serves (`Hub::refresh`): what was
//! committed while it was away is published then, and what is committed from then on is heard.
//! Between a lost session and that catch-up, the hub's poller (`--refresh-ms`) still runs, so
//! a replica whose listener cannot reconnect lags by at most one poll.
//!
//! SQLite has one server per data directory, so there is nobody to listen to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serin_store::{EnvChange, Store};

use crate::hub::Hub;

/// First wait before reconnecting a lost or refused listener session.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// The wait doubles after each failed attempt up to this.
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// A session that stayed up this long was healthy: after losing it, start again from
/// [`RECONNECT_MIN`] rather than from where the last outage left the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// What `/readyz` reports about this replica's part in the fan-out.
#[derive(Debug)]
pub struct ReplicaStatus {
    backend: &'static str,
    /// Present on PostgreSQL: whether the listener session is up and listening.
    listener: Option<AtomicBool>,
}

impl ReplicaStatus {
    pub fn new(store: &Store) -> ReplicaStatus {
        let postgres = store.backend_name() == "postgres";
        ReplicaStatus {
            backend: store.backend_name(),
            listener: postgres.then(|| AtomicBool::new(false)),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Whether the listener is connected; `None` where there is no listener (SQLite).
    pub fn listener_connected(&self) -> Option<bool> {
        self.listener.as_ref().map(|c| c.load(Ordering::Acquire))
    }

    fn set_connected(&self, up: bool) {
        if let Some(c) = &self.listener {
            c.store(up, Ordering::Release);
        }
        metrics::gauge!("serin_snapshot_listener_connected").set(if up { 1.0 } else { 0.0 });
    }
}

/// The `application_name` of this process's listener session in `pg_stat_activity`, so an
/// operator (or a test) can tell which replica a session belongs to.
pub fn listener_application_name() -> String {
    format!("serin-listener/{}", std::process::id())
}

/// The wait before the next attempt after `current`, doubled and capped.
fn next_backoff(current: Duration) -> Duration {
    current.saturating_mul(2).min(RECONNECT_MAX)
}

/// The wait actually slept: uniform in `[d/2, d]`. Replicas that lost their sessions
/// together (a PostgreSQL restart) would otherwise reconnect in lockstep, each attempt a
/// burst of every replica's catch-up reads at once.
fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Runs the listener until the hub is dropped (or the task aborted). Returns `None` on SQLite.
pub fn spawn_listener(
    store: Store,
    hub: &Arc<Hub>,
    status: Arc<ReplicaStatus>,
) -> Option<tokio::task::JoinHandle<()>> {
    status.listener.as_ref()?;
    let hub = Arc::downgrade(hub);
    Some(tokio::spawn(listen(store, hub, status)))
}

async fn listen(store: Store, hub: Weak<Hub>, status: Arc<ReplicaStatus>) {
    let name = listener_application_name();
    let mut backoff = RECONNECT_MIN;
    let mut lost_once = false;
    loop {
        match store.listen_env_changes(&name).await {
            Ok(Some(mut listener)) => {
                let since = Instant::now();
                status.set_connected(true);
                if lost_once {
                    metrics::counter!("serin_snapshot_listener_reconnects_total").increment(1);
                    tracing::info!(
                        channel = listener.channel(),
                        "snapshot listener reconnected; catching up"
                    );
                } else {
                    tracing::debug!(channel = listener.channel(), "snapshot listener connected");
                }
                // After the LISTEN, so a commit is either read here or announced later.
                let Some(h) = hub.upgrade() else { return };
                if let Err(e) = h.refresh().await {
                    tracing::warn!(error = %e.message, "snapshot catch-up after (re)connecting failed; the poller will retry");
                }
                drop(h);
                let lost = loop {
                    let change = match listener.recv().await {
                        Ok(c) => c,
                        Err(e) => break e,
                    };
                    let Some(h) = hub.upgrade() else { return };
                    metrics::counter!("serin_snapshot_announcements_total").increment(1);
                    let published = match change {
                        EnvChange::Committed { env, version } => {
                            let version = u64::try_from(version).unwrap_or(0);
                            h.announced(&env, version).await
                        }
                        EnvChange::Unknown => h.refresh().await,
                    };
                    if let Err(e) = published {
                        tracing::warn!(error = %e.message, "could not publish an announced snapshot; the poller will retry");
                    }
                };
                status.set_connected(false);
                lost_once = true;
                if since.elapsed() >= HEALTHY_AFTER {
                    backoff = RECONNECT_MIN;
                }
                tracing::warn!(error = %lost, retry_within_ms = backoff.as_millis() as u64,
                    "snapshot listener lost its database session; reconnecting (the poller covers meanwhile)");
            }
            Ok(None) => return,
            Err(e) => {
                lost_once = true;
                tracing::warn!(error = %e, retry_within_ms = backoff.as_millis() as u64,
                    "snapshot listener could not connect; retrying (the poller covers meanwhile)");
            }
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = next_backoff(backoff);
        if hub.strong_count() == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconnect_backoff_doubles_up_to_its_cap() {
        let mut waits = vec![RECONNECT_MIN];
        for _ in 0..10 {
            let last = *waits.last().unwrap_or(&RECONNECT_MIN);
            waits.push(next_backoff(last));
        }
        assert_eq!(waits.get(1), Some(&Duration::from_millis(200)));
        assert_eq!(waits.get(3), Some(&Duration::from_millis(800)));
        assert_eq!(waits.last(), Some(&RECONNECT_MAX));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn a_jittered_wait_stays_within_half_and_whole_and_varies() {
        let d = Duration::from_millis(800);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(d)).collect();
        assert!(waits.iter().all(|w| *w >= d / 2 && *w <= d), "{waits:?}");
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "jitter does not vary: {distinct:?}");
    }
}
