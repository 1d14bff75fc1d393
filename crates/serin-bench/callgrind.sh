#!/usr/bin/env bash
# Instructions per decision for Serin and each peer, from valgrind --tool=callgrind.
#
# For each engine and mode, runs examples/one_engine.rs twice under callgrind, with N and with 0
# decisions (same setup: rule set, 4,096 requests, prebuilt contexts); (Ir(N) - Ir(0)) / N is
# the cost of one decision. Instruction counts do not drift with machine load, unlike ns.
#
#   crates/serin-bench/callgrind.sh            # N = 20000
#   N=50000 crates/serin-bench/callgrind.sh
#
# Rows: engine, mode (prebuilt context / context built per request), exclusion-list size.
set -euo pipefail

N="${N:-20000}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

cargo build --release --quiet -p serin-bench --example one_engine
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin="$target_dir/release/examples/one_engine"
[ -x "$bin" ] || { echo "missing $bin" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Total instructions (Ir) of one run.
instructions() {
    local out="$tmp/cg.out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$@" >/dev/null 2>"$tmp/vg.err" \
        || { cat "$tmp/vg.err" >&2; exit 1; }
    sed -n 's/^summary: \([0-9]*\).*/\1/p; s/^totals: \([0-9]*\).*/\1/p' "$out" | head -n 1
}

printf '%-16s %-9s %10s %14s\n' engine mode exclusions "instr/decision"
row() {
    local engine="$1" mode="$2" exclusions="$3"
    local base full
    base="$(instructions "$engine" 0 "$mode" "$exclusions")"
    full="$(instructions "$engine" "$N" "$mode" "$exclusions")"
    printf '%-16s %-9s %10s %14s\n' "$engine" "$mode" "$exclusions" \
        "$(awk -v a="$full" -v b="$base" -v n="$N" 'BEGIN { printf "%.0f", (a - b) / n }')"
}

for engine in serin yggdrasil launchdarkly; do
    for mode in prebuilt build; do
        row "$engine" "$mode" 100
    done
done
row yggdrasil-variant prebuilt 100
row yggdrasil-variant build 100
row serin prebuilt 10000
row yggdrasil prebuilt 10000
row launchdarkly prebuilt 1000
# The SDK as agents call it (its context is built inside the call), against the engine: the
# documented zero-allocation path and the owned one, without and with 10 flags.
row serin-flags prebuilt 100
for engine in sdk sdk-held sdk-flags sdk-owned sdk-owned-flags; do
    row "$engine" build 100
done
row sdk build 10000
