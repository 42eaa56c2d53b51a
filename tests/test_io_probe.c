/*
 * The paths taken on a kernel that lacks an operation: probed opcodes are
 * cleared in the loop's probe bitmap (runtime/internal.h) to stand in for
 * an older kernel. A missing operation returns -EOPNOTSUPP with one line
 * on stderr per loop (none with RF_LOOP_QUIET); socket, shutdown and close
 * fall back to their system calls; without IORING_ASYNC_CANCEL_FD, rf_close
 * cancels the operations on the fd one by one.
 */
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "helpers.h"

#include "../runtime/internal.h"

static void drop_op(unsigned op)
{
    rf_loop *l = rf_loop_current();
    l->probe[op / 64] &= ~(1ULL << (op % 64));
}

static void *missing_recv(void *arg)
{
    int sv[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    drop_op(IORING_OP_RECV);
    char b[4];
    RFT_CHECK_INT(rf_recv(sv[0], b, sizeof b, 0), -EOPNOTSUPP);
    RFT_CHECK_INT(rf_recv(sv[0], b, sizeof b, 0), -EOPNOTSUPP);
    /* Others still work. */
    RFT_CHECK_INT(rf_send(sv[1], "ab", 2, 0), 2);
    RFT_CHECK_INT(rf_read(sv[0], b, 2, -1), 2);
    rf_close(sv[0]);
    rf_close(sv[1]);
    return NULL;
}

static int missing_child(void *arg)
{
    rf_loop_opts o;
    memset(&o, 0, sizeof o);
    o.flags = arg ? RF_LOOP_QUIET : 0;
    rf_loop *l;
    if (rf_loop_new(&l, &o) != 0)
        return 2;
    rft_begin();
    int rc = rf_loop_run_until_complete(l, missing_recv, NULL, NULL);
    rf_loop_free(l);
    return rc == 0 && rft_failures_ == 0 ? 0 : 1;
}

static void test_missing_op_reported_once(void **state)
{
    rft_child c;
    rft_fork(missing_child, NULL, &c);
    if (c.code != 0)
        rft_child_dump("missing op", &c);
    assert_true(c.exited);
    assert_int_equal(c.code, 0);
    const char *first = strstr(c.err, "rf_recv");
    assert_non_null(first);
    assert_true(rft_contains_ci(c.err, "EOPNOTSUPP"));
    assert_null(strstr(first + 1, "rf_recv")); /* once per loop */
}

static void test_missing_op_quiet(void **state)
{
    rft_child c;
    rft_fork(missing_child, (void *)1, &c);
    assert_true(c.exited);
    assert_int_equal(c.code, 0);
    assert_int_equal(c.err_len, 0);
}

typedef struct rd {
    int fd;
    ssize_t res;
    int started;
} rd;

static void *reader(void *arg)
{
    rd *r = arg;
    char b[8];
    r->started = 1;
    r->res = rf_recv(r->fd, b, sizeof b, 0);
    return NULL;
}

static void *fallbacks(void *arg)
{
    int fds0 = rft_count_fds();
    drop_op(IORING_OP_SOCKET);
    drop_op(IORING_OP_SHUTDOWN);
    drop_op(IORING_OP_CLOSE);
    rf_loop_current()->no_cancel_fd = true;
    int lfd;
    RFT_CHECK_INT(rf_tcp_listen("127.0.0.1", 0, 4, &lfd), 0);
    int c;
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", (uint16_t)rf_sock_port(lfd), &c), 0);
    int s = rf_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
    RFT_CHECK(s >= 0);
    RFT_CHECK_INT(rf_shutdown(c, SHUT_WR), 0);
    char b[4];
    RFT_CHECK_INT(rf_recv(s, b, sizeof b, 0), 0);
    /* Close with a recv in flight, cancelled one by one, closed by
     * close(2). */
    rd r = {.fd = c, .res = 12345};
    rf_task *t = rf_spawn(reader, &r);
    RFT_CHECK(rft_yield_until(&r.started, 10));
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0);
    RFT_CHECK_INT(rf_close(c), 0);
    RFT_CHECK(rf_done(t));
    RFT_CHECK_INT(r.res, -ECANCELED);
    rf_task_release(t);
    RFT_CHECK_INT(rf_close(s), 0);
    RFT_CHECK_INT(rf_close(lfd), 0);
    RFT_CHECK_INT(rf_close(lfd), -EBADF);
    RFT_CHECK_INT(rft_count_fds(), fds0);
    return NULL;
}

static void test_fallbacks(void **state) { rft_run(fallbacks, NULL); }

/* ---- file calls without their opcode: the system call on the pool ---- */

static void *files_without_ops(void *arg)
{
    static const unsigned ops[] = {IORING_OP_OPENAT, IORING_OP_READ,
                                   IORING_OP_WRITE, IORING_OP_READV,
                                   IORING_OP_WRITEV, IORING_OP_FSYNC,
                                   IORING_OP_FALLOCATE, IORING_OP_STATX};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        drop_op(ops[i]);
    char path[] = "/tmp/ringfiber-fallback-XXXXXX";
    int tmp = mkstemp(path);
    RFT_CHECK(tmp >= 0);
    close(tmp);
    int fd = rf_open(path, O_RDWR | O_CLOEXEC, 0);
    RFT_CHECK(fd >= 0);
    RFT_CHECK_INT(rf_write(fd, "hello ", 6, 0), 6);
    struct iovec wv[2] = {{"wor", 3}, {"ld", 2}};
    RFT_CHECK_INT(rf_writev(fd, wv, 2, 6), 5);
    RFT_CHECK_INT(rf_fsync(fd), 0);
    RFT_CHECK_INT(rf_fdatasync(fd), 0);
    RFT_CHECK_INT(rf_fallocate(fd, 0, 0, 4096), 0);
    struct statx st;
    RFT_CHECK_INT(rf_statx(AT_FDCWD, path, 0, STATX_SIZE, &st), 0);
    RFT_CHECK_INT(st.stx_size, 4096);
    char buf[16] = {0};
    RFT_CHECK_INT(rf_read(fd, buf, 11, 0), 11);
    RFT_CHECK(memcmp(buf, "hello world", 11) == 0);
    char a[5] = {0}, b[6] = {0};
    struct iovec rv[2] = {{a, 5}, {b, 6}};
    RFT_CHECK_INT(rf_readv(fd, rv, 2, 0), 11);
    RFT_CHECK(memcmp(a, "hello", 5) == 0 && memcmp(b, " world", 6) == 0);
    /* At the file position (off -1) too. */
    RFT_CHECK_INT(rf_read(fd, buf, 5, -1), 5);
    /* Errors come back as the system call's. */
    RFT_CHECK_INT(rf_read(9999, buf, 1, 0), -EBADF);
    RFT_CHECK_INT(rf_open("/nonexistent/dir/x", O_RDONLY, 0), -ENOENT);
    RFT_CHECK_INT(rf_close(fd), 0);
    unlink(path);
    /* A cancelled task does not start a fallback call. */
    rf_cancel(rf_self());
    RFT_CHECK_INT(rf_fsync(1), -ECANCELED);
    return NULL;
}

static int fallback_child(void *arg)
{
    rf_loop *l;
    if (rf_loop_new(&l, NULL) != 0)
        return 2;
    rft_begin();
    int rc = rf_loop_run_until_complete(l, files_without_ops, NULL, NULL);
    rf_loop_free(l);
    return rc == -ECANCELED && rft_failures_ == 0 ? 0 : 1;
}

static void test_file_calls_fall_back_to_pool(void **state)
{
    rft_child c;
    rft_fork(fallback_child, NULL, &c);
    if (c.code != 0)
        rft_child_dump("file fallback", &c);
    assert_true(c.exited);
    assert_int_equal(c.code, 0);
    assert_true(rft_contains_ci(c.err, "offload pool"));
    const char *first = strstr(c.err, "rf_read:");
    assert_non_null(first);
    assert_null(strstr(first + 1, "rf_read:")); /* once per loop */
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_missing_op_reported_once),
    cmocka_unit_test(test_missing_op_quiet),
    cmocka_unit_test(test_fallbacks),
    cmocka_unit_test(test_file_calls_fall_back_to_pool),
};

RFT_MAIN(tests)
