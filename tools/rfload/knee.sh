#!/bin/bash
# The highest rate examples/http_hello and nginx (one worker,
# bench/peers/nginx.conf) sustain under a p99 objective: one rfload sweep
# each, the server pinned to one CPU and rfload to another, and a plot of
# each (percentile spectrum; p99 against the rate, the knee marked).
#   tools/rfload/knee.sh [--build DIR] [--rates LIST@TIME] [--slo TIME]
#                        [--server-cpu N] [--client-cpu N] [--out DIR]
# Defaults: build-bench, 20000,40000,...,160000@3s, p99 1ms, CPUs 0 and 1,
# plots in /tmp/rfload-knee. Servers on 127.0.0.1 at ephemeral ports,
# stopped by PID. rfload's own limit shows as sends over 1 ms late: a knee
# with many late sends is the client's, not the server's.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build-bench
rates=20000,40000,60000,80000,100000,120000,140000,160000@3s
slo=1ms scpu=0 ccpu=1 out=/tmp/rfload-knee
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --slo) slo=$2; shift 2 ;;
    --server-cpu) scpu=$2; shift 2 ;;
    --client-cpu) ccpu=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--rates R,R,...@T] [--slo TIME]" \
            "[--server-cpu N] [--client-cpu N] [--out DIR]" >&2; exit 2 ;;
    esac
done
rfload=$build/tools/rfload/rfload
hello=$build/examples/http_hello
for b in "$rfload" "$hello"; do
    [ -x "$b" ] || { echo "knee.sh: $b not built" >&2; exit 1; }
done
mkdir -p "$out"
tmp=$(mktemp -d /tmp/rfload_knee.XXXXXX)
pid=
stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
trap 'stop; rm -rf "$tmp"' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

sweep() { # sweep NAME PORT
    local name=$1 port=$2
    echo "== $name (server on CPU $scpu, rfload on CPU $ccpu)"
    taskset -c "$ccpu" "$rfload" -q -c 64 -R "$rates" --slo-p99 "$slo" \
        --plot "$out/$name.png" --json "$out/$name.json" \
        "http://127.0.0.1:$port/" | sed -n '/target rate/p;/^  sweep/,$p'
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); k=d['knee'];
print('knee:', '%.0f req/s' % k['target_rate'] if k else 'none')" "$out/$name.json"
}

port=$(free_port)
taskset -c "$scpu" "$hello" --port "$port" >"$tmp/hello.log" 2>&1 &
pid=$!
sleep 0.3
sweep http_hello "$port"
stop

nginx=$(command -v nginx || echo /usr/sbin/nginx)
if [ -x "$nginx" ]; then
    port=$(free_port)
    mkdir -p "$tmp/nginx"
    sed -e "s|@DIR@|$tmp/nginx|g" -e "s|@PORT@|$port|g" \
        "$root/bench/peers/nginx.conf" >"$tmp/nginx/nginx.conf"
    taskset -c "$scpu" "$nginx" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
        >"$tmp/nginx/out" 2>&1 &
    pid=$!
    sleep 0.3
    sweep nginx "$port"
    stop
else
    echo "== nginx not installed (apt-get install nginx): skipped"
fi
echo "plots and JSON in $out"
