/*
 * Offload (rf_to_thread, rf_pool_*): results come back, the loop runs
 * other tasks meanwhile, a million round trips without a lost wake-up,
 * backpressure (queue of 4, 1,000 submitters, FIFO), the cancellation
 * rule, shutdown with calls in flight, one pool shared by loops on two
 * threads, bad input.
 */
#include <semaphore.h>
#include "helpers.h"

#include <pthread.h>
#include <sys/syscall.h>

/* Sanitized builds are 5-20x slower: the counts shrink, not the checks. */

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

/* A joined thread leaves /proc/self/task a moment after pthread_join
 * returns: wait (up to 5 s) for the count to come back to n. */
/* Whether the thread count falls to n or below within 5 s: the threads a
 * pool joined are gone. (At most: a thread that pthread_join has already
 * returned for can still be listed in /proc for a moment, so a count
 * taken as the baseline may include one on its way out.) */
static bool threads_settle(int n)
{
    for (int i = 0; i < 500; i++) {
        if (rft_count_threads() <= n)
            return true;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "threads: %d, expected %d\n", rft_count_threads(), n);
    return false;
}

/* ---- a gate that blocks workers until a task opens it ------------------- */

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    int entered; /* workers that reached the gate */
} gate;

static void gate_init(gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = false;
    g->entered = 0;
}

static void gate_pass(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->entered++;
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static int gate_entered(gate *g)
{
    pthread_mutex_lock(&g->mu);
    int n = g->entered;
    pthread_mutex_unlock(&g->mu);
    return n;
}

/* Yield until at least n workers are at the gate (bounded). */
static bool gate_wait_entered(gate *g, int n)
{
    uint64_t until = rft_now() + 10 * RFT_SEC;
    while (gate_entered(g) < n && rft_now() < until)
        rf_sleep(100 * RF_NSEC_PER_USEC);
    return gate_entered(g) >= n;
}

/* ---- basics ------------------------------------------------------------- */

typedef struct where {
    pid_t tid;
    int x;
} where;

static void *record_thread(void *arg)
{
    where *w = arg;
    w->tid = gettid_();
    return (void *)(intptr_t)(w->x * 2);
}

static volatile int g_ticks;
static volatile int g_stop;

static void *ticker(void *arg)
{
    while (!g_stop) {
        g_ticks++;
        rf_sleep(RF_NSEC_PER_MSEC);
    }
    return NULL;
}

static void *slow_call(void *arg)
{
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return arg;
}

static void *basic_body(void *arg)
{
    where w = {0, 21}; /* on the task's stack */
    void *res = NULL;
    RFT_CHECK_INT(rf_to_thread(record_thread, &w, &res), 0);
    RFT_CHECK_INT((intptr_t)res, 42);
    RFT_CHECK(w.tid != 0 && w.tid != gettid_());
    RFT_CHECK_INT(rf_to_thread(record_thread, &w, NULL), 0);

    /* The loop runs other tasks while a call blocks its worker. */
    g_ticks = 0;
    g_stop = 0;
    rf_task *t = rf_spawn(ticker, NULL);
    RFT_CHECK_INT(rf_to_thread(slow_call, (void *)7, &res), 0);
    RFT_CHECK_PTR(res, (void *)7);
    RFT_CHECK(g_ticks > 5);
    g_stop = 1;
    rf_join(t, NULL);
    rf_task_release(t);
    return NULL;
}

static void test_basic(void **state) { rft_run(basic_body, NULL); }

static void *bad_input_body(void *arg)
{
    RFT_CHECK_INT(rf_to_thread(NULL, NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_pool_call(NULL, record_thread, NULL, NULL), -EINVAL);
    rf_pool *p = arg;
    RFT_CHECK_INT(rf_pool_call(p, NULL, NULL, NULL), -EINVAL);
    /* Set after the loop made its pool: refused. */
    where w = {0, 1};
    RFT_CHECK_INT(rf_to_thread(record_thread, &w, NULL), 0);
    RFT_CHECK_INT(rf_loop_set_pool(rf_loop_current(), p), -EBUSY);
    RFT_CHECK_INT(rf_loop_set_pool_threads(rf_loop_current(), 2), -EBUSY);
    return NULL;
}

static void test_bad_input(void **state)
{
    assert_int_equal(rf_to_thread(record_thread, NULL, NULL), -EPERM);
    assert_int_equal(rf_pool_new(1, 1, NULL), -EINVAL);
    rf_pool *p = NULL;
    assert_int_equal(rf_pool_new(100000, 1, &p), -EINVAL);
    assert_null(p);
    assert_int_equal(rf_pool_new(1, 1u << 30, &p), -EINVAL);
    /* One past each limit is refused; the limits themselves are sizes. */
    assert_int_equal(rf_pool_new(RF_POOL_MAX_THREADS + 1, 1, &p), -EINVAL);
    assert_int_equal(rf_pool_new(1, RF_POOL_MAX_QUEUE + 1, &p), -EINVAL);
    assert_int_equal(rf_pool_new(UINT32_MAX, UINT32_MAX, &p), -EINVAL);
    assert_null(p);
    assert_int_equal(rf_pool_new(1, RF_POOL_MAX_QUEUE, &p), 0);
    assert_int_equal(rf_pool_free(p), 0);
    p = NULL;
    assert_int_equal(rf_pool_free(NULL), 0);
    assert_int_equal(rf_pool_threads(NULL), 0u);
    assert_int_equal(rf_pool_new(2, 0, &p), 0);
    assert_int_equal(rf_pool_threads(p), 2u);
    assert_int_equal(rf_pool_call(p, record_thread, NULL, NULL), -EPERM);
    rft_run(bad_input_body, p);
    assert_int_equal(rf_loop_set_pool(NULL, p), -EINVAL);
    assert_int_equal(rf_loop_set_pool_threads(NULL, 1), -EINVAL);
    rf_loop *l = NULL;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    assert_int_equal(rf_loop_set_pool_threads(l, RF_POOL_MAX_THREADS + 1), -EINVAL);
    assert_int_equal(rf_loop_set_pool_threads(l, RF_POOL_MAX_THREADS), 0);
    assert_int_equal(rf_loop_free(l), 0);
    assert_int_equal(rf_pool_free(p), 0);
}

/* A freed pool's handle is refused with -ESRCH, also once its record
 * serves a new pool. */
static void *stale_pool_body(void *arg)
{
    rf_pool *const *pp = arg;
    void *res = NULL;
    RFT_CHECK_INT(rf_pool_call(pp[0], record_thread, NULL, &res), -ESRCH);
    RFT_CHECK_INT(rf_loop_set_pool(rf_loop_current(), pp[0]), -ESRCH);
    where w = {0, 1};
    RFT_CHECK_INT(rf_pool_call(pp[1], record_thread, &w, NULL), 0);
    return NULL;
}

static void test_freed_pool_handle_is_stale(void **state)
{
    rf_pool *p[2] = {NULL, NULL};
    assert_int_equal(rf_pool_new(1, 4, &p[0]), 0);
    assert_int_equal(rf_pool_free(p[0]), 0);
    assert_int_equal(rf_pool_free(p[0]), -ESRCH);
    assert_int_equal(rf_pool_new(2, 4, &p[1]), 0);
    assert_ptr_not_equal(p[0], p[1]);
    errno = 0;
    assert_int_equal(rf_pool_threads(p[0]), 0u);
    assert_int_equal(errno, ESRCH);
    assert_int_equal(rf_pool_threads(p[1]), 2u);
    rft_run(stale_pool_body, p);
    assert_int_equal(rf_pool_free(p[0]), -ESRCH); /* p[1] stays */
    assert_int_equal(rf_pool_threads(p[1]), 2u);
    assert_int_equal(rf_pool_free(p[1]), 0);
}

/* RINGFIBER_POOL_THREADS sizes the default pool; rf_loop_set_pool_threads
 * overrides it. Counted by calls that run at once: n + 1 calls that each
 * hold their worker at a gate; exactly n get there. */
static gate g_size_gate;

static void *held_call(void *arg)
{
    gate_pass(&g_size_gate);
    return arg;
}

static void *held_task(void *arg)
{
    RFT_CHECK_INT(rf_to_thread(held_call, NULL, NULL), 0);
    return NULL;
}

static void *count_threads_body(void *arg)
{
    int n = (int)(intptr_t)arg;
    gate_init(&g_size_gate);
    rf_task *t[8];
    for (int i = 0; i <= n; i++)
        t[i] = rf_spawn(held_task, NULL);
    RFT_CHECK(gate_wait_entered(&g_size_gate, n));
    rf_sleep(50 * RF_NSEC_PER_MSEC);
    RFT_CHECK_INT(gate_entered(&g_size_gate), n);
    gate_open(&g_size_gate);
    RFT_CHECK_INT(rf_gather(t, (size_t)n + 1, NULL), 0);
    for (int i = 0; i <= n; i++)
        rf_task_release(t[i]);
    return NULL;
}

static void test_default_pool_size(void **state)
{
    setenv("RINGFIBER_POOL_THREADS", "3", 1);
    /* ThreadSanitizer starts a thread of its own at the first
     * pthread_create: let it, before counting. */
    pthread_t dummy;
    assert_int_equal(pthread_create(&dummy, NULL, slow_call, NULL), 0);
    pthread_join(dummy, NULL);
    int before = rft_count_threads();
    rft_run(count_threads_body, (void *)3);
    /* rf_loop_free joined them. */
    assert_true(threads_settle(before));

    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    assert_int_equal(rf_loop_set_pool_threads(l, 5), 0);
    rft_begin();
    assert_int_equal(rf_loop_run_until_complete(l, count_threads_body,
                                                (void *)5, NULL), 0);
    rft_end();
    assert_int_equal(rf_loop_free(l), 0);
    assert_true(threads_settle(before));
    unsetenv("RINGFIBER_POOL_THREADS");
}

/* ---- a million round trips, with a watchdog against lost wake-ups ------ */

#define RT_TASKS 64

static long g_rt_per_task;
static long g_rt_done; /* __atomic */

static void *inc_call(void *arg) { return (void *)((intptr_t)arg + 1); }

static void *round_tripper(void *arg)
{
    rf_pool *p = arg;
    for (long i = 0; i < g_rt_per_task; i++) {
        void *res = NULL;
        int rc = rf_pool_call(p, inc_call, (void *)(intptr_t)i, &res);
        if (!RFT_CHECK_INT(rc, 0) || !RFT_CHECK_INT((intptr_t)res, i + 1))
            return NULL;
        __atomic_add_fetch(&g_rt_done, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *round_trips_body(void *arg)
{
    rf_task *t[RT_TASKS];
    for (int i = 0; i < RT_TASKS; i++)
        t[i] = rf_spawn(round_tripper, arg);
    RFT_CHECK_INT(rf_gather(t, RT_TASKS, NULL), 0);
    for (int i = 0; i < RT_TASKS; i++)
        rf_task_release(t[i]);
    return NULL;
}

static volatile int g_watch_stop;

/* Fails the test if no round trip completes for 10 s: the loop is asleep
 * with a completion it missed. */
static void *progress_watchdog(void *arg)
{
    long last = -1;
    int still = 0;
    while (!__atomic_load_n(&g_watch_stop, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        long now = __atomic_load_n(&g_rt_done, __ATOMIC_RELAXED);
        still = now == last ? still + 1 : 0;
        last = now;
        if (still >= 100) {
            fprintf(stderr, "no progress for 10 s at %ld round trips: a lost "
                            "wake-up\n", now);
            abort();
        }
    }
    return NULL;
}

static void test_million_round_trips(void **state)
{
    long total = RFT_SANITIZED ? 100000 : 1000000;
    g_rt_per_task = total / RT_TASKS;
    g_rt_done = 0;
    g_watch_stop = 0;
    rf_pool *p;
    assert_int_equal(rf_pool_new(2, 16, &p), 0);
    pthread_t w;
    assert_int_equal(pthread_create(&w, NULL, progress_watchdog, NULL), 0);
    rft_run(round_trips_body, p);
    __atomic_store_n(&g_watch_stop, 1, __ATOMIC_RELEASE);
    pthread_join(w, NULL);
    assert_int_equal(g_rt_done, g_rt_per_task * RT_TASKS);
    assert_int_equal(rf_pool_free(p), 0);
}

/* Sequential round trips of one task: each one sleeps the loop, and the
 * next call comes about when an idle worker stops spinning and goes to
 * sleep (pool.c): the race a lost wake-up would hide in. A pause of a
 * varying length between calls sweeps that window. */
static void *sequential_body(void *arg)
{
    long n = RFT_SANITIZED ? 5000 : 50000;
    for (long i = 0; i < n; i++) {
        void *res = NULL;
        if (!RFT_CHECK_INT(rf_to_thread(inc_call, (void *)(intptr_t)i, &res),
                           0) ||
            !RFT_CHECK_INT((intptr_t)res, i + 1))
            break;
        __atomic_add_fetch(&g_rt_done, 1, __ATOMIC_RELAXED);
        uint64_t until = rf_now_ns() + (uint64_t)(i % 40) * 500;
        while (rf_now_ns() < until)
            ;
    }
    return NULL;
}

static void test_sequential_round_trips(void **state)
{
    g_rt_done = 0;
    g_watch_stop = 0;
    pthread_t w;
    assert_int_equal(pthread_create(&w, NULL, progress_watchdog, NULL), 0);
    rft_run(sequential_body, NULL);
    __atomic_store_n(&g_watch_stop, 1, __ATOMIC_RELEASE);
    pthread_join(w, NULL);
}

/* ---- backpressure ------------------------------------------------------- */

#define BP_TASKS 1000

typedef struct bp_state {
    rf_pool *pool;
    gate g;
    int order[BP_TASKS]; /* start order of the calls (one worker) */
    int started;         /* under the single worker only */
    int finished;        /* loop thread */
    int cancelled;
    bool ran[BP_TASKS];
} bp_state;

typedef struct bp_arg {
    bp_state *s;
    int i;
} bp_arg;

static void *bp_call(void *arg)
{
    bp_arg *a = arg;
    bp_state *s = a->s;
    if (s->started == 0)
        gate_pass(&s->g); /* the first call holds the worker */
    s->order[s->started++] = a->i;
    s->ran[a->i] = true;
    return (void *)(intptr_t)(a->i + 1000);
}

static void *bp_task(void *arg)
{
    bp_arg *a = arg;
    void *res = NULL;
    int rc = rf_pool_call(a->s->pool, bp_call, a, &res);
    if (rc == -ECANCELED) {
        a->s->cancelled++;
        return NULL;
    }
    RFT_CHECK_INT(rc, 0);
    RFT_CHECK_INT((intptr_t)res, a->i + 1000);
    a->s->finished++;
    return NULL;
}

static void *backpressure_body(void *arg)
{
    bp_state *s = arg;
    static bp_arg args[BP_TASKS];
    static rf_task *t[BP_TASKS];
    for (int i = 0; i < BP_TASKS; i++) {
        args[i] = (bp_arg){s, i};
        t[i] = rf_spawn(bp_task, &args[i]);
    }
    /* Every task submits: one call is held by the worker, 4 are queued,
     * the other 995 wait for room, and the loop is not blocked. */
    RFT_CHECK(gate_wait_entered(&s->g, 1));
    for (int i = 0; i < 100; i++)
        rf_yield();
    RFT_CHECK_INT(s->finished, 0);
    /* Cancel ten of the waiting ones: they give up without running. */
    for (int i = 500; i < 510; i++)
        RFT_CHECK_INT(rf_cancel(t[i]), 0);
    for (int i = 0; i < 100 && s->cancelled < 10; i++)
        rf_yield();
    RFT_CHECK_INT(s->cancelled, 10);
    gate_open(&s->g);
    rf_gather(t, BP_TASKS, NULL);
    for (int i = 0; i < BP_TASKS; i++)
        rf_task_release(t[i]);
    return NULL;
}

static void test_backpressure(void **state)
{
    static bp_state s;
    memset(&s, 0, sizeof s);
    gate_init(&s.g);
    assert_int_equal(rf_pool_new(1, 4, &s.pool), 0);
    rft_run(backpressure_body, &s);
    assert_int_equal(s.finished, BP_TASKS - 10);
    assert_int_equal(s.cancelled, 10);
    /* One worker, a FIFO queue and a FIFO of waiters: the calls ran in
     * the order they were made, the cancelled ones never. */
    assert_int_equal(s.started, BP_TASKS - 10);
    int k = 0;
    for (int i = 0; i < BP_TASKS; i++) {
        if (i >= 500 && i < 510) {
            assert_false(s.ran[i]);
            continue;
        }
        assert_int_equal(s.order[k++], i);
    }
    assert_int_equal(rf_pool_free(s.pool), 0);
}

/* ---- calls gathered in a pass -------------------------------------------- */

/* The calls a pass's tasks make are queued at the pass end, on slots the
 * pass's first call reserved (pool.c, RF_POOL_CREDIT). 200 tasks call two
 * small pools in turn (a call to the other pool queues the first pool's
 * batch at once), 20 calls each: every call runs once, returns its own
 * result, and both pools can be freed after. */
#define GA_TASKS 200
#define GA_CALLS 20

typedef struct ga_state {
    rf_pool *pools[2];
    int ran[GA_TASKS]; /* calls run for each task (atomic: two workers) */
} ga_state;

typedef struct ga_arg {
    ga_state *s;
    int i;
} ga_arg;

static void *ga_call(void *arg)
{
    ga_arg *a = arg;
    __atomic_add_fetch(&a->s->ran[a->i], 1, __ATOMIC_RELAXED);
    return (void *)(intptr_t)(a->i * 7 + 1);
}

static void *ga_task(void *arg)
{
    ga_arg *a = arg;
    for (int k = 0; k < GA_CALLS; k++) {
        void *res = NULL;
        RFT_CHECK_INT(rf_pool_call(a->s->pools[(a->i + k) % 2], ga_call, a,
                                   &res), 0);
        RFT_CHECK_INT((intptr_t)res, a->i * 7 + 1);
    }
    return NULL;
}

static void *gathered_body(void *arg)
{
    ga_state *s = arg;
    static ga_arg args[GA_TASKS];
    static rf_task *t[GA_TASKS];
    for (int i = 0; i < GA_TASKS; i++) {
        args[i] = (ga_arg){s, i};
        t[i] = rf_spawn(ga_task, &args[i]);
    }
    RFT_CHECK_INT(rf_gather(t, GA_TASKS, NULL), 0);
    for (int i = 0; i < GA_TASKS; i++)
        rf_task_release(t[i]);
    return NULL;
}

static void test_gathered_calls(void **state)
{
    (void)state;
    static ga_state s;
    memset(&s, 0, sizeof s);
    assert_int_equal(rf_pool_new(2, 8, &s.pools[0]), 0);
    assert_int_equal(rf_pool_new(3, 5, &s.pools[1]), 0);
    rft_run(gathered_body, &s);
    for (int i = 0; i < GA_TASKS; i++)
        assert_int_equal(s.ran[i], GA_CALLS);
    assert_int_equal(rf_pool_free(s.pools[0]), 0);
    assert_int_equal(rf_pool_free(s.pools[1]), 0);
}

/* ---- calls that wait for each other --------------------------------------- */

/* Calls made together are taken one at a time, so a call is never held
 * back behind another by a worker while a worker is free: four calls of
 * one pass on two workers, [wait for A, post A, wait for B, post B], all
 * finish (a worker that took two of them at once would wait on A with
 * A's post behind it). And short calls made beside a long one run on the
 * other worker while it runs: the long one waits for them. */
#define WF_TIMEOUT_S 20

typedef struct wf_state {
    sem_t a, b, shorts_done;
    int timeouts;
    rf_pool *pool;
} wf_state;

typedef struct wf_arg {
    wf_state *s;
    int kind; /* 0 wait A, 1 post A, 2 wait B, 3 post B; 4 long, 5 short */
} wf_arg;

static bool wf_wait(wf_state *s, sem_t *sem)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WF_TIMEOUT_S;
    int rc;
    while ((rc = sem_timedwait(sem, &ts)) != 0 && errno == EINTR)
        ;
    if (rc != 0)
        __atomic_add_fetch(&s->timeouts, 1, __ATOMIC_RELAXED);
    return rc == 0;
}

static void *wf_call(void *arg)
{
    wf_arg *a = arg;
    wf_state *s = a->s;
    switch (a->kind) {
    case 0: wf_wait(s, &s->a); break;
    case 1: sem_post(&s->a); break;
    case 2: wf_wait(s, &s->b); break;
    case 3: sem_post(&s->b); break;
    case 4: /* the long call: until the three short ones are back */
        for (int i = 0; i < 3; i++)
            wf_wait(s, &s->shorts_done);
        break;
    default: break;
    }
    return (void *)(intptr_t)(a->kind + 1);
}

static void *wf_task(void *arg)
{
    wf_arg *a = arg;
    void *res = NULL;
    RFT_CHECK_INT(rf_pool_call(a->s->pool, wf_call, a, &res), 0);
    RFT_CHECK_INT((intptr_t)res, a->kind + 1);
    if (a->kind == 5)
        sem_post(&a->s->shorts_done);
    return NULL;
}

static void *wf_body(void *arg)
{
    wf_state *s = arg;
    static wf_arg args[8];
    rf_task *t[8];
    int kinds[8] = {0, 1, 2, 3, 4, 5, 5, 5};
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 4; i++) {
            args[round * 4 + i] = (wf_arg){s, kinds[round * 4 + i]};
            t[i] = rf_spawn(wf_task, &args[round * 4 + i]);
        }
        RFT_CHECK_INT(rf_gather(t, 4, NULL), 0);
        for (int i = 0; i < 4; i++)
            rf_task_release(t[i]);
    }
    return NULL;
}

static void test_calls_wait_for_each_other(void **state)
{
    (void)state;
    static wf_state s;
    memset(&s, 0, sizeof s);
    sem_init(&s.a, 0, 0);
    sem_init(&s.b, 0, 0);
    sem_init(&s.shorts_done, 0, 0);
    assert_int_equal(rf_pool_new(2, 16, &s.pool), 0);
    rft_run(wf_body, &s);
    assert_int_equal(s.timeouts, 0);
    assert_int_equal(rf_pool_free(s.pool), 0);
    sem_destroy(&s.a);
    sem_destroy(&s.b);
    sem_destroy(&s.shorts_done);
}

/* ---- a pass's calls run side by side ------------------------------------ */

/* A pass's first call is queued at once and the others at the pass end
 * (pool.c, "Gathering"): the pass end must wake as many workers as the
 * batch needs. Four tasks of one pass each call a function that returns
 * only once all four are running (or after RV_TIMEOUT_S, counted as a
 * failure), on four workers that were asleep (the loop sleeps between
 * rounds); then on a worker count of two, with two calls a pass. */
#define RV_TIMEOUT_S 20
#define RV_ROUNDS 20

typedef struct rv_state {
    int arrived; /* atomic */
    int need;
    int timeouts;
    rf_pool *pool;
} rv_state;

static void *rv_call(void *arg)
{
    rv_state *s = arg;
    __atomic_add_fetch(&s->arrived, 1, __ATOMIC_SEQ_CST);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (__atomic_load_n(&s->arrived, __ATOMIC_SEQ_CST) < s->need) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > RV_TIMEOUT_S) {
            __atomic_add_fetch(&s->timeouts, 1, __ATOMIC_RELAXED);
            break;
        }
        struct timespec pause = {0, 50 * 1000};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void *rv_task(void *arg)
{
    rv_state *s = arg;
    RFT_CHECK_INT(rf_pool_call(s->pool, rv_call, s, NULL), 0);
    return NULL;
}

static void *rv_body(void *arg)
{
    rv_state *s = arg;
    rf_task *t[4];
    for (int round = 0;
         round < RV_ROUNDS && !__atomic_load_n(&s->timeouts, __ATOMIC_RELAXED);
         round++) {
        __atomic_store_n(&s->arrived, 0, __ATOMIC_SEQ_CST);
        for (int i = 0; i < s->need; i++)
            t[i] = rf_spawn(rv_task, s);
        RFT_CHECK_INT(rf_gather(t, (size_t)s->need, NULL), 0);
        for (int i = 0; i < s->need; i++)
            rf_task_release(t[i]);
        RFT_CHECK_INT(rf_sleep(round % 2 ? 2 * RF_NSEC_PER_MSEC : 0), 0);
    }
    return NULL;
}

static void test_pass_calls_run_together(void **state)
{
    (void)state;
    for (unsigned workers = 4; workers >= 2; workers -= 2) {
        rv_state s = {.need = (int)workers};
        assert_int_equal(rf_pool_new(workers, 0, &s.pool), 0);
        rft_run(rv_body, &s);
        assert_int_equal(s.timeouts, 0);
        assert_int_equal(rf_pool_free(s.pool), 0);
    }
}

/* rf_pool_free refuses while a task waits for room, and drains what is
 * queued otherwise. */
static void *busy_task(void *arg)
{
    bp_arg *a = arg;
    void *res;
    RFT_CHECK_INT(rf_pool_call(a->s->pool, bp_call, a, &res), 0);
    return NULL;
}

static void *pool_free_busy_body(void *arg)
{
    bp_state *s = arg;
    bp_arg args[3] = {{s, 0}, {s, 1}, {s, 2}};
    rf_task *t[3];
    for (int i = 0; i < 3; i++)
        t[i] = rf_spawn(busy_task, &args[i]);
    RFT_CHECK(gate_wait_entered(&s->g, 1));
    rf_yield();
    /* Call 0 runs, call 1 is queued, the task of call 2 waits for room. */
    RFT_CHECK_INT(rf_pool_free(s->pool), -EBUSY);
    gate_open(&s->g);
    RFT_CHECK_INT(rf_gather(t, 3, NULL), 0);
    for (int i = 0; i < 3; i++)
        rf_task_release(t[i]);
    RFT_CHECK_INT(s->started, 3);
    return NULL;
}

static void test_pool_free_busy(void **state)
{
    static bp_state s;
    memset(&s, 0, sizeof s);
    gate_init(&s.g);
    assert_int_equal(rf_pool_new(1, 1, &s.pool), 0);
    rft_run(pool_free_busy_body, &s);
    assert_int_equal(rf_pool_free(s.pool), 0);
}

/* ---- cancellation ------------------------------------------------------- */

typedef struct cancel_arg {
    gate g;
    char buf[64]; /* on the calling task's stack in real code */
    int rc;
    void *res;
    bool returned;
} cancel_arg;

static void *fill_buf(void *arg)
{
    cancel_arg *c = arg;
    gate_pass(&c->g);
    strcpy(c->buf, "written by the worker");
    return (void *)0x1234;
}

static void *cancel_victim(void *arg)
{
    cancel_arg *c = arg;
    c->rc = rf_to_thread(fill_buf, c, &c->res);
    c->returned = true;
    /* The cancellation shows at the next suspending call. */
    RFT_CHECK_INT(rf_sleep(RF_NSEC_PER_MSEC), -ECANCELED);
    return NULL;
}

static bool g_called;

static void *mark_called(void *arg)
{
    g_called = true;
    return arg;
}

static void *already_cancelled(void *arg)
{
    rf_cancel(rf_self());
    g_called = false;
    RFT_CHECK_INT(rf_to_thread(mark_called, NULL, NULL), -ECANCELED);
    RFT_CHECK(!g_called);
    return NULL;
}

static void *past_deadline(void *arg)
{
    rf_deadline_set(rf_now_ns() - 1);
    g_called = false;
    RFT_CHECK_INT(rf_to_thread(mark_called, NULL, NULL), -ETIMEDOUT);
    RFT_CHECK(!g_called);
    return NULL;
}

static void *cancel_body(void *arg)
{
    cancel_arg c;
    memset(&c, 0, sizeof c);
    gate_init(&c.g);
    rf_task *t = rf_spawn(cancel_victim, &c);
    RFT_CHECK(gate_wait_entered(&c.g, 1));
    RFT_CHECK_INT(rf_cancel(t), 0);
    /* The worker still has arg: the task must not resume. */
    for (int i = 0; i < 50; i++) {
        rf_sleep(RF_NSEC_PER_MSEC);
        RFT_CHECK(!c.returned);
        RFT_CHECK(!rf_done(t));
    }
    gate_open(&c.g);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK(c.returned);
    RFT_CHECK_INT(c.rc, 0);
    RFT_CHECK_PTR(c.res, (void *)0x1234);
    RFT_CHECK(strcmp(c.buf, "written by the worker") == 0);
    rf_task_release(t);

    t = rf_spawn(already_cancelled, NULL);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    rf_task_release(t);
    t = rf_spawn(past_deadline, NULL);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    return NULL;
}

static void test_cancel_rule(void **state) { rft_run(cancel_body, NULL); }

/* ---- shutdown with calls in flight -------------------------------------- */

typedef struct sd_call {
    int spin; /* on the calling task's stack */
} sd_call;

static int g_sd_ran; /* __atomic */
static int g_sd_returned, g_sd_refused; /* loop thread */

static void *sd_fn(void *arg)
{
    sd_call *c = arg;
    for (volatile int i = 0; i < c->spin; i++)
        ;
    __atomic_add_fetch(&g_sd_ran, 1, __ATOMIC_RELAXED);
    return (void *)(intptr_t)(c->spin + 1);
}

static void *sd_task(void *arg)
{
    sd_call c = {(int)(intptr_t)arg};
    void *res = NULL;
    int rc = rf_to_thread(sd_fn, &c, &res);
    /* rf_loop_free cancelled us: a call already queued still delivers its
     * result; one still waiting for room gives up without running. */
    if (rc == -ECANCELED)
        g_sd_refused++;
    else if (RFT_CHECK_INT(rc, 0) && RFT_CHECK_INT((intptr_t)res, c.spin + 1))
        g_sd_returned++;
    return NULL;
}

static void *sd_main(void *arg)
{
    for (int i = 0; i < 4; i++)
        rf_task_release(rf_spawn(sd_task, (void *)(intptr_t)(i * 500)));
    rf_yield(); /* they submit */
    return NULL; /* and the loop is freed with their calls in flight */
}

static void shutdown_rounds(rf_pool *shared, int rounds)
{
    for (int r = 0; r < rounds; r++) {
        rf_loop *l;
        assert_int_equal(rf_loop_new(&l, NULL), 0);
        if (shared)
            assert_int_equal(rf_loop_set_pool(l, shared), 0);
        else
            assert_int_equal(rf_loop_set_pool_threads(l, 2), 0);
        g_sd_returned = g_sd_refused = 0;
        __atomic_store_n(&g_sd_ran, 0, __ATOMIC_RELAXED);
        rft_begin();
        assert_int_equal(rf_loop_run_until_complete(l, sd_main, NULL, NULL), 0);
        assert_int_equal(rf_loop_free(l), 0);
        rft_end();
        assert_int_equal(g_sd_returned + g_sd_refused, 4);
        assert_int_equal(__atomic_load_n(&g_sd_ran, __ATOMIC_RELAXED),
                         g_sd_returned);
    }
}

static void test_shutdown_in_flight(void **state)
{
    rf_pool *p;
    assert_int_equal(rf_pool_new(2, 2, &p), 0);
    int fds = rft_count_fds();
    shutdown_rounds(p, RFT_SANITIZED ? 2000 : 10000);
    assert_int_equal(rf_pool_free(p), 0);
    /* The loops' own pools, created and joined each time. */
    int threads = rft_count_threads();
    shutdown_rounds(NULL, RFT_SANITIZED ? 200 : 1000);
    assert_true(threads_settle(threads));
    assert_int_equal(rft_count_fds(), fds);
}

/* ---- one pool, loops on two threads ------------------------------------- */

#define SH_TASKS 16
#define SH_CALLS 2000

typedef struct shared_arg {
    rf_pool *pool;
    int base;
    long sum; /* loop thread */
    int rc;
    int failures;
} shared_arg;

static void *sh_call(void *arg) { return (void *)((intptr_t)arg * 3); }

static void *sh_task(void *arg)
{
    shared_arg *s = arg;
    for (int i = 0; i < SH_CALLS; i++) {
        void *res = NULL;
        intptr_t v = s->base + i;
        if (!RFT_CHECK_INT(rf_pool_call(s->pool, sh_call, (void *)v, &res), 0) ||
            !RFT_CHECK_INT((intptr_t)res, v * 3))
            break;
        s->sum += (intptr_t)res;
    }
    return NULL;
}

static void *sh_main(void *arg)
{
    rf_task *t[SH_TASKS];
    for (int i = 0; i < SH_TASKS; i++)
        t[i] = rf_spawn(sh_task, arg);
    rf_gather(t, SH_TASKS, NULL);
    for (int i = 0; i < SH_TASKS; i++)
        rf_task_release(t[i]);
    return NULL;
}

static void *sh_thread(void *arg)
{
    shared_arg *s = arg;
    /* rft_run's checks are per process; count this thread's failures by
     * the result instead. */
    s->rc = rf_run(sh_main, s, NULL);
    return NULL;
}

static void test_shared_two_threads(void **state)
{
    rf_pool *p;
    assert_int_equal(rf_pool_new(3, 4, &p), 0);
    shared_arg a[2] = {{p, 0, 0, -1, 0}, {p, 1000000, 0, -1, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, sh_thread, &a[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(a[i].rc, 0);
        long want = 0;
        for (int k = 0; k < SH_CALLS; k++)
            want += (long)(a[i].base + k) * 3;
        assert_int_equal(a[i].sum, want * SH_TASKS);
    }
    assert_int_equal(rf_pool_free(p), 0);
    rft_end(); /* checks made in the two loops */
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_basic),
    cmocka_unit_test(test_bad_input),
    cmocka_unit_test(test_freed_pool_handle_is_stale),
    cmocka_unit_test(test_default_pool_size),
    cmocka_unit_test(test_million_round_trips),
    cmocka_unit_test(test_sequential_round_trips),
    cmocka_unit_test(test_backpressure),
    cmocka_unit_test(test_gathered_calls),
    cmocka_unit_test(test_calls_wait_for_each_other),
    cmocka_unit_test(test_pass_calls_run_together),
    cmocka_unit_test(test_pool_free_busy),
    cmocka_unit_test(test_cancel_rule),
    cmocka_unit_test(test_shutdown_in_flight),
    cmocka_unit_test(test_shared_two_threads),
};

RFT_MAIN(tests)
