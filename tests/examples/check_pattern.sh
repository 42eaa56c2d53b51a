#!/usr/bin/env bash
# Run one example whose output carries measured figures (a throughput)
# and check it line by line against patterns.
#
#   check_pattern.sh --expected FILE -- PROGRAM [ARGS...]
#
# PROGRAM must exit 0 and print as many lines as FILE has; line i of its
# stdout must match line i of FILE as a whole-line extended regex (grep
# -E -x), so FILE pins the text and leaves the figures free.
set -u

expected=""
while [ $# -gt 0 ]; do
    case "$1" in
    --expected) expected=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "check_pattern.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [ -z "$expected" ] || [ $# -eq 0 ]; then
    echo "usage: check_pattern.sh --expected FILE -- PROGRAM [ARGS...]" >&2
    exit 2
fi

tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT

"$@" >"$tmp/stdout" 2>"$tmp/stderr"
status=$?
echo "\$ $*"
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
want=$(wc -l <"$expected")
got=$(wc -l <"$tmp/stdout")
if [ "$want" -ne "$got" ]; then
    echo "FAIL: $got lines of output, expected $want"
    fail=1
fi
i=0
while IFS= read -r pattern; do
    i=$((i + 1))
    line=$(sed -n "${i}p" "$tmp/stdout")
    if ! printf '%s\n' "$line" | grep -E -x -q -- "$pattern"; then
        echo "FAIL: line $i: '$line' does not match '$pattern'"
        fail=1
    fi
done <"$expected"
[ "$fail" -eq 0 ] && echo "ok: output matches $expected"
exit "$fail"
