/*
 * The way into a loop from other threads: offloaded calls coming back
 * (pool.c), work handed over by a host program (rf_loop_*_threadsafe).
 *
 * A mailbox of messages: other threads push onto a lock-free LIFO; the loop
 * takes the whole list with one exchange and runs the messages in the order
 * they were posted. The loop keeps a read of its eventfd in its ring while
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
 * not sleep, or the pusher sees the flag and writes. The eventfd counter
 * remembers a write made while no read was armed.
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
 */
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

/* The two halves of l->remote_posting (internal.h). */
#define RF_POSTERS_MASK 0xffffffffull
#define RF_SLOT (1ull << 32)

static void remote_woken(rf_loop *l, rf_handler *h,
                         const struct io_uring_cqe *cqe)
{
    (void)h;
    (void)cqe;
    l->remote_armed = false; /* the scheduler drains the mailbox */
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
    rf__remote_awake(l, false); /* not running yet: posts must wake it */
    return 0;
}

/* Keep a read of the eventfd in the ring; called before the loop sleeps. */
void rf__remote_arm(rf_loop *l)
{
    if (l->remote_armed)
        return;
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return; /* the SQ is full: this sleep ends on those CQEs anyway */
    RF_STAT_SUB(l->inflight, 1); /* see remote_h.uncounted */
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

/* Cancel the armed read and wait for its CQE; then close the eventfd. */
void rf__remote_fini(rf_loop *l)
{
    while ((__atomic_load_n(&l->remote_posting, __ATOMIC_ACQUIRE) &
            RF_POSTERS_MASK) != 0)
        sched_yield();
    if (l->remote_armed) {
        struct io_uring_sqe *sqe = rf__sqe_get(l);
        if (sqe) {
            io_uring_prep_cancel64(sqe, rf__handler_data(&l->remote_h), 0);
            io_uring_sqe_set_data64(sqe, RF_UD_IGNORE);
        } else {
            /* No SQE: complete the read the ordinary way. */
            uint64_t one = 1;
            (void)!write(l->remote_efd, &one, sizeof(one));
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
        __atomic_exchange_n(&l->remote_wake, 0, __ATOMIC_SEQ_CST)) {
        uint64_t one = 1;
        while (write(l->remote_efd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
        /* A loop driven from a host's poll (rf_loop_fd, embed.c) is woken
         * directly: the ring's read of remote_efd completes inside the
         * eventfd's wake-up, where the kernel defers the signal of the
         * ring's registered eventfd, and 6.18 delivers such a deferred
         * signal only once per registration. The push, this load,
         * rf_loop_fd's store and the drain's exchange are all seq_cst (on
         * x86 at no cost): a poster that sees no fd here pushed before
         * the host's first drain, which takes the message in. */
        int pfd = __atomic_load_n(&l->poll_efd, __ATOMIC_SEQ_CST);
        if (pfd >= 0)
            while (write(pfd, &one, sizeof(one)) < 0 && errno == EINTR)
                ;
    }
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
