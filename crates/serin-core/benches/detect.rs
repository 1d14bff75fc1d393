//! `Monitor::observe` per event (the no-regression config: six bounds) on simulated events,
//! and one A/A run of the short ramp. `cargo bench -p serin-core --bench detect`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serin_core::guardrails::sim::{Scenario, run_once, sample_events};
use serin_core::guardrails::{GuardrailConfig, Monitor};

const BATCH: usize = 10_000;

fn observe(c: &mut Criterion) {
    let sc = Scenario::aa(Scenario::short_ramp());
    let events = sample_events(&sc, 7, BATCH, 0.25);
    let mut g = c.benchmark_group("guardrails");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("observe", |b| {
        b.iter_batched_ref(
            || Monitor::new(GuardrailConfig::no_regression()),
            |m| {
                for e in &events {
                    m.observe(black_box(e));
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("aa_run_short_ramp", |b| {
        b.iter(|| run_once(&sc, &GuardrailConfig::no_regression(), black_box(3)))
    });
    g.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
