//! The snapshot hub: the published snapshot of every env, and the channel its
//! stream subscribers wait on.
//!
//! Publishing follows persistence: a mutation commits its new env state to
//! the store first, then hands it here, so no SDK ever sees a state the store
//! could lose. A poller picks up versions committed by another replica (or by
//! an offline CLI) so every replica converges.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serin_core::bundle::Bundle;
use serin_core::decision::{CompiledSnapshot, EnvState};
use serin_store::{Store, StoredEnvState};
use tokio::sync::watch;

use crate::error::ApiError;

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

#[derive(Debug)]
pub struct Hub {
    store: Store,
    envs: RwLock<HashMap<String, watch::Sender<Arc<Published>>>>,
    /// Bundles are immutable, so a cache of them never goes stale.
    bundles: Mutex<HashMap<String, Arc<Bundle>>>,
    /// Serializes publication so versions reach subscribers in order.
    publish_lock: tokio::sync::Mutex<()>,
}

impl Hub {
    pub fn new(store: Store) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            envs: RwLock::new(HashMap::new()),
            bundles: Mutex::new(HashMap::new()),
            publish_lock: tokio::sync::Mutex::new(()),
        })
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

    /// Ends every snapshot stream (at shutdown): dropping the senders wakes
    /// each subscriber with "closed".
    pub fn close(&self) {
        self.write_envs().clear();
    }

    /// Checks the store for versions this replica has not published yet.
    pub async fn refresh(&self) -> Result<(), ApiError> {
        let envs: Vec<String> = self.read_envs().keys().cloned().collect();
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
        let bundles = self.bundles_for(&state).await?;
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
        let bundles = self.bundles_for(&state).await?;
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

    async fn bundles_for(&self, state: &EnvState) -> Result<BTreeMap<String, Bundle>, ApiError> {
        let mut out = BTreeMap::new();
        for id in state.referenced_bundles() {
            let cached = self.lock_bundles().get(&id).cloned();
            let bundle = match cached {
                Some(b) => b,
                None => {
                    let b = Arc::new(self.load_bundle(&id).await?);
                    self.lock_bundles().insert(id.clone(), b.clone());
                    b
                }
            };
            out.insert(id, Bundle::clone(&bundle));
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
            out.insert(id.clone(), self.load_bundle(id).await?);
        }
        Ok(out)
    }

    async fn load_bundle(&self, id: &str) -> Result<Bundle, ApiError> {
        let missing = || ApiError::internal(format!("env state references unknown bundle {id}"));
        let (agent, number) = id.split_once('@').ok_or_else(missing)?;
        let number: i64 = number.parse().map_err(|_| missing())?;
        let stored = self
            .store
            .get_bundle(agent, number)
            .await?
            .ok_or_else(missing)?;
        Bundle::from_canonical_json(&stored.content).map_err(ApiError::internal)
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

    fn lock_bundles(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Bundle>>> {
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
