//! The replica registry: every server process heartbeats its row in the store (who it is,
//! whether it leads, its fan-out state, its SDK streams), so any replica can answer
//! `GET /v1/system/replicas` for all of them (`serin status`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serin_store::{ReplicaRow, Store};

use crate::clock;
use crate::fanout::ReplicaStatus;
use crate::hub::Hub;
use crate::leader::Leader;
use crate::sdks::SdkRegistry;

/// How often each replica writes its row.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A replica not seen for this long (three heartbeats) counts as gone.
pub const ALIVE_WITHIN_MS: i64 = 3 * 2_000;
/// Rows not seen for this long are deleted.
pub const PRUNE_AFTER_MS: i64 = 60 * 60 * 1_000;
/// Every this many heartbeats a replica prunes the registry.
const PRUNE_EVERY: u64 = 30;

/// Who this process is in the registry.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Random per process start.
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub started_ms: i64,
}

impl Identity {
    pub fn new() -> Identity {
        Identity {
            id: hex::encode(rand::random::<[u8; 8]>()),
            host: hostname(),
            pid: std::process::id(),
            started_ms: clock::now_ms(),
        }
    }
}

impl Default for Identity {
    fn default() -> Identity {
        Identity::new()
    }
}

/// This machine's name (`/proc/sys/kernel/hostname`, then `$HOSTNAME`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What a heartbeat reads from the rest of the replica.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub identity: Identity,
    store: Store,
    hub: Arc<Hub>,
    replica: Arc<ReplicaStatus>,
    leader: Arc<Leader>,
    sdks: Arc<SdkRegistry>,
}

impl Heartbeat {
    pub fn new(
        store: Store,
        hub: Arc<Hub>,
        replica: Arc<ReplicaStatus>,
        leader: Arc<Leader>,
        sdks: Arc<SdkRegistry>,
    ) -> Heartbeat {
        Heartbeat {
            identity: Identity::new(),
            store,
            hub,
            replica,
            leader,
            sdks,
        }
    }

    /// This replica's row now.
    pub async fn row(&self) -> ReplicaRow {
        let (caught_up, behind) = lagging_envs(&self.store, &self.hub).await;
        let published: BTreeMap<String, i64> = self
            .hub
            .published_versions()
            .into_iter()
            .map(|(env, v)| (env, i64::try_from(v).unwrap_or(i64::MAX)))
            .collect();
        let leader = self.leader.status();
        ReplicaRow {
            id: self.identity.id.clone(),
            host: self.identity.host.clone(),
            pid: i64::from(self.identity.pid),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms: self.identity.started_ms,
            last_seen_ms: clock::now_ms(),
            is_leader: leader.is_leader,
            epoch: leader.epoch,
            listener_connected: self.replica.listener_connected(),
            caught_up,
            behind,
            published,
            sdk_streams: i64::try_from(self.sdks.connected_count()).unwrap_or(i64::MAX),
            gone_ms: None,
        }
    }

    /// Writes this replica's row once.
    pub async fn beat(&self) -> Result<(), serin_store::StoreError> {
        let row = self.row().await;
        self.store.upsert_replica(&row).await
    }

    /// Heartbeats every [`HEARTBEAT`] (the first at once) until aborted, pruning old rows now
    /// and then. A failed write is logged and retried at the next beat.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut beats: u64 = 0;
            loop {
                tick.tick().await;
                if let Err(e) = self.beat().await {
                    tracing::warn!(error = %e, "could not write this replica's heartbeat");
                }
                if beats.is_multiple_of(PRUNE_EVERY) {
                    let cutoff = clock::now_ms().saturating_sub(PRUNE_AFTER_MS);
                    match self.store.prune_replicas(cutoff).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(rows = n, "pruned replicas gone for an hour"),
                        Err(e) => tracing::debug!(error = %e, "could not prune replicas"),
                    }
                }
                beats = beats.wrapping_add(1);
            }
        })
    }

    /// Marks this replica's row gone (on shutdown; best effort: a failure is only logged, and
    /// readers stop counting the row alive after [`ALIVE_WITHIN_MS`] anyway).
    pub async fn mark_gone(&self) {
        if let Err(e) = self
            .store
            .mark_replica_gone(&self.identity.id, clock::now_ms())
            .await
        {
            tracing::debug!(error = %e, "could not mark this replica gone");
        }
    }
}

/// Whether every env the hub serves is published at the store's newest version, and those
/// that are not. An env whose newest version cannot be read counts as behind.
pub async fn lagging_envs(store: &Store, hub: &Hub) -> (bool, Vec<String>) {
    let mut published = hub.published_versions();
    published.sort();
    let mut caught_up = true;
    let mut behind = Vec::new();
    for (env, version) in published {
        match store.newest_env_version(&env).await {
            Ok(newest) => {
                let newest = newest.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                if newest > version {
                    caught_up = false;
                    behind.push(env);
                }
            }
            Err(e) => {
                tracing::debug!(env, error = %e, "could not read the newest version");
                caught_up = false;
                behind.push(env);
            }
        }
    }
    (caught_up, behind)
}

/// Whether a row counts as a live replica at `now_ms`.
pub fn is_alive(row: &ReplicaRow, now_ms: i64) -> bool {
    row.gone_ms.is_none() && now_ms.saturating_sub(row.last_seen_ms) <= ALIVE_WITHIN_MS
}
