/*
 * Virtual time (RF_LOOP_VIRTUAL_TIME): the clock starts at 0, jumps to the
 * next timer when nothing real is in flight, stands still while something
 * real is, and fires timers of one instant in the order they were armed.
 * Every expected time below is exact: nothing here depends on the speed
 * of the machine.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define SEC RF_NSEC_PER_SEC

static void vrun(rf_fn body, void *arg)
{
    rf_loop_opts o = {.flags = RF_LOOP_VIRTUAL_TIME};
    rft_begin();
    int rc = rf_run_opts(body, arg, NULL, &o);
    if (rc != 0)
        fprintf(stderr, "rf_run_opts returned %d (%s)\n", rc, rf_strerror(rc));
    assert_int_equal(rc, 0);
    rft_end();
}

/* ---- the clock ------------------------------------------------------------ */

static void *hour_sleeper(void *arg)
{
    RFT_CHECK_INT(rf_sleep(3600 * SEC), 0);
    RFT_CHECK_INT(rf_now_ns(), 3600 * SEC);
    return arg;
}

#define SLEEPERS RFT_ALIVE_CAP(10000)
static void *many_body(void *arg)
{
    (void)arg;
    RFT_CHECK_INT(rf_now_ns(), 0);
    rf_task **t = calloc(SLEEPERS, sizeof(*t));
    for (int i = 0; i < SLEEPERS; i++)
        if (!RFT_CHECK((t[i] = rf_spawn(hour_sleeper, (void *)(intptr_t)i))))
            break;
    for (int i = 0; i < SLEEPERS && t[i]; i++) {
        void *res = NULL;
        RFT_CHECK_INT(rf_join(t[i], &res), 0);
        RFT_CHECK_INT((intptr_t)res, i);
        rf_task_release(t[i]);
    }
    RFT_CHECK_INT(rf_now_ns(), 3600 * SEC);
    free(t);
    return NULL;
}

/* Ten thousand tasks (RFT_ALIVE_CAP) sleep an hour: the clock reads
 * exactly 3600 s. */
static void test_hour_of_sleepers(void **state) { vrun(many_body, NULL); }

/* ---- order ---------------------------------------------------------------- */

static int g_order[16];
static int g_norder;

static void *record_after(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    int id = (int)(v & 0xff);
    uint64_t pre = (v >> 8) * SEC, ns = 3 * SEC - pre;
    if (pre)
        RFT_CHECK_INT(rf_sleep(pre), 0);
    RFT_CHECK_INT(rf_sleep(ns), 0); /* all end at 3 s */
    RFT_CHECK_INT(rf_now_ns(), 3 * SEC);
    g_order[g_norder++] = id;
    return NULL;
}

/* Timers due at one instant fire in the order they were armed: task i
 * arms its 3-second end at second pre(i), so the arming order is by pre,
 * then by spawn order; not by spawn order alone. */
static void *order_body(void *arg)
{
    (void)arg;
    static const int pre[8] = {2, 0, 1, 0, 2, 1, 0, 2};
    static const int expect[8] = {1, 3, 6, 2, 5, 0, 4, 7};
    rf_task *t[8];
    g_norder = 0;
    for (int i = 0; i < 8; i++)
        t[i] = rf_spawn(record_after,
                        (void *)(((uintptr_t)pre[i] << 8) | (uintptr_t)i));
    for (int i = 0; i < 8; i++) {
        RFT_CHECK_INT(rf_join(t[i], NULL), 0);
        rf_task_release(t[i]);
    }
    RFT_CHECK_INT(g_norder, 8);
    for (int i = 0; i < 8; i++)
        RFT_CHECK_INT(g_order[i], expect[i]);
    return NULL;
}

static void test_same_instant_in_arming_order(void **state)
{
    vrun(order_body, NULL);
}

/* Timers of one instant, most of them stopped before it comes: the rest
 * still fire in arming order, each once, and timers armed after the stops
 * come after them. 4 of every 5 are stopped, the last 300 first, then the
 * first 100, both in arming order: the holes make the bucket's array of
 * timers compact itself (time.c) while some of the first 100 are still
 * to stop, and a stop that used a slot from before the compaction would
 * clear a timer still armed, whose sleeper would never wake. */
#define HOLES_N 400
#define HOLES_FRONT 100
#define HOLES_LATE 40
static int g_holes_order[HOLES_N + HOLES_LATE];
static int g_holes_n;

static void *holes_sleeper(void *arg)
{
    int rc = rf_sleep(5 * SEC); /* all armed at 0: they end at 5 s */
    if (rc == 0) {
        RFT_CHECK_INT(rf_now_ns(), 5 * SEC);
        g_holes_order[g_holes_n++] = (int)(intptr_t)arg;
    } else {
        RFT_CHECK_INT(rc, -ECANCELED);
    }
    return NULL;
}

static void *holes_late(void *arg)
{
    RFT_CHECK_INT(rf_sleep(5 * SEC - rf_now_ns()), 0); /* armed late */
    RFT_CHECK_INT(rf_now_ns(), 5 * SEC);
    g_holes_order[g_holes_n++] = (int)(intptr_t)arg;
    return NULL;
}

static void *holes_body(void *arg)
{
    (void)arg;
    rf_task *t[HOLES_N + HOLES_LATE];
    g_holes_n = 0;
    for (int i = 0; i < HOLES_N; i++)
        t[i] = rf_spawn(holes_sleeper, (void *)(intptr_t)i);
    RFT_CHECK_INT(rf_yield(), 0); /* every sleeper armed its timer */
    for (int i = HOLES_FRONT; i < HOLES_N + HOLES_FRONT; i++) {
        int k = i % HOLES_N; /* the last 300, then the first 100 */
        if (k % 5 != 0)
            RFT_CHECK_INT(rf_cancel(t[k]), 0);
    }
    RFT_CHECK_INT(rf_sleep(SEC), 0); /* the cancelled ones end */
    for (int i = HOLES_N; i < HOLES_N + HOLES_LATE; i++)
        t[i] = rf_spawn(holes_late, (void *)(intptr_t)i);
    for (int i = 0; i < HOLES_N + HOLES_LATE; i++) {
        RFT_CHECK_INT(rf_join(t[i], NULL),
                      i < HOLES_N && i % 5 != 0 ? -ECANCELED : 0);
        rf_task_release(t[i]);
    }
    RFT_CHECK_INT(g_holes_n, HOLES_N / 5 + HOLES_LATE);
    for (int k = 0; k < HOLES_N / 5; k++)
        RFT_CHECK_INT(g_holes_order[k], 5 * k);
    for (int k = 0; k < HOLES_LATE; k++)
        RFT_CHECK_INT(g_holes_order[HOLES_N / 5 + k], HOLES_N + k);
    return NULL;
}

static void test_same_instant_after_stops(void **state)
{
    vrun(holes_body, NULL);
}

/* A deadline and a sleep that end at one instant: the one armed first
 * wins. rf_sleep arms its own timer before the wait begins, and the wait
 * arms the task's deadline: the sleep ends normally at exactly 5 s, and
 * the deadline, fired in the same instant, ends the next wait at once. */
static void *deadline_body(void *arg)
{
    (void)arg;
    RFT_CHECK_INT(rf_deadline_set(5 * SEC), 0);
    RFT_CHECK_INT(rf_sleep(5 * SEC), 0);
    RFT_CHECK_INT(rf_now_ns(), 5 * SEC);
    RFT_CHECK_INT(rf_sleep(1), -ETIMEDOUT);
    RFT_CHECK_INT(rf_now_ns(), 5 * SEC);
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    /* A deadline in the middle of a longer sleep. */
    RFT_CHECK_INT(rf_deadline_set(7 * SEC), 0);
    RFT_CHECK_INT(rf_sleep(100 * SEC), -ETIMEDOUT);
    RFT_CHECK_INT(rf_now_ns(), 7 * SEC);
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    return NULL;
}

static void test_deadline_and_sleep(void **state) { vrun(deadline_body, NULL); }

/* A deadline moved later by a nanosecond, after its timer is armed: under
 * virtual time every timer is exact, so the wait ends at the new deadline,
 * not at the instant the timer was first armed for (time.c,
 * deadline_timer_keeps). */
static void *renewed_deadline_body(void *arg)
{
    (void)arg;
    RFT_CHECK_INT(rf_deadline_set(60 * SEC), 0);
    RFT_CHECK_INT(rf_nop(), 0); /* arms the deadline's timer */
    for (uint64_t i = 1; i <= 100; i++) {
        RFT_CHECK_INT(rf_deadline_set(60 * SEC + i), 0);
        RFT_CHECK_INT(rf_nop(), 0);
    }
    RFT_CHECK_INT(rf_sleep(100 * SEC), -ETIMEDOUT);
    RFT_CHECK_INT(rf_now_ns(), 60 * SEC + 100);
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    return NULL;
}

static void test_renewed_deadline_exact(void **state)
{
    vrun(renewed_deadline_body, NULL);
}

/* A timeout of 0 at the virtual clock's first instant: its deadline, 0 ns
 * from now, is 0, which for a deadline means "none"; the wait must still
 * be bounded (it was not, and waited for the task's end). */
static void *sleeper_5s(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)rf_sleep(5 * SEC);
}

static void *zero_timeout_wait_for_body(void *arg)
{
    (void)arg;
    rf_task *t = rf_spawn(sleeper_5s, NULL);
    RFT_CHECK(t != NULL);
    RFT_CHECK_INT(rf_wait_for(t, 0, NULL), -ETIMEDOUT); /* t cancelled */
    RFT_CHECK(rf_now_ns() < SEC);
    rf_task_release(t);
    return NULL;
}

static void *zero_timeout_wait_body(void *arg)
{
    (void)arg;
    rf_task *w[1] = {rf_spawn(sleeper_5s, NULL)};
    RFT_CHECK(w[0] != NULL);
    size_t nd = 0, np = 0;
    RFT_CHECK_INT(rf_wait(w, 1, RF_FIRST_COMPLETED, 0, NULL, &nd, NULL, &np),
                  -ETIMEDOUT);
    RFT_CHECK(nd == 0 && np == 1);
    RFT_CHECK(rf_now_ns() < SEC);
    RFT_CHECK_INT(rf_cancel(w[0]), 0);
    RFT_CHECK_INT(rf_join(w[0], NULL), -ECANCELED);
    rf_task_release(w[0]);
    return NULL;
}

static void test_zero_timeout_at_start(void **state)
{
    vrun(zero_timeout_wait_for_body, NULL);
    vrun(zero_timeout_wait_body, NULL);
}

static void *sleep_then(void *arg)
{
    int rc = rf_sleep((uint64_t)(uintptr_t)arg);
    return (void *)(intptr_t)(rc ? rc : 42);
}

/* rf_wait_for(t, 1 s) over a task that sleeps exactly 1 s: both timers
 * fire at 1 s, in the order they were armed. Spawned just before, t has
 * not run when the wait arms its timer: the wait's fires first, so the
 * wait times out, -ETIMEDOUT; t's wake is already queued, so its sleep
 * ends normally and the result it returns is still delivered. Given a
 * turn first, t arms its sleep first and returns in that instant, before
 * the wait sees its timer: 0. */
static void *wait_for_body(void *arg)
{
    (void)arg;
    void *res = NULL;
    rf_task *t = rf_spawn(sleep_then, (void *)(uintptr_t)SEC);
    RFT_CHECK_INT(rf_wait_for(t, SEC, &res), -ETIMEDOUT);
    RFT_CHECK_INT((intptr_t)res, 42);
    RFT_CHECK_INT(rf_now_ns(), SEC);
    rf_task_release(t);
    t = rf_spawn(sleep_then, (void *)(uintptr_t)SEC);
    RFT_CHECK_INT(rf_yield(), 0);
    res = NULL;
    RFT_CHECK_INT(rf_wait_for(t, SEC, &res), 0);
    RFT_CHECK_INT((intptr_t)res, 42);
    RFT_CHECK_INT(rf_now_ns(), 2 * SEC);
    rf_task_release(t);
    return NULL;
}

static void test_wait_for_at_its_timeout(void **state)
{
    vrun(wait_for_body, NULL);
}

/* A cancellation made by a task the clock woke: the victim's hour-long
 * sleep ends -ECANCELED at 5 s, and the clock does not jump to the hour. */
static void *canceller(void *arg)
{
    RFT_CHECK_INT(rf_sleep(5 * SEC), 0);
    RFT_CHECK_INT(rf_cancel((rf_task *)arg), 0);
    return NULL;
}

static void *victim(void *arg)
{
    (void)arg;
    RFT_CHECK_INT(rf_sleep(3600 * SEC), -ECANCELED);
    RFT_CHECK_INT(rf_now_ns(), 5 * SEC);
    return NULL;
}

static void *cancel_body(void *arg)
{
    (void)arg;
    rf_task *v = rf_spawn(victim, NULL);
    rf_task *c = rf_spawn(canceller, v);
    RFT_CHECK_INT(rf_join(v, NULL), -ECANCELED); /* asked, so reported */
    RFT_CHECK_INT(rf_join(c, NULL), 0);
    RFT_CHECK_INT(rf_now_ns(), 5 * SEC);
    rf_task_release(v);
    rf_task_release(c);
    return NULL;
}

static void test_cancel_during_advance(void **state) { vrun(cancel_body, NULL); }

/* ---- what stops the clock ---------------------------------------------- */

static int g_seq;
static int g_sleeper_seen, g_io_seen;

static void *short_sleeper(void *arg)
{
    (void)arg;
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(rf_now_ns(), RFT_MS);
    g_sleeper_seen = ++g_seq;
    return NULL;
}

static void *real_nap(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 20 * 1000 * 1000}; /* 20 ms of real time */
    nanosleep(&ts, NULL);
    return (void *)(uintptr_t)7;
}

/* An offloaded call in flight holds the clock: the sleeper's 1 ms (of
 * virtual time) does not end during the call's 20 ms of real time. */
static void *offload_body(void *arg)
{
    (void)arg;
    g_seq = 0;
    rf_task *s = rf_spawn(short_sleeper, NULL);
    void *res = NULL;
    RFT_CHECK_INT(rf_to_thread(real_nap, NULL, &res), 0);
    RFT_CHECK_INT((intptr_t)res, 7);
    RFT_CHECK_INT(rf_now_ns(), 0);
    g_io_seen = ++g_seq;
    RFT_CHECK_INT(rf_join(s, NULL), 0);
    rf_task_release(s);
    RFT_CHECK_INT(g_io_seen, 1);
    RFT_CHECK_INT(g_sleeper_seen, 2);
    RFT_CHECK_INT(rf_now_ns(), RFT_MS);
    return NULL;
}

static void test_offload_freezes_clock(void **state)
{
    vrun(offload_body, NULL);
}

static void *late_writer(void *arg)
{
    int fd = *(int *)arg;
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    (void)!write(fd, "x", 1);
    return NULL;
}

/* A read in the ring holds the clock the same way: the pipe's writer is a
 * plain thread that writes after 20 ms of real time. */
static void *io_body(void *arg)
{
    (void)arg;
    int p[2];
    if (!RFT_CHECK_INT(pipe(p), 0))
        return NULL;
    pthread_t th;
    pthread_create(&th, NULL, late_writer, &p[1]);
    g_seq = 0;
    rf_task *s = rf_spawn(short_sleeper, NULL);
    char c = 0;
    RFT_CHECK_INT(rf_read(p[0], &c, 1, -1), 1);
    RFT_CHECK_INT(rf_now_ns(), 0);
    g_io_seen = ++g_seq;
    RFT_CHECK_INT(rf_join(s, NULL), 0);
    rf_task_release(s);
    RFT_CHECK_INT(g_io_seen, 1);
    RFT_CHECK_INT(g_sleeper_seen, 2);
    pthread_join(th, NULL);
    close(p[0]);
    close(p[1]);
    return NULL;
}

static void test_io_freezes_clock(void **state) { vrun(io_body, NULL); }

/* autojump_ns: a read nobody will ever answer is in flight, so the clock
 * would wait for it; with an autojump of 5 ms (real) it moves on to the
 * sleeper's hour anyway. */
static void *never_read(void *arg)
{
    char c;
    RFT_CHECK_INT(rf_read(*(int *)arg, &c, 1, -1), -ECANCELED);
    return NULL;
}

static void *autojump_body(void *arg)
{
    (void)arg;
    int p[2];
    if (!RFT_CHECK_INT(pipe(p), 0))
        return NULL;
    rf_task *r = rf_spawn(never_read, &p[0]);
    RFT_CHECK_INT(rf_sleep(3600 * SEC), 0);
    RFT_CHECK_INT(rf_now_ns(), 3600 * SEC);
    RFT_CHECK(!rf_done(r)); /* still reading */
    RFT_CHECK_INT(rf_cancel(r), 0);
    RFT_CHECK_INT(rf_join(r, NULL), -ECANCELED);
    rf_task_release(r);
    close(p[0]);
    close(p[1]);
    return NULL;
}

static void test_autojump(void **state)
{
    rf_loop_opts o = {.flags = RF_LOOP_VIRTUAL_TIME,
                      .autojump_ns = 5 * RFT_MS};
    rft_begin();
    int rc = rf_run_opts(autojump_body, NULL, NULL, &o);
    if (rc == -EOPNOTSUPP) {
        rft_end();
        skip(); /* a kernel without IORING_FEAT_EXT_ARG */
    }
    assert_int_equal(rc, 0);
    rft_end();
    /* Only with a virtual clock. */
    rf_loop *l = NULL;
    o.flags = RF_LOOP_QUIET;
    assert_int_equal(rf_loop_new(&l, &o), -EINVAL);
    assert_null(l);
}

/* The stall detector keeps real time: an hour of virtual sleep is no
 * stall (the loop is idle, and it takes no real time), and a task that
 * blocks the thread for 100 ms of real time is one, with the virtual
 * clock standing still meanwhile. */
static int g_stalls;
static uint64_t g_stall_held;

static void count_stall(const rf_stall_info *info, void *user)
{
    (void)user;
    if (info->ended) {
        __atomic_add_fetch(&g_stalls, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&g_stall_held, info->held_ns, __ATOMIC_RELAXED);
    }
}

static void *wait_stall_report(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 1000 * 1000};
    for (int i = 0; i < 10000 && !__atomic_load_n(&g_stalls, __ATOMIC_RELAXED);
         i++)
        nanosleep(&ts, NULL);
    return NULL;
}

static void *stall_body(void *arg)
{
    (void)arg;
    RFT_CHECK_INT(rf_loop_stall_detector(rf_loop_current(), 20, count_stall,
                                         NULL),
                  0);
    RFT_CHECK_INT(rf_sleep(3600 * SEC), 0);
    RFT_CHECK_INT(__atomic_load_n(&g_stalls, __ATOMIC_RELAXED), 0);
    /* 100 ms of real time, across the detector's signal (EINTR). */
    struct timespec ts = {0, 100 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    RFT_CHECK_INT(rf_now_ns(), 3600 * SEC);
    /* The watchdog reports the end when it sees the loop move again: wait
     * for it in a worker (the loop idles meanwhile, its clock still). */
    RFT_CHECK_INT(rf_to_thread(wait_stall_report, NULL, NULL), 0);
    RFT_CHECK_INT(rf_now_ns(), 3600 * SEC);
    RFT_CHECK_INT(rf_loop_stall_detector(rf_loop_current(), 0, NULL, NULL),
                  0);
    RFT_CHECK_INT(__atomic_load_n(&g_stalls, __ATOMIC_RELAXED), 1);
    /* Real time: a stall is reported only past its threshold (the
     * virtual clock stood still meanwhile). How much more the watchdog
     * saw depends on when it got a CPU: not a bound to test. */
    RFT_CHECK(__atomic_load_n(&g_stall_held, __ATOMIC_RELAXED) >= 20 * RFT_MS);
    return NULL;
}

static void test_stall_detector_keeps_real_time(void **state)
{
    vrun(stall_body, NULL);
}

/* ---- the README's example: a retry with backoff, tested in virtual time -- */

/* Calls op until it succeeds, sleeping 100 ms, 200 ms, 400 ms ... between
 * tries; gives up after `tries` tries with op's last error. */
static int retry_with_backoff(int (*op)(void *), void *arg, int tries)
{
    uint64_t backoff = 100 * RF_NSEC_PER_MSEC;
    int rc = op(arg);
    for (int i = 1; i < tries && rc != 0; i++) {
        int src = rf_sleep(backoff);
        if (src)
            return src; /* cancelled, or past the task's deadline */
        backoff *= 2;
        rc = op(arg);
    }
    return rc;
}

static uint64_t g_tried_at[8];
static int g_tries;

static int flaky(void *arg)
{
    g_tried_at[g_tries++] = rf_now_ns();
    return g_tries < *(int *)arg ? -EAGAIN : 0; /* fails until try n */
}

static void *retry_body(void *arg)
{
    (void)arg;
    int succeed_at = 4;
    g_tries = 0;
    RFT_CHECK_INT(retry_with_backoff(flaky, &succeed_at, 5), 0);
    RFT_CHECK_INT(g_tries, 4);
    static const uint64_t at_ms[] = {0, 100, 300, 700};
    for (int i = 0; i < 4; i++)
        RFT_CHECK_INT(g_tried_at[i], at_ms[i] * RF_NSEC_PER_MSEC);
    /* Never succeeds: five tries, then the last error, at 1.5 s. */
    succeed_at = 100;
    g_tries = 0;
    uint64_t t0 = rf_now_ns();
    RFT_CHECK_INT(retry_with_backoff(flaky, &succeed_at, 5), -EAGAIN);
    RFT_CHECK_INT(rf_now_ns() - t0, 1500 * RF_NSEC_PER_MSEC);
    /* Under a deadline of 1 s the fifth try never happens. */
    g_tries = 0;
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() + RF_NSEC_PER_SEC), 0);
    RFT_CHECK_INT(retry_with_backoff(flaky, &succeed_at, 5), -ETIMEDOUT);
    RFT_CHECK_INT(g_tries, 4);
    return NULL;
}

static void test_retry_with_backoff(void **state) { vrun(retry_body, NULL); }

/* ---- by hand -------------------------------------------------------------- */

static uint64_t g_woke[3];

static void *woke_at(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    RFT_CHECK_INT(rf_sleep((i + 1) * SEC), 0);
    g_woke[i] = rf_now_ns();
    return NULL;
}

static void *loop_time_reader(void *arg)
{
    uint64_t ns = 0;
    int rc = rf_loop_time((rf_loop *)arg, &ns);
    return rc ? (void *)(intptr_t)-1 : (void *)(uintptr_t)ns;
}

/* rf_clock_advance fires each timer at its own instant and lets its task
 * run before the clock moves on; rf_loop_time reads the clock from
 * another thread. */
static void *advance_body(void *arg)
{
    (void)arg;
    rf_task *t[3];
    for (uintptr_t i = 0; i < 3; i++)
        t[i] = rf_spawn(woke_at, (void *)i);
    RFT_CHECK_INT(rf_yield(), 0); /* they arm their sleeps */
    RFT_CHECK_INT(rf_clock_advance(NULL, 10 * SEC), 0);
    RFT_CHECK_INT(rf_now_ns(), 10 * SEC);
    for (int i = 0; i < 3; i++) {
        RFT_CHECK_INT(g_woke[i], (uint64_t)(i + 1) * SEC);
        RFT_CHECK(rf_done(t[i]));
        rf_task_release(t[i]);
    }
    RFT_CHECK_INT(rf_clock_advance(rf_loop_current(), 5), 0);
    RFT_CHECK_INT(rf_now_ns(), 10 * SEC + 5);
    void *res = NULL;
    RFT_CHECK_INT(rf_to_thread(loop_time_reader, rf_loop_current(), &res), 0);
    RFT_CHECK_INT((uintptr_t)res, 10 * SEC + 5);
    return NULL;
}

static void test_clock_advance(void **state) { vrun(advance_body, NULL); }

/* rf_clock_jump: a blocking call that took 3 s. The timers due by then
 * fire, and their tasks run once the caller suspends, at the new time. */
static void *jump_body(void *arg)
{
    (void)arg;
    memset(g_woke, 0, sizeof g_woke);
    rf_task *t[3];
    for (uintptr_t i = 0; i < 3; i++)
        t[i] = rf_spawn(woke_at, (void *)i);
    RFT_CHECK_INT(rf_yield(), 0); /* they arm 1 s, 2 s, 3 s */
    RFT_CHECK_INT(rf_clock_jump(NULL, 2 * SEC + SEC / 2), 0);
    RFT_CHECK_INT(rf_now_ns(), 2 * SEC + SEC / 2);
    RFT_CHECK_INT(g_woke[0], 0); /* not run yet: the caller has not
                                    suspended */
    RFT_CHECK_INT(rf_yield(), 0);
    RFT_CHECK_INT(g_woke[0], 2 * SEC + SEC / 2);
    RFT_CHECK_INT(g_woke[1], 2 * SEC + SEC / 2);
    RFT_CHECK_INT(g_woke[2], 0);
    for (int i = 0; i < 3; i++) {
        RFT_CHECK_INT(rf_join(t[i], NULL), 0);
        rf_task_release(t[i]);
    }
    RFT_CHECK_INT(g_woke[2], 3 * SEC); /* auto-advanced to its instant */
    return NULL;
}

static void test_clock_jump(void **state) { vrun(jump_body, NULL); }

static void *advance_refused_body(void *arg)
{
    (void)arg;
    RFT_CHECK_INT(rf_clock_advance(NULL, SEC), -EINVAL); /* a real loop */
    RFT_CHECK_INT(rf_clock_jump(NULL, SEC), -EINVAL);
    rf_loop *other = (rf_loop *)arg;
    RFT_CHECK_INT(rf_clock_advance(other, SEC), -EXDEV);
    RFT_CHECK_INT(rf_clock_jump(other, SEC), -EXDEV);
    return NULL;
}

static void test_clock_advance_errors(void **state)
{
    assert_int_equal(rf_clock_advance(NULL, SEC), -EPERM);
    assert_int_equal(rf_clock_jump(NULL, SEC), -EPERM);
    rf_loop *other = NULL;
    rf_loop_opts o = {.flags = RF_LOOP_VIRTUAL_TIME};
    assert_int_equal(rf_loop_new(&other, &o), 0);
    rft_run(advance_refused_body, other);
    uint64_t ns = 1;
    assert_int_equal(rf_loop_time(other, &ns), 0);
    assert_int_equal(ns, 0);
    assert_int_equal(rf_loop_time(NULL, &ns), -EINVAL);
    assert_int_equal(rf_loop_time(other, NULL), -EINVAL);
    assert_int_equal(rf_loop_free(other), 0);
    /* A loop on real time reads CLOCK_MONOTONIC. */
    rf_loop *real = NULL;
    assert_int_equal(rf_loop_new(&real, NULL), 0);
    uint64_t before = rft_now();
    assert_int_equal(rf_loop_time(real, &ns), 0);
    assert_true(ns >= before);
    assert_int_equal(rf_loop_free(real), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_hour_of_sleepers),
    cmocka_unit_test(test_same_instant_in_arming_order),
    cmocka_unit_test(test_same_instant_after_stops),
    cmocka_unit_test(test_deadline_and_sleep),
    cmocka_unit_test(test_renewed_deadline_exact),
    cmocka_unit_test(test_zero_timeout_at_start),
    cmocka_unit_test(test_wait_for_at_its_timeout),
    cmocka_unit_test(test_cancel_during_advance),
    cmocka_unit_test(test_offload_freezes_clock),
    cmocka_unit_test(test_io_freezes_clock),
    cmocka_unit_test(test_autojump),
    cmocka_unit_test(test_stall_detector_keeps_real_time),
    cmocka_unit_test(test_retry_with_backoff),
    cmocka_unit_test(test_clock_advance),
    cmocka_unit_test(test_clock_jump),
    cmocka_unit_test(test_clock_advance_errors),
};

RFT_MAIN(tests)
