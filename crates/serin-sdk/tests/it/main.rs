#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The SDK's integration tests: one binary (see ENGINEERING.md).
//!
//! The client tests talk real HTTP to a small local server (`fake`) that
//! serves the snapshot endpoints' wire contract; end-to-end tests against the
//! real serin-server live with the server.

mod data;
mod fuzz_corpus;
mod router;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod fake;
