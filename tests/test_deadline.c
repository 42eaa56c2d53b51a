/*
 * The task's deadline (rf_deadline_set) on the waits of the core: sleep,
 * join, gather, wait_for, as_completed. It ends a wait with -ETIMEDOUT,
 * is sticky until moved or cleared, can be moved earlier or later while a
 * timer for it is armed, and leaves nothing in flight when the task ends.
 * (I/O operations with a deadline are tested with the I/O calls.)
 */
#include "helpers.h"

static void *sleeper(void *arg)
{
    rf_sleep((uint64_t)(uintptr_t)arg);
    return arg;
}

/* ---- outside a task ------------------------------------------------------- */

static void test_outside_task(void **state)
{
    assert_int_equal(rf_deadline_set(1), -EPERM);
    assert_int_equal(rf_deadline_get(), 0);
}

/* ---- sleep ---------------------------------------------------------------- */

static void *sleep_cut(void *arg)
{
    uint64_t t0 = rf_now_ns();
    RFT_CHECK_INT(rf_deadline_get(), 0);
    RFT_CHECK_INT(rf_deadline_set(t0 + 30 * RFT_MS), 0);
    RFT_CHECK_INT(rf_deadline_get(), t0 + 30 * RFT_MS);
    /* A sleep that would end after the deadline ends at it. */
    RFT_CHECK_INT(rf_sleep(10 * RFT_SEC), -ETIMEDOUT);
    uint64_t el = rf_now_ns() - t0;
    RFT_CHECK(el >= 30 * RFT_MS);
    RFT_CHECK(el < 5 * RFT_SEC);
    /* Sticky: past the deadline, a wait ends at once. */
    uint64_t t1 = rf_now_ns();
    RFT_CHECK_INT(rf_sleep(10 * RFT_SEC), -ETIMEDOUT);
    RFT_CHECK(rf_now_ns() - t1 < 5 * RFT_SEC);
    /* ... but a yield is not a wait. */
    RFT_CHECK_INT(rf_yield(), 0);
    /* Cleared: sleeps are whole again. */
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    RFT_CHECK_INT(rf_sleep(1 * RFT_MS), 0);
    /* A sleep that ends before the deadline is not affected. */
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() + 10 * RFT_SEC), 0);
    RFT_CHECK_INT(rf_sleep(1 * RFT_MS), 0);
    return NULL;
}

static void test_sleep_cut_by_deadline(void **state) { rft_run(sleep_cut, NULL); }

/* ---- join ----------------------------------------------------------------- */

static void *join_deadline(void *arg)
{
    rf_task *t = rf_spawn(sleeper, (void *)(uintptr_t)(200 * RFT_MS));
    RFT_CHECK(t != NULL);
    uint64_t t0 = rf_now_ns();
    rf_deadline_set(t0 + 20 * RFT_MS);
    void *res = (void *)1;
    RFT_CHECK_INT(rf_join(t, &res), -ETIMEDOUT);
    RFT_CHECK(res == (void *)1); /* untouched */
    RFT_CHECK(rf_now_ns() - t0 >= 20 * RFT_MS);
    /* rf_join does not cancel what it joined. */
    RFT_CHECK(!rf_cancelled(t));
    RFT_CHECK(!rf_done(t));
    rf_deadline_set(0);
    RFT_CHECK_INT(rf_join(t, &res), 0);
    RFT_CHECK(res == (void *)(uintptr_t)(200 * RFT_MS));
    rf_task_release(t);
    return NULL;
}

static void test_join_times_out(void **state) { rft_run(join_deadline, NULL); }

/* The timer armed for one wait serves the next ones; moving the deadline
 * later makes an early firing harmless, moving it earlier updates it. */
static void *join_moved(void *arg)
{
    uint64_t t0 = rf_now_ns();
    rf_task *a = rf_spawn(sleeper, (void *)(uintptr_t)(5 * RFT_MS));
    rf_deadline_set(t0 + 40 * RFT_MS);
    RFT_CHECK_INT(rf_join(a, NULL), 0); /* done well before */
    rf_task_release(a);

    /* Later: the armed timer fires at 40 ms, the wait goes on. */
    rf_task *b = rf_spawn(sleeper, (void *)(uintptr_t)(80 * RFT_MS));
    rf_deadline_set(t0 + 10 * RFT_SEC);
    RFT_CHECK_INT(rf_join(b, NULL), 0);
    RFT_CHECK(rf_now_ns() - t0 >= 80 * RFT_MS);
    rf_task_release(b);

    /* Earlier than the armed timer (10 s): the timer is moved. */
    rf_task *c = rf_spawn(sleeper, (void *)(uintptr_t)(5 * RFT_SEC));
    uint64_t t1 = rf_now_ns();
    rf_deadline_set(t1 + 20 * RFT_MS);
    RFT_CHECK_INT(rf_join(c, NULL), -ETIMEDOUT);
    uint64_t el = rf_now_ns() - t1;
    RFT_CHECK(el >= 20 * RFT_MS);
    RFT_CHECK(el < 4 * RFT_SEC);
    rf_cancel(c);
    rf_deadline_set(0);
    RFT_CHECK_INT(rf_join(c, NULL), -ECANCELED);
    rf_task_release(c);
    return NULL;
}

static void test_deadline_moved(void **state) { rft_run(join_moved, NULL); }

/* ---- gather and wait_for cancel what they wait for ------------------------- */

static void *gather_deadline(void *arg)
{
    rf_task *t[3];
    for (int i = 0; i < 3; i++)
        t[i] = rf_spawn(sleeper, (void *)(uintptr_t)((i + 1) * RFT_SEC));
    rf_deadline_set(rf_now_ns() + 20 * RFT_MS);
    RFT_CHECK_INT(rf_gather(t, 3, NULL), -ETIMEDOUT);
    for (int i = 0; i < 3; i++) {
        RFT_CHECK(rf_done(t[i]));
        RFT_CHECK(rf_cancelled(t[i]));
        rf_task_release(t[i]);
    }
    return NULL;
}

static void test_gather_times_out(void **state) { rft_run(gather_deadline, NULL); }

static void *wait_for_deadline(void *arg)
{
    rf_task *t = rf_spawn(sleeper, (void *)(uintptr_t)RFT_SEC);
    /* The task's own deadline comes before wait_for's timeout. */
    rf_deadline_set(rf_now_ns() + 10 * RFT_MS);
    RFT_CHECK_INT(rf_wait_for(t, 10 * RFT_SEC, NULL), -ETIMEDOUT);
    RFT_CHECK(rf_done(t));
    RFT_CHECK(rf_cancelled(t));
    rf_task_release(t);
    return NULL;
}

static void test_wait_for_times_out(void **state) { rft_run(wait_for_deadline, NULL); }

static void *as_completed_deadline(void *arg)
{
    rf_task *t[2] = {rf_spawn(sleeper, (void *)(uintptr_t)(1 * RFT_MS)),
                     rf_spawn(sleeper, (void *)(uintptr_t)(2 * RFT_SEC))};
    rf_as_completed ac;
    RFT_CHECK_INT(rf_as_completed_init(&ac, t, 2), 0);
    rf_deadline_set(rf_now_ns() + 30 * RFT_MS);
    RFT_CHECK(rft_ac_next(&ac, NULL, NULL) == t[0]);
    errno = 0;
    RFT_CHECK(rft_ac_next(&ac, NULL, NULL) == NULL);
    RFT_CHECK_INT(errno, ETIMEDOUT);
    rf_as_completed_fini(&ac);
    rf_cancel(t[1]);
    rf_task_release(t[0]);
    rf_task_release(t[1]);
    return NULL;
}

static void test_as_completed_times_out(void **state) { rft_run(as_completed_deadline, NULL); }

/* ---- nothing left behind --------------------------------------------------- */

static void *ends_with_timer(void *arg)
{
    rf_task *t = rf_spawn(sleeper, (void *)(uintptr_t)(1 * RFT_MS));
    /* Arms the deadline timer for an hour, then returns at once. */
    rf_deadline_set(rf_now_ns() + 3600 * RFT_SEC);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    return NULL;
}

static void *many_end_with_timers(void *arg)
{
    enum { N = 100 };
    rf_task *t[N];
    for (int i = 0; i < N; i++)
        t[i] = rf_spawn(ends_with_timer, NULL);
    RFT_CHECK_INT(rf_gather(t, N, NULL), 0);
    for (int i = 0; i < N; i++)
        rf_task_release(t[i]);
    /* Every timer left its kernel timeout when its task ended; the
     * timeouts removed then (beyond the few kept idle, uncounted, for
     * later timers) have their CQEs reaped by the next pass. */
    for (int i = 0; i < 10 && rft_stats().ops_in_flight != 0; i++)
        RFT_CHECK_INT(rf_nop(), 0);
    RFT_CHECK_INT(rft_stats().ops_in_flight, 0);
    return NULL;
}

static void test_timers_removed_at_task_end(void **state)
{
    uint64_t t0 = rft_now();
    rft_run(many_end_with_timers, NULL);
    assert_true(rft_now() - t0 < 30 * RFT_SEC);
}

/* A deadline is one timer for the task, not one per operation: 100
 * operations under it submit 100 SQEs and the timer's one (a timeout
 * shared with other timers may even save that), and a deadline moved
 * between them arms one more. */
static void *ops_under_deadline(void *arg)
{
    enum { N = 100 };
    rf_deadline_set(rf_now_ns() + 60 * RFT_SEC);
    uint64_t s0 = rft_stats().sqes_submitted;
    for (int i = 0; i < N; i++)
        RFT_CHECK_INT(rf_nop(), 0);
    uint64_t s1 = rft_stats().sqes_submitted;
    RFT_CHECK(s1 - s0 >= N && s1 - s0 <= N + 1);
    rf_deadline_set(rf_now_ns() + 30 * RFT_SEC);
    for (int i = 0; i < N; i++)
        RFT_CHECK_INT(rf_nop(), 0);
    uint64_t s2 = rft_stats().sqes_submitted;
    RFT_CHECK(s2 - s1 >= N && s2 - s1 <= N + 1);
    /* The timer leaves its timeout when the task ends: nothing waits. */
    return NULL;
}

static void *deadline_costs_one_timer(void *arg)
{
    rf_task *t = rf_spawn(ops_under_deadline, NULL);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    RFT_CHECK_INT(rft_stats().ops_in_flight, 0);
    return NULL;
}

static void test_one_timer_per_task(void **state)
{
    rft_run(deadline_costs_one_timer, NULL);
}

/* A spawned task does not inherit the deadline. */
static void *child_no_deadline(void *arg)
{
    RFT_CHECK_INT(rf_deadline_get(), 0);
    RFT_CHECK_INT(rf_sleep(30 * RFT_MS), 0);
    return NULL;
}

static void *parent_with_deadline(void *arg)
{
    rf_deadline_set(rf_now_ns() + 5 * RFT_MS);
    rf_task *c = rf_spawn(child_no_deadline, NULL);
    RFT_CHECK_INT(rf_join(c, NULL), -ETIMEDOUT);
    rf_deadline_set(0);
    RFT_CHECK_INT(rf_join(c, NULL), 0);
    rf_task_release(c);
    return NULL;
}

static void test_not_inherited(void **state) { rft_run(parent_with_deadline, NULL); }

/* Cancellation still wins over a deadline that has not passed. */
static void *cancelled_with_deadline(void *arg)
{
    rf_deadline_set(rf_now_ns() + 10 * RFT_SEC);
    RFT_CHECK_INT(rf_sleep(10 * RFT_SEC), -ECANCELED);
    return NULL;
}

static void *cancel_beats_deadline(void *arg)
{
    rf_task *t = rf_spawn(cancelled_with_deadline, NULL);
    rf_sleep(5 * RFT_MS);
    rf_cancel(t);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    rf_task_release(t);
    return NULL;
}

static void test_cancel_with_deadline(void **state) { rft_run(cancel_beats_deadline, NULL); }

/* An idle timeout renewed before every operation (rf_deadline_set(now +
 * 60 s), as servers do: the far deadline's timer is set on a coarse grid
 * (time.c, deadline_timer_end: d / 512 rounded to a power of two, 67 ms
 * here), so 2,000 renewals share a kernel timeout per grid step instead
 * of arming one (and removing the last) every timer slack. Counted in
 * SQEs: besides the 2,000 NOPs, at most a timeout and its removal per
 * 33 ms of the run, whatever the machine's speed. */
static void *renewed_idle_timeout(void *arg)
{
    (void)arg;
    rf_stats s0 = rft_stats();
    uint64_t t0 = rft_now();
    for (int i = 0; i < 2000; i++) {
        rf_deadline_set(rf_now_ns() + 60 * RFT_SEC);
        RFT_CHECK_INT(rf_nop(), 0);
    }
    uint64_t ms = (rft_now() - t0) / RFT_MS;
    rf_stats s1 = rft_stats();
    uint64_t extra = s1.sqes_submitted - s0.sqes_submitted - 2000;
    fprintf(stderr, "renewed deadline: %llu timer SQEs in %llu ms\n",
            (unsigned long long)extra, (unsigned long long)ms);
    RFT_CHECK(extra <= 2 * (ms / 33) + 8);
    rf_deadline_set(0);
    return NULL;
}

static void test_renewed_far_deadline_shares_timer(void **state)
{
    rft_run(renewed_idle_timeout, NULL);
}

/* A far deadline's timer may fire late (up to d / 512), never early. */
static void *far_deadline_not_early(void *arg)
{
    (void)arg;
    uint64_t d = rf_now_ns() + 600 * RFT_MS; /* grid: 2^20 ns */
    rf_deadline_set(d);
    RFT_CHECK_INT(rf_sleep(10 * RFT_SEC), -ETIMEDOUT);
    RFT_CHECK(rf_now_ns() >= d);
    rf_deadline_set(0);
    return NULL;
}

static void test_far_deadline_not_early(void **state)
{
    rft_run(far_deadline_not_early, NULL);
}

/* An idle timeout renewed with small steps keeps its armed timer (time.c,
 * deadline_timer_keeps), which must still end the wait at or after the
 * last deadline set, never at the one it was armed for. 300 ms away, the
 * grid step is 2^19 ns: 200 renewals 10 us apart cross it at least three
 * times, whatever the machine's speed, so both ways are taken (kept, and
 * moved past the timer's instant). */
static void *renewed_deadline_not_early(void *arg)
{
    (void)arg;
    uint64_t base = rf_now_ns() + 300 * RFT_MS, d = 0;
    for (uint64_t i = 0; i < 200; i++) {
        d = base + i * 10 * RF_NSEC_PER_USEC;
        RFT_CHECK_INT(rf_deadline_set(d), 0);
        RFT_CHECK_INT(rf_nop(), 0);
    }
    RFT_CHECK_INT(rf_sleep(10 * RFT_SEC), -ETIMEDOUT);
    RFT_CHECK(rf_now_ns() >= d);
    rf_deadline_set(0);
    return NULL;
}

static void test_renewed_deadline_not_early(void **state)
{
    rft_run(renewed_deadline_not_early, NULL);
}

/* A deadline moved later than the instant its armed timer fires at: the
 * timer is moved, and the wait goes on past the old deadline. */
static void *moved_past_its_timer(void *arg)
{
    (void)arg;
    uint64_t d1 = rf_now_ns() + 300 * RFT_MS;
    RFT_CHECK_INT(rf_deadline_set(d1), 0);
    RFT_CHECK_INT(rf_nop(), 0); /* armed for d1: 2^19 ns + a slack late */
    uint64_t d2 = d1 + 100 * RFT_MS;
    RFT_CHECK_INT(rf_deadline_set(d2), 0);
    RFT_CHECK_INT(rf_sleep(10 * RFT_SEC), -ETIMEDOUT);
    RFT_CHECK(rf_now_ns() >= d2);
    rf_deadline_set(0);
    return NULL;
}

static void test_moved_past_its_timer(void **state)
{
    rft_run(moved_past_its_timer, NULL);
}

/* The largest deadline is "never": a wait under it is not cut (the shared
 * timeout's end, deadline + slack, once wrapped around to 50 us). */
static void *never_deadline(void *arg)
{
    (void)arg;
    rf_deadline_set(UINT64_MAX);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(rf_nop(), 0);
    RFT_CHECK(rf_deadline_get() == UINT64_MAX);
    rf_deadline_set(0);
    return NULL;
}

static void test_never_deadline(void **state) { rft_run(never_deadline, NULL); }

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_outside_task),
    cmocka_unit_test(test_sleep_cut_by_deadline),
    cmocka_unit_test(test_join_times_out),
    cmocka_unit_test(test_deadline_moved),
    cmocka_unit_test(test_gather_times_out),
    cmocka_unit_test(test_wait_for_times_out),
    cmocka_unit_test(test_as_completed_times_out),
    cmocka_unit_test(test_timers_removed_at_task_end),
    cmocka_unit_test(test_one_timer_per_task),
    cmocka_unit_test(test_not_inherited),
    cmocka_unit_test(test_cancel_with_deadline),
    cmocka_unit_test(test_renewed_far_deadline_shares_timer),
    cmocka_unit_test(test_far_deadline_not_early),
    cmocka_unit_test(test_never_deadline),
    cmocka_unit_test(test_renewed_deadline_not_early),
    cmocka_unit_test(test_moved_past_its_timer),
};

RFT_MAIN(tests)
