/*
 * Channels between loops (rf_chan_*): a bounded channel whose receivers
 * are the tasks of one loop (the loop that created it) and whose senders
 * are tasks of any loop, or any thread for the calls that do not wait.
 *
 * The items are in a bounded ring with a sequence number per cell
 * (Vyukov's bounded queue): a sender claims a cell with one
 * compare-and-swap on the tail and publishes its item with a release
 * store of the cell's sequence; the receiving loop, the only consumer,
 * takes cells in order without an atomic read-modify-write. One sender's
 * items arrive in the order it sent them.
 *
 * Waking, batched. A receiver that finds the channel empty sets
 * rx_sleeping and looks again before it suspends; a sender that has
 * published an item clears rx_sleeping, and if it was set, posts the
 * channel's one wake message (wake_posted: at most one in the mailbox) to
 * the receiving loop (the mailbox, remote.c: one eventfd write, and only
 * if that loop sleeps). Both sides use sequentially consistent accesses
 * (Dekker's pattern, as the mailbox does), so either the receiver sees
 * the item or the sender sees the flag. A burst of N items to a receiver
 * that sleeps costs one message and at most one write, not N.
 *
 * Backpressure. A sender that finds the channel full pushes a record of
 * its own (on its stack) onto a lock-free stack, tx_head, and suspends.
 * Everything else about sender records happens on the receiving loop's
 * thread: it moves them into a FIFO list (tx_fifo) and answers each with
 * exactly one reply (to the sender's loop's mailbox): "room" when a
 * receiver has taken an item, "closed", or "gave up" to a sender whose
 * wait ended first (cancellation, deadline) and that sent the give_up
 * message on its record. One record, one reply, as an operation has one
 * final CQE; a give_up is acknowledged as well (it may still be in the
 * mailbox when the reply comes), and the sender waits for both before its
 * stack, which holds the record and its messages, can go. A sender that was answered "room" tries again (another
 * sender may have taken the room: it then waits again).
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Waiters on a task's stack are linked into the channel's lists and are
 * always unlinked before their function returns (see sync.c). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif

typedef struct chan_cell {
    uint64_t seq; /* __atomic */
    void *item;
} chan_cell;

/* A waiting sender (on its task's stack). */
typedef struct chan_tx {
    struct chan_tx *next;    /* tx_head, while there */
    rf_list node;            /* tx_fifo, on the receiving loop */
    rf_remote_msg give_up;   /* to the receiving loop */
    rf_xwait xw;             /* the sender's wait: the answer, the ack */
    struct rf_chan *ch;
    bool replied;            /* receiving loop only */
    bool in_fifo;            /* receiving loop only */
    int answer;              /* 0 room, -EPIPE closed, -ECANCELED gave up */
} chan_tx;

/* A waiting receiver (on its task's stack, on the receiving loop). */
typedef struct chan_rx {
    rf_list node;
    rf_waiter w;
} chan_rx;

struct rf_chan {
    /* the senders' side */
    uint64_t tail;          /* __atomic */
    chan_tx *tx_head;       /* __atomic: senders waiting for room */
    uint8_t rx_sleeping;    /* __atomic: a receiver waits, wake it */
    uint8_t wake_posted;    /* __atomic: wake_msg is in the mailbox */
    uint8_t closed;         /* __atomic */
    uint8_t close_posted;   /* __atomic: close_msg is in the mailbox */
    uint32_t users;         /* __atomic: senders inside a call */
    char pad_[64];
    /* the receiving loop's */
    rf_loop *loop;
    uint64_t head;
    uint64_t mask;
    rf_list rx_waiting;     /* chan_rx */
    rf_list tx_fifo;        /* chan_tx taken from tx_head */
    rf_remote_msg wake_msg;
    rf_remote_msg close_msg;
    chan_cell *cells;
};

/* ---- the ring ---- */

static bool ring_push(rf_chan *ch, void *item)
{
    uint64_t pos = __atomic_load_n(&ch->tail, __ATOMIC_RELAXED);
    for (;;) {
        chan_cell *c = &ch->cells[pos & ch->mask];
        uint64_t seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
        int64_t dif = (int64_t)(seq - pos);
        if (dif == 0) {
            if (__atomic_compare_exchange_n(&ch->tail, &pos, pos + 1, true,
                                            __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED)) {
                c->item = item;
                __atomic_store_n(&c->seq, pos + 1, __ATOMIC_SEQ_CST);
                return true;
            }
        } else if (dif < 0) {
            return false; /* full */
        } else {
            pos = __atomic_load_n(&ch->tail, __ATOMIC_RELAXED);
        }
    }
}

/* The receiving loop's thread only. */
static bool ring_pop(rf_chan *ch, void **item)
{
    chan_cell *c = &ch->cells[ch->head & ch->mask];
    uint64_t seq = __atomic_load_n(&c->seq, __ATOMIC_SEQ_CST);
    if (seq != ch->head + 1)
        return false; /* empty, or the next item not published yet */
    *item = c->item;
    /* seq_cst: the room made here and the waiting senders looked at next
     * (tx_room) are Dekker's pattern with a sender's push of its record
     * and its look at the room (rf_chan_send). */
    __atomic_store_n(&c->seq, ch->head + ch->mask + 1, __ATOMIC_SEQ_CST);
    ch->head++;
    return true;
}

static bool ring_full(rf_chan *ch)
{
    uint64_t pos = __atomic_load_n(&ch->tail, __ATOMIC_SEQ_CST);
    chan_cell *c = &ch->cells[pos & ch->mask];
    return (int64_t)(__atomic_load_n(&c->seq, __ATOMIC_SEQ_CST) - pos) < 0;
}

/* ---- the receiving loop's side ---- */

static void wake_receivers(rf_chan *ch)
{
    for (rf_list *n = ch->rx_waiting.next; n != &ch->rx_waiting; n = n->next)
        rf__waiter_done(ch->loop, &rf_container_of(n, chan_rx, node)->w, 0);
}

static void wake_run(rf_loop *l, rf_remote_msg *m)
{
    (void)l;
    rf_chan *ch = rf_container_of(m, rf_chan, wake_msg);
    __atomic_store_n(&ch->wake_posted, 0, __ATOMIC_SEQ_CST);
    wake_receivers(ch);
}

/* Answer tx (once). */
static void tx_answer(chan_tx *tx, int answer)
{
    tx->replied = true;
    tx->answer = answer;
    if (tx->in_fifo) {
        rf_list_remove(&tx->node);
        tx->in_fifo = false;
    }
    rf__xwait_reply(&tx->xw);
}

/* Move the senders waiting on tx_head into tx_fifo, oldest first. */
static void tx_collect(rf_chan *ch)
{
    if (!__atomic_load_n(&ch->tx_head, __ATOMIC_SEQ_CST))
        return;
    chan_tx *t = __atomic_exchange_n(&ch->tx_head, NULL, __ATOMIC_SEQ_CST);
    chan_tx *fifo = NULL;
    while (t) {
        chan_tx *next = t->next;
        t->next = fifo;
        fifo = t;
        t = next;
    }
    for (; fifo; fifo = fifo->next) {
        rf_list_push_back(&ch->tx_fifo, &fifo->node);
        fifo->in_fifo = true;
    }
}

/* An item was taken: room for the oldest waiting sender. */
static void tx_room(rf_chan *ch)
{
    tx_collect(ch);
    if (!rf_list_empty(&ch->tx_fifo))
        tx_answer(rf_container_of(ch->tx_fifo.next, chan_tx, node), 0);
}

static void give_up_run(rf_loop *l, rf_remote_msg *m)
{
    (void)l;
    chan_tx *tx = rf_container_of(m, chan_tx, give_up);
    tx_collect(tx->ch);
    if (!tx->replied)
        tx_answer(tx, -ECANCELED);
    /* The record, on the sender's stack, must outlive this message. */
    rf__xwait_ack(&tx->xw);
}

static void close_run(rf_loop *l, rf_remote_msg *m)
{
    (void)l;
    rf_chan *ch = rf_container_of(m, rf_chan, close_msg);
    __atomic_store_n(&ch->close_posted, 0, __ATOMIC_SEQ_CST);
    wake_receivers(ch);
    tx_collect(ch);
    while (!rf_list_empty(&ch->tx_fifo))
        tx_answer(rf_container_of(ch->tx_fifo.next, chan_tx, node), -EPIPE);
}

/* ---- the API ---- */

int rf_chan_new(rf_chan **out, size_t capacity)
{
    if (out)
        *out = NULL;
    if (!out || rf__size_check(capacity, 1, RF_CHAN_MAX))
        return -EINVAL;
    rf_loop *l = rf__tls_loop;
    if (!l)
        return -EPERM;
    /* A power of two, and at least 2: with one cell, a published cell's
     * sequence (pos + 1) would read as the next position's free cell. */
    size_t cap = 2;
    while (cap < capacity)
        cap *= 2;
    rf_chan *ch = calloc(1, sizeof(*ch));
    chan_cell *cells = calloc(cap, sizeof(*cells));
    if (!ch || !cells) {
        free(ch);
        free(cells);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cap; i++)
        cells[i].seq = i;
    ch->cells = cells;
    ch->mask = cap - 1;
    ch->loop = l;
    rf_list_init(&ch->rx_waiting);
    rf_list_init(&ch->tx_fifo);
    ch->wake_msg.run = wake_run;
    ch->close_msg.run = close_run;
    *out = ch;
    return 0;
}

/* A published item: wake the receiving loop if a receiver sleeps there. */
static void notify(rf_chan *ch)
{
    if (__atomic_load_n(&ch->rx_sleeping, __ATOMIC_SEQ_CST) &&
        __atomic_exchange_n(&ch->rx_sleeping, 0, __ATOMIC_SEQ_CST) &&
        !__atomic_exchange_n(&ch->wake_posted, 1, __ATOMIC_SEQ_CST))
        (void)rf__post_gated(ch->loop, &ch->wake_msg, false);
}

/* Senders count themselves for as long as they touch ch: rf_chan_free
 * waits until none is left (the receiver may take the last item, and free
 * the channel, before its sender has returned). */
static void users_enter(rf_chan *ch)
{
    __atomic_add_fetch(&ch->users, 1, __ATOMIC_SEQ_CST);
}

static void users_leave(rf_chan *ch)
{
    __atomic_sub_fetch(&ch->users, 1, __ATOMIC_RELEASE);
}

static int try_send(rf_chan *ch, void *item)
{
    if (__atomic_load_n(&ch->closed, __ATOMIC_SEQ_CST))
        return -EPIPE;
    if (!ring_push(ch, item))
        return -EAGAIN;
    notify(ch);
    return 0;
}

int rf_chan_try_send(rf_chan *ch, void *item)
{
    if (!ch)
        return -EINVAL;
    users_enter(ch);
    int rc = try_send(ch, item);
    users_leave(ch);
    return rc;
}

/* Send tx's give_up: answered by an ack as well as the reply. */
static bool tx_give_up(rf_loop *l, chan_tx *tx)
{
    rf__xwait_expect(l, &tx->xw);
    if (rf__post_gated(tx->ch->loop, &tx->give_up, false) == 0)
        return true;
    rf__xwait_cancel(l, &tx->xw);
    return false;
}

static int chan_send(rf_loop *l, rf_task *self, rf_chan *ch, void *item);

int rf_chan_send(rf_chan *ch, void *item)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!ch)
        return -EINVAL;
    if (!self)
        return -EPERM;
    users_enter(ch);
    int rc = chan_send(l, self, ch, item);
    users_leave(ch);
    return rc;
}

static int chan_send(rf_loop *l, rf_task *self, rf_chan *ch, void *item)
{
    for (;;) {
        int rc = try_send(ch, item);
        if (rc != -EAGAIN)
            return rc;
        rc = rf__wait_precheck(self);
        if (rc)
            return rc;
        chan_tx tx = {.ch = ch};
        tx.give_up.run = give_up_run;
        rf__xwait_begin(l, &tx.xw); /* the one answer to come */
        chan_tx *old = __atomic_load_n(&ch->tx_head, __ATOMIC_RELAXED);
        do
            tx.next = old;
        while (!__atomic_compare_exchange_n(&ch->tx_head, &old, &tx, true,
                                            __ATOMIC_SEQ_CST,
                                            __ATOMIC_RELAXED));
        /* Room may have come (or the channel closed) between the try and
         * the push, with nobody to see this record yet: give up at once,
         * and try again after the reply. */
        bool gave_up = false;
        if (!ring_full(ch) || __atomic_load_n(&ch->closed, __ATOMIC_SEQ_CST))
            gave_up = tx_give_up(l, &tx);
        rc = rf__waiter_wait(l, self, &tx.xw.w, RF_WAIT_ANY, RF_WAIT_ON_CHAN_SEND,
                             ch);
        if (rc < 0) {
            if (!gave_up)
                tx_give_up(l, &tx);
            /* the answer, the ack */
            rf__waiter_wait(l, self, &tx.xw.w, 0, RF_WAIT_ON_CHAN_SEND, ch);
        }
        tx.xw.w.task = NULL;
        if (rc < 0)
            return rc; /* not sent */
        if (tx.answer == -EPIPE)
            return -EPIPE;
    }
}

/* The receiving loop's thread; a task there for the waits. */
static int chan_check_rx(rf_chan *ch, rf_loop **lp)
{
    if (!ch)
        return -EINVAL;
    rf_loop *l = rf__tls_loop;
    if (!l)
        return -EPERM;
    if (l != ch->loop)
        return -EXDEV;
    *lp = l;
    return 0;
}

static int try_recv(rf_chan *ch, void **item)
{
    if (ring_pop(ch, item)) {
        tx_room(ch);
        return 0;
    }
    return __atomic_load_n(&ch->closed, __ATOMIC_SEQ_CST) ? -EPIPE : -EAGAIN;
}

int rf_chan_try_recv(rf_chan *ch, void **item)
{
    rf_loop *l;
    int rc = chan_check_rx(ch, &l);
    if (rc)
        return rc;
    if (!item)
        return -EINVAL;
    return try_recv(ch, item);
}

int rf_chan_recv(rf_chan *ch, void **item)
{
    rf_loop *l;
    int rc = chan_check_rx(ch, &l);
    if (rc)
        return rc;
    rf_task *self = l->current;
    if (!self)
        return -EPERM;
    if (!item)
        return -EINVAL;
    for (;;) {
        rc = try_recv(ch, item);
        if (rc != -EAGAIN)
            return rc;
        rc = rf__wait_precheck(self);
        if (rc)
            return rc;
        /* Say so, then look again (see the top). */
        __atomic_store_n(&ch->rx_sleeping, 1, __ATOMIC_SEQ_CST);
        rc = try_recv(ch, item);
        if (rc != -EAGAIN)
            return rc;
        /* Items come from other threads: while a receiver waits, its loop
         * waits for them rather than reporting that nothing can run. */
        chan_rx rx;
        rf_list_push_back(&ch->rx_waiting, &rx.node);
        l->remote_expected++;
        rc = rf__waiter_next(l, self, &rx.w, RF_WAIT_ANY, RF_WAIT_ON_CHAN_RECV, ch);
        l->remote_expected--;
        rf_list_remove(&rx.node);
        if (rc < 0)
            return rc; /* a wake-up wakes every receiver: none is lost */
    }
}

int rf_chan_close(rf_chan *ch)
{
    if (!ch)
        return -EINVAL;
    if (__atomic_exchange_n(&ch->closed, 1, __ATOMIC_SEQ_CST))
        return 0;
    if (!__atomic_exchange_n(&ch->close_posted, 1, __ATOMIC_SEQ_CST))
        (void)rf__post_gated(ch->loop, &ch->close_msg, false);
    return 0;
}

int rf_chan_free(rf_chan *ch)
{
    if (!ch)
        return 0;
    rf_loop *l;
    int rc = chan_check_rx(ch, &l);
    if (rc)
        return rc;
    if (!rf_list_empty(&ch->rx_waiting))
        return -EBUSY;
    /* Closed: senders that wait for room are answered -EPIPE, and new
     * ones refused. Then wait for the senders still inside a call (a few
     * instructions, or the round trip of a sender's give_up), running
     * this loop's mailbox meanwhile: that is where give_ups come, and
     * the channel's own messages must run before it is gone. */
    __atomic_store_n(&ch->closed, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        rf__remote_drain(l);
        tx_collect(ch);
        while (!rf_list_empty(&ch->tx_fifo))
            tx_answer(rf_container_of(ch->tx_fifo.next, chan_tx, node),
                      -EPIPE);
        if (__atomic_load_n(&ch->users, __ATOMIC_ACQUIRE) == 0 &&
            !__atomic_load_n(&ch->wake_posted, __ATOMIC_ACQUIRE) &&
            !__atomic_load_n(&ch->close_posted, __ATOMIC_ACQUIRE))
            break;
        sched_yield();
    }
    free(ch->cells);
    free(ch);
    return 0;
}
