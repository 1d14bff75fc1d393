//! Announcing committed env states to every replica sharing one PostgreSQL database.
//!
//! Each env-state write issues `pg_notify` inside its own transaction. PostgreSQL delivers a
//! notification only when that transaction commits (and drops it on rollback), so a listener
//! never hears of a version the store could still lose, and hears of every committed one while
//! its connection is up. What it misses while the connection is down it must catch up on by
//! reading the store after it reconnects: notifications are not queued for absent listeners.
//!
//! The channel is per schema, because the test suite (and a shared database server) puts
//! several independent stores in one database, and NOTIFY is database-wide.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use super::{Backend, Store, StoreError};

/// Longest channel name PostgreSQL accepts (`NAMEDATALEN - 1` bytes); `pg_notify` refuses a
/// longer one, which would fail the write it is part of.
const MAX_CHANNEL_BYTES: usize = 63;
const CHANNEL_PREFIX: &str = "serin_env_";

/// A notification payload must stay under 8,000 bytes; past this the env name is left out and
/// listeners check every env instead (env names are slugs far shorter than this).
const MAX_ENV_IN_PAYLOAD: usize = 1_000;

/// A listener quiet for this long checks that its connection still answers: a connection cut
/// without a reset (a moved address, a dead peer) would otherwise look like a quiet one forever.
const PROBE_WHEN_IDLE: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The channel of the store whose connections see `schema` first on their `search_path`.
pub(crate) fn channel_for_schema(schema: &str) -> String {
    prefixed_channel(CHANNEL_PREFIX, schema)
}

/// `prefix` then `schema`, or a digest of `schema` when that would pass PostgreSQL's limit.
pub(crate) fn prefixed_channel(prefix: &str, schema: &str) -> String {
    let plain = format!("{prefix}{schema}");
    if plain.len() <= MAX_CHANNEL_BYTES {
        return plain;
    }
    let digest = hex::encode(Sha256::digest(schema.as_bytes()));
    format!("{prefix}{}", digest.get(..40).unwrap_or(&digest))
}

/// The current schema of the connections `pool` opens, which names the store's channels.
pub(crate) async fn current_schema(pool: &PgPool) -> Result<String, StoreError> {
    let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(pool)
        .await?;
    schema.ok_or_else(|| {
        StoreError::Invalid("the connection's search_path names no existing schema".into())
    })
}

/// Opens a dedicated session named `application_name` listening on `channel`. Its pool of one
/// is the listener's own: sqlx's listener reconnects through a pool, and this one keeps the
/// session off the store's pool, whose connections queries need. It never reconnects by
/// itself (the caller reconnects with backoff, then catches up by reading the store): a
/// listener that reconnected silently would hide the gap in which announcements were lost.
pub(crate) async fn open_listener(
    pool: &PgPool,
    application_name: &str,
    channel: &str,
) -> Result<PgListener, StoreError> {
    let options = (*pool.connect_options())
        .clone()
        .application_name(application_name);
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    let mut listener = PgListener::connect_with(&own).await?;
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    listener.listen(channel).await?;
    Ok(listener)
}

/// The next notification's payload on `listener`, probing the session when it has been quiet
/// for a while; an error means the session is gone.
pub(crate) async fn recv_payload(listener: &mut PgListener) -> Result<String, StoreError> {
    loop {
        match tokio::time::timeout(PROBE_WHEN_IDLE, listener.try_recv()).await {
            Ok(Ok(Some(n))) => return Ok(n.payload().to_owned()),
            Ok(Ok(None)) => {
                return Err(StoreError::Unavailable(
                    "the listener's database session was closed".into(),
                ));
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_quiet) => {
                let probe = sqlx::query("SELECT 1").execute(&mut *listener);
                match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {
                        return Err(StoreError::Unavailable(format!(
                            "the listener's database session did not answer within {} s",
                            PROBE_TIMEOUT.as_secs()
                        )));
                    }
                }
            }
        }
    }
}

fn payload(env: &str, version: i64) -> String {
    if env.len() > MAX_ENV_IN_PAYLOAD {
        return serde_json::json!({ "version": version }).to_string();
    }
    serde_json::json!({ "env": env, "version": version }).to_string()
}

/// Announces `version` of `env` on `channel` from inside the transaction that writes it.
pub(crate) trait AnnounceEnvState {
    async fn announce(&mut self, channel: &str, env: &str, version: i64) -> Result<(), StoreError>;
}

impl AnnounceEnvState for sqlx::SqliteConnection {
    async fn announce(&mut self, _: &str, _: &str, _: i64) -> Result<(), StoreError> {
        Ok(())
    }
}

impl AnnounceEnvState for sqlx::PgConnection {
    async fn announce(&mut self, channel: &str, env: &str, version: i64) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload(env, version))
            .execute(self)
            .await?;
        Ok(())
    }
}

/// Called by `append_env_state_in!` (a generic function, so the macro needs no trait in scope).
pub(crate) async fn announce_env_state<C: AnnounceEnvState>(
    conn: &mut C,
    channel: Option<&str>,
    env: &str,
    version: i64,
) -> Result<(), StoreError> {
    match channel {
        Some(channel) => conn.announce(channel, env, version).await,
        None => Ok(()),
    }
}

/// What a listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvChange {
    /// `env` committed `version`.
    Committed { env: String, version: i64 },
    /// Something this store cannot read was announced on its channel (another program's
    /// NOTIFY, or a name too long to announce): every env may have changed.
    Unknown,
}

impl EnvChange {
    fn parse(payload: &str) -> EnvChange {
        #[derive(serde::Deserialize)]
        struct Payload {
            env: String,
            version: i64,
        }
        match serde_json::from_str::<Payload>(payload) {
            Ok(p) => EnvChange::Committed {
                env: p.env,
                version: p.version,
            },
            Err(_) => EnvChange::Unknown,
        }
    }
}

/// A dedicated PostgreSQL session listening for env-state commits. It is spent once
/// [`EnvListener::recv`] fails: open a new one, then read the store for what was missed.
pub struct EnvListener {
    listener: PgListener,
    channel: String,
}

impl std::fmt::Debug for EnvListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvListener")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl EnvListener {
    /// The channel listened on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next announced change. An error means the session is gone (cut, timed out, or not
    /// answering a probe) and announcements made from now on are not heard by this listener.
    pub async fn recv(&mut self) -> Result<EnvChange, StoreError> {
        let payload = recv_payload(&mut self.listener).await?;
        Ok(EnvChange::parse(&payload))
    }
}

impl Store {
    /// Opens a dedicated session (named `application_name` in `pg_stat_activity`) listening
    /// for env-state commits by any process sharing this store. `None` on SQLite, where one
    /// server owns the data directory.
    pub async fn listen_env_changes(
        &self,
        application_name: &str,
    ) -> Result<Option<EnvListener>, StoreError> {
        let (Backend::Postgres(pool), Some(channel)) = (&self.backend, &self.env_channel) else {
            return Ok(None);
        };
        let listener = open_listener(pool, application_name, channel).await?;
        Ok(Some(EnvListener {
            listener,
            channel: channel.to_string(),
        }))
    }

    /// The newest version of `env` (None if it was never changed), without reading the state.
    pub async fn newest_env_version(&self, env: &str) -> Result<Option<i64>, StoreError> {
        let newest: Option<i64> = with_read!(self, |db| {
            sqlx::query_scalar("SELECT MAX(version) FROM env_states WHERE env = $1")
                .bind(env)
                .fetch_one(db)
                .await?
        });
        Ok(newest)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn channels_fit_postgres_names_and_differ_per_schema() {
        assert_eq!(channel_for_schema("public"), "serin_env_public");
        let long_a = "a".repeat(63);
        let long_b = format!("{}b", "a".repeat(62));
        let (a, b) = (channel_for_schema(&long_a), channel_for_schema(&long_b));
        assert!(a.len() <= MAX_CHANNEL_BYTES && b.len() <= MAX_CHANNEL_BYTES);
        assert_ne!(a, b);
        // Multi-byte names are measured in bytes, as PostgreSQL does.
        assert!(channel_for_schema(&"é".repeat(30)).len() <= MAX_CHANNEL_BYTES);
    }

    #[test]
    fn payloads_read_back_and_anything_else_means_check_every_env() {
        assert_eq!(
            EnvChange::parse(&payload("prod", 42)),
            EnvChange::Committed {
                env: "prod".into(),
                version: 42
            }
        );
        assert_eq!(
            EnvChange::parse(&payload(&"x".repeat(2_000), 7)),
            EnvChange::Unknown
        );
        assert_eq!(EnvChange::parse("hello"), EnvChange::Unknown);
        assert_eq!(EnvChange::parse(""), EnvChange::Unknown);
    }
}
