//! Serin's agent-side SDK.
//!
//! An agent asks the SDK, per request, which bundle serves it. The SDK decides
//! locally from a snapshot the server pushes over server-sent events, so the
//! hot path never makes a network hop, and keeps serving the last snapshot it
//! has (from memory or from a disk cache) when the server is away:
//! *fail-static*.
//!
//! - [`Router`] holds the snapshot being served behind an
//!   [`arc_swap::ArcSwapOption`]: readers never lock, and a new snapshot is
//!   swapped in atomically. [`Router::from_snapshot`] gives static local
//!   decisions with no runtime at all.
//! - [`Serin`] (feature `client`, on by default) is a [`Router`] kept current
//!   by a background task that follows `GET /v1/envs/{env}/snapshot/stream`,
//!   reconnects forever with jittered backoff, and writes every snapshot it
//!   applies to a disk cache that the next start serves from immediately.
//!   It also reports each version it swaps in to the server
//!   (`POST /v1/sdk/applied`, under its [`Config::instance`] id) from a
//!   separate task, so the server knows what every SDK actually serves.
//! - [`Serin::effect`] runs a side-effecting tool call under the server's side-effect
//!   ledger: it records the intent (idempotency key from agent, bundle, request id, tool
//!   and arguments digest: [`EffectKey`]) before calling, retries the call's transient
//!   errors with jittered backoff under that key, records `committed`, `failed` or
//!   `unknown`, and never calls again for a key the ledger already holds: a retry of a
//!   call that happened returns [`EffectOutcome::AlreadyCommitted`], one whose fate is
//!   open returns [`EffectError::EffectUnknown`] for the caller to reconcile.
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn run(request_id: &str, user: &str, tenant: &str) -> Result<(), serin_sdk::SdkError> {
//! use serin_sdk::{Context, Serin};
//!
//! let serin = Serin::builder("http://127.0.0.1:7070", "serin_...", "prod")
//!     .cache_dir("/var/cache/my-agent")
//!     .start()
//!     .await?;
//!
//! // Per request: no allocation, no lock, no wait for a writer.
//! let snap = serin.current()?;
//! let ctx = Context::new(request_id).user(user).tenant(tenant);
//! let d = snap.decide("support", &ctx)?;
//! if let Some(bundle) = d.bundle_contents() {
//!     // run the agent with bundle.prompt, bundle.model, bundle.tools ...
//! #   let _ = bundle;
//! }
//! for flag in d.flags() {
//!     // flag.key ("support.tone"), flag.value, flag.on, flag.reason
//! #   let _ = flag;
//! }
//! // d.arm, d.snapshot_version, d.reason_code(), d.explain() (formatted only when shown)
//! # Ok(()) }
//! ```
//!
//! # Deciding without allocating
//!
//! [`Serin::current`] (or [`Router::current`]) returns a [`SnapshotGuard`] on the
//! version served right now, and [`SnapshotGuard::decide`] an [`SdkDecisionRef`] that
//! borrows from it and from the [`Context`]: the bundle, the release id and the flag values
//! are references into the snapshot, flags are evaluated as they are read, and the reason
//! text is formatted only when displayed. Nothing is allocated, whatever the size of the
//! tenant lists or the number of flags. Over [`CompiledSnapshot::decide`] itself it adds
//! taking the version (an `arc_swap` guard) and a wider result: about 220 instructions per
//! decision, lost in the noise once flags are read (the figures are in
//! `crates/serin-bench/README.md`).
//!
//! A guard keeps its version alive, and unchanged, while newer ones are swapped in; take
//! one per request (or per batch) and drop it. [`Router::health`] tells staleness.
//!
//! [`Serin::decide`] / [`Router::decide`] with a [`RequestContext`] are the owned form
//! (an [`SdkDecision`] with its own strings and a flag map, about ten allocations): for
//! keeping or sending a decision, not for the request path.

mod delta;
mod error;
mod router;

#[cfg(feature = "client")]
mod client;

use serde::{Deserialize, Serialize};

pub use delta::{MergeError, merge_json, merge_snapshot, referenced_bundles};
pub use error::SdkError;
pub use router::{Health, Router, SdkDecision, SdkDecisionRef, SnapshotGuard};
pub use serin_engine::bundle::Bundle;
pub use serin_engine::decision::{
    Arm, BundleRef, CompileError, CompiledSnapshot, Context, DecideError, Decision, FlagEvaluation,
    FlagReason, LoadError, Reason, Snapshot,
};
pub use serin_engine::outcome::{
    ErrorClass, EvalSample, OutcomeError, OutcomeEvent, Tokens, ToolCalls,
};

#[cfg(feature = "client")]
pub use client::effect::{
    BeginError, Begun, CallError, DetailFn, EffectError, EffectKey, EffectLedger, EffectOptions,
    EffectOutcome, EffectRecord, EffectStatus, Intent, LedgerError, RetryPolicy, UnknownCause,
    args_digest, args_digest_bytes,
};
#[cfg(feature = "client")]
pub use client::{Config, OutcomeStats, Serin, SerinBuilder};

/// What the agent knows about one request; every field but `request_id` is
/// optional and only used by rules that name it.
///
/// This is the owned form (easy to store and to send over the wire); per request, build
/// a borrowed [`Context`] instead (`Context::new(id).user(u)`), or borrow this one with
/// [`RequestContext::as_context`].
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

impl RequestContext {
    pub fn new(request_id: impl Into<String>) -> Self {
        RequestContext {
            request_id: request_id.into(),
            ..RequestContext::default()
        }
    }

    /// Borrows this context as the engine's [`Context`]; allocates nothing.
    pub fn as_context(&self) -> Context<'_> {
        Context {
            request_id: &self.request_id,
            user: self.user.as_deref(),
            tenant: self.tenant.as_deref(),
            workload: self.workload.as_deref(),
            instance: self.instance.as_deref(),
            region: self.region.as_deref(),
            pool: self.pool.as_deref(),
        }
    }
}

/// Anything a decision can be made for: a [`RequestContext`] or an engine
/// [`Context`].
pub trait AsContext {
    fn as_context(&self) -> Context<'_>;
}

impl AsContext for RequestContext {
    fn as_context(&self) -> Context<'_> {
        RequestContext::as_context(self)
    }
}

impl AsContext for Context<'_> {
    fn as_context(&self) -> Context<'_> {
        *self
    }
}

impl<'a> From<&'a RequestContext> for Context<'a> {
    fn from(ctx: &'a RequestContext) -> Context<'a> {
        ctx.as_context()
    }
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

    #[test]
    fn request_context_borrows_as_engine_context() {
        let mut ctx = RequestContext::new("r-1");
        ctx.user = Some("u".into());
        ctx.region = Some("eu".into());
        let c = ctx.as_context();
        assert_eq!(c.request_id, "r-1");
        assert_eq!(c.user, Some("u"));
        assert_eq!(c.tenant, None);
        assert_eq!(c.region, Some("eu"));
        assert_eq!(Context::from(&ctx), c);
    }
}
