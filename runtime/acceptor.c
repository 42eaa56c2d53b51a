/*
 * The multishot acceptor (rf_acceptor_open, rf_acceptor_next,
 * rf_acceptor_close) and what the loop and rf_close do to acceptors left
 * open (rf__acceptors_release, rf__acceptors_fd_closed). One accept at a
 * time, rf_accept, is in net.c, whose out-of-descriptors backoff
 * (rf__accept_backoff) both use.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/*
 * The multishot acceptor: one IORING_OP_ACCEPT with IORING_ACCEPT_MULTISHOT
 * stays armed and posts a CQE per connection to a handler, which queues
 * the new fd; rf_acceptor_next takes them one by one. The kernel ends the
 * multishot on an error (a CQE without IORING_CQE_F_MORE); the next call
 * re-arms it, after the backoff if the error was EMFILE/ENFILE.
 *
 * The queue is bounded: once RF_ACCEPTOR_QUEUE connections wait in it,
 * the multishot is cancelled (a pause, counted in acceptor_pauses), and
 * further clients wait in the kernel's listen backlog, where they cost
 * no fd and where the backlog's own limit holds them back, until the
 * tasks have taken the queue down to half; then it is re-armed. A few
 * more may arrive between the cancellation's submission and its effect;
 * they are queued too. Without the pause, a server that falls behind
 * would hold every waiting client as an fd of its own, without limit.
 */
struct rf_acceptor {
    rf_handler h;
    rf_list node;    /* loop->acceptors */
    rf_loop *loop;
    int lfd;
    int flags;
    bool armed;      /* the multishot accept is in the ring */
    bool paused;     /* cancelled for a full queue; its final CQE is no
                      * error (cleared at every arm) */
    bool closing;
    bool orphan;     /* the loop is being freed: free at the last CQE */
    int err;         /* error of the last final CQE, 0 none */
    rf_waiter w;     /* the task in rf_acceptor_next, or in close: done
                      * at each CQE (and when its socket is closed) */
    int *q;          /* accepted fds, FIFO */
    uint32_t qcap, qhead, qlen;
    uint16_t gen;    /* handle generation (internal.h): kept across reuse */
};

/* Close the fds still queued and recycle the record: its handle is stale
 * from now on (the record itself lives until the loop is freed). */
static void acceptor_free(rf_acceptor *a)
{
    while (a->qlen) {
        close(a->q[a->qhead]);
        a->qhead = (a->qhead + 1) % a->qcap;
        a->qlen--;
    }
    rf_list_remove(&a->node);
    free(a->q);
    a->q = NULL;
    a->gen++;
    rf_list_push_back(&a->loop->free_acceptors, &a->node);
}

/* The record of a non-NULL acceptor handle, or NULL if it is stale. */
static rf_acceptor *acceptor_record(const rf_acceptor *h)
{
    rf_acceptor *a = rf__untag(h);
    return a->gen == rf__tag_gen(h) ? a : NULL;
}

static bool acceptor_cancel(rf_acceptor *a)
{
    struct io_uring_sqe *sqe = rf__sqe_get(a->loop);
    if (!sqe)
        return false;
    io_uring_prep_cancel64(sqe, rf__handler_data(&a->h), 0);
    io_uring_sqe_set_data64(sqe, RF_UD_IGNORE);
    return true;
}

static void acceptor_cqe(rf_loop *l, rf_handler *h,
                         const struct io_uring_cqe *cqe)
{
    rf_acceptor *a = (rf_acceptor *)h;
    if (!(cqe->flags & IORING_CQE_F_MORE))
        a->armed = false;
    if (a->orphan) {
        if (cqe->res >= 0)
            close(cqe->res);
        if (!a->armed && a->w.task)
            rf__waiter_done(l, &a->w, 0); /* it sees orphan and returns */
        else if (!a->armed && !a->closing)
            acceptor_free(a);
        return;
    }
    if (cqe->res >= 0) {
        if (a->qlen == a->qcap) {
            uint32_t ncap = a->qcap ? 2 * a->qcap : 16;
            int *nq = malloc(ncap * sizeof(*nq));
            if (!nq) {
                close(cqe->res); /* the client sees a reset */
                goto wake;
            }
            for (uint32_t i = 0; i < a->qlen; i++)
                nq[i] = a->q[(a->qhead + i) % a->qcap];
            free(a->q);
            a->q = nq;
            a->qcap = ncap;
            a->qhead = 0;
        }
        a->q[(a->qhead + a->qlen++) % a->qcap] = cqe->res;
        if (a->armed && !a->paused && !a->closing &&
            a->qlen >= RF_ACCEPTOR_QUEUE && acceptor_cancel(a)) {
            a->paused = true;
            RF_STAT_ADD(l->stats.acceptor_pauses, 1);
        }
    } else if (!a->armed && !(a->paused && cqe->res == -ECANCELED)) {
        a->err = cqe->res;
    }
wake:
    rf__waiter_done(l, &a->w, 0);
}

static int acceptor_arm(rf_acceptor *a)
{
    if (a->lfd < 0)
        return -ECANCELED; /* its listening socket was closed */
    rf_loop *l = a->loop;
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_multishot_accept(sqe, a->lfd, NULL, NULL, a->flags);
    io_uring_sqe_set_data64(sqe, rf__handler_data(&a->h));
    a->armed = true;
    a->paused = false;
    return 0;
}

int rf_acceptor_open(int lfd, int flags, rf_acceptor **out)
{
    if (!out)
        return -EFAULT;
    *out = NULL;
    if (lfd < 0)
        return -EBADF;
    rf_loop *l = rf__tls_loop;
    if (!l || !l->current)
        return -EPERM;
    if (!rf__op_supported(l, IORING_OP_ACCEPT)) {
        rf__op_report_missing(l, IORING_OP_ACCEPT, "rf_acceptor_open",
                              "the call returns EOPNOTSUPP");
        return -EOPNOTSUPP;
    }
    rf_acceptor *a;
    rf_list *n = rf_list_pop_front(&l->free_acceptors);
    uint16_t gen = 0;
    if (n) {
        a = rf_container_of(n, rf_acceptor, node);
        gen = a->gen;
    } else {
        a = malloc(sizeof(*a));
        if (!a)
            return -ENOMEM;
        if (!rf__taggable((char *)a + sizeof(*a))) {
            free(a); /* no room for a handle's generation: internal.h */
            return -ENOMEM;
        }
    }
    memset(a, 0, sizeof(*a));
    a->gen = gen;
    a->h.fn = acceptor_cqe;
    a->loop = l;
    a->lfd = lfd;
    a->flags = flags;
    rf_list_push_back(&l->acceptors, &a->node);
    *out = rf__tag(a, a->gen);
    return 0;
}

/* The checks of next and close on a non-NULL handle h: its record, the
 * calling task, its loop, and nobody else inside. */
static int acceptor_enter(const char *call, rf_acceptor *h, rf_acceptor **ap,
                          rf_task **selfp)
{
    rf_acceptor *a = acceptor_record(h);
    if (!a)
        return rf__stale(call);
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    if (a->loop != l)
        return -EXDEV;
    if (a->w.task || a->closing)
        return -EBUSY;
    *ap = a;
    *selfp = self;
    return 0;
}

int rf_acceptor_next(rf_acceptor *h)
{
    if (!h)
        return -EINVAL;
    rf_acceptor *a = NULL;
    rf_task *self = NULL;
    int rc = acceptor_enter("rf_acceptor_next", h, &a, &self);
    if (rc)
        return rc;
    rf_loop *l = a->loop;
    /* Sticky, as for every call: even with a connection queued. */
    rc = rf__wait_precheck(self);
    if (rc)
        return rc;
    uint64_t backoff = RF_ACCEPT_BACKOFF_MIN;
    rc = 0;
    self->in_accept = true;
    for (;;) {
        if (l->accept_stopped) {
            rc = -ESHUTDOWN;
            break;
        }
        if (a->orphan) {
            rc = -ECANCELED;
            break;
        }
        if (a->qlen) {
            rc = a->q[a->qhead];
            a->qhead = (a->qhead + 1) % a->qcap;
            a->qlen--;
            /* Paused for a full queue and now half empty: accept again
             * while the tasks take the rest (or at the next call, if no
             * SQE is free now). */
            if (!a->armed && !a->err && a->qlen <= RF_ACCEPTOR_QUEUE / 2)
                (void)acceptor_arm(a);
            break;
        }
        if (a->err) {
            rc = a->err;
            a->err = 0;
            if (rc == -EMFILE || rc == -ENFILE) {
                rc = rf__accept_backoff(l, &backoff);
                if (rc)
                    break;
                continue;
            }
            break;
        }
        if (!a->armed && (rc = acceptor_arm(a)) != 0)
            break;
        rc = rf__waiter_next(l, self, &a->w, RF_WAIT_ANY, RF_WAIT_ON_ACCEPT,
                             RF_ON_FD(a->lfd));
        if (rc && !a->qlen)
            break;
        /* A connection that came with the cancellation is handed over;
         * the cancellation shows at the next call. */
    }
    self->in_accept = false;
    if (rc < 0 && rc != -ETIMEDOUT && l->accept_stopped)
        rc = -ESHUTDOWN;
    rf__recvq_fd_made(l, rc);
    return rc;
}

int rf_acceptor_close(rf_acceptor *h)
{
    if (!h)
        return 0;
    rf_acceptor *a = NULL;
    rf_task *self = NULL;
    int rc = acceptor_enter("rf_acceptor_close", h, &a, &self);
    if (rc)
        return rc;
    rf_loop *l = a->loop;
    a->closing = true;
    if (a->armed) {
        /* The multishot must end before the record goes: make room for
         * the cancel if need be (bounded: a ring that takes nothing is
         * broken), and try again at each wake-up until one is sent. */
        bool sent = false;
        for (int tries = 0; tries < 100 && !sent; tries++)
            if (!(sent = acceptor_cancel(a)))
                rf__ring_enter(l, 0);
        while (a->armed) {
            rf__waiter_next(l, self, &a->w, 0, RF_WAIT_ON_ACCEPT, RF_ON_FD(a->lfd));
            if (a->armed && !sent)
                sent = acceptor_cancel(a);
        }
    }
    acceptor_free(a);
    return 0;
}

/*
 * rf_close of a listening socket: its acceptors are closed too. One that
 * is armed is cancelled with the fd's other operations (IORING_ASYNC_
 * CANCEL_FD), but one paused for a full queue, or ended by an error, is
 * not in the ring: without this it would re-arm later on the fd number,
 * which may by then belong to another socket. Its queued connections are
 * still handed out; then rf_acceptor_next returns -ECANCELED. Returns
 * whether one of them was armed (then the close must cancel it).
 */
bool rf__acceptors_fd_closed(rf_loop *l, int fd)
{
    bool armed = false;
    for (rf_list *n = l->acceptors.next; n != &l->acceptors; n = n->next) {
        rf_acceptor *a = rf_container_of(n, rf_acceptor, node);
        if (a->lfd != fd)
            continue;
        armed |= a->armed;
        a->lfd = -1;
        a->err = -ECANCELED;
        rf__waiter_done(l, &a->w, 0);
    }
    return armed;
}

/*
 * rf_loop_free: acceptors left open are orphaned and their armed accepts
 * cancelled (first call, before the loop drains); an orphan is freed at
 * its last CQE unless a task is still inside it, and whatever is left is
 * freed, its queued fds closed, once nothing is in flight (final call).
 */
void rf__acceptors_release(rf_loop *l, bool final)
{
    rf_list *n = l->acceptors.next;
    while (n != &l->acceptors) {
        rf_acceptor *a = rf_container_of(n, rf_acceptor, node);
        n = n->next;
        if (final) {
            acceptor_free(a);
            continue;
        }
        a->orphan = true;
        if (a->armed)
            acceptor_cancel(a);
    }
    if (final)
        while ((n = rf_list_pop_front(&l->free_acceptors)) != NULL)
            free(rf_container_of(n, rf_acceptor, node));
}
