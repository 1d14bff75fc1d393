//! Runs N decisions of one engine on the reference rule set, for instruction counting under
//! `valgrind --tool=callgrind` (see `callgrind.sh`): the difference between a run with N
//! decisions and one with 0, divided by N, is the cost of one decision.
//!
//! `one_engine <engine> <N> [prebuilt|build] [exclusions]`, engine one of
//! - `serin`, `yggdrasil`, `launchdarkly`: the engines; `yggdrasil-variant`: yggdrasil with
//!   the release as a toggle with `canary`/`stable` variants (`get_variant`);
//! - `serin-flags`: Serin's engine deciding and evaluating the agent's 10 flags;
//! - `sdk`, `sdk-flags`: Serin's SDK, the documented call (`Router::current`, a borrowed
//!   `Context` from the request's strings, `SnapshotGuard::decide`), without and with
//!   walking 10 flags; the context is built per request whatever the mode, as it is part of
//!   the call;
//! - `sdk-owned`, `sdk-owned-flags`: the owned call (`RequestContext`, `Router::decide`).
//! - `load`, `load-launchdarkly`: N loads of the 100-agent fleet snapshot (`snapshot_load`
//!   in `benches/decide_peers.rs`) instead of decisions, to profile the load path;
//!   `load-push`: N applications of the next stream event (one agent changed) on it.
//!
//! `prebuilt` (default) builds the 4,096 request contexts before deciding; `build` builds
//! each context inside the loop. `exclusions` defaults to 100.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::panic
)]

#[path = "../peers/mod.rs"]
mod peers;

use std::hint::black_box;

use peers::{launchdarkly, sdk, serin, yggdrasil};
use serin_bench::{REQUESTS, Request, Route, RuleSet, requests};

fn run<'r, C>(
    n: usize,
    reqs: &'r [Request],
    prebuilt: bool,
    context: impl Fn(&'r Request) -> C,
    decide: impl Fn(&C) -> Route,
) -> usize {
    let mut canary = 0;
    if prebuilt {
        let ctxs: Vec<C> = reqs.iter().map(&context).collect();
        for i in 0..n {
            canary += usize::from(decide(black_box(&ctxs[i % REQUESTS])) == Route::Canary);
        }
    } else {
        for i in 0..n {
            let ctx = context(black_box(&reqs[i % REQUESTS]));
            canary += usize::from(decide(&ctx) == Route::Canary);
        }
    }
    canary
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: one_engine <serin|serin-flags|sdk|sdk-flags|sdk-owned|sdk-owned-flags|\
                 yggdrasil|yggdrasil-variant|launchdarkly|load|load-launchdarkly|load-push|sdk-held> <N> [prebuilt|build] [exclusions]";
    let engine = args.get(1).expect(usage).as_str();
    let n: usize = args.get(2).expect(usage).parse().expect(usage);
    let prebuilt = match args.get(3).map(String::as_str) {
        None | Some("prebuilt") => true,
        Some("build") => false,
        Some(_) => panic!("{usage}"),
    };
    let exclusions: usize = args.get(4).map_or(100, |s| s.parse().expect(usage));
    if engine == "load" || engine == "load-launchdarkly" || engine == "load-push" {
        let fleet = serin_bench::fleet(100, exclusions);
        let json = if engine == "load-launchdarkly" {
            serin_bench::launchdarkly_fleet_json(&fleet)
        } else {
            serin_bench::serin_fleet_json(&fleet)
        };
        let push = serin_bench::serin_fleet_push_json(&fleet);
        let current = (engine == "load-push").then(|| serin::Engine::first_event(&json));
        for _ in 0..n {
            match engine {
                "load" => drop(black_box(serin::Engine::load(black_box(&json)))),
                "load-push" => {
                    if let Some(current) = &current {
                        drop(black_box(serin::Engine::apply_push(
                            black_box(&push),
                            current,
                        )));
                    }
                }
                _ => drop(black_box(launchdarkly::Engine::load(black_box(&json)))),
            }
        }
        println!("{engine}: {n} loads");
        return;
    }
    let rules = RuleSet::with_exclusions(exclusions);
    let reqs = requests(REQUESTS);
    let canary = match engine {
        "serin" => {
            let e = serin::Engine::new(&rules);
            run(n, &reqs, prebuilt, serin::Engine::context, |c| e.decide(c))
        }
        "serin-flags" => {
            let e = serin::Engine::with_flags(&rules, 10);
            run(n, &reqs, prebuilt, serin::Engine::context, |c| {
                e.decide_with_flags(c)
            })
        }
        "sdk" | "sdk-flags" => {
            let flags = engine == "sdk-flags";
            let e = sdk::Engine::new(&rules, if flags { 10 } else { 0 });
            run(n, &reqs, prebuilt, |r| r, |r| e.decide(r, flags))
        }
        "sdk-held" => {
            // The documented call on a guard taken once, as an agent serving a batch (or a
            // whole request loop on one version) holds it: the engine plus the SDK's wrapping.
            let e = sdk::Engine::new(&rules, 0);
            let snap = e
                .router()
                .current()
                .expect("the reference snapshot is loaded");
            run(n, &reqs, prebuilt, |r| r, |r| e.decide_on(&snap, r, false))
        }
        "sdk-owned" | "sdk-owned-flags" => {
            let flags = if engine == "sdk-owned-flags" { 10 } else { 0 };
            let e = sdk::Engine::new(&rules, flags);
            run(n, &reqs, prebuilt, |r| r, |r| e.decide_owned(r))
        }
        "yggdrasil" => {
            let e = yggdrasil::Engine::new(&rules);
            run(n, &reqs, prebuilt, yggdrasil::Engine::context, |c| {
                e.decide(c)
            })
        }
        "yggdrasil-variant" => {
            let e = yggdrasil::Engine::new_variant(&rules);
            run(n, &reqs, prebuilt, yggdrasil::Engine::context, |c| {
                e.decide_variant(c)
            })
        }
        "launchdarkly" => {
            let e = launchdarkly::Engine::new(&rules);
            run(n, &reqs, prebuilt, launchdarkly::Engine::context, |c| {
                e.decide(c)
            })
        }
        _ => panic!("{usage}"),
    };
    println!("{engine}: {n} decisions, {canary} canary");
}
