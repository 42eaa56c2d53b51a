/*
 * Embedding a loop in a program that has threads and an event loop of its
 * own.
 *
 * Two ways in:
 *  - A loop on a thread of its own, fed from other threads: every
 *    rf_loop_*_threadsafe call is a message in the loop's mailbox
 *    (remote.c), the one way into a loop from another thread. A spawn's
 *    message is allocated by the caller and freed by the loop once it has
 *    run; a loop freed with mail still in its box runs that mail first, so
 *    an accepted spawn always runs its function exactly once.
 *  - A loop driven by the host's event loop: rf_loop_fd() is an eventfd
 *    registered with the ring (IORING_REGISTER_EVENTFD), and
 *    rf_loop_run_once() runs one pass (the one scheduler, loop.c, in its
 *    host modes).
 *
 * Why an eventfd and not the ring's own fd: with IORING_SETUP_DEFER_TASKRUN
 * a completion is only queued as task work for the owning thread, and is
 * posted to the CQ when that thread next enters the kernel to ask for
 * events. A poll on the ring fd sees the CQ, so a host sleeping in poll()
 * on it never wakes for a timer that fired meanwhile (measured on 6.18).
 * The registered eventfd is signalled when that task work is queued, which
 * is exactly "the loop has work". The kernel posts at most a few task
 * works per io_uring_enter; it keeps IORING_SQ_TASKRUN set while some
 * remain, and rf_loop_run_once looks at that flag before it returns.
 *
 * The gate: rf_loop_free must not race with a thread that is in the middle
 * of posting (a message pushed after the last drain would be lost, and
 * its eventfd write would hit a closed fd). Each threadsafe call counts
 * itself in l->gate for the few instructions of its post; rf_loop_free
 * closes the gate and waits for the count to fall to zero before it
 * drains the mailbox a last time.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

/* ---- the gate ---- */

#define RF_GATE_FREEING 1ULL  /* rf_loop_free: every threadsafe call refused */
#define RF_GATE_SHUTDOWN 2ULL /* shutdown requested: spawns refused */
#define RF_GATE_ONE 4ULL      /* one threadsafe call in progress */

static int gate_enter(rf_loop *l, uint64_t refused)
{
    uint64_t v = __atomic_add_fetch(&l->gate, RF_GATE_ONE, __ATOMIC_SEQ_CST);
    if (v & refused) {
        __atomic_sub_fetch(&l->gate, RF_GATE_ONE, __ATOMIC_RELEASE);
        return -ESHUTDOWN;
    }
    return 0;
}

static void gate_leave(rf_loop *l)
{
    __atomic_sub_fetch(&l->gate, RF_GATE_ONE, __ATOMIC_RELEASE);
}

void rf__embed_close(rf_loop *l)
{
    __atomic_fetch_or(&l->gate, RF_GATE_FREEING | RF_GATE_SHUTDOWN,
                      __ATOMIC_SEQ_CST);
    /* A post in progress takes a few instructions and one write(). */
    while (__atomic_load_n(&l->gate, __ATOMIC_ACQUIRE) >= RF_GATE_ONE)
        sched_yield();
}

void rf__embed_fini(rf_loop *l)
{
    /* The ring that had it registered is gone. */
    if (l->poll_efd >= 0)
        close(l->poll_efd);
    __atomic_store_n(&l->poll_efd, -1, __ATOMIC_RELAXED);
}

/* ---- spawn and call from any thread ---- */

/* Post a user's request m (malloc'd by the caller) through the gate, unless
 * the gate refuses it (the bits of `refused`) or the mailbox is full; on
 * an error m is freed and the caller's arg is still the caller's. */
static int post_request(rf_loop *l, rf_remote_msg *m, uint64_t refused)
{
    int rc = gate_enter(l, refused);
    if (rc == 0) {
        rc = rf__remote_post_counted(l, m);
        gate_leave(l);
    }
    if (rc)
        free(m);
    return rc;
}

/* A cross-loop request from a task (cross.c): refused (-ESHUTDOWN) once
 * the loop is being freed, and, for a spawn, once a shutdown was asked
 * for. Not counted in the mailbox's bound: each has a task waiting on it
 * (or lives in a task record) on the other side. */
int rf__post_gated(rf_loop *l, rf_remote_msg *m, bool spawn)
{
    int rc = gate_enter(l, spawn ? RF_GATE_FREEING | RF_GATE_SHUTDOWN
                                 : RF_GATE_FREEING);
    if (rc == 0) {
        rf__remote_post(l, m);
        gate_leave(l);
    }
    return rc;
}

typedef struct spawn_msg {
    rf_remote_msg m;
    rf_fn fn;
    void *arg;
    size_t stack_size;
    void *from; /* rf_task_info.spawned_from */
    bool named;
    char name[RF_TASK_NAME_MAX];
} spawn_msg;

static void spawn_run(rf_loop *l, rf_remote_msg *m)
{
    spawn_msg *s = (spawn_msg *)m;
    rf_spawn_options o = {.name = s->named ? s->name : NULL,
                          .stack_size = s->stack_size};
    rf_task *t = rf__spawn(l, s->fn, s->arg, &o, s->from);
    if (t) {
        rf__task_unref(l, t); /* detached: nobody holds a handle */
    } else {
        RF_STAT_ADD(l->stats.spawn_failed, 1);
        fprintf(stderr, "ringfiber: rf_loop_spawn_threadsafe: the task "
                        "could not be created on the loop's thread (%s); "
                        "it does not run\n", rf_strerror(-errno));
    }
    free(s);
}

int rf_loop_spawn_threadsafe(rf_loop *loop, rf_fn fn, void *arg,
                             const rf_spawn_options *opts)
{
    if (!loop || !fn)
        return -EINVAL;
    size_t ss = opts ? opts->stack_size : 0;
    if (rf__stack_size_check(ss))
        return -EINVAL;
    spawn_msg *s = malloc(sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->m.run = spawn_run;
    s->fn = fn;
    s->arg = arg;
    s->stack_size = ss;
    s->from = __builtin_return_address(0);
    s->named = opts && opts->name;
    if (s->named) {
        size_t n = strnlen(opts->name, RF_TASK_NAME_MAX - 1);
        memcpy(s->name, opts->name, n);
        s->name[n] = '\0';
    }
    return post_request(loop, &s->m, RF_GATE_FREEING | RF_GATE_SHUTDOWN);
}

typedef struct call_msg {
    rf_remote_msg m;
    rf_call_fn fn;
    void *arg;
} call_msg;

static void call_run(rf_loop *l, rf_remote_msg *m)
{
    call_msg *c = (call_msg *)m;
    /* Mail may be read at a pass end, in the context of the task that is
     * leaving; fn runs as if in the scheduler, outside any task. */
    rf_task *cur = l->current;
    rf__set_current(l, NULL);
    c->fn(c->arg);
    rf__set_current(l, cur);
    free(c);
}

int rf_loop_call_threadsafe(rf_loop *loop, rf_call_fn fn, void *arg)
{
    if (!loop || !fn)
        return -EINVAL;
    call_msg *c = malloc(sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->m.run = call_run;
    c->fn = fn;
    c->arg = arg;
    return post_request(loop, &c->m, RF_GATE_FREEING);
}

/* ---- stop ---- */

static void stop_run(rf_loop *l, rf_remote_msg *m)
{
    (void)m;
    /* Cleared first: a later request posts the message again. */
    __atomic_store_n(&l->stop_posted, 0, __ATOMIC_RELEASE);
    if (!l->draining)
        l->stop = true;
}

int rf_loop_stop_threadsafe(rf_loop *loop)
{
    if (!loop)
        return -EINVAL;
    int rc = gate_enter(loop, RF_GATE_FREEING);
    if (rc)
        return rc;
    /* The message lives in the loop: at most one is in the mailbox, and
     * requests made meanwhile are the same request. */
    uint32_t no = 0;
    if (__atomic_compare_exchange_n(&loop->stop_posted, &no, 1, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        loop->stop_msg.run = stop_run;
        rf__remote_post(loop, &loop->stop_msg);
    }
    gate_leave(loop);
    return 0;
}

/* ---- graceful shutdown ---- */

/*
 * The task a run of the loop waits for (rf_run's main, the task of
 * rf_loop_run_until_complete) is never cancelled by a shutdown: it is the
 * one that decides when the program ends, typically by returning right
 * after asking for the shutdown (rf_run then lets the shutdown finish).
 */
static bool spared(const rf_loop *l, const rf_task *t)
{
    return t == l->shutdown_task || t == l->target;
}

static void cancel_others(rf_loop *l)
{
    for (rf_list *n = l->alive.next; n != &l->alive; n = n->next) {
        rf_task *t = rf_container_of(n, rf_task, alive);
        if (!spared(l, t))
            rf__cancel(t);
    }
}

/* Tasks alive that the shutdown waits for. */
static uint64_t others_alive(const rf_loop *l)
{
    uint64_t n = l->stats.tasks_alive;
    n -= l->shutdown_task != NULL;
    n -= l->target != NULL && l->target->state != RF_DONE;
    return n;
}

/* The end of a shutdown: a loop running without a target returns (a run
 * with one returns when its target does). */
static void shutdown_end(rf_loop *l)
{
    l->shutdown_task = NULL;
    if (l->group_draining)
        rf__loops_drained(l); /* the group stops its loops together */
    else if (!l->draining && !l->target)
        l->stop = true;
}

/* Phases 2 and 3, in a task of their own so that they can wait. */
static void *shutdown_main(void *arg)
{
    rf_loop *l = arg;
    rf_task *self = l->current;
    /* 2: the other tasks have until the end of the grace (counted from
     * phase 1, this task's deadline) to return on their own; each end
     * makes l->shutdown_w done (task.c). A cancellation (rf_loop_free)
     * cuts the grace short; so does a deadline timer that cannot be armed
     * (no SQE, no memory). */
    uint64_t saved = rf__deadline_narrow(l, self, l->shutdown_end);
    while (others_alive(l) > 0)
        if (rf__waiter_next(l, self, &l->shutdown_w, RF_WAIT_ANY,
                            RF_WAIT_ON_SHUTDOWN, NULL) < 0)
            break;
    rf__deadline_restore(l, self, saved);
    /* 3: cancel what is left, and wait until it has all unwound. */
    cancel_others(l);
    while (others_alive(l) > 0)
        rf__waiter_next(l, self, &l->shutdown_w, 0, RF_WAIT_ON_SHUTDOWN, NULL);
    /* Nothing of this task is left in the ring: the loop may return. */
    shutdown_end(l);
    return NULL;
}

/* Phase 1, on the loop's thread. */
void rf__shutdown_begin(rf_loop *l, uint64_t grace_ns)
{
    /* Stop accepting: accepts in progress end (-ESHUTDOWN) and later ones
     * are refused; their tasks are not cancelled, only interrupted. */
    l->accept_stopped = true;
    for (rf_list *n = l->alive.next; n != &l->alive; n = n->next) {
        rf_task *t = rf_container_of(n, rf_task, alive);
        if (t->in_accept)
            rf__interrupt(t);
    }
    rf_event_set(&l->shutdown_ev);
    rf_spawn_options o = {.name = "rf-shutdown"};
    rf_task *t = rf__spawn(l, shutdown_main, l, &o, NULL);
    if (!t) {
        /* No memory for the task that waits: no grace, then. */
        fprintf(stderr, "ringfiber: graceful shutdown: %s; cancelling "
                        "every task now\n", rf_strerror(-errno));
        cancel_others(l);
        shutdown_end(l);
        return;
    }
    l->shutdown_end = rf__time_after(grace_ns); /* saturates */
    l->shutdown_task = t;
    rf__task_unref(l, t);
}

static void shutdown_run(rf_loop *l, rf_remote_msg *m)
{
    (void)m;
    rf__shutdown_begin(l, l->shutdown_grace);
}

int rf_loop_shutdown(rf_loop *loop, uint64_t grace_ns)
{
    if (!loop)
        return -EINVAL;
    if (!rf__on_owner_thread(loop))
        return -EXDEV;
    uint64_t old = __atomic_fetch_or(&loop->gate, RF_GATE_SHUTDOWN,
                                     __ATOMIC_SEQ_CST);
    if (old & RF_GATE_SHUTDOWN)
        return (old & RF_GATE_FREEING) ? -ESHUTDOWN : -EALREADY;
    rf__shutdown_begin(loop, grace_ns);
    return 0;
}

rf_event *rf_loop_shutdown_event(rf_loop *loop)
{
    int e = rf__owner_errno(loop);
    if (e) {
        errno = e;
        return NULL;
    }
    return &loop->shutdown_ev;
}

int rf_loop_shutdown_threadsafe(rf_loop *loop, uint64_t grace_ns)
{
    if (!loop)
        return -EINVAL;
    int rc = gate_enter(loop, RF_GATE_FREEING);
    if (rc)
        return rc;
    uint64_t old = __atomic_fetch_or(&loop->gate, RF_GATE_SHUTDOWN,
                                     __ATOMIC_SEQ_CST);
    if (old & RF_GATE_SHUTDOWN) {
        rc = -EALREADY;
    } else {
        loop->shutdown_grace = grace_ns; /* published by the post */
        loop->shutdown_msg.run = shutdown_run;
        rf__remote_post(loop, &loop->shutdown_msg);
    }
    gate_leave(loop);
    return rc;
}

/* ---- driven by the host's event loop ---- */

int rf_loop_fd(rf_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (!rf__on_owner_thread(loop))
        return -EXDEV;
    if (loop->poll_efd >= 0)
        return loop->poll_efd;
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = io_uring_register_eventfd(&loop->ring, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    /* Born readable: tasks spawned before now have not run yet. */
    uint64_t one = 1;
    (void)!write(fd, &one, sizeof(one));
    __atomic_store_n(&loop->poll_efd, fd, __ATOMIC_SEQ_CST);
    return fd;
}

int rf_loop_timeout_ms(const rf_loop *loop, int *timeout_ms)
{
    if (!loop || !timeout_ms)
        return -EINVAL;
    if (!rf__on_owner_thread(loop))
        return -EXDEV;
    *timeout_ms = rf__loop_work_ready((rf_loop *)loop) ? 0 : -1;
    return 0;
}
