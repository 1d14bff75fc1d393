//! Approvals: the actions an env's policy reserves for a second person, and the queue of
//! requests they become.
//!
//! Two kinds of requester share one queue. An operator whose action (starting a release that
//! adds or widens a risky capability, promoting to 100%, overriding readiness, unkilling an
//! agent) the env's policy gates gets a pending request instead of the action; an agent that
//! wants a human before a risky tool call files one itself (`tool_call`). An approver who is
//! not the requester approves or denies it with a reason; an undecided request expires, and
//! an expired request is a denial.
//!
//! An operator's approved request is a single-use permit for exactly the action it describes
//! (kind, env, agent, bundle): the requester repeats the action naming the request, and the
//! server consumes the permit before acting (and gives it back only if the action is then
//! refused), so one approval never authorises two actions. Every check is made again when the
//! action runs; the approval only lifts the policy's hold.
//!
//! Pure: callers pass the time in and store what the transitions return.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Role;
use crate::release::duration::DurationSpec;

/// Default life of a pending request: 15 minutes.
pub const DEFAULT_EXPIRY_MS: u64 = 15 * 60 * 1000;
/// Shortest expiry a policy or an agent may ask for.
pub const MIN_EXPIRY_MS: u64 = 1_000;
/// Longest expiry a policy or an agent may ask for: 24 hours.
pub const MAX_EXPIRY_MS: u64 = 24 * 3_600_000;
/// Default cap on one agent's pending tool-call requests in one env.
pub const DEFAULT_MAX_PENDING: u32 = 100;
/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// Longest tool name, request id or arguments digest, in bytes.
pub const MAX_FIELD_LEN: usize = 256;

/// What a request asks permission for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    /// Start a release whose candidate adds or widens a write or irreversible capability.
    ReleaseStart,
    /// Promote a release to 100%.
    PromoteFull,
    /// Start a release although the readiness gate refuses.
    ReadinessOverride,
    /// Lift an agent's kill switch.
    Unkill,
    /// An agent's risky tool call (filed by the agent).
    ToolCall,
}

impl ApprovalKind {
    pub const ALL: [ApprovalKind; 5] = [
        ApprovalKind::ReleaseStart,
        ApprovalKind::PromoteFull,
        ApprovalKind::ReadinessOverride,
        ApprovalKind::Unkill,
        ApprovalKind::ToolCall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::ReleaseStart => "release_start",
            ApprovalKind::PromoteFull => "promote_full",
            ApprovalKind::ReadinessOverride => "readiness_override",
            ApprovalKind::Unkill => "unkill",
            ApprovalKind::ToolCall => "tool_call",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalKind> {
        ApprovalKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The operator actions a policy can reserve (`require:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Gated {
    /// Starting a release whose candidate adds or widens a write or irreversible capability.
    CapabilityChange,
    /// Promoting a release to 100%.
    PromoteFull,
    /// Starting a release over a refusing readiness gate.
    ReadinessOverride,
    /// Unkilling an agent.
    Unkill,
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    /// Nobody decided in time: a denial.
    Expired,
}

impl ApprovalStatus {
    pub const ALL: [ApprovalStatus; 4] = [
        ApprovalStatus::Pending,
        ApprovalStatus::Approved,
        ApprovalStatus::Denied,
        ApprovalStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        ApprovalStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Limits on agent-side requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentRequests {
    /// Life of an agent's request when it names none (default 15m).
    #[serde(default = "default_expiry")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub expiry: DurationSpec,
    /// Pending requests one agent may have in the env at once; more are refused with 429.
    #[serde(default = "default_max_pending")]
    pub max_pending: u32,
}

impl Default for AgentRequests {
    fn default() -> Self {
        AgentRequests {
            expiry: default_expiry(),
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

fn default_expiry() -> DurationSpec {
    DurationSpec::from_ms(DEFAULT_EXPIRY_MS)
}

fn default_max_pending() -> u32 {
    DEFAULT_MAX_PENDING
}

fn default_approvers() -> Vec<Role> {
    vec![Role::Approver, Role::Admin]
}

/// An env's approval policy (`serin approvals policy apply --env E -f policy.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// The operator actions that wait for an approver.
    #[serde(default)]
    pub require: Vec<Gated>,
    /// The roles whose tokens may decide (default approver and admin). Only roles that hold
    /// the `approve` action can be named.
    #[serde(default = "default_approvers")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub approvers: Vec<Role>,
    /// Life of an operator's pending request, and of an approval before it is used (default
    /// 15m).
    #[serde(default = "default_expiry")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub expiry: DurationSpec,
    /// Agent-side (tool call) requests.
    #[serde(default)]
    pub agent_requests: AgentRequests,
    /// Webhooks told of every new request and every decision or expiry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
}

/// One webhook target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub webhook: String,
}

impl Default for ApprovalPolicy {
    /// What an env without a policy has: nothing gated, agent-side requests accepted with
    /// the defaults.
    fn default() -> Self {
        ApprovalPolicy {
            require: Vec::new(),
            approvers: default_approvers(),
            expiry: default_expiry(),
            agent_requests: AgentRequests::default(),
            notify: Vec::new(),
        }
    }
}

/// A policy that does not hold together, with the JSON pointer of the culprit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct PolicyError {
    pub pointer: String,
    pub message: String,
}

fn perr(pointer: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

fn check_expiry(pointer: &str, d: DurationSpec) -> Result<(), PolicyError> {
    let ms = d.as_ms();
    if !(MIN_EXPIRY_MS..=MAX_EXPIRY_MS).contains(&ms) {
        return Err(perr(pointer, "expiry must be between 1s and 24h"));
    }
    Ok(())
}

impl ApprovalPolicy {
    /// Parses and checks a policy given as JSON (the CLI converts YAML).
    pub fn from_value(v: Value) -> Result<ApprovalPolicy, PolicyError> {
        let p: ApprovalPolicy = serde_json::from_value(v).map_err(|e| perr("", e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Parses and checks a policy file (YAML or JSON).
    pub fn parse_yaml(text: &str) -> Result<ApprovalPolicy, PolicyError> {
        let v: Value = serde_saphyr::from_str(text).map_err(|e| perr("", e.to_string()))?;
        if v.is_null() {
            return Ok(ApprovalPolicy::default());
        }
        ApprovalPolicy::from_value(v)
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        for (i, g) in self.require.iter().enumerate() {
            if self.require.iter().take(i).any(|x| x == g) {
                return Err(perr(format!("/require/{i}"), "listed twice"));
            }
        }
        if self.approvers.is_empty() {
            return Err(perr(
                "/approvers",
                "at least one role must be able to approve",
            ));
        }
        for (i, r) in self.approvers.iter().enumerate() {
            if !r.allows(crate::auth::Action::Approve) {
                return Err(perr(
                    format!("/approvers/{i}"),
                    format!("role {} cannot approve; name approver or admin", r.as_str()),
                ));
            }
        }
        check_expiry("/expiry", self.expiry)?;
        check_expiry("/agent_requests/expiry", self.agent_requests.expiry)?;
        if self.agent_requests.max_pending == 0 || self.agent_requests.max_pending > 100_000 {
            return Err(perr(
                "/agent_requests/max_pending",
                "max_pending must be between 1 and 100000",
            ));
        }
        for (i, n) in self.notify.iter().enumerate() {
            let u = n.webhook.as_str();
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() > 2048 {
                return Err(perr(
                    format!("/notify/{i}/webhook"),
                    "a webhook is an http:// or https:// URL of at most 2048 bytes",
                ));
            }
        }
        Ok(())
    }

    pub fn requires(&self, g: Gated) -> bool {
        self.require.contains(&g)
    }

    /// Whether a token of `role` may decide requests under this policy.
    pub fn may_decide(&self, role: Role) -> bool {
        self.approvers.contains(&role) && role.allows(crate::auth::Action::Approve)
    }
}

/// One request in the queue. Stored whole as JSON; the store indexes a few of its fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalRequest {
    /// `apr-` followed by 26 base-32 characters.
    pub id: String,
    pub kind: ApprovalKind,
    pub env: String,
    pub agent: String,
    /// N of `agent@N`: the candidate of a release, or the bundle an agent was running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<u64>,
    /// The actor that asked (`token:<id>`).
    pub requested_by: String,
    /// Why, in the requester's words.
    pub reason: String,
    /// What the approver should see: the capability changes and readiness of a release, or
    /// the tool, arguments digest and request id of an agent's call.
    #[serde(default)]
    pub details: Value,
    pub status: ApprovalStatus,
    pub created_at_ms: i64,
    /// A pending request past this is expired; an approved one can no longer be used.
    pub expires_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
    /// When an approved operator request was spent on its action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at_ms: Option<i64>,
    /// The snapshot version an agent decided under (agent-side requests), which places the
    /// request in a release's arm for the approval guardrails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_version: Option<u64>,
    /// Whether an agent-side request stayed pending past its release's approval `wait`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overdue: bool,
    /// Which of its guardrail signals the leader has already counted (each exactly once).
    #[serde(default, skip_serializing_if = "Counted::is_empty")]
    pub counted: Counted,
}

/// The approval-guardrail signals a request has been counted for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counted {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requested: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overdue: bool,
}

impl Counted {
    pub fn is_empty(&self) -> bool {
        *self == Counted::default()
    }
}

/// A signal an agent-side request owes the approval guardrails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owed {
    Requested,
    Denied,
    Overdue,
}

impl ApprovalRequest {
    /// The signals this request owes and has not been counted for, and the request as it is
    /// once they are. Operator requests owe none.
    pub fn owed(&self) -> (Vec<Owed>, ApprovalRequest) {
        let mut next = self.clone();
        let mut owed = Vec::new();
        if self.kind != ApprovalKind::ToolCall {
            return (owed, next);
        }
        if !self.counted.requested {
            owed.push(Owed::Requested);
            next.counted.requested = true;
        }
        if matches!(
            self.status,
            ApprovalStatus::Denied | ApprovalStatus::Expired
        ) && !self.counted.denied
        {
            owed.push(Owed::Denied);
            next.counted.denied = true;
        }
        if self.overdue && !self.counted.overdue {
            owed.push(Owed::Overdue);
            next.counted.overdue = true;
        }
        (owed, next)
    }
}

/// Why a decision, use or expiry is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("the requester cannot decide their own request; another approver must")]
    OwnRequest,
    #[error("the request expired at {at_ms} (Unix ms) and counts as denied; ask again")]
    Expired { at_ms: i64 },
    #[error("the request is already {0}")]
    AlreadyDecided(&'static str),
    #[error("a reason of 1 to {MAX_REASON_CHARS} characters is required")]
    Reason,
    #[error("the request is {0}, not approved")]
    NotApproved(&'static str),
    #[error("the approval was already used at {at_ms} (Unix ms); one approval permits one action")]
    Used { at_ms: i64 },
    #[error("the approval is for {expected}, not for {actual}")]
    Mismatch { expected: String, actual: String },
    #[error("only the requester can use this approval")]
    NotRequester,
}

/// Checks a reason given by a person.
pub fn check_reason(reason: &str) -> Result<(), ApprovalError> {
    let n = reason.trim().chars().count();
    if n == 0 || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApprovalError::Reason);
    }
    Ok(())
}

/// What an operator's approval permits: one action on one agent in one env.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permit<'a> {
    pub kind: ApprovalKind,
    pub env: &'a str,
    pub agent: &'a str,
    pub bundle: Option<u64>,
}

impl Permit<'_> {
    fn describe(&self) -> String {
        match self.bundle {
            Some(b) => format!(
                "{} of {}@{b} in {}",
                self.kind.as_str(),
                self.agent,
                self.env
            ),
            None => format!("{} of {} in {}", self.kind.as_str(), self.agent, self.env),
        }
    }
}

impl ApprovalRequest {
    /// The status as of `now_ms`: a pending request past its expiry reads as expired even
    /// before the sweep writes it.
    pub fn status_at(&self, now_ms: i64) -> ApprovalStatus {
        if self.status == ApprovalStatus::Pending && now_ms >= self.expires_at_ms {
            ApprovalStatus::Expired
        } else {
            self.status
        }
    }

    /// Approves or denies: by someone other than the requester, with a reason, while the
    /// request is pending and unexpired.
    pub fn decide(
        &self,
        approve: bool,
        by: &str,
        reason: &str,
        now_ms: i64,
        use_window_ms: u64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        check_reason(reason)?;
        match self.status_at(now_ms) {
            ApprovalStatus::Pending => {}
            ApprovalStatus::Expired => {
                return Err(ApprovalError::Expired {
                    at_ms: self.expires_at_ms,
                });
            }
            s => return Err(ApprovalError::AlreadyDecided(s.as_str())),
        }
        if by == self.requested_by {
            return Err(ApprovalError::OwnRequest);
        }
        let mut next = self.clone();
        next.status = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        next.decided_by = Some(by.to_owned());
        next.decided_at_ms = Some(now_ms);
        next.decision_reason = Some(reason.trim().to_owned());
        if approve && self.kind != ApprovalKind::ToolCall {
            // The permit lives as long again as the request could wait: long enough to act
            // on, short enough that a stale approval does not linger.
            let window = i64::try_from(use_window_ms).unwrap_or(i64::MAX);
            next.expires_at_ms = now_ms.saturating_add(window);
        }
        Ok(next)
    }

    /// The sweep: a pending request at or past its expiry becomes expired (a denial).
    pub fn expire(&self, now_ms: i64) -> Option<ApprovalRequest> {
        if self.status != ApprovalStatus::Pending || now_ms < self.expires_at_ms {
            return None;
        }
        let mut next = self.clone();
        next.status = ApprovalStatus::Expired;
        next.decided_by = Some("system".to_owned());
        next.decided_at_ms = Some(now_ms);
        next.decision_reason = Some("nobody decided before the request expired".to_owned());
        Some(next)
    }

    /// Spends an approved operator request on the action it permits.
    pub fn spend(
        &self,
        permit: &Permit<'_>,
        by: &str,
        now_ms: i64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let mine = Permit {
            kind: self.kind,
            env: &self.env,
            agent: &self.agent,
            bundle: self.bundle,
        };
        if mine != *permit {
            return Err(ApprovalError::Mismatch {
                expected: mine.describe(),
                actual: permit.describe(),
            });
        }
        match self.status_at(now_ms) {
            ApprovalStatus::Approved => {}
            ApprovalStatus::Expired => {
                return Err(ApprovalError::Expired {
                    at_ms: self.expires_at_ms,
                });
            }
            s => return Err(ApprovalError::NotApproved(s.as_str())),
        }
        if let Some(at_ms) = self.used_at_ms {
            return Err(ApprovalError::Used { at_ms });
        }
        if now_ms >= self.expires_at_ms {
            return Err(ApprovalError::Expired {
                at_ms: self.expires_at_ms,
            });
        }
        if by != self.requested_by {
            return Err(ApprovalError::NotRequester);
        }
        let mut next = self.clone();
        next.used_at_ms = Some(now_ms);
        Ok(next)
    }

    /// Gives a spent permit back (its action was refused after the permit was spent).
    pub fn unspend(&self) -> ApprovalRequest {
        let mut next = self.clone();
        next.used_at_ms = None;
        next
    }
}

/// A new request id from 128 random bits (`apr-` and 26 Crockford base-32 characters).
pub fn new_id(random: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut s = String::with_capacity(30);
    s.push_str("apr-");
    for i in (0..26).rev() {
        // 26 × 5 = 130 bits: the top two are zero.
        let idx = ((random >> (i * 5)) & 31) as usize;
        if let Some(c) = ALPHABET.get(idx) {
            s.push(char::from(*c));
        }
    }
    s
}

/// Whether `s` has the shape of a request id.
pub fn is_id(s: &str) -> bool {
    s.len() == 30
        && s.starts_with("apr-")
        && s.bytes()
            .skip(4)
            .all(|b| b.is_ascii_digit() || (b.is_ascii_lowercase() && !b"ilou".contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn req(kind: ApprovalKind) -> ApprovalRequest {
        ApprovalRequest {
            id: new_id(7),
            kind,
            env: "prod".into(),
            agent: "support".into(),
            bundle: Some(2),
            requested_by: "token:dep".into(),
            reason: "adds refunds".into(),
            details: json!({"capabilities": []}),
            status: ApprovalStatus::Pending,
            created_at_ms: 1_000,
            expires_at_ms: 1_000 + DEFAULT_EXPIRY_MS as i64,
            decided_by: None,
            decided_at_ms: None,
            decision_reason: None,
            used_at_ms: None,
            snapshot_version: None,
            overdue: false,
            counted: Counted::default(),
        }
    }

    fn permit(r: &ApprovalRequest) -> Permit<'_> {
        Permit {
            kind: r.kind,
            env: &r.env,
            agent: &r.agent,
            bundle: r.bundle,
        }
    }

    #[test]
    fn the_requester_cannot_decide_and_a_reason_is_required() {
        let r = req(ApprovalKind::ReleaseStart);
        assert_eq!(
            r.decide(true, "token:dep", "ok", 2_000, DEFAULT_EXPIRY_MS),
            Err(ApprovalError::OwnRequest)
        );
        assert_eq!(
            r.decide(true, "token:apr", "  ", 2_000, DEFAULT_EXPIRY_MS),
            Err(ApprovalError::Reason)
        );
        let denied = r
            .decide(
                false,
                "token:apr",
                "not this week",
                2_000,
                DEFAULT_EXPIRY_MS,
            )
            .unwrap();
        assert_eq!(denied.status, ApprovalStatus::Denied);
        assert_eq!(
            denied.decide(true, "token:other", "changed my mind", 3_000, 1),
            Err(ApprovalError::AlreadyDecided("denied"))
        );
        assert_eq!(
            denied.spend(&permit(&denied), "token:dep", 3_000),
            Err(ApprovalError::NotApproved("denied"))
        );
    }

    #[test]
    fn an_expired_request_is_denied_and_cannot_be_approved() {
        let r = req(ApprovalKind::Unkill);
        let late = r.expires_at_ms;
        assert_eq!(r.status_at(late - 1), ApprovalStatus::Pending);
        assert_eq!(r.status_at(late), ApprovalStatus::Expired);
        assert!(matches!(
            r.decide(true, "token:apr", "ok", late, DEFAULT_EXPIRY_MS),
            Err(ApprovalError::Expired { .. })
        ));
        assert_eq!(r.expire(late - 1), None);
        let e = r.expire(late).unwrap();
        assert_eq!(e.status, ApprovalStatus::Expired);
        assert_eq!(e.expire(late + 1), None, "expiry happens once");
    }

    #[test]
    fn an_approval_is_spent_once_on_exactly_its_action_by_its_requester() {
        let r = req(ApprovalKind::ReleaseStart);
        let ok = r
            .decide(
                true,
                "token:apr",
                "reviewed the refund limits",
                2_000,
                60_000,
            )
            .unwrap();
        assert_eq!(ok.expires_at_ms, 62_000, "the permit's own window");
        let other = Permit {
            bundle: Some(3),
            ..permit(&ok)
        };
        assert!(matches!(
            ok.spend(&other, "token:dep", 3_000),
            Err(ApprovalError::Mismatch { .. })
        ));
        assert_eq!(
            ok.spend(&permit(&ok), "token:someone", 3_000),
            Err(ApprovalError::NotRequester)
        );
        let spent = ok.spend(&permit(&ok), "token:dep", 3_000).unwrap();
        assert_eq!(
            spent.spend(&permit(&ok), "token:dep", 4_000),
            Err(ApprovalError::Used { at_ms: 3_000 })
        );
        assert!(
            spent
                .unspend()
                .spend(&permit(&ok), "token:dep", 4_000)
                .is_ok()
        );
        assert!(matches!(
            ok.spend(&permit(&ok), "token:dep", 62_000),
            Err(ApprovalError::Expired { .. })
        ));
    }

    #[test]
    fn policies_are_checked_with_the_field() {
        let p = ApprovalPolicy::from_value(json!({})).unwrap();
        assert_eq!(p, ApprovalPolicy::default());
        let p = ApprovalPolicy::from_value(json!({
            "require": ["capability_change", "promote_full", "readiness_override", "unkill"],
            "expiry": "30m", "agent_requests": {"expiry": "2m", "max_pending": 5},
            "notify": [{"webhook": "http://127.0.0.1:9/hooks"}]
        }))
        .unwrap();
        assert!(p.requires(Gated::Unkill));
        assert!(p.may_decide(Role::Approver) && !p.may_decide(Role::Deployer));
        let bad = |v: Value| ApprovalPolicy::from_value(v).unwrap_err().pointer;
        assert_eq!(bad(json!({"require": ["unkill", "unkill"]})), "/require/1");
        assert_eq!(bad(json!({"approvers": ["deployer"]})), "/approvers/0");
        assert_eq!(bad(json!({"approvers": []})), "/approvers");
        assert_eq!(bad(json!({"expiry": "0s"})), "/expiry");
        assert_eq!(bad(json!({"expiry": "2d"})), "/expiry");
        assert_eq!(
            bad(json!({"agent_requests": {"max_pending": 0}})),
            "/agent_requests/max_pending"
        );
        assert_eq!(
            bad(json!({"notify": [{"webhook": "ftp://x"}]})),
            "/notify/0/webhook"
        );
        assert!(ApprovalPolicy::from_value(json!({"requires": []})).is_err());
        assert!(ApprovalPolicy::from_value(json!({"require": ["deploy"]})).is_err());
    }

    #[test]
    fn an_agent_request_owes_each_signal_once() {
        let mut r = req(ApprovalKind::ToolCall);
        let (owed, next) = r.owed();
        assert_eq!(owed, vec![Owed::Requested]);
        assert_eq!(next.owed().0, vec![]);
        r = next.expire(r.expires_at_ms).unwrap();
        r.overdue = true;
        let (owed, next) = r.owed();
        assert_eq!(owed, vec![Owed::Denied, Owed::Overdue]);
        assert!(next.owed().0.is_empty());
        assert!(
            req(ApprovalKind::Unkill).owed().0.is_empty(),
            "operator requests owe none"
        );
    }

    #[test]
    fn ids_have_their_shape() {
        for r in [0, 1, u128::MAX, 0xdead_beef] {
            let id = new_id(r);
            assert!(is_id(&id), "{id}");
        }
        assert!(!is_id("apr-short"));
        assert!(!is_id("xyz-0000000000000000000000000a"));
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), ".{0,40}", "\\PC{0,8}"]
    }

    fn arb_request() -> impl Strategy<Value = ApprovalRequest> {
        (
            (
                prop::sample::select(ApprovalKind::ALL.to_vec()),
                prop::sample::select(ApprovalStatus::ALL.to_vec()),
                proptest::option::of(any::<u64>()),
                arb_text(),
                arb_text(),
                any::<i64>(),
                any::<i64>(),
            ),
            (
                proptest::option::of(arb_text()),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<u64>()),
                any::<bool>(),
                any::<u128>(),
            ),
        )
            .prop_map(
                |(
                    (kind, status, bundle, reason, requested_by, created, expires),
                    (decision_reason, decided_at, used_at, snapshot_version, overdue, id),
                )| ApprovalRequest {
                    id: new_id(id),
                    kind,
                    env: "prod".into(),
                    agent: "support".into(),
                    bundle,
                    requested_by,
                    reason,
                    details: json!({"tool": "refund", "n": 1.5, "nested": {"a": [1, null]}}),
                    status,
                    created_at_ms: created,
                    expires_at_ms: expires,
                    decided_by: decision_reason.as_ref().map(|_| "token:x".to_owned()),
                    decided_at_ms: decided_at,
                    decision_reason,
                    used_at_ms: used_at,
                    snapshot_version,
                    overdue,
                    counted: Counted {
                        requested: overdue,
                        denied: !overdue,
                        overdue,
                    },
                },
            )
    }

    proptest! {
        #[test]
        fn requests_round_trip_through_their_stored_json(r in arb_request()) {
            let text = serde_json::to_string(&r).unwrap();
            let back: ApprovalRequest = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, r);
        }

        #[test]
        fn no_transition_panics_and_decided_requests_stay_decided(
            r in arb_request(), now in any::<i64>(), approve in any::<bool>()
        ) {
            let _ = r.status_at(now);
            if let Ok(next) = r.decide(approve, "token:other", "because", now, DEFAULT_EXPIRY_MS) {
                prop_assert_eq!(r.status_at(now), ApprovalStatus::Pending);
                prop_assert_ne!(next.status, ApprovalStatus::Pending);
            }
            if let Some(e) = r.expire(now) {
                prop_assert_eq!(e.status, ApprovalStatus::Expired);
            }
            let _ = r.spend(&Permit { kind: r.kind, env: "prod", agent: "support", bundle: r.bundle }, &r.requested_by, now);
        }

        #[test]
        fn policies_round_trip(
            require in prop::sample::subsequence(vec![Gated::CapabilityChange, Gated::PromoteFull, Gated::ReadinessOverride, Gated::Unkill], 0..=4),
            expiry in MIN_EXPIRY_MS..=MAX_EXPIRY_MS, max_pending in 1u32..=100_000,
        ) {
            let p = ApprovalPolicy {
                require,
                approvers: vec![Role::Admin],
                expiry: DurationSpec::from_ms(expiry),
                agent_requests: AgentRequests { expiry: DurationSpec::from_ms(expiry), max_pending },
                notify: vec![Notify { webhook: "https://hooks.example/a".into() }],
            };
            let v = serde_json::to_value(&p).unwrap();
            prop_assert_eq!(ApprovalPolicy::from_value(v).unwrap(), p);
        }
    }
}
