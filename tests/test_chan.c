/*
 * Channels between loops (rf_chan_*): order per sender, nothing lost or
 * duplicated, backpressure, close, cancellation and deadlines of senders
 * and receivers, misuse. The storms run over 2 and 4 loops.
 */
#include <pthread.h>
#include <sched.h>

#include "helpers.h"

/* ---- one loop ------------------------------------------------------------- */

static void *basics(void *arg)
{
    (void)arg;
    rf_chan *ch;
    RFT_CHECK_INT(rf_chan_new(&ch, 3), 0); /* rounded up to 4 */
    for (intptr_t i = 0; i < 4; i++)
        RFT_CHECK_INT(rf_chan_try_send(ch, (void *)(i + 1)), 0);
    RFT_CHECK_INT(rf_chan_try_send(ch, (void *)9), -EAGAIN);
    void *v;
    for (intptr_t i = 0; i < 4; i++) {
        RFT_CHECK_INT(rf_chan_recv(ch, &v), 0);
        RFT_CHECK_INT((intptr_t)v, i + 1);
    }
    RFT_CHECK_INT(rf_chan_try_recv(ch, &v), -EAGAIN);
    RFT_CHECK_INT(rf_chan_send(ch, (void *)7), 0);
    RFT_CHECK_INT(rf_chan_close(ch), 0);
    RFT_CHECK_INT(rf_chan_close(ch), 0);
    RFT_CHECK_INT(rf_chan_try_send(ch, (void *)8), -EPIPE);
    RFT_CHECK_INT(rf_chan_send(ch, (void *)8), -EPIPE);
    RFT_CHECK_INT(rf_chan_recv(ch, &v), 0); /* what was left */
    RFT_CHECK_INT((intptr_t)v, 7);
    RFT_CHECK_INT(rf_chan_recv(ch, &v), -EPIPE);
    RFT_CHECK_INT(rf_chan_try_recv(ch, &v), -EPIPE);
    RFT_CHECK_INT(rf_chan_free(ch), 0);
    return NULL;
}

static void test_basics(void **state) { rft_run(basics, NULL); }

static void *misuse(void *arg)
{
    (void)arg;
    rf_chan *ch = (rf_chan *)&ch;
    RFT_CHECK_INT(rf_chan_new(NULL, 4), -EINVAL);
    RFT_CHECK_INT(rf_chan_new(&ch, 0), -EINVAL);
    RFT_CHECK(ch == NULL);
    RFT_CHECK_INT(rf_chan_new(&ch, (size_t)RF_CHAN_MAX + 1), -EINVAL);
    RFT_CHECK_INT(rf_chan_send(NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_chan_try_send(NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_chan_recv(NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_chan_try_recv(NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_chan_close(NULL), -EINVAL);
    RFT_CHECK_INT(rf_chan_free(NULL), 0);
    RFT_CHECK_INT(rf_chan_new(&ch, 1), 0);
    RFT_CHECK_INT(rf_chan_recv(ch, NULL), -EINVAL);
    RFT_CHECK_INT(rf_chan_free(ch), 0);
    return NULL;
}

static void test_misuse(void **state)
{
    rf_chan *ch;
    assert_int_equal(rf_chan_new(&ch, 4), -EPERM); /* no loop here */
    rft_run(misuse, NULL);
}

/* A receiver that waits, cancelled or past its deadline; a deadline that
 * does not come. */
static void *receiver(void *arg)
{
    void *v = NULL;
    int rc = rf_chan_recv(arg, &v);
    return rc ? RF_ERR_PTR(rc) : v;
}

static void *recv_waits(void *arg)
{
    (void)arg;
    rf_chan *ch;
    RFT_CHECK_INT(rf_chan_new(&ch, 2), 0);
    rf_task *r = rf_spawn(receiver, ch);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(rf_cancel(r), 0);
    void *res;
    RFT_CHECK_INT(rf_join(r, &res), -ECANCELED);
    RFT_CHECK_INT((intptr_t)res, -ECANCELED);
    rf_task_release(r);
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() + 5 * RFT_MS), 0);
    void *v;
    RFT_CHECK_INT(rf_chan_recv(ch, &v), -ETIMEDOUT);
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    /* A receiver that waits gets what is sent after. */
    r = rf_spawn(receiver, ch);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(rf_chan_send(ch, (void *)42), 0);
    RFT_CHECK_INT(rf_join(r, &res), 0);
    RFT_CHECK_INT((intptr_t)res, 42);
    rf_task_release(r);
    /* Close wakes a waiting receiver. */
    r = rf_spawn(receiver, ch);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    RFT_CHECK_INT(rf_chan_close(ch), 0);
    RFT_CHECK_INT(rf_join(r, &res), 0);
    RFT_CHECK_INT((intptr_t)res, -EPIPE);
    rf_task_release(r);
    RFT_CHECK_INT(rf_chan_free(ch), 0);
    return NULL;
}

static void test_receiver_waits(void **state) { rft_run(recv_waits, NULL); }

/* ---- across loops --------------------------------------------------------- */

/* Loop 0 creates the channel and receives; the other loops send. */
static rf_chan *g_ch;
static int g_per;          /* items per sender */
static size_t g_capacity;
static int g_received;

static void *stream_entry(void *arg)
{
    (void)arg;
    rf_loops *ls = rf_loops_current();
    int n = (int)rf_loops_count(ls), me = rf_loop_index();
    if (me == 0) {
        rf_chan *ch;
        RFT_CHECK_INT(rf_chan_new(&ch, g_capacity), 0);
        __atomic_store_n(&g_ch, ch, __ATOMIC_RELEASE);
        int *next = calloc((size_t)n, sizeof *next);
        int total = (n - 1) * g_per, got = 0;
        while (got < total) {
            void *v;
            int rc = rf_chan_recv(ch, &v);
            if (!RFT_CHECK_INT(rc, 0))
                break;
            intptr_t x = (intptr_t)v;
            int from = (int)(x >> 32), seq = (int)(x & 0xffffffff);
            /* In order per sender: nothing lost, nothing twice. */
            if (!RFT_CHECK(from > 0 && from < n && seq == next[from]))
                break;
            next[from]++;
            got++;
        }
        g_received = got;
        free(next);
        void *v;
        RFT_CHECK_INT(rf_chan_try_recv(ch, &v), -EAGAIN);
        RFT_CHECK_INT(rf_chan_close(ch), 0);
        RFT_CHECK_INT(rf_chan_recv(ch, &v), -EPIPE);
        RFT_CHECK_INT(rf_chan_free(ch), 0);
        return NULL;
    }
    rf_chan *ch;
    while (!(ch = __atomic_load_n(&g_ch, __ATOMIC_ACQUIRE)))
        rf_sleep(RFT_MS / 10);
    /* (Before the last send: then the receiver may free the channel.) */
    void *v;
    RFT_CHECK_INT(rf_chan_recv(ch, &v), -EXDEV); /* not its loop */
    RFT_CHECK_INT(rf_chan_try_recv(ch, &v), -EXDEV);
    for (int i = 0; i < g_per; i++) {
        intptr_t x = ((intptr_t)me << 32) | i;
        if (!RFT_CHECK_INT(rf_chan_send(ch, (void *)x), 0))
            break;
    }
    return NULL;
}

static void stream_flags(unsigned loops, int total, size_t capacity,
                         unsigned loop_flags)
{
    g_ch = NULL;
    g_per = total / (int)(loops - 1);
    g_capacity = capacity;
    g_received = 0;
    rft_run_loops(stream_entry, NULL, loops, loop_flags);
    assert_int_equal(g_received, g_per * (int)(loops - 1));
}

static void stream(unsigned loops, int total, size_t capacity)
{
    stream_flags(loops, total, capacity, 0);
}

/* 1,000,000 messages (fewer under the sanitizers, which are 10-50 times
 * slower), through a small channel: backpressure all the time. */
static int storm_total(void) { return RFT_ASAN || RFT_TSAN ? 100000 : 1000000; }

static void test_storm_2_loops(void **state) { stream(2, storm_total(), 256); }
static void test_storm_4_loops(void **state) { stream(4, storm_total(), 64); }
/* The same with the loops woken through IORING_OP_MSG_RING. */
static void test_storm_4_loops_msg_ring(void **state)
{
    stream_flags(4, storm_total() / 4, 64, RF_LOOP_WAKE_MSG_RING);
}
/* The smallest channel (2 cells): senders wait nearly all the time. */
static void test_capacity_one(void **state) { stream(3, 20000, 1); }

/* A sender that waits for room, cancelled or closed on. */
static void *sender(void *arg)
{
    return (void *)(intptr_t)rf_chan_send(arg, (void *)1);
}

static void *full_entry(void *arg)
{
    (void)arg;
    int me = rf_loop_index();
    if (me == 0) {
        rf_chan *ch;
        RFT_CHECK_INT(rf_chan_new(&ch, 1), 0); /* 2 cells */
        RFT_CHECK_INT(rf_chan_try_send(ch, (void *)4), 0);
        RFT_CHECK_INT(rf_chan_try_send(ch, (void *)5), 0); /* full */
        RFT_CHECK_INT(rf_chan_try_send(ch, (void *)6), -EAGAIN);
        __atomic_store_n(&g_ch, ch, __ATOMIC_RELEASE);
        /* Wait until loop 1 says its senders are done. */
        while (__atomic_load_n(&g_received, __ATOMIC_ACQUIRE) == 0)
            rf_sleep(RFT_MS);
        void *v;
        RFT_CHECK_INT(rf_chan_recv(ch, &v), 0);
        RFT_CHECK_INT((intptr_t)v, 4);
        RFT_CHECK_INT(rf_chan_recv(ch, &v), 0);
        RFT_CHECK_INT((intptr_t)v, 5);
        RFT_CHECK_INT(rf_chan_try_recv(ch, &v), -EPIPE); /* nothing else */
        RFT_CHECK_INT(rf_chan_free(ch), 0);
        return NULL;
    }
    rf_chan *ch;
    while (!(ch = __atomic_load_n(&g_ch, __ATOMIC_ACQUIRE)))
        rf_sleep(RFT_MS / 10);
    /* Cancelled while it waits for room: not sent. */
    rf_task *s = rf_spawn(sender, ch);
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0);
    RFT_CHECK(!rf_done(s));
    RFT_CHECK_INT(rf_cancel(s), 0);
    void *res;
    RFT_CHECK_INT(rf_join(s, &res), -ECANCELED);
    RFT_CHECK_INT((intptr_t)res, -ECANCELED);
    rf_task_release(s);
    /* Past its deadline while it waits: not sent. */
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() + 5 * RFT_MS), 0);
    RFT_CHECK_INT(rf_chan_send(ch, (void *)6), -ETIMEDOUT);
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    /* Closed while it waits: -EPIPE. */
    s = rf_spawn(sender, ch);
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0);
    RFT_CHECK_INT(rf_chan_close(ch), 0);
    RFT_CHECK_INT(rf_join(s, &res), 0);
    RFT_CHECK_INT((intptr_t)res, -EPIPE);
    rf_task_release(s);
    __atomic_store_n(&g_received, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_full_channel_senders(void **state)
{
    g_ch = NULL;
    g_received = 0;
    rft_run_loops(full_entry, NULL, 2, 0);
}

/*
 * A loop that dies mid-storm: loops 1..3 send to loop 0's channel as fast
 * as they can (and spawn and join tasks on each other), until the loop
 * g_dying fails (returns RF_ERR_PTR(-EIO)) and the group cancels the
 * others. Nothing vanishes: every send that returned 0 is received, once,
 * in its sender's order, and every other send returned an error (-EPIPE:
 * closed; -ECANCELED). The receiver, cancelled or dying, closes its
 * channel, takes in what is left, and frees it once no loop sends.
 */
static unsigned g_dying;
static uint64_t g_sent_ok, g_got;
static unsigned g_senders_done;
static uint64_t g_next_seq[8];

static void *echo_index(void *arg) { return arg; }

static void *senders_done(void *arg)
{
    unsigned senders = (unsigned)(uintptr_t)arg;
    while (__atomic_load_n(&g_senders_done, __ATOMIC_ACQUIRE) < senders)
        if (!RFT_CHECK_INT(rf_sleep(RFT_MS / 10), 0))
            break;
    return NULL;
}

static bool take(void *v)
{
    uintptr_t x = (uintptr_t)v;
    unsigned from = (unsigned)(x >> 32);
    uint64_t seq = x & 0xffffffffu;
    if (!RFT_CHECK(from > 0 && from < 8 && seq == g_next_seq[from]))
        return false;
    g_next_seq[from]++;
    g_got++;
    return true;
}

static void *dies_entry(void *arg)
{
    (void)arg;
    rf_loops *ls = rf_loops_current();
    unsigned n = rf_loops_count(ls), me = (unsigned)rf_loop_index();
    if (me == 0) {
        rf_chan *ch;
        RFT_CHECK_INT(rf_chan_new(&ch, 64), 0);
        __atomic_store_n(&g_ch, ch, __ATOMIC_RELEASE);
        void *v;
        int rc;
        while ((rc = rf_chan_recv(ch, &v)) == 0)
            if (!take(v) || (g_dying == 0 && g_got == 20000))
                break;
        RFT_CHECK(rc == 0 || rc == -ECANCELED);
        RFT_CHECK_INT(rf_chan_close(ch), 0);
        /* Every sender ends (refused from now on); then what they put in
         * before the close is all there. Cancelled, this task waits in a
         * task that is not. */
        rf_task *w = rf_spawn(senders_done, (void *)(uintptr_t)(n - 1));
        RFT_CHECK_INT(rf_join_nocancel(w, NULL), 0);
        rf_task_release(w);
        while ((rc = rf_chan_try_recv(ch, &v)) == 0)
            take(v);
        RFT_CHECK_INT(rc, -EPIPE);
        RFT_CHECK_INT(rf_chan_free(ch), 0);
        return g_dying == 0 ? RF_ERR_PTR(-EIO) : NULL;
    }
    rf_chan *ch;
    while (!(ch = __atomic_load_n(&g_ch, __ATOMIC_ACQUIRE)))
        rf_sleep(RFT_MS / 10);
    rf_loop *next = rf_loops_loop(ls, me % (n - 1) + 1);
    uint64_t ok = 0;
    int rc;
    for (;;) {
        rc = rf_chan_send(ch, (void *)(((uintptr_t)me << 32) | ok));
        if (rc != 0)
            break;
        if (++ok == 5000 && me == g_dying)
            break;
        if (ok % 256 == 0) { /* a spawn and a join in flight too */
            rf_task *t = rf_spawn_on(next, echo_index, (void *)(uintptr_t)ok,
                                     NULL);
            if (t) {
                void *res = NULL;
                int jrc = rf_join(t, &res);
                RFT_CHECK(jrc == 0 ? (uintptr_t)res == ok
                                   : jrc == -ECANCELED);
                rf_task_release(t);
            }
        }
    }
    RFT_CHECK(rc == 0 || rc == -EPIPE || rc == -ECANCELED);
    __atomic_add_fetch(&g_sent_ok, ok, __ATOMIC_RELAXED);
    __atomic_add_fetch(&g_senders_done, 1, __ATOMIC_RELEASE);
    return me == g_dying ? RF_ERR_PTR(-EIO) : NULL;
}

static void loop_dies(unsigned dying)
{
    g_ch = NULL;
    g_dying = dying;
    g_sent_ok = g_got = 0;
    g_senders_done = 0;
    memset(g_next_seq, 0, sizeof g_next_seq);
    rft_begin();
    rf_loops_opts o = {.loops = 4};
    int failed = -1;
    assert_int_equal(rf_run_loops(dies_entry, NULL, &o, NULL, &failed), -EIO);
    rft_end();
    assert_int_equal(failed, (int)dying);
    assert_true(g_sent_ok > 0);
    assert_int_equal(g_got, g_sent_ok);
}

static void test_receiver_dies_mid_storm(void **state) { loop_dies(0); }
static void test_sender_dies_mid_storm(void **state) { loop_dies(2); }

/* From a plain thread: try_send, never waiting. */
static void *plain_sender(void *arg)
{
    rf_chan *ch = arg;
    for (intptr_t i = 0; i < 1000;) {
        int rc = rf_chan_try_send(ch, (void *)(i + 1));
        if (rc == -EAGAIN) {
            sched_yield();
            continue;
        }
        if (rc != 0)
            return (void *)(intptr_t)rc;
        i++;
    }
    return NULL;
}

static void *thread_sender_body(void *arg)
{
    (void)arg;
    rf_chan *ch;
    RFT_CHECK_INT(rf_chan_new(&ch, 8), 0);
    pthread_t th;
    RFT_CHECK_INT(pthread_create(&th, NULL, plain_sender, ch), 0);
    for (intptr_t i = 0; i < 1000; i++) {
        void *v;
        RFT_CHECK_INT(rf_chan_recv(ch, &v), 0);
        RFT_CHECK_INT((intptr_t)v, i + 1);
    }
    void *rc;
    pthread_join(th, &rc);
    RFT_CHECK(rc == NULL);
    RFT_CHECK_INT(rf_chan_free(ch), 0);
    return NULL;
}

static void test_sender_thread(void **state) { rft_run(thread_sender_body, NULL); }

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_basics),
    cmocka_unit_test(test_misuse),
    cmocka_unit_test(test_receiver_waits),
    cmocka_unit_test(test_storm_2_loops),
    cmocka_unit_test(test_storm_4_loops),
    cmocka_unit_test(test_storm_4_loops_msg_ring),
    cmocka_unit_test(test_capacity_one),
    cmocka_unit_test(test_receiver_dies_mid_storm),
    cmocka_unit_test(test_sender_dies_mid_storm),
    cmocka_unit_test(test_full_channel_senders),
    cmocka_unit_test(test_sender_thread),
};

RFT_MAIN(tests)
