//! The properties each fuzz target checks, as plain functions over the input bytes.
//!
//! A function returns `Err` when a property is broken (a panic anywhere inside is a crash too).
//! The same files are compiled into the crates' normal test suites (`#[path]` modules in
//! `serin-core` and `serin-sdk`), which run every committed corpus input through them, so a
//! regression found by fuzzing stays caught without nightly or a fuzzer.

pub mod checks;
pub mod sdk_checks;
