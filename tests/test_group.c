/*
 * Task groups (rf_group_*) and asyncio.wait (rf_wait): what counts as a
 * failure (rf_task_error), the first failure cancelling the rest, the
 * waiter's own cancellation, detaching at fini, the three modes of
 * rf_wait with their done/pending sets, timeouts and misuse.
 */
#include "helpers.h"

/* Sleeps arg milliseconds; returns arg, or the sleep's error as a
 * failure (RF_ERR_PTR(-ECANCELED) when cancelled). */
static void *sleep_ms(void *arg)
{
    int rc = rf_sleep((uint64_t)(uintptr_t)arg * RFT_MS);
    return rc == 0 ? arg : RF_ERR_PTR(rc);
}

/* Sleeps arg milliseconds, then fails with -EIO. */
static void *fail_after_ms(void *arg)
{
    rf_sleep((uint64_t)(uintptr_t)arg * RFT_MS);
    return RF_ERR_PTR(-EIO);
}

#define MS(n) ((void *)(uintptr_t)(n))

/* ---- rf_task_error ------------------------------------------------------- */

static void *task_error(void *arg)
{
    rf_task *ok = rf_spawn(sleep_ms, MS(0));
    rf_task *bad = rf_spawn(fail_after_ms, MS(0));
    rf_task *slow = rf_spawn(sleep_ms, MS(10000));
    RFT_CHECK_INT(rf_task_error(ok), 0); /* not returned yet */
    rf_join(ok, NULL);
    rf_join(bad, NULL);
    rf_cancel(slow);
    rf_join(slow, NULL);
    RFT_CHECK_INT(rf_task_error(ok), 0);
    RFT_CHECK_INT(rf_task_error(bad), -EIO);
    /* slow returned RF_ERR_PTR(-ECANCELED) from its sleep. */
    RFT_CHECK_INT(rf_task_error(slow), -ECANCELED);
    RFT_CHECK_INT(rf_task_error(NULL), -EINVAL);
    RFT_CHECK(!RF_IS_ERR_PTR(NULL));
    RFT_CHECK(RF_IS_ERR_PTR(RF_ERR_PTR(-1)));
    RFT_CHECK(RF_IS_ERR_PTR(RF_ERR_PTR(-4095)));
    RFT_CHECK(!RF_IS_ERR_PTR(RF_ERR_PTR(-4096)));
    rf_task_release(ok);
    rf_task_release(bad);
    rf_task_release(slow);
    return NULL;
}

static void test_task_error(void **state) { rft_run(task_error, NULL); }

/* A cancelled task that returns a normal result still failed. */
static void *ignore_cancel(void *arg)
{
    rf_sleep(10 * RFT_SEC);
    return MS(1);
}

static void *cancelled_is_failure(void *arg)
{
    rf_task *t = rf_spawn(ignore_cancel, NULL);
    rf_yield();
    rf_cancel(t);
    rf_join(t, NULL);
    RFT_CHECK_INT(rf_task_error(t), -ECANCELED);
    rf_task_release(t);
    return NULL;
}

static void test_cancelled_is_failure(void **state) { rft_run(cancelled_is_failure, NULL); }

/* ---- groups --------------------------------------------------------------- */

static void *group_ok(void *arg)
{
    rf_group g;
    RFT_CHECK_INT(rf_group_init(&g), 0);
    rf_task *t[5];
    for (int i = 0; i < 5; i++) {
        t[i] = rf_group_spawn(&g, sleep_ms, MS(i + 1), NULL);
        RFT_CHECK(t[i] != NULL);
    }
    RFT_CHECK_INT(rf_group_wait(&g), 0);
    for (int i = 0; i < 5; i++)
        RFT_CHECK(rf_done(t[i]));
    RFT_CHECK_PTR(rf_group_failed(&g), NULL);
    /* Reusable: more members, another wait. */
    RFT_CHECK(rf_group_spawn(&g, sleep_ms, MS(1), NULL) != NULL);
    RFT_CHECK_INT(rf_group_wait(&g), 0);
    RFT_CHECK_INT(rf_group_wait(&g), 0); /* nothing left: at once */
    rf_group_fini(&g);
    return NULL;
}

static void test_group_all_succeed(void **state) { rft_run(group_ok, NULL); }

static void *group_first_failure(void *arg)
{
    rf_group g;
    RFT_CHECK_INT(rf_group_init(&g), 0);
    rf_task *slow1 = rf_group_spawn(&g, sleep_ms, MS(10000), NULL);
    rf_task *bad = rf_group_spawn(&g, fail_after_ms, MS(5), NULL);
    rf_task *slow2 = rf_group_spawn(&g, sleep_ms, MS(10000), NULL);
    rf_task *bad2 = rf_group_spawn(&g, fail_after_ms, MS(20), NULL);
    uint64_t t0 = rf_now_ns();
    RFT_CHECK_INT(rf_group_wait(&g), -EIO);
    RFT_CHECK(rf_now_ns() - t0 < 5 * RFT_SEC); /* the sleepers were cut */
    RFT_CHECK_PTR(rf_group_failed(&g), bad);
    RFT_CHECK(rf_done(slow1) && rf_done(slow2) && rf_done(bad2));
    RFT_CHECK(rf_cancelled(slow1) && rf_cancelled(slow2) && rf_cancelled(bad2));
    RFT_CHECK(!rf_cancelled(bad));
    /* A failed group starts nothing more. */
    errno = 0;
    RFT_CHECK(rf_group_spawn(&g, sleep_ms, MS(1), NULL) == NULL);
    RFT_CHECK_INT(errno, ECANCELED);
    RFT_CHECK_INT(rf_group_wait(&g), -EIO);
    rf_group_fini(&g);
    return NULL;
}

static void test_group_first_failure_cancels_rest(void **state) { rft_run(group_first_failure, NULL); }

typedef struct waiter_ctx {
    rf_group *g;
    rf_task *members[3];
    int rc;
} waiter_ctx;

static void *group_waiter(void *arg)
{
    waiter_ctx *w = arg;
    for (int i = 0; i < 3; i++)
        w->members[i] = rf_group_spawn(w->g, sleep_ms, MS(10000), NULL);
    w->rc = rf_group_wait(w->g);
    for (int i = 0; i < 3; i++) /* awaited before the wait returned */
        RFT_CHECK(rf_done(w->members[i]));
    return NULL;
}

static void *group_waiter_cancelled(void *arg)
{
    rf_group g;
    RFT_CHECK_INT(rf_group_init(&g), 0);
    waiter_ctx w = {.g = &g};
    rf_task *t = rf_spawn(group_waiter, &w);
    rf_sleep(2 * RFT_MS);
    rf_cancel(t);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK_INT(w.rc, -ECANCELED);
    rf_task_release(t);
    rf_group_fini(&g);

    /* The waiter's deadline ends the group the same way. */
    RFT_CHECK_INT(rf_group_init(&g), 0);
    RFT_CHECK(rf_group_spawn(&g, sleep_ms, MS(10000), NULL) != NULL);
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() + 10 * RFT_MS), 0);
    RFT_CHECK_INT(rf_group_wait(&g), -ETIMEDOUT);
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    rf_group_fini(&g);
    return NULL;
}

static void test_group_waiter_cancelled(void **state) { rft_run(group_waiter_cancelled, NULL); }

/* A member cancelled from outside is a failure of the group. */
static void *group_member_cancelled(void *arg)
{
    rf_group g;
    RFT_CHECK_INT(rf_group_init(&g), 0);
    rf_task *a = rf_group_spawn(&g, sleep_ms, MS(10000), NULL);
    rf_task *b = rf_group_spawn(&g, sleep_ms, MS(10000), NULL);
    rf_yield();
    rf_cancel(b);
    RFT_CHECK_INT(rf_group_wait(&g), -ECANCELED);
    RFT_CHECK_PTR(rf_group_failed(&g), b);
    RFT_CHECK(rf_done(a));
    rf_group_fini(&g);
    /* rf_group_cancel: the same, from the group's owner. */
    RFT_CHECK_INT(rf_group_init(&g), 0);
    RFT_CHECK(rf_group_spawn(&g, sleep_ms, MS(10000), NULL) != NULL);
    RFT_CHECK_INT(rf_group_cancel(&g), 0);
    RFT_CHECK_INT(rf_group_wait(&g), -ECANCELED);
    rf_group_fini(&g);
    return NULL;
}

static void test_group_member_cancelled(void **state) { rft_run(group_member_cancelled, NULL); }

static void *group_fini_detaches(void *arg)
{
    rf_group g;
    RFT_CHECK_INT(rf_group_init(&g), 0);
    rf_task *t = rf_group_spawn(&g, sleep_ms, MS(10000), NULL);
    rf_task_retain(t);
    rf_yield();
    rf_group_fini(&g); /* cancels and detaches; g's memory is free */
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    rf_task_release(t);
    return NULL;
}

static void test_group_fini_detaches(void **state) { rft_run(group_fini_detaches, NULL); }

static void test_group_misuse(void **state)
{
    rf_group g;
    assert_int_equal(rf_group_init(NULL), -EINVAL);
    assert_int_equal(rf_group_init(&g), 0);
    errno = 0;
    assert_null(rf_group_spawn(&g, sleep_ms, NULL, NULL));
    assert_int_equal(errno, EPERM);
    assert_null(rf_group_spawn(&g, NULL, NULL, NULL));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(rf_group_wait(&g), -EPERM);
    assert_int_equal(rf_group_wait(NULL), -EINVAL);
    rf_group_fini(&g);
    rf_group_fini(NULL);
}

/* ---- rf_wait -------------------------------------------------------------- */

static void *wait_first_completed(void *arg)
{
    rf_task *t[3] = {rf_spawn(sleep_ms, MS(10000)), rf_spawn(sleep_ms, MS(2)),
                     rf_spawn(sleep_ms, MS(10000))};
    rf_task *done[3], *pending[3];
    size_t nd = 99, np = 99;
    RFT_CHECK_INT(rf_wait(t, 3, RF_FIRST_COMPLETED, RF_FOREVER, done, &nd,
                          pending, &np), 0);
    RFT_CHECK_INT(nd, 1);
    RFT_CHECK_INT(np, 2);
    RFT_CHECK_PTR(done[0], t[1]);
    RFT_CHECK_PTR(pending[0], t[0]);
    RFT_CHECK_PTR(pending[1], t[2]);
    /* The pending tasks are left alone. */
    RFT_CHECK(!rf_cancelled(t[0]) && !rf_done(t[0]));
    /* Already met: no wait. */
    RFT_CHECK_INT(rf_wait(t, 3, RF_FIRST_COMPLETED, 0, NULL, &nd, NULL, &np), 0);
    RFT_CHECK_INT(nd, 1);
    for (int i = 0; i < 3; i++) {
        rf_cancel(t[i]);
        rf_join(t[i], NULL);
        rf_task_release(t[i]);
    }
    return NULL;
}

static void test_wait_first_completed(void **state) { rft_run(wait_first_completed, NULL); }

static void *wait_first_exception(void *arg)
{
    rf_task *t[3] = {rf_spawn(sleep_ms, MS(1)), rf_spawn(fail_after_ms, MS(5)),
                     rf_spawn(sleep_ms, MS(10000))};
    rf_task *done[3], *pending[3];
    size_t nd, np;
    RFT_CHECK_INT(rf_wait(t, 3, RF_FIRST_EXCEPTION, RF_FOREVER, done, &nd,
                          pending, &np), 0);
    /* The success of t[0] did not end the wait; t[1]'s failure did. */
    RFT_CHECK_INT(nd, 2);
    RFT_CHECK_PTR(done[0], t[0]);
    RFT_CHECK_PTR(done[1], t[1]);
    RFT_CHECK_INT(np, 1);
    RFT_CHECK_PTR(pending[0], t[2]);
    RFT_CHECK_INT(rf_task_error(t[1]), -EIO);
    /* A cancellation counts as a failure. */
    rf_task *u[2] = {rf_spawn(sleep_ms, MS(10000)), rf_spawn(sleep_ms, MS(10000))};
    rf_yield();
    rf_cancel(u[1]);
    RFT_CHECK_INT(rf_wait(u, 2, RF_FIRST_EXCEPTION, RF_FOREVER, done, &nd,
                          pending, &np), 0);
    RFT_CHECK_INT(nd, 1);
    RFT_CHECK_PTR(done[0], u[1]);
    /* Without failures it is ALL_COMPLETED. */
    rf_task *v[2] = {rf_spawn(sleep_ms, MS(1)), rf_spawn(sleep_ms, MS(3))};
    RFT_CHECK_INT(rf_wait(v, 2, RF_FIRST_EXCEPTION, RF_FOREVER, NULL, &nd,
                          NULL, &np), 0);
    RFT_CHECK_INT(nd, 2);
    RFT_CHECK_INT(np, 0);
    rf_task *all[7] = {t[0], t[1], t[2], u[0], u[1], v[0], v[1]};
    for (int i = 0; i < 7; i++) {
        rf_cancel(all[i]);
        rf_join(all[i], NULL);
        rf_task_release(all[i]);
    }
    return NULL;
}

static void test_wait_first_exception(void **state) { rft_run(wait_first_exception, NULL); }

static void *wait_all_completed(void *arg)
{
    /* More tasks than the on-stack watchers: the allocated path. */
    rf_task *t[20];
    for (int i = 0; i < 20; i++)
        t[i] = i == 7 ? rf_spawn(fail_after_ms, MS(1)) : rf_spawn(sleep_ms, MS(i % 4));
    rf_task *done[20];
    size_t nd = 0, np = 99;
    RFT_CHECK_INT(rf_wait(t, 20, RF_ALL_COMPLETED, RF_FOREVER, done, &nd,
                          NULL, &np), 0);
    RFT_CHECK_INT(nd, 20);
    RFT_CHECK_INT(np, 0);
    for (int i = 0; i < 20; i++) {
        RFT_CHECK_PTR(done[i], t[i]);
        rf_task_release(t[i]);
    }
    return NULL;
}

static void test_wait_all_completed(void **state) { rft_run(wait_all_completed, NULL); }

static void *wait_timeout(void *arg)
{
    rf_task *t[2] = {rf_spawn(sleep_ms, MS(1)), rf_spawn(sleep_ms, MS(10000))};
    rf_task *done[2], *pending[2];
    size_t nd, np;
    /* Timeout 0 polls. */
    RFT_CHECK_INT(rf_wait(t, 2, RF_ALL_COMPLETED, 0, done, &nd, pending, &np),
                  -ETIMEDOUT);
    RFT_CHECK_INT(nd, 0);
    RFT_CHECK_INT(np, 2);
    uint64_t t0 = rf_now_ns();
    RFT_CHECK_INT(rf_wait(t, 2, RF_ALL_COMPLETED, 30 * RFT_MS, done, &nd,
                          pending, &np), -ETIMEDOUT);
    RFT_CHECK(rf_now_ns() - t0 >= 30 * RFT_MS);
    RFT_CHECK(rf_now_ns() - t0 < 5 * RFT_SEC);
    RFT_CHECK_INT(nd, 1);
    RFT_CHECK_PTR(done[0], t[0]);
    RFT_CHECK_INT(np, 1);
    RFT_CHECK_PTR(pending[0], t[1]);
    RFT_CHECK(!rf_cancelled(t[1]));
    /* The caller's deadline ends it too. */
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() + 10 * RFT_MS), 0);
    RFT_CHECK_INT(rf_wait(t, 2, RF_ALL_COMPLETED, RF_FOREVER, NULL, &nd, NULL,
                          &np), -ETIMEDOUT);
    RFT_CHECK_INT(np, 1);
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    /* A timer that did not fire is removed: once the loop has been
     * through the kernel, nothing is left in flight but t[1]'s own sleep. */
    rf_task *u[2] = {rf_spawn(sleep_ms, MS(5)), t[1]};
    RFT_CHECK_INT(rf_wait(u, 2, RF_FIRST_COMPLETED, 10 * RFT_SEC, NULL, &nd,
                          NULL, &np), 0);
    RFT_CHECK_INT(nd, 1);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(rft_stats().ops_in_flight, 1);
    rf_task_release(u[0]);
    rf_cancel(t[1]);
    rf_join(t[1], NULL);
    rf_task_release(t[0]);
    rf_task_release(t[1]);
    return NULL;
}

static void test_wait_timeout(void **state) { rft_run(wait_timeout, NULL); }

typedef struct wcancel_ctx {
    rf_task *t;
    int rc;
    size_t np;
} wcancel_ctx;

static void *wait_cancelled_body(void *arg)
{
    wcancel_ctx *c = arg;
    rf_task *set[1] = {c->t};
    c->rc = rf_wait(set, 1, RF_ALL_COMPLETED, RF_FOREVER, NULL, NULL, NULL, &c->np);
    return NULL;
}

static void *wait_cancelled(void *arg)
{
    wcancel_ctx c = {.t = rf_spawn(sleep_ms, MS(10000))};
    rf_task *w = rf_spawn(wait_cancelled_body, &c);
    rf_yield();
    rf_cancel(w);
    rf_join(w, NULL);
    RFT_CHECK_INT(c.rc, -ECANCELED);
    RFT_CHECK_INT(c.np, 1);
    RFT_CHECK(!rf_cancelled(c.t)); /* asyncio.wait does not cancel */
    rf_cancel(c.t);
    rf_join(c.t, NULL);
    rf_task_release(c.t);
    rf_task_release(w);
    return NULL;
}

static void test_wait_cancelled(void **state) { rft_run(wait_cancelled, NULL); }

static void *wait_misuse(void *arg)
{
    rf_task *t[2] = {rf_spawn(sleep_ms, MS(1)), NULL};
    RFT_CHECK_INT(rf_wait(NULL, 1, RF_ALL_COMPLETED, RF_FOREVER, NULL, NULL, NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_wait(t, 0, RF_ALL_COMPLETED, RF_FOREVER, NULL, NULL, NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_wait(t, 1, 0, RF_FOREVER, NULL, NULL, NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_wait(t, 2, RF_ALL_COMPLETED, RF_FOREVER, NULL, NULL, NULL, NULL), -EINVAL);
    t[1] = rf_self();
    RFT_CHECK_INT(rf_wait(t, 2, RF_ALL_COMPLETED, RF_FOREVER, NULL, NULL, NULL, NULL), -EDEADLK);
    rf_join(t[0], NULL);
    rf_task_release(t[0]);
    return NULL;
}

static void test_wait_misuse(void **state)
{
    rf_task *t[1] = {NULL};
    assert_int_equal(rf_wait(t, 1, RF_ALL_COMPLETED, RF_FOREVER, NULL, NULL, NULL, NULL), -EPERM);
    rft_run(wait_misuse, NULL);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_task_error),
    cmocka_unit_test(test_cancelled_is_failure),
    cmocka_unit_test(test_group_all_succeed),
    cmocka_unit_test(test_group_first_failure_cancels_rest),
    cmocka_unit_test(test_group_waiter_cancelled),
    cmocka_unit_test(test_group_member_cancelled),
    cmocka_unit_test(test_group_fini_detaches),
    cmocka_unit_test(test_group_misuse),
    cmocka_unit_test(test_wait_first_completed),
    cmocka_unit_test(test_wait_first_exception),
    cmocka_unit_test(test_wait_all_completed),
    cmocka_unit_test(test_wait_timeout),
    cmocka_unit_test(test_wait_cancelled),
    cmocka_unit_test(test_wait_misuse),
};

RFT_MAIN(tests)
