// ringfiber_bench: the workloads of docs/benchmarks.md, each next to an
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

#include <execinfo.h>
#include <liburing.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifdef RF_BENCH_HAVE_LIBUV
#include <uv.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

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

// The exported, out-of-line rf_yield (what code that cannot use the header's
// inline one calls: other languages, RF_NO_INLINE_YIELD).
extern "C" int rf_yield_call(void) __asm__("rf_yield");

struct W1Ctx {
    benchmark::State *state;
    bool stop;   // set by the driver when the measurement is over
    bool called; // use rf_yield_call instead of the inline rf_yield
};

inline int w1_yield(const W1Ctx *c) {
    return c->called ? rf_yield_call() : rf_yield();
}

void *w1_partner(void *arg) {
    auto *c = static_cast<W1Ctx *>(arg);
    // rf_yield switches tasks through an opaque assembly call, so `stop`
    // (written by the driver on this same thread) is re-read every turn.
    while (!c->stop) {
        if (w1_yield(c) != 0)
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
        int rc = w1_yield(c);
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
    W1Ctx c{&state, false, false};
    run_in_loop(state, w1_main, &c);
    state.SetLabel("1 iteration = 1 round trip A->B->A");
    state.counters["roundtrip"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// The same through the out-of-line rf_yield: shows what the header's inline
// fast path saves (a return-stack misprediction per switch).
void W1_yield_pingpong_call(benchmark::State &state) {
    W1Ctx c{&state, false, true};
    run_in_loop(state, w1_main, &c);
    state.SetLabel("1 iteration = 1 round trip A->B->A, out-of-line rf_yield");
    state.counters["roundtrip"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// ---- D: the operator's view (docs/inspect.md) ----

// D1: one address to a name. rf_symbolize alone reads the symbol tables
// (libdw) and lets them go, each call; backtrace_symbols(3) reads only
// the dynamic symbol table (and names static functions wrongly).
void D1_symbolize_lone(benchmark::State &state) {
    char buf[256];
    for (auto _ : state)
        benchmark::DoNotOptimize(
            rf_symbolize((const void *)&run_in_loop, buf, sizeof buf));
    state.SetLabel(buf);
}

void D1_backtrace_symbols_baseline(benchmark::State &state) {
    void *a = (void *)&run_in_loop;
    char *name = nullptr;
    for (auto _ : state) {
        char **s = backtrace_symbols(&a, 1);
        benchmark::DoNotOptimize(s);
        free(name);
        name = s ? strdup(s[0]) : nullptr;
        free(s);
    }
    state.SetLabel(name ? name : "?");
    free(name);
}

// D2: the dump of a loop with range(0) tasks waiting on an event, from a
// task of the loop (rf_loop_dump_text: the text, not its write).
struct D2Ctx {
    benchmark::State *state;
    unsigned flags;
    rf_event ev;
};

void *d2_waiter(void *arg) {
    rf_event_wait(&static_cast<D2Ctx *>(arg)->ev);
    return nullptr;
}

void *d2_main(void *arg) {
    auto *c = static_cast<D2Ctx *>(arg);
    benchmark::State &state = *c->state;
    rf_event_init(&c->ev);
    std::vector<rf_task *> ts;
    rf_spawn_options o = {};
    o.stack_size = RF_MIN_STACK_SIZE;
    for (int64_t i = 0; i < state.range(0); i++)
        ts.push_back(rf_spawn_opts(d2_waiter, c, &o));
    rf_yield();
    size_t len = 0;
    for (auto _ : state) {
        char *text = nullptr;
        int rc = rf_loop_dump_text(rf_loop_current(), c->flags, &text, &len);
        if (rc != 0) {
            skip_rf(state, "rf_loop_dump_text", rc);
            break;
        }
        free(text);
    }
    state.counters["bytes"] = (double)len;
    rf_event_set(&c->ev);
    for (rf_task *t : ts) {
        rf_join(t, nullptr);
        rf_task_release(t);
    }
    return nullptr;
}

void D2_dump(benchmark::State &state) {
    D2Ctx c{&state, 0, {}};
    run_in_loop(state, d2_main, &c);
    state.SetLabel("1 iteration = the dump of range(0) waiting tasks");
}

void D2_dump_backtraces(benchmark::State &state) {
    D2Ctx c{&state, RF_DUMP_BACKTRACES, {}};
    run_in_loop(state, d2_main, &c);
    state.SetLabel("1 iteration = the dump of range(0) waiting tasks, stacks walked");
}

// W1 with the scheduling-delay histogram on (RF_LOOP_SCHED_DELAY): a
// clock read per task run. Its cost against W1_yield_pingpong, in the same
// run, is why the histogram is an option (docs/inspect.md, "Metrics").
void W1_yield_pingpong_sched_delay(benchmark::State &state) {
    W1Ctx c{&state, false, false};
    rf_loop *l = nullptr;
    rf_loop_opts o = {};
    o.flags = RF_LOOP_SCHED_DELAY;
    int rc = rf_loop_new(&l, &o);
    if (rc == 0)
        rc = rf_loop_run_until_complete(l, w1_main, &c, nullptr);
    rf_loop_free(l);
    if (rc != 0 && !state.error_occurred())
        skip_rf(state, "sched delay loop", rc);
    state.SetLabel("1 iteration = 1 round trip A->B->A, delay histogram on");
    state.counters["roundtrip"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// W1 with the loop-stall detector on (threshold 100 ms, its watchdog
// sampling every 10 ms): what the detector costs the loop. Target: within
// 5% of W1_yield_pingpong (bench/ratios.sh prints the ratio).
void W1_yield_pingpong_stall_detector(benchmark::State &state) {
    W1Ctx c{&state, false, false};
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
        // One untimed batch, as in a program that has been running a
        // while: task records, run queue and ring in use. (Stacks: a task
        // takes its stack when it first runs, and these tasks end before
        // the next one starts, so they run on two stacks in turn.)
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

// ===========================================================================
// S3: W2 on many loops (rf_run_loops). Argument = loops; each loop spawns,
// joins and releases its share of 1,000,000 empty tasks, in batches of
// 10,000, on its own stack pool (warmed by one untimed batch). The loops
// share nothing, so the time should fall as 1/loops up to the CPUs there
// are. Timed from the moment every loop is ready until the last one has
// finished (manual time): starting and freeing the loops are not in it.
// ===========================================================================

constexpr size_t kS3Tasks = 1000000;

struct S3Ctx {
    unsigned loops;
    size_t batch; // tasks alive at once per loop
    std::atomic<unsigned> ready{0};
    std::atomic<uint64_t> t0{0};
    std::atomic<uint64_t> end{0};
    std::atomic<int> err{0};
};

void *s3_entry(void *arg) {
    auto *c = static_cast<S3Ctx *>(arg);
    auto *batch = new rf_task *[c->batch];
    size_t share = kS3Tasks / c->loops;
    int rc = 0;
    size_t n = 0;
    for (; n < c->batch && rc == 0; n++)
        if (!(batch[n] = rf_spawn(empty_task, nullptr)))
            rc = -errno;
    if (rc == 0)
        rc = w2_join_release(batch, n);
    // Every loop warm: go together.
    if (c->ready.fetch_add(1) + 1 == c->loops)
        c->t0.store(rf_now_ns());
    while (c->t0.load() == 0)
        ;
    for (size_t done = 0; done < share && rc == 0; done += n) {
        n = std::min(c->batch, share - done);
        for (size_t i = 0; i < n; i++)
            if (!(batch[i] = rf_spawn(empty_task, nullptr))) {
                rc = -errno;
                n = i;
                break;
            }
        int jrc = w2_join_release(batch, n);
        if (rc == 0)
            rc = jrc;
    }
    uint64_t now = rf_now_ns(), prev = c->end.load();
    while (now > prev && !c->end.compare_exchange_weak(prev, now))
        ;
    if (rc)
        c->err.store(rc);
    delete[] batch;
    return nullptr;
}

bool pin_to(int nth);

// cpu >= 0: one loop, on the cpu-th CPU of the process's mask (the calling
// thread is pinned there for the run, so the group's mask is that CPU).
void s3_run(benchmark::State &state, size_t batch, int cpu = -1) {
    unsigned loops = cpu >= 0 ? 1u : unsigned(state.range(0));
    cpu_set_t saved;
    if (cpu >= 0) {
        if (pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) ||
            !pin_to(cpu)) {
            state.SkipWithError("no such CPU in the affinity mask");
            return;
        }
    }
    for (auto _ : state) {
        S3Ctx c;
        c.loops = loops;
        c.batch = batch;
        rf_loops_opts o = {};
        o.loops = loops;
        o.flags = RF_LOOPS_PIN;
        int rc = rf_run_loops(s3_entry, &c, &o, nullptr, nullptr);
        if (rc == 0)
            rc = c.err.load();
        if (rc != 0) {
            skip_rf(state, "rf_run_loops", rc);
            break;
        }
        state.SetIterationTime(double(c.end.load() - c.t0.load()) / 1e9);
    }
    if (cpu >= 0)
        pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
    state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(kS3Tasks));
    state.counters["task"] = benchmark::Counter(
        double(kS3Tasks), benchmark::Counter::kIsIterationInvariantRate |
                              benchmark::Counter::kInvert);
}

void S3_spawn_join_loops(benchmark::State &state) {
    s3_run(state, kW2Batch);
    state.SetLabel("1 iteration = 1,000,000 tasks spread over the loops, "
                   "10,000 alive per loop");
}

// The same with 100 tasks alive per loop: what each loop touches per batch
// (stacks' tops, records) stays in its core's own caches, where with
// 10,000 (about 10 MB per batch) two loops compete for the shared cache
// and the memory bus.
void S3_spawn_join_loops_batch100(benchmark::State &state) {
    s3_run(state, 100);
    state.SetLabel("1 iteration = 1,000,000 tasks spread over the loops, "
                   "100 alive per loop");
}

// S3_spawn_join_loops/1 on the CPU of the process's mask the argument
// names (0, 1, ...): S3/N ends when its slowest loop ends, so S3/N against
// S3/1 is the share-nothing speed-up only where every CPU is as fast as
// the first. On a virtual machine they need not be: a vCPU whose host
// core is busy with another guest runs memory-bound work slower, and
// which one changes over minutes. Run interleaved with S3/N, the slowest
// of these over N is what N loops with equal shares could take at best.
void S3_spawn_join_loop_on_cpu(benchmark::State &state) {
    s3_run(state, kW2Batch, int(state.range(0)));
    state.SetLabel("1 iteration = 1,000,000 tasks on one loop on the "
                   "given CPU, 10,000 alive");
}

// Between the two: where the two loops' scaling breaks as what each
// touches per batch grows.
void S3_spawn_join_loops_batch1000(benchmark::State &state) {
    s3_run(state, 1000);
    state.SetLabel("1 iteration = 1,000,000 tasks spread over the loops, "
                   "1,000 alive per loop");
}

// ===========================================================================
// S1, S2: messages between loops (rf_chan), against two pthreads doing the
// same with an eventfd, in the same run. Two loops of a group (pinned to
// the first two CPUs of the affinity mask); the benchmark's loop runs on
// loop 0's task.
// ===========================================================================

struct S12Ctx {
    benchmark::State *state;
    bool stream;                    // S2: one way, else S1: round trips
    unsigned loop_flags = 0;        // RF_LOOP_WAKE_MSG_RING: that transport
    std::atomic<rf_chan *> to1{nullptr}; // loop 1 receives
    std::atomic<rf_chan *> to0{nullptr}; // loop 0 receives
    int err = 0;
};

constexpr size_t kS2Batch = 1000; // S2: items per iteration

void *s12_entry(void *arg) {
    auto *c = static_cast<S12Ctx *>(arg);
    int me = rf_loop_index();
    rf_chan *mine = nullptr;
    int rc = rf_chan_new(&mine, c->stream ? 1024 : 16);
    if (rc) {
        c->err = rc;
        return nullptr;
    }
    (me == 0 ? c->to0 : c->to1).store(mine);
    while (!c->to0.load() || !c->to1.load())
        rf_sleep(RF_NSEC_PER_MSEC / 10);
    void *v;
    if (me == 1) {
        // The echo (S1) or the consumer (S2), until loop 0 closes.
        rf_chan *back = c->to0.load();
        while ((rc = rf_chan_recv(mine, &v)) == 0)
            if (!c->stream && rf_chan_send(back, v) != 0)
                break;
        // Both channels are freed by their receivers once the other
        // side has stopped sending.
        rf_chan_close(back);
        while (rf_chan_recv(mine, &v) == 0)
            ;
        rf_chan_free(mine);
        return nullptr;
    }
    benchmark::State &state = *c->state;
    rf_chan *out = c->to1.load();
    uintptr_t i = 0;
    for (auto _ : state) {
        if (c->stream) {
            for (size_t k = 0; k < kS2Batch; k++)
                if ((rc = rf_chan_send(out, reinterpret_cast<void *>(++i))) != 0)
                    break;
        } else {
            rc = rf_chan_send(out, reinterpret_cast<void *>(++i));
            if (rc == 0)
                rc = rf_chan_recv(mine, &v);
        }
        if (rc) {
            skip_rf(state, "rf_chan", rc);
            break;
        }
    }
    // How the loops were woken: a check that the variant runs the
    // transport its name says.
    rf_stats st;
    if (rf_loops_stats(rf_loops_current(), &st) == 0 && state.iterations()) {
        double n = double(state.iterations());
        state.counters["wake_efd"] = double(st.wakeups_eventfd) / n;
        state.counters["wake_ring"] = double(st.wakeups_msg_ring) / n;
        state.counters["enters"] = double(st.enters) / n;
        state.counters["passes"] = double(st.passes) / n;
        state.counters["sqes"] = double(st.sqes_submitted) / n;
        state.counters["cqes"] = double(st.cqes_reaped) / n;
        state.counters["switches"] = double(st.switches) / n;
        state.counters["avoided"] = double(st.sleeps_avoided) / n;
    }
    rf_chan_close(out);
    while (rf_chan_recv(mine, &v) == 0)
        ;
    rf_chan_free(mine);
    return nullptr;
}

void s12_run(benchmark::State &state, bool stream, unsigned loop_flags,
             unsigned spin_ns = 0) {
    S12Ctx c;
    c.state = &state;
    c.stream = stream;
    rf_loop_opts lo = {};
    lo.flags = loop_flags;
    lo.spin_ns = spin_ns;
    rf_loops_opts o = {};
    o.loops = 2;
    o.flags = RF_LOOPS_PIN;
    o.loop = &lo;
    int rc = rf_run_loops(s12_entry, &c, &o, nullptr, nullptr);
    if (rc == 0)
        rc = c.err;
    if (rc != 0 && !state.error_occurred())
        skip_rf(state, "rf_run_loops", rc);
}

// The default transport (an eventfd write wakes a sleeping loop), and
// IORING_OP_MSG_RING (RF_LOOP_WAKE_MSG_RING): the pairs are the
// measurement that chose the default (docs/loops.md, "Waking a loop").
void S1_cross_loop_pingpong(benchmark::State &state) {
    s12_run(state, false, 0);
    state.SetLabel("1 iteration = a message to a task of another loop and "
                   "its answer (rf_chan both ways)");
}

void S1_cross_loop_pingpong_msg_ring(benchmark::State &state) {
    s12_run(state, false, RF_LOOP_WAKE_MSG_RING);
    state.SetLabel("as S1_cross_loop_pingpong, loops woken by MSG_RING");
}

// Loops that spin before they sleep (rf_loop_opts.spin_ns): a message
// that comes within 50 us costs neither side a system call. Compare with
// S1_spin_pingpong_baseline (two threads spinning), not with the sleeping
// baselines: this burns the idle time of both CPUs.
constexpr unsigned kS12SpinNs = 50000;

void S1_cross_loop_pingpong_spin(benchmark::State &state) {
    s12_run(state, false, 0, kS12SpinNs);
    state.SetLabel("as S1_cross_loop_pingpong, loops spin 50 us before "
                   "sleeping");
}

void S2_cross_loop_stream(benchmark::State &state) {
    s12_run(state, true, 0);
    state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(kS2Batch));
    state.SetLabel("1 iteration = 1,000 messages from one loop to another "
                   "(rf_chan of 1,024)");
}

void S2_cross_loop_stream_spin(benchmark::State &state) {
    s12_run(state, true, 0, kS12SpinNs);
    state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(kS2Batch));
    state.SetLabel("as S2_cross_loop_stream, loops spin 50 us before "
                   "sleeping");
}

void S2_cross_loop_stream_msg_ring(benchmark::State &state) {
    s12_run(state, true, RF_LOOP_WAKE_MSG_RING);
    state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(kS2Batch));
    state.SetLabel("as S2_cross_loop_stream, loops woken by MSG_RING");
}

// The baselines: two pthreads pinned like the loops. S1: each has a
// mutex-protected queue and an eventfd; a message is a push under the lock
// and an eventfd write, the receiver blocks in read(). S2: a lock-free
// single-producer ring of 1,024 and an eventfd the consumer sleeps on when
// the ring is empty (it says so first, Dekker's pattern, as rf_chan does).
struct MutexQueue {
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    std::vector<uintptr_t> items;
    int efd = -1;
    void push(uintptr_t v) {
        pthread_mutex_lock(&mu);
        items.push_back(v);
        pthread_mutex_unlock(&mu);
        uint64_t one = 1;
        (void)!write(efd, &one, sizeof one);
    }
    uintptr_t pop() {
        for (;;) {
            pthread_mutex_lock(&mu);
            if (!items.empty()) {
                uintptr_t v = items.front();
                items.erase(items.begin());
                pthread_mutex_unlock(&mu);
                return v;
            }
            pthread_mutex_unlock(&mu);
            uint64_t n;
            (void)!read(efd, &n, sizeof n);
        }
    }
};

// Pin the calling thread to the nth CPU of the process's affinity mask as
// it was before any pinning (taken at the first call, which the thread
// that starts a baseline makes before it pins itself): a thread created
// after its creator was pinned inherits the creator's one CPU, and must
// not look for its own CPU in that. False if the mask has no nth CPU.
bool pin_to(int nth) {
    static const cpu_set_t set = [] {
        cpu_set_t s;
        CPU_ZERO(&s);
        if (sched_getaffinity(0, sizeof s, &s) != 0)
            CPU_ZERO(&s);
        return s;
    }();
    int seen = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &set) && seen++ == nth) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            return pthread_setaffinity_np(pthread_self(), sizeof one, &one) ==
                   0;
        }
    return false;
}

struct S1Base {
    MutexQueue to_main, to_echo;
};

void *s1_echo(void *arg) {
    auto *b = static_cast<S1Base *>(arg);
    pin_to(1);
    for (;;) {
        uintptr_t v = b->to_echo.pop();
        b->to_main.push(v);
        if (v == 0)
            return nullptr;
    }
}

void S1_eventfd_mutex_pingpong_baseline(benchmark::State &state) {
    S1Base b;
    b.to_main.efd = eventfd(0, EFD_CLOEXEC);
    b.to_echo.efd = eventfd(0, EFD_CLOEXEC);
    cpu_set_t saved;
    sched_getaffinity(0, sizeof saved, &saved);
    pin_to(0);
    pthread_t th;
    pthread_create(&th, nullptr, s1_echo, &b);
    uintptr_t i = 0;
    for (auto _ : state) {
        b.to_echo.push(++i);
        benchmark::DoNotOptimize(b.to_main.pop());
    }
    b.to_echo.push(0);
    b.to_main.pop();
    pthread_join(th, nullptr);
    sched_setaffinity(0, sizeof saved, &saved);
    close(b.to_main.efd);
    close(b.to_echo.efd);
    state.SetLabel("1 iteration = a message to another thread and its "
                   "answer (mutex + eventfd both ways)");
}

// The kernel's floor for S1's shape: two pthreads pinned like the loops,
// each with its own ring (the loops' setup flags), a message is a store
// and an IORING_OP_MSG_RING to the other ring, each thread sleeps in
// io_uring_enter for the other's CQE. What S1 costs above this is the
// runtime's (scheduler, channel, task switches).
struct S1Ring {
    struct io_uring ring;
    std::atomic<uintptr_t> box{0};
    S1Ring *peer = nullptr;
    int cpu = 0;
    int err = 0;
    bool init() {
        int rc = io_uring_queue_init(
            64, &ring,
            IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
                IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
        err = rc;
        return rc == 0;
    }
    void send(uintptr_t v) {
        peer->box.store(v, std::memory_order_release);
        io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_msg_ring(sqe, peer->ring.ring_fd, 0, 1, 0);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        io_uring_submit(&ring);
    }
    uintptr_t recv() {
        for (;;) {
            uintptr_t v = box.exchange(0, std::memory_order_acquire);
            if (v)
                return v;
            io_uring_cqe *cqe;
            if (io_uring_wait_cqe(&ring, &cqe) == 0)
                io_uring_cqe_seen(&ring, cqe);
        }
    }
};

struct S1RingPair {
    S1Ring a, b;
    pthread_barrier_t ready;
};

void *s1_ring_echo(void *arg) {
    auto *p = static_cast<S1RingPair *>(arg);
    pin_to(1);
    bool ok = p->b.init(); // SINGLE_ISSUER: made on the thread that uses it
    pthread_barrier_wait(&p->ready); // both rings made, or one failed
    if (!ok || p->a.err != 0) {
        if (ok)
            io_uring_queue_exit(&p->b.ring);
        return nullptr;
    }
    for (;;) {
        uintptr_t v = p->b.recv();
        p->b.send(v);
        if (v == UINTPTR_MAX)
            break;
    }
    io_uring_queue_exit(&p->b.ring);
    return nullptr;
}

void S1_msg_ring_pingpong_baseline(benchmark::State &state) {
    auto *p = new S1RingPair;
    p->a.peer = &p->b;
    p->b.peer = &p->a;
    pthread_barrier_init(&p->ready, nullptr, 2);
    cpu_set_t saved;
    sched_getaffinity(0, sizeof saved, &saved);
    pin_to(0);
    pthread_t th;
    pthread_create(&th, nullptr, s1_ring_echo, p);
    bool ok = p->a.init();
    pthread_barrier_wait(&p->ready);
    if (ok && p->b.err == 0) {
        uintptr_t i = 0;
        for (auto _ : state) {
            p->a.send(++i);
            benchmark::DoNotOptimize(p->a.recv());
        }
        p->a.send(UINTPTR_MAX);
        p->a.recv();
    } else {
        state.SkipWithError("io_uring_queue_init (DEFER_TASKRUN) failed");
    }
    pthread_join(th, nullptr);
    if (ok)
        io_uring_queue_exit(&p->a.ring);
    sched_setaffinity(0, sizeof saved, &saved);
    pthread_barrier_destroy(&p->ready);
    delete p;
    state.SetLabel("1 iteration = a message to another thread and its "
                   "answer (raw liburing, MSG_RING both ways)");
}

// The floor of any round trip between two cores: two pthreads pinned like
// the loops, a message is a store to a word the other thread spins on
// (pause between loads). Against this, not the sleeping baselines, is
// S1_cross_loop_pingpong_spin to be read.
struct S1Spin {
    alignas(64) std::atomic<uintptr_t> to_echo{0};
    alignas(64) std::atomic<uintptr_t> to_main{0};
};

uintptr_t s1_spin_take(std::atomic<uintptr_t> &box) {
    uintptr_t v;
    while ((v = box.exchange(0, std::memory_order_acquire)) == 0)
        __builtin_ia32_pause();
    return v;
}

void *s1_spin_echo(void *arg) {
    auto *b = static_cast<S1Spin *>(arg);
    pin_to(1);
    for (;;) {
        uintptr_t v = s1_spin_take(b->to_echo);
        b->to_main.store(v, std::memory_order_release);
        if (v == ~uintptr_t(0))
            return nullptr;
    }
}

void S1_spin_pingpong_baseline(benchmark::State &state) {
    S1Spin b;
    cpu_set_t saved;
    sched_getaffinity(0, sizeof saved, &saved);
    pin_to(0);
    pthread_t th;
    pthread_create(&th, nullptr, s1_spin_echo, &b);
    uintptr_t i = 0;
    for (auto _ : state) {
        b.to_echo.store(++i, std::memory_order_release);
        benchmark::DoNotOptimize(s1_spin_take(b.to_main));
    }
    b.to_echo.store(~uintptr_t(0), std::memory_order_release);
    s1_spin_take(b.to_main);
    pthread_join(th, nullptr);
    sched_setaffinity(0, sizeof saved, &saved);
    state.SetLabel("1 iteration = a word to another thread and back "
                   "(both spin)");
}

struct S2Base {
    static constexpr size_t kCap = 1024;
    uintptr_t ring[kCap];
    alignas(64) std::atomic<uint64_t> head{0}; // consumer's
    alignas(64) std::atomic<uint64_t> tail{0}; // producer's
    alignas(64) std::atomic<int> sleeping{0};
    std::atomic<int> full_sleeping{0};
    int efd = -1, full_efd = -1;
};

void *s2_consumer(void *arg) {
    auto *b = static_cast<S2Base *>(arg);
    pin_to(1);
    uint64_t h = 0;
    for (;;) {
        if (h == b->tail.load(std::memory_order_acquire)) {
            b->sleeping.store(1, std::memory_order_seq_cst);
            if (h == b->tail.load(std::memory_order_seq_cst)) {
                uint64_t n;
                (void)!read(b->efd, &n, sizeof n);
            }
            b->sleeping.store(0, std::memory_order_relaxed);
            continue;
        }
        uintptr_t v = b->ring[h % S2Base::kCap];
        b->head.store(++h, std::memory_order_seq_cst);
        if (b->full_sleeping.load(std::memory_order_seq_cst) &&
            b->full_sleeping.exchange(0)) {
            uint64_t one = 1;
            (void)!write(b->full_efd, &one, sizeof one);
        }
        if (v == 0)
            return nullptr;
    }
}

void s2_push(S2Base *b, uintptr_t v) {
    uint64_t t = b->tail.load(std::memory_order_relaxed);
    while (t - b->head.load(std::memory_order_acquire) == S2Base::kCap) {
        b->full_sleeping.store(1, std::memory_order_seq_cst);
        if (t - b->head.load(std::memory_order_seq_cst) == S2Base::kCap) {
            uint64_t n;
            (void)!read(b->full_efd, &n, sizeof n);
        }
        b->full_sleeping.store(0, std::memory_order_relaxed);
    }
    b->ring[t % S2Base::kCap] = v;
    b->tail.store(t + 1, std::memory_order_seq_cst);
    if (b->sleeping.load(std::memory_order_seq_cst) && b->sleeping.exchange(0)) {
        uint64_t one = 1;
        (void)!write(b->efd, &one, sizeof one);
    }
}

void S2_spsc_eventfd_baseline(benchmark::State &state) {
    auto *b = new S2Base;
    b->efd = eventfd(0, EFD_CLOEXEC);
    b->full_efd = eventfd(0, EFD_CLOEXEC);
    cpu_set_t saved;
    sched_getaffinity(0, sizeof saved, &saved);
    pin_to(0);
    pthread_t th;
    pthread_create(&th, nullptr, s2_consumer, b);
    uintptr_t i = 0;
    for (auto _ : state)
        for (size_t k = 0; k < kS2Batch; k++)
            s2_push(b, ++i);
    s2_push(b, 0);
    pthread_join(th, nullptr);
    sched_setaffinity(0, sizeof saved, &saved);
    close(b->efd);
    close(b->full_efd);
    delete b;
    state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(kS2Batch));
    state.SetLabel("1 iteration = 1,000 messages to another thread "
                   "(SPSC ring of 1,024 + eventfd)");
}

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

// S3's in-run baselines: what this machine gives two threads that share
// nothing, for the same shape of work without a runtime. Argument =
// threads, each pinned to its own CPU of the affinity mask, each doing its
// share of 1,000,000 units; timed from the moment every thread is ready
// until the last has finished. Their 2-vs-1 ratio is the ceiling S3's can
// be held to on this machine:
//  - raw_fcontext: W2_raw_fcontext_batch_warm_baseline's work (a context
//    made on each of 10,000 prefaulted stacks, then each run once), on each
//    thread's own stacks: the same memory traffic as S3 without a runtime;
//  - compute: a register-only loop, no memory at all: whether the two
//    CPUs run two threads at full speed at once.
struct S3BaseCtx {
    unsigned threads;
    bool compute;
    std::atomic<unsigned> ready{0};
    std::atomic<bool> go{false};
    std::atomic<uint64_t> t0{0};
    std::atomic<uint64_t> end{0};
    std::atomic<int> err{0};
};

struct S3BaseArg {
    S3BaseCtx *c;
    unsigned nth;
};

uint64_t s3_mono_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

void *s3_base_thread(void *arg) {
    auto *a = static_cast<S3BaseArg *>(arg);
    S3BaseCtx *c = a->c;
    pin_to(int(a->nth));
    size_t share = kS3Tasks / c->threads;
    RawStacks stacks(c->compute ? 1 : kW2Batch);
    std::vector<fcontext_t> ctx(kW2Batch);
    if (!stacks.ok())
        c->err.store(-ENOMEM);
    else if (!c->compute)
        for (size_t i = 0; i < kW2Batch; i++)
            jump_fcontext(make_fcontext(stacks.top(i), kRawStackSize, raw_once),
                          nullptr);
    if (c->ready.fetch_add(1) + 1 == c->threads) {
        c->t0.store(s3_mono_ns());
        c->go.store(true);
    }
    while (!c->go.load())
        ;
    if (c->compute) {
        // About as long per unit as one task of S3 (some tens of ns).
        uint64_t x = a->nth + 1;
        for (size_t i = 0; i < share * 32; i++)
            x = x * 6364136223846793005u + 1442695040888963407u;
        benchmark::DoNotOptimize(x);
    } else if (stacks.ok()) {
        for (size_t done = 0; done < share;) {
            size_t n = std::min(kW2Batch, share - done);
            for (size_t i = 0; i < n; i++)
                ctx[i] = make_fcontext(stacks.top(i), kRawStackSize, raw_once);
            for (size_t i = 0; i < n; i++)
                benchmark::DoNotOptimize(jump_fcontext(ctx[i], nullptr));
            done += n;
        }
    }
    uint64_t now = s3_mono_ns(), prev = c->end.load();
    while (now > prev && !c->end.compare_exchange_weak(prev, now))
        ;
    return nullptr;
}

void s3_base_run(benchmark::State &state, bool compute) {
    unsigned threads = unsigned(state.range(0));
    for (auto _ : state) {
        S3BaseCtx c;
        c.threads = threads;
        c.compute = compute;
        std::vector<pthread_t> th(threads);
        std::vector<S3BaseArg> args(threads);
        unsigned started = 0;
        for (; started < threads; started++) {
            args[started] = {&c, started};
            if (pthread_create(&th[started], nullptr, s3_base_thread,
                               &args[started]) != 0)
                break;
        }
        if (started < threads)
            c.go.store(true); // let the started ones finish
        for (unsigned i = 0; i < started; i++)
            pthread_join(th[i], nullptr);
        if (started < threads || c.err.load()) {
            state.SkipWithError(started < threads ? "pthread_create failed"
                                                  : "mmap failed");
            break;
        }
        state.SetIterationTime(double(c.end.load() - c.t0.load()) / 1e9);
    }
    state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(kS3Tasks));
    state.counters["task"] = benchmark::Counter(
        double(kS3Tasks), benchmark::Counter::kIsIterationInvariantRate |
                              benchmark::Counter::kInvert);
}

void S3_raw_fcontext_threads_baseline(benchmark::State &state) {
    s3_base_run(state, false);
    state.SetLabel("1 iteration = 1,000,000 raw contexts spread over the "
                   "threads, 10,000 prefaulted stacks per thread");
}

void S3_compute_threads_baseline(benchmark::State &state) {
    s3_base_run(state, true);
    state.SetLabel("1 iteration = 1,000,000 units of register-only work "
                   "spread over the threads");
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
        if (res != reinterpret_cast<void *>(i + 1)) { // the call's own result
            c->failed = -EIO;
            break;
        }
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

// ===========================================================================
// Q1: queue ping-pong. Two tasks and two queues of capacity 1: the driver
// puts an item on `there` and gets it back from `back`; the partner echoes.
// One iteration = one round trip (two puts, two gets, two switches), the
// same unit as W1, whose raw baseline is the reference: the ratio is what
// the queue adds to a bare switch.
// ===========================================================================

struct Q1Ctx {
    benchmark::State *state;
    rf_queue there, back;
};

void *q1_partner(void *arg) {
    auto *c = static_cast<Q1Ctx *>(arg);
    for (;;) {
        void *item;
        if (rf_queue_get(&c->there, &item) != 0) // -EPIPE: the driver is done
            break;
        if (rf_queue_put(&c->back, item) != 0)
            break;
    }
    return nullptr;
}

void *q1_main(void *arg) {
    auto *c = static_cast<Q1Ctx *>(arg);
    benchmark::State &state = *c->state;
    rf_task *partner = rf_spawn(q1_partner, c);
    if (!partner) {
        skip_rf(state, "rf_spawn", -errno);
        return nullptr;
    }
    rf_stats s0, s1;
    loop_stats(&s0);
    void *item = c;
    for (auto _ : state) {
        int rc = rf_queue_put(&c->there, item);
        if (rc == 0)
            rc = rf_queue_get(&c->back, &item);
        if (rc != 0) {
            skip_rf(state, "rf_queue", rc);
            break;
        }
    }
    loop_stats(&s1);
    rf_queue_close(&c->there);
    rf_join(partner, nullptr);
    rf_task_release(partner);
    report_stats(state, s0, s1, double(state.iterations()));
    return nullptr;
}

void Q1_queue_pingpong(benchmark::State &state) {
    Q1Ctx c{&state, {}, {}};
    if (rf_queue_init(&c.there, 1, nullptr) != 0 ||
        rf_queue_init(&c.back, 1, nullptr) != 0) {
        state.SkipWithError("rf_queue_init failed");
        return;
    }
    run_in_loop(state, q1_main, &c);
    rf_queue_fini(&c.there);
    rf_queue_fini(&c.back);
    state.SetLabel("1 iteration = 1 round trip A->B->A through 2 queues");
    state.counters["roundtrip"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// ===========================================================================
// Q2: one producer, N consumers, a queue of capacity 64. The producer (the
// main task) puts as fast as it can; each consumer gets until the queue is
// closed. One iteration = one item delivered.
// ===========================================================================

constexpr size_t kQ2Capacity = 64;

struct Q2Ctx {
    benchmark::State *state;
    int consumers;
    rf_queue q;
    uint64_t got;
};

void *q2_consumer(void *arg) {
    auto *c = static_cast<Q2Ctx *>(arg);
    void *item;
    while (rf_queue_get(&c->q, &item) == 0)
        c->got++;
    return nullptr;
}

void *q2_main(void *arg) {
    auto *c = static_cast<Q2Ctx *>(arg);
    benchmark::State &state = *c->state;
    rf_group g;
    rf_group_init(&g);
    for (int i = 0; i < c->consumers; i++) {
        if (!rf_group_spawn(&g, q2_consumer, c, nullptr)) {
            skip_rf(state, "rf_group_spawn", -errno);
            rf_queue_close(&c->q);
            rf_group_wait(&g);
            rf_group_fini(&g);
            return nullptr;
        }
    }
    rf_stats s0, s1;
    loop_stats(&s0);
    for (auto _ : state) {
        int rc = rf_queue_put(&c->q, c);
        if (rc != 0) {
            skip_rf(state, "rf_queue_put", rc);
            break;
        }
    }
    rf_queue_close(&c->q);
    rf_group_wait(&g); // the consumers drain what is left
    loop_stats(&s1);
    rf_group_fini(&g);
    if (c->got != uint64_t(state.iterations()) && !state.error_occurred())
        state.SkipWithError("items lost");
    report_stats(state, s0, s1, double(state.iterations()));
    return nullptr;
}

void q2_fanout(benchmark::State &state, int consumers) {
    Q2Ctx c{&state, consumers, {}, 0};
    if (rf_queue_init(&c.q, kQ2Capacity, nullptr) != 0) {
        state.SkipWithError("rf_queue_init failed");
        return;
    }
    run_in_loop(state, q2_main, &c);
    rf_queue_fini(&c.q);
    state.SetLabel("1 iteration = 1 item, capacity 64, " +
                   std::to_string(consumers) + " consumer(s)");
    state.counters["items_per_s"] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate);
}


// ===========================================================================
// Sweeps (W2 at scale, W3): one round = N tasks spawned, all alive at once,
// then gathered. W2's tasks return at once; W3's each sleep 10 ms first.
// A task takes its stack when it first runs (runtime/stack.c): W3's
// sleepers hold N stacks at once, W2's tasks each end before the next
// starts and run on two stacks in turn. Cold rounds run in a fresh loop
// each (every stack a round uses mapped and touched for the first time,
// as in a program that just started); warm rounds reuse one loop whose
// stack pool an untimed round has filled. The time of a
// round runs from the first rf_spawn to rf_gather's return (manual time:
// the loop's setup and teardown stay outside).
//
// Memory: rss_per_task = (resident set after the round - resident set
// before the loop was created) / N, the worst over the rounds, in bytes:
// stacks, task records, run queue, ring. minflt_per_task counts the page
// faults taken during the timed rounds (getrusage), per task.
// ===========================================================================

long rss_bytes() {
    long pages = 0, resident = 0;
    FILE *f = std::fopen("/proc/self/statm", "re");
    if (f) {
        if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        std::fclose(f);
    }
    return resident * sysconf(_SC_PAGESIZE);
}

long minflt() {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

uint64_t now_ns() { return rf_now_ns(); }

constexpr uint64_t kW3SleepNs = 10 * RF_NSEC_PER_MSEC;

struct SweepCtx {
    benchmark::State *state;
    size_t n;
    uint64_t sleep_ns;
    bool warm;
    std::vector<rf_task *> tasks;
    long rss_before = 0; // before the (first) loop was created
    // Accumulated over the timed rounds.
    long rss_max = 0;
    double spawn_ns = 0, started_ns = 0, wall_ns = 0;
    long faults = 0;
    uint64_t enters = 0;
    size_t rounds = 0;
    // Per round.
    size_t started = 0;
    uint64_t t_round0 = 0, t_last_started = 0;
};

void *sweep_task(void *arg) {
    auto *c = static_cast<SweepCtx *>(arg);
    if (++c->started == c->n)
        c->t_last_started = now_ns();
    if (c->sleep_ns)
        return reinterpret_cast<void *>(intptr_t(rf_sleep(c->sleep_ns)));
    return nullptr;
}

// One round inside the running loop. Returns 0 or an error code.
int sweep_round(SweepCtx *c, bool timed) {
    c->started = 0;
    rf_stats s0, s1;
    loop_stats(&s0);
    long f0 = minflt();
    uint64_t t0 = now_ns();
    size_t spawned = 0;
    int err = 0;
    for (; spawned < c->n; spawned++) {
        c->tasks[spawned] = rf_spawn(sweep_task, c);
        if (!c->tasks[spawned]) {
            err = -errno;
            break;
        }
    }
    uint64_t t1 = now_ns();
    int rc = rf_gather(c->tasks.data(), spawned, nullptr);
    uint64_t t2 = now_ns();
    long f1 = minflt();
    loop_stats(&s1);
    for (size_t i = 0; i < spawned; i++) {
        void *res = nullptr;
        if (rc == 0 && rf_join(c->tasks[i], &res) == 0 && res != nullptr)
            rc = int(reinterpret_cast<intptr_t>(res)); // a sleep failed
        rf_task_release(c->tasks[i]);
    }
    if (err == 0)
        err = rc;
    long rss = rss_bytes() - c->rss_before;
    if (rss > c->rss_max)
        c->rss_max = rss;
    if (timed && err == 0) {
        c->state->SetIterationTime(double(t2 - t0) / 1e9);
        c->spawn_ns += double(t1 - t0);
        c->started_ns += double(c->t_last_started - t0);
        c->wall_ns += double(t2 - t0);
        c->faults += f1 - f0;
        c->enters += s1.enters - s0.enters;
        c->rounds++;
    }
    return err;
}

void *sweep_cold_main(void *arg) {
    auto *c = static_cast<SweepCtx *>(arg);
    int rc = sweep_round(c, true);
    if (rc != 0)
        skip_rf(*c->state, "cold round", rc);
    return nullptr;
}

void *sweep_warm_main(void *arg) {
    auto *c = static_cast<SweepCtx *>(arg);
    benchmark::State &state = *c->state;
    int rc = sweep_round(c, false); // fills and faults in the stack pool
    if (rc != 0) {
        skip_rf(state, "warm-up round", rc);
        return nullptr;
    }
    for (auto _ : state) {
        rc = sweep_round(c, true);
        if (rc != 0) {
            skip_rf(state, "round", rc);
            break;
        }
    }
    return nullptr;
}

void sweep(benchmark::State &state, uint64_t sleep_ns, bool warm) {
    SweepCtx c;
    c.state = &state;
    c.n = size_t(state.range(0));
    c.sleep_ns = sleep_ns;
    c.warm = warm;
    c.tasks.resize(c.n);
    c.rss_before = rss_bytes();
    if (warm) {
        run_in_loop(state, sweep_warm_main, &c);
    } else {
        for (auto _ : state) {
            run_in_loop(state, sweep_cold_main, &c);
            if (state.error_occurred())
                break;
            // Each round's loop is gone: measure the next from here.
            c.rss_before = std::min(c.rss_before, rss_bytes());
        }
    }
    if (c.rounds == 0)
        return;
    double r = double(c.rounds), n = double(c.n);
    state.counters["rss_per_task"] = double(c.rss_max) / n;
    state.counters["minflt_per_task"] = double(c.faults) / (r * n);
    state.counters["enters_per_task"] = double(c.enters) / (r * n);
    state.counters["ns_per_task"] = c.wall_ns / (r * n);
    state.counters["spawn_ms"] = c.spawn_ns / r / 1e6;
    state.counters["started_ms"] = c.started_ns / r / 1e6;
    state.counters["wall_ms"] = c.wall_ns / r / 1e6;
    state.counters["task"] = benchmark::Counter(
        n, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
    state.SetLabel(std::string("1 iteration = ") + std::to_string(c.n) +
                   (sleep_ns ? " tasks sleeping 10 ms" : " empty tasks") +
                   ", spawned then gathered" +
                   (warm ? ", stack pool warm" : ", fresh loop"));
}

void W2_spawn_join_sweep(benchmark::State &state) { sweep(state, 0, false); }
void W2_spawn_join_sweep_warm(benchmark::State &state) { sweep(state, 0, true); }
void W3_sleepers(benchmark::State &state) { sweep(state, kW3SleepNs, false); }
void W3_sleepers_warm(benchmark::State &state) { sweep(state, kW3SleepNs, true); }

// --- W3 baselines: the kernel side alone ------------------------------------
//
// No tasks, no stacks: N sleepers' deadlines (now + 10 ms, rounded up to the
// thread's timer slack as rf_sleep rounds them) as IORING_OP_TIMEOUTs on a
// raw ring set up like the runtime's (SQ 256, CQ 1024), then every CQE
// reaped. `per_sleeper`: one kernel timeout per sleeper, the design rf_sleep
// had first. `coalesced`: one kernel timeout per distinct rounded deadline
// (sleepers that begin within the same slack share it), what rf_sleep does
// now (runtime/time.c); its time is the kernel-side floor of W3_sleepers.

bool raw_ring(benchmark::State &state, struct io_uring *ring) {
    static const unsigned flags[] = {
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
            IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN, 0};
    int rc = -EINVAL;
    for (unsigned f : flags) {
        struct io_uring_params p;
        std::memset(&p, 0, sizeof p);
        p.flags = f | IORING_SETUP_CQSIZE;
        p.cq_entries = 1024;
        rc = io_uring_queue_init_params(256, ring, &p);
        if (rc != -EINVAL)
            break;
    }
    if (rc != 0)
        skip_rf(state, "io_uring_queue_init_params", rc);
    return rc == 0;
}

void w3_raw_timeouts(benchmark::State &state, bool coalesce) {
    struct io_uring ring;
    if (!raw_ring(state, &ring))
        return;
    size_t n = size_t(state.range(0));
    long slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    uint64_t g = slack > 1 ? uint64_t(slack) : 1;
    std::vector<struct __kernel_timespec> ts(n);
    double wall = 0, timers = 0;
    size_t rounds = 0;
    for (auto _ : state) {
        uint64_t t0 = now_ns(), last = 0;
        size_t armed = 0, seen = 0;
        int rc = 0;
        for (size_t i = 0; i < n && rc >= 0; i++) {
            uint64_t d = (now_ns() + kW3SleepNs + g - 1) / g * g;
            if (coalesce && d == last)
                continue; // this sleeper joins the timer already armed
            last = d;
            ts[armed].tv_sec = int64_t(d / RF_NSEC_PER_SEC);
            ts[armed].tv_nsec = int64_t(d % RF_NSEC_PER_SEC);
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            if (!sqe) {
                rc = io_uring_submit(&ring);
                sqe = io_uring_get_sqe(&ring);
            }
            if (!sqe)
                break;
            io_uring_prep_timeout(sqe, &ts[armed], 0, IORING_TIMEOUT_ABS);
            armed++;
        }
        while (rc >= 0 && seen < armed) {
            rc = io_uring_submit_and_wait(&ring, 1);
            unsigned head, k = 0;
            struct io_uring_cqe *cqe;
            io_uring_for_each_cqe(&ring, head, cqe) k++;
            io_uring_cq_advance(&ring, k);
            seen += k;
        }
        if (rc < 0) {
            skip_rf(state, "io_uring_submit", rc);
            break;
        }
        uint64_t t1 = now_ns();
        state.SetIterationTime(double(t1 - t0) / 1e9);
        wall += double(t1 - t0);
        timers += double(armed);
        rounds++;
    }
    io_uring_queue_exit(&ring);
    if (rounds == 0)
        return;
    state.counters["ns_per_task"] = wall / double(rounds * n);
    state.counters["wall_ms"] = wall / double(rounds) / 1e6;
    state.counters["kernel_timers"] = timers / double(rounds);
    state.SetLabel(std::string("1 iteration = ") + std::to_string(n) +
                   " deadlines 10 ms ahead, " +
                   (coalesce ? "one kernel timeout per distinct deadline"
                             : "one kernel timeout each") +
                   ", raw liburing, no tasks");
}

void W3_raw_timeout_per_sleeper_baseline(benchmark::State &state) {
    w3_raw_timeouts(state, false);
}
void W3_raw_timeout_coalesced_baseline(benchmark::State &state) {
    w3_raw_timeouts(state, true);
}

// --- W3 cold: what a fresh stack costs -------------------------------------
//
// The runtime's stack geometry without the runtime: slabs of 64 slots, each
// a 64 KiB guard region (MADV_GUARD_INSTALL, all 64 in one process_madvise)
// below a 128 KiB stack, and the stack's top page touched, as slab_new()
// and a task's first run do. One iteration = 100,000 stacks (1,563 slabs);
// the time is per stack (manual time, the munmap afterwards excluded). The
// `populate` variant populates the 64 top pages of a slab with one
// process_madvise(MADV_POPULATE_WRITE) instead of taking 64 faults. Both
// need Linux 6.13 (guard regions, process_madvise on oneself).

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

uint64_t thread_cpu_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return uint64_t(ts.tv_sec) * RF_NSEC_PER_SEC + uint64_t(ts.tv_nsec);
}

void w3_raw_stacks(benchmark::State &state, bool populate) {
    constexpr size_t kPer = 64, kGuard = 64 * 1024;
    constexpr size_t kSlot = RF_DEFAULT_STACK_SIZE + kGuard;
    constexpr size_t kStacks = 100000, kSlabs = (kStacks + kPer - 1) / kPer;
    int pidfd = int(syscall(SYS_pidfd_open, getpid(), 0));
    if (pidfd < 0) {
        state.SkipWithError("pidfd_open failed");
        return;
    }
    std::vector<char *> slabs(kSlabs, nullptr);
    double guard_ns = 0, touch_ns = 0, cpu_ns = 0;
    long faults = 0;
    for (auto _ : state) {
        const char *err = nullptr;
        long f0 = minflt();
        uint64_t c0 = thread_cpu_ns(), w0 = now_ns();
        for (size_t s = 0; s < kSlabs && !err; s++) {
            uint64_t t0 = now_ns();
            void *p = mmap(nullptr, kPer * kSlot, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                           -1, 0);
            if (p == MAP_FAILED) {
                err = "mmap failed";
                break;
            }
            char *b = slabs[s] = static_cast<char *>(p);
            struct iovec iov[kPer];
            for (size_t i = 0; i < kPer; i++)
                iov[i] = {b + i * kSlot, kGuard};
            if (syscall(SYS_process_madvise, pidfd, iov, kPer, MADV_GUARD_INSTALL, 0) < 0)
                err = "process_madvise(MADV_GUARD_INSTALL) refused (Linux < 6.13?)";
            uint64_t t1 = now_ns();
            if (populate) {
                for (size_t i = 0; i < kPer; i++)
                    iov[i] = {b + (i + 1) * kSlot - kPage, kPage};
                if (syscall(SYS_process_madvise, pidfd, iov, kPer, MADV_POPULATE_WRITE, 0) < 0)
                    err = "process_madvise(MADV_POPULATE_WRITE) refused";
            }
            for (size_t i = 0; i < kPer; i++) // the top word slab_touch writes
                *reinterpret_cast<void *volatile *>(b + (i + 1) * kSlot - sizeof(void *)) = b;
            uint64_t t2 = now_ns();
            guard_ns += double(t1 - t0);
            touch_ns += double(t2 - t1);
        }
        uint64_t w1 = now_ns(), c1 = thread_cpu_ns();
        faults += minflt() - f0;
        cpu_ns += double(c1 - c0);
        state.SetIterationTime(double(w1 - w0) / 1e9);
        for (char *&b : slabs) {
            if (b)
                munmap(b, kPer * kSlot);
            b = nullptr;
        }
        if (err) {
            state.SkipWithError(err);
            break;
        }
    }
    close(pidfd);
    double n = double(state.iterations()) * double(kStacks);
    if (n <= 0 || state.error_occurred())
        return;
    state.counters["map_guard_ns"] = guard_ns / n;
    state.counters["touch_ns"] = touch_ns / n;
    state.counters["cpu_ns"] = cpu_ns / n;
    state.counters["minflt"] = double(faults) / n;
    state.counters["stack"] = benchmark::Counter(
        double(kStacks), benchmark::Counter::kIsIterationInvariantRate |
                             benchmark::Counter::kInvert);
    state.SetLabel(populate ? "1 iteration = 100,000 stacks; top pages populated per slab"
                            : "1 iteration = 100,000 stacks; top page first-touched");
}

void W3_raw_stack_first_touch_baseline(benchmark::State &state) {
    w3_raw_stacks(state, false);
}
void W3_raw_stack_populate_baseline(benchmark::State &state) {
    w3_raw_stacks(state, true);
}

// ===========================================================================
// W4: 1,000 tasks each issue IORING_OP_NOP in a loop (rf_nop). One
// iteration = 100,000 NOPs: 1,000 tasks spawned, each doing 100 NOPs, then
// gathered (the spawns and joins, ~0.1 ms, are inside). The baselines do
// 100,000 NOPs per iteration on a raw liburing ring, in batches of 128 and
// of 1. Time per iteration is comparable across all three; `op` is the
// time per NOP, items_per_second the ops/s.
// ===========================================================================

constexpr size_t kW4Tasks = 1000;
constexpr size_t kW4NopsPerTask = 100;
constexpr size_t kW4Ops = kW4Tasks * kW4NopsPerTask;

void w4_counters(benchmark::State &state) {
    state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(kW4Ops));
    state.counters["op"] = benchmark::Counter(
        double(kW4Ops), benchmark::Counter::kIsIterationInvariantRate |
                            benchmark::Counter::kInvert);
}

struct W4Ctx {
    benchmark::State *state;
    rf_task *tasks[kW4Tasks];
    bool deadline; // each worker runs under a deadline (never reached)
    bool renew;    // .. renewed before every operation
};

void *w4_worker(void *arg) {
    // W4_nop_tasks_deadline: what bounding every operation by the task's
    // deadline costs, a minute ahead so that it never fires.
    // W4_nop_tasks_deadline_renewed: the same deadline renewed (now + 60 s)
    // before every operation, as a server renews an idle timeout before
    // each read and write.
    auto *c = static_cast<W4Ctx *>(arg);
    if (c)
        rf_deadline_set(rf_now_ns() + 60 * RF_NSEC_PER_SEC);
    bool renew = c && c->renew;
    for (size_t i = 0; i < kW4NopsPerTask; i++) {
        if (renew)
            rf_deadline_set(rf_now_ns() + 60 * RF_NSEC_PER_SEC);
        int rc = rf_nop();
        if (rc != 0)
            return reinterpret_cast<void *>(intptr_t(rc));
    }
    return nullptr;
}

// Spawns the workers, gathers them; returns 0 or the first error.
int w4_round(W4Ctx *c) {
    size_t n = 0;
    int err = 0;
    for (; n < kW4Tasks; n++) {
        c->tasks[n] = rf_spawn(w4_worker, c->deadline ? c : nullptr);
        if (!c->tasks[n]) {
            err = -errno;
            break;
        }
    }
    int rc = rf_gather(c->tasks, n, nullptr);
    for (size_t i = 0; i < n; i++) {
        void *res = nullptr;
        if (rc == 0 && rf_join(c->tasks[i], &res) == 0 && res)
            rc = int(reinterpret_cast<intptr_t>(res));
        rf_task_release(c->tasks[i]);
    }
    return err ? err : rc;
}

void *w4_main(void *arg) {
    auto *c = static_cast<W4Ctx *>(arg);
    benchmark::State &state = *c->state;
    int rc = w4_round(c); // warm: stacks pooled, ring and caches hot
    rf_stats s0, s1;
    loop_stats(&s0);
    for (auto _ : state) {
        if (rc == 0)
            rc = w4_round(c);
        if (rc != 0) {
            skip_rf(state, "rf_nop", rc);
            break;
        }
    }
    loop_stats(&s1);
    double ops = double(state.iterations()) * double(kW4Ops);
    report_stats(state, s0, s1, ops);
    return nullptr;
}

void W4_nop_tasks(benchmark::State &state) {
    auto *c = new W4Ctx{&state, {}, false, false};
    run_in_loop(state, w4_main, c);
    delete c;
    w4_counters(state);
    state.SetLabel("1 iteration = 1000 tasks x 100 rf_nop (100,000 NOPs)");
}

// W4 with every task under a deadline that never comes: the price of the
// deadline on each operation (compare with W4_nop_tasks in the same run).
void W4_nop_tasks_deadline(benchmark::State &state) {
    auto *c = new W4Ctx{&state, {}, true, false};
    run_in_loop(state, w4_main, c);
    delete c;
    w4_counters(state);
    state.SetLabel("W4 with rf_deadline_set(now + 60 s) in each task");
}

// W4 with the deadline renewed before every NOP (an idle timeout kept the
// way servers keep one): against W4_nop_tasks_deadline in the same run,
// the price of a renewal, clock read included.
void W4_nop_tasks_deadline_renewed(benchmark::State &state) {
    auto *c = new W4Ctx{&state, {}, true, true};
    run_in_loop(state, w4_main, c);
    delete c;
    w4_counters(state);
    state.SetLabel("W4 with rf_deadline_set(now + 60 s) before each rf_nop");
}

// The same NOPs on a ring of our own: prepare `batch` SQEs, submit them and
// wait for all their CQEs in one io_uring_enter, reap. Set up like the
// runtime's ring (raw_ring: the same flags ladder and sizes), so the two
// differ only in what the runtime adds.
void w4_raw(benchmark::State &state, unsigned batch) {
    struct io_uring ring;
    if (!raw_ring(state, &ring))
        return;
    int rc = 0;
    for (auto _ : state) {
        for (size_t done = 0; done < kW4Ops;) {
            unsigned k = unsigned(std::min<size_t>(batch, kW4Ops - done));
            for (unsigned i = 0; i < k; i++) {
                struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                io_uring_prep_nop(sqe);
                io_uring_sqe_set_data64(sqe, i);
            }
            rc = io_uring_submit_and_wait(&ring, k);
            if (rc < 0)
                break;
            unsigned head, seen = 0;
            struct io_uring_cqe *cqe;
            io_uring_for_each_cqe(&ring, head, cqe) {
                benchmark::DoNotOptimize(cqe->res);
                seen++;
            }
            io_uring_cq_advance(&ring, seen);
            done += seen;
        }
        if (rc < 0) {
            skip_rf(state, "io_uring_submit_and_wait", rc);
            break;
        }
    }
    io_uring_queue_exit(&ring);
    w4_counters(state);
    state.SetLabel(std::string("1 iteration = 100,000 NOPs, raw liburing, batch ") +
                   std::to_string(batch));
}

void W4_raw_liburing_nop_baseline(benchmark::State &state) { w4_raw(state, 128); }
void W4_raw_liburing_nop_batch1_baseline(benchmark::State &state) { w4_raw(state, 1); }

// ===========================================================================
// C1: closing a connection while N others wait in rf_recv (a server with
// many idle keep-alive connections that opens and closes others). One
// iteration = a socketpair made with socketpair(2) and both ends closed
// with rf_close; the baseline closes them with close(2) beside the same N
// waiting tasks. rf_close looks for the operations in flight on its fd
// (it must wait for them before the number can be reused): the ratio
// shows whether that look grows with the connections open (8,000
// pairs: 16,000 descriptors, within a hard limit of 20,000).
// ===========================================================================

struct C1Ctx {
    benchmark::State *state;
    int idle;  // connections waiting in rf_recv
    bool raw;  // close(2) instead of rf_close
};

void *c1_reader(void *arg) {
    char b;
    rf_recv(int(intptr_t(arg)), &b, 1, 0); // until its peer closes
    return nullptr;
}

void *c1_main(void *arg) {
    auto *c = static_cast<C1Ctx *>(arg);
    benchmark::State &state = *c->state;
    std::vector<int> peers;
    std::vector<rf_task *> tasks;
    int rc = 0;
    for (int i = 0; i < c->idle && rc == 0; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            rc = -errno;
            break;
        }
        rf_task *t = rf_spawn(c1_reader, (void *)intptr_t(sv[0]));
        if (!t) {
            rc = -errno;
            close(sv[0]);
            close(sv[1]);
            break;
        }
        peers.push_back(sv[1]);
        tasks.push_back(t);
        peers.push_back(sv[0]);
    }
    rf_yield(); // every reader is in rf_recv, its recv in the ring
    for (auto _ : state) {
        if (rc != 0)
            break;
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            rc = -errno;
            break;
        }
        if (c->raw) {
            close(sv[0]);
            close(sv[1]);
        } else {
            rf_close(sv[0]);
            rf_close(sv[1]);
        }
    }
    if (rc != 0)
        skip_rf(state, "setup", rc);
    for (size_t i = 0; i < peers.size(); i += 2)
        close(peers[i]); // ends each reader's recv with 0
    for (rf_task *t : tasks)
        rf_join(t, nullptr);
    for (size_t i = 1; i < peers.size(); i += 2)
        rf_close(peers[i]);
    state.SetLabel("1 iteration = socketpair(2) + 2 closes");
    return nullptr;
}

void c1_run(benchmark::State &state, bool raw) {
    C1Ctx c{&state, int(state.range(0)), raw};
    run_in_loop(state, c1_main, &c);
}

void C1_rf_close_beside_idle(benchmark::State &state) { c1_run(state, false); }
void C1_close_beside_idle_baseline(benchmark::State &state) { c1_run(state, true); }

} // namespace

// ===========================================================================
// T1: rf_wait_for of a task that finishes first, against rf_join of the
// same task. One iteration = spawn a task that returns at once, wait for it,
// release it; the ratio is what the timeout's timer adds to a join.
// ===========================================================================

void *t1_child(void *arg) { return arg; }

struct T1Ctx {
    benchmark::State *state;
    bool timed;
};

void *t1_main(void *arg) {
    auto *c = static_cast<T1Ctx *>(arg);
    benchmark::State &state = *c->state;
    rf_stats s0, s1;
    loop_stats(&s0);
    for (auto _ : state) {
        rf_task *t = rf_spawn(t1_child, c);
        if (!t) {
            skip_rf(state, "rf_spawn", -errno);
            break;
        }
        int rc = c->timed ? rf_wait_for(t, 10 * RF_NSEC_PER_SEC, nullptr)
                          : rf_join(t, nullptr);
        rf_task_release(t);
        if (rc != 0) {
            skip_rf(state, c->timed ? "rf_wait_for" : "rf_join", rc);
            break;
        }
    }
    loop_stats(&s1);
    report_stats(state, s0, s1, double(state.iterations()));
    return nullptr;
}

void T1_wait_for_task_first(benchmark::State &state) {
    T1Ctx c{&state, true};
    run_in_loop(state, t1_main, &c);
    state.SetLabel("1 iteration = spawn + rf_wait_for(10 s) + release");
}

void T1_join_baseline(benchmark::State &state) {
    T1Ctx c{&state, false};
    run_in_loop(state, t1_main, &c);
    state.SetLabel("1 iteration = spawn + rf_join + release");
}

BENCHMARK(W1_yield_pingpong)->UseRealTime();
BENCHMARK(W1_yield_pingpong_call)->UseRealTime();
BENCHMARK(W1_yield_pingpong_stall_detector)->UseRealTime();
BENCHMARK(W1_yield_pingpong_sched_delay)->UseRealTime();
BENCHMARK(D1_symbolize_lone)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(D1_backtrace_symbols_baseline)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(D2_dump)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(D2_dump_backtraces)->Arg(1000)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(W1_raw_fcontext_baseline)->UseRealTime();
BENCHMARK(W1_raw_fcontext_hub_baseline)->UseRealTime();
BENCHMARK(W2_spawn_join)->Iterations(kW2Tasks)->UseRealTime();
BENCHMARK(W2_spawn_join_warm)->Iterations(kW2Tasks)->UseRealTime();
BENCHMARK(W2_raw_fcontext_baseline)->Iterations(kW2Tasks)->UseRealTime();
BENCHMARK(W2_raw_fcontext_batch_baseline)->Iterations(kW2Tasks)->UseRealTime();
BENCHMARK(W2_raw_fcontext_batch_warm_baseline)->Iterations(kW2Tasks)->UseRealTime();
BENCHMARK(S1_cross_loop_pingpong)->UseRealTime();
BENCHMARK(S1_cross_loop_pingpong_msg_ring)->UseRealTime();
BENCHMARK(S1_cross_loop_pingpong_spin)->UseRealTime();
BENCHMARK(S1_eventfd_mutex_pingpong_baseline)->UseRealTime();
BENCHMARK(S1_msg_ring_pingpong_baseline)->UseRealTime();
BENCHMARK(S1_spin_pingpong_baseline)->UseRealTime();
BENCHMARK(S2_cross_loop_stream)->UseRealTime();
BENCHMARK(S2_cross_loop_stream_msg_ring)->UseRealTime();
BENCHMARK(S2_cross_loop_stream_spin)->UseRealTime();
BENCHMARK(S2_spsc_eventfd_baseline)->UseRealTime();
BENCHMARK(S3_spawn_join_loops)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(16)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(S3_spawn_join_loop_on_cpu)->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(S3_spawn_join_loops_batch100)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(S3_spawn_join_loops_batch1000)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(S3_raw_fcontext_threads_baseline)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(S3_compute_threads_baseline)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(Q1_queue_pingpong)->UseRealTime();
BENCHMARK(T1_wait_for_task_first)->UseRealTime();
BENCHMARK(T1_join_baseline)->UseRealTime();

// Q2, one name per consumer count (ratios.sh groups by the name before
// the first '/', so the count is part of the name).
static const int q2_registered = [] {
    for (int n : {1, 2, 4, 16, 64}) {
        std::string name = "Q2_queue_1p_" + std::to_string(n) + "c";
        benchmark::RegisterBenchmark(name.c_str(), q2_fanout, n)->UseRealTime();
    }
    return 0;
}();
BENCHMARK(W3_raw_stack_first_touch_baseline)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(W3_raw_stack_populate_baseline)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(C1_rf_close_beside_idle)->Arg(0)->Arg(1000)->Arg(8000)->UseRealTime();
BENCHMARK(C1_close_beside_idle_baseline)->Arg(0)->Arg(1000)->Arg(8000)->UseRealTime();
BENCHMARK(W4_nop_tasks)->UseRealTime();
BENCHMARK(W4_nop_tasks_deadline)->UseRealTime();
BENCHMARK(W4_nop_tasks_deadline_renewed)->UseRealTime();
BENCHMARK(W4_raw_liburing_nop_baseline)->UseRealTime();
BENCHMARK(W4_raw_liburing_nop_batch1_baseline)->UseRealTime();
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

namespace {

// The sweeps, registered here so that 10^6 tasks can be left out by
// default: a million live tasks keep ~5-6 GB resident and take tens of
// seconds per round on a 2-vCPU VM. RF_BENCH_1M=1 adds them.
void register_sweeps() {
    const char *env = std::getenv("RF_BENCH_1M");
    bool huge = env && *env && std::strcmp(env, "0") != 0;
    struct {
        const char *name;
        void (*fn)(benchmark::State &);
    } const sweeps[] = {
        {"W2_spawn_join_sweep", W2_spawn_join_sweep},
        {"W2_spawn_join_sweep_warm", W2_spawn_join_sweep_warm},
        {"W3_sleepers", W3_sleepers},
        {"W3_sleepers_warm", W3_sleepers_warm},
        {"W3_raw_timeout_per_sleeper_baseline", W3_raw_timeout_per_sleeper_baseline},
        {"W3_raw_timeout_coalesced_baseline", W3_raw_timeout_coalesced_baseline},
    };
    for (const auto &s : sweeps) {
        auto *b = benchmark::RegisterBenchmark(s.name, s.fn);
        b->Arg(1000)->Arg(10000)->Arg(100000);
        if (huge)
            b->Arg(1000000);
        b->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);
    }
}

} // namespace

int main(int argc, char **argv) {
    // libuv sizes its threadpool from the environment at its first use:
    // the same number of workers as ringfiber's pool in W5.
    setenv("UV_THREADPOOL_SIZE", std::to_string(kW5Threads).c_str(), 1);
    // W6's sweep keeps 2,000 sockets open at its largest.
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    register_sweeps();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    add_context();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
