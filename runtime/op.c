/*
 * The I/O path: every operation a task submits to the ring goes through
 * one record (rf_op, on the task's stack), one begin and one run.
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
 * (-ETIMEDOUT), a submission queue that stays full (-EBUSY). It keeps room
 * for a linked timeout right behind the operation: a link must not be
 * split across two submissions.
 *
 * run adds that timeout when the task has a deadline (absolute
 * CLOCK_MONOTONIC, IORING_OP_LINK_TIMEOUT), lists the operation in
 * loop->fd_ops while it is in flight on a descriptor (rf_close waits for
 * those), and suspends the task until the operation's final CQE. A
 * cancellation while it waits asks the kernel to cancel the operation and
 * keeps waiting for that same CQE: the task resumes only when the kernel
 * is done with the operation and its buffers. A timeout is mapped to
 * -ETIMEDOUT.
 *
 * The completion side is in ring.c (dispatch): the CQE's user_data is the
 * record's address; it stores the result, marks the record done and
 * wakes the task.
 */
#include <stdio.h>

#include "internal.h"

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

struct io_uring_sqe *rf__op_begin(rf_op *op, int fd, unsigned opcode,
                                  const char *what, int *err)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (rf_unlikely(!self)) {
        *err = -EPERM;
        return NULL;
    }
    /* NOP is in every io_uring: rf_nop, which inlines this, skips the
     * probe. */
    if (opcode != IORING_OP_NOP && rf_unlikely(!rf__op_supported(l, opcode))) {
        rf__op_report_missing(l, opcode, what, "the call returns EOPNOTSUPP");
        *err = -EOPNOTSUPP;
        return NULL;
    }
    int rc = rf__wait_precheck(self);
    if (rc) {
        *err = rc;
        return NULL;
    }
    if (rf_unlikely(self->deadline != 0) &&
        io_uring_sq_space_left(&l->ring) < 2 && rf__ring_enter(l, 0) < 0) {
        *err = -EBUSY;
        return NULL;
    }
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe) {
        *err = -EBUSY;
        return NULL;
    }
    /* The record is set up here, not where it is declared: only what is
     * read before the completion writes the rest. */
    op->w.task = self;
    op->loop = l;
    op->w.done = false;
    op->fd = fd;
    op->closer = NULL;
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
    rf_list_push_back(&op->loop->fd_ops, &op->node);
}

void rf__op_untrack(rf_op *op)
{
    rf_list_remove(&op->node);
    if (op->closer)
        rf__close_release(op->loop, op->closer);
}

/* Suspend until op's final CQE, whatever happens: cancellation asks the
 * kernel to end op early, and waits on. */
static int op_wait(rf_loop *l, rf_task *self, rf_op *op)
{
    if (rf__waiter_wait(l, self, &op->w, RF_WAIT_CANCEL) < 0) {
        rf__op_cancel(l, op);
        rf__waiter_wait(l, self, &op->w, 0);
    }
    op->w.task = NULL;
    return op->w.res;
}

int rf__op_run(rf_op *op, struct io_uring_sqe *sqe)
{
    rf_loop *l = op->loop;
    rf_task *self = op->w.task;
    io_uring_sqe_set_data(sqe, op);
    uint64_t deadline = self->deadline;
    if (rf_unlikely(deadline != 0)) {
        struct io_uring_sqe *lt = rf__sqe_get(l); /* room kept by begin */
        if (lt) {
            /* The kernel reads the timespec when the pass is submitted;
             * the task's copy lives until then (the task waits below).
             * The timeout's own CQE (-ETIME if it fired, -ECANCELED if
             * the operation completed first) is only counted, not
             * waited for: waiting would cost a second io_uring_enter per
             * operation. The operation's result tells what happened: a
             * cancellation the task did not ask for, at or after the
             * deadline, is the timeout. */
            sqe->flags |= IOSQE_IO_LINK;
            io_uring_prep_link_timeout(lt, &self->deadline_ts,
                                       IORING_TIMEOUT_ABS);
            io_uring_sqe_set_data64(lt, RF_UD_IGNORE);
        }
    }
    if (op->fd >= 0)
        rf__op_track(op);
    int res = op_wait(l, self, op);
    if (op->fd >= 0)
        rf__op_untrack(op);
    if (rf_unlikely(deadline != 0) && (res == -ECANCELED || res == -EINTR) &&
        !self->cancelled && rf_now_ns() >= deadline)
        return -ETIMEDOUT;
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
