/*
 * The ringfiber W6 echo servers (see w6_servers.h).
 *
 * w6_ringfiber_serve is the one that counts: a task per connection written
 * with the public calls, rf_recv and rf_send_all, exactly as a user would.
 *
 * The others measure two I/O options, and the public calls' own cost, on
 * the echo workload. They submit recv/send themselves through the runtime's
 * one operation path (rf__op_begin / rf__op_run, the path every public
 * call takes); pollfirst and fixed each differ from raw in one thing:
 *   raw          recv / send SQEs, nothing else (the floor of the public
 *                path: their gap is the bookkeeping rf_recv/rf_send add);
 *   pollfirst    raw + IORING_RECVSEND_POLL_FIRST on recv: the kernel arms a
 *                poll instead of trying the receive first, which saves a
 *                failed attempt when, as in ping-pong, the data is never
 *                there yet when the receive is submitted;
 *   fixed        raw + registered files (IOSQE_FIXED_FILE): no fd table
 *                lookup and reference per operation.
 * and at_once is the public server on a loop that never batches its
 * wake-ups (RF_LOOP_WAKE_AT_ONCE): what batching gains where the server
 * shares its CPU with the load client, as it does here; multishot the
 * public server on a loop with RF_LOOP_RECV_MULTISHOT (rf_recv served by
 * one multishot receive per socket into the loop's buffer ring).
 */
#define _GNU_SOURCE
#include "w6_servers.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

enum { W6_BUF = 4096 };

typedef enum { W6_PUBLIC, W6_RAW, W6_POLLFIRST, W6_FIXED } w6_kind;

typedef struct w6_server {
    int lfd, nconns, rc;
    w6_kind kind;
} w6_server;

typedef struct w6_conn {
    w6_server *srv;
    int fd;   /* the socket */
    int slot; /* its registered-file index (W6_FIXED) */
} w6_conn;

/* One recv or send through the runtime's operation path, on fd (the
 * registered-file index for W6_FIXED) for a server of the given kind. */
static ssize_t raw_io(w6_kind kind, int fd, bool recv, void *buf, size_t len)
{
    /* Not tracked on a descriptor: a registered-file index is not an fd. */
    rf_op op;
    int err;
    struct io_uring_sqe *sqe =
        rf__op_begin(&op, -1, recv ? IORING_OP_RECV : IORING_OP_SEND,
                     "raw_io", &err);
    if (!sqe)
        return err;
    if (recv)
        io_uring_prep_recv(sqe, fd, buf, len, 0);
    else
        io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
    if (kind == W6_FIXED)
        sqe->flags |= IOSQE_FIXED_FILE;
    if (recv && kind == W6_POLLFIRST)
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    return rf__op_run(&op, sqe);
}

/* A step of the runtime's loop over short transfers (rf__xfer_all, the
 * loop behind rf_send_all): a raw send; flags carries the server's kind. */
static ssize_t raw_send_step(int fd, void *p, size_t len, int64_t off,
                             int kind)
{
    (void)off;
    return raw_io((w6_kind)kind, fd, false, p, len);
}

static void *w6_conn_task(void *arg)
{
    w6_conn *c = arg;
    w6_kind kind = c->srv->kind;
    bool pub = kind == W6_PUBLIC;
    int fd = kind == W6_FIXED ? c->slot : c->fd;
    char buf[W6_BUF];
    for (;;) {
        ssize_t n = pub ? rf_recv(c->fd, buf, sizeof buf, 0)
                        : raw_io(kind, fd, true, buf, sizeof buf);
        if (n <= 0)
            break;
        ssize_t w = pub ? rf_send_all(c->fd, buf, (size_t)n, 0, NULL)
                        : rf__xfer_all(raw_send_step, fd, buf, (size_t)n, -1,
                                       (int)kind, -EIO, NULL);
        if (w < 0)
            break;
    }
    rf_close(c->fd);
    return NULL;
}

/* The last server's loop counters (the bench runs one server at a time). */
static rf_stats last_stats;

int w6_ringfiber_last_stats(uint64_t *enters, uint64_t *sqes,
                            uint64_t *switches)
{
    *enters = last_stats.enters;
    *sqes = last_stats.sqes_submitted;
    *switches = last_stats.switches;
    return 0;
}

static void *w6_main(void *arg)
{
    w6_server *s = arg;
    rf_loop *l = rf__tls_loop;
    memset(&last_stats, 0, sizeof last_stats);
    w6_conn *conns = calloc((size_t)s->nconns, sizeof *conns);
    rf_task **tasks = calloc((size_t)s->nconns, sizeof *tasks);
    if (!conns || !tasks) {
        s->rc = -ENOMEM;
        goto out;
    }
    if (s->kind == W6_FIXED) {
        int rc = io_uring_register_files_sparse(&l->ring, (unsigned)s->nconns);
        if (rc < 0) {
            s->rc = rc;
            goto out;
        }
    }
    int n = 0;
    for (; n < s->nconns; n++) {
        int fd = rf_accept(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            s->rc = fd;
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[n] = (w6_conn){s, fd, n};
        if (s->kind == W6_FIXED) {
            int rc = io_uring_register_files_update(&l->ring, (unsigned)n,
                                                    &fd, 1);
            if (rc < 0) {
                s->rc = rc;
                close(fd);
                break;
            }
        }
        tasks[n] = rf_spawn(w6_conn_task, &conns[n]);
        if (!tasks[n]) {
            s->rc = -errno;
            close(fd);
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        rf_join(tasks[i], NULL);
        rf_task_release(tasks[i]);
    }
    if (s->kind == W6_FIXED)
        io_uring_unregister_files(&l->ring);
    rf_loop_stats(l, &last_stats);
out:
    free(conns);
    free(tasks);
    return NULL;
}

static int serve_flags(int lfd, int nconns, w6_kind kind, unsigned flags)
{
    w6_server s = {lfd, nconns, 0, kind};
    rf_loop_opts o = {.flags = flags};
    int rc = rf_run_opts(w6_main, &s, NULL, &o);
    return rc ? rc : s.rc;
}

static int serve(int lfd, int nconns, w6_kind kind)
{
    return serve_flags(lfd, nconns, kind, 0);
}

int w6_ringfiber_serve(int lfd, int nconns)
{
    return serve(lfd, nconns, W6_PUBLIC);
}

int w6_at_once_serve(int lfd, int nconns)
{
    return serve_flags(lfd, nconns, W6_PUBLIC, RF_LOOP_WAKE_AT_ONCE);
}

int w6_multishot_serve(int lfd, int nconns)
{
    return serve_flags(lfd, nconns, W6_PUBLIC, RF_LOOP_RECV_MULTISHOT);
}

int w6_raw_serve(int lfd, int nconns) { return serve(lfd, nconns, W6_RAW); }

int w6_pollfirst_serve(int lfd, int nconns)
{
    return serve(lfd, nconns, W6_POLLFIRST);
}

int w6_fixed_serve(int lfd, int nconns)
{
    return serve(lfd, nconns, W6_FIXED);
}
