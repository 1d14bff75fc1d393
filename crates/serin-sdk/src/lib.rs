//! Serin's agent-side SDK.
//!
//! An agent asks the SDK, per request, which bundle serves it. The SDK will
//! decide locally from a snapshot the server pushes (see ARCHITECTURE.md,
//! "Decisions"), so the hot path never makes a network hop. This crate holds
//! the request-facing types now; the snapshot stream and the evaluation engine
//! arrive with the decisions work and will keep these names.

use serde::{Deserialize, Serialize};

/// What the agent knows about one request; every field but `request_id` is
/// optional and only used by rules that name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestContext {
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl RequestContext {
    pub fn new(request_id: impl Into<String>) -> Self {
        RequestContext {
            request_id: request_id.into(),
            ..RequestContext::default()
        }
    }
}

/// Which side of a release a request lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    Stable,
    Canary,
    Killed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_context_wire_form_omits_unset_fields() {
        let mut ctx = RequestContext::new("r-1");
        ctx.tenant = Some("acme".into());
        assert_eq!(
            serde_json::to_string(&ctx).unwrap(),
            r#"{"request_id":"r-1","tenant":"acme"}"#
        );
        assert_eq!(serde_json::to_string(&Arm::Canary).unwrap(), "\"canary\"");
    }
}
