#!/usr/bin/env bash
# Old vs new: two builds of ringfiber_bench (say the previous commit's and
# this one's), run alternately A B A B ... on one CPU, each run a separate
# process with the same filter; prints, per benchmark, the median time of
# each build and new/old. Alternating whole runs spreads the machine's
# drift (other load, frequency, the hypervisor) over both builds alike.
#
# usage: bench/ab.sh OLD_BIN NEW_BIN FILTER [ROUNDS] [CPU]
#   e.g. bench/ab.sh /tmp/old/build-bench/bench/ringfiber_bench \
#            build-bench/bench/ringfiber_bench '^W2_spawn_join$|^W1_yield' 10
#
# Build both the same way (cmake -DCMAKE_BUILD_TYPE=Release); a git
# worktree of the old commit is the easy way to have both side by side.
# Only the ratio means something: absolute figures move between runs.
set -euo pipefail
if [[ $# -lt 3 ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
old=$1 new=$2 filter=$3 rounds=${4:-10} cpu=${5:-0}
for b in "$old" "$new"; do
    [[ -x $b ]] || { echo "ab.sh: $b is not an executable" >&2; exit 2; }
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for ((i = 0; i < rounds; i++)); do
    for side in old new; do
        bin=$old
        [[ $side == new ]] && bin=$new
        taskset -c "$cpu" "$bin" --benchmark_filter="$filter" \
            --benchmark_out="$dir/$side.$i.json" --benchmark_out_format=json \
            >/dev/null 2>&1
    done
    printf '.' >&2
done
echo >&2
python3 - "$dir" "$rounds" <<'EOF'
import json, statistics, sys
from collections import defaultdict
d, rounds = sys.argv[1], int(sys.argv[2])
TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
t = {"old": defaultdict(list), "new": defaultdict(list)}
for side in t:
    for i in range(rounds):
        with open(f"{d}/{side}.{i}.json") as f:
            for b in json.load(f)["benchmarks"]:
                if b.get("run_type") == "aggregate":
                    continue
                t[side][b["name"]].append(b["real_time"] * TO_NS[b["time_unit"]])
print(f"{'benchmark':56} {'old ns':>10} {'new ns':>10} {'new/old':>8}   (medians of {rounds} alternating runs)")
for name in t["old"]:
    if name not in t["new"]:
        continue
    o, n = statistics.median(t["old"][name]), statistics.median(t["new"][name])
    print(f"{name:56} {o:10.1f} {n:10.1f} {n / o:8.3f}")
EOF
