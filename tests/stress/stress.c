/*
 * ringfiber stress programs: one executable, one subcommand per scenario.
 *
 *   rf_stress <scenario> [--seconds S] [--seed N] [--tasks N]
 *                        [--sq N] [--cq N]
 *
 * Scenarios:
 *   churn     short connections to an in-process echo server, random
 *             sizes, random resets from both sides; every echoed byte is
 *             verified.
 *   cancel    a cancellation storm: random rf_cancel and random task
 *             deadlines against sleeps, recv, accept, joins, queue gets,
 *             offloads and NOPs.
 *   sleepers  100,000 concurrent sleepers (--tasks); RSS per task must stay
 *             at or below 16 KiB and no sleep may end early.
 *   offload   tiny pool queues (rf_pool_new(2, 1..4)), two loops on two
 *             threads, many submitters, cancellations and deadlines; every
 *             call that returned 0 ran exactly once, every refused call
 *             never ran.
 *   tinyring  a ring of 4 SQ / 8 CQ entries (override with --sq/--cq)
 *             under 10,000 concurrent tasks doing NOPs, sleeps and socket
 *             ping-pong.
 *   alloc     allocator fault injection: every Nth malloc/calloc/realloc
 *             of the runtime fails (the stress executable is linked with
 *             -Wl,--wrap, so this works under ASan too); every failure
 *             must surface as -ENOMEM / NULL+ENOMEM.
 *             With --fail-every N, the cancellation storm also runs with
 *             every Nth allocation of its loop's thread failing.
 *   remote    four threads post calls and spawns to a loop serving on its
 *             own thread, then a graceful shutdown while they go on; every
 *             accepted request runs exactly once.
 *
 * Each scenario runs for --seconds (default 2), then stops what it
 * started and checks that nothing was lost: every task finished
 * (rf_loop_stats tasks_alive), every operation's completion seen
 * (ops_in_flight 0 before rf_loop_free), rf_loop_free returned 0, the fd
 * count is back where it started. Memory is checked by ASan's leak checker
 * in the ASan build. The last line printed gives the numbers; the exit
 * status is 0 only if no check failed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <dirent.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ringfiber.h"

#if defined(__SANITIZE_ADDRESS__)
#define STRESS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STRESS_ASAN 1
#endif
#endif
#ifndef STRESS_ASAN
#define STRESS_ASAN 0
#endif
#if defined(__SANITIZE_THREAD__)
#define STRESS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRESS_TSAN 1
#endif
#endif
#ifndef STRESS_TSAN
#define STRESS_TSAN 0
#endif

/* ThreadSanitizer follows each task as a fiber, keeps at most 8,128
 * threads and fibers at once, and each costs it ~0.9 MB of memory: the
 * default task counts are capped under it (a count given with --tasks
 * is taken as it is), and so is not the memory per task checked. */
static unsigned default_tasks(unsigned n)
{
    return STRESS_TSAN && n > 2000 ? 2000 : n;
}

/* ------------------------------------------------------------------------ */
/* Options, checks, numbers                                                 */
/* ------------------------------------------------------------------------ */

static struct {
    double seconds;
    uint64_t seed;
    unsigned tasks; /* 0: the scenario's default */
    unsigned sq, cq;
    unsigned fail_every; /* cancel: fail every Nth allocation (0: none) */
    double hang_after;   /* a run not done this long after its end is a
                          * hang: report it, with how to reproduce it */
} opt = {2.0, 1, 0, 0, 0, 0, 60.0};

static atomic_ullong errors;

/* A failed check: print the first 20, count all. */
#define CHECK(cond, ...)                                                       \
    ({                                                                         \
        bool ok_ = (cond);                                                     \
        if (!ok_ && check_failed(__LINE__, #cond)) {                           \
            fprintf(stderr, "  " __VA_ARGS__);                                 \
            fputc('\n', stderr);                                               \
        }                                                                      \
        ok_;                                                                   \
    })

static bool check_failed(int line, const char *expr)
{
    unsigned long long n = atomic_fetch_add(&errors, 1);
    if (n < 20)
        fprintf(stderr, "stress.c:%d: check failed: %s\n", line, expr);
    return n < 20;
}

/* xorshift64*: deterministic from --seed. */
static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
    return n ? rnd(s) % n : 0;
}

static uint64_t seed_for(uint64_t salt)
{
    uint64_t s = (opt.seed + 1) * 0x9E3779B97F4A7C15ULL ^ (salt * 0xBF58476D1CE4E5B9ULL);
    return s ? s : 1;
}

static uint64_t end_time(void)
{
    return rf_now_ns() + (uint64_t)(opt.seconds * 1e9);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own fd */
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    long size = 0, res = 0;
    if (fscanf(f, "%ld %ld", &size, &res) != 2)
        res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

static double elapsed_s(uint64_t t0)
{
    return (double)(rf_now_ns() - t0) / 1e9;
}

static void linger0(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* The allocator wrappers (see "alloc" below). The test's own allocations
 * use the real allocator, so that injected failures hit the runtime only. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
static __thread bool fi_on;
static __thread uint64_t fi_every, fi_count;
static atomic_ullong fi_calls, fi_failed;
#define tmalloc(n) __real_malloc(n)
#define tcalloc(n, size) __real_calloc(n, size)

/* ------------------------------------------------------------------------ */
/* Nothing lost                                                             */
/* ------------------------------------------------------------------------ */

/* A task that waits (bounded) until the loop has nothing in flight but
 * itself. Its own sleeps complete before it looks again. */
static void *drain_task(void *arg)
{
    (void)arg;
    rf_stats st;
    for (int i = 0; i < 5000; i++) {
        rf_loop_stats(rf_loop_current(), &st);
        if (st.ops_in_flight == 0 && st.tasks_alive == 1)
            return NULL;
        rf_sleep(RF_NSEC_PER_MSEC);
    }
    return NULL;
}

/* Wait until a counter of live tasks comes to 0 (bounded: 20 s). */
static bool wait_zero(const uint64_t *live, const char *what)
{
    uint64_t until = rf_now_ns() + 20 * RF_NSEC_PER_SEC;
    while (*live && rf_now_ns() < until)
        if (rf_sleep(RF_NSEC_PER_MSEC) < 0)
            rf_yield(); /* -ENOMEM under fault injection */
    return CHECK(*live == 0, "%" PRIu64 " %s still alive after 20 s", *live,
                 what);
}

/* Drain l, check that no task is alive and nothing is in flight, free it. */
static void loop_finish(rf_loop *l, const char *name)
{
    int rc = rf_loop_run_until_complete(l, drain_task, NULL, NULL);
    CHECK(rc == 0, "%s: drain: %s", name, rf_strerror(rc));
    rf_stats st;
    rf_loop_stats(l, &st);
    CHECK(st.tasks_alive == 0, "%s: %" PRIu64 " tasks alive at the end", name,
          st.tasks_alive);
    CHECK(st.ops_in_flight == 0, "%s: %" PRIu64 " ops in flight at the end",
          name, st.ops_in_flight);
    rc = rf_loop_free(l);
    CHECK(rc == 0, "%s: rf_loop_free: %s", name, rf_strerror(rc));
}

static rf_loop *loop_new(const char *name)
{
    rf_loop_opts o = {0};
    o.sq_entries = opt.sq;
    o.cq_entries = opt.cq;
    rf_loop *l = NULL;
    int rc = rf_loop_new(&l, &o);
    if (rc < 0) {
        fprintf(stderr, "%s: rf_loop_new: %s\n", name, rf_strerror(rc));
        exit(rc == -EPERM || rc == -ENOSYS ? 77 : 1);
    }
    return l;
}

static void run_main(rf_loop *l, rf_fn fn, void *arg, const char *name)
{
    int rc = rf_loop_run_until_complete(l, fn, arg, NULL);
    CHECK(rc == 0, "%s: main task: %s", name, rf_strerror(rc));
}

static ssize_t recv_full(int fd, uint8_t *p, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = rf_recv(fd, p + done, len - done, 0);
        if (n <= 0)
            return n < 0 ? n : (ssize_t)done;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

/* ------------------------------------------------------------------------ */
/* churn: short connections to an in-process echo server                    */
/* ------------------------------------------------------------------------ */

#define CHURN_CLIENTS 32
#define CHURN_MAX (64 * 1024)

typedef struct churn {
    uint64_t end;
    int lfd;
    uint16_t port;
    uint64_t srng;            /* the server's decisions */
    uint64_t conns, resets, bytes, addrbusy;
    uint64_t srv_resets;      /* connections the server reset */
    uint64_t srv_saw_reset;   /* ... the server saw reset */
    uint64_t cli_saw_reset;   /* ... the client saw reset */
    uint64_t srv_live, cli_live;
    rf_acceptor *acc;
    unsigned acc_users;
    uint64_t accepted[2]; /* by rf_accept, by the multishot acceptor */
} churn;

typedef struct echo_arg {
    churn *C;
    int fd;
    uint64_t reset_after; /* UINT64_MAX: never */
} echo_arg;

static void *echo_conn(void *arg)
{
    echo_arg a = *(echo_arg *)arg;
    free(arg);
    churn *C = a.C;
    uint8_t buf[16384];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = rf_recv(a.fd, buf, sizeof(buf), 0);
        if (n == 0)
            break;
        if (n < 0) {
            if (n == -ECONNRESET)
                C->srv_saw_reset++;
            else
                CHECK(false, "churn: server recv: %s", rf_strerror((int)n));
            break;
        }
        if (total + (uint64_t)n > a.reset_after) {
            linger0(a.fd);
            C->srv_resets++;
            break;
        }
        ssize_t w = rf_send_all(a.fd, buf, (size_t)n, 0, NULL);
        if (w < 0) {
            if (w == -ECONNRESET || w == -EPIPE)
                C->srv_saw_reset++;
            else
                CHECK(false, "churn: server send: %s", rf_strerror((int)w));
            break;
        }
        total += (uint64_t)n;
    }
    int rc = rf_close(a.fd);
    CHECK(rc == 0, "churn: server close: %s", rf_strerror(rc));
    C->srv_live--;
    return NULL;
}

/* Two acceptors share the listening socket: one with rf_accept, one with
 * a multishot rf_acceptor. */
static void *churn_acceptor(void *arg)
{
    churn *C = arg;
    bool multishot = C->acc != NULL && C->acc_users++ == 1;
    for (;;) {
        int fd = multishot ? rf_acceptor_next(C->acc)
                           : rf_accept(C->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd == -ECANCELED)
            return NULL;
        if (!CHECK(fd >= 0, "churn: accept: %s", rf_strerror(fd))) {
            rf_sleep(RF_NSEC_PER_MSEC);
            continue;
        }
        C->accepted[multishot]++;
        echo_arg *a = tmalloc(sizeof(*a));
        if (!CHECK(a != NULL, "churn: malloc")) {
            close(fd);
            continue;
        }
        a->C = C;
        a->fd = fd;
        a->reset_after = rnd_below(&C->srng, 16) == 0
                             ? rnd_below(&C->srng, CHURN_MAX)
                             : UINT64_MAX;
        C->srv_live++;
        rf_task *t = rf_spawn(echo_conn, a);
        if (!CHECK(t != NULL, "churn: spawn: %s", strerror(errno))) {
            C->srv_live--;
            free(a);
            close(fd);
            continue;
        }
        rf_task_release(t);
    }
}

static void fill(uint8_t *p, size_t len, uint64_t salt)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(salt + i * 131 + (i >> 8));
}

static void *churn_client(void *arg)
{
    churn *C = ((void **)arg)[0];
    uint64_t rs = (uint64_t)(uintptr_t)((void **)arg)[1];
    free(arg);
    uint8_t *sbuf = tmalloc(CHURN_MAX), *rbuf = tmalloc(CHURN_MAX + 1);
    if (!CHECK(sbuf && rbuf, "churn: malloc"))
        goto out;
    while (rf_now_ns() < C->end) {
        int fd;
        int rc = rf_tcp_connect("127.0.0.1", C->port, &fd);
        if (rc == -EADDRNOTAVAIL || rc == -EAGAIN) {
            C->addrbusy++; /* out of ephemeral ports for a moment */
            rf_sleep(10 * RF_NSEC_PER_MSEC);
            continue;
        }
        if (!CHECK(rc == 0, "churn: connect: %s", rf_strerror(rc)))
            break;
        size_t len = rnd_below(&rs, 2) ? 1 + rnd_below(&rs, 512)
                                       : 1 + rnd_below(&rs, CHURN_MAX);
        uint64_t salt = rnd(&rs);
        fill(sbuf, len, salt);
        bool reset = rnd_below(&rs, 8) == 0;
        size_t stop = reset ? rnd_below(&rs, len + 1) : len;
        bool peer_reset = false;
        size_t sent = 0;
        while (sent < stop) {
            size_t chunk = 1 + rnd_below(&rs, stop - sent);
            ssize_t n = rf_send(fd, sbuf + sent, chunk, 0);
            if (n == -ECONNRESET || n == -EPIPE) {
                peer_reset = true;
                break;
            }
            if (!CHECK(n > 0, "churn: send: %s", rf_strerror((int)n)))
                break;
            sent += (size_t)n;
        }
        C->conns++;
        C->bytes += sent;
        if (reset) {
            linger0(fd);
            C->resets++;
        } else if (!peer_reset) {
            rf_shutdown(fd, SHUT_WR);
            size_t got = 0;
            for (;;) {
                ssize_t n = rf_recv(fd, rbuf + got, CHURN_MAX + 1 - got, 0);
                if (n == -ECONNRESET) {
                    peer_reset = true;
                    break;
                }
                if (!CHECK(n >= 0, "churn: recv: %s", rf_strerror((int)n)))
                    break;
                if (n == 0)
                    break;
                got += (size_t)n;
                if (!CHECK(got <= len, "churn: %zu bytes echoed for %zu sent",
                           got, len))
                    break;
            }
            CHECK(memcmp(rbuf, sbuf, got < len ? got : len) == 0,
                  "churn: echoed bytes differ (len %zu)", len);
            CHECK(peer_reset || got == len,
                  "churn: short echo without reset: %zu of %zu", got, len);
        }
        if (peer_reset)
            C->cli_saw_reset++;
        rc = rf_close(fd);
        CHECK(rc == 0, "churn: close: %s", rf_strerror(rc));
    }
out:
    free(sbuf);
    free(rbuf);
    C->cli_live--;
    return NULL;
}

static void *churn_main(void *arg)
{
    churn *C = arg;
    int rc = rf_tcp_listen("127.0.0.1", 0, 0, &C->lfd);
    if (!CHECK(rc == 0, "churn: listen: %s", rf_strerror(rc)))
        return NULL;
    C->port = (uint16_t)rf_sock_port(C->lfd);
    rc = rf_acceptor_open(C->lfd, SOCK_CLOEXEC, &C->acc);
    CHECK(rc == 0, "churn: acceptor_open: %s", rf_strerror(rc));
    rf_task *acc[2];
    for (int i = 0; i < 2; i++) {
        acc[i] = rf_spawn(churn_acceptor, C);
        CHECK(acc[i] != NULL, "churn: spawn acceptor");
    }
    for (int i = 0; i < CHURN_CLIENTS; i++) {
        void **a = tmalloc(2 * sizeof(void *));
        a[0] = C;
        a[1] = (void *)(uintptr_t)seed_for(100 + (uint64_t)i);
        C->cli_live++;
        rf_task *t = rf_spawn(churn_client, a);
        if (!CHECK(t != NULL, "churn: spawn client")) {
            C->cli_live--;
            free(a);
            continue;
        }
        rf_task_release(t);
    }
    while (rf_now_ns() < C->end)
        rf_sleep(10 * RF_NSEC_PER_MSEC);
    wait_zero(&C->cli_live, "clients");
    wait_zero(&C->srv_live, "server connections");
    for (int i = 0; i < 2; i++) {
        if (acc[i]) {
            rf_cancel(acc[i]);
            rf_join(acc[i], NULL);
            rf_task_release(acc[i]);
        }
    }
    rc = rf_acceptor_close(C->acc);
    CHECK(rc == 0, "churn: acceptor_close: %s", rf_strerror(rc));
    rf_close(C->lfd);
    return NULL;
}

static int scenario_churn(void)
{
    churn C = {0};
    C.srng = seed_for(1);
    int fds0 = count_fds();
    uint64_t t0 = rf_now_ns();
    C.end = end_time();
    rf_loop *l = loop_new("churn");
    run_main(l, churn_main, &C, "churn");
    loop_finish(l, "churn");
    CHECK(count_fds() == fds0, "churn: %d fds at the end, %d at the start",
          count_fds(), fds0);
    CHECK(C.cli_saw_reset <= C.srv_resets,
          "churn: client saw %" PRIu64 " resets, server made %" PRIu64,
          C.cli_saw_reset, C.srv_resets);
    CHECK(C.conns > 0, "churn: no connection made");
    CHECK(C.accepted[0] + C.accepted[1] == C.conns,
          "churn: %" PRIu64 " connections accepted, %" PRIu64 " made",
          C.accepted[0] + C.accepted[1], C.conns);
    printf("churn: %" PRIu64 " connections, %" PRIu64 " client resets, %" PRIu64
           " server resets, %" PRIu64 " KiB sent, %" PRIu64
           " by multishot accept, %" PRIu64 " port waits, %llu errors, %.1f s\n",
           C.conns, C.resets, C.srv_resets, C.bytes / 1024, C.accepted[1],
           C.addrbusy,
           (unsigned long long)errors, elapsed_s(t0));
    return 0;
}

/* ------------------------------------------------------------------------ */
/* cancel: a cancellation storm                                             */
/* ------------------------------------------------------------------------ */

enum {
    V_SLEEP,
    V_RECV,
    V_ACCEPT,
    V_JOIN,
    V_QGET,
    V_OFFLOAD,
    V_NOP,
    V_WAITFOR,
    V_GATHER,
    V_MUTEX,
    V_SEM,
    V_COND,
    V_EVENT,
    V_POLL,
    V_ACCEPTOR,
    V_CLOSE,
    V_KINDS
};
static const char *const vname[V_KINDS] = {
    "sleep",   "recv",   "accept", "join",  "qget", "offload", "nop",
    "waitfor", "gather", "mutex",  "sem",   "cond", "event",   "poll",
    "acceptor", "close"};
enum { RES_OK, RES_CANCELED, RES_TIMEDOUT, RES_CLOSED, RES_NOMEM, RES_N };

/* Under --fail-every, a spawn may fail for want of memory. */
static bool enomem_ok(int err)
{
    return opt.fail_every && err == ENOMEM;
}

#define STORM_SLOTS 256

typedef struct storm {
    uint64_t end;
    int sv[2];
    int lfd;
    uint16_t port;
    rf_queue q;
    rf_mutex m;
    rf_cond c;
    rf_sem sem;
    rf_event ev;
    rf_acceptor *acc;
    rf_task *mholder; /* the task holding m, checked by its holders */
    unsigned sem_in;  /* tasks holding a permit of sem (max 3) */
    uint64_t res[V_KINDS][RES_N];
    uint64_t cancels, spawned, children_live, victims_live;
} storm;

static atomic_ullong off_calls; /* offloaded functions run */

typedef struct vic {
    storm *S;
    int kind;
    uint64_t dur;      /* sleeps */
    uint64_t deadline; /* relative; 0: none */
} vic;

typedef struct offrec {
    atomic_int called;
    uint64_t x, out;
    uint64_t spin_ns;
} offrec;

static void *off_fn(void *arg)
{
    offrec *o = arg;
    atomic_fetch_add(&o->called, 1);
    atomic_fetch_add(&off_calls, 1);
    if (o->spin_ns) {
        struct timespec ts = {0, (long)o->spin_ns};
        nanosleep(&ts, NULL);
    }
    o->out = o->x * 2 + 1;
    return o;
}

static void *child_sleep(void *arg)
{
    vic *v = arg;
    rf_sleep(v->dur);
    v->S->children_live--;
    free(v);
    return NULL;
}

/* A reader whose fd another task closes: rf_close cancels its recv. */
typedef struct closed_reader {
    int fd;
    bool started;
    ssize_t rc;
} closed_reader;

static void *closed_recv(void *arg)
{
    closed_reader *c = arg;
    char b[16];
    c->started = true;
    c->rc = rf_recv(c->fd, b, sizeof(b), 0);
    return NULL;
}

static void *victim(void *arg)
{
    vic *v = arg;
    storm *S = v->S;
    uint64_t dl = 0;
    if (v->deadline) {
        dl = rf_now_ns() + v->deadline;
        rf_deadline_set(dl);
    }
    int rc = 0;
    switch (v->kind) {
    case V_SLEEP:
        rc = rf_sleep(v->dur);
        break;
    case V_RECV: {
        char b[64];
        ssize_t n = rf_recv(S->sv[0], b, sizeof(b), 0);
        CHECK(n != 0, "cancel: recv returned 0");
        rc = n > 0 ? 0 : (int)n;
        break;
    }
    case V_ACCEPT: {
        int fd = rf_accept(S->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            int c = rf_close(fd);
            CHECK(c == 0, "cancel: close accepted: %s", rf_strerror(c));
            rc = 0;
        } else {
            rc = fd;
        }
        break;
    }
    case V_JOIN: {
        vic *cv = tmalloc(sizeof(*cv));
        if (!CHECK(cv != NULL, "malloc"))
            break;
        *cv = *v;
        S->children_live++;
        rf_task *child = rf_spawn(child_sleep, cv);
        if (!CHECK(child != NULL || enomem_ok(errno), "cancel: spawn child: %s",
                   strerror(errno)) ||
            !child) {
            S->children_live--;
            free(cv);
            break;
        }
        rc = rf_join(child, NULL);
        if (rc != 0) {
            CHECK(!rf_done(child) || rc == -ECANCELED,
                  "cancel: join of a finished child: %s", rf_strerror(rc));
            rf_cancel(child);
        }
        rf_task_release(child);
        break;
    }
    case V_QGET: {
        void *it;
        rc = rf_queue_get(&S->q, &it);
        if (rc == -EPIPE)
            rc = 1;
        break;
    }
    case V_OFFLOAD: {
        offrec *o = tcalloc(1, sizeof(*o));
        if (!CHECK(o != NULL, "malloc"))
            break;
        o->x = v->dur;
        o->spin_ns = v->dur % 200000;
        void *res = NULL;
        rc = rf_to_thread(off_fn, o, &res);
        if (rc == 0)
            CHECK(atomic_load(&o->called) == 1 && res == o &&
                      o->out == o->x * 2 + 1,
                  "cancel: offload returned 0 but ran %d times",
                  atomic_load(&o->called));
        else
            CHECK(atomic_load(&o->called) == 0,
                  "cancel: offload refused (%s) but ran", rf_strerror(rc));
        free(o); /* a late run by a worker is a use after free (ASan) */
        break;
    }
    case V_NOP:
        rc = rf_nop();
        break;
    case V_WAITFOR:
    case V_GATHER: {
        /* Both own their children: whatever they return, the children have
         * returned (cancelled and awaited on a timeout or cancellation). */
        rf_task *ch[3] = {0};
        int nch = v->kind == V_GATHER ? 3 : 1;
        for (int i = 0; i < nch; i++) {
            vic *cv = tmalloc(sizeof(*cv));
            if (!CHECK(cv != NULL, "malloc"))
                break;
            *cv = *v;
            cv->dur = v->dur >> i;
            S->children_live++;
            ch[i] = rf_spawn(child_sleep, cv);
            if (!CHECK(ch[i] != NULL || enomem_ok(errno),
                       "cancel: spawn child: %s", strerror(errno)) ||
                !ch[i]) {
                S->children_live--;
                free(cv);
                nch = i;
            }
        }
        if (nch == 0)
            break;
        if (v->kind == V_WAITFOR) {
            uint64_t tmo = v->dur >> (v->dur & 3);
            uint64_t t = rf_now_ns();
            rc = rf_wait_for(ch[0], tmo, NULL);
            if (rc == -ETIMEDOUT && rf_now_ns() - t >= tmo)
                rc = 2; /* its own timeout, not the task's deadline */
        } else {
            rc = rf_gather(ch, (size_t)nch, NULL);
        }
        for (int i = 0; i < nch; i++) {
            CHECK(rf_done(ch[i]), "cancel: %s returned %s, child %d running",
                  vname[v->kind], rf_strerror(rc < 2 ? rc : -ETIMEDOUT), i);
            rf_task_release(ch[i]);
        }
        if (rc == 2)
            rc = 0;
        break;
    }
    case V_MUTEX:
        rc = rf_mutex_lock(&S->m);
        if (rc == 0) {
            CHECK(S->mholder == NULL, "cancel: mutex: two holders");
            S->mholder = rf_self();
            rf_sleep(v->dur >> 6); /* may be cancelled: still unlock */
            CHECK(S->mholder == rf_self(), "cancel: mutex: holder changed");
            S->mholder = NULL;
            int u = rf_mutex_unlock(&S->m);
            CHECK(u == 0, "cancel: unlock: %s", rf_strerror(u));
        }
        break;
    case V_SEM:
        rc = rf_sem_acquire(&S->sem);
        if (rc == 0) {
            S->sem_in++;
            CHECK(S->sem_in <= 3, "cancel: sem: %u holders of 3", S->sem_in);
            rf_sleep(v->dur >> 6);
            S->sem_in--;
            int u = rf_sem_release(&S->sem);
            CHECK(u == 0, "cancel: sem release: %s", rf_strerror(u));
        }
        break;
    case V_COND:
        rc = rf_mutex_lock(&S->m);
        if (rc == 0) {
            CHECK(S->mholder == NULL, "cancel: mutex: two holders");
            /* cond_wait gives m up while it waits, takes it back always */
            rc = rf_cond_wait(&S->c, &S->m);
            CHECK(S->mholder == NULL, "cancel: cond: m held by another");
            S->mholder = rf_self();
            rf_yield();
            S->mholder = NULL;
            int u = rf_mutex_unlock(&S->m);
            CHECK(u == 0, "cancel: cond: unlock after wait (%s): %s",
                  rf_strerror(rc), rf_strerror(u));
        }
        break;
    case V_EVENT:
        rc = rf_event_wait(&S->ev);
        break;
    case V_POLL: {
        int ev = rf_poll(S->sv[0], POLLIN);
        CHECK(ev != 0, "cancel: poll returned 0");
        rc = ev > 0 ? 0 : ev;
        break;
    }
    case V_CLOSE: {
        /* rf_close is not a cancellation point: it closes the fd even in
         * a cancelled task (the fd count at the end says so), and the
         * reader blocked on it returns -ECANCELED. */
        int sp[2];
        if (!CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0,
                   "socketpair: %s", strerror(errno)))
            break;
        closed_reader c = {.fd = sp[0]};
        rf_task *r = rf_spawn(closed_recv, &c);
        if (!CHECK(r != NULL || enomem_ok(errno), "cancel: spawn reader") ||
            !r) {
            close(sp[0]);
            close(sp[1]);
            break;
        }
        for (int i = 0; i < 1000 && !c.started; i++)
            rf_yield();
        rf_yield();
        rc = rf_close(sp[0]);
        CHECK(rc == 0, "cancel: close: %s", rf_strerror(rc));
        while (!rf_done(r)) /* rf_join would end on our cancellation */
            rf_yield();
        CHECK(c.rc == -ECANCELED, "cancel: recv on a closed fd: %s",
              rf_strerror((int)c.rc));
        rf_task_release(r);
        int rc2 = rf_close(sp[1]);
        CHECK(rc2 == 0, "cancel: close: %s", rf_strerror(rc2));
        break;
    }
    case V_ACCEPTOR: {
        int fd = rf_acceptor_next(S->acc);
        if (fd >= 0) {
            int c = rf_close(fd);
            CHECK(c == 0, "cancel: close accepted: %s", rf_strerror(c));
            rc = 0;
        } else {
            rc = fd == -EBUSY ? 1 : fd; /* another task waits in it */
        }
        break;
    }
    }
    int r;
    if (rc == -ENOMEM && opt.fail_every)
        r = RES_NOMEM;
    else if (rc == 0)
        r = RES_OK;
    else if (rc == 1)
        r = RES_CLOSED;
    else if (rc == -ECANCELED)
        r = RES_CANCELED;
    else if (rc == -ETIMEDOUT)
        r = RES_TIMEDOUT;
    else
        r = -1;
    if (CHECK(r >= 0, "cancel: %s: unexpected %s", vname[v->kind],
              rf_strerror(rc)))
        S->res[v->kind][r]++;
    if (r == RES_CANCELED)
        CHECK(rf_cancelled(rf_self()), "cancel: %s: -ECANCELED uncancelled",
              vname[v->kind]);
    if (r == RES_TIMEDOUT)
        CHECK(dl != 0 && rf_now_ns() >= dl,
              "cancel: %s: -ETIMEDOUT before the deadline (%s)",
              vname[v->kind], dl ? "early" : "none set");
    S->victims_live--;
    free(v);
    return NULL;
}

/* Feeds the victims: bytes to recv, items to get, connections to accept. */
static void *storm_feeder(void *arg)
{
    storm *S = arg;
    uint64_t rs = seed_for(2);
    while (!rf_cancelled(rf_self())) {
        if (rf_sleep(rnd_below(&rs, 500) * RF_NSEC_PER_USEC) == -ECANCELED)
            break;
        switch (rnd_below(&rs, 6)) {
        case 0: {
            char b = 'x';
            ssize_t n = rf_send(S->sv[1], &b, 1, 0);
            CHECK(n == 1 || n == -ECANCELED, "cancel: feeder send: %s",
                  rf_strerror((int)n));
            break;
        }
        case 1:
            rf_queue_try_put(&S->q, NULL);
            break;
        case 2: {
            rf_deadline_set(rf_now_ns() + 50 * RF_NSEC_PER_MSEC);
            int fd;
            int rc = rf_tcp_connect("127.0.0.1", S->port, &fd);
            if (rc == 0) {
                linger0(fd);
                rf_close(fd);
            } else {
                CHECK(rc == -ETIMEDOUT || rc == -ECANCELED ||
                          rc == -ECONNREFUSED,
                      "cancel: connect: %s", rf_strerror(rc));
            }
            rf_deadline_set(0);
            break;
        }
        case 3:
            if (rnd_below(&rs, 2))
                rf_cond_signal(&S->c);
            else
                rf_cond_broadcast(&S->c);
            break;
        case 4:
            if (rnd_below(&rs, 2))
                rf_event_set(&S->ev);
            else
                rf_event_clear(&S->ev);
            break;
        case 5: {
            /* drain what the recv victims left, so poll waits again */
            char b[256];
            rf_deadline_set(rf_now_ns() + RF_NSEC_PER_MSEC);
            rf_recv(S->sv[0], b, sizeof(b), MSG_DONTWAIT);
            rf_deadline_set(0);
            break;
        }
        }
    }
    return NULL;
}

static void *storm_main(void *arg)
{
    storm *S = arg;
    uint64_t rs = seed_for(3);
    int rc = rf_tcp_listen("127.0.0.1", 0, 64, &S->lfd);
    if (!CHECK(rc == 0, "cancel: listen: %s", rf_strerror(rc)))
        return NULL;
    S->port = (uint16_t)rf_sock_port(S->lfd);
    do
        rc = rf_acceptor_open(S->lfd, SOCK_CLOEXEC, &S->acc);
    while (rc == -ENOMEM && opt.fail_every);
    if (!CHECK(rc == 0, "cancel: acceptor_open: %s", rf_strerror(rc)))
        return NULL;
    rf_task *feeder = rf_spawn(storm_feeder, S);
    rf_task *slot[STORM_SLOTS] = {0};
    /* --fail-every: allocations fail from here to the end of the storm's
     * teardown (this loop's thread only). */
    fi_every = opt.fail_every;
    fi_count = 0;
    fi_on = opt.fail_every != 0;
    while (rf_now_ns() < S->end) {
        for (int i = 0; i < STORM_SLOTS; i++) {
            if (slot[i] && rf_done(slot[i])) {
                rf_task_release(slot[i]);
                slot[i] = NULL;
            }
            if (!slot[i] && rnd_below(&rs, 4) == 0) {
                vic *v = tmalloc(sizeof(*v));
                v->S = S;
                v->kind = (int)rnd_below(&rs, V_KINDS);
                v->dur = rnd_below(&rs, 20 * RF_NSEC_PER_MSEC);
                v->deadline = rnd_below(&rs, 3) == 0
                                  ? rnd_below(&rs, 10 * RF_NSEC_PER_MSEC)
                                  : 0;
                S->victims_live++;
                slot[i] = rf_spawn(victim, v);
                if (!CHECK(slot[i] != NULL || enomem_ok(errno),
                           "cancel: spawn: %s", strerror(errno)) ||
                    !slot[i]) {
                    S->victims_live--;
                    free(v);
                }
                S->spawned++;
            }
        }
        unsigned k = (unsigned)rnd_below(&rs, 32);
        for (unsigned j = 0; j < k; j++) {
            rf_task *t = slot[rnd_below(&rs, STORM_SLOTS)];
            if (t && rf_cancel(t) == 0)
                S->cancels++;
        }
        if (rnd_below(&rs, 2))
            rf_yield();
        else
            rf_sleep(rnd_below(&rs, 300) * RF_NSEC_PER_USEC);
    }
    /* Stop: close the queue, cancel everything left, await it. */
    rf_queue_close(&S->q);
    for (int i = 0; i < STORM_SLOTS; i++) {
        if (!slot[i])
            continue;
        rf_cancel(slot[i]);
        rf_join(slot[i], NULL);
        rf_task_release(slot[i]);
    }
    if (feeder) {
        rf_cancel(feeder);
        rf_join(feeder, NULL);
        rf_task_release(feeder);
    }
    wait_zero(&S->victims_live, "victims");
    wait_zero(&S->children_live, "join children");
    fi_on = false;
    rc = rf_acceptor_close(S->acc);
    CHECK(rc == 0, "cancel: acceptor_close: %s", rf_strerror(rc));
    CHECK(S->mholder == NULL && S->sem_in == 0 && rf_sem_value(&S->sem) == 3,
          "cancel: mutex or semaphore still held");
    rf_close(S->lfd);
    rf_close(S->sv[0]);
    rf_close(S->sv[1]);
    return NULL;
}

static int scenario_cancel(void)
{
    static storm S; /* big counters, zeroed */
    int fds0 = count_fds();
    uint64_t t0 = rf_now_ns();
    S.end = end_time();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, S.sv) < 0) {
        perror("socketpair");
        return 1;
    }
    rf_loop *l = loop_new("cancel");
    rf_loop_set_pool_threads(l, 2);
    rf_queue_init(&S.q, 16, NULL);
    rf_mutex_init(&S.m);
    rf_cond_init(&S.c);
    rf_sem_init(&S.sem, 3, 3);
    rf_event_init(&S.ev);
    unsigned long long calls0 = atomic_load(&off_calls);
    unsigned long long failed0 = atomic_load(&fi_failed);
    run_main(l, storm_main, &S, "cancel");
    loop_finish(l, "cancel");
    CHECK(rf_queue_fini(&S.q) == 0 && rf_mutex_fini(&S.m) == 0 &&
              rf_cond_fini(&S.c) == 0 && rf_sem_fini(&S.sem) == 0 &&
              rf_event_fini(&S.ev) == 0,
          "cancel: a sync object still busy at the end");
    CHECK(count_fds() == fds0, "cancel: %d fds at the end, %d at the start",
          count_fds(), fds0);
    uint64_t ops = 0, canc = 0, to = 0, nomem = 0;
    for (int k = 0; k < V_KINDS; k++) {
        for (int r = 0; r < RES_N; r++)
            ops += S.res[k][r];
        canc += S.res[k][RES_CANCELED];
        to += S.res[k][RES_TIMEDOUT];
        nomem += S.res[k][RES_NOMEM];
        CHECK(S.res[k][RES_OK] + S.res[k][RES_CANCELED] +
                      S.res[k][RES_TIMEDOUT] + S.res[k][RES_NOMEM] > 0,
              "cancel: no %s ran", vname[k]);
    }
    CHECK(atomic_load(&off_calls) - calls0 == S.res[V_OFFLOAD][RES_OK],
          "cancel: %llu offloaded calls ran, %" PRIu64 " returned 0",
          atomic_load(&off_calls) - calls0, S.res[V_OFFLOAD][RES_OK]);
    for (int k = 0; k < V_KINDS; k++)
        fprintf(stderr, "  %-8s ok %" PRIu64 ", cancelled %" PRIu64
                        ", timed out %" PRIu64 "\n",
                vname[k], S.res[k][RES_OK], S.res[k][RES_CANCELED],
                S.res[k][RES_TIMEDOUT]);
    if (opt.fail_every)
        printf("cancel: %" PRIu64 " waits, %" PRIu64 " rf_cancel, %" PRIu64
               " ended cancelled, %" PRIu64 " timed out, %llu allocations "
               "failed, %" PRIu64 " waits ended -ENOMEM, %llu errors, %.1f s\n",
               ops, S.cancels, canc, to, atomic_load(&fi_failed) - failed0,
               nomem, (unsigned long long)errors, elapsed_s(t0));
    else
        printf("cancel: %" PRIu64 " waits, %" PRIu64 " rf_cancel, %" PRIu64
               " ended cancelled, %" PRIu64 " timed out, %llu errors, %.1f s\n",
               ops, S.cancels, canc, to, (unsigned long long)errors,
               elapsed_s(t0));
    return 0;
}

/* ------------------------------------------------------------------------ */
/* sleepers: 100,000+ concurrent sleepers, bounded memory                   */
/* ------------------------------------------------------------------------ */

typedef struct sleepers {
    uint64_t end;
    uint64_t live, started, sleeps, early;
    unsigned n;
    double spawn_s;
} sleepers;

static void *sleeper(void *arg)
{
    sleepers *P = arg;
    uint64_t rs = seed_for(1000 + P->started);
    P->started++;
    while (rf_now_ns() < P->end) {
        uint64_t ns = (1 + rnd_below(&rs, 100)) * RF_NSEC_PER_MSEC;
        uint64_t t = rf_now_ns();
        int rc = rf_sleep(ns);
        if (!CHECK(rc == 0, "sleepers: sleep: %s", rf_strerror(rc)))
            break;
        if (rf_now_ns() - t < ns)
            P->early++;
        P->sleeps++;
    }
    P->live--;
    return NULL;
}

static void *sleepers_main(void *arg)
{
    sleepers *P = arg;
    long rss0 = rss_kib();
    uint64_t t0 = rf_now_ns();
    for (unsigned i = 0; i < P->n; i++) {
        P->live++;
        rf_task *t = rf_spawn(sleeper, P);
        if (!CHECK(t != NULL, "sleepers: spawn %u: %s", i, strerror(errno))) {
            P->live--;
            break;
        }
        rf_task_release(t);
    }
    /* The sleepers start when this task first suspends; the run lasts
     * --seconds from the moment every one has started (spawning and
     * starting 100,000 tasks takes seconds under ASan). */
    while (P->started < P->n && P->live)
        rf_sleep(RF_NSEC_PER_MSEC);
    P->spawn_s = elapsed_s(t0);
    P->end = end_time();
    /* Every sleeper has started and sleeps: measure. */
    rf_stats st;
    rf_loop_stats(rf_loop_current(), &st);
    long rss1 = rss_kib();
    double per = (double)(rss1 - rss0) * 1024.0 / P->n;
    fprintf(stderr, "sleepers: %u tasks alive, RSS %ld -> %ld KiB, %.0f B/task\n",
            (unsigned)st.tasks_alive, rss0, rss1, per);
    /* ASan's redzones and shadow memory do not count against the budget. */
    CHECK(STRESS_ASAN || STRESS_TSAN || per <= 16384.0, "sleepers: %.0f bytes of RSS per task",
          per);
    CHECK(st.tasks_alive >= P->n, "sleepers: only %" PRIu64 " alive",
          st.tasks_alive);
    wait_zero(&P->live, "sleepers");
    return (void *)(intptr_t)(long)per;
}

static int scenario_sleepers(void)
{
    sleepers P = {0};
    P.n = opt.tasks ? opt.tasks : default_tasks(100000);
    int fds0 = count_fds();
    uint64_t t0 = rf_now_ns();
    P.end = UINT64_MAX; /* set once every sleeper has started */
    rf_loop *l = loop_new("sleepers");
    void *per = NULL;
    int rc = rf_loop_run_until_complete(l, sleepers_main, &P, &per);
    CHECK(rc == 0, "sleepers: main: %s", rf_strerror(rc));
    loop_finish(l, "sleepers");
    CHECK(count_fds() == fds0, "sleepers: %d fds at the end, %d at the start",
          count_fds(), fds0);
    CHECK(P.early == 0, "sleepers: %" PRIu64 " sleeps ended early", P.early);
    printf("sleepers: %u tasks (all started in %.2f s), %" PRIu64 " sleeps, %" PRIu64
           " early, %ld B RSS/task%s, %llu errors, %.1f s\n",
           P.n, P.spawn_s, P.sleeps, P.early, (long)(intptr_t)per,
           STRESS_ASAN ? " (ASan: not checked)" : "",
           (unsigned long long)errors, elapsed_s(t0));
    return 0;
}

/* ------------------------------------------------------------------------ */
/* offload: tiny pool queues, two loops, many submitters, cancellations     */
/* ------------------------------------------------------------------------ */

#define OFF_POOLS 3
#define OFF_SUBMITTERS 100

static rf_pool *off_pool[OFF_POOLS];
static atomic_ullong off_ok, off_refused;

typedef struct offl {
    uint64_t end;
    uint64_t rs;
    uint64_t live;
    uint64_t cancels, calls;
} offl;

static void *submitter(void *arg)
{
    offl *O = arg;
    uint64_t rs = rnd(&O->rs);
    unsigned n = 1 + (unsigned)rnd_below(&rs, 20);
    for (unsigned i = 0; i < n && rf_now_ns() < O->end; i++) {
        offrec *o = tcalloc(1, sizeof(*o));
        if (!CHECK(o != NULL, "malloc"))
            break;
        o->x = rnd(&rs) >> 2;
        o->spin_ns = rnd_below(&rs, 4) == 0 ? rnd_below(&rs, 50000) : 0;
        uint64_t dl = 0;
        if (rnd_below(&rs, 4) == 0) {
            dl = rf_now_ns() + rnd_below(&rs, 2 * RF_NSEC_PER_MSEC);
            rf_deadline_set(dl);
        } else {
            rf_deadline_set(0);
        }
        void *res = NULL;
        int rc = rf_pool_call(off_pool[rnd_below(&rs, OFF_POOLS)], off_fn, o,
                              &res);
        O->calls++;
        if (rc == 0) {
            atomic_fetch_add(&off_ok, 1);
            CHECK(atomic_load(&o->called) == 1 && res == o &&
                      o->out == o->x * 2 + 1,
                  "offload: returned 0, ran %d times", atomic_load(&o->called));
        } else {
            atomic_fetch_add(&off_refused, 1);
            CHECK((rc == -ECANCELED && rf_cancelled(rf_self())) ||
                      (rc == -ETIMEDOUT && dl && rf_now_ns() >= dl),
                  "offload: %s (cancelled: %d, deadline: %s)", rf_strerror(rc),
                  rf_cancelled(rf_self()), dl ? "set" : "none");
            CHECK(atomic_load(&o->called) == 0, "offload: refused (%s) but ran",
                  rf_strerror(rc));
        }
        free(o);
        if (rc == -ECANCELED)
            break;
    }
    O->live--;
    return NULL;
}

static void *offload_main(void *arg)
{
    offl *O = arg;
    rf_task *slot[OFF_SUBMITTERS] = {0};
    uint64_t rs = rnd(&O->rs);
    for (;;) {
        bool running = rf_now_ns() < O->end;
        int left = 0;
        for (int i = 0; i < OFF_SUBMITTERS; i++) {
            if (slot[i] && rf_done(slot[i])) {
                rf_task_release(slot[i]);
                slot[i] = NULL;
            }
            if (!slot[i] && running) {
                O->live++;
                slot[i] = rf_spawn(submitter, O);
                if (!CHECK(slot[i] != NULL, "offload: spawn"))
                    O->live--;
            }
            left += slot[i] != NULL;
        }
        if (!running && left == 0)
            break;
        unsigned k = (unsigned)rnd_below(&rs, 8);
        for (unsigned j = 0; j < k; j++) {
            rf_task *t = slot[rnd_below(&rs, OFF_SUBMITTERS)];
            if (t && rf_cancel(t) == 0)
                O->cancels++;
        }
        rf_sleep(rnd_below(&rs, 200) * RF_NSEC_PER_USEC);
    }
    return NULL;
}

static void *offload_thread(void *arg)
{
    offl *O = arg;
    rf_loop *l = loop_new("offload");
    run_main(l, offload_main, O, "offload");
    loop_finish(l, "offload");
    return NULL;
}

static int scenario_offload(void)
{
    int fds0 = count_fds();
    uint64_t t0 = rf_now_ns();
    uint64_t rs = seed_for(4);
    unsigned long long calls0 = atomic_load(&off_calls);
    for (int i = 0; i < OFF_POOLS; i++) {
        unsigned cap = 1 + (unsigned)rnd_below(&rs, 4);
        int rc = rf_pool_new(2, cap, &off_pool[i]);
        if (!CHECK(rc == 0, "offload: rf_pool_new(2, %u): %s", cap,
                   rf_strerror(rc)))
            return 1;
    }
    offl O[2] = {{0}, {0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        O[i].end = end_time();
        O[i].rs = seed_for(40 + (uint64_t)i);
        pthread_create(&th[i], NULL, offload_thread, &O[i]);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < OFF_POOLS; i++) {
        int rc = rf_pool_free(off_pool[i]);
        CHECK(rc == 0, "offload: rf_pool_free: %s", rf_strerror(rc));
    }
    unsigned long long ran = atomic_load(&off_calls) - calls0;
    CHECK(ran == atomic_load(&off_ok),
          "offload: %llu calls ran, %llu returned 0", ran,
          atomic_load(&off_ok));
    /* Pool workers leave /proc/self/fd alone, but give threads a moment. */
    CHECK(count_fds() == fds0, "offload: %d fds at the end, %d at the start",
          count_fds(), fds0);
    printf("offload: %llu calls ran, %llu refused, %" PRIu64
           " rf_cancel, 2 loops, 3 pools, %llu errors, %.1f s\n",
           ran, atomic_load(&off_refused), O[0].cancels + O[1].cancels,
           (unsigned long long)errors, elapsed_s(t0));
    return 0;
}

/* ------------------------------------------------------------------------ */
/* tinyring: SQ 4 / CQ 8 under 10,000 concurrent tasks                      */
/* ------------------------------------------------------------------------ */

typedef struct tiny {
    uint64_t end;
    unsigned n, npairs;
    int (*pair)[2];
    uint64_t live, nops, sleeps, msgs, busy, max_inflight;
} tiny;

typedef struct tiny_arg {
    tiny *T;
    unsigned id;
} tiny_arg;

static void *tiny_task(void *arg)
{
    tiny_arg a = *(tiny_arg *)arg;
    free(arg);
    tiny *T = a.T;
    uint64_t rs = seed_for(5000 + a.id);
    unsigned sock = T->npairs * 2;
    bool stop = false;
    for (uint64_t round = 0; !stop; round++) {
        stop = rf_now_ns() >= T->end;
        if (a.id < sock) {
            /* Ping-pong on pair id/2: side 0 sends, side 1 echoes. Both
             * sides agree on the number of rounds through the message. */
            int fd = T->pair[a.id / 2][a.id & 1];
            uint8_t m[16];
            if ((a.id & 1) == 0) {
                memset(m, (int)(round & 0xff), sizeof(m));
                m[0] = stop;
                ssize_t n = rf_send_all(fd, m, sizeof(m), 0, NULL);
                if (!CHECK(n == sizeof(m), "tinyring: send: %s",
                           rf_strerror((int)n)))
                    break;
                n = recv_full(fd, m, sizeof(m));
                if (!CHECK(n == sizeof(m), "tinyring: recv: %s",
                           rf_strerror((int)n)))
                    break;
                CHECK(m[1] == (uint8_t)~(round & 0xff), "tinyring: bad echo");
            } else {
                ssize_t n = recv_full(fd, m, sizeof(m));
                if (!CHECK(n == sizeof(m), "tinyring: recv: %s",
                           rf_strerror((int)n)))
                    break;
                CHECK(m[1] == (uint8_t)(round & 0xff), "tinyring: bad message");
                stop = m[0];
                m[1] = (uint8_t)~m[1];
                n = rf_send_all(fd, m, sizeof(m), 0, NULL);
                if (!CHECK(n == sizeof(m), "tinyring: send: %s",
                           rf_strerror((int)n)))
                    break;
            }
            T->msgs++;
        } else if (rnd_below(&rs, 2)) {
            int rc = rf_nop();
            if (rc == -EBUSY)
                T->busy++;
            else
                CHECK(rc == 0, "tinyring: nop: %s", rf_strerror(rc));
            T->nops++;
        } else {
            int rc = rf_sleep(rnd_below(&rs, 2000) * RF_NSEC_PER_USEC);
            if (rc == -EBUSY)
                T->busy++;
            else
                CHECK(rc == 0, "tinyring: sleep: %s", rf_strerror(rc));
            T->sleeps++;
        }
        if ((round & 15) == 0) {
            rf_stats st;
            rf_loop_stats(rf_loop_current(), &st);
            if (st.ops_in_flight > T->max_inflight)
                T->max_inflight = st.ops_in_flight;
        }
    }
    T->live--;
    return NULL;
}

static void *tiny_main(void *arg)
{
    tiny *T = arg;
    for (unsigned i = 0; i < T->n; i++) {
        tiny_arg *a = tmalloc(sizeof(*a));
        a->T = T;
        a->id = i;
        T->live++;
        rf_task *t = rf_spawn_opts(tiny_task, a,
                                   &(rf_spawn_options){.stack_size =
                                                           RF_MIN_STACK_SIZE});
        if (!CHECK(t != NULL, "tinyring: spawn: %s", strerror(errno))) {
            T->live--;
            free(a);
            continue;
        }
        rf_task_release(t);
    }
    wait_zero(&T->live, "tinyring tasks");
    return NULL;
}

static int scenario_tinyring(void)
{
    tiny T = {0};
    T.n = opt.tasks ? opt.tasks : default_tasks(10000);
    T.npairs = T.n / 10;
    if (!opt.sq)
        opt.sq = 4;
    if (!opt.cq)
        opt.cq = 8;
    T.pair = calloc(T.npairs ? T.npairs : 1, sizeof(*T.pair));
    int fds0 = count_fds();
    for (unsigned i = 0; i < T.npairs; i++)
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, T.pair[i]) < 0) {
            perror("socketpair");
            return 1;
        }
    uint64_t t0 = rf_now_ns();
    T.end = end_time();
    rf_loop *l = loop_new("tinyring");
    run_main(l, tiny_main, &T, "tinyring");
    loop_finish(l, "tinyring");
    for (unsigned i = 0; i < T.npairs; i++) {
        close(T.pair[i][0]);
        close(T.pair[i][1]);
    }
    free(T.pair);
    CHECK(count_fds() == fds0, "tinyring: %d fds at the end, %d at the start",
          count_fds(), fds0);
    CHECK(T.busy == 0, "tinyring: %" PRIu64 " calls refused with -EBUSY",
          T.busy);
    printf("tinyring: SQ %u / CQ %u, %u tasks, %" PRIu64 " nops, %" PRIu64
           " sleeps, %" PRIu64 " messages, %" PRIu64
           " max ops in flight, %" PRIu64 " EBUSY, %llu errors, %.1f s\n",
           opt.sq, opt.cq, T.n, T.nops, T.sleeps, T.msgs, T.max_inflight,
           T.busy, (unsigned long long)errors, elapsed_s(t0));
    return 0;
}

/* ------------------------------------------------------------------------ */
/* alloc: allocator fault injection                                         */
/* ------------------------------------------------------------------------ */

/*
 * The stress executable is linked with -Wl,--wrap=malloc,--wrap=calloc,
 * --wrap=realloc: every call the runtime's objects (linked statically into
 * this executable) and this file make goes through the wrappers below,
 * which call the real allocator (ASan's, in the ASan build: the wrapping
 * happens at link time, before ASan's interceptors). Failures are injected
 * only on a thread that switched them on, in a window, every Nth call.
 */


static bool fi_fail(void)
{
    if (!fi_on)
        return false;
    atomic_fetch_add(&fi_calls, 1);
    if (++fi_count % fi_every)
        return false;
    atomic_fetch_add(&fi_failed, 1);
    errno = ENOMEM;
    return true;
}

void *__wrap_malloc(size_t n);
void *__wrap_malloc(size_t n)
{
    return fi_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
    return fi_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n)
{
    return fi_fail() ? NULL : __real_realloc(p, n);
}

typedef struct fault {
    uint64_t rs;
    uint64_t enomem; /* failures that surfaced as ENOMEM */
    uint64_t ok;     /* calls that succeeded */
    uint64_t live;
    int spawned;          /* runs of the threadsafe spawn's task */
    uint64_t spawn_failed; /* threadsafe spawns the loop could not create */
} fault;

/* Every result of an allocating call is 0 (or a value) or -ENOMEM. */
static void fi_rc(fault *F, int rc, const char *what)
{
    if (rc >= 0)
        F->ok++;
    else if (CHECK(rc == -ENOMEM, "alloc: %s: %s", what, rf_strerror(rc)))
        F->enomem++;
}

static void *fi_child(void *arg)
{
    fault *F = arg;
    int rc = rf_sleep(rnd_below(&F->rs, 200) * RF_NSEC_PER_USEC);
    if (rc == -ECANCELED)
        rc = 0;
    fi_rc(F, rc, "sleep");
    rc = rf_deadline_set(rf_now_ns() + RF_NSEC_PER_MSEC);
    CHECK(rc == 0, "alloc: deadline_set: %s", rf_strerror(rc));
    rc = rf_sleep(2 * RF_NSEC_PER_MSEC);
    if (rc == -ETIMEDOUT || rc == -ECANCELED)
        rc = 0;
    fi_rc(F, rc, "sleep past the deadline");
    rf_deadline_set(0);
    F->live--;
    return NULL;
}

static void *fi_off(void *arg)
{
    return arg;
}

static void fi_call(void *arg)
{
    (*(int *)arg)++;
}

static void *fi_spawned(void *arg)
{
    ((fault *)arg)->spawned++;
    return NULL;
}

static void *fault_main(void *arg)
{
    fault *F = arg;
    rf_task *t[16];
    size_t n = 0;
    for (int i = 0; i < 16; i++) {
        F->live++;
        rf_task *c = rf_spawn(fi_child, F);
        if (!c) {
            F->live--;
            fi_rc(F, -errno, "spawn");
            continue;
        }
        t[n++] = c;
    }
    /* as_completed and wait over the children */
    if (n) {
        rf_as_completed ac;
        int rc = rf_as_completed_init(&ac, t, n);
        fi_rc(F, rc, "as_completed_init");
        if (rc == 0) {
            rf_task *d;
            int nrc = rf_as_completed_next(&ac, &d, NULL, NULL);
            CHECK(nrc == 1 || nrc == -ENOMEM, "alloc: as_completed_next: %s",
                  rf_strerror(nrc));
            rf_as_completed_fini(&ac);
        }
        size_t nd = 0;
        rc = rf_wait(t, n, RF_ALL_COMPLETED, 50 * RF_NSEC_PER_MSEC, NULL, &nd,
                     NULL, NULL);
        if (rc == -ETIMEDOUT || rc == -EBUSY)
            rc = 0;
        fi_rc(F, rc, "rf_wait");
    }
    /* a queue with its own storage */
    rf_queue q;
    int rc = rf_queue_init(&q, 8, NULL);
    fi_rc(F, rc, "queue_init");
    if (rc == 0) {
        rf_queue_try_put(&q, F);
        void *it;
        CHECK(rf_queue_try_get(&q, &it) == 0 && it == F, "alloc: queue");
        rf_queue_fini(&q);
    }
    /* a group */
    rf_group g;
    rf_group_init(&g);
    for (int i = 0; i < 4; i++) {
        F->live++;
        rf_task *m = rf_group_spawn(&g, fi_child, F, NULL);
        if (!m) {
            F->live--;
            fi_rc(F, -errno, "group_spawn");
        }
    }
    rc = rf_group_wait(&g);
    CHECK(rc == 0, "alloc: group_wait: %s", rf_strerror(rc));
    rf_group_fini(&g);
    /* offload: the default pool is created here, or fails */
    void *res = NULL;
    rc = rf_to_thread(fi_off, F, &res);
    fi_rc(F, rc, "to_thread");
    CHECK(rc != 0 || res == F, "alloc: to_thread result");
    /* a call from "another thread" (this one) */
    int called = 0;
    rc = rf_loop_call_threadsafe(rf_loop_current(), fi_call, &called);
    fi_rc(F, rc, "call_threadsafe");
    if (rc == 0) {
        for (int i = 0; i < 1000 && !called; i++)
            rf_sleep(RF_NSEC_PER_MSEC / 10);
        CHECK(called == 1, "alloc: call_threadsafe ran %d times", called);
    }
    /* a spawn from "another thread": it runs, or the loop's thread could
     * not create the task and counts that in spawn_failed; never both,
     * never neither */
    int spawned0 = F->spawned;
    rf_stats s0;
    rf_loop_stats(rf_loop_current(), &s0);
    rc = rf_loop_spawn_threadsafe(rf_loop_current(), fi_spawned, F, NULL);
    fi_rc(F, rc, "spawn_threadsafe");
    if (rc == 0) {
        rf_stats s1 = s0;
        for (int i = 0; i < 100000 && F->spawned == spawned0 &&
                        s1.spawn_failed == s0.spawn_failed; i++) {
            rf_sleep(RF_NSEC_PER_MSEC / 10);
            rf_loop_stats(rf_loop_current(), &s1);
        }
        uint64_t failed = s1.spawn_failed - s0.spawn_failed;
        CHECK((uint64_t)(F->spawned - spawned0) + failed == 1,
              "alloc: spawn_threadsafe ran %d times, %" PRIu64
              " failures counted", F->spawned - spawned0, failed);
        F->spawn_failed += failed;
    }
    /* the stall detector: its record and its watchdog thread */
    rc = rf_loop_stall_detector(rf_loop_current(), 10000, NULL, NULL);
    if (rc == -EAGAIN)
        rc = 0; /* no thread: not an allocation */
    fi_rc(F, rc, "stall_detector");
    rc = rf_loop_stall_detector(rf_loop_current(), 0, NULL, NULL);
    CHECK(rc == 0, "alloc: stall detector off: %s", rf_strerror(rc));
    /* an acceptor */
    int lfd;
    rc = rf_tcp_listen("127.0.0.1", 0, 4, &lfd);
    if (CHECK(rc == 0, "alloc: listen: %s", rf_strerror(rc))) {
        rf_acceptor *a = NULL;
        rc = rf_acceptor_open(lfd, SOCK_CLOEXEC, &a);
        fi_rc(F, rc, "acceptor_open");
        if (rc == 0)
            rf_acceptor_close(a);
        rf_close(lfd);
    }
    for (size_t i = 0; i < n; i++) {
        rf_join(t[i], NULL);
        rf_task_release(t[i]);
    }
    return NULL;
}

static int scenario_alloc(void)
{
    fault F = {0};
    F.rs = seed_for(6);
    int fds0 = count_fds();
    uint64_t t0 = rf_now_ns();
    uint64_t end = end_time();
    uint64_t rounds = 0, loops = 0;
    while (rf_now_ns() < end) {
        rounds++;
        fi_every = 1 + rnd_below(&F.rs, 60);
        fi_count = rnd_below(&F.rs, fi_every);
        rf_loop_opts o = {0};
        o.sq_entries = opt.sq;
        o.cq_entries = opt.cq;
        o.flags = RF_LOOP_QUIET;
        rf_loop *l = NULL;
        fi_on = true;
        int rc = rf_loop_new(&l, &o);
        fi_on = false;
        if (rc != 0) {
            fi_rc(&F, rc, "loop_new");
            continue;
        }
        loops++;
        rf_loop_set_pool_threads(l, 1);
        fi_on = true;
        rc = rf_loop_run_until_complete(l, fault_main, &F, NULL);
        fi_on = false;
        fi_rc(&F, rc, "run_until_complete");
        /* Whatever failed, the loop is whole: its tasks finish and it is
         * freed without anything left. */
        int frc = rf_loop_run_until_complete(l, drain_task, NULL, NULL);
        CHECK(frc == 0, "alloc: drain: %s", rf_strerror(frc));
        rf_stats st;
        rf_loop_stats(l, &st);
        if (rc == 0)
            CHECK(F.live == 0, "alloc: %" PRIu64 " children alive", F.live);
        F.live = 0;
        CHECK(st.tasks_alive == 0, "alloc: %" PRIu64 " tasks alive",
              st.tasks_alive);
        CHECK(st.ops_in_flight == 0, "alloc: %" PRIu64 " ops in flight",
              st.ops_in_flight);
        rc = rf_loop_free(l);
        CHECK(rc == 0, "alloc: rf_loop_free: %s", rf_strerror(rc));
        int fds = count_fds();
        if (!CHECK(fds == fds0, "alloc: round %" PRIu64
                                " (every %" PRIu64 "): %d fds, %d at the start",
                   rounds, fi_every, fds, fds0))
            break;
    }
    CHECK(atomic_load(&fi_failed) > 0, "alloc: no failure injected");
    printf("alloc: %" PRIu64 " rounds, %" PRIu64 " loops, %llu allocations, "
           "%llu failed, %" PRIu64 " ENOMEM surfaced, %" PRIu64
           " calls ok, %" PRIu64 " threadsafe spawns that failed on the "
           "loop's thread, %llu errors, %.1f s\n",
           rounds, loops, atomic_load(&fi_calls), atomic_load(&fi_failed),
           F.enomem, F.ok, F.spawn_failed, (unsigned long long)errors,
           elapsed_s(t0));
    return 0;
}

/* ------------------------------------------------------------------------ */
/* remote: calls and spawns from other threads, then a graceful shutdown    */
/* ------------------------------------------------------------------------ */

#define REMOTE_POSTERS 4
#define REMOTE_MAILBOX 4096

typedef struct remote {
    rf_loop *loop;
    atomic_bool ready, stop, returned, posters_joined;
    atomic_ullong calls_ok, spawns_ok, calls_ran, spawns_ran, refused;
    atomic_ullong full; /* -EAGAIN: the mailbox was full */
    uint64_t mail_refused; /* the loop's count of the same */
    atomic_ullong after_shutdown; /* calls accepted after the request */
    atomic_bool shutdown_requested;
    uint64_t end;
} remote;

static void remote_call(void *arg)
{
    remote *R = arg;
    atomic_fetch_add(&R->calls_ran, 1);
}

static void *remote_task(void *arg)
{
    remote *R = arg;
    atomic_fetch_add(&R->spawns_ran, 1);
    rf_sleep((rf_now_ns() & 0xff) * RF_NSEC_PER_USEC); /* cancelled late */
    return NULL;
}

static void *remote_poster(void *arg)
{
    remote *R = arg;
    static atomic_uint ids;
    uint64_t rs = seed_for(700 + atomic_fetch_add(&ids, 1));
    while (!atomic_load(&R->stop)) {
        /* Four threads post faster than one loop runs what they post: the
         * mailbox's bound (REMOTE_MAILBOX) is what holds them back. */
        bool shut = atomic_load(&R->shutdown_requested);
        int rc;
        if (rnd_below(&rs, 2)) {
            rc = rf_loop_call_threadsafe(R->loop, remote_call, R);
            if (rc == 0) {
                atomic_fetch_add(&R->calls_ok, 1);
                if (shut)
                    atomic_fetch_add(&R->after_shutdown, 1);
            }
        } else {
            rc = rf_loop_spawn_threadsafe(R->loop, remote_task, R, NULL);
            if (rc == 0)
                atomic_fetch_add(&R->spawns_ok, 1);
            CHECK(!(shut && rc == 0),
                  "remote: spawn accepted after the shutdown request");
        }
        if (rc == -ESHUTDOWN) {
            atomic_fetch_add(&R->refused, 1);
        } else if (rc == -EAGAIN) {
            atomic_fetch_add(&R->full, 1);
            sched_yield();
        } else {
            CHECK(rc == 0, "remote: %s", rf_strerror(rc));
        }
        if (rnd_below(&rs, 64) == 0)
            sched_yield();
    }
    return NULL;
}

static void *remote_loop_thread(void *arg)
{
    remote *R = arg;
    rf_loop_opts o = {0};
    o.flags = RF_LOOP_SERVE;
    o.sq_entries = opt.sq;
    o.cq_entries = opt.cq;
    o.mailbox_capacity = REMOTE_MAILBOX;
    int rc = rf_loop_new(&R->loop, &o);
    if (!CHECK(rc == 0, "remote: rf_loop_new: %s", rf_strerror(rc))) {
        atomic_store(&R->ready, true);
        return NULL;
    }
    atomic_store(&R->ready, true);
    rc = rf_loop_run_forever(R->loop);
    CHECK(rc == 0, "remote: run_forever: %s", rf_strerror(rc));
    atomic_store(&R->returned, true);
    while (!atomic_load(&R->posters_joined))
        sched_yield();
    rf_stats st;
    rf_loop_stats(R->loop, &st);
    CHECK(st.tasks_alive == 0, "remote: %" PRIu64 " tasks alive after the "
                               "shutdown", st.tasks_alive);
    R->mail_refused = st.mail_refused;
    /* The calls accepted since the loop returned run in rf_loop_free. */
    rc = rf_loop_free(R->loop);
    CHECK(rc == 0, "remote: rf_loop_free: %s", rf_strerror(rc));
    return NULL;
}

static int scenario_remote(void)
{
    static remote R;
    int fds0 = count_fds();
    uint64_t t0 = rf_now_ns();
    R.end = end_time();
    pthread_t lt, pt[REMOTE_POSTERS];
    pthread_create(&lt, NULL, remote_loop_thread, &R);
    while (!atomic_load(&R.ready))
        sched_yield();
    if (!R.loop)
        return 1;
    for (int i = 0; i < REMOTE_POSTERS; i++)
        pthread_create(&pt[i], NULL, remote_poster, &R);
    while (rf_now_ns() < R.end) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    /* A graceful shutdown while the posters go on: spawns are refused
     * from the request on, calls still accepted; the loop returns once
     * every task has returned (the grace cancels the sleepers). */
    int rc = rf_loop_shutdown_threadsafe(R.loop, 20 * RF_NSEC_PER_MSEC);
    CHECK(rc == 0, "remote: shutdown: %s", rf_strerror(rc));
    /* Said to the posters once the request is made, not before: a poster
     * that saw the flag set before it, then spawned in between, was
     * accepted, rightly, and counted as an error (seed 1, once). */
    atomic_store(&R.shutdown_requested, true);
    while (!atomic_load(&R.returned))
        sched_yield();
    /* The loop has returned; the posters still post (calls are queued for
     * rf_loop_free, spawns refused) until they are stopped: until they
     * have met the mailbox's bound, however long that takes them on a
     * busy machine (a fixed 5 ms here was sometimes too short under
     * load), and at most 30 s. */
    struct timespec ts = {0, 1000 * 1000};
    for (int i = 0; i < 30000 && atomic_load(&R.full) == 0; i++)
        nanosleep(&ts, NULL);
    atomic_store(&R.stop, true);
    for (int i = 0; i < REMOTE_POSTERS; i++)
        pthread_join(pt[i], NULL);
    atomic_store(&R.posters_joined, true);
    pthread_join(lt, NULL);
    CHECK(atomic_load(&R.calls_ran) == atomic_load(&R.calls_ok),
          "remote: %llu calls accepted, %llu ran", atomic_load(&R.calls_ok),
          atomic_load(&R.calls_ran));
    CHECK(atomic_load(&R.spawns_ran) == atomic_load(&R.spawns_ok),
          "remote: %llu spawns accepted, %llu ran", atomic_load(&R.spawns_ok),
          atomic_load(&R.spawns_ran));
    CHECK(count_fds() == fds0, "remote: %d fds at the end, %d at the start",
          count_fds(), fds0);
    CHECK(R.mail_refused == atomic_load(&R.full),
          "remote: the loop counted %" PRIu64 " refusals, the posters %llu",
          R.mail_refused, atomic_load(&R.full));
    /* After the loop returned, nothing drains: the posters filled the
     * mailbox and were held back there, not grown without bound. */
    CHECK(atomic_load(&R.full) > 0, "remote: the mailbox was never full");
    printf("remote: %llu calls, %llu spawns from %d threads, %llu calls "
           "accepted after the shutdown request, %llu refused, %llu held back "
           "by the mailbox (%d), %llu errors, %.1f s\n",
           atomic_load(&R.calls_ok), atomic_load(&R.spawns_ok), REMOTE_POSTERS,
           atomic_load(&R.after_shutdown), atomic_load(&R.refused),
           atomic_load(&R.full), REMOTE_MAILBOX, (unsigned long long)errors,
           elapsed_s(t0));
    return 0;
}

/* ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    int (*fn)(void);
} scenarios[] = {
    {"churn", scenario_churn},       {"cancel", scenario_cancel},
    {"sleepers", scenario_sleepers}, {"offload", scenario_offload},
    {"tinyring", scenario_tinyring}, {"alloc", scenario_alloc},
    {"remote", scenario_remote},
};

/* A scenario that does not end within --seconds + 60 s hangs: say so and
 * how to reproduce it, rather than leave it to CTest's timeout. */
static char hang_msg[256];

static void on_alarm(int sig)
{
    (void)sig;
    ssize_t n = write(2, hang_msg, strlen(hang_msg));
    (void)n;
    _exit(1);
}

static int usage(void)
{
    fprintf(stderr, "usage: rf_stress <scenario> [--seconds S] [--seed N] "
                    "[--tasks N] [--sq N] [--cq N] [--fail-every N] "
                    "[--hang-after S]\nscenarios:");
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
        fprintf(stderr, " %s", scenarios[i].name);
    fputc('\n', stderr);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage();
        char *e;
        if (!strcmp(a, "--seconds"))
            opt.seconds = strtod(v, &e);
        else if (!strcmp(a, "--seed"))
            opt.seed = strtoull(v, &e, 0);
        else if (!strcmp(a, "--tasks"))
            opt.tasks = (unsigned)strtoul(v, &e, 0);
        else if (!strcmp(a, "--sq"))
            opt.sq = (unsigned)strtoul(v, &e, 0);
        else if (!strcmp(a, "--cq"))
            opt.cq = (unsigned)strtoul(v, &e, 0);
        else if (!strcmp(a, "--fail-every"))
            opt.fail_every = (unsigned)strtoul(v, &e, 0);
        else if (!strcmp(a, "--hang-after"))
            opt.hang_after = strtod(v, &e);
        else
            return usage();
        if (*e || e == v)
            return usage();
        i++;
    }
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
        if (strcmp(argv[1], scenarios[i].name))
            continue;
        /* A shaken schedule (docs/shuffle.md) is part of what reproduces
         * a failure: its seed goes into every line that says how. */
        const char *shuffle = getenv("RINGFIBER_SHUFFLE_SEED");
        char env[64] = "";
        if (shuffle && *shuffle)
            snprintf(env, sizeof env, "RINGFIBER_SHUFFLE_SEED=%s ", shuffle);
        fprintf(stderr, "%s: %s--seconds %g --seed %" PRIu64 "\n", argv[1],
                env, opt.seconds, opt.seed);
        snprintf(hang_msg, sizeof(hang_msg),
                 "%s: HUNG (not done %g s after its end); reproduce with: "
                 "%srf_stress %s --seconds %g --seed %" PRIu64 "\n",
                 argv[1], opt.hang_after, env, argv[1], opt.seconds,
                 opt.seed);
        signal(SIGALRM, on_alarm);
        alarm((unsigned)(opt.seconds + opt.hang_after));
        int rc = scenarios[i].fn();
        if (rc == 0 && errors)
            rc = 1;
        if (rc)
            fprintf(stderr, "%s: FAILED (%llu errors; reproduce with: "
                            "%srf_stress %s --seconds %g --seed %" PRIu64 ")\n",
                    argv[1], (unsigned long long)errors, env, argv[1],
                    opt.seconds, opt.seed);
        return rc;
    }
    return usage();
}
