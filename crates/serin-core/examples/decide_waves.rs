//! Instructions per decision with and without waves, for `valgrind --tool=callgrind`: runs N
//! decisions of the reference rule set on requests that carry a region and an instance,
//! against the plain release (`plain`) or the same release rolling out in waves (`waves`).
//! Run it with N and with 0 and divide the difference by N:
//!
//! `cargo build --release -p serin-core --example decide_waves`
//! `valgrind --tool=callgrind target/release/examples/decide_waves waves 20000`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use serin_core::decision::CompiledSnapshot;
use serin_core::decision::bench_support::{
    AGENT, reference_requests, reference_snapshot, waved_snapshot,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: decide_waves <plain|waves> N";
    let snapshot = match args.get(1).map(String::as_str) {
        Some("plain") => reference_snapshot(100, 0),
        Some("waves") => waved_snapshot(100),
        _ => panic!("{usage}"),
    };
    let n: usize = args.get(2).expect(usage).parse().expect(usage);
    let compiled = CompiledSnapshot::compile(snapshot).unwrap();
    let requests = reference_requests(4_096);
    let contexts = requests.placed_contexts();
    let mut canary = 0usize;
    for i in 0..n {
        let ctx = &contexts[i % contexts.len()];
        let d = compiled.decide(black_box(AGENT), black_box(ctx)).unwrap();
        canary += d.arm as usize;
    }
    println!("{canary}");
}
