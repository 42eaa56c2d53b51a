#!/bin/bash
# Closed-loop rfload against wrk on the same server, interleaved (wrk,
# rfload, wrk, rfload, ...) so that machine drift hits both alike; prints
# each round and the medians: requests/s and the client's own CPU time
# per request (user + system, from /usr/bin/time), which the load of
# other programs on the machine disturbs far less than the rate.
#
#   compare_wrk.sh [--rounds 5] [--duration 5] [--connections 50]
#                  [--cpu 0] [--rfload PATH] URL
#
# --cpu: the CPU list (taskset -c) the clients run on; start the server
# on the same one (docs/benchmarks.md, "Pinning": figures are stable
# with client and server on one core) or on another and say so.
set -eu
rounds=5 duration=5 conns=50 cpu=0
rfload=$(dirname "$0")/../../build-rel/tools/rfload/rfload
while [ $# -gt 1 ]; do
    case $1 in
    --rounds) rounds=$2 ;;
    --duration) duration=$2 ;;
    --connections) conns=$2 ;;
    --cpu) cpu=$2 ;;
    --rfload) rfload=$2 ;;
    *) echo "compare_wrk.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
url=${1:?usage: compare_wrk.sh [options] URL}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 77; }
[ -x "$rfload" ] || { echo "no rfload at $rfload (--rfload PATH)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

echo "round  wrk req/s  rfload req/s  ratio  | client CPU us/req: wrk  rfload"
for i in $(seq 1 "$rounds"); do
    /usr/bin/time -f "%U %S" -o "$tmp/wt" taskset -c "$cpu" \
        wrk -t1 -c"$conns" -d"${duration}s" "$url" >"$tmp/wo"
    w=$(awk '/Requests\/sec/ {print $2}' "$tmp/wo")
    wn=$(awk '/requests in/ {print $1}' "$tmp/wo")
    /usr/bin/time -f "%U %S" -o "$tmp/rt" taskset -c "$cpu" \
        "$rfload" -q -c "$conns" -d "$duration" --json "$tmp/rj" "$url" >/dev/null
    r=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests_per_s"])' "$tmp/rj")
    rn=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$tmp/rj")
    wc=$(awk -v n="$wn" '{printf "%.2f", ($1+$2)*1e6/n}' "$tmp/wt")
    rc=$(awk -v n="$rn" '{printf "%.2f", ($1+$2)*1e6/n}' "$tmp/rt")
    printf "%5d  %9.0f  %12.0f  %5.3f  | %22s  %6s\n" "$i" "$w" "$r" \
        "$(awk -v a="$r" -v b="$w" 'BEGIN {print a/b}')" "$wc" "$rc"
    echo "$w" >>"$tmp/w"; echo "$r" >>"$tmp/r"
    echo "$wc" >>"$tmp/wc"; echo "$rc" >>"$tmp/rc"
done
mw=$(median <"$tmp/w") mr=$(median <"$tmp/r")
printf "median %9.0f  %12.0f  %5.3f  | %22s  %6s\n" "$mw" "$mr" \
    "$(awk -v a="$mr" -v b="$mw" 'BEGIN {print a/b}')" \
    "$(median <"$tmp/wc")" "$(median <"$tmp/rc")"
