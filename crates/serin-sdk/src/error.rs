//! The SDK's one error type.

use std::time::Duration;

use serin_engine::decision::{CompileError, DecideError};

/// Why the SDK could not start or could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// No snapshot has been received or loaded yet.
    #[error("no snapshot is available yet")]
    NoSnapshot,
    /// The engine refused the decision (for example, an unknown agent).
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// A snapshot could not be compiled into a decision table.
    #[error("snapshot does not compile: {0}")]
    Compile(#[from] CompileError),
    /// Neither the disk cache nor the server produced a snapshot in time.
    #[error(
        "no snapshot within {waited:?}: no usable cache file and the server did not answer{}",
        last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    StartTimeout {
        waited: Duration,
        last_error: Option<String>,
    },
    /// The configuration cannot work (bad server URL, bad env name, ...).
    #[error("invalid SDK configuration: {0}")]
    InvalidConfig(String),
}
