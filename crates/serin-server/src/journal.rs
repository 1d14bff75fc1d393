//! Shared evidence between replicas on one PostgreSQL store (the background half; ingestion
//! itself is in `guardrails.rs`).
//!
//! A replica that does not lead appends each outcome batch it accepts to the store's outcome
//! journal instead of judging it on its own copy of the monitors (which could be older than the
//! leader's and would overwrite it). Two tasks run on every PostgreSQL replica:
//!
//! - the **consumer**, active only while this replica leads: it applies journal rows past the
//!   stored cursor to the leader's monitors as soon as an append is announced (NOTIFY on the
//!   store's outcome channel) or, as a fallback while its listener session is down or an
//!   announcement is lost, every [`POLL`]; it prunes consumed rows older than [`KEEP_MS`];
//! - the **view refresher**, active only while this replica does not lead: it reads the monitor
//!   rows written since it last looked, so the verdicts this replica shows (release status,
//!   evidence, reports) are the leader's stored ones.
//!
//! The refresher polls a one-row revision every [`REFRESH`] rather than listening: the read is
//! a primary-key lookup, it needs no session of its own and no catch-up after one is cut, and
//! it also sees monitor rows that commands write on any replica (release start, exposures),
//! which no single NOTIFY would cover. Views lag the leader by at most that interval plus the
//! leader's own consumption.
//!
//! SQLite has one server per data directory, which always judges directly: neither task runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serin_store::{JournalListener, Store};

use crate::clock;
use crate::guardrails::{Guardrails, JOURNAL_CHUNK_ROWS};
use crate::leader::Leader;

/// The consumer's fallback poll when no announcement arrives.
pub const POLL: Duration = Duration::from_millis(200);
/// How often a replica that does not lead reads the monitors changed since it last looked.
pub const REFRESH: Duration = Duration::from_millis(300);
/// Consumed journal rows are kept this long (for diagnosis), then pruned.
pub const KEEP_MS: i64 = 3_600_000;
/// How often the leader prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The wait before opening the listener session again after it failed.
const RELISTEN: Duration = Duration::from_secs(5);

/// The `application_name` of this process's journal listener in `pg_stat_activity`.
pub fn listener_application_name() -> String {
    format!("serin-journal/{}", std::process::id())
}

/// Starts the consumer and the view refresher; `None` on SQLite.
pub fn spawn(
    store: Store,
    guardrails: Arc<Guardrails>,
    leader: Arc<Leader>,
) -> Option<[tokio::task::JoinHandle<()>; 2]> {
    if store.backend_name() != "postgres" {
        return None;
    }
    let consumer = tokio::spawn(consume(store, guardrails.clone(), leader.clone()));
    let refresher = tokio::spawn(refresh_views(guardrails, leader));
    Some([consumer, refresher])
}

async fn consume(store: Store, guardrails: Arc<Guardrails>, leader: Arc<Leader>) {
    let name = listener_application_name();
    let mut listener: Option<JournalListener> = None;
    let mut listen_after = Instant::now();
    let mut prune_after = Instant::now();
    loop {
        let Some(epoch) = leader.epoch() else {
            // Only the leader applies the journal; a deposed one lets its session go.
            listener = None;
            tokio::time::sleep(POLL).await;
            continue;
        };
        if listener.is_none() && Instant::now() >= listen_after {
            // Opened before reading, so an append is either read below or announced later.
            match store.listen_outcome_journal(&name).await {
                Ok(l) => listener = l,
                Err(e) => {
                    tracing::warn!(error = %e, "could not listen for journalled outcomes; polling every {} ms", POLL.as_millis());
                    listen_after = Instant::now() + RELISTEN;
                }
            }
        }
        loop {
            match guardrails.consume_journal(epoch).await {
                Ok(n) if n >= JOURNAL_CHUNK_ROWS => {}
                Ok(_) => break,
                Err(e) => {
                    // A write refused for its epoch means a newer leader exists; anything else
                    // is retried at the next pass (the cursor did not move).
                    if !leader.superseded(epoch).await {
                        tracing::warn!(error = %e.message, "applying journalled outcomes failed; retrying");
                    }
                    break;
                }
            }
        }
        match store.journal_marks().await {
            Ok(marks) => {
                metrics::gauge!("serin_outcome_journal_behind").set(marks.behind as f64);
            }
            Err(e) => tracing::debug!(error = %e, "could not read the journal's lag"),
        }
        if Instant::now() >= prune_after {
            prune_after = Instant::now() + PRUNE_EVERY;
            match store.prune_journal(clock::now_ms() - KEEP_MS).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "pruned consumed journal rows"),
                Err(e) => tracing::warn!(error = %e, "could not prune the outcome journal"),
            }
        }
        match listener.as_mut() {
            Some(l) => match tokio::time::timeout(POLL, l.recv()).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the journal listener lost its session; polling until it is back");
                    listener = None;
                    listen_after = Instant::now() + POLL;
                }
            },
            None => tokio::time::sleep(POLL).await,
        }
    }
}

async fn refresh_views(guardrails: Arc<Guardrails>, leader: Arc<Leader>) {
    // From 0: the first pass re-reads every row written since the migration, which also
    // covers anything written between this replica's start-up load and now.
    let mut rev = 0;
    loop {
        tokio::time::sleep(REFRESH).await;
        if leader.is_leader() {
            continue;
        }
        match guardrails.refresh_from_store(rev).await {
            Ok(now) => rev = now,
            Err(e) => {
                tracing::warn!(error = %e.message, "could not refresh the leader's monitors; retrying");
            }
        }
    }
}
