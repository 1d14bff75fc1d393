//! Serin's domain types and pure logic.
//!
//! **Architecture invariant:** this crate does no I/O — no files, no network, no clock reads
//! that affect results, no environment variables. Callers hand it bytes and get back values,
//! which keeps every rule here testable with plain data and shared by the CLI, the server and
//! the SDKs.
//!
//! - [`slug`]: agent, env and flag-key names.
//! - [`audit`]: the audit log's Merkle tree and signed tree heads.
//! - [`auth`]: roles and what each may do.
//! - [`bundle`]: the bundle format, its validation, canonical digest and diff.
//! - [`catalog`]: known model snapshots and moving aliases.
//! - [`guardrails`]: sequential canary-vs-control verdicts, aggregates, burn rate, simulator.
//! - [`pins`]: how far a pinned model is behind its family's newest snapshot.
//! - [`release`]: release plans and the pure release state machine.
//! - [`readiness`]: readiness policies, evidence and the gate evaluation.

pub mod approvals;
pub mod audit;
pub mod auth;
pub mod bundle;
pub mod catalog;
pub mod guardrails;
pub mod ledger;
pub mod pins;
pub mod pointer;
pub mod readiness;
pub mod release;

// The decision engine, the outcome event and names live in `serin-engine`, the light crate
// every SDK embeds; they keep their paths here.
pub use serin_engine::{decision, outcome, slug};
