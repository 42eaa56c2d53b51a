/*
 * Embedding: a loop on a thread of its own fed by other threads
 * (spawn/call/stop/shutdown _threadsafe), and a loop driven by an outside
 * poll(2) loop (rf_loop_fd + rf_loop_run_once).
 *
 * Threads other than the loop's own report through atomics, never through
 * RFT_CHECK (its counter belongs to the loop's thread); the main thread
 * asserts after joining them.
 */
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>

#include "helpers.h"
/* White box: the graceful shutdown's contract with the accept calls
 * (t->in_accept, l->accept_stopped) is emulated by a task below. */
#include "../runtime/internal.h"

#define BOUND_NS (30 * RFT_SEC) /* against hangs only */

static uint64_t load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void add64(uint64_t *p, uint64_t v) { __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL); }

/* ---- a loop on a thread of its own ---------------------------------------- */

typedef struct server {
    pthread_t th;
    sem_t ready;
    sem_t may_free; /* the loop outlives every call the test makes */
    uint64_t returned; /* atomic: run_forever has returned */
    rf_loop *loop;
    unsigned flags;
    rf_fn first; /* spawned before the run, if set */
    void *first_arg;
    int new_rc, run_rc, free_rc;
    rf_stats stats; /* after the run */
} server;

static void *server_main(void *p)
{
    server *s = p;
    rf_loop_opts o = {.flags = s->flags};
    s->new_rc = rf_loop_new(&s->loop, &o);
    if (s->new_rc == 0 && s->first) {
        rf_task *t = rf_loop_spawn(s->loop, s->first, s->first_arg, NULL);
        rf_task_release(t);
    }
    sem_post(&s->ready);
    if (s->new_rc)
        return NULL;
    s->run_rc = rf_loop_run_forever(s->loop);
    rf_loop_stats(s->loop, &s->stats);
    __atomic_store_n(&s->returned, 1, __ATOMIC_RELEASE);
    while (sem_wait(&s->may_free) != 0)
        ;
    s->free_rc = rf_loop_free(s->loop);
    return NULL;
}

static rf_loop *server_start(server *s, unsigned flags, rf_fn first, void *arg)
{
    memset(s, 0, sizeof *s);
    s->flags = flags;
    s->first = first;
    s->first_arg = arg;
    assert_int_equal(sem_init(&s->ready, 0, 0), 0);
    assert_int_equal(sem_init(&s->may_free, 0, 0), 0);
    assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
    while (sem_wait(&s->ready) != 0)
        assert_int_equal(errno, EINTR);
    assert_int_equal(s->new_rc, 0);
    return s->loop;
}

static void server_join(server *s)
{
    sem_post(&s->may_free);
    assert_int_equal(pthread_join(s->th, NULL), 0);
    sem_destroy(&s->ready);
    sem_destroy(&s->may_free);
    assert_int_equal(s->free_rc, 0);
}

/* ---- thousands of spawns from several threads ------------------------------ */

#define PRODUCERS 4
#if defined(RF_TSAN)
/* TSan keeps a thread context per task's fiber, 8128 at most. */
#define PER_PRODUCER 1500
#else
#define PER_PRODUCER 2500
#endif

typedef struct spawn_test {
    rf_loop *loop;
    uint64_t ran[PRODUCERS * PER_PRODUCER]; /* loop thread only */
    uint64_t accepted;                      /* atomic */
    uint64_t refused;                       /* atomic */
    uint64_t order_errors;                  /* loop thread only */
    uint64_t next_seq[PRODUCERS];           /* loop thread only */
} spawn_test;

typedef struct spawn_arg {
    spawn_test *st;
    unsigned producer, seq;
} spawn_arg;

static void *counted_task(void *p)
{
    spawn_arg *a = p;
    spawn_test *st = a->st;
    unsigned idx = a->producer * PER_PRODUCER + a->seq;
    st->ran[idx]++;
    /* Spawns of one thread start in the order of the calls. */
    if (a->seq != st->next_seq[a->producer])
        st->order_errors++;
    st->next_seq[a->producer] = a->seq + 1;
    RFT_CHECK(!rf_cancelled(rf_self()));
    if (a->seq % 7 == 0)
        RFT_CHECK_INT(rf_yield(), 0);
    if (a->seq % 97 == 0)
        RFT_CHECK_INT(rf_sleep(100 * RF_NSEC_PER_USEC), 0);
    free(a);
    return NULL;
}

typedef struct producer {
    pthread_t th;
    spawn_test *st;
    unsigned id;
} producer;

static void *producer_main(void *p)
{
    producer *pr = p;
    for (unsigned i = 0; i < PER_PRODUCER; i++) {
        spawn_arg *a = malloc(sizeof *a);
        a->st = pr->st;
        a->producer = pr->id;
        a->seq = i;
        rf_spawn_options o = {.name = (i & 1) ? "odd" : NULL};
        int rc = rf_loop_spawn_threadsafe(pr->st->loop, counted_task, a, &o);
        if (rc == 0) {
            add64(&pr->st->accepted, 1);
        } else {
            free(a);
            add64(&pr->st->refused, 1);
        }
        if (i % 500 == 0)
            sched_yield();
    }
    return NULL;
}

static void test_spawn_threadsafe_many(void **state)
{
    rft_begin();
    int fds = rft_count_fds();
    spawn_test *st = calloc(1, sizeof *st);
    server s;
    st->loop = server_start(&s, RF_LOOP_SERVE, NULL, NULL);
    producer pr[PRODUCERS];
    for (unsigned i = 0; i < PRODUCERS; i++) {
        pr[i].st = st;
        pr[i].id = i;
        assert_int_equal(pthread_create(&pr[i].th, NULL, producer_main, &pr[i]), 0);
    }
    for (unsigned i = 0; i < PRODUCERS; i++)
        assert_int_equal(pthread_join(pr[i].th, NULL), 0);
    /* Every spawn was made before this: the shutdown waits for them all
     * to return on their own (they are short; the grace is only a bound). */
    assert_int_equal(rf_loop_shutdown_threadsafe(st->loop, BOUND_NS), 0);
    server_join(&s);
    rft_end();
    assert_int_equal(s.run_rc, 0);
    assert_int_equal(load64(&st->refused), 0);
    assert_int_equal(load64(&st->accepted), PRODUCERS * PER_PRODUCER);
    for (unsigned i = 0; i < PRODUCERS * PER_PRODUCER; i++)
        assert_int_equal(st->ran[i], 1);
    assert_int_equal(st->order_errors, 0);
    /* The tasks, and the shutdown's own task; none was cancelled. */
    assert_int_equal(s.stats.tasks_spawned, PRODUCERS * PER_PRODUCER + 1);
    assert_int_equal(s.stats.tasks_alive, 0);
    assert_int_equal(rft_count_fds(), fds);
    free(st);
}

/* ---- stop from another thread --------------------------------------------- */

static uint64_t g_ticks;

static void *ticker(void *arg)
{
    for (;;) {
        if (rf_sleep(RFT_MS) != 0)
            break;
        add64(&g_ticks, 1);
    }
    return NULL;
}

static void test_stop_threadsafe(void **state)
{
    rft_begin();
    g_ticks = 0;
    server s;
    rf_loop *l = server_start(&s, RF_LOOP_SERVE, ticker, NULL);
    uint64_t t0 = rft_now();
    while (load64(&g_ticks) < 5 && rft_now() - t0 < BOUND_NS)
        usleep(1000);
    assert_true(load64(&g_ticks) >= 5);
    /* Several requests before the loop takes one in are one request. */
    assert_int_equal(rf_loop_stop_threadsafe(l), 0);
    assert_int_equal(rf_loop_stop_threadsafe(l), 0);
    server_join(&s);
    rft_end();
    assert_int_equal(s.run_rc, 0);
    /* Stopped, not shut down: the ticker was still alive (freeing the loop
     * cancelled it). */
    assert_int_equal(s.stats.tasks_alive, 1);
}

/* An idle serving loop sleeps instead of reporting a deadlock, and a stop
 * wakes it. */
static void test_stop_idle_serving_loop(void **state)
{
    server s;
    rf_loop *l = server_start(&s, RF_LOOP_SERVE, NULL, NULL);
    usleep(20000);
    assert_int_equal(rf_loop_stop_threadsafe(l), 0);
    server_join(&s);
    assert_int_equal(s.run_rc, 0);
    assert_int_equal(s.stats.tasks_alive, 0);
}

/* ---- call on the loop's thread --------------------------------------------- */

typedef struct call_test {
    rf_loop *loop;
    uint64_t calls;     /* loop thread */
    uint64_t bad;       /* loop thread */
    pthread_t loop_thread;
} call_test;

static void *spawned_by_call(void *p)
{
    call_test *ct = p;
    ct->calls += 1000;
    return NULL;
}

static void on_loop(void *p)
{
    call_test *ct = p;
    ct->calls++;
    if (rf_loop_current() != ct->loop || rf_self() != NULL ||
        rf_sleep(RFT_MS) != -EPERM || !pthread_equal(pthread_self(), ct->loop_thread))
        ct->bad++;
    /* A call may spawn a task and stop the loop. */
    if (ct->calls == 100) {
        rf_task_release(rf_spawn(spawned_by_call, ct));
    }
}

static void stop_on_loop(void *p) { rf_loop_stop(((call_test *)p)->loop); }

static void test_call_threadsafe(void **state)
{
    call_test ct = {0};
    server s;
    ct.loop = server_start(&s, RF_LOOP_SERVE, NULL, NULL);
    ct.loop_thread = s.th;
    for (int i = 0; i < 100; i++)
        assert_int_equal(rf_loop_call_threadsafe(ct.loop, on_loop, &ct), 0);
    assert_int_equal(rf_loop_call_threadsafe(ct.loop, stop_on_loop, &ct), 0);
    server_join(&s);
    assert_int_equal(s.run_rc, 0);
    assert_int_equal(ct.bad, 0);
    /* The task spawned by the 100th call ran before the stop's pass ended,
     * or was cancelled and still ran when the loop was freed. */
    assert_int_equal(ct.calls, 1100);
}

/* ---- graceful shutdown ----------------------------------------------------- */

typedef struct shut_test {
    uint64_t fast_done;     /* returned on their own, not cancelled */
    uint64_t slow_cancelled;
    uint64_t slow_cancel_at; /* when the first slow task saw -ECANCELED */
    uint64_t acceptor_cancelled;
    uint64_t acceptor_cancel_at;
    uint64_t accept_stopped_seen;
    uint64_t started;       /* every task reached its body */
    uint64_t spawned_late;  /* spawned during the grace, by a task */
} shut_test;

static shut_test g_shut;

static void *late_task(void *p)
{
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0);
    g_shut.spawned_late++;
    return NULL;
}

static void *fast_task(void *p)
{
    add64(&g_shut.started, 1);
    /* Waits for the shutdown, then has a little more work to do. */
    while (!rf_loop_current()->accept_stopped)
        if (rf_sleep(RFT_MS) != 0)
            return NULL;
    RFT_CHECK_INT(rf_sleep(20 * RFT_MS), 0);
    rf_task_release(rf_spawn(late_task, NULL));
    RFT_CHECK(!rf_cancelled(rf_self()));
    g_shut.fast_done++;
    return NULL;
}

static void *slow_task(void *p)
{
    add64(&g_shut.started, 1);
    int rc = rf_sleep(60 * RFT_SEC);
    RFT_CHECK_INT(rc, -ECANCELED);
    if (rc == -ECANCELED && g_shut.slow_cancelled++ == 0)
        g_shut.slow_cancel_at = rft_now();
    return NULL;
}

/* Emulates an accept call (branch io honours the same contract): it marks
 * itself while it waits, and refuses to wait once accepting stopped. */
static void *acceptor_task(void *p)
{
    add64(&g_shut.started, 1);
    rf_task *self = rf__self(); /* the record (white box) */
    for (;;) {
        if (rf_loop_current()->accept_stopped) {
            g_shut.accept_stopped_seen++;
            return NULL;
        }
        self->in_accept = true;
        int rc = rf_sleep(60 * RFT_SEC);
        self->in_accept = false;
        if (rc == -ECANCELED) {
            g_shut.acceptor_cancelled++;
            g_shut.acceptor_cancel_at = rft_now();
            return NULL;
        }
    }
}

static void *shut_first(void *p)
{
    for (int i = 0; i < 10; i++)
        rf_task_release(rf_spawn(fast_task, NULL));
    for (int i = 0; i < 10; i++)
        rf_task_release(rf_spawn(slow_task, NULL));
    rf_task_release(rf_spawn(acceptor_task, NULL));
    return NULL;
}

static void *never_runs(void *p)
{
    add64((uint64_t *)p, 1);
    return NULL;
}

static void test_shutdown_graceful(void **state)
{
    rft_begin();
    memset(&g_shut, 0, sizeof g_shut);
    const uint64_t grace = 2 * RFT_SEC;
    server s;
    rf_loop *l = server_start(&s, RF_LOOP_SERVE, shut_first, NULL);
    uint64_t t0 = rft_now();
    while (load64(&g_shut.started) < 21 && rft_now() - t0 < BOUND_NS)
        usleep(1000);
    assert_int_equal(load64(&g_shut.started), 21);
    uint64_t t_req = rft_now();
    assert_int_equal(rf_loop_shutdown_threadsafe(l, grace), 0);
    /* Phase 1 holds from the request on. */
    uint64_t never = 0;
    assert_int_equal(rf_loop_spawn_threadsafe(l, never_runs, &never, NULL),
                     -ESHUTDOWN);
    assert_int_equal(rf_loop_shutdown_threadsafe(l, grace), -EALREADY);
    /* Calls are still taken. */
    server_join(&s);
    uint64_t t_end = rft_now();
    rft_end();
    assert_int_equal(s.run_rc, 0);
    assert_int_equal(never, 0);
    /* Phase 1: the acceptor was cancelled at once, not at the grace's end. */
    assert_int_equal(g_shut.acceptor_cancelled, 1);
    assert_true(g_shut.acceptor_cancel_at < t_req + grace);
    /* Phase 2: the fast tasks finished their work, uncancelled, and so did
     * the tasks they spawned during the grace. */
    assert_int_equal(g_shut.fast_done, 10);
    assert_int_equal(g_shut.spawned_late, 10);
    /* Phase 3: the slow ones were cancelled, not before the grace ended. */
    assert_int_equal(g_shut.slow_cancelled, 10);
    assert_true(g_shut.slow_cancel_at >= t_req + grace);
    assert_true(t_end - t_req < BOUND_NS);
    /* run_forever returned with every task gone. */
    assert_int_equal(s.stats.tasks_alive, 0);
}

/* Everything finishes well within the grace: the loop returns then, without
 * waiting for the grace to end. */
static void *quick_then_done(void *p)
{
    RFT_CHECK_INT(rf_sleep(10 * RFT_MS), 0);
    add64((uint64_t *)p, 1);
    return NULL;
}

static void test_shutdown_all_finish(void **state)
{
    rft_begin();
    uint64_t done = 0;
    server s;
    rf_loop *l = server_start(&s, RF_LOOP_SERVE, NULL, NULL);
    for (int i = 0; i < 50; i++)
        assert_int_equal(rf_loop_spawn_threadsafe(l, quick_then_done, &done, NULL), 0);
    uint64_t t0 = rft_now();
    /* A grace of an hour: the test's timeout fails it if the loop waits. */
    assert_int_equal(rf_loop_shutdown_threadsafe(l, 3600 * RFT_SEC), 0);
    server_join(&s);
    rft_end();
    assert_int_equal(s.run_rc, 0);
    assert_int_equal(load64(&done), 50);
    assert_true(rft_now() - t0 < BOUND_NS);
}

/* On the loop's thread, from a task (a signal watcher, say), grace 0. */
static void *shut_self(void *p)
{
    rf_loop *l = rf_loop_current();
    rf_task_release(rf_spawn(slow_task, NULL));
    RFT_CHECK_INT(rf_yield(), 0);
    RFT_CHECK_INT(rf_loop_shutdown(l, 0), 0);
    RFT_CHECK_INT(rf_loop_shutdown(l, 0), -EALREADY);
    RFT_CHECK(l->accept_stopped);
    RFT_CHECK_INT(rf_loop_spawn_threadsafe(l, never_runs, NULL, NULL), -ESHUTDOWN);
    /* No grace: the next wait of this task is cancelled too. */
    RFT_CHECK_INT(rf_sleep(60 * RFT_SEC), -ECANCELED);
    return NULL;
}

static void test_shutdown_from_task(void **state)
{
    rft_begin();
    memset(&g_shut, 0, sizeof g_shut);
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    rf_task_release(rf_loop_spawn(l, shut_self, NULL, NULL));
    assert_int_equal(rf_loop_run_forever(l), 0);
    rf_stats st;
    rf_loop_stats(l, &st);
    assert_int_equal(st.tasks_alive, 0);
    assert_int_equal(rf_loop_free(l), 0);
    rft_end();
    assert_int_equal(g_shut.slow_cancelled, 1);
}

/* ---- freeing a loop with mail in its box ------------------------------------ */

typedef struct mail_test {
    rf_loop *loop;
    uint64_t ran, cancelled, called; /* loop thread (rf_loop_free's) */
} mail_test;

static void *mail_task(void *p)
{
    mail_test *mt = p;
    mt->ran++;
    /* Spawned while the loop is freed: cancelled from the start, and its
     * waits say so. */
    if (rf_cancelled(rf_self()) && rf_sleep(RFT_SEC) == -ECANCELED)
        mt->cancelled++;
    return NULL;
}

static void mail_call(void *p) { ((mail_test *)p)->called++; }

static void *mail_poster(void *p)
{
    mail_test *mt = p;
    for (int i = 0; i < 1000; i++) {
        if (rf_loop_spawn_threadsafe(mt->loop, mail_task, mt, NULL) != 0)
            abort();
        if (i % 100 == 0 && rf_loop_call_threadsafe(mt->loop, mail_call, mt) != 0)
            abort();
    }
    if (rf_loop_stop_threadsafe(mt->loop) != 0 ||
        rf_loop_shutdown_threadsafe(mt->loop, RFT_SEC) != 0)
        abort();
    return NULL;
}

static void test_free_with_pending_mail(void **state)
{
    int fds = rft_count_fds();
    mail_test mt = {0};
    assert_int_equal(rf_loop_new(&mt.loop, NULL), 0);
    assert_true(rf_loop_fd(mt.loop) >= 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, mail_poster, &mt), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    /* Never run: everything is still in the mailbox. */
    assert_int_equal(mt.ran, 0);
    assert_int_equal(rf_loop_free(mt.loop), 0);
    assert_int_equal(mt.ran, 1000);
    assert_int_equal(mt.cancelled, 1000);
    assert_int_equal(mt.called, 10);
    assert_int_equal(rft_count_fds(), fds);
}

/* ---- the mailbox is bounded ------------------------------------------------ */

static void *drain_main(void *p)
{
    (void)p;
    for (int i = 0; i < 3; i++)
        RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    return NULL;
}

/* Spawns and calls share the capacity; a full mailbox refuses both with
 * -EAGAIN and never a stop; a drain gives every slot back. */
static void test_mailbox_full(void **state)
{
    mail_test mt = {0};
    rf_loop_opts o = {.mailbox_capacity = 8};
    assert_int_equal(rf_loop_new(&mt.loop, &o), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(rf_loop_spawn_threadsafe(mt.loop, mail_task, &mt, NULL), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rf_loop_call_threadsafe(mt.loop, mail_call, &mt), 0);
    assert_int_equal(rf_loop_spawn_threadsafe(mt.loop, mail_task, &mt, NULL), -EAGAIN);
    assert_int_equal(rf_loop_call_threadsafe(mt.loop, mail_call, &mt), -EAGAIN);
    rf_stats st;
    rf_loop_stats(mt.loop, &st);
    assert_int_equal(st.mail_refused, 2);

    /* The loop takes its mail in: the accepted requests run, exactly once. */
    rft_begin();
    assert_int_equal(rf_loop_run_until_complete(mt.loop, drain_main, NULL, NULL), 0);
    rft_end();
    assert_int_equal(mt.ran, 5);
    assert_int_equal(mt.called, 3);

    /* All eight slots are free again, and not one more. */
    for (int i = 0; i < 8; i++)
        assert_int_equal(rf_loop_spawn_threadsafe(mt.loop, mail_task, &mt, NULL), 0);
    assert_int_equal(rf_loop_spawn_threadsafe(mt.loop, mail_task, &mt, NULL), -EAGAIN);
    /* A full mailbox never keeps a loop from being stopped. */
    assert_int_equal(rf_loop_stop_threadsafe(mt.loop), 0);
    rf_loop_stats(mt.loop, &st);
    assert_int_equal(st.mail_refused, 3);
    assert_int_equal(rf_loop_free(mt.loop), 0);
    assert_int_equal(mt.ran, 13);
}

/* 0 means RF_MAILBOX_DEFAULT, the bound a loop that has stopped taking
 * mail in grows to and no further. */
static void test_mailbox_default(void **state)
{
    mail_test mt = {0};
    assert_int_equal(rf_loop_new(&mt.loop, NULL), 0);
    for (unsigned i = 0; i < RF_MAILBOX_DEFAULT; i++)
        if (rf_loop_call_threadsafe(mt.loop, mail_call, &mt) != 0)
            fail_msg("call %u refused", i);
    assert_int_equal(rf_loop_call_threadsafe(mt.loop, mail_call, &mt), -EAGAIN);
    assert_int_equal(rf_loop_free(mt.loop), 0);
    assert_int_equal(mt.called, RF_MAILBOX_DEFAULT);
}

/* Four threads post as fast as they can to a loop that runs, through a
 * small mailbox, retrying what is refused: every accepted request runs
 * exactly once, every refusal is counted, and the posters' view and the
 * loop's stats agree. */
typedef struct flood {
    rf_loop *loop;
    uint64_t accepted, refused; /* atomics: posters */
    uint64_t ran;               /* loop thread */
    uint64_t stop;              /* atomic */
} flood;

#define FLOOD_EACH 2000

static void flood_call(void *p) { ((flood *)p)->ran++; }
static void *flood_task(void *p)
{
    ((flood *)p)->ran++;
    return NULL;
}

static void *flood_poster(void *p)
{
    flood *f = p;
    for (int i = 0; i < FLOOD_EACH;) {
        int rc = (i & 1) ? rf_loop_call_threadsafe(f->loop, flood_call, f)
                         : rf_loop_spawn_threadsafe(f->loop, flood_task, f, NULL);
        if (rc == 0) {
            add64(&f->accepted, 1);
            i++;
        } else if (rc == -EAGAIN) {
            add64(&f->refused, 1);
            usleep(50); /* back off: let the loop catch up */
        } else {
            abort();
        }
    }
    return NULL;
}

static void *flood_stopper(void *p)
{
    flood *f = p;
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        if (pthread_create(&th[i], NULL, flood_poster, f) != 0)
            abort();
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    /* Everything posted; the loop finishes what it accepted. */
    if (rf_loop_shutdown_threadsafe(f->loop, UINT64_MAX) != 0)
        abort();
    return NULL;
}

static void test_mailbox_flood(void **state)
{
    flood f = {0};
    rf_loop_opts o = {.flags = RF_LOOP_SERVE, .mailbox_capacity = 64};
    assert_int_equal(rf_loop_new(&f.loop, &o), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, flood_stopper, &f), 0);
    assert_int_equal(rf_loop_run_forever(f.loop), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    rf_stats st;
    rf_loop_stats(f.loop, &st);
    assert_int_equal(rf_loop_free(f.loop), 0);
    assert_int_equal(f.accepted, 4 * FLOOD_EACH);
    assert_int_equal(f.ran, f.accepted);
    assert_int_equal(st.mail_refused, f.refused);
    print_message("flood: %llu accepted, %llu refused (mailbox of 64)\n",
                  (unsigned long long)f.accepted, (unsigned long long)f.refused);
}

/* A spawn accepted from another thread whose task cannot be created on
 * the loop's thread (here: no address space left for its stack) does not
 * run; the loop says so on stderr and counts it. */
static int spawn_fails_child(void *arg)
{
    (void)arg;
    mail_test mt = {0};
    if (rf_loop_new(&mt.loop, NULL) != 0)
        return 2;
    /* Room for what the loop has mapped, not for a 1 GiB stack. */
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld", &pages) != 1)
        return 3;
    fclose(f);
    struct rlimit rl = {(rlim_t)pages * 4096 + (64u << 20), RLIM_INFINITY};
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return 4;
    rf_spawn_options big = {.stack_size = 1024ul * 1024 * 1024};
    if (rf_loop_spawn_threadsafe(mt.loop, mail_task, &mt, &big) != 0)
        return 5;
    rft_begin();
    if (rf_loop_run_until_complete(mt.loop, drain_main, NULL, NULL) != 0 ||
        rft_failures_ != 0)
        return 6;
    rf_stats st;
    rf_loop_stats(mt.loop, &st);
    rf_loop_free(mt.loop);
    return mt.ran == 0 && st.spawn_failed == 1 ? 0 : 7;
}

static void test_spawn_failure_counted(void **state)
{
    /* The sanitizers reserve terabytes of shadow address space: a limit
     * on it would stop them, not the spawn. */
    if (RFT_SANITIZED)
        skip();
    rft_child ch;
    rft_fork(spawn_fails_child, NULL, &ch);
    if (!ch.exited || ch.code != 0)
        rft_child_dump("spawn failure", &ch);
    assert_true(ch.exited);
    assert_int_equal(ch.code, 0);
    assert_true(rft_contains_ci(ch.err, "rf_loop_spawn_threadsafe: the task "
                                        "could not be created"));
}

/* ---- driven by an outside poll loop ---------------------------------------- */

#define SLEEPERS 200

static uint64_t g_woke;

static void *sleeper(void *p)
{
    uintptr_t i = (uintptr_t)p;
    for (int k = 0; k < 5; k++) {
        /* Many share a wake-up time: more completions at once than the
         * kernel hands over per io_uring_enter. */
        uint64_t ns = (i % 2) ? (1 + (i * 7 + k) % 10) * RFT_MS : 3 * RFT_MS;
        if (!RFT_CHECK_INT(rf_sleep(ns), 0))
            return NULL;
        if (k == 2)
            RFT_CHECK_INT(rf_yield(), 0);
    }
    g_woke++;
    return NULL;
}

static void *remote_sleeper(void *p)
{
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0);
    add64((uint64_t *)p, 1);
    return NULL;
}

typedef struct feeder {
    rf_loop *loop;
    uint64_t done; /* incremented on the loop's thread, read after */
    uint64_t posted;
} feeder;

static void *feeder_main(void *p)
{
    feeder *f = p;
    for (int i = 0; i < 300; i++) {
        if (rf_loop_spawn_threadsafe(f->loop, remote_sleeper, &f->done, NULL) == 0)
            add64(&f->posted, 1);
        if (i % 10 == 0)
            usleep(1000); /* let the host fall asleep in poll between posts */
    }
    return NULL;
}

/*
 * The host: poll(2) on the loop's fd alone (use_hint false: with an
 * endless timeout, so a missed wake-up shows as a poll that times out
 * after BOUND) or with rf_loop_timeout_ms as the timeout.
 */
static void host_loop(rf_loop *l, bool use_hint)
{
    int fd = rf_loop_fd(l);
    assert_true(fd >= 0);
    assert_int_equal(rf_loop_fd(l), fd);
    for (;;) {
        int r = rf_loop_run_once(l, RF_RUN_NOWAIT);
        assert_true(r >= 0);
        if (r == 0)
            break;
        int timeout = -1;
        if (use_hint)
            assert_int_equal(rf_loop_timeout_ms(l, &timeout), 0);
        assert_true(timeout == 0 || timeout == -1);
        if (timeout == -1)
            timeout = (int)(BOUND_NS / RFT_MS);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, timeout);
        assert_true(n >= 0 || errno == EINTR);
        /* A poll that ran out of time means a missed wake-up. */
        if (n == 0 && timeout != 0)
            fprintf(stderr, "stuck: %lu tasks alive, %lu ops in flight, "
                            "%u ready, mail %d, sq flags %#x\n",
                    (unsigned long)l->stats.tasks_alive,
                    (unsigned long)l->inflight, rf__nready(l),
                    rf__remote_pending(l), *l->ring.sq.kflags);
        if (n == 0 && timeout != 0)
            fail_msg("poll on rf_loop_fd timed out: a completion was missed");
    }
}

static void run_poll_driven(bool use_hint)
{
    rft_begin();
    int fds = rft_count_fds();
    g_woke = 0;
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    for (uintptr_t i = 0; i < SLEEPERS; i++)
        rf_task_release(rf_loop_spawn(l, sleeper, (void *)i, NULL));
    feeder f = {.loop = l};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, feeder_main, &f), 0);
    host_loop(l, use_hint);
    /* The loop went idle while the feeder may still be posting: keep
     * driving until it is done and everything it sent has run. */
    assert_int_equal(pthread_join(th, NULL), 0);
    host_loop(l, use_hint);
    rf_stats st;
    rf_loop_stats(l, &st);
    assert_int_equal(rf_loop_free(l), 0);
    rft_end();
    assert_int_equal(g_woke, SLEEPERS);
    assert_int_equal(load64(&f.posted), 300);
    assert_int_equal(f.done, 300);
    assert_int_equal(st.tasks_alive, 0);
    assert_int_equal(st.ops_in_flight, 0);
    assert_int_equal(rft_count_fds(), fds);
}

static void test_poll_driven_fd_alone(void **state) { run_poll_driven(false); }

/* The fd is quiet while nothing is due (a host sleeps, the loop does not
 * spin), and becomes readable for a timer and for a message. */
static void *long_sleeper(void *p)
{
    RFT_CHECK_INT(rf_sleep(RFT_SEC), 0);
    add64((uint64_t *)p, 1);
    return NULL;
}

static void count_call(void *p) { add64((uint64_t *)p, 1); }

static void *post_call(void *p)
{
    void **a = p;
    if (rf_loop_call_threadsafe(a[0], count_call, a[1]) != 0)
        abort();
    return NULL;
}

static bool fd_readable(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int n;
    while ((n = poll(&pfd, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    return n == 1;
}

static void test_poll_fd_quiet_until_due(void **state)
{
    rft_begin();
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    uint64_t slept = 0, called = 0;
    rf_task_release(rf_loop_spawn(l, long_sleeper, &slept, NULL));
    int fd = rf_loop_fd(l);
    assert_true(fd >= 0);
    /* Born readable: the task has not run yet. */
    assert_true(fd_readable(fd, 0));
    int timeout = 7;
    assert_int_equal(rf_loop_timeout_ms(l, &timeout), 0);
    assert_int_equal(timeout, 0);
    assert_int_equal(rf_loop_run_once(l, RF_RUN_NOWAIT), 1);
    /* Nothing is due for a second: quiet, and the hint says wait. */
    assert_false(fd_readable(fd, 0));
    assert_int_equal(rf_loop_timeout_ms(l, &timeout), 0);
    assert_int_equal(timeout, -1);
    assert_int_equal(rf_loop_run_once(l, RF_RUN_NOWAIT), 1);
    assert_false(fd_readable(fd, 0));
    /* A message from another thread makes it readable. */
    void *a[2] = {l, &called};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, post_call, a), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(fd_readable(fd, (int)(BOUND_NS / RFT_MS)));
    assert_int_equal(rf_loop_run_once(l, RF_RUN_NOWAIT), 1);
    assert_int_equal(called, 1);
    /* Then the timer does, when it fires. */
    int r = 1;
    while (r == 1 && load64(&slept) == 0) {
        assert_true(fd_readable(fd, (int)(BOUND_NS / RFT_MS)));
        r = rf_loop_run_once(l, RF_RUN_NOWAIT);
    }
    assert_int_equal(slept, 1);
    assert_int_equal(rf_loop_run_once(l, RF_RUN_NOWAIT), 0);
    assert_int_equal(rf_loop_free(l), 0);
    rft_end();
}
static void test_poll_driven_with_hint(void **state) { run_poll_driven(true); }

/* run_once without NOWAIT blocks for a completion; an idle loop reports 0;
 * a loop that can never make progress reports -EDEADLK at once. */
static rf_task *g_a, *g_b;

static void *join_b(void *p)
{
    rf_yield();
    return (void *)(intptr_t)rf_join(g_b, NULL);
}

static void *join_a(void *p) { return (void *)(intptr_t)rf_join(g_a, NULL); }

static void test_run_once_blocking(void **state)
{
    rft_begin();
    g_woke = 0;
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    assert_int_equal(rf_loop_run_once(l, 0), 0); /* idle */
    assert_int_equal(rf_loop_run_once(l, RF_RUN_NOWAIT), 0);
    for (uintptr_t i = 0; i < 20; i++)
        rf_task_release(rf_loop_spawn(l, sleeper, (void *)i, NULL));
    int r, passes = 0;
    uint64_t t0 = rft_now();
    while ((r = rf_loop_run_once(l, 0)) == 1 && rft_now() - t0 < BOUND_NS)
        passes++;
    assert_int_equal(r, 0);
    assert_int_equal(g_woke, 20);
    /* Two tasks that wait for each other, nothing in flight. */
    g_a = rf_loop_spawn(l, join_b, NULL, NULL);
    g_b = rf_loop_spawn(l, join_a, NULL, NULL);
    assert_int_equal(rf_loop_run_once(l, RF_RUN_NOWAIT), 1);
    assert_int_equal(rf_loop_run_once(l, RF_RUN_NOWAIT), 1);
    assert_int_equal(rf_loop_run_once(l, 0), -EDEADLK);
    int timeout = 7;
    assert_int_equal(rf_loop_timeout_ms(l, &timeout), 0);
    assert_int_equal(timeout, -1);
    assert_int_equal(rf_loop_timeout_ms(l, NULL), -EINVAL);
    rf_task_release(g_a);
    rf_task_release(g_b);
    assert_int_equal(rf_loop_free(l), 0);
    rft_end();
}

/* ---- misuse ------------------------------------------------------------------ */

typedef struct wrong_thread {
    rf_loop *loop;
    int fd, once, hint, shut, spawn, call;
} wrong_thread;

static void *wrong_thread_main(void *p)
{
    wrong_thread *w = p;
    w->fd = rf_loop_fd(w->loop);
    w->once = rf_loop_run_once(w->loop, RF_RUN_NOWAIT);
    int timeout;
    w->hint = rf_loop_timeout_ms(w->loop, &timeout);
    w->shut = rf_loop_shutdown(w->loop, 0);
    return NULL;
}

static void *run_once_inside(void *p)
{
    rf_loop *l = rf_loop_current();
    RFT_CHECK_INT(rf_loop_run_once(l, RF_RUN_NOWAIT), -EBUSY);
    RFT_CHECK_INT(rf_loop_run_once(l, 0), -EBUSY);
    RFT_CHECK(rf_loop_fd(l) >= 0);
    return NULL;
}

static void noop_call(void *p) { (void)p; }

/* ---- graceful shutdown of an rf_run program ------------------------------- */

typedef struct run_shut {
    int lfd;
    uint64_t grace;
    uint64_t t_req;          /* when main asked for the shutdown */
    int fast_done;           /* returned on their own, uncancelled */
    int slow_cancelled;
    uint64_t slow_cancel_at; /* the first slow task's -ECANCELED */
    int accept_rc;
    bool accepter_cancelled; /* rf_cancelled after its accept ended */
    int accepter_after;      /* a wait it made after the accept */
    bool event_seen;         /* a task woke on the shutdown event */
    uint64_t event_at;
    int main_join_rc;
} run_shut;

static run_shut g_rs;

static void *rs_fast(void *arg)
{
    RFT_CHECK_INT(rf_event_wait(rf_loop_shutdown_event(rf_loop_current())), 0);
    RFT_CHECK_INT(rf_sleep(20 * RFT_MS), 0); /* finishes within the grace */
    RFT_CHECK(!rf_cancelled(rf_self()));
    g_rs.fast_done++;
    return NULL;
}

static void *rs_slow(void *arg)
{
    int rc = rf_sleep(60 * RFT_SEC);
    RFT_CHECK_INT(rc, -ECANCELED);
    if (rc == -ECANCELED && g_rs.slow_cancelled++ == 0)
        g_rs.slow_cancel_at = rft_now();
    return NULL;
}

static void *rs_accepter(void *arg)
{
    g_rs.accept_rc = rf_accept(g_rs.lfd, NULL, NULL, SOCK_CLOEXEC);
    g_rs.accepter_cancelled = rf_cancelled(rf_self());
    /* Interrupted, not cancelled: it can still clean up with waits. */
    g_rs.accepter_after = rf_sleep(RFT_MS);
    rf_close(g_rs.lfd);
    return NULL;
}

static void *rs_watcher(void *arg)
{
    RFT_CHECK_INT(rf_event_wait(rf_loop_shutdown_event(rf_loop_current())), 0);
    g_rs.event_seen = true;
    g_rs.event_at = rft_now();
    return NULL;
}

static void rs_spawn_all(void)
{
    RFT_CHECK_INT(rf_tcp_listen("127.0.0.1", 0, 8, &g_rs.lfd), 0);
    rf_task_release(rf_spawn(rs_accepter, NULL));
    rf_task_release(rf_spawn(rs_watcher, NULL));
    for (int i = 0; i < 5; i++) {
        rf_task_release(rf_spawn(rs_fast, NULL));
        rf_task_release(rf_spawn(rs_slow, NULL));
    }
    RFT_CHECK_INT(rf_sleep(5 * RFT_MS), 0); /* all of them waiting */
}

/* main asks for the shutdown and returns at once. */
static void *rs_main_returns(void *arg)
{
    rs_spawn_all();
    g_rs.t_req = rft_now();
    RFT_CHECK_INT(rf_loop_shutdown(rf_loop_current(), g_rs.grace), 0);
    return (void *)"main";
}

/* main asks for the shutdown, then waits for a task the grace cuts off. */
static void *rs_main_waits(void *arg)
{
    rs_spawn_all();
    rf_task *slow = rf_spawn(rs_slow, NULL);
    RFT_CHECK_INT(rf_yield(), 0);
    g_rs.t_req = rft_now();
    RFT_CHECK_INT(rf_loop_shutdown(rf_loop_current(), g_rs.grace), 0);
    g_rs.main_join_rc = rf_join(slow, NULL); /* main itself is spared */
    rf_task_release(slow);
    RFT_CHECK_INT(rf_sleep(RFT_MS), 0);
    return (void *)"main";
}

static void check_run_shutdown(rf_fn main_fn, int slow_tasks)
{
    memset(&g_rs, 0, sizeof g_rs);
    g_rs.grace = 300 * RFT_MS;
    void *res = NULL;
    rft_begin();
    assert_int_equal(rf_run(main_fn, NULL, &res), 0);
    rft_end();
    assert_string_equal((const char *)res, "main");
    /* Phase 1: the accept ended, its task was not cancelled; the event
     * woke its waiter at once (well before the grace ends). */
    assert_int_equal(g_rs.accept_rc, -ESHUTDOWN);
    assert_false(g_rs.accepter_cancelled);
    assert_int_equal(g_rs.accepter_after, 0);
    assert_true(g_rs.event_seen);
    assert_true(g_rs.event_at < g_rs.t_req + g_rs.grace);
    /* Phase 2: the fast ones finished, uncancelled, within the grace. */
    assert_int_equal(g_rs.fast_done, 5);
    /* Phase 3: the slow ones were cancelled, not before the grace. */
    assert_int_equal(g_rs.slow_cancelled, slow_tasks);
    assert_true(g_rs.slow_cancel_at >= g_rs.t_req + g_rs.grace);
}

/* rf_run(main) where main asks for a graceful shutdown and returns: the
 * grace used to be skipped (every task cancelled at once). */
static void test_run_main_shutdown_then_return(void **state)
{
    check_run_shutdown(rs_main_returns, 5);
}

/* rf_run(main) where main asks for the shutdown and then waits: main used
 * to be cancelled itself and rf_run returned -ECANCELED. */
static void test_run_main_shutdown_then_wait(void **state)
{
    check_run_shutdown(rs_main_waits, 6);
    assert_int_equal(g_rs.main_join_rc, -ECANCELED); /* the slow task's */
}

/* ---- short runs: mail and offload results at every pass ------------------- */

static void *return_at_once(void *arg) { return arg; }

static void count_short_call(void *arg) { (*(int *)arg)++; }

/* A call posted before a run whose task returns at once runs during that
 * run (at its first pass end), with either way of running the loop. */
static void test_short_run_takes_mail(void **state)
{
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    int calls = 0;
    assert_int_equal(rf_loop_call_threadsafe(l, count_short_call, &calls), 0);
    assert_int_equal(rf_loop_run_until_complete(l, return_at_once, NULL, NULL), 0);
    assert_int_equal(calls, 1);

    assert_int_equal(rf_loop_call_threadsafe(l, count_short_call, &calls), 0);
    assert_int_equal(rf_loop_run_once(l, RF_RUN_NOWAIT), 0);
    assert_int_equal(calls, 2);
    assert_int_equal(rf_loop_free(l), 0);
}

/* An offloaded call's result comes back through the mailbox: a host that
 * drives the loop in short runs, none of which ever sleeps, still
 * delivers it. */
static void *offloaded_work(void *arg)
{
    return arg;
}

static void *offloading_task(void *arg)
{
    int *delivered = arg;
    void *res = NULL;
    if (rf_to_thread(offloaded_work, arg, &res) == 0 && res == arg)
        *delivered = 1;
    return NULL;
}

static void short_runs_deliver_offload(bool run_once)
{
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    int delivered = 0;
    rf_task *t = rf_loop_spawn(l, offloading_task, &delivered, NULL);
    assert_non_null(t);
    uint64_t t0 = rft_now();
    while (!rf_done(t) && rft_now() - t0 < BOUND_NS) {
        if (run_once)
            assert_true(rf_loop_run_once(l, RF_RUN_NOWAIT) >= 0);
        else
            assert_int_equal(rf_loop_run_until_complete(l, return_at_once,
                                                        NULL, NULL), 0);
        struct timespec ms = {0, 1000 * 1000};
        nanosleep(&ms, NULL);
    }
    assert_true(rf_done(t));
    assert_int_equal(delivered, 1);
    rf_task_release(t);
    assert_int_equal(rf_loop_free(l), 0);
}

static void test_short_runs_deliver_offload_until_complete(void **state)
{
    short_runs_deliver_offload(false);
}

static void test_short_runs_deliver_offload_run_once(void **state)
{
    short_runs_deliver_offload(true);
}

static void test_misuse(void **state)
{
    assert_int_equal(rf_loop_spawn_threadsafe(NULL, never_runs, NULL, NULL), -EINVAL);
    assert_int_equal(rf_loop_call_threadsafe(NULL, noop_call, NULL), -EINVAL);
    assert_int_equal(rf_loop_stop_threadsafe(NULL), -EINVAL);
    assert_int_equal(rf_loop_shutdown(NULL, 0), -EINVAL);
    assert_int_equal(rf_loop_shutdown_threadsafe(NULL, 0), -EINVAL);
    assert_int_equal(rf_loop_fd(NULL), -EINVAL);
    assert_int_equal(rf_loop_run_once(NULL, 0), -EINVAL);
    int timeout;
    assert_int_equal(rf_loop_timeout_ms(NULL, &timeout), -EINVAL);

    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    assert_int_equal(rf_loop_spawn_threadsafe(l, NULL, NULL, NULL), -EINVAL);
    assert_int_equal(rf_loop_call_threadsafe(l, NULL, NULL), -EINVAL);
    rf_spawn_options tiny = {.stack_size = 1024};
    assert_int_equal(rf_loop_spawn_threadsafe(l, never_runs, NULL, &tiny), -EINVAL);
    rf_spawn_options huge = {.stack_size = (size_t)1 << 40};
    assert_int_equal(rf_loop_spawn_threadsafe(l, never_runs, NULL, &huge), -EINVAL);
    assert_int_equal(rf_loop_run_once(l, 0x80), -EINVAL);

    wrong_thread w = {.loop = l};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wrong_thread_main, &w), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(w.fd, -EXDEV);
    assert_int_equal(w.once, -EXDEV);
    assert_int_equal(w.hint, -EXDEV);
    assert_int_equal(w.shut, -EXDEV);

    rft_begin();
    rf_task_release(rf_loop_spawn(l, run_once_inside, NULL, NULL));
    assert_int_equal(rf_loop_run_forever(l), -EDEADLK); /* not a serving loop */
    rft_end();
    assert_int_equal(rf_loop_free(l), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_spawn_threadsafe_many),
    cmocka_unit_test(test_stop_threadsafe),
    cmocka_unit_test(test_stop_idle_serving_loop),
    cmocka_unit_test(test_call_threadsafe),
    cmocka_unit_test(test_shutdown_graceful),
    cmocka_unit_test(test_shutdown_all_finish),
    cmocka_unit_test(test_shutdown_from_task),
    cmocka_unit_test(test_free_with_pending_mail),
    cmocka_unit_test(test_mailbox_full),
    cmocka_unit_test(test_mailbox_default),
    cmocka_unit_test(test_mailbox_flood),
    cmocka_unit_test(test_spawn_failure_counted),
    cmocka_unit_test(test_poll_driven_fd_alone),
    cmocka_unit_test(test_poll_driven_with_hint),
    cmocka_unit_test(test_poll_fd_quiet_until_due),
    cmocka_unit_test(test_run_once_blocking),
    cmocka_unit_test(test_run_main_shutdown_then_return),
    cmocka_unit_test(test_run_main_shutdown_then_wait),
    cmocka_unit_test(test_short_run_takes_mail),
    cmocka_unit_test(test_short_runs_deliver_offload_until_complete),
    cmocka_unit_test(test_short_runs_deliver_offload_run_once),
    cmocka_unit_test(test_misuse),
};

RFT_MAIN(tests)
