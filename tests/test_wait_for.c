/*
 * rf_wait_for: timeout fires, task finishes first, task finishes exactly at
 * the deadline (results never lost, never leaked), errors.
 */
#include "helpers.h"
/* White box: the idle timeouts kept for reuse (l->nidle). */
#include "../runtime/internal.h"

static void *sleep_arg_ns_return_malloc(void *arg)
{
    uint64_t ns = (uint64_t)(uintptr_t)arg;
    int *out = malloc(sizeof *out);
    *out = rf_sleep(ns);
    return out;
}

static volatile int g_finished;

static void *sleep_long_then_linger(void *arg)
{
    int rc = rf_sleep(10 * RFT_SEC);
    RFT_CHECK_INT(rc, -ECANCELED);
    /* Take a while to unwind after the cancellation: wait_for must wait. */
    for (int i = 0; i < 5; i++)
        rf_yield();
    g_finished = 1;
    return arg;
}

static void *timeout_fires(void *arg)
{
    g_finished = 0;
    rf_task *t = rf_spawn(sleep_long_then_linger, (void *)0x7E);
    void *res = NULL;
    uint64_t t0 = rft_now();
    RFT_CHECK_INT(rf_wait_for(t, 20 * RFT_MS, &res), -ETIMEDOUT);
    uint64_t waited = rft_now() - t0;
    RFT_CHECK(waited >= 20 * RFT_MS);
    RFT_CHECK(waited < 5 * RFT_SEC);
    RFT_CHECK(rf_done(t));          /* it has fully returned */
    RFT_CHECK_INT(g_finished, 1);
    RFT_CHECK(rf_cancelled(t));
    RFT_CHECK_PTR(res, (void *)0x7E); /* its result is delivered */
    /* rf_join agrees afterwards. */
    res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), -ECANCELED);
    RFT_CHECK_PTR(res, (void *)0x7E);
    /* The caller is not cancelled by its timeout. */
    RFT_CHECK(!rf_cancelled(rf_self()));
    RFT_CHECK_INT(rf_sleep(1), 0);
    rf_stats s = rft_stats();
    RFT_CHECK_INT(s.ops_in_flight, 0);
    RFT_CHECK_INT(s.tasks_alive, 1);
    return NULL;
}

static void test_timeout_fires(void **state) { rft_run(timeout_fires, NULL); }

static void *finishes_first(void *arg)
{
    rf_task *t = rf_spawn(sleep_arg_ns_return_malloc, (void *)(uintptr_t)(2 * RFT_MS));
    void *res = NULL;
    uint64_t t0 = rft_now();
    RFT_CHECK_INT(rf_wait_for(t, 10 * RFT_SEC, &res), 0);
    RFT_CHECK(rft_now() - t0 < 5 * RFT_SEC);
    RFT_CHECK(rf_done(t));
    RFT_CHECK(!rf_cancelled(t));
    if (RFT_CHECK(res != NULL)) {
        RFT_CHECK_INT(*(int *)res, 0);
        free(res);
    }
    /* The timeout left nothing in flight behind it once the loop has been
     * through the kernel (its removal is not waited for). */
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    rf_stats s = rft_stats();
    RFT_CHECK_INT(s.ops_in_flight, 0);

    /* Already finished: 0 and the result, at once. */
    rf_stats before = rft_stats();
    res = NULL;
    RFT_CHECK_INT(rf_wait_for(t, 10 * RFT_SEC, &res), 0);
    RFT_CHECK(res != NULL); /* same pointer again (already freed; not used) */
    rf_stats after = rft_stats();
    RFT_CHECK_INT(after.switches, before.switches);
    rf_task_release(t);
    return NULL;
}

static void test_finishes_before_timeout(void **state) { rft_run(finishes_first, NULL); }

static void *zero_timeout(void *arg)
{
    g_finished = 0;
    rf_task *t = rf_spawn(sleep_long_then_linger, (void *)0x70);
    void *res = NULL;
    RFT_CHECK_INT(rf_wait_for(t, 0, &res), -ETIMEDOUT);
    RFT_CHECK(rf_done(t));
    RFT_CHECK_PTR(res, (void *)0x70);
    return NULL;
}

static void test_zero_timeout(void **state) { rft_run(zero_timeout, NULL); }

/*
 * The task finishes at the same instant as the timeout: either outcome is
 * allowed, but the result must reach the caller in both (ASan's leak check
 * catches a result that got lost).
 */
static void *exact_deadline(void *arg)
{
    int ok = 0, timedout = 0;
    static const uint64_t durations[] = {50 * RF_NSEC_PER_USEC, 200 * RF_NSEC_PER_USEC,
                                         1 * RFT_MS};
    for (int i = 0; i < 600; i++) {
        uint64_t ns = durations[i % 3];
        rf_task *t = rf_spawn(sleep_arg_ns_return_malloc, (void *)(uintptr_t)ns);
        if (!RFT_CHECK(t != NULL))
            break;
        if (i % 2)
            rf_yield(); /* half of them start sleeping before the timer */
        void *res = NULL;
        int rc = rf_wait_for(t, ns, &res);
        RFT_CHECK(rc == 0 || rc == -ETIMEDOUT);
        RFT_CHECK(rf_done(t));
        if (!RFT_CHECK(res != NULL)) {
            fprintf(stderr, "iteration %d (%llu ns): rc %d, result lost\n", i,
                    (unsigned long long)ns, rc);
        } else {
            int slept = *(int *)res;
            RFT_CHECK(slept == 0 || slept == -ECANCELED);
            if (rc == 0)
                RFT_CHECK_INT(slept, 0); /* finished: it was not cut short */
            free(res);
        }
        if (rc == 0)
            ok++;
        else
            timedout++;
        rf_task_release(t);
    }
    RFT_CHECK_INT(rf_sleep(1 * RFT_MS), 0); /* timeouts removed go out */
    rf_stats s = rft_stats();
    RFT_CHECK_INT(s.ops_in_flight, 0);
    RFT_CHECK_INT(s.tasks_alive, 1);
    printf("exact deadline: %d finished in time, %d timed out\n", ok, timedout);
    return NULL;
}

static void test_exact_deadline(void **state) { rft_run(exact_deadline, NULL); }

/* Many wait_for at once, half timing out. The margins are wide (1 ms of
 * work against a 2 s timeout) so that a loaded machine cannot turn a
 * finisher into a timeout. */
static void *many_wait_for_child(void *arg)
{
    intptr_t i = (intptr_t)arg;
    rf_task *t = rf_spawn(sleep_arg_ns_return_malloc,
                          (void *)(uintptr_t)(i % 2 ? 1 * RFT_MS : 600 * RFT_SEC));
    void *res = NULL;
    int rc = rf_wait_for(t, 2 * RFT_SEC, &res);
    RFT_CHECK_INT(rc, i % 2 ? 0 : -ETIMEDOUT);
    if (RFT_CHECK(res != NULL)) {
        RFT_CHECK_INT(*(int *)res, i % 2 ? 0 : -ECANCELED);
        free(res);
    }
    rf_task_release(t);
    return NULL;
}

static void *many_wait_for(void *arg)
{
    enum { N = 500 };
    rf_task *t[N];
    for (intptr_t i = 0; i < N; i++)
        t[i] = rf_spawn(many_wait_for_child, (void *)i);
    uint64_t t0 = rft_now();
    RFT_CHECK_INT(rf_gather(t, N, NULL), 0);
    RFT_CHECK(rft_now() - t0 < 30 * RFT_SEC);
    for (int i = 0; i < N; i++)
        rf_task_release(t[i]);
    return NULL;
}

static void test_many_wait_for(void **state) { rft_run(many_wait_for, NULL); }

/* t cancelled by a third party: wait_for reports it like rf_join. */
static void *cancelled_elsewhere(void *arg)
{
    g_finished = 0;
    rf_task *t = rf_spawn(sleep_long_then_linger, (void *)0x71);
    rf_yield();
    rf_cancel(t);
    void *res = NULL;
    RFT_CHECK_INT(rf_wait_for(t, 10 * RFT_SEC, &res), -ECANCELED);
    RFT_CHECK(rf_done(t));
    RFT_CHECK_PTR(res, (void *)0x71);
    return NULL;
}

static void test_target_cancelled_elsewhere(void **state)
{
    rft_run(cancelled_elsewhere, NULL);
}

static void *errors(void *arg)
{
    void *res = (void *)0x77;
    RFT_CHECK_INT(rf_wait_for(NULL, RFT_MS, &res), -EINVAL);
    RFT_CHECK_INT(rf_wait_for(rf_self(), RFT_MS, &res), -EDEADLK);
    RFT_CHECK_PTR(res, (void *)0x77);
    RFT_CHECK(!rf_cancelled(rf_self()));
    return NULL;
}

static void test_errors(void **state) { rft_run(errors, NULL); }

/* The timers of many wait_for calls share kernel timeouts, as sleeps do:
 * 1,000 tasks that each bound a 10 s sleep by 20 ms need a kernel timeout
 * per timer slack (50 us) of the time their calls span, for the sleeps
 * and for the timeouts, not a timeout and a cancellation each. */
#define SHARED_N 1000

static uint64_t g_first_call, g_last_call;

static void *shared_timer_child(void *arg)
{
    (void)arg;
    rf_task *t = rf_spawn(sleep_arg_ns_return_malloc, (void *)(uintptr_t)(10 * RFT_SEC));
    void *res = NULL;
    uint64_t now = rf_now_ns();
    if (!g_first_call)
        g_first_call = now;
    g_last_call = now;
    RFT_CHECK_INT(rf_wait_for(t, 20 * RFT_MS, &res), -ETIMEDOUT);
    if (RFT_CHECK(res != NULL)) {
        RFT_CHECK_INT(*(int *)res, -ECANCELED);
        free(res);
    }
    rf_task_release(t);
    return NULL;
}

static void *shared_timers(void *arg)
{
    (void)arg;
    rf_task **t = calloc(SHARED_N, sizeof *t);
    if (!RFT_CHECK(t != NULL))
        return NULL;
    g_first_call = g_last_call = 0;
    rf_stats s0 = rft_stats();
    for (int i = 0; i < SHARED_N; i++)
        t[i] = rf_spawn(shared_timer_child, NULL);
    RFT_CHECK_INT(rf_gather(t, SHARED_N, NULL), 0);
    rf_stats s1 = rft_stats();
    uint64_t sqes = s1.sqes_submitted - s0.sqes_submitted;
    /* The children's sleeps begin in the pass after the calls: allow the
     * span twice over for them, and a few for the passes' boundaries. */
    uint64_t slack = (uint64_t)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    uint64_t windows = (g_last_call - g_first_call) / slack + 2;
    printf("%d wait_for timeouts over %.2f ms: %llu SQEs (bound %llu)\n", SHARED_N,
           (double)(g_last_call - g_first_call) / 1e6, (unsigned long long)sqes,
           (unsigned long long)(3 * windows + 10));
    /* The bound follows the span: on a machine slow enough (a sanitizer
     * build under load) that each call takes longer than the slack, no
     * two timers can share, and that is right. */
    RFT_CHECK(sqes <= 3 * windows + 10);
    for (int i = 0; i < SHARED_N; i++)
        rf_task_release(t[i]);
    free(t);
    return NULL;
}

static void test_shared_timers(void **state) { rft_run(shared_timers, NULL); }

/* A task that finishes first costs wait_for no more than a join: the timer
 * leaves without a trip through the ring. */
static void *yield_once(void *arg)
{
    rf_yield();
    return arg;
}

static void *no_extra_switch(void *arg)
{
    (void)arg;
    rf_task *a = rf_spawn(yield_once, NULL);
    rf_stats j0 = rft_stats();
    RFT_CHECK_INT(rf_join(a, NULL), 0);
    rf_stats j1 = rft_stats();
    rf_task *b = rf_spawn(yield_once, NULL);
    rf_stats w0 = rft_stats();
    RFT_CHECK_INT(rf_wait_for(b, 10 * RFT_SEC, NULL), 0);
    rf_stats w1 = rft_stats();
    /* (Its timer's SQE goes to the kernel with the pass's others.) */
    RFT_CHECK_INT(w1.switches - w0.switches, j1.switches - j0.switches);
    rf_task_release(a);
    rf_task_release(b);
    return NULL;
}

static void test_no_extra_switch(void **state) { rft_run(no_extra_switch, NULL); }

/* A timeout whose last timer left stays armed, idle, for the next ones
 * that end near it: 1,000 wait_for calls in a row, each on a task that
 * finishes first, arm a kernel timeout per slack's worth of calls. */
static void *reuse_body(void *arg)
{
    (void)arg;
    rf_stats s0 = rft_stats();
    uint64_t t0 = rf_now_ns();
    for (int i = 0; i < 1000; i++) {
        rf_task *t = rf_spawn(yield_once, NULL);
        RFT_CHECK_INT(rf_wait_for(t, 10 * RFT_SEC, NULL), 0);
        rf_task_release(t);
    }
    uint64_t span = rf_now_ns() - t0;
    rf_stats s1 = rft_stats();
    uint64_t sqes = s1.sqes_submitted - s0.sqes_submitted;
    /* A timeout armed (and later removed) per timer slack of the time the
     * calls took, against two SQEs per call without the reuse. */
    uint64_t windows = span / (uint64_t)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) + 2;
    printf("1000 wait_for, task first, over %.2f ms: %llu SQEs (bound %llu)\n",
           (double)span / 1e6, (unsigned long long)sqes,
           (unsigned long long)(2 * windows + 10));
    RFT_CHECK(sqes <= 2 * windows + 10); /* (as in shared_timers) */
    /* At most RF_IDLE_BUCKETS (16) are kept (older ones are being
     * removed, and their removals may still be in flight): timeouts 1 s apart,
     * far more than a slack, each leave a bucket of their own. */
    rf_loop *l = rf_loop_current();
    for (int i = 0; i < 40; i++) {
        rf_task *t = rf_spawn(yield_once, NULL);
        RFT_CHECK_INT(rf_wait_for(t, (uint64_t)(10 + i) * RFT_SEC, NULL), 0);
        rf_task_release(t);
        RFT_CHECK(l->nidle <= 16);
    }
    RFT_CHECK(l->nidle >= 1);
    /* A sleep removes them first: nothing is left but the sleep's own. */
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(l->nidle, 0);
    RFT_CHECK_INT(rft_stats().ops_in_flight, 0);
    return NULL;
}

static void test_idle_timeouts_reused(void **state) { rft_run(reuse_body, NULL); }

/* A loop freed with idle 10 s timeouts in its ring removes them; it does
 * not wait for them (a bound of 5 s against a hang, not a timing). */
static void *leave_idle(void *arg)
{
    (void)arg;
    rf_task *t = rf_spawn(yield_once, NULL);
    RFT_CHECK_INT(rf_wait_for(t, 10 * RFT_SEC, NULL), 0);
    rf_task_release(t);
    RFT_CHECK_INT(rf_loop_current()->nidle, 1);
    return NULL;
}

static void test_idle_timeouts_at_free(void **state)
{
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    rft_begin();
    assert_int_equal(rf_loop_run_until_complete(l, leave_idle, NULL, NULL), 0);
    rft_end();
    uint64_t t0 = rft_now();
    assert_int_equal(rf_loop_free(l), 0);
    assert_true(rft_now() - t0 < 5 * RFT_SEC);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_timeout_fires),
    cmocka_unit_test(test_finishes_before_timeout),
    cmocka_unit_test(test_zero_timeout),
    cmocka_unit_test(test_exact_deadline),
    cmocka_unit_test(test_many_wait_for),
    cmocka_unit_test(test_shared_timers),
    cmocka_unit_test(test_no_extra_switch),
    cmocka_unit_test(test_idle_timeouts_reused),
    cmocka_unit_test(test_idle_timeouts_at_free),
    cmocka_unit_test(test_target_cancelled_elsewhere),
    cmocka_unit_test(test_errors),
};

RFT_MAIN(tests)
