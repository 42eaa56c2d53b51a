/*
 * rf_loop_stats: batching made visible. 1000 sleeps cost a handful of
 * io_uring_enter calls; a yield ping-pong costs none; the gauges
 * (tasks_alive, ops_in_flight, stacks_mapped) follow the tasks.
 */
#include "helpers.h"

#include <liburing.h>
#include <sys/utsname.h>

static void *sleep_once(void *arg)
{
    RFT_CHECK_INT(rf_sleep(20 * RFT_MS), 0);
    return NULL;
}

static void print_delta(const char *what, const rf_stats *a, const rf_stats *b)
{
    printf("%s: enters %llu, sqes %llu, cqes %llu, switches %llu, passes %llu, "
           "spawned %llu\n",
           what, (unsigned long long)(b->enters - a->enters),
           (unsigned long long)(b->sqes_submitted - a->sqes_submitted),
           (unsigned long long)(b->cqes_reaped - a->cqes_reaped),
           (unsigned long long)(b->switches - a->switches),
           (unsigned long long)(b->passes - a->passes),
           (unsigned long long)(b->tasks_spawned - a->tasks_spawned));
}

static void *noop(void *arg) { return arg; }

static void *thousand_sleeps(void *arg)
{
    enum { N = 1000 };
    rf_task **t = calloc(N, sizeof *t);
    /* Warm the stack pool first: the first use of a stack costs a page
     * fault (about 3 us on these VMs), which would spread the 1000 sleeps
     * over milliseconds and measure page faults, not batching. */
    for (int i = 0; i < N; i++)
        t[i] = rf_spawn(noop, NULL);
    RFT_CHECK_INT(rf_gather(t, N, NULL), 0);
    for (int i = 0; i < N; i++)
        rf_task_release(t[i]);
    rf_stats s0 = rft_stats();
    RFT_CHECK_INT(s0.tasks_alive, 1); /* main */
    for (int i = 0; i < N; i++)
        t[i] = rf_spawn(sleep_once, NULL);
    rf_stats s1 = rft_stats();
    RFT_CHECK_INT(s1.tasks_spawned - s0.tasks_spawned, N);
    RFT_CHECK_INT(s1.tasks_alive, N + 1);
    RFT_CHECK(s1.stacks_mapped >= 1); /* at least main's */

    rf_yield(); /* every task runs to its sleep */
    rf_stats s2 = rft_stats();
    /* Sleeps that end within the same timer-slack window share one
     * kernel timeout: the 1000 sleeps begun in this one pass need few. */
    RFT_CHECK(s2.ops_in_flight >= 1);
    RFT_CHECK(s2.ops_in_flight <= N / 10);
    RFT_CHECK(s2.stacks_mapped >= N + 1); /* each sleeper has its stack */
    RFT_CHECK_INT(s2.tasks_alive, N + 1);

    RFT_CHECK_INT(rf_gather(t, N, NULL), 0);
    rf_stats s3 = rft_stats();
    print_delta("1000 sleeps", &s0, &s3);
    /* The sleeps begin over the ~1 ms it takes to run 1000 tasks, and end
     * in the same order, rounded to the 50 us timer slack: the loop wakes
     * once per slack window that has expirations (about 25 here) and once
     * per 256 submissions (the SQ size). At least 10 sleeps per
     * io_uring_enter, where one enter per sleep would be 1000. */
    RFT_CHECK(s3.enters - s0.enters <= N / 10);
    RFT_CHECK(s3.enters - s0.enters >= 1);
    RFT_CHECK(s3.sqes_submitted - s0.sqes_submitted >= 1);
    RFT_CHECK(s3.sqes_submitted - s0.sqes_submitted <= N / 10);
    RFT_CHECK(s3.cqes_reaped - s0.cqes_reaped >= 1);
    /* Each task was switched to at least twice: start and wake-up. */
    RFT_CHECK(s3.switches - s0.switches >= 2 * N);
    RFT_CHECK(s3.passes > s0.passes);
    RFT_CHECK_INT(s3.ops_in_flight, 0);
    RFT_CHECK_INT(s3.tasks_alive, 1); /* returned; handles still held */
    for (int i = 0; i < N; i++)
        rf_task_release(t[i]);
    free(t);
    return NULL;
}

static void test_thousand_sleeps_few_enters(void **state) { rft_run(thousand_sleeps, NULL); }

/* tasks_alive counts tasks spawned and not yet returned, whatever the
 * handles. */
static void *alive_gauge(void *arg)
{
    rf_task *t = rf_spawn(sleep_once, NULL);
    rf_stats a = rft_stats();
    RFT_CHECK_INT(a.tasks_alive, 2);
    rf_join(t, NULL);
    rf_stats b = rft_stats();
    RFT_CHECK_INT(b.tasks_alive, 1); /* returned, handle still held */
    rf_task_release(t);
    rf_stats c = rft_stats();
    RFT_CHECK_INT(c.tasks_alive, 1);
    return NULL;
}

static void test_tasks_alive_gauge(void **state) { rft_run(alive_gauge, NULL); }

/* ---- yield ping-pong: no system call at all ----------------------------- */

enum { ROUNDS = 10000 };

static void *pinger(void *arg)
{
    for (int i = 0; i < ROUNDS; i++)
        RFT_CHECK_INT(rf_yield(), 0);
    return NULL;
}

static void *ping_pong(void *arg)
{
    rf_stats s0 = rft_stats();
    rf_task *t[2] = {rf_spawn(pinger, NULL), rf_spawn(pinger, NULL)};
    RFT_CHECK_INT(rf_gather(t, 2, NULL), 0);
    rf_stats s1 = rft_stats();
    print_delta("yield ping-pong", &s0, &s1);
    RFT_CHECK_INT(s1.enters - s0.enters, 0);
    RFT_CHECK_INT(s1.sqes_submitted - s0.sqes_submitted, 0);
    RFT_CHECK_INT(s1.cqes_reaped - s0.cqes_reaped, 0);
    RFT_CHECK(s1.switches - s0.switches >= 2 * ROUNDS);
    RFT_CHECK_INT(s1.tasks_spawned - s0.tasks_spawned, 2);
    return NULL;
}

static void test_yield_ping_pong_no_enters(void **state) { rft_run(ping_pong, NULL); }

/* ---- loop-level fields ----------------------------------------------------- */

static void *join_arg(void *arg)
{
    RFT_CHECK_INT(rf_join(arg, NULL), 0);
    return NULL;
}

static bool kernel_at_least(int major, int minor)
{
    struct utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
        return false;
    return ma > major || (ma == major && mi >= minor);
}

static void test_loop_fields(void **state)
{
    rf_loop *loop = NULL;
    assert_int_equal(rf_loop_new(&loop, NULL), 0);
    rf_stats s;
    memset(&s, 0xff, sizeof s);
    assert_int_equal(rf_loop_stats(loop, &s), 0);
    assert_int_equal(s.tasks_alive, 0);
    assert_int_equal(s.tasks_spawned, 0);
    assert_int_equal(s.ops_in_flight, 0);
    assert_int_equal(s.switches, 0);
    assert_true(s.guard_mode == RF_GUARD_MADVISE || s.guard_mode == RF_GUARD_MPROTECT);
    /* MADV_GUARD_INSTALL exists from Linux 6.13. */
    if (kernel_at_least(6, 13))
        assert_int_equal(s.guard_mode, RF_GUARD_MADVISE);
#ifdef IORING_SETUP_SINGLE_ISSUER
    if (kernel_at_least(6, 0))
        assert_true(s.ring_flags & IORING_SETUP_SINGLE_ISSUER);
#endif
    printf("ring_flags 0x%x guard_mode %u\n", s.ring_flags, s.guard_mode);

    rf_task *t = rf_loop_spawn(loop, sleep_once, NULL, NULL);
    assert_int_equal(rf_loop_stats(loop, &s), 0);
    assert_int_equal(s.tasks_spawned, 1);
    assert_int_equal(s.tasks_alive, 1);
    rft_begin();
    assert_int_equal(rf_loop_run_until_complete(loop, join_arg, t, NULL), 0);
    rft_end();
    assert_true(rf_done(t));
    assert_int_equal(rf_loop_stats(loop, &s), 0);
    assert_int_equal(s.tasks_alive, 0);
    assert_int_equal(s.tasks_spawned, 2);
    assert_int_equal(s.ops_in_flight, 0);
    assert_true(s.switches >= 3);
    assert_true(s.sqes_submitted >= 1);
    assert_true(s.cqes_reaped >= 1);
    assert_true(s.enters >= 1);

    assert_int_equal(rf_loop_stats(NULL, &s), -EINVAL);
    rf_task_release(t);
    assert_int_equal(rf_loop_free(loop), 0);

    /* RF_LOOP_GUARD_MPROTECT asks for the mprotect guards. */
    rf_loop_opts o;
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_GUARD_MPROTECT;
    assert_int_equal(rf_loop_new(&loop, &o), 0);
    assert_int_equal(rf_loop_stats(loop, &s), 0);
    assert_int_equal(s.guard_mode, RF_GUARD_MPROTECT);
    rft_begin();
    t = rf_loop_spawn(loop, sleep_once, NULL, NULL);
    assert_non_null(t);
    assert_int_equal(rf_loop_run_until_complete(loop, join_arg, t, NULL), 0);
    rft_end();
    assert_int_equal(rf_loop_stats(loop, &s), 0);
    assert_int_equal(s.guard_mode, RF_GUARD_MPROTECT);
    assert_int_equal(rf_loop_stats(loop, NULL), -EINVAL);
    rf_task_release(t);
    assert_int_equal(rf_loop_free(loop), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_thousand_sleeps_few_enters),
    cmocka_unit_test(test_tasks_alive_gauge),
    cmocka_unit_test(test_yield_ping_pong_no_enters),
    cmocka_unit_test(test_loop_fields),
};

RFT_MAIN(tests)
