// Embedding workloads (ringfiber_bench, next to ringfiber_bench.cc; same
// naming: workload id first, in-run baselines end in "_baseline").
//
// W9: work handed to a loop from another thread. One iteration = one
// function posted by the benchmark thread and run on the loop's thread:
//   W9_spawn_threadsafe        rf_loop_spawn_threadsafe of an empty task
//   W9_call_threadsafe         rf_loop_call_threadsafe of an empty function
//   W9_mutex_queue_baseline    the textbook hand-off: a malloc'd node on a
//                              mutex-protected queue, a condition variable
//                              signalled when the queue was empty
//   W9_local_spawn_baseline    the same tasks spawned on the loop's own
//                              thread (what crossing threads adds)
//
// W10: a loop driven by a host's poll(2) loop. One iteration = one
// rf_sleep(1 ns) of a task (timer slack 1 ns: the timer fires at once, so
// each iteration is one completion going round the loop):
//   W10_host_poll_run_once     poll on rf_loop_fd + rf_loop_run_once(NOWAIT)
//   W10_run_forever_baseline   the same task under the loop's own run

#include <benchmark/benchmark.h>

#include <ringfiber.h>

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

constexpr int64_t kW9Items = 200000;
// Items in flight at most: the poster waits for the loop every kW9Window
// items, as the local baseline does (a flood with no bound would measure
// the mapping of 200,000 fresh task stacks instead of the hand-off).
constexpr int64_t kW9Window = 1000;
constexpr int64_t kW10Sleeps = 100000;

void skip(benchmark::State &state, const char *what, int err) {
    std::string msg = std::string(what) + ": " + rf_strerror(err);
    state.SkipWithError(msg.c_str());
}

void per_item_counter(benchmark::State &state, const char *name) {
    state.counters[name] = benchmark::Counter(
        1, benchmark::Counter::kIsIterationInvariantRate |
               benchmark::Counter::kInvert);
}

// ---- W9 -------------------------------------------------------------------

struct Server {
    pthread_t th{};
    rf_loop *loop = nullptr;
    std::atomic<int> state{0}; // 1 ready, -errno failed
    int run_rc = 0;
};

void *server_main(void *p) {
    auto *s = static_cast<Server *>(p);
    rf_loop_opts o{};
    o.flags = RF_LOOP_SERVE | RF_LOOP_QUIET;
    int rc = rf_loop_new(&s->loop, &o);
    s->state.store(rc ? rc : 1);
    if (rc)
        return nullptr;
    s->run_rc = rf_loop_run_forever(s->loop);
    rf_loop_free(s->loop);
    return nullptr;
}

bool server_start(benchmark::State &state, Server &s) {
    if (pthread_create(&s.th, nullptr, server_main, &s) != 0) {
        state.SkipWithError("pthread_create failed");
        return false;
    }
    while (s.state.load() == 0)
        sched_yield();
    if (s.state.load() < 0) {
        pthread_join(s.th, nullptr);
        skip(state, "rf_loop_new", s.state.load());
        return false;
    }
    return true;
}

void server_stop(Server &s) {
    rf_loop_stop_threadsafe(s.loop);
    pthread_join(s.th, nullptr);
}

// Counted on the loop's thread; the poster waits for the last one.
std::atomic<int64_t> g_w9_done;

void *w9_task(void *) {
    g_w9_done.fetch_add(1, std::memory_order_release);
    return nullptr;
}

void w9_call(void *) { g_w9_done.fetch_add(1, std::memory_order_release); }

void wait_done(int64_t n) {
    while (g_w9_done.load(std::memory_order_acquire) < n)
        sched_yield();
}

void W9_spawn_threadsafe(benchmark::State &state) {
    Server s;
    if (!server_start(state, s))
        return;
    g_w9_done = 0;
    int64_t n = 0;
    for (auto _ : state) {
        int rc = rf_loop_spawn_threadsafe(s.loop, w9_task, nullptr, nullptr);
        if (rc != 0) {
            skip(state, "rf_loop_spawn_threadsafe", rc);
            break;
        }
        if (++n % kW9Window == 0 || n == state.max_iterations)
            wait_done(n);
    }
    server_stop(s);
    state.SetLabel("1 iteration = 1 task posted from another thread and run");
    per_item_counter(state, "task");
}

void W9_call_threadsafe(benchmark::State &state) {
    Server s;
    if (!server_start(state, s))
        return;
    g_w9_done = 0;
    int64_t n = 0;
    for (auto _ : state) {
        int rc = rf_loop_call_threadsafe(s.loop, w9_call, nullptr);
        if (rc != 0) {
            skip(state, "rf_loop_call_threadsafe", rc);
            break;
        }
        if (++n % kW9Window == 0 || n == state.max_iterations)
            wait_done(n);
    }
    server_stop(s);
    state.SetLabel("1 iteration = 1 function posted from another thread and run");
    per_item_counter(state, "call");
}

// The textbook queue: what a server that hands work to a worker thread
// without ringfiber would write.
struct Node {
    Node *next;
    void (*fn)(void *);
    void *arg;
};

struct MutexQueue {
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    Node *head = nullptr, *tail = nullptr;
    bool stop = false;
};

void *queue_worker(void *p) {
    auto *q = static_cast<MutexQueue *>(p);
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        Node *batch = q->head;
        q->head = q->tail = nullptr;
        bool stop = q->stop;
        pthread_mutex_unlock(&q->mu);
        while (batch) {
            Node *next = batch->next;
            batch->fn(batch->arg);
            free(batch);
            batch = next;
        }
        if (stop)
            return nullptr;
    }
}

void W9_mutex_queue_baseline(benchmark::State &state) {
    MutexQueue q;
    pthread_t th;
    if (pthread_create(&th, nullptr, queue_worker, &q) != 0) {
        state.SkipWithError("pthread_create failed");
        return;
    }
    g_w9_done = 0;
    int64_t n = 0;
    for (auto _ : state) {
        auto *nd = static_cast<Node *>(malloc(sizeof(Node)));
        nd->next = nullptr;
        nd->fn = w9_call;
        nd->arg = nullptr;
        pthread_mutex_lock(&q.mu);
        bool was_empty = q.head == nullptr;
        if (q.tail)
            q.tail->next = nd;
        else
            q.head = nd;
        q.tail = nd;
        pthread_mutex_unlock(&q.mu);
        if (was_empty)
            pthread_cond_signal(&q.cv);
        if (++n % kW9Window == 0 || n == state.max_iterations)
            wait_done(n);
    }
    pthread_mutex_lock(&q.mu);
    q.stop = true;
    pthread_cond_signal(&q.cv);
    pthread_mutex_unlock(&q.mu);
    pthread_join(th, nullptr);
    state.SetLabel("1 iteration = 1 malloc'd node through a mutex+condvar queue");
    per_item_counter(state, "call");
}

// The same tasks, spawned on the loop's own thread in windows of 1000 and
// run (spawn + release + run; no join, as W9's tasks are detached).
struct LocalCtx {
    benchmark::State *state;
};

void *w9_local_main(void *p) {
    auto *c = static_cast<LocalCtx *>(p);
    benchmark::State &state = *c->state;
    int64_t n = 0;
    for (auto _ : state) {
        rf_task *t = rf_spawn(w9_task, nullptr);
        if (!t) {
            skip(state, "rf_spawn", -errno);
            break;
        }
        rf_task_release(t);
        if (++n % kW9Window == 0 || n == state.max_iterations)
            while (g_w9_done.load(std::memory_order_relaxed) < n)
                rf_yield();
    }
    return nullptr;
}

void W9_local_spawn_baseline(benchmark::State &state) {
    g_w9_done = 0;
    LocalCtx c{&state};
    int rc = rf_run(w9_local_main, &c, nullptr);
    if (rc != 0 && !state.error_occurred())
        skip(state, "rf_run", rc);
    state.SetLabel("1 iteration = 1 task spawned on the loop's thread and run");
    per_item_counter(state, "task");
}

// ---- W10 ------------------------------------------------------------------

struct SleepCtx {
    benchmark::State *state;
    int err;
};

void *w10_sleeper(void *p) {
    auto *c = static_cast<SleepCtx *>(p);
    for (auto _ : *c->state) {
        int rc = rf_sleep(1);
        if (rc != 0) {
            c->err = rc;
            break;
        }
    }
    return nullptr;
}

// Timer slack 1 ns for the loops made here: the sleeps fire at once.
struct SlackGuard {
    int old;
    SlackGuard() : old(prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)) {
        prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0);
    }
    ~SlackGuard() {
        if (old > 0)
            prctl(PR_SET_TIMERSLACK, old, 0, 0, 0);
    }
};

void W10_host_poll_run_once(benchmark::State &state) {
    SlackGuard slack;
    rf_loop *l;
    int rc = rf_loop_new(&l, nullptr);
    if (rc) {
        skip(state, "rf_loop_new", rc);
        return;
    }
    SleepCtx c{&state, 0};
    rf_task_release(rf_loop_spawn(l, w10_sleeper, &c, nullptr));
    int fd = rf_loop_fd(l);
    if (fd < 0) {
        rf_loop_free(l);
        skip(state, "rf_loop_fd", fd);
        return;
    }
    uint64_t polls = 0;
    for (;;) {
        int r = rf_loop_run_once(l, RF_RUN_NOWAIT);
        if (r <= 0) {
            if (r < 0)
                skip(state, "rf_loop_run_once", r);
            break;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        int timeout = -1;
        rf_loop_timeout_ms(l, &timeout);
        poll(&pfd, 1, timeout);
        polls++;
    }
    rf_loop_free(l);
    if (c.err)
        skip(state, "rf_sleep", c.err);
    state.SetLabel("1 iteration = 1 sleep, loop driven by poll + run_once");
    state.counters["polls"] = double(polls) / double(state.iterations());
    per_item_counter(state, "sleep");
}

void W10_run_forever_baseline(benchmark::State &state) {
    SlackGuard slack;
    SleepCtx c{&state, 0};
    int rc = rf_run(w10_sleeper, &c, nullptr);
    if (rc != 0)
        skip(state, "rf_run", rc);
    else if (c.err)
        skip(state, "rf_sleep", c.err);
    state.SetLabel("1 iteration = 1 sleep, loop run by rf_run");
    per_item_counter(state, "sleep");
}

} // namespace

BENCHMARK(W9_spawn_threadsafe)->Iterations(kW9Items)->UseRealTime();
BENCHMARK(W9_call_threadsafe)->Iterations(kW9Items)->UseRealTime();
BENCHMARK(W9_mutex_queue_baseline)->Iterations(kW9Items)->UseRealTime();
BENCHMARK(W9_local_spawn_baseline)->Iterations(kW9Items)->UseRealTime();
BENCHMARK(W10_host_poll_run_once)->Iterations(kW10Sleeps)->UseRealTime();
BENCHMARK(W10_run_forever_baseline)->Iterations(kW10Sleeps)->UseRealTime();
