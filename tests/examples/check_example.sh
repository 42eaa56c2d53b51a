#!/usr/bin/env bash
# Run one example and check what it printed and how long it took.
#
#   check_example.sh --expected FILE [--expected FILE...] --seconds S [--scale N]
#                    [--min-ratio R] [--max-ratio R] [--slack S]
#                    [--stderr-contains TEXT] -- PROGRAM [ARGS...]
#
# PROGRAM runs with ARGS and --scale N (default 100). It must exit 0.
# With --stderr-contains, its stderr must contain TEXT (the stall
# detector's report, say).
#
# Output: its stdout must equal FILE line for line, after every elapsed
# time like "4.00 seconds" has been replaced by "X.XX seconds" in both,
# so the expected files can keep the tutorials' own numbers. Where the
# order of events legitimately depends on timing (as in asyncio itself),
# each outcome has its own file, and matching any one of them passes.
#
# With --virtual-time the program runs on the virtual clock instead of at
# --scale N: its stdout must equal FILE exactly, elapsed times included
# (the tutorials' own numbers), and the run time is not checked (the
# test's own timeout bounds it).
#
# Timing: S is the run time at scale 1 (the seed's number); the measured
# wall time of the whole process must be at least min_ratio * S/N. This
# lower bound can sit close to 1 (default 0.9) without being flaky:
# sleeps are absolute CLOCK_MONOTONIC deadlines and never end early, and
# a busy machine only ever makes a run slower. It is what catches a
# blocking sleep that failed to block (3.00 s expected, 2.00 s measured).
# There is no upper bound unless --max-ratio asks for one: how slow a run
# may be is the machine's load's to decide (scripts/test --under-load runs
# the suite beside six CPU-bound processes), and the test's timeout bounds
# a hang.
set -u

expected=() seconds="" scale=100 min_ratio=0.9 max_ratio=0 slack=0.2
stderr_contains="" virtual=0
while [ $# -gt 0 ]; do
    case "$1" in
    --virtual-time) virtual=1; seconds=${seconds:-0}; shift ;;
    --expected) expected+=("$2"); shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --min-ratio) min_ratio=$2; shift 2 ;;
    --max-ratio) max_ratio=$2; shift 2 ;;
    --slack) slack=$2; shift 2 ;;
    --stderr-contains) stderr_contains=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "check_example.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [ ${#expected[@]} -eq 0 ] || [ -z "$seconds" ] || [ $# -eq 0 ]; then
    echo "usage: check_example.sh --expected FILE --seconds S [--scale N] -- PROGRAM [ARGS...]" >&2
    exit 2
fi

tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT

# Elapsed times are the only thing that legitimately varies between runs.
normalize() {
    if [ "$virtual" -eq 1 ]; then
        cat "$1"
    else
        sed -E 's/[0-9]+\.[0-9]{2} seconds/X.XX seconds/g' "$1"
    fi
}

run_args=(--scale "$scale")
[ "$virtual" -eq 1 ] && run_args=(--virtual-time)
start=$(date +%s%N)
"$@" "${run_args[@]}" >"$tmp/stdout" 2>"$tmp/stderr"
status=$?
end=$(date +%s%N)

echo "\$ $* ${run_args[*]}"
cat "$tmp/stdout"
if [ -s "$tmp/stderr" ]; then
    echo "--- stderr:"
    cat "$tmp/stderr"
fi

fail=0
if [ "$status" -ne 0 ]; then
    echo "FAIL: exit status $status, expected 0"
    fail=1
fi

if [ -n "$stderr_contains" ] && ! grep -qF -- "$stderr_contains" "$tmp/stderr"; then
    echo "FAIL: stderr does not contain: $stderr_contains"
    fail=1
fi

normalize "$tmp/stdout" >"$tmp/actual"
matched=0
for e in "${expected[@]}"; do
    normalize "$e" >"$tmp/expected"
    if diff -u "$tmp/expected" "$tmp/actual" >"$tmp/diff"; then
        matched=1
        break
    fi
done
if [ "$matched" -eq 0 ]; then
    # The diff shown is against the last file tried.
    echo "FAIL: output differs from ${expected[*]} (- expected, + actual):"
    cat "$tmp/diff"
    fail=1
fi

if [ "$virtual" -eq 1 ]; then
    echo "ok: virtual time, took $(( (end - start) / 1000000 )) ms of real time"
    exit "$fail"
fi

# awk does the floating point; it prints the verdict and exits 1 on a miss.
awk -v ns="$((end - start))" -v s="$seconds" -v n="$scale" \
    -v lo="$min_ratio" -v hi="$max_ratio" -v slack="$slack" 'BEGIN {
    got = ns / 1e9; want = s / n; min = lo * want; max = hi * want + slack
    ok = got >= min && (hi == 0 || got <= max)
    if (hi == 0)
        printf "%s: took %.4f s; expected %.4f s (%s s / %s), at least %.4f\n",
               ok ? "ok" : "FAIL", got, want, s, n, min
    else
        printf "%s: took %.4f s; expected %.4f s (%s s / %s), window [%.4f, %.4f]\n",
               ok ? "ok" : "FAIL", got, want, s, n, min, max
    exit !ok
}' || fail=1

exit "$fail"
