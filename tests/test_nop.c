/*
 * rf_nop: an IORING_OP_NOP through the path every I/O call takes. It
 * completes with 0, the NOPs of many tasks reach the kernel in a few
 * system calls, and it honours cancellation and the task's deadline like
 * any operation, leaving nothing in flight.
 */
#include "helpers.h"

static void test_outside_task(void **state) { assert_int_equal(rf_nop(), -EPERM); }

/* ---- works ---------------------------------------------------------------- */

static void *nops(void *arg)
{
    RFT_CHECK_INT(rf_nop(), 0); /* the loop's own start-up SQEs go with it */
    rf_stats s0 = rft_stats();
    for (int i = 0; i < 100; i++)
        RFT_CHECK_INT(rf_nop(), 0);
    rf_stats s1 = rft_stats();
    /* Each went through the ring and was completed. */
    RFT_CHECK_INT(s1.sqes_submitted - s0.sqes_submitted, 100);
    RFT_CHECK(s1.cqes_reaped - s0.cqes_reaped >= 100);
    RFT_CHECK_INT(s1.ops_in_flight, 0);
    return NULL;
}

static void test_nop_completes(void **state) { rft_run(nops, NULL); }

/* ---- batched -------------------------------------------------------------- */

enum { BATCH_TASKS = 1000 };

static void *one_nop(void *arg)
{
    RFT_CHECK_INT(rf_nop(), 0);
    return NULL;
}

static void *batched(void *arg)
{
    static rf_task *t[BATCH_TASKS];
    RFT_CHECK_INT(rf_nop(), 0); /* the loop's own start-up SQEs go with it */
    rf_stats s0 = rft_stats();
    for (int i = 0; i < BATCH_TASKS; i++) {
        t[i] = rf_spawn(one_nop, NULL);
        if (!RFT_CHECK(t[i] != NULL))
            return NULL;
    }
    RFT_CHECK_INT(rf_gather(t, BATCH_TASKS, NULL), 0);
    rf_stats s1 = rft_stats();
    for (int i = 0; i < BATCH_TASKS; i++)
        rf_task_release(t[i]);
    uint64_t enters = s1.enters - s0.enters;
    fprintf(stderr, "%d tasks x 1 nop: %llu enters, %llu passes\n", BATCH_TASKS,
            (unsigned long long)enters, (unsigned long long)(s1.passes - s0.passes));
    RFT_CHECK_INT(s1.sqes_submitted - s0.sqes_submitted, BATCH_TASKS);
    /* One pass gathers every task's NOP: the SQ (256 entries) is handed
     * over when full and at the pass end, then one wait reaps them. A
     * system call per NOP would be 1000. */
    RFT_CHECK(enters <= 20);
    RFT_CHECK_INT(s1.ops_in_flight, 0);
    return NULL;
}

static void test_nops_are_batched(void **state) { rft_run(batched, NULL); }

/* ---- cancellation --------------------------------------------------------- */

static volatile int g_started;

static void *nop_forever(void *arg)
{
    long *count = arg;
    g_started = 1;
    int rc;
    while ((rc = rf_nop()) == 0)
        (*count)++;
    return (void *)(intptr_t)rc;
}

static void *cancelled(void *arg)
{
    /* A cancelled task submits nothing. */
    rf_stats s0 = rft_stats();
    RFT_CHECK_INT(rf_cancel(rf_self()), 0);
    RFT_CHECK_INT(rf_nop(), -ECANCELED);
    RFT_CHECK_INT(rf_nop(), -ECANCELED);
    rf_stats s1 = rft_stats();
    RFT_CHECK_INT(s1.sqes_submitted, s0.sqes_submitted);
    return NULL;
}

static void *cancel_in_loop(void *arg)
{
    /* A task looping on NOPs is cancelled while one is in flight: it stops
     * with -ECANCELED (from that NOP or the next) and nothing is left in
     * flight. */
    long count = 0;
    g_started = 0;
    rf_task *t = rf_spawn(nop_forever, &count);
    RFT_CHECK(t != NULL);
    RFT_CHECK(rft_yield_until(&g_started, 1000));
    for (int i = 0; i < 10; i++)
        rf_yield();
    RFT_CHECK_INT(rf_cancel(t), 0);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), -ECANCELED);
    RFT_CHECK_INT((intptr_t)res, -ECANCELED);
    RFT_CHECK(count > 0);
    rf_task_release(t);
    RFT_CHECK_INT(rft_stats().ops_in_flight, 0);
    return NULL;
}

static void test_cancelled_task_submits_nothing(void **state)
{
    rft_run_rc(cancelled, NULL, NULL);
}

static void test_cancel_stops_nop_loop(void **state) { rft_run(cancel_in_loop, NULL); }

/* ---- deadline ------------------------------------------------------------- */

static void *deadline(void *arg)
{
    /* A deadline in the future: the task's deadline timer is armed by the
     * first NOP under it and goes to the kernel with it, in one
     * io_uring_enter; it stays armed (in flight) for the next ones. */
    RFT_CHECK_INT(rf_nop(), 0); /* the loop's own start-up SQEs go with it */
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() + 10 * RFT_SEC), 0);
    rf_stats s0 = rft_stats();
    RFT_CHECK_INT(rf_nop(), 0);
    rf_stats s1 = rft_stats();
    RFT_CHECK(s1.sqes_submitted - s0.sqes_submitted >= 2);
    RFT_CHECK_INT(s1.enters - s0.enters, 1);
    RFT_CHECK(s1.ops_in_flight <= 1);
    for (int i = 0; i < 10 && rft_stats().ops_in_flight != 0; i++)
        RFT_CHECK_INT(rf_nop(), 0);
    RFT_CHECK(rft_stats().ops_in_flight <= 1); /* at most the timer */
    s1 = rft_stats();
    /* Past the deadline: -ETIMEDOUT without submitting, every time. */
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() - 1), 0);
    RFT_CHECK_INT(rf_nop(), -ETIMEDOUT);
    RFT_CHECK_INT(rf_nop(), -ETIMEDOUT);
    RFT_CHECK_INT(rft_stats().sqes_submitted, s1.sqes_submitted);
    /* Cleared: NOPs work again. */
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    RFT_CHECK_INT(rf_nop(), 0);
    return NULL;
}

static void test_deadline(void **state) { rft_run(deadline, NULL); }

static void *deadline_in_loop(void *arg)
{
    /* A task looping on NOPs with a deadline 20 ms ahead stops there. */
    long count = 0;
    uint64_t t0 = rf_now_ns();
    RFT_CHECK_INT(rf_deadline_set(t0 + 20 * RFT_MS), 0);
    int rc;
    while ((rc = rf_nop()) == 0)
        count++;
    RFT_CHECK_INT(rc, -ETIMEDOUT);
    RFT_CHECK(rf_now_ns() - t0 >= 20 * RFT_MS);
    RFT_CHECK(count > 0);
    /* The deadline's timer fired: nothing is left in flight. */
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    for (int i = 0; i < 10 && rft_stats().ops_in_flight != 0; i++)
        RFT_CHECK_INT(rf_nop(), 0);
    RFT_CHECK_INT(rft_stats().ops_in_flight, 0);
    return NULL;
}

static void test_deadline_stops_nop_loop(void **state) { rft_run(deadline_in_loop, NULL); }

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_outside_task),
    cmocka_unit_test(test_nop_completes),
    cmocka_unit_test(test_nops_are_batched),
    cmocka_unit_test(test_cancelled_task_submits_nothing),
    cmocka_unit_test(test_cancel_stops_nop_loop),
    cmocka_unit_test(test_deadline),
    cmocka_unit_test(test_deadline_stops_nop_loop),
};

RFT_MAIN(tests)
