#!/usr/bin/env bash
# Runs the fuzz targets, each for a bounded time: fuzz/run.sh [SECONDS] [TARGET...]
# (default 60 s each, every target). Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). New inputs go to fuzz/work/<target>, which is not
# committed; the committed corpus fuzz/corpus/<target> is read as seeds only. A crash stops that
# target, leaves its input in fuzz/artifacts/<target>/ and makes the script exit 1.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(bundle plan policy snapshot outcome_batch)
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

# No sanitizer: Serin forbids unsafe code, so ASan would mostly slow the search; overflow
# checks and debug assertions stay on (-a).
flags=(-s none -a)
nice -n 19 cargo +nightly fuzz build "${flags[@]}"

failed=0
for target in "${targets[@]}"; do
    mkdir -p "work/$target"
    echo "== $target: ${seconds}s"
    if ! nice -n 19 cargo +nightly fuzz run "${flags[@]}" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "== $target: FAILED (see fuzz/artifacts/$target/)"
        failed=1
    fi
done
exit "$failed"
