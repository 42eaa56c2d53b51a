/*
 * Offload: blocking calls handed to a pool of worker threads
 * (rf_to_thread, rf_pool_*).
 *
 * A call is a record on the calling task's stack. The task puts it in the
 * pool's bounded queue (or in its loop's batch for this pass, which the
 * pass end queues with one lock: see "Gathering" below) and waits; a worker takes it, runs fn(arg), stores
 * the result and posts the record to the task's loop through the loop's
 * cross-thread mailbox (remote.c): a burst of completions costs the loop
 * one eventfd write and one wake-up. The message runs on the loop's
 * thread, marks the call done and wakes the task. While the call is out,
 * the loop counts it in remote_expected, so it neither reports a deadlock
 * nor is freed.
 *
 * Backpressure. When the queue is full, the caller does not queue its
 * call: it queues itself, a "room waiter" (also on its stack), in the
 * pool's FIFO and waits. A worker that takes a call out of the queue
 * grants the freed slot to the oldest room waiter: it reserves the slot
 * (count + reserved never exceeds the capacity) and posts the waiter to
 * its loop, through the same mailbox; the waiter's task then fills the
 * slot it was granted. So the queue never grows, the loop thread never
 * blocks on it, and a slot is never lost: a waiter that gives up after
 * being granted (it was cancelled) passes its slot on to the next one.
 *
 * Cancellation. A call that has been queued cannot be interrupted: the
 * task does not resume before the worker is done with arg, and the call
 * then returns 0 with its real result (the cancellation shows at the
 * task's next suspending call, as for any wait that had completed). A
 * task cancelled (or past its deadline) before its call is accepted
 * (queued, or gathered for the pass end), waiting for room included, gets
 * -ECANCELED (-ETIMEDOUT) and fn never runs.
 *
 * Every loop has a default pool for rf_to_thread: created at the first
 * call, RINGFIBER_POOL_THREADS threads (or rf_loop_set_pool_threads, or
 * asyncio's default executor size, min(32, CPUs + 4)), joined by
 * rf_loop_free once the loop's calls are done. The loops of a group share
 * one such pool (created at the first call of any of them, freed when the
 * group has ended) unless a loop was given a size of its own.
 * rf_loop_set_pool replaces it with a pool of the user's, which loops on
 * several threads may share.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define RF_POOL_DEFAULT_QUEUE 1024u
/* rf_pool.hint (see "Gathering" below). */
#define RF_HINT_WAITERS 1u /* a caller waits for room */

typedef struct pool_call {
    rf_remote_msg msg; /* first: the completion, posted by the worker */
    struct pool_call *next; /* the loop's calls gathered this pass */
    rf_loop *loop;
    rf_waiter w;       /* loop thread: done when the completion has run */
    rf_fn fn;
    void *arg;
    void *result;
    uint64_t queued_at; /* when it was put in the queue (metrics) */
    uint64_t waited;    /* .. until a worker took it */
} pool_call;

typedef struct room_waiter {
    rf_remote_msg msg; /* the grant, posted by the worker */
    rf_list node;      /* pool->room_fifo, under pool->mu */
    struct room_waiter *next_grant; /* the worker's list of grants to post */
    rf_loop *loop;
    rf_waiter w;  /* loop thread: done when the grant has run */
    bool queued;  /* in room_fifo (pool->mu) */
} room_waiter;

/* A worker sleeps on its own condition variable, so that the pool can
 * choose whom to wake: the one that went to sleep last (LIFO), whose
 * cache is warm; under a light load the same few workers do all the work
 * and the others stay asleep, which saves context switches. */
typedef struct pool_worker {
    pthread_cond_t cv;
    bool woken; /* under pool->mu */
    pthread_t thread;
    struct rf_pool *pool;
} pool_worker;

struct rf_pool {
    pthread_mutex_t mu;
    pool_call **q;       /* ring of cap calls */
    unsigned cap, head, count;
    unsigned reserved;   /* slots granted to room waiters, or reserved by a
                          * loop for this pass's calls, not yet filled */
    unsigned nidle;      /* workers asleep, in idle[0..nidle) */
    unsigned waking;     /* workers woken that have not looked at q yet */
    bool spinning;       /* a worker watches count before it sleeps */
    uint8_t spin_skip;   /* idle spells to sleep at once (spin_wanted) */
    uint8_t spin_backoff; /* spin_skip after the last failed spin */
    unsigned hint;       /* RF_HINT_*, for the loops' gathering: written
                          * under mu (pool_hint), read without it;
                          * __atomic_* */
    unsigned nthreads;
    bool stopping;
    rf_list room_fifo;   /* room_waiter */
    pool_worker *workers;
    pool_worker **idle;  /* a stack: the last one asleep on top */
    /* Kept across reuse of the record (below): */
    uint16_t gen;        /* handle generation (internal.h), __atomic_* */
    struct rf_pool *next_shell;
};

/*
 * Pool records are recycled, never freed (a handle's generation is read
 * from them, internal.h): rf_pool_free puts the record on this list with
 * its generation bumped, so a handle kept after rf_pool_free is refused
 * with -ESRCH rather than reaching a later pool that got the same memory.
 * A process has as many records as it ever had pools at once.
 */
static pthread_mutex_t g_shells_mu = PTHREAD_MUTEX_INITIALIZER;
static rf_pool *g_shells;

static rf_pool *shell_get(void)
{
    pthread_mutex_lock(&g_shells_mu);
    rf_pool *p = g_shells;
    if (p)
        g_shells = p->next_shell;
    pthread_mutex_unlock(&g_shells_mu);
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (p && !rf__taggable((char *)p + sizeof(*p))) {
            free(p); /* no room for a handle's generation: internal.h */
            p = NULL;
        }
        return p;
    }
    memset(p, 0, offsetof(rf_pool, gen));
    return p;
}

static void shell_put(rf_pool *p)
{
    pthread_mutex_lock(&g_shells_mu);
    __atomic_store_n(&p->gen, (uint16_t)(p->gen + 1), __ATOMIC_RELAXED);
    p->next_shell = g_shells;
    g_shells = p;
    pthread_mutex_unlock(&g_shells_mu);
}

/* The record of a non-NULL pool handle, or NULL if it is stale. Relaxed:
 * a stale handle is one whose pool was freed before this call, as the
 * caller of rf_pool_free guarantees. */
static rf_pool *pool_record(const rf_pool *h)
{
    rf_pool *p = rf__untag(h);
    return __atomic_load_n(&p->gen, __ATOMIC_RELAXED) == rf__tag_gen(h) ? p
                                                                        : NULL;
}

/* ---- loop side: what the messages do ---- */

static void call_done(rf_loop *l, rf_remote_msg *m)
{
    pool_call *c = (pool_call *)m;
    l->remote_expected--;
    rf__waiter_done(l, &c->w, 0);
}

static void room_granted(rf_loop *l, rf_remote_msg *m)
{
    room_waiter *w = (room_waiter *)m;
    l->remote_expected--;
    rf__waiter_done(l, &w->w, 0);
}

/* ---- pool side ---- */

/* Under p->mu, after room_fifo changed. */
static void pool_hint(rf_pool *p)
{
    unsigned h = rf_list_empty(&p->room_fifo) ? 0 : RF_HINT_WAITERS;
    __atomic_store_n(&p->hint, h, __ATOMIC_RELAXED);
}

/* Grant the free slots to the oldest room waiters; returns them, to be
 * posted (post_grants) once the mutex is released. */
static room_waiter *grant_room_locked(rf_pool *p)
{
    room_waiter *head = NULL, **tail = &head;
    while (!rf_list_empty(&p->room_fifo) && p->count + p->reserved < p->cap) {
        room_waiter *w =
            rf_container_of(rf_list_pop_front(&p->room_fifo), room_waiter, node);
        w->queued = false;
        p->reserved++;
        w->next_grant = NULL;
        *tail = w;
        tail = &w->next_grant;
    }
    pool_hint(p);
    return head;
}

static void post_grants(room_waiter *w)
{
    while (w) {
        /* The waiter may return as soon as it is posted: read first. */
        room_waiter *next = w->next_grant;
        rf__remote_post(w->loop, &w->msg);
        w = next;
    }
}

/* Under p->mu, after a call was queued: the worker to wake (signal it
 * once the mutex is released), or NULL when enough are awake already. */
static pool_worker *worker_to_wake(rf_pool *p)
{
    if (p->nidle == 0 || p->count <= p->waking + p->spinning)
        return NULL;
    pool_worker *w = p->idle[--p->nidle];
    w->woken = true;
    p->waking++;
    return w;
}

/*
 * A worker that runs out of calls watches the queue for a few
 * microseconds before it goes to sleep, without the mutex: a loop that
 * hands out calls one after the other (each of its tasks submits the next
 * call when the last one came back) usually has the next one ready by
 * then, and neither side pays for a sleep and a wake-up (two system calls
 * and two context switches). One worker at most spins at a time, so an
 * idle pool costs one thread a few microseconds, once; and spins that
 * find nothing are backed off (spin_wanted).
 */
#define RF_POOL_SPIN_NS (10 * RF_NSEC_PER_USEC)

/*
 * Gathering. A loop does not take the pool's mutex for each call: the
 * first call of a scheduler pass reserves slots (pool->reserved) for the
 * calls the pass's other ready tasks may make, one per task, at most
 * RF_POOL_CREDIT - 1 and half the free room (so that other loops keep
 * room of their own); those calls use them without the mutex, and the
 * pass end queues them all under one lock, wakes the workers they need
 * and gives the unused slots back (rf__pool_flush). The first call itself
 * is queued at once if a worker can take it at once (one asleep or
 * spinning), else it joins the batch. Once a caller waits for room
 * (pool->hint, read without the mutex), the batch is queued at the next
 * call instead of at the pass end, so that no call goes into a slot
 * reserved before the waiter came. So a call other than its pass's first
 * waits for its pass's end, as an operation a task starts in the ring
 * waits for its pass's end to be submitted: a pass of many tasks that
 * each keep the CPU for long delays both (and a task that keeps it too
 * long is what the stall detector reports). Measured on 2 vCPUs
 * (W5, 64 calls in flight, 4 workers): gathering only while every worker
 * was busy left most calls on the mutex's path, since with four workers
 * one is nearly always asleep: 650-820 ns a call against 416-468 ns with
 * every pass gathered (libuv's uv_queue_work 1.1-1.6 us in the same runs).
 */
#define RF_POOL_CREDIT 64u

/* Without the mutex: until a call is queued (true), or RF_POOL_SPIN_NS
 * (false). */
static bool spin_for_work(rf_pool *p)
{
    uint64_t until = rf__real_now_ns() + RF_POOL_SPIN_NS;
    for (;;) {
        for (int i = 0; i < 32; i++) {
            if (__atomic_load_n(&p->count, __ATOMIC_RELAXED) != 0)
                return true;
            rf__cpu_relax();
        }
        if (rf__real_now_ns() > until)
            return false;
    }
}

/*
 * Under p->mu: whether this idle spell starts with a spin. A spin pays
 * where the next call comes within RF_POOL_SPIN_NS; where it does not (a
 * loop that needs longer to wake up and call again than the spin lasts,
 * as on a machine whose CPUs the loop and the workers share), the spin
 * only takes a CPU from the loop it waits for: measured on 2 vCPUs, one
 * call at a time took 3.4-4.5x as long with a spin before each sleep as
 * without. So a spin that found nothing makes the next 1, 2, 4 .. 64
 * idle spells sleep at once, and one that found a call spins again.
 */
static bool spin_wanted(rf_pool *p)
{
    if (p->spin_skip == 0)
        return true;
    p->spin_skip--;
    return false;
}

static void spin_done(rf_pool *p, bool found)
{
    if (found) {
        p->spin_backoff = 0;
        return;
    }
    p->spin_backoff = p->spin_backoff == 0   ? 1
                      : p->spin_backoff < 64 ? p->spin_backoff * 2
                                             : 64;
    p->spin_skip = p->spin_backoff;
}

static void *worker_main(void *arg)
{
    pool_worker *self = arg;
    rf_pool *p = self->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        bool spun = false;
        while (p->count == 0 && !p->stopping) {
            if (!spun && !p->spinning && spin_wanted(p)) {
                /* While spinning is set, callers count on this worker and
                 * wake nobody: look at the queue again (the loop's
                 * condition) under the mutex before sleeping. */
                p->spinning = true;
                pthread_mutex_unlock(&p->mu);
                bool found = spin_for_work(p);
                pthread_mutex_lock(&p->mu);
                p->spinning = false;
                spin_done(p, found);
                spun = true;
                continue;
            }
            self->woken = false;
            p->idle[p->nidle++] = self;
            while (!self->woken && !p->stopping)
                pthread_cond_wait(&self->cv, &p->mu);
            if (self->woken)
                p->waking--;
        }
        if (p->count == 0)
            break; /* stopping, and the queue is drained */
        /* One call at a time: a call that blocks holds up no other (a
         * worker that took several would keep them from idle workers:
         * calls that wait for each other could deadlock). */
        pool_call *c = p->q[p->head];
        c->waited = rf__real_now_ns() - c->queued_at;
        p->head = (p->head + 1) % p->cap;
        /* An atomic store (under the mutex) for the spinning worker. */
        __atomic_store_n(&p->count, p->count - 1, __ATOMIC_RELAXED);
        room_waiter *grants = grant_room_locked(p);
        pthread_mutex_unlock(&p->mu);
        post_grants(grants);
        c->result = c->fn(c->arg);
        /* c belongs to the waiting task again once posted. */
        rf__remote_post(c->loop, &c->msg);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static unsigned default_threads(void)
{
    const char *env = getenv("RINGFIBER_POOL_THREADS");
    if (env && *env) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(env, &end, 10);
        if (errno == 0 && *end == '\0' && v > 0 && v <= RF_POOL_MAX_THREADS)
            return (unsigned)v;
        fprintf(stderr, "ringfiber: RINGFIBER_POOL_THREADS=%s ignored (want "
                        "1..%u)\n", env, RF_POOL_MAX_THREADS);
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        cpus = 1;
    return cpus + 4 < 32 ? (unsigned)cpus + 4 : 32;
}

static void pool_destroy(rf_pool *p, unsigned started)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    for (unsigned i = 0; i < started; i++)
        pthread_cond_signal(&p->workers[i].cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < started; i++)
        pthread_join(p->workers[i].thread, NULL);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_cond_destroy(&p->workers[i].cv);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p->idle);
    free(p->q);
    shell_put(p);
}

int rf_pool_new(unsigned threads, unsigned queue_capacity, rf_pool **poolp)
{
    if (!poolp)
        return -EINVAL;
    *poolp = NULL;
    if (threads == 0)
        threads = default_threads();
    if (queue_capacity == 0)
        queue_capacity = RF_POOL_DEFAULT_QUEUE;
    if (rf__size_check(threads, 1, RF_POOL_MAX_THREADS) ||
        rf__size_check(queue_capacity, 1, RF_POOL_MAX_QUEUE))
        return -EINVAL;
    rf_pool *p = shell_get();
    if (!p)
        return -ENOMEM;
    p->q = calloc(queue_capacity, sizeof(*p->q));
    p->workers = calloc(threads, sizeof(*p->workers));
    p->idle = calloc(threads, sizeof(*p->idle));
    if (!p->q || !p->workers || !p->idle) {
        free(p->q);
        free(p->workers);
        free(p->idle);
        shell_put(p);
        return -ENOMEM;
    }
    p->cap = queue_capacity;
    p->nthreads = threads;
    rf_list_init(&p->room_fifo);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&p->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    for (unsigned i = 0; i < threads; i++) {
        pthread_cond_init(&p->workers[i].cv, NULL);
        p->workers[i].pool = p;
    }
    for (unsigned i = 0; i < threads; i++) {
        pool_worker *w = &p->workers[i];
        int rc = rf__thread_create(&w->thread, worker_main, w);
        if (rc) {
            pool_destroy(p, i);
            return -rc;
        }
        pthread_setname_np(w->thread, "rf-pool");
    }
    *poolp = rf__tag(p, p->gen);
    return 0;
}

int rf_pool_free(rf_pool *h)
{
    if (!h)
        return 0;
    rf_pool *pool = pool_record(h);
    if (!pool)
        return rf__stale("rf_pool_free");
    pthread_mutex_lock(&pool->mu);
    /* Room waiters need their loops to run to fill their slots: a thread
     * blocked here could be one of those loops. */
    bool busy = pool->stopping || pool->reserved ||
                !rf_list_empty(&pool->room_fifo);
    pthread_mutex_unlock(&pool->mu);
    if (busy)
        return -EBUSY;
    pool_destroy(pool, pool->nthreads); /* runs what is queued, joins */
    return 0;
}

unsigned rf_pool_threads(const rf_pool *h)
{
    if (!h)
        return 0;
    rf_pool *pool = pool_record(h);
    if (!pool) {
        rf__stale("rf_pool_threads");
        return 0;
    }
    return pool->nthreads;
}

/* ---- the call ---- */

/* Wait for a slot. Returns 0 with the mutex held and a slot reserved for
 * the caller (p->reserved counts it), or an error with the mutex free. */
static int wait_for_room(rf_pool *p, rf_loop *l, rf_task *self)
{
    room_waiter w = {.msg.run = room_granted, .loop = l, .queued = true};
    rf_list_push_back(&p->room_fifo, &w.node);
    pool_hint(p);
    pthread_mutex_unlock(&p->mu);
    l->remote_expected++;
    int rc = rf__waiter_wait(l, self, &w.w, RF_WAIT_ANY, RF_WAIT_ON_POOL, p);
    if (rc < 0) {
        pthread_mutex_lock(&p->mu);
        if (w.queued) {
            rf_list_remove(&w.node);
            pool_hint(p);
            pthread_mutex_unlock(&p->mu);
            l->remote_expected--;
            return rc;
        }
        /* Already granted: its message is on the way and refers to w.
         * Wait for it (uncancellable), then hand the slot on. */
        pthread_mutex_unlock(&p->mu);
        rf__waiter_wait(l, self, &w.w, 0, RF_WAIT_ON_POOL, p);
    }
    pthread_mutex_lock(&p->mu);
    if (rc == 0)
        return 0;
    p->reserved--;
    room_waiter *grants = grant_room_locked(p);
    pthread_mutex_unlock(&p->mu);
    post_grants(grants);
    return rc;
}

/*
 * The pass end (ring.c): queue the calls this pass gathered, under one
 * lock, wake the workers they need, and give back the slots reserved and
 * not used. Credits never outlive a pass: a pool is never left with slots
 * reserved by a loop that no longer calls it.
 */
void rf__pool_flush(rf_loop *l)
{
    rf_pool *p = l->pb_pool;
    pool_call *c = l->pb_head;
    unsigned n = l->pb_n, unused = l->pb_credit;
    l->pool_pending = false;
    l->pb_head = l->pb_tail = NULL;
    l->pb_n = l->pb_credit = 0;
    l->pb_pool = NULL;
    if (!p)
        return;
    pool_worker *wake[RF_POOL_CREDIT];
    unsigned nw = 0;
    pthread_mutex_lock(&p->mu);
    unsigned tail = p->head + p->count;
    for (; c; c = c->next)
        p->q[tail++ % p->cap] = c;
    /* One atomic store (under the mutex) for the spinning worker. */
    __atomic_store_n(&p->count, p->count + n, __ATOMIC_RELAXED);
    p->reserved -= n + unused;
    room_waiter *grants = unused ? grant_room_locked(p) : NULL;
    pool_worker *w;
    while (nw < n && (w = worker_to_wake(p)) != NULL)
        wake[nw++] = w;
    pthread_mutex_unlock(&p->mu);
    post_grants(grants);
    /* After the unlock, as in rf_pool_call's own path. */
    for (unsigned i = 0; i < nw; i++)
        pthread_cond_signal(&wake[i]->cv);
}

int rf_pool_call(rf_pool *h, rf_fn fn, void *arg, void **result)
{
    if (!h || !fn)
        return -EINVAL;
    rf_pool *pool = pool_record(h);
    if (!pool)
        return rf__stale("rf_pool_call");
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    int rc = rf__wait_precheck(self);
    if (rc)
        return rc;
    pool_call c = {.msg.run = call_done, .loop = l, .fn = fn, .arg = arg};
    bool gathered = false;
    if (l->pb_pool == pool && l->pb_credit &&
        __atomic_load_n(&pool->hint, __ATOMIC_RELAXED) == 0) {
        l->pb_credit--; /* a slot reserved earlier in this pass */
        gathered = true;
    } else {
        /* No credit; or a caller waits for room (this call goes behind
         * it, not into a slot reserved before it came): the mutex's
         * path, with the calls gathered so far queued first. */
        if (l->pool_pending)
            rf__pool_flush(l);
        pthread_mutex_lock(&pool->mu);
        if (pool->stopping) {
            pthread_mutex_unlock(&pool->mu);
            return -ESHUTDOWN;
        }
        if (pool->count + pool->reserved >= pool->cap ||
            !rf_list_empty(&pool->room_fifo)) {
            rc = wait_for_room(pool, l, self);
            if (rc)
                return rc;
            pool->reserved--; /* ours: filled just below */
        } else {
            /* Reserve slots for the calls the other ready tasks of this
             * pass may make (at most RF_POOL_CREDIT - 1, one per task,
             * and half the free room); the pass end queues them under
             * one lock (see "Gathering"). This call is queued now if a
             * worker can take it now (one asleep or spinning), else it
             * is the batch's first, in a slot reserved with them. */
            bool now = pool->nidle || pool->spinning;
            unsigned room = pool->cap - pool->count - pool->reserved;
            unsigned credit = rf__nready(l);
            if (credit > room / 2)
                credit = room / 2;
            if (credit > RF_POOL_CREDIT - 1)
                credit = RF_POOL_CREDIT - 1;
            pool->reserved += credit + !now;
            if (credit || !now) {
                l->pb_pool = pool;
                l->pb_credit = credit;
                l->pool_pending = true; /* the pass end gives back what
                                         * it does not use */
            }
            if (!now) {
                pthread_mutex_unlock(&pool->mu);
                gathered = true;
            }
        }
    }
    c.queued_at = rf__real_now_ns(); /* a thread hand-off costs far more */
    RF_STAT_ADD(l->m.offload_in_flight, 1);
    if (gathered) {
        if (l->pb_tail)
            l->pb_tail->next = &c;
        else
            l->pb_head = &c;
        l->pb_tail = &c;
        l->pb_n++;
        l->pool_pending = true;
    } else {
        pool->q[(pool->head + pool->count) % pool->cap] = &c;
        __atomic_store_n(&pool->count, pool->count + 1, __ATOMIC_RELAXED);
        pool_worker *wake = worker_to_wake(pool);
        pthread_mutex_unlock(&pool->mu);
        /* Signalled after the unlock, the worker does not wake up only
         * to block on the mutex still held here. It cannot miss the
         * signal: it waits until its `woken` is set, which was done under
         * the mutex. */
        if (wake)
            pthread_cond_signal(&wake->cv);
    }
    l->remote_expected++;
    /* uncancellable: the call is the pool's (queued, or about to be at
     * this pass's end) */
    rf__waiter_wait(l, self, &c.w, 0, RF_WAIT_ON_OFFLOAD, (const void *)fn);
    RF_STAT_SUB(l->m.offload_in_flight, 1);
    RF_STAT_ADD(l->m.offload_calls, 1);
    RF_STAT_ADD(l->m.offload_wait_ns, c.waited);
    if (result)
        *result = c.result;
    return 0;
}

/* ---- a loop's default pool ---- */

int rf_loop_set_pool(rf_loop *loop, rf_pool *pool)
{
    if (!loop)
        return -EINVAL;
    if (pool && !pool_record(pool))
        return rf__stale("rf_loop_set_pool");
    if (!rf__on_owner_thread(loop))
        return -EXDEV;
    if (loop->pool && loop->pool_owned)
        return -EBUSY;
    loop->pool = pool;
    loop->pool_owned = false;
    return 0;
}

int rf_loop_set_pool_threads(rf_loop *loop, unsigned threads)
{
    if (!loop || rf__size_check(threads, 0, RF_POOL_MAX_THREADS))
        return -EINVAL;
    if (!rf__on_owner_thread(loop))
        return -EXDEV;
    if (loop->pool)
        return -EBUSY;
    loop->pool_threads = threads;
    return 0;
}

int rf_to_thread(rf_fn fn, void *arg, void **result)
{
    rf_loop *l = rf__tls_loop;
    if (!l || !l->current)
        return -EPERM;
    if (!fn)
        return -EINVAL;
    if (!l->pool) {
        /* A loop of a group shares the group's pool (loops.c): one set of
         * workers for the process, not one per loop; each completion
         * still goes back to its own loop's mailbox. */
        int rc = l->group && !l->pool_threads
                     ? rf__loops_pool(l->group, &l->pool)
                     : rf_pool_new(l->pool_threads, 0, &l->pool);
        if (rc)
            return rc;
        l->pool_owned = !l->group || l->pool_threads;
    }
    return rf_pool_call(l->pool, fn, arg, result);
}

/* rf_loop_free, once nothing is in flight. */
void rf__pool_loop_fini(rf_loop *l)
{
    if (l->pool && l->pool_owned && rf_pool_free(l->pool) != 0)
        fprintf(stderr, "ringfiber: rf_loop_free: the loop's thread pool "
                        "still has callers; left running\n");
    l->pool = NULL;
    l->pool_owned = false;
}
