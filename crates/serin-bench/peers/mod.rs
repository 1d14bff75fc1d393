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
            Engine::with_flags(rules, 0)
        }

        /// The rule set plus `flags` flags of the agent (`bench_support::reference_flags`).
        pub fn with_flags(rules: &RuleSet, flags: usize) -> Engine {
            let snapshot = serin_bench::serin_snapshot_with_flags(rules, flags);
            Engine {
                snapshot: CompiledSnapshot::compile(snapshot).expect("reference snapshot compiles"),
                agent: rules.agent.clone(),
            }
        }

        /// `decide`, then every flag of the agent, as the engine bench does.
        pub fn decide_with_flags(&self, ctx: &Context<'_>) -> Route {
            let route = self.decide(ctx);
            let on = self
                .snapshot
                .agent_flags(&self.agent, ctx)
                .filter(|f| f.on)
                .count();
            std::hint::black_box(on);
            route
        }

        /// Snapshot JSON to a ready engine, as the SDK loads it.
        pub fn load(json: &[u8]) -> CompiledSnapshot {
            CompiledSnapshot::from_json(json).expect("fleet snapshot loads")
        }

        /// The stream's first event, applied with nothing to share.
        pub fn first_event(json: &[u8]) -> CompiledSnapshot {
            CompiledSnapshot::from_json_update(json, None).expect("first event applies")
        }

        /// A stream event applied on top of `current`, as the SDK applies every push.
        pub fn apply_push(json: &[u8], current: &CompiledSnapshot) -> CompiledSnapshot {
            CompiledSnapshot::from_json_update(json, Some(current)).expect("push applies")
        }

        /// The path the SDK used before `from_json`: JSON into `Snapshot`, then `compile`.
        pub fn load_parse_then_compile(json: &[u8]) -> CompiledSnapshot {
            let snapshot = serde_json::from_slice(json).expect("fleet snapshot parses");
            CompiledSnapshot::compile(snapshot).expect("fleet snapshot compiles")
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

/// Serin's SDK as an agent calls it: the documented per-request path (`Router::current`,
/// a borrowed `Context` built from the request's strings, `SnapshotGuard::decide`), and the
/// owned path (`RequestContext` and `Router::decide`) it replaces in the README.
pub mod sdk {
    use super::*;
    use ::serin_sdk::{Arm, Context, RequestContext, Router};

    pub struct Engine {
        router: Router,
        agent: String,
    }

    fn route(arm: Arm) -> Route {
        match arm {
            Arm::Stable => Route::Stable,
            Arm::Canary => Route::Canary,
            Arm::Killed => Route::Killed,
        }
    }

    impl Engine {
        pub fn new(rules: &RuleSet, flags: usize) -> Engine {
            let snapshot = serin_bench::serin_snapshot_with_flags(rules, flags);
            Engine {
                router: Router::from_snapshot(snapshot).expect("reference snapshot compiles"),
                agent: rules.agent.clone(),
            }
        }

        /// The README's call; the flags of the agent are walked when `flags` is set.
        pub fn decide(&self, req: &Request, flags: bool) -> Route {
            let Ok(snap) = self.router.current() else {
                return Route::Killed;
            };
            let ctx = Context::new(&req.request_id)
                .user(&req.user)
                .tenant(&req.tenant);
            let Ok(d) = snap.decide(&self.agent, &ctx) else {
                return Route::Killed;
            };
            if flags {
                std::hint::black_box(d.flags().filter(|f| f.on).count());
            }
            route(d.arm)
        }

        /// The documented call on a guard the caller already holds (taken once per batch):
        /// what a decision costs once the version is pinned.
        pub fn decide_on(
            &self,
            snap: &::serin_sdk::SnapshotGuard,
            req: &Request,
            flags: bool,
        ) -> Route {
            let ctx = Context::new(&req.request_id)
                .user(&req.user)
                .tenant(&req.tenant);
            let Ok(d) = snap.decide(&self.agent, &ctx) else {
                return Route::Killed;
            };
            if flags {
                std::hint::black_box(d.flags().filter(|f| f.on).count());
            }
            route(d.arm)
        }

        pub fn router(&self) -> &Router {
            &self.router
        }

        /// The owned call: an owned context per request, an owned decision with a flag map.
        pub fn decide_owned(&self, req: &Request) -> Route {
            let ctx = RequestContext {
                user: Some(req.user.clone()),
                tenant: Some(req.tenant.clone()),
                ..RequestContext::new(req.request_id.clone())
            };
            match self.router.decide(&self.agent, &ctx) {
                Ok(d) => {
                    std::hint::black_box(d.flags.len());
                    route(d.arm)
                }
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
            Engine::from_features(rules, serin_bench::unleash_features_json(rules))
        }

        fn from_features(rules: &RuleSet, features: serde_json::Value) -> Engine {
            let features: ClientFeatures =
                serde_json::from_value(features).expect("ClientFeatures JSON");
            let state = EngineState::default();
            let warnings = state.apply_client_features(features);
            assert!(warnings.is_none(), "yggdrasil warnings: {warnings:?}");
            Engine {
                state,
                kill: rules.kill_flag(),
                release: rules.release_flag(),
            }
        }

        /// The variant encoding (`unleash_variant_features_json`), decided with
        /// [`Engine::decide_variant`].
        pub fn new_variant(rules: &RuleSet) -> Engine {
            Engine::from_features(rules, serin_bench::unleash_variant_features_json(rules))
        }

        /// `is_enabled(kill)`, then `get_variant(release)`: the variant's name is the arm.
        pub fn decide_variant(&self, ctx: &Context) -> Route {
            if self.state.is_enabled(&self.kill, ctx, &None) {
                Route::Killed
            } else if self.state.get_variant(&self.release, ctx, &None).name == "canary" {
                Route::Canary
            } else {
                Route::Stable
            }
        }

        /// `ClientFeatures` JSON to a ready engine, as the Unleash SDKs apply a new version.
        pub fn load(json: &[u8]) -> EngineState {
            let features: ClientFeatures = serde_json::from_slice(json).expect("ClientFeatures");
            let state = EngineState::default();
            let warnings = state.apply_client_features(features);
            assert!(warnings.is_none(), "yggdrasil warnings: {warnings:?}");
            state
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

        /// The flags JSON (key to flag) to a store, as the LaunchDarkly SDK applies a `put`.
        pub fn load(json: &[u8]) -> Flags {
            Flags(serde_json::from_slice(json).expect("LaunchDarkly flags"))
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
