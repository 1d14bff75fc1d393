//! `decide` and flag evaluation allocate nothing: counted with an instrumented global
//! allocator, which is why this is its own test binary. It has no libtest harness
//! (`harness = false`): the harness's main thread may allocate while a test thread runs, and
//! the counter is process-wide. `stats_alloc` supplies the allocator, as `unsafe_code` is
//! forbidden workspace-wide.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::alloc::System;
use std::hint::black_box;

use serin_core::decision::bench_support::{
    AGENT, reference_requests, reference_snapshot, waved_snapshot,
};
use serin_core::decision::{CompiledSnapshot, Reason};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    decide_and_flag_evaluation_allocate_nothing();
    println!("test decide_and_flag_evaluation_allocate_nothing ... ok");
    routing_by_wave_allocates_nothing();
    println!("test routing_by_wave_allocates_nothing ... ok");
    println!("alloc: 2 passed, 0 failed");
}

fn decide_and_flag_evaluation_allocate_nothing() {
    let compiled = CompiledSnapshot::compile(reference_snapshot(100, 10)).unwrap();
    let requests = reference_requests(1_000);
    let contexts = requests.contexts();
    let mut arms = [0usize; 3];
    let mut flags_on = 0usize;

    let region = Region::new(GLOBAL);
    for ctx in &contexts {
        let d = compiled.decide(black_box(AGENT), black_box(ctx)).unwrap();
        arms[d.arm as usize] += 1;
        for f in compiled.agent_flags(AGENT, ctx) {
            flags_on += usize::from(f.on);
        }
        flags_on += usize::from(compiled.flag("support.flag-01", ctx).unwrap().on);
    }
    let stats = region.change();

    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
    // The counter works: the error path allocates its message.
    let control = Region::new(GLOBAL);
    let err = compiled
        .decide(black_box("billing"), &contexts[0])
        .unwrap_err();
    assert!(control.change().allocations >= 1, "{err}");
    // The loop really ran over both arms and some flags.
    assert!(arms[0] > 0 && arms[1] > 0, "{arms:?}");
    assert!(flags_on > 0);
}

fn routing_by_wave_allocates_nothing() {
    let compiled = CompiledSnapshot::compile(waved_snapshot(100)).unwrap();
    let requests = reference_requests(1_000);
    let contexts = requests.placed_contexts();
    let mut arms = [0usize; 3];
    let mut waves = 0usize;
    let mut excluded = 0usize;

    let region = Region::new(GLOBAL);
    for ctx in &contexts {
        let d = compiled.decide(black_box(AGENT), black_box(ctx)).unwrap();
        arms[d.arm as usize] += 1;
        waves += usize::from(d.wave.is_some());
        excluded += usize::from(d.reason == Reason::TenantExcluded);
    }
    let stats = region.change();

    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
    // Every request not excluded found a wave (one box, us, eu or the rest), and both arms
    // were taken.
    assert!(excluded > 0);
    assert_eq!(waves + excluded, contexts.len());
    assert!(arms[0] > 0 && arms[1] > 0, "{arms:?}");
}
