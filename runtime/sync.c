/*
 * Coordination between the tasks of a loop: queue, event, mutex,
 * semaphore, condition (this part), task groups and asyncio.wait (below).
 *
 * Every object keeps a FIFO list of waiters. A waiter is a record on the
 * waiting task's stack; the task that makes progress possible unlinks the
 * first waiter, hands it what it waited for (an item, the lock, a permit)
 * and wakes it with rf__wake. The waiter then only reads its record: it
 * never competes again for what it was given. That is what makes the
 * race "woken by a put, then cancelled before it ran" harmless: the item
 * is already the waiter's, and the wait returns it (the cancellation
 * shows at the next suspending call, as everywhere in the runtime). A
 * waiter that was not handed anything and whose wait ends (cancellation,
 * deadline) unlinks itself before it returns.
 *
 * Objects do not remember a loop: while tasks wait on one, the loop of
 * its first waiter is the object's loop, which is all the cross-loop
 * checks need, and an object with nobody waiting can move between loops
 * (a global queue used by two successive rf_run calls, say).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Waiters on a task's stack are linked into an object's list and are
 * always unlinked before their function returns; GCC's dangling-pointer
 * analysis cannot follow the unlink through the wait loop. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif

/* ---- waiters ---- */

typedef struct sync_waiter {
    rf_list node;
    rf_task *task;
    void *item;  /* a queue put's item; what a get is handed */
    int granted; /* 0: waiting; 1: handed what it waited for; < 0: error */
} sync_waiter;

static inline sync_waiter *waiter_first(rf_list *h)
{
    return rf_list_empty(h) ? NULL : rf_container_of(h->next, sync_waiter, node);
}

/* Hand w its result and make it ready. */
static inline void waiter_grant(sync_waiter *w, int res)
{
    rf_list_remove(&w->node);
    w->granted = res;
    rf__wake(w->task->loop, w->task);
}

/* Wake every waiter of h with res, in one pass. */
static void waiters_grant_all(rf_list *h, int res)
{
    sync_waiter *w;
    while ((w = waiter_first(h)) != NULL)
        waiter_grant(w, res);
}

/*
 * The caller of a call that may wake waiters of h: a task of their loop,
 * or code on that loop's thread outside any task. 0 or -EXDEV.
 */
static inline int waker_check(rf_list *h)
{
    sync_waiter *w = waiter_first(h);
    if (!w)
        return 0;
    rf_loop *wl = w->task->loop;
    rf_loop *l = rf__tls_loop;
    if (l == wl)
        return 0;
    return !l && rf__on_owner_thread(wl) ? 0 : -EXDEV;
}

/* The calling task, for a call that may wait on h: 0, -EPERM, -EXDEV. */
static inline int waiter_check(rf_list *h, rf_loop **lp, rf_task **selfp)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    sync_waiter *w = waiter_first(h);
    if (w && w->task->loop != l)
        return -EXDEV;
    *lp = l;
    *selfp = self;
    return 0;
}

/*
 * Wait at the back of h until handed something (returns w->granted: 0 for
 * success, or the object's error) or until the wait ends on cancellation
 * or the deadline (how: RF_WAIT_*), having left h.
 */
static int waiter_wait(rf_loop *l, rf_task *self, rf_list *h, sync_waiter *w,
                       unsigned how)
{
    w->task = self;
    w->granted = 0;
    rf_list_push_back(h, &w->node);
    for (;;) {
        int rc = rf__wait(l, self, how);
        if (w->granted)
            return w->granted > 0 ? 0 : w->granted;
        if (rc < 0) {
            rf_list_remove(&w->node);
            return rc;
        }
    }
}

/* ---- queue ---- */

typedef struct queue_impl {
    void **buf;
    uint32_t cap, head, count;
    bool owned;  /* buf was allocated by init */
    bool closed;
    uint64_t unfinished; /* put and not yet task_done */
    rf_list getters, putters, joiners;
} queue_impl;

_Static_assert(sizeof(queue_impl) <= sizeof(rf_queue), "rf_queue too small");

int rf_queue_init(rf_queue *storage, size_t capacity, void **items)
{
    if (!storage || rf__size_check(capacity, 0, RF_QUEUE_MAX))
        return -EINVAL;
    queue_impl *q = (queue_impl *)storage;
    memset(q, 0, sizeof(*q));
    rf_list_init(&q->getters);
    rf_list_init(&q->putters);
    rf_list_init(&q->joiners);
    q->cap = (uint32_t)capacity;
    q->buf = items;
    if (!items && capacity) {
        q->buf = malloc(capacity * sizeof(void *));
        if (!q->buf)
            return -ENOMEM;
        q->owned = true;
    }
    return 0;
}

int rf_queue_fini(rf_queue *storage)
{
    queue_impl *q = (queue_impl *)storage;
    if (!q)
        return -EINVAL;
    if (!rf_list_empty(&q->getters) || !rf_list_empty(&q->putters) ||
        !rf_list_empty(&q->joiners))
        return -EBUSY;
    if (q->owned)
        free(q->buf);
    memset(q, 0, sizeof(*q));
    return 0;
}

static inline void queue_push(queue_impl *q, void *item)
{
    uint32_t i = q->head + q->count;
    if (i >= q->cap)
        i -= q->cap;
    q->buf[i] = item;
    q->count++;
}

static inline void *queue_pop(queue_impl *q)
{
    void *item = q->buf[q->head];
    if (++q->head == q->cap)
        q->head = 0;
    q->count--;
    return item;
}

/* Put without waiting: 0, -EAGAIN (full), -EPIPE. The caller checked
 * waker_check(&q->getters). */
static inline int queue_put_now(queue_impl *q, void *item)
{
    if (q->closed)
        return -EPIPE;
    sync_waiter *g = waiter_first(&q->getters);
    if (g) { /* the queue is empty: hand the item over */
        g->item = item;
        waiter_grant(g, 1);
    } else if (q->count < q->cap) {
        queue_push(q, item);
    } else {
        return -EAGAIN;
    }
    q->unfinished++;
    return 0;
}

/* Get without waiting: 0, -EAGAIN (empty), -EPIPE (closed and empty). */
static inline int queue_get_now(queue_impl *q, void **item)
{
    sync_waiter *p = waiter_first(&q->putters);
    if (q->count) {
        *item = queue_pop(q);
        if (p) { /* a slot is free: the first waiting put takes it */
            queue_push(q, p->item);
            q->unfinished++;
            waiter_grant(p, 1);
        }
        return 0;
    }
    if (p) { /* a rendezvous queue: take the item from the put */
        *item = p->item;
        q->unfinished++;
        waiter_grant(p, 1);
        return 0;
    }
    return q->closed ? -EPIPE : -EAGAIN;
}

int rf_queue_try_put(rf_queue *storage, void *item)
{
    queue_impl *q = (queue_impl *)storage;
    if (!q)
        return -EINVAL;
    int rc = waker_check(&q->getters);
    return rc ? rc : queue_put_now(q, item);
}

int rf_queue_try_get(rf_queue *storage, void **item)
{
    queue_impl *q = (queue_impl *)storage;
    if (!q || !item)
        return -EINVAL;
    int rc = waker_check(&q->putters);
    return rc ? rc : queue_get_now(q, item);
}

int rf_queue_put(rf_queue *storage, void *item)
{
    queue_impl *q = (queue_impl *)storage;
    if (!q)
        return -EINVAL;
    rf_loop *l;
    rf_task *self;
    int rc = waiter_check(&q->putters, &l, &self);
    if (rc == 0)
        rc = waker_check(&q->getters);
    if (rc)
        return rc;
    rc = queue_put_now(q, item);
    if (rc != -EAGAIN)
        return rc;
    /* Full. The get that frees a slot queues the item for us (and counts
     * it unfinished); a close fails us with -EPIPE. */
    sync_waiter w = {.item = item};
    return waiter_wait(l, self, &q->putters, &w, RF_WAIT_ANY);
}

int rf_queue_get(rf_queue *storage, void **item)
{
    queue_impl *q = (queue_impl *)storage;
    if (!q || !item)
        return -EINVAL;
    rf_loop *l;
    rf_task *self;
    int rc = waiter_check(&q->getters, &l, &self);
    if (rc == 0)
        rc = waker_check(&q->putters);
    if (rc)
        return rc;
    rc = queue_get_now(q, item);
    if (rc != -EAGAIN)
        return rc;
    sync_waiter w = {0};
    rc = waiter_wait(l, self, &q->getters, &w, RF_WAIT_ANY);
    if (rc == 0)
        *item = w.item;
    return rc;
}

int rf_queue_task_done(rf_queue *storage)
{
    queue_impl *q = (queue_impl *)storage;
    if (!q || q->unfinished == 0)
        return -EINVAL;
    int rc = waker_check(&q->joiners);
    if (rc)
        return rc;
    if (--q->unfinished == 0)
        waiters_grant_all(&q->joiners, 1);
    return 0;
}

int rf_queue_join(rf_queue *storage)
{
    queue_impl *q = (queue_impl *)storage;
    if (!q)
        return -EINVAL;
    rf_loop *l;
    rf_task *self;
    int rc = waiter_check(&q->joiners, &l, &self);
    if (rc || q->unfinished == 0)
        return rc;
    sync_waiter w = {0};
    return waiter_wait(l, self, &q->joiners, &w, RF_WAIT_ANY);
}

int rf_queue_close(rf_queue *storage)
{
    queue_impl *q = (queue_impl *)storage;
    if (!q)
        return -EINVAL;
    int rc = waker_check(&q->putters);
    if (rc == 0)
        rc = waker_check(&q->getters);
    if (rc)
        return rc;
    q->closed = true;
    waiters_grant_all(&q->putters, -EPIPE);
    /* Getters wait only on an empty queue: nothing is left for them. */
    waiters_grant_all(&q->getters, -EPIPE);
    return 0;
}

size_t rf_queue_size(const rf_queue *storage)
{
    const queue_impl *q = (const queue_impl *)storage;
    return q ? q->count : 0;
}

size_t rf_queue_capacity(const rf_queue *storage)
{
    const queue_impl *q = (const queue_impl *)storage;
    return q ? q->cap : 0;
}

bool rf_queue_closed(const rf_queue *storage)
{
    const queue_impl *q = (const queue_impl *)storage;
    return q && q->closed;
}

/* ---- event ---- */

typedef struct event_impl {
    rf_list waiters;
    bool set;
} event_impl;

_Static_assert(sizeof(event_impl) <= sizeof(rf_event), "rf_event too small");

int rf_event_init(rf_event *storage)
{
    event_impl *e = (event_impl *)storage;
    if (!e)
        return -EINVAL;
    memset(e, 0, sizeof(*e));
    rf_list_init(&e->waiters);
    return 0;
}

int rf_event_fini(rf_event *storage)
{
    event_impl *e = (event_impl *)storage;
    if (!e)
        return -EINVAL;
    return rf_list_empty(&e->waiters) ? 0 : -EBUSY;
}

int rf_event_set(rf_event *storage)
{
    event_impl *e = (event_impl *)storage;
    if (!e)
        return -EINVAL;
    int rc = waker_check(&e->waiters);
    if (rc)
        return rc;
    e->set = true;
    waiters_grant_all(&e->waiters, 1);
    return 0;
}

int rf_event_clear(rf_event *storage)
{
    event_impl *e = (event_impl *)storage;
    if (!e)
        return -EINVAL;
    e->set = false;
    return 0;
}

bool rf_event_is_set(const rf_event *storage)
{
    const event_impl *e = (const event_impl *)storage;
    return e && e->set;
}

int rf_event_wait(rf_event *storage)
{
    event_impl *e = (event_impl *)storage;
    if (!e)
        return -EINVAL;
    rf_loop *l;
    rf_task *self;
    int rc = waiter_check(&e->waiters, &l, &self);
    if (rc || e->set)
        return rc;
    sync_waiter w = {0};
    return waiter_wait(l, self, &e->waiters, &w, RF_WAIT_ANY);
}

/* ---- mutex ---- */

typedef struct mutex_impl {
    rf_list waiters;
    rf_task *owner;
} mutex_impl;

_Static_assert(sizeof(mutex_impl) <= sizeof(rf_mutex), "rf_mutex too small");

int rf_mutex_init(rf_mutex *storage)
{
    mutex_impl *m = (mutex_impl *)storage;
    if (!m)
        return -EINVAL;
    memset(m, 0, sizeof(*m));
    rf_list_init(&m->waiters);
    return 0;
}

int rf_mutex_fini(rf_mutex *storage)
{
    mutex_impl *m = (mutex_impl *)storage;
    if (!m)
        return -EINVAL;
    return m->owner || !rf_list_empty(&m->waiters) ? -EBUSY : 0;
}

/* Lock m without waiting if it is free: 0, -EBUSY, or the caller's
 * errors. how: the RF_WAIT_* of the wait, 0 to not wait at all. */
static int mutex_lock(mutex_impl *m, unsigned how, bool wait)
{
    rf_loop *l;
    rf_task *self;
    int rc = waiter_check(&m->waiters, &l, &self);
    if (rc)
        return rc;
    if (!m->owner) {
        m->owner = self;
        return 0;
    }
    if (m->owner == self)
        return -EDEADLK;
    if (m->owner->loop != l)
        return -EXDEV;
    if (!wait)
        return -EBUSY;
    /* The unlock that hands m over makes us the owner. */
    sync_waiter w = {0};
    return waiter_wait(l, self, &m->waiters, &w, how);
}

int rf_mutex_lock(rf_mutex *storage)
{
    mutex_impl *m = (mutex_impl *)storage;
    return m ? mutex_lock(m, RF_WAIT_ANY, true) : -EINVAL;
}

int rf_mutex_try_lock(rf_mutex *storage)
{
    mutex_impl *m = (mutex_impl *)storage;
    return m ? mutex_lock(m, 0, false) : -EINVAL;
}

int rf_mutex_unlock(rf_mutex *storage)
{
    mutex_impl *m = (mutex_impl *)storage;
    if (!m)
        return -EINVAL;
    rf_task *self = rf__self();
    if (!self || m->owner != self)
        return -EPERM;
    sync_waiter *w = waiter_first(&m->waiters);
    m->owner = w ? w->task : NULL;
    if (w)
        waiter_grant(w, 1);
    return 0;
}

/* ---- semaphore ---- */

typedef struct sem_impl {
    rf_list waiters;
    uint32_t value, max;
} sem_impl;

_Static_assert(sizeof(sem_impl) <= sizeof(rf_sem), "rf_sem too small");

int rf_sem_init(rf_sem *storage, unsigned value, unsigned max)
{
    sem_impl *s = (sem_impl *)storage;
    if (!s || rf__size_check(max, 1, RF_SEM_MAX) || value > max)
        return -EINVAL;
    memset(s, 0, sizeof(*s));
    rf_list_init(&s->waiters);
    s->value = value;
    s->max = max;
    return 0;
}

int rf_sem_fini(rf_sem *storage)
{
    sem_impl *s = (sem_impl *)storage;
    if (!s)
        return -EINVAL;
    return rf_list_empty(&s->waiters) ? 0 : -EBUSY;
}

/* Permits go to waiters directly, so there is never a free permit while
 * tasks wait: value > 0 means "take one". */
int rf_sem_try_acquire(rf_sem *storage)
{
    sem_impl *s = (sem_impl *)storage;
    if (!s)
        return -EINVAL;
    if (s->value == 0)
        return -EAGAIN;
    s->value--;
    return 0;
}

int rf_sem_acquire(rf_sem *storage)
{
    sem_impl *s = (sem_impl *)storage;
    if (!s)
        return -EINVAL;
    rf_loop *l;
    rf_task *self;
    int rc = waiter_check(&s->waiters, &l, &self);
    if (rc)
        return rc;
    if (s->value) {
        s->value--;
        return 0;
    }
    sync_waiter w = {0};
    return waiter_wait(l, self, &s->waiters, &w, RF_WAIT_ANY);
}

int rf_sem_release(rf_sem *storage)
{
    sem_impl *s = (sem_impl *)storage;
    if (!s)
        return -EINVAL;
    int rc = waker_check(&s->waiters);
    if (rc)
        return rc;
    sync_waiter *w = waiter_first(&s->waiters);
    if (w) {
        waiter_grant(w, 1);
        return 0;
    }
    if (s->value == s->max)
        return -EOVERFLOW;
    s->value++;
    return 0;
}

unsigned rf_sem_value(const rf_sem *storage)
{
    const sem_impl *s = (const sem_impl *)storage;
    return s ? s->value : 0;
}

/* ---- condition ---- */

typedef struct cond_impl {
    rf_list waiters;
} cond_impl;

_Static_assert(sizeof(cond_impl) <= sizeof(rf_cond), "rf_cond too small");

int rf_cond_init(rf_cond *storage)
{
    cond_impl *c = (cond_impl *)storage;
    if (!c)
        return -EINVAL;
    rf_list_init(&c->waiters);
    return 0;
}

int rf_cond_fini(rf_cond *storage)
{
    cond_impl *c = (cond_impl *)storage;
    if (!c)
        return -EINVAL;
    return rf_list_empty(&c->waiters) ? 0 : -EBUSY;
}

int rf_cond_wait(rf_cond *storage, rf_mutex *mstorage)
{
    cond_impl *c = (cond_impl *)storage;
    mutex_impl *m = (mutex_impl *)mstorage;
    if (!c || !m)
        return -EINVAL;
    rf_loop *l;
    rf_task *self;
    int rc = waiter_check(&c->waiters, &l, &self);
    if (rc)
        return rc;
    if (m->owner != self)
        return -EPERM;
    /* Unlocking does not suspend, so no signal can be sent between the
     * unlock and joining the list. */
    rf_mutex_unlock(mstorage);
    sync_waiter w = {0};
    rc = waiter_wait(l, self, &c->waiters, &w, RF_WAIT_ANY);
    /* Take the mutex back whatever happened; this wait ignores the
     * caller's cancellation and deadline (the holder releases it
     * eventually, or the program has a plain deadlock). */
    mutex_lock(m, 0, true);
    return rc;
}

int rf_cond_signal(rf_cond *storage)
{
    cond_impl *c = (cond_impl *)storage;
    if (!c)
        return -EINVAL;
    int rc = waker_check(&c->waiters);
    if (rc)
        return rc;
    sync_waiter *w = waiter_first(&c->waiters);
    if (w)
        waiter_grant(w, 1);
    return 0;
}

int rf_cond_broadcast(rf_cond *storage)
{
    cond_impl *c = (cond_impl *)storage;
    if (!c)
        return -EINVAL;
    int rc = waker_check(&c->waiters);
    if (rc)
        return rc;
    waiters_grant_all(&c->waiters, 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Task groups and asyncio.wait                                             */
/* ------------------------------------------------------------------------ */

/*
 * Both watch tasks' ends with an rf_waiter on each task's joiners list
 * (task.c): its fire() runs in task_finish, once, as the task returns, and
 * does the bookkeeping there, so the waiting task is woken once, when its
 * condition holds, not once per task.
 */

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
    rf_waiter w;  /* on the member's joiners */
    rf_list node; /* group_impl.members */
    rf_task *t;   /* the group's reference */
    group_impl *g;
} group_entry;

struct group_impl {
    rf_list members;
    size_t running;  /* members not yet returned */
    rf_task *failed; /* the first member that failed */
    int error;       /* its rf_task_error */
    rf_task *waiter; /* the task in rf_group_wait */
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

static void group_fire(rf_waiter *w, rf_task *done)
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
    if (g->running == 0 && g->waiter)
        rf__wake(done->loop, g->waiter);
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
    rf_task *t = rf__spawn(l, fn, arg, opts);
    if (!t) {
        int e = errno;
        free(m);
        errno = e;
        return NULL;
    }
    m->t = t;
    m->g = g;
    m->w.fire = group_fire;
    m->w.task = NULL;
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
    if (g->waiter)
        return -EBUSY;
    int rc = 0;
    g->waiter = self;
    while (g->running) {
        rc = rf__wait(l, self, RF_WAIT_ANY);
        if (rc < 0 && g->running) {
            /* The caller gives up (cancelled, deadline): so does the
             * group, and its members do not outlive the wait. */
            group_cancel_all(g);
            while (g->running)
                rf__wait(l, self, 0);
            break;
        }
        rc = 0;
    }
    g->waiter = NULL;
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
    rf_task *self;
    size_t n, ndone, nfailed;
    int mode;
} wait_set;

typedef struct wait_entry {
    rf_waiter w;
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

static void wait_fire(rf_waiter *w, rf_task *done)
{
    wait_set *ws = rf_container_of(w, wait_entry, w)->ws;
    ws->ndone++;
    if (task_error(done))
        ws->nfailed++;
    if (wait_met(ws))
        rf__wake(done->loop, ws->self);
}

/* Waits until ws is met, the timer fires or the wait ends (cancellation,
 * deadline); 0 or the reason it ended. */
static int wait_watch(rf_loop *l, wait_set *ws, rf_task *const *tasks,
                      wait_entry *e, uint64_t timeout_ns)
{
    rf_task *self = ws->self;
    rf_timer timer = {0};
    if (timeout_ns != RF_FOREVER) {
        int rc = rf__timer_start(l, &timer, self, rf__time_after(timeout_ns));
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < ws->n; i++) {
        e[i].ws = ws;
        e[i].w.fire = wait_fire;
        e[i].w.task = self;
        rf_list_init(&e[i].w.node);
        rf_task *t = rf__untag(tasks[i]); /* checked by rf_wait */
        if (t->state != RF_DONE)
            rf_list_push_back(&t->joiners, &e[i].w.node);
    }
    int rc = 0;
    while (!wait_met(ws) && rc == 0) {
        if (timeout_ns != RF_FOREVER && timer.done)
            rc = -ETIMEDOUT;
        else
            rc = rf__wait(l, self, RF_WAIT_ANY);
    }
    for (size_t i = 0; i < ws->n; i++)
        rf_list_remove(&e[i].w.node);
    rf__timer_stop(l, &timer); /* a no-op without a timeout */
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
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    wait_set ws = {.self = self, .n = n, .mode = mode};
    for (size_t i = 0; i < n; i++) {
        if (!tasks[i])
            return -EINVAL;
        rf_task *t = rf__record(tasks[i]);
        if (!t)
            return rf__stale("rf_wait");
        if (t->loop != l)
            return -EXDEV;
        if (t == self)
            return -EDEADLK;
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
        rc = wait_watch(l, &ws, tasks, e, timeout_ns);
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
