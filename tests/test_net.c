/*
 * Socket operations on loopback: success and bad input of each call,
 * closed and reset peers, rf_send_all (whole, partial, never SIGPIPE; and
 * rf_write_all's SIGPIPE), deadlines firing and not firing, cancellation
 * (no fd leak, a won race hands the fd over), close with operations in
 * flight and fd-number reuse, the multishot acceptor, EMFILE on accept.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/socket.h>

#include "helpers.h"

/* ---- helpers -------------------------------------------------------------- */

/* A listener on 127.0.0.1, ephemeral port. */
static int listener(int backlog, int *port)
{
    int fd = -1;
    int rc = rf_tcp_listen("127.0.0.1", 0, backlog, &fd);
    if (!RFT_CHECK_INT(rc, 0))
        return -1;
    *port = rf_sock_port(fd);
    RFT_CHECK(*port > 0);
    return fd;
}

/* A connected pair through a listener: *c client side, *s server side. */
static bool tcp_pair(int *c, int *s)
{
    int port;
    int lfd = listener(16, &port);
    if (lfd < 0)
        return false;
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, c), 0);
    *s = rf_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
    RFT_CHECK(*s >= 0);
    RFT_CHECK_INT(rf_close(lfd), 0);
    return *c >= 0 && *s >= 0;
}

static void loopback(struct sockaddr_in *a, int port)
{
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

/* A listener whose accept queue is full (backlog 0 and nobody accepts):
 * a further connect's SYN is dropped, so the connect hangs. */
static int full_listener(int *port, int *clients, int n)
{
    int lfd = listener(1, port);
    RFT_CHECK_INT(listen(lfd, 0), 0); /* rf_tcp_listen takes 0 as SOMAXCONN */
    struct sockaddr_in a;
    loopback(&a, *port);
    for (int i = 0; i < n; i++) {
        clients[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(clients[i], (struct sockaddr *)&a, sizeof a);
    }
    rf_sleep(20 * RFT_MS); /* let the handshakes settle */
    return lfd;
}

/* ---- outside a task and bad input ---------------------------------------- */

static void test_outside_task(void **state)
{
    char b[4];
    assert_int_equal(rf_recv(0, b, 4, 0), -EPERM);
    assert_int_equal(rf_send(0, b, 4, 0), -EPERM);
    assert_int_equal(rf_accept(0, NULL, NULL, 0), -EPERM);
    assert_int_equal(rf_close(0), -EPERM);
    assert_int_equal(rf_poll(0, POLLIN), -EPERM);
    /* The non-suspending ones work anywhere. */
    int fd = rf_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(rf_shutdown(fd, SHUT_RDWR), -ENOTCONN);
    close(fd);
    int lfd;
    assert_int_equal(rf_tcp_listen("127.0.0.1", 0, 4, &lfd), 0);
    assert_true(rf_sock_port(lfd) > 0);
    close(lfd);
    assert_int_equal(rf_tcp_listen("example.com", 0, 4, &lfd), -EINVAL);
    assert_int_equal(lfd, -1);
    assert_int_equal(rf_tcp_listen("::1", 0, 4, NULL), -EFAULT);
}

static void *bad_input(void *arg)
{
    char b[8];
    struct sockaddr_in a;
    loopback(&a, 1);
    struct msghdr m;
    memset(&m, 0, sizeof m);
    RFT_CHECK_INT(rf_recv(-1, b, 8, 0), -EBADF);
    RFT_CHECK_INT(rf_send(-1, b, 8, 0), -EBADF);
    RFT_CHECK_INT(rf_accept(-1, NULL, NULL, 0), -EBADF);
    RFT_CHECK_INT(rf_connect(-1, (struct sockaddr *)&a, sizeof a), -EBADF);
    RFT_CHECK_INT(rf_recvmsg(-1, &m, 0), -EBADF);
    RFT_CHECK_INT(rf_sendmsg(-1, &m, 0), -EBADF);
    RFT_CHECK_INT(rf_shutdown(-1, SHUT_RDWR), -EBADF);
    RFT_CHECK_INT(rf_poll(-1, POLLIN), -EBADF);
    RFT_CHECK_INT(rf_close(-1), -EBADF);
    /* A number that is no open fd: the kernel's -EBADF. */
    RFT_CHECK_INT(rf_recv(RFT_BAD_FD, b, 8, 0), -EBADF);
    RFT_CHECK_INT(rf_close(RFT_BAD_FD), -EBADF);
    RFT_CHECK_INT(rf_poll(RFT_BAD_FD, POLLIN), -EBADF);
    RFT_CHECK_INT(rf_sock_port(-1), -EBADF);
    RFT_CHECK_INT(rf_socket(12345, SOCK_STREAM, 0), -EAFNOSUPPORT);
    struct sockaddr_storage ss;
    socklen_t sl;
    RFT_CHECK_INT(rf_addr_parse("1.2.3.4.5", 1, &ss, &sl), -EINVAL);
    RFT_CHECK_INT(rf_addr_parse("::1", 1, NULL, &sl), -EFAULT);
    RFT_CHECK_INT(rf_addr_parse("[::1]", 9, &ss, &sl), 0);
    RFT_CHECK_INT(ss.ss_family, AF_INET6);

    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    RFT_CHECK_INT(rf_recv(c, NULL, 8, 0), -EFAULT);
    RFT_CHECK_INT(rf_send(c, NULL, 8, 0), -EFAULT);
    RFT_CHECK_INT(rf_recvmsg(c, NULL, 0), -EFAULT);
    RFT_CHECK_INT(rf_sendmsg(c, NULL, 0), -EFAULT);
    m.msg_iovlen = 1;
    RFT_CHECK_INT(rf_sendmsg(c, &m, 0), -EFAULT);
    RFT_CHECK_INT(rf_connect(c, NULL, 0), -EFAULT);
    RFT_CHECK_INT(rf_shutdown(c, 12345), -EINVAL);
    RFT_CHECK_INT(rf_accept(c, (struct sockaddr *)&a, NULL, 0), -EFAULT);
    /* accept on a socket that does not listen: the kernel's -EINVAL. */
    RFT_CHECK_INT(rf_accept(c, NULL, NULL, 0), -EINVAL);
    /* A zero-length send with a NULL buffer is valid. */
    RFT_CHECK_INT(rf_send(c, NULL, 0, 0), 0);
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", 80, NULL), -EFAULT);
    int x;
    RFT_CHECK_INT(rf_tcp_connect("no.such.name", 80, &x), -EINVAL);
    RFT_CHECK_INT(rf_close(c), 0);
    RFT_CHECK_INT(rf_close(s), 0);
    return NULL;
}

static void test_bad_input(void **state) { rft_run(bad_input, NULL); }

/* ---- every operation's success --------------------------------------------- */

static void *roundtrip(void *arg)
{
    int fds0 = rft_count_fds();
    int port;
    int lfd = listener(16, &port);
    int c = rf_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    RFT_CHECK(c >= 0);
    struct sockaddr_in a;
    loopback(&a, port);
    RFT_CHECK_INT(rf_connect(c, (struct sockaddr *)&a, sizeof a), 0);
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    int s = rf_accept(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
    RFT_CHECK(s >= 0);
    RFT_CHECK_INT(plen, sizeof peer);
    RFT_CHECK_INT(peer.sin_family, AF_INET);
    RFT_CHECK_INT(peer.sin_addr.s_addr, htonl(INADDR_LOOPBACK));

    RFT_CHECK_INT(rf_send(c, "hello", 5, 0), 5);
    RFT_CHECK_INT(rf_poll(s, POLLIN) & POLLIN, POLLIN);
    char b[16] = {0};
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 5);
    RFT_CHECK(memcmp(b, "hello", 5) == 0);

    /* sendmsg / recvmsg with two pieces each. */
    struct iovec out[2] = {{(void *)"ab", 2}, {(void *)"cde", 3}};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = out;
    m.msg_iovlen = 2;
    RFT_CHECK_INT(rf_sendmsg(s, &m, 0), 5);
    char x[2], y[8];
    struct iovec in[2] = {{x, 2}, {y, 3}};
    memset(&m, 0, sizeof m);
    m.msg_iov = in;
    m.msg_iovlen = 2;
    RFT_CHECK_INT(rf_recvmsg(c, &m, MSG_WAITALL), 5);
    RFT_CHECK(memcmp(x, "ab", 2) == 0 && memcmp(y, "cde", 3) == 0);

    /* Closed peer: shutdown's FIN is an EOF (0) on the other side. */
    RFT_CHECK_INT(rf_shutdown(c, SHUT_WR), 0);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 0);
    RFT_CHECK_INT(rf_send(s, "z", 1, 0), 1); /* half-closed: other way works */
    RFT_CHECK_INT(rf_recv(c, b, sizeof b, 0), 1);
    RFT_CHECK_INT(rf_close(c), 0);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 0);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(lfd), 0);

    /* IPv6 loopback, through the helpers. */
    int l6;
    int rc = rf_tcp_listen("::1", 0, 4, &l6);
    if (rc == 0) {
        int p6 = rf_sock_port(l6), c6, s6;
        RFT_CHECK_INT(rf_tcp_connect("[::1]", (uint16_t)p6, &c6), 0);
        s6 = rf_accept(l6, NULL, NULL, 0);
        RFT_CHECK(s6 >= 0);
        RFT_CHECK_INT(rf_send(c6, "6", 1, 0), 1);
        RFT_CHECK_INT(rf_recv(s6, b, 1, 0), 1);
        rf_close(c6);
        rf_close(s6);
        rf_close(l6);
    } else {
        RFT_CHECK(rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT);
    }
    /* Nobody listens: refused. */
    int fd = -5;
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, &fd),
                  -ECONNREFUSED);
    RFT_CHECK_INT(fd, -1);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    return NULL;
}

static void test_roundtrip(void **state) { rft_run(roundtrip, NULL); }

static void *reset_peer(void *arg)
{
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    struct linger lg = {1, 0};
    RFT_CHECK_INT(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    RFT_CHECK_INT(rf_close(c), 0); /* RST */
    char b[8];
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), -ECONNRESET);
    /* After the reset, sends fail (EPIPE, no SIGPIPE). */
    ssize_t r = rf_send(s, "x", 1, 0);
    RFT_CHECK(r == -EPIPE || r == -ECONNRESET);
    RFT_CHECK_INT(rf_close(s), 0);
    return NULL;
}

static void test_reset_peer(void **state) { rft_run(reset_peer, NULL); }

/* ---- a large transfer with a checksum, short sends ------------------------------ */

#define BIG (8u << 20)

static uint64_t fnv(const unsigned char *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

typedef struct big_ctx {
    int fd;
    unsigned char *buf;
    uint64_t sum;
} big_ctx;

static void *big_sender(void *arg)
{
    big_ctx *b = arg;
    RFT_CHECK_INT(rf_write_all(b->fd, b->buf, BIG, -1, NULL), BIG);
    RFT_CHECK_INT(rf_shutdown(b->fd, SHUT_WR), 0);
    return NULL;
}

static void *large_transfer(void *arg)
{
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    unsigned char *src = malloc(BIG), *dst = malloc(BIG + 1);
    for (size_t i = 0; i < BIG; i++)
        src[i] = (unsigned char)(i * 2654435761u >> 13);
    big_ctx b = {c, src, 0};
    rf_task *t = rf_spawn(big_sender, &b);
    size_t got = 0;
    for (;;) {
        /* Odd sizes: many short receives. */
        ssize_t r = rf_recv(s, dst + got, BIG + 1 - got > 70001 ? 70001 : BIG + 1 - got, 0);
        RFT_CHECK(r >= 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    RFT_CHECK_INT(got, BIG);
    RFT_CHECK_INT(fnv(dst, got, 14695981039346656037ULL),
                  fnv(src, BIG, 14695981039346656037ULL));
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    free(src);
    free(dst);
    rf_close(c);
    rf_close(s);
    return NULL;
}

static void test_large_transfer(void **state) { rft_run(large_transfer, NULL); }

/* ---- rf_send_all ------------------------------------------------------------------------ */

static void *send_all_bad_input(void *arg)
{
    (void)arg;
    char b[8] = {0};
    size_t done = 99;
    RFT_CHECK_INT(rf_send_all(-1, b, sizeof b, 0, &done), -EBADF);
    RFT_CHECK_INT(done, 0);
    RFT_CHECK_INT(rf_send_all(-1, b, 0, 0, NULL), -EBADF); /* len 0 too */
    RFT_CHECK_INT(rf_send_all(RFT_BAD_FD, b, sizeof b, 0, NULL), -EBADF);
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    done = 99;
    RFT_CHECK_INT(rf_send_all(c, NULL, 8, 0, &done), -EFAULT);
    RFT_CHECK_INT(done, 0);
    RFT_CHECK_INT(rf_send_all(c, NULL, 0, 0, &done), 0); /* nothing to send */
    RFT_CHECK_INT(rf_send_all(c, "abc", 3, 0, &done), 3);
    RFT_CHECK_INT(done, 3);
    RFT_CHECK_INT(rf_recv(s, b, 3, MSG_WAITALL), 3);
    RFT_CHECK(memcmp(b, "abc", 3) == 0);
    rf_close(c);
    rf_close(s);
    return NULL;
}

static void test_send_all_bad_input(void **state)
{
    (void)state;
    char b[8] = {0};
    size_t done = 99;
    /* Outside a task: refused, even with nothing to send. */
    assert_int_equal(rf_send_all(0, b, sizeof b, 0, &done), -EPERM);
    assert_int_equal(done, 0);
    assert_int_equal(rf_send_all(0, b, 0, 0, NULL), -EPERM);
    rft_run(send_all_bad_input, NULL);
}

/* A large transfer arrives whole, by checksum, over TCP loopback and over
 * a unix socketpair with small buffers: many short sends, one call. */
typedef struct drain_ctx {
    int fd;
    unsigned char *buf;
    size_t cap;
    size_t got;
} drain_ctx;

/* Read fd until end of file (or cap + 1 bytes: more than was sent). */
static void *drain_task(void *arg)
{
    drain_ctx *d = arg;
    ssize_t r = rf_read_full(d->fd, d->buf, d->cap + 1, -1, &d->got);
    RFT_CHECK(r >= 0);
    return NULL;
}

static void send_all_whole(int tx, int rx)
{
    unsigned char *src = malloc(BIG), *dst = malloc(BIG + 1);
    if (!RFT_CHECK(src && dst)) {
        free(src);
        free(dst);
        return;
    }
    for (size_t i = 0; i < BIG; i++)
        src[i] = (unsigned char)(i * 2654435761u >> 13);
    drain_ctx d = {rx, dst, BIG, 0};
    rf_task *t = rf_spawn(drain_task, &d);
    size_t done = 0;
    RFT_CHECK_INT(rf_send_all(tx, src, BIG, 0, &done), BIG);
    RFT_CHECK_INT(done, BIG);
    RFT_CHECK_INT(rf_shutdown(tx, SHUT_WR), 0);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    RFT_CHECK_INT(d.got, BIG);
    RFT_CHECK_INT(fnv(dst, d.got, 14695981039346656037ULL),
                  fnv(src, BIG, 14695981039346656037ULL));
    free(src);
    free(dst);
}

static void *send_all_large(void *arg)
{
    (void)arg;
    int c, s;
    if (tcp_pair(&c, &s)) {
        send_all_whole(c, s);
        rf_close(c);
        rf_close(s);
    }
    int sv[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    send_all_whole(sv[0], sv[1]);
    rf_close(sv[0]);
    rf_close(sv[1]);
    return NULL;
}

static void test_send_all_large(void **state) { rft_run(send_all_large, NULL); }

/*
 * Partial progress: a reader takes PARTIAL_K bytes of a 4 MiB send and
 * stops; the sender is then ended by its cancellation or its deadline.
 * The result is that error, and done is exactly what the peer receives:
 * once the sender is over, the socket is shut down for writing and the
 * reader gets every byte still buffered, then end of file.
 */
#define PARTIAL_LEN (4u << 20)
#define PARTIAL_K (64u * 1024u)

typedef struct partial_ctx {
    int fd;
    const unsigned char *src;
    bool deadline;
    ssize_t res;
    size_t done;
} partial_ctx;

static void *partial_sender(void *arg)
{
    partial_ctx *p = arg;
    if (p->deadline)
        rf_deadline_set(rf_now_ns() + 200 * RFT_MS);
    p->res = rf_send_all(p->fd, p->src, PARTIAL_LEN, 0, &p->done);
    return NULL;
}

static void *send_all_partial(void *arg)
{
    bool deadline = arg != NULL;
    int sv[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    unsigned char *src = malloc(PARTIAL_LEN), *dst = malloc(PARTIAL_LEN + 1);
    if (!RFT_CHECK(src && dst))
        return NULL;
    for (size_t i = 0; i < PARTIAL_LEN; i++)
        src[i] = (unsigned char)(i * 2654435761u >> 11);
    partial_ctx p = {.fd = sv[0], .src = src, .deadline = deadline,
                     .res = 12345, .done = 12345};
    rf_task *sender = rf_spawn(partial_sender, &p);
    drain_ctx first = {sv[1], dst, PARTIAL_K - 1, 0}; /* reads PARTIAL_K */
    rf_task *reader = rf_spawn(drain_task, &first);
    if (!deadline) {
        /* The reader has its bytes; the sender waits for room (4 MiB are
         * far more than the socket buffers hold): cancel it there. */
        RFT_CHECK_INT(rf_join(reader, NULL), 0);
        RFT_CHECK_INT(first.got, PARTIAL_K);
        RFT_CHECK_INT(rf_sleep(20 * RFT_MS), 0);
        RFT_CHECK(!rf_done(sender));
        RFT_CHECK_INT(rf_cancel(sender), 0);
    }
    rf_join(sender, NULL);
    rf_task_release(sender);
    RFT_CHECK_INT(p.res, deadline ? -ETIMEDOUT : -ECANCELED);
    RFT_CHECK(p.done > 0);
    RFT_CHECK(p.done < PARTIAL_LEN);
    if (!deadline)
        RFT_CHECK(p.done >= PARTIAL_K);
    /* Everything the sender counted, and nothing more, reaches the peer. */
    RFT_CHECK_INT(rf_shutdown(sv[0], SHUT_WR), 0);
    RFT_CHECK_INT(rf_join(reader, NULL), 0);
    rf_task_release(reader);
    drain_ctx rest = {sv[1], dst + first.got, PARTIAL_LEN - first.got, 0};
    drain_task(&rest);
    RFT_CHECK_INT(first.got + rest.got, p.done);
    RFT_CHECK(memcmp(dst, src, first.got + rest.got) == 0);
    rf_close(sv[0]);
    rf_close(sv[1]);
    free(src);
    free(dst);
    return NULL;
}

static void test_send_all_partial_cancel(void **state)
{
    rft_run(send_all_partial, NULL);
}

static void test_send_all_partial_deadline(void **state)
{
    rft_run(send_all_partial, (void *)1);
}

/*
 * A peer that has closed, in a fresh process (rft_exec) whose SIGPIPE is
 * at its default action, terminate: no handler, not ignored, not blocked.
 * rf_send_all returns -EPIPE (or -ECONNRESET) and the process lives on;
 * rf_write_all, which is write(2), raises SIGPIPE and the process dies of
 * it, as include/ringfiber.h says.
 */
static bool sigpipe_at_default(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (sigaction(SIGPIPE, &sa, NULL) != 0 ||
        sigprocmask(SIG_UNBLOCK, &set, NULL) != 0)
        return false;
    struct sigaction now;
    sigset_t blocked;
    if (sigaction(SIGPIPE, NULL, &now) != 0 ||
        sigprocmask(SIG_BLOCK, NULL, &blocked) != 0)
        return false;
    return now.sa_handler == SIG_DFL && !sigismember(&blocked, SIGPIPE);
}

static void *closed_peer(void *arg)
{
    bool send = arg != NULL;
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    RFT_CHECK_INT(rf_close(s), 0); /* the peer goes away */
    size_t len = 4u << 20, done = 12345;
    unsigned char *buf = calloc(1, len);
    if (!RFT_CHECK(buf != NULL))
        return NULL;
    ssize_t r = send ? rf_send_all(c, buf, len, 0, &done)
                     : rf_write_all(c, buf, len, -1, &done);
    /* Only rf_send_all gets here: rf_write_all has raised SIGPIPE. */
    fprintf(stderr, "closed peer: %s returned %zd (%s) after %zu bytes\n",
            send ? "rf_send_all" : "rf_write_all", r,
            r < 0 ? rf_strerror((int)r) : "-", done);
    RFT_CHECK(r == -EPIPE || r == -ECONNRESET);
    RFT_CHECK(done < len);
    /* The connection is gone for good: the next send says so too. */
    RFT_CHECK_INT(rf_send_all(c, "x", 1, 0, NULL), -EPIPE);
    rf_close(c);
    free(buf);
    return NULL;
}

static int closed_peer_child(void *arg)
{
    if (!sigpipe_at_default()) {
        fprintf(stderr, "could not put SIGPIPE at its default action\n");
        return 2;
    }
    rft_begin();
    int rc = rf_run(closed_peer, arg, NULL);
    if (rc)
        fprintf(stderr, "rf_run: %s\n", rf_strerror(rc));
    return rc == 0 && rft_failures_ == 0 ? 0 : 1;
}

static void test_send_all_closed_peer_no_sigpipe(void **state)
{
    rft_child ch;
    rft_exec("send_all_closed_peer", &ch);
    if (!ch.exited || ch.code != 0)
        rft_child_dump("send_all_closed_peer", &ch);
    assert_false(ch.signaled);
    assert_true(ch.exited);
    assert_int_equal(ch.code, 0);
}

static void test_write_all_closed_peer_raises_sigpipe(void **state)
{
    rft_child ch;
    rft_exec("write_all_closed_peer", &ch);
    if (!ch.signaled || ch.sig != SIGPIPE)
        rft_child_dump("write_all_closed_peer", &ch);
    assert_true(ch.signaled);
    assert_int_equal(ch.sig, SIGPIPE);
}

/* ---- deadlines --------------------------------------------------------------------- */

static void *deadlines(void *arg)
{
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    char b[8];
    /* recv: fires. */
    uint64_t t0 = rf_now_ns();
    rf_deadline_set(t0 + 30 * RFT_MS);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), -ETIMEDOUT);
    RFT_CHECK(rf_now_ns() - t0 >= 30 * RFT_MS);
    RFT_CHECK(rf_now_ns() - t0 < 5 * RFT_SEC);
    /* Sticky: not even submitted. */
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), -ETIMEDOUT);
    /* recv: does not fire when data comes first. */
    rf_deadline_set(rf_now_ns() + 10 * RFT_SEC);
    RFT_CHECK_INT(rf_send(c, "abc", 3, 0), 3);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 3);

    /* accept: fires, and does not. */
    int port;
    int lfd = listener(4, &port);
    rf_deadline_set(rf_now_ns() + 30 * RFT_MS);
    RFT_CHECK_INT(rf_accept(lfd, NULL, NULL, 0), -ETIMEDOUT);
    rf_deadline_set(rf_now_ns() + 10 * RFT_SEC);
    int c2;
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, &c2), 0);
    int s2 = rf_accept(lfd, NULL, NULL, 0);
    RFT_CHECK(s2 >= 0);

    /* connect: fires on a listener whose queue is full; does not fire on a
     * free one (above). */
    int fport, cl[8];
    int flfd = full_listener(&fport, cl, 8);
    struct sockaddr_in a;
    loopback(&a, fport);
    int x = rf_socket(AF_INET, SOCK_STREAM, 0);
    rf_deadline_set(rf_now_ns() + 50 * RFT_MS);
    RFT_CHECK_INT(rf_connect(x, (struct sockaddr *)&a, sizeof a), -ETIMEDOUT);
    rf_deadline_set(0);
    int fds = rft_count_fds();
    for (int i = 0; i < 8; i++)
        close(cl[i]);
    RFT_CHECK_INT(rft_count_fds(), fds - 8);
    rf_close(x);
    rf_close(flfd);
    rf_close(c2);
    rf_close(s2);
    rf_close(lfd);
    rf_close(c);
    rf_close(s);
    return NULL;
}

static void test_deadlines(void **state) { rft_run(deadlines, NULL); }

/* ---- cancellation --------------------------------------------------------------------- */

typedef struct op_ctx {
    int fd;
    int port;
    ssize_t res;
    int started;
} op_ctx;

static void *do_accept(void *arg)
{
    op_ctx *o = arg;
    o->started = 1;
    o->res = rf_accept(o->fd, NULL, NULL, SOCK_CLOEXEC);
    return NULL;
}

static void *do_recv(void *arg)
{
    op_ctx *o = arg;
    char b[16];
    o->started = 1;
    o->res = rf_recv(o->fd, b, sizeof b, 0);
    return NULL;
}

static void *do_connect(void *arg)
{
    op_ctx *o = arg;
    struct sockaddr_in a;
    loopback(&a, o->port);
    o->started = 1;
    o->res = rf_connect(o->fd, (struct sockaddr *)&a, sizeof a);
    return NULL;
}

/* Start fn in a task, let it block, cancel it, join: -ECANCELED. */
static void cancel_one(rf_fn fn, op_ctx *o)
{
    o->res = 12345;
    rf_task *t = rf_spawn(fn, o);
    RFT_CHECK(rft_yield_until(&o->started, 10));
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    RFT_CHECK(!rf_done(t));
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK_INT(o->res, -ECANCELED);
    rf_task_release(t);
}

static void *cancel_ops(void *arg)
{
    int fds0 = rft_count_fds();
    int port;
    int lfd = listener(4, &port);
    op_ctx o = {.fd = lfd};
    cancel_one(do_accept, &o);

    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    o.fd = s;
    o.started = 0;
    cancel_one(do_recv, &o);
    /* The connection is intact after a cancelled recv. */
    char b[4];
    RFT_CHECK_INT(rf_send(c, "ok", 2, 0), 2);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 2);

    int fport, cl[8];
    int flfd = full_listener(&fport, cl, 8);
    o.fd = rf_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    o.port = fport;
    o.started = 0;
    cancel_one(do_connect, &o);
    rf_close(o.fd);
    for (int i = 0; i < 8; i++)
        close(cl[i]);
    rf_close(flfd);
    rf_close(c);
    rf_close(s);
    rf_close(lfd);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    return NULL;
}

static void test_cancel_ops(void **state) { rft_run(cancel_ops, NULL); }

/*
 * An accept that completed before the cancellation came (its CQE was
 * reaped, the task was woken but had not run) returns the fd, which the
 * task owns; its next call returns -ECANCELED.
 */
typedef struct race_ctx {
    int lfd;
    int fd;
    int next;
    int started;
} race_ctx;

static void *accept_then_more(void *arg)
{
    race_ctx *r = arg;
    r->started = 1;
    r->fd = rf_accept(r->lfd, NULL, NULL, SOCK_CLOEXEC);
    r->next = rf_accept(r->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (r->fd >= 0)
        rf_close(r->fd);
    return NULL;
}

static void *cancel_race(void *arg)
{
    int fds0 = rft_count_fds();
    int port;
    int lfd = listener(4, &port);
    race_ctx r = {.lfd = lfd, .fd = -100, .next = -100};
    rf_task *t = rf_spawn(accept_then_more, &r);
    RFT_CHECK(rft_yield_until(&r.started, 10));
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0); /* the accept is in the ring */
    /* connect(2) on loopback completes the handshake before it returns;
     * the accept's completion is then waiting for the loop. */
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    loopback(&a, port);
    RFT_CHECK_INT(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    /* This yield queues us, then the pass end reaps the accept's CQE and
     * queues the acceptor behind us: we run first and cancel a task whose
     * accept has already succeeded. */
    rf_yield();
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK(r.fd >= 0);
    RFT_CHECK_INT(r.next, -ECANCELED);
    rf_task_release(t);
    close(c);
    rf_close(lfd);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    return NULL;
}

static void test_cancel_race_accept(void **state) { rft_run(cancel_race, NULL); }

/* ---- close with operations in flight, fd reuse ------------------------------------ */

static void *close_inflight(void *arg)
{
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    op_ctx o = {.fd = s, .res = 12345};
    rf_task *t = rf_spawn(do_recv, &o);
    RFT_CHECK(rft_yield_until(&o.started, 10));
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    RFT_CHECK(!rf_done(t));
    /* Close under the pending recv: it is cancelled and has returned by
     * the time rf_close returns. */
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK(rf_done(t));
    RFT_CHECK_INT(o.res, -ECANCELED);
    RFT_CHECK_INT(rf_join(t, NULL), 0); /* the task itself was not cancelled */
    rf_task_release(t);
    /* The socket is really closed: the peer sees EOF now, not when the
     * recv would have ended. */
    char b[8];
    rf_deadline_set(rf_now_ns() + 5 * RFT_SEC);
    RFT_CHECK_INT(rf_recv(c, b, sizeof b, 0), 0);
    rf_deadline_set(0);
    /* The number is reused by the next descriptor; nothing meant for the
     * old socket touches it. */
    int p[2];
    RFT_CHECK_INT(pipe2(p, O_CLOEXEC), 0);
    RFT_CHECK(p[0] == s || p[1] == s);
    RFT_CHECK_INT(rf_write(p[1], "fresh", 5, -1), 5);
    RFT_CHECK_INT(rf_read(p[0], b, sizeof b, -1), 5);
    RFT_CHECK(memcmp(b, "fresh", 5) == 0);
    rf_close(p[0]);
    rf_close(p[1]);
    rf_close(c);
    return NULL;
}

static void test_close_inflight_reuse(void **state) { rft_run(close_inflight, NULL); }

/* Several tasks blocked on one fd (poll, recv): one close ends them all. */
static void *do_poll(void *arg)
{
    op_ctx *o = arg;
    o->started = 1;
    o->res = rf_poll(o->fd, POLLIN);
    return NULL;
}

static void *close_many(void *arg)
{
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    op_ctx o[4];
    rf_task *t[4];
    for (int i = 0; i < 4; i++) {
        o[i] = (op_ctx){.fd = s, .res = 12345};
        t[i] = rf_spawn(i % 2 ? do_poll : do_recv, &o[i]);
    }
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    RFT_CHECK_INT(rf_close(s), 0);
    for (int i = 0; i < 4; i++) {
        RFT_CHECK(rf_done(t[i]));
        RFT_CHECK_INT(o[i].res, -ECANCELED);
        rf_task_release(t[i]);
    }
    rf_close(c);
    return NULL;
}

static void test_close_wakes_all(void **state) { rft_run(close_many, NULL); }

/* rf_close finds the operations on its fd among those of fd's bucket
 * (fds RF_FD_BUCKETS = 256 apart share one; 1024 is a multiple): closing
 * fd must end the recv waiting on fd and leave alone the one waiting on
 * fd + 1024. */
#define BUCKET_STRIDE 1024

static void *bucket_reader(void *arg)
{
    char b = 0;
    ssize_t n = rf_recv((int)(intptr_t)arg, &b, 1, 0);
    return (void *)(intptr_t)(n == 1 ? b : n);
}

static void *close_same_bucket(void *arg)
{
    (void)arg;
    int a[2], b[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
    /* b[0] moved to a[0] + 1024: the same bucket as a[0]'s. */
    int high = a[0] + BUCKET_STRIDE;
    /* A free number: dup3 would close what sits there. */
    if (!RFT_CHECK(fcntl(high, F_GETFD) < 0) ||
        !RFT_CHECK_INT(dup3(b[0], high, O_CLOEXEC), high)) {
        close(a[0]), close(a[1]), close(b[0]), close(b[1]);
        return NULL;
    }
    close(b[0]);
    rf_task *ta = rf_spawn(bucket_reader, (void *)(intptr_t)a[0]);
    rf_task *tb = rf_spawn(bucket_reader, (void *)(intptr_t)high);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0); /* both wait in the ring */
    RFT_CHECK_INT(rf_close(a[0]), 0);
    void *ra = NULL, *rb = NULL;
    RFT_CHECK_INT(rf_join(ta, &ra), 0);
    /* Its own recv was cancelled by the close (or saw the end). */
    RFT_CHECK((intptr_t)ra == -ECANCELED || (intptr_t)ra == 0 ||
              (intptr_t)ra == -EBADF);
    RFT_CHECK(!rf_done(tb)); /* the other one still waits */
    RFT_CHECK_INT(write(b[1], "k", 1), 1);
    RFT_CHECK_INT(rf_join(tb, &rb), 0);
    RFT_CHECK_INT((intptr_t)rb, 'k');
    rf_task_release(ta);
    rf_task_release(tb);
    close(a[1]);
    close(b[1]);
    rf_close(high);
    return NULL;
}

static void test_close_same_bucket(void **state)
{
    (void)state;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    struct rlimit saved = rl;
    if (rl.rlim_cur < 2 * BUCKET_STRIDE + 64) {
        if (rl.rlim_max < 2 * BUCKET_STRIDE + 64)
            skip(); /* no room for fd + 1024 */
        rl.rlim_cur = 2 * BUCKET_STRIDE + 64;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    rft_run(close_same_bucket, NULL);
    setrlimit(RLIMIT_NOFILE, &saved);
}

/* ---- the multishot acceptor ----------------------------------------------------------- */

static void *acceptor(void *arg)
{
    int fds0 = rft_count_fds();
    int port;
    int lfd = listener(64, &port);
    rf_acceptor *a = NULL;
    RFT_CHECK_INT(rf_acceptor_open(-1, 0, &a), -EBADF);
    RFT_CHECK_INT(rf_acceptor_open(lfd, 0, NULL), -EFAULT);
    RFT_CHECK_INT(rf_acceptor_next(NULL), -EINVAL);
    RFT_CHECK_INT(rf_acceptor_open(lfd, SOCK_CLOEXEC, &a), 0);
    /* Nothing yet: the deadline ends the wait. */
    rf_deadline_set(rf_now_ns() + 20 * RFT_MS);
    RFT_CHECK_INT(rf_acceptor_next(a), -ETIMEDOUT);
    rf_deadline_set(rf_now_ns() + 10 * RFT_SEC);
    int c[5], s[3];
    for (int i = 0; i < 5; i++)
        RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, &c[i]), 0);
    for (int i = 0; i < 3; i++) {
        s[i] = rf_acceptor_next(a);
        RFT_CHECK(s[i] >= 0);
        RFT_CHECK_INT(rf_send(c[i], "x", 1, 0), 1);
        char b;
        RFT_CHECK_INT(rf_recv(s[i], &b, 1, 0), 1);
    }
    /* Two connections are still queued (or in the listen queue): close
     * releases them. */
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    RFT_CHECK_INT(rf_acceptor_close(a), 0);
    rf_deadline_set(0);
    for (int i = 0; i < 3; i++)
        rf_close(s[i]);
    for (int i = 0; i < 5; i++)
        rf_close(c[i]);
    rf_close(lfd);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    return NULL;
}

static void test_acceptor(void **state) { rft_run(acceptor, NULL); }

typedef struct acc_ctx {
    rf_acceptor *a;
    int res;
    int started;
} acc_ctx;

static void *acc_next(void *arg)
{
    acc_ctx *x = arg;
    x->started = 1;
    x->res = rf_acceptor_next(x->a);
    return NULL;
}

static void *acceptor_cancel(void *arg)
{
    int fds0 = rft_count_fds();
    int port;
    int lfd = listener(64, &port);
    acc_ctx x = {.res = 12345};
    RFT_CHECK_INT(rf_acceptor_open(lfd, SOCK_CLOEXEC, &x.a), 0);
    rf_task *t = rf_spawn(acc_next, &x);
    RFT_CHECK(rft_yield_until(&x.started, 10));
    RFT_CHECK_INT(rf_acceptor_next(x.a), -EBUSY); /* one waiter at a time */
    RFT_CHECK_INT(rf_acceptor_close(x.a), -EBUSY);
    rf_cancel(t);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK_INT(x.res, -ECANCELED);
    rf_task_release(t);
    RFT_CHECK_INT(rf_acceptor_close(x.a), 0);
    rf_close(lfd);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    return NULL;
}

/* A closed acceptor's handle is refused with -ESRCH, also once its record
 * serves a new acceptor: it used to reach the new one. */
static void *acceptor_closed_stale(void *arg)
{
    int fds0 = rft_count_fds();
    int port;
    int lfd = listener(16, &port);
    rf_acceptor *old = NULL, *a = NULL;
    RFT_CHECK_INT(rf_acceptor_open(lfd, SOCK_CLOEXEC, &old), 0);
    RFT_CHECK_INT(rf_acceptor_close(old), 0);
    RFT_CHECK_INT(rf_acceptor_next(old), -ESRCH);
    RFT_CHECK_INT(rf_acceptor_close(old), -ESRCH);
    RFT_CHECK_INT(rf_acceptor_open(lfd, SOCK_CLOEXEC, &a), 0);
    RFT_CHECK(a != old);
    int c = -1;
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, &c), 0);
    RFT_CHECK_INT(rf_acceptor_next(old), -ESRCH); /* nothing taken from a */
    RFT_CHECK_INT(rf_acceptor_close(old), -ESRCH); /* a stays open */
    int s = rf_acceptor_next(a);
    RFT_CHECK(s >= 0);
    RFT_CHECK_INT(rf_acceptor_close(a), 0);
    rf_close(s);
    rf_close(c);
    rf_close(lfd);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    return NULL;
}

static void test_acceptor_closed_handle_is_stale(void **state)
{
    rft_run(acceptor_closed_stale, NULL);
}

static void test_acceptor_cancel(void **state) { rft_run(acceptor_cancel, NULL); }

/* The acceptor's queue is bounded: 400 clients connect while no task
 * takes connections; the acceptor pauses at RF_ACCEPTOR_QUEUE (the rest
 * wait in the listen backlog, holding no fd of ours), and resumes as the
 * queue is taken, until every client has been accepted exactly once. */
#define BOUNDED_CLIENTS 400

static int local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    return getsockname(fd, (struct sockaddr *)&a, &len) == 0 ? ntohs(a.sin_port) : -1;
}

static int peer_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    return getpeername(fd, (struct sockaddr *)&a, &len) == 0 ? ntohs(a.sin_port) : -1;
}

/* A listener with an acceptor armed by a first client (accepted and
 * closed), then BOUNDED_CLIENTS - 1 more clients connected while no task
 * takes connections. *fds_before: the fds open before those clients. */
typedef struct flooded {
    int lfd;
    rf_acceptor *a;
    int *cl; /* the clients' fds */
    uint64_t pauses; /* acceptor pauses while they connected */
    int fds_before;
} flooded;

static bool flood_acceptor(flooded *f)
{
    int port;
    f->lfd = listener(BOUNDED_CLIENTS + 16, &port);
    f->a = NULL;
    RFT_CHECK_INT(rf_acceptor_open(f->lfd, SOCK_CLOEXEC, &f->a), 0);
    f->cl = calloc(BOUNDED_CLIENTS, sizeof *f->cl);
    if (!RFT_CHECK(f->cl != NULL && f->a != NULL))
        return false;
    /* The first client arms the multishot. */
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, &f->cl[0]), 0);
    int first = rf_acceptor_next(f->a);
    RFT_CHECK(first >= 0);
    RFT_CHECK_INT(peer_port(first), local_port(f->cl[0]));
    rf_close(first);
    rf_stats s0 = rft_stats();
    f->fds_before = rft_count_fds();
    for (int i = 1; i < BOUNDED_CLIENTS; i++)
        RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, &f->cl[i]), 0);
    rf_sleep(20 * RFT_MS); /* every handshake done, every CQE reaped */
    f->pauses = rft_stats().acceptor_pauses - s0.acceptor_pauses;
    return true;
}

static void flood_end(flooded *f)
{
    RFT_CHECK_INT(rf_acceptor_close(f->a), 0);
    for (int i = 0; i < BOUNDED_CLIENTS; i++)
        rf_close(f->cl[i]);
    free(f->cl);
}

static void *acceptor_bounded(void *arg)
{
    (void)arg;
    flooded f;
    bool *seen = calloc(65536, sizeof *seen);
    if (!RFT_CHECK(seen != NULL) || !flood_acceptor(&f))
        return NULL;
    int queued = rft_count_fds() - f.fds_before - (BOUNDED_CLIENTS - 1);
    print_message("acceptor: %d of %d connections queued, %llu pauses\n", queued,
                  BOUNDED_CLIENTS - 1, (unsigned long long)f.pauses);
    RFT_CHECK(f.pauses >= 1);
    RFT_CHECK(queued >= (int)RF_ACCEPTOR_QUEUE);
    RFT_CHECK(queued <= (int)RF_ACCEPTOR_QUEUE + 64);
    /* Now take them all: each client exactly once. */
    for (int i = 1; i < BOUNDED_CLIENTS; i++)
        seen[local_port(f.cl[i])] = true;
    int got = 0;
    rf_deadline_set(rf_now_ns() + 10 * RFT_SEC); /* against a hang */
    for (int i = 1; i < BOUNDED_CLIENTS; i++) {
        int fd = rf_acceptor_next(f.a);
        if (!RFT_CHECK(fd >= 0))
            break;
        int pp = peer_port(fd);
        if (RFT_CHECK(pp > 0 && seen[pp]))
            seen[pp] = false, got++;
        rf_close(fd);
    }
    rf_deadline_set(0);
    RFT_CHECK_INT(got, BOUNDED_CLIENTS - 1);
    flood_end(&f);
    rf_close(f.lfd);
    free(seen);
    return NULL;
}

static void test_acceptor_bounded(void **state) { rft_run(acceptor_bounded, NULL); }

/* The listening socket closed while its acceptor is paused (not in the
 * ring): the acceptor hands out what it queued, then -ECANCELED; it never
 * re-arms on the fd number, which a new listener now has. */
static void *acceptor_closed_paused(void *arg)
{
    (void)arg;
    flooded f;
    if (!flood_acceptor(&f))
        return NULL;
    RFT_CHECK(f.pauses >= 1);
    RFT_CHECK_INT(rf_close(f.lfd), 0);
    /* A new listener, most likely on the same fd number. */
    int port2;
    int lfd2 = listener(16, &port2);
    int c2 = -1;
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port2, &c2), 0);
    rf_deadline_set(rf_now_ns() + 2 * RFT_SEC); /* against a hang */
    int handed = 0, fd;
    while ((fd = rf_acceptor_next(f.a)) >= 0) {
        /* Not the new listener's: an accepted socket's own port is its
         * listener's. (Not the peer's port: the kernel may give c2 the
         * same ephemeral port as one of the flood's clients, since they
         * connect to different ports.) */
        RFT_CHECK(local_port(fd) != port2);
        handed++;
        rf_close(fd);
    }
    rf_deadline_set(0);
    RFT_CHECK_INT(fd, -ECANCELED);
    RFT_CHECK(handed >= (int)RF_ACCEPTOR_QUEUE / 2);
    RFT_CHECK_INT(rf_acceptor_next(f.a), -ECANCELED); /* and stays so */
    /* The new listener's client is its own. */
    rf_deadline_set(rf_now_ns() + 2 * RFT_SEC);
    int s2 = rf_accept(lfd2, NULL, NULL, SOCK_CLOEXEC);
    rf_deadline_set(0);
    RFT_CHECK(s2 >= 0 && peer_port(s2) == local_port(c2));
    if (s2 >= 0)
        rf_close(s2);
    flood_end(&f);
    rf_close(c2);
    rf_close(lfd2);
    return NULL;
}

static void test_acceptor_closed_paused(void **state) { rft_run(acceptor_closed_paused, NULL); }

/* An acceptor still open (armed, with queued connections, a task waiting
 * in it) when the loop ends: rf_loop_free cancels and frees it. */
static void *acceptor_left(void *arg)
{
    int *lfd = arg;
    int port;
    *lfd = listener(64, &port);
    /* Static: the task spawned at the end outlives this frame. */
    static acc_ctx x;
    x = (acc_ctx){.res = 12345};
    RFT_CHECK_INT(rf_acceptor_open(*lfd, SOCK_CLOEXEC, &x.a), 0);
    int c[3];
    for (int i = 0; i < 3; i++)
        RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, &c[i]), 0);
    int s = rf_acceptor_next(x.a);
    RFT_CHECK(s >= 0);
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0); /* the others are queued */
    rf_close(s);
    for (int i = 0; i < 3; i++)
        rf_close(c[i]);
    rf_task *t = rf_spawn(acc_next, &x);
    rf_task_release(t);
    return NULL;
}

static void test_acceptor_left_open(void **state)
{
    int fds0 = rft_count_fds();
    int lfd = -1;
    rft_run(acceptor_left, &lfd);
    close(lfd);
    assert_int_equal(rft_count_fds(), fds0);
}

/* ---- EMFILE ------------------------------------------------------------------------------- */

typedef struct echo_ctx {
    int fd;
    int rounds;
} echo_ctx;

static void *echo_one(void *arg)
{
    echo_ctx *e = arg;
    char b[64];
    for (;;) {
        ssize_t n = rf_recv(e->fd, b, sizeof b, 0);
        if (n <= 0)
            break;
        if (rf_send(e->fd, b, (size_t)n, 0) != n)
            break;
        e->rounds++;
    }
    return NULL;
}

typedef struct acc_try {
    int lfd;
    rf_acceptor *a;
    int res;
} acc_try;

/* One accept (or acceptor next) bounded by a 400 ms deadline. */
static void *accept_try(void *arg)
{
    acc_try *at = arg;
    rf_deadline_set(rf_now_ns() + 400 * RFT_MS);
    at->res = at->a ? rf_acceptor_next(at->a) : rf_accept(at->lfd, NULL, NULL, 0);
    return NULL;
}

static void *emfile_body(void *arg)
{
    bool multishot = arg != NULL;
    int port;
    int lfd = listener(16, &port);
    /* One connection served throughout, one waiting in the listen queue. */
    int c1, s1, c2;
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, &c1), 0);
    s1 = rf_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, &c2), 0);
    echo_ctx e = {.fd = s1};
    rf_task *et = rf_spawn(echo_one, &e);

    /* No descriptor left: limit the table to one above the highest open
     * fd and fill every hole below it. Whatever the process inherited (a
     * CI runner may leave a thousand descriptors open, at any numbers)
     * stays open; at least one filler exists, so one can be freed below. */
    int maxfd = rft_highest_fd();
    RFT_CHECK(maxfd >= 0);
    struct rlimit rl = {(rlim_t)maxfd + 2, (rlim_t)maxfd + 2};
    RFT_CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), 0);
    int *filler = malloc(((size_t)maxfd + 2) * sizeof *filler), nfill = 0;
    if (!RFT_CHECK(filler != NULL))
        return NULL;
    while ((filler[nfill] = open("/dev/null", O_RDONLY)) >= 0)
        nfill++;
    RFT_CHECK_INT(errno, EMFILE);
    if (!RFT_CHECK(nfill >= 1))
        return NULL;

    acc_try at = {.lfd = lfd, .res = 12345};
    if (multishot)
        RFT_CHECK_INT(rf_acceptor_open(lfd, SOCK_CLOEXEC, &at.a), 0);
    rf_stats s0 = rft_stats();
    rf_task *acc = rf_spawn(accept_try, &at);
    /* While the accept backs off, the open connection is served. */
    int served = 0;
    for (int i = 0; i < 10; i++) {
        char b[4];
        if (rf_send(c1, "ping", 4, 0) == 4 && rf_recv(c1, b, 4, MSG_WAITALL) == 4)
            served++;
        rf_sleep(5 * RFT_MS);
    }
    RFT_CHECK_INT(served, 10);
    RFT_CHECK(!rf_done(acc));
    RFT_CHECK_INT(rf_join(acc, NULL), 0);
    rf_task_release(acc);
    RFT_CHECK_INT(at.res, -ETIMEDOUT);
    rf_stats s1s = rft_stats();
    uint64_t tries = s1s.accept_emfile - s0.accept_emfile;
    /* Backed off 1, 2, 4, ... ms: about 9 tries in 400 ms, not thousands. */
    RFT_CHECK(tries >= 1);
    RFT_CHECK(tries <= 20);
    rf_acceptor *a = at.a;
    int res;
    /* A descriptor comes free: the accept succeeds. */
    close(filler[--nfill]);
    rf_deadline_set(rf_now_ns() + 10 * RFT_SEC);
    res = multishot ? rf_acceptor_next(a) : rf_accept(lfd, NULL, NULL, 0);
    RFT_CHECK(res >= 0);
    rf_deadline_set(0);
    if (res >= 0)
        rf_close(res);
    if (multishot)
        rf_acceptor_close(a);
    rf_close(c1);
    RFT_CHECK_INT(rf_join(et, NULL), 0);
    RFT_CHECK(e.rounds >= 10);
    rf_task_release(et);
    while (nfill)
        close(filler[--nfill]);
    free(filler);
    rf_close(s1);
    rf_close(c2);
    rf_close(lfd);
    return NULL;
}

static int emfile_child(void *arg)
{
    rft_begin();
    int rc = rf_run(emfile_body, arg, NULL);
    if (rc)
        fprintf(stderr, "rf_run: %s\n", rf_strerror(rc));
    return rc == 0 && rft_failures_ == 0 ? 0 : 1;
}

static void emfile_case(void *arg)
{
    rft_child ch;
    rft_fork(emfile_child, arg, &ch);
    if (!ch.exited || ch.code != 0)
        rft_child_dump("emfile", &ch);
    assert_true(ch.exited);
    assert_int_equal(ch.code, 0);
}

static void test_emfile_accept(void **state) { emfile_case(NULL); }
static void test_emfile_acceptor(void **state) { emfile_case((void *)1); }

/*
 * Batched wake-ups (rf_loop_opts.wake_batch_us, ring.c). The loop's
 * thread and a client thread are pinned to one CPU: the client writes a
 * message on each of WB_PAIRS socketpairs, then reads the echoes, the way
 * a load client sharing the server's CPU does. The loop's thread then
 * waits for its CPU, and its sleeps wait for batches (counted in
 * wakes_batched) where the kernel and /proc allow it; every echo must
 * come back intact either way, and so must the round trips of one pair
 * alone at the end (each a lone completion, which the batch's minimum
 * wait lets through). With RF_LOOP_WAKE_AT_ONCE no sleep batches.
 */
#define WB_PAIRS 16
#define WB_ROUNDS 3000
#define WB_LONE 200

typedef struct wb_case {
    int fds[WB_PAIRS][2];
    int cpu;
    int client_rc;
} wb_case;

static void wb_pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static bool wb_put(int fd, uint32_t v)
{
    return write(fd, &v, sizeof v) == (ssize_t)sizeof v;
}

static int wb_exchange(wb_case *c)
{
    for (uint32_t r = 0; r < WB_ROUNDS + WB_LONE; r++) {
        int n = r < WB_ROUNDS ? WB_PAIRS : 1;
        for (int i = 0; i < n; i++)
            if (!wb_put(c->fds[i][1], r * WB_PAIRS + (uint32_t)i))
                return -1;
        for (int i = 0; i < n; i++) {
            uint32_t v;
            if (read(c->fds[i][1], &v, sizeof v) != (ssize_t)sizeof v ||
                v != r * WB_PAIRS + (uint32_t)i + 1)
                return -1;
        }
    }
    return 0;
}

static void *wb_client(void *arg)
{
    wb_case *c = arg;
    wb_pin(c->cpu);
    c->client_rc = wb_exchange(c);
    /* Success or not, the servers' streams end: their tasks return. */
    for (int i = 0; i < WB_PAIRS; i++)
        shutdown(c->fds[i][1], SHUT_WR);
    return NULL;
}

/* One pair's server: each message back plus one, until end of stream. */
static void *wb_echo(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (;;) {
        uint32_t v;
        ssize_t n = rf_recv(fd, &v, sizeof v, MSG_WAITALL);
        if (n == 0)
            return NULL;
        if (!RFT_CHECK_INT(n, sizeof v))
            return NULL;
        v++;
        if (!RFT_CHECK_INT(rf_send_all(fd, &v, sizeof v, 0, NULL), sizeof v))
            return NULL;
    }
}

static void *wb_main(void *arg)
{
    wb_case *c = arg;
    rf_task *t[WB_PAIRS];
    for (int i = 0; i < WB_PAIRS; i++)
        t[i] = rf_spawn(wb_echo, (void *)(intptr_t)c->fds[i][0]);
    pthread_t th;
    bool started = RFT_CHECK_INT(pthread_create(&th, NULL, wb_client, c), 0);
    if (!started) /* no client: end the servers' streams here */
        for (int i = 0; i < WB_PAIRS; i++)
            shutdown(c->fds[i][1], SHUT_WR);
    for (int i = 0; i < WB_PAIRS; i++)
        RFT_CHECK_INT(rf_join(t[i], NULL), 0);
    if (started) {
        pthread_join(th, NULL);
        RFT_CHECK_INT(c->client_rc, 0);
    }
    return NULL;
}

static uint64_t wb_run(unsigned flags)
{
    wb_case c = {.cpu = sched_getcpu()};
    cpu_set_t saved;
    assert_int_equal(
        pthread_getaffinity_np(pthread_self(), sizeof saved, &saved), 0);
    /* A lost message fails the client's read after 10 s, not a hang. */
    struct timeval tv = {.tv_sec = 10};
    for (int i = 0; i < WB_PAIRS; i++) {
        assert_int_equal(
            socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c.fds[i]), 0);
        assert_int_equal(setsockopt(c.fds[i][1], SOL_SOCKET, SO_RCVTIMEO,
                                    &tv, sizeof tv),
                         0);
    }
    rf_loop *l;
    /* The default bound, whatever RINGFIBER_WAKE_BATCH_US says. */
    rf_loop_opts o = {.flags = flags,
                      .wake_batch_us = RF_WAKE_BATCH_DEFAULT_US};
    assert_int_equal(rf_loop_new(&l, &o), 0);
    wb_pin(c.cpu);
    rft_begin();
    int rc = rf_loop_run_until_complete(l, wb_main, &c, NULL);
    pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
    rf_stats st;
    int src = rf_loop_stats(l, &st);
    int frc = rf_loop_free(l);
    for (int i = 0; i < WB_PAIRS; i++) {
        close(c.fds[i][0]);
        close(c.fds[i][1]);
    }
    rft_end();
    assert_int_equal(rc, 0);
    assert_int_equal(src, 0);
    assert_int_equal(frc, 0);
    return st.wakes_batched;
}

static void test_wake_batch_shared_cpu(void **state)
{
    (void)state;
    uint64_t batched = wb_run(0);
    /* Batching needs the minimum wait's fallback (EXT_ARG, 5.11) and a
     * readable /proc/thread-self/schedstat. */
    struct utsname u;
    int major = 0, minor = 0;
    bool can = access("/proc/thread-self/schedstat", R_OK) == 0 &&
               uname(&u) == 0 &&
               sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
               (major > 5 || (major == 5 && minor >= 11));
    fprintf(stderr, "wake batch: %llu batched sleeps (schedstat %s)\n",
            (unsigned long long)batched, can ? "readable" : "absent");
    if (can)
        assert_true(batched > 0);
    assert_int_equal(wb_run(RF_LOOP_WAKE_AT_ONCE), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_outside_task),
    cmocka_unit_test(test_bad_input),
    cmocka_unit_test(test_roundtrip),
    cmocka_unit_test(test_reset_peer),
    cmocka_unit_test(test_large_transfer),
    cmocka_unit_test(test_send_all_bad_input),
    cmocka_unit_test(test_send_all_large),
    cmocka_unit_test(test_send_all_partial_cancel),
    cmocka_unit_test(test_send_all_partial_deadline),
    cmocka_unit_test(test_send_all_closed_peer_no_sigpipe),
    cmocka_unit_test(test_write_all_closed_peer_raises_sigpipe),
    cmocka_unit_test(test_deadlines),
    cmocka_unit_test(test_cancel_ops),
    cmocka_unit_test(test_cancel_race_accept),
    cmocka_unit_test(test_close_inflight_reuse),
    cmocka_unit_test(test_close_wakes_all),
    cmocka_unit_test(test_close_same_bucket),
    cmocka_unit_test(test_acceptor),
    cmocka_unit_test(test_acceptor_closed_handle_is_stale),
    cmocka_unit_test(test_acceptor_cancel),
    cmocka_unit_test(test_acceptor_bounded),
    cmocka_unit_test(test_acceptor_closed_paused),
    cmocka_unit_test(test_acceptor_left_open),
    cmocka_unit_test(test_emfile_accept),
    cmocka_unit_test(test_emfile_acceptor),
    cmocka_unit_test(test_wake_batch_shared_cpu),
};

static const rft_child_case children[] = {
    {"send_all_closed_peer", closed_peer_child, (void *)1},
    {"write_all_closed_peer", closed_peer_child, NULL},
};

RFT_MAIN_CHILDREN(tests, children, sizeof children / sizeof children[0])
