//! The snapshot hub: the published snapshot of every env, and the channel its
//! stream subscribers wait on.
//!
//! Publishing follows persistence: a mutation commits its new env state to
//! the store first, then hands it here, so no SDK ever sees a state the store
//! could lose. Versions committed by another replica reach this one through the
//! store's announcements on PostgreSQL ([`crate::fanout`]); a poller picks up
//! whatever those miss (and offline CLI writes on SQLite), so every replica
//! converges.
//!
//! Bundles are immutable, so the hub caches them; the cache is bounded
//! ([`MAX_CACHED_BUNDLES`], [`MAX_CACHED_BUNDLE_BYTES`]) and, when over
//! either bound, drops every bundle no currently published snapshot
//! references. Bundles read only to replay a historical version are never
//! cached, so a reader walking old versions cannot grow it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serin_core::bundle::Bundle;
use serin_core::decision::{CompiledSnapshot, EnvState};
use serin_store::{Store, StoredEnvState};
use tokio::sync::watch;

use crate::error::{ApiError, ErrorCode};

/// One published version of one env, rendered once for every subscriber.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    /// The version published just before this one on this replica (0 if none);
    /// a subscriber that sent exactly that one gets the delta.
    pub prev_version: u64,
    pub compiled: Arc<CompiledSnapshot>,
    /// The snapshot with every referenced bundle.
    pub full_json: Arc<str>,
    /// The snapshot with only the bundles `prev_version` did not reference.
    pub delta_json: Arc<str>,
}

/// Bundles kept in the cache before unreferenced ones are dropped.
pub const MAX_CACHED_BUNDLES: usize = 256;
/// Canonical bytes of cached bundles before unreferenced ones are dropped.
pub const MAX_CACHED_BUNDLE_BYTES: usize = 64 * 1024 * 1024;

/// Generic over the cached value only so its bookkeeping is testable with
/// plain values.
#[derive(Debug)]
struct BundleCache<B = Arc<Bundle>> {
    /// id → (bundle, size of its canonical JSON).
    map: HashMap<String, (B, usize)>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl<B: Clone> BundleCache<B> {
    fn new(max_count: usize, max_bytes: usize) -> Self {
        BundleCache {
            map: HashMap::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    fn get(&self, id: &str) -> Option<B> {
        self.map.get(id).map(|(b, _)| b.clone())
    }

    fn over(&self) -> bool {
        self.map.len() > self.max_count || self.bytes > self.max_bytes
    }

    fn insert(&mut self, id: String, bundle: B, size: usize) {
        if let Some((_, old)) = self.map.insert(id, (bundle, size)) {
            self.bytes = self.bytes.saturating_sub(old);
        }
        self.bytes = self.bytes.saturating_add(size);
    }

    /// Keeps only `keep`. Bundles that every published snapshot needs stay
    /// even over the bounds: those snapshots hold them in memory anyway.
    fn retain(&mut self, keep: &BTreeSet<String>) {
        let mut bytes = 0usize;
        self.map.retain(|id, (_, size)| {
            let kept = keep.contains(id);
            if kept {
                bytes = bytes.saturating_add(*size);
            }
            kept
        });
        self.bytes = bytes;
    }
}

#[derive(Debug)]
pub struct Hub {
    store: Store,
    envs: RwLock<HashMap<String, watch::Sender<Arc<Published>>>>,
    /// Bundles are immutable, so a cache of them never goes stale.
    bundles: Mutex<BundleCache>,
    /// Serializes publication so versions reach subscribers in order.
    publish_lock: tokio::sync::Mutex<()>,
    /// Set once at shutdown, for streams that do not follow an env (the live views).
    closing: watch::Sender<bool>,
}

impl Hub {
    pub fn new(store: Store) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            envs: RwLock::new(HashMap::new()),
            bundles: Mutex::new(BundleCache::new(
                MAX_CACHED_BUNDLES,
                MAX_CACHED_BUNDLE_BYTES,
            )),
            publish_lock: tokio::sync::Mutex::new(()),
            closing: watch::Sender::new(false),
        })
    }

    /// Resolves once the hub is closed (at shutdown), so a long-lived stream can end and
    /// let the graceful drain finish.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        // Err only if the sender is gone, which means the hub is gone too.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// The current published snapshot of `env`, loading it on first use.
    pub async fn current(&self, env: &str) -> Result<Arc<Published>, ApiError> {
        Ok(self.sender(env).await?.borrow().clone())
    }

    /// A receiver that wakes on every new version of `env`.
    pub async fn subscribe(&self, env: &str) -> Result<watch::Receiver<Arc<Published>>, ApiError> {
        Ok(self.sender(env).await?.subscribe())
    }

    async fn sender(&self, env: &str) -> Result<watch::Sender<Arc<Published>>, ApiError> {
        if let Some(tx) = self.read_envs().get(env) {
            return Ok(tx.clone());
        }
        let _guard = self.publish_lock.lock().await;
        if let Some(tx) = self.read_envs().get(env) {
            return Ok(tx.clone());
        }
        let stored = self.store.latest_env_state(env).await?;
        let published = self.build_last_good(env, stored).await?;
        let (tx, _) = watch::channel(Arc::new(published));
        self.write_envs().insert(env.to_owned(), tx.clone());
        Ok(tx)
    }

    /// Builds the newest version of `env` that can be served. A stored state that cannot (an
    /// older server committed it without checking) is quarantined: logged, counted, and the
    /// version before it is served instead, so one bad row never takes the env down.
    async fn build_last_good(
        &self,
        env: &str,
        mut stored: Option<StoredEnvState>,
    ) -> Result<Published, ApiError> {
        for _ in 0..100 {
            let err = match self.build(env, stored.as_ref(), None).await {
                Ok(p) => return Ok(p),
                Err(e) => e,
            };
            let Some(bad) = stored else { return Err(err) };
            tracing::error!(env, version = bad.version, error = %err.message,
                "stored snapshot cannot be served; quarantined, serving the version before it");
            metrics::counter!("serin_snapshots_quarantined_total").increment(1);
            stored = self.store.env_state_before(env, bad.version).await?;
            if stored.is_none() {
                return Err(err);
            }
        }
        Err(ApiError::new(
            ErrorCode::Internal,
            format!("no servable snapshot among the newest 100 versions of env {env}"),
        ))
    }

    /// Publishes a state just committed to the store (no-op if a newer one is
    /// already out).
    pub async fn publish(&self, stored: &StoredEnvState) -> Result<(), ApiError> {
        let tx = self.sender(&stored.env).await?;
        let _guard = self.publish_lock.lock().await;
        let current = tx.borrow().clone();
        if version_of(stored) <= current.version {
            return Ok(());
        }
        let published = self
            .build(&stored.env, Some(stored), Some(&current))
            .await?;
        tx.send_replace(Arc::new(published));
        metrics::counter!("serin_snapshots_published_total").increment(1);
        Ok(())
    }

    /// Publishes `env`'s newest stored version if this replica is behind it
    /// (a stream resuming from a version another replica published before
    /// this one's poller saw it).
    pub async fn refresh_env(&self, env: &str) -> Result<(), ApiError> {
        if let Some(stored) = self.store.latest_env_state(env).await? {
            self.publish(&stored).await?;
        }
        Ok(())
    }

    /// Another process committed `version` of `env` (a store announcement): publishes the
    /// env's newest stored version if this replica serves the env and is behind. Envs nobody
    /// here follows are left alone; they are read fresh when first asked for.
    pub async fn announced(&self, env: &str, version: u64) -> Result<(), ApiError> {
        let published = match self.published_version(env) {
            Some(v) => Some(v),
            None => {
                // A first load of `env` may be under way with a read from before this commit;
                // loads hold the publish lock from their read to their insert, so once we get
                // the lock it is either done (and checked below) or will read after the commit.
                let _guard = self.publish_lock.lock().await;
                self.published_version(env)
            }
        };
        if published.is_some_and(|v| v < version) {
            self.refresh_env(env).await?;
        }
        Ok(())
    }

    fn published_version(&self, env: &str) -> Option<u64> {
        self.read_envs().get(env).map(|tx| tx.borrow().version)
    }

    /// The version published for every env this replica serves.
    pub fn published_versions(&self) -> Vec<(String, u64)> {
        self.read_envs()
            .iter()
            .map(|(env, tx)| (env.clone(), tx.borrow().version))
            .collect()
    }

    /// Whether `version` is a snapshot version of `env` (published here, or
    /// committed by another replica): a version from the future, or another
    /// env's, is not.
    pub async fn is_version_of(&self, env: &str, version: u64) -> Result<bool, ApiError> {
        if version == 0 {
            return Ok(false);
        }
        // Looked up without loading the env, so a client naming envs at
        // random does not grow the hub.
        let published = self.read_envs().get(env).map(|tx| {
            let p = tx.borrow();
            (p.version, p.prev_version)
        });
        if published.is_some_and(|(current, prev)| version == current || version == prev) {
            return Ok(true);
        }
        let Ok(v) = i64::try_from(version) else {
            return Ok(false);
        };
        Ok(self
            .store
            .env_state_at(v)
            .await?
            .is_some_and(|s| s.env == env))
    }

    /// Ends every snapshot stream (at shutdown): dropping the senders wakes
    /// each subscriber with "closed".
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.write_envs().clear();
    }

    /// Checks the store for versions this replica has not published yet.
    pub async fn refresh(&self) -> Result<(), ApiError> {
        // Under the publish lock, so an env whose first load is under way is in the list (its
        // read may predate a commit the caller is catching up on).
        let envs: Vec<String> = {
            let _guard = self.publish_lock.lock().await;
            self.read_envs().keys().cloned().collect()
        };
        for env in envs {
            // One env that cannot be refreshed must not hold back the others.
            let refreshed = match self.store.latest_env_state(&env).await {
                Ok(Some(stored)) => self.publish(&stored).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = refreshed {
                tracing::warn!(env, error = %e.message, "snapshot refresh failed for this env");
            }
        }
        Ok(())
    }

    /// Polls the store every `every` until the hub is dropped.
    pub fn spawn_poller(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(hub) = weak.upgrade() else { break };
                if let Err(e) = hub.refresh().await {
                    tracing::warn!(error = %e.message, "snapshot refresh failed");
                }
            }
        });
    }

    /// The snapshot stored as `version`, with its bundles (for replaying
    /// decisions made under it).
    pub async fn historical(&self, version: u64) -> Result<CompiledSnapshot, ApiError> {
        let v = i64::try_from(version)
            .map_err(|_| ApiError::not_found(format!("no snapshot version {version}")))?;
        let stored = self
            .store
            .env_state_at(v)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no snapshot version {version}")))?;
        let state = parse_state(&stored)?;
        // Not cached: the caller picks the version, so caching would let a
        // reader fill the cache with every bundle ever deployed.
        let bundles = self.bundles_for(&state, false).await?;
        let snapshot = state.snapshot(&stored.env, version, stored.created_at_ms, bundles);
        CompiledSnapshot::compile(snapshot).map_err(ApiError::internal)
    }

    async fn build(
        &self,
        env: &str,
        stored: Option<&StoredEnvState>,
        previous: Option<&Published>,
    ) -> Result<Published, ApiError> {
        let (state, version, at_ms) = match stored {
            Some(s) => (parse_state(s)?, version_of(s), s.created_at_ms),
            None => (EnvState::default(), 0, 0),
        };
        let bundles = self.bundles_for(&state, true).await?;
        let snapshot = state.snapshot(env, version, at_ms, bundles);
        let full_json: Arc<str> = serde_json::to_string(&snapshot)
            .map_err(ApiError::internal)?
            .into();
        let delta_json: Arc<str> = match previous {
            Some(prev) => {
                let mut delta = snapshot.clone();
                let known = &prev.compiled.snapshot().bundles;
                delta.bundles.retain(|id, _| !known.contains_key(id));
                serde_json::to_string(&delta)
                    .map_err(ApiError::internal)?
                    .into()
            }
            None => full_json.clone(),
        };
        let compiled = CompiledSnapshot::compile(snapshot).map_err(ApiError::internal)?;
        Ok(Published {
            version,
            prev_version: previous.map_or(0, |p| p.version),
            compiled: Arc::new(compiled),
            full_json,
            delta_json,
        })
    }

    /// The bundles `state` references, from the cache or the store; `cache`
    /// says whether bundles read from the store are kept.
    async fn bundles_for(
        &self,
        state: &EnvState,
        cache: bool,
    ) -> Result<BTreeMap<String, Bundle>, ApiError> {
        let mut out = BTreeMap::new();
        let wanted = state.referenced_bundles();
        let mut added = false;
        for id in &wanted {
            let cached = self.lock_bundles().get(id);
            let bundle = match cached {
                Some(b) => b,
                None => {
                    let (b, size) = self.load_bundle(id).await?;
                    let b = Arc::new(b);
                    if cache {
                        self.lock_bundles().insert(id.clone(), b.clone(), size);
                        added = true;
                    }
                    b
                }
            };
            out.insert(id.clone(), Bundle::clone(&bundle));
        }
        if added && self.lock_bundles().over() {
            self.evict_unreferenced(&wanted);
        }
        Ok(out)
    }

    /// Bundles by id, read from the store, for checking a state before it is committed.
    pub async fn load_bundles(
        &self,
        ids: &std::collections::BTreeSet<String>,
    ) -> Result<BTreeMap<String, Bundle>, ApiError> {
        let mut out = BTreeMap::new();
        for id in ids {
            out.insert(id.clone(), self.load_bundle(id).await?.0);
        }
        Ok(out)
    }

    /// Drops cached bundles that neither a published snapshot nor the one
    /// being built (`building`) references.
    fn evict_unreferenced(&self, building: &BTreeSet<String>) {
        let mut keep = building.clone();
        for tx in self.read_envs().values() {
            keep.extend(tx.borrow().compiled.snapshot().bundles.keys().cloned());
        }
        self.lock_bundles().retain(&keep);
    }

    /// How many bundles the cache holds and their canonical bytes.
    pub fn cached_bundles(&self) -> (usize, usize) {
        let cache = self.lock_bundles();
        (cache.map.len(), cache.bytes)
    }

    async fn load_bundle(&self, id: &str) -> Result<(Bundle, usize), ApiError> {
        let missing = || ApiError::internal(format!("env state references unknown bundle {id}"));
        let (agent, number) = id.split_once('@').ok_or_else(missing)?;
        let number: i64 = number.parse().map_err(|_| missing())?;
        let stored = self
            .store
            .get_bundle(agent, number)
            .await?
            .ok_or_else(missing)?;
        let bundle = Bundle::from_canonical_json(&stored.content).map_err(ApiError::internal)?;
        Ok((bundle, stored.content.len()))
    }

    fn read_envs(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<String, watch::Sender<Arc<Published>>>> {
        self.envs.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_envs(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, watch::Sender<Arc<Published>>>> {
        self.envs.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_bundles(&self) -> std::sync::MutexGuard<'_, BundleCache> {
        self.bundles.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn version_of(stored: &StoredEnvState) -> u64 {
    u64::try_from(stored.version).unwrap_or(0)
}

pub fn parse_state(stored: &StoredEnvState) -> Result<EnvState, ApiError> {
    serde_json::from_str(&stored.state).map_err(|e| {
        ApiError::internal(format!(
            "stored state of env {} v{} is unreadable: {e}",
            stored.env, stored.version
        ))
    })
}

/// Renders the snapshot for one stream event. Exposed for tests.
pub fn snapshot_event_json(p: &Published, last_sent: Option<u64>) -> Arc<str> {
    if last_sent == Some(p.prev_version) && p.prev_version != 0 {
        p.delta_json.clone()
    } else {
        p.full_json.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_cache_drops_unreferenced_bundles_when_over_a_bound() {
        let mut c: BundleCache<u32> = BundleCache::new(3, 100);
        for (i, id) in ["a@1", "a@2", "a@3"].into_iter().enumerate() {
            c.insert(id.to_owned(), u32::try_from(i).unwrap(), 10);
        }
        assert!(!c.over());
        c.insert("a@4".into(), 4, 10);
        assert!(c.over(), "count bound");
        let keep: BTreeSet<String> = ["a@3".to_owned(), "a@4".to_owned()].into();
        c.retain(&keep);
        assert_eq!((c.map.len(), c.bytes), (2, 20));
        assert_eq!(c.get("a@4"), Some(4));
        assert_eq!(c.get("a@1"), None);
        // Re-inserting replaces the size rather than adding to it.
        c.insert("a@4".into(), 4, 15);
        assert_eq!(c.bytes, 25);
        c.insert("big@1".into(), 5, 90);
        assert!(c.over(), "byte bound");
        // What every published snapshot needs stays, even over the bounds.
        let all: BTreeSet<String> = c.map.keys().cloned().collect();
        c.retain(&all);
        assert_eq!((c.map.len(), c.bytes), (3, 115));
        c.retain(&BTreeSet::new());
        assert_eq!((c.map.len(), c.bytes), (0, 0));
    }
}
