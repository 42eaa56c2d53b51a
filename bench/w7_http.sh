#!/usr/bin/env bash
# W7 of DESIGN.md §5: HTTP/1.1 keep-alive "hello" loaded by `wrk -t1 -c50`,
# examples/http_hello against nginx (one worker) when nginx is installed.
#
# usage: bench/w7_http.sh [--bin PATH/TO/http_hello] [--cpu N] [--duration S]
#                         [--rounds R] [--no-nginx]
#
# Server and wrk run on the same CPU (taskset -c N, default 0), as
# DESIGN.md §5 advises for these hypervisor-scheduled vCPUs, and the
# contenders alternate (A B A B ...) for --rounds rounds (default 3) of
# --duration seconds (default 5). Prints every run, then the medians and
# the ratio. Only the ratio of one run of this script means anything.
# "server CPU" is the server process's user + system time per request
# (from /proc), which other load on the machine disturbs far less than
# the request rate.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin="" cpu=0 duration=5 rounds=3 nginx=1
while [[ $# -gt 0 ]]; do
    case $1 in
    --bin) bin=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --no-nginx) nginx=0; shift ;;
    *) echo "w7_http.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [[ -z $bin ]]; then
    for c in "$here/../examples/http_hello" "$here/../build-bench/examples/http_hello" \
             "$here/../build/examples/http_hello"; do
        if [[ -x $c ]]; then bin=$c; break; fi
    done
fi
[[ -x $bin ]] || { echo "w7_http.sh: http_hello not found; pass --bin" >&2; exit 2; }
command -v wrk >/dev/null || { echo "w7_http.sh: wrk not found (apt-get install wrk)" >&2; exit 2; }
if [[ $nginx == 1 ]] && ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    echo "w7_http.sh: nginx not found (apt-get install nginx-light): ringfiber only" >&2
    nginx=0
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

tmp=$(mktemp -d)
server_pid=""
cleanup() {
    if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wrk against 127.0.0.1:$1; prints "req/s p50 p99 requests" (latencies
# in us).
load() {
    local out
    out=$(taskset -c "$cpu" wrk -t1 -c50 -d"${duration}s" --latency \
        "http://127.0.0.1:$1/" 2>&1)
    echo "$out" >>"$tmp/wrk.log"
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
        echo "w7_http.sh: wrk reported errors:" >&2
        echo "$out" >&2
    fi
    awk '
        function us(v) {
            if (v ~ /us$/) return v + 0
            if (v ~ /ms$/) return v * 1000
            if (v ~ /s$/) return v * 1000000
            return v
        }
        /Requests\/sec:/ { rps = $2 }
        / requests in / { n = $1 }
        $1 == "50.000%" || $1 == "50%" { p50 = us($2) }
        $1 == "99.000%" || $1 == "99%" { p99 = us($2) }
        END { printf "%.0f %.0f %.0f %d\n", rps, p50, p99, n }' <<<"$out"
}

# CPU time (user + system) of process $1 so far, in clock ticks.
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# Runs wrk against port $1 of server $server_pid and prints
# "req/s p50 p99 server-CPU-us-per-request".
measure() {
    local t0 t1 rps p50 p99 n
    t0=$(cpu_ticks "$server_pid")
    read -r rps p50 p99 n <<<"$(load "$1")"
    t1=$(cpu_ticks "$server_pid")
    awk -v rps="$rps" -v p50="$p50" -v p99="$p99" -v n="$n" -v d=$((t1 - t0)) \
        -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%s %s %s %.2f\n", rps, p50, p99, n ? d / hz * 1e6 / n : 0 }'
}

run_ringfiber() {
    taskset -c "$cpu" "$bin" --port 0 >"$tmp/rf.out" 2>"$tmp/rf.err" &
    server_pid=$!
    local port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/rf.out")
        [[ -n $port ]] && break
        sleep 0.05
    done
    [[ -n $port ]] || { echo "w7_http.sh: http_hello did not start" >&2; cat "$tmp/rf.err" >&2; exit 1; }
    measure "$port"
    kill -TERM "$server_pid"
    local rc=0
    wait "$server_pid" || rc=$?
    server_pid=""
    [[ $rc == 0 ]] || { echo "w7_http.sh: http_hello exited $rc" >&2; exit 1; }
}

run_nginx() {
    local port
    port=$(free_port)
    mkdir -p "$tmp/nginx"
    cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path $tmp/nginx;
    proxy_temp_path $tmp/nginx;
    fastcgi_temp_path $tmp/nginx;
    uwsgi_temp_path $tmp/nginx;
    scgi_temp_path $tmp/nginx;
    server {
        listen 127.0.0.1:$port;
        location / { default_type text/plain; return 200 "hello world!"; }
    }
}
EOF
    taskset -c "$cpu" "$NGINX" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
        >"$tmp/nginx/out" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "w7_http.sh: nginx did not start:" >&2
        cat "$tmp/nginx/out" "$tmp/nginx/error.log" >&2
        exit 1
    fi
    measure "$port"
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=""
}

contenders=(ringfiber)
[[ $nginx == 1 ]] && contenders+=(nginx)
declare -A results
echo "W7: wrk -t1 -c50 -d${duration}s, server and wrk on CPU $cpu, $rounds rounds"
for r in $(seq "$rounds"); do
    for c in "${contenders[@]}"; do
        line=$("run_$c")
        results[$c]+="$line"$'\n'
        read -r rps p50 p99 cpu_us <<<"$line"
        printf "  round %d %-10s %9s req/s   p50 %6s us   p99 %7s us   server CPU %5s us/req\n" \
            "$r" "$c" "$rps" "$p50" "$p99" "$cpu_us"
    done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "medians:"
declare -A med cpus
for c in "${contenders[@]}"; do
    med[$c]=$(cut -d' ' -f1 <<<"${results[$c]}" | grep . | median)
    p99=$(cut -d' ' -f3 <<<"${results[$c]}" | grep . | median)
    cpus[$c]=$(cut -d' ' -f4 <<<"${results[$c]}" | grep . | median)
    printf "  %-10s %9.0f req/s   p99 %s us   server CPU %s us/req\n" "$c" "${med[$c]}" "$p99" "${cpus[$c]}"
done
if [[ $nginx == 1 ]]; then
    awk -v a="${med[ringfiber]}" -v b="${med[nginx]}" \
        'BEGIN { printf "  ratio ringfiber / nginx = %.2fx req/s (target >= 1)\n", a / b }'
    awk -v a="${cpus[ringfiber]}" -v b="${cpus[nginx]}" \
        'BEGIN { if (a > 0) printf "  server CPU per request nginx / ringfiber = %.2fx\n", b / a }'
fi
