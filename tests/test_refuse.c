/*
 * A kernel that refuses submissions. When the SQ stays full and the
 * kernel wants CQ room first (-EBUSY, -EAGAIN), an enter moves the CQ's
 * completions into the loop's backlog, and only the next reap dispatches
 * them (runtime/ring.c, "One rule for completions"). The kernel cannot be
 * made to refuse on demand, so the loop's test hook does it
 * (rf_loop.refuse_every, runtime/internal.h): every k-th submitting enter
 * has the kernel post what it holds, submits nothing and returns -EBUSY.
 * On a ring of 4 SQEs nearly every SQE get enters, and so do the SQE gets
 * of handlers in the middle of a reap (an acceptor pausing, a receive
 * queue's cancel), of timers being removed, and of the mailbox armed
 * before a sleep. Every operation must complete exactly once with its own
 * result, in order per task, and the loop must neither hang nor sleep
 * while completions wait in the backlog.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "helpers.h"

#include "../runtime/internal.h"

/* Run body on a loop of 4 SQEs (and cq CQEs, 0: 16) whose every k-th
 * submitting enter is refused; checks that refusals happened and the
 * backlog took completions. */
static void run_refused(rf_fn body, void *arg, unsigned every, unsigned flags,
                        unsigned cq)
{
    rf_loop_opts o;
    memset(&o, 0, sizeof o);
    o.sq_entries = 4;
    o.cq_entries = cq;
    o.flags = flags;
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, &o), 0);
    l->refuse_every = every;
    rft_begin();
    int rc = rf_loop_run_until_complete(l, body, arg, NULL);
    uint64_t refused = l->refused, taken = l->backlog.taken;
    rf_stats s;
    memset(&s, 0, sizeof s);
    assert_int_equal(rf_loop_stats(l, &s), 0);
    assert_int_equal(rf_loop_free(l), 0);
    rft_end();
    assert_int_equal(rc, 0);
    assert_true(refused > 0);
    assert_true(taken > 0);
    print_message("refused %llu enters; %llu completions went through the "
                  "backlog; %llu reaped in all\n",
                  (unsigned long long)refused, (unsigned long long)taken,
                  (unsigned long long)s.cqes_reaped);
}

/* ---- the rule itself, on the ring's own records ---- */

/* Handlers that record the order they are dispatched in; the first one
 * dispatched takes an SQE in a full SQ whose enter the kernel refuses,
 * in the middle of the reap's walk over the CQ. */
enum { MARKS = 16 };

typedef struct mark {
    rf_handler h;
    int id;
} mark;

static int order[3 * MARKS], norder;
static bool take_in_handler;

static void mark_cqe(rf_loop *l, rf_handler *h, const struct io_uring_cqe *cqe)
{
    (void)cqe;
    order[norder < 3 * MARKS ? norder++ : norder] = ((mark *)h)->id;
    if (take_in_handler) {
        take_in_handler = false;
        /* Refused every time: the enters move the rest of the CQ to the
         * backlog, and the handler gets no SQE. */
        RFT_CHECK_PTR(rf__sqe_get(l), NULL);
        l->refuse_every = 0;
    }
}

/* n NOPs for marks[first..first+n), one SQE each; submitted when
 * submit, else left in the SQ. */
static void queue_marks(rf_loop *l, mark *m, int first, int n, bool submit)
{
    for (int i = first; i < first + n; i++) {
        struct io_uring_sqe *sqe = rf__sqe_get(l);
        RFT_CHECK(sqe != NULL);
        if (!sqe)
            return;
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, rf__handler_data(&m[i].h));
    }
    if (submit)
        RFT_CHECK_INT(rf__ring_enter(l, 0), 0); /* posts them; reaps nothing */
}

/* body on a loop of 4 SQEs and 16 CQEs, its marks numbered. */
static void run_marks(rf_fn body)
{
    rf_loop_opts o;
    memset(&o, 0, sizeof o);
    o.sq_entries = 4;
    o.cq_entries = 16;
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, &o), 0);
    rft_begin();
    assert_int_equal(rf_loop_run_until_complete(l, body, NULL, NULL), 0);
    assert_int_equal(rf_loop_free(l), 0);
    rft_end();
}

static void marks_init(mark *m)
{
    for (int i = 0; i < MARKS; i++)
        m[i] = (mark){.h.fn = mark_cqe, .id = i};
    norder = 0;
}

/* A read of an empty pipe (made here, p) into *c, for mark m: in the
 * kernel until the pipe is written. Left in the SQ. */
static void queue_pipe_read(rf_loop *l, mark *m, int p[2], char *c)
{
    RFT_CHECK_INT(pipe2(p, O_CLOEXEC), 0);
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    RFT_CHECK(sqe != NULL);
    if (!sqe)
        return;
    io_uring_prep_read(sqe, p[0], c, 1, 0);
    io_uring_sqe_set_data64(sqe, rf__handler_data(&m->h));
}

static void *take_inside_reap(void *arg)
{
    rf_loop *l = rf_loop_current();
    mark m[MARKS];
    marks_init(m);
    /* 12 completions in the CQ, 4 SQEs in the SQ (full). */
    for (int i = 0; i < 12; i += 4)
        queue_marks(l, m, i, 4, true);
    RFT_CHECK_INT(io_uring_cq_ready(&l->ring), 12);
    RFT_CHECK_INT(norder, 0); /* an enter dispatches nothing */
    queue_marks(l, m, 12, 4, false);
    RFT_CHECK_INT(io_uring_sq_space_left(&l->ring), 0);
    l->refuse_every = 1;
    take_in_handler = true;
    RFT_CHECK_INT(rf__ring_reap(l), 12);
    RFT_CHECK_INT(l->refuse_every, 0);
    RFT_CHECK(l->backlog.taken >= 11);
    RFT_CHECK_INT(l->backlog.n, 0);
    /* The four left in the SQ go at this pass's end. */
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(norder, MARKS);
    for (int i = 0; i < norder && i < MARKS; i++)
        RFT_CHECK_INT(order[i], i);
    return arg;
}

static void test_take_inside_reap(void **state)
{
    (void)state;
    run_marks(take_inside_reap);
}

/* Completions waiting in the backlog: an enter asked to wait for one
 * does not (they are here), and the loop reaps them before it would
 * sleep. */
static void *wait_with_backlog(void *arg)
{
    rf_loop *l = rf_loop_current();
    mark m[MARKS];
    marks_init(m);
    queue_marks(l, m, 0, 4, true);
    /* Mark 4: a read of an empty pipe, which completes when written. */
    int p[2];
    char c = 0;
    queue_pipe_read(l, &m[4], p, &c);
    l->refuse_every = 1;
    /* Refused 17 times: the 4 completions move to the backlog. */
    RFT_CHECK_INT(rf__ring_enter(l, 0), -EBUSY);
    l->refuse_every = 0;
    RFT_CHECK_INT(l->backlog.n, 4);
    RFT_CHECK_INT(io_uring_cq_ready(&l->ring), 0);
    rf_stats s = rft_stats();
    RFT_CHECK(s.ops_in_flight >= 2); /* the read, and the backlog */
    /* Submits the read and returns: what it would wait for is here. */
    RFT_CHECK_INT(rf__ring_enter(l, 1), 0);
    RFT_CHECK_INT(norder, 0);
    RFT_CHECK_INT(write(p[1], "x", 1), 1);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(c, 'x');
    close(p[0]);
    close(p[1]);
    RFT_CHECK_INT(norder, 5);
    for (int i = 0; i < norder && i < 5; i++)
        RFT_CHECK_INT(order[i], i);
    RFT_CHECK_INT(l->backlog.n, 0);
    return arg;
}

static void test_no_wait_with_backlog(void **state)
{
    (void)state;
    run_marks(wait_with_backlog);
}

/* The backlog's last completion runs a handler whose SQE get enters in a
 * full SQ, is refused, and moves new completions into the backlog while
 * it is being dispatched: the backlog is still counted once in
 * ops_in_flight, and nothing of it is left counted at the end. */
static void *take_at_backlog_end(void *arg)
{
    rf_loop *l = rf_loop_current();
    mark m[MARKS];
    marks_init(m);
    uint64_t before = rft_stats().ops_in_flight;
    /* Mark 5: a read of a pipe, in the kernel until written. */
    int p[2];
    char c = 0;
    queue_pipe_read(l, &m[5], p, &c);
    RFT_CHECK_INT(rf__ring_enter(l, 0), 0);
    /* Mark 0's completion into the backlog: the SQ full (marks 1-4),
     * every enter refused. */
    queue_marks(l, m, 0, 1, true);
    queue_marks(l, m, 1, 4, false);
    l->refuse_every = 1;
    RFT_CHECK_INT(rf__ring_enter(l, 0), -EBUSY);
    RFT_CHECK_INT(l->backlog.n, 1);
    /* Mark 0 takes an SQE when it runs: refused, the read's completion
     * (posted by the refused enter) goes to the backlog behind it. */
    RFT_CHECK_INT(write(p[1], "x", 1), 1);
    take_in_handler = true;
    RFT_CHECK_INT(rf__ring_reap(l), 2);
    RFT_CHECK_INT(l->refuse_every, 0);
    RFT_CHECK_INT(norder, 2);
    RFT_CHECK_INT(order[0], 0);
    RFT_CHECK_INT(order[1], 5);
    RFT_CHECK_INT(c, 'x');
    RFT_CHECK(!l->backlog.counted);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0); /* marks 1-4 go and come back */
    RFT_CHECK_INT(norder, 6);
    RFT_CHECK_INT(rft_stats().ops_in_flight, before);
    close(p[0]);
    close(p[1]);
    return arg;
}

static void test_take_at_backlog_end(void **state)
{
    (void)state;
    run_marks(take_at_backlog_end);
}

/* A run that fails because the ring refuses every submission, with a
 * read in the kernel: rf_loop_free cancels it and dispatches its
 * completion before anything is freed. */
static rf_handler free_h;
static bool free_done;
static int free_res;
static char free_buf[8];

static void free_cqe(rf_loop *l, rf_handler *h, const struct io_uring_cqe *cqe)
{
    (void)l, (void)h;
    free_done = true;
    free_res = cqe->res;
}

static void *read_then_refuse(void *arg)
{
    int *p = arg;
    rf_loop *l = rf_loop_current();
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    RFT_CHECK(sqe != NULL);
    io_uring_prep_read(sqe, p[0], free_buf, sizeof free_buf, 0);
    io_uring_sqe_set_data64(sqe, rf__handler_data(&free_h));
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0); /* submitted at this pass's end */
    RFT_CHECK(!free_done);
    l->refuse_every = 1;
    return NULL;
}

static void test_free_after_refused_run(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    free_h = (rf_handler){.fn = free_cqe};
    free_done = false;
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    rft_begin();
    assert_int_equal(rf_loop_run_until_complete(l, read_then_refuse, p, NULL),
                     0);
    /* Its drain fails (every enter refused), the read still in flight. */
    assert_int_equal(rf_loop_free(l), 0);
    rft_end();
    assert_true(free_done);
    assert_int_equal(free_res, -ECANCELED);
    /* Nothing of the read is left in the kernel to take these bytes. */
    assert_int_equal(write(p[1], "abc", 3), 3);
    char b[4];
    assert_int_equal(read(p[0], b, sizeof b), 3);
    close(p[0]);
    close(p[1]);
}

/* ---- operations: each completes once, with its own result ---- */

enum { NOP_TASKS = 64, NOP_ROUNDS = 100 };

static unsigned long nops_done;

static void *nop_worker(void *arg)
{
    for (int i = 0; i < NOP_ROUNDS; i++) {
        RFT_CHECK_INT(rf_nop(), 0);
        nops_done++;
    }
    return arg;
}

static void *nops_body(void *arg)
{
    rf_task *t[NOP_TASKS];
    for (int i = 0; i < NOP_TASKS; i++)
        RFT_CHECK(t[i] = rf_spawn(nop_worker, (void *)(intptr_t)(i + 1)));
    for (int i = 0; i < NOP_TASKS; i++) {
        void *res = NULL;
        RFT_CHECK_INT(rf_join(t[i], &res), 0);
        RFT_CHECK_PTR(res, (void *)(intptr_t)(i + 1));
        rf_task_release(t[i]);
    }
    RFT_CHECK_INT(nops_done, NOP_TASKS * NOP_ROUNDS);
    return arg;
}

static void test_nops_complete_once(void **state)
{
    (void)state;
    for (unsigned every = 2; every <= 5; every++) {
        nops_done = 0;
        run_refused(nops_body, NULL, every, 0, 0);
    }
}

/* A pipe's bytes through many tasks' reads and writes: results in
 * order, none lost, none twice. */
enum { PIPE_PAIRS = 16, PIPE_MSGS = 64 };

static void *pipe_writer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (uint32_t i = 0; i < PIPE_MSGS; i++)
        RFT_CHECK_INT(rf_write(fd, &i, sizeof i, -1), (long long)sizeof i);
    return NULL;
}

static void *pipe_reader(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (uint32_t i = 0; i < PIPE_MSGS; i++) {
        uint32_t v = ~0u;
        RFT_CHECK_INT(rf_read(fd, &v, sizeof v, -1), (long long)sizeof v);
        RFT_CHECK_INT(v, i);
    }
    return NULL;
}

static void *pipes_body(void *arg)
{
    int p[PIPE_PAIRS][2];
    rf_task *t[2 * PIPE_PAIRS];
    for (int i = 0; i < PIPE_PAIRS; i++) {
        RFT_CHECK_INT(pipe2(p[i], O_CLOEXEC), 0);
        t[2 * i] = rf_spawn(pipe_reader, (void *)(intptr_t)p[i][0]);
        t[2 * i + 1] = rf_spawn(pipe_writer, (void *)(intptr_t)p[i][1]);
    }
    for (int i = 0; i < 2 * PIPE_PAIRS; i++) {
        RFT_CHECK_INT(rf_join(t[i], NULL), 0);
        rf_task_release(t[i]);
    }
    for (int i = 0; i < PIPE_PAIRS; i++) {
        RFT_CHECK_INT(rf_close(p[i][0]), 0);
        RFT_CHECK_INT(rf_close(p[i][1]), 0);
    }
    return arg;
}

static void test_pipes_in_order(void **state)
{
    (void)state;
    run_refused(pipes_body, NULL, 3, 0, 0);
}

/* ---- timers: buckets removed while the SQ is full ---- */

/* Deadlines set and cleared around a few operations leave their shared
 * timeouts empty: kept idle, then removed (an SQE get each) when there
 * are too many or before the loop sleeps; deadlines that pass end
 * sleeps. Meanwhile those timeouts fire and complete in the backlog. */
enum { TIMER_TASKS = 48, TIMER_ROUNDS = 20 };

static void *timer_worker(void *arg)
{
    intptr_t i = (intptr_t)arg;
    for (int r = 0; r < TIMER_ROUNDS; r++) {
        uint64_t now = rf_now_ns();
        if ((i + r) % 4 == 0) {
            /* A deadline that passes. */
            RFT_CHECK_INT(rf_deadline_set(now + (uint64_t)(1 + r % 3) * RFT_MS), 0);
            RFT_CHECK_INT(rf_sleep(RFT_SEC), -ETIMEDOUT);
        } else {
            /* One that does not (however slow the machine): its timeout
             * is left empty. One each, 50 ms apart (a far deadline's
             * timeout is shared within d / 512). */
            RFT_CHECK_INT(rf_deadline_set(now + 10 * RFT_SEC +
                                          (uint64_t)(i * TIMER_ROUNDS + r) *
                                              50 * RFT_MS),
                          0);
            RFT_CHECK_INT(rf_nop(), 0);
            RFT_CHECK_INT(rf_sleep((uint64_t)(r % 3) * 100 * 1000), 0);
        }
        RFT_CHECK_INT(rf_deadline_set(0), 0);
    }
    return NULL;
}

static void *timers_body(void *arg)
{
    rf_task *t[TIMER_TASKS];
    for (intptr_t i = 0; i < TIMER_TASKS; i++)
        RFT_CHECK(t[i] = rf_spawn(timer_worker, (void *)i));
    for (int i = 0; i < TIMER_TASKS; i++) {
        RFT_CHECK_INT(rf_join(t[i], NULL), 0);
        rf_task_release(t[i]);
    }
    return arg;
}

static void test_timers_removed_while_full(void **state)
{
    (void)state;
    run_refused(timers_body, NULL, 2, 0, 0);
    run_refused(timers_body, NULL, 3, 0, 0);
}

/* ---- sockets: an acceptor that pauses, receive queues, closes ---- */

/* More clients than the acceptor's queue holds connect at once: it
 * pauses (a cancel taken inside the reap that queued the connection) and
 * resumes; each connection echoes its client's messages through a
 * multishot receive queue, and is closed by both ends. */
enum { ECHO_CLIENTS = RF_ACCEPTOR_QUEUE + 72, ECHO_MSGS = 8 };

typedef struct echo_test {
    uint16_t port;
    int connected;
    int echoed;
    int clients_done;
} echo_test;

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    uint32_t v;
    for (;;) {
        ssize_t n = rf_recv(fd, &v, sizeof v, MSG_WAITALL);
        if (n == 0)
            break;
        RFT_CHECK_INT(n, (long long)sizeof v);
        if (n != sizeof v)
            break;
        RFT_CHECK_INT(rf_send(fd, &v, sizeof v, 0), (long long)sizeof v);
    }
    RFT_CHECK_INT(rf_close(fd), 0);
    return NULL;
}

static void *echo_client(void *arg)
{
    echo_test *x = arg;
    int fd;
    RFT_CHECK_INT(rf_tcp_connect("127.0.0.1", x->port, &fd), 0);
    x->connected++;
    for (uint32_t i = 0; i < ECHO_MSGS; i++) {
        uint32_t v = ((uint32_t)fd << 8) | i, back = ~0u;
        RFT_CHECK_INT(rf_send(fd, &v, sizeof v, 0), (long long)sizeof v);
        RFT_CHECK_INT(rf_recv(fd, &back, sizeof back, MSG_WAITALL),
                      (long long)sizeof back);
        RFT_CHECK_INT(back, v);
        x->echoed++;
    }
    RFT_CHECK_INT(rf_close(fd), 0);
    x->clients_done++;
    return NULL;
}

static void *echo_body(void *arg)
{
    echo_test x = {0};
    int lfd;
    RFT_CHECK_INT(rf_tcp_listen("127.0.0.1", 0, 4096, &lfd), 0);
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    RFT_CHECK_INT(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    x.port = ntohs(a.sin_port);
    rf_acceptor *acc;
    RFT_CHECK_INT(rf_acceptor_open(lfd, SOCK_CLOEXEC, &acc), 0);
    rf_group g;
    RFT_CHECK_INT(rf_group_init(&g), 0);
    for (int i = 0; i < ECHO_CLIENTS; i++)
        RFT_CHECK(rf_group_spawn(&g, echo_client, &x, NULL));
    /* Let them all connect (into the listen backlog) before the first is
     * taken: the acceptor's queue fills at once. */
    for (int i = 0; i < 10000 && x.connected < ECHO_CLIENTS; i++)
        RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(x.connected, ECHO_CLIENTS);
    for (int i = 0; i < ECHO_CLIENTS; i++) {
        int fd = rf_acceptor_next(acc);
        RFT_CHECK(fd >= 0);
        if (fd < 0)
            break;
        RFT_CHECK(rf_group_spawn(&g, echo_conn, (void *)(intptr_t)fd, NULL));
    }
    RFT_CHECK_INT(rf_group_wait(&g), 0);
    rf_group_fini(&g);
    RFT_CHECK_INT(x.clients_done, ECHO_CLIENTS);
    RFT_CHECK_INT(x.echoed, ECHO_CLIENTS * ECHO_MSGS);
    RFT_CHECK(rft_stats().acceptor_pauses > 0);
    RFT_CHECK_INT(rf_acceptor_close(acc), 0);
    RFT_CHECK_INT(rf_close(lfd), 0);
    return arg;
}

static void test_echo_through_refusals(void **state)
{
    (void)state;
    /* A CQ with room for the burst: a multishot accept that finds the CQ
     * full ends, and the queue would never fill. */
    run_refused(echo_body, NULL, 3, RF_LOOP_RECV_MULTISHOT, 1024);
    run_refused(echo_body, NULL, 2, 0, 1024);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_take_inside_reap),
    cmocka_unit_test(test_no_wait_with_backlog),
    cmocka_unit_test(test_take_at_backlog_end),
    cmocka_unit_test(test_free_after_refused_run),
    cmocka_unit_test(test_nops_complete_once),
    cmocka_unit_test(test_pipes_in_order),
    cmocka_unit_test(test_timers_removed_while_full),
    cmocka_unit_test(test_echo_through_refusals),
};

RFT_MAIN(tests)
