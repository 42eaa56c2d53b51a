/*
 * Loops: rf_run, rf_loop_new / run_until_complete / run_forever / stop /
 * free, rf_loop_current, thread ownership (-EXDEV), deadlock detection
 * (-EDEADLK), and that nothing leaks (fds, threads).
 */
#include "helpers.h"
#include <alloca.h>

#include <pthread.h>

static rf_loop *new_loop(void)
{
    rf_loop *loop = NULL;
    int rc = rf_loop_new(&loop, NULL);
    assert_int_equal(rc, 0);
    assert_non_null(loop);
    return loop;
}

/* ---- rf_run ------------------------------------------------------------ */

static void *return_arg_plus_one(void *arg)
{
    RFT_CHECK(rf_loop_current() != NULL);
    RFT_CHECK(rf_self() != NULL);
    return (char *)arg + 1;
}

static void test_run_returns_result(void **state)
{
    char buf[4];
    void *res = rft_run(return_arg_plus_one, buf);
    assert_ptr_equal(res, buf + 1);
    /* result may be NULL */
    rft_begin();
    assert_int_equal(rf_run(return_arg_plus_one, buf, NULL), 0);
    rft_end();
    /* Outside any task again afterwards. */
    assert_null(rf_loop_current());
    assert_null(rf_self());
}

static void test_run_null_main(void **state)
{
    void *res = (void *)0x1;
    assert_int_equal(rf_run(NULL, NULL, &res), -EINVAL);
    assert_int_equal(rf_run(NULL, NULL, NULL), -EINVAL);
}

static void *nested_run(void *arg)
{
    void *res = (void *)0x77;
    RFT_CHECK_INT(rf_run(return_arg_plus_one, NULL, &res), -EBUSY);
    RFT_CHECK_PTR(res, (void *)0x77); /* untouched */
    return (void *)1;
}

static void test_run_inside_task_ebusy(void **state)
{
    assert_ptr_equal(rft_run(nested_run, NULL), (void *)1);
}

static void *sleepy_child(void *arg)
{
    rf_sleep(5 * RFT_MS);
    return NULL;
}

static void *spawn_some_and_sleep(void *arg)
{
    for (int i = 0; i < 50; i++)
        RFT_CHECK(rf_spawn(sleepy_child, NULL) != NULL);
    rf_sleep(1 * RFT_MS);
    return NULL;
}

/* rf_run leaves no fd, thread or mapping-count growth behind. */
static void test_run_no_fd_or_thread_leak(void **state)
{
    /* Warm up once (lazy library initialisation is not a leak). */
    rft_run(spawn_some_and_sleep, NULL);
    int fds = rft_count_fds();
    int threads = rft_count_threads();
    for (int i = 0; i < 20; i++)
        rft_run(spawn_some_and_sleep, NULL);
    assert_int_equal(rft_count_fds(), fds);
    assert_int_equal(rft_count_threads(), threads);

    for (int i = 0; i < 20; i++) {
        rf_loop *loop = new_loop();
        assert_int_equal(rf_loop_free(loop), 0);
    }
    assert_int_equal(rft_count_fds(), fds);
    assert_int_equal(rft_count_threads(), threads);
}

/* ---- rf_loop_new ------------------------------------------------------- */

/* Uses arg bytes of its stack, one write a page from the top down. */
static void *touch_deep_stack(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    volatile char *p = alloca(n);
    for (size_t i = n; i >= 4096; i -= 4096)
        p[i - 1] = 1;
    p[0] = 1;
    return (void *)(uintptr_t)p[0];
}

static void test_loop_new_bad_args(void **state)
{
    int fds = rft_count_fds();
    assert_int_equal(rf_loop_new(NULL, NULL), -EINVAL);
    rf_loop_opts o;
    memset(&o, 0, sizeof o);
    assert_int_equal(rf_loop_new(NULL, &o), -EINVAL);

    /* A default stack below the minimum is a bad size. */
    rf_loop *loop = NULL;
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET;
    o.default_stack_size = 1024;
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);

    /* A CQ smaller than the SQ is a bad size. */
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET;
    o.sq_entries = 256;
    o.cq_entries = 16;
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);

    /* A refused loop leaves nothing open behind it. */
    assert_int_equal(rft_count_fds(), fds);
}

/* Every size rf_loop_new takes is checked against its limit, once, with
 * -EINVAL: a default stack of SIZE_MAX used to be accepted and crashed the
 * first spawn (its page rounding overflowed). At the limits, it works. */
static void test_loop_new_sizes_checked(void **state)
{
    static const size_t bad_stacks[] = {
        SIZE_MAX, SIZE_MAX - 4095, (size_t)2 << 30, RF_MAX_STACK_SIZE + 1,
        RF_MIN_STACK_SIZE - 1};
    rf_loop *loop = NULL;
    rf_loop_opts o;
    for (size_t i = 0; i < sizeof bad_stacks / sizeof bad_stacks[0]; i++) {
        memset(&o, 0, sizeof o);
        o.flags = RF_LOOP_QUIET;
        o.default_stack_size = bad_stacks[i];
        assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
        assert_null(loop);
    }
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET;
    o.mailbox_capacity = RF_MAILBOX_MAX + 1u;
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
    o.mailbox_capacity = UINT32_MAX;
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET;
    o.sq_entries = RF_RING_MAX_ENTRIES + 1;
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
    o.sq_entries = UINT32_MAX; /* 4 x sq would wrap */
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET;
    o.cq_entries = 2 * RF_RING_MAX_ENTRIES + 1;
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET;
    o.spin_ns = RF_SPIN_MAX_NS + 1;
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
    o.spin_ns = UINT32_MAX;
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET;
    o.wake_batch_us = RF_WAKE_BATCH_MAX_US + 1;
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
    o.wake_batch_us = UINT32_MAX;
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
    assert_null(loop);
    o.wake_batch_us = RF_WAKE_BATCH_MAX_US; /* the most, and the flag */
    o.flags = RF_LOOP_QUIET | RF_LOOP_WAKE_AT_ONCE;
    assert_int_equal(rf_loop_new(&loop, &o), 0);
    assert_int_equal(rf_loop_free(loop), 0);
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET | 0x8000u; /* a flag that does not exist */
    assert_int_equal(rf_loop_new(&loop, &o), -EINVAL);
    assert_null(loop);

    /* At the limits: the largest stack and mailbox, the largest SQ with
     * the default CQ (4 x sq would be above the CQ's limit: it is capped). */
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET;
    o.default_stack_size = RF_MAX_STACK_SIZE;
    o.mailbox_capacity = RF_MAILBOX_MAX;
    o.sq_entries = RF_RING_MAX_ENTRIES;
    assert_int_equal(rf_loop_new(&loop, &o), 0);
    assert_int_equal(rf_loop_free(loop), 0);

    /* A large default that is within the limit is honoured by spawn. */
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET;
    o.default_stack_size = (8u << 20) - 4095; /* rounded up to pages */
    assert_int_equal(rf_loop_new(&loop, &o), 0);
    void *res = NULL;
    assert_int_equal(rf_loop_run_until_complete(loop, touch_deep_stack,
                                                (void *)(uintptr_t)(7u << 20),
                                                &res),
                     0);
    assert_ptr_equal(res, (void *)(uintptr_t)1);
    assert_int_equal(rf_loop_free(loop), 0);
}

static void test_loop_new_opts_and_current(void **state)
{
    assert_null(rf_loop_current());
    rf_loop_opts o;
    memset(&o, 0, sizeof o);
    o.sq_entries = 8;
    o.cq_entries = 64;
    o.default_stack_size = 64 * 1024;
    rf_loop *loop = NULL;
    assert_int_equal(rf_loop_new(&loop, &o), 0);
    assert_non_null(loop);
    /* Creating a loop does not make it "current": that is only inside a
     * task. */
    assert_null(rf_loop_current());
    rf_stats s;
    assert_int_equal(rf_loop_stats(loop, &s), 0);
    assert_int_equal(s.tasks_alive, 0);
    assert_int_equal(rf_loop_free(loop), 0);
    assert_int_equal(rf_loop_free(NULL), 0);
}

/* ---- run_until_complete ------------------------------------------------ */

static rf_loop *g_loop;
static volatile int g_bg_ticks;
static volatile int g_bg_stop;
static rf_task *g_bg;

static void *background(void *arg)
{
    while (!g_bg_stop) {
        if (rf_sleep(1 * RFT_MS) != 0)
            break;
        g_bg_ticks++;
    }
    return (void *)0xB6;
}

static void *first_run(void *arg)
{
    RFT_CHECK_PTR(rf_loop_current(), g_loop);
    g_bg = rf_spawn(background, NULL);
    RFT_CHECK(g_bg != NULL);
    while (g_bg_ticks < 3)
        rf_sleep(1 * RFT_MS);
    return (void *)0x1111;
}

static void *second_run(void *arg)
{
    int before = g_bg_ticks;
    RFT_CHECK(!rf_done(g_bg)); /* still alive from the first run */
    while (g_bg_ticks < before + 3)
        rf_sleep(1 * RFT_MS);
    g_bg_stop = 1;
    void *res = NULL;
    RFT_CHECK_INT(rf_join(g_bg, &res), 0);
    RFT_CHECK_PTR(res, (void *)0xB6);
    return (void *)0x2222;
}

static void test_run_until_complete_twice(void **state)
{
    rft_begin();
    g_loop = new_loop();
    g_bg_ticks = 0;
    g_bg_stop = 0;
    void *res = NULL;
    assert_int_equal(rf_loop_run_until_complete(g_loop, first_run, NULL, &res), 0);
    assert_ptr_equal(res, (void *)0x1111);
    assert_null(rf_loop_current());
    /* The background task is alive but not running between runs. */
    assert_false(rf_done(g_bg));
    rf_stats s;
    assert_int_equal(rf_loop_stats(g_loop, &s), 0);
    assert_int_equal(s.tasks_alive, 1);
    int ticks = g_bg_ticks;
    usleep(20 * 1000);
    assert_int_equal(g_bg_ticks, ticks);

    res = NULL;
    assert_int_equal(rf_loop_run_until_complete(g_loop, second_run, NULL, &res), 0);
    assert_ptr_equal(res, (void *)0x2222);
    assert_true(rf_done(g_bg));
    assert_true(g_bg_ticks >= ticks + 3);
    rf_task_release(g_bg);
    assert_int_equal(rf_loop_free(g_loop), 0);
    rft_end();
}

static void test_run_until_complete_bad_args(void **state)
{
    rf_loop *loop = new_loop();
    void *res = (void *)0x5;
    assert_int_equal(rf_loop_run_until_complete(NULL, return_arg_plus_one, NULL, &res), -EINVAL);
    assert_int_equal(rf_loop_run_until_complete(loop, NULL, NULL, &res), -EINVAL);
    assert_ptr_equal(res, (void *)0x5);
    assert_int_equal(rf_loop_run_forever(NULL), -EINVAL);
    assert_int_equal(rf_loop_stop(NULL), -EINVAL);
    assert_int_equal(rf_loop_free(loop), 0);
}

static void *self_cancel_return_5(void *arg)
{
    RFT_CHECK_INT(rf_cancel(rf_self()), 0);
    RFT_CHECK_INT(rf_sleep(RFT_SEC), -ECANCELED);
    return (void *)5;
}

static void test_run_until_complete_cancelled(void **state)
{
    rft_begin();
    rf_loop *loop = new_loop();
    void *res = NULL;
    assert_int_equal(rf_loop_run_until_complete(loop, self_cancel_return_5, NULL, &res),
                     -ECANCELED);
    assert_ptr_equal(res, (void *)5);
    assert_int_equal(rf_loop_free(loop), 0);
    rft_end();
}

static void *reenter_loop(void *arg)
{
    rf_loop *loop = rf_loop_current();
    RFT_CHECK_PTR(loop, g_loop);
    RFT_CHECK_INT(rf_loop_run_until_complete(loop, return_arg_plus_one, NULL, NULL), -EBUSY);
    RFT_CHECK_INT(rf_loop_run_forever(loop), -EBUSY);
    /* Freeing the loop from inside one of its tasks: refused, nothing freed. */
    RFT_CHECK_INT(rf_loop_free(loop), -EBUSY);
    RFT_CHECK_INT(rf_sleep(1 * RFT_MS), 0);
    RFT_CHECK_PTR(rf_loop_current(), loop);
    return (void *)7;
}

static void test_loop_reentry_ebusy(void **state)
{
    rft_begin();
    g_loop = new_loop();
    void *res = NULL;
    assert_int_equal(rf_loop_run_until_complete(g_loop, reenter_loop, NULL, &res), 0);
    assert_ptr_equal(res, (void *)7);
    assert_int_equal(rf_loop_free(g_loop), 0);
    rft_end();
}

static void *free_from_rf_run_task(void *arg)
{
    RFT_CHECK_INT(rf_loop_free(rf_loop_current()), -EBUSY);
    return (void *)3;
}

static void test_loop_free_inside_rf_run_ebusy(void **state)
{
    assert_ptr_equal(rft_run(free_from_rf_run_task, NULL), (void *)3);
}

/* ---- run_forever / stop ------------------------------------------------ */

static volatile int g_stopped_at_tick;
static volatile int g_long_finished;

static void *stopper(void *arg)
{
    rf_loop *loop = rf_loop_current();
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0);
    RFT_CHECK_INT(rf_loop_stop(loop), 0);
    g_stopped_at_tick = 1;
    return (void *)0x5709;
}

static void *long_sleeper(void *arg)
{
    int rc = rf_sleep(10 * RFT_SEC);
    RFT_CHECK_INT(rc, -ECANCELED);
    g_long_finished = 1;
    return NULL;
}

static void *cancel_and_join(void *arg)
{
    rf_task *t = arg;
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    return NULL;
}

static void test_run_forever_stop(void **state)
{
    rft_begin();
    rf_loop *loop = new_loop();
    g_stopped_at_tick = 0;
    g_long_finished = 0;
    rf_task *s = rf_loop_spawn(loop, stopper, NULL, NULL);
    rf_task *l = rf_loop_spawn(loop, long_sleeper, NULL, NULL);
    assert_non_null(s);
    assert_non_null(l);
    uint64_t t0 = rft_now();
    assert_int_equal(rf_loop_run_forever(loop), 0);
    assert_true(rft_now() - t0 < 5 * RFT_SEC);
    assert_int_equal(g_stopped_at_tick, 1);
    assert_true(rf_done(s));
    /* The long sleeper stays alive across the stop... */
    assert_false(rf_done(l));
    assert_int_equal(g_long_finished, 0);
    /* ...and can be dealt with in a later run. */
    assert_int_equal(rf_loop_run_until_complete(loop, cancel_and_join, l, NULL), 0);
    assert_true(rf_done(l));
    assert_int_equal(g_long_finished, 1);
    void *res = NULL;
    assert_int_equal(rf_join(s, &res), -EPERM); /* outside a task */
    rf_task_release(s);
    rf_task_release(l);
    assert_int_equal(rf_loop_free(loop), 0);
    rft_end();
}

static void test_run_forever_empty_deadlock(void **state)
{
    /* Nothing can ever call rf_loop_stop: every task (none) is waiting and
     * nothing is in flight. */
    rf_loop *loop = new_loop();
    assert_int_equal(rf_loop_run_forever(loop), -EDEADLK);
    assert_int_equal(rf_loop_free(loop), 0);
}

/* ---- rf_loop_free with live tasks -------------------------------------- */

static volatile int g_free_started, g_free_finished, g_free_rc_ok;
static volatile int g_never_ran_started, g_never_ran_rc_ok;

static void *free_victim(void *arg)
{
    g_free_started++;
    int rc = rf_sleep(10 * RFT_SEC);
    if (rc == -ECANCELED)
        g_free_rc_ok++;
    /* Sticky: another wait returns at once. */
    if (rf_sleep(10 * RFT_SEC) == -ECANCELED)
        g_free_rc_ok++;
    g_free_finished++;
    return NULL;
}

static void *never_ran(void *arg)
{
    g_never_ran_started++;
    if (rf_sleep(10 * RFT_SEC) == -ECANCELED)
        g_never_ran_rc_ok++;
    return NULL;
}

static void *start_victims(void *arg)
{
    for (int i = 0; i < 10; i++)
        RFT_CHECK(rf_spawn(free_victim, NULL) != NULL);
    rf_sleep(2 * RFT_MS); /* they are all asleep now */
    RFT_CHECK_INT(g_free_started, 10);
    return NULL;
}

static void test_loop_free_cancels_live_tasks(void **state)
{
    rft_begin();
    g_free_started = g_free_finished = g_free_rc_ok = 0;
    g_never_ran_started = g_never_ran_rc_ok = 0;
    int fds = rft_count_fds();
    rf_loop *loop = new_loop();
    assert_int_equal(rf_loop_run_until_complete(loop, start_victims, NULL, NULL), 0);
    /* One more that was spawned but never got to run. */
    rf_task *nr = rf_loop_spawn(loop, never_ran, NULL, NULL);
    assert_non_null(nr);
    assert_int_equal(g_free_finished, 0);
    uint64_t t0 = rft_now();
    assert_int_equal(rf_loop_free(loop), 0);
    assert_true(rft_now() - t0 < 5 * RFT_SEC);
    assert_int_equal(g_free_finished, 10);
    assert_int_equal(g_free_rc_ok, 20);
    /* fn always runs, even if the task is cancelled before it starts. */
    assert_int_equal(g_never_ran_started, 1);
    assert_int_equal(g_never_ran_rc_ok, 1);
    assert_int_equal(rft_count_fds(), fds);
    rft_end();
}

/* ---- rf_loop_current / rf_self ----------------------------------------- */

static void *check_current(void *arg)
{
    RFT_CHECK_PTR(rf_loop_current(), arg);
    RFT_CHECK(rf_self() != NULL);
    return NULL;
}

static void test_loop_current(void **state)
{
    rft_begin();
    assert_null(rf_loop_current());
    assert_null(rf_self());
    rf_loop *loop = new_loop();
    assert_null(rf_loop_current());
    assert_int_equal(rf_loop_run_until_complete(loop, check_current, loop, NULL), 0);
    assert_null(rf_loop_current());
    assert_int_equal(rf_loop_free(loop), 0);
    assert_null(rf_loop_current());
    rft_end();
}

/* ---- other threads: -EXDEV --------------------------------------------- */

struct xthread {
    rf_loop *loop;
    rf_task *task;
    int run_forever, run_until, stop, free_, spawn_errno, cancel;
    int join, wait_for, gather, ac_init;
    rf_task *spawned;
};

static void *xdev_in_other_loop(void *arg)
{
    struct xthread *x = arg;
    void *res = (void *)0x99;
    x->join = rf_join(x->task, &res);
    x->wait_for = rf_wait_for(x->task, RFT_MS, &res);
    x->gather = rf_gather(&x->task, 1, NULL);
    rf_as_completed ac;
    x->ac_init = rf_as_completed_init(&ac, &x->task, 1);
    if (x->ac_init == 0)
        rf_as_completed_fini(&ac);
    x->cancel = rf_cancel(x->task);
    RFT_CHECK_PTR(res, (void *)0x99);
    /* rf_loop_spawn onto a loop of another thread, from a task. */
    errno = 0;
    rf_task *t = rf_loop_spawn(x->loop, return_arg_plus_one, NULL, NULL);
    RFT_CHECK(t == NULL);
    RFT_CHECK_INT(errno, EXDEV);
    return NULL;
}

static void *other_thread(void *arg)
{
    struct xthread *x = arg;
    x->run_forever = rf_loop_run_forever(x->loop);
    x->run_until = rf_loop_run_until_complete(x->loop, return_arg_plus_one, NULL, NULL);
    x->stop = rf_loop_stop(x->loop);
    x->free_ = rf_loop_free(x->loop);
    errno = 0;
    x->spawned = rf_loop_spawn(x->loop, return_arg_plus_one, NULL, NULL);
    x->spawn_errno = errno;
    /* A loop of this thread, whose task touches the other loop's task. */
    int rc = rf_run(xdev_in_other_loop, x, NULL);
    if (rc != 0)
        x->join = 1000 + rc;
    return NULL;
}

static void test_other_thread_exdev(void **state)
{
    rft_begin();
    struct xthread x;
    memset(&x, 0, sizeof x);
    x.loop = new_loop();
    x.task = rf_loop_spawn(x.loop, return_arg_plus_one, NULL, NULL);
    assert_non_null(x.task);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, other_thread, &x), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(x.run_forever, -EXDEV);
    assert_int_equal(x.run_until, -EXDEV);
    assert_int_equal(x.stop, -EXDEV);
    assert_int_equal(x.free_, -EXDEV);
    assert_null(x.spawned);
    assert_int_equal(x.spawn_errno, EXDEV);
    assert_int_equal(x.join, -EXDEV);
    assert_int_equal(x.wait_for, -EXDEV);
    assert_int_equal(x.gather, -EXDEV);
    assert_int_equal(x.ac_init, -EXDEV);
    assert_int_equal(x.cancel, -EXDEV);
    rft_end();
    /* The loop is intact for its owner. */
    assert_false(rf_cancelled(x.task));
    assert_false(rf_done(x.task));
    assert_int_equal(rf_loop_run_until_complete(x.loop, return_arg_plus_one, NULL, NULL), 0);
    assert_true(rf_done(x.task));
    assert_int_equal(rf_loop_free(x.loop), 0);
}

/* ---- -EDEADLK ---------------------------------------------------------- */

static volatile int g_dl_finished;

static void *join_arg(void *arg)
{
    rf_task *other = arg;
    rf_join(other, NULL);
    g_dl_finished++;
    return NULL;
}

static void *main_joins_task_that_joins_main(void *arg)
{
    rf_task *t = rf_spawn(join_arg, rf_self());
    RFT_CHECK(t != NULL);
    rf_join(t, NULL);
    g_dl_finished++;
    return NULL;
}

static void test_deadlock_main_joins_joiner(void **state)
{
    g_dl_finished = 0;
    uint64_t t0 = rft_now();
    assert_int_equal(rft_run_rc(main_joins_task_that_joins_main, NULL, NULL), -EDEADLK);
    assert_true(rft_now() - t0 < 10 * RFT_SEC);
    /* rf_run cancels and awaits every task before it returns. */
    assert_int_equal(g_dl_finished, 2);
}

static rf_task *g_a, *g_b;

static void *join_b(void *arg)
{
    rf_yield(); /* let b start too */
    rf_join(g_b, NULL);
    g_dl_finished++;
    return NULL;
}

static void *join_a(void *arg)
{
    rf_join(g_a, NULL);
    g_dl_finished++;
    return NULL;
}

static void *main_joins_cycle(void *arg)
{
    g_a = rf_spawn(join_b, NULL);
    g_b = rf_spawn(join_a, NULL);
    RFT_CHECK(g_a && g_b);
    rf_join(g_a, NULL);
    g_dl_finished++;
    return NULL;
}

static void test_deadlock_two_tasks_join_each_other(void **state)
{
    g_dl_finished = 0;
    assert_int_equal(rft_run_rc(main_joins_cycle, NULL, NULL), -EDEADLK);
    assert_int_equal(g_dl_finished, 3);
}

static void test_deadlock_run_until_complete_and_forever(void **state)
{
    rft_begin();
    g_dl_finished = 0;
    rf_loop *loop = new_loop();
    assert_int_equal(rf_loop_run_until_complete(loop, main_joins_task_that_joins_main, NULL, NULL),
                     -EDEADLK);
    assert_int_equal(rf_loop_free(loop), 0);
    assert_int_equal(g_dl_finished, 2);

    /* run_forever with two tasks joining each other. */
    g_dl_finished = 0;
    loop = new_loop();
    g_a = rf_loop_spawn(loop, join_b, NULL, NULL);
    g_b = rf_loop_spawn(loop, join_a, NULL, NULL);
    assert_non_null(g_a);
    assert_non_null(g_b);
    assert_int_equal(rf_loop_run_forever(loop), -EDEADLK);
    assert_int_equal(rf_loop_free(loop), 0);
    assert_int_equal(g_dl_finished, 2);
    rft_end();
}

/* A task waiting on a sleep is not a deadlock, even if main waits for it. */
static void *join_sleeper(void *arg)
{
    rf_task *t = rf_spawn(sleepy_child, NULL);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    return (void *)1;
}

static void test_no_false_deadlock(void **state)
{
    assert_ptr_equal(rft_run(join_sleeper, NULL), (void *)1);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_run_returns_result),
    cmocka_unit_test(test_run_null_main),
    cmocka_unit_test(test_run_inside_task_ebusy),
    cmocka_unit_test(test_run_no_fd_or_thread_leak),
    cmocka_unit_test(test_loop_new_bad_args),
    cmocka_unit_test(test_loop_new_sizes_checked),
    cmocka_unit_test(test_loop_new_opts_and_current),
    cmocka_unit_test(test_run_until_complete_twice),
    cmocka_unit_test(test_run_until_complete_bad_args),
    cmocka_unit_test(test_run_until_complete_cancelled),
    cmocka_unit_test(test_loop_reentry_ebusy),
    cmocka_unit_test(test_loop_free_inside_rf_run_ebusy),
    cmocka_unit_test(test_run_forever_stop),
    cmocka_unit_test(test_run_forever_empty_deadlock),
    cmocka_unit_test(test_loop_free_cancels_live_tasks),
    cmocka_unit_test(test_loop_current),
    cmocka_unit_test(test_other_thread_exdev),
    cmocka_unit_test(test_deadlock_main_joins_joiner),
    cmocka_unit_test(test_deadlock_two_tasks_join_each_other),
    cmocka_unit_test(test_deadlock_run_until_complete_and_forever),
    cmocka_unit_test(test_no_false_deadlock),
};

RFT_MAIN(tests)
