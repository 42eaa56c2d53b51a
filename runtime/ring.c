/*
 * The ring, and the I/O path through it: every operation a task submits
 * goes through one record (rf_op, on the task's stack), one begin and one
 * run. Read from the top, this file is an operation's life: begin (an
 * SQE), run (wait for the final CQE), then, at the end of the scheduler's
 * pass (loop.c), submit and reap, and the dispatch that hands each CQE to
 * its record and wakes its task. Set-up (flags, the probe) is at the
 * bottom.
 *
 *     rf_op op;
 *     int err;
 *     struct io_uring_sqe *sqe =
 *         rf__op_begin(&op, fd, IORING_OP_X, "rf_x", &err);  (fd -1: none)
 *     if (!sqe)
 *         return err;
 *     io_uring_prep_x(sqe, ...);
 *     return rf__op_run(&op, sqe);
 *
 * begin refuses before anything is submitted: outside a task (-EPERM), an
 * opcode this kernel's io_uring lacks (-EOPNOTSUPP, said once per loop on
 * stderr), a cancelled task (-ECANCELED), a task past its deadline
 * (-ETIMEDOUT), a submission queue that stays full (-EBUSY).
 *
 * run lists the operation in rf__fd_ops(loop, fd) while it is in flight on a
 * descriptor (rf_close waits for those) and suspends the task until the
 * operation's final CQE. A cancellation, or the task's deadline (its
 * timer, time.c), that ends the wait first asks the kernel to cancel the
 * operation and keeps waiting for that same CQE: the task resumes only
 * when the kernel is done with the operation and its buffers. An
 * operation the kernel ended so returns -ECANCELED or -ETIMEDOUT (which
 * ended it); one that completed first returns its own result.
 *
 * Accounting: every SQE taken with rf__sqe_get() expects exactly one final
 * CQE (one without IORING_CQE_F_MORE); loop->inflight counts those not yet
 * seen. A loop is not freed while it is non-zero, so no completion can
 * arrive for an operation record that is gone.
 *
 * One rule for completions: they are dispatched by rf__ring_reap and
 * nowhere else. Entering the kernel never runs a handler nor wakes a
 * task, even when it has to make room: a kernel that refuses a
 * submission for want of CQ room (-EBUSY, -EAGAIN) gets it by the
 * enter moving the CQ's completions, in order, into the loop's backlog,
 * which the next reap dispatches first. So rf__sqe_get, which enters
 * when the SQ is full, leaves whatever its caller holds (a timer bucket,
 * a receive queue, an acceptor, a handler's record in the middle of a
 * reap) as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* ---- an operation: begin, run ---- */

struct io_uring_sqe *rf__op_begin(rf_op *op, int fd, unsigned opcode,
                                  const char *what, int *err)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    struct io_uring_sqe *sqe = NULL;
    /* NOP is in every io_uring: rf_nop, which inlines this, skips the
     * probe. */
    if (rf_unlikely(!self))
        *err = -EPERM;
    else if (opcode != IORING_OP_NOP &&
             rf_unlikely(!rf__op_supported(l, opcode))) {
        rf__op_report_missing(l, opcode, what, "the call returns EOPNOTSUPP");
        *err = -EOPNOTSUPP;
    } else if ((*err = rf__wait_precheck(self)) == 0 && !(sqe = rf__sqe_get(l)))
        *err = -EBUSY;
    if (rf_likely(sqe != NULL)) {
        /* The record is set up here, not where it is declared: only what
         * is read before the completion writes the rest. */
        op->w.task = self;
        op->w.done = false;
        op->loop = l;
        op->fd = fd;
        op->closer = NULL;
    }
    return sqe;
}

void rf__op_cancel(rf_loop *l, rf_op *op)
{
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return; /* the operation still completes on its own */
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
    io_uring_sqe_set_data64(sqe, RF_UD_IGNORE);
}

/* An operation on op->fd is in flight (also the offload fallback of a
 * file call, fs.c): rf_close(fd) waits until it is untracked. */
void rf__op_track(rf_op *op)
{
    rf_list_push_back(rf__fd_ops(op->loop, op->fd), &op->node);
}

void rf__op_untrack(rf_op *op)
{
    rf_list_remove(&op->node);
    if (op->closer)
        rf__close_release(op->loop, op->closer);
}

/* Suspend until op's final CQE, whatever happens: cancellation and the
 * deadline ask the kernel to end op early, and wait on. */
static int op_wait(rf_loop *l, rf_task *self, rf_op *op, unsigned opcode)
{
    int rc = rf__waiter_wait(l, self, &op->w, RF_WAIT_ANY, RF_ON_IO(opcode),
                             RF_ON_FD(op->fd));
    if (rf_unlikely(rc < 0)) {
        rf__op_cancel(l, op);
        rf__waiter_wait(l, self, &op->w, 0, RF_ON_IO(opcode), RF_ON_FD(op->fd));
        /* Ended by the kernel for the deadline (or for a deadline timer
         * that could not be armed): say so. A cancellation keeps the
         * kernel's result. */
        if (rc != -ECANCELED &&
            (op->w.res == -ECANCELED || op->w.res == -EINTR))
            op->w.res = rc;
    }
    op->w.task = NULL;
    return op->w.res;
}

int rf__op_run(rf_op *op, struct io_uring_sqe *sqe)
{
    io_uring_sqe_set_data(sqe, op);
    unsigned opcode = sqe->opcode; /* the SQE is the kernel's once submitted */
    int res;
    if (op->fd < 0) {
        res = op_wait(op->loop, op->w.task, op, opcode);
    } else {
        rf__op_track(op);
        res = op_wait(op->loop, op->w.task, op, opcode);
        rf__op_untrack(op);
    }
    rf__op_count(op->loop, opcode, res);
    return res;
}

/* The ring path alone: an operation that does nothing. */
int rf_nop(void)
{
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, -1, IORING_OP_NOP, "rf_nop", &err);
    if (!sqe)
        return err;
    io_uring_prep_nop(sqe);
    return rf__op_run(&op, sqe);
}

struct io_uring_sqe *rf__sqe_get(rf_loop *l)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
    for (unsigned tries = 0; rf_unlikely(!sqe); tries++) {
        /* SQ full: hand this pass's SQEs to the kernel early, without
         * waiting, and carry on gathering. */
        if (tries == 4 || rf__ring_enter(l, 0) < 0)
            return NULL;
        sqe = io_uring_get_sqe(&l->ring);
    }
    RF_STAT_ADD(l->inflight, 1);
    return sqe;
}

/* ---- the pass end: submit, reap, dispatch ---- */

/*
 * The end of a scheduler pass (next_ctx in loop.c): take in the mail from
 * other threads, then submit what the pass gathered and pick up
 * completions, without blocking. A pass with nothing to submit and
 * nothing to reap finds it with one load when nothing is in flight, three
 * loads from the ring otherwise (rf__ring_has_work), without calling into
 * liburing.
 */
void rf__ring_pass_end(rf_loop *l)
{
    if (rf_unlikely(l->pool_pending))
        rf__pool_flush(l);
    if (rf_unlikely(rf__remote_pending(l)))
        rf__remote_drain(l);
    if (l->inflight == 0)
        return; /* nothing queued, nothing that could complete */
    if (!rf__ring_has_work(l))
        return;
    rf__ring_enter(l, 0);
    rf__ring_reap(l);
}

/* SQEs to submit, CQEs to reap, or completions the kernel holds for us
 * (task work to run, an overflow to flush): three loads from the ring, no
 * call into liburing. */
bool rf__ring_has_work(const rf_loop *l)
{
    const struct io_uring *r = &l->ring;
    return io_uring_sq_ready(r) != 0 || io_uring_cq_ready(r) != 0 ||
           (IO_URING_READ_ONCE(*r->sq.kflags) &
            (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) ||
           l->backlog.n != 0;
}

static bool events_waiting(const rf_loop *l)
{
    if (io_uring_cq_has_overflow(&l->ring))
        return true;
    return l->taskrun_flag &&
           (IO_URING_READ_ONCE(*l->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

/*
 * The kernel refused a submission for want of CQ room: move what the CQ
 * holds (and what the kernel parked aside, on a CQ that overflowed) into
 * the backlog, without dispatching any of it. Returns how many moved, or
 * -ENOMEM if the backlog could not grow (what did not fit stays in the
 * CQ). While the backlog holds completions it counts as one operation in
 * flight: nothing takes the loop for idle or drained before the reap.
 */
static int backlog_take(rf_loop *l)
{
    struct io_uring *r = &l->ring;
    int moved = 0;
    for (unsigned rounds = 0;; rounds++) {
        unsigned head = *r->cq.khead;
        unsigned n = io_uring_smp_load_acquire(r->cq.ktail) - head;
        if (n) {
            /* Appended: a dispatch under way reads on from its head, and
             * the whole array is reused once it has ended. */
            if (l->backlog.n + n > l->backlog.cap) {
                unsigned cap = l->backlog.cap ? 2 * l->backlog.cap
                                              : r->cq.ring_entries;
                while (cap < l->backlog.n + n)
                    cap *= 2;
                struct io_uring_cqe *v =
                    realloc(l->backlog.v, (size_t)cap * sizeof(*v));
                if (!v)
                    return moved ? moved : -ENOMEM;
                l->backlog.v = v;
                l->backlog.cap = cap;
            }
            /* Once, until the backlog is dispatched to its end (a handler
             * run by that dispatch may add to it). */
            if (!l->backlog.counted) {
                l->backlog.counted = true;
                RF_STAT_ADD(l->inflight, 1);
            }
            for (unsigned i = 0; i < n; i++)
                l->backlog.v[l->backlog.n++] =
                    r->cq.cqes[(head + i) & r->cq.ring_mask];
            io_uring_smp_store_release(r->cq.khead, head + n);
            l->backlog.taken += n;
            moved += (int)n;
        }
        /* Parked completions come in once the CQ has room. */
        if (!io_uring_cq_has_overflow(r) || rounds == 8)
            return moved;
        RF_STAT_ADD(l->stats.enters, 1);
        if (io_uring_get_events(r) < 0)
            return moved;
    }
}

/* rf__ring_enter's system call, and the test hook that refuses some
 * (rf_loop.refuse_every): the kernel posts what it holds, takes nothing,
 * and says -EBUSY. */
static int enter_call(rf_loop *l, unsigned wait_nr)
{
    if (rf_unlikely(l->refuse_every) &&
        ++l->refuse_count % l->refuse_every == 0) {
        l->refused++;
        (void)io_uring_get_events(&l->ring);
        return -EBUSY;
    }
    return wait_nr ? io_uring_submit_and_wait(&l->ring, wait_nr)
                   : io_uring_submit_and_get_events(&l->ring);
}

/*
 * The place that enters the kernel (with rf__ring_enter_timeout below,
 * its timed variant for a virtual clock's autojump, and enter_batch, a
 * batched sleep's). wait_nr 0: submit and/or have the
 * kernel post the completions it holds, if there is anything to do,
 * without blocking; wait_nr 1: submit and block until a completion is
 * available. Both ask for events (IORING_ENTER_GETEVENTS): with
 * DEFER_TASKRUN that is what makes the kernel post the completions it
 * holds, which the reap that follows takes.
 */
int rf__ring_enter(rf_loop *l, unsigned wait_nr)
{
    if (rf_unlikely(l->backlog.n))
        wait_nr = 0; /* completions are here: the caller's reap takes them */
    for (unsigned tries = 0;; tries++) {
        if (!wait_nr && !io_uring_sq_ready(&l->ring) && !events_waiting(l))
            return 0;
        int ret = enter_call(l, wait_nr);
        RF_STAT_ADD(l->stats.enters, 1);
        rf__clock_refresh(l); /* a tenth of the system call, or less */
        if (ret >= 0) {
            RF_STAT_ADD(l->stats.sqes_submitted, (unsigned)ret);
            return 0;
        }
        if (ret == -EINTR)
            continue; /* a signal came while waiting; nothing was lost */
        if (ret != -EBUSY && ret != -EAGAIN)
            return ret;
        /* The kernel wants CQ room (completions parked aside on older
         * kernels) or memory before it takes more. The CQ's completions
         * move to the backlog, which makes the room; the caller's next
         * reap dispatches them (the rule at the top of this file). A
         * wait is over: completions are there. */
        int moved = backlog_take(l);
        if (moved < 0 || tries == 16)
            return ret;
        if (wait_nr && moved > 0)
            return 0;
    }
}

/* ---- batched wake-ups ---- */

/*
 * A sleeping loop is woken by the kernel at its first completion. With a
 * CPU to itself that is right: the CPU was idle, the wake costs nothing
 * but the switch, and waiting for more would only add latency. When the
 * thread shares its CPU with the threads whose work completes its
 * operations (a load client, other servers, a busy machine), each wake
 * makes it runnable for one completion, it waits for the CPU anyway, and
 * each of its turns takes one completion and one context switch from the
 * others. Then a sleep asks the kernel for a batch (wait_nr) and a
 * minimum wait (IORING_FEAT_MIN_TIMEOUT, 6.12): woken when the batch is
 * there, or wake_batch_us after the sleep began if anything is, else at
 * the first completion after that; never later than wake_batch_us for a
 * completion that came alone. (The minimum wait needs a general timeout
 * beside it, or the kernel ends the sleep when it passes, with nothing:
 * WAKE_LONGEST_NS.) With DEFER_TASKRUN the kernel counts the completions
 * without waking the thread.
 *
 * "Shares its CPU" is measured, not configured: the time the thread
 * spent runnable but waiting for a CPU (the second field of
 * /proc/thread-self/schedstat), read at most every 10 ms at a sleep. At
 * 10% of the wall time or more the loop batches, under it it does not
 * (measured on
 * the 2-vCPU VM of docs/benchmarks.md: a server sharing its CPU with its
 * load client waited 29-49% of the time, one with a CPU of its own under
 * an open-loop load 0.1-3%). Batched sleeps hide that wait (the thread is
 * not made runnable until the others have run), so after WAKE_PROBE_EVERY
 * batched windows one window of plain sleeps measures it again: a loop
 * that gets a CPU to itself stops batching within 100 ms. Waiting for the
 * CPU is why batching can pay, not proof that it does (where wake-ups are
 * cheap it cost a W6 server sharing its CPU 13-20% of its messages/s):
 * every WAKE_PROBE_EVERY + 1 windows one runs the other way (plain while
 * batching, batched while not), and the loop batches unless its batched
 * windows reaped WAKE_TIE times fewer completions per unit of time than
 * plain ones. The batch
 * adapts: it starts at 2, doubles
 * while batches fill before the minimum wait ends, and drops to what came
 * when one does not; a sleep that ended with one completion or none is
 * followed by a plain one. Kernels without the minimum wait (5.11-6.11)
 * get a plain timeout of wake_batch_us instead, which also ends a wait
 * that found nothing; kernels without IORING_FEAT_EXT_ARG, or a
 * /proc/thread-self that cannot be read, never batch.
 */
#define WAKE_SAMPLE_NS 10000000ull
#define WAKE_LONGEST_NS 1000000000ll /* a batched sleep's general timeout */
#define WAKE_PROBE_EVERY 9 /* windows one way between two the other way */
#define WAKE_TIE 0.97      /* batching kept unless it reaps 3% less */
#define IORING_FEAT_MIN_TIMEOUT_ (1u << 15) /* liburing 2.3 predates it */

/* struct io_uring_getevents_arg as 6.12 has it; liburing's own is named
 * after the release it comes from (pad, then min_wait_usec). */
struct getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec;
    uint64_t ts;
};
_Static_assert(sizeof(struct getevents_arg) ==
                   sizeof(struct io_uring_getevents_arg),
               "struct io_uring_getevents_arg changed");

unsigned rf__wake_batch_env(bool quiet)
{
    const char *env = getenv("RINGFIBER_WAKE_BATCH_US");
    if (!env || !*env)
        return RF_WAKE_BATCH_DEFAULT_US;
    char *end;
    errno = 0;
    unsigned long us = strtoul(env, &end, 10);
    if (errno || *end || us > RF_WAKE_BATCH_MAX_US) {
        if (!quiet)
            fprintf(stderr, "ringfiber: RINGFIBER_WAKE_BATCH_US=%s ignored (want "
                        "0..%u microseconds)\n", env, RF_WAKE_BATCH_MAX_US);
        return RF_WAKE_BATCH_DEFAULT_US;
    }
    return (unsigned)us; /* 0: never batch */
}

/* At rf_loop_new, on the loop's thread: the file is opened here, with
 * the loop's other descriptors, not at some later sleep. */
void rf__ring_wake_init(rf_loop *l, unsigned us)
{
    l->wake.fd = -1;
    l->wake.min_wait = (l->ring.features & IORING_FEAT_MIN_TIMEOUT_) != 0;
    l->wake.us = (l->ring.features & IORING_FEAT_EXT_ARG) ? us : 0;
    if (l->wake.us) {
        l->wake.fd =
            open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
        if (l->wake.fd < 0)
            l->wake.us = 0;
    }
}

void rf__ring_wake_fini(rf_loop *l)
{
    if (l->wake.fd >= 0)
        close(l->wake.fd);
    l->wake.fd = -1;
}

/* Whether this window's sleeps are batched: the thread waits for its CPU,
 * and batching is the way it does better, or is tried this window. */
static inline bool wake_batching(const rf_loop *l)
{
    return l->wake.contended && l->wake.losing == l->wake.probing;
}

/* Whether the thread waited for its CPU lately, and which way of sleeping
 * reaps more (see above); every WAKE_SAMPLE_NS at most. Turns batching
 * off for good if the file cannot be read. */
static void wake_sample(rf_loop *l, uint64_t now)
{
    if (now - l->wake.sample_at < WAKE_SAMPLE_NS)
        return;
    char buf[96];
    ssize_t n = pread(l->wake.fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        goto off;
    buf[n] = '\0';
    char *p = buf;
    (void)strtoull(p, &p, 10); /* time on the CPU */
    char *end;
    uint64_t delay = strtoull(p, &end, 10); /* time waiting for one */
    if (end == p)
        goto off;
    uint64_t cqes = l->stats.cqes_reaped; /* this thread writes it */
    if (l->wake.sample_at) {
        uint64_t wall = now - l->wake.sample_at;
        uint64_t waited = delay - l->wake.delay;
        uint64_t reaped = cqes - l->wake.cqes;
        if (!wake_batching(l)) {
            /* A window of plain sleeps: the wait for the CPU is the
             * thread's own. */
            bool was = l->wake.contended;
            l->wake.contended = waited * 10 >= wall;
            if (!l->wake.contended || !was) {
                l->wake.losing = l->wake.probing = false;
                l->wake.windows = 0;
                l->wake.sum_cqes = l->wake.sum_wall = 0;
                goto done;
            }
        }
        if (l->wake.probing) {
            /* The other way's window: judge it against this way's
             * windows before it, by completions reaped per unit of
             * time, batching kept on a tie (it costs fewer wake-ups). */
            if (l->wake.sum_wall) {
                double other = (double)reaped / (double)wall;
                double mine = (double)l->wake.sum_cqes /
                              (double)l->wake.sum_wall;
                l->wake.losing = l->wake.losing ? other < mine * WAKE_TIE
                                                : mine < other * WAKE_TIE;
            }
            l->wake.probing = false;
            l->wake.windows = 0;
            l->wake.sum_cqes = l->wake.sum_wall = 0;
        } else {
            l->wake.sum_cqes += reaped;
            l->wake.sum_wall += wall;
            /* Batched sleeps hide the wait for the CPU (the thread is not
             * woken until the others have run), and the other way may
             * have become the better: every WAKE_PROBE_EVERY windows, one
             * window the other way. */
            if (++l->wake.windows == WAKE_PROBE_EVERY)
                l->wake.probing = true;
        }
    }
done:
    l->wake.cqes = cqes;
    l->wake.sample_at = now;
    l->wake.delay = delay;
    return;
off:
    l->wake.us = 0;
    l->wake.contended = false;
}

/* Sleep for k completions (k >= 2) or the minimum wait; the SQ is empty. */
static int enter_batch(rf_loop *l, unsigned k)
{
    /* With the minimum wait: that, then the first completion, for at
     * most WAKE_LONGEST_NS; without: wake_batch_us, whatever came. */
    long long ns = l->wake.min_wait ? WAKE_LONGEST_NS
                                    : (long long)l->wake.us * 1000;
    struct __kernel_timespec ts = {ns / 1000000000ll, ns % 1000000000ll};
    struct getevents_arg arg = {
        .sigmask = 0,
        .sigmask_sz = _NSIG / 8,
        .min_wait_usec = l->wake.min_wait ? l->wake.us : 0,
        .ts = (uint64_t)(uintptr_t)&ts,
    };
    unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
    if (l->ring_fd_registered)
        flags |= IORING_ENTER_REGISTERED_RING;
    for (;;) {
        int ret = io_uring_enter2((unsigned)l->ring.enter_ring_fd, 0, k, flags,
                                  (sigset_t *)&arg, sizeof(arg));
        RF_STAT_ADD(l->stats.enters, 1);
        rf__clock_refresh(l);
        if (ret >= 0 || ret == -ETIME)
            return 0;
        if (ret == -EINTR)
            continue;
        /* Wants CQ room or memory: the caller's reap makes room. */
        if (ret == -EBUSY || ret == -EAGAIN)
            return 0;
        return ret;
    }
}

/*
 * loop_sleep's wait (loop.c): submit what is queued, sleep until a
 * completion (or, with may_batch, a batch of them, above), and reap. now:
 * the time the sleep began. Returns 0 or the ring's error.
 */
int rf__ring_sleep(rf_loop *l, uint64_t now, bool may_batch)
{
    unsigned k = 1;
    if (l->wake.us && may_batch && !l->backlog.n) {
        wake_sample(l, now);
        if (wake_batching(l) && !io_uring_sq_ready(&l->ring)) {
            k = l->wake.batch ? l->wake.batch : 2;
            unsigned cap = l->ring.cq.ring_entries / 2;
            if (k > cap)
                k = cap;
            if (k > l->inflight)
                k = (unsigned)l->inflight;
        }
    }
    if (k < 2) {
        l->wake.batch = 0; /* the next batched sleep starts at 2 */
        int rc = rf__ring_enter(l, 1);
        if (rc == 0)
            rf__ring_reap(l);
        return rc;
    }
    int rc = enter_batch(l, k);
    if (rc)
        return rc;
    RF_STAT_ADD(l->stats.wakes_batched, 1);
    unsigned n = rf__ring_reap(l);
    l->wake.batch = n >= k ? 2 * k : n >= 2 ? n : 1;
    return 0;
}

/* Only for a virtual clock's autojump (time.c): a real timeout on the
 * wait, as an argument of the enter (IORING_FEAT_EXT_ARG, checked when the
 * loop is made), not an SQE. */
int rf__ring_enter_timeout(rf_loop *l, uint64_t ns)
{
    if (rf_unlikely(l->backlog.n))
        return 0; /* completions are here: the caller's reap takes them */
    struct __kernel_timespec ts;
    rf__abs_timespec(&ts, ns); /* a relative timeout, the same split */
    for (;;) {
        struct io_uring_cqe *cqe;
        int ret = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts,
                                                   NULL);
        RF_STAT_ADD(l->stats.enters, 1);
        rf__clock_refresh(l);
        if (ret >= 0)
            return 0;
        if ((ret == -EBUSY || ret == -EAGAIN) && backlog_take(l) > 0)
            return 0; /* room made: the caller's reap takes them */
        if (ret != -EINTR)
            return ret; /* -ETIME: the time passed with nothing */
    }
}

/* A CQE to its record: an operation's waiter is made done (its task
 * woken); a handler's function runs; an RF_UD_IGNORE request (a cancel,
 * a timeout removal) is only counted. */
static inline bool is_op(uint64_t ud) { return (ud & 7) == 0 && ud != 0; }

/* An operation's: it only wakes a task, and never enters the kernel. */
static inline void dispatch_op(rf_loop *l, const struct io_uring_cqe *cqe)
{
    rf_op *op = (rf_op *)(uintptr_t)cqe->user_data;
    RF_STAT_SUB(l->inflight, !(cqe->flags & IORING_CQE_F_MORE));
    op->cflags = cqe->flags;
    rf__waiter_done(l, &op->w, cqe->res);
}

/* A handler's, or an RF_UD_IGNORE request's: the handler may take an
 * SQE, and so enter. */
static void dispatch_other(rf_loop *l, const struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    rf_handler *h = (ud & 7) == RF_UD_HANDLER ? (rf_handler *)(ud & ~7ULL)
                                              : NULL;
    if (!h || !h->uncounted)
        RF_STAT_SUB(l->inflight, !(cqe->flags & IORING_CQE_F_MORE));
    if (h)
        h->fn(l, h, cqe);
}

static inline void dispatch(rf_loop *l, const struct io_uring_cqe *cqe)
{
    if (rf_likely(is_op(cqe->user_data)))
        dispatch_op(l, cqe);
    else
        dispatch_other(l, cqe);
}

/* The backlog's completions, oldest first, with those a handler's enter
 * adds meanwhile (at the end). */
static unsigned backlog_dispatch(rf_loop *l)
{
    unsigned n = 0;
    while (l->backlog.head < l->backlog.n) {
        struct io_uring_cqe c = l->backlog.v[l->backlog.head++];
        dispatch(l, &c);
        n++;
    }
    l->backlog.head = l->backlog.n = 0;
    l->backlog.counted = false;
    RF_STAT_SUB(l->inflight, 1);
    return n;
}

/*
 * Dispatch every completion there is: the backlog's first (they are the
 * older), then the CQ's. A handler that takes an SQE in a full SQ may
 * enter, and that enter may move the rest of the CQ to the backlog: the
 * CQ's head is moved past a handler's completion before it runs (the
 * completion copied first: its slot is the kernel's then), and if the
 * backlog has grown the walk starts again from it, so that nothing is
 * dispatched twice or out of order. An operation's completion only wakes
 * a task: those move the head once, at the end of the walk.
 */
unsigned rf__ring_reap(rf_loop *l)
{
    struct io_uring *r = &l->ring;
    unsigned total = 0;
    if (rf_unlikely(l->delay_on)) /* the tasks its CQEs wake are ready now */
        l->delay_now = rf__real_now_ns();
    for (unsigned dry = 0;;) {
        if (rf_unlikely(l->backlog.n))
            total += backlog_dispatch(l);
        unsigned head = *r->cq.khead;
        unsigned tail = io_uring_smp_load_acquire(r->cq.ktail);
        if (head == tail) {
            /* The CQ was full and the kernel parked completions aside
             * (IORING_FEAT_NODROP); it has room now: have them moved in. */
            if (!io_uring_cq_has_overflow(r) || dry == 2)
                break;
            RF_STAT_ADD(l->stats.enters, 1);
            if (io_uring_get_events(r) < 0)
                break;
            dry++;
            continue;
        }
        dry = 0;
        do {
            const struct io_uring_cqe *cqe =
                &r->cq.cqes[head & r->cq.ring_mask];
            head++;
            total++;
            if (rf_likely(is_op(cqe->user_data))) {
                dispatch_op(l, cqe);
                continue;
            }
            struct io_uring_cqe c = *cqe;
            io_uring_smp_store_release(r->cq.khead, head);
            dispatch_other(l, &c);
            if (rf_unlikely(l->backlog.n))
                goto again; /* it moved the head on: not stored below */
        } while (head != tail);
        io_uring_smp_store_release(r->cq.khead, head);
    again:;
    }
    RF_STAT_ADD(l->stats.cqes_reaped, total);
    return total;
}

/*
 * rf_loop_free, where its run failed (a ring that refused work) or left
 * operations behind: have the kernel cancel every request of the ring
 * (IORING_REGISTER_SYNC_CANCEL with IORING_ASYNC_CANCEL_ANY, 6.0: a
 * register call, not an enter, so not refused like one; it waits for a
 * request already running, 100 ms at a time), dispatch what that
 * completes, and again until the kernel finds none, 1 s at most. The
 * kernel is asked, not the counters: SQEs still in the SQ are not in
 * it, and some of them (the mailbox's, an idle timeout's) are not
 * counted in inflight. Returns true once the kernel holds nothing of the
 * ring; false after 1 s (the caller keeps the memory operations may
 * write into). A kernel without the call has only the count to go by.
 */
bool rf__ring_settle(rf_loop *l)
{
    uint64_t deadline = rf__real_now_ns() + RF_NSEC_PER_SEC;
    for (;;) {
        struct io_uring_sync_cancel_reg reg;
        memset(&reg, 0, sizeof(reg));
        reg.fd = -1;
        reg.flags = IORING_ASYNC_CANCEL_ANY;
        reg.timeout.tv_nsec = 100 * 1000 * 1000;
        int found = io_uring_register_sync_cancel(&l->ring, &reg);
        RF_STAT_ADD(l->stats.enters, 1);
        (void)io_uring_get_events(&l->ring); /* what the cancels ended */
        rf__ring_reap(l);
        if (found == 0)
            return true; /* nothing of this ring in the kernel */
        if (found == -EINVAL)
            return l->inflight == 0; /* a kernel without it: the count */
        if (found < 0 && found != -ETIME && found != -EALREADY &&
            found != -EINTR)
            return false;
        if (rf__real_now_ns() >= deadline)
            return false;
    }
}

/* ---- set-up ---- */

bool rf__op_supported(const rf_loop *l, unsigned opcode)
{
    return opcode < 256 && (l->probe[opcode / 64] >> (opcode % 64) & 1);
}

void rf__op_report_missing(rf_loop *l, unsigned opcode, const char *what,
                           const char *instead)
{
    uint64_t bit = 1ULL << (opcode % 64);
    if (!(l->flags & RF_LOOP_QUIET) && !(l->op_warned[opcode / 64] & bit))
        fprintf(stderr,
                "ringfiber: %s: this kernel's io_uring lacks operation %u; "
                "%s (a newer kernel has it)\n",
                what, opcode, instead);
    l->op_warned[opcode / 64] |= bit;
}

/*
 * Tried in order; the first the kernel accepts wins. -EINVAL means "a flag
 * this kernel does not know": go down one rung. Any other error ends the
 * ladder, and rf__ring_setup returns it: -EPERM (io_uring disabled, or
 * forbidden by seccomp), -ENOSYS (no io_uring), -ENOMEM (the locked-memory
 * limit). rf_loop_new says why on stderr (rf__setup_error_report, error.c).
 *  - DEFER_TASKRUN (6.1): completions are processed only when this thread
 *    enters the kernel to wait, never by interrupting it; requires
 *    SINGLE_ISSUER, which our one-loop-per-thread model gives for free.
 *  - COOP_TASKRUN (5.19): no IPI to interrupt a running task.
 *  - TASKRUN_FLAG: the kernel raises IORING_SQ_TASKRUN when completions
 *    are waiting to be processed, so an end-of-pass check costs a load,
 *    not a system call.
 *  - SUBMIT_ALL: one bad SQE does not stop the rest of the batch.
 */
static const unsigned setup_ladder[] = {
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
        IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
        IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SUBMIT_ALL,
    0,
};

int rf__ring_setup(rf_loop *l, const rf_loop_opts *o)
{
    /* Sizes checked by rf_loop_new: no product below overflows. */
    unsigned sq = o->sq_entries ? o->sq_entries : 256;
    unsigned cq = o->cq_entries ? o->cq_entries : 4 * sq;
    if (!o->cq_entries && cq > 2 * RF_RING_MAX_ENTRIES)
        cq = 2 * RF_RING_MAX_ENTRIES;
    if (cq < sq)
        return -EINVAL;
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof(setup_ladder) / sizeof(setup_ladder[0]);
         i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = setup_ladder[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = cq;
        rc = io_uring_queue_init_params(sq, &l->ring, &p);
        if (rc == 0) {
            l->stats.ring_flags = p.flags;
            l->taskrun_flag = p.flags & IORING_SETUP_TASKRUN_FLAG;
            break;
        }
        if (rc != -EINVAL)
            break;
    }
    if (rc)
        return rc;
    /* Saves an fd lookup per io_uring_enter (5.18+); optional. */
    l->ring_fd_registered = io_uring_register_ring_fd(&l->ring) == 1;
    /* Which operations this kernel has: an operation it lacks is refused
     * with -EOPNOTSUPP before it reaches the ring (or takes a fallback). */
    struct io_uring_probe *p = io_uring_get_probe_ring(&l->ring);
    if (p) {
        for (unsigned i = 0; i < p->ops_len && i < 256; i++)
            if (p->ops[i].flags & IO_URING_OP_SUPPORTED)
                l->probe[p->ops[i].op / 64] |= 1ULL << (p->ops[i].op % 64);
        io_uring_free_probe(p);
    }
    return 0;
}
