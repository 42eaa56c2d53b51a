/*
 * Cancellation: at every kind of wait (sleep, join, yield, gather,
 * wait_for), stickiness, before the first run, of a finished task, of
 * itself, what rf_join of a cancelled task reports, and cancellation racing
 * with completion.
 */
#include "helpers.h"

#define LONG (10 * RFT_SEC)
/* Generous bound for "returned promptly, did not wait for LONG". */
#define PROMPT (5 * RFT_SEC)

struct victim {
    volatile int started;
    volatile int finished;
    int rc;            /* what the interrupted wait returned */
    uint64_t waited;   /* how long that wait took */
    rf_task *other;    /* what it waits on, for join / gather / wait_for */
    rf_task *others[2];
    void *res;
    void *results[2];
};

static void *long_sleep(void *arg)
{
    int rc = rf_sleep(LONG);
    RFT_CHECK_INT(rc, -ECANCELED);
    return arg;
}

static void *return_arg(void *arg) { return arg; }

/* Cancel v's task once it is inside its wait, then join it. */
static void cancel_started(rf_task *t, struct victim *v, void *expect_res)
{
    RFT_CHECK(rft_yield_until(&v->started, 100));
    rf_yield(); /* it is in its wait now */
    RFT_CHECK(!rf_done(t));
    RFT_CHECK(!rf_cancelled(t));
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK(rf_cancelled(t));
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), -ECANCELED);
    RFT_CHECK_PTR(res, expect_res);
    RFT_CHECK(v->finished);
    RFT_CHECK_INT(v->rc, -ECANCELED);
    RFT_CHECK(v->waited < PROMPT);
}

/* ---- at a sleep ---------------------------------------------------------- */

static void *v_sleep(void *arg)
{
    struct victim *v = arg;
    v->started = 1;
    uint64_t t0 = rft_now();
    v->rc = rf_sleep(LONG);
    v->waited = rft_now() - t0;
    v->finished = 1;
    return (void *)0x51;
}

static void *cancel_sleep(void *arg)
{
    struct victim v = {0};
    rf_task *t = rf_spawn(v_sleep, &v);
    cancel_started(t, &v, (void *)0x51);
    /* The sleep's kernel timeout is removed, not left behind: the removal
     * goes out with the next submission (a short sleep forces one). */
    RFT_CHECK_INT(rf_sleep(1 * RFT_MS), 0);
    rf_stats s = rft_stats();
    RFT_CHECK_INT(s.ops_in_flight, 0);
    RFT_CHECK_INT(s.tasks_alive, 1);
    return NULL;
}

static void test_cancel_at_sleep(void **state) { rft_run(cancel_sleep, NULL); }

/* ---- at a join ----------------------------------------------------------- */

static void *v_join(void *arg)
{
    struct victim *v = arg;
    v->started = 1;
    uint64_t t0 = rft_now();
    v->res = (void *)0x77;
    v->rc = rf_join(v->other, &v->res);
    v->waited = rft_now() - t0;
    v->finished = 1;
    return (void *)0x52;
}

static void *cancel_join(void *arg)
{
    struct victim v = {0};
    v.other = rf_spawn(long_sleep, (void *)0x0E);
    rf_task *t = rf_spawn(v_join, &v);
    cancel_started(t, &v, (void *)0x52);
    RFT_CHECK_PTR(v.res, (void *)0x77); /* result untouched */
    /* The joined task is not cancelled: it has other waiters maybe. */
    RFT_CHECK(!rf_cancelled(v.other));
    RFT_CHECK(!rf_done(v.other));
    RFT_CHECK_INT(rf_cancel(v.other), 0);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(v.other, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x0E);
    return NULL;
}

static void test_cancel_at_join(void **state) { rft_run(cancel_join, NULL); }

/* ---- at a yield ---------------------------------------------------------- */

static volatile long g_spins;
static volatile int g_spin_stop;

static void *spinner(void *arg)
{
    while (!g_spin_stop) {
        g_spins++;
        rf_yield();
    }
    return NULL;
}

static void *v_yield(void *arg)
{
    struct victim *v = arg;
    v->started = 1;
    uint64_t t0 = rft_now();
    int rc = 0;
    /* Bounded, so that a yield that ignores cancellation fails the test
     * instead of hanging it. */
    for (int i = 0; i < 100000 && rc == 0; i++)
        rc = rf_yield();
    v->rc = rc;
    v->waited = rft_now() - t0;
    /* Sticky, and rf_yield still yields: the spinner runs in between. */
    for (int i = 0; i < 3; i++) {
        long before = g_spins;
        RFT_CHECK_INT(rf_yield(), -ECANCELED);
        RFT_CHECK(g_spins > before);
    }
    RFT_CHECK_INT(rf_sleep(0), -ECANCELED);
    v->finished = 1;
    return (void *)0x53;
}

static void *cancel_yield(void *arg)
{
    struct victim v = {0};
    g_spins = 0;
    g_spin_stop = 0;
    rf_task *sp = rf_spawn(spinner, NULL);
    rf_task *t = rf_spawn(v_yield, &v);
    cancel_started(t, &v, (void *)0x53);
    g_spin_stop = 1;
    RFT_CHECK_INT(rf_join(sp, NULL), 0);
    return NULL;
}

static void test_cancel_at_yield(void **state) { rft_run(cancel_yield, NULL); }

/* ---- at a gather --------------------------------------------------------- */

static void *v_gather(void *arg)
{
    struct victim *v = arg;
    v->started = 1;
    uint64_t t0 = rft_now();
    v->results[0] = v->results[1] = (void *)0x77;
    v->rc = rf_gather(v->others, 2, v->results);
    v->waited = rft_now() - t0;
    /* gather returned only after every child had returned. */
    RFT_CHECK(rf_done(v->others[0]));
    RFT_CHECK(rf_done(v->others[1]));
    v->finished = 1;
    return (void *)0x54;
}

static void *cancel_gather(void *arg)
{
    struct victim v = {0};
    v.others[0] = rf_spawn(return_arg, (void *)0x0A); /* finishes at once */
    v.others[1] = rf_spawn(long_sleep, (void *)0x0B); /* never on its own */
    rf_task *t = rf_spawn(v_gather, &v);
    cancel_started(t, &v, (void *)0x54);
    /* The unfinished child was cancelled and awaited; the finished one was
     * left alone. */
    RFT_CHECK(!rf_cancelled(v.others[0]));
    RFT_CHECK(rf_cancelled(v.others[1]));
    RFT_CHECK(rf_done(v.others[1]));
    RFT_CHECK_INT(rf_join(v.others[0], NULL), 0);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(v.others[1], &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x0B);
    return NULL;
}

static void test_cancel_at_gather(void **state) { rft_run(cancel_gather, NULL); }

/* ---- at a wait_for ------------------------------------------------------- */

static void *v_wait_for(void *arg)
{
    struct victim *v = arg;
    v->started = 1;
    uint64_t t0 = rft_now();
    v->res = (void *)0x77;
    v->rc = rf_wait_for(v->other, LONG, &v->res);
    v->waited = rft_now() - t0;
    RFT_CHECK(rf_done(v->other)); /* awaited before returning */
    v->finished = 1;
    return (void *)0x55;
}

static void *cancel_wait_for(void *arg)
{
    struct victim v = {0};
    v.other = rf_spawn(long_sleep, (void *)0x0C);
    rf_task *t = rf_spawn(v_wait_for, &v);
    cancel_started(t, &v, (void *)0x55);
    RFT_CHECK(rf_cancelled(v.other));
    RFT_CHECK(rf_done(v.other));
    void *res = NULL;
    RFT_CHECK_INT(rf_join(v.other, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x0C);
    return NULL;
}

static void test_cancel_at_wait_for(void **state) { rft_run(cancel_wait_for, NULL); }

/* ---- sticky -------------------------------------------------------------- */

static void *sticky_body(void *arg)
{
    rf_task *other = arg;
    RFT_CHECK_INT(rf_sleep(LONG), -ECANCELED);
    RFT_CHECK(rf_cancelled(rf_self()));

    uint64_t t0 = rft_now();
    RFT_CHECK_INT(rf_sleep(LONG), -ECANCELED);
    RFT_CHECK_INT(rf_sleep(1), -ECANCELED);
    void *res = (void *)0x77;
    RFT_CHECK_INT(rf_join(other, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x77); /* untouched */
    RFT_CHECK(!rf_cancelled(other));  /* a waiter's cancel leaves t alone */
    /* gather and wait_for own their tasks: entered by a cancelled
     * caller they cancel and await them (owned_entered_cancelled below). */
    RFT_CHECK_INT(rf_yield(), -ECANCELED);
    RFT_CHECK_INT(rf_sleep(0), -ECANCELED);
    RFT_CHECK(rft_now() - t0 < PROMPT);
    /* Cancelling again is still "request made". */
    RFT_CHECK_INT(rf_cancel(rf_self()), 0);
    /* Non-suspending calls keep working. */
    rf_task *c = rf_spawn(return_arg, (void *)1);
    RFT_CHECK(c != NULL);
    rf_task_release(c);
    return (void *)0x5C;
}

static void *sticky(void *arg)
{
    rf_task *other = rf_spawn(long_sleep, (void *)0x0D);
    rf_task *t = rf_spawn(sticky_body, other);
    rf_yield();
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK_INT(rf_cancel(t), 0); /* again: 0 */
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x5C);
    rf_cancel(other);
    res = NULL;
    RFT_CHECK_INT(rf_join(other, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x0D);
    return NULL;
}

static void test_cancel_is_sticky(void **state) { rft_run(sticky, NULL); }

/* ---- gather and wait_for entered by a cancelled caller ------------------ */

/* They own what they wait for: as when the cancellation comes during the
 * wait, the tasks are cancelled and awaited before -ECANCELED is returned,
 * never left running (the stress suite's cancellation storm found them
 * returning at once and leaving the tasks alive). */
static void *owned_entered_cancelled(void *arg)
{
    rf_task *a[2] = {rf_spawn(long_sleep, (void *)0x0A),
                     rf_spawn(long_sleep, (void *)0x0B)};
    rf_task *b = rf_spawn(long_sleep, (void *)0x0C);
    RFT_CHECK_INT(rf_cancel(rf_self()), 0);
    uint64_t t0 = rft_now();
    void *res[2] = {NULL, NULL};
    RFT_CHECK_INT(rf_gather(a, 2, res), -ECANCELED);
    RFT_CHECK(rf_done(a[0]) && rf_done(a[1]));
    RFT_CHECK(rf_cancelled(a[0]) && rf_cancelled(a[1]));
    RFT_CHECK_PTR(res[0], (void *)0x0A);
    RFT_CHECK_PTR(res[1], (void *)0x0B);
    void *r = NULL;
    RFT_CHECK_INT(rf_wait_for(b, LONG, &r), -ECANCELED);
    RFT_CHECK(rf_done(b) && rf_cancelled(b));
    RFT_CHECK_PTR(r, (void *)0x0C);
    RFT_CHECK(rft_now() - t0 < PROMPT);
    /* A finished task is still delivered at once. */
    RFT_CHECK_INT(rf_wait_for(b, LONG, &r), -ECANCELED);
    RFT_CHECK_INT(rf_gather(a, 2, NULL), -ECANCELED);
    rf_task_release(a[0]);
    rf_task_release(a[1]);
    rf_task_release(b);
    return NULL;
}

static void *entered_cancelled(void *arg)
{
    rf_task *t = rf_spawn(owned_entered_cancelled, NULL);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    rf_task_release(t);
    return NULL;
}

static void test_gather_wait_for_entered_cancelled(void **state)
{
    rft_run(entered_cancelled, NULL);
}

/* ---- before the first run ------------------------------------------------ */

static volatile int g_ran;

static void *first_wait_cancelled(void *arg)
{
    g_ran = 1;
    RFT_CHECK(rf_cancelled(rf_self()));
    uint64_t t0 = rft_now();
    RFT_CHECK_INT(rf_sleep(LONG), -ECANCELED);
    RFT_CHECK(rft_now() - t0 < PROMPT);
    free(arg); /* ownership of arg passed to fn */
    return (void *)0xBF;
}

static void *cancel_before_run(void *arg)
{
    g_ran = 0;
    rf_task *t = rf_spawn(first_wait_cancelled, malloc(32));
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK(rf_cancelled(t));
    RFT_CHECK(!rf_done(t));
    RFT_CHECK_INT(g_ran, 0);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), -ECANCELED);
    RFT_CHECK_INT(g_ran, 1);
    RFT_CHECK_PTR(res, (void *)0xBF);
    return NULL;
}

static void test_cancel_before_first_run(void **state) { rft_run(cancel_before_run, NULL); }

/* Cancelled from the loop's thread outside any task, between two runs. */
static void *join_expect_cancelled(void *arg)
{
    void *res = NULL;
    RFT_CHECK_INT(rf_join(arg, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0xBF);
    return (void *)1;
}

static void test_cancel_from_outside_task(void **state)
{
    rf_loop *loop = NULL;
    assert_int_equal(rf_loop_new(&loop, NULL), 0);
    g_ran = 0;
    rf_task *t = rf_loop_spawn(loop, first_wait_cancelled, malloc(32), NULL);
    assert_non_null(t);
    assert_int_equal(rf_cancel(t), 0);
    assert_true(rf_cancelled(t));
    assert_false(rf_done(t));
    rft_begin();
    void *res = NULL;
    assert_int_equal(rf_loop_run_until_complete(loop, join_expect_cancelled, t, &res), 0);
    assert_ptr_equal(res, (void *)1);
    rft_end();
    assert_int_equal(g_ran, 1);
    assert_true(rf_done(t));
    assert_int_equal(rf_cancel(t), -ESRCH);
    rf_task_release(t);
    assert_int_equal(rf_loop_free(loop), 0);
}

/* ---- errors -------------------------------------------------------------- */

static void *cancel_errors(void *arg)
{
    RFT_CHECK_INT(rf_cancel(NULL), -EINVAL);
    rf_task *t = rf_spawn(return_arg, (void *)1);
    rf_join(t, NULL);
    RFT_CHECK_INT(rf_cancel(t), -ESRCH); /* already returned */
    RFT_CHECK(!rf_cancelled(t));
    RFT_CHECK_INT(rf_join(t, NULL), 0); /* and its result stays "not cancelled" */
    return NULL;
}

static void test_cancel_errors(void **state) { rft_run(cancel_errors, NULL); }

/* ---- self-cancel --------------------------------------------------------- */

static void *self_cancel_no_wait(void *arg)
{
    RFT_CHECK_INT(rf_cancel(rf_self()), 0);
    RFT_CHECK(rf_cancelled(rf_self()));
    return (void *)0x5E; /* returns without waiting again */
}

static void *self_cancel_then_wait(void *arg)
{
    RFT_CHECK_INT(rf_cancel(rf_self()), 0);
    uint64_t t0 = rft_now();
    RFT_CHECK_INT(rf_sleep(LONG), -ECANCELED);
    RFT_CHECK(rft_now() - t0 < PROMPT);
    return (void *)0x5F;
}

static void *self_cancel(void *arg)
{
    rf_task *a = rf_spawn(self_cancel_no_wait, NULL);
    rf_task *b = rf_spawn(self_cancel_then_wait, NULL);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(a, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x5E);
    RFT_CHECK_INT(rf_join(b, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x5F);
    /* Joining again gives the same. */
    res = NULL;
    RFT_CHECK_INT(rf_join(a, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x5E);
    return NULL;
}

static void test_self_cancel(void **state) { rft_run(self_cancel, NULL); }

/* ---- a task that ignores cancellation still delivers its result --------- */

static void *keep_working(void *arg)
{
    int n = 0;
    while (rf_sleep(LONG) == -ECANCELED && ++n < 3)
        ;
    return malloc(64); /* its result, which must reach the joiner */
}

static void *cancelled_result_delivered(void *arg)
{
    rf_task *t = rf_spawn(keep_working, NULL);
    rf_yield();
    rf_cancel(t);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), -ECANCELED);
    RFT_CHECK(res != NULL);
    free(res);
    return NULL;
}

static void test_join_cancelled_delivers_result(void **state)
{
    rft_run(cancelled_result_delivered, NULL);
}

/* ---- cancel racing with the wait's completion --------------------------- */

static void *race_sleeper(void *arg)
{
    int *rc = arg;
    *rc = rf_sleep(1 * RFT_MS);
    return arg;
}

static void *cancel_race(void *arg)
{
    int counts[2] = {0, 0};
    for (int i = 0; i < 300; i++) {
        int rc = 12345;
        rf_task *t = rf_spawn(race_sleeper, &rc);
        /* Wake up a little before, at, or a little after the sleeper's
         * deadline, so that every ordering happens: cancel while it waits,
         * cancel after its CQE arrived but before it ran, after it
         * returned. */
        rf_sleep(1 * RFT_MS - 200 * RF_NSEC_PER_USEC + (uint64_t)(i % 21) * 20 * RF_NSEC_PER_USEC);
        int c = rf_cancel(t);
        void *res = NULL;
        int j = rf_join(t, &res);
        RFT_CHECK_PTR(res, &rc);
        if (c == 0) {
            /* Cancelled before it returned: join says so; its sleep either
             * completed first (0) or was cancelled. */
            RFT_CHECK_INT(j, -ECANCELED);
            RFT_CHECK(rc == 0 || rc == -ECANCELED);
            counts[0]++;
        } else {
            RFT_CHECK_INT(c, -ESRCH);
            RFT_CHECK_INT(j, 0);
            RFT_CHECK_INT(rc, 0);
            counts[1]++;
        }
        rf_task_release(t);
    }
    RFT_CHECK_INT(rf_sleep(1 * RFT_MS), 0); /* timeouts removed go out */
    rf_stats s = rft_stats();
    RFT_CHECK_INT(s.ops_in_flight, 0);
    RFT_CHECK_INT(s.tasks_alive, 1);
    printf("cancel race: %d cancelled, %d already done\n", counts[0], counts[1]);
    return NULL;
}

static void test_cancel_races_completion(void **state) { rft_run(cancel_race, NULL); }

/* Many tasks cancelled at once in the middle of their sleeps. */
static void *mass_cancel(void *arg)
{
    enum { N = 2000 };
    rf_task **t = calloc(N, sizeof *t);
    for (int i = 0; i < N; i++)
        t[i] = rf_spawn(long_sleep, (void *)(intptr_t)i);
    rf_yield();
    uint64_t t0 = rft_now();
    for (int i = 0; i < N; i++)
        RFT_CHECK_INT(rf_cancel(t[i]), 0);
    void **res = calloc(N, sizeof *res);
    RFT_CHECK_INT(rf_gather(t, N, res), -ECANCELED);
    RFT_CHECK(rft_now() - t0 < PROMPT);
    for (int i = 0; i < N; i++) {
        RFT_CHECK_INT((intptr_t)res[i], i);
        rf_task_release(t[i]);
    }
    RFT_CHECK_INT(rf_sleep(1 * RFT_MS), 0); /* timeouts removed go out */
    rf_stats s = rft_stats();
    RFT_CHECK_INT(s.ops_in_flight, 0);
    free(res);
    free(t);
    return NULL;
}

static void test_mass_cancel(void **state) { rft_run(mass_cancel, NULL); }

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_cancel_at_sleep),
    cmocka_unit_test(test_cancel_at_join),
    cmocka_unit_test(test_cancel_at_yield),
    cmocka_unit_test(test_cancel_at_gather),
    cmocka_unit_test(test_cancel_at_wait_for),
    cmocka_unit_test(test_cancel_is_sticky),
    cmocka_unit_test(test_gather_wait_for_entered_cancelled),
    cmocka_unit_test(test_cancel_before_first_run),
    cmocka_unit_test(test_cancel_from_outside_task),
    cmocka_unit_test(test_cancel_errors),
    cmocka_unit_test(test_self_cancel),
    cmocka_unit_test(test_join_cancelled_delivers_result),
    cmocka_unit_test(test_cancel_races_completion),
    cmocka_unit_test(test_mass_cancel),
};

RFT_MAIN(tests)
