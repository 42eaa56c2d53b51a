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

/*
 * Deadlines are rounded up to the thread's timer slack (PR_GET_TIMERSLACK,
 * 50 us unless changed), the latitude the kernel itself takes with
 * nanosleep(). Sleeps begun by many tasks within one pass then end on a
 * few common deadlines and wake the loop a few times, not once per task.
 * A thread with a slack of 0 (real-time ones) gets exact deadlines.
 */
uint64_t rf__deadline_after(const rf_loop *l, uint64_t ns)
{
    uint64_t now = rf_now_ns();
    /* Saturate: "forever" must not wrap into the past. */
    if (ns > UINT64_MAX / 4 - now)
        return UINT64_MAX / 4;
    uint64_t d = now + ns;
    uint64_t slack = l->timer_slack_ns;
    return slack > 1 ? (d + slack - 1) / slack * slack : d;
}

static int timer_arm_abs(rf_loop *l, rf_op *op, struct __kernel_timespec *ts,
                         uint64_t deadline_ns)
{
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return -EBUSY;
    rf__abs_timespec(ts, deadline_ns);
    io_uring_prep_timeout(sqe, ts, 0, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data(sqe, op);
    return 0;
}

int rf__timer_arm(rf_loop *l, rf_op *op, struct __kernel_timespec *ts,
                  uint64_t ns)
{
    return timer_arm_abs(l, op, ts, rf__deadline_after(l, ns));
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
    uint64_t end = rf__deadline_after(l, ns);
    bool cut = self->deadline != 0 && self->deadline < end;
    if (cut) {
        /* The task's deadline comes first: sleep until it, then report
         * that it passed. */
        if (rf_now_ns() >= self->deadline)
            return -ETIMEDOUT;
        end = self->deadline;
    }
    rf_op op = {0};
    struct __kernel_timespec ts;
    int rc = timer_arm_abs(l, &op, &ts, end);
    if (rc)
        return rc;
    rc = rf__op_wait(l, self, &op);
    if (rc == -ETIME)
        return cut ? -ETIMEDOUT : 0;
    return rc;
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
