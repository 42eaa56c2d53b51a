#!/usr/bin/env bash
# Check that one example is slower than another by at least a ratio:
# the point of the "blocked" examples is that a blocking sleep makes the
# same work take longer (3.00 s vs 2.00 s; 4.90 s vs 4.00 s).
#
#   check_ratio.sh --min-ratio R [--scale N] -- SLOW [ARGS...] -- FAST [ARGS...]
#
# Both run with --scale N (default 5) and must print an
# "Executed in X.XX seconds" line; the check is X_slow >= R * X_fast.
# Comparing two runs of the same machine cancels out most of its speed;
# R should sit well below the ideal ratio (e.g. 1.25 for 1.5, 1.1 for
# 1.225) so that noise does not fail the test.
set -u

min_ratio="" scale=5
while [ $# -gt 0 ]; do
    case "$1" in
    --min-ratio) min_ratio=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "check_ratio.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
slow=() fast=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do slow+=("$1"); shift; done
[ $# -gt 0 ] && shift
fast=("$@")
if [ -z "$min_ratio" ] || [ ${#slow[@]} -eq 0 ] || [ ${#fast[@]} -eq 0 ]; then
    echo "usage: check_ratio.sh --min-ratio R [--scale N] -- SLOW... -- FAST..." >&2
    exit 2
fi

# Run a command, echo its output, print the seconds it reported.
executed_in() {
    local out
    out=$("$@" --scale "$scale") || { echo "FAIL: $* exited $?" >&2; return 1; }
    printf '$ %s --scale %s\n%s\n' "$*" "$scale" "$out" >&2
    printf '%s\n' "$out" | sed -nE 's/^Executed in ([0-9.]+) seconds$/\1/p' | tail -n 1
}

t_slow=$(executed_in "${slow[@]}") || exit 1
t_fast=$(executed_in "${fast[@]}") || exit 1
if [ -z "$t_slow" ] || [ -z "$t_fast" ]; then
    echo "FAIL: no 'Executed in X seconds' line" >&2
    exit 1
fi
awk -v a="$t_slow" -v b="$t_fast" -v r="$min_ratio" 'BEGIN {
    # (parenthesised: a bare ">" in printf arguments is a redirection)
    ratio = (b > 0) ? a / b : 0
    ok = (b > 0) && (a >= r * b)
    printf "%s: %s s / %s s = %.3f, need >= %s\n", (ok ? "ok" : "FAIL"), a, b, ratio, r
    exit !ok
}'
