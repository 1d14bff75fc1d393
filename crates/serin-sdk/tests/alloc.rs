//! The SDK's documented per-request call allocates nothing, flags included: counted with an
//! instrumented global allocator on the public API (`Router::current`, `SnapshotGuard::decide`,
//! `SdkDecisionRef`'s accessors), not on the engine underneath. Its own binary without the
//! libtest harness, because the allocator is process-wide and the harness's threads allocate;
//! `stats_alloc` supplies the allocator since `unsafe_code` is forbidden.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::alloc::System;
use std::hint::black_box;

use serin_core::decision::bench_support::{AGENT, reference_requests, reference_snapshot};
use serin_sdk::{Arm, Context, Router, SnapshotGuard};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    the_documented_decide_allocates_nothing();
    println!("test the_documented_decide_allocates_nothing ... ok");
    the_guard_can_cross_an_await();
    println!("test the_guard_can_cross_an_await ... ok");
    println!("alloc: 2 passed, 0 failed");
}

fn the_documented_decide_allocates_nothing() {
    for exclusions in [100, 10_000] {
        let router = Router::from_snapshot(reference_snapshot(exclusions, 10)).unwrap();
        let requests = reference_requests(1_000);
        let mut arms = [0usize; 3];
        let (mut flags_seen, mut flags_on, mut bundles) = (0usize, 0usize, 0usize);

        // A thread's first guard registers it with arc-swap (a one-time node); that is not
        // per-request cost.
        drop(router.current().unwrap());

        let region = Region::new(GLOBAL);
        for i in 0..requests.request_ids.len() {
            // Exactly the README's per-request code, from the request's own strings.
            let snap = router.current().unwrap();
            let ctx = Context::new(&requests.request_ids[i])
                .user(&requests.users[i])
                .tenant(&requests.tenants[i]);
            let d = snap.decide(black_box(AGENT), &ctx).unwrap();
            arms[d.arm as usize] += 1;
            bundles += usize::from(d.bundle_contents().is_some());
            for f in d.flags() {
                flags_seen += 1;
                flags_on += usize::from(f.on);
                black_box(f.value);
            }
            flags_on += usize::from(d.flag("support.flag-01").unwrap().on);
            black_box((d.reason_code(), d.snapshot_version, d.release, d.stale));
        }
        let stats = region.change();

        assert_eq!(stats.allocations, 0, "{exclusions} exclusions: {stats:?}");
        assert_eq!(stats.reallocations, 0, "{exclusions} exclusions: {stats:?}");
        // The loop really decided both arms and walked every flag.
        assert!(arms[Arm::Stable as usize] > 0 && arms[Arm::Canary as usize] > 0);
        assert_eq!(flags_seen, 10 * 1_000);
        assert!(flags_on > 0);
        assert_eq!(bundles, 1_000);
        // The counter works: the reason text is only formatted, and allocated, on demand.
        let snap = router.current().unwrap();
        let ctx = Context::new("r-1").user("u-1");
        let d = snap.decide(AGENT, &ctx).unwrap();
        let control = Region::new(GLOBAL);
        let text = d.reason_text();
        assert!(control.change().allocations >= 1, "{text}");
    }
}

/// Agents hold the guard while they call a model; the future must stay `Send`.
fn the_guard_can_cross_an_await() {
    fn assert_send<T: Send>(_: &T) {}
    let router = Router::from_snapshot(reference_snapshot(100, 0)).unwrap();
    let snap: SnapshotGuard = router.current().unwrap();
    assert_send(&snap);
    assert_eq!(snap.version(), Some(1));
}
