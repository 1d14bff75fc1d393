//! The live SDK: a [`Router`] kept current by a background task that follows
//! the server's snapshot stream, with a fail-static disk cache.

mod cache;
pub(crate) mod effect;
mod recorder;
mod reporter;
mod stream;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serin_engine::decision::CompiledSnapshot;
use serin_engine::outcome::OutcomeEvent;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::router::State;
use crate::{AsContext, Health, Router, SdkDecision, SdkError, SnapshotGuard};

pub use recorder::OutcomeStats;

use effect::{CallError, EffectError, EffectKey, EffectLedger, EffectOptions, EffectOutcome};

/// How to reach the server and how to behave when it is away.
///
/// Build it with [`Serin::builder`]; the fields are public so it can also be
/// filled from an agent's own configuration.
#[derive(Clone)]
pub struct Config {
    /// Base URL of the Serin server (`http://127.0.0.1:7070`).
    pub server: String,
    /// An `sdk` role token.
    pub token: String,
    /// The env whose snapshot to follow.
    pub env: String,
    /// This process's id towards the server (`[A-Za-z0-9._:-]{1,128}`): sent
    /// on the stream and with every applied-version report, so the server can
    /// tell which SDK serves which version. Defaults to `<pid>-<8 random hex>`,
    /// unique per process; set a stable one (a pod name) to recognise an
    /// instance across restarts.
    pub instance: String,
    /// Where this process runs (`[A-Za-z0-9._:-]{1,128}` each): reported with the
    /// instance, so the fleet view shows it and a waved release's plan can be checked
    /// against the regions and pools SDKs actually report; aggregated outcome windows carry
    /// them too. A request's own `region`/`pool` context still decides its wave.
    pub region: Option<String>,
    pub pool: Option<String>,
    /// Where to keep `serin-snapshot-<env>.json`; no cache when `None`.
    pub cache_dir: Option<PathBuf>,
    /// How long [`Serin::start`] waits for a first snapshot when there is no
    /// cache file. Default 5 s.
    pub start_timeout: Duration,
    /// Reconnect backoff: the delay before attempt `n` is drawn uniformly
    /// from `0..=min(backoff_max, backoff_min * 2^n)` (full jitter).
    /// Defaults 1 s and 30 s.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A connection that stayed up this long resets the backoff. Default 60 s.
    pub backoff_reset_after: Duration,
    /// A stream that delivers nothing at all (not even the server's
    /// keep-alive comments) for this long is dead. Default 45 s.
    pub idle_timeout: Duration,
    /// Timeout for connecting, and for the full snapshot fetch. Default 10 s.
    pub request_timeout: Duration,
    /// Outcome events waiting to be sent; beyond this, `record` drops and
    /// counts. Default 10,000.
    pub outcome_queue: usize,
    /// Largest outcome batch. Default 500.
    pub outcome_batch: usize,
    /// Longest wait before a partial batch is sent. Default 1 s.
    pub outcome_flush: Duration,
    /// Send each batch as outcome windows (`POST /v1/outcomes/windows`: per agent and
    /// snapshot version, both arms' counts and each request's latency and cost) rather than
    /// one event per request. Outcomes of tenants a release excludes still go as events.
    /// Default off.
    pub outcome_windows: bool,
}

impl Config {
    /// A configuration with every default.
    pub fn new(
        server: impl Into<String>,
        token: impl Into<String>,
        env: impl Into<String>,
    ) -> Self {
        Config {
            server: server.into(),
            token: token.into(),
            env: env.into(),
            instance: default_instance(),
            region: None,
            pool: None,
            cache_dir: None,
            start_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            backoff_reset_after: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(45),
            request_timeout: Duration::from_secs(10),
            outcome_queue: recorder::DEFAULT_QUEUE,
            outcome_batch: recorder::DEFAULT_BATCH,
            outcome_flush: recorder::DEFAULT_FLUSH,
            outcome_windows: false,
        }
    }

    /// The cache file for this env, if caching is on.
    pub fn cache_file(&self) -> Option<PathBuf> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("serin-snapshot-{}.json", self.env)))
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("env", &self.env)
            .field("instance", &self.instance)
            .field("region", &self.region)
            .field("pool", &self.pool)
            .field("cache_dir", &self.cache_dir)
            .field("start_timeout", &self.start_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("backoff_reset_after", &self.backoff_reset_after)
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("outcome_windows", &self.outcome_windows)
            .finish()
    }
}

/// `<pid>-<8 random hex>`: distinct for every process, even two started with
/// the same pid in different containers.
fn default_instance() -> String {
    format!("{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// Builds a [`Config`] and starts [`Serin`].
#[derive(Clone, Debug)]
pub struct SerinBuilder {
    config: Config,
}

impl SerinBuilder {
    /// Keep the last applied snapshot in `dir/serin-snapshot-<env>.json` and
    /// serve it at the next start before the server answers.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.cache_dir = Some(dir.into());
        self
    }

    /// This process's instance id (`[A-Za-z0-9._:-]{1,128}`, checked at
    /// start); see [`Config::instance`].
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.config.instance = id.into();
        self
    }

    /// The region this process runs in; see [`Config::region`].
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.config.region = Some(region.into());
        self
    }

    /// The pool this process serves in; see [`Config::region`].
    pub fn pool(mut self, pool: impl Into<String>) -> Self {
        self.config.pool = Some(pool.into());
        self
    }

    /// How long [`SerinBuilder::start`] waits for a first snapshot when there
    /// is no cache file.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.config.start_timeout = timeout;
        self
    }

    /// Reconnect backoff bounds (SPEC: 1 s to 30 s). Shrink them in tests.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.backoff_min = min;
        self.config.backoff_max = max.max(min);
        self
    }

    /// How long a connection must stay up to reset the backoff (SPEC: 60 s).
    pub fn backoff_reset_after(mut self, healthy: Duration) -> Self {
        self.config.backoff_reset_after = healthy;
        self
    }

    /// How long a silent stream is trusted (default 45 s; the server sends a
    /// keep-alive about every 15 s).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.config.idle_timeout = idle;
        self
    }

    /// Outcome queue capacity, largest batch and flush interval.
    pub fn outcomes(mut self, queue: usize, batch: usize, flush: Duration) -> Self {
        self.config.outcome_queue = queue.max(1);
        self.config.outcome_batch = batch.max(1);
        self.config.outcome_flush = flush;
        self
    }

    /// Connect timeout, and timeout of the full snapshot fetch.
    /// Sends outcomes as windows (see [`Config::outcome_windows`]).
    pub fn outcome_windows(mut self, on: bool) -> Self {
        self.config.outcome_windows = on;
        self
    }

    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// See [`Serin::start`].
    pub async fn start(self) -> Result<Serin, SdkError> {
        Serin::start(self.config).await
    }
}

/// The live SDK: local decisions from the snapshot the server pushes.
///
/// Cheap to clone; all clones share one snapshot and one background task.
/// The task stops when [`Serin::shutdown`] is called or the last clone is
/// dropped. Decisions keep working after that, from the last snapshot,
/// marked stale.
#[derive(Clone, Debug)]
pub struct Serin {
    router: Router,
    tasks: Arc<Tasks>,
    outcomes: mpsc::Sender<OutcomeEvent>,
    outcome_counters: Arc<recorder::Counters>,
    effects: EffectLedger,
}

#[derive(Debug)]
struct Tasks {
    state: Arc<State>,
    stop: watch::Sender<bool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Tasks {
    fn take(&self) -> Vec<JoinHandle<()>> {
        self.handles
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for handle in self.take() {
            handle.abort();
        }
        // An aborted task cannot say so itself.
        self.state.set_connected(false);
    }
}

impl Serin {
    /// Starts building a configuration for `server`, `token` and `env`.
    pub fn builder(
        server: impl Into<String>,
        token: impl Into<String>,
        env: impl Into<String>,
    ) -> SerinBuilder {
        SerinBuilder {
            config: Config::new(server, token, env),
        }
    }

    /// Starts the SDK: serves the cache file at once if there is a usable
    /// one (marked stale until the server confirms it), starts following
    /// the server's stream, and returns as soon as a snapshot is available
    /// from either source. Without a cache it waits up to
    /// `start_timeout` for the server and fails with
    /// [`SdkError::StartTimeout`] if nothing came: failing static needs a
    /// snapshot to stand on.
    ///
    /// Must be called within a Tokio runtime; the background task runs on it.
    pub async fn start(config: Config) -> Result<Serin, SdkError> {
        let config = Arc::new(validate(config)?);
        // reqwest is built without a bundled crypto provider; use ring unless
        // the application installed one of its own (then this is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(config.request_timeout)
            .build()
            .map_err(|e| SdkError::InvalidConfig(format!("HTTP client: {e}")))?;

        let state = Arc::new(State::new(true));
        if let Some(path) = config.cache_file() {
            let env = config.env.clone();
            let loaded = tokio::task::spawn_blocking(move || cache::load(&path, &env))
                .await
                .ok()
                .flatten();
            if let Some(snapshot) = loaded {
                tracing::info!(
                    version = snapshot.version(),
                    "serving the cached snapshot (stale) until the server answers"
                );
                state.install(Arc::new(snapshot), true);
            }
        }

        let (stop, stop_rx) = watch::channel(false);
        let (version_tx, mut version_rx) = watch::channel(state.version());
        let mut handles = Vec::with_capacity(4);
        let cache_tx = config.cache_file().map(|path| {
            let (tx, rx) = watch::channel::<Option<Arc<CompiledSnapshot>>>(None);
            handles.push(tokio::spawn(cache::writer(path, rx, stop_rx.clone())));
            tx
        });
        let http_for_outcomes = http.clone();
        let effects = EffectLedger::new(http.clone(), config.clone());
        let reporter = reporter::Reporter {
            config: config.clone(),
            http: http.clone(),
            applied: version_tx.subscribe(),
            state: state.clone(),
        };
        handles.push(tokio::spawn(reporter.run(stop_rx.clone())));
        let task = stream::Task {
            config: config.clone(),
            http,
            state: state.clone(),
            version_tx,
            cache_tx,
        };
        handles.push(tokio::spawn(task.run(stop_rx.clone())));
        let (outcomes, outcome_rx) = mpsc::channel(config.outcome_queue.max(1));
        let outcome_counters = Arc::new(recorder::Counters::default());
        let rec = recorder::Recorder {
            config: config.clone(),
            http: http_for_outcomes,
            rx: outcome_rx,
            counters: outcome_counters.clone(),
            router: Router {
                state: state.clone(),
            },
            windows_sent: 0,
            windows_nonce: rand::random::<u32>(),
        };
        handles.push(tokio::spawn(rec.run(stop_rx)));

        let serin = Serin {
            router: Router {
                state: state.clone(),
            },
            tasks: Arc::new(Tasks {
                state,
                stop,
                handles: Mutex::new(handles),
            }),
            outcomes,
            outcome_counters,
            effects,
        };
        let first =
            tokio::time::timeout(config.start_timeout, version_rx.wait_for(|v| v.is_some())).await;
        match first {
            Ok(Ok(_)) => Ok(serin),
            _ => {
                serin.shutdown().await;
                Err(SdkError::StartTimeout {
                    waited: config.start_timeout,
                    last_error: serin.router.state.last_error(),
                })
            }
        }
    }

    /// The router this SDK keeps current (clone it freely).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// See [`Router::snapshot`].
    pub fn snapshot(&self) -> Option<Arc<CompiledSnapshot>> {
        self.router.snapshot()
    }

    /// The snapshot served right now, to decide on without allocating; see
    /// [`Router::current`].
    pub fn current(&self) -> Result<SnapshotGuard, SdkError> {
        self.router.current()
    }

    /// See [`Router::snapshot_version`].
    pub fn snapshot_version(&self) -> Option<u64> {
        self.router.snapshot_version()
    }

    /// The owned form of a decision; see [`Router::decide`], and [`Serin::current`] for
    /// the per-request path.
    pub fn decide<C: AsContext + ?Sized>(
        &self,
        agent: &str,
        ctx: &C,
    ) -> Result<SdkDecision, SdkError> {
        self.router.decide(agent, ctx)
    }

    /// See [`Router::health`].
    pub fn health(&self) -> Health {
        self.router.health()
    }

    /// Queues one outcome for the server, without blocking. Returns `false`
    /// (and counts it in [`Serin::outcome_stats`]) when the queue is full or
    /// the SDK was shut down: telemetry never slows the agent down.
    pub fn record(&self, event: OutcomeEvent) -> bool {
        match self.outcomes.try_send(event) {
            Ok(()) => true,
            Err(_) => {
                self.outcome_counters.dropped(1);
                false
            }
        }
    }

    /// Runs one side-effecting call under the side-effect ledger with the default
    /// [`EffectOptions`]: records the intent, runs `call` (retrying its transient errors
    /// under the same key), records the result. A retry of a call that already happened
    /// returns [`EffectOutcome::AlreadyCommitted`] without calling; see
    /// [`EffectLedger::run`] and the module `effect` for every case.
    ///
    /// ```no_run
    /// # async fn run(serin: serin_sdk::Serin) {
    /// use serin_sdk::{CallError, EffectKey, args_digest};
    /// let args = serde_json::json!({"order": "o-17", "amount_cents": 1200});
    /// let key = EffectKey::new("support", 2, "req-42", "refund", args_digest(&args).unwrap());
    /// let out = serin
    ///     .effect(&key, || async {
    ///         // payments.refund(&args).await.map_err(|e| if e.retryable() { CallError::Transient(e) } else { CallError::Permanent(e) })
    ///         Ok::<_, CallError<std::io::Error>>("re_123")
    ///     })
    ///     .await;
    /// # let _ = out;
    /// # }
    /// ```
    pub async fn effect<T, E, F, Fut>(
        &self,
        key: &EffectKey,
        call: F,
    ) -> Result<EffectOutcome<T>, EffectError<E>>
    where
        E: fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError<E>>>,
    {
        self.effects.run(key, &EffectOptions::default(), call).await
    }

    /// [`Serin::effect`] with options (timeout, retries, the committed detail).
    pub async fn effect_with<T, E, F, Fut>(
        &self,
        key: &EffectKey,
        options: &EffectOptions<T>,
        call: F,
    ) -> Result<EffectOutcome<T>, EffectError<E>>
    where
        E: fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError<E>>>,
    {
        self.effects.run(key, options, call).await
    }

    /// The ledger's endpoints on their own: recording intents and results by hand, e.g. to
    /// settle an `unknown` effect after reconciling it.
    pub fn effects(&self) -> &EffectLedger {
        &self.effects
    }

    /// How many outcomes were sent, rejected and dropped so far.
    pub fn outcome_stats(&self) -> OutcomeStats {
        self.outcome_counters.snapshot()
    }

    /// Stops the background task (for every clone) and waits for it, and for
    /// a cache write in progress, to finish. Decisions keep working from the
    /// last snapshot, marked stale.
    pub async fn shutdown(&self) {
        self.tasks.stop.send_replace(true);
        for handle in self.tasks.take() {
            let _ = handle.await;
        }
        self.router.state.set_connected(false);
    }
}

fn validate(mut config: Config) -> Result<Config, SdkError> {
    serin_engine::slug::validate_env(&config.env)
        .map_err(|e| SdkError::InvalidConfig(format!("env: {e}")))?;
    serin_engine::slug::validate_instance(&config.instance)
        .map_err(|e| SdkError::InvalidConfig(format!("instance: {e}")))?;
    for (what, v) in [("region", &config.region), ("pool", &config.pool)] {
        if let Some(v) = v {
            serin_engine::slug::validate_instance(v)
                .map_err(|e| SdkError::InvalidConfig(format!("{what}: {e}")))?;
        }
    }
    let trimmed = config.server.trim().trim_end_matches('/').to_owned();
    let url = reqwest::Url::parse(&trimmed)
        .map_err(|e| SdkError::InvalidConfig(format!("server URL {trimmed:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SdkError::InvalidConfig(format!(
            "server URL {trimmed:?}: scheme must be http or https"
        )));
    }
    config.server = trimmed;
    if config.backoff_max < config.backoff_min {
        config.backoff_max = config.backoff_min;
    }
    Ok(config)
}
