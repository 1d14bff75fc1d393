//! Prints the detection report: `cargo run --release -p serin-core --example detect -- [RUNS] [SEED] [--json]`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args.first().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let seed = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(42);
    let started = std::time::Instant::now();
    let report = serin_core::guardrails::sim::detect_report(runs, seed).unwrap();
    if args.iter().any(|a| a == "--json") {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    } else {
        print!("{report}");
    }
    println!("({:.1?})", started.elapsed());
}
