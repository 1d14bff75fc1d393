//! The side-effect ledger: one record per tool call an agent makes that changes the world
//! (a refund, a ticket, an email), keyed by an idempotency key the client derives from
//! (agent, bundle, request id, tool, arguments digest).
//!
//! A client records the intent before acting and the result after. A retry of the same call
//! finds the earlier record under the same key and learns whether it already happened, so a
//! side effect is never performed twice because a process died or a response was lost.
//!
//! States: `intent` → `committed` | `failed` | `unknown`. `unknown` is what nobody can tell:
//! a client that lost track of its call, or an intent with no result after its timeout (the
//! server's sweep). Because `unknown` is the absence of an answer rather than one, a later
//! `committed` or `failed` still settles it; `committed` and `failed` are final.
//!
//! Pure: callers pass the time in and store what the transitions return.

use serde::{Deserialize, Serialize};

/// Longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 200;
/// Longest request id, tool name or arguments digest, in bytes.
pub const MAX_FIELD_LEN: usize = 256;
/// Longest result detail, in bytes: a short human explanation, not a payload.
pub const MAX_DETAIL_LEN: usize = 4096;
/// An intent with no result after this long is marked `unknown` (5 minutes).
pub const DEFAULT_TIMEOUT_MS: i64 = 5 * 60 * 1000;
/// Longest timeout an intent may ask for (24 hours).
pub const MAX_TIMEOUT_MS: i64 = 24 * 3_600_000;

/// Where an effect stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Every status, in lifecycle order.
    pub const ALL: [EffectStatus; 4] = [
        EffectStatus::Intent,
        EffectStatus::Committed,
        EffectStatus::Failed,
        EffectStatus::Unknown,
    ];

    /// The lowercase name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectStatus::Intent => "intent",
            EffectStatus::Committed => "committed",
            EffectStatus::Failed => "failed",
            EffectStatus::Unknown => "unknown",
        }
    }

    /// Parses a lowercase status name.
    pub fn parse(s: &str) -> Option<EffectStatus> {
        EffectStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether no later result may change it.
    pub fn is_final(self) -> bool {
        matches!(self, EffectStatus::Committed | EffectStatus::Failed)
    }
}

impl std::fmt::Display for EffectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the ledger refused something. [`LedgerError::code`] is stable: clients branch on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A field of an intent or result is malformed; `field` names it.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A result for an effect that already has a different final one.
    #[error("effect {key} is already {current}; a different result ({requested}) is refused")]
    ResultConflict {
        key: String,
        current: EffectStatus,
        requested: EffectStatus,
    },
}

impl LedgerError {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::Invalid { .. } => "invalid_field",
            LedgerError::ResultConflict { .. } => "result_conflict",
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> LedgerError {
    LedgerError::Invalid {
        field,
        message: message.into(),
    }
}

/// Whether `key` is an idempotency key: 1 to 200 bytes of `[A-Za-z0-9._:/-]`.
pub fn is_valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'))
}

/// Checks an idempotency key, naming `field` when it is refused.
pub fn check_key(key: &str, field: &'static str) -> Result<(), LedgerError> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{key:?} is not an idempotency key: 1 to {MAX_KEY_LEN} characters of A-Z a-z 0-9 . _ : / -"
            ),
        ))
    }
}

fn check_text(value: &str, field: &'static str) -> Result<(), LedgerError> {
    if value.is_empty() || value.len() > MAX_FIELD_LEN {
        return Err(invalid(
            field,
            format!("must be 1 to {MAX_FIELD_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// What a client records before acting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EffectIntent {
    /// The idempotency key the client derived from the fields below.
    pub key: String,
    pub agent: String,
    /// N of agent@N, the bundle the agent was running.
    pub bundle: i64,
    /// The request the tool call served.
    pub request_id: String,
    pub tool: String,
    /// A digest of the call's arguments (any stable text the client chooses).
    pub args_digest: String,
    /// How long the call may take before the ledger calls it `unknown` (default 5 minutes,
    /// at most 24 hours).
    #[serde(default)]
    pub timeout_ms: Option<i64>,
}

impl EffectIntent {
    /// Checks every field; the error names the first one refused.
    pub fn validate(&self) -> Result<(), LedgerError> {
        check_key(&self.key, "key")?;
        crate::slug::validate_agent(&self.agent).map_err(|e| invalid("agent", e.to_string()))?;
        if self.bundle < 1 {
            return Err(invalid("bundle", "must be a positive bundle number"));
        }
        check_text(&self.request_id, "request_id")?;
        check_text(&self.tool, "tool")?;
        check_text(&self.args_digest, "args_digest")?;
        if let Some(t) = self.timeout_ms
            && !(1..=MAX_TIMEOUT_MS).contains(&t)
        {
            return Err(invalid(
                "timeout_ms",
                format!("must be 1 to {MAX_TIMEOUT_MS} ms (24 hours)"),
            ));
        }
        Ok(())
    }

    /// The timeout in force.
    pub fn effective_timeout_ms(&self) -> i64 {
        self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
    }
}

/// One ledger record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Effect {
    pub key: String,
    pub agent: String,
    pub bundle: i64,
    pub request_id: String,
    pub tool: String,
    pub args_digest: String,
    pub timeout_ms: i64,
    pub status: EffectStatus,
    /// The result's explanation, if one was given.
    pub detail: Option<String>,
    pub created_at_ms: i64,
    /// The audit actor that recorded the intent.
    pub created_by: String,
    /// When a result (or the sweep) settled it.
    pub resolved_at_ms: Option<i64>,
}

impl Effect {
    /// The record of a new, validated intent.
    pub fn open(intent: &EffectIntent, now_ms: i64, actor: &str) -> Effect {
        Effect {
            key: intent.key.clone(),
            agent: intent.agent.clone(),
            bundle: intent.bundle,
            request_id: intent.request_id.clone(),
            tool: intent.tool.clone(),
            args_digest: intent.args_digest.clone(),
            timeout_ms: intent.effective_timeout_ms(),
            status: EffectStatus::Intent,
            detail: None,
            created_at_ms: now_ms,
            created_by: actor.to_owned(),
            resolved_at_ms: None,
        }
    }

    /// When an unanswered intent becomes `unknown`.
    pub fn deadline_ms(&self) -> i64 {
        self.created_at_ms.saturating_add(self.timeout_ms)
    }

    /// Whether `intent` describes the same call as this record (a retry, not a key reuse).
    pub fn same_call(&self, intent: &EffectIntent) -> bool {
        self.key == intent.key
            && self.agent == intent.agent
            && self.bundle == intent.bundle
            && self.request_id == intent.request_id
            && self.tool == intent.tool
            && self.args_digest == intent.args_digest
            && self.timeout_ms == intent.effective_timeout_ms()
    }

    /// Records a result. `Ok(None)`: the same result is already recorded (a retry; the first
    /// detail stays). `intent` is not a result.
    pub fn resolve(
        &self,
        status: EffectStatus,
        detail: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<Effect>, LedgerError> {
        if status == EffectStatus::Intent {
            return Err(invalid(
                "status",
                "a result is committed, failed or unknown",
            ));
        }
        if let Some(d) = detail
            && d.len() > MAX_DETAIL_LEN
        {
            return Err(invalid(
                "detail",
                format!("must be at most {MAX_DETAIL_LEN} bytes"),
            ));
        }
        if self.status == status {
            return Ok(None);
        }
        // `unknown` is the lack of an answer, so a definitive one may still settle it; an
        // `unknown` after a definitive answer would throw that answer away.
        let settles = self.status == EffectStatus::Intent
            || (self.status == EffectStatus::Unknown && status.is_final());
        if !settles {
            return Err(LedgerError::ResultConflict {
                key: self.key.clone(),
                current: self.status,
                requested: status,
            });
        }
        Ok(Some(Effect {
            status,
            detail: detail.map(str::to_owned),
            resolved_at_ms: Some(now_ms),
            ..self.clone()
        }))
    }

    /// The sweep: an intent past its deadline becomes `unknown`; anything else is left alone.
    pub fn expire(&self, now_ms: i64) -> Option<Effect> {
        (self.status == EffectStatus::Intent && now_ms >= self.deadline_ms()).then(|| Effect {
            status: EffectStatus::Unknown,
            detail: Some(format!("no result within {} ms", self.timeout_ms)),
            resolved_at_ms: Some(now_ms),
            ..self.clone()
        })
    }
}

/// How many effects of a list are in each status.
pub fn count_by_status(effects: &[Effect]) -> [(EffectStatus, usize); 4] {
    EffectStatus::ALL.map(|s| (s, effects.iter().filter(|e| e.status == s).count()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> EffectIntent {
        EffectIntent {
            key: "support/2/r1/refund/abc".into(),
            agent: "support".into(),
            bundle: 2,
            request_id: "r1".into(),
            tool: "refund".into(),
            args_digest: "sha256:abc".into(),
            timeout_ms: None,
        }
    }

    #[test]
    fn keys_allow_only_the_documented_alphabet_and_length() {
        assert!(is_valid_key("a"));
        assert!(is_valid_key(&"k".repeat(200)));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key(&"k".repeat(201)));
        for bad in ["a b", "a?b", "é", "a\nb", "a%2F"] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn intents_name_the_refused_field() {
        let mut i = intent();
        i.timeout_ms = Some(MAX_TIMEOUT_MS + 1);
        assert!(matches!(
            i.validate(),
            Err(LedgerError::Invalid {
                field: "timeout_ms",
                ..
            })
        ));
        let mut i = intent();
        i.bundle = 0;
        assert!(matches!(
            i.validate(),
            Err(LedgerError::Invalid {
                field: "bundle",
                ..
            })
        ));
        let mut i = intent();
        i.tool = String::new();
        assert!(matches!(
            i.validate(),
            Err(LedgerError::Invalid { field: "tool", .. })
        ));
        assert_eq!(intent().validate(), Ok(()));
    }

    #[test]
    fn results_settle_once_and_unknown_yields_to_a_real_answer() {
        let e = Effect::open(&intent(), 1000, "token:t");
        assert_eq!(e.deadline_ms(), 1000 + DEFAULT_TIMEOUT_MS);
        let done = e
            .resolve(EffectStatus::Committed, Some("ok"), 2000)
            .unwrap()
            .unwrap();
        assert_eq!(done.status, EffectStatus::Committed);
        assert_eq!(done.resolved_at_ms, Some(2000));
        assert_eq!(
            done.resolve(EffectStatus::Committed, Some("again"), 3000),
            Ok(None)
        );
        let err = done.resolve(EffectStatus::Failed, None, 3000).unwrap_err();
        assert_eq!(err.code(), "result_conflict");
        assert_eq!(
            done.resolve(EffectStatus::Unknown, None, 3000)
                .unwrap_err()
                .code(),
            "result_conflict"
        );
        assert_eq!(
            e.resolve(EffectStatus::Intent, None, 3000)
                .unwrap_err()
                .code(),
            "invalid_field"
        );

        let unknown = e.expire(e.deadline_ms()).unwrap();
        assert_eq!(unknown.status, EffectStatus::Unknown);
        assert!(e.expire(e.deadline_ms() - 1).is_none());
        assert!(unknown.expire(i64::MAX).is_none());
        let late = unknown
            .resolve(EffectStatus::Failed, None, 9)
            .unwrap()
            .unwrap();
        assert_eq!(late.status, EffectStatus::Failed);
    }

    #[test]
    fn a_retry_is_the_same_call_and_a_reused_key_is_not() {
        let e = Effect::open(&intent(), 1, "a");
        assert!(e.same_call(&intent()));
        let mut other = intent();
        other.args_digest = "sha256:def".into();
        assert!(!e.same_call(&other));
        let mut other = intent();
        other.timeout_ms = Some(1);
        assert!(!e.same_call(&other));
    }
}
