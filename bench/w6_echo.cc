// W6 (docs/benchmarks.md): TCP echo on 127.0.0.1, 50 connections, 64-byte
// ping-pong, one server loop, against a hand-written epoll server measured
// in the same run.
//
// One iteration = one message echoed (sent by the client, read back whole),
// so the time per iteration is 1 / (messages per second) and the ratio that
// bench/ratios.sh prints is directly the throughput ratio. Latency is the
// round trip of each message as the client sees it; p50/p99/max go into
// counters (microseconds). server_cpu_ns is the server thread's CPU time
// per message over the timed loop: the efficiency figure, which the other
// processes of a shared machine do not disturb the way they disturb wall
// time. cpu_bound_msgs_per_s = 1 / (client + server CPU per message), the
// rate the pair would reach with its CPU to itself.
//
// Same load for every contender: the epoll client of echo_epoll.c in the
// benchmark thread, the server in a thread of its own, both pinned to the
// same CPU (the first one the process may run on; start the binary under
// `taskset -c N` to choose). docs/benchmarks.md explains why: on these
// hypervisor-scheduled vCPUs a cross-core round trip is bimodal, while
// same-core figures are stable to a few percent.

#include <benchmark/benchmark.h>

#include <ringfiber.h>

#include "echo_epoll.h"
#include "w6_servers.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kConns = 50;
constexpr size_t kMsgSize = 64;
constexpr int kWarmup = 2000; // messages before the timed loop

// The first CPU of the process's affinity mask, or -1.
int first_allowed_cpu() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set))
            return i;
    return -1;
}

void pin_self(int cpu) {
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

uint64_t thread_cpu_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

double percentile_us(std::vector<uint32_t> &v, double p) {
    if (v.empty())
        return 0;
    size_t k = size_t(p * double(v.size() - 1) + 0.5);
    std::nth_element(v.begin(), v.begin() + long(k), v.end());
    return v[k] / 1000.0;
}

// Runs server(lfd, conns) in a thread and the load client here.
void w6_run(benchmark::State &state, w6_server_fn server, const char *label,
            int conns = kConns) {
    uint16_t port = 0;
    int lfd = echo_listen_loopback(std::max(128, conns), &port);
    if (lfd < 0) {
        state.SkipWithError(("listen: " + std::string(strerror(-lfd))).c_str());
        return;
    }
    int cpu = first_allowed_cpu();
    cpu_set_t saved;
    bool restore = pthread_getaffinity_np(pthread_self(), sizeof saved,
                                          &saved) == 0;
    pin_self(cpu);

    int server_rc = 0;
    std::thread srv([&] {
        pin_self(cpu);
        server_rc = server(lfd, conns);
    });

    echo_load c;
    int rc = echo_load_open(&c, port, conns, kMsgSize);
    if (rc == 0)
        rc = echo_load_start(&c);
    for (int i = 0; rc == 0 && i < kWarmup; i++) {
        int64_t r = echo_load_next(&c);
        if (r < 0)
            rc = int(r);
    }
    std::vector<uint32_t> lat;
    lat.reserve(1u << 22);
    // The server thread's CPU time over the timed loop: what one message
    // costs the server, unaffected by whatever else the machine runs.
    clockid_t srv_clock;
    bool have_clock = pthread_getcpuclockid(srv.native_handle(), &srv_clock) == 0;
    uint64_t srv_cpu0 = have_clock ? thread_cpu_ns(srv_clock) : 0, srv_cpu1 = 0;
    uint64_t cli_cpu0 = thread_cpu_ns(CLOCK_THREAD_CPUTIME_ID), cli_cpu1 = 0;
    if (rc == 0) {
        for (auto _ : state) {
            int64_t r = echo_load_next(&c);
            if (r < 0) {
                rc = int(r);
                break;
            }
            if (lat.size() < lat.capacity())
                lat.push_back(uint32_t(std::min<int64_t>(r, UINT32_MAX)));
        }
    }
    cli_cpu1 = thread_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    if (have_clock)
        srv_cpu1 = thread_cpu_ns(srv_clock);
    // Closing every client connection is what ends both servers.
    echo_load_close(&c);
    srv.join();
    close(lfd);
    if (restore)
        pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);

    if (rc != 0 || server_rc != 0) {
        std::string msg = rc ? "client: " + std::string(strerror(-rc))
                             : "server: " + std::string(strerror(-server_rc));
        state.SkipWithError(msg.c_str());
        return;
    }
    state.SetItemsProcessed(state.iterations());
    state.SetLabel(label);
    state.counters["p50_us"] = percentile_us(lat, 0.50);
    state.counters["p99_us"] = percentile_us(lat, 0.99);
    state.counters["max_us"] = lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end()) / 1000.0;
    state.counters["cpu"] = cpu;
    // Per message over the server's whole run (accepts and warm-up
    // included, a few percent): how many system calls and switches the
    // loop spent.
    if (server != epoll_echo_serve) {
        uint64_t enters, sqes, switches;
        w6_ringfiber_last_stats(&enters, &sqes, &switches);
        double msgs = double(state.iterations()) + kWarmup + conns;
        state.counters["enters_per_msg"] = double(enters) / msgs;
        state.counters["sqes_per_msg"] = double(sqes) / msgs;
        state.counters["switches_per_msg"] = double(switches) / msgs;
    }
    if (have_clock && state.iterations() > 0) {
        double n = double(state.iterations());
        double srv_ns = double(srv_cpu1 - srv_cpu0) / n;
        double cli_ns = double(cli_cpu1 - cli_cpu0) / n;
        state.counters["server_cpu_ns"] = srv_ns;
        // Client and server share one CPU, so with that CPU to themselves
        // they could not do better than one message per (client + server)
        // CPU time: an estimate of the rate that other load cannot bend.
        state.counters["cpu_bound_msgs_per_s"] = 1e9 / (srv_ns + cli_ns);
    }
}

void W6_echo_epoll_baseline(benchmark::State &state) {
    w6_run(state, epoll_echo_serve,
           "1 iteration = 1 message; 50 conns x 64 B, same CPU");
}

void W6_echo_ringfiber(benchmark::State &state) {
    w6_run(state, w6_ringfiber_serve,
           "1 iteration = 1 message; 50 conns x 64 B, same CPU");
}

// The ringfiber variants (not baselines; see w6_ringfiber.c): the I/O
// options net.c rejected (registered files, POLL_FIRST), each against raw
// ops, the floor under the public calls that they differ from in one
// thing, and the public server with batched wake-ups off. Run at 50
// connections as W6_echo_variant_<name>, and at 100 and 1,000 in the sweep.
struct w6_variant {
    const char *name;
    w6_server_fn fn;
    const char *what;
};
const w6_variant w6_variants[] = {
    {"raw_ops", w6_raw_serve, "recv/send SQEs via rf__op_run, no extras"},
    {"pollfirst", w6_pollfirst_serve, "raw + IORING_RECVSEND_POLL_FIRST on recv"},
    {"fixed_files", w6_fixed_serve, "raw + registered files (IOSQE_FIXED_FILE)"},
    {"wake_at_once", w6_at_once_serve, "public calls, RF_LOOP_WAKE_AT_ONCE"},
    {"multishot", w6_multishot_serve, "public calls, RF_LOOP_RECV_MULTISHOT"},
};

void w6_register_variant(const w6_variant &x, int n, const std::string &suffix,
                         double min_time) {
    w6_server_fn fn = x.fn;
    const char *what = x.what;
    benchmark::RegisterBenchmark(
        ("W6_echo_variant_" + std::string(x.name) + suffix).c_str(),
        [n, fn, what](benchmark::State &st) { w6_run(st, fn, what, n); })
        ->UseRealTime()->MinTime(min_time);
}

// The connection sweep: the same ping-pong with 1, 10, 100 and 1,000
// connections, ringfiber's server against the epoll server at each count
// (bench/ratios.sh pairs them by the "_<N>c" in their names). 1,000
// connections need 2,000 descriptors in this process: the soft limit is
// raised to the hard one in main.
const int w6_sweep_registered = [] {
    for (int n : {1, 10, 100, 1000}) {
        std::string c = std::to_string(n) + "c";
        std::string label = "1 iteration = 1 message; " + std::to_string(n) +
                            " conns x 64 B, same CPU";
        benchmark::RegisterBenchmark(
            ("W6_echo_sweep_" + c).c_str(),
            [n, label](benchmark::State &st) {
                w6_run(st, w6_ringfiber_serve, label.c_str(), n);
            })->UseRealTime()->MinTime(0.5);
        // The options decided at 50 connections, again where there are
        // many.
        if (n >= 100)
            for (const auto &x : w6_variants)
                w6_register_variant(x, n, "_sweep_" + c, 0.5);
        benchmark::RegisterBenchmark(
            ("W6_echo_epoll_sweep_" + c + "_baseline").c_str(),
            [n, label](benchmark::State &st) {
                w6_run(st, epoll_echo_serve, label.c_str(), n);
            })->UseRealTime()->MinTime(0.5);
    }
    return 0;
}();

} // namespace

BENCHMARK(W6_echo_epoll_baseline)->UseRealTime()->MinTime(1.0);
BENCHMARK(W6_echo_ringfiber)->UseRealTime()->MinTime(1.0);
const int w6_variants_registered = [] {
    for (const auto &x : w6_variants)
        w6_register_variant(x, kConns, "", 1.0);
    return 0;
}();


