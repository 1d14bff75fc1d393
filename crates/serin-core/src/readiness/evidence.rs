//! Attested evidence, as recorded by `serin evidence set`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{MAX_KEY_CHARS, is_valid_key};

/// Longest owner, recorder, evidence or next-action text.
pub const MAX_TEXT_CHARS: usize = 4096;

/// What the owner says about an item (SPEC "Words": evidence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EvidenceStatus {
    #[serde(rename = "pass")]
    Pass,
    #[serde(rename = "fail")]
    Fail,
    #[serde(rename = "partial")]
    Partial,
    /// Does not apply to this agent (e.g. no user-visible change, so no changelog).
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl EvidenceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceStatus::Pass => "pass",
            EvidenceStatus::Fail => "fail",
            EvidenceStatus::Partial => "partial",
            EvidenceStatus::NotApplicable => "n/a",
        }
    }

    /// Parses `pass`, `fail`, `partial` or `n/a` (the CLI's `--status`).
    pub fn parse(s: &str) -> Option<EvidenceStatus> {
        match s {
            "pass" => Some(EvidenceStatus::Pass),
            "fail" => Some(EvidenceStatus::Fail),
            "partial" => Some(EvidenceStatus::Partial),
            "n/a" => Some(EvidenceStatus::NotApplicable),
            _ => None,
        }
    }
}

impl fmt::Display for EvidenceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attestation of one readiness item for one agent in one env.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub key: String,
    pub status: EvidenceStatus,
    /// Who answers for the item; never empty.
    pub owner: String,
    /// Evidence text or a link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_action: Option<String>,
    pub recorded_at_ms: i64,
    /// The authenticated principal that recorded it.
    pub recorded_by: String,
    /// After this instant the evidence counts as missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
}

/// Why evidence is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("evidence {field}: {message}")]
pub struct EvidenceError {
    /// The field at fault: `key`, `owner`, `evidence`, `next_action`, `recorded_by`,
    /// `expires_at_ms`.
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> EvidenceError {
    EvidenceError {
        field,
        message: message.into(),
    }
}

fn check_text(field: &'static str, text: &str, required: bool) -> Result<(), EvidenceError> {
    if required && text.trim().is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(bad(
            field,
            format!("is longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(bad(field, "contains control characters"));
    }
    Ok(())
}

impl Evidence {
    /// Refuses evidence that does not say who answers for what: a snake_case key, a
    /// non-empty owner and recorder, texts of at most 4096 characters without control
    /// characters (newlines and tabs allowed in texts), an expiry after the recording time.
    /// An empty `evidence` or `next_action` should be `None`, and is refused.
    pub fn validate(&self) -> Result<(), EvidenceError> {
        if !is_valid_key(&self.key) {
            return Err(bad(
                "key",
                format!(
                    "{:?} is not an item key (snake_case, at most {MAX_KEY_CHARS} characters)",
                    self.key
                ),
            ));
        }
        check_text("owner", &self.owner, true)?;
        if self.owner.contains('\n') {
            return Err(bad("owner", "must be one line"));
        }
        check_text("recorded_by", &self.recorded_by, true)?;
        if let Some(e) = &self.evidence {
            check_text("evidence", e, true)?;
        }
        if let Some(n) = &self.next_action {
            check_text("next_action", n, true)?;
        }
        if let Some(exp) = self.expires_at_ms
            && exp <= self.recorded_at_ms
        {
            return Err(bad(
                "expires_at_ms",
                "the expiry must come after the recording time",
            ));
        }
        Ok(())
    }

    /// Whether the evidence no longer counts at `now_ms` (expiry instant included).
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|exp| now_ms >= exp)
    }
}

/// Why an expiry text is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an expiry: {reason} (write e.g. 30m, 12h or 7d)")]
pub struct ExpiryError {
    pub input: String,
    pub reason: &'static str,
}

/// Longest expiry: 365 days.
pub const MAX_EXPIRY_MS: u64 = 365 * 24 * 60 * 60 * 1000;

/// Parses the CLI's `--expires`: a positive whole number and one unit, `s` (seconds, for
/// rehearsals in staging), `m` (minutes), `h` (hours) or `d` (days), at most 365 days.
/// Returns milliseconds.
pub fn parse_expiry(text: &str) -> Result<u64, ExpiryError> {
    let err = |reason| ExpiryError {
        input: text.to_owned(),
        reason,
    };
    let t = text.trim();
    let (digits, unit_ms) = if let Some(d) = t.strip_suffix('d') {
        (d, 24 * 60 * 60 * 1000)
    } else if let Some(h) = t.strip_suffix('h') {
        (h, 60 * 60 * 1000)
    } else if let Some(m) = t.strip_suffix('m') {
        (m, 60 * 1000)
    } else if let Some(sec) = t.strip_suffix('s') {
        (sec, 1000)
    } else {
        return Err(err("it needs a unit: s, m, h or d"));
    };
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("the amount must be a whole number"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| err("the amount must be a whole number"))?;
    if n == 0 {
        return Err(err("it must be above zero"));
    }
    let ms = n
        .checked_mul(unit_ms)
        .ok_or_else(|| err("it is too long"))?;
    if ms > MAX_EXPIRY_MS {
        return Err(err("it is longer than 365 days"));
    }
    Ok(ms)
}
