#!/usr/bin/env bash
# W7 (docs/benchmarks.md): HTTP/1.1 keep-alive "hello" loaded by `wrk -t1 -c50`,
# examples/http_hello against nginx (one worker, bench/peers/nginx.conf)
# and Go's net/http (bench/peers/go, GOMAXPROCS=1) when they are installed.
#
# usage: bench/w7_http.sh [--bin PATH/TO/http_hello] [--go-bin PATH/TO/peers-go]
#                         [--cpu N] [--duration S] [--rounds R] [--no-nginx]
#                         [--only ringfiber,nginx,go] [--json]
#
# Server and wrk run on the same CPU (taskset -c N, default 0), as
# docs/benchmarks.md advises for these hypervisor-scheduled vCPUs, and the
# contenders alternate (A B A B ...) for --rounds rounds (default 3) of
# --duration seconds (default 5). Prints every run, then the medians and
# the ratio. Only the ratio of one run of this script means anything.
# "server CPU" is the server process's user + system time per request
# (from /proc), which other load on the machine disturbs far less than
# the request rate. --json (for bench/compare) prints the medians as one
# JSON line on stdout, the rest on stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin="" go_bin="" cpu=0 duration=5 rounds=3 nginx=1 only="" json=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --bin) bin=$2; shift 2 ;;
    --go-bin) go_bin=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --json) json=1; shift ;;
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
want() { [[ -z $only || ,$only, == *,$1,* ]]; }
if want ringfiber; then
    [[ -x $bin ]] || { echo "w7_http.sh: http_hello not found; pass --bin" >&2; exit 2; }
fi
[[ -n $go_bin ]] || go_bin="$here/../build-bench/peers/peers-go"
go=0
if want go && [[ -x $go_bin ]]; then go=1; fi
if [[ -n $only && ,$only, == *,go,* && $go == 0 ]]; then
    echo "w7_http.sh: $go_bin not found (bench/compare builds it)" >&2; exit 2
fi
want nginx || nginx=0
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

# Starts "$@" on $cpu as $server_pid and sets $port from the line
# "listening on HOST:PORT" it prints.
start_listening() {
    taskset -c "$cpu" "$@" >"$tmp/srv.out" 2>"$tmp/srv.err" &
    server_pid=$!
    port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/srv.out")
        [[ -n $port ]] && break
        sleep 0.05
    done
    [[ -n $port ]] || { echo "w7_http.sh: $1 did not start" >&2; cat "$tmp/srv.err" >&2; exit 1; }
}

run_ringfiber() {
    local port
    start_listening "$bin" --port 0
    measure "$port"
    kill -TERM "$server_pid"
    local rc=0
    wait "$server_pid" || rc=$?
    server_pid=""
    [[ $rc == 0 ]] || { echo "w7_http.sh: http_hello exited $rc" >&2; exit 1; }
}

run_go() {
    local port
    GOMAXPROCS=1 start_listening "$go_bin" http-server
    measure "$port"
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=""
}

run_nginx() {
    local port
    port=$(free_port)
    mkdir -p "$tmp/nginx"
    sed -e "s|@DIR@|$tmp/nginx|g" -e "s|@PORT@|$port|g" \
        "$here/peers/nginx.conf" >"$tmp/nginx/nginx.conf"
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

contenders=()
want ringfiber && contenders+=(ringfiber)
[[ $nginx == 1 ]] && contenders+=(nginx)
[[ $go == 1 ]] && contenders+=(go)
[[ ${#contenders[@]} -gt 0 ]] || { echo "w7_http.sh: no contender to run" >&2; exit 2; }
# With --json, stdout carries only the JSON line.
if [[ $json == 1 ]]; then exec 3>&1 1>&2; fi
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
declare -A p50s
for c in "${contenders[@]}"; do
    p50s[$c]=$(cut -d' ' -f2 <<<"${results[$c]}" | grep . | median)
done
if [[ $json == 1 ]]; then
    sep=""
    {
        printf "{"
        for c in "${contenders[@]}"; do
            printf '%s"%s": {"req_per_s": %s, "p50_us": %s, "server_cpu_us": %s}' \
                "$sep" "$c" "${med[$c]}" "${p50s[$c]}" "${cpus[$c]}"
            sep=", "
        done
        printf "}\n"
    } >&3
fi
if [[ $nginx == 1 ]] && want ringfiber; then
    awk -v a="${med[ringfiber]}" -v b="${med[nginx]}" \
        'BEGIN { printf "  ratio ringfiber / nginx = %.2fx req/s (target >= 1)\n", a / b }'
    awk -v a="${cpus[ringfiber]}" -v b="${cpus[nginx]}" \
        'BEGIN { if (a > 0) printf "  server CPU per request nginx / ringfiber = %.2fx\n", b / a }'
fi
if [[ $go == 1 ]] && want ringfiber; then
    awk -v a="${med[ringfiber]}" -v b="${med[go]}" \
        'BEGIN { printf "  ratio ringfiber / Go net/http = %.2fx req/s\n", a / b }'
fi
