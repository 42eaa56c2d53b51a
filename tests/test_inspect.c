/*
 * The operator's view: rf_loop_tasks, the dump (on the loop's thread,
 * from another thread, on a signal), suspended tasks' backtraces, and
 * rf_symbolize.
 */
#include "helpers.h"

#include "deep_stack.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>

/* ---- a loop with a task in every kind of wait ---- */

typedef struct scene {
    int sv[2];          /* recv waits on sv[0] */
    int lfd;            /* a listening socket nobody connects to */
    int pipe_rd, pipe_wr; /* the offloaded call blocks on pipe_rd */
    rf_queue q_empty, q_full;
    void *q_slot[1];
    void *q_full_slot[1];
    rf_event ev;
    rf_mutex mu;
    rf_sem sem;
    rf_cond cond;
    rf_mutex cond_mu;
    rf_task *joined;
    volatile int held; /* the mutex holder has it */
} scene;

static void *w_recv(void *arg)
{
    scene *s = arg;
    char c;
    return (void *)(intptr_t)rf_recv(s->sv[0], &c, 1, 0);
}

static void *w_sleep(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)rf_sleep(3600 * RFT_SEC);
}

static void *w_forever(void *arg)
{
    scene *s = arg;
    return (void *)(intptr_t)rf_event_wait(&s->ev);
}

static void *w_join(void *arg)
{
    scene *s = arg;
    return (void *)(intptr_t)rf_join(s->joined, NULL);
}

static void *w_get(void *arg)
{
    scene *s = arg;
    void *item;
    return (void *)(intptr_t)rf_queue_get(&s->q_empty, &item);
}

static void *w_put(void *arg)
{
    scene *s = arg;
    return (void *)(intptr_t)rf_queue_put(&s->q_full, s);
}

static void *w_holder(void *arg)
{
    scene *s = arg;
    RFT_CHECK_INT(rf_mutex_lock(&s->mu), 0);
    s->held = 1;
    int rc = rf_event_wait(&s->ev); /* holds the mutex until cancelled */
    rf_mutex_unlock(&s->mu);
    return (void *)(intptr_t)rc;
}

static void *w_mutex(void *arg)
{
    scene *s = arg;
    int rc = rf_mutex_lock(&s->mu);
    if (rc == 0)
        rf_mutex_unlock(&s->mu);
    return (void *)(intptr_t)rc;
}

static void *w_sem(void *arg)
{
    scene *s = arg;
    return (void *)(intptr_t)rf_sem_acquire(&s->sem);
}

static void *w_cond(void *arg)
{
    scene *s = arg;
    RFT_CHECK_INT(rf_mutex_lock(&s->cond_mu), 0);
    int rc = rf_cond_wait(&s->cond, &s->cond_mu);
    rf_mutex_unlock(&s->cond_mu);
    return (void *)(intptr_t)rc;
}

static void *blocking_read(void *arg)
{
    scene *s = arg;
    char c;
    return (void *)(intptr_t)read(s->pipe_rd, &c, 1);
}

static void *w_offload(void *arg)
{
    void *r = NULL;
    int rc = rf_to_thread(blocking_read, arg, &r);
    return (void *)(intptr_t)(rc ? rc : (intptr_t)r);
}

static void *w_accept(void *arg)
{
    scene *s = arg;
    rf_acceptor *a;
    int rc = rf_acceptor_open(s->lfd, 0, &a);
    if (rc)
        return (void *)(intptr_t)rc;
    rc = rf_acceptor_next(a);
    rf_acceptor_close(a);
    return (void *)(intptr_t)rc;
}

typedef struct expect {
    const char *name;
    rf_fn fn;
    rf_wait_on wait;
    const char *text; /* in its dump line, after "waiting N s: " */
    rf_task *t;       /* set when spawned */
    bool seen;
} expect;

static scene g_scene;
static expect g_expect[] = {
    {"recv", w_recv, RF_WAIT_ON_IO, "recv fd ", NULL, false},
    {"sleep", w_sleep, RF_WAIT_ON_SLEEP, "sleep until +", NULL, false},
    {"joiner", w_join, RF_WAIT_ON_TASK, "join task ", NULL, false},
    {"getter", w_get, RF_WAIT_ON_QUEUE_GET, "queue_get 0x", NULL, false},
    {"putter", w_put, RF_WAIT_ON_QUEUE_PUT, "queue_put 0x", NULL, false},
    {"holder", w_holder, RF_WAIT_ON_EVENT, "event 0x", NULL, false},
    {"locker", w_mutex, RF_WAIT_ON_MUTEX, "mutex 0x", NULL, false},
    {"sem", w_sem, RF_WAIT_ON_SEM, "sem 0x", NULL, false},
    {"cond", w_cond, RF_WAIT_ON_COND, "cond 0x", NULL, false},
    {"offload", w_offload, RF_WAIT_ON_OFFLOAD, "to_thread blocking_read (", NULL, false},
    {"acceptor", w_accept, RF_WAIT_ON_ACCEPT, "accept fd ", NULL, false},
};
#define NEXPECT (sizeof g_expect / sizeof g_expect[0])

static expect *expect_named(const char *name)
{
    for (size_t i = 0; i < NEXPECT; i++)
        if (strcmp(g_expect[i].name, name) == 0)
            return &g_expect[i];
    return NULL;
}

static void scene_setup(scene *s)
{
    memset(s, 0, sizeof(*s));
    RFT_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s->sv), 0);
    RFT_CHECK_INT(rf_tcp_listen("127.0.0.1", 0, 16, &s->lfd), 0);
    int p[2];
    RFT_CHECK_INT(pipe2(p, O_CLOEXEC), 0);
    s->pipe_rd = p[0];
    s->pipe_wr = p[1];
    RFT_CHECK_INT(rf_queue_init(&s->q_empty, 1, s->q_slot), 0);
    RFT_CHECK_INT(rf_queue_init(&s->q_full, 1, s->q_full_slot), 0);
    RFT_CHECK_INT(rf_queue_try_put(&s->q_full, s), 0);
    rf_event_init(&s->ev);
    rf_mutex_init(&s->mu);
    rf_sem_init(&s->sem, 0, 1);
    rf_cond_init(&s->cond);
    rf_mutex_init(&s->cond_mu);
}

/* Spawn every waiter (holder first: the locker waits for it), and let
 * them all reach their waits. */
static void scene_start(scene *s)
{
    s->joined = rf_spawn_opts(w_forever, s, &(rf_spawn_options){.name = "joined"});
    expect *h = expect_named("holder");
    h->t = rf_spawn_opts(h->fn, s, &(rf_spawn_options){.name = h->name});
    for (int i = 0; i < 100 && !s->held; i++)
        rf_yield();
    RFT_CHECK_INT(s->held, 1);
    for (size_t i = 0; i < NEXPECT; i++) {
        expect *e = &g_expect[i];
        e->seen = false;
        if (e->fn != w_holder)
            e->t = rf_spawn_opts(e->fn, s, &(rf_spawn_options){.name = e->name});
    }
    for (int i = 0; i < 10; i++)
        rf_yield();
    /* The offloaded call reaches its worker thread in real time. */
    rf_sleep(20 * RFT_MS);
}

/* Unblock everything and check that every task ends as it should have:
 * the dump's walks of their stacks changed nothing. */
static void scene_end(scene *s)
{
    RFT_CHECK_INT(write(s->pipe_wr, "x", 1), 1);
    RFT_CHECK_INT(write(s->sv[1], "y", 1), 1);
    for (size_t i = 0; i < NEXPECT; i++)
        if (g_expect[i].fn == w_sleep || g_expect[i].fn == w_accept)
            rf_cancel(g_expect[i].t);
    void *item;
    RFT_CHECK_INT(rf_queue_try_get(&s->q_full, &item), 0); /* the putter's room */
    RFT_CHECK_INT(rf_queue_put(&s->q_empty, s), 0);       /* the getter's item */
    RFT_CHECK_INT(rf_sem_release(&s->sem), 0);
    RFT_CHECK_INT(rf_cond_signal(&s->cond), 0);
    RFT_CHECK_INT(rf_event_set(&s->ev), 0); /* holder, joined, then joiner */
    for (size_t i = 0; i < NEXPECT; i++) {
        expect *e = &g_expect[i];
        void *r = (void *)(intptr_t)-1;
        rf_join(e->t, &r);
        intptr_t want = e->fn == w_recv || e->fn == w_offload ? 1
                        : e->fn == w_sleep || e->fn == w_accept ? -ECANCELED
                                                                 : 0;
        if (!RFT_CHECK_INT((intptr_t)r, want))
            fprintf(stderr, "task '%s' ended with %ld\n", e->name, (long)(intptr_t)r);
        rf_task_release(e->t);
    }
    rf_join(s->joined, NULL);
    rf_task_release(s->joined);
    close(s->sv[0]);
    close(s->sv[1]);
    rf_close(s->lfd);
    close(s->pipe_rd);
    close(s->pipe_wr);
    rf_queue_fini(&s->q_empty);
    rf_queue_fini(&s->q_full);
}

static int visit(const rf_task_info *in, void *arg)
{
    int *self_seen = arg;
    if (in->state == RF_TASK_RUNNING) {
        RFT_CHECK_PTR(in->task, rf_self());
        (*self_seen)++;
        return 0;
    }
    expect *e = expect_named(in->name);
    if (!e)
        return 0; /* "joined", the main task */
    e->seen = true;
    RFT_CHECK_INT(in->state, RF_TASK_WAITING);
    if (!RFT_CHECK_INT(in->wait, e->wait))
        fprintf(stderr, "task '%s' waits on %s\n", e->name, in->wait_name);
    RFT_CHECK_PTR(in->task, e->t);
    RFT_CHECK(in->fn == e->fn);
    RFT_CHECK(in->spawned_from != NULL);
    switch (in->wait) {
    case RF_WAIT_ON_IO:
        RFT_CHECK_INT(in->fd, g_scene.sv[0]);
        RFT_CHECK(strcmp(in->wait_name, "recv") == 0);
        break;
    case RF_WAIT_ON_ACCEPT:
        RFT_CHECK_INT(in->fd, g_scene.lfd);
        break;
    case RF_WAIT_ON_SLEEP:
        RFT_CHECK(in->until_ns > rf_now_ns() + 3000 * RFT_SEC);
        break;
    case RF_WAIT_ON_TASK:
        RFT_CHECK_PTR(in->holder, g_scene.joined);
        break;
    case RF_WAIT_ON_MUTEX:
        RFT_CHECK_PTR(in->object, &g_scene.mu);
        RFT_CHECK_PTR(in->holder, expect_named("holder")->t);
        break;
    case RF_WAIT_ON_QUEUE_GET:
        RFT_CHECK_PTR(in->object, &g_scene.q_empty);
        break;
    case RF_WAIT_ON_QUEUE_PUT:
        RFT_CHECK_PTR(in->object, &g_scene.q_full);
        break;
    case RF_WAIT_ON_OFFLOAD:
        RFT_CHECK(in->object == (const void *)blocking_read);
        break;
    default:
        break;
    }
    return 0;
}

static void *every_wait_kind_main(void *arg)
{
    (void)arg;
    scene *s = &g_scene;
    scene_setup(s);
    scene_start(s);
    int self_seen = 0;
    RFT_CHECK_INT(rf_loop_tasks(rf_loop_current(), visit, &self_seen), 0);
    RFT_CHECK_INT(self_seen, 1);
    for (size_t i = 0; i < NEXPECT; i++)
        if (!RFT_CHECK(g_expect[i].seen))
            fprintf(stderr, "task '%s' not visited\n", g_expect[i].name);

    /* The dump: one line per task, each with what it waits on. */
    char *text = NULL;
    size_t len = 0;
    RFT_CHECK_INT(rf_loop_dump_text(rf_loop_current(), 0, &text, &len), 0);
    RFT_CHECK_INT(strlen(text), len);
    printf("%s", text);
    for (size_t i = 0; i < NEXPECT; i++) {
        expect *e = &g_expect[i];
        char head[64];
        snprintf(head, sizeof head, "'%s' waiting ", e->name);
        const char *line = strstr(text, head);
        if (!RFT_CHECK(line != NULL))
            continue;
        const char *eol = strchr(line, '\n');
        const char *what = strstr(line, ": ");
        bool ok = what && what < eol &&
                  strncmp(what + 2, e->text, strlen(e->text)) == 0;
        if (!RFT_CHECK(ok))
            fprintf(stderr, "line of '%s' lacks \"%s\": %.*s\n", e->name,
                    e->text, (int)(eol - line), line);
    }
    RFT_CHECK(strstr(text, " held by task ") != NULL);
    RFT_CHECK(strstr(text, "join task ") != NULL);
    RFT_CHECK(strstr(text, "'joined'") != NULL);
    /* Totals, by state and by wait. */
    RFT_CHECK(strstr(text, "totals: 1 running, 0 ready, 12 waiting") != NULL);
    RFT_CHECK(strstr(text, "  1 waiting in recv, longest ") != NULL);
    RFT_CHECK(strstr(text, "  2 waiting in event, longest ") != NULL);
    RFT_CHECK(strstr(text, "  1 waiting in mutex, longest ") != NULL);
    /* Where each was spawned from: this function, by name. */
    RFT_CHECK(strstr(text, "spawned from scene_start") != NULL);
    RFT_CHECK(strstr(text, "runs w_recv (test_inspect.c:") != NULL);
    free(text);
    scene_end(s);
    return NULL;
}

static void test_every_wait_kind(void **state)
{
    (void)state;
    rft_run(every_wait_kind_main, NULL);
}

/* ---- backtraces of suspended tasks ---- */

static void *never_started(void *arg)
{
    return arg;
}

static void *backtraces_main(void *arg)
{
    (void)arg;
    scene *s = &g_scene;
    scene_setup(s);
    scene_start(s);
    rf_task *deep = rf_spawn_opts(deep_one, &s->ev, &(rf_spawn_options){.name = "deep"});
    rf_yield();
    /* Ready, and never run yet: not walked (it has no stack until its
     * first run), and then starts as usual. */
    rf_task *fresh = rf_spawn_opts(never_started, (void *)7,
                                   &(rf_spawn_options){.name = "fresh"});
    rf_stats before;
    rf_loop_stats(rf_loop_current(), &before);
    char *text = NULL;
    RFT_CHECK_INT(rf_loop_dump_text(rf_loop_current(), RF_DUMP_BACKTRACES,
                                    &text, NULL), 0);
    rf_stats after;
    rf_loop_stats(rf_loop_current(), &after);
    printf("%s", text);
    /* Walking the stacks is no switch the loop counts, and ran nothing. */
    RFT_CHECK_INT(after.switches, before.switches);
    const char *d = strstr(text, "'deep' waiting");
    RFT_CHECK(d != NULL);
    if (d) {
        const char *next = strstr(d + 1, "\ntask ");
        const char *one = strstr(d, "deep_one+");
        const char *two = strstr(d, "deep_two+");
        const char *three = strstr(d, "deep_three+");
        const char *ev = strstr(d, "rf_event_wait+");
        /* Innermost first: the wait, then the three frames in order. */
        RFT_CHECK(ev && three && two && one);
        RFT_CHECK(ev < three && three < two && two < one);
        RFT_CHECK(!next || one < next);
    }
    /* The running task's own backtrace is the dump's call. */
    RFT_CHECK(strstr(text, "backtraces_main+") != NULL);
    free(text);
    void *r = NULL;
    RFT_CHECK_INT(rf_join(fresh, &r), 0);
    RFT_CHECK_PTR(r, (void *)7);
    rf_task_release(fresh);
    scene_end(s); /* also sets the event deep waits on */
    RFT_CHECK_INT(rf_join(deep, &r), 0);
    RFT_CHECK_PTR(r, NULL);
    rf_task_release(deep);
    return NULL;
}

static void test_backtraces_of_suspended_tasks(void **state)
{
    (void)state;
    rft_run(backtraces_main, NULL);
}

/* A task too close to the end of its stack is not walked. */
static __attribute__((noinline)) int burn_stack(rf_event *ev, size_t left)
{
    volatile char pad[1024];
    pad[0] = 1;
    if (left > sizeof pad)
        return burn_stack(ev, left - sizeof pad) + pad[0];
    return rf_event_wait(ev);
}

static void *deep_stack(void *arg)
{
    /* Leave less than 8 KiB of a 16 KiB stack. */
    return (void *)(intptr_t)burn_stack(arg, 10 * 1024);
}

static void *stack_room_main(void *arg)
{
    (void)arg;
    rf_event ev;
    rf_event_init(&ev);
    rf_task *t = rf_spawn_opts(deep_stack, &ev,
                               &(rf_spawn_options){.name = "full",
                                                   .stack_size = RF_MIN_STACK_SIZE});
    rf_yield();
    char *text = NULL;
    RFT_CHECK_INT(rf_loop_dump_text(rf_loop_current(), RF_DUMP_BACKTRACES,
                                    &text, NULL), 0);
    printf("%s", text);
    RFT_CHECK(strstr(text, "(no backtrace: less than 8 KiB of its stack left") != NULL);
    free(text);
    rf_event_set(&ev);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    return NULL;
}

static void test_no_walk_without_stack_room(void **state)
{
    (void)state;
    if (RFT_ASAN)
        skip(); /* ASan's frames are larger than the 10 KiB this plans */
    rft_run(stack_room_main, NULL);
}

/* A dump made outside any task (a threadsafe call's function, which runs
 * at a pass end on the stack of the task that ended it) lists the tasks
 * without walking their stacks, and leaves the loop whole. */
typedef struct outside {
    rf_loop *loop;
    char *text;
    volatile int done;
} outside;

static void dump_outside(void *arg)
{
    outside *o = arg;
    RFT_CHECK_INT(rf_loop_dump_text(o->loop, RF_DUMP_BACKTRACES, &o->text, NULL), 0);
    __atomic_store_n(&o->done, 1, __ATOMIC_RELEASE);
}

static void *pinger(void *arg)
{
    outside *o = arg;
    int n = 0;
    while (!__atomic_load_n(&o->done, __ATOMIC_ACQUIRE))
        n += rf_yield() == 0;
    return (void *)(intptr_t)n;
}

static void *poster(void *arg)
{
    outside *o = arg;
    while (rf_loop_call_threadsafe(o->loop, dump_outside, o) == -EAGAIN)
        usleep(1000);
    return NULL;
}

static void *outside_main(void *arg)
{
    outside *o = arg;
    o->loop = rf_loop_current();
    rf_task *p = rf_spawn_opts(pinger, o, &(rf_spawn_options){.name = "pinger"});
    rf_task *q = rf_spawn_opts(pinger, o, &(rf_spawn_options){.name = "pinger2"});
    pthread_t th;
    RFT_CHECK_INT(pthread_create(&th, NULL, poster, o), 0);
    void *r1 = NULL, *r2 = NULL;
    /* Both end as they should: the dump ran beside them, changed
     * nothing (how many yields they made first depends on the speed). */
    RFT_CHECK_INT(rf_join(p, &r1), 0);
    RFT_CHECK_INT(rf_join(q, &r2), 0);
    rf_task_release(p);
    rf_task_release(q);
    pthread_join(th, NULL);
    return NULL;
}

static void test_dump_outside_a_task_does_not_walk(void **state)
{
    (void)state;
    outside o = {0};
    rft_run(outside_main, &o);
    assert_non_null(o.text);
    printf("%s", o.text);
    assert_non_null(strstr(o.text, "'pinger' "));
    assert_non_null(strstr(o.text, "(no backtrace: stacks are walked only by a dump made in a task"));
    free(o.text);
}

/* Dumps with backtraces in two loops at once: their symbol lookups share
 * one thread, one request at a time, each answered to its asker. */
static void *two_loops_entry(void *arg)
{
    (void)arg;
    rf_event ev;
    rf_event_init(&ev);
    rf_task *t = rf_spawn_opts(deep_one, &ev,
                               &(rf_spawn_options){.name = "deep"});
    rf_yield();
    for (int i = 0; i < 5; i++) {
        char *text = NULL;
        RFT_CHECK_INT(rf_loop_dump_text(rf_loop_current(), RF_DUMP_BACKTRACES,
                                        &text, NULL), 0);
        if (text) {
            RFT_CHECK(strstr(text, "deep_one") != NULL);
            RFT_CHECK(strstr(text, "two_loops_entry") != NULL);
        }
        free(text);
    }
    rf_event_set(&ev);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    return NULL;
}

static void test_dumps_in_two_loops_at_once(void **state)
{
    (void)state;
    rft_run_loops(two_loops_entry, NULL, 2, 0);
}

/* ---- from another thread ---- */

typedef struct xthread {
    rf_loop *loop;
    volatile int go, done;
    int rc;
    char *text;
} xthread;

static void *asker(void *arg)
{
    xthread *x = arg;
    while (!__atomic_load_n(&x->go, __ATOMIC_ACQUIRE))
        usleep(1000);
    size_t len = 0;
    x->rc = rf_loop_dump_threadsafe(x->loop, 0, 60 * RFT_SEC, &x->text, &len);
    if (x->rc == 0 && strlen(x->text) != len)
        x->rc = -EPROTO;
    __atomic_store_n(&x->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void *spinner(void *arg)
{
    xthread *x = arg;
    while (!__atomic_load_n(&x->done, __ATOMIC_ACQUIRE))
        rf_yield();
    return NULL;
}

static void *threadsafe_main(void *arg)
{
    xthread *x = arg;
    x->loop = rf_loop_current();
    char *t;
    RFT_CHECK_INT(rf_loop_dump_threadsafe(x->loop, 0, RFT_SEC, &t, NULL), -EDEADLK);
    rf_task *s = rf_spawn_opts(spinner, x, &(rf_spawn_options){.name = "spinner"});
    __atomic_store_n(&x->go, 1, __ATOMIC_RELEASE);
    /* The loop stays busy (a yielding task) and still answers. */
    RFT_CHECK_INT(rf_join(s, NULL), 0);
    rf_task_release(s);
    return NULL;
}

static void test_dump_from_another_thread(void **state)
{
    (void)state;
    xthread x = {0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, asker, &x), 0);
    rft_run(threadsafe_main, &x);
    pthread_join(th, NULL);
    assert_int_equal(x.rc, 0);
    assert_non_null(strstr(x.text, "'spinner' ready"));
    assert_non_null(strstr(x.text, "'rf-dump' running"));
    free(x.text);
}

static void *late_asker(void *arg)
{
    xthread *x = arg;
    x->rc = rf_loop_dump_threadsafe(x->loop, 0, 50 * RFT_MS, &x->text, NULL);
    return NULL;
}

/* A loop that does not run does not answer: -ETIMEDOUT, and the request,
 * taken in when the loop is freed, leaks nothing (ASan). */
static void test_dump_threadsafe_times_out(void **state)
{
    (void)state;
    xthread x = {0};
    assert_int_equal(rf_loop_new(&x.loop, NULL), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, late_asker, &x), 0);
    pthread_join(th, NULL);
    assert_int_equal(x.rc, -ETIMEDOUT);
    assert_int_equal(rf_loop_free(x.loop), 0);
    assert_int_equal(rf_loop_dump_threadsafe(NULL, 0, 0, &x.text, NULL), -EINVAL);
}

/* ---- on a signal ---- */

typedef struct sigscene {
    int fd;             /* a memfd the dump is written to */
    volatile int stop;
    uint64_t passes_at_raise, passes_at_dump;
} sigscene;

static bool file_has(int fd, const char *needle)
{
    char buf[8192];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void *busy(void *arg)
{
    sigscene *s = arg;
    while (!s->stop)
        rf_yield();
    return NULL;
}

static void *signal_main(void *arg)
{
    sigscene *s = arg;
    rf_task *b = rf_spawn_opts(busy, s, &(rf_spawn_options){.name = "busy"});
    rf_yield();
    RFT_CHECK_INT(rf_dump_signal(SIGUSR2, s->fd, 0), 0);
    RFT_CHECK_INT(raise(SIGUSR2), 0);
    /* The loop never sleeps (a task always ready): the request still
     * comes in at a pass end. Bounded by the test's timeout, not here:
     * the signal's thread must first get a CPU. */
    while (!file_has(s->fd, "end of dump"))
        rf_yield();
    RFT_CHECK(file_has(s->fd, "'busy' ready"));
    RFT_CHECK(file_has(s->fd, "'rf-dump' running"));
    s->stop = 1;
    RFT_CHECK_INT(rf_join(b, NULL), 0);
    rf_task_release(b);
    RFT_CHECK_INT(rf_dump_signal(0, 0, 0), 0); /* uninstalled */
    struct sigaction sa;
    sigaction(SIGUSR2, NULL, &sa);
    RFT_CHECK(sa.sa_handler == SIG_DFL);
    return NULL;
}

static void test_dump_on_signal(void **state)
{
    (void)state;
    sigscene s = {.fd = memfd_create("dump", MFD_CLOEXEC)};
    assert_true(s.fd >= 0);
    rft_run(signal_main, &s);
    close(s.fd);
    /* Bad input. */
    assert_int_equal(rf_dump_signal(SIGKILL, 2, 0), -EINVAL);
    assert_int_equal(rf_dump_signal(SIGUSR2, -1, 0), -EINVAL);
    assert_int_equal(rf_dump_signal(SIGUSR2, 2, 0x100), -EINVAL);
}

static void own_handler(int sig) { (void)sig; }

static void test_dump_signal_respects_own_handler(void **state)
{
    (void)state;
    signal(SIGUSR1, own_handler);
    assert_int_equal(rf_dump_signal(SIGUSR1, 2, 0), -EBUSY);
    signal(SIGUSR1, SIG_DFL);
}

/* ---- symbols ---- */

static __attribute__((noinline)) int a_static_function(int x)
{
    return x * 3 + 1;
}

static void test_symbolize_static_function(void **state)
{
    (void)state;
    char buf[256];
    int n = rf_symbolize((const void *)a_static_function, buf, sizeof buf);
    printf("%s\n", buf);
    assert_true(n > 0 && (size_t)n == strlen(buf));
    assert_non_null(strstr(buf, "a_static_function (")); /* no +0x0 */
    assert_non_null(strstr(buf, "test_inspect.c:")); /* file and line */
    /* Truncated, terminated, the full length returned. */
    char small[8];
    assert_int_equal(rf_symbolize((const void *)a_static_function, small, sizeof small), n);
    assert_int_equal(strlen(small), 7);
    assert_int_equal(rf_symbolize((const void *)a_static_function, NULL, 0), n);
    assert_int_equal(rf_symbolize((const void *)a_static_function, NULL, 1), -EINVAL);
    assert_int_equal(a_static_function(1), 4);
}

/* ---- bad input ---- */

static int never(const rf_task_info *in, void *arg)
{
    (void)in;
    (void)arg;
    return 0;
}

static int stop_at_first(const rf_task_info *in, void *arg)
{
    ++*(int *)arg;
    return 42;
}

static void *bad_input_main(void *arg)
{
    (void)arg;
    rf_loop *l = rf_loop_current();
    char *t;
    RFT_CHECK_INT(rf_loop_tasks(NULL, never, NULL), -EINVAL);
    RFT_CHECK_INT(rf_loop_tasks(l, NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_loop_dump(l, -1, 0), -EINVAL);
    RFT_CHECK_INT(rf_loop_dump_text(l, 0x80, &t, NULL), -EINVAL);
    RFT_CHECK_INT(rf_loop_dump_text(l, 0, NULL, NULL), -EINVAL);
    rf_task *a = rf_spawn(never_started, NULL);
    int calls = 0;
    RFT_CHECK_INT(rf_loop_tasks(l, stop_at_first, &calls), 42);
    RFT_CHECK_INT(calls, 1);
    rf_join(a, NULL);
    rf_task_release(a);
    return NULL;
}

static void *other_thread_tasks(void *arg)
{
    return (void *)(intptr_t)rf_loop_tasks(arg, never, NULL);
}

static void test_bad_input(void **state)
{
    (void)state;
    rft_run(bad_input_main, NULL);
    rf_loop *l;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    pthread_t th;
    void *r;
    pthread_create(&th, NULL, other_thread_tasks, l);
    pthread_join(th, &r);
    assert_int_equal((intptr_t)r, -EXDEV);
    assert_int_equal(rf_loop_free(l), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_every_wait_kind),
    cmocka_unit_test(test_backtraces_of_suspended_tasks),
    cmocka_unit_test(test_no_walk_without_stack_room),
    cmocka_unit_test(test_dump_outside_a_task_does_not_walk),
    cmocka_unit_test(test_dumps_in_two_loops_at_once),
    cmocka_unit_test(test_dump_from_another_thread),
    cmocka_unit_test(test_dump_threadsafe_times_out),
    cmocka_unit_test(test_dump_on_signal),
    cmocka_unit_test(test_dump_signal_respects_own_handler),
    cmocka_unit_test(test_symbolize_static_function),
    cmocka_unit_test(test_bad_input),
};

RFT_MAIN(tests)
