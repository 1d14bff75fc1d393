//! The three engines behind one shape, for the bench, the callgrind example and the equivalence
//! test (each includes this file with `#[path]`, so the peers stay dev-dependencies).
//!
//! Every engine offers `context(&Request)` (build its own request context, owned where the
//! engine needs ownership) and `decide(&ctx) -> Route` (kill switch first, then the release),
//! which is what an application would write against each SDK.

#![allow(dead_code, clippy::expect_used)]

use std::collections::HashMap;

use serin_bench::{Request, Route, RuleSet};

/// Serin: one `decide()` call per request.
pub mod serin {
    use super::*;
    use serin_core::decision::{Arm, CompiledSnapshot, Context};

    pub struct Engine {
        snapshot: CompiledSnapshot,
        agent: String,
    }

    impl Engine {
        pub fn new(rules: &RuleSet) -> Engine {
            let snapshot = serin_bench::serin_snapshot(rules);
            Engine {
                snapshot: CompiledSnapshot::compile(snapshot).expect("reference snapshot compiles"),
                agent: rules.agent.clone(),
            }
        }

        /// Borrowed: building it is a handful of pointer copies.
        pub fn context(req: &Request) -> Context<'_> {
            Context {
                request_id: &req.request_id,
                user: Some(&req.user),
                tenant: Some(&req.tenant),
                ..Context::default()
            }
        }

        pub fn decide(&self, ctx: &Context<'_>) -> Route {
            match self.snapshot.decide(&self.agent, ctx) {
                Ok(d) => match d.arm {
                    Arm::Stable => Route::Stable,
                    Arm::Canary => Route::Canary,
                    Arm::Killed => Route::Killed,
                },
                Err(_) => Route::Killed,
            }
        }
    }
}

/// `unleash-yggdrasil`: `is_enabled(kill)`, then `is_enabled(release)`; the tenant travels as
/// the custom context property `tenantId`.
pub mod yggdrasil {
    use super::*;
    use unleash_yggdrasil::{ClientFeatures, Context, EngineState};

    pub struct Engine {
        state: EngineState,
        kill: String,
        release: String,
    }

    impl Engine {
        pub fn new(rules: &RuleSet) -> Engine {
            let features: ClientFeatures =
                serde_json::from_value(serin_bench::unleash_features_json(rules))
                    .expect("ClientFeatures JSON");
            let state = EngineState::default();
            let warnings = state.apply_client_features(features);
            assert!(warnings.is_none(), "yggdrasil warnings: {warnings:?}");
            Engine {
                state,
                kill: rules.kill_flag(),
                release: rules.release_flag(),
            }
        }

        /// Owned strings and a properties map: this is where the per-request cost lies.
        pub fn context(req: &Request) -> Context {
            Context {
                user_id: Some(req.user.clone()),
                properties: Some(HashMap::from([("tenantId".to_owned(), req.tenant.clone())])),
                ..Context::default()
            }
        }

        pub fn decide(&self, ctx: &Context) -> Route {
            if self.state.is_enabled(&self.kill, ctx, &None) {
                Route::Killed
            } else if self.state.is_enabled(&self.release, ctx, &None) {
                Route::Canary
            } else {
                Route::Stable
            }
        }
    }
}

/// `launchdarkly-server-sdk-evaluation`: `evaluate(kill)`, then `evaluate(release)`, both flags
/// looked up by key per decision by reference (an SDK's store would clone them).
pub mod launchdarkly {
    use super::*;
    use launchdarkly_server_sdk_evaluation::{
        Context, ContextBuilder, Flag, FlagValue, Segment, Store, evaluate,
    };

    pub struct Flags(HashMap<String, Flag>);

    impl Store for Flags {
        fn flag(&self, flag_key: &str) -> Option<Flag> {
            self.0.get(flag_key).cloned()
        }

        fn segment(&self, _segment_key: &str) -> Option<Segment> {
            None
        }
    }

    pub struct Engine {
        store: Flags,
        kill: String,
        release: String,
    }

    impl Engine {
        pub fn new(rules: &RuleSet) -> Engine {
            let flags = serin_bench::launchdarkly_flags_json(rules)
                .into_iter()
                .map(|(k, v)| (k, serde_json::from_value::<Flag>(v).expect("flag JSON")))
                .collect();
            Engine {
                store: Flags(flags),
                kill: rules.kill_flag(),
                release: rules.release_flag(),
            }
        }

        /// A `user` context keyed by the user, with a `tenant` attribute.
        pub fn context(req: &Request) -> Context {
            ContextBuilder::new(req.user.as_str())
                .set_string("tenant", req.tenant.as_str())
                .build()
                .expect("valid context")
        }

        pub fn decide(&self, ctx: &Context) -> Route {
            let (Some(kill), Some(release)) = (
                self.store.0.get(&self.kill),
                self.store.0.get(&self.release),
            ) else {
                return Route::Killed;
            };
            if let Some(FlagValue::Bool(true)) = evaluate(&self.store, kill, ctx, None).value {
                return Route::Killed;
            }
            match evaluate(&self.store, release, ctx, None).value {
                Some(FlagValue::Str(s)) if s == "canary" => Route::Canary,
                Some(_) => Route::Stable,
                None => Route::Killed,
            }
        }
    }
}
