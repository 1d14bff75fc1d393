//! Serin's decision engine: everything an SDK needs to decide locally and report outcomes,
//! and nothing else (no I/O, no async runtime, no schema validation, no YAML).
//!
//! - [`decision`]: the snapshot model, bucketing v1, [`decision::CompiledSnapshot::decide`],
//!   flags, reasons and the env commands that produce snapshots.
//! - [`bundle`]: the bundle a decision serves (prompt, examples, tools, pinned model) and its
//!   canonical JSON; with the `digest` feature, its content digest.
//! - [`outcome`]: the outcome event an SDK reports per request.
//! - [`conformance`]: the conformance vectors' case format and how a decision reads in it.
//! - [`slug`]: the names (env, agent, flag key, instance) and their rules.
//!
//! `serin-core` re-exports these modules under the same paths; the server, the CLI and the
//! SDKs of every language share this one implementation, so decisions cannot disagree.

pub mod bundle;
pub mod conformance;
pub mod decision;
pub mod outcome;
pub mod slug;
