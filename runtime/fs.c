/*
 * File operations (open, read, write, sync, allocate, statx) and rf_close.
 * Each is one operation on the I/O path of ring.c; an operation the
 * kernel's io_uring lacks runs its system call on the offload pool
 * instead (see "fallback" below).
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"


/* ---- fallback: the system call on the offload pool ------------------------ */

/*
 * A file operation the kernel's io_uring lacks (older kernels: statx,
 * fallocate, openat before 5.6, ...) runs as its ordinary system call on a
 * worker of the loop's offload pool (rf_to_thread), so it still suspends
 * only the calling task. It then follows rf_to_thread's rules: a task
 * cancelled, or past its deadline, before the call is queued gets
 * -ECANCELED / -ETIMEDOUT; once queued the call runs to its end. Socket
 * calls have no such fallback (a blocking receive would hold a worker
 * for as long as the peer likes): they return -EOPNOTSUPP.
 */
enum fs_call { FS_OPENAT, FS_READ, FS_WRITE, FS_READV, FS_WRITEV, FS_FSYNC,
               FS_FDATASYNC, FS_FALLOCATE, FS_STATX };

typedef struct fs_args {
    enum fs_call call;
    int fd, flags, cnt;
    unsigned mode;
    const char *path;
    void *buf;
    size_t len;
    int64_t off, len64;
    const struct iovec *iov;
    struct statx *stx;
} fs_args;

/* The result as rf_to_thread carries it: the value, or -errno. */
static void *fs_result(long r)
{
    return (void *)(intptr_t)(r < 0 ? -errno : r);
}

/* Every fs_call is handled (-Wswitch checks it); nothing else reaches
 * here: the calls are built by the functions of this file only. */
static void *fs_syscall(void *arg)
{
    const fs_args *a = arg;
    switch (a->call) {
    case FS_OPENAT:
        return fs_result(openat(a->fd, a->path, a->flags, a->mode));
    case FS_READ:
        return fs_result(a->off < 0 ? read(a->fd, a->buf, a->len)
                                    : pread(a->fd, a->buf, a->len, a->off));
    case FS_WRITE:
        return fs_result(a->off < 0 ? write(a->fd, a->buf, a->len)
                                    : pwrite(a->fd, a->buf, a->len, a->off));
    case FS_READV:
        return fs_result(a->off < 0 ? readv(a->fd, a->iov, a->cnt)
                                    : preadv(a->fd, a->iov, a->cnt, a->off));
    case FS_WRITEV:
        return fs_result(a->off < 0 ? writev(a->fd, a->iov, a->cnt)
                                    : pwritev(a->fd, a->iov, a->cnt, a->off));
    case FS_FSYNC:
        return fs_result(fsync(a->fd));
    case FS_FDATASYNC:
        return fs_result(fdatasync(a->fd));
    case FS_FALLOCATE:
        return fs_result(fallocate(a->fd, a->flags, a->off, a->len64));
    case FS_STATX:
        return fs_result(statx(a->fd, a->path, a->flags, a->mode, a->stx));
    }
    __builtin_unreachable();
}

/* True if opcode is missing and the call must take the fallback (outside
 * a task: false, and rf__op_begin says -EPERM). */
static bool fs_use_pool(unsigned opcode, const char *what)
{
    rf_loop *l = rf__tls_loop;
    if (!l || !l->current || rf_likely(rf__op_supported(l, opcode)))
        return false;
    rf__op_report_missing(l, opcode, what,
                          "the call runs its system call on the offload pool");
    return true;
}

static long fs_fallback(fs_args *a)
{
    /* Listed in fd_ops like a ring operation on the fd (never for openat
     * and statx, whose fd is a directory resolved at the start), so that
     * rf_close(fd) waits until the worker is done with the fd. */
    bool on_fd = a->call != FS_OPENAT && a->call != FS_STATX;
    rf_op op = RF_OP(a->fd);
    op.loop = rf__tls_loop;
    if (on_fd)
        rf__op_track(&op);
    void *res = NULL;
    int rc = rf_to_thread(fs_syscall, a, &res);
    if (on_fd)
        rf__op_untrack(&op);
    return rc ? rc : (long)(intptr_t)res;
}

/* ---- open ---------------------------------------------------------------- */

int rf_openat(int dirfd, const char *path, int flags, unsigned mode)
{
    if (!path)
        return -EFAULT;
    if (fs_use_pool(IORING_OP_OPENAT, "rf_openat"))
        return (int)fs_fallback(&(fs_args){.call = FS_OPENAT, .fd = dirfd,
                                           .path = path, .flags = flags,
                                           .mode = mode});
    /* Not on dirfd for rf_close(dirfd) to wait for: the kernel resolves
     * dirfd when it starts the open. */
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, -1, IORING_OP_OPENAT, "rf_openat", &err);
    if (!sqe)
        return err;
    io_uring_prep_openat(sqe, dirfd, path, flags, mode);
    return rf__op_run(&op, sqe);
}

int rf_open(const char *path, int flags, unsigned mode)
{
    return rf_openat(AT_FDCWD, path, flags, mode);
}

/* ---- read and write -------------------------------------------------------- */

static ssize_t rw(unsigned opcode, const char *what, int fd, const void *buf,
                  size_t len, int64_t off)
{
    if (fd < 0)
        return -EBADF;
    if (!buf && len)
        return -EFAULT;
    if (off < -1)
        return -EINVAL;
    unsigned n = len > RF_IO_MAX ? RF_IO_MAX : (unsigned)len;
    if (fs_use_pool(opcode, what))
        return fs_fallback(&(fs_args){
            .call = opcode == IORING_OP_READ ? FS_READ : FS_WRITE, .fd = fd,
            .buf = (void *)buf, .len = n, .off = off});
    rf_op op;
    int err;
    struct io_uring_sqe *sqe = rf__op_begin(&op, fd, opcode, what, &err);
    if (!sqe)
        return err;
    io_uring_prep_rw(opcode, sqe, fd, buf, n, (uint64_t)off);
    return rf__op_run(&op, sqe);
}

ssize_t rf_read(int fd, void *buf, size_t len, int64_t off)
{
    rf_loop *l = rf__tls_loop;
    if (rf_unlikely(l && l->rxq) && fd >= 0 && buf && len) {
        /* A socket rf_recv read (RF_LOOP_RECV_MULTISHOT): its queue
         * first. */
        int rc = rf__recvq_quiesce(l, fd);
        if (rc)
            return rc > 0 ? rf__recvq_take(l, fd, buf, len) : rc;
    }
    return rw(IORING_OP_READ, "rf_read", fd, buf, len, off);
}

ssize_t rf_write(int fd, const void *buf, size_t len, int64_t off)
{
    return rw(IORING_OP_WRITE, "rf_write", fd, buf, len, off);
}

static ssize_t rwv(unsigned opcode, const char *what, int fd,
                   const struct iovec *iov, int cnt, int64_t off)
{
    if (fd < 0)
        return -EBADF;
    if (cnt < 0 || cnt > IOV_MAX || off < -1)
        return -EINVAL;
    if (!iov && cnt)
        return -EFAULT;
    for (int i = 0; i < cnt; i++)
        if (!iov[i].iov_base && iov[i].iov_len)
            return -EFAULT;
    if (fs_use_pool(opcode, what))
        return fs_fallback(&(fs_args){
            .call = opcode == IORING_OP_READV ? FS_READV : FS_WRITEV,
            .fd = fd, .iov = iov, .cnt = cnt, .off = off});
    rf_op op;
    int err;
    struct io_uring_sqe *sqe = rf__op_begin(&op, fd, opcode, what, &err);
    if (!sqe)
        return err;
    io_uring_prep_rw(opcode, sqe, fd, iov, (unsigned)cnt, (uint64_t)off);
    return rf__op_run(&op, sqe);
}

ssize_t rf_readv(int fd, const struct iovec *iov, int cnt, int64_t off)
{
    rf_loop *l = rf__tls_loop;
    if (rf_unlikely(l && l->rxq) && fd >= 0) {
        int rc = rf__recvq_quiesce(l, fd);
        if (rc)
            return rc > 0 ? -EBUSY : rc;
    }
    return rwv(IORING_OP_READV, "rf_readv", fd, iov, cnt, off);
}

ssize_t rf_writev(int fd, const struct iovec *iov, int cnt, int64_t off)
{
    return rwv(IORING_OP_WRITEV, "rf_writev", fd, iov, cnt, off);
}

/*
 * The one loop over short transfers, behind rf_read_full, rf_write_all
 * and rf_send_all (net.c): step moves at most len bytes at p and returns
 * how many, or a negative errno. A stream (off -1) continues at the file
 * position; a positioned transfer advances its own offset. A step that
 * moves nothing ends the loop with on_zero: 0 for a read (end of file:
 * what was moved is returned), a negative errno for a write or a send,
 * where no progress and no error would otherwise loop for ever. An error
 * ends the loop and is returned even after partial progress: the bytes
 * already moved are in the buffer, the file or the socket, and *done says
 * how many. Bad input is refused before anything is submitted, even for
 * len 0.
 */
ssize_t rf__xfer_all(rf__xfer_step step, int fd, void *buf, size_t len,
                     int64_t off, int flags, ssize_t on_zero, size_t *done)
{
    size_t moved = 0;
    if (done)
        *done = 0;
    if (fd < 0)
        return -EBADF;
    if (!buf && len)
        return -EFAULT;
    if (off < -1)
        return -EINVAL;
    if (!rf__self())
        return -EPERM;
    while (moved < len) {
        ssize_t rc = step(fd, (char *)buf + moved, len - moved, off, flags);
        if (rc == 0)
            rc = on_zero;
        if (rc < 0)
            return rc;
        if (rc == 0)
            break; /* end of file */
        moved += (size_t)rc;
        if (off >= 0)
            off += rc;
        if (done)
            *done = moved;
    }
    return (ssize_t)moved;
}

static ssize_t read_step(int fd, void *p, size_t len, int64_t off, int flags)
{
    (void)flags;
    return rf_read(fd, p, len, off);
}

static ssize_t write_step(int fd, void *p, size_t len, int64_t off, int flags)
{
    (void)flags;
    return rf_write(fd, p, len, off);
}

ssize_t rf_read_full(int fd, void *buf, size_t len, int64_t off, size_t *done)
{
    return rf__xfer_all(read_step, fd, buf, len, off, 0, 0, done);
}

ssize_t rf_write_all(int fd, const void *buf, size_t len, int64_t off,
                     size_t *done)
{
    /* The buffer is only read: rf__xfer_all takes it as void * for the
     * reads too. */
    return rf__xfer_all(write_step, fd, (void *)(uintptr_t)buf, len, off, 0,
                        -EIO, done);
}

/* ---- sync, allocate, statx -------------------------------------------------- */

static int do_fsync(int fd, unsigned flags, const char *what)
{
    if (fd < 0)
        return -EBADF;
    if (fs_use_pool(IORING_OP_FSYNC, what))
        return (int)fs_fallback(&(fs_args){
            .call = flags ? FS_FDATASYNC : FS_FSYNC, .fd = fd});
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, fd, IORING_OP_FSYNC, what, &err);
    if (!sqe)
        return err;
    io_uring_prep_fsync(sqe, fd, flags);
    return rf__op_run(&op, sqe);
}

int rf_fsync(int fd) { return do_fsync(fd, 0, "rf_fsync"); }

int rf_fdatasync(int fd)
{
    return do_fsync(fd, IORING_FSYNC_DATASYNC, "rf_fdatasync");
}

int rf_fallocate(int fd, int mode, int64_t off, int64_t len)
{
    if (fd < 0)
        return -EBADF;
    if (off < 0 || len <= 0)
        return -EINVAL;
    if (fs_use_pool(IORING_OP_FALLOCATE, "rf_fallocate"))
        return (int)fs_fallback(&(fs_args){.call = FS_FALLOCATE, .fd = fd,
                                           .flags = mode, .off = off,
                                           .len64 = len});
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, fd, IORING_OP_FALLOCATE, "rf_fallocate", &err);
    if (!sqe)
        return err;
    io_uring_prep_fallocate(sqe, fd, mode, (uint64_t)off, (uint64_t)len);
    return rf__op_run(&op, sqe);
}

int rf_statx(int dirfd, const char *path, int flags, unsigned mask,
             struct statx *out)
{
    if (!path || !out)
        return -EFAULT;
    if (fs_use_pool(IORING_OP_STATX, "rf_statx"))
        return (int)fs_fallback(&(fs_args){.call = FS_STATX, .fd = dirfd,
                                           .path = path, .flags = flags,
                                           .mode = mask, .stx = out});
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, -1, IORING_OP_STATX, "rf_statx", &err);
    if (!sqe)
        return err;
    io_uring_prep_statx(sqe, dirfd, path, flags, mask, out);
    return rf__op_run(&op, sqe);
}

/* ---- close ------------------------------------------------------------------ */

/* Ask the kernel to cancel each listed operation on fd (the path for a
 * kernel without IORING_ASYNC_CANCEL_FD). */
static void cancel_listed(rf_loop *l, int fd)
{
    rf_list *b = rf__fd_ops(l, fd);
    for (rf_list *n = b->next; n != b; n = n->next) {
        rf_op *op = rf_container_of(n, rf_op, node);
        if (op->fd == fd && !op->w.done)
            rf__op_cancel(l, op);
    }
}

/* Claim the operations listed on fd now, before the close: those are the
 * ones on the file being closed. Once the close has run, the number can
 * be reused at once (another task's open, socket or accept) and the
 * operations on that new file are none of this close's business. Returns
 * whether one of them is still in the kernel (its CQE not seen). */
static bool claim_listed(rf_loop *l, rf_close_wait *c, int fd)
{
    bool live = false;
    rf_list *b = rf__fd_ops(l, fd);
    for (rf_list *n = b->next; n != b; n = n->next) {
        rf_op *op = rf_container_of(n, rf_op, node);
        if (op->fd != fd)
            continue;
        if (op->closer) /* an earlier rf_close of the fd: this one waits */
            rf__close_release(l, op->closer);
        op->closer = c;
        c->left++;
        live |= !op->w.done;
    }
    return live;
}

/* One claimed operation of c has ended (or was claimed by a later close):
 * the last one makes c done. */
void rf__close_release(rf_loop *l, rf_close_wait *c)
{
    if (--c->left == 0)
        rf__waiter_done(l, &c->w, 0);
}

/* Wait until every operation c claimed has ended: each one's task unlists
 * it when the operation's final CQE has been seen, and the last one makes
 * c done (no rescan of the list at each wake). */
static void wait_unlisted(rf_loop *l, rf_task *self, rf_close_wait *c, int fd)
{
    if (c->left)
        rf__waiter_wait(l, self, &c->w, 0, RF_WAIT_ON_CLOSE, RF_ON_FD(fd));
}

/*
 * Cancel, then close, in one submission (the cancel only where an
 * operation of this loop is in flight on fd or an acceptor is armed on
 * it): an ASYNC_CANCEL of every
 * operation of this ring on fd (IORING_ASYNC_CANCEL_FD | _ALL, 5.19),
 * hard-linked to the IORING_OP_CLOSE so that the close runs whatever the
 * cancel found. A socket's pending recv or accept holds a reference to
 * the file: without the cancel it would keep the connection open (no FIN
 * is sent) and never complete. Then wait for the final CQE of every
 * operation that was on fd, so the caller's next open, which may get the
 * same number, can never meet one of them.
 *
 * The close is not a cancellation point: it runs in a cancelled task and
 * past the task's deadline alike, so an fd is never leaked.
 */
int rf_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    rf_close_wait claimed = {0};
    /* Nothing of this loop in the kernel on fd (the usual close: a
     * connection's task closes it after its last recv or send): no cancel,
     * which the kernel would answer by looking through all of the ring's
     * polls. */
    bool live = claim_listed(l, &claimed, fd);
    live |= rf__acceptors_fd_closed(l, fd);
    if (rf_unlikely(l->rxq != NULL)) /* cancels its multishot by itself */
        live |= rf__recvq_fd_closed(l, fd);
    bool have_close = rf__op_supported(l, IORING_OP_CLOSE);
    if (!have_close || io_uring_sq_space_left(&l->ring) < 2)
        rf__ring_enter(l, 0);
    struct io_uring_sqe *cs = NULL, *sqe = NULL;
    rf_op cop = RF_OP(-1), op = RF_OP(-1);
    if (!live) {
        /* nothing to cancel */
    } else if (have_close && !l->no_cancel_fd &&
               io_uring_sq_space_left(&l->ring) >= 2) {
        cs = rf__sqe_get(l);
        io_uring_prep_cancel_fd(cs, fd, IORING_ASYNC_CANCEL_ALL);
        cs->flags |= IOSQE_IO_HARDLINK;
        io_uring_sqe_set_data(cs, &cop);
        cop.w.task = self;
    } else {
        cancel_listed(l, fd);
    }
    int res;
    if (have_close && (sqe = rf__sqe_get(l)) != NULL) {
        io_uring_prep_close(sqe, fd);
        io_uring_sqe_set_data(sqe, &op);
        rf__waiter_wait(l, self, &op.w, 0, RF_ON_IO(IORING_OP_CLOSE),
                        RF_ON_FD(fd));
        if (cs)
            rf__waiter_wait(l, self, &cop.w, 0, RF_WAIT_ON_CLOSE, RF_ON_FD(fd));
        res = op.w.res;
    } else {
        if (cs)
            rf__waiter_wait(l, self, &cop.w, 0, RF_WAIT_ON_CLOSE, RF_ON_FD(fd));
        /* No close opcode, or no SQE: close(2) does not block for a
         * socket or a local file. */
        res = close(fd) == 0 ? 0 : -errno;
    }
    if (cs && cop.w.res == -EINVAL) {
        /* A kernel without IORING_ASYNC_CANCEL_FD: cancel one by one. */
        l->no_cancel_fd = true;
        cancel_listed(l, fd);
    }
    wait_unlisted(l, self, &claimed, fd);
    return res;
}
