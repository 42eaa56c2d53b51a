/*
 * A group of loops, one per thread (rf_loops_*): start, the end in three
 * steps, and the first failure.
 *
 * Each thread creates its own loop (a ring belongs to the thread that
 * submits to it) and waits until every loop of the group exists, so that
 * an entry can reach any loop from its first instruction. Then it runs
 * its entry as the loop's main task.
 *
 * The end must lose nothing and touch no freed loop. Loops talk by
 * messages: a task of loop A that is cancelled while it joins a task of
 * loop B still needs B's reply (cross.c). So no loop may be freed while
 * another one may still send to it, and a loop's tasks may need other
 * loops to answer while they unwind. Hence:
 *  1. every entry returns (a failure cancels the others first, unless
 *     RF_LOOPS_KEEP_GOING); each loop serves messages meanwhile (its
 *     loops are RF_LOOP_SERVE: an idle loop sleeps, it does not return);
 *  2. when the last entry has returned, every loop is told to drain: it
 *     runs a graceful shutdown with no grace (embed.c: spawns refused,
 *     every other task cancelled and awaited), still serving the others;
 *     the end of that shutdown is counted here (rf__loops_drained);
 *  3. when every loop has drained, no task is left anywhere, so nothing
 *     can send any more: every loop is stopped, and each thread frees its
 *     own loop.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct slot {
    rf_loops *ls;
    unsigned index;
    int cpu;             /* RF_LOOPS_PIN: the CPU, else -1 */
    pthread_t thread;
    bool started;        /* the thread exists */
    rf_loop *loop;       /* set by the thread; read by others after the
                          * start barrier */
    void *result;        /* the entry's */
    int rc;              /* the entry's failure, 0 none */
    rf_remote_msg cancel_msg; /* cancel the entry (a failure, a stop) */
    uint8_t cancel_posted;    /* __atomic */
    rf_remote_msg drain_msg;  /* step 2 */
    rf_remote_msg stop_msg;   /* step 3 */
    bool stop;                /* set by stop_msg, on the loop's thread */
} slot;

struct rf_loops {
    unsigned n;
    unsigned flags;
    rf_loop_opts lopts;
    rf_fn entry;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned tried;      /* threads that tried to create their loop */
    int create_rc;       /* the first failure to, 0 none */
    unsigned entries;    /* under mu: entries not yet returned */
    int failed;          /* under mu: index of the first failure, -1 */
    unsigned busy;       /* __atomic: loops not yet drained */
    int waited;          /* __atomic: rf_loops_wait was called */
    rf_pool *pool;       /* under mu: the loops' shared default pool */
    slot *slots;
};

/* The group's default pool for rf_to_thread (pool.c), created by the
 * first loop that needs it; freed by rf_loops_wait, once every loop has
 * been freed (and so has no call left in it). */
int rf__loops_pool(rf_loops *ls, rf_pool **out)
{
    int rc = 0;
    pthread_mutex_lock(&ls->mu);
    if (!ls->pool)
        rc = rf_pool_new(0, 0, &ls->pool);
    *out = ls->pool;
    pthread_mutex_unlock(&ls->mu);
    return rc;
}

/* ---- messages between the group's loops ---- */

static void cancel_run(rf_loop *l, rf_remote_msg *m)
{
    slot *s = rf_container_of(m, slot, cancel_msg);
    if (l->target && l->target->state != RF_DONE)
        rf__cancel(l->target);
    (void)s;
}

/* Cancel the entry of slot s (any thread). */
static void cancel_entry(slot *s)
{
    if (__atomic_exchange_n(&s->cancel_posted, 1, __ATOMIC_ACQ_REL))
        return;
    s->cancel_msg.run = cancel_run;
    rf__remote_post(s->loop, &s->cancel_msg);
}

static void drain_run(rf_loop *l, rf_remote_msg *m)
{
    (void)m;
    l->group_draining = true;
    /* A graceful shutdown already under way (a program's own, with its
     * grace) is counted when it ends; else one without grace, which also
     * refuses spawns from other threads and loops from now on. */
    if (!l->shutdown_task && rf_loop_shutdown(l, 0) == -EALREADY)
        rf__shutdown_begin(l, 0); /* an earlier one has ended */
}

static void stop_run(rf_loop *l, rf_remote_msg *m)
{
    slot *s = rf_container_of(m, slot, stop_msg);
    s->stop = true;
    l->stop = true;
}

/* Step 2 is over for l (embed.c, at the end of its shutdown). */
void rf__loops_drained(rf_loop *l)
{
    rf_loops *ls = l->group;
    l->group_draining = false; /* counted once */
    if (__atomic_sub_fetch(&ls->busy, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (unsigned i = 0; i < ls->n; i++) {
        ls->slots[i].stop_msg.run = stop_run;
        rf__remote_post(ls->slots[i].loop, &ls->slots[i].stop_msg);
    }
}

/* ---- a loop's thread ---- */

static void *loop_thread(void *arg)
{
    slot *s = arg;
    rf_loops *ls = s->ls;
    /* "rf-loop-3" in top -H, ps -L and /proc/PID/task/TID/comm: each
     * loop's CPU time apart, so an uneven spread is visible. */
    char name[16];
    snprintf(name, sizeof name, "rf-loop-%u", s->index);
    (void)pthread_setname_np(pthread_self(), name);
    if (s->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(s->cpu, &set);
        (void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    rf_loop *l = NULL;
    int rc = rf_loop_new(&l, &ls->lopts);
    pthread_mutex_lock(&ls->mu);
    if (rc == 0) {
        l->group_index = s->index;
        /* Release: a stall watchdog already running reads it (stall.c). */
        __atomic_store_n(&l->group, ls, __ATOMIC_RELEASE);
        s->loop = l;
    } else if (ls->create_rc == 0) {
        ls->create_rc = rc;
    }
    ls->tried++;
    pthread_cond_broadcast(&ls->cv);
    while (ls->tried < ls->n && ls->create_rc == 0)
        pthread_cond_wait(&ls->cv, &ls->mu);
    bool go = ls->create_rc == 0;
    pthread_mutex_unlock(&ls->mu);
    if (!go) {
        if (l)
            rf_loop_free(l);
        return NULL;
    }
    void *res = NULL;
    rc = rf_loop_run_until_complete(l, ls->entry, ls->arg, &res);
    if (rc == 0 && RF_IS_ERR_PTR(res))
        rc = (int)(intptr_t)res;
    s->result = res;
    s->rc = rc;
    /* Under mu, as rf_loops_stop: no entry is cancelled once step 2 may
     * have begun (a loop may be freed after it). */
    pthread_mutex_lock(&ls->mu);
    if (rc && ls->failed < 0) {
        ls->failed = (int)s->index;
        if (!(ls->flags & RF_LOOPS_KEEP_GOING))
            for (unsigned i = 0; i < ls->n; i++)
                if (i != s->index)
                    cancel_entry(&ls->slots[i]);
    }
    bool last = --ls->entries == 0;
    pthread_mutex_unlock(&ls->mu);
    if (last)
        for (unsigned i = 0; i < ls->n; i++) {
            ls->slots[i].drain_msg.run = drain_run;
            rf__remote_post(ls->slots[i].loop, &ls->slots[i].drain_msg);
        }
    /* Serve the others until the group stops every loop (a stop asked by
     * someone else only interrupts this). */
    while (!s->stop) {
        int frc = rf_loop_run_forever(l);
        if (frc && frc != -EINTR && !s->stop && s->rc == 0)
            s->rc = frc;
    }
    rf_loop_free(l);
    return NULL;
}

/* ---- the API ---- */

/* The CPUs of the process's affinity mask, in order; their number. */
static unsigned affinity_cpus(int *cpus, unsigned max)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return 0;
    unsigned n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set))
            cpus[n++] = c;
    return n;
}

static void loops_destroy(rf_loops *ls)
{
    pthread_mutex_destroy(&ls->mu);
    pthread_cond_destroy(&ls->cv);
    free(ls->slots);
    free(ls);
}

int rf_loops_start(rf_loops **out, rf_fn entry, void *arg,
                   const rf_loops_opts *opts)
{
    if (out)
        *out = NULL;
    if (!out || !entry)
        return -EINVAL;
    if (rf__tls_loop)
        return -EBUSY;
    rf_loops_opts o = opts ? *opts : (rf_loops_opts){0};
    if (o.loops > RF_LOOPS_MAX ||
        (o.flags & ~(RF_LOOPS_PIN | RF_LOOPS_KEEP_GOING)))
        return -EINVAL;
    int *mask = malloc(CPU_SETSIZE * sizeof(int));
    if (!mask)
        return -ENOMEM;
    unsigned ncpu = affinity_cpus(mask, CPU_SETSIZE);
    if (o.loops == 0)
        o.loops = ncpu ? ncpu : 1;
    rf_loops *ls = calloc(1, sizeof(*ls));
    if (ls)
        ls->slots = calloc(o.loops, sizeof(slot));
    if (!ls || !ls->slots) {
        free(ls);
        free(mask);
        return -ENOMEM;
    }
    ls->n = o.loops;
    ls->flags = o.flags;
    if (o.loop)
        ls->lopts = *o.loop;
    ls->lopts.flags |= RF_LOOP_SERVE;
    ls->entry = entry;
    ls->arg = arg;
    ls->entries = ls->busy = ls->n;
    ls->failed = -1;
    pthread_mutex_init(&ls->mu, NULL);
    pthread_cond_init(&ls->cv, NULL);
    int rc = 0;
    unsigned started = 0;
    for (unsigned i = 0; i < ls->n; i++) {
        slot *s = &ls->slots[i];
        s->ls = ls;
        s->index = i;
        s->cpu = (o.flags & RF_LOOPS_PIN) && ncpu ? mask[i % ncpu] : -1;
        rc = -rf__thread_create(&s->thread, loop_thread, s);
        if (rc)
            break;
        s->started = true;
        started++;
    }
    free(mask);
    pthread_mutex_lock(&ls->mu);
    if (rc && ls->create_rc == 0)
        ls->create_rc = rc; /* the threads started give up */
    /* The threads that never started will never try: count them. */
    ls->tried += ls->n - started;
    pthread_cond_broadcast(&ls->cv);
    while (ls->tried < ls->n)
        pthread_cond_wait(&ls->cv, &ls->mu);
    rc = ls->create_rc;
    pthread_mutex_unlock(&ls->mu);
    if (rc) {
        for (unsigned i = 0; i < ls->n; i++)
            if (ls->slots[i].started)
                pthread_join(ls->slots[i].thread, NULL);
        loops_destroy(ls);
        return rc;
    }
    *out = ls;
    return 0;
}

int rf_loops_wait(rf_loops *ls, void **results, int *failed)
{
    if (failed)
        *failed = -1;
    if (!ls)
        return -EINVAL;
    if (rf__tls_loop && rf__tls_loop->group == ls)
        return -EBUSY;
    if (__atomic_exchange_n(&ls->waited, 1, __ATOMIC_ACQ_REL))
        return -EALREADY;
    for (unsigned i = 0; i < ls->n; i++)
        pthread_join(ls->slots[i].thread, NULL);
    if (ls->pool)
        rf_pool_free(ls->pool);
    ls->pool = NULL;
    if (results)
        for (unsigned i = 0; i < ls->n; i++)
            results[i] = ls->slots[i].result;
    int f = ls->failed; /* the threads have exited */
    if (f < 0) {
        /* No entry failed; a loop's run may have (an io_uring error). */
        for (unsigned i = 0; i < ls->n && f < 0; i++)
            if (ls->slots[i].rc)
                f = (int)i;
    }
    if (failed)
        *failed = f;
    return f < 0 ? 0 : ls->slots[f].rc;
}

int rf_loops_stop(rf_loops *ls)
{
    if (!ls)
        return -EINVAL;
    int rc = 0;
    pthread_mutex_lock(&ls->mu);
    if (ls->entries == 0)
        rc = -EALREADY;
    else
        for (unsigned i = 0; i < ls->n; i++)
            cancel_entry(&ls->slots[i]);
    pthread_mutex_unlock(&ls->mu);
    return rc;
}

int rf_loops_free(rf_loops *ls)
{
    if (!ls)
        return 0;
    if (!__atomic_load_n(&ls->waited, __ATOMIC_ACQUIRE))
        return -EBUSY;
    loops_destroy(ls);
    return 0;
}

int rf_run_loops(rf_fn entry, void *arg, const rf_loops_opts *opts,
                 void **results, int *failed)
{
    if (failed)
        *failed = -1;
    rf_loops *ls;
    int rc = rf_loops_start(&ls, entry, arg, opts);
    if (rc)
        return rc;
    rc = rf_loops_wait(ls, results, failed);
    rf_loops_free(ls);
    return rc;
}

/* rf_loops_stats sums the fields one by one: a field added to rf_stats
 * must be added there. */
_Static_assert(sizeof(rf_stats) == 21 * sizeof(uint64_t),
               "rf_stats changed: update rf_loops_stats");

int rf_loops_stats(const rf_loops *ls, rf_stats *out)
{
    if (!ls || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < ls->n; i++) {
        rf_stats st;
        int rc = rf_loop_stats_threadsafe(ls->slots[i].loop, &st);
        if (rc)
            return rc;
        if (i == 0) {
            out->ring_flags = st.ring_flags;
            out->guard_mode = st.guard_mode;
        }
#define SUM(f) out->f += st.f
        SUM(switches);
        SUM(tasks_spawned);
        SUM(tasks_alive);
        SUM(sqes_submitted);
        SUM(enters);
        SUM(cqes_reaped);
        SUM(ops_in_flight);
        SUM(passes);
        SUM(stacks_mapped);
        SUM(accept_emfile);
        SUM(stalls);
        SUM(acceptor_pauses);
        SUM(mail_refused);
        SUM(spawn_failed);
        SUM(wakeups_eventfd);
        SUM(wakeups_msg_ring);
        SUM(sleeps_avoided);
        SUM(wakes_batched);
        SUM(recv_pauses);
        SUM(recv_nobufs);
#undef SUM
    }
    return 0;
}

unsigned rf_loops_count(const rf_loops *ls) { return ls ? ls->n : 0; }

rf_loop *rf_loops_loop(const rf_loops *ls, unsigned i)
{
    return ls && i < ls->n ? ls->slots[i].loop : NULL;
}

rf_loops *rf_loops_current(void)
{
    rf_loop *l = rf__tls_loop;
    return l ? l->group : NULL;
}

int rf_loop_index(void)
{
    rf_loop *l = rf__tls_loop;
    if (!l)
        return -EPERM;
    return l->group ? (int)l->group_index : 0;
}
