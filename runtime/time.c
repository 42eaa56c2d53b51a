/*
 * Clocks and sleeping. A sleep is an IORING_OP_TIMEOUT on an absolute
 * CLOCK_MONOTONIC deadline: a series of sleeps does not accumulate the
 * scheduling delay of each, and many tasks' sleeps reach the kernel in one
 * submission.
 */
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

int rf__timer_arm(rf_loop *l, rf_op *op, struct __kernel_timespec *ts,
                  uint64_t ns)
{
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return -EBUSY;
    rf__abs_timespec(ts, rf__deadline_after(l, ns));
    io_uring_prep_timeout(sqe, ts, 0, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data(sqe, op);
    return 0;
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
    rf_op op = {0};
    struct __kernel_timespec ts;
    int rc = rf__timer_arm(l, &op, &ts, ns);
    if (rc)
        return rc;
    rc = rf__op_wait(l, self, &op);
    return rc == -ETIME ? 0 : rc;
}
