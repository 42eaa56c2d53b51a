/*
 * Tasks: records and handles, spawn, the end of a task, join, cancel, names
 * and references. What waits on several tasks (rf_gather, rf_wait_for,
 * as_completed, groups, rf_wait) is in taskset.c.
 *
 * Everything that waits for a task's end is an rf_watch on the task's
 * joiners list; when the task returns, each waiter's fire() runs once (a
 * plain join wakes its task, an as_completed set queues the task and wakes
 * the iterating task). Waiters live on the waiting task's stack or in the
 * iterator, and always unlink themselves before their owner returns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Waiters on a task's stack are linked into another task's list and are
 * always unlinked before their function returns; GCC's dangling-pointer
 * analysis cannot follow the unlink through the wait loop. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif

/* ---- records ---- */

static rf_task *record_get(rf_loop *l)
{
    rf_list *n = rf_list_pop_front(&l->free_tasks);
    if (n) {
        /* With many tasks the next free record is out of the cache: fetch
         * the lines the next spawn writes, and the record after it, whose
         * link that spawn's pop writes. */
        rf_list *f = l->free_tasks.next;
        if (f != &l->free_tasks) {
            const char *r = (const char *)rf_container_of(f, rf_task, node);
            __builtin_prefetch(f->next, 1);
            for (size_t i = 0; i < sizeof(rf_task); i += 64)
                __builtin_prefetch(r + i, 1);
        }
        return rf_container_of(n, rf_task, node);
    }
    rf_task_chunk *c =
        malloc(sizeof(rf_task) * (RF_TASKS_PER_CHUNK + 1));
    if (!c)
        return NULL;
    if (!rf__taggable((char *)c + sizeof(rf_task) * (RF_TASKS_PER_CHUNK + 1))) {
        /* No room above the address for a handle's generation (internal.h):
         * no system maps a heap there unless asked to. */
        free(c);
        return NULL;
    }
    /* The chunk header takes the first slot, keeping records aligned.
     * Published with release: the stall detector's watchdog reads records
     * only in chunks it has seen so (stall.c). */
    c->next = l->chunks;
    __atomic_store_n(&l->chunks, c, __ATOMIC_RELEASE);
    rf_task *t = (rf_task *)c + 1;
    for (int i = 0; i < RF_TASKS_PER_CHUNK; i++) {
        t[i].gen = 0;
        t[i].x = NULL;
        t[i].deadline_timer.bucket = NULL; /* unarmed, and kept so */
        t[i].deadline_timer.w.done = false;
    }
    for (int i = 1; i < RF_TASKS_PER_CHUNK; i++)
        rf_list_push_back(&l->free_tasks, &t[i].node);
    return t;
}

void rf__task_unref(rf_loop *l, rf_task *t)
{
    if (--t->refs == 0 && t->state == RF_DONE) {
        t->gen++; /* every handle to the task that was is stale now */
        if (rf_unlikely(t->x != NULL))
            rf__xtask_free(t);
        rf_list_push_back(&l->free_tasks, &t->node);
    }
}

int rf__stale(const char *call)
{
    static int abort_on_stale = -1;
    if (abort_on_stale < 0) {
        const char *e = getenv("RINGFIBER_ABORT_ON_STALE");
        abort_on_stale = e && *e && strcmp(e, "0") != 0;
    }
    if (abort_on_stale) {
        fprintf(stderr, "ringfiber: %s: stale handle (released, and its "
                        "record reused); aborting (RINGFIBER_ABORT_ON_STALE)\n",
                call);
        abort();
    }
    errno = ESRCH;
    return -ESRCH;
}

void rf__tasks_free_all(rf_loop *l)
{
    rf_task_chunk *c = l->chunks;
    while (c) {
        rf_task_chunk *next = c->next;
        rf_task *t = (rf_task *)c + 1;
        for (int i = 0; i < RF_TASKS_PER_CHUNK; i++)
            if (t[i].x)
                rf__xtask_free(&t[i]); /* a handle never released */
        free(c);
        c = next;
    }
    l->chunks = NULL;
    rf_list_init(&l->free_tasks);
}

/* ---- spawn and the end of a task ---- */

/* t's name becomes the n bytes at name (n < RF_TASK_NAME_MAX): see the
 * comment at rf_task.name for why atomic stores, first byte last. */
void rf__task_name_set(rf_task *t, const char *name, size_t n)
{
    for (size_t i = 1; i < n; i++)
        __atomic_store_n(&t->name[i], name[i], __ATOMIC_RELAXED);
    if (n > 0)
        __atomic_store_n(&t->name[n], '\0', __ATOMIC_RELAXED);
    __atomic_store_n(&t->name[0], n > 0 ? name[0] : '\0', __ATOMIC_RELEASE);
}

rf_task *rf__spawn(rf_loop *l, rf_fn fn, void *arg, const rf_spawn_options *o,
                   void *from)
{
    size_t ss = o ? o->stack_size : 0;
    if (!fn || rf__stack_size_check(ss)) {
        errno = EINVAL;
        return NULL;
    }
    rf_task *t;
    if (rf__rq_reserve(l, l->stats.tasks_alive + 2) != 0 ||
        (t = record_get(l)) == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    /* A default-size stack is promised now and taken at the first run
     * (stack.c, rf__stack_reserve); one of a size of its own is mapped
     * now. */
    bool lazy = rf__stack_pooled(&l->stacks, ss);
    int rc = lazy ? rf__stack_reserve(&l->stacks, t)
                  : rf__stack_get(&l->stacks, t, ss);
    if (rc) {
        rf_list_push_back(&l->free_tasks, &t->node);
        errno = -rc;
        return NULL;
    }
    t->loop = l;
    t->fn = fn;
    t->arg = arg;
    t->result = NULL;
    __atomic_store_n(&t->id, ++l->next_id, __ATOMIC_RELAXED);
    t->refs = 2; /* the caller's handle, and the running task's own */
    t->state = RF_READY;
    t->cancelled = l->draining;
    t->wait_flags = 0;
    t->cancel_woken = false;
    t->status = 0;
    t->deadline = 0;
    t->in_accept = false;
    t->spawned_from = from;
    if (o && o->name)
        rf__task_name_set(t, o->name, strnlen(o->name, RF_TASK_NAME_MAX - 1));
    else
        __atomic_store_n(&t->name[0], '\0', __ATOMIC_RELAXED);
    rf_list_init(&t->joiners);
    if (!lazy)
        rf__ctx_init_task(&t->ctx);
    rf_list_push_back(&l->alive, &t->alive);
    if (rf_unlikely(l->delay_on)) /* RF_LOOP_SCHED_DELAY (metrics.c) */
        t->ready_at = l->delay_now;
    rf__rq_push(l, t);
    RF_STAT_ADD(l->stats.tasks_spawned, 1);
    RF_STAT_ADD(l->stats.tasks_alive, 1);
    return t;
}

/* t runs for the first time (run_next, loop.c): its stack. */
void rf__task_bind(rf_loop *l, rf_task *t)
{
    rf__stack_bind(&l->stacks, t);
    rf__ctx_init_task(&t->ctx);
}

static void task_finish(rf_loop *l, rf_task *t)
{
    t->state = RF_DONE;
    t->status = t->cancelled ? -ECANCELED : 0;
    if (t == l->target)
        l->target_done = true; /* run_until_complete returns */
    rf_list_remove(&t->alive);
    RF_STAT_SUB(l->stats.tasks_alive, 1);
    if (rf_unlikely(t->x != NULL))
        rf__xtask_finish(t); /* rf_done on other loops */
    rf_list *n;
    while ((n = rf_list_pop_front(&t->joiners)) != NULL) {
        rf_watch *w = rf_container_of(n, rf_watch, node);
        w->fire(w, t);
    }
    /* A graceful shutdown waits for the other tasks to end (embed.c). */
    if (rf_unlikely(l->shutdown_task != NULL))
        rf__waiter_done(l, &l->shutdown_w, 0);
    /* Its stack is released by whoever runs next (rf__land). */
    l->dead = t;
}

/* rf__task_entry, rf_spawn and rf_join start cache lines, as rf_yield's
 * halves do (loop.c): with them where the link put them, changes
 * elsewhere in the library moved them within their lines and W2 (pooled
 * stacks) by 4-9% (bench/ab.sh, 2026-12-07), no instruction of theirs
 * changed. */
__attribute__((aligned(64))) void rf__task_entry(transfer_t tr)
{
    rf_loop *l = rf__tls_loop;
    rf__land(l, tr);
    rf_task *t = l->current;
    t->result = t->fn(t->arg);
    /* Its deadline's timer, if armed, leaves its kernel timeout, and the
     * record is left with it unarmed (time.c). */
    if (rf_unlikely(t->deadline != 0))
        rf__deadline_move(l, t, 0, false);
    task_finish(l, t);
    rf__switch(l, &t->ctx, rf__next_after_end(l), true);
    abort(); /* a finished task is never resumed */
}

rf_task *rf_spawn_opts(rf_fn fn, void *arg, const rf_spawn_options *opts)
{
    rf_loop *l = rf__tls_loop;
    if (!l) {
        errno = EPERM;
        return NULL;
    }
    rf_task *t = rf__spawn(l, fn, arg, opts, __builtin_return_address(0));
    return t ? rf__handle(t) : NULL;
}

__attribute__((aligned(64))) rf_task *rf_spawn(rf_fn fn, void *arg)
{
    rf_loop *l = rf__tls_loop;
    if (!l) {
        errno = EPERM;
        return NULL;
    }
    rf_task *t = rf__spawn(l, fn, arg, NULL, __builtin_return_address(0));
    return t ? rf__handle(t) : NULL;
}

rf_task *rf_loop_spawn(rf_loop *loop, rf_fn fn, void *arg,
                       const rf_spawn_options *opts)
{
    int e = rf__owner_errno(loop);
    if (e) {
        errno = e;
        return NULL;
    }
    rf_task *t = rf__spawn(loop, fn, arg, opts, __builtin_return_address(0));
    return t ? rf__handle(t) : NULL;
}

/* ---- waiting for tasks ---- */

void rf__watch_wake(rf_watch *w, rf_task *done)
{
    rf__waiter_done(done->loop, &w->w, 0);
}

/* Common checks of the calls that wait for the task of handle h from a
 * task; *tp receives its record. */
int rf__wait_check(const char *call, rf_task *h, rf_task **tp, rf_loop **lp,
                   rf_task **selfp)
{
    if (!h)
        return -EINVAL;
    rf_task *t = rf__record(h);
    if (!t) {
        rf__stale(call);
        return -ESRCH;
    }
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    if (t->loop != l)
        return -EXDEV;
    if (t == self)
        return -EDEADLK;
    *tp = t;
    *lp = l;
    *selfp = self;
    return 0;
}

__attribute__((aligned(64))) int rf_join(rf_task *h, void **result)
{
    rf_task *t;
    rf_loop *l;
    rf_task *self;
    int rc = rf__wait_check("rf_join", h, &t, &l, &self);
    if (rc == -EXDEV && rf__cross(h))
        return rf__xjoin(h, result, RF_WAIT_ANY, RF_FOREVER);
    if (rc)
        return rc;
    rc = rf__join_wait(l, self, t, RF_WAIT_ANY);
    if (rc)
        return rc;
    if (result)
        *result = t->result;
    return t->status;
}

int rf_join_nocancel(rf_task *h, void **result)
{
    rf_task *t;
    rf_loop *l;
    rf_task *self;
    int rc = rf__wait_check("rf_join_nocancel", h, &t, &l, &self);
    if (rc == -EXDEV && rf__cross(h))
        return rf__xjoin(h, result, 0, RF_FOREVER);
    if (rc)
        return rc;
    rf__join_wait(l, self, t, 0); /* ends only when t is done */
    if (result)
        *result = t->result;
    return t->status;
}

/* ---- cancel, state, names, references ---- */

/* End t's current wait as a cancellation does (-ECANCELED, an operation in
 * flight cancelled in the kernel first), without cancelling t: its later
 * waits are not affected. The graceful shutdown's "stop accepting". */
void rf__interrupt(rf_task *t)
{
    if (t->state == RF_WAITING && (t->wait_flags & RF_WAIT_CANCEL)) {
        t->cancel_woken = true;
        rf__wake(t->loop, t);
    }
}

void rf__cancel(rf_task *t)
{
    t->cancelled = true;
    rf__interrupt(t);
}

int rf_cancel(rf_task *h)
{
    if (!h)
        return -EINVAL;
    rf_task *t = rf__record(h);
    if (!t)
        return rf__stale("rf_cancel");
    if (!rf__on_owner_thread(t->loop))
        return rf__cross(h) && t->x ? rf__xcancel(t) : -EXDEV;
    if (t->state == RF_DONE)
        return -ESRCH;
    rf__cancel(t);
    return 0;
}

/* A task whose record was recycled has returned: true is the answer for
 * the task the stale handle named, and errno says ESRCH. */
bool rf_done(const rf_task *h)
{
    if (!h)
        return false;
    rf_task *t = rf__record(h);
    if (!t) {
        rf__stale("rf_done");
        return true;
    }
    if (rf__cross(h) && t->x && !rf__on_owner_thread(t->loop))
        return rf__xdone(t);
    return t->state == RF_DONE;
}

bool rf_cancelled(const rf_task *h)
{
    if (!h)
        return false;
    rf_task *t = rf__record(h);
    if (!t) {
        rf__stale("rf_cancelled");
        return false;
    }
    return t->cancelled;
}

rf_task *rf_self(void)
{
    rf_task *t = rf__self();
    return t ? rf__handle(t) : NULL;
}

const char *rf_task_name(const rf_task *h)
{
    if (!h) {
        errno = EINVAL;
        return NULL;
    }
    rf_task *t = rf__record(h);
    if (!t) {
        rf__stale("rf_task_name");
        return NULL;
    }
    if (!t->name[0]) {
        /* Default names are made on first use: spawning stays cheap. */
        char buf[RF_TASK_NAME_MAX];
        int n = snprintf(buf, sizeof(buf), "task-%llu",
                         (unsigned long long)t->id);
        if (n >= (int)sizeof(buf))
            n = (int)sizeof(buf) - 1;
        rf__task_name_set((rf_task *)t, buf, (size_t)n);
    }
    return t->name;
}

/* A stale handle holds no reference to give or drop: both are refused
 * (errno ESRCH), and the next call that can return a code with that
 * handle returns -ESRCH. */
void rf_task_retain(rf_task *h)
{
    if (!h)
        return;
    rf_task *t = rf__record(h);
    if (!t) {
        rf__stale("rf_task_retain");
        return;
    }
    if (rf__cross(h) && t->x)
        rf__xretain(t);
    else
        t->refs++;
}

void rf_task_release(rf_task *h)
{
    if (!h)
        return;
    rf_task *t = rf__record(h);
    if (!t) {
        rf__stale("rf_task_release");
        return;
    }
    if (rf__cross(h) && t->x)
        rf__xrelease(t);
    else if (t->refs > 0)
        rf__task_unref(t->loop, t);
}
