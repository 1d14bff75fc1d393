//! Runs N decisions of one engine on the reference rule set, for instruction counting under
//! `valgrind --tool=callgrind` (see `callgrind.sh`): the difference between a run with N
//! decisions and one with 0, divided by N, is the cost of one decision.
//!
//! `one_engine <serin|yggdrasil|launchdarkly> <N> [prebuilt|build] [exclusions]`
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

use peers::{launchdarkly, serin, yggdrasil};
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
    let usage =
        "usage: one_engine <serin|yggdrasil|launchdarkly> <N> [prebuilt|build] [exclusions]";
    let engine = args.get(1).expect(usage).as_str();
    let n: usize = args.get(2).expect(usage).parse().expect(usage);
    let prebuilt = match args.get(3).map(String::as_str) {
        None | Some("prebuilt") => true,
        Some("build") => false,
        Some(_) => panic!("{usage}"),
    };
    let exclusions: usize = args.get(4).map_or(100, |s| s.parse().expect(usage));
    let rules = RuleSet::with_exclusions(exclusions);
    let reqs = requests(REQUESTS);
    let canary = match engine {
        "serin" => {
            let e = serin::Engine::new(&rules);
            run(n, &reqs, prebuilt, serin::Engine::context, |c| e.decide(c))
        }
        "yggdrasil" => {
            let e = yggdrasil::Engine::new(&rules);
            run(n, &reqs, prebuilt, yggdrasil::Engine::context, |c| {
                e.decide(c)
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
