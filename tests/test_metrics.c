/*
 * Metrics: the counters move with the work (bytes, operations by kind,
 * idle time, offloaded calls, the scheduling-delay histogram), read from
 * the loop and from a monitoring thread, and the Prometheus text is
 * well formed.
 */
#include "helpers.h"

#include <liburing.h>
#include <pthread.h>
#include <sys/socket.h>

static rf_loop_metrics metrics_now(void)
{
    rf_loop_metrics m;
    RFT_CHECK_INT(rf_loop_metrics_threadsafe(rf_loop_current(), &m), 0);
    return m;
}

static void *echo_peer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[256];
    ssize_t n;
    while ((n = rf_recv(fd, buf, sizeof buf, 0)) > 0)
        rf_send_all(fd, buf, (size_t)n, 0, NULL);
    return NULL;
}

static void *nap(void *arg)
{
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return arg;
}

static void *counters_main(void *arg)
{
    (void)arg;
    int sv[2];
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    rf_task *peer = rf_spawn(echo_peer, (void *)(intptr_t)sv[1]);
    rf_loop_metrics a = metrics_now();
    enum { N = 10, LEN = 100 };
    char msg[LEN], back[LEN];
    memset(msg, 'm', sizeof msg);
    for (int i = 0; i < N; i++) {
        RFT_CHECK_INT(rf_send_all(sv[0], msg, LEN, 0, NULL), LEN);
        RFT_CHECK_INT(rf_read_full(sv[0], back, LEN, -1, NULL), LEN);
    }
    rf_loop_metrics b = metrics_now();
    /* Both sides: this task sent and read N * LEN, the peer as much. */
    RFT_CHECK_INT(b.bytes_written - a.bytes_written, 2 * N * LEN);
    RFT_CHECK_INT(b.bytes_read - a.bytes_read, 2 * N * LEN);
    RFT_CHECK(b.ops_completed[IORING_OP_SEND] - a.ops_completed[IORING_OP_SEND] >= 2 * N);
    RFT_CHECK(b.ops_completed[IORING_OP_RECV] - a.ops_completed[IORING_OP_RECV] >= N);
    RFT_CHECK(b.ops_completed[IORING_OP_READ] - a.ops_completed[IORING_OP_READ] >= N);
    RFT_CHECK(b.stats.switches > a.stats.switches);
    /* Waiting 200 ms for a thread, with nothing else to do, is a sleep in
     * the ring: idle. (A timer that short may have expired by the time a
     * preempted loop would sleep for it; a thread's answer cannot.) */
    RFT_CHECK_INT(rf_to_thread(nap, NULL, NULL), 0);
    rf_loop_metrics c = metrics_now();
    RFT_CHECK(c.idle_ns > b.idle_ns);
    RFT_CHECK(!b.sched_delay_on);
    RFT_CHECK_INT(b.sched_delay_count, 0);
    close(sv[0]);
    rf_join(peer, NULL);
    rf_task_release(peer);
    close(sv[1]);
    return NULL;
}

static void test_counters_move(void **state)
{
    (void)state;
    rft_run(counters_main, NULL);
}

/* ---- offloaded calls ---- */

typedef struct off {
    int rd, wr;
} off;

static void *blocking(void *arg)
{
    off *o = arg;
    char c;
    return (void *)(intptr_t)read(o->rd, &c, 1);
}

static void *offloader(void *arg)
{
    void *r;
    RFT_CHECK_INT(rf_to_thread(blocking, arg, &r), 0);
    return r;
}

static void *offload_main(void *arg)
{
    (void)arg;
    off o;
    int p[2];
    RFT_CHECK_INT(pipe(p), 0);
    o.rd = p[0];
    o.wr = p[1];
    rf_loop_metrics a = metrics_now();
    rf_task *t = rf_spawn(offloader, &o);
    rf_yield(); /* it hands its call to the pool */
    rf_loop_metrics mid = metrics_now();
    RFT_CHECK_INT(mid.offload_in_flight, 1);
    RFT_CHECK_INT(write(o.wr, "x", 1), 1);
    void *r;
    rf_join(t, &r);
    RFT_CHECK_INT((intptr_t)r, 1);
    rf_task_release(t);
    rf_loop_metrics b = metrics_now();
    RFT_CHECK_INT(b.offload_in_flight, 0);
    RFT_CHECK_INT(b.offload_calls - a.offload_calls, 1);
    close(p[0]);
    close(p[1]);
    return NULL;
}

static void test_offload_counted(void **state)
{
    (void)state;
    rft_run(offload_main, NULL);
}

/* ---- scheduling delay ---- */

static void *yielder(void *arg)
{
    for (int i = 0; i < 100; i++)
        rf_yield();
    return arg;
}

static void *delay_main(void *arg)
{
    (void)arg;
    rf_loop_metrics a = metrics_now();
    RFT_CHECK(a.sched_delay_on);
    rf_task *t[4];
    for (int i = 0; i < 4; i++)
        t[i] = rf_spawn(yielder, NULL);
    rf_sleep(RFT_MS); /* a wake from a completion too */
    RFT_CHECK_INT(rf_gather(t, 4, NULL), 0);
    for (int i = 0; i < 4; i++)
        rf_task_release(t[i]);
    rf_loop_metrics b = metrics_now();
    /* Every run of a task is one delay measured: 4 x 101 runs at least. */
    RFT_CHECK(b.sched_delay_count - a.sched_delay_count >= 4 * 101);
    uint64_t sum = 0;
    for (unsigned i = 0; i < RF_DELAY_BUCKETS; i++)
        sum += b.sched_delay_buckets[i];
    RFT_CHECK_INT(sum, b.sched_delay_count);
    RFT_CHECK(b.sched_delay_max_ns * b.sched_delay_count >= b.sched_delay_sum_ns);
    return NULL;
}

static void test_sched_delay_histogram(void **state)
{
    (void)state;
    rf_loop_opts o = {.flags = RF_LOOP_SCHED_DELAY};
    rft_begin();
    assert_int_equal(rf_run_opts(delay_main, NULL, NULL, &o), 0);
    rft_end();
}

/* ---- from a monitoring thread ---- */

typedef struct mon {
    rf_loop *loop;
    volatile int stop;
    unsigned reads;
    bool bad;
} mon;

static void *monitor(void *arg)
{
    mon *m = arg;
    uint64_t last = 0;
    char *buf = malloc(1 << 16);
    while (!__atomic_load_n(&m->stop, __ATOMIC_ACQUIRE)) {
        rf_loop *l = __atomic_load_n(&m->loop, __ATOMIC_ACQUIRE);
        if (l) {
            rf_loop_metrics x;
            rf_loop_metrics_threadsafe(l, &x);
            if (x.stats.switches < last)
                m->bad = true; /* a counter went back */
            last = x.stats.switches;
            int n = rf_metrics_format(buf, 1 << 16);
            if (n <= 0 || n >= (1 << 16) ||
                !strstr(buf, "ringfiber_switches_total{loop="))
                m->bad = true;
            m->reads++;
        }
        usleep(500);
    }
    free(buf);
    return NULL;
}

static void *monitored_main(void *arg)
{
    mon *m = arg;
    __atomic_store_n(&m->loop, rf_loop_current(), __ATOMIC_RELEASE);
    for (int round = 0; round < 50; round++) {
        rf_task *t[8];
        for (int i = 0; i < 8; i++)
            t[i] = rf_spawn(yielder, NULL);
        rf_sleep(RFT_MS);
        rf_gather(t, 8, NULL);
        for (int i = 0; i < 8; i++)
            rf_task_release(t[i]);
    }
    __atomic_store_n(&m->loop, NULL, __ATOMIC_RELEASE);
    return NULL;
}

static void test_metrics_from_monitor_thread(void **state)
{
    (void)state;
    mon m = {0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, monitor, &m), 0);
    rf_loop_opts o = {.flags = RF_LOOP_SCHED_DELAY};
    rft_begin();
    assert_int_equal(rf_run_opts(monitored_main, &m, NULL, &o), 0);
    rft_end();
    __atomic_store_n(&m.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    assert_false(m.bad);
}

/* ---- the Prometheus text ---- */

/* Every sample line is name{labels} value, its name announced by a TYPE
 * line before it (a histogram's _bucket/_sum/_count by its own). */
static void check_exposition(const char *text)
{
    char typed[64][96];
    int ntyped = 0;
    const char *p = text;
    int samples = 0;
    while (*p) {
        const char *eol = strchr(p, '\n');
        assert_non_null(eol); /* every line ends */
        char line[512];
        size_t n = (size_t)(eol - p);
        assert_true(n < sizeof line);
        memcpy(line, p, n);
        line[n] = '\0';
        p = eol + 1;
        char name[96], type[32];
        if (sscanf(line, "# TYPE %95s %31s", name, type) == 2) {
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            assert_true(ntyped < 64);
            strcpy(typed[ntyped++], name);
            continue;
        }
        if (line[0] == '#') {
            assert_int_equal(strncmp(line, "# HELP ringfiber_", 17), 0);
            continue;
        }
        char *brace = strchr(line, '{');
        char *close = strchr(line, '}');
        assert_non_null(brace);
        assert_non_null(close);
        assert_true(close[1] == ' ');
        *brace = '\0';
        bool known = false;
        for (int i = 0; i < ntyped; i++) {
            size_t tl = strlen(typed[i]);
            if (strncmp(line, typed[i], tl) == 0 &&
                (line[tl] == '\0' || strcmp(line + tl, "_bucket") == 0 ||
                 strcmp(line + tl, "_sum") == 0 || strcmp(line + tl, "_count") == 0))
                known = true;
        }
        assert_true(known);
        assert_non_null(strstr(brace + 1, "loop=\""));
        char *end;
        strtod(close + 2, &end);
        assert_true(*end == '\0' && end != close + 2);
        samples++;
    }
    assert_true(samples > 0);
}

static void *format_main(void *arg)
{
    (void)arg;
    rf_sleep(RFT_MS);
    RFT_CHECK_INT(rf_nop(), 0);
    rf_yield();
    return NULL;
}

static void test_prometheus_text(void **state)
{
    (void)state;
    rf_loop_opts o = {.flags = RF_LOOP_SCHED_DELAY};
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, &o), 0);
    assert_int_equal(rf_loop_run_until_complete(l, format_main, NULL, NULL), 0);
    int n = rf_metrics_format(NULL, 0);
    assert_true(n > 0);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(rf_metrics_format(buf, (size_t)n + 1), n);
    assert_int_equal(strlen(buf), n);
    printf("%s", buf);
    check_exposition(buf);
    assert_non_null(strstr(buf, ",op=\"nop\"} 1\n"));
    assert_non_null(strstr(buf, "ringfiber_sched_delay_seconds_bucket{loop=\""));
    assert_non_null(strstr(buf, "le=\"+Inf\"}"));
    /* Too small a buffer: terminated, and the whole length returned. */
    char small[10];
    assert_int_equal(rf_metrics_format(small, sizeof small), n);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_int_equal(rf_metrics_format(NULL, 5), -EINVAL);
    free(buf);
    assert_int_equal(rf_loop_free(l), 0);
    /* A freed loop is no longer listed: the HELP and TYPE lines alone. */
    n = rf_metrics_format(NULL, 0);
    buf = malloc((size_t)n + 1);
    assert_int_equal(rf_metrics_format(buf, (size_t)n + 1), n);
    assert_non_null(strstr(buf, "# TYPE ringfiber_switches_total counter"));
    assert_null(strstr(buf, "{loop="));
    free(buf);
    rf_loop_metrics m;
    assert_int_equal(rf_loop_metrics_threadsafe(NULL, &m), -EINVAL);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_counters_move),
    cmocka_unit_test(test_offload_counted),
    cmocka_unit_test(test_sched_delay_histogram),
    cmocka_unit_test(test_metrics_from_monitor_thread),
    cmocka_unit_test(test_prometheus_text),
};

RFT_MAIN(tests)
