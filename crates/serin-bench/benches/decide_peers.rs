//! `decide()` side by side: Serin, `unleash-yggdrasil` and `launchdarkly-server-sdk-evaluation`
//! on the reference rule set of `TARGETS.md` (kill switch off, 10% release sticky by user,
//! 100 excluded tenants; requests from 1,000 tenants, 10% excluded, distinct users).
//!
//! `cargo bench -p serin-bench` (add `-- --quick` for a fast look). Groups:
//! - `prebuilt_context`: each engine's request context is built before the timed loop;
//! - `context_per_request`: the context is built (and dropped) inside the timed loop, from
//!   owned request strings, as an application would per incoming request;
//! - `exclusion_list_size`: prebuilt contexts, exclusion lists from 100 to 10,000 entries;
//! - `sdk_decide`: the call an agent makes (Serin's SDK, documented path and owned path, with
//!   no flags and with 10; `sdk_guard_held` decides on a guard taken once, outside the
//!   loop), beside the engine with a prebuilt context and yggdrasil building
//!   its context per request, all in one group so the ratios come from one run;
//! - `snapshot_load`: JSON bytes to a ready engine for a fleet of 100 agents with 100- and
//!   10,000-tenant lists, for Serin's load path (a first load, `serin`, and a pushed version
//!   with one agent changed applied on the current one, `serin_push`), the parse-then-compile
//!   path it replaced and the peers.
//!
//! Every iteration decides the next request of a pre-generated set of 4,096 (cycling), so
//! the hash inputs and branches vary as in production. No assertions on timings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../peers/mod.rs"]
mod peers;

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use peers::{launchdarkly, sdk, serin, yggdrasil};
use serin_bench::{REQUESTS, Request, RuleSet, requests};

const MASK: usize = REQUESTS - 1;
const _: () = assert!(REQUESTS.is_power_of_two());

/// Times `decide(&ctxs[i])` for i cycling over the prebuilt contexts.
fn cycle<C>(b: &mut criterion::Bencher<'_>, ctxs: &[C], decide: impl Fn(&C) -> serin_bench::Route) {
    let mut i = 0usize;
    b.iter(|| {
        let ctx = &ctxs[i & MASK];
        i = i.wrapping_add(1);
        black_box(decide(black_box(ctx)))
    });
}

/// Times building the context from the request's strings, deciding, and dropping it.
fn cycle_building(
    b: &mut criterion::Bencher<'_>,
    reqs: &[Request],
    decide: impl Fn(&Request) -> serin_bench::Route,
) {
    let mut i = 0usize;
    b.iter(|| {
        let req = &reqs[i & MASK];
        i = i.wrapping_add(1);
        black_box(decide(black_box(req)))
    });
}

fn prebuilt_context(c: &mut Criterion) {
    let rules = RuleSet::reference();
    let reqs = requests(REQUESTS);
    let mut g = c.benchmark_group("prebuilt_context");

    let s = serin::Engine::new(&rules);
    let ctxs: Vec<_> = reqs.iter().map(serin::Engine::context).collect();
    g.bench_function("serin", |b| cycle(b, &ctxs, |ctx| s.decide(ctx)));

    let y = yggdrasil::Engine::new(&rules);
    let ctxs: Vec<_> = reqs.iter().map(yggdrasil::Engine::context).collect();
    g.bench_function("yggdrasil", |b| cycle(b, &ctxs, |ctx| y.decide(ctx)));

    let l = launchdarkly::Engine::new(&rules);
    let ctxs: Vec<_> = reqs.iter().map(launchdarkly::Engine::context).collect();
    g.bench_function("launchdarkly", |b| cycle(b, &ctxs, |ctx| l.decide(ctx)));

    g.finish();
}

fn context_per_request(c: &mut Criterion) {
    let rules = RuleSet::reference();
    let reqs = requests(REQUESTS);
    let mut g = c.benchmark_group("context_per_request");

    let s = serin::Engine::new(&rules);
    g.bench_function("serin", |b| {
        cycle_building(b, &reqs, |r| s.decide(&serin::Engine::context(r)))
    });

    let y = yggdrasil::Engine::new(&rules);
    g.bench_function("yggdrasil", |b| {
        cycle_building(b, &reqs, |r| y.decide(&yggdrasil::Engine::context(r)))
    });

    let l = launchdarkly::Engine::new(&rules);
    g.bench_function("launchdarkly", |b| {
        cycle_building(b, &reqs, |r| l.decide(&launchdarkly::Engine::context(r)))
    });

    g.finish();
}

fn exclusion_list_size(c: &mut Criterion) {
    let reqs = requests(REQUESTS);
    let mut g = c.benchmark_group("exclusion_list_size");

    for n in [100, 1_000, 10_000] {
        let rules = RuleSet::with_exclusions(n);
        let s = serin::Engine::new(&rules);
        let ctxs: Vec<_> = reqs.iter().map(serin::Engine::context).collect();
        g.bench_with_input(BenchmarkId::new("serin", n), &n, |b, _| {
            cycle(b, &ctxs, |ctx| s.decide(ctx));
        });
    }
    for n in [100, 10_000] {
        let rules = RuleSet::with_exclusions(n);
        let y = yggdrasil::Engine::new(&rules);
        let ctxs: Vec<_> = reqs.iter().map(yggdrasil::Engine::context).collect();
        g.bench_with_input(BenchmarkId::new("yggdrasil", n), &n, |b, _| {
            cycle(b, &ctxs, |ctx| y.decide(ctx));
        });
    }
    for n in [100, 1_000] {
        let rules = RuleSet::with_exclusions(n);
        let l = launchdarkly::Engine::new(&rules);
        let ctxs: Vec<_> = reqs.iter().map(launchdarkly::Engine::context).collect();
        g.bench_with_input(BenchmarkId::new("launchdarkly", n), &n, |b, _| {
            cycle(b, &ctxs, |ctx| l.decide(ctx));
        });
    }

    g.finish();
}

fn sdk_decide(c: &mut Criterion) {
    let rules = RuleSet::reference();
    let reqs = requests(REQUESTS);
    let mut g = c.benchmark_group("sdk_decide");

    for flags in [0, 10] {
        let e = serin::Engine::with_flags(&rules, flags);
        let ctxs: Vec<_> = reqs.iter().map(serin::Engine::context).collect();
        g.bench_with_input(BenchmarkId::new("engine", flags), &flags, |b, _| {
            if flags == 0 {
                cycle(b, &ctxs, |ctx| e.decide(ctx));
            } else {
                cycle(b, &ctxs, |ctx| e.decide_with_flags(ctx));
            }
        });
        let sdk = sdk::Engine::new(&rules, flags);
        g.bench_with_input(BenchmarkId::new("sdk_documented", flags), &flags, |b, _| {
            cycle_building(b, &reqs, |r| sdk.decide(r, flags > 0));
        });
        let held = sdk.router().current().unwrap();
        g.bench_with_input(BenchmarkId::new("sdk_guard_held", flags), &flags, |b, _| {
            cycle_building(b, &reqs, |r| sdk.decide_on(&held, r, flags > 0));
        });
        g.bench_with_input(BenchmarkId::new("sdk_owned", flags), &flags, |b, _| {
            cycle_building(b, &reqs, |r| sdk.decide_owned(r));
        });
    }
    let y = yggdrasil::Engine::new(&rules);
    g.bench_with_input(BenchmarkId::new("yggdrasil_per_request", 0), &0, |b, _| {
        cycle_building(b, &reqs, |r| y.decide(&yggdrasil::Engine::context(r)));
    });
    let yv = yggdrasil::Engine::new_variant(&rules);
    g.bench_with_input(
        BenchmarkId::new("yggdrasil_variant_per_request", 0),
        &0,
        |b, _| {
            cycle_building(b, &reqs, |r| {
                yv.decide_variant(&yggdrasil::Engine::context(r))
            });
        },
    );
    g.finish();
}

fn snapshot_load(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot_load");
    g.sample_size(10);
    for exclusions in [100, 10_000] {
        let fleet = serin_bench::fleet(100, exclusions);
        let serin_json = serin_bench::serin_fleet_json(&fleet);
        let ld_json = serin_bench::launchdarkly_fleet_json(&fleet);
        // Dropping the loaded engine is outside the timed part, as an SDK drops the old
        // version later, off the swap.
        g.bench_with_input(
            BenchmarkId::new("serin", exclusions),
            &exclusions,
            |b, _| {
                b.iter_batched(
                    || (),
                    |()| serin::Engine::load(black_box(&serin_json)),
                    BatchSize::PerIteration,
                );
            },
        );
        // What an SDK does on each pushed version: the whole fleet again, one agent changed.
        let push_json = serin_bench::serin_fleet_push_json(&fleet);
        // The version being served came off the stream too, so its agents carry fingerprints.
        let current = serin::Engine::first_event(&serin_json);
        g.bench_with_input(
            BenchmarkId::new("serin_push", exclusions),
            &exclusions,
            |b, _| {
                b.iter_batched(
                    || (),
                    |()| serin::Engine::apply_push(black_box(&push_json), &current),
                    BatchSize::PerIteration,
                );
            },
        );
        g.bench_with_input(
            BenchmarkId::new("serin_parse_then_compile", exclusions),
            &exclusions,
            |b, _| {
                b.iter_batched(
                    || (),
                    |()| serin::Engine::load_parse_then_compile(black_box(&serin_json)),
                    BatchSize::PerIteration,
                );
            },
        );
        g.bench_with_input(
            BenchmarkId::new("launchdarkly", exclusions),
            &exclusions,
            |b, _| {
                b.iter_batched(
                    || (),
                    |()| launchdarkly::Engine::load(black_box(&ld_json)),
                    BatchSize::PerIteration,
                );
            },
        );
        // yggdrasil takes ~13 ms at 100 entries already; at 10,000 a run would take minutes.
        if exclusions == 100 {
            let unleash_json = serin_bench::unleash_fleet_json(&fleet);
            g.bench_with_input(
                BenchmarkId::new("yggdrasil", exclusions),
                &exclusions,
                |b, _| {
                    b.iter_batched(
                        || (),
                        |()| yggdrasil::Engine::load(black_box(&unleash_json)),
                        BatchSize::PerIteration,
                    );
                },
            );
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    prebuilt_context,
    context_per_request,
    exclusion_list_size,
    sdk_decide,
    snapshot_load
);
criterion_main!(benches);
