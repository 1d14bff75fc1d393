//! The side-effect ledger's client half: [`Serin::effect`](crate::Serin::effect) records an
//! intent before a side-effecting tool call, runs the call, and records its result, so a retry
//! of the same call (another attempt, another process) learns whether it already happened
//! instead of acting twice.
//!
//! What each answer of the ledger makes the helper do:
//!
//! | intent answer | the helper |
//! |---|---|
//! | created | runs the call |
//! | earlier record, `committed` | does not call; [`EffectOutcome::AlreadyCommitted`] |
//! | earlier record, `failed` | does not call; [`EffectError::PreviouslyFailed`] (`failed` is final in the ledger, so a new attempt needs a new key) |
//! | earlier record, `intent` or `unknown` | does not call; [`EffectError::EffectUnknown`]: someone may be inside the call, or it may have happened; the caller reconciles |
//! | not recorded (server away, refused) | does not call; [`EffectError::NotRecorded`] or [`EffectError::Invalid`] |
//!
//! The call's own errors are classified by the caller ([`CallError`]): a transient one is
//! retried under the same key with jittered exponential backoff (the record stays `intent`
//! between attempts: no result is posted until the last one), a permanent one is recorded
//! `failed`, and one after which nobody can tell whether the effect happened is recorded
//! `unknown`. A call still running at the effect's timeout is dropped and recorded `unknown`,
//! never `failed`. When a result cannot be delivered, the intent stays open and the server's
//! sweep turns it `unknown` after `timeout_ms`, which the intent carries for that reason.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Config;
use super::stream::backoff;

/// Longest result detail the ledger keeps, in bytes; a longer one is cut at a character
/// boundary.
pub const MAX_DETAIL_LEN: usize = 4096;
/// Longest timeout the ledger accepts (24 hours).
pub const MAX_EFFECT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Where an effect stands in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EffectStatus {
    /// Recorded before acting; no result yet.
    Intent,
    /// The side effect happened.
    Committed,
    /// The side effect did not happen.
    Failed,
    /// Nobody can tell whether it happened.
    Unknown,
}

impl EffectStatus {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectStatus::Intent => "intent",
            EffectStatus::Committed => "committed",
            EffectStatus::Failed => "failed",
            EffectStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for EffectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ledger record, as the server returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRecord {
    pub key: String,
    pub agent: String,
    pub bundle: i64,
    pub request_id: String,
    pub tool: String,
    pub args_digest: String,
    pub timeout_ms: i64,
    pub status: EffectStatus,
    /// The result's short explanation, if one was given.
    pub detail: Option<String>,
    pub created_at_ms: i64,
    pub created_by: String,
    pub resolved_at_ms: Option<i64>,
}

/// Which call an effect is: the idempotency key is derived from these fields (or given).
///
/// Two attempts of the same call must build the same key: use the request id the agent was
/// asked to serve and a digest of the tool's arguments ([`args_digest`]), never a time or a
/// random number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectKey {
    pub agent: String,
    /// N of agent@N, the bundle the agent runs.
    pub bundle: u64,
    /// The request the tool call serves.
    pub request_id: String,
    pub tool: String,
    /// A digest of the call's arguments (any stable text; see [`args_digest`]).
    pub args_digest: String,
    /// An idempotency key of the caller's own (`[A-Za-z0-9._:/-]`, 1 to 200 characters),
    /// used as it is instead of the derived one.
    pub key: Option<String>,
}

impl EffectKey {
    pub fn new(
        agent: impl Into<String>,
        bundle: u64,
        request_id: impl Into<String>,
        tool: impl Into<String>,
        args_digest: impl Into<String>,
    ) -> EffectKey {
        EffectKey {
            agent: agent.into(),
            bundle,
            request_id: request_id.into(),
            tool: tool.into(),
            args_digest: args_digest.into(),
            key: None,
        }
    }

    /// The call of `tool` by the bundle a decision chose (`agent@N`).
    pub fn for_bundle(
        bundle: &crate::BundleRef,
        request_id: impl Into<String>,
        tool: impl Into<String>,
        args_digest: impl Into<String>,
    ) -> EffectKey {
        let agent = bundle.id.rsplit_once('@').map_or("", |(a, _)| a);
        EffectKey::new(agent, bundle.number, request_id, tool, args_digest)
    }

    /// Uses `key` as the idempotency key instead of deriving one.
    pub fn with_key(mut self, key: impl Into<String>) -> EffectKey {
        self.key = Some(key.into());
        self
    }

    /// The idempotency key: the caller's, else `<agent>/<bundle>/<32 hex>`, the hex being
    /// XXH3-128 of the fields. Fields cannot hold control characters (the ledger refuses
    /// them), so NUL-separating them is unambiguous. A collision of two different calls is
    /// refused by the server (409: the key records another call), never taken for a retry.
    pub fn idempotency_key(&self) -> String {
        if let Some(k) = &self.key {
            return k.clone();
        }
        let mut text = Vec::with_capacity(
            32 + self.agent.len()
                + self.request_id.len()
                + self.tool.len()
                + self.args_digest.len(),
        );
        for part in [
            "serin-effect-v1",
            &self.agent,
            &self.bundle.to_string(),
            &self.request_id,
            &self.tool,
            &self.args_digest,
        ] {
            text.extend_from_slice(part.as_bytes());
            text.push(0);
        }
        format!(
            "{}/{}/{:032x}",
            self.agent,
            self.bundle,
            xxhash_rust::xxh3::xxh3_128(&text)
        )
    }

    fn intent(&self, timeout: Duration) -> Result<Intent, (String, String)> {
        let bad = |field: &str, message: String| (field.to_owned(), message);
        let key = self.idempotency_key();
        // "." and ".." would be dot segments of the result URL, which no client sends as such.
        if key.bytes().all(|b| b == b'.') {
            return Err(bad("key", format!("{key:?} cannot be addressed in a URL")));
        }
        let bundle = i64::try_from(self.bundle)
            .ok()
            .filter(|b| *b >= 1)
            .ok_or_else(|| bad("bundle", "must be a positive bundle number".into()))?;
        if timeout.is_zero() || timeout > MAX_EFFECT_TIMEOUT {
            return Err(bad(
                "timeout_ms",
                format!("{timeout:?} is not between 1 ms and 24 hours"),
            ));
        }
        Ok(Intent {
            key,
            agent: self.agent.clone(),
            bundle,
            request_id: self.request_id.clone(),
            tool: self.tool.clone(),
            args_digest: self.args_digest.clone(),
            // At least 1 ms: a sub-millisecond timeout is still a timeout.
            timeout_ms: i64::try_from(timeout.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
        })
    }
}

/// `xxh3-128:<32 hex>` of the JSON serialization of `args`: a stable arguments digest for
/// [`EffectKey::args_digest`]. Map keys must serialize in a stable order (structs and
/// `serde_json::Value`'s sorted maps do; a `HashMap` does not).
pub fn args_digest<A: Serialize + ?Sized>(args: &A) -> Result<String, serde_json::Error> {
    Ok(args_digest_bytes(&serde_json::to_vec(args)?))
}

/// `xxh3-128:<32 hex>` of `bytes` (the Python SDK digests its own canonical JSON with it).
pub fn args_digest_bytes(bytes: &[u8]) -> String {
    format!("xxh3-128:{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// The intent as `POST /v1/effects` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Intent {
    pub key: String,
    pub agent: String,
    pub bundle: i64,
    pub request_id: String,
    pub tool: String,
    pub args_digest: String,
    pub timeout_ms: i64,
}

/// How a call failed, as the caller classifies it.
#[derive(Debug)]
pub enum CallError<E> {
    /// The effect did not happen and trying again may work (a refused connection, a 503, a
    /// rate limit): retried under the same key.
    Transient(E),
    /// The effect did not happen and trying again will not help (bad arguments, insufficient
    /// funds): recorded `failed`.
    Permanent(E),
    /// The effect may or may not have happened (a timeout after the request was sent):
    /// recorded `unknown`, never retried.
    Unknown(E),
}

/// Jittered exponential backoff: the delay before attempt `n + 1` is drawn uniformly from
/// `0..=min(cap, base * 2^n)` (full jitter), and at most `attempts` attempts are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    pub fn new(attempts: u32, base: Duration, cap: Duration) -> RetryPolicy {
        RetryPolicy {
            attempts: attempts.max(1),
            base,
            cap: cap.max(base),
        }
    }

    fn delay(&self, attempt: u32) -> Duration {
        backoff(self.base, self.cap.max(self.base), attempt)
    }
}

/// A function from the call's value to the result's detail.
pub type DetailFn<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// How [`EffectLedger::run`] behaves.
pub struct EffectOptions<T> {
    /// How long the whole effect may take, from recording the intent to the last attempt's
    /// end; a call still running then is dropped and recorded `unknown`. Sent as the intent's
    /// `timeout_ms`, after which the server marks an unanswered intent `unknown`. Part of the
    /// call's identity: a retry must use the same timeout. Default 60 s.
    pub timeout: Duration,
    /// Attempts of the call on transient errors. Default 3 attempts, 200 ms base, 5 s cap.
    pub retry: RetryPolicy,
    /// Attempts of each ledger post on connection errors, 5xx and 429 (whose `Retry-After`
    /// is waited at least). Default 6 attempts, 100 ms base, 2 s cap.
    pub ledger_retry: RetryPolicy,
    /// The detail recorded with `committed` (cut to 4096 bytes), e.g. a refund's id.
    pub detail: Option<DetailFn<T>>,
}

impl<T> Default for EffectOptions<T> {
    fn default() -> Self {
        EffectOptions {
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::new(3, Duration::from_millis(200), Duration::from_secs(5)),
            ledger_retry: RetryPolicy::new(6, Duration::from_millis(100), Duration::from_secs(2)),
            detail: None,
        }
    }
}

impl<T> Clone for EffectOptions<T> {
    fn clone(&self) -> Self {
        EffectOptions {
            timeout: self.timeout,
            retry: self.retry,
            ledger_retry: self.ledger_retry,
            detail: self.detail.clone(),
        }
    }
}

impl<T> fmt::Debug for EffectOptions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EffectOptions")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("ledger_retry", &self.ledger_retry)
            .field("detail", &self.detail.as_ref().map(|_| "fn"))
            .finish()
    }
}

impl<T> EffectOptions<T> {
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn retry(mut self, attempts: u32, base: Duration, cap: Duration) -> Self {
        self.retry = RetryPolicy::new(attempts, base, cap);
        self
    }

    pub fn ledger_retry(mut self, attempts: u32, base: Duration, cap: Duration) -> Self {
        self.ledger_retry = RetryPolicy::new(attempts, base, cap);
        self
    }

    pub fn detail(mut self, f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.detail = Some(Arc::new(f));
        self
    }
}

/// What a successful [`EffectLedger::run`] did.
#[derive(Debug)]
pub enum EffectOutcome<T> {
    /// The call ran now and succeeded. `record` is the ledger's `committed` record, or why it
    /// could not be delivered: then the intent stays open, the sweep marks it `unknown` after
    /// its timeout, and a later run of the same key returns [`EffectError::EffectUnknown`]
    /// unless a later result settles it.
    Ran {
        value: T,
        attempts: u32,
        record: Result<EffectRecord, LedgerError>,
    },
    /// An earlier attempt of this call committed it: the call did not run again. Its value
    /// is not kept by the ledger; `record.detail` is what that attempt recorded.
    AlreadyCommitted { record: EffectRecord },
}

impl<T> EffectOutcome<T> {
    /// Whether the call ran in this invocation.
    pub fn ran(&self) -> bool {
        matches!(self, EffectOutcome::Ran { .. })
    }

    /// The value of a call that ran now.
    pub fn value(self) -> Option<T> {
        match self {
            EffectOutcome::Ran { value, .. } => Some(value),
            EffectOutcome::AlreadyCommitted { .. } => None,
        }
    }

    /// The ledger's record, when it is known.
    pub fn record(&self) -> Option<&EffectRecord> {
        match self {
            EffectOutcome::Ran { record, .. } => record.as_ref().ok(),
            EffectOutcome::AlreadyCommitted { record } => Some(record),
        }
    }
}

/// Why a ledger post did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The server refused the post (4xx other than 429); retrying it cannot help.
    #[error("the ledger refused it ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// Every attempt met a connection error, a 5xx or a 429.
    #[error("the ledger did not answer after {attempts} attempt(s): {last}")]
    Unavailable { attempts: u32, last: String },
    /// The server answered something this SDK cannot read.
    #[error("unreadable answer from the ledger: {0}")]
    Unreadable(String),
}

/// Why nobody can say whether the effect happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownCause {
    /// An earlier attempt recorded the intent and no result (it may still be inside the
    /// call, or have died there), or the ledger already says `unknown`.
    Earlier,
    /// The call was still running at the effect's timeout and was dropped.
    TimedOut,
    /// The call said so ([`CallError::Unknown`]).
    Call,
}

/// Why [`EffectLedger::run`] returned no value.
#[derive(Debug)]
#[non_exhaustive]
pub enum EffectError<E> {
    /// The key's fields are not a valid intent; nothing was recorded and the call did not run.
    Invalid { field: String, message: String },
    /// The intent could not be recorded: the call did not run (no intent, no call).
    NotRecorded(LedgerError),
    /// Whether the effect happened cannot be told: do not act again before reconciling
    /// (look the call up where it acts, then settle the key with
    /// [`EffectLedger::record_result`]). `record` is the ledger's record when known.
    EffectUnknown {
        key: String,
        cause: UnknownCause,
        record: Option<EffectRecord>,
        error: Option<E>,
    },
    /// The call ran and did not happen (a permanent error, or transient ones until the
    /// attempts or the time ran out); recorded `failed` (`record`: the record, or why the
    /// result could not be delivered).
    Failed {
        key: String,
        error: E,
        attempts: u32,
        record: Result<EffectRecord, LedgerError>,
    },
    /// An earlier attempt of this call failed; it is not run again. `failed` is final in
    /// the ledger, so trying again needs a new key (another request id, or an explicit key).
    PreviouslyFailed { record: EffectRecord },
}

impl<E: fmt::Display> fmt::Display for EffectError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EffectError::Invalid { field, message } => {
                write!(f, "invalid effect: {field}: {message}")
            }
            EffectError::NotRecorded(e) => {
                write!(
                    f,
                    "the intent was not recorded, so the call did not run: {e}"
                )
            }
            EffectError::EffectUnknown {
                key, cause, error, ..
            } => {
                let why = match cause {
                    UnknownCause::Earlier => {
                        "an earlier attempt recorded its intent and no result".to_owned()
                    }
                    UnknownCause::TimedOut => "the call did not finish in time".to_owned(),
                    UnknownCause::Call => match error {
                        Some(e) => format!("the call cannot tell: {e}"),
                        None => "the call cannot tell".to_owned(),
                    },
                };
                write!(
                    f,
                    "effect {key} is unknown ({why}); reconcile before acting again"
                )
            }
            EffectError::Failed {
                key,
                error,
                attempts,
                ..
            } => write!(
                f,
                "effect {key} failed after {attempts} attempt(s): {error}"
            ),
            EffectError::PreviouslyFailed { record } => write!(
                f,
                "effect {} already failed{}; use a new key to try again",
                record.key,
                record
                    .detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for EffectError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EffectError::NotRecorded(e) => Some(e),
            EffectError::Failed { error, .. } => Some(error),
            EffectError::EffectUnknown { error: Some(e), .. } => Some(e),
            _ => None,
        }
    }
}

/// Why [`EffectLedger::begin`] recorded no intent: the call must not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BeginError {
    /// The key's fields are not a valid intent (`field` names the first refused).
    #[error("invalid effect: {field}: {message}")]
    Invalid { field: String, message: String },
    /// The server was away, refused the token, or the key records another call (409).
    #[error("the intent was not recorded, so the call did not run: {0}")]
    NotRecorded(LedgerError),
}

impl<E> From<BeginError> for EffectError<E> {
    fn from(e: BeginError) -> Self {
        match e {
            BeginError::Invalid { field, message } => EffectError::Invalid { field, message },
            BeginError::NotRecorded(l) => EffectError::NotRecorded(l),
        }
    }
}

/// What the ledger said to an intent, as a decision about the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begun {
    /// New intent: run the call.
    Run(EffectRecord),
    /// An earlier attempt committed it: do not call.
    Committed(EffectRecord),
    /// An earlier attempt failed it: do not call under this key.
    Failed(EffectRecord),
    /// An earlier attempt's intent with no result, or `unknown`: do not call; reconcile.
    Open(EffectRecord),
}

impl Begun {
    fn of(created: bool, record: EffectRecord) -> Begun {
        if created {
            return Begun::Run(record);
        }
        match record.status {
            EffectStatus::Committed => Begun::Committed(record),
            EffectStatus::Failed => Begun::Failed(record),
            // An earlier `intent`, even one this same invocation may have recorded before a
            // lost answer, is indistinguishable from another process inside the call.
            EffectStatus::Intent | EffectStatus::Unknown => Begun::Open(record),
        }
    }
}

#[derive(Deserialize)]
struct IntentAnswer {
    created: bool,
    effect: EffectRecord,
}

/// The ledger endpoints of one server, with the SDK's token. Cheap to clone.
#[derive(Clone)]
pub struct EffectLedger {
    http: reqwest::Client,
    config: Arc<Config>,
}

impl fmt::Debug for EffectLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EffectLedger")
            .field("server", &self.config.server)
            .finish_non_exhaustive()
    }
}

/// `Retry-After` in seconds (the only form this server sends).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

/// A key as one path segment: the alphabet is `[A-Za-z0-9._:/-]`, of which only `/` needs
/// escaping.
fn key_segment(key: &str) -> String {
    key.replace('/', "%2F")
}

fn cut_detail(mut detail: String) -> String {
    if detail.len() > MAX_DETAIL_LEN {
        let mut end = MAX_DETAIL_LEN;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
    detail
}

impl EffectLedger {
    pub(super) fn new(http: reqwest::Client, config: Arc<Config>) -> EffectLedger {
        EffectLedger { http, config }
    }

    /// Posts `body`, retrying connection errors, 5xx and 429 (waiting at least its
    /// `Retry-After`) with backoff; a 2xx body is decoded as `R`.
    async fn post<R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        retry: &RetryPolicy,
    ) -> Result<R, LedgerError> {
        let url = format!("{}{path}", self.config.server);
        let attempts = retry.attempts.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            let mut wait_at_least = Duration::ZERO;
            let sent = self
                .http
                .post(&url)
                .bearer_auth(&self.config.token)
                .timeout(self.config.request_timeout)
                .json(body)
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    return resp
                        .json::<R>()
                        .await
                        .map_err(|e| LedgerError::Unreadable(e.to_string()));
                }
                Ok(resp) if resp.status().as_u16() == 429 || resp.status().is_server_error() => {
                    wait_at_least = retry_after(&resp).unwrap_or_default();
                    last = format!("HTTP {}", resp.status().as_u16());
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    let text = |name: &str| {
                        body.get("error")
                            .and_then(|e| e.get(name))
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_owned)
                    };
                    return Err(LedgerError::Refused {
                        status,
                        code: text("code").unwrap_or_else(|| "unknown".to_owned()),
                        message: text("message").unwrap_or_default(),
                        field: text("field"),
                    });
                }
                Err(e) => last = e.to_string(),
            }
            if attempt + 1 < attempts {
                tokio::time::sleep(retry.delay(attempt).max(wait_at_least)).await;
            }
        }
        Err(LedgerError::Unavailable { attempts, last })
    }

    /// Records `intent` (`POST /v1/effects`): whether it was created, and the record.
    pub async fn record_intent(
        &self,
        intent: &Intent,
        retry: &RetryPolicy,
    ) -> Result<(bool, EffectRecord), LedgerError> {
        let a: IntentAnswer = self.post("/v1/effects", intent, retry).await?;
        Ok((a.created, a.effect))
    }

    /// Records the intent of `key` with `timeout` and says what to do about the call. The
    /// Python SDK runs its own call loop on this and [`EffectLedger::record_result`].
    pub async fn begin(
        &self,
        key: &EffectKey,
        timeout: Duration,
        retry: &RetryPolicy,
    ) -> Result<Begun, BeginError> {
        let intent = key
            .intent(timeout)
            .map_err(|(field, message)| BeginError::Invalid { field, message })?;
        match self.record_intent(&intent, retry).await {
            Ok((created, record)) => Ok(Begun::of(created, record)),
            Err(LedgerError::Refused {
                status: 422 | 400,
                message,
                field,
                ..
            }) => Err(BeginError::Invalid {
                field: field
                    .map(|f| f.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                message,
            }),
            Err(e) => Err(BeginError::NotRecorded(e)),
        }
    }

    /// Records the result of `key` (`POST /v1/effects/{key}/result`). The same result again
    /// is a no-op; `unknown` may later be settled by `committed` or `failed`.
    pub async fn record_result(
        &self,
        key: &str,
        status: EffectStatus,
        detail: Option<String>,
        retry: &RetryPolicy,
    ) -> Result<EffectRecord, LedgerError> {
        #[derive(Serialize)]
        struct Body {
            status: EffectStatus,
            #[serde(skip_serializing_if = "Option::is_none")]
            detail: Option<String>,
        }
        let body = Body {
            status,
            detail: detail.map(cut_detail),
        };
        let path = format!("/v1/effects/{}/result", key_segment(key));
        self.post(&path, &body, retry).await
    }

    /// Runs one side effect under the ledger: see the module documentation
    /// ([`Serin::effect`](crate::Serin::effect) is the short form).
    ///
    /// If the future is dropped or the call panics, no result is posted: the intent stays
    /// open and the server's sweep marks it `unknown` after the timeout.
    pub async fn run<T, E, F, Fut>(
        &self,
        key: &EffectKey,
        options: &EffectOptions<T>,
        mut call: F,
    ) -> Result<EffectOutcome<T>, EffectError<E>>
    where
        E: fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError<E>>>,
    {
        // Counted from before the intent, so this side gives up no later than the server's
        // sweep (which counts from the intent's arrival) calls it unknown.
        let deadline = tokio::time::Instant::now() + options.timeout;
        let begun = self
            .begin(key, options.timeout, &options.ledger_retry)
            .await?;
        let key = match begun {
            Begun::Run(record) => record.key,
            Begun::Committed(record) => return Ok(EffectOutcome::AlreadyCommitted { record }),
            Begun::Failed(record) => return Err(EffectError::PreviouslyFailed { record }),
            Begun::Open(record) => {
                return Err(EffectError::EffectUnknown {
                    key: record.key.clone(),
                    cause: UnknownCause::Earlier,
                    record: Some(record),
                    error: None,
                });
            }
        };
        let settle = |status: EffectStatus, detail: Option<String>| {
            self.record_result(&key, status, detail, &options.ledger_retry)
        };
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let error = match tokio::time::timeout_at(deadline, call()).await {
                Ok(Ok(value)) => {
                    let detail = options.detail.as_ref().map(|f| f(&value));
                    let record = settle(EffectStatus::Committed, detail).await;
                    if let Err(e) = &record {
                        tracing::warn!(key = %key, error = %e, "the effect happened but its result could not be recorded");
                    }
                    return Ok(EffectOutcome::Ran {
                        value,
                        attempts: attempt,
                        record,
                    });
                }
                Err(_elapsed) => {
                    let detail = format!(
                        "attempt {attempt} still running at the timeout ({} ms)",
                        options.timeout.as_millis()
                    );
                    let record = settle(EffectStatus::Unknown, Some(detail)).await.ok();
                    return Err(EffectError::EffectUnknown {
                        key,
                        cause: UnknownCause::TimedOut,
                        record,
                        error: None,
                    });
                }
                Ok(Err(CallError::Unknown(e))) => {
                    let detail = format!("attempt {attempt}: {e}");
                    let record = settle(EffectStatus::Unknown, Some(detail)).await.ok();
                    return Err(EffectError::EffectUnknown {
                        key,
                        cause: UnknownCause::Call,
                        record,
                        error: Some(e),
                    });
                }
                Ok(Err(CallError::Permanent(e))) => (e, "permanent error"),
                Ok(Err(CallError::Transient(e))) => {
                    let delay = options.retry.delay(attempt - 1);
                    if attempt < options.retry.attempts
                        && tokio::time::Instant::now() + delay < deadline
                    {
                        tracing::debug!(key = %key, attempt, error = %e, "transient error; retrying under the same key");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    (e, "transient error, no attempt left")
                }
            };
            let (e, what) = error;
            let detail = format!("attempt {attempt}: {what}: {e}");
            let record = settle(EffectStatus::Failed, Some(detail)).await;
            return Err(EffectError::Failed {
                key,
                error: e,
                attempts: attempt,
                record,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_key_is_pinned_and_changes_with_every_field() {
        let k = EffectKey::new("support", 2, "req-1", "refund", "sha256:abc");
        // Pinned: a retry after an SDK upgrade must find the key its first attempt recorded.
        let pinned = k.idempotency_key();
        assert_eq!(pinned, k.clone().idempotency_key());
        assert!(pinned.starts_with("support/2/") && pinned.len() == "support/2/".len() + 32);
        assert_eq!(pinned, "support/2/1761f2e7bc7264ff25d9555f73e94ce4");
        for (i, part) in ["agent", "bundle", "request", "tool", "args"]
            .iter()
            .enumerate()
        {
            let mut o = k.clone();
            match i {
                0 => o.agent = "billing".into(),
                1 => o.bundle = 3,
                2 => o.request_id = "req-2".into(),
                3 => o.tool = "refund2".into(),
                _ => o.args_digest = "sha256:abd".into(),
            }
            assert_ne!(o.idempotency_key(), pinned, "{part}");
        }
        // Moving a boundary between fields is another call.
        let shifted = EffectKey::new("support", 2, "req-1r", "efund", "sha256:abc");
        assert_ne!(shifted.idempotency_key(), pinned);
        assert_eq!(k.with_key("mine:1").idempotency_key(), "mine:1");
    }

    #[test]
    fn intents_refuse_what_cannot_be_addressed_or_timed() {
        let k = EffectKey::new("support", 2, "r", "t", "d");
        assert!(k.intent(Duration::ZERO).is_err());
        assert!(
            k.intent(MAX_EFFECT_TIMEOUT + Duration::from_millis(1))
                .is_err()
        );
        assert_eq!(k.intent(Duration::from_micros(10)).unwrap().timeout_ms, 1);
        assert_eq!(
            k.clone()
                .with_key("..")
                .intent(Duration::from_secs(1))
                .unwrap_err()
                .0,
            "key"
        );
        let mut zero = k;
        zero.bundle = 0;
        assert_eq!(zero.intent(Duration::from_secs(1)).unwrap_err().0, "bundle");
        assert_eq!(key_segment("a/b:c"), "a%2Fb:c");
    }

    #[test]
    fn details_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_DETAIL_LEN);
        let cut = cut_detail(long);
        assert!(cut.len() <= MAX_DETAIL_LEN && cut.len() >= MAX_DETAIL_LEN - 1);
        assert_eq!(cut_detail("short".into()), "short");
    }

    #[test]
    fn args_digests_are_stable_for_equal_json() {
        let a = args_digest(&serde_json::json!({"b": 1, "a": [1, 2]})).unwrap();
        let b = args_digest(&serde_json::json!({"a": [1, 2], "b": 1})).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("xxh3-128:") && a.len() == 9 + 32);
        assert_ne!(
            a,
            args_digest(&serde_json::json!({"a": [2, 1], "b": 1})).unwrap()
        );
    }
}
