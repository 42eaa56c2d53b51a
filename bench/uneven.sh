#!/usr/bin/env bash
# Reuseport against hand-off on an uneven load: a few long-lived heavy
# connections (large echo messages, closed loop) among many light ones
# (small messages at a fixed rate, open loop, latency measured from the
# intended send time). The echo server runs on 2 loops; the heavy clients
# connect first, so where they land decides the balance: reuseport puts
# each on the loop its 4-tuple hashes to, hand-off on the loop with the
# fewest connections open.
#
# usage: bench/uneven.sh [--runs 5] [--duration 3] [--heavy 4]
#                        [--light 60] [--rate 2000] [--size 65536]
#                        [--build DIR]
#
# Per run: the busier loop's share of the server's loop CPU (its thread,
# rf-loop-N, from /proc/PID/task; 0.50: even) over 1 s of the heavy
# clients alone (h_share: where they landed) and over the whole light run
# (each loop's CPU seconds, share), the light clients' p50/p99 and the
# heavy clients' MB/s. Then the
# medians per mode and one JSON line. Loopback only; every process it
# starts is stopped by its PID.
set -euo pipefail

runs=5 duration=3 heavy=4 light=60 rate=2000 size=65536 build=build
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --heavy) heavy=$2; shift 2 ;;
    --light) light=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
server=$build/examples/echo_server rfload=$build/tools/rfload/rfload
for b in "$server" "$rfload"; do
    [[ -x $b ]] || { echo "uneven.sh: $b is not built" >&2; exit 2; }
done
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)

# "cpu0 cpu1": CPU seconds of the threads rf-loop-0 and rf-loop-1 of $1.
loop_cpu() {
    local pid=$1 t0=0 t1=0 comm
    for task in /proc/"$pid"/task/*; do
        comm=$(cat "$task/comm" 2>/dev/null || true)
        case $comm in
        rf-loop-0) t0=$(awk '{ print $14 + $15 }' "$task/stat") ;;
        rf-loop-1) t1=$(awk '{ print $14 + $15 }' "$task/stat") ;;
        esac
    done
    echo "$t0 $t1"
}

# one MODE RUN: prints "cpu0 cpu1 share p50_us p99_us heavy_MBps"
one() {
    local mode=$1
    "$server" --port 0 --loops 2 --accept "$mode" >"$tmp/out" 2>"$tmp/err" &
    local spid=$!
    pids+=("$spid")
    local port=
    for _ in $(seq 100); do
        port=$(grep -o '127\.0\.0\.1:[0-9]*' "$tmp/out" 2>/dev/null | cut -d: -f2 || true)
        [[ -n $port ]] && break
        sleep 0.05
    done
    [[ -n $port ]] || { echo "uneven.sh: the server did not start" >&2; exit 1; }
    # The heavy connections first: they are the ones to place well.
    "$rfload" -q -c "$heavy" -s "$size" -d "$((duration + 2))s" \
        --json "$tmp/heavy.json" "echo://127.0.0.1:$port" >/dev/null 2>&1 &
    local hpid=$!
    pids+=("$hpid")
    sleep 0.3
    read -r h0 h1 < <(loop_cpu "$spid")
    sleep 1 # the heavy connections alone: where they landed
    read -r a0 a1 < <(loop_cpu "$spid")
    "$rfload" -q -c "$light" -R "$rate" -d "${duration}s" \
        --json "$tmp/light.json" "echo://127.0.0.1:$port" >/dev/null 2>&1
    read -r b0 b1 < <(loop_cpu "$spid")
    wait "$hpid" || true
    kill -TERM "$spid"
    wait "$spid" || true
    pids=()
    python3 - "$tmp/light.json" "$tmp/heavy.json" "$a0" "$a1" "$b0" "$b1" \
        "$ticks" "$h0" "$h1" <<'EOF'
import json, sys
light, heavy = (json.load(open(p)) for p in sys.argv[1:3])
a0, a1, b0, b1, hz, h0, h1 = map(float, sys.argv[3:10])
def busier(x, y):
    return max(x, y) / (x + y) if x + y > 0 else 0
c0, c1 = (b0 - a0) / hz, (b1 - a1) / hz
share = busier(c0, c1)
hshare = busier(a0 - h0, a1 - h1)
lat = light["latency_ns"]
mbps = heavy["bytes_received"] / heavy["elapsed_s"] / 1e6
errs = light["errors"]["total"] + heavy["errors"]["total"]
print(f"{hshare:.3f} {c0:.2f} {c1:.2f} {share:.3f} {lat['p50'] / 1e3:.1f} "
      f"{lat['p99'] / 1e3:.1f} {mbps:.1f} {errs}")
EOF
}

printf '%-9s %3s %7s %8s %8s %7s %9s %9s %9s %6s\n' mode run h_share \
    cpu0_s cpu1_s share p50_us p99_us heavy_MBps errors
: >"$tmp/all"
for r in $(seq "$runs"); do
    for mode in reuseport handoff; do # interleaved: drift hits both alike
        read -r hs c0 c1 share p50 p99 mbps errs < <(one "$mode")
        printf '%-9s %3s %7s %8s %8s %7s %9s %9s %9s %6s\n' "$mode" "$r" \
            "$hs" "$c0" "$c1" "$share" "$p50" "$p99" "$mbps" "$errs"
        echo "$mode $share $p50 $p99 $mbps $hs" >>"$tmp/all"
    done
done
python3 - "$tmp/all" <<'EOF'
import json, statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
out = {}
for mode in ("reuseport", "handoff"):
    m = [r for r in rows if r[0] == mode]
    med = lambda i: round(st.median(float(r[i]) for r in m), 3)
    out[mode] = {"heavy_busier_loop_share": med(5),
                 "heavy_share_max": max(float(r[5]) for r in m),
                 "busier_loop_share": med(1), "light_p50_us": med(2),
                 "light_p99_us": med(3), "heavy_MBps": med(4)}
    o = out[mode]
    print(f"median {mode:9s}: heavy alone, busier loop "
          f"{o['heavy_busier_loop_share']:.3f} of the CPU (worst "
          f"{o['heavy_share_max']:.3f}); with the light load "
          f"{o['busier_loop_share']:.3f}, light p99 {o['light_p99_us']} us, "
          f"heavy {o['heavy_MBps']} MB/s")
print(json.dumps(out))
EOF
