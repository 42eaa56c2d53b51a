#!/usr/bin/env bash
# User-space instructions per message of the W6 echo server
# (examples/echo_server), counted by callgrind, and where they go; with
# --http, per request of the W7 server (examples/http_hello) under
# `wrk -t1 -c N` instead (needs wrk: apt-get install wrk).
#
# usage: bench/w6_callgrind.sh [--http] [--bin PATH/TO/SERVER] [--conns N]
#                              [--seconds S] [-- SERVER ARGS...]
#
# The server runs under `valgrind --tool=callgrind --dump-instr=yes`; the
# load client (bench/echo_epoll's, native) warms it up for 2 s, the
# counters are zeroed, a run of --seconds (default 5) with --conns
# connections (default 50) x 64 B follows, and the counters are dumped.
# The instruction counts are exact whatever the machine's load: the
# instructions the server's own code (runtime, libc, liburing) executes
# per echoed message. callgrind follows calls and returns, which task
# switches confuse, so its own per-function report is wrong here: the
# costs are summed per instruction address and mapped to symbols with nm.
# Kernel work (the system calls, the TCP stack) is not counted.
# Needs valgrind (apt-get install valgrind) and python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin="" conns=50 seconds=5 http=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --http) http=1; shift ;;
    --bin) bin=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "w6_callgrind.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
server=echo_server
((http)) && server=http_hello
if [[ -z $bin ]]; then
    for c in "$here/../build-bench/examples/$server" "$here/../build/examples/$server"; do
        if [[ -x $c ]]; then bin=$c; break; fi
    done
fi
load=""
if ((http)); then
    load=$(command -v wrk || true)
else
    for c in "$(dirname "$bin")/../bench/echo_epoll" "$here/../build-bench/bench/echo_epoll"; do
        if [[ -x $c ]]; then load=$c; break; fi
    done
fi
[[ -x $bin && -n $load ]] || { echo "w6_callgrind.sh: $server, or its load (echo_epoll, wrk), not found; pass --bin" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "w6_callgrind.sh: valgrind not found (apt-get install valgrind)" >&2; exit 2; }

tmp=$(mktemp -d)
pid=""
stop() { # SIGINT, and SIGKILL if it has not stopped within 10 s
    kill -INT "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    [[ -n $pid ]] && stop
    rm -rf "$tmp"
}
trap cleanup EXIT
valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file="$tmp/cg.out" \
    "$bin" --port 0 --idle-timeout 0 "$@" >"$tmp/srv.out" 2>"$tmp/srv.err" &
pid=$!
port=""
for _ in $(seq 200); do
    port=$(sed -n 's/^listening on .*:\([0-9]*\).*$/\1/p' "$tmp/srv.out")
    [[ -n $port ]] && break
    sleep 0.1
done
[[ -n $port ]] || { echo "w6_callgrind.sh: the server did not start" >&2; cat "$tmp/srv.err" >&2; exit 1; }
if ((http)); then
    "$load" -t1 -c"$conns" -d2 "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    msgs=$("$load" -t1 -c"$conns" -d"$seconds" "http://127.0.0.1:$port/" |
           awk '/requests in/{print $1}')
else
    "$load" load "$port" --conns "$conns" --size 64 --seconds 2 >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    msgs=$("$load" load "$port" --conns "$conns" --size 64 --seconds "$seconds" |
           tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["msgs"])')
fi
callgrind_control -d "$pid" >/dev/null 2>&1
stop
pid=""
dump=$(ls "$tmp"/cg.out.* | head -1)
python3 - "$dump" "$msgs" "$conns" "$server" <<'EOF'
import bisect, collections, re, subprocess, sys
path, msgs, conns, server = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
names, ob, addr, skip = {}, None, 0, False
cost = collections.Counter()
def name(s):
    m = re.match(r'\((\d+)\)(?: (.*))?', s)
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names[m.group(1)]
for line in open(path):
    line = line.rstrip('\n')
    if line.startswith('ob='):
        ob = name(line[3:]); continue
    if line.startswith('cob='):
        name(line[4:]); continue
    if line.startswith('calls='):
        skip = True; continue  # the next line is the call's inclusive cost
    if not line or line[0] not in '0123456789+-*':
        continue
    p = line.split()
    a = p[0]
    if a.startswith('0x'):
        addr = int(a, 16)
    elif a[0] in '+-':
        d = int(a[1:], 16) if a[1:].startswith('0x') else int(a[1:])
        addr += d if a[0] == '+' else -d
    if skip:
        skip = False; continue
    if len(p) >= 3:
        cost[(ob, addr)] += int(p[2])
tabs = {}
def symtab(o):
    if o not in tabs:
        out = subprocess.run(['nm', '-n', '--defined-only', o], capture_output=True, text=True).stdout
        if not out.strip():
            out = subprocess.run(['nm', '-n', '-D', '--defined-only', o], capture_output=True, text=True).stdout
        rows = [(int(x[0], 16), x[2]) for x in (l.split() for l in out.splitlines())
                if len(x) >= 3 and x[1] in 'tTwWiI']
        tabs[o] = ([r[0] for r in rows], [r[1] for r in rows])
    return tabs[o]
per, total = collections.Counter(), 0
for (o, a), c in cost.items():
    total += c
    at, nm = symtab(o) if o else ([], [])
    i = bisect.bisect_right(at, a) - 1
    per[(o.rsplit('/', 1)[-1] if o else '?', nm[i] if i >= 0 else hex(a))] += c
what = ('W7 http_hello', 'requests', 'request') if server == 'http_hello' else \
       ('W6 echo_server', 'messages', 'message')
print('%s, %s connections: %d %s, %.0f user-space instructions per %s' %
      (what[0], conns, msgs, what[1], total / msgs, what[2]))
for (o, n), c in per.most_common(20):
    print('  %7.1f  %5.1f%%  %s  %s' % (c / msgs, 100.0 * c / total, n, o))
EOF
