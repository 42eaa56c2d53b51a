// The workloads W1-W3 of docs/benchmarks.md with Boost.Fiber
// (libboost-fiber-dev), for bench/compare. One thread runs every fiber
// (Boost.Fiber's default round_robin scheduler), as one ringfiber loop
// runs every task; stacks of 128 KiB, ringfiber's default.
//
//   fiber_peer W1 COUNT       two fibers ping-pong with this_fiber::yield()
//   fiber_peer W2 N ROUNDS    N empty fibers on pooled stacks
//                             (pooled_fixedsize_stack), then each joined
//   fiber_peer W3 N ROUNDS    N fibers each sleep_for(10 ms), joined
//   fiber_peer W3mem N        N fibers parked on one condition variable:
//                             memory
//
// Prints one JSON object on stdout, with the fields of bench/peers/go: W2
// and W3 run their first round in a fresh process ("first_*"), the figure
// is the median of the later rounds; rss_per_task is the resident memory
// with all N alive minus the memory before, over N.
#include <boost/fiber/all.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

constexpr std::size_t kStack = 128 * 1024;
using Clock = std::chrono::steady_clock;

long rss_bytes() {
    long pages = 0, resident = 0;
    if (FILE *f = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        std::fclose(f);
    }
    return resident * sysconf(_SC_PAGESIZE);
}

double ns_since(Clock::time_point t0) {
    return double(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      Clock::now() - t0)
                      .count());
}

void w1(long count) {
    auto player = [count] {
        for (long i = 0; i < count; i++)
            boost::this_fiber::yield();
    };
    auto t0 = Clock::now();
    boost::fibers::fiber a(std::allocator_arg,
                           boost::fibers::fixedsize_stack(kStack), player);
    boost::fibers::fiber b(std::allocator_arg,
                           boost::fibers::fixedsize_stack(kStack), player);
    a.join();
    b.join();
    std::printf("{\"ns\":%.3f}\n", ns_since(t0) / double(count));
}

void rounds(long n, long nrounds, bool sleep) {
    // One pool for every round, as ringfiber's stacks are pooled per loop.
    boost::fibers::pooled_fixedsize_stack pool(kStack, std::size_t(n));
    long base = rss_bytes(), rss_max = 0;
    std::vector<double> times;
    std::vector<boost::fibers::fiber> fibers;
    fibers.reserve(std::size_t(n));
    for (long r = 0; r < nrounds; r++) {
        long started = 0, rss = 0;
        auto t0 = Clock::now();
        for (long i = 0; i < n; i++)
            fibers.emplace_back(std::allocator_arg, pool,
                                [&started, &rss, n, sleep] {
                                    if (++started == n)
                                        rss = rss_bytes();
                                    if (sleep)
                                        boost::this_fiber::sleep_for(
                                            std::chrono::milliseconds(10));
                                });
        for (auto &f : fibers)
            f.join();
        times.push_back(ns_since(t0));
        fibers.clear();
        rss_max = std::max(rss_max, rss - base);
    }
    std::vector<double> later(times.size() > 1 ? times.begin() + 1
                                               : times.begin(),
                              times.end());
    std::sort(later.begin(), later.end());
    std::size_t m = later.size();
    double med = m % 2 ? later[m / 2] : (later[m / 2 - 1] + later[m / 2]) / 2;
    std::printf("{\"first_ns\":%.0f,\"round_ns\":%.0f,\"ns_per_task\":%.3f,"
                "\"first_ns_per_task\":%.3f,\"rss_per_task\":%.1f}\n",
                times[0], med, med / double(n), times[0] / double(n),
                double(rss_max) / double(n));
}

void parked(long n) {
    boost::fibers::fixedsize_stack stacks(kStack);
    boost::fibers::mutex mu;
    boost::fibers::condition_variable cv;
    bool go = false;
    long started = 0;
    long base = rss_bytes();
    std::vector<boost::fibers::fiber> fibers;
    fibers.reserve(std::size_t(n));
    for (long i = 0; i < n; i++)
        fibers.emplace_back(std::allocator_arg, stacks, [&] {
            std::unique_lock<boost::fibers::mutex> lk(mu);
            started++;
            cv.wait(lk, [&] { return go; });
        });
    while (started < n)
        boost::this_fiber::yield();
    long rss = rss_bytes() - base;
    {
        std::unique_lock<boost::fibers::mutex> lk(mu);
        go = true;
    }
    cv.notify_all();
    for (auto &f : fibers)
        f.join();
    std::printf("{\"rss_per_task\":%.1f,\"alive\":%ld}\n",
                double(rss) / double(n), n);
}

[[noreturn]] void usage() {
    std::fprintf(stderr, "usage: fiber_peer W1 COUNT | W2 N ROUNDS | "
                         "W3 N ROUNDS | W3mem N\n");
    std::exit(2);
}

long arg(const char *s) {
    char *end;
    long v = std::strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v <= 0)
        usage();
    return v;
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 3)
        usage();
    std::string w = argv[1];
    long a = arg(argv[2]);
    long nrounds = argc > 3 ? arg(argv[3]) : 3;
    if (w == "W1")
        w1(a);
    else if (w == "W2")
        rounds(a, nrounds, false);
    else if (w == "W3")
        rounds(a, nrounds, true);
    else if (w == "W3mem")
        parked(a);
    else
        usage();
    return 0;
}
