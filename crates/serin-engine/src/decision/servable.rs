//! Whether an env state can be served: the check every routing and flag change runs before it
//! commits, so a state the hub or an SDK could not read never reaches the store.

use std::collections::BTreeMap;

use super::engine::{CompileError, CompiledSnapshot};
use super::model::{EnvState, Snapshot};
use crate::bundle::Bundle;

/// Why a state cannot be served, with the step that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeError {
    Encode {
        env: String,
        cause: String,
    },
    /// Encoded, but an SDK's parser would refuse it (nesting beyond its recursion limit).
    Decode {
        env: String,
        cause: String,
    },
    Compile {
        env: String,
        cause: CompileError,
    },
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Encode { env, cause } => {
                write!(
                    f,
                    "the snapshot of env {env} cannot be encoded as JSON: {cause}"
                )
            }
            ServeError::Decode { env, cause } => write!(
                f,
                "the snapshot of env {env} could not be read back by an SDK: {cause}"
            ),
            ServeError::Compile { env, cause } => {
                write!(f, "the snapshot of env {env} does not compile: {cause}")
            }
        }
    }
}

impl std::error::Error for ServeError {}

/// Builds the snapshot of `state` exactly as the hub publishes it, encodes it, parses the
/// encoding back the way SDKs do, and compiles what was parsed. `bundles` must hold every
/// bundle the state references. Returns the compiled snapshot of what an SDK would see.
pub fn servable(
    state: &EnvState,
    env: &str,
    version: u64,
    published_at_ms: i64,
    bundles: BTreeMap<String, Bundle>,
) -> Result<CompiledSnapshot, ServeError> {
    let snapshot = state.snapshot(env, version, published_at_ms, bundles);
    let encoded = serde_json::to_string(&snapshot).map_err(|e| ServeError::Encode {
        env: env.to_owned(),
        cause: e.to_string(),
    })?;
    let read_back: Snapshot = serde_json::from_str(&encoded).map_err(|e| ServeError::Decode {
        env: env.to_owned(),
        cause: e.to_string(),
    })?;
    CompiledSnapshot::compile(read_back).map_err(|cause| ServeError::Compile {
        env: env.to_owned(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Flag, Percent, Stickiness, Targets};
    use serde_json::Value;

    fn nested(depth: usize) -> Value {
        let mut v = Value::Bool(true);
        for _ in 1..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    fn flag(on: Value) -> Flag {
        Flag {
            key: "support.x".into(),
            enabled: true,
            on,
            off: Value::Bool(false),
            stickiness: Stickiness::User,
            allow: Targets::default(),
            deny: Targets::default(),
            rules: Vec::new(),
            rollout: Percent::FULL,
            description: None,
        }
    }

    #[test]
    fn a_value_that_encodes_but_nests_past_the_parser_limit_is_not_servable() {
        // 125 nested arrays parse on their own (serde_json allows 127 containers) but not three
        // levels down in a snapshot: the state that bricked an env. The round trip catches it
        // even before the flag's depth limit would.
        let deep = nested(126);
        assert!(serde_json::from_str::<Value>(&deep.to_string()).is_ok());
        let mut st = EnvState::default();
        st.flags.insert("support.x".into(), flag(deep));
        let err = servable(&st, "prod", 1, 0, BTreeMap::new()).err();
        assert!(
            matches!(err, Some(ServeError::Decode { .. })),
            "a 125-array flag value was judged servable: {err:?}"
        );
    }

    #[test]
    fn a_state_with_values_at_the_limits_is_servable() {
        let mut st = EnvState::default();
        st.flags.insert(
            "support.x".into(),
            flag(nested(crate::decision::MAX_VALUE_DEPTH)),
        );
        let compiled = servable(&st, "prod", 7, 0, BTreeMap::new()).map_err(|e| e.to_string());
        assert_eq!(compiled.map(|c| c.version()), Ok(7));
    }

    #[test]
    fn a_state_referencing_a_bundle_it_does_not_carry_is_not_servable() {
        let mut st = EnvState::default();
        st.agents.insert(
            "support".into(),
            crate::decision::AgentState {
                stack: vec![crate::decision::BundleRef {
                    id: "support@1".into(),
                    number: 1,
                    digest: "sha256:00".into(),
                }],
                ..Default::default()
            },
        );
        assert!(matches!(
            servable(&st, "prod", 1, 0, BTreeMap::new()),
            Err(ServeError::Compile { .. })
        ));
    }
}
