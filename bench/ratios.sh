#!/usr/bin/env bash
# Run ringfiber_bench and print every workload against its in-run baselines.
#
# usage: bench/ratios.sh [PATH/TO/ringfiber_bench] [google-benchmark flags...]
#
# Without flags it runs 5 repetitions with random interleaving (the
# contenders' repetitions alternate, A B A B ..., which DESIGN.md recommends
# on these hypervisor-scheduled vCPUs) and compares medians. Any flag given
# replaces those defaults, e.g. `bench/ratios.sh --benchmark_filter=W1`.
# Set RF_BENCH_STRICT=1 to exit 1 when a target is missed (for CI).
#
# Only ratios measured in one run are meaningful; absolute figures move
# between runs and machines.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=
if [[ $# -gt 0 && -x $1 && ! -d $1 ]]; then
    bin=$1
    shift
else
    # Next to this script when copied into the build tree, else the usual
    # build directories of a source checkout.
    for c in "$here/ringfiber_bench" "$here/../build-bench/bench/ringfiber_bench" \
             "$here/../build/bench/ringfiber_bench"; do
        if [[ -x $c ]]; then bin=$c; break; fi
    done
fi
if [[ -z $bin ]]; then
    echo "ratios.sh: ringfiber_bench not found; pass its path as first argument" >&2
    exit 2
fi

if [[ $# -eq 0 ]]; then
    set -- --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
fi

json=$(mktemp)
trap 'rm -f "$json"' EXIT
# The JSON report goes to a file; the console report stays on the terminal
# so a long run shows progress.
"$bin" --benchmark_out="$json" --benchmark_out_format=json "$@" >&2

python3 - "$json" <<'EOF'
import json, os, re, statistics, sys
from collections import defaultdict

with open(sys.argv[1]) as f:
    doc = json.load(f)

TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
# Targets from DESIGN.md section 5: (kind, value).
TARGETS = {"W1": ("ratio_max", 2.0), "W2": ("ns_below", 100.0),
           # W6: ns per message no more than the epoll server's.
           "W6": ("ratio_max", 1.0)}
# Counters worth a column when a benchmark reports them (median over reps).
EXTRA = ["p99_us", "server_cpu_ns", "cpu_bound_msgs_per_s"]

samples = defaultdict(list)   # name -> ns per iteration, one per repetition
extra = defaultdict(lambda: defaultdict(list))  # name -> counter -> values
medians = {}                  # name -> median aggregate, when reported
errors = {}
labels = {}
for b in doc["benchmarks"]:
    # "W2_spawn_join/iterations:1000000/real_time" -> "W2_spawn_join"
    name = b.get("run_name", b["name"]).split("/")[0]
    if b.get("error_occurred"):
        errors[name] = b.get("error_message", "error")
        continue
    ns = b["real_time"] * TO_NS[b.get("time_unit", "ns")]
    if b.get("run_type") == "aggregate":
        if b.get("aggregate_name") == "median":
            medians[name] = ns
    else:
        samples[name].append(ns)
        labels[name] = b.get("label", "")
        for k in EXTRA:
            if k in b:
                extra[name][k].append(b[k])

names = list(dict.fromkeys(list(samples) + list(errors)))
value = {n: medians.get(n, statistics.median(samples[n]) if samples[n] else None)
         for n in names}

groups = defaultdict(list)
for n in names:
    m = re.match(r"(W\d+|IO)_", n)
    if m:
        groups[m.group(1)].append(n)

ctx = doc.get("context", {})
print(f"\nringfiber {ctx.get('ringfiber_version', '?')}, "
      f"{ctx.get('ringfiber_bench_build', '?')}, "
      f"{ctx.get('num_cpus', '?')} CPUs @ {ctx.get('mhz_per_cpu', '?')} MHz, "
      f"Google Benchmark library built as {ctx.get('library_build_type', '?')}")
missed = False
for w in sorted(groups, key=lambda s: int(s[1:]) if s[1:].isdigit() else 1 << 30):
    members = groups[w]
    # Sorted: with random interleaving the report's order is random.
    bases = sorted(n for n in members if n.endswith("_baseline"))
    subjects = sorted(n for n in members if not n.endswith("_baseline"))
    # The primary baseline is the one named in the brief; others are context.
    primary = f"{w}_raw_fcontext_baseline"
    if primary not in bases:
        primary = bases[0] if bases else None
    print(f"\n{w}")
    for n in bases + subjects:
        if n in errors:
            print(f"  {n:<32} skipped: {errors[n]}")
        else:
            reps = len(samples[n])
            more = "".join(f"  {k} {statistics.median(v):.1f}"
                           for k, v in extra[n].items())
            print(f"  {n:<32} {value[n]:9.2f} ns{more}   ({reps} rep{'s' if reps != 1 else ''}; {labels.get(n, '')})")
    for s in subjects:
        if value.get(s) is None:
            continue
        # Against the primary baseline, and against the others in the same
        # condition (a "_warm" subject with "_warm" baselines, cold with cold).
        for bname in bases:
            same = ("_warm" in bname) == ("_warm" in s)
            if value.get(bname) and (bname == primary or same):
                mark = "  (primary baseline)" if bname == primary else ""
                print(f"  ratio {s} / {bname} = {value[s] / value[bname]:.2f}x{mark}")
        kind, limit = TARGETS.get(w, (None, None))
        if "_variant_" in s:
            kind = None  # a measurement for a design choice, not the subject
        if kind == "ratio_max" and primary and value.get(primary):
            r = value[s] / value[primary]
            ok = r <= limit
            print(f"  target: <= {limit:g}x {primary}  -> {'MET' if ok else 'MISSED'} ({r:.2f}x)")
            missed |= not ok
        elif kind == "ns_below":
            ok = value[s] < limit
            print(f"  target: < {limit:g} ns per task -> {'MET' if ok else 'MISSED'} ({value[s]:.1f} ns)")
            missed |= not ok

if missed and os.environ.get("RF_BENCH_STRICT") == "1":
    sys.exit(1)
EOF
