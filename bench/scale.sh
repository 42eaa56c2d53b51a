#!/usr/bin/env bash
# Many cores, measured: the echo and HTTP example servers at each loop
# count, loaded by rfload over loopback, and the server's CPU per message
# (its user + system time, from /proc/PID/stat, over the messages rfload
# counted). Share-nothing loops should keep CPU per message flat as loops
# are added; on a machine whose client competes with the server for the
# CPUs (2 CPUs here), throughput cannot show the scaling, CPU per message
# can.
#
# usage: bench/scale.sh [--loops 1,2,4,8,16] [--duration 5]
#                       [--connections 64] [--client-threads 1]
#                       [--accept reuseport|handoff] [--build DIR]
#                       [--bench PATH] [--rate R]
#                       [--server-cpus LIST] [--client-cpus LIST]
#
# DIR is a build tree with examples/ and tools/rfload/ (default: build);
# one configured with -DRINGFIBER_STATIC_BINARIES=ON holds static
# executables that run, copied as they are, on a machine without the
# build packages. --client-threads: rfload's loops (-t); on a machine with
# spare cores give the client enough that the server is the bottleneck.
# --bench: a ringfiber_bench to run S3_spawn_join_loops at each loop count
# too (registered: 1, 2, 4, 8, 16). --rate R: open loop at R requests/s in
# all instead of as fast as the client goes: every loop count then serves
# the same load, and CPU per message compares like with like.
# --server-cpus / --client-cpus: taskset CPU lists for each side (the
# server's loops pin themselves within its list). On a machine with few
# CPUs, --server-cpus 0 --client-cpus 1 keeps the client off the server's
# CPU: the loops then share one CPU, so throughput cannot grow, but CPU
# per message is the per-message cost of share-nothing alone, without the
# client's threads preempting the loops.
# Prints a table, then one JSON object on the last line:
#   {"echo_cpu_per_msg_ratio_2v1": ..., "http_rps_ratio_2v1": ...,
#    "s3_speedup_2": ..., ...}
# (each ratio is a loop count's figure over the first count's).
# Loopback only; each server is stopped by its PID.
set -euo pipefail

loops=1,2 duration=5 conns=64 accept=reuseport build=build cthreads=1 bench=
rate= scpus= ccpus=
while [[ $# -gt 0 ]]; do
    case $1 in
    --loops) loops=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --accept) accept=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --client-threads) cthreads=$2; shift 2 ;;
    --bench) bench=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --server-cpus) scpus=$2; shift 2 ;;
    --client-cpus) ccpus=$2; shift 2 ;;
    *) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
rfload=$build/tools/rfload/rfload
for b in "$build/examples/echo_server" "$build/examples/http_hello" "$rfload"; do
    [[ -x $b ]] || { echo "scale.sh: $b is not built" >&2; exit 2; }
done
tmp=$(mktemp -d)
server_pid=
cleanup() {
    [[ -n $server_pid ]] && kill -KILL "$server_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)

# CPU seconds (user + system) of process $1 so far.
cpu_s() {
    awk -v t="$ticks" '{ print ($14 + $15) / t }' "/proc/$1/stat"
}

# run KIND LOOPS: start the server, load it, print "requests cpu_s rps".
run() {
    local kind=$1 n=$2 bin url
    case $kind in
    echo) bin=$build/examples/echo_server ;;
    http) bin=$build/examples/http_hello ;;
    esac
    ${scpus:+taskset -c "$scpus"} "$bin" --port 0 --loops "$n" \
        --accept "$accept" >"$tmp/out" 2>"$tmp/err" &
    server_pid=$!
    local port=
    for _ in $(seq 100); do
        port=$(grep -o '127\.0\.0\.1:[0-9]*' "$tmp/out" 2>/dev/null | cut -d: -f2 || true)
        [[ -n $port ]] && break
        sleep 0.05
    done
    [[ -n $port ]] || { echo "scale.sh: $kind server did not start" >&2; exit 1; }
    case $kind in
    echo) url=echo://127.0.0.1:$port ;;
    http) url=http://127.0.0.1:$port/ ;;
    esac
    local c0 c1
    c0=$(cpu_s "$server_pid")
    ${ccpus:+taskset -c "$ccpus"} "$rfload" -q -c "$conns" -t "$cthreads" ${rate:+-R "$rate"} -d "${duration}s" --json "$tmp/load.json" "$url" \
        >/dev/null 2>&1
    c1=$(cpu_s "$server_pid")
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=
    python3 - "$tmp/load.json" "$c0" "$c1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
cpu = float(sys.argv[3]) - float(sys.argv[2])
print(r["requests"], cpu, r["requests_per_s"], r["errors"]["total"])
EOF
}

IFS=, read -r -a counts <<<"$loops"
printf '%-6s %5s %12s %10s %14s %7s\n' server loops msg/s cpu_s 'cpu/msg (us)' errors
declare -A rps cpm
for kind in echo http; do
    for n in "${counts[@]}"; do
        read -r req cpu r errs < <(run "$kind" "$n")
        per=$(python3 -c "print(f'{$cpu / max($req, 1) * 1e6:.3f}')")
        printf '%-6s %5s %12.0f %10.2f %14s %7s\n' "$kind" "$n" "$r" "$cpu" "$per" "$errs"
        rps[$kind,$n]=$r
        cpm[$kind,$n]=$per
    done
done
declare -A s3
if [[ -n $bench ]]; then
    for n in "${counts[@]}"; do
        s3[$n]=$("$bench" --benchmark_filter="^S3_spawn_join_loops/$n/" \
            --benchmark_format=json 2>/dev/null | python3 -c '
import json, sys
b = [x for x in json.load(sys.stdin)["benchmarks"] if "real_time" in x]
print(b[0]["real_time"] if b else "null")')
        printf '%-6s %5s %12.1f ms for 1,000,000 tasks\n' S3 "$n" "${s3[$n]}"
    done
fi
{
    for n in "${counts[@]}"; do
        echo "$n ${cpm[echo,$n]} ${cpm[http,$n]} ${rps[echo,$n]} ${rps[http,$n]} ${s3[$n]:-null}"
    done
} | python3 -c '
import json, sys
rows = [l.split() for l in sys.stdin if l.strip()]
base = rows[0]
out = {"loops": [int(r[0]) for r in rows]}
def num(v):
    return None if v == "null" else float(v)
out["per_loops"] = {r[0]: {"echo_cpu_per_msg_us": num(r[1]),
                           "http_cpu_per_msg_us": num(r[2]),
                           "echo_rps": num(r[3]), "http_rps": num(r[4]),
                           "s3_ms": num(r[5])} for r in rows}
def ratio(r, i):
    try:
        return round(float(r[i]) / float(base[i]), 3)
    except (ValueError, ZeroDivisionError):
        return None
for r in rows[1:]:
    n, a = r[0], base[0]
    out[f"echo_cpu_per_msg_ratio_{n}v{a}"] = ratio(r, 1)
    out[f"http_cpu_per_msg_ratio_{n}v{a}"] = ratio(r, 2)
    out[f"echo_rps_ratio_{n}v{a}"] = ratio(r, 3)
    out[f"http_rps_ratio_{n}v{a}"] = ratio(r, 4)
    if r[5] != "null" and base[5] != "null":
        out[f"s3_speedup_{n}"] = round(float(base[5]) / float(r[5]), 3)
print(json.dumps(out))'
