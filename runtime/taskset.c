/*
 * What waits on several tasks at once: rf_gather, rf_wait_for (a task and
 * a timer), the as_completed iterator, task groups, asyncio.wait (rf_wait)
 * and rf_task_error, which groups and rf_wait judge a task's end by.
 *
 * Each watches tasks' ends as rf_join does (task.c): an rf_watch on each
 * task's joiners list, whose fire() runs once, in task_finish, as the task
 * returns. Groups and rf_wait do their bookkeeping there, so the waiting
 * task is woken once, when its condition holds, not once per task.
 * Waiters live on the waiting task's stack or in memory it owns (the
 * iterator's, the group's, rf_wait's array), and always unlink themselves
 * before their owner returns.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Waiters on a task's stack are linked into another task's list and are
 * always unlinked before their function returns; GCC's dangling-pointer
 * analysis cannot follow the unlink through the wait loop. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif

/* ---- gather, wait_for ---- */

/* The record of a handle already checked by this call (the caller holds
 * it: it cannot go stale while the call runs). */
static inline rf_task *checked(rf_task *const *handles, size_t i)
{
    return rf__untag(handles[i]);
}

/* With many tasks their records are out of the cache: gather's loops
 * fetch the one they will reach RF_GATHER_AHEAD steps later (its first two
 * lines: the handle's generation and loop, the state and result). */
#define RF_GATHER_AHEAD 16

static inline void gather_prefetch(rf_task *const *handles, size_t i, size_t n)
{
    if (i + RF_GATHER_AHEAD < n) {
        const char *r = rf__untag(handles[i + RF_GATHER_AHEAD]);
        __builtin_prefetch(r);
        __builtin_prefetch(r + 64);
    }
}

/* Task i, joined: its result, and its status if rc has none yet. */
static inline void gather_take(const rf_task *t, void **results, size_t i,
                               int *rc)
{
    if (results)
        results[i] = t->result;
    if (!*rc)
        *rc = t->status;
}

int rf_gather(rf_task *const *handles, size_t n, void **results)
{
    if (n && !handles)
        return -EINVAL;
    rf_loop *l = NULL;
    rf_task *self = NULL;
    for (size_t i = 0; i < n; i++) {
        gather_prefetch(handles, i, n);
        rf_task *t;
        int rc = rf__wait_check("rf_gather", handles[i], &t, &l, &self);
        if (rc)
            return rc;
    }
#define tasks(i) checked(handles, i)
    if (n == 0)
        return rf__self() ? 0 : -EPERM;
    int rc = 0;
    /* A caller already cancelled (or past its deadline) gets -ECANCELED
     * (-ETIMEDOUT) from the first join that would wait, and goes through
     * the same path as a cancellation during the wait: what it gathers is
     * cancelled and awaited, never left running behind its back. Each
     * task's result is taken as soon as it is joined. */
    size_t i = 0;
    for (; i < n; i++) {
        gather_prefetch(handles, i, n);
        int wrc = rf__join_wait(l, self, tasks(i), RF_WAIT_ANY);
        if (wrc != 0) {
            /* The gathering task was cancelled (or reached its deadline):
             * like asyncio.gather, cancel what it gathers, and wait until
             * all of it has returned. */
            for (size_t j = i; j < n; j++)
                if (tasks(j)->state != RF_DONE)
                    rf__cancel(tasks(j));
            for (size_t j = i; j < n; j++)
                rf__join_wait(l, self, tasks(j), 0);
            rc = wrc;
            break;
        }
        gather_take(tasks(i), results, i, &rc);
    }
    for (; i < n; i++) /* those joined after a cancellation */
        gather_take(tasks(i), results, i, &rc);
    return rc;
#undef tasks
}

int rf_wait_for(rf_task *h, uint64_t timeout_ns, void **result)
{
    rf_task *t;
    rf_loop *l;
    rf_task *self;
    int rc = rf__wait_check("rf_wait_for", h, &t, &l, &self);
    if (rc == -EXDEV && rf__cross(h))
        return rf__xjoin(h, result, RF_WAIT_ANY, timeout_ns);
    if (rc)
        return rc;
    if (t->state != RF_DONE) {
        /* A join bounded by the timeout as by a deadline (time.c): the
         * wait ends on t's end, the timeout, the caller's own deadline or
         * its cancellation, whichever comes first. Sticky cancellation
         * and a deadline already past end it at once. */
        uint64_t saved = self->deadline;
        if (timeout_ns != RF_FOREVER)
            saved = rf__deadline_narrow(l, self, rf__time_after(timeout_ns));
        rc = rf__join_wait(l, self, t, RF_WAIT_ANY);
        rf__deadline_restore(l, self, saved);
        if (t->state != RF_DONE) {
            /* Cancel t and let it unwind before returning, as
             * asyncio.wait_for does. Whatever ended the wait (a timer
             * that could not be armed included), t has returned when
             * this call does. */
            rf__cancel(t);
            rf__join_wait(l, self, t, 0);
        }
    }
    if (result)
        *result = t->result;
    return rc ? rc : t->status;
}

/* ---- as_completed ---- */

typedef struct ac_impl ac_impl;

typedef struct ac_entry {
    rf_watch w;
    rf_list done;
    rf_task *t;
    ac_impl *ac;
} ac_entry;

struct ac_impl {
    ac_entry *entries;
    size_t n;
    size_t remaining;
    rf_waiter w; /* the task in rf_as_completed_next: done at each end */
    rf_list done;
};

_Static_assert(sizeof(ac_impl) <= sizeof(rf_as_completed),
               "rf_as_completed storage too small");

static void ac_fire(rf_watch *w, rf_task *done)
{
    ac_entry *e = rf_container_of(w, ac_entry, w);
    rf_list_push_back(&e->ac->done, &e->done);
    rf__waiter_done(done->loop, &e->ac->w, 0);
}

/*
 * An iterator's state is told by its list head: a live one's points to
 * itself or to finished entries, never to NULL; one that failed to
 * initialise or was finished (fini) has it NULL, so that a call on it is
 * an error rather than "no more tasks".
 */
static bool ac_live(const ac_impl *ac) { return ac->done.next != NULL; }

int rf_as_completed_init(rf_as_completed *storage, rf_task *const *tasks,
                         size_t n)
{
    if (!storage)
        return -EINVAL;
    ac_impl *ac = (ac_impl *)storage;
    memset(ac, 0, sizeof(*ac)); /* not live until the end */
    if (n && !tasks)
        return -EINVAL;
    rf_loop *l = rf__tls_loop;
    if (!l || !l->current)
        return -EPERM;
    for (size_t i = 0; i < n; i++) {
        if (!tasks[i])
            return -EINVAL;
        rf_task *t = rf__record(tasks[i]);
        if (!t)
            return rf__stale("rf_as_completed_init");
        if (t->loop != l)
            return -EXDEV;
    }
    if (n) {
        ac->entries = calloc(n, sizeof(ac_entry));
        if (!ac->entries)
            return -ENOMEM;
    }
    rf_list_init(&ac->done);
    ac->n = ac->remaining = n;
    for (size_t i = 0; i < n; i++) {
        ac_entry *e = &ac->entries[i];
        e->t = checked(tasks, i);
        e->ac = ac;
        e->w.fire = ac_fire;
        rf_list_init(&e->w.node);
        rf_list_init(&e->done);
        if (e->t->state == RF_DONE)
            rf_list_push_back(&ac->done, &e->done);
        else
            rf_list_push_back(&e->t->joiners, &e->w.node);
    }
    return 0;
}

int rf_as_completed_next(rf_as_completed *storage, rf_task **t,
                         void **result, int *status)
{
    ac_impl *ac = (ac_impl *)storage;
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!ac || !t)
        return -EINVAL;
    *t = NULL;
    if (!ac_live(ac))
        return rf__stale("rf_as_completed_next");
    if (!self)
        return -EPERM;
    if (ac->remaining == 0)
        return 0;
    while (rf_list_empty(&ac->done)) {
        int rc = rf__waiter_next(l, self, &ac->w, RF_WAIT_ANY, RF_WAIT_ON_TASKS,
                                 ac);
        if (rc < 0 && rf_list_empty(&ac->done))
            return rc;
    }
    ac_entry *e = rf_container_of(rf_list_pop_front(&ac->done), ac_entry, done);
    ac->remaining--;
    if (result)
        *result = e->t->result;
    if (status)
        *status = e->t->status;
    *t = rf__handle(e->t);
    return 1;
}

void rf_as_completed_fini(rf_as_completed *storage)
{
    ac_impl *ac = (ac_impl *)storage;
    if (!ac || !ac_live(ac))
        return;
    for (size_t i = 0; i < ac->n; i++)
        rf_list_remove(&ac->entries[i].w.node);
    free(ac->entries);
    memset(ac, 0, sizeof(*ac));
}

/* ---- a task's error: what groups and rf_wait judge an end by ---- */

/* rf_task_error of a record. */
static int task_error(const rf_task *t)
{
    if (t->state != RF_DONE)
        return 0;
    if (RF_IS_ERR_PTR(t->result))
        return (int)(intptr_t)t->result;
    return t->status;
}

int rf_task_error(const rf_task *h)
{
    if (!h)
        return -EINVAL;
    rf_task *t = rf__record(h);
    return t ? task_error(t) : rf__stale("rf_task_error");
}

/* ---- group ---- */

typedef struct group_impl group_impl;

typedef struct group_entry {
    rf_watch w;  /* on the member's joiners */
    rf_list node; /* group_impl.members */
    rf_task *t;   /* the group's reference */
    group_impl *g;
} group_entry;

struct group_impl {
    rf_list members;
    size_t running;  /* members not yet returned */
    rf_task *failed; /* the first member that failed */
    int error;       /* its rf_task_error */
    rf_waiter w;     /* the task in rf_group_wait: done when none runs */
};

_Static_assert(sizeof(group_impl) <= sizeof(rf_group), "rf_group too small");

static void group_cancel_all(group_impl *g)
{
    for (rf_list *n = g->members.next; n != &g->members; n = n->next) {
        group_entry *m = rf_container_of(n, group_entry, node);
        if (m->t->state != RF_DONE)
            rf__cancel(m->t);
    }
}

static void group_fire(rf_watch *w, rf_task *done)
{
    group_entry *m = rf_container_of(w, group_entry, w);
    group_impl *g = m->g;
    g->running--;
    int err = task_error(done);
    if (err && !g->failed) {
        g->failed = done;
        g->error = err;
        group_cancel_all(g);
    }
    if (g->running == 0)
        rf__waiter_done(done->loop, &g->w, 0);
}

/* The loop of g's members, NULL if it has none. */
static rf_loop *group_loop(group_impl *g)
{
    if (rf_list_empty(&g->members))
        return NULL;
    return rf_container_of(g->members.next, group_entry, node)->t->loop;
}

int rf_group_init(rf_group *storage)
{
    group_impl *g = (group_impl *)storage;
    if (!g)
        return -EINVAL;
    memset(g, 0, sizeof(*g));
    rf_list_init(&g->members);
    return 0;
}

rf_task *rf_group_spawn(rf_group *storage, rf_fn fn, void *arg,
                        const rf_spawn_options *opts)
{
    group_impl *g = (group_impl *)storage;
    if (!g || !fn) {
        errno = EINVAL;
        return NULL;
    }
    rf_loop *l = rf__tls_loop;
    if (!l) {
        errno = EPERM;
        return NULL;
    }
    rf_loop *gl = group_loop(g);
    if (gl && gl != l) {
        errno = EXDEV;
        return NULL;
    }
    if (g->failed) {
        errno = ECANCELED;
        return NULL;
    }
    group_entry *m = malloc(sizeof(*m));
    if (!m) {
        errno = ENOMEM;
        return NULL;
    }
    rf_task *t = rf__spawn(l, fn, arg, opts, __builtin_return_address(0));
    if (!t) {
        int e = errno;
        free(m);
        errno = e;
        return NULL;
    }
    m->t = t;
    m->g = g;
    m->w.fire = group_fire;
    m->w.w.task = NULL;
    rf_list_push_back(&t->joiners, &m->w.node);
    rf_list_push_back(&g->members, &m->node);
    g->running++;
    return rf__handle(t);
}

int rf_group_wait(rf_group *storage)
{
    group_impl *g = (group_impl *)storage;
    if (!g)
        return -EINVAL;
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    rf_loop *gl = group_loop(g);
    if (gl && gl != l)
        return -EXDEV;
    if (g->w.task)
        return -EBUSY;
    int rc = 0;
    while (g->running) {
        rc = rf__waiter_next(l, self, &g->w, RF_WAIT_ANY, RF_WAIT_ON_TASKS, g);
        if (rc < 0 && g->running) {
            /* The caller gives up (cancelled, deadline): so does the
             * group, and its members do not outlive the wait. */
            group_cancel_all(g);
            while (g->running)
                rf__waiter_next(l, self, &g->w, 0, RF_WAIT_ON_TASKS, g);
            break;
        }
        rc = 0;
    }
    return rc ? rc : g->error;
}

int rf_group_cancel(rf_group *storage)
{
    group_impl *g = (group_impl *)storage;
    if (!g)
        return -EINVAL;
    rf_loop *gl = group_loop(g);
    if (gl && !rf__on_owner_thread(gl))
        return -EXDEV;
    group_cancel_all(g);
    return 0;
}

rf_task *rf_group_failed(const rf_group *storage)
{
    const group_impl *g = (const group_impl *)storage;
    return g && g->failed ? rf__handle(g->failed) : NULL;
}

void rf_group_fini(rf_group *storage)
{
    group_impl *g = (group_impl *)storage;
    if (!g || !g->members.next)
        return;
    rf_list *n;
    while ((n = rf_list_pop_front(&g->members)) != NULL) {
        group_entry *m = rf_container_of(n, group_entry, node);
        rf_list_remove(&m->w.node);
        if (m->t->state != RF_DONE)
            rf__cancel(m->t);
        rf__task_unref(m->t->loop, m->t);
        free(m);
    }
    memset(g, 0, sizeof(*g));
}

/* ---- asyncio.wait ---- */

typedef struct wait_set {
    rf_waiter w; /* done when the condition is met */
    size_t n, ndone, nfailed;
    int mode;
} wait_set;

typedef struct wait_entry {
    rf_watch w;
    wait_set *ws;
} wait_entry;

static bool wait_met(const wait_set *ws)
{
    switch (ws->mode) {
    case RF_FIRST_COMPLETED:
        return ws->ndone > 0;
    case RF_FIRST_EXCEPTION:
        return ws->nfailed > 0 || ws->ndone == ws->n;
    default:
        return ws->ndone == ws->n;
    }
}

static void wait_fire(rf_watch *w, rf_task *done)
{
    wait_set *ws = rf_container_of(w, wait_entry, w)->ws;
    ws->ndone++;
    if (task_error(done))
        ws->nfailed++;
    if (wait_met(ws) && !ws->w.done)
        rf__waiter_done(done->loop, &ws->w, 0);
}

/* Waits until ws is met, the timeout passes (a deadline narrowed for the
 * wait, time.c) or the wait ends (cancellation, the caller's deadline);
 * 0 or the reason it ended. */
static int wait_watch(rf_loop *l, rf_task *self, wait_set *ws,
                      rf_task *const *tasks, wait_entry *e,
                      uint64_t timeout_ns)
{
    for (size_t i = 0; i < ws->n; i++) {
        e[i].ws = ws;
        e[i].w.fire = wait_fire;
        e[i].w.w.task = NULL;
        rf_list_init(&e[i].w.node);
        rf_task *t = rf__untag(tasks[i]); /* checked by rf_wait */
        if (t->state != RF_DONE)
            rf_list_push_back(&t->joiners, &e[i].w.node);
    }
    uint64_t saved = self->deadline;
    if (timeout_ns != RF_FOREVER)
        saved = rf__deadline_narrow(l, self, rf__time_after(timeout_ns));
    int rc = rf__waiter_wait(l, self, &ws->w, RF_WAIT_ANY, RF_WAIT_ON_TASKS, ws);
    ws->w.task = NULL;
    rf__deadline_restore(l, self, saved);
    for (size_t i = 0; i < ws->n; i++)
        rf_list_remove(&e[i].w.node);
    return wait_met(ws) ? 0 : rc;
}

int rf_wait(rf_task *const *tasks, size_t n, int mode, uint64_t timeout_ns,
            rf_task **done, size_t *ndone, rf_task **pending,
            size_t *npending)
{
    if (!tasks || n == 0 ||
        (mode != RF_FIRST_COMPLETED && mode != RF_FIRST_EXCEPTION &&
         mode != RF_ALL_COMPLETED))
        return -EINVAL;
    if (!rf__self())
        return -EPERM;
    rf_loop *l = NULL;
    rf_task *self = NULL;
    wait_set ws = {.n = n, .mode = mode};
    for (size_t i = 0; i < n; i++) {
        rf_task *t;
        int rc = rf__wait_check("rf_wait", tasks[i], &t, &l, &self);
        if (rc)
            return rc;
        if (t->state == RF_DONE) {
            ws.ndone++;
            if (task_error(t))
                ws.nfailed++;
        }
    }
    int rc = 0;
    if (!wait_met(&ws)) {
        if (self->cancelled)
            rc = -ECANCELED;
        else if (timeout_ns == 0)
            rc = -ETIMEDOUT;
    }
    if (rc == 0 && !wait_met(&ws)) {
        /* One watcher per task; a small set keeps them on the stack. */
        wait_entry small[8];
        wait_entry *e = small;
        if (n > sizeof small / sizeof small[0]) {
            e = malloc(n * sizeof(*e));
            if (!e)
                return -ENOMEM;
        }
        rc = wait_watch(l, self, &ws, tasks, e, timeout_ns);
        if (e != small)
            free(e);
        if (rc == -EBUSY || rc == -ENOMEM)
            return rc;
    }
    size_t nd = 0, np = 0;
    for (size_t i = 0; i < n; i++) {
        if (((rf_task *)rf__untag(tasks[i]))->state == RF_DONE) {
            if (done)
                done[nd] = tasks[i];
            nd++;
        } else {
            if (pending)
                pending[np] = tasks[i];
            np++;
        }
    }
    if (ndone)
        *ndone = nd;
    if (npending)
        *npending = np;
    return rc;
}