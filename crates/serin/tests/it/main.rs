//! Black-box tests of the `serin` binary: a real server on port 0, a real
//! store, driven through the CLI and HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod approvals;
mod bench;
mod bundles;
mod capabilities;
mod clock;
mod conformance_http;
mod dashboard;
mod decisions;
mod drills;
mod effects;
mod evidence;
mod failover;
mod fleet;
mod guardrails;
mod harness;
mod hostile_audit;
mod hostile_contract;
mod hostile_fuzz;
mod hostile_identity;
mod hostile_names;
mod hostile_persist;
mod hostile_transport;
mod http_errors;
mod interop;
mod judgement;
mod pg_restart;
mod python_sdk;
mod readiness;
mod readme;
mod releases;
mod replicas;
mod roles;
mod sdks;
mod status;
mod upgrade;
mod waves;
