/*
 * rf_as_completed: completion order, results and statuses, tasks already
 * finished, the caller cancelled, errors.
 */
#include "helpers.h"

static void *sleep_ms_return_arg(void *arg)
{
    intptr_t ms = (intptr_t)arg;
    int rc = rf_sleep((uint64_t)ms * RFT_MS);
    return rc == 0 ? arg : (void *)-1;
}

static void *long_sleep_return_arg(void *arg)
{
    RFT_CHECK_INT(rf_sleep(10 * RFT_SEC), -ECANCELED);
    return arg;
}

static void *completion_order(void *arg)
{
    /* Spawned in this order, finish in the order of their sleeps. */
    static const intptr_t ms[] = {160, 40, 120, 80, 10};
    enum { N = 5 };
    rf_task *t[N];
    for (int i = 0; i < N; i++)
        t[i] = rf_spawn(sleep_ms_return_arg, (void *)ms[i]);
    rf_as_completed ac;
    RFT_CHECK_INT(rf_as_completed_init(&ac, t, N), 0);
    static const int expect[] = {4, 1, 3, 2, 0};
    for (int k = 0; k < N; k++) {
        void *res = NULL;
        int status = 12345;
        rf_task *d = rft_ac_next(&ac, &res, &status);
        if (!RFT_CHECK(d != NULL))
            break;
        RFT_CHECK_PTR(d, t[expect[k]]);
        RFT_CHECK(rf_done(d));
        RFT_CHECK_INT(status, 0);
        RFT_CHECK_PTR(res, (void *)ms[expect[k]]);
    }
    errno = 1234;
    void *res = (void *)0x77;
    int status = 12345;
    RFT_CHECK(rft_ac_next(&ac, &res, &status) == NULL);
    RFT_CHECK_INT(errno, 0);
    /* Exhausted: stays exhausted. */
    errno = 1234;
    RFT_CHECK(rft_ac_next(&ac, NULL, NULL) == NULL);
    RFT_CHECK_INT(errno, 0);
    rf_as_completed_fini(&ac);
    return NULL;
}

/* The return codes themselves: 1 and the task, then 0 and NULL, once
 * every task was handed out; -EINVAL without a place for the task. */
static void *return_codes(void *arg)
{
    rf_task *t[2] = {rf_spawn(sleep_ms_return_arg, (void *)(intptr_t)1),
                     rf_spawn(sleep_ms_return_arg, (void *)(intptr_t)2)};
    rf_as_completed ac;
    RFT_CHECK_INT(rf_as_completed_init(&ac, t, 2), 0);
    RFT_CHECK_INT(rf_as_completed_next(&ac, NULL, NULL, NULL), -EINVAL);
    rf_task *d = NULL;
    RFT_CHECK_INT(rf_as_completed_next(&ac, &d, NULL, NULL), 1);
    RFT_CHECK_PTR(d, t[0]);
    RFT_CHECK_INT(rf_as_completed_next(&ac, &d, NULL, NULL), 1);
    RFT_CHECK_PTR(d, t[1]);
    RFT_CHECK_INT(rf_as_completed_next(&ac, &d, NULL, NULL), 0);
    RFT_CHECK_PTR(d, NULL);
    rf_as_completed_fini(&ac);
    RFT_CHECK_INT(rf_as_completed_next(&ac, &d, NULL, NULL), -ESRCH);
    rf_task_release(t[0]);
    rf_task_release(t[1]);
    return NULL;
}

static void test_return_codes(void **state) { rft_run(return_codes, NULL); }

static void test_completion_order(void **state) { rft_run(completion_order, NULL); }

static void *return_arg(void *arg) { return arg; }

static void *statuses_and_finished(void *arg)
{
    rf_task *t[3];
    t[0] = rf_spawn(sleep_ms_return_arg, (void *)(intptr_t)30);
    t[1] = rf_spawn(long_sleep_return_arg, (void *)0xCA);
    t[2] = rf_spawn(return_arg, (void *)0xD0);
    rf_yield(); /* t[2] has returned already; t[1] sleeps */
    RFT_CHECK(rf_done(t[2]));
    rf_as_completed ac;
    RFT_CHECK_INT(rf_as_completed_init(&ac, t, 3), 0);

    void *res = NULL;
    int status = 12345;
    /* the finished one first, at once */
    rf_stats before = rft_stats();
    rf_task *d = rft_ac_next(&ac, &res, &status);
    rf_stats after = rft_stats();
    RFT_CHECK_PTR(d, t[2]);
    RFT_CHECK_INT(status, 0);
    RFT_CHECK_PTR(res, (void *)0xD0);
    RFT_CHECK_INT(after.switches, before.switches);

    RFT_CHECK_INT(rf_cancel(t[1]), 0);
    d = rft_ac_next(&ac, &res, &status);
    RFT_CHECK_PTR(d, t[1]);
    RFT_CHECK_INT(status, -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0xCA);

    /* result and status may be NULL */
    d = rft_ac_next(&ac, NULL, NULL);
    RFT_CHECK_PTR(d, t[0]);
    errno = 1234;
    RFT_CHECK(rft_ac_next(&ac, &res, &status) == NULL);
    RFT_CHECK_INT(errno, 0);
    rf_as_completed_fini(&ac);
    return NULL;
}

static void test_statuses_and_finished(void **state)
{
    rft_run(statuses_and_finished, NULL);
}

static void *empty_set(void *arg)
{
    rf_as_completed ac;
    RFT_CHECK_INT(rf_as_completed_init(&ac, NULL, 0), 0);
    errno = 1234;
    RFT_CHECK(rft_ac_next(&ac, NULL, NULL) == NULL);
    RFT_CHECK_INT(errno, 0);
    rf_as_completed_fini(&ac);
    return NULL;
}

static void test_empty_set(void **state) { rft_run(empty_set, NULL); }

/* ---- the caller is cancelled -------------------------------------------- */

struct iter {
    rf_task *tasks[2];
    volatile int started;
    rf_task *got;
    int err;
    uint64_t waited;
};

static void *iterate(void *arg)
{
    struct iter *it = arg;
    rf_as_completed ac;
    RFT_CHECK_INT(rf_as_completed_init(&ac, it->tasks, 2), 0);
    it->started = 1;
    uint64_t t0 = rft_now();
    errno = 0;
    it->got = rft_ac_next(&ac, NULL, NULL);
    it->err = errno;
    it->waited = rft_now() - t0;
    /* Sticky: again at once. */
    errno = 0;
    RFT_CHECK(rft_ac_next(&ac, NULL, NULL) == NULL);
    RFT_CHECK_INT(errno, ECANCELED);
    rf_as_completed_fini(&ac);
    return (void *)0x17;
}

static void *caller_cancelled(void *arg)
{
    struct iter it;
    memset(&it, 0, sizeof it);
    it.tasks[0] = rf_spawn(long_sleep_return_arg, (void *)1);
    it.tasks[1] = rf_spawn(long_sleep_return_arg, (void *)2);
    rf_task *t = rf_spawn(iterate, &it);
    RFT_CHECK(rft_yield_until(&it.started, 100));
    rf_yield();
    RFT_CHECK_INT(rf_cancel(t), 0);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x17);
    RFT_CHECK(it.got == NULL);
    RFT_CHECK_INT(it.err, ECANCELED);
    RFT_CHECK(it.waited < 5 * RFT_SEC);
    /* The set is left as it was: its tasks are not cancelled. */
    RFT_CHECK(!rf_cancelled(it.tasks[0]));
    RFT_CHECK(!rf_cancelled(it.tasks[1]));
    RFT_CHECK(!rf_done(it.tasks[0]));
    rf_cancel(it.tasks[0]);
    rf_cancel(it.tasks[1]);
    RFT_CHECK_INT(rf_gather(it.tasks, 2, NULL), -ECANCELED);
    return NULL;
}

static void test_caller_cancelled(void **state) { rft_run(caller_cancelled, NULL); }

/* ---- errors -------------------------------------------------------------- */

static void *errors(void *arg)
{
    rf_task *t = rf_spawn(return_arg, NULL);
    rf_as_completed ac;
    RFT_CHECK_INT(rf_as_completed_init(NULL, &t, 1), -EINVAL);
    RFT_CHECK_INT(rf_as_completed_init(&ac, NULL, 1), -EINVAL);
    rf_task *with_null[2] = {t, NULL};
    RFT_CHECK_INT(rf_as_completed_init(&ac, with_null, 2), -EINVAL);
    rf_join(t, NULL);
    return NULL;
}

static void test_errors(void **state) { rft_run(errors, NULL); }

/* A larger set, with duplicates of sleep lengths: every task comes out once,
 * in non-decreasing order of its sleep. */
static void *large_set(void *arg)
{
    enum { N = 300 };
    rf_task **t = calloc(N, sizeof *t);
    char *seen = calloc(N, 1);
    for (intptr_t i = 0; i < N; i++)
        t[i] = rf_spawn(sleep_ms_return_arg, (void *)(intptr_t)(1 + (i % 3) * 40));
    rf_as_completed ac;
    RFT_CHECK_INT(rf_as_completed_init(&ac, t, N), 0);
    int count = 0;
    intptr_t last = 0;
    rf_task *d;
    void *res;
    while ((d = rft_ac_next(&ac, &res, NULL)) != NULL) {
        intptr_t idx = -1;
        for (intptr_t i = 0; i < N; i++)
            if (t[i] == d)
                idx = i;
        if (!RFT_CHECK(idx >= 0))
            break;
        RFT_CHECK(!seen[idx]);
        seen[idx] = 1;
        RFT_CHECK((intptr_t)res >= last);
        last = (intptr_t)res;
        count++;
    }
    RFT_CHECK_INT(errno, 0);
    RFT_CHECK_INT(count, N);
    rf_as_completed_fini(&ac);
    free(seen);
    free(t);
    return NULL;
}

/* On a virtual clock: the sleeps end in the order of their lengths
 * however long the 300 spawns take (under ThreadSanitizer, or on a loaded
 * machine, longer than the 40 ms between two lengths). */
static void test_large_set(void **state)
{
    rf_loop_opts o = {.flags = RF_LOOP_VIRTUAL_TIME};
    rft_begin();
    assert_int_equal(rf_run_opts(large_set, NULL, NULL, &o), 0);
    rft_end();
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_completion_order),
    cmocka_unit_test(test_return_codes),
    cmocka_unit_test(test_statuses_and_finished),
    cmocka_unit_test(test_empty_set),
    cmocka_unit_test(test_caller_cancelled),
    cmocka_unit_test(test_errors),
    cmocka_unit_test(test_large_set),
};

RFT_MAIN(tests)
