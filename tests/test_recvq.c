/*
 * Multishot receive (RF_LOOP_RECV_MULTISHOT, runtime/recvq.c): rf_recv
 * served from a socket's queue keeps recv(2)'s contract: the bytes in
 * order whatever the buffers' and the reads' sizes, the end after the
 * last of them, errors, MSG_PEEK / MSG_WAITALL / MSG_DONTWAIT; deadlines
 * and rf_close of a socket a task waits on; a reader that stops reading
 * pauses its socket, and running out of buffers falls back to a plain
 * receive, neither losing a byte; rf_read, rf_poll and rf_recvmsg beside
 * it; a datagram socket keeps its boundaries (plain path); a number
 * reused after close(2); a loop freed with multishots armed; bad options.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "helpers.h"

/* Run body on a loop with multishot receive, bufs buffers of size bytes
 * (0: the defaults). */
static void *run_ms(rf_fn body, void *arg, unsigned bufs, unsigned size)
{
    rf_loop_opts o = {.flags = RF_LOOP_RECV_MULTISHOT,
                      .recv_bufs = bufs,
                      .recv_buf_size = size};
    void *result = NULL;
    rft_begin();
    int rc = rf_run_opts(body, arg, &result, &o);
    rft_end();
    assert_int_equal(rc, 0);
    return result;
}

static rf_stats stats(void)
{
    rf_stats s;
    memset(&s, 0, sizeof s);
    RFT_CHECK_INT(rf_loop_stats(rf_loop_current(), &s), 0);
    return s;
}

/* A TCP connection on 127.0.0.1: *c the client's end, *s the server's. */
static bool tcp_pair(int *c, int *s)
{
    int lfd = -1;
    if (!RFT_CHECK_INT(rf_tcp_listen("127.0.0.1", 0, 16, &lfd), 0))
        return false;
    int port = rf_sock_port(lfd);
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)port, c), 0);
    *s = rf_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
    RFT_CHECK(*s >= 0);
    RFT_CHECK_INT(rf_close(lfd), 0);
    return *c >= 0 && *s >= 0;
}

/* The byte at position i of a test stream. */
static char pat(size_t i) { return (char)(i * 131 + (i >> 8) * 7); }

/* ---- the bytes, in order -------------------------------------------------------- */

typedef struct stream_ctx {
    int fd;
    size_t total, chunk;
} stream_ctx;

static void *stream_writer(void *arg)
{
    stream_ctx *x = arg;
    char buf[3000];
    size_t sent = 0;
    while (sent < x->total) {
        size_t n = x->total - sent < x->chunk ? x->total - sent : x->chunk;
        for (size_t i = 0; i < n; i++)
            buf[i] = pat(sent + i);
        if (!RFT_CHECK_INT(rf_send_all(x->fd, buf, n, 0, NULL), (long long)n))
            break;
        sent += n;
    }
    RFT_CHECK_INT(rf_shutdown(x->fd, SHUT_WR), 0);
    return NULL;
}

/* Reads of sizes 1..97 against writes of 1..3000 bytes through buffers
 * of 64 bytes: every byte, in order, then 0 (twice). */
static void *in_order(void *arg)
{
    (void)arg;
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    size_t sizes[] = {1, 61, 64, 65, 3000};
    size_t total = 40000;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int c2, s2;
        if (!tcp_pair(&c2, &s2))
            break;
        stream_ctx x = {c2, total, sizes[k]};
        rf_task *w = rf_spawn(stream_writer, &x);
        size_t got = 0, rlen = 1;
        char buf[128];
        bool ok = true;
        for (;;) {
            ssize_t n = rf_recv(s2, buf, rlen, 0);
            if (n <= 0) {
                RFT_CHECK_INT(n, 0);
                break;
            }
            for (ssize_t i = 0; i < n && ok; i++)
                ok = RFT_CHECK_INT(buf[i], pat(got + (size_t)i));
            got += (size_t)n;
            rlen = rlen % 97 + 1;
        }
        RFT_CHECK_INT(got, total);
        RFT_CHECK_INT(rf_recv(s2, buf, sizeof buf, 0), 0); /* the end stays */
        RFT_CHECK_INT(rf_join(w, NULL), 0);
        rf_task_release(w);
        RFT_CHECK_INT(rf_close(s2), 0);
        RFT_CHECK_INT(rf_close(c2), 0);
    }
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(c), 0);
    return NULL;
}

static void test_in_order(void **state)
{
    (void)state;
    run_ms(in_order, NULL, 64, 64);
}

/* An echo ping-pong over a Unix stream socket with the default buffers:
 * the second rf_recv on a socket costs no SQE (the multishot stays). */
static void *echo_sqes(void *arg)
{
    (void)arg;
    int sv[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char b[16];
    RFT_CHECK_INT(rf_send(sv[1], "ping", 4, 0), 4);
    RFT_CHECK_INT(rf_recv(sv[0], b, sizeof b, 0), 4);
    rf_stats s0 = stats();
    for (int i = 0; i < 100; i++) {
        RFT_CHECK_INT(rf_send(sv[1], "ping", 4, 0), 4);
        RFT_CHECK_INT(rf_recv(sv[0], b, sizeof b, 0), 4);
        RFT_CHECK(memcmp(b, "ping", 4) == 0);
    }
    rf_stats s1 = stats();
    /* 100 sends, and no receive submitted. */
    RFT_CHECK_INT(s1.sqes_submitted - s0.sqes_submitted, 100);
    RFT_CHECK_INT(rf_close(sv[0]), 0);
    RFT_CHECK_INT(rf_close(sv[1]), 0);
    return NULL;
}

static void test_echo_no_recv_sqes(void **state)
{
    (void)state;
    run_ms(echo_sqes, NULL, 0, 0);
}

/* ---- flags ---------------------------------------------------------------------- */

static void *flags(void *arg)
{
    (void)arg;
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    char b[64];
    /* Nothing yet. */
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, MSG_DONTWAIT), -EAGAIN);
    RFT_CHECK_INT(rf_send(c, "abcdef", 6, 0), 6);
    /* MSG_PEEK leaves the bytes where they are. */
    RFT_CHECK_INT(rf_recv(s, b, 3, MSG_PEEK), 3);
    RFT_CHECK(memcmp(b, "abc", 3) == 0);
    RFT_CHECK_INT(rf_recv(s, b, 2, 0), 2);
    RFT_CHECK(memcmp(b, "ab", 2) == 0);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, MSG_DONTWAIT), 4);
    RFT_CHECK(memcmp(b, "cdef", 4) == 0);
    /* MSG_WAITALL waits for all of len, across sends. */
    RFT_CHECK_INT(rf_send(c, "12", 2, 0), 2);
    RFT_CHECK_INT(rf_send(c, "345", 3, 0), 3);
    RFT_CHECK_INT(rf_send(c, "6789", 4, 0), 4);
    RFT_CHECK_INT(rf_recv(s, b, 9, MSG_WAITALL), 9);
    RFT_CHECK(memcmp(b, "123456789", 9) == 0);
    /* MSG_PEEK | MSG_WAITALL: len bytes seen, none taken. */
    RFT_CHECK_INT(rf_send(c, "xy", 2, 0), 2);
    RFT_CHECK_INT(rf_send(c, "z", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s, b, 3, MSG_PEEK | MSG_WAITALL), 3);
    RFT_CHECK(memcmp(b, "xyz", 3) == 0);
    RFT_CHECK_INT(rf_recv(s, b, 3, MSG_WAITALL), 3);
    RFT_CHECK(memcmp(b, "xyz", 3) == 0);
    /* MSG_WAITALL cut short by the end returns what came. */
    RFT_CHECK_INT(rf_send(c, "end", 3, 0), 3);
    RFT_CHECK_INT(rf_shutdown(c, SHUT_WR), 0);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, MSG_WAITALL), 3);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 0);
    /* Bad input as without the flag. */
    RFT_CHECK_INT(rf_recv(-1, b, 1, 0), -EBADF);
    RFT_CHECK_INT(rf_recv(s, NULL, 1, 0), -EFAULT);
    RFT_CHECK_INT(rf_recv(s, b, 0, 0), 0);
    int fds0 = rft_count_fds();
    int p[2];
    RFT_CHECK_INT(pipe2(p, O_CLOEXEC), 0);
    RFT_CHECK_INT(rf_recv(p[0], b, 1, 0), -ENOTSOCK);
    close(p[0]);
    close(p[1]);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(c), 0);
    return NULL;
}

static void test_flags(void **state)
{
    (void)state;
    run_ms(flags, NULL, 0, 0);
}

/* MSG_DONTWAIT with nothing armed reads the socket itself: the first
 * call on a socket, and a poll-then-read loop after rf_poll stopped the
 * multishot, get the bytes at once. */
static void *dontwait_unarmed(void *arg)
{
    (void)arg;
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    char b[16];
    RFT_CHECK_INT(rf_send(c, "hi", 2, 0), 2);
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, MSG_DONTWAIT), 2);
    RFT_CHECK_INT(rf_send(c, "x", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 1); /* armed now */
    RFT_CHECK_INT(rf_send(c, "yz", 2, 0), 2);
    ssize_t r = -EAGAIN;
    for (int i = 0; i < 3 && r == -EAGAIN; i++) {
        RFT_CHECK_INT(rf_poll(s, POLLIN) & POLLIN, POLLIN);
        r = rf_recv(s, b, sizeof b, MSG_DONTWAIT);
    }
    RFT_CHECK_INT(r, 2);
    RFT_CHECK(memcmp(b, "yz", 2) == 0);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(c), 0);
    return NULL;
}

static void test_dontwait_unarmed(void **state)
{
    (void)state;
    run_ms(dontwait_unarmed, NULL, 0, 0);
}

/* Flags that do not touch the bytes are served from the queue; others
 * are recv(2)'s once nothing waits in it (-EBUSY while bytes do);
 * MSG_WAITALL on a datagram socket is recv(2)'s, one datagram. */
static void *other_flags(void *arg)
{
    (void)arg;
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    char b[16];
    RFT_CHECK_INT(rf_send(c, "a", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s, b, 1, 0), 1); /* armed */
    RFT_CHECK_INT(rf_send(c, "bcd", 3, 0), 3);
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0); /* queued */
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, MSG_TRUNC), -EBUSY);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, MSG_CMSG_CLOEXEC), 3);
    RFT_CHECK(memcmp(b, "bcd", 3) == 0);
    /* Nothing queued: MSG_TRUNC stops the multishot and is recv(2)'s
     * (TCP discards len bytes and returns their count). */
    RFT_CHECK_INT(rf_recv(s, b, 2, MSG_TRUNC | MSG_DONTWAIT), -EAGAIN);
    RFT_CHECK_INT(rf_send(c, "efgh", 4, 0), 4);
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    RFT_CHECK_INT(rf_recv(s, b, 2, MSG_TRUNC), 2);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 2);
    RFT_CHECK(memcmp(b, "gh", 2) == 0);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(c), 0);

    int d[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, d), 0);
    RFT_CHECK_INT(rf_send(d[1], "one", 3, 0), 3);
    RFT_CHECK_INT(rf_send(d[1], "two", 3, 0), 3);
    RFT_CHECK_INT(rf_recv(d[0], b, sizeof b, MSG_WAITALL), 3);
    RFT_CHECK(memcmp(b, "one", 3) == 0);
    RFT_CHECK_INT(rf_close(d[0]), 0);
    RFT_CHECK_INT(rf_close(d[1]), 0);
    return NULL;
}

static void test_other_flags(void **state)
{
    (void)state;
    run_ms(other_flags, NULL, 0, 0);
}

/* MSG_PEEK | MSG_WAITALL for more than the queue may hold (2 buffers of
 * 64 bytes): a short peek of the first bytes, in order, never bytes from
 * beyond them; then all of it is read. */
static void *peek_beyond_ring(void *arg)
{
    (void)arg;
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    char b[400], m[300];
    RFT_CHECK_INT(rf_send(c, "!", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s, b, 1, 0), 1); /* armed */
    for (size_t i = 0; i < sizeof m; i++)
        m[i] = pat(i);
    RFT_CHECK_INT(rf_send(c, m, sizeof m, 0), (long long)sizeof m);
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    rf_deadline_set(rf_now_ns() + 5 * RFT_SEC);
    ssize_t r = rf_recv(s, b, 150, MSG_PEEK | MSG_WAITALL);
    RFT_CHECK(r > 0 && r <= 150);
    if (r > 0)
        RFT_CHECK(memcmp(b, m, (size_t)r) == 0);
    RFT_CHECK_INT(rf_recv(s, b, sizeof m, MSG_WAITALL), (long long)sizeof m);
    RFT_CHECK(memcmp(b, m, sizeof m) == 0);
    rf_deadline_set(0);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(c), 0);
    return NULL;
}

static void test_peek_beyond_ring(void **state)
{
    (void)state;
    run_ms(peek_beyond_ring, NULL, 2, 64);
}

typedef struct poll_ctx {
    int fd;
    int res;
} poll_ctx;

static void *poller(void *arg)
{
    poll_ctx *x = arg;
    rf_deadline_set(rf_now_ns() + 5 * RFT_SEC);
    x->res = rf_poll(x->fd, POLLIN);
    return NULL;
}

/* A task that polls a socket another task reads does not get in the
 * reader's way. */
static void *poll_beside_reader(void *arg)
{
    (void)arg;
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    char b[16];
    RFT_CHECK_INT(rf_send(c, "a", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s, b, 1, 0), 1); /* armed */
    poll_ctx x = {s, 0};
    rf_task *t = rf_spawn(poller, &x);
    RFT_CHECK_INT(rf_yield(), 0); /* the poller is in rf_poll */
    RFT_CHECK_INT(rf_send(c, "b", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 1);
    RFT_CHECK_INT(b[0], 'b');
    RFT_CHECK_INT(rf_send(c, "c", 1, 0), 1); /* the poller's, if it waits */
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    RFT_CHECK(x.res > 0 && (x.res & POLLIN));
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(c), 0);
    return NULL;
}

static void test_poll_beside_reader(void **state)
{
    (void)state;
    run_ms(poll_beside_reader, NULL, 0, 0);
}

/* A socket whose task does not read fills the ring (16 x 64 bytes) before
 * its pause takes effect: another socket's bytes still come, whole and in
 * order (a plain receive when no buffer is left). */
static void *hog(void *arg)
{
    (void)arg;
    int c1, s1, c2, s2;
    if (!tcp_pair(&c1, &s1) || !tcp_pair(&c2, &s2))
        return NULL;
    char b[2048];
    RFT_CHECK_INT(rf_send(c1, "a", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s1, b, 1, 0), 1);
    RFT_CHECK_INT(rf_send(c2, "a", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s2, b, 1, 0), 1);
    memset(b, 'x', sizeof b);
    RFT_CHECK_INT(rf_send(c1, b, 2000, 0), 2000);
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    for (int i = 0; i < 10; i++) {
        char m[16];
        int len = snprintf(m, sizeof m, "hello %d", i);
        RFT_CHECK_INT(rf_send(c2, m, (size_t)len, 0), len);
        RFT_CHECK_INT(rf_recv(s2, b, (size_t)len, MSG_WAITALL), len);
        RFT_CHECK(memcmp(b, m, (size_t)len) == 0);
    }
    size_t got = 0;
    while (got < 2000) {
        ssize_t n = rf_recv(s1, b, sizeof b, 0);
        if (!RFT_CHECK(n > 0))
            break;
        for (ssize_t i = 0; i < n; i++)
            if (b[i] != 'x')
                RFT_CHECK_INT(b[i], 'x');
        got += (size_t)n;
    }
    RFT_CHECK_INT(got, 2000);
    RFT_CHECK_INT(rf_close(s1), 0);
    RFT_CHECK_INT(rf_close(c1), 0);
    RFT_CHECK_INT(rf_close(s2), 0);
    RFT_CHECK_INT(rf_close(c2), 0);
    return NULL;
}

static void test_hog(void **state)
{
    (void)state;
    run_ms(hog, NULL, 16, 64);
}

/* ---- errors, deadlines, close ------------------------------------------------------- */

static void *reset_peer(void *arg)
{
    (void)arg;
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    char b[8];
    RFT_CHECK_INT(rf_send(c, "q", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s, b, 1, 0), 1);
    /* The peer resets while the multishot is armed. */
    struct linger lg = {1, 0};
    RFT_CHECK_INT(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    RFT_CHECK_INT(rf_close(c), 0);
    RFT_CHECK_INT(rf_recv(s, b, 1, 0), -ECONNRESET);
    RFT_CHECK_INT(rf_close(s), 0);
    return NULL;
}

static void test_reset_peer(void **state)
{
    (void)state;
    run_ms(reset_peer, NULL, 0, 0);
}

static void *deadline(void *arg)
{
    (void)arg;
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    char b[8];
    rf_deadline_set(rf_now_ns() + 20 * RFT_MS);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), -ETIMEDOUT);
    rf_deadline_set(0);
    /* The multishot stayed: what comes next is received, whole. */
    RFT_CHECK_INT(rf_send(c, "late", 4, 0), 4);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 4);
    RFT_CHECK(memcmp(b, "late", 4) == 0);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(c), 0);
    return NULL;
}

static void test_deadline(void **state)
{
    (void)state;
    run_ms(deadline, NULL, 0, 0);
}

typedef struct reader_ctx {
    int fd;
    ssize_t res;
} reader_ctx;

static void *reader(void *arg)
{
    reader_ctx *x = arg;
    char b[8];
    x->res = rf_recv(x->fd, b, sizeof b, 0);
    return NULL;
}

/* A second reader while one waits: -EBUSY. rf_close of the socket ends
 * the waiting one with -ECANCELED, and the peer sees the close. The
 * cancellation of a task in rf_recv ends its wait. */
static void *close_waiting(void *arg)
{
    (void)arg;
    int fds0 = rft_count_fds();
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    reader_ctx x = {s, 1};
    rf_task *t = rf_spawn(reader, &x);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    char b[8];
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), -EBUSY);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    RFT_CHECK_INT(x.res, -ECANCELED);
    rf_deadline_set(rf_now_ns() + 5 * RFT_SEC);
    RFT_CHECK_INT(rf_recv(c, b, sizeof b, 0), 0); /* the peer's end */
    rf_deadline_set(0);
    RFT_CHECK_INT(rf_close(c), 0);

    if (!tcp_pair(&c, &s))
        return NULL;
    x = (reader_ctx){s, 1};
    t = rf_spawn(reader, &x);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    rf_cancel(t);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    rf_task_release(t);
    RFT_CHECK_INT(x.res, -ECANCELED);
    /* The socket is still readable by another task. */
    RFT_CHECK_INT(rf_send(c, "ok", 2, 0), 2);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 2);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(c), 0);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    return NULL;
}

static void test_close_waiting(void **state)
{
    (void)state;
    run_ms(close_waiting, NULL, 0, 0);
}

/* ---- flow control ------------------------------------------------------------------ */

/* 16 buffers of 64 bytes: a socket whose task does not read pauses at 2
 * buffers (an eighth of the ring), and another socket's data still comes.
 * Then the slow one reads all of its stream, in order. */
static void *pause_slow_reader(void *arg)
{
    (void)arg;
    int c1, s1, c2, s2;
    if (!tcp_pair(&c1, &s1) || !tcp_pair(&c2, &s2))
        return NULL;
    char b[256];
    RFT_CHECK_INT(rf_send(c1, "a", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s1, b, 1, 0), 1); /* armed */
    size_t total = 20000;
    stream_ctx x = {c1, total, 500};
    rf_task *w = rf_spawn(stream_writer, &x);
    RFT_CHECK_INT(rf_sleep(20 * RFT_MS), 0);
    RFT_CHECK(stats().recv_pauses >= 1);
    /* The other socket is served meanwhile. */
    for (int i = 0; i < 20; i++) {
        RFT_CHECK_INT(rf_send(c2, "hello", 5, 0), 5);
        RFT_CHECK_INT(rf_recv(s2, b, sizeof b, 0), 5);
    }
    size_t got = 0;
    for (;;) {
        ssize_t n = rf_recv(s1, b, sizeof b, 0);
        if (n <= 0) {
            RFT_CHECK_INT(n, 0);
            break;
        }
        bool ok = true;
        for (ssize_t i = 0; i < n && ok; i++)
            ok = RFT_CHECK_INT(b[i], pat(got + (size_t)i));
        got += (size_t)n;
    }
    RFT_CHECK_INT(got, total);
    RFT_CHECK_INT(rf_join(w, NULL), 0);
    rf_task_release(w);
    RFT_CHECK_INT(rf_close(s1), 0);
    RFT_CHECK_INT(rf_close(c1), 0);
    RFT_CHECK_INT(rf_close(s2), 0);
    RFT_CHECK_INT(rf_close(c2), 0);
    return NULL;
}

static void test_pause_slow_reader(void **state)
{
    (void)state;
    run_ms(pause_slow_reader, NULL, 16, 64);
}

/* 2 buffers for 4 sockets that all have data before any is read: some
 * multishots end for want of a buffer, their sockets' next rf_recv is a
 * plain one, and every byte still arrives in order. */
static void *nobufs(void *arg)
{
    (void)arg;
    enum { N = 4 };
    int c[N], s[N];
    char b[64];
    for (int i = 0; i < N; i++) {
        if (!tcp_pair(&c[i], &s[i]))
            return NULL;
        /* Arm each: one byte through. */
        RFT_CHECK_INT(rf_send(c[i], "!", 1, 0), 1);
        RFT_CHECK_INT(rf_recv(s[i], b, 1, 0), 1);
    }
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++) {
            char m[40];
            int len = snprintf(m, sizeof m, "socket %d round %d", i, round);
            RFT_CHECK_INT(rf_send(c[i], m, (size_t)len, 0), len);
        }
        RFT_CHECK_INT(rf_sleep(RFT_MS), 0); /* all of it in flight */
        for (int i = 0; i < N; i++) {
            char m[40];
            int len = snprintf(m, sizeof m, "socket %d round %d", i, round);
            RFT_CHECK_INT(rf_recv(s[i], b, (size_t)len, MSG_WAITALL), len);
            RFT_CHECK(memcmp(b, m, (size_t)len) == 0);
        }
    }
    RFT_CHECK(stats().recv_nobufs >= 1);
    for (int i = 0; i < N; i++) {
        RFT_CHECK_INT(rf_close(s[i]), 0);
        RFT_CHECK_INT(rf_close(c[i]), 0);
    }
    return NULL;
}

static void test_nobufs(void **state)
{
    (void)state;
    run_ms(nobufs, NULL, 2, 64);
}

/* ---- beside rf_recv: rf_read, rf_poll, rf_recvmsg; datagrams; reuse ---------------- */

static void *other_calls(void *arg)
{
    (void)arg;
    int c, s;
    if (!tcp_pair(&c, &s))
        return NULL;
    char b[16];
    RFT_CHECK_INT(rf_send(c, "a", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s, b, 1, 0), 1); /* armed */
    RFT_CHECK_INT(rf_send(c, "bcd", 3, 0), 3);
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0); /* taken by the multishot */
    /* The queued bytes are readable, and read first. */
    RFT_CHECK_INT(rf_poll(s, POLLIN), POLLIN);
    struct iovec iov = {b, sizeof b};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    RFT_CHECK_INT(rf_recvmsg(s, &mh, 0), -EBUSY);
    RFT_CHECK_INT(rf_read(s, b, 2, -1), 2);
    RFT_CHECK(memcmp(b, "bc", 2) == 0);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 1);
    RFT_CHECK_INT(b[0], 'd');
    /* Nothing queued: rf_recvmsg stops the multishot and goes to the
     * socket, and so does rf_poll. */
    RFT_CHECK_INT(rf_recvmsg(s, &mh, MSG_DONTWAIT), -EAGAIN);
    RFT_CHECK_INT(rf_send(c, "ef", 2, 0), 2);
    RFT_CHECK_INT(rf_poll(s, POLLIN) & POLLIN, POLLIN);
    RFT_CHECK_INT(rf_recvmsg(s, &mh, 0), 2);
    RFT_CHECK(memcmp(b, "ef", 2) == 0);
    RFT_CHECK_INT(rf_send(c, "g", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 1);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(c), 0);

    /* Datagrams keep their boundaries: the plain path. */
    int d[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, d), 0);
    RFT_CHECK_INT(rf_send(d[1], "one", 3, 0), 3);
    RFT_CHECK_INT(rf_send(d[1], "two", 3, 0), 3);
    RFT_CHECK_INT(rf_recv(d[0], b, sizeof b, 0), 3);
    RFT_CHECK(memcmp(b, "one", 3) == 0);
    RFT_CHECK_INT(rf_recv(d[0], b, sizeof b, 0), 3);
    RFT_CHECK(memcmp(b, "two", 3) == 0);
    RFT_CHECK_INT(rf_close(d[0]), 0);
    RFT_CHECK_INT(rf_close(d[1]), 0);
    return NULL;
}

static void test_other_calls(void **state)
{
    (void)state;
    run_ms(other_calls, NULL, 0, 0);
}

/* A socket closed with close(2) while its multishot is armed: the number
 * rf_socket hands out next is a new socket, whose reads see only its own
 * bytes. */
static void *number_reused(void *arg)
{
    (void)arg;
    int sv[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char b[16];
    RFT_CHECK_INT(rf_send(sv[1], "x", 1, 0), 1);
    RFT_CHECK_INT(rf_recv(sv[0], b, 1, 0), 1); /* armed */
    int old = sv[0];
    int lfd = -1;
    RFT_CHECK_INT(rf_tcp_listen("127.0.0.1", 0, 4, &lfd), 0);
    int port = rf_sock_port(lfd);
    RFT_CHECK_INT(close(old), 0);
    /* The lowest free number: old's. */
    int fd = rf_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    RFT_CHECK_INT(fd, old);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    RFT_CHECK_INT(rf_connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int s = rf_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
    RFT_CHECK(s >= 0);
    /* Bytes for the old socket now (if it is not gone yet): they are not
     * the new one's. */
    ssize_t r = rf_send(sv[1], "old", 3, 0);
    RFT_CHECK(r == 3 || r == -EPIPE || r == -ECONNRESET);
    RFT_CHECK_INT(rf_send(s, "new", 3, 0), 3);
    RFT_CHECK_INT(rf_recv(fd, b, sizeof b, 0), 3);
    RFT_CHECK(memcmp(b, "new", 3) == 0);
    RFT_CHECK_INT(rf_close(fd), 0);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(lfd), 0);
    /* The old socket's multishot was cancelled: its peer sees the end. */
    rf_deadline_set(rf_now_ns() + 5 * RFT_SEC);
    r = rf_recv(sv[1], b, sizeof b, 0);
    RFT_CHECK(r == 0 || r == -ECONNRESET);
    rf_deadline_set(0);
    RFT_CHECK_INT(rf_close(sv[1]), 0);
    return NULL;
}

static void test_number_reused(void **state)
{
    (void)state;
    run_ms(number_reused, NULL, 0, 0);
}

/* rf_run returns with tasks still in rf_recv and multishots armed: the
 * loop cancels them, accounts for every completion, frees the buffers
 * (ASan sees no leak) and the descriptors are the caller's. */
static void *left_waiting(void *arg)
{
    int *fds = arg;
    static reader_ctx x[4];
    for (int i = 0; i < 4; i++) {
        RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                                 &fds[2 * i]), 0);
        RFT_CHECK_INT(rf_send(fds[2 * i + 1], "z", 1, 0), 1);
        x[i] = (reader_ctx){fds[2 * i], 1};
        rf_task *t = rf_spawn(reader, &x[i]);
        rf_task_release(t);
    }
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    /* Each read its byte and waits again: armed. */
    for (int i = 0; i < 4; i++) {
        x[i].res = 0;
        rf_task *t = rf_spawn(reader, &x[i]);
        rf_task_release(t);
    }
    return NULL;
}

static void test_left_waiting(void **state)
{
    (void)state;
    int fds[8];
    run_ms(left_waiting, fds, 0, 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(close(fds[i]), 0);
}

static void test_bad_options(void **state)
{
    (void)state;
    rf_loop *l = NULL;
    rf_loop_opts o = {.recv_bufs = 64};
    assert_int_equal(rf_loop_new(&l, &o), -EINVAL); /* without the flag */
    o = (rf_loop_opts){.recv_buf_size = 4096};
    assert_int_equal(rf_loop_new(&l, &o), -EINVAL);
    o = (rf_loop_opts){.flags = RF_LOOP_RECV_MULTISHOT, .recv_bufs = 3};
    assert_int_equal(rf_loop_new(&l, &o), -EINVAL);
    o.recv_bufs = 1;
    assert_int_equal(rf_loop_new(&l, &o), -EINVAL);
    o.recv_bufs = 2 * RF_RECV_BUFS_MAX;
    assert_int_equal(rf_loop_new(&l, &o), -EINVAL);
    o = (rf_loop_opts){.flags = RF_LOOP_RECV_MULTISHOT, .recv_buf_size = 63};
    assert_int_equal(rf_loop_new(&l, &o), -EINVAL);
    o.recv_buf_size = RF_RECV_BUF_SIZE_MAX + 1;
    assert_int_equal(rf_loop_new(&l, &o), -EINVAL);
    assert_null(l);
    o = (rf_loop_opts){.flags = RF_LOOP_RECV_MULTISHOT,
                       .recv_bufs = RF_RECV_BUFS_MAX,
                       .recv_buf_size = 64};
    assert_int_equal(rf_loop_new(&l, &o), 0);
    assert_int_equal(rf_loop_free(l), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_in_order),
    cmocka_unit_test(test_echo_no_recv_sqes),
    cmocka_unit_test(test_flags),
    cmocka_unit_test(test_dontwait_unarmed),
    cmocka_unit_test(test_other_flags),
    cmocka_unit_test(test_peek_beyond_ring),
    cmocka_unit_test(test_poll_beside_reader),
    cmocka_unit_test(test_hog),
    cmocka_unit_test(test_reset_peer),
    cmocka_unit_test(test_deadline),
    cmocka_unit_test(test_close_waiting),
    cmocka_unit_test(test_pause_slow_reader),
    cmocka_unit_test(test_nobufs),
    cmocka_unit_test(test_other_calls),
    cmocka_unit_test(test_number_reused),
    cmocka_unit_test(test_left_waiting),
    cmocka_unit_test(test_bad_options),
};

RFT_MAIN(tests)
