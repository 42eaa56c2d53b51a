/*
 * Many cores: groups of loops (rf_loops_*), and tasks across loops
 * (rf_spawn_on, and rf_join, rf_wait_for, rf_cancel, rf_done,
 * rf_task_retain/release on them). More loops than CPUs must work: these
 * run 2, 4 and 8 loops on any machine.
 */
#include <liburing.h>
#include <pthread.h>
#include <sched.h>

#include "helpers.h"

static rf_loops_opts loops_n(unsigned n)
{
    return (rf_loops_opts){.loops = n};
}

/* ---- a group's life ------------------------------------------------------- */

static int g_seen[64];

static void *index_entry(void *arg)
{
    (void)arg;
    int i = rf_loop_index();
    RFT_CHECK(i >= 0 && i < 64);
    rf_loops *ls = rf_loops_current();
    RFT_CHECK(ls != NULL);
    RFT_CHECK(rf_loops_loop(ls, (unsigned)i) == rf_loop_current());
    __atomic_add_fetch(&g_seen[i], 1, __ATOMIC_RELAXED);
    /* Its thread is named for it (top -H, ps -L). */
    char name[16], want[16];
    snprintf(want, sizeof want, "rf-loop-%d", i);
    RFT_CHECK_INT(pthread_getname_np(pthread_self(), name, sizeof name), 0);
    RFT_CHECK(strcmp(name, want) == 0);
    /* Every loop exists from the entry's first instruction. */
    for (unsigned k = 0; k < rf_loops_count(ls); k++)
        RFT_CHECK(rf_loops_loop(ls, k) != NULL);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    return (void *)(intptr_t)(i + 1);
}

static void test_every_loop_runs_its_entry(void **state)
{
    static const unsigned sizes[] = {1, 2, 4, 8};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        unsigned n = sizes[k];
        memset(g_seen, 0, sizeof g_seen);
        rft_begin();
        rf_loops_opts o = loops_n(n);
        void *results[8] = {0};
        int failed = 7;
        assert_int_equal(rf_run_loops(index_entry, NULL, &o, results, &failed),
                         0);
        rft_end();
        assert_int_equal(failed, -1);
        for (unsigned i = 0; i < n; i++) {
            assert_int_equal(g_seen[i], 1);
            assert_int_equal((intptr_t)results[i], i + 1);
        }
        assert_int_equal(g_seen[n], 0);
    }
}

static void test_default_is_one_per_cpu(void **state)
{
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    rf_loops *ls;
    rft_begin();
    rf_loops_opts o = {.flags = RF_LOOPS_PIN};
    assert_int_equal(rf_loops_start(&ls, index_entry, NULL, &o), 0);
    assert_int_equal(rf_loops_count(ls), (unsigned)CPU_COUNT(&set));
    assert_null(rf_loops_loop(ls, rf_loops_count(ls)));
    assert_int_equal(rf_loops_wait(ls, NULL, NULL), 0);
    assert_int_equal(rf_loops_wait(ls, NULL, NULL), -EALREADY);
    assert_int_equal(rf_loops_free(ls), 0);
    rft_end();
}

/* A pinned loop runs on the CPU it was given. */
static void *pinned_entry(void *arg)
{
    (void)arg;
    cpu_set_t set;
    RFT_CHECK_INT(pthread_getaffinity_np(pthread_self(), sizeof set, &set), 0);
    RFT_CHECK_INT(CPU_COUNT(&set), 1);
    return NULL;
}

static void test_pinned(void **state)
{
    rft_begin();
    rf_loops_opts o = {.loops = 3, .flags = RF_LOOPS_PIN};
    assert_int_equal(rf_run_loops(pinned_entry, NULL, &o, NULL, NULL), 0);
    rft_end();
}

/* Entry 1 fails after a moment; the others would sleep a minute. */
static void *failing_entry(void *arg)
{
    (void)arg;
    if (rf_loop_index() == 1) {
        RFT_CHECK_INT(rf_sleep(10 * RFT_MS), 0);
        return RF_ERR_PTR(-EIO);
    }
    int rc = rf_sleep(60 * RFT_SEC);
    return (void *)(intptr_t)rc;
}

static void test_first_failure_cancels_the_others(void **state)
{
    rft_begin();
    rf_loops_opts o = loops_n(4);
    void *results[4];
    int failed = -1;
    uint64_t t0 = rft_now();
    assert_int_equal(rf_run_loops(failing_entry, NULL, &o, results, &failed),
                     -EIO);
    rft_end();
    assert_int_equal(failed, 1);
    assert_true(rft_now() - t0 < 30 * RFT_SEC);
    for (int i = 0; i < 4; i++)
        if (i != 1)
            assert_int_equal((intptr_t)results[i], -ECANCELED);
}

static void *keep_going_entry(void *arg)
{
    (void)arg;
    if (rf_loop_index() == 0)
        return RF_ERR_PTR(-EIO);
    return (void *)(intptr_t)rf_sleep(30 * RFT_MS);
}

static void test_keep_going(void **state)
{
    rft_begin();
    rf_loops_opts o = {.loops = 3, .flags = RF_LOOPS_KEEP_GOING};
    void *results[3];
    int failed = -1;
    assert_int_equal(
        rf_run_loops(keep_going_entry, NULL, &o, results, &failed), -EIO);
    rft_end();
    assert_int_equal(failed, 0);
    assert_int_equal((intptr_t)results[1], 0); /* slept its 30 ms */
    assert_int_equal((intptr_t)results[2], 0);
}

static void *forever_entry(void *arg)
{
    (void)arg;
    int rc;
    while ((rc = rf_sleep(RFT_SEC)) == 0)
        ;
    return (void *)(intptr_t)rc;
}

static void test_stop_from_outside(void **state)
{
    rft_begin();
    rf_loops *ls;
    rf_loops_opts o = loops_n(2);
    assert_int_equal(rf_loops_start(&ls, forever_entry, NULL, &o), 0);
    assert_int_equal(rf_loops_free(ls), -EBUSY); /* not waited for */
    usleep(10000);
    assert_int_equal(rf_loops_stop(ls), 0);
    void *results[2];
    int failed = -1;
    assert_int_equal(rf_loops_wait(ls, results, &failed), -ECANCELED);
    assert_true(failed == 0 || failed == 1);
    assert_int_equal((intptr_t)results[0], -ECANCELED);
    assert_int_equal((intptr_t)results[1], -ECANCELED);
    assert_int_equal(rf_loops_stop(ls), -EALREADY);
    assert_int_equal(rf_loops_free(ls), 0);
    rft_end();
}

/* Tasks left alive when the entries return are cancelled and awaited,
 * their stacks and records freed (the ASan build checks for leaks). */
static void *sleeper(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)rf_sleep(60 * RFT_SEC);
}

static void *leave_tasks_entry(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        rf_task *t = rf_spawn(sleeper, NULL);
        RFT_CHECK(t != NULL);
        rf_task_release(t);
    }
    return NULL;
}

static void test_tasks_left_are_drained(void **state)
{
    rft_begin();
    rf_loops_opts o = loops_n(3);
    uint64_t t0 = rft_now();
    assert_int_equal(rf_run_loops(leave_tasks_entry, NULL, &o, NULL, NULL), 0);
    assert_true(rft_now() - t0 < 30 * RFT_SEC);
    rft_end();
}

static void *misuse_entry(void *arg)
{
    rf_loops *self_group = rf_loops_current();
    rf_loops *ls = NULL;
    RFT_CHECK_INT(rf_loops_start(&ls, index_entry, NULL, NULL), -EBUSY);
    RFT_CHECK_INT(rf_loops_wait(self_group, NULL, NULL), -EBUSY);
    (void)arg;
    return NULL;
}

static void test_misuse(void **state)
{
    rf_loops *ls = (rf_loops *)&ls;
    assert_int_equal(rf_loops_start(NULL, index_entry, NULL, NULL), -EINVAL);
    assert_int_equal(rf_loops_start(&ls, NULL, NULL, NULL), -EINVAL);
    assert_null(ls);
    rf_loops_opts big = {.loops = RF_LOOPS_MAX + 1};
    assert_int_equal(rf_loops_start(&ls, index_entry, NULL, &big), -EINVAL);
    rf_loops_opts flags = {.loops = 1, .flags = 0x100};
    assert_int_equal(rf_loops_start(&ls, index_entry, NULL, &flags), -EINVAL);
    rf_loop_opts bad_loop = {.sq_entries = RF_RING_MAX_ENTRIES + 1};
    rf_loops_opts bad = {.loops = 2, .loop = &bad_loop};
    assert_int_equal(rf_loops_start(&ls, index_entry, NULL, &bad), -EINVAL);
    assert_int_equal(rf_loops_wait(NULL, NULL, NULL), -EINVAL);
    assert_int_equal(rf_loops_stop(NULL), -EINVAL);
    assert_int_equal(rf_loops_free(NULL), 0);
    assert_int_equal(rf_loops_count(NULL), 0);
    assert_null(rf_loops_loop(NULL, 0));
    assert_null(rf_loops_current());
    assert_int_equal(rf_loop_index(), -EPERM);
    errno = 0;
    assert_null(rf_spawn_on(NULL, sleeper, NULL, NULL));
    assert_int_equal(errno, EINVAL);
    rft_run_loops(misuse_entry, NULL, 2, 0);
}

/* A loop alone (rf_run) is loop 0 of no group. */
static void *alone(void *arg)
{
    (void)arg;
    RFT_CHECK_INT(rf_loop_index(), 0);
    RFT_CHECK(rf_loops_current() == NULL);
    return NULL;
}

static void test_loop_alone(void **state) { rft_run(alone, NULL); }

/* ---- tasks across loops --------------------------------------------------- */

static void *report_index(void *arg)
{
    return (void *)(intptr_t)(rf_loop_index() * 100 + (intptr_t)arg);
}

static void *spawn_join_entry(void *arg)
{
    (void)arg;
    rf_loops *ls = rf_loops_current();
    unsigned n = rf_loops_count(ls);
    int me = rf_loop_index();
    for (unsigned k = 0; k < n; k++) {
        rf_spawn_options o = {.name = "across"};
        rf_task *t = rf_spawn_on(rf_loops_loop(ls, k), report_index,
                                 (void *)(intptr_t)me, &o);
        if (!RFT_CHECK(t != NULL))
            continue;
        void *res = NULL;
        RFT_CHECK_INT(rf_join(t, &res), 0);
        RFT_CHECK_INT((intptr_t)res, (intptr_t)k * 100 + me);
        RFT_CHECK(rf_done(t));
        rf_task_release(t);
    }
    return NULL;
}

static void test_spawn_join_across(void **state)
{
    rft_run_loops(spawn_join_entry, NULL, 4, 0);
}

/* Cancel, wait_for, a joiner that gives up, retain and release. */
static void *cross_ops_entry(void *arg)
{
    (void)arg;
    if (rf_loop_index() != 0)
        return NULL;
    rf_loop *other = rf_loops_loop(rf_loops_current(), 1);

    /* rf_cancel from another loop. */
    rf_task *t = rf_spawn_on(other, sleeper, NULL, NULL);
    if (!RFT_CHECK(t != NULL))
        return NULL;
    RFT_CHECK(!rf_done(t));
    RFT_CHECK_INT(rf_cancel(t), 0);
    /* Twice: one message at most; loop 1 may have run the first, and t
     * returned, already. */
    int again = rf_cancel(t);
    RFT_CHECK(again == 0 || again == -ESRCH);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), -ECANCELED);
    RFT_CHECK_INT((intptr_t)res, -ECANCELED);
    RFT_CHECK(rf_done(t));
    RFT_CHECK_INT(rf_cancel(t), -ESRCH); /* it has returned */
    rf_task_release(t);

    /* rf_wait_for: the timeout cancels it and waits until it returned. */
    t = rf_spawn_on(other, sleeper, NULL, NULL);
    RFT_CHECK(t != NULL);
    uint64_t t0 = rf_now_ns();
    RFT_CHECK_INT(rf_wait_for(t, 20 * RFT_MS, &res), -ETIMEDOUT);
    RFT_CHECK(rf_now_ns() - t0 >= 20 * RFT_MS);
    RFT_CHECK(rf_done(t));
    RFT_CHECK_INT((intptr_t)res, -ECANCELED);
    rf_task_release(t);

    /* ... and when the task comes first, its result. */
    t = rf_spawn_on(other, report_index, (void *)7, NULL);
    RFT_CHECK_INT(rf_wait_for(t, 10 * RFT_SEC, &res), 0);
    RFT_CHECK_INT((intptr_t)res, 107);
    rf_task_release(t);

    /* A join bounded by the joiner's deadline gives up; the task lives
     * on, and another join sees its end. */
    t = rf_spawn_on(other, sleeper, NULL, NULL);
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() + 10 * RFT_MS), 0);
    RFT_CHECK_INT(rf_join(t, NULL), -ETIMEDOUT);
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    RFT_CHECK(!rf_done(t));
    rf_task_retain(t); /* a second reference, from this loop */
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK_INT(rf_join_nocancel(t, &res), -ECANCELED);
    rf_task_release(t);
    rf_task_release(t);
    return NULL;
}

static void test_cancel_wait_for_across(void **state)
{
    rft_run_loops(cross_ops_entry, NULL, 2, 0);
}

/* A joiner cancelled while it waits for a task of another loop. */
static void *cross_joiner(void *arg)
{
    rf_task *t = arg;
    return (void *)(intptr_t)rf_join(t, NULL);
}

static void *joiner_cancelled_entry(void *arg)
{
    (void)arg;
    if (rf_loop_index() != 0)
        return NULL;
    rf_loop *other = rf_loops_loop(rf_loops_current(), 1);
    rf_task *t = rf_spawn_on(other, sleeper, NULL, NULL);
    if (!RFT_CHECK(t != NULL))
        return NULL;
    rf_task *j = rf_spawn(cross_joiner, t);
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    RFT_CHECK_INT(rf_cancel(j), 0);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(j, &res), -ECANCELED);
    RFT_CHECK_INT((intptr_t)res, -ECANCELED);
    rf_task_release(j);
    RFT_CHECK(!rf_done(t)); /* the joiner gave up; t is untouched */
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    rf_task_release(t);
    return NULL;
}

static void test_joiner_cancelled_across(void **state)
{
    rft_run_loops(joiner_cancelled_entry, NULL, 2, 0);
}

/* The group's end while tasks still join across loops: entry 0 returns
 * leaving a task that joins a sleeper of loop 1, and that sleeper is
 * left running too; the drain cancels both, and the joiner, cancelled,
 * still gets its one reply from loop 1. */
static void *leave_cross_join_entry(void *arg)
{
    (void)arg;
    if (rf_loop_index() != 0)
        return NULL;
    rf_loop *other = rf_loops_loop(rf_loops_current(), 1);
    rf_task *t = rf_spawn_on(other, sleeper, NULL, NULL);
    if (!RFT_CHECK(t != NULL))
        return NULL;
    rf_task *j = rf_spawn(cross_joiner, t);
    rf_task_release(j); /* t's handle stays with the joiner: leaked on
                         * purpose, freed with loop 1 */
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    return NULL;
}

static void test_end_with_cross_joins_in_flight(void **state)
{
    rft_begin();
    rf_loops_opts o = loops_n(2);
    uint64_t t0 = rft_now();
    assert_int_equal(
        rf_run_loops(leave_cross_join_entry, NULL, &o, NULL, NULL), 0);
    assert_true(rft_now() - t0 < 30 * RFT_SEC);
    rft_end();
}

/* A storm: every loop spawns tasks on every loop; some are joined, some
 * cancelled first, some waited for with a timeout; all are accounted
 * for. */
static void *storm_task(void *arg)
{
    intptr_t ms = (intptr_t)arg;
    if (ms && rf_sleep((uint64_t)ms * RFT_MS) != 0)
        return (void *)(intptr_t)-ECANCELED;
    return (void *)(intptr_t)1;
}

static void *storm_entry(void *arg)
{
    int per = (int)(intptr_t)arg;
    rf_loops *ls = rf_loops_current();
    unsigned n = rf_loops_count(ls);
    unsigned me = (unsigned)rf_loop_index();
    rf_task **ts = calloc((size_t)per, sizeof *ts);
    if (!RFT_CHECK(ts != NULL))
        return NULL;
    for (int i = 0; i < per; i++) {
        rf_loop *to = rf_loops_loop(ls, (me + 1 + (unsigned)i) % n);
        ts[i] = rf_spawn_on(to, storm_task, (void *)(intptr_t)(i % 3), NULL);
        RFT_CHECK(ts[i] != NULL);
    }
    for (int i = 0; i < per; i++) {
        if (!ts[i])
            continue;
        void *res = NULL;
        int rc;
        switch (i % 4) {
        case 0:
            RFT_CHECK_INT(rf_join(ts[i], &res), 0);
            RFT_CHECK_INT((intptr_t)res, 1);
            break;
        case 1:
            rf_cancel(ts[i]);
            rc = rf_join(ts[i], &res);
            /* It may have returned before the cancellation came. */
            RFT_CHECK(rc == 0 || rc == -ECANCELED);
            break;
        case 2:
            rc = rf_wait_for(ts[i], 10 * RFT_SEC, &res);
            RFT_CHECK_INT(rc, 0);
            break;
        default:
            break; /* released without a join */
        }
        rf_task_release(ts[i]);
    }
    free(ts);
    return NULL;
}

static void storm(unsigned loops, int per)
{
    rft_run_loops(storm_entry, (void *)(intptr_t)per, loops, 0);
}

static void test_storm_2(void **state) { storm(2, 2000); }
static void test_storm_4(void **state) { storm(4, 1000); }
static void test_storm_8(void **state) { storm(8, 500); }

/* A loop that refuses: spawning on a loop whose graceful shutdown began
 * is -ESHUTDOWN, and nothing runs. */
static int g_ran;

static void *count_run(void *arg)
{
    (void)arg;
    __atomic_add_fetch(&g_ran, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void *refused_entry(void *arg)
{
    (void)arg;
    rf_loops *ls = rf_loops_current();
    if (rf_loop_index() == 1) {
        RFT_CHECK_INT(rf_loop_shutdown(rf_loop_current(), 0), 0);
        return NULL;
    }
    /* Loop 1 shuts down at once; wait until it has begun. */
    rf_loop *other = rf_loops_loop(ls, 1);
    rf_task *t = NULL;
    for (int i = 0; i < 1000; i++) {
        t = rf_spawn_on(other, count_run, NULL, NULL);
        if (!t)
            break;
        RFT_CHECK_INT(rf_join(t, NULL), 0);
        rf_task_release(t);
        rf_sleep(RFT_MS);
    }
    RFT_CHECK(t == NULL);
    RFT_CHECK_INT(errno, ESHUTDOWN);
    return NULL;
}

static void test_spawn_on_shut_down_loop(void **state)
{
    g_ran = 0;
    rft_run_loops(refused_entry, NULL, 2, 0);
}

/* ---- offload from every loop ---------------------------------------------- */

static void *blocking_call(void *arg)
{
    struct timespec d = {0, 2 * 1000 * 1000};
    nanosleep(&d, NULL); /* a blocking call: on a worker, not a loop */
    return (void *)((intptr_t)arg + 1);
}

static void *offload_one(void *arg)
{
    void *res = NULL;
    int rc = rf_to_thread(blocking_call, arg, &res);
    return rc ? RF_ERR_PTR(rc) : res;
}

static unsigned threads_now(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static unsigned g_max_threads;

static void *offload_entry(void *arg)
{
    (void)arg;
    /* Many calls at once from each loop: each loop's tasks, each
     * completion back on its own loop. */
    enum { N = 16 };
    rf_task *t[N];
    for (intptr_t i = 0; i < N; i++)
        t[i] = rf_spawn(offload_one, (void *)i);
    for (int i = 0; i < N; i++) {
        void *res = NULL;
        RFT_CHECK_INT(rf_join(t[i], &res), 0);
        RFT_CHECK_INT((intptr_t)res, i + 1);
        rf_task_release(t[i]);
    }
    unsigned now = threads_now();
    unsigned prev = __atomic_load_n(&g_max_threads, __ATOMIC_RELAXED);
    while (now > prev &&
           !__atomic_compare_exchange_n(&g_max_threads, &prev, now, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    return NULL;
}

static void test_offload_shared_by_the_loops(void **state)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned pool = (unsigned)(cpus + 4 < 32 ? cpus + 4 : 32);
    unsigned before = threads_now();
    g_max_threads = 0;
    rft_run_loops(offload_entry, NULL, 4, 0);
    /* The 4 loops' threads and one pool's workers (and, in a sanitizer
     * build, a helper thread or two of the sanitizer's): a pool per loop
     * would have had 4 times the workers. */
    printf("threads: %u before, %u at most, pool of %u\n", before,
           g_max_threads, pool);
    assert_true(g_max_threads <= before + 4 + pool + 2);
    assert_true(g_max_threads < before + 4 * pool);
    assert_true(threads_now() <= before + 1); /* all joined */
}

/* ---- observability ------------------------------------------------------- */

static unsigned g_arrived;

static void *stats_entry(void *arg)
{
    (void)arg;
    rf_loops *ls = rf_loops_current();
    unsigned n = rf_loops_count(ls);
    for (int i = 0; i < 100; i++) {
        rf_task *t = rf_spawn(sleeper, NULL);
        rf_cancel(t);
        rf_join(t, NULL);
        rf_task_release(t);
    }
    __atomic_add_fetch(&g_arrived, 1, __ATOMIC_ACQ_REL);
    while (__atomic_load_n(&g_arrived, __ATOMIC_ACQUIRE) < n)
        rf_sleep(RFT_MS);
    if (rf_loop_index() == 0) {
        rf_stats sum, one;
        RFT_CHECK_INT(rf_loops_stats(ls, &sum), 0);
        /* Each loop: its entry and 100 tasks. */
        RFT_CHECK_INT(sum.tasks_spawned, 101 * n);
        uint64_t switches = 0;
        for (unsigned i = 0; i < n; i++) {
            RFT_CHECK_INT(rf_loop_stats_threadsafe(rf_loops_loop(ls, i), &one),
                          0);
            RFT_CHECK_INT(one.tasks_spawned, 101);
            switches += one.switches;
        }
        /* Read before the loops' own: the counters only grow. */
        RFT_CHECK(sum.switches <= switches);
        RFT_CHECK(sum.ring_flags == one.ring_flags);
    }
    return NULL;
}

static void test_stats_summed(void **state)
{
    g_arrived = 0;
    rft_run_loops(stats_entry, NULL, 3, 0);
    rf_stats st;
    assert_int_equal(rf_loops_stats(NULL, &st), -EINVAL);
}

/* Waking a loop: by eventfd unless both loops ask for MSG_RING and the
 * kernel has it (rings with DEFER_TASKRUN); rf_stats counts each way. A
 * ping-pong of spawns, each side sleeping between, wakes the other loop
 * each time. */
static void *wake_pong(void *arg) { return arg; }

/* n spawns on other, each joined and checked; every `nap`-th (0: none)
 * after a short sleep of the caller's, so that other is asleep when it
 * comes. */
static void spawn_pongs(rf_loop *other, int n, int nap)
{
    for (int i = 0; i < n; i++) {
        if (nap && i % nap == 0)
            RFT_CHECK_INT(rf_sleep(RFT_MS / 10), 0);
        rf_task *t = rf_spawn_on(other, wake_pong, (void *)(intptr_t)i, NULL);
        void *res = NULL;
        if (!RFT_CHECK(t != NULL) || !RFT_CHECK_INT(rf_join(t, &res), 0))
            break;
        RFT_CHECK_INT((intptr_t)res, i);
        rf_task_release(t);
    }
}

static void *wake_entry(void *arg)
{
    unsigned flags = (unsigned)(uintptr_t)arg;
    rf_loops *ls = rf_loops_current();
    if (rf_loop_index() != 0)
        return NULL;
    rf_loop *other = rf_loops_loop(ls, 1);
    spawn_pongs(other, 200, 10);
    rf_stats one;
    RFT_CHECK_INT(rf_loop_stats_threadsafe(other, &one), 0);
    bool ring = (flags & RF_LOOP_WAKE_MSG_RING) &&
                (one.ring_flags & IORING_SETUP_DEFER_TASKRUN);
    if (ring) {
        /* Loop 1 slept between the spawns: woken by loop 0's ring. */
        RFT_CHECK(one.wakeups_msg_ring > 0);
    } else {
        RFT_CHECK_INT(one.wakeups_msg_ring, 0);
        RFT_CHECK(one.wakeups_eventfd > 0);
    }
    return NULL;
}

static void wake_by(unsigned flags)
{
    rft_run_loops(wake_entry, (void *)(uintptr_t)flags, 2, flags);
}

static void test_wake_eventfd(void **state) { wake_by(0); }
static void test_wake_msg_ring(void **state)
{
    wake_by(RF_LOOP_WAKE_MSG_RING);
}

/* Spinning before a sleep (rf_loop_opts.spin_ns). A spin long enough
 * never to run out here (RF_SPIN_MAX_NS, one second) must still see what
 * a sleep would have waited for: a completion the kernel holds (a timer
 * firing: the ring's flag, no system call) and mail from another loop (a
 * spawn). Each is counted in sleeps_avoided; had the spin missed one, it
 * would have spun its full second and slept, and the count would be
 * short (and the test ten seconds long). */
static void *spin_entry(void *arg)
{
    (void)arg;
    rf_loops *ls = rf_loops_current();
    if (rf_loop_index() != 0)
        return NULL;
    rf_stats before, after;
    RFT_CHECK_INT(rf_loop_stats(rf_loop_current(), &before), 0);
    for (int i = 0; i < 10; i++)
        RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(rf_loop_stats(rf_loop_current(), &after), 0);
    /* A timer that fires before the loop runs dry (a thread preempted
     * for a millisecond) is taken in at the pass end, without a spin: not
     * every one of the 10 is counted on a loaded machine, but not one
     * would be if the spin did not see completions. */
    RFT_CHECK(after.sleeps_avoided > before.sleeps_avoided);
    rf_loop *other = rf_loops_loop(ls, 1);
    spawn_pongs(other, 100, 0);
    rf_stats one;
    RFT_CHECK_INT(rf_loop_stats_threadsafe(other, &one), 0);
    /* Each spawn that finds loop 1 dry finds it spinning; some come
     * while it still runs the last task (no spin then). */
    RFT_CHECK(one.sleeps_avoided > 0);
    return NULL;
}

static void *no_spin_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++)
        RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    rf_stats st;
    RFT_CHECK_INT(rf_loop_stats(rf_loop_current(), &st), 0);
    RFT_CHECK_INT(st.sleeps_avoided, 0);
    return NULL;
}

static void test_spin_before_sleep(void **state)
{
    rft_begin();
    rf_loop_opts lo = {.spin_ns = RF_SPIN_MAX_NS};
    rf_loops_opts o = {.loops = 2, .loop = &lo};
    assert_int_equal(rf_run_loops(spin_entry, NULL, &o, NULL, NULL), 0);
    rft_end();
    /* Without the option the same sleeps are slept. */
    rft_run(no_spin_main, NULL);
}

/* A stall report names the loop it happened on. */
static int g_stall_index = -2;

static void collect_stall(const rf_stall_info *info, void *user)
{
    (void)user;
    if (!info->ended)
        __atomic_store_n(&g_stall_index, info->loop_index, __ATOMIC_RELAXED);
}

static void *stall_entry(void *arg)
{
    (void)arg;
    if (rf_loop_index() != 1)
        return NULL;
    RFT_CHECK_INT(rf_loop_stall_detector(rf_loop_current(), 20, collect_stall,
                                         NULL),
                  0);
    struct timespec d = {0, 200 * 1000 * 1000};
    while (nanosleep(&d, &d) != 0 && errno == EINTR)
        ; /* blocks the loop: a stall */
    for (int i = 0; i < 500 &&
                    __atomic_load_n(&g_stall_index, __ATOMIC_RELAXED) == -2;
         i++)
        rf_sleep(RFT_MS);
    return NULL;
}

static void test_stall_names_the_loop(void **state)
{
    g_stall_index = -2;
    rft_run_loops(stall_entry, NULL, 2, 0);
    assert_int_equal(g_stall_index, 1);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_every_loop_runs_its_entry),
    cmocka_unit_test(test_default_is_one_per_cpu),
    cmocka_unit_test(test_pinned),
    cmocka_unit_test(test_first_failure_cancels_the_others),
    cmocka_unit_test(test_keep_going),
    cmocka_unit_test(test_stop_from_outside),
    cmocka_unit_test(test_tasks_left_are_drained),
    cmocka_unit_test(test_misuse),
    cmocka_unit_test(test_loop_alone),
    cmocka_unit_test(test_spawn_join_across),
    cmocka_unit_test(test_cancel_wait_for_across),
    cmocka_unit_test(test_joiner_cancelled_across),
    cmocka_unit_test(test_end_with_cross_joins_in_flight),
    cmocka_unit_test(test_storm_2),
    cmocka_unit_test(test_wake_eventfd),
    cmocka_unit_test(test_wake_msg_ring),
    cmocka_unit_test(test_spin_before_sleep),
    cmocka_unit_test(test_storm_4),
    cmocka_unit_test(test_storm_8),
    cmocka_unit_test(test_spawn_on_shut_down_loop),
    cmocka_unit_test(test_offload_shared_by_the_loops),
    cmocka_unit_test(test_stats_summed),
    cmocka_unit_test(test_stall_names_the_loop),
};

RFT_MAIN(tests)
