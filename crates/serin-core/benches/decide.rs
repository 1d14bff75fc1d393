//! The hot path of TARGETS.md: `decide()` on the reference rule set (one agent, kill switch
//! off, a release at 10% sticky by user, 100 excluded tenants; requests from 1,000 tenants,
//! 10% excluded; distinct users; prebuilt contexts), with flags, with 10x and 100x larger
//! exclusion lists, `bucket()` alone as the in-run baseline, and compiling a 100-agent
//! snapshot.
//!
//! `cargo bench -p serin-core --bench decide` (add `-- --quick` for a fast look). Per-element
//! figures are per decision: each iteration decides a batch of distinct prebuilt requests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serin_core::decision::bench_support::{
    AGENT, RELEASE_ID, many_agents_snapshot, reference_requests, reference_snapshot, waved_snapshot,
};
use serin_core::decision::{CompiledSnapshot, bucket};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// Requests per iteration: enough distinct users and tenants to defeat branch prediction
/// memorising one request, few enough to stay in cache like a hot SDK would.
const BATCH: usize = 1_000;

fn decide(c: &mut Criterion) {
    let requests = reference_requests(BATCH);
    let contexts = requests.contexts();
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(BATCH as u64));

    g.bench_function("bucket_baseline", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for u in &requests.users {
                acc += u32::from(bucket(black_box(RELEASE_ID), black_box(u)));
            }
            acc
        })
    });

    for exclusions in [100, 1_000, 10_000] {
        let compiled = CompiledSnapshot::compile(reference_snapshot(exclusions, 0)).unwrap();
        g.bench_function(format!("reference_exclusions_{exclusions}"), |b| {
            b.iter(|| {
                let mut canary = 0usize;
                for ctx in &contexts {
                    let d = compiled.decide(black_box(AGENT), black_box(ctx)).unwrap();
                    canary += d.arm as usize;
                }
                canary
            })
        });
    }

    // Waves against no waves in the same run, on the same requests (each with a region and
    // an instance): what finding a request's wave costs.
    let placed = requests.placed_contexts();
    let plain = CompiledSnapshot::compile(reference_snapshot(100, 0)).unwrap();
    let waved = CompiledSnapshot::compile(waved_snapshot(100)).unwrap();
    for (name, compiled) in [("placed_no_waves", &plain), ("placed_waves", &waved)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut canary = 0usize;
                for ctx in &placed {
                    let d = compiled.decide(black_box(AGENT), black_box(ctx)).unwrap();
                    canary += d.arm as usize;
                }
                canary
            })
        });
    }

    let with_flags = CompiledSnapshot::compile(reference_snapshot(100, 10)).unwrap();
    g.bench_function("reference_with_10_flags", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for ctx in &contexts {
                let d = with_flags.decide(black_box(AGENT), black_box(ctx)).unwrap();
                n += d.arm as usize;
                for f in with_flags.agent_flags(AGENT, ctx) {
                    n += usize::from(f.on);
                }
            }
            n
        })
    });
    g.finish();
}

/// The two ways to hash `salt ‖ 0x00 ‖ key` without allocating, on 20–40 byte inputs.
fn hashing(c: &mut Criterion) {
    let requests = reference_requests(BATCH);
    let mut g = c.benchmark_group("hash_joined");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("stack_buffer_oneshot", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for u in &requests.users {
                let (s, k) = (black_box(RELEASE_ID).as_bytes(), black_box(u).as_bytes());
                let mut buf = [0u8; 128];
                let n = s.len() + 1 + k.len();
                buf[..s.len()].copy_from_slice(s);
                buf[s.len() + 1..n].copy_from_slice(k);
                acc ^= xxh3_64(&buf[..n]);
            }
            acc
        })
    });
    g.bench_function("streaming", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for u in &requests.users {
                let mut h = Xxh3::new();
                h.update(black_box(RELEASE_ID).as_bytes());
                h.update(&[0]);
                h.update(black_box(u).as_bytes());
                acc ^= h.digest();
            }
            acc
        })
    });
    g.finish();
}

fn compile(c: &mut Criterion) {
    let snapshot = many_agents_snapshot(100);
    c.bench_function("compile_100_agents", |b| {
        b.iter_batched(
            || snapshot.clone(),
            |s| CompiledSnapshot::compile(black_box(s)).unwrap(),
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(benches, decide, hashing, compile);
criterion_main!(benches);
