//! Black-box tests of the `serin` binary: a real server on port 0, a real
//! store, driven through the CLI and HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod bundles;
mod decisions;
mod drills;
mod guardrails;
mod harness;
mod hostile_fuzz;
mod http_errors;
mod readiness;
mod releases;
mod roles;
mod sdks;
