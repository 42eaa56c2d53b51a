// ringfiber_bench: the DESIGN.md §5 workloads W1, W2 and W5, each next to an
// in-run baseline so that the figure that matters, the ratio, comes out of a
// single run on a single machine state.
//
// Naming: every benchmark starts with its workload id; baselines end with
// "_baseline". bench/ratios.sh relies on both.
//
// Units: one benchmark iteration is one unit of the workload (one round trip
// for W1, one task for W2), so the reported time per iteration *is* the
// figure. All benchmarks use real (wall) time. A rate counter inverted
// ("roundtrip=…ns", "task=…ns") repeats the unit in the console.
//
// Tasks only run inside a loop, so the ringfiber benchmarks run Google
// Benchmark's `for (auto _ : state)` inside a task body: the ring setup and
// teardown done by rf_run stay outside the timed region.

#include <benchmark/benchmark.h>

#include <ringfiber.h>

#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef RF_BENCH_HAVE_LIBUV
#include <uv.h>
#endif

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

// ---------------------------------------------------------------------------
// Boost.Context fcontext, declared by hand: the C entry points of
// libboost_context, without pulling in any Boost C++ header.
// ---------------------------------------------------------------------------
typedef void *fcontext_t;
typedef struct {
    fcontext_t fctx;
    void *data;
} transfer_t;
extern "C" transfer_t jump_fcontext(fcontext_t to, void *vp);
extern "C" fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));

namespace {

// Stacks for the raw baselines: one anonymous mapping, cut in slots whose
// stride is the runtime's default task stack plus a guard page, so that the
// baselines see the same cache/TLB geometry as real tasks would.
constexpr size_t kPage = 4096;
constexpr size_t kRawStackSize = RF_DEFAULT_STACK_SIZE;
constexpr size_t kRawStackStride = RF_DEFAULT_STACK_SIZE + kPage;

class RawStacks {
  public:
    explicit RawStacks(size_t n) : n_(n), len_(n * kRawStackStride) {
        // MAP_NORESERVE: only the pages a context touches get committed.
        void *p = mmap(nullptr, len_, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        base_ = p == MAP_FAILED ? nullptr : static_cast<char *>(p);
    }
    ~RawStacks() {
        if (base_)
            munmap(base_, len_);
    }
    RawStacks(const RawStacks &) = delete;
    RawStacks &operator=(const RawStacks &) = delete;

    bool ok() const { return base_ != nullptr; }
    // fcontext stacks grow down: make_fcontext takes the *top* address.
    void *top(size_t i) const {
        return base_ + i * kRawStackStride + kPage + kRawStackSize;
    }

  private:
    char *base_ = nullptr;
    size_t n_;
    size_t len_;
};

// Report a failed ringfiber call. Must be followed by leaving the state loop
// (Google Benchmark requires the break after SkipWithError).
void skip_rf(benchmark::State &state, const char *what, int err) {
    std::string msg = std::string(what) + ": " + rf_strerror(err);
    state.SkipWithError(msg.c_str());
}

// Copies the loop counters into *out; zeroes it if they are unavailable so
// that the derived counters read 0 rather than garbage.
void loop_stats(rf_stats *out) {
    if (rf_loop_stats(rf_loop_current(), out) != 0)
        std::memset(out, 0, sizeof *out);
}

// Per-unit runtime counters: they explain a slow figure (a system call per
// pass, extra switches through the scheduler) without a profiler.
void report_stats(benchmark::State &state, const rf_stats &a, const rf_stats &b,
                  double units) {
    if (units <= 0)
        return;
    state.counters["switches"] = double(b.switches - a.switches) / units;
    state.counters["passes"] = double(b.passes - a.passes) / units;
    state.counters["enters"] = double(b.enters - a.enters) / units;
}

// Runs fn(arg) as the main task of a fresh loop and turns a loop failure
// into a skipped benchmark. The task body reports its own failures.
void run_in_loop(benchmark::State &state, rf_fn fn, void *arg) {
    void *res = nullptr;
    int rc = rf_run(fn, arg, &res);
    if (rc != 0 && !state.error_occurred())
        skip_rf(state, "rf_run", rc);
}

// ===========================================================================
// W1: two tasks yield to each other. One iteration = one round trip: the
// driver yields to the partner and the partner yields back.
// ===========================================================================

struct W1Ctx {
    benchmark::State *state;
    bool stop; // set by the driver when the measurement is over
};

void *w1_partner(void *arg) {
    auto *c = static_cast<W1Ctx *>(arg);
    // rf_yield switches tasks through an opaque assembly call, so `stop`
    // (written by the driver on this same thread) is re-read every turn.
    while (!c->stop) {
        if (rf_yield() != 0)
            break;
    }
    return nullptr;
}

void *w1_driver(void *arg) {
    auto *c = static_cast<W1Ctx *>(arg);
    benchmark::State &state = *c->state;
    rf_stats s0, s1;
    loop_stats(&s0);
    for (auto _ : state) {
        int rc = rf_yield();
        if (rc != 0) {
            skip_rf(state, "rf_yield", rc);
            break;
        }
    }
    loop_stats(&s1);
    c->stop = true;
    report_stats(state, s0, s1, double(state.iterations()));
    return nullptr;
}

void *w1_main(void *arg) {
    auto *c = static_cast<W1Ctx *>(arg);
    // Both tasks are spawned before either runs; main then blocks in rf_join,
    // so during the measurement the run queue holds exactly these two. The
    // partner goes first so that, if the driver cannot be spawned, the
    // partner alone is told to stop and the state loop never starts.
    rf_task *partner = rf_spawn(w1_partner, c);
    rf_task *driver = partner ? rf_spawn(w1_driver, c) : nullptr;
    if (!driver) {
        int err = -errno;
        c->stop = true;
        if (partner) {
            rf_join(partner, nullptr);
            rf_task_release(partner);
        }
        skip_rf(*c->state, "rf_spawn", err);
        return nullptr;
    }
    int rc = rf_join(driver, nullptr);
    int rc2 = rf_join(partner, nullptr);
    rf_task_release(driver);
    rf_task_release(partner);
    if ((rc != 0 || rc2 != 0) && !c->state->error_occurred())
        skip_rf(*c->state, "rf_join", rc != 0 ? rc : rc2);
    return nullptr;
}

void W1_yield_pingpong(benchmark::State &state) {
    W1Ctx c{&state, false};
    run_in_loop(state, w1_main, &c);
    state.SetLabel("1 iteration = 1 round trip A->B->A");
    state.counters["roundtrip"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// W1 with the loop-stall detector on (threshold 100 ms, its watchdog
// sampling every 10 ms): what the detector costs the loop. Target: within
// 5% of W1_yield_pingpong (bench/ratios.sh prints the ratio).
void W1_yield_pingpong_stall_detector(benchmark::State &state) {
    W1Ctx c{&state, false};
    rf_loop *l = nullptr;
    int rc = rf_loop_new(&l, nullptr);
    if (rc == 0)
        rc = rf_loop_stall_detector(l, 100, nullptr, nullptr);
    if (rc == 0)
        rc = rf_loop_run_until_complete(l, w1_main, &c, nullptr);
    rf_loop_free(l);
    if (rc != 0 && !state.error_occurred())
        skip_rf(state, "stall detector loop", rc);
    state.SetLabel("1 iteration = 1 round trip A->B->A, stall detector on");
    state.counters["roundtrip"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// --- W1 baselines -----------------------------------------------------------

// Bounces every jump straight back: the partner of a raw round trip.
[[noreturn]] void raw_echo(transfer_t t) {
    for (;;)
        t = jump_fcontext(t.fctx, nullptr);
}

// The floor: the benchmark thread and one fcontext jump to each other,
// two jump_fcontext per round trip. Note what it does not pay: no `ret`
// runs between jumps. A task that calls an out-of-line rf_yield() returns
// from it into the *other* task's call site, which the CPU's return stack
// predicts wrong (jump_fcontext leaves with `jmp`, not `ret`), costing
// several ns per switch that no runtime bookkeeping can remove; only
// inlining rf_yield into the task body (LTO) avoids it.
void W1_raw_fcontext_baseline(benchmark::State &state) {
    RawStacks stacks(1);
    if (!stacks.ok()) {
        state.SkipWithError("mmap failed");
        return;
    }
    fcontext_t b = make_fcontext(stacks.top(0), kRawStackSize, raw_echo);
    for (auto _ : state)
        b = jump_fcontext(b, nullptr).fctx;
    // b is left suspended inside raw_echo; it owns nothing, so unmapping
    // its stack is all the cleanup there is.
    state.SetLabel("1 iteration = 1 round trip A->B->A (2 jumps)");
    state.counters["roundtrip"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// The floor of a design in which every yield goes through a scheduler
// context: hub->A->hub->B->hub, four jumps per A->B->A round trip. A runtime
// that switches task to task directly can beat it; one that goes through its
// scheduler cannot, so this shows which side of 2x raw is reachable.
void W1_raw_fcontext_hub_baseline(benchmark::State &state) {
    RawStacks stacks(2);
    if (!stacks.ok()) {
        state.SkipWithError("mmap failed");
        return;
    }
    fcontext_t a = make_fcontext(stacks.top(0), kRawStackSize, raw_echo);
    fcontext_t b = make_fcontext(stacks.top(1), kRawStackSize, raw_echo);
    for (auto _ : state) {
        a = jump_fcontext(a, nullptr).fctx;
        b = jump_fcontext(b, nullptr).fctx;
    }
    state.SetLabel("1 iteration = hub->A->hub->B->hub (4 jumps)");
    state.counters["roundtrip"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// ===========================================================================
// W2: spawn + join of 1,000,000 empty tasks in batches of 10,000. The
// iteration count is fixed at 1,000,000, one iteration per task, so the time
// per iteration is the cost of one task.
// ===========================================================================

constexpr benchmark::IterationCount kW2Tasks = 1000000;
constexpr size_t kW2Batch = 10000;

void *empty_task(void *) { return nullptr; }

struct W2Ctx {
    benchmark::State *state;
    bool warm; // run one untimed batch first
    rf_task *batch[kW2Batch];
};

// Joins and releases batch[0..n). Returns 0 or the first join error.
int w2_join_release(rf_task **batch, size_t n) {
    int err = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = rf_join(batch[i], nullptr);
        if (rc != 0 && err == 0)
            err = rc;
        rf_task_release(batch[i]);
    }
    return err;
}

void *w2_main(void *arg) {
    auto *c = static_cast<W2Ctx *>(arg);
    benchmark::State &state = *c->state;
    size_t n = 0;
    if (c->warm) {
        // One untimed batch fills the loop's stack pool and faults in the
        // 10,000 stacks, as in a program that has been running a while.
        for (; n < kW2Batch; n++) {
            c->batch[n] = rf_spawn(empty_task, nullptr);
            if (!c->batch[n])
                break;
        }
        w2_join_release(c->batch, n);
        n = 0;
    }
    rf_stats s0, s1;
    loop_stats(&s0);
    for (auto _ : state) {
        rf_task *t = rf_spawn(empty_task, nullptr);
        if (!t) {
            skip_rf(state, "rf_spawn", -errno);
            break;
        }
        c->batch[n++] = t;
        if (n == kW2Batch) {
            int rc = w2_join_release(c->batch, n);
            n = 0;
            if (rc != 0) {
                skip_rf(state, "rf_join", rc);
                break;
            }
        }
    }
    // A partial batch is only left after an error or an iteration count that
    // is not a multiple of the batch (--benchmark_min_time cannot change the
    // fixed count); either way it must not outlive the loop unjoined.
    w2_join_release(c->batch, n);
    loop_stats(&s1);
    report_stats(state, s0, s1, double(state.iterations()));
    state.counters["stacks_mapped_end"] = double(s1.stacks_mapped);
    return nullptr;
}

void w2_spawn_join(benchmark::State &state, bool warm) {
    // 80 KB of handles: on the heap, not on the main task's stack.
    auto *c = new W2Ctx{&state, warm, {}};
    run_in_loop(state, w2_main, c);
    delete c;
    state.SetLabel(warm ? "1 iteration = 1 task, stack pool warmed first"
                        : "1 iteration = 1 task (spawn+join+release)");
    state.counters["task"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// The workload as defined: a fresh loop, so the first batch also pays for
// mapping and first-touching 10,000 stacks (a page fault each).
void W2_spawn_join(benchmark::State &state) { w2_spawn_join(state, false); }

// The steady state of a long-running program: the stack pool is already
// full and faulted in. The difference to W2_spawn_join is the cold start.
void W2_spawn_join_warm(benchmark::State &state) { w2_spawn_join(state, true); }

// --- W2 baselines -----------------------------------------------------------

// An empty task body: back to the creator at once; never resumed.
[[noreturn]] void raw_once(transfer_t t) {
    jump_fcontext(t.fctx, nullptr);
    __builtin_unreachable();
}

// The floor of one task: make_fcontext on a preallocated (hot) stack, one
// jump in and one out.
void W2_raw_fcontext_baseline(benchmark::State &state) {
    RawStacks stacks(1);
    if (!stacks.ok()) {
        state.SkipWithError("mmap failed");
        return;
    }
    for (auto _ : state) {
        fcontext_t f = make_fcontext(stacks.top(0), kRawStackSize, raw_once);
        benchmark::DoNotOptimize(jump_fcontext(f, nullptr));
    }
    state.SetLabel("1 iteration = make_fcontext + jump in + jump out");
    state.counters["task"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// Same, with W2's shape: 10,000 contexts made on 10,000 distinct stacks
// (default size + guard stride), then each run once. Between this and the
// hot-stack floor lies the cache and TLB cost of touching 10,000 stack tops,
// which any runtime with 10,000 live tasks pays too; the cold variant also
// pays the first-touch page fault of each stack, as a fresh loop does.
void w2_raw_batch(benchmark::State &state, bool warm) {
    RawStacks stacks(kW2Batch);
    if (!stacks.ok()) {
        state.SkipWithError("mmap failed");
        return;
    }
    static fcontext_t ctx[kW2Batch];
    if (warm) {
        for (size_t i = 0; i < kW2Batch; i++)
            jump_fcontext(make_fcontext(stacks.top(i), kRawStackSize, raw_once),
                          nullptr);
    }
    size_t n = 0;
    for (auto _ : state) {
        ctx[n] = make_fcontext(stacks.top(n), kRawStackSize, raw_once);
        if (++n == kW2Batch) {
            for (size_t i = 0; i < n; i++)
                benchmark::DoNotOptimize(jump_fcontext(ctx[i], nullptr));
            n = 0;
        }
    }
    state.SetLabel(warm ? "1 iteration = 1 context, 10000 stacks, prefaulted"
                        : "1 iteration = 1 context, 10000 fresh stacks");
    state.counters["task"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

void W2_raw_fcontext_batch_baseline(benchmark::State &state) {
    w2_raw_batch(state, false);
}
void W2_raw_fcontext_batch_warm_baseline(benchmark::State &state) {
    w2_raw_batch(state, true);
}

// ===========================================================================
// W5: offload of a trivial function to a thread pool. Two figures:
//  - round trip: one task, one call at a time (1 iteration = 1 call);
//  - throughput: 64 calls in flight (64 tasks, each making calls one after
//    the other; 1 iteration = 1 call, so the time is the inverse rate).
// Every contender has kW5Threads workers: ringfiber's pool, libuv's
// threadpool (UV_THREADPOOL_SIZE, set in main). The raw baseline is the
// floor of a cross-thread round trip: one worker thread and two eventfds.
// ===========================================================================

constexpr unsigned kW5Threads = 4;
constexpr int kW5InFlight = 64;
constexpr int kW5PerTask = 100;
constexpr int kW5Batch = kW5InFlight * kW5PerTask;

void *w5_trivial(void *arg) {
    return reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(arg) + 1);
}

struct W5Ctx {
    benchmark::State *state;
    rf_pool *pool;
    int failed; // an error code seen by a client task
};

void w5_counters(benchmark::State &state) {
    state.counters["call"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

void *w5_sequential(void *arg) {
    auto *c = static_cast<W5Ctx *>(arg);
    benchmark::State &state = *c->state;
    rf_stats s0, s1;
    loop_stats(&s0);
    uintptr_t i = 0;
    for (auto _ : state) {
        void *res = nullptr;
        int rc = rf_pool_call(c->pool, w5_trivial, reinterpret_cast<void *>(i),
                              &res);
        if (rc != 0) {
            skip_rf(state, "rf_pool_call", rc);
            break;
        }
        benchmark::DoNotOptimize(res);
        i++;
    }
    loop_stats(&s1);
    report_stats(state, s0, s1, double(state.iterations()));
    return nullptr;
}

void *w5_client(void *arg) {
    auto *c = static_cast<W5Ctx *>(arg);
    for (uintptr_t i = 0; i < kW5PerTask; i++) {
        void *res = nullptr;
        int rc = rf_pool_call(c->pool, w5_trivial, reinterpret_cast<void *>(i),
                              &res);
        if (rc != 0) {
            c->failed = rc;
            break;
        }
        benchmark::DoNotOptimize(res);
    }
    return nullptr;
}

void *w5_throughput(void *arg) {
    auto *c = static_cast<W5Ctx *>(arg);
    benchmark::State &state = *c->state;
    rf_stats s0, s1;
    loop_stats(&s0);
    rf_task *t[kW5InFlight];
    while (state.KeepRunningBatch(kW5Batch)) {
        for (int k = 0; k < kW5InFlight; k++)
            t[k] = rf_spawn(w5_client, c);
        rf_gather(t, kW5InFlight, nullptr);
        for (int k = 0; k < kW5InFlight; k++)
            rf_task_release(t[k]);
        if (c->failed) {
            skip_rf(state, "rf_pool_call", c->failed);
            break;
        }
    }
    loop_stats(&s1);
    report_stats(state, s0, s1, double(state.iterations()));
    return nullptr;
}

void w5_run(benchmark::State &state, rf_fn fn) {
    W5Ctx c{&state, nullptr, 0};
    int rc = rf_pool_new(kW5Threads, 0, &c.pool);
    if (rc != 0) {
        skip_rf(state, "rf_pool_new", rc);
        for (auto _ : state) {
        }
        return;
    }
    run_in_loop(state, fn, &c);
    rf_pool_free(c.pool);
    w5_counters(state);
}

void W5_offload_roundtrip(benchmark::State &state) {
    w5_run(state, w5_sequential);
    state.SetLabel("1 iteration = 1 call, one at a time");
}

void W5_offload_throughput64(benchmark::State &state) {
    w5_run(state, w5_throughput);
    state.SetLabel("1 iteration = 1 call, 64 in flight");
}

// --- W5 baselines -----------------------------------------------------------

// The floor: the benchmark thread wakes one worker through an eventfd, the
// worker runs the function and wakes it back through another.
struct RawRoundTrip {
    int to_worker = -1, to_main = -1;
    std::atomic<uintptr_t> arg{0}, res{0};
    std::atomic<bool> stop{false};
};

void *raw_rt_worker(void *p) {
    auto *r = static_cast<RawRoundTrip *>(p);
    for (;;) {
        uint64_t v;
        if (read(r->to_worker, &v, sizeof v) != sizeof v)
            return nullptr;
        if (r->stop.load(std::memory_order_acquire))
            return nullptr;
        void *out = w5_trivial(
            reinterpret_cast<void *>(r->arg.load(std::memory_order_acquire)));
        r->res.store(reinterpret_cast<uintptr_t>(out), std::memory_order_release);
        uint64_t one = 1;
        if (write(r->to_main, &one, sizeof one) != sizeof one)
            return nullptr;
    }
}

void W5_pthread_eventfd_baseline(benchmark::State &state) {
    RawRoundTrip r;
    r.to_worker = eventfd(0, EFD_CLOEXEC);
    r.to_main = eventfd(0, EFD_CLOEXEC);
    pthread_t th;
    if (r.to_worker < 0 || r.to_main < 0 ||
        pthread_create(&th, nullptr, raw_rt_worker, &r) != 0) {
        state.SkipWithError("eventfd/pthread_create failed");
        for (auto _ : state) {
        }
        return;
    }
    uintptr_t i = 0;
    uint64_t one = 1, v;
    for (auto _ : state) {
        r.arg.store(i++, std::memory_order_release);
        if (write(r.to_worker, &one, sizeof one) != sizeof one ||
            read(r.to_main, &v, sizeof v) != sizeof v) {
            state.SkipWithError("eventfd read/write failed");
            break;
        }
        benchmark::DoNotOptimize(r.res.load(std::memory_order_acquire));
    }
    r.stop.store(true, std::memory_order_release);
    (void)!write(r.to_worker, &one, sizeof one);
    pthread_join(th, nullptr);
    close(r.to_worker);
    close(r.to_main);
    w5_counters(state);
    state.SetLabel("1 iteration = 1 round trip, 1 worker, 2 eventfds");
}

#ifdef RF_BENCH_HAVE_LIBUV
// libuv's uv_queue_work: the work runs on libuv's threadpool, the
// after-work callback on the loop thread (woken by its uv_async).
struct UvW5 {
    uv_loop_t loop;
    uv_work_t req[kW5InFlight];
    int left[kW5InFlight];
    uintptr_t res;
};

void uv_w5_work(uv_work_t *req) {
    req->data = w5_trivial(req->data);
}

void uv_w5_after_once(uv_work_t *req, int status) {
    auto *u = static_cast<UvW5 *>(req->loop->data);
    u->res = reinterpret_cast<uintptr_t>(req->data);
    (void)status;
}

void W5_libuv_queue_work_roundtrip_baseline(benchmark::State &state) {
    UvW5 u{};
    uv_loop_init(&u.loop);
    u.loop.data = &u;
    uintptr_t i = 0;
    for (auto _ : state) {
        u.req[0].data = reinterpret_cast<void *>(i++);
        if (uv_queue_work(&u.loop, &u.req[0], uv_w5_work, uv_w5_after_once) != 0) {
            state.SkipWithError("uv_queue_work failed");
            break;
        }
        uv_run(&u.loop, UV_RUN_DEFAULT); // returns once the callback ran
        benchmark::DoNotOptimize(u.res);
    }
    uv_loop_close(&u.loop);
    w5_counters(state);
    state.SetLabel("1 iteration = 1 call, one at a time");
}

void uv_w5_after_again(uv_work_t *req, int status) {
    auto *u = static_cast<UvW5 *>(req->loop->data);
    int k = int(req - u->req);
    u->res = reinterpret_cast<uintptr_t>(req->data);
    if (status == 0 && --u->left[k] > 0)
        uv_queue_work(&u->loop, req, uv_w5_work, uv_w5_after_again);
}

void W5_libuv_queue_work_throughput64_baseline(benchmark::State &state) {
    UvW5 u{};
    uv_loop_init(&u.loop);
    u.loop.data = &u;
    while (state.KeepRunningBatch(kW5Batch)) {
        for (int k = 0; k < kW5InFlight; k++) {
            u.left[k] = kW5PerTask;
            u.req[k].data = reinterpret_cast<void *>(uintptr_t(k));
            uv_queue_work(&u.loop, &u.req[k], uv_w5_work, uv_w5_after_again);
        }
        uv_run(&u.loop, UV_RUN_DEFAULT); // returns when all are done
    }
    uv_loop_close(&u.loop);
    w5_counters(state);
    state.SetLabel("1 iteration = 1 call, 64 in flight");
}
#endif

} // namespace

BENCHMARK(W1_yield_pingpong)->UseRealTime();
BENCHMARK(W1_yield_pingpong_stall_detector)->UseRealTime();
BENCHMARK(W1_raw_fcontext_baseline)->UseRealTime();
BENCHMARK(W1_raw_fcontext_hub_baseline)->UseRealTime();
BENCHMARK(W2_spawn_join)->Iterations(kW2Tasks)->UseRealTime();
BENCHMARK(W2_spawn_join_warm)->Iterations(kW2Tasks)->UseRealTime();
BENCHMARK(W2_raw_fcontext_baseline)->Iterations(kW2Tasks)->UseRealTime();
BENCHMARK(W2_raw_fcontext_batch_baseline)->Iterations(kW2Tasks)->UseRealTime();
BENCHMARK(W2_raw_fcontext_batch_warm_baseline)->Iterations(kW2Tasks)->UseRealTime();
BENCHMARK(W5_offload_roundtrip)->UseRealTime();
BENCHMARK(W5_offload_throughput64)->UseRealTime();
BENCHMARK(W5_pthread_eventfd_baseline)->UseRealTime();
#ifdef RF_BENCH_HAVE_LIBUV
BENCHMARK(W5_libuv_queue_work_roundtrip_baseline)->UseRealTime();
BENCHMARK(W5_libuv_queue_work_throughput64_baseline)->UseRealTime();
#endif

namespace {

// Facts about this run that change the figures, printed in the context
// block of every report (console and JSON).
void add_context() {
#ifdef NDEBUG
    benchmark::AddCustomContext("ringfiber_bench_build", "release (NDEBUG)");
#else
    benchmark::AddCustomContext("ringfiber_bench_build",
                                "NOT release: asserts on, figures not comparable");
#endif
    unsigned v = rf_version();
    benchmark::AddCustomContext("ringfiber_version",
                                std::to_string(v >> 16) + "." +
                                    std::to_string((v >> 8) & 0xff) + "." +
                                    std::to_string(v & 0xff));
    rf_loop *loop = nullptr;
    rf_loop_opts opts{};
    opts.flags = RF_LOOP_QUIET;
    int rc = rf_loop_new(&loop, &opts);
    if (rc != 0) {
        // Every ringfiber benchmark will be skipped with the same error;
        // the baselines still run.
        benchmark::AddCustomContext("ringfiber_loop", rf_strerror(rc));
        return;
    }
    rf_stats st;
    if (rf_loop_stats(loop, &st) == 0) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "0x%x", unsigned(st.ring_flags));
        benchmark::AddCustomContext("ringfiber_ring_flags", buf);
        benchmark::AddCustomContext(
            "ringfiber_guard_mode",
            st.guard_mode == RF_GUARD_MADVISE    ? "madvise"
            : st.guard_mode == RF_GUARD_MPROTECT ? "mprotect"
                                                 : std::to_string(st.guard_mode));
    }
    rf_loop_free(loop);
}

} // namespace

int main(int argc, char **argv) {
    // libuv sizes its threadpool from the environment at its first use:
    // the same number of workers as ringfiber's pool in W5.
    setenv("UV_THREADPOOL_SIZE", std::to_string(kW5Threads).c_str(), 1);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    add_context();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
