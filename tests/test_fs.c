/*
 * File operations on temporary files (mkstemp in /tmp), pipes and
 * socketpairs: success and bad input of each call, reads spanning EOF,
 * short transfers, a large transfer checked by checksum, deadlines and
 * cancellation of a read, close with a read in flight.
 */
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "helpers.h"

static int tmpfile_fd(char *path)
{
    strcpy(path, "/tmp/ringfiber-fs-XXXXXX");
    int fd = mkstemp(path);
    return fd;
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i + seed) * 2654435761u >> 11);
}

/* ---- outside a task, bad input ------------------------------------------------ */

static void test_outside_task(void **state)
{
    char b[4];
    assert_int_equal(rf_open("/dev/null", O_RDONLY, 0), -EPERM);
    assert_int_equal(rf_read(0, b, 4, 0), -EPERM);
    assert_int_equal(rf_write(1, b, 0, -1), -EPERM);
    assert_int_equal(rf_fsync(0), -EPERM);
    size_t done = 7;
    assert_int_equal(rf_read_full(0, b, 4, 0, &done), -EPERM);
    assert_int_equal(done, 0);
}

static void *bad_input(void *arg)
{
    char path[64];
    int tfd = tmpfile_fd(path);
    RFT_CHECK(tfd >= 0);
    char b[16];
    struct iovec iov[2] = {{b, 8}, {NULL, 8}};
    struct statx sx;
    RFT_CHECK_INT(rf_open(NULL, O_RDONLY, 0), -EFAULT);
    RFT_CHECK_INT(rf_open("/tmp/ringfiber-no/such/file", O_RDONLY, 0), -ENOENT);
    RFT_CHECK_INT(rf_read(-1, b, 8, 0), -EBADF);
    RFT_CHECK_INT(rf_write(-1, b, 8, 0), -EBADF);
    RFT_CHECK_INT(rf_read(RFT_BAD_FD, b, 8, 0), -EBADF); /* no such fd: the kernel's */
    RFT_CHECK_INT(rf_read(tfd, NULL, 8, 0), -EFAULT);
    RFT_CHECK_INT(rf_write(tfd, NULL, 8, 0), -EFAULT);
    RFT_CHECK_INT(rf_read(tfd, NULL, 0, 0), 0); /* nothing asked: fine */
    RFT_CHECK_INT(rf_read(tfd, b, 8, -2), -EINVAL);
    RFT_CHECK_INT(rf_readv(-1, iov, 1, 0), -EBADF);
    RFT_CHECK_INT(rf_readv(tfd, iov, -1, 0), -EINVAL);
    RFT_CHECK_INT(rf_readv(tfd, iov, IOV_MAX + 1, 0), -EINVAL);
    RFT_CHECK_INT(rf_readv(tfd, NULL, 1, 0), -EFAULT);
    RFT_CHECK_INT(rf_writev(tfd, iov, 2, 0), -EFAULT);
    RFT_CHECK_INT(rf_fsync(-1), -EBADF);
    RFT_CHECK_INT(rf_fdatasync(RFT_BAD_FD), -EBADF);
    RFT_CHECK_INT(rf_fallocate(-1, 0, 0, 10), -EBADF);
    RFT_CHECK_INT(rf_fallocate(tfd, 0, 0, 0), -EINVAL);
    RFT_CHECK_INT(rf_fallocate(tfd, 0, -1, 10), -EINVAL);
    RFT_CHECK_INT(rf_statx(AT_FDCWD, NULL, 0, STATX_SIZE, &sx), -EFAULT);
    RFT_CHECK_INT(rf_statx(AT_FDCWD, path, 0, STATX_SIZE, NULL), -EFAULT);
    RFT_CHECK_INT(rf_statx(AT_FDCWD, "/tmp/ringfiber-no/such", 0, STATX_SIZE, &sx),
                  -ENOENT);
    size_t done = 9;
    RFT_CHECK_INT(rf_read_full(tfd, NULL, 8, 0, &done), -EFAULT);
    RFT_CHECK_INT(done, 0);
    RFT_CHECK_INT(rf_write_all(-1, b, 8, 0, &done), -EBADF);
    /* Writing a read-only fd: the kernel's -EBADF. */
    int ro = rf_open(path, O_RDONLY | O_CLOEXEC, 0);
    RFT_CHECK(ro >= 0);
    RFT_CHECK_INT(rf_write(ro, "x", 1, 0), -EBADF);
    RFT_CHECK_INT(rf_close(ro), 0);
    RFT_CHECK_INT(rf_close(tfd), 0);
    unlink(path);
    return NULL;
}

static void test_bad_input(void **state) { rft_run(bad_input, NULL); }

/* ---- every operation's success ------------------------------------------------- */

static void *file_ops(void *arg)
{
    int fds0 = rft_count_fds();
    char path[64];
    close(tmpfile_fd(path));
    int fd = rf_open(path, O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
    RFT_CHECK(fd >= 0);
    RFT_CHECK_INT(rf_write(fd, "hello world", 11, 0), 11);
    RFT_CHECK_INT(rf_write(fd, "W", 1, 6), 1);
    char b[32] = {0};
    RFT_CHECK_INT(rf_read(fd, b, sizeof b, 0), 11);
    RFT_CHECK(memcmp(b, "hello World", 11) == 0);
    /* File position (off -1): starts at 0, advances. */
    RFT_CHECK_INT(rf_read(fd, b, 5, -1), 5);
    RFT_CHECK_INT(rf_read(fd, b, 6, -1), 6);
    RFT_CHECK(memcmp(b, " World", 6) == 0);
    /* Vectored. */
    struct iovec w[3] = {{(void *)"ab", 2}, {(void *)"", 0}, {(void *)"cdef", 4}};
    RFT_CHECK_INT(rf_writev(fd, w, 3, 100), 6);
    char x[3], y[3];
    struct iovec r[2] = {{x, 3}, {y, 3}};
    RFT_CHECK_INT(rf_readv(fd, r, 2, 100), 6);
    RFT_CHECK(memcmp(x, "abc", 3) == 0 && memcmp(y, "def", 3) == 0);
    RFT_CHECK_INT(rf_fsync(fd), 0);
    RFT_CHECK_INT(rf_fdatasync(fd), 0);
    struct statx sx;
    RFT_CHECK_INT(rf_statx(AT_FDCWD, path, 0, STATX_SIZE, &sx), 0);
    RFT_CHECK_INT(sx.stx_size, 106);
    RFT_CHECK_INT(rf_fallocate(fd, 0, 0, 4096), 0);
    RFT_CHECK_INT(rf_statx(fd, "", AT_EMPTY_PATH, STATX_SIZE, &sx), 0);
    RFT_CHECK_INT(sx.stx_size, 4096);
    RFT_CHECK_INT(rf_fallocate(fd, FALLOC_FL_KEEP_SIZE, 4096, 4096), 0);
    RFT_CHECK_INT(rf_statx(fd, "", AT_EMPTY_PATH, STATX_SIZE, &sx), 0);
    RFT_CHECK_INT(sx.stx_size, 4096);
    RFT_CHECK_INT(rf_close(fd), 0);
    /* openat relative to a directory fd. */
    int dfd = rf_open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    RFT_CHECK(dfd >= 0);
    fd = rf_openat(dfd, path + 5, O_RDONLY | O_CLOEXEC, 0);
    RFT_CHECK(fd >= 0);
    RFT_CHECK_INT(rf_read(fd, b, 5, 0), 5);
    RFT_CHECK(memcmp(b, "hello", 5) == 0);
    rf_close(fd);
    rf_close(dfd);
    unlink(path);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    return NULL;
}

static void test_file_ops(void **state) { rft_run(file_ops, NULL); }

/* ---- EOF, short transfers ----------------------------------------------------------- */

static void *eof_span(void *arg)
{
    char path[64];
    int fd = tmpfile_fd(path);
    unsigned char data[100], b[300];
    fill(data, sizeof data, 1);
    RFT_CHECK_INT(rf_write_all(fd, data, 100, 0, NULL), 100);
    /* A read spanning EOF is short; one at EOF is 0. */
    RFT_CHECK_INT(rf_read(fd, b, 50, 90), 10);
    RFT_CHECK(memcmp(b, data + 90, 10) == 0);
    RFT_CHECK_INT(rf_read(fd, b, 50, 100), 0);
    size_t done = 0;
    RFT_CHECK_INT(rf_read_full(fd, b, 300, 0, &done), 100);
    RFT_CHECK_INT(done, 100);
    RFT_CHECK(memcmp(b, data, 100) == 0);
    RFT_CHECK_INT(rf_read_full(fd, b, 300, 100, &done), 0);
    RFT_CHECK_INT(done, 0);
    /* A pipe: rf_read_full gathers short reads until EOF. */
    int p[2];
    RFT_CHECK_INT(pipe2(p, O_CLOEXEC), 0);
    RFT_CHECK_INT(write(p[1], "abc", 3), 3);
    RFT_CHECK_INT(write(p[1], "de", 2), 2);
    close(p[1]);
    RFT_CHECK_INT(rf_read_full(p[0], b, 300, -1, &done), 5);
    RFT_CHECK(memcmp(b, "abcde", 5) == 0);
    rf_close(p[0]);
    rf_close(fd);
    unlink(path);
    return NULL;
}

static void test_read_spanning_eof(void **state) { rft_run(eof_span, NULL); }

#define MIB (1u << 20)

typedef struct xfer {
    int fd;
    unsigned char *buf;
    size_t len;
    ssize_t res;
    size_t done;
} xfer;

static void *writer(void *arg)
{
    xfer *x = arg;
    x->res = rf_write_all(x->fd, x->buf, x->len, -1, &x->done);
    return NULL;
}

/* A 1 MiB rf_write_all through a socketpair with a tiny send buffer: many
 * short writes, while another task reads in small pieces. */
static void *short_writes(void *arg)
{
    int sv[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    unsigned char *src = malloc(MIB), *dst = malloc(MIB);
    fill(src, MIB, 7);
    xfer x = {sv[0], src, MIB, 0, 0};
    rf_task *t = rf_spawn(writer, &x);
    size_t got = 0;
    int reads = 0;
    while (got < MIB) {
        ssize_t r = rf_read(sv[1], dst + got, 3000, -1);
        if (!RFT_CHECK(r > 0))
            break;
        got += (size_t)r;
        reads++;
    }
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    RFT_CHECK_INT(x.res, MIB);
    RFT_CHECK_INT(x.done, MIB);
    RFT_CHECK_INT(fnv(dst, MIB), fnv(src, MIB));
    RFT_CHECK(reads > 100);
    rf_close(sv[0]);
    rf_close(sv[1]);
    free(src);
    free(dst);
    return NULL;
}

static void test_short_writes(void **state) { rft_run(short_writes, NULL); }

/* An error after partial progress: returned, with done telling how far. */
static void *partial_error(void *arg)
{
    int sv[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    unsigned char *src = calloc(1, MIB);
    xfer x = {sv[0], src, MIB, 0, 0};
    rf_task *t = rf_spawn(writer, &x);
    unsigned char b[1000];
    RFT_CHECK_INT(rf_read_full(sv[1], b, sizeof b, -1, NULL), sizeof b);
    rf_close(sv[1]); /* the reader goes away */
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    RFT_CHECK_INT(x.res, -EPIPE);
    RFT_CHECK(x.done >= sizeof b);
    RFT_CHECK(x.done < MIB);
    rf_close(sv[0]);
    free(src);
    return NULL;
}

static void test_write_all_partial_error(void **state)
{
    signal(SIGPIPE, SIG_IGN); /* rf_write is write(2): EPIPE raises SIGPIPE */
    rft_run(partial_error, NULL);
}

/* ---- a large file by checksum, with several reads in flight --------------------------- */

typedef struct chunk {
    int fd;
    unsigned char *buf;
    size_t off, len;
} chunk;

static void *read_chunk(void *arg)
{
    chunk *c = arg;
    RFT_CHECK_INT(rf_read_full(c->fd, c->buf + c->off, c->len, (int64_t)c->off, NULL),
                  c->len);
    return NULL;
}

static void *large_file(void *arg)
{
    size_t len = 16 * MIB;
    char path[64];
    int fd = tmpfile_fd(path);
    unsigned char *src = malloc(len), *dst = calloc(1, len);
    fill(src, len, 3);
    RFT_CHECK_INT(rf_write_all(fd, src, len, 0, NULL), len);
    RFT_CHECK_INT(rf_fdatasync(fd), 0);
    chunk c[8];
    rf_task *t[8];
    for (int i = 0; i < 8; i++) {
        c[i] = (chunk){fd, dst, (size_t)i * (len / 8), len / 8};
        t[i] = rf_spawn(read_chunk, &c[i]);
    }
    RFT_CHECK_INT(rf_gather(t, 8, NULL), 0);
    for (int i = 0; i < 8; i++)
        rf_task_release(t[i]);
    RFT_CHECK_INT(fnv(dst, len), fnv(src, len));
    rf_close(fd);
    unlink(path);
    free(src);
    free(dst);
    return NULL;
}

static void test_large_file_checksum(void **state) { rft_run(large_file, NULL); }

/* ---- deadlines, cancellation, close with a read in flight ------------------------------ */

typedef struct rd {
    int fd;
    ssize_t res;
    int started;
    char buf[16];
} rd;

static void *pipe_reader(void *arg)
{
    rd *r = arg;
    r->started = 1;
    r->res = rf_read(r->fd, r->buf, sizeof r->buf, -1);
    return NULL;
}

static void *read_deadline_cancel(void *arg)
{
    int fds0 = rft_count_fds();
    int p[2];
    RFT_CHECK_INT(pipe2(p, O_CLOEXEC), 0);
    char b[8];
    /* Fires. */
    uint64_t t0 = rf_now_ns();
    rf_deadline_set(t0 + 30 * RFT_MS);
    RFT_CHECK_INT(rf_read(p[0], b, sizeof b, -1), -ETIMEDOUT);
    RFT_CHECK(rf_now_ns() - t0 >= 30 * RFT_MS);
    RFT_CHECK_INT(rf_read(p[0], b, sizeof b, -1), -ETIMEDOUT); /* sticky */
    /* Does not fire. */
    rf_deadline_set(rf_now_ns() + 10 * RFT_SEC);
    RFT_CHECK_INT(write(p[1], "ok", 2), 2);
    RFT_CHECK_INT(rf_read(p[0], b, sizeof b, -1), 2);
    rf_deadline_set(0);
    /* Cancelled while blocked: -ECANCELED, the pipe intact. */
    rd r = {.fd = p[0], .res = 12345};
    rf_task *t = rf_spawn(pipe_reader, &r);
    RFT_CHECK(rft_yield_until(&r.started, 10));
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    RFT_CHECK(!rf_done(t));
    rf_cancel(t);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK_INT(r.res, -ECANCELED);
    rf_task_release(t);
    RFT_CHECK_INT(write(p[1], "next", 4), 4);
    RFT_CHECK_INT(rf_read(p[0], b, sizeof b, -1), 4);
    RFT_CHECK(memcmp(b, "next", 4) == 0);
    rf_close(p[0]);
    rf_close(p[1]);
    /* rf_close works in a cancelled task: nothing leaks. */
    int q = rf_open("/dev/null", O_RDONLY | O_CLOEXEC, 0);
    RFT_CHECK(q >= 0);
    rf_cancel(rf_self());
    RFT_CHECK_INT(rf_read(q, b, 1, -1), -ECANCELED);
    RFT_CHECK_INT(rf_close(q), 0);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    return NULL;
}

static void test_read_deadline_cancel(void **state)
{
    rft_begin();
    void *res;
    /* main cancels itself at the end: rf_run reports it. */
    assert_int_equal(rf_run(read_deadline_cancel, NULL, &res), -ECANCELED);
    rft_end();
}

/*
 * A read that completed before the cancellation came (its CQE reaped, the
 * task woken but not yet run) returns the bytes it read; the next call
 * returns -ECANCELED.
 */
typedef struct race {
    int fd;
    ssize_t first, next;
    int started;
    char buf[16];
} race;

static void *read_twice(void *arg)
{
    race *r = arg;
    r->started = 1;
    r->first = rf_read(r->fd, r->buf, sizeof r->buf, -1);
    r->next = rf_read(r->fd, r->buf, sizeof r->buf, -1);
    return NULL;
}

static void *cancel_race(void *arg)
{
    int p[2];
    RFT_CHECK_INT(pipe2(p, O_CLOEXEC), 0);
    race r = {.fd = p[0], .first = 12345, .next = 12345};
    rf_task *t = rf_spawn(read_twice, &r);
    RFT_CHECK(rft_yield_until(&r.started, 10));
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0); /* the read waits in the ring */
    RFT_CHECK_INT(write(p[1], "data", 4), 4);
    /* We are queued first; the pass end then reaps the read's CQE and
     * queues the reader behind us: we cancel a task whose read is done. */
    rf_yield();
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK_INT(r.first, 4);
    RFT_CHECK(memcmp(r.buf, "data", 4) == 0);
    RFT_CHECK_INT(r.next, -ECANCELED);
    rf_task_release(t);
    rf_close(p[0]);
    rf_close(p[1]);
    return NULL;
}

static void test_cancel_race_read(void **state) { rft_run(cancel_race, NULL); }

static void *close_inflight(void *arg)
{
    int p[2];
    RFT_CHECK_INT(pipe2(p, O_CLOEXEC), 0);
    rd r = {.fd = p[0], .res = 12345};
    rf_task *t = rf_spawn(pipe_reader, &r);
    RFT_CHECK(rft_yield_until(&r.started, 10));
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    int old = p[0];
    RFT_CHECK_INT(rf_close(p[0]), 0);
    /* The read was cancelled and returned before rf_close did. */
    RFT_CHECK(rf_done(t));
    RFT_CHECK_INT(r.res, -ECANCELED);
    rf_task_release(t);
    /* The number is reused at once; data written to the new file is all
     * there for its reader. */
    char path[64];
    int fd = tmpfile_fd(path);
    RFT_CHECK_INT(fd, old);
    RFT_CHECK_INT(rf_write(fd, "0123456789", 10, 0), 10);
    RFT_CHECK_INT(write(p[1], "pipe", 4), -1); /* no reader left: EPIPE */
    char b[16];
    RFT_CHECK_INT(rf_read(fd, b, sizeof b, 0), 10);
    RFT_CHECK(memcmp(b, "0123456789", 10) == 0);
    rf_close(fd);
    rf_close(p[1]);
    unlink(path);
    return NULL;
}

static void test_close_inflight_reuse(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    rft_run(close_inflight, NULL);
}

/* ---- close: the number reused before the closing task runs again ----------- */

typedef struct reuser {
    int fd; /* a pipe's read end, closed by the main task */
    volatile int started;
    int peer;          /* the other end of the new socket given fd's number */
    ssize_t res, res2; /* the read cancelled by the close; the new recv */
    bool closed;       /* rf_close returned */
    bool fired;        /* the watchdog had to unblock the new recv */
} reuser;

/* Its read on fd is cancelled by rf_close(fd); in the same pass, before
 * the closing task runs again, it puts a new socket at the freed number
 * and waits in a recv on it: an operation on another file, which the
 * close must not wait for (it waited, and with two closers on one number
 * one of them was never woken: found by the stress suite's cancel storm). */
static void *reuser_task(void *arg)
{
    reuser *u = arg;
    char b[8];
    u->started = 1;
    u->res = rf_read(u->fd, b, sizeof b, -1);
    if (!RFT_CHECK_INT(fcntl(u->fd, F_GETFD), -1))
        return NULL; /* not closed yet: the number is not free */
    int sp[2];
    if (!RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0))
        return NULL;
    if (sp[0] != u->fd) { /* it is the lowest free number, unless... */
        RFT_CHECK_INT(dup3(sp[0], u->fd, O_CLOEXEC), u->fd);
        close(sp[0]);
    }
    u->peer = sp[1];
    u->res2 = rf_recv(u->fd, b, sizeof b, 0);
    return NULL;
}

/* Unblocks the new recv if rf_close has not returned within 5 s. */
static void *reuse_watchdog(void *arg)
{
    reuser *u = arg;
    for (int i = 0; i < 500 && !u->closed; i++)
        rf_sleep(10 * RFT_MS);
    if (!u->closed && u->peer > 0) {
        u->fired = true;
        RFT_CHECK_INT(write(u->peer, "w", 1), 1);
    }
    return NULL;
}

static void *close_reused(void *arg)
{
    int p[2];
    RFT_CHECK_INT(pipe2(p, O_CLOEXEC), 0);
    reuser u = {.fd = p[0], .res = 12345, .res2 = 12345, .peer = -1};
    rf_task *t = rf_spawn(reuser_task, &u);
    RFT_CHECK(rft_yield_until(&u.started, 10));
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0); /* the read is in flight */
    rf_task *w = rf_spawn(reuse_watchdog, &u);
    RFT_CHECK_INT(rf_close(p[0]), 0);
    u.closed = true;
    RFT_CHECK(!u.fired); /* returned without waiting for the new file */
    RFT_CHECK_INT(u.res, -ECANCELED);
    if (u.peer > 0 && !u.fired)
        RFT_CHECK_INT(write(u.peer, "m", 1), 1);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    RFT_CHECK_INT(u.res2, 1);
    RFT_CHECK_INT(rf_join(w, NULL), 0);
    rf_task_release(t);
    rf_task_release(w);
    if (u.peer > 0) {
        rf_close(u.fd);
        rf_close(u.peer);
    }
    rf_close(p[1]);
    return NULL;
}

static void test_close_number_reused_at_once(void **state)
{
    rft_run(close_reused, NULL);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_outside_task),
    cmocka_unit_test(test_bad_input),
    cmocka_unit_test(test_file_ops),
    cmocka_unit_test(test_read_spanning_eof),
    cmocka_unit_test(test_short_writes),
    cmocka_unit_test(test_write_all_partial_error),
    cmocka_unit_test(test_large_file_checksum),
    cmocka_unit_test(test_read_deadline_cancel),
    cmocka_unit_test(test_cancel_race_read),
    cmocka_unit_test(test_close_inflight_reuse),
    cmocka_unit_test(test_close_number_reused_at_once),
};

RFT_MAIN(tests)
