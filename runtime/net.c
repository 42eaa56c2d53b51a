/*
 * Socket operations: socket, the TCP listen/connect helpers, accept (one at
 * a time; the multishot acceptor for servers is in acceptor.c, and shares
 * the backoff here), connect, recv/send (and rf_send_all; rf_recv on a
 * loop with RF_LOOP_RECV_MULTISHOT reads through recvq.c),
 * recvmsg/sendmsg, shutdown, poll. Each operation
 * takes the I/O path of ring.c (rf__op_begin, rf__op_run): it suspends only
 * the caller, is bounded by the task's deadline and is cancelled as
 * docs/scheduler.md ("Cancellation", "Deadlines and timers") describes.
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
 * and again where connections are many: the W6 echo server's variants at
 * 1,000 connections (bench/w6_echo.cc, W6_echo_variant_*_sweep_1000c, 5
 * interleaved repetitions, messages/s against raw ops in two runs):
 *     registered files                          0.95x, 1.01x
 *     IORING_RECVSEND_POLL_FIRST on recv        1.03x, 0.99x
 * and, against the public server (W6_echo_variant_multishot_sweep_1000c,
 * 15 interleaved repetitions):
 *     multishot recv + provided buffer ring     1.07x
 * The first two are not faster beyond the run-to-run noise, so neither
 * is used; multishot receive is, where connections are many (level at 50
 * and 100), and is a loop option, RF_LOOP_RECV_MULTISHOT (recvq.c), not
 * the default:
 *  - plain descriptors: in a single-threaded process fget() on a private
 *    file table takes no atomic, which is most of what registration
 *    saves; registered files would also need a second fd namespace that
 *    every caller, rf_close and fork/exec would have to know about;
 *  - no POLL_FIRST: it skips the first receive attempt when the data is
 *    surely absent, which saves little next to the poll wake-up, and
 *    costs a poll arm and a task_work round whenever the data is already
 *    there (a pipelined request, a reply that came first);
 *  - multishot receive only on request: it saves the re-arm of each
 *    recv, but adds rules to rf_recv's contract (one reader at a time, a
 *    socket closed with rf_close; ringfiber.h, RF_LOOP_RECV_MULTISHOT).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
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
        int fd = rf__op_run(&op, sqe);
        rf__recvq_fd_made(l, fd);
        return fd;
    }
    /* socket(2) never blocks: the fallback, and the way outside a task. */
    int fd = socket(domain, type, protocol);
    if (fd >= 0 && l)
        rf__recvq_fd_made(l, fd);
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
    return rf_tcp_listen_flags(host, port, backlog, 0, fdp);
}

int rf_tcp_listen_flags(const char *host, uint16_t port, int backlog,
                        unsigned flags, int *fdp)
{
    if (!fdp)
        return -EFAULT;
    *fdp = -1;
    if (flags & ~RF_TCP_REUSEPORT)
        return -EINVAL;
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
        ((flags & RF_TCP_REUSEPORT) &&
         setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
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

/*
 * Out of descriptors (EMFILE, ENFILE): the connection stays in the listen
 * queue, and an immediate retry would fail the same way, so the accepting
 * task sleeps, twice as long each time up to RF_ACCEPT_BACKOFF_MAX, while
 * the loop goes on serving the connections it has. The sleep is bounded
 * by the task's deadline and ends on cancellation like any wait.
 */
int rf__accept_backoff(rf_loop *l, uint64_t *backoff)
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
        res = rf__accept_backoff(l, &backoff);
        if (res != 0)
            break;
    }
    self->in_accept = false;
    if (res < 0 && res != -ETIMEDOUT && l->accept_stopped)
        res = -ESHUTDOWN;
    rf__recvq_fd_made(l, res);
    return res;
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

/* recv(2) as one IORING_OP_RECV, without IORING_RECVSEND_POLL_FIRST: the
 * kernel tries the receive at once and arms a poll only if nothing is
 * there (see the top). */
ssize_t rf__recv_plain(rf_loop *l, int fd, void *buf, size_t len, int flags)
{
    (void)l;
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

/* On a loop with RF_LOOP_RECV_MULTISHOT, recvq.c serves a stream socket's
 * reads; everything else is a plain receive. */
ssize_t rf_recv(int fd, void *buf, size_t len, int flags)
{
    if (fd < 0)
        return -EBADF;
    if (!buf && len)
        return -EFAULT;
    rf_loop *l = rf__tls_loop;
    if (rf_unlikely(l && l->recv_ms) && len) {
        ssize_t r = rf__recvq_recv(l, fd, buf, len, flags);
        if (r != RF_RECVQ_PLAIN)
            return r;
    }
    return rf__recv_plain(l, fd, buf, len, flags);
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
    rf_loop *l = rf__tls_loop;
    if (rf_unlikely(l && l->rxq) && fd >= 0) {
        int rc = rf__recvq_quiesce(l, fd);
        if (rc)
            return rc > 0 ? -EBUSY : rc;
    }
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
    rf_loop *l = rf__tls_loop;
    if (rf_unlikely(l && l->rxq) && (events & POLLIN)) {
        /* Bytes rf_recv's multishot took are readable, and the socket
         * itself is, once it stopped taking them. The other events as
         * they are now (a poll(2) that does not wait). */
        int rc = rf__recvq_quiesce(l, fd);
        if (rc < 0)
            return rc;
        if (rc > 0) {
            struct pollfd p = {.fd = fd, .events = (short)(events & ~POLLIN)};
            return POLLIN | (p.events && poll(&p, 1, 0) == 1 ? p.revents : 0);
        }
    }
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, fd, IORING_OP_POLL_ADD, "rf_poll", &err);
    if (!sqe)
        return err;
    io_uring_prep_poll_add(sqe, fd, events);
    return rf__op_run(&op, sqe);
}
