/*
 * 100,000 concurrent tasks, each sleeping 50 ms, all complete, with guard
 * pages on. vm.max_map_count defaults to 65530, so a guard page may not cost
 * a memory mapping per stack (mprotect splits a mapping in two: 200,000
 * mappings); MADV_GUARD_INSTALL guard regions do not split mappings.
 */
#include "helpers.h"

enum { N = 100000 };

static signed char *g_rc;
/* When the first and the last sleeper began to sleep (rf_now_ns). */
static uint64_t g_first, g_last;

static void *sleeper(void *arg)
{
    intptr_t i = (intptr_t)arg;
    uint64_t now = rf_now_ns();
    if (!g_first || now < g_first)
        g_first = now;
    if (now > g_last)
        g_last = now;
    g_rc[i] = (signed char)rf_sleep(50 * RFT_MS);
    return arg;
}

/* arg: the guard mode the loop was asked for (RF_GUARD_MADVISE is the
 * default where the kernel has it). */
static void *hundred_thousand(void *arg)
{
    unsigned want_mode = (unsigned)(uintptr_t)arg;
    g_rc = malloc(N);
    memset(g_rc, 99, N);
    g_first = g_last = 0;
    rf_task **t = calloc(N, sizeof *t);
    uint64_t t0 = rft_now();
    for (intptr_t i = 0; i < N; i++) {
        t[i] = rf_spawn(sleeper, (void *)i);
        if (!RFT_CHECK(t[i] != NULL)) {
            fprintf(stderr, "spawn %ld of %d failed: %s\n", (long)i, N, strerror(errno));
            for (intptr_t j = 0; j < i; j++)
                rf_task_release(t[j]);
            free(t);
            free(g_rc);
            return NULL;
        }
    }
    rf_yield(); /* every task is now asleep on its own stack */
    rf_stats s = rft_stats();
    long maps = rft_count_maps();
    long max_maps = rft_read_long_file("/proc/sys/vm/max_map_count", 65530);
    printf("100k sleepers: guard_mode %u, stacks_mapped %llu, mappings %ld "
           "(max %ld), ops in flight %llu\n",
           s.guard_mode, (unsigned long long)s.stacks_mapped, maps, max_maps,
           (unsigned long long)s.ops_in_flight);
    RFT_CHECK(s.guard_mode == RF_GUARD_MADVISE || s.guard_mode == RF_GUARD_MPROTECT);
    if (want_mode == RF_GUARD_MPROTECT)
        RFT_CHECK_INT(s.guard_mode, RF_GUARD_MPROTECT);
    RFT_CHECK(s.stacks_mapped >= N);
    RFT_CHECK_INT(s.tasks_alive, N + 1);
    /* They share kernel timeouts: one per timer-slack window that their
     * ends fall in, so no more than the windows the sleepers' starts
     * span, however long the machine took to start them all (a loaded
     * machine under ASan spreads them over a quarter of a second and
     * more; a quiet one over a few milliseconds: then the bound is a few
     * hundred, not 100,000). */
    uint64_t slack = (uint64_t)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    uint64_t windows = slack ? (g_last - g_first) / slack + 2 : N;
    printf("sleepers started over %.1f ms: at most %llu shared timeouts\n",
           (double)(g_last - g_first) / 1e6, (unsigned long long)windows);
    RFT_CHECK(s.ops_in_flight >= 1);
    RFT_CHECK(s.ops_in_flight <= windows);
    RFT_CHECK(s.ops_in_flight < N);
    /* MADV_GUARD_INSTALL guards do not cost a mapping each. */
    if (s.guard_mode == RF_GUARD_MADVISE)
        RFT_CHECK(maps < N / 2);

    void **res = calloc(N, sizeof *res);
    RFT_CHECK_INT(rf_gather(t, N, res), 0);
    uint64_t wall = rft_now() - t0;
    int bad = 0;
    for (intptr_t i = 0; i < N; i++) {
        if (g_rc[i] != 0 || res[i] != (void *)i)
            bad++;
        rf_task_release(t[i]);
    }
    RFT_CHECK_INT(bad, 0);
    s = rft_stats();
    RFT_CHECK_INT(s.tasks_alive, 1);
    RFT_CHECK_INT(s.ops_in_flight, 0);
    printf("100k x 50 ms sleepers: %.0f ms wall, %llu enters\n", wall / 1e6,
           (unsigned long long)s.enters);
    free(res);
    free(t);
    free(g_rc);
    return NULL;
}

static void run_on_loop(unsigned flags, unsigned want_mode)
{
    rf_loop_opts o;
    memset(&o, 0, sizeof o);
    o.flags = flags;
    rf_loop *loop = NULL;
    assert_int_equal(rf_loop_new(&loop, &o), 0);
    rft_begin();
    int rc = rf_loop_run_until_complete(loop, hundred_thousand,
                                        (void *)(uintptr_t)want_mode, NULL);
    rft_end();
    assert_int_equal(rc, 0);
    assert_int_equal(rf_loop_free(loop), 0);
}

static void test_hundred_thousand_sleepers(void **state)
{
    if (RFT_TSAN)
        skip(); /* 100,000 fibers: RFT_TSAN_ALIVE_MAX, helpers.h */
    rft_run(hundred_thousand, (void *)(uintptr_t)RF_GUARD_MADVISE);
}

/* Twice in one loop: the stacks of the first round are reused or given
 * back, not leaked. */
static void *twice(void *arg)
{
    hundred_thousand(arg);
    hundred_thousand(arg);
    return NULL;
}

static void test_twice(void **state)
{
    if (RFT_TSAN)
        skip(); /* 100,000 fibers: RFT_TSAN_ALIVE_MAX, helpers.h */
    rft_run(twice, (void *)(uintptr_t)RF_GUARD_MADVISE);
}

/* With mprotect guards (2 mappings each), stacks beyond vm.max_map_count
 * rely on their canary: the 100,000 tasks still run. */
static void test_hundred_thousand_mprotect_guards(void **state)
{
    if (RFT_TSAN)
        skip(); /* 100,000 fibers: RFT_TSAN_ALIVE_MAX, helpers.h */
    run_on_loop(RF_LOOP_GUARD_MPROTECT, RF_GUARD_MPROTECT);
}

/* The dump of 100,000 tasks (rf_loop_dump_text, tests/test_inspect.c has
 * the rest): one line each and the totals, in bounded time (this test's
 * timeout). */

static void *dump_long_sleep(void *arg)
{
    (void)arg;
    rf_sleep(3600 * RFT_SEC);
    return NULL;
}

static void *dump_hundred_thousand_main(void *arg)
{
    (void)arg;
    rf_task **t = malloc(N * sizeof *t);
    for (int i = 0; i < N; i++)
        t[i] = rf_spawn_opts(dump_long_sleep, NULL,
                             &(rf_spawn_options){.stack_size = RF_MIN_STACK_SIZE});
    rf_yield();
    char *text = NULL;
    size_t len = 0;
    RFT_CHECK_INT(rf_loop_dump_text(rf_loop_current(), 0, &text, &len), 0);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    /* A header, a line per task (N + main), the totals (3 lines), the end. */
    RFT_CHECK_INT(lines, 1 + N + 1 + 2 + 1);
    RFT_CHECK(strstr(text, "100000 waiting in sleep, longest ") != NULL);
    free(text);
    for (int i = 0; i < N; i++)
        rf_cancel(t[i]);
    for (int i = 0; i < N; i++) {
        rf_join(t[i], NULL);
        rf_task_release(t[i]);
    }
    free(t);
    return NULL;
}

static void test_dump_of_hundred_thousand(void **state)
{
    if (RFT_TSAN)
        skip(); /* 100,000 fibers: RFT_TSAN_ALIVE_MAX, helpers.h */
    (void)state;
    rf_loop_opts o = {.flags = RF_LOOP_VIRTUAL_TIME};
    rft_begin();
    assert_int_equal(rf_run_opts(dump_hundred_thousand_main, NULL, NULL, &o), 0);
    rft_end();
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_dump_of_hundred_thousand),
    cmocka_unit_test(test_hundred_thousand_sleepers),
    cmocka_unit_test(test_twice),
    cmocka_unit_test(test_hundred_thousand_mprotect_guards),
};

RFT_MAIN(tests)
