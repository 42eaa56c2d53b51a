/*
 * Multishot receive (RF_LOOP_RECV_MULTISHOT): rf_recv on a stream socket
 * served from a queue in user space that one multishot receive fills.
 *
 * Without it every rf_recv is an IORING_OP_RECV: the kernel tries the
 * receive, finds nothing (a server's reads mostly wait), arms a poll, and
 * at the data's arrival runs the receive again and posts the CQE. Each
 * message pays the SQE, the failed attempt and the poll's arming. Here the
 * first rf_recv on a socket arms one IORING_OP_RECV with
 * IORING_RECV_MULTISHOT and IOSQE_BUFFER_SELECT: its poll stays armed,
 * and at each arrival the kernel takes a buffer from the loop's
 * provided-buffer ring, receives into it and posts a CQE with IORING_CQE_
 * F_MORE. The handler (rxq_cqe) appends the buffer to the socket's queue
 * and wakes the task in rf_recv, which copies the bytes out into the
 * caller's buffer and gives the buffer back to the ring. A message then
 * costs no SQE and no arming: a CQE and a copy (docs/scheduler.md,
 * "Multishot receive", has the measurements).
 *
 * The loop's buffers: RF_RECV_BUFS of RF_RECV_BUF_SIZE bytes
 * (rf_loop_opts.recv_bufs, .recv_buf_size), one anonymous mapping that is
 * touched only where the kernel writes, registered at the first rf_recv
 * as buffer group 0. A queued buffer is chained to the next of its queue
 * through a per-buffer array, so that a queue is two ids and a count: no
 * allocation per message, and a queue cannot overflow.
 *
 * Flow control. A socket whose task does not read would otherwise take
 * every buffer: once RF_RECV_PAUSE buffers (or an eighth of the ring)
 * wait in its queue, its multishot is cancelled (rf_stats.recv_pauses),
 * and the data waits in the kernel's socket buffer, where TCP's window
 * holds the peer back; the next rf_recv that finds the queue empty arms it
 * again. When the ring is empty anyway the kernel ends the multishot of a
 * socket that had data with ENOBUFS (rf_stats.recv_nobufs); that socket's
 * next rf_recv, its queue empty, is a plain IORING_OP_RECV into the
 * caller's buffer, and the one after arms again.
 *
 * What changes for the caller (ringfiber.h, RF_LOOP_RECV_MULTISHOT):
 *  - one task at a time reads a socket with rf_recv: a second one's call
 *    while the first waits returns -EBUSY;
 *  - a socket read with rf_recv is closed with rf_close, which cancels the
 *    multishot (by its user_data: no scan of the ring's polls) and gives
 *    its queued buffers back. close(2) would leave the multishot holding
 *    the socket open; a descriptor number that rf_accept,
 *    rf_acceptor_next or rf_socket hands out again drops what a record
 *    for the old socket held (rf__recvq_fd_new);
 *  - rf_read on such a socket reads the queue first; rf_recvmsg and
 *    rf_readv return -EBUSY while bytes wait in it; rf_poll(POLLIN)
 *    reports them. Each first stops the multishot (rxq_quiesce, with a
 *    waiter of its own, so that a task polling beside the reader does not
 *    take the reader's place).
 * Flags: MSG_PEEK, MSG_DONTWAIT and MSG_WAITALL are served from the queue
 * (MSG_DONTWAIT: -EAGAIN when it is empty and the multishot armed, even if
 * data has arrived in the kernel and its CQE is not reaped yet: the next
 * pass reaps it; with nothing armed, a plain non-blocking receive).
 * MSG_NOSIGNAL and MSG_CMSG_CLOEXEC change nothing; other flags are the
 * plain receive's once the queue is empty and the multishot stopped.
 * MSG_OOB, MSG_ERRQUEUE, a socket that is not SOCK_STREAM, len 0, and a
 * kernel without multishot receive (before 6.0) take the plain path.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "internal.h"

typedef struct rf_rxq {
    rf_handler h;
    rf_list node;   /* s->free while free */
    int fd;
    bool plain;     /* not a stream socket: rf_recv takes the plain path */
    bool armed;     /* the multishot receive is in the ring */
    bool stopping;  /* .. and its cancellation too (a pause, a close) */
    bool closed;    /* rf_close'd, or its number reused: out of by_fd */
    bool nobufs;    /* the last multishot ended for want of a buffer */
    bool eof;       /* the peer shut down its side: rf_recv returns 0 */
    int err;        /* the error a multishot ended with, until reported */
    int32_t head, tail; /* queued buffer ids, -1: none */
    uint32_t off;   /* bytes of the head buffer already taken */
    uint32_t n;     /* buffers queued */
    uint64_t bytes; /* bytes queued, less off */
    rf_waiter w;    /* the task in rf_recv: the socket's one reader */
    rf_waiter qw;   /* a task stopping the multishot (rxq_quiesce) */
} rf_rxq;

struct rf_recvq {
    struct io_uring_buf_ring *br;
    size_t br_size;
    char *mem;
    size_t mem_size;
    uint32_t *len;    /* per buffer: the bytes the kernel put in it */
    int32_t *next;    /* per buffer: the next one of its queue, -1 none */
    unsigned nbufs, mask, bufsz, pause_at;
    bool off;         /* the kernel cannot: every rf_recv is plain */
    rf_rxq **by_fd;   /* the record of each fd read with rf_recv */
    unsigned cap;
    rf_list free;
};

#define RXQ_GROUP 0 /* the buffer group id: the loop's only one */

/* ---- set-up and teardown --------------------------------------------------- */

static void recvq_unmap(struct rf_recvq *s)
{
    if (s->mem)
        munmap(s->mem, s->mem_size);
    if (s->br)
        munmap(s->br, s->br_size);
    free(s->len);
    free(s->next);
    s->mem = NULL;
    s->br = NULL;
    s->len = NULL;
    s->next = NULL;
}

static void buf_put(struct rf_recvq *s, int32_t b)
{
    io_uring_buf_ring_add(s->br, s->mem + (size_t)b * s->bufsz, s->bufsz,
                          (unsigned short)b, (int)s->mask, 0);
    io_uring_buf_ring_advance(s->br, 1);
}

/* The loop's buffer ring, set up at the first rf_recv: NULL where the
 * kernel or memory does not allow it (every rf_recv is then plain). */
static struct rf_recvq *recvq_setup(rf_loop *l)
{
    struct rf_recvq *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    l->rxq = s;
    rf_list_init(&s->free);
    s->nbufs = l->recv_bufs;
    s->bufsz = l->recv_buf_size;
    s->mask = s->nbufs - 1;
    s->pause_at = s->nbufs / 8 < RF_RECV_PAUSE ? s->nbufs / 8 : RF_RECV_PAUSE;
    if (s->pause_at < 2)
        s->pause_at = 2;
    /* IORING_RECV_MULTISHOT came with 6.0, as did IORING_OP_SEND_ZC,
     * which the probe can see. */
    if (!rf__op_supported(l, IORING_OP_SEND_ZC)) {
        s->off = true;
        return s;
    }
    s->br_size = (size_t)s->nbufs * sizeof(struct io_uring_buf);
    s->mem_size = (size_t)s->nbufs * s->bufsz;
    void *br = mmap(NULL, s->br_size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *mem = mmap(NULL, s->mem_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    s->br = br == MAP_FAILED ? NULL : br;
    s->mem = mem == MAP_FAILED ? NULL : mem;
    s->len = malloc(s->nbufs * sizeof(*s->len));
    s->next = malloc(s->nbufs * sizeof(*s->next));
    struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)s->br,
                                   .ring_entries = s->nbufs,
                                   .bgid = RXQ_GROUP};
    if (!s->br || !s->mem || !s->len || !s->next ||
        io_uring_register_buf_ring(&l->ring, &reg, 0) < 0) {
        recvq_unmap(s);
        s->off = true;
        return s;
    }
    io_uring_buf_ring_init(s->br);
    for (unsigned b = 0; b < s->nbufs; b++)
        buf_put(s, (int32_t)b);
    return s;
}

static void rxq_free(struct rf_recvq *s, rf_rxq *q)
{
    rf_list_push_back(&s->free, &q->node);
}

/* A detached record goes once neither the kernel nor a task refers to
 * it. */
static void rxq_release_if_idle(struct rf_recvq *s, rf_rxq *q)
{
    if (q->closed && !q->armed && !q->w.task && !q->qw.task)
        rxq_free(s, q);
}

/* Something happened to q (a CQE, its close): wake whoever waits. */
static void rxq_wake(rf_loop *l, rf_rxq *q)
{
    rf__waiter_done(l, &q->w, 0);
    rf__waiter_done(l, &q->qw, 0);
}

/* Give q's queued buffers back to the ring. */
static void rxq_drop(struct rf_recvq *s, rf_rxq *q)
{
    for (int32_t b = q->head; b >= 0;) {
        int32_t nx = s->next[b];
        buf_put(s, b);
        b = nx;
    }
    q->head = q->tail = -1;
    q->n = 0;
    q->off = 0;
    q->bytes = 0;
}

/* Cancel q's multishot (by its user_data: the kernel finds it without
 * looking through the ring's other polls). Returns false if no SQE could
 * be had (rf__sqe_get has already entered the kernel to make room). */
static bool rxq_cancel(rf_loop *l, rf_rxq *q)
{
    if (!q->armed || q->stopping)
        return true;
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return false;
    io_uring_prep_cancel64(sqe, rf__handler_data(&q->h), 0);
    io_uring_sqe_set_data64(sqe, RF_UD_IGNORE);
    q->stopping = true;
    return true;
}

/* Cancel q's multishot whatever it takes: every CQE must come before the
 * record or the loop goes, so make room for the cancel if need be
 * (bounded: a ring that takes nothing is broken, and the loop's drain will
 * say so). */
static void rxq_cancel_hard(rf_loop *l, rf_rxq *q)
{
    for (int tries = 0; tries < 100 && !rxq_cancel(l, q); tries++)
        rf__ring_enter(l, 0);
}

/* q's socket is gone (closed, or its number handed out again): out of the
 * index, buffers back, the multishot cancelled; freed once nothing (the
 * kernel, a waiting task) refers to it. Returns false if its multishot is
 * still armed uncancelled (no SQE): the caller must have the kernel end
 * it another way. */
static bool rxq_detach(rf_loop *l, struct rf_recvq *s, rf_rxq *q)
{
    s->by_fd[q->fd] = NULL;
    bool ok = rxq_cancel(l, q);
    q->closed = true;
    if (s->br)
        rxq_drop(s, q);
    rxq_wake(l, q); /* they see closed */
    rxq_release_if_idle(s, q);
    return ok;
}

static rf_rxq *rxq_find(const rf_loop *l, int fd)
{
    const struct rf_recvq *s = l->rxq;
    return s && (unsigned)fd < s->cap ? s->by_fd[fd] : NULL;
}

bool rf__recvq_fd_closed(rf_loop *l, int fd)
{
    rf_rxq *q = rxq_find(l, fd);
    return q && !rxq_detach(l, l->rxq, q);
}

void rf__recvq_fd_new(rf_loop *l, int fd)
{
    rf_rxq *q = rxq_find(l, fd);
    /* No SQE now: the number is a new socket's already, so only the
     * multishot's user_data can name the old one. */
    if (q && !rxq_detach(l, l->rxq, q))
        rxq_cancel_hard(l, q);
}

/*
 * rf_loop_free: the multishots still armed are cancelled (first call,
 * before the loop drains); the records, the buffers and their
 * registration go once nothing is in flight (final call).
 */
void rf__recvq_release(rf_loop *l, bool final)
{
    struct rf_recvq *s = l->rxq;
    if (!s)
        return;
    for (unsigned fd = 0; fd < s->cap; fd++) {
        rf_rxq *q = s->by_fd[fd];
        if (!q)
            continue;
        if (!final) {
            rxq_cancel_hard(l, q);
            continue;
        }
        free(q);
    }
    if (!final)
        return;
    rf_list *n;
    while ((n = rf_list_pop_front(&s->free)) != NULL)
        free(rf_container_of(n, rf_rxq, node));
    if (s->br)
        io_uring_unregister_buf_ring(&l->ring, RXQ_GROUP);
    if (l->unsettled) /* a receive may still write into them */
        s->mem = NULL, s->br = NULL;
    recvq_unmap(s);
    free(s->by_fd);
    free(s);
    l->rxq = NULL;
}

/* ---- completions ------------------------------------------------------------- */

static void rxq_cqe(rf_loop *l, rf_handler *h, const struct io_uring_cqe *cqe)
{
    rf_rxq *q = (rf_rxq *)h;
    struct rf_recvq *s = l->rxq;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        int32_t b = (int32_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (cqe->res > 0 && !q->closed) {
            s->len[b] = (uint32_t)cqe->res;
            s->next[b] = -1;
            if (q->tail >= 0)
                s->next[q->tail] = b;
            else
                q->head = b;
            q->tail = b;
            q->n++;
            q->bytes += (uint32_t)cqe->res;
        } else {
            buf_put(s, b);
        }
    }
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        q->armed = false;
        q->stopping = false;
        if (cqe->res == 0)
            q->eof = true;
        else if (cqe->res == -ENOBUFS) {
            q->nobufs = true;
            RF_STAT_ADD(l->stats.recv_nobufs, 1);
        } else if (cqe->res < 0 && cqe->res != -ECANCELED)
            q->err = cqe->res;
        if (q->closed) {
            rxq_release_if_idle(s, q);
            return;
        }
    } else if (q->n >= s->pause_at && !q->stopping && !q->closed &&
               rxq_cancel(l, q)) {
        RF_STAT_ADD(l->stats.recv_pauses, 1);
    }
    rxq_wake(l, q);
}

/* ---- the records --------------------------------------------------------------- */

/* fd's record, made at its first rf_recv; NULL: take the plain path (a
 * bad descriptor, or no memory for the record). A descriptor that is not
 * a stream socket gets a record too, marked plain, so that it is asked
 * once. */
static rf_rxq *rxq_get(struct rf_recvq *s, int fd)
{
    if ((unsigned)fd < s->cap && s->by_fd[fd])
        return s->by_fd[fd];
    int type = 0;
    socklen_t tl = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 &&
        errno != ENOTSOCK)
        return NULL; /* EBADF: recv's own answer follows */
    if ((unsigned)fd >= s->cap) {
        unsigned ncap = s->cap ? s->cap : 64;
        while (ncap <= (unsigned)fd)
            ncap *= 2;
        rf_rxq **nt = realloc(s->by_fd, ncap * sizeof(*nt));
        if (!nt)
            return NULL;
        memset(nt + s->cap, 0, (ncap - s->cap) * sizeof(*nt));
        s->by_fd = nt;
        s->cap = ncap;
    }
    rf_rxq *q;
    rf_list *n = rf_list_pop_front(&s->free);
    if (n)
        q = rf_container_of(n, rf_rxq, node);
    else if (!(q = malloc(sizeof(*q))))
        return NULL;
    memset(q, 0, sizeof(*q));
    q->h.fn = rxq_cqe;
    q->fd = fd;
    q->head = q->tail = -1;
    q->plain = type != SOCK_STREAM;
    s->by_fd[fd] = q;
    return q;
}

static int rxq_arm(rf_loop *l, rf_rxq *q)
{
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_recv_multishot(sqe, q->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RXQ_GROUP;
    io_uring_sqe_set_data64(sqe, rf__handler_data(&q->h));
    q->armed = true;
    q->nobufs = false;
    return 0;
}

/* Copy up to len queued bytes to dst; unless peek, take them (and give
 * emptied buffers back). Returns the count. */
static size_t rxq_copy(struct rf_recvq *s, rf_rxq *q, char *dst, size_t len,
                       bool peek)
{
    size_t got = 0;
    int32_t b = q->head;
    uint32_t off = q->off;
    while (got < len && b >= 0) {
        size_t k = s->len[b] - off;
        if (k > len - got)
            k = len - got;
        memcpy(dst + got, s->mem + (size_t)b * s->bufsz + off, k);
        got += k;
        off += (uint32_t)k;
        if (off < s->len[b])
            break;
        int32_t nx = s->next[b];
        if (!peek) {
            buf_put(s, b);
            q->n--;
        }
        b = nx;
        off = 0;
    }
    if (!peek) {
        q->head = b;
        if (b < 0)
            q->tail = -1;
        q->off = off;
        q->bytes -= got;
    }
    return got;
}

/* ---- the calls --------------------------------------------------------------- */

/* Wait on w (q's reader's or a quiescer's) for q's next event (a CQE, its
 * close): 0, -ECANCELED if q was closed meanwhile, or the wait's
 * -ECANCELED / -ETIMEDOUT. */
static int rxq_wait(rf_loop *l, rf_task *self, rf_rxq *q, rf_waiter *w,
                    unsigned how)
{
    int rc = rf__waiter_next(l, self, w, how, RF_ON_IO(IORING_OP_RECV),
                             RF_ON_FD(q->fd));
    if (q->closed) {
        rxq_release_if_idle(l->rxq, q);
        return -ECANCELED;
    }
    return rc;
}

/* Stop q's multishot and wait for its end, unless another task is in the
 * socket already (its reader, another quiescer: then leave it be):
 * 1 if bytes wait in q, else 0, or the wait's negative errno. */
static int rxq_quiesce(rf_loop *l, rf_task *self, rf_rxq *q)
{
    if (q->plain || q->w.task || q->qw.task)
        return 0;
    while (q->armed && !q->bytes && !q->w.task) {
        if (!rxq_cancel(l, q))
            return -EBUSY;
        if (!q->armed || q->bytes)
            break; /* ended, or data came, while the cancel got an SQE */
        int rc = rxq_wait(l, self, q, &q->qw, 0);
        if (rc)
            return rc;
    }
    return q->bytes ? 1 : 0;
}

/* The flags that leave the bytes as they are. */
#define RXQ_NEUTRAL (MSG_NOSIGNAL | MSG_CMSG_CLOEXEC)
/* The flags served over the queue. */
#define RXQ_SERVED (MSG_PEEK | MSG_DONTWAIT | MSG_WAITALL)

ssize_t rf__recvq_recv(rf_loop *l, int fd, void *buf, size_t len, int flags)
{
    rf_task *self = l->current;
    struct rf_recvq *s = l->rxq;
    /* Out-of-band data and the error queue are not the stream's bytes. */
    if (!self || (flags & (MSG_OOB | MSG_ERRQUEUE)) ||
        (!s && !(s = recvq_setup(l))) || s->off)
        return RF_RECVQ_PLAIN;
    rf_rxq *q = rxq_get(s, fd);
    if (!q || q->plain)
        return RF_RECVQ_PLAIN;
    int rc;
    if (flags & ~(RXQ_SERVED | RXQ_NEUTRAL)) {
        /* MSG_TRUNC and the like: recv(2) itself, once nothing is queued
         * or on its way (else the bytes would come out of order). */
        rc = rxq_quiesce(l, self, q);
        return rc < 0 ? rc : rc ? -EBUSY : RF_RECVQ_PLAIN;
    }
    if (q->w.task)
        return -EBUSY;
    if ((rc = rf__wait_precheck(self)) != 0)
        return rc;
    bool peek = flags & MSG_PEEK, all = flags & MSG_WAITALL,
         dontwait = flags & MSG_DONTWAIT;
    char *dst = buf;
    size_t got = 0; /* MSG_WAITALL: bytes taken by earlier rounds */
    for (;;) {
        if (peek) {
            /* MSG_PEEK | MSG_WAITALL waits for len bytes; short if the
             * queue cannot grow (paused full, or no buffer left). */
            bool stuck = !q->armed && (q->n >= s->pause_at || q->nobufs);
            if (q->bytes >= (all ? len : 1) ||
                (q->bytes && (q->eof || q->err || dontwait || stuck))) {
                size_t n = rxq_copy(s, q, dst, len, true);
                rf__op_count(l, IORING_OP_RECV, (int)n);
                return (ssize_t)n;
            }
        } else if (q->bytes) {
            got += rxq_copy(s, q, dst + got, len - got, false);
            if (!all || got == len || q->eof || q->err) {
                rf__op_count(l, IORING_OP_RECV, (int)got);
                return (ssize_t)got;
            }
            continue;
        }
        if (q->eof)
            return (ssize_t)got;
        if (q->err) {
            if (got)
                return (ssize_t)got; /* the error at the next call */
            rc = q->err;
            q->err = 0;
            return rc;
        }
        if (!q->armed && !q->bytes && (q->nobufs || dontwait)) {
            /* Nothing queued, nothing on its way: recv(2) itself, this
             * once (the next call that must wait arms again). */
            q->nobufs = false;
            ssize_t r = rf__recv_plain(l, fd, dst + got, len - got, flags);
            return r < 0 ? (got ? (ssize_t)got : r) : (ssize_t)(got + (size_t)r);
        }
        if (dontwait)
            return got ? (ssize_t)got : -EAGAIN;
        if (!q->armed && (rc = rxq_arm(l, q)) != 0)
            return got ? (ssize_t)got : rc;
        if ((rc = rxq_wait(l, self, q, &q->w, RF_WAIT_ANY)) != 0)
            return got ? (ssize_t)got : rc;
    }
}

int rf__recvq_quiesce(rf_loop *l, int fd)
{
    rf_rxq *q = rxq_find(l, fd);
    rf_task *self = l->current;
    return q && self ? rxq_quiesce(l, self, q) : 0;
}

ssize_t rf__recvq_take(rf_loop *l, int fd, void *buf, size_t len)
{
    rf_rxq *q = rxq_find(l, fd);
    size_t got = rxq_copy(l->rxq, q, buf, len, false);
    rf__op_count(l, IORING_OP_RECV, (int)got);
    return (ssize_t)got;
}
