/*
 * Socket operations: socket, the TCP listen/connect helpers, accept (one at
 * a time, and a multishot acceptor for servers), connect, recv/send
 * (and rf_send_all), recvmsg/sendmsg, shutdown, poll. Each operation
 * takes the I/O path of op.c (rf__op_begin, rf__op_run): it suspends only
 * the caller, carries the task's deadline as a linked timeout, and
 * is cancelled as docs/scheduler.md ("Cancellation") describes.
 *
 * Measured choices (bench/io_bench.cc, IO_*: a 64-byte TCP ping-pong on
 * 127.0.0.1 in raw liburing, the recv posted before the data it waits
 * for, one ring set up as the runtime's; `taskset -c 0
 * build-bench/bench/ratios.sh --benchmark_filter=IO_`, 7 interleaved
 * repetitions, median round trip against plain fds, three runs on a
 * loaded 2-vCPU VM where a round trip took 18-31 us):
 *     registered files (IOSQE_FIXED_FILE)       1.03x, 1.23x, 0.92x
 *     IORING_RECVSEND_POLL_FIRST on recv        1.01x, 1.24x, 0.92x
 *     multishot recv + provided buffer ring         -, 1.11x, 0.96x
 * None is faster beyond the run-to-run noise, so none is used:
 *  - plain descriptors: in a single-threaded process fget() on a private
 *    file table takes no atomic, which is most of what registration
 *    saves; registered files would also need a second fd namespace that
 *    every caller, rf_close and fork/exec would have to know about;
 *  - no POLL_FIRST: it skips the first receive attempt when the data is
 *    surely absent, which saves little next to the poll wake-up, and
 *    costs a poll arm and a task_work round whenever the data is already
 *    there (a pipelined request, a reply that came first);
 *  - no buffer rings: they save the re-arm of each recv and memory for
 *    idle connections (many thousands of them), not time per message
 *    here; they would also change rf_recv's contract (the kernel picks the
 *    buffer). Worth revisiting for servers with very many idle sockets.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* ---- socket, addresses, listen --------------------------------------------- */

int rf_socket(int domain, int type, int protocol)
{
    rf_loop *l = rf__tls_loop;
    if (l && l->current && rf__op_supported(l, IORING_OP_SOCKET)) {
        rf_op op;
        int err;
        struct io_uring_sqe *sqe =
            rf__op_begin(&op, -1, IORING_OP_SOCKET, "rf_socket", &err);
        if (!sqe)
            return err;
        io_uring_prep_socket(sqe, domain, type, protocol, 0);
        return rf__op_run(&op, sqe);
    }
    /* socket(2) never blocks: the fallback, and the way outside a task. */
    int fd = socket(domain, type, protocol);
    return fd >= 0 ? fd : -errno;
}

int rf_addr_parse(const char *host, uint16_t port, struct sockaddr_storage *ss,
                  socklen_t *len)
{
    if (!ss || !len)
        return -EFAULT;
    memset(ss, 0, sizeof(*ss));
    if (!host || !*host)
        host = "0.0.0.0";
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        *len = sizeof(*in4);
        return 0;
    }
    /* "[::1]" as well as "::1". */
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *len = sizeof(*in6);
        return 0;
    }
    return -EINVAL;
}

int rf_tcp_listen(const char *host, uint16_t port, int backlog, int *fdp)
{
    if (!fdp)
        return -EFAULT;
    *fdp = -1;
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = rf_addr_parse(host, port, &ss, &len);
    if (rc)
        return rc;
    /* socket, setsockopt, bind and listen do not block: plain calls. */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&ss, len) < 0 ||
        listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    *fdp = fd;
    return 0;
}

int rf_sock_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}

int rf_tcp_connect(const char *host, uint16_t port, int *fdp)
{
    if (!fdp)
        return -EFAULT;
    *fdp = -1;
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = rf_addr_parse(host, port, &ss, &len);
    if (rc)
        return rc;
    if (!rf__self())
        return -EPERM;
    int fd = rf_socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    rc = rf_connect(fd, (struct sockaddr *)&ss, len);
    if (rc < 0) {
        rf_close(fd);
        return rc;
    }
    *fdp = fd;
    return 0;
}

/* ---- accept ------------------------------------------------------------------ */

#define RF_ACCEPT_BACKOFF_MIN (1 * RF_NSEC_PER_MSEC)
#define RF_ACCEPT_BACKOFF_MAX (256 * RF_NSEC_PER_MSEC)

/*
 * Out of descriptors (EMFILE, ENFILE): the connection stays in the listen
 * queue, and an immediate retry would fail the same way, so the accepting
 * task sleeps, twice as long each time up to RF_ACCEPT_BACKOFF_MAX, while
 * the loop goes on serving the connections it has. The sleep is bounded
 * by the task's deadline and ends on cancellation like any wait.
 */
static int accept_backoff(rf_loop *l, uint64_t *backoff)
{
    RF_STAT_ADD(l->stats.accept_emfile, 1);
    int rc = rf_sleep(*backoff);
    *backoff = *backoff * 2 > RF_ACCEPT_BACKOFF_MAX ? RF_ACCEPT_BACKOFF_MAX
                                                     : *backoff * 2;
    return rc;
}

int rf_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    if (fd < 0)
        return -EBADF;
    if (addr && !addrlen)
        return -EFAULT;
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    uint64_t backoff = RF_ACCEPT_BACKOFF_MIN;
    int res;
    /* in_accept stays set through the EMFILE retries. */
    self->in_accept = true;
    for (;;) {
        if (l->accept_stopped) {
            res = -ESHUTDOWN;
            break;
        }
        rf_op op;
        struct io_uring_sqe *sqe =
            rf__op_begin(&op, fd, IORING_OP_ACCEPT, "rf_accept", &res);
        if (!sqe)
            break;
        io_uring_prep_accept(sqe, fd, addr, addrlen, flags);
        res = rf__op_run(&op, sqe);
        if (res != -EMFILE && res != -ENFILE)
            break;
        res = accept_backoff(l, &backoff);
        if (res != 0)
            break;
    }
    self->in_accept = false;
    if (res < 0 && res != -ETIMEDOUT && l->accept_stopped)
        res = -ESHUTDOWN;
    return res;
}

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
    rf_task *waiter; /* the task in rf_acceptor_next, or in close */
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
        if (!a->armed && a->waiter)
            rf__wake(l, a->waiter); /* it sees orphan and returns */
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
    if (a->waiter)
        rf__wake(l, a->waiter);
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

int rf_acceptor_next(rf_acceptor *h)
{
    if (!h)
        return -EINVAL;
    rf_acceptor *a = acceptor_record(h);
    if (!a)
        return rf__stale("rf_acceptor_next");
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    if (a->loop != l)
        return -EXDEV;
    if (a->waiter || a->closing)
        return -EBUSY;
    /* Sticky, as for every call: even with a connection queued. */
    if (self->cancelled)
        return -ECANCELED;
    if (self->deadline && rf_now_ns() >= self->deadline)
        return -ETIMEDOUT;
    uint64_t backoff = RF_ACCEPT_BACKOFF_MIN;
    int rc = 0;
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
                rc = accept_backoff(l, &backoff);
                if (rc)
                    break;
                continue;
            }
            break;
        }
        if (!a->armed && (rc = acceptor_arm(a)) != 0)
            break;
        a->waiter = self;
        rc = rf__wait(l, self, RF_WAIT_ANY);
        a->waiter = NULL;
        if (rc && !a->qlen)
            break;
        /* A connection that came with the cancellation is handed over;
         * the cancellation shows at the next call. */
    }
    self->in_accept = false;
    if (rc < 0 && rc != -ETIMEDOUT && l->accept_stopped)
        rc = -ESHUTDOWN;
    return rc;
}

int rf_acceptor_close(rf_acceptor *h)
{
    if (!h)
        return 0;
    rf_acceptor *a = acceptor_record(h);
    if (!a)
        return rf__stale("rf_acceptor_close");
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    if (a->loop != l)
        return -EXDEV;
    if (a->waiter || a->closing)
        return -EBUSY;
    a->closing = true;
    if (a->armed) {
        acceptor_cancel(a);
        a->waiter = self;
        while (a->armed)
            rf__wait(l, self, 0);
        a->waiter = NULL;
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
 * still handed out; then rf_acceptor_next returns -ECANCELED.
 */
void rf__acceptors_fd_closed(rf_loop *l, int fd)
{
    for (rf_list *n = l->acceptors.next; n != &l->acceptors; n = n->next) {
        rf_acceptor *a = rf_container_of(n, rf_acceptor, node);
        if (a->lfd != fd)
            continue;
        a->lfd = -1;
        a->err = -ECANCELED;
        if (a->waiter)
            rf__wake(l, a->waiter);
    }
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

/* ---- connect, recv, send ------------------------------------------------------ */

int rf_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    if (fd < 0)
        return -EBADF;
    if (!addr)
        return -EFAULT;
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, fd, IORING_OP_CONNECT, "rf_connect", &err);
    if (!sqe)
        return err;
    io_uring_prep_connect(sqe, fd, addr, addrlen);
    return rf__op_run(&op, sqe);
}

/* recv without IORING_RECVSEND_POLL_FIRST: the kernel tries the receive
 * at once and arms a poll only if nothing is there (see the top). */
ssize_t rf_recv(int fd, void *buf, size_t len, int flags)
{
    if (fd < 0)
        return -EBADF;
    if (!buf && len)
        return -EFAULT;
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, fd, IORING_OP_RECV, "rf_recv", &err);
    if (!sqe)
        return err;
    io_uring_prep_recv(sqe, fd, buf, len > RF_IO_MAX ? RF_IO_MAX : len,
                       flags);
    return rf__op_run(&op, sqe);
}

ssize_t rf_send(int fd, const void *buf, size_t len, int flags)
{
    if (fd < 0)
        return -EBADF;
    if (!buf && len)
        return -EFAULT;
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, fd, IORING_OP_SEND, "rf_send", &err);
    if (!sqe)
        return err;
    io_uring_prep_send(sqe, fd, buf, len > RF_IO_MAX ? RF_IO_MAX : len,
                       flags | MSG_NOSIGNAL);
    return rf__op_run(&op, sqe);
}

/* rf_send_all: rf__xfer_all (fs.c) over rf_send, which adds
 * MSG_NOSIGNAL to every send. A send that moves nothing of a non-empty
 * buffer is -EIO, as a write is in rf_write_all: the kernel reported
 * neither progress nor an error, and trying again could spin for ever.
 * (It does not happen on a stream socket, whose send waits for room.) */
static ssize_t send_step(int fd, void *p, size_t len, int64_t off, int flags)
{
    (void)off;
    return rf_send(fd, p, len, flags);
}

ssize_t rf_send_all(int fd, const void *buf, size_t len, int flags,
                    size_t *done)
{
    return rf__xfer_all(send_step, fd, (void *)(uintptr_t)buf, len, -1,
                        flags, -EIO, done);
}

static ssize_t msg_op(unsigned opcode, const char *what, int fd,
                      const struct msghdr *msg, int flags)
{
    if (fd < 0)
        return -EBADF;
    if (!msg || (!msg->msg_iov && msg->msg_iovlen))
        return -EFAULT;
    rf_op op;
    int err;
    struct io_uring_sqe *sqe = rf__op_begin(&op, fd, opcode, what, &err);
    if (!sqe)
        return err;
    if (opcode == IORING_OP_RECVMSG)
        io_uring_prep_recvmsg(sqe, fd, (struct msghdr *)msg, (unsigned)flags);
    else
        io_uring_prep_sendmsg(sqe, fd, msg, (unsigned)flags | MSG_NOSIGNAL);
    return rf__op_run(&op, sqe);
}

ssize_t rf_recvmsg(int fd, struct msghdr *msg, int flags)
{
    return msg_op(IORING_OP_RECVMSG, "rf_recvmsg", fd, msg, flags);
}

ssize_t rf_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return msg_op(IORING_OP_SENDMSG, "rf_sendmsg", fd, msg, flags);
}

/* ---- shutdown, poll ------------------------------------------------------------ */

int rf_shutdown(int fd, int how)
{
    if (fd < 0)
        return -EBADF;
    rf_loop *l = rf__tls_loop;
    if (l && l->current && rf__op_supported(l, IORING_OP_SHUTDOWN)) {
        rf_op op;
        int err;
        struct io_uring_sqe *sqe =
            rf__op_begin(&op, fd, IORING_OP_SHUTDOWN, "rf_shutdown", &err);
        if (!sqe)
            return err;
        io_uring_prep_shutdown(sqe, fd, how);
        return rf__op_run(&op, sqe);
    }
    /* shutdown(2) does not block: the fallback, and the way outside a
     * task. */
    return shutdown(fd, how) == 0 ? 0 : -errno;
}

int rf_poll(int fd, unsigned events)
{
    if (fd < 0)
        return -EBADF;
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, fd, IORING_OP_POLL_ADD, "rf_poll", &err);
    if (!sqe)
        return err;
    io_uring_prep_poll_add(sqe, fd, events);
    return rf__op_run(&op, sqe);
}
