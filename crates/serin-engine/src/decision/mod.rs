//! Routing decisions: which bundle serves a request, and the flag values it
//! sees. One implementation, shared by the SDK (local, per request) and the
//! server (`POST /v1/decide`, `serin explain`).
//!
//! - [`model`](self): the wire types (control state, snapshot, flags, request context).
//! - [`bucket`]: Bucketing v1, the hash every SDK reproduces.
//! - [`EnvState::apply`]: the commands that change an env's control state.
//! - [`validate_flag`]: what makes a flag definition acceptable.
//! - [`CompiledSnapshot`]: the hot path, `decide` and flag evaluation without allocating.
//! - [`CompiledSnapshot::from_json`]: snapshot JSON straight into the compiled form (the SDK).

mod bucket;
mod commands;
mod engine;
mod flags;
mod load;
mod model;
mod servable;
mod strset;

#[doc(hidden)]
#[cfg(feature = "digest")]
pub mod bench_support;

pub use bucket::{bucket, in_share};
pub use commands::{Command, CommandError, MAX_KILLED_TENANTS, MAX_STACK};
pub use engine::{
    CompileError, CompiledSnapshot, DecideError, Decision, MAX_WAVES, Reason, Unit, WaveIndex,
};
pub use flags::{
    FlagError, FlagEvaluation, FlagReason, MAX_DESCRIPTION_CHARS, MAX_FLAGS, MAX_LIST_VALUE_BYTES,
    MAX_LIST_VALUES, MAX_RULES, MAX_VALUE_BYTES, MAX_VALUE_DEPTH, validate_flag, value_depth,
};
pub use load::LoadError;
pub use model::*;
pub use servable::{ServeError, servable};
