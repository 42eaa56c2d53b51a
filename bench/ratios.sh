#!/usr/bin/env bash
# Run ringfiber_bench and print every workload against its in-run baselines.
#
# usage: bench/ratios.sh [PATH/TO/ringfiber_bench] [google-benchmark flags...]
#
# Without flags it runs 5 repetitions with random interleaving (the
# contenders' repetitions alternate, A B A B ..., as docs/benchmarks.md
# asks on these hypervisor-scheduled vCPUs) and compares medians. Any flag given
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
# Targets (docs/benchmarks.md lists them with their workloads): (kind, value).
TARGETS = {"W1": ("ratio_max", 2.0), "W2": ("ns_below", 100.0),
           "W4": ("ratio_max", 2.0), "W5": ("faster_than", "libuv"),
           # W6: ns per message no more than the epoll server's.
           "W6": ("ratio_max", 1.0)}
# The baseline each workload's target is measured against.
PRIMARY = {"W1": "W1_raw_fcontext_baseline", "W2": "W2_raw_fcontext_baseline",
           "W4": "W4_raw_liburing_nop_baseline",
           "W5": "W5_pthread_eventfd_baseline", "W6": "W6_echo_epoll_baseline",
           "T1": "T1_join_baseline"}
# W3 (docs/benchmarks.md): 100,000 tasks sleeping 10 ms are gathered
# within 10 ms + 50 ms, with at most 16 KiB resident per task.
W3_WALL_MS, W3_N, W3_RSS_KIB = 60.0, 100000, 16.0
COUNTERS = ("ns_per_task", "rss_per_task", "minflt_per_task", "spawn_ms",
            "started_ms", "wall_ms", "enters_per_task")
# Workloads measured against another workload's runs (same unit).
REFERENCES = {"Q1": ["W1_raw_fcontext_baseline", "W1_yield_pingpong"]}
# Variants shown for context, to which the workload's target does not apply
# (the exported out-of-line rf_yield, for FFI callers).
NO_TARGET = {"W1_yield_pingpong_call"}
# A subject measured with one feature on, against the same subject
# without it: (suffix, largest ratio allowed).
FEATURE_COST = {"_stall_detector": 1.05}

def sz(name):
    """The connection count of a sweep point ("W6_echo_sweep_100c"), or None."""
    m = re.search(r"_(\d+)c(?:_|$)", name)
    return m.group(1) if m else None

def w5_kind(name):
    """W5 has two figures: compare each only with contenders of its kind."""
    return "throughput64" if "throughput64" in name else "roundtrip"

# Counters worth a column when a benchmark reports them (median over reps).
EXTRA = ["p99_us", "server_cpu_ns", "cpu_bound_msgs_per_s"]

samples = defaultdict(list)   # name -> ns per iteration, one per repetition
counters = defaultdict(lambda: defaultdict(list))  # name -> counter -> values
extra = defaultdict(lambda: defaultdict(list))  # name -> counter -> values
medians = {}                  # name -> median aggregate, when reported
errors = {}
labels = {}

def base_name(b):
    # "W2_spawn_join/iterations:1000000/real_time" -> "W2_spawn_join";
    # a sweep keeps its argument: "W3_sleepers/100000/min_time:0.300/
    # manual_time" -> "W3_sleepers/100000".
    parts = b.get("run_name", b["name"]).split("/")
    return "/".join([parts[0]] + [p for p in parts[1:] if p.isdigit()])

for b in doc["benchmarks"]:
    name = base_name(b)
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
        for c in COUNTERS:
            if c in b:
                counters[name][c].append(b[c])
        for k in EXTRA:
            if k in b:
                extra[name][k].append(b[k])

names = list(dict.fromkeys(list(samples) + list(errors)))
value = {n: medians.get(n, statistics.median(samples[n]) if samples[n] else None)
         for n in names}
def counter(n, c):
    v = counters[n].get(c)
    return statistics.median(v) if v else None

groups = defaultdict(list)
for n in names:
    m = re.match(r"([WQ]\d+|IO)_", n)
    if m:
        groups[m.group(1)].append(n)

ctx = doc.get("context", {})
print(f"\nringfiber {ctx.get('ringfiber_version', '?')}, "
      f"{ctx.get('ringfiber_bench_build', '?')}, "
      f"{ctx.get('num_cpus', '?')} CPUs @ {ctx.get('mhz_per_cpu', '?')} MHz, "
      f"Google Benchmark library built as {ctx.get('library_build_type', '?')}")
missed = False

def sweep_key(n):
    base, _, arg = n.partition("/")
    return (base, int(arg) if arg.isdigit() else 0)

for w in sorted(groups, key=lambda s: (s[0] != "W", int(s[1:]) if s[1:].isdigit() else 1 << 30)):
    members = groups[w]
    # Sweeps (a name with an argument) have a table of their own.
    sweeps = sorted((n for n in members if "/" in n), key=sweep_key)
    members = [n for n in members if "/" not in n]
    # Sorted: with random interleaving the report's order is random.
    # Natural order: Q2_queue_1p_2c before Q2_queue_1p_16c.
    natural = lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]
    bases = sorted((n for n in members if n.endswith("_baseline")), key=natural)
    subjects = sorted((n for n in members if not n.endswith("_baseline")), key=natural)
    refs = [r for r in REFERENCES.get(w, []) if r in value]
    bases += refs
    # The primary baseline is the one PRIMARY names (the one the target is
    # measured against, docs/benchmarks.md); others are context.
    primary = refs[0] if refs else PRIMARY.get(w)
    if primary not in bases:
        primary = bases[0] if bases else None
    print(f"\n{w}")
    for n in bases + subjects:
        if n in errors:
            print(f"  {n:<36} skipped: {errors[n]}")
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
        for feat, limit in FEATURE_COST.items():
            plain = s[: -len(feat)] if s.endswith(feat) else None
            if plain and value.get(plain):
                r = value[s] / value[plain]
                ok = r <= limit
                print(f"  ratio {s} / {plain} = {r:.3f}x")
                print(f"  target: <= {limit:g}x without it -> {'MET' if ok else 'MISSED'} ({r:.3f}x)")
                missed |= not ok
        for bname in bases:
            same = ("_warm" in bname) == ("_warm" in s) or bname in refs
            # A sweep point ("_<N>c") is paired with the baseline at N only.
            if sz(s) or sz(bname):
                if sz(s) != sz(bname):
                    continue
                same = True
            if w == "W5" and w5_kind(bname) != w5_kind(s):
                continue
            if value.get(bname) and (bname == primary and not sz(s) or same):
                mark = "  (primary baseline)" if bname == primary else ""
                print(f"  ratio {s} / {bname} = {value[s] / value[bname]:.2f}x{mark}")
        kind, limit = TARGETS.get(w, (None, None)) if s not in NO_TARGET else (None, None)
        if "_variant_" in s or sz(s):
            kind = None  # a design choice or a sweep point: ratios only
        if kind == "ratio_max" and primary and value.get(primary):
            r = value[s] / value[primary]
            ok = r <= limit
            extra_txt = (f"; {100.0 / r:.0f}% of raw ops/s" if w == "W4" else "")
            print(f"  target: <= {limit:g}x {primary}  -> {'MET' if ok else 'MISSED'} ({r:.2f}x{extra_txt})")
            missed |= not ok
        elif kind == "faster_than":
            for bname in bases:
                if limit in bname and w5_kind(bname) == w5_kind(s) and value.get(bname):
                    r = value[s] / value[bname]
                    ok = r < 1.0
                    print(f"  target: faster than {bname} -> {'MET' if ok else 'MISSED'} ({r:.2f}x)")
                    missed |= not ok
        elif kind == "ns_below":
            ok = value[s] < limit
            print(f"  target: < {limit:g} ns per task -> {'MET' if ok else 'MISSED'} ({value[s]:.1f} ns)")
            missed |= not ok
    wide = max([30] + [len(n) for n in sweeps])
    if sweeps:
        print(f"  {'sweep':<{wide}} {'round ms':>10} {'ns/task':>9} {'RSS/task':>10} "
              f"{'faults/task':>11} {'spawned ms':>10} {'started ms':>10}")
    for n in sweeps:
        if n in errors:
            print(f"  {n:<{wide}} skipped: {errors[n]}")
            continue
        def cell(c, width, f, scale=1.0, unit=""):
            v = counter(n, c)
            return f"{v / scale:{width}{f}}{unit}" if v is not None else " " * (width - 1 + len(unit)) + "-"
        print(f"  {n:<{wide}} {value[n] / 1e6:10.2f} {cell('ns_per_task', 9, '.0f')} "
              f"{cell('rss_per_task', 7, '.2f', 1024, ' KiB')} {cell('minflt_per_task', 11, '.3f')} "
              f"{cell('spawn_ms', 10, '.2f')} {cell('started_ms', 10, '.2f')}")
    if w == "W3":
        # Against the kernel-side floors (no tasks): one kernel timeout per
        # sleeper, as rf_sleep works, and one per distinct deadline.
        for n in sweeps:
            base, _, arg = n.partition("/")
            if n in errors or base.endswith("_baseline"):
                continue
            for fl in ("W3_raw_timeout_per_sleeper_baseline", "W3_raw_timeout_coalesced_baseline"):
                f = f"{fl}/{arg}"
                if value.get(f) and f not in errors:
                    print(f"  ratio {n} / {f} = {value[n] / value[f]:.2f}x")
        for n in sweeps:
            if n in errors or not n.endswith(f"/{W3_N}") or "_baseline" in n:
                continue
            ms = value[n] / 1e6
            ok = ms <= W3_WALL_MS
            print(f"  target: {n} wall <= {W3_WALL_MS:g} ms -> "
                  f"{'MET' if ok else 'MISSED'} ({ms:.1f} ms = 10 ms + {ms - 10:.1f} ms)")
            missed |= not ok
        worst = max(((counter(n, "rss_per_task") or 0.0, n) for n in sweeps
                     if n not in errors and "_baseline" not in n), default=None)
        if worst:
            kib = worst[0] / 1024
            ok = kib <= W3_RSS_KIB
            print(f"  target: RSS <= {W3_RSS_KIB:g} KiB per task -> "
                  f"{'MET' if ok else 'MISSED'} (worst {kib:.2f} KiB, {worst[1]})")
            missed |= not ok

if missed and os.environ.get("RF_BENCH_STRICT") == "1":
    sys.exit(1)
EOF
