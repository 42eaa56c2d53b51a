/*
 * Clocks and sleeping. A sleep is an IORING_OP_TIMEOUT on an absolute
 * CLOCK_MONOTONIC deadline: a series of sleeps does not accumulate the
 * scheduling delay of each, and many tasks' sleeps reach the kernel in one
 * submission.
 */
#include <stdlib.h>
#include <time.h>

#include "internal.h"

uint64_t rf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * RF_NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

void rf__abs_timespec(struct __kernel_timespec *ts, uint64_t deadline_ns)
{
    ts->tv_sec = (long long)(deadline_ns / RF_NSEC_PER_SEC);
    ts->tv_nsec = (long long)(deadline_ns % RF_NSEC_PER_SEC);
}

/* now + ns, saturated: "forever" must not wrap into the past. */
uint64_t rf__time_after(uint64_t ns)
{
    uint64_t now = rf_now_ns();
    return ns > UINT64_MAX / 4 - now ? UINT64_MAX / 4 : now + ns;
}

/*
 * Timers share kernel timeouts. Every timer (a sleep, the timeout of
 * rf_wait_for or rf_wait, a shutdown's grace) that ends within one timer
 * slack of another waits on the same IORING_OP_TIMEOUT, a bucket: 100,000
 * tasks that each sleep 10 ms, started within a few milliseconds, arm a few
 * dozen kernel timers instead of 100,000 (the kernel keeps its timeouts in
 * a list, and arming that many costs it more than the tasks themselves:
 * see W3_raw_timeout_*_baseline). Buckets are found through a small
 * direct-mapped cache keyed by deadline; a bucket pushed out of it still
 * serves its timers. It is freed at its CQE, which wakes all its timers'
 * tasks in FIFO order. A timer stopped before it fires (a cancelled
 * sleep, a wait_for whose task finished first) leaves its bucket at once,
 * without a system call and without waiting for a CQE. One mechanism for
 * every timer a task waits on: before, rf_wait_for armed a timeout of its
 * own per call and, when the task won, cancelled it and waited for its
 * CQE, one more trip through the ring.
 *
 * A bucket its last timer left stays armed and in the cache for a while,
 * idle: the next timers that end within its slack join it again, so a
 * task that bounds each short wait by the same timeout (a wait_for per
 * request) arms and removes a kernel timeout per slack's worth of calls,
 * not per call. Idle buckets are not counted in flight (nobody waits on
 * them); at most RF_IDLE_BUCKETS are kept (the oldest is removed), and
 * all are removed before the loop sleeps or decides that nothing is left
 * (rf__timers_flush_idle), so an idle one never wakes a sleeping loop
 * late nor holds up a loop being freed.
 */
#define RF_IDLE_BUCKETS 16

typedef struct rf_timer_bucket {
    rf_handler h;
    struct __kernel_timespec ts;
    uint64_t deadline;
    rf_list timers;
    rf_list idle_node; /* l->idle_buckets, while idle */
    bool idle;         /* no timer in it; not counted in l->inflight */
    bool removing;     /* a TIMEOUT_REMOVE is on its way */
} rf_timer_bucket;

static unsigned bucket_slot(uint64_t deadline, uint64_t slack)
{
    uint64_t k = deadline / (slack > 0 ? slack : 1);
    return (unsigned)(k ^ (k >> 7)) % RF_TIMER_BUCKETS;
}

/* An idle bucket back in use (or about to be removed): counted again. */
static void bucket_unidle(rf_loop *l, rf_timer_bucket *b)
{
    rf_list_remove(&b->idle_node);
    l->nidle--;
    b->idle = false;
    b->h.uncounted = false;
    RF_STAT_ADD(l->inflight, 1);
}

static void bucket_fired(rf_loop *l, rf_handler *h,
                         const struct io_uring_cqe *cqe)
{
    rf_timer_bucket *b = (rf_timer_bucket *)h;
    unsigned i = bucket_slot(b->deadline, l->timer_slack_ns);
    if (l->timer_cache[i] == b)
        l->timer_cache[i] = NULL;
    if (b->idle) { /* uncounted: the dispatch did not count this CQE */
        rf_list_remove(&b->idle_node);
        l->nidle--;
    }
    rf_list *n;
    while ((n = rf_list_pop_front(&b->timers)) != NULL) {
        rf_timer *t = rf_container_of(n, rf_timer, node);
        rf__waiter_done(l, &t->w, cqe->res);
    }
    free(b);
}

/*
 * The bucket for a sleep whose exact end is `end`: one that fires within
 * [end, end + slack], or a new one that fires at end + slack. So every
 * sleep ends at most one timer slack late (the latitude the kernel takes
 * with nanosleep), never early, and sleeps of equal length begun less than
 * a slack apart (the tasks of one pass) always share one timeout: they
 * wake in the same pass, in the order they began, whatever the clock
 * boundaries. (Rounding each end up to a multiple of the slack would put
 * two such sleeps in different timeouts whenever a multiple fell between
 * them.) A bucket with deadline D sits in the cache under D / slack, so
 * the two slots end / slack and end / slack + 1 hold the candidates.
 */
static rf_timer_bucket *bucket_get(rf_loop *l, uint64_t end, int *err)
{
    uint64_t slack = l->timer_slack_ns;
    for (int k = 0; k < 2; k++) {
        rf_timer_bucket *b =
            l->timer_cache[bucket_slot(end + (uint64_t)k * slack, slack)];
        if (b && !b->removing && b->deadline >= end &&
            b->deadline - end <= slack) {
            if (b->idle)
                bucket_unidle(l, b);
            return b;
        }
    }
    uint64_t deadline = end + slack;
    unsigned i = bucket_slot(deadline, slack);
    rf_timer_bucket *b = malloc(sizeof(*b));
    if (!b) {
        *err = -ENOMEM;
        return NULL;
    }
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe) {
        free(b);
        *err = -EBUSY;
        return NULL;
    }
    b->h.fn = bucket_fired;
    b->h.uncounted = false;
    b->deadline = deadline;
    b->idle = false;
    b->removing = false;
    rf_list_init(&b->timers);
    rf__abs_timespec(&b->ts, deadline);
    io_uring_prep_timeout(sqe, &b->ts, 0, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(sqe, rf__handler_data(&b->h));
    l->timer_cache[i] = b;
    return b;
}

int rf__timer_start(rf_loop *l, rf_timer *t, rf_task *task, uint64_t end)
{
    int err = 0;
    rf_timer_bucket *b = bucket_get(l, end, &err);
    t->w.task = task;
    t->bucket = b;
    t->w.res = 0;
    t->w.done = false;
    if (!b)
        return err;
    rf_list_push_back(&b->timers, &t->node);
    return 0;
}

/* Take b's kernel timeout out (its CQE, -ECANCELED, frees it). Without an
 * SQE it is left to fire on its own, counted, and freed then. */
static void bucket_remove(rf_loop *l, rf_timer_bucket *b)
{
    if (b->idle)
        bucket_unidle(l, b);
    unsigned i = bucket_slot(b->deadline, l->timer_slack_ns);
    if (l->timer_cache[i] == b)
        l->timer_cache[i] = NULL;
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return;
    io_uring_prep_timeout_remove(sqe, rf__handler_data(&b->h), 0);
    io_uring_sqe_set_data64(sqe, RF_UD_IGNORE);
    b->removing = true;
}

void rf__timer_stop(rf_loop *l, rf_timer *t)
{
    rf_timer_bucket *b = t->bucket;
    if (t->w.done || !b)
        return;
    t->bucket = NULL;
    rf_list_remove(&t->node);
    if (!rf_list_empty(&b->timers) || b->removing)
        return;
    /* Idle: kept armed for the next timers that end near it. */
    b->idle = true;
    b->h.uncounted = true;
    RF_STAT_SUB(l->inflight, 1);
    rf_list_push_back(&l->idle_buckets, &b->idle_node);
    if (++l->nidle > RF_IDLE_BUCKETS)
        bucket_remove(l, rf_container_of(l->idle_buckets.next,
                                         rf_timer_bucket, idle_node));
}

void rf__timers_flush_idle(rf_loop *l)
{
    while (l->nidle)
        bucket_remove(l, rf_container_of(l->idle_buckets.next,
                                         rf_timer_bucket, idle_node));
}

int rf_sleep(uint64_t ns)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    if (ns == 0)
        return rf_yield();
    int rc = rf__wait_precheck(self);
    if (rc)
        return rc;
    rf_timer t;
    rc = rf__timer_start(l, &t, self, rf__time_after(ns));
    if (rc)
        return rc;
    /* The task's deadline, if it comes first, ends the wait (-ETIMEDOUT). */
    rc = rf__waiter_wait(l, self, &t.w, RF_WAIT_ANY);
    if (rc < 0) {
        rf__timer_stop(l, &t);
        return rc;
    }
    return t.w.res == -ETIME ? 0 : t.w.res; /* -ECANCELED: cannot happen */
}

/* ---- the task's deadline ---- */

/*
 * One mechanism bounds every wait by the task's deadline, whatever the
 * wait is for (an operation in the ring, a sleep, a join, a lock): the
 * task's own timer, t->deadline_timer, one of the timers above. It is
 * armed at the first wait that accepts the deadline (RF_WAIT_DEADLINE)
 * and stays armed across waits until it fires, the deadline moves, or the
 * task ends; stopping it is a list unlink, without a system call. While
 * the task waits, the timer's waiter names it: the timer firing wakes it,
 * and rf__wait returns -ETIMEDOUT, as rf_cancel ends a wait that accepts
 * cancellation. The waiter then takes itself out of what it waited on;
 * an operation in the ring is first cancelled in the kernel, and its
 * final CQE awaited (ring.c). Once fired, the timer stays done: every later
 * wait returns -ETIMEDOUT at once, until the deadline is moved or cleared.
 *
 * So a deadline costs one timer per task, not one per wait: a task that
 * makes a thousand operations under one deadline arms it once, and the
 * timers of tasks whose deadlines fall within one timer slack share one
 * kernel timeout. The price is precision: the wait ends up to one timer
 * slack after the deadline (as every timer here), and an operation in the
 * ring one cancellation later still.
 *
 * The bounded waits of rf_wait_for, rf_wait and a graceful shutdown's
 * grace are the same deadline, narrowed for one wait (rf__deadline_narrow,
 * rf__deadline_restore): asyncio's wait_for is its timeout() likewise.
 */

/* A deadline that is changed: its timer, armed for the old one, must not
 * fire for the new one. With arm (a deadline narrowed for one wait, just
 * computed from the clock), the new one's timer is armed at once, without
 * reading the clock again; if it cannot be, the wait tries again and
 * reports why. */
void rf__deadline_move(rf_loop *l, rf_task *self, uint64_t deadline_ns,
                       bool arm)
{
    rf_timer *t = &self->deadline_timer;
    if (t->bucket) {
        rf__timer_stop(l, t); /* a no-op if it has fired */
        t->bucket = NULL;
    }
    t->w.done = false;
    self->deadline = deadline_ns;
    if (arm)
        (void)rf__timer_start(l, t, NULL, deadline_ns);
}

/*
 * rf__wait, before a wait bounded by the deadline: -ETIMEDOUT once it has
 * passed, else the timer armed (0, or -ENOMEM/-EBUSY if it cannot be) and
 * naming self until the wait ends. The clock is read only to arm the
 * timer: an armed timer that has not fired yet stands for "not passed"
 * (if the deadline passed a moment ago, the wait ends when the loop sees
 * the timer fire, in the same pass end that would have begun it). Calls
 * that submit work read the clock anyway (rf__wait_precheck).
 */
int rf__deadline_arm(rf_loop *l, rf_task *self)
{
    rf_timer *t = &self->deadline_timer;
    if (t->w.done)
        return -ETIMEDOUT;
    if (!t->bucket) {
        if (rf_now_ns() >= self->deadline)
            return -ETIMEDOUT;
        int rc = rf__timer_start(l, t, NULL, self->deadline);
        if (rc)
            return rc;
    }
    t->w.task = self;
    return 0;
}

int rf_deadline_set(uint64_t deadline_ns)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    if (deadline_ns != self->deadline)
        rf__deadline_move(l, self, deadline_ns, false);
    return 0;
}

uint64_t rf_deadline_get(void)
{
    rf_task *self = rf__self();
    return self ? self->deadline : 0;
}
