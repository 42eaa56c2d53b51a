/*
 * Queue, event, mutex, semaphore and condition: ordering (FIFO), wake-up
 * counts (a put wakes exactly one getter, a set wakes everyone in one
 * pass), cancellation of a waiter in the middle of a wait list, the
 * hand-off when a waiter is cancelled after being served, close, join,
 * deadlines, misuse errors, and a seeded fuzz where every item must be
 * delivered exactly once.
 */
#include "helpers.h"

#include <pthread.h>

/* Switches made by the loop so far. */
static uint64_t switches(void) { return rft_stats().switches; }

/* Yield n times: lets every ready task run up to its next wait. */
static void yields(int n)
{
    for (int i = 0; i < n; i++)
        rf_yield();
}

/* ---- queue: order and capacity -------------------------------------------- */

static void *queue_order(void *arg)
{
    void *slots[4];
    rf_queue q;
    RFT_CHECK_INT(rf_queue_init(&q, 4, slots), 0);
    RFT_CHECK_INT(rf_queue_capacity(&q), 4);
    for (uintptr_t i = 1; i <= 4; i++)
        RFT_CHECK_INT(rf_queue_try_put(&q, (void *)i), 0);
    RFT_CHECK_INT(rf_queue_try_put(&q, (void *)5), -EAGAIN);
    RFT_CHECK_INT(rf_queue_size(&q), 4);
    void *item;
    /* Wrap around the ring a few times. */
    for (uintptr_t i = 1; i <= 20; i++) {
        RFT_CHECK_INT(rf_queue_get(&q, &item), 0);
        RFT_CHECK_PTR(item, (void *)i);
        RFT_CHECK_INT(rf_queue_put(&q, (void *)(i + 4)), 0);
    }
    for (uintptr_t i = 21; i <= 24; i++) {
        RFT_CHECK_INT(rf_queue_try_get(&q, &item), 0);
        RFT_CHECK_PTR(item, (void *)i);
    }
    RFT_CHECK_INT(rf_queue_try_get(&q, &item), -EAGAIN);
    /* NULL is an item like any other. */
    RFT_CHECK_INT(rf_queue_try_put(&q, NULL), 0);
    item = &item;
    RFT_CHECK_INT(rf_queue_get(&q, &item), 0);
    RFT_CHECK_PTR(item, NULL);
    RFT_CHECK_INT(rf_queue_fini(&q), 0);
    return NULL;
}

static void test_queue_order(void **state) { rft_run(queue_order, NULL); }

/* ---- queue: a put wakes exactly one getter, getters served FIFO ------------ */

typedef struct getter_ctx {
    rf_queue *q;
    int id;
    int *order; /* ids in the order items were received */
    int *norder;
    void *items[4];
    int nitems;
    int want;   /* items to get before returning */
    int last_rc;
} getter_ctx;

static void *getter(void *arg)
{
    getter_ctx *g = arg;
    while (g->nitems < g->want) {
        void *item;
        int rc = rf_queue_get(g->q, &item);
        g->last_rc = rc;
        if (rc != 0)
            break;
        g->items[g->nitems++] = item;
        if (g->order)
            g->order[(*g->norder)++] = g->id;
    }
    return NULL;
}

static void *put_wakes_one(void *arg)
{
    rf_queue q;
    RFT_CHECK_INT(rf_queue_init(&q, 8, NULL), 0);
    int order[16], norder = 0;
    getter_ctx g[3];
    rf_task *t[3];
    for (int i = 0; i < 3; i++) {
        g[i] = (getter_ctx){.q = &q, .id = i, .order = order, .norder = &norder,
                            .want = 2};
        t[i] = rf_spawn(getter, &g[i]);
        RFT_CHECK(t[i] != NULL);
    }
    yields(2); /* all three wait, in the order 0, 1, 2 */
    RFT_CHECK_INT(norder, 0);
    /* One put, one yield: exactly the first getter runs (main -> g0 ->
     * main: two switches); a herd would cost four. */
    uint64_t s0 = switches();
    RFT_CHECK_INT(rf_queue_put(&q, (void *)1), 0);
    rf_yield();
    RFT_CHECK_INT(switches() - s0, 2);
    RFT_CHECK_INT(norder, 1);
    RFT_CHECK_INT(order[0], 0);
    /* The waiting getters are now 1, 2, then 0 again (its second get):
     * 2, 3, 4 are handed to them in that order, 5 and 6 are queued. */
    for (uintptr_t i = 2; i <= 6; i++)
        RFT_CHECK_INT(rf_queue_put(&q, (void *)i), 0);
    RFT_CHECK_INT(rf_queue_size(&q), 2);
    RFT_CHECK_INT(rf_gather(t, 3, NULL), 0);
    RFT_CHECK_INT(norder, 6);
    /* They run in the order they were woken; 1 and 2 find 5 and 6 queued. */
    int expect[6] = {0, 1, 1, 2, 2, 0};
    for (int i = 0; i < 6; i++)
        RFT_CHECK_INT(order[i], expect[i]);
    uintptr_t items[3][2] = {{1, 4}, {2, 5}, {3, 6}};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++)
            RFT_CHECK_PTR(g[i].items[k], (void *)items[i][k]);
    for (int i = 0; i < 3; i++)
        rf_task_release(t[i]);
    RFT_CHECK_INT(rf_queue_fini(&q), 0);
    return NULL;
}

static void test_queue_put_wakes_one_getter(void **state) { rft_run(put_wakes_one, NULL); }

/* ---- queue: waiting putters, FIFO, and the rendezvous queue ---------------- */

typedef struct putter_ctx {
    rf_queue *q;
    void *item;
    int rc;
    bool done;
} putter_ctx;

static void *putter(void *arg)
{
    putter_ctx *p = arg;
    p->rc = rf_queue_put(p->q, p->item);
    p->done = true;
    return NULL;
}

static void *putters_fifo(void *arg)
{
    rf_queue q;
    RFT_CHECK_INT(rf_queue_init(&q, 1, NULL), 0);
    RFT_CHECK_INT(rf_queue_put(&q, (void *)1), 0);
    putter_ctx p[3];
    rf_task *t[3];
    for (int i = 0; i < 3; i++) {
        p[i] = (putter_ctx){.q = &q, .item = (void *)(uintptr_t)(i + 2)};
        t[i] = rf_spawn(putter, &p[i]);
    }
    yields(2);
    for (int i = 0; i < 3; i++)
        RFT_CHECK(!p[i].done);
    /* Each get frees the slot for the first waiting put, without a
     * switch: the item is already queued when get returns. */
    for (uintptr_t i = 1; i <= 4; i++) {
        void *item;
        RFT_CHECK_INT(rf_queue_get(&q, &item), 0);
        RFT_CHECK_PTR(item, (void *)i);
        RFT_CHECK_INT(rf_queue_size(&q), i < 4 ? 1 : 0);
    }
    RFT_CHECK_INT(rf_gather(t, 3, NULL), 0);
    for (int i = 0; i < 3; i++) {
        RFT_CHECK_INT(p[i].rc, 0);
        rf_task_release(t[i]);
    }
    RFT_CHECK_INT(rf_queue_fini(&q), 0);
    return NULL;
}

static void test_queue_putters_fifo(void **state) { rft_run(putters_fifo, NULL); }

static void *rendezvous(void *arg)
{
    rf_queue q;
    RFT_CHECK_INT(rf_queue_init(&q, 0, NULL), 0);
    RFT_CHECK_INT(rf_queue_try_put(&q, (void *)1), -EAGAIN);
    void *item;
    RFT_CHECK_INT(rf_queue_try_get(&q, &item), -EAGAIN);
    /* A put waits for a get ... */
    putter_ctx p = {.q = &q, .item = (void *)7};
    rf_task *t = rf_spawn(putter, &p);
    yields(2);
    RFT_CHECK(!p.done);
    RFT_CHECK_INT(rf_queue_try_get(&q, &item), 0);
    RFT_CHECK_PTR(item, (void *)7);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    RFT_CHECK_INT(p.rc, 0);
    rf_task_release(t);
    /* ... and a waiting get makes try_put succeed. */
    getter_ctx g = {.q = &q, .want = 1};
    t = rf_spawn(getter, &g);
    yields(2);
    RFT_CHECK_INT(rf_queue_try_put(&q, (void *)8), 0);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    RFT_CHECK_PTR(g.items[0], (void *)8);
    rf_task_release(t);
    RFT_CHECK_INT(rf_queue_fini(&q), 0);
    return NULL;
}

static void test_queue_rendezvous(void **state) { rft_run(rendezvous, NULL); }

/* ---- queue: cancelling a waiter in the middle of the list ------------------ */

static void *cancel_middle_getter(void *arg)
{
    rf_queue q;
    RFT_CHECK_INT(rf_queue_init(&q, 4, NULL), 0);
    getter_ctx g[3];
    rf_task *t[3];
    for (int i = 0; i < 3; i++) {
        g[i] = (getter_ctx){.q = &q, .id = i, .want = 1};
        t[i] = rf_spawn(getter, &g[i]);
    }
    yields(2);
    RFT_CHECK_INT(rf_cancel(t[1]), 0);
    RFT_CHECK_INT(rf_join(t[1], NULL), -ECANCELED);
    RFT_CHECK_INT(g[1].last_rc, -ECANCELED);
    RFT_CHECK_INT(g[1].nitems, 0);
    RFT_CHECK_INT(rf_queue_put(&q, (void *)1), 0);
    RFT_CHECK_INT(rf_queue_put(&q, (void *)2), 0);
    RFT_CHECK_INT(rf_join(t[0], NULL), 0);
    RFT_CHECK_INT(rf_join(t[2], NULL), 0);
    RFT_CHECK_PTR(g[0].items[0], (void *)1);
    RFT_CHECK_PTR(g[2].items[0], (void *)2);
    RFT_CHECK_INT(rf_queue_size(&q), 0);
    for (int i = 0; i < 3; i++)
        rf_task_release(t[i]);
    RFT_CHECK_INT(rf_queue_fini(&q), 0);
    return NULL;
}

static void test_queue_cancel_middle_getter(void **state) { rft_run(cancel_middle_getter, NULL); }

static void *cancel_middle_putter(void *arg)
{
    rf_queue q;
    RFT_CHECK_INT(rf_queue_init(&q, 1, NULL), 0);
    RFT_CHECK_INT(rf_queue_put(&q, (void *)1), 0);
    putter_ctx p[3];
    rf_task *t[3];
    for (int i = 0; i < 3; i++) {
        p[i] = (putter_ctx){.q = &q, .item = (void *)(uintptr_t)(i + 2)};
        t[i] = rf_spawn(putter, &p[i]);
    }
    yields(2);
    rf_cancel(t[1]);
    RFT_CHECK_INT(rf_join(t[1], NULL), -ECANCELED);
    RFT_CHECK_INT(p[1].rc, -ECANCELED);
    void *item;
    uintptr_t expect[3] = {1, 2, 4};
    for (int i = 0; i < 3; i++) {
        RFT_CHECK_INT(rf_queue_get(&q, &item), 0);
        RFT_CHECK_PTR(item, (void *)expect[i]);
    }
    RFT_CHECK_INT(rf_queue_try_get(&q, &item), -EAGAIN);
    for (int i = 0; i < 3; i++) {
        rf_join(t[i], NULL);
        rf_task_release(t[i]);
    }
    RFT_CHECK_INT(rf_queue_fini(&q), 0);
    return NULL;
}

static void test_queue_cancel_middle_putter(void **state) { rft_run(cancel_middle_putter, NULL); }

/* ---- hand-off: served, then cancelled before it ran ----------------------- */

static void *handoff_then_cancel(void *arg)
{
    rf_queue q;
    RFT_CHECK_INT(rf_queue_init(&q, 2, NULL), 0);
    getter_ctx g = {.q = &q, .want = 2};
    rf_task *t = rf_spawn(getter, &g);
    yields(2);
    /* The put hands the item over and wakes the getter; the cancel comes
     * before the getter runs. Its get still returns the item; its next get
     * sees the cancellation. */
    RFT_CHECK_INT(rf_queue_put(&q, (void *)42), 0);
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK_INT(g.nitems, 1);
    RFT_CHECK_PTR(g.items[0], (void *)42);
    RFT_CHECK_INT(g.last_rc, -ECANCELED);
    RFT_CHECK_INT(rf_queue_size(&q), 0);
    rf_task_release(t);
    /* The other order: cancelled, and served by a put before it ran (it
     * is still first in line): the item is its, too. */
    g = (getter_ctx){.q = &q, .want = 2};
    t = rf_spawn(getter, &g);
    yields(2);
    RFT_CHECK_INT(rf_cancel(t), 0);
    RFT_CHECK_INT(rf_queue_put(&q, (void *)43), 0);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK_INT(g.nitems, 1);
    RFT_CHECK_PTR(g.items[0], (void *)43);
    RFT_CHECK_INT(g.last_rc, -ECANCELED);
    RFT_CHECK_INT(rf_queue_size(&q), 0);
    rf_task_release(t);
    RFT_CHECK_INT(rf_queue_fini(&q), 0);
    return NULL;
}

static void test_queue_handoff_then_cancel(void **state) { rft_run(handoff_then_cancel, NULL); }

/* ---- close ---------------------------------------------------------------- */

static void *queue_close(void *arg)
{
    rf_queue q, empty, full;
    RFT_CHECK_INT(rf_queue_init(&q, 4, NULL), 0);
    RFT_CHECK_INT(rf_queue_init(&empty, 4, NULL), 0);
    RFT_CHECK_INT(rf_queue_init(&full, 1, NULL), 0);
    /* Waiting getters on an empty queue get -EPIPE at once. */
    getter_ctx g[2];
    rf_task *tg[2];
    for (int i = 0; i < 2; i++) {
        g[i] = (getter_ctx){.q = &empty, .want = 1};
        tg[i] = rf_spawn(getter, &g[i]);
    }
    /* Waiting putters on a full queue get -EPIPE; their items stay theirs. */
    RFT_CHECK_INT(rf_queue_put(&full, (void *)1), 0);
    putter_ctx p = {.q = &full, .item = (void *)2};
    rf_task *tp = rf_spawn(putter, &p);
    yields(2);
    RFT_CHECK_INT(rf_queue_close(&empty), 0);
    RFT_CHECK_INT(rf_queue_close(&full), 0);
    RFT_CHECK_INT(rf_queue_close(&full), 0); /* twice is harmless */
    RFT_CHECK(rf_queue_closed(&full));
    for (int i = 0; i < 2; i++) {
        RFT_CHECK_INT(rf_join(tg[i], NULL), 0);
        RFT_CHECK_INT(g[i].last_rc, -EPIPE);
        rf_task_release(tg[i]);
    }
    RFT_CHECK_INT(rf_join(tp, NULL), 0);
    RFT_CHECK_INT(p.rc, -EPIPE);
    rf_task_release(tp);
    void *item;
    RFT_CHECK_INT(rf_queue_get(&full, &item), 0);
    RFT_CHECK_PTR(item, (void *)1);
    RFT_CHECK_INT(rf_queue_get(&full, &item), -EPIPE);
    /* Items queued before the close are drained, then -EPIPE. */
    RFT_CHECK_INT(rf_queue_put(&q, (void *)1), 0);
    RFT_CHECK_INT(rf_queue_put(&q, (void *)2), 0);
    RFT_CHECK_INT(rf_queue_close(&q), 0);
    RFT_CHECK_INT(rf_queue_put(&q, (void *)3), -EPIPE);
    RFT_CHECK_INT(rf_queue_try_put(&q, (void *)3), -EPIPE);
    RFT_CHECK_INT(rf_queue_get(&q, &item), 0);
    RFT_CHECK_PTR(item, (void *)1);
    RFT_CHECK_INT(rf_queue_try_get(&q, &item), 0);
    RFT_CHECK_PTR(item, (void *)2);
    RFT_CHECK_INT(rf_queue_get(&q, &item), -EPIPE);
    RFT_CHECK_INT(rf_queue_try_get(&q, &item), -EPIPE);
    RFT_CHECK_INT(rf_queue_fini(&q), 0);
    RFT_CHECK_INT(rf_queue_fini(&empty), 0);
    RFT_CHECK_INT(rf_queue_fini(&full), 0);
    return NULL;
}

static void test_queue_close(void **state) { rft_run(queue_close, NULL); }

/* ---- task_done / join ----------------------------------------------------- */

typedef struct join_ctx {
    rf_queue *q;
    int rc;
    bool done;
} join_ctx;

static void *joiner(void *arg)
{
    join_ctx *j = arg;
    j->rc = rf_queue_join(j->q);
    j->done = true;
    return NULL;
}

static void *queue_join(void *arg)
{
    rf_queue q;
    RFT_CHECK_INT(rf_queue_init(&q, 4, NULL), 0);
    RFT_CHECK_INT(rf_queue_join(&q), 0); /* nothing unfinished */
    RFT_CHECK_INT(rf_queue_task_done(&q), -EINVAL);
    for (uintptr_t i = 0; i < 3; i++)
        RFT_CHECK_INT(rf_queue_put(&q, (void *)i), 0);
    join_ctx j[2] = {{.q = &q}, {.q = &q}};
    rf_task *t[2] = {rf_spawn(joiner, &j[0]), rf_spawn(joiner, &j[1])};
    yields(2);
    void *item;
    for (int i = 0; i < 3; i++) {
        RFT_CHECK_INT(rf_queue_get(&q, &item), 0);
        yields(2);
        RFT_CHECK(!j[0].done && !j[1].done);
        /* Both joiners wake on the last task_done, in one pass. */
        uint64_t s0 = switches();
        RFT_CHECK_INT(rf_queue_task_done(&q), 0);
        if (i < 2)
            continue;
        rf_yield();
        RFT_CHECK_INT(switches() - s0, 3);
        RFT_CHECK(j[0].done && j[1].done);
    }
    RFT_CHECK_INT(rf_queue_task_done(&q), -EINVAL);
    RFT_CHECK_INT(rf_gather(t, 2, NULL), 0);
    /* Items that came from waiting puts count too: through a full queue,
     * and through a rendezvous queue. */
    for (size_t cap = 0; cap <= 1; cap++) {
        rf_queue r;
        RFT_CHECK_INT(rf_queue_init(&r, cap, NULL), 0);
        if (cap)
            RFT_CHECK_INT(rf_queue_put(&r, (void *)1), 0);
        putter_ctx p = {.q = &r, .item = (void *)2};
        rf_task *tp = rf_spawn(putter, &p);
        yields(2);
        for (size_t i = 0; i <= cap; i++) {
            RFT_CHECK_INT(rf_queue_get(&r, &item), 0);
            RFT_CHECK_INT(rf_queue_task_done(&r), 0);
        }
        RFT_CHECK_INT(rf_queue_task_done(&r), -EINVAL);
        RFT_CHECK_INT(rf_join(tp, NULL), 0);
        RFT_CHECK_INT(p.rc, 0);
        rf_task_release(tp);
        RFT_CHECK_INT(rf_queue_fini(&r), 0);
    }
    RFT_CHECK_INT(j[0].rc, 0);
    RFT_CHECK_INT(j[1].rc, 0);
    rf_task_release(t[0]);
    rf_task_release(t[1]);
    RFT_CHECK_INT(rf_queue_fini(&q), 0);
    return NULL;
}

static void test_queue_join(void **state) { rft_run(queue_join, NULL); }

/* ---- deadlines ------------------------------------------------------------ */

typedef struct mx_hold {
    rf_mutex *m;
} mx_hold;

/* Holds m until cancelled. */
static void *mx_holder(void *arg)
{
    mx_hold *h = arg;
    RFT_CHECK_INT(rf_mutex_lock(h->m), 0);
    rf_sleep(10 * RFT_SEC);
    RFT_CHECK_INT(rf_mutex_unlock(h->m), 0);
    return NULL;
}

static void *queue_deadline(void *arg)
{
    rf_queue q;
    RFT_CHECK_INT(rf_queue_init(&q, 1, NULL), 0);
    void *item;
    uint64_t t0 = rf_now_ns();
    RFT_CHECK_INT(rf_deadline_set(t0 + 20 * RFT_MS), 0);
    RFT_CHECK_INT(rf_queue_get(&q, &item), -ETIMEDOUT);
    RFT_CHECK(rf_now_ns() - t0 >= 20 * RFT_MS);
    RFT_CHECK(rf_now_ns() - t0 < 5 * RFT_SEC);
    /* Past the deadline a call that can complete at once still does; one
     * that would wait fails at once. */
    RFT_CHECK_INT(rf_queue_put(&q, (void *)1), 0);
    RFT_CHECK_INT(rf_queue_put(&q, (void *)2), -ETIMEDOUT);
    RFT_CHECK_INT(rf_queue_get(&q, &item), 0);
    RFT_CHECK_INT(rf_queue_get(&q, &item), -ETIMEDOUT);
    /* The timed-out waiter left the list: fini sees nobody waiting. */
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    RFT_CHECK_INT(rf_queue_fini(&q), 0);

    rf_event e;
    rf_mutex m;
    rf_sem s;
    RFT_CHECK_INT(rf_event_init(&e), 0);
    RFT_CHECK_INT(rf_mutex_init(&m), 0);
    RFT_CHECK_INT(rf_sem_init(&s, 0, 1), 0);
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() + 10 * RFT_MS), 0);
    RFT_CHECK_INT(rf_event_wait(&e), -ETIMEDOUT);
    RFT_CHECK_INT(rf_sem_acquire(&s), -ETIMEDOUT);
    /* A lock held by another task, and a condition nobody signals. */
    mx_hold hold = {.m = &m};
    rf_task *h = rf_spawn(mx_holder, &hold);
    yields(1);
    RFT_CHECK_INT(rf_mutex_lock(&m), -ETIMEDOUT);
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    rf_cancel(h);
    rf_join(h, NULL);
    rf_task_release(h);
    rf_cond c;
    RFT_CHECK_INT(rf_cond_init(&c), 0);
    RFT_CHECK_INT(rf_mutex_lock(&m), 0);
    RFT_CHECK_INT(rf_deadline_set(rf_now_ns() + 10 * RFT_MS), 0);
    RFT_CHECK_INT(rf_cond_wait(&c, &m), -ETIMEDOUT);
    RFT_CHECK_INT(rf_deadline_set(0), 0);
    RFT_CHECK_INT(rf_mutex_unlock(&m), 0); /* held again */
    RFT_CHECK_INT(rf_cond_fini(&c), 0);
    RFT_CHECK_INT(rf_event_fini(&e), 0);
    RFT_CHECK_INT(rf_sem_fini(&s), 0);
    RFT_CHECK_INT(rf_mutex_fini(&m), 0);
    return NULL;
}

static void test_deadlines(void **state) { rft_run(queue_deadline, NULL); }

/* ---- misuse --------------------------------------------------------------- */

static void *misuse_task(void *arg)
{
    rf_queue *q = arg;
    rf_mutex m;
    RFT_CHECK_INT(rf_mutex_init(&m), 0);
    RFT_CHECK_INT(rf_mutex_unlock(&m), -EPERM);
    RFT_CHECK_INT(rf_mutex_lock(&m), 0);
    RFT_CHECK_INT(rf_mutex_lock(&m), -EDEADLK);
    RFT_CHECK_INT(rf_mutex_try_lock(&m), -EDEADLK);
    RFT_CHECK_INT(rf_mutex_fini(&m), -EBUSY);
    RFT_CHECK_INT(rf_mutex_unlock(&m), 0);
    RFT_CHECK_INT(rf_mutex_fini(&m), 0);

    rf_sem s;
    RFT_CHECK_INT(rf_sem_init(&s, 1, 2), 0);
    RFT_CHECK_INT(rf_sem_release(&s), 0);
    RFT_CHECK_INT(rf_sem_release(&s), -EOVERFLOW);
    RFT_CHECK_INT(rf_sem_value(&s), 2);
    RFT_CHECK_INT(rf_sem_fini(&s), 0);

    rf_cond c;
    RFT_CHECK_INT(rf_cond_init(&c), 0);
    RFT_CHECK_INT(rf_mutex_init(&m), 0);
    RFT_CHECK_INT(rf_cond_wait(&c, &m), -EPERM);
    RFT_CHECK_INT(rf_cond_fini(&c), 0);

    /* fini while a task waits: refused, nothing changes. */
    getter_ctx g = {.q = q, .want = 1};
    rf_task *t = rf_spawn(getter, &g);
    yields(2);
    RFT_CHECK_INT(rf_queue_fini(q), -EBUSY);
    RFT_CHECK_INT(rf_queue_put(q, (void *)5), 0);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    RFT_CHECK_PTR(g.items[0], (void *)5);
    rf_task_release(t);
    return NULL;
}

static void test_misuse(void **state)
{
    rf_queue q;
    rf_event e;
    rf_mutex m;
    rf_sem s;
    void *item;
    assert_int_equal(rf_queue_init(NULL, 1, NULL), -EINVAL);
    assert_int_equal(rf_queue_init(&q, (size_t)1 << 40, NULL), -EINVAL);
    assert_int_equal(rf_queue_init(&q, (size_t)RF_QUEUE_MAX + 1, NULL), -EINVAL);
    assert_int_equal(rf_queue_init(&q, SIZE_MAX, NULL), -EINVAL);
    assert_int_equal(rf_sem_init(&s, 0, RF_SEM_MAX + 1u), -EINVAL);
    assert_int_equal(rf_sem_init(&s, 0, UINT32_MAX), -EINVAL);
    assert_int_equal(rf_sem_init(&s, RF_SEM_MAX, RF_SEM_MAX), 0);
    assert_int_equal(rf_sem_fini(&s), 0);
    assert_int_equal(rf_sem_init(&s, 2, 1), -EINVAL);
    assert_int_equal(rf_sem_init(&s, 0, 0), -EINVAL);
    assert_int_equal(rf_queue_put(NULL, NULL), -EINVAL);
    assert_int_equal(rf_queue_get(NULL, &item), -EINVAL);
    assert_int_equal(rf_event_set(NULL), -EINVAL);
    assert_int_equal(rf_mutex_lock(NULL), -EINVAL);
    assert_int_equal(rf_sem_acquire(NULL), -EINVAL);
    /* Outside a task: the waits are refused, the rest works. */
    assert_int_equal(rf_queue_init(&q, 2, NULL), 0);
    assert_int_equal(rf_queue_get(&q, &item), -EPERM);
    assert_int_equal(rf_queue_put(&q, NULL), -EPERM);
    assert_int_equal(rf_queue_join(&q), -EPERM);
    assert_int_equal(rf_queue_try_put(&q, (void *)1), 0);
    assert_int_equal(rf_queue_try_get(&q, &item), 0);
    assert_int_equal(rf_queue_task_done(&q), 0);
    assert_int_equal(rf_event_init(&e), 0);
    assert_int_equal(rf_event_wait(&e), -EPERM);
    assert_int_equal(rf_event_set(&e), 0);
    assert_true(rf_event_is_set(&e));
    assert_int_equal(rf_event_clear(&e), 0);
    assert_false(rf_event_is_set(&e));
    assert_int_equal(rf_mutex_init(&m), 0);
    assert_int_equal(rf_mutex_lock(&m), -EPERM);
    assert_int_equal(rf_mutex_unlock(&m), -EPERM);
    assert_int_equal(rf_sem_init(&s, 1, 1), 0);
    assert_int_equal(rf_sem_acquire(&s), -EPERM);
    assert_int_equal(rf_sem_try_acquire(&s), 0);
    assert_int_equal(rf_sem_try_acquire(&s), -EAGAIN);
    assert_int_equal(rf_sem_release(&s), 0);
    rft_run(misuse_task, &q);
    assert_int_equal(rf_queue_fini(&q), 0);
}

/* ---- event ---------------------------------------------------------------- */

typedef struct ev_ctx {
    rf_event *e;
    int *woken;
    int rc;
} ev_ctx;

static void *ev_waiter(void *arg)
{
    ev_ctx *c = arg;
    c->rc = rf_event_wait(c->e);
    (*c->woken)++;
    return NULL;
}

static void *event_all(void *arg)
{
    rf_event e;
    RFT_CHECK_INT(rf_event_init(&e), 0);
    int woken = 0;
    ev_ctx c[4];
    rf_task *t[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (ev_ctx){.e = &e, .woken = &woken};
        t[i] = rf_spawn(ev_waiter, &c[i]);
    }
    yields(2);
    RFT_CHECK_INT(woken, 0);
    rf_cancel(t[1]); /* one leaves the middle of the list */
    RFT_CHECK_INT(rf_join(t[1], NULL), -ECANCELED);
    RFT_CHECK_INT(c[1].rc, -ECANCELED);
    uint64_t s0 = switches();
    RFT_CHECK_INT(rf_event_set(&e), 0);
    rf_event_clear(&e); /* those woken still return 0 */
    rf_yield();
    /* main -> 0 -> 2 -> 3 -> main, each once. */
    RFT_CHECK_INT(switches() - s0, 4);
    RFT_CHECK_INT(woken, 4);
    for (int i = 0; i < 4; i++) {
        if (i != 1)
            RFT_CHECK_INT(c[i].rc, 0);
        rf_join(t[i], NULL);
        rf_task_release(t[i]);
    }
    rf_event_set(&e);
    RFT_CHECK_INT(rf_event_wait(&e), 0); /* set: no wait */
    RFT_CHECK_INT(rf_event_fini(&e), 0);
    return NULL;
}

static void test_event(void **state) { rft_run(event_all, NULL); }

/* ---- mutex ---------------------------------------------------------------- */

typedef struct mx_ctx {
    rf_mutex *m;
    int id;
    int *order;
    int *n;
    int *inside;
    int rc;
} mx_ctx;

static void *mx_worker(void *arg)
{
    mx_ctx *c = arg;
    c->rc = rf_mutex_lock(c->m);
    if (c->rc)
        return NULL;
    RFT_CHECK_INT(++*c->inside, 1);
    c->order[(*c->n)++] = c->id;
    rf_yield(); /* others run, and must not get in */
    rf_yield();
    --*c->inside;
    RFT_CHECK_INT(rf_mutex_unlock(c->m), 0);
    return NULL;
}

static void *mutex_fifo(void *arg)
{
    rf_mutex m;
    RFT_CHECK_INT(rf_mutex_init(&m), 0);
    RFT_CHECK_INT(rf_mutex_lock(&m), 0);
    int order[8], n = 0, inside = 0;
    mx_ctx c[5];
    rf_task *t[5];
    for (int i = 0; i < 5; i++) {
        c[i] = (mx_ctx){.m = &m, .id = i, .order = order, .n = &n, .inside = &inside};
        t[i] = rf_spawn(mx_worker, &c[i]);
    }
    yields(2);
    rf_cancel(t[2]);
    RFT_CHECK_INT(rf_join(t[2], NULL), -ECANCELED);
    RFT_CHECK_INT(c[2].rc, -ECANCELED);
    RFT_CHECK_INT(rf_mutex_unlock(&m), 0);
    RFT_CHECK_INT(rf_mutex_try_lock(&m), -EBUSY); /* handed to worker 0 */
    RFT_CHECK_INT(rf_mutex_unlock(&m), -EPERM);  /* not ours */
    RFT_CHECK_INT(rf_gather(t, 2, NULL), 0);
    RFT_CHECK_INT(rf_gather(t + 3, 2, NULL), 0);
    RFT_CHECK_INT(n, 4);
    int expect[4] = {0, 1, 3, 4};
    for (int i = 0; i < 4; i++)
        RFT_CHECK_INT(order[i], expect[i]);
    for (int i = 0; i < 5; i++)
        rf_task_release(t[i]);
    RFT_CHECK_INT(rf_mutex_try_lock(&m), 0);
    RFT_CHECK_INT(rf_mutex_unlock(&m), 0);
    RFT_CHECK_INT(rf_mutex_fini(&m), 0);
    return NULL;
}

static void test_mutex_fifo(void **state) { rft_run(mutex_fifo, NULL); }

/* The lock handed to a waiter that is cancelled before it runs is its. */
static void *mutex_handoff_cancel(void *arg)
{
    rf_mutex m;
    RFT_CHECK_INT(rf_mutex_init(&m), 0);
    RFT_CHECK_INT(rf_mutex_lock(&m), 0);
    int order[2], n = 0, inside = 0;
    mx_ctx c = {.m = &m, .order = order, .n = &n, .inside = &inside};
    rf_task *t = rf_spawn(mx_worker, &c);
    yields(2);
    RFT_CHECK_INT(rf_mutex_unlock(&m), 0);
    rf_cancel(t);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK_INT(c.rc, 0);
    RFT_CHECK_INT(n, 1);
    rf_task_release(t);
    RFT_CHECK_INT(rf_mutex_fini(&m), 0); /* and it unlocked it */
    return NULL;
}

static void test_mutex_handoff_then_cancel(void **state) { rft_run(mutex_handoff_cancel, NULL); }

/* ---- semaphore ------------------------------------------------------------ */

typedef struct sem_ctx {
    rf_sem *s;
    int *inside, *max_inside;
    int rc;
} sem_ctx;

static void *sem_worker(void *arg)
{
    sem_ctx *c = arg;
    c->rc = rf_sem_acquire(c->s);
    if (c->rc)
        return NULL;
    if (++*c->inside > *c->max_inside)
        *c->max_inside = *c->inside;
    rf_sleep(1 * RFT_MS);
    --*c->inside;
    RFT_CHECK_INT(rf_sem_release(c->s), 0);
    return NULL;
}

static void *sem_limit(void *arg)
{
    rf_sem s;
    RFT_CHECK_INT(rf_sem_init(&s, 3, 3), 0);
    int inside = 0, max_inside = 0;
    sem_ctx c[20];
    rf_task *t[20];
    for (int i = 0; i < 20; i++) {
        c[i] = (sem_ctx){.s = &s, .inside = &inside, .max_inside = &max_inside};
        t[i] = rf_spawn(sem_worker, &c[i]);
    }
    yields(1);
    rf_cancel(t[10]); /* a waiter in the middle */
    RFT_CHECK_INT(rf_gather(t, 10, NULL), 0);
    RFT_CHECK_INT(rf_join(t[10], NULL), -ECANCELED);
    RFT_CHECK_INT(c[10].rc, -ECANCELED);
    RFT_CHECK_INT(rf_gather(t + 11, 9, NULL), 0);
    RFT_CHECK_INT(max_inside, 3);
    RFT_CHECK_INT(rf_sem_value(&s), 3);
    for (int i = 0; i < 20; i++)
        rf_task_release(t[i]);
    RFT_CHECK_INT(rf_sem_fini(&s), 0);
    return NULL;
}

static void test_sem_limit(void **state) { rft_run(sem_limit, NULL); }

/* ---- condition ------------------------------------------------------------ */

typedef struct cv_ctx {
    rf_cond *c;
    rf_mutex *m;
    int *value;
    int want;
    int rc;
} cv_ctx;

static void *cv_waiter(void *arg)
{
    cv_ctx *x = arg;
    RFT_CHECK_INT(rf_mutex_lock(x->m), 0);
    while (*x->value < x->want) {
        x->rc = rf_cond_wait(x->c, x->m);
        if (x->rc)
            break;
    }
    /* Held again in every case, the cancelled one included. */
    RFT_CHECK_INT(rf_mutex_unlock(x->m), 0);
    return NULL;
}

static void *cond_all(void *arg)
{
    rf_cond c;
    rf_mutex m;
    RFT_CHECK_INT(rf_cond_init(&c), 0);
    RFT_CHECK_INT(rf_mutex_init(&m), 0);
    int value = 0;
    cv_ctx x[3];
    rf_task *t[3];
    for (int i = 0; i < 3; i++) {
        x[i] = (cv_ctx){.c = &c, .m = &m, .value = &value, .want = i + 1};
        t[i] = rf_spawn(cv_waiter, &x[i]);
    }
    yields(2);
    /* Cancelled while main holds the mutex: it must wait for it. */
    RFT_CHECK_INT(rf_mutex_lock(&m), 0);
    rf_cancel(t[2]);
    yields(2);
    RFT_CHECK(!rf_done(t[2]));
    RFT_CHECK_INT(rf_mutex_unlock(&m), 0);
    RFT_CHECK_INT(rf_join(t[2], NULL), -ECANCELED);
    RFT_CHECK_INT(x[2].rc, -ECANCELED);
    value = 1;
    RFT_CHECK_INT(rf_cond_signal(&c), 0);
    RFT_CHECK_INT(rf_join(t[0], NULL), 0);
    value = 2;
    RFT_CHECK_INT(rf_cond_broadcast(&c), 0);
    RFT_CHECK_INT(rf_join(t[1], NULL), 0);
    for (int i = 0; i < 3; i++)
        rf_task_release(t[i]);
    RFT_CHECK_INT(rf_cond_fini(&c), 0);
    RFT_CHECK_INT(rf_mutex_fini(&m), 0);
    return NULL;
}

static void test_cond(void **state) { rft_run(cond_all, NULL); }

/* ---- fuzz: every item delivered exactly once ------------------------------ */

#define FZ_PRODUCERS 8
#define FZ_CONSUMERS 8
#define FZ_PER_PRODUCER 500
#define FZ_ITEMS (FZ_PRODUCERS * FZ_PER_PRODUCER)

typedef struct fuzz {
    rf_queue q;
    uint64_t rng;
    size_t capacity;
    int cancels;
    uint8_t sent[FZ_ITEMS];     /* put returned 0 */
    uint8_t received[FZ_ITEMS]; /* times received */
} fuzz;

static uint32_t fz_rand(fuzz *f)
{
    f->rng ^= f->rng << 13;
    f->rng ^= f->rng >> 7;
    f->rng ^= f->rng << 17;
    return (uint32_t)(f->rng >> 32);
}

typedef struct fz_role {
    fuzz *f;
    int id;
} fz_role;

static void *fz_producer(void *arg)
{
    fz_role *r = arg;
    fuzz *f = r->f;
    for (int i = 0; i < FZ_PER_PRODUCER; i++) {
        int item = r->id * FZ_PER_PRODUCER + i;
        int rc = fz_rand(f) % 4 == 0
                     ? rf_queue_try_put(&f->q, (void *)(uintptr_t)(item + 1))
                     : rf_queue_put(&f->q, (void *)(uintptr_t)(item + 1));
        if (rc == 0)
            f->sent[item] = 1;
        else if (rc != -EAGAIN && !RFT_CHECK(rc == -ECANCELED))
            break;
        if (rc == -ECANCELED)
            break;
        if (fz_rand(f) % 3 == 0)
            rf_yield();
    }
    return NULL;
}

static void *fz_consumer(void *arg)
{
    fz_role *r = arg;
    fuzz *f = r->f;
    for (;;) {
        void *item;
        int rc = fz_rand(f) % 4 == 0 ? rf_queue_try_get(&f->q, &item)
                                     : rf_queue_get(&f->q, &item);
        if (rc == -EAGAIN) {
            if (rf_yield() == -ECANCELED)
                break;
            continue;
        }
        if (rc == -EPIPE || rc == -ECANCELED)
            break;
        if (!RFT_CHECK_INT(rc, 0))
            break;
        uintptr_t v = (uintptr_t)item;
        if (RFT_CHECK(v >= 1 && v <= FZ_ITEMS))
            f->received[v - 1]++;
        if (fz_rand(f) % 3 == 0)
            rf_yield();
    }
    return NULL;
}

static void *fuzz_main(void *arg)
{
    fuzz *f = arg;
    RFT_CHECK_INT(rf_queue_init(&f->q, f->capacity, NULL), 0);
    fz_role roles[FZ_PRODUCERS + FZ_CONSUMERS];
    rf_task *prod[FZ_PRODUCERS], *cons[FZ_CONSUMERS];
    for (int i = 0; i < FZ_PRODUCERS; i++) {
        roles[i] = (fz_role){f, i};
        prod[i] = rf_spawn(fz_producer, &roles[i]);
    }
    for (int i = 0; i < FZ_CONSUMERS; i++) {
        roles[FZ_PRODUCERS + i] = (fz_role){f, i};
        cons[i] = rf_spawn(fz_consumer, &roles[FZ_PRODUCERS + i]);
    }
    /* Cancel a few producers and consumers at random moments, while they
     * wait or while they run. */
    for (int round = 0; round < 200; round++) {
        rf_yield();
        uint32_t x = fz_rand(f);
        if (x % 53 == 0)
            f->cancels += rf_cancel(prod[x / 53 % FZ_PRODUCERS]) == 0;
        else if (x % 59 == 0) /* the last consumer survives */
            f->cancels += rf_cancel(cons[x / 59 % (FZ_CONSUMERS - 1)]) == 0;
    }
    for (int i = 0; i < FZ_PRODUCERS; i++)
        rf_join(prod[i], NULL);
    RFT_CHECK_INT(rf_queue_close(&f->q), 0);
    for (int i = 0; i < FZ_CONSUMERS; i++)
        rf_join(cons[i], NULL);
    /* Whatever the cancelled consumers left behind. */
    void *item;
    while (rf_queue_try_get(&f->q, &item) == 0)
        f->received[(uintptr_t)item - 1]++;
    int sent = 0, lost = 0, dup = 0, ghost = 0;
    for (int i = 0; i < FZ_ITEMS; i++) {
        sent += f->sent[i];
        if (f->sent[i] && f->received[i] == 0)
            lost++;
        if (f->received[i] > 1)
            dup++;
        if (!f->sent[i] && f->received[i])
            ghost++;
    }
    RFT_CHECK_INT(lost, 0);
    RFT_CHECK_INT(dup, 0);
    RFT_CHECK_INT(ghost, 0);
    RFT_CHECK(sent > FZ_ITEMS / 4); /* the fuzz did move items */
    for (int i = 0; i < FZ_PRODUCERS; i++)
        rf_task_release(prod[i]);
    for (int i = 0; i < FZ_CONSUMERS; i++)
        rf_task_release(cons[i]);
    RFT_CHECK_INT(rf_queue_fini(&f->q), 0);
    return NULL;
}

/* Fixed seeds, over a rendezvous queue and two bounded ones. */
static void test_queue_fuzz(void **state)
{
    static const uint64_t seeds[] = {0x9e3779b97f4a7c15ull, 1, 0xdeadbeefull,
                                     42, 0x123456789abcdefull};
    static const size_t caps[] = {0, 1, 5};
    int cancels = 0;
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++) {
            fuzz *f = calloc(1, sizeof(*f));
            assert_non_null(f);
            f->rng = seeds[i];
            f->capacity = caps[k];
            rft_run(fuzz_main, f);
            cancels += f->cancels;
            free(f);
        }
    }
    assert_true(cancels > 0); /* the fuzz did cancel tasks */
}

/* ---- another loop's waiters: -EXDEV ---------------------------------------- */

typedef struct xdev {
    rf_queue q;
    rf_event e;
    int rc_get, rc_wait;
    int ready; /* __atomic: both waits have begun */
} xdev;

static void *xdev_getter(void *arg)
{
    xdev *x = arg;
    rf_deadline_set(rf_now_ns() + 3 * RFT_SEC);
    void *item;
    x->rc_get = rf_queue_get(&x->q, &item);
    return NULL;
}

/* Runs after the two waiters have begun to wait (FIFO run queue). */
static void *xdev_ready(void *arg)
{
    xdev *x = arg;
    __atomic_store_n(&x->ready, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* The other thread's loop: this task waits on e, a second one on q; both
 * give up at their deadline, so the thread ends whatever the test does. */
static void *xdev_waiters(void *arg)
{
    xdev *x = arg;
    rf_task *t = rf_spawn(xdev_getter, x);
    rf_task *r = rf_spawn(xdev_ready, x);
    rf_deadline_set(rf_now_ns() + 3 * RFT_SEC);
    x->rc_wait = rf_event_wait(&x->e);
    rf_deadline_set(0); /* or the join would time out at once */
    rf_join(t, NULL);
    rf_task_release(t);
    rf_task_release(r);
    return NULL;
}

static void *xdev_thread(void *arg)
{
    rf_run(xdev_waiters, arg, NULL);
    return NULL;
}

static void *xdev_main(void *arg)
{
    xdev *x = arg;
    void *item;
    RFT_CHECK_INT(rf_queue_put(&x->q, (void *)1), -EXDEV);
    RFT_CHECK_INT(rf_queue_get(&x->q, &item), -EXDEV);
    RFT_CHECK_INT(rf_queue_close(&x->q), -EXDEV);
    RFT_CHECK_INT(rf_event_wait(&x->e), -EXDEV);
    RFT_CHECK_INT(rf_event_set(&x->e), -EXDEV);
    return NULL;
}

static void test_other_loop(void **state)
{
    /* The misuse tested here is itself a data race (the objects are not
     * thread-safe; -EXDEV is a best-effort diagnosis of that mistake), and
     * ThreadSanitizer rightly reports it. */
    if (RFT_TSAN)
        skip();
    xdev *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    assert_int_equal(rf_queue_init(&x->q, 1, NULL), 0);
    assert_int_equal(rf_event_init(&x->e), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, xdev_thread, x), 0);
    while (!__atomic_load_n(&x->ready, __ATOMIC_ACQUIRE))
        usleep(1000);
    assert_int_equal(rf_event_fini(&x->e), -EBUSY);
    /* From this thread outside any loop, and from a task of another loop:
     * the waiters belong to the other thread's loop. */
    assert_int_equal(rf_queue_try_put(&x->q, (void *)1), -EXDEV);
    assert_int_equal(rf_event_set(&x->e), -EXDEV);
    rft_run(xdev_main, x);
    pthread_join(th, NULL);
    assert_int_equal(x->rc_get, -ETIMEDOUT);
    assert_int_equal(x->rc_wait, -ETIMEDOUT);
    assert_int_equal(rf_queue_fini(&x->q), 0);
    assert_int_equal(rf_event_fini(&x->e), 0);
    free(x);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_queue_order),
    cmocka_unit_test(test_queue_put_wakes_one_getter),
    cmocka_unit_test(test_queue_putters_fifo),
    cmocka_unit_test(test_queue_rendezvous),
    cmocka_unit_test(test_queue_cancel_middle_getter),
    cmocka_unit_test(test_queue_cancel_middle_putter),
    cmocka_unit_test(test_queue_handoff_then_cancel),
    cmocka_unit_test(test_queue_close),
    cmocka_unit_test(test_queue_join),
    cmocka_unit_test(test_deadlines),
    cmocka_unit_test(test_misuse),
    cmocka_unit_test(test_event),
    cmocka_unit_test(test_mutex_fifo),
    cmocka_unit_test(test_mutex_handoff_then_cancel),
    cmocka_unit_test(test_sem_limit),
    cmocka_unit_test(test_cond),
    cmocka_unit_test(test_queue_fuzz),
    cmocka_unit_test(test_other_loop),
};

RFT_MAIN(tests)
