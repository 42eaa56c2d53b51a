#!/bin/bash
# examples/binload.c, the load generator written on ringfiber-load for a
# made-up binary protocol: its server on an ephemeral port, stopped by
# PID; a closed-loop and an open-loop run against it must get answers,
# none of them wrong, no errors; the open loop at 500/s for 1 s at most
# 500 of them.
#   check_binload.sh PATH/TO/binload
set -u
. "$(dirname "$0")/common.sh"
bin=$1
log=$(mktemp /tmp/binload.XXXXXX)
"$bin" serve >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
port=$(listening_port "$log")
[ -n "$port" ] || { echo "FAIL: binload serve did not start: $(cat "$log")"; exit 1; }
fails=0
check() { # check MAX ARGS...
    local max=$1
    shift
    local out
    out=$("$bin" load "$port" "$@") || { echo "FAIL: load $*: exit $?"; fails=1; return; }
    local n
    n=$(sed -n 's/^\([0-9]*\) answers.*, 0 wrong, 0 errors;.*/\1/p' <<<"$out")
    if [ -z "$n" ] || [ "$n" -lt 1 ] || { [ "$max" -gt 0 ] && [ "$n" -gt "$max" ]; }; then
        echo "FAIL: load $*: $out"
        fails=1
    else
        echo "ok: load $*: $out"
    fi
}
check 0 0 1
check 500 500 1
"$bin" load 2>/dev/null; [ $? = 2 ] || { echo "FAIL: no usage error"; fails=1; }
exit $fails
