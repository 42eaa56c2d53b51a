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
    if (self->cancelled)
        return -ECANCELED;
    uint64_t end = rf__time_after(ns);
    bool cut = self->deadline != 0 && self->deadline < end;
    if (cut) {
        /* The task's deadline comes first: sleep until it, then report
         * that it passed. */
        if (rf_now_ns() >= self->deadline)
            return -ETIMEDOUT;
        end = self->deadline;
    }
    rf_timer t;
    int rc = rf__timer_start(l, &t, self, end);
    if (rc)
        return rc;
    rc = rf__waiter_wait(l, self, &t.w, RF_WAIT_CANCEL);
    if (rc < 0) {
        rf__timer_stop(l, &t);
        return rc;
    }
    if (t.w.res == -ETIME)
        return cut ? -ETIMEDOUT : 0;
    return t.w.res; /* -ECANCELED: removed under us (cannot happen), errors */
}

/* ---- the task's deadline ---- */

/*
 * Operations in the ring carry the deadline as a linked timeout
 * (rf__op_run). Waits outside the ring (a join, a queue, a lock) share one
 * timer per task, armed at the first such wait and left armed across
 * waits until it fires, the deadline moves earlier (it is updated in
 * place), or the task ends (it is removed, and its CQE awaited).
 */
typedef struct rf_deadline_timer {
    rf_handler h;
    rf_task *task;
    struct __kernel_timespec ts;
    uint64_t armed_for;
    bool armed;
    bool ending;
} rf_deadline_timer;

static void deadline_fired(rf_loop *l, rf_handler *h,
                           const struct io_uring_cqe *cqe)
{
    (void)cqe;
    rf_deadline_timer *dt = (rf_deadline_timer *)h;
    rf_task *t = dt->task;
    dt->armed = false;
    if (t->state != RF_WAITING)
        return;
    if (dt->ending) {
        rf__wake(l, t);
    } else if (t->wait_flags & RF_WAIT_DEADLINE) {
        t->deadline_woken = true;
        rf__wake(l, t);
    }
}

int rf__deadline_wait_prepare(rf_loop *l, rf_task *self)
{
    uint64_t d = self->deadline;
    if (d == 0)
        return 0;
    if (rf_now_ns() >= d)
        return -ETIMEDOUT;
    rf_deadline_timer *dt = self->dtimer;
    if (!dt) {
        dt = calloc(1, sizeof(*dt));
        if (!dt)
            return -ENOMEM;
        dt->h.fn = deadline_fired;
        dt->task = self;
        self->dtimer = dt;
    }
    if (dt->armed && dt->armed_for <= d)
        return 0; /* fires in time (if early, the wait checks again) */
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return -EBUSY;
    rf__abs_timespec(&dt->ts, d);
    if (dt->armed) {
        io_uring_prep_timeout_update(sqe, &dt->ts, rf__handler_data(&dt->h),
                                     IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqe, RF_UD_IGNORE);
    } else {
        io_uring_prep_timeout(sqe, &dt->ts, 0, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqe, rf__handler_data(&dt->h));
        dt->armed = true;
    }
    dt->armed_for = d;
    return 0;
}

void rf__deadline_task_end(rf_loop *l, rf_task *self)
{
    rf_deadline_timer *dt = self->dtimer;
    if (dt->armed) {
        struct io_uring_sqe *sqe = rf__sqe_get(l);
        if (sqe) { /* without one, the timer still fires on its own */
            io_uring_prep_timeout_remove(sqe, rf__handler_data(&dt->h), 0);
            io_uring_sqe_set_data64(sqe, RF_UD_IGNORE);
        }
        dt->ending = true;
        while (dt->armed)
            rf__wait(l, self, 0);
    }
    free(dt);
    self->dtimer = NULL;
}

int rf_deadline_set(uint64_t deadline_ns)
{
    rf_task *self = rf__self();
    if (!self)
        return -EPERM;
    self->deadline = deadline_ns;
    if (deadline_ns)
        rf__abs_timespec(&self->deadline_ts, deadline_ns);
    return 0;
}

uint64_t rf_deadline_get(void)
{
    rf_task *self = rf__self();
    return self ? self->deadline : 0;
}
