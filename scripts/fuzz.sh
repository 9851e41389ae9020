#!/usr/bin/env bash
# Fuzz smoke test (docs/fuzzing.md): builds every cargo-fuzz target in fuzz/, writes its seed
# corpus, replays fuzz/regressions/<target>/, then fuzzes each target for SECONDS_PER_TARGET
# seconds (default 30). Prints a summary table; exits non-zero if any target crashed, leaked,
# ran out of memory or timed out, naming the input that did it.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Environment: FUZZ_SANITIZER (address, the default, or none), FUZZ_TARGETS (a space-separated
# subset), FUZZ_CODEGEN_UNITS (cargo-fuzz uses 1; 16 builds faster on several cores and runs
# a little slower), CARGO_TARGET_DIR (else fuzz/target), and cargo settings such as
# CARGO_BUILD_JOBS.
set -euo pipefail

secs=${1:-30}
case $secs in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
    ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
fuzz="$root/fuzz"
cd "$root"

# cargo-fuzz passes nightly -Z flags (-Zsanitizer=address); this lets stable accept them.
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}
fuzz_args=(--fuzz-dir "$fuzz" --sanitizer "$sanitizer")
if [ -n "${FUZZ_CODEGEN_UNITS:-}" ]; then
    fuzz_args+=(--codegen-units "$FUZZ_CODEGEN_UNITS")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# Release build with debug assertions and overflow checks (cargo-fuzz's default).
echo "== building fuzz targets (sanitizer: $sanitizer)"
start=$SECONDS
cargo fuzz build "${fuzz_args[@]}"
echo "== built in $((SECONDS - start)) s"

read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir "$fuzz" | tr '\n' ' ')}"
rows=()
failed=0
for t in "${targets[@]}"; do
    corpus="$fuzz/corpus/$t"
    artifacts="$fuzz/artifacts/$t"
    log="$fuzz/logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$fuzz/logs"

    # The target writes its seeds and exits when RELSYNC_FUZZ_SEEDS is set (fuzz/src/seeds.rs).
    RELSYNC_FUZZ_SEEDS="$corpus" cargo fuzz run "${fuzz_args[@]}" "$t" "$corpus" >"$log" 2>&1 || {
        echo "== $t: writing seeds failed:" >&2
        tail -20 "$log" >&2
        exit 1
    }

    # New inputs go to the first directory; committed regressions are replayed first.
    dirs=("$corpus")
    if [ -d "$fuzz/regressions/$t" ]; then
        dirs+=("$fuzz/regressions/$t")
    fi
    echo "== fuzzing $t for $secs s"
    start=$SECONDS
    status=0
    cargo fuzz run "${fuzz_args[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    took=$((SECONDS - start))

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    runs=${runs:-$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)}
    files=$(find "$corpus" -type f | wc -l)
    kib=$(du -sk "$corpus" | cut -f1)
    outcome=ok
    if [ "$status" -ne 0 ]; then
        failed=1
        if grep -q 'ERROR: libFuzzer: timeout' "$log"; then
            outcome=timeout
        elif grep -q 'out-of-memory\|malloc(.*) exceeds limit' "$log"; then
            outcome=out-of-memory
        elif grep -q 'LeakSanitizer' "$log"; then
            outcome=leak
        else
            outcome=crash
        fi
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        echo "== $t: $outcome (exit $status); input: ${artifact:-none written}; log: $log" >&2
        grep -m1 -A1 'panicked at\|ERROR: ' "$log" >&2 || tail -20 "$log" >&2
        outcome="$outcome: ${artifact:-see $log}"
    fi
    rows+=("$(printf '%-12s %8s %12s %7s %9s  %s' "$t" "$took" "${runs:-?}" "$files" "$kib" "$outcome")")
done

echo
printf '%-12s %8s %12s %7s %9s  %s\n' target seconds executions inputs "corpus KiB" outcome
printf '%s\n' "${rows[@]}"
exit "$failed"
