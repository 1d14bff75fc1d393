//! `decide()` side by side: Serin, `unleash-yggdrasil` and `launchdarkly-server-sdk-evaluation`
//! on the reference rule set of `TARGETS.md` (kill switch off, 10% release sticky by user,
//! 100 excluded tenants; requests from 1,000 tenants, 10% excluded, distinct users).
//!
//! `cargo bench -p serin-bench` (add `-- --quick` for a fast look). Groups:
//! - `prebuilt_context`: each engine's request context is built before the timed loop;
//! - `context_per_request`: the context is built (and dropped) inside the timed loop, from
//!   owned request strings, as an application would per incoming request;
//! - `exclusion_list_size`: prebuilt contexts, exclusion lists from 100 to 10,000 entries.
//!
//! Every iteration decides the next request of a pre-generated set of 4,096 (cycling), so
//! the hash inputs and branches vary as in production. No assertions on timings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../peers/mod.rs"]
mod peers;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use peers::{launchdarkly, serin, yggdrasil};
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

criterion_group!(
    benches,
    prebuilt_context,
    context_per_request,
    exclusion_list_size
);
criterion_main!(benches);
