/*
 * The way into a loop from other threads: offloaded calls coming back
 * (pool.c), work handed over by a host program (rf_loop_*_threadsafe).
 *
 * A mailbox of messages: other threads push onto a lock-free LIFO; the loop
 * takes the whole list with one exchange and runs the messages in the order
 * they were posted. The loop keeps a wait for its eventfd in its ring while
 * it sleeps, and says so in remote_wake before it sleeps; the first pusher
 * that finds remote_wake set clears it and writes the eventfd. So a burst
 * of N messages costs one write and wakes the loop once, and a loop that
 * is busy finds the mail at its next pass end without anyone writing at
 * all (a busy loop drains its mailbox often: a write each time it found
 * the mailbox empty would cost a system call per message).
 *
 * No message is missed: the loop sets remote_wake and then looks at the
 * mailbox; a pusher pushes and then looks at remote_wake (both sequentially
 * consistent, Dekker's pattern): either the loop sees the message and does
 * not sleep, or the pusher sees the flag and writes. A write made while
 * no wait was armed is not lost: the eventfd stays readable, and a wait
 * armed later completes at once.
 *
 * The mailbox is bounded for what users post (rf_loop_spawn_threadsafe,
 * rf_loop_call_threadsafe): a poster takes a slot before it pushes, in the
 * same atomic add that counts it in remote_posting (the high half of that
 * word counts slots), and is refused with -EAGAIN when none is left; the
 * loop gives the slots of a whole drain back with one subtraction. So a
 * post still costs three atomic read-modify-writes, as before the bound
 * (W9_call_threadsafe, same run: 47.9 ns against 44.1 ns unbounded,
 * medians of 10, inside this benchmark's run-to-run spread). The runtime's own
 * messages are not counted: pool completions are bounded by the pool's
 * queue, and a stop or shutdown request is one message that lives in the
 * loop, so a full mailbox can never keep a loop from being stopped.
 *
 * The eventfd is blocking on purpose: io_uring returns -EAGAIN for a read
 * of an O_NONBLOCK file that has nothing to read, instead of waiting.
 *
 * Two ways to wake, chosen by measurement. A poster that runs on another
 * loop may instead submit an IORING_OP_MSG_RING from its own ring, which
 * puts a CQE in the sleeping loop's ring without a file in between.
 * Both loops must ask (RF_LOOP_WAKE_MSG_RING) and run with DEFER_TASKRUN.
 * Threads without a ring always write the eventfd, so the wait stays
 * armed either way. Measured on 6.18, 2 vCPUs, one run with
 * both (bench/ringfiber_bench, S1_cross_loop_pingpong*, S2_*, medians of
 * 12 interleaved repetitions): a round trip between two loops 25.7 us by
 * MSG_RING, 24.6 us by eventfd (the floor of each, two bare threads on two
 * CPUs: 22.6 and 20.5 us); a stream of messages 3.12 M/s by MSG_RING, 3.38
 * M/s by eventfd. The ring wakes the receiver sooner, so it sleeps and is
 * woken again more often (9.7 wake-ups per 1,000 messages against 5.0),
 * each costing the sender a system call. So the eventfd is the default,
 * and MSG_RING the option (docs/loops.md, "Waking a loop").
 */
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

/* The two halves of l->remote_posting (internal.h). */
#define RF_POSTERS_MASK 0xffffffffull
#define RF_SLOT (1ull << 32)

/* The eventfd became readable (the scheduler drains the mailbox), or the
 * wait for it ended (its cancellation at the end). */
static void remote_woken(rf_loop *l, rf_handler *h,
                         const struct io_uring_cqe *cqe)
{
    (void)h;
    if (!(cqe->flags & IORING_CQE_F_MORE))
        l->remote_armed = false; /* re-armed before the next sleep */
    if (cqe->res > 0)
        RF_STAT_ADD(l->stats.wakeups_eventfd, 1);
}

/* The CQE another loop's IORING_OP_MSG_RING put in this loop's ring. */
static void remote_woken_by_ring(rf_loop *l, rf_handler *h,
                                 const struct io_uring_cqe *cqe)
{
    (void)h;
    (void)cqe;
    RF_STAT_ADD(l->stats.wakeups_msg_ring, 1);
}

/* A MSG_RING this loop sent failed (its CQE: successes post none). The
 * wake it carried was made by eventfd (wake_by_ring saw the failure when
 * it submitted); this loop sends by eventfd from now on. */
static void wake_ring_failed(rf_loop *l, rf_handler *h,
                             const struct io_uring_cqe *cqe)
{
    (void)h;
    (void)cqe;
    l->wake_ring = false;
}

int rf__remote_init(rf_loop *l)
{
    l->remote_efd = eventfd(0, EFD_CLOEXEC);
    if (l->remote_efd < 0)
        return -errno;
    l->remote_h.fn = remote_woken;
    /* Not an operation anyone waits for: it must not keep a loop from
     * reporting a deadlock, nor cost the pass end its fast path. */
    l->remote_h.uncounted = true;
    l->remote_poll = l->stats.ring_flags & (IORING_SETUP_DEFER_TASKRUN |
                                            IORING_SETUP_COOP_TASKRUN);
    l->ring_woken_h.fn = remote_woken_by_ring;
    l->ring_woken_h.uncounted = true;
    l->wake_fail_h.fn = wake_ring_failed;
    l->wake_fail_h.uncounted = true;
    /* MSG_RING between rings that run their completions on their own
     * thread (DEFER_TASKRUN, 6.1+): the kernel posts the CQE from that
     * thread's task work, so a message needs no lock on the target's
     * ring and its outcome is known when the sender's submit returns. */
    l->wake_ring = (l->flags & RF_LOOP_WAKE_MSG_RING) &&
                   rf__op_supported(l, IORING_OP_MSG_RING) &&
                   (l->stats.ring_flags & IORING_SETUP_DEFER_TASKRUN);
    rf__remote_awake(l, false); /* not running yet: posts must wake it */
    return 0;
}

/*
 * Keep a wait for the eventfd in the ring; called before the loop sleeps.
 * A multishot poll where the kernel has it (5.13; taken as there with the
 * task-run flags of 5.19+): it stays armed across wake-ups and posts a CQE
 * for each write (io_uring's polls are edge-triggered), so the counter
 * needs no read and the wait no re-arming; the counter only grows, by
 * one per wake, never near its 2^64 limit. Else a read, re-armed after
 * each wake.
 */
void rf__remote_arm(rf_loop *l)
{
    if (l->remote_armed)
        return;
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return; /* the SQ is full: this sleep ends on those CQEs anyway */
    RF_STAT_SUB(l->inflight, 1); /* see remote_h.uncounted */
    if (l->remote_poll)
        io_uring_prep_poll_multishot(sqe, l->remote_efd, POLLIN);
    else
        io_uring_prep_read(sqe, l->remote_efd, &l->remote_buf,
                           sizeof(l->remote_buf), 0);
    io_uring_sqe_set_data64(sqe, rf__handler_data(&l->remote_h));
    l->remote_armed = true;
}

/*
 * Whether posters must wake the loop (remote_wake set: the loop sleeps in
 * the ring, or is not running at all, e.g. between two rf_loop_run_once
 * calls of a host) or not (the loop runs and looks at the mailbox at its
 * pass ends and before it sleeps).
 */
void rf__remote_awake(rf_loop *l, bool awake)
{
    __atomic_store_n(&l->remote_wake, awake ? 0u : 1u, __ATOMIC_SEQ_CST);
}

/* Cancel the armed wait and wait for its last CQE; then close the
 * eventfd. */
void rf__remote_fini(rf_loop *l)
{
    while ((__atomic_load_n(&l->remote_posting, __ATOMIC_ACQUIRE) &
            RF_POSTERS_MASK) != 0)
        sched_yield();
    if (l->remote_armed) {
        struct io_uring_sqe *sqe = rf__sqe_get(l);
        /* A multishot poll ends only when cancelled: make room for the
         * cancel (completions reaped free CQ room for the SQ to drain). */
        while (!sqe && l->remote_poll) {
            if (rf__ring_enter(l, 1) < 0)
                break;
            rf__ring_reap(l);
            sqe = rf__sqe_get(l);
        }
        if (sqe) {
            io_uring_prep_cancel64(sqe, rf__handler_data(&l->remote_h), 0);
            io_uring_sqe_set_data64(sqe, RF_UD_IGNORE);
        } else if (!l->remote_poll) {
            /* No SQE: complete the read the ordinary way. */
            uint64_t one = 1;
            (void)!write(l->remote_efd, &one, sizeof(one));
        } else {
            /* The ring refuses work: the poll dies with it. */
            l->remote_armed = false;
        }
        while (l->remote_armed || l->inflight) {
            if (rf__ring_enter(l, 1) < 0)
                break;
            rf__ring_reap(l);
        }
    }
    if (l->remote_efd >= 0)
        close(l->remote_efd);
    l->remote_efd = -1;
}

/*
 * From a task or handler of another loop: wake l through the ring, with
 * an IORING_OP_MSG_RING submitted from this loop's ring at once. Returns
 * false if it could not (no SQE, a failed submit, the message refused):
 * the caller writes the eventfd. The caller is counted in l's
 * remote_posting, so l's ring is open until this returns; once the submit
 * has returned the kernel holds what it needs of it.
 */
static bool wake_by_ring(rf_loop *self, rf_loop *l)
{
    struct io_uring_sqe *sqe = rf__sqe_get(self);
    if (!sqe)
        return false;
    RF_STAT_SUB(self->inflight, 1); /* a success posts no CQE here */
    io_uring_prep_msg_ring(sqe, l->ring.ring_fd, 0,
                           rf__handler_data(&l->ring_woken_h), 0);
    io_uring_sqe_set_data64(sqe, rf__handler_data(&self->wake_fail_h));
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    /* One plain submit, not rf__ring_enter: a refusal leaves the SQE in
     * the SQ, which is what is looked at below. */
    int ret;
    do
        ret = io_uring_submit(&self->ring);
    while (ret == -EINTR);
    RF_STAT_ADD(self->stats.enters, 1);
    if (ret > 0)
        RF_STAT_ADD(self->stats.sqes_submitted, (unsigned)ret);
    if (io_uring_sq_ready(&self->ring)) {
        /* Not submitted (the kernel refused the batch): the SQE must not
         * reach l's ring after this returns. Make it a no-op. */
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, RF_UD_IGNORE);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        return false;
    }
    /* A refusal is posted while the submit runs: look for it. */
    unsigned head;
    struct io_uring_cqe *cqe;
    uint64_t mine = rf__handler_data(&self->wake_fail_h);
    io_uring_for_each_cqe(&self->ring, head, cqe)
    {
        if (cqe->user_data == mine && cqe->res < 0) {
            self->wake_ring = false;
            return false;
        }
    }
    return true;
}

/* Wake l, whose remote_wake this thread has just cleared. */
static void remote_wake_up(rf_loop *l)
{
    rf_loop *self = rf__tls_loop;
    /* A host polling rf_loop_fd is woken by its own eventfd (below). */
    int pfd = __atomic_load_n(&l->poll_efd, __ATOMIC_SEQ_CST);
    if (self && self != l && self->wake_ring && l->wake_ring && pfd < 0 &&
        wake_by_ring(self, l))
        return;
    uint64_t one = 1;
    while (write(l->remote_efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    /* A loop driven from a host's poll (rf_loop_fd, embed.c) is woken
     * directly: the ring's wait for remote_efd completes inside the
     * eventfd's wake-up, where the kernel defers the signal of the
     * ring's registered eventfd, and 6.18 delivers such a deferred
     * signal only once per registration. The push, this load,
     * rf_loop_fd's store and the drain's exchange are all seq_cst (on
     * x86 at no cost): a poster that sees no fd here pushed before
     * the host's first drain, which takes the message in. */
    if (pfd >= 0)
        while (write(pfd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
}

/* Push m; any thread. m stays the caller's until its run() is called.
 *
 * The loop may run m, and its owner free the loop, as soon as m is pushed:
 * before this function has written the eventfd. So a poster counts itself
 * in remote_posting (the callers below, before they push) for as long as
 * it touches l, and rf__remote_fini waits until no poster is left (a few
 * instructions and one write). */
static void remote_push(rf_loop *l, rf_remote_msg *m)
{
    rf_remote_msg *old = __atomic_load_n(&l->remote_head, __ATOMIC_RELAXED);
    do
        m->next = old;
    while (!__atomic_compare_exchange_n(&l->remote_head, &old, m, true,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    if (__atomic_load_n(&l->remote_wake, __ATOMIC_SEQ_CST) &&
        __atomic_exchange_n(&l->remote_wake, 0, __ATOMIC_SEQ_CST))
        remote_wake_up(l);
    __atomic_sub_fetch(&l->remote_posting, 1, __ATOMIC_RELEASE);
}

/* Any thread: one of the runtime's own messages, never refused. */
void rf__remote_post(rf_loop *l, rf_remote_msg *m)
{
    __atomic_add_fetch(&l->remote_posting, 1, __ATOMIC_RELAXED);
    m->counted = false;
    remote_push(l, m);
}

/* Any thread: post a user's request if the mailbox has room; -EAGAIN if
 * not. The slot count is a bound, not a synchronisation: relaxed. */
int rf__remote_post_counted(rf_loop *l, rf_remote_msg *m)
{
    uint64_t v = __atomic_add_fetch(&l->remote_posting, 1 + RF_SLOT,
                                    __ATOMIC_RELAXED);
    if ((v >> 32) > l->mail_cap) {
        /* Counted while still counted as a poster: l is alive. */
        __atomic_add_fetch(&l->mail_refused, 1, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&l->remote_posting, 1 + RF_SLOT, __ATOMIC_RELEASE);
        return -EAGAIN;
    }
    m->counted = true;
    remote_push(l, m);
    return 0;
}

/* Loop thread, before it sleeps in the ring: false if mail has come (drain
 * it instead of sleeping); else the next pusher will wake the loop. */
bool rf__remote_sleep_begin(rf_loop *l)
{
    rf__remote_arm(l);
    rf__remote_awake(l, false);
    if (__atomic_load_n(&l->remote_head, __ATOMIC_SEQ_CST) == NULL)
        return true;
    rf__remote_awake(l, true);
    return false;
}

/* Loop thread: run every message posted so far, oldest first. Returns
 * whether there were any. */
bool rf__remote_drain(rf_loop *l)
{
    rf_remote_msg *m = __atomic_exchange_n(&l->remote_head, NULL,
                                           __ATOMIC_SEQ_CST);
    if (!m)
        return false;
    if (rf_unlikely(l->delay_on)) /* the tasks its messages wake */
        l->delay_now = rf__real_now_ns();
    rf_remote_msg *fifo = NULL;
    uint64_t counted = 0;
    while (m) {
        rf_remote_msg *next = m->next;
        counted += m->counted;
        m->next = fifo;
        fifo = m;
        m = next;
    }
    /* Taken in: their slots are free before they run (a spawn becomes a
     * task, and tasks are not the mailbox's to bound). */
    if (counted)
        __atomic_sub_fetch(&l->remote_posting, counted * RF_SLOT,
                           __ATOMIC_RELAXED);
    while (fifo) {
        rf_remote_msg *next = fifo->next;
        fifo->run(l, fifo); /* may free fifo */
        fifo = next;
    }
    return true;
}

/* ---- a task's request to another loop (internal.h, rf_xwait) ---- */

/* On the origin: one of the messages x waits for has come. */
static void xwait_arrived(rf_loop *l, rf_xwait *x)
{
    l->remote_expected--;
    if (--x->expect == 0)
        rf__waiter_done(l, &x->w, 0);
}

static void xwait_reply_run(rf_loop *l, rf_remote_msg *m)
{
    xwait_arrived(l, rf_container_of(m, rf_xwait, reply));
}

static void xwait_ack_run(rf_loop *l, rf_remote_msg *m)
{
    xwait_arrived(l, rf_container_of(m, rf_xwait, ack));
}

/* On the origin, before the request is posted: one reply to come. */
void rf__xwait_begin(rf_loop *l, rf_xwait *x)
{
    x->w = (rf_waiter){0};
    x->origin = l;
    x->expect = 1;
    l->remote_expected++;
}

/* On the origin: one message more to come (an ack for a give-up, posted
 * by the caller right after). */
void rf__xwait_expect(rf_loop *l, rf_xwait *x)
{
    x->expect++;
    l->remote_expected++;
}

/* On the origin: the message counted last will not come (its post was
 * refused). */
void rf__xwait_cancel(rf_loop *l, rf_xwait *x)
{
    x->expect--;
    l->remote_expected--;
}

/* On the other loop: the reply (once). */
void rf__xwait_reply(rf_xwait *x)
{
    x->reply.run = xwait_reply_run;
    rf__remote_post(x->origin, &x->reply);
}

/* On the other loop: a give-up has run. */
void rf__xwait_ack(rf_xwait *x)
{
    x->ack.run = xwait_ack_run;
    rf__remote_post(x->origin, &x->ack);
}
