//! The env registry as the routes see it: every route naming an env asks [`Envs::require`]
//! first, so a typo answers 404 with the nearest existing name and never reaches the hub, the
//! store's env states or the SDK registry (each would otherwise keep an entry per name a client
//! invents).

use std::collections::HashMap;
use std::sync::RwLock;

use serin_core::bundle::PinPolicy;
use serin_core::slug;
use serin_store::{EnvRecord, Store, StoreError};

use crate::error::{ApiError, ApiResult, ErrorCode};

#[derive(Debug)]
pub struct Envs {
    store: Store,
    /// Envs are never deleted and their policy never changes, so a name once found stays
    /// valid; only misses go to the store (an env created on another replica is found there).
    known: RwLock<HashMap<String, PinPolicy>>,
}

fn policy(strict: bool) -> PinPolicy {
    if strict {
        PinPolicy::Strict
    } else {
        PinPolicy::Dev
    }
}

impl Envs {
    pub fn new(store: Store) -> Envs {
        Envs {
            store,
            known: RwLock::new(HashMap::new()),
        }
    }

    /// The pin policy of `env` if it is registered; otherwise 404 naming `field` and the
    /// nearest existing env. A malformed name is 400 on `field`.
    pub async fn require(&self, env: &str, field: &str) -> ApiResult<PinPolicy> {
        slug::validate_env(env)
            .map_err(|e| ApiError::field(ErrorCode::BadRequest, field, e.to_string()))?;
        if let Some(p) = self.read().get(env) {
            return Ok(*p);
        }
        if let Some(rec) = self.store.get_env(env).await? {
            let p = policy(rec.strict);
            self.remember(&rec.name, p);
            return Ok(p);
        }
        let all = self.store.registered_envs().await?;
        Err(ApiError::field(
            ErrorCode::NotFound,
            field,
            slug::not_found_message("env", env, all.iter().map(|e| e.name.as_str())),
        ))
    }

    /// Registers `name`; 409 if it exists.
    pub async fn create(
        &self,
        name: &str,
        strict: bool,
        at_ms: i64,
        actor: &str,
    ) -> ApiResult<EnvRecord> {
        slug::validate_env(name)
            .map_err(|e| ApiError::field(ErrorCode::InvalidField, "/name", e.to_string()))?;
        let rec = self
            .store
            .create_env(name, strict, at_ms, actor)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(m) => ApiError::field(ErrorCode::Conflict, "/name", m),
                other => ApiError::from(other),
            })?;
        self.remember(&rec.name, policy(rec.strict));
        Ok(rec)
    }

    /// Every registered env, by name.
    pub async fn list(&self) -> ApiResult<Vec<EnvRecord>> {
        Ok(self.store.registered_envs().await?)
    }

    /// One registered env with its newest version; 404 with a suggestion otherwise.
    pub async fn get(&self, env: &str, field: &str) -> ApiResult<EnvRecord> {
        self.require(env, field).await?;
        self.store
            .get_env(env)
            .await?
            .ok_or_else(|| ApiError::field(ErrorCode::NotFound, field, format!("no env {env}")))
    }

    fn remember(&self, env: &str, p: PinPolicy) {
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(env.to_owned(), p);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, PinPolicy>> {
        self.known.read().unwrap_or_else(|e| e.into_inner())
    }
}
