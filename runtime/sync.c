/*
 * Coordination between the tasks of a loop: queue, event, mutex,
 * semaphore, condition. Task groups and asyncio.wait, which wait on tasks'
 * ends, are in taskset.c.
 *
 * Every object keeps a FIFO list of waiters. A waiter is a record on the
 * waiting task's stack; the task that makes progress possible unlinks the
 * first waiter, hands it what it waited for (an item, the lock, a permit)
 * and makes its rf_waiter done (rf__waiter_done, which wakes it). The
 * waiter then only reads its record: it never competes again for what it
 * was given. That is what makes the race "woken by a put, then cancelled
 * before it ran" harmless: the item is already the waiter's, and the
 * wait returns it (the cancellation shows at the next suspending call, as
 * everywhere in the runtime). A waiter that was not handed anything and
 * whose wait ends (cancellation, deadline) unlinks itself before it
 * returns.
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
    rf_waiter w;  /* done when handed what it waited for (res 0), or the
                   * object's error (res < 0) */
    void *item;   /* a queue put's item; what a get is handed */
} sync_waiter;

static inline sync_waiter *waiter_first(rf_list *h)
{
    return rf_list_empty(h) ? NULL : rf_container_of(h->next, sync_waiter, node);
}

/* Hand w its result (0: what it waited for; < 0: the object's error) and
 * make it ready. */
static inline void waiter_grant(sync_waiter *w, int res)
{
    rf_list_remove(&w->node);
    rf__waiter_done(w->w.task->loop, &w->w, res);
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
    rf_loop *wl = w->w.task->loop;
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
    if (w && w->w.task->loop != l)
        return -EXDEV;
    *lp = l;
    *selfp = self;
    return 0;
}

/*
 * Wait at the back of h until handed something (returns 0, or the
 * object's error) or until the wait ends on cancellation or the deadline
 * (how: RF_WAIT_*), having left h.
 */
static int waiter_wait(rf_loop *l, rf_task *self, rf_list *h, sync_waiter *w,
                       unsigned how, unsigned on, const void *obj)
{
    w->w.task = self;
    w->w.done = false;
    rf_list_push_back(h, &w->node);
    int rc = rf__waiter_wait(l, self, &w->w, how, on, obj);
    if (rc < 0) {
        rf_list_remove(&w->node);
        return rc;
    }
    return w->w.res;
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
        waiter_grant(g, 0);
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
            waiter_grant(p, 0);
        }
        return 0;
    }
    if (p) { /* a rendezvous queue: take the item from the put */
        *item = p->item;
        q->unfinished++;
        waiter_grant(p, 0);
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
    return waiter_wait(l, self, &q->putters, &w, RF_WAIT_ANY,
                       RF_WAIT_ON_QUEUE_PUT, q);
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
    rc = waiter_wait(l, self, &q->getters, &w, RF_WAIT_ANY, RF_WAIT_ON_QUEUE_GET,
                     q);
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
        waiters_grant_all(&q->joiners, 0);
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
    return waiter_wait(l, self, &q->joiners, &w, RF_WAIT_ANY,
                       RF_WAIT_ON_QUEUE_JOIN, q);
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
    waiters_grant_all(&e->waiters, 0);
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
    return waiter_wait(l, self, &e->waiters, &w, RF_WAIT_ANY, RF_WAIT_ON_EVENT,
                       e);
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
    return waiter_wait(l, self, &m->waiters, &w, how, RF_WAIT_ON_MUTEX, m);
}

/* The task holding mutex m, for the operator's view (inspect.c). */
rf_task *rf__mutex_owner(const void *m)
{
    return ((const mutex_impl *)m)->owner;
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
    m->owner = w ? w->w.task : NULL;
    if (w)
        waiter_grant(w, 0);
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
    return waiter_wait(l, self, &s->waiters, &w, RF_WAIT_ANY, RF_WAIT_ON_SEM, s);
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
        waiter_grant(w, 0);
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
    rc = waiter_wait(l, self, &c->waiters, &w, RF_WAIT_ANY, RF_WAIT_ON_COND, c);
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
        waiter_grant(w, 0);
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
    waiters_grant_all(&c->waiters, 0);
    return 0;
}
