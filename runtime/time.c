/*
 * Clocks and sleeping. A sleep is an IORING_OP_TIMEOUT on an absolute
 * CLOCK_MONOTONIC deadline: a series of sleeps does not accumulate the
 * scheduling delay of each, and many tasks' sleeps reach the kernel in one
 * submission.
 */
#include <stdlib.h>
#include <time.h>

#include "internal.h"

uint64_t rf__real_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * RF_NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

uint64_t rf_now_ns(void)
{
    rf_loop *l = rf__tls_loop;
    if (rf_unlikely(l && l->vtime))
        return l->vnow; /* written on this thread only */
    return rf__real_now_ns();
}

/* CLOCK_MONOTONIC_COARSE: the last tick's CLOCK_MONOTONIC (never ahead
 * of it), read from the vDSO without the clock source: a tenth of the
 * cost on a virtual machine whose clock source is slow. */
void rf__clock_refresh(rf_loop *l)
{
    if (l->vtime) {
        l->now_approx = l->vnow;
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    l->now_approx = (uint64_t)ts.tv_sec * RF_NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

int rf_loop_time(const rf_loop *loop, uint64_t *ns)
{
    if (!loop || !ns)
        return -EINVAL;
    *ns = loop->vtime ? __atomic_load_n(&loop->vnow, __ATOMIC_RELAXED)
                      : rf__real_now_ns();
    return 0;
}

void rf__abs_timespec(struct __kernel_timespec *ts, uint64_t deadline_ns)
{
    ts->tv_sec = (long long)(deadline_ns / RF_NSEC_PER_SEC);
    ts->tv_nsec = (long long)(deadline_ns % RF_NSEC_PER_SEC);
}

/* now + ns, saturated: "forever" must not wrap into the past. */
uint64_t rf__time_after(uint64_t ns)
{
    uint64_t now = rf_now_ns();
    return ns > UINT64_MAX / 4 - now ? UINT64_MAX / 4 : now + ns;
}

/*
 * Timers share kernel timeouts. Every timer (a sleep, the timeout of
 * rf_wait_for or rf_wait, a shutdown's grace) that ends within one timer
 * slack of another waits on the same IORING_OP_TIMEOUT, a bucket: 100,000
 * tasks that each sleep 10 ms, started within a few milliseconds, arm a few
 * dozen kernel timers instead of 100,000 (the kernel keeps its timeouts in
 * a list, and arming that many costs it more than the tasks themselves:
 * see W3_raw_timeout_*_baseline). Buckets are found through a small
 * direct-mapped cache keyed by deadline; a bucket pushed out of it still
 * serves its timers. It is freed at its CQE, which wakes all its timers'
 * tasks in FIFO order. A timer stopped before it fires (a cancelled
 * sleep, a wait_for whose task finished first) leaves its bucket at once,
 * without a system call and without waiting for a CQE. One mechanism for
 * every timer a task waits on: before, rf_wait_for armed a timeout of its
 * own per call and, when the task won, cancelled it and waited for its
 * CQE, one more trip through the ring.
 *
 * A bucket its last timer left stays armed and in the cache for a while,
 * idle: the next timers that end within its slack join it again, so a
 * task that bounds each short wait by the same timeout (a wait_for per
 * request) arms and removes a kernel timeout per slack's worth of calls,
 * not per call. Idle buckets are not counted in flight (nobody waits on
 * them); at most RF_IDLE_BUCKETS are kept (the oldest is removed), and
 * all are removed before the loop sleeps or decides that nothing is left
 * (rf__timers_flush_idle), so an idle one never wakes a sleeping loop
 * late nor holds up a loop being freed.
 */
#define RF_IDLE_BUCKETS 16

typedef struct rf_timer_bucket {
    rf_handler h;
    struct __kernel_timespec ts;
    uint64_t deadline;
    uint64_t seq;      /* virtual time: arming order, for equal deadlines */
    size_t heap_i;     /* virtual time: index in l->vheap */
    rf_timer **v;      /* its timers in arming order; NULL: one stopped */
    uint32_t n;        /* entries of v in use, holes included */
    uint32_t live;     /* of which timers */
    uint32_t cap;      /* room in v */
    rf_list idle_node; /* l->idle_buckets, while idle */
    bool idle;         /* no timer in it; not counted in l->inflight */
    bool removing;     /* a TIMEOUT_REMOVE is on its way */
} rf_timer_bucket;

/*
 * A bucket's timers are an array, not a list linked through them: they
 * live on their tasks' stacks, so with many tasks asleep each is a line
 * out of the cache and the TLB, and a list's walk learns where the next
 * one is only once this one has arrived. The array names them all, so the
 * firing fetches many at once (bucket_fired). A stopped timer leaves a
 * hole, which the firing skips; trailing holes are dropped, and the array
 * is compacted when holes outnumber timers three to one.
 */
static void bucket_init(rf_timer_bucket *b)
{
    b->v = NULL;
    b->n = b->live = b->cap = 0;
}

static int bucket_add(rf_timer_bucket *b, rf_timer *t)
{
    if (b->n == b->cap) {
        uint32_t cap = b->cap ? 2 * b->cap : 16;
        if (cap < b->cap)
            return -ENOMEM;
        rf_timer **v = realloc(b->v, (size_t)cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        b->v = v;
        b->cap = cap;
    }
    t->slot = b->n;
    b->v[b->n++] = t;
    b->live++;
    return 0;
}

static void bucket_del(rf_timer_bucket *b, rf_timer *t)
{
    b->v[t->slot] = NULL;
    if (--b->live == 0) {
        b->n = 0;
        return;
    }
    while (!b->v[b->n - 1])
        b->n--;
    if (b->n >= 64 && b->live < b->n / 4) {
        uint32_t j = 0;
        for (uint32_t i = 0; i < b->n; i++)
            if (b->v[i]) {
                b->v[i]->slot = j;
                b->v[j++] = b->v[i];
            }
        b->n = j;
    }
}

static void bucket_free(rf_timer_bucket *b)
{
    free(b->v);
    free(b);
}

static unsigned bucket_slot(uint64_t deadline, uint64_t slack)
{
    uint64_t k = deadline / (slack > 0 ? slack : 1);
    return (unsigned)(k ^ (k >> 7)) % RF_TIMER_BUCKETS;
}

/* An idle bucket back in use (or about to be removed): counted again. */
static void bucket_unidle(rf_loop *l, rf_timer_bucket *b)
{
    rf_list_remove(&b->idle_node);
    l->nidle--;
    b->idle = false;
    b->h.uncounted = false;
    RF_STAT_ADD(l->inflight, 1);
}

enum { FIRE_AHEAD = 16 };

static void bucket_fired(rf_loop *l, rf_handler *h,
                         const struct io_uring_cqe *cqe)
{
    rf_timer_bucket *b = (rf_timer_bucket *)h;
    unsigned i = bucket_slot(b->deadline, l->timer_slack_ns);
    if (l->timer_cache[i] == b)
        l->timer_cache[i] = NULL;
    if (b->idle) { /* uncounted: the dispatch did not count this CQE */
        rf_list_remove(&b->idle_node);
        l->nidle--;
    }
    /* Each wake writes its timer and its task's record: the timers
     * FIRE_AHEAD on are fetched, and the records of those half as far on,
     * whose timers (which name them) have arrived by then. */
    rf_timer **v = b->v;
    uint32_t n = b->n;
    for (uint32_t k = 0; k < n && k < FIRE_AHEAD; k++)
        if (v[k])
            __builtin_prefetch(v[k], 1);
    for (uint32_t k = 0; k < n; k++) {
        if (k + FIRE_AHEAD < n && v[k + FIRE_AHEAD])
            __builtin_prefetch(v[k + FIRE_AHEAD], 1);
        if (k + FIRE_AHEAD / 2 < n && v[k + FIRE_AHEAD / 2])
            __builtin_prefetch(v[k + FIRE_AHEAD / 2]->w.task, 1);
        if (v[k])
            rf__waiter_done(l, &v[k]->w, cqe->res);
    }
    bucket_free(b);
}

/* ---- virtual time (RF_LOOP_VIRTUAL_TIME) ----
 *
 * The same buckets, with no kernel timeout behind them: a binary min-heap
 * by (deadline, arming order) holds the armed ones, and the clock fires
 * them itself, in that order, when it moves (timer slack is 0: a bucket
 * holds the timers of one exact instant, in the order they were armed).
 * They are not operations: not in the ring, not counted in l->inflight,
 * so "nothing real in flight" is l->inflight == 0. A bucket its last
 * timer leaves is freed at once (no kernel timeout to keep for reuse).
 */

static bool vbefore(const rf_timer_bucket *a, const rf_timer_bucket *b)
{
    return a->deadline < b->deadline ||
           (a->deadline == b->deadline && a->seq < b->seq);
}

static void vheap_set(rf_loop *l, size_t i, rf_timer_bucket *b)
{
    l->vheap[i] = b;
    b->heap_i = i;
}

static void vheap_up(rf_loop *l, size_t i)
{
    rf_timer_bucket *b = l->vheap[i];
    while (i > 0 && vbefore(b, l->vheap[(i - 1) / 2])) {
        vheap_set(l, i, l->vheap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    vheap_set(l, i, b);
}

static void vheap_down(rf_loop *l, size_t i)
{
    rf_timer_bucket *b = l->vheap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->vheap_n)
            break;
        if (c + 1 < l->vheap_n && vbefore(l->vheap[c + 1], l->vheap[c]))
            c++;
        if (!vbefore(l->vheap[c], b))
            break;
        vheap_set(l, i, l->vheap[c]);
        i = c;
    }
    vheap_set(l, i, b);
}

static int vheap_push(rf_loop *l, rf_timer_bucket *b)
{
    if (l->vheap_n == l->vheap_cap) {
        size_t cap = l->vheap_cap ? 2 * l->vheap_cap : 64;
        rf_timer_bucket **h = realloc(l->vheap, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        l->vheap = h;
        l->vheap_cap = cap;
    }
    b->seq = l->vseq++;
    vheap_set(l, l->vheap_n++, b);
    vheap_up(l, l->vheap_n - 1);
    return 0;
}

static void vheap_remove(rf_loop *l, rf_timer_bucket *b)
{
    size_t i = b->heap_i;
    rf_timer_bucket *last = l->vheap[--l->vheap_n];
    if (i == l->vheap_n)
        return;
    vheap_set(l, i, last);
    vheap_up(l, i);
    vheap_down(l, last->heap_i);
}

static void bucket_fired(rf_loop *l, rf_handler *h,
                         const struct io_uring_cqe *cqe);

/* Fire every bucket due at the clock's present reading, in order. */
static bool vclock_fire_due(rf_loop *l)
{
    bool fired = false;
    static const struct io_uring_cqe expired = {.res = -ETIME};
    while (l->vheap_n && l->vheap[0]->deadline <= l->vnow) {
        rf_timer_bucket *b = l->vheap[0];
        vheap_remove(l, b);
        bucket_fired(l, &b->h, &expired);
        fired = true;
    }
    return fired;
}

static void vclock_set(rf_loop *l, uint64_t t)
{
    if (t > l->vnow) {
        __atomic_store_n(&l->vnow, t, __ATOMIC_RELAXED);
        l->now_approx = t;
    }
}

bool rf__vclock_auto_advance(rf_loop *l)
{
    if (!l->vheap_n || l->inflight || l->remote_expected ||
        rf__remote_pending(l))
        return false;
    vclock_set(l, l->vheap[0]->deadline);
    return vclock_fire_due(l);
}

void rf__vclock_autojump(rf_loop *l)
{
    if (l->vheap_n) {
        vclock_set(l, l->vheap[0]->deadline);
        vclock_fire_due(l);
    }
}

/* At rf_loop_free: no task is left, so no timer either; the heap goes. */
void rf__vclock_fini(rf_loop *l)
{
    while (l->vheap_n) {
        rf_timer_bucket *b = l->vheap[0];
        vheap_remove(l, b);
        bucket_free(b);
    }
    free(l->vheap);
    l->vheap = NULL;
    l->vheap_cap = 0;
}

/* For rf_clock_advance and rf_clock_jump: the caller's virtual loop, or
 * an error; *target the clock's reading ns from now (saturated). */
static int vclock_caller(rf_loop *loop, uint64_t ns, rf_loop **out,
                         uint64_t *target)
{
    rf_loop *l = rf__tls_loop;
    if (!l || !l->current)
        return -EPERM;
    if (loop && loop != l)
        return -EXDEV;
    if (!l->vtime)
        return -EINVAL;
    *out = l;
    *target = ns > UINT64_MAX / 4 - l->vnow ? UINT64_MAX / 4 : l->vnow + ns;
    return 0;
}

int rf_clock_jump(rf_loop *loop, uint64_t ns)
{
    rf_loop *l;
    uint64_t target;
    int rc = vclock_caller(loop, ns, &l, &target);
    if (rc)
        return rc;
    vclock_set(l, target);
    vclock_fire_due(l);
    return 0;
}

int rf_clock_advance(rf_loop *loop, uint64_t ns)
{
    rf_loop *l;
    uint64_t target;
    int rc = vclock_caller(loop, ns, &l, &target);
    if (rc)
        return rc;
    while (l->vheap_n && l->vheap[0]->deadline <= target) {
        vclock_set(l, l->vheap[0]->deadline);
        vclock_fire_due(l);
        /* The woken tasks were queued before this yield puts the caller
         * back: they run at this instant, before the clock moves on. */
        rc = rf_yield();
        if (rc)
            return rc;
    }
    vclock_set(l, target);
    return 0;
}

/*
 * The bucket for a sleep whose exact end is `end`: one that fires within
 * [end, end + slack], or a new one that fires at end + slack. So every
 * sleep ends at most one timer slack late (the latitude the kernel takes
 * with nanosleep), never early, and sleeps of equal length begun less than
 * a slack apart (the tasks of one pass) always share one timeout: they
 * wake in the same pass, in the order they began, whatever the clock
 * boundaries. (Rounding each end up to a multiple of the slack would put
 * two such sleeps in different timeouts whenever a multiple fell between
 * them.) A bucket with deadline D sits in the cache under D / slack, so
 * the two slots end / slack and end / slack + 1 hold the candidates.
 */
static rf_timer_bucket *bucket_get(rf_loop *l, uint64_t end, int *err)
{
    uint64_t slack = l->timer_slack_ns;
    if (end > UINT64_MAX / 4)
        end = UINT64_MAX / 4; /* "never" (146 years): end + slack must not wrap */
    for (int k = 0; k < 2; k++) {
        rf_timer_bucket *b =
            l->timer_cache[bucket_slot(end + (uint64_t)k * slack, slack)];
        if (b && !b->removing && b->deadline >= end &&
            b->deadline - end <= slack) {
            if (b->idle)
                bucket_unidle(l, b);
            return b;
        }
    }
    uint64_t deadline = end + slack;
    unsigned i = bucket_slot(deadline, slack);
    rf_timer_bucket *b = malloc(sizeof(*b));
    if (!b) {
        *err = -ENOMEM;
        return NULL;
    }
    if (rf_unlikely(l->vtime)) {
        b->h.fn = bucket_fired;
        b->h.uncounted = true;
        b->deadline = deadline;
        b->idle = false;
        b->removing = false;
        bucket_init(b);
        if ((*err = vheap_push(l, b)) != 0) {
            free(b);
            return NULL;
        }
        l->timer_cache[i] = b;
        return b;
    }
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe) {
        free(b);
        *err = -EBUSY;
        return NULL;
    }
    b->h.fn = bucket_fired;
    b->h.uncounted = false;
    b->deadline = deadline;
    b->idle = false;
    b->removing = false;
    bucket_init(b);
    rf__abs_timespec(&b->ts, deadline);
    io_uring_prep_timeout(sqe, &b->ts, 0, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(sqe, rf__handler_data(&b->h));
    l->timer_cache[i] = b;
    return b;
}

static void bucket_emptied(rf_loop *l, rf_timer_bucket *b);

int rf__timer_start(rf_loop *l, rf_timer *t, rf_task *task, uint64_t end)
{
    int err = 0;
    rf_timer_bucket *b = bucket_get(l, end, &err);
    t->w.task = task;
    t->bucket = b;
    t->w.res = 0;
    t->w.done = false;
    if (!b)
        return err;
    if ((err = bucket_add(b, t)) != 0) {
        t->bucket = NULL;
        if (b->live == 0)
            bucket_emptied(l, b); /* new, or taken back from idle */
        return err;
    }
    return 0;
}

/* Take b's kernel timeout out (its CQE, -ECANCELED, frees it). Without an
 * SQE it is left to fire on its own, counted, and freed then. (The SQE
 * get dispatches nothing, ring.c: b is there after it, even if its
 * timeout has fired meanwhile; that CQE frees it, and the removal finds
 * nothing.) */
static void bucket_remove(rf_loop *l, rf_timer_bucket *b)
{
    if (b->idle)
        bucket_unidle(l, b);
    unsigned i = bucket_slot(b->deadline, l->timer_slack_ns);
    if (l->timer_cache[i] == b)
        l->timer_cache[i] = NULL;
    struct io_uring_sqe *sqe = rf__sqe_get(l);
    if (!sqe)
        return;
    io_uring_prep_timeout_remove(sqe, rf__handler_data(&b->h), 0);
    io_uring_sqe_set_data64(sqe, RF_UD_IGNORE);
    b->removing = true;
}

void rf__timer_stop(rf_loop *l, rf_timer *t)
{
    rf_timer_bucket *b = t->bucket;
    if (t->w.done || !b)
        return;
    t->bucket = NULL;
    bucket_del(b, t);
    if (b->live == 0)
        bucket_emptied(l, b);
}

/* b's last timer has left it. */
static void bucket_emptied(rf_loop *l, rf_timer_bucket *b)
{
    if (b->removing)
        return;
    if (rf_unlikely(l->vtime)) {
        unsigned i = bucket_slot(b->deadline, l->timer_slack_ns);
        if (l->timer_cache[i] == b)
            l->timer_cache[i] = NULL;
        vheap_remove(l, b);
        bucket_free(b);
        return;
    }
    /* Idle: kept armed for the next timers that end near it. */
    b->idle = true;
    b->h.uncounted = true;
    RF_STAT_SUB(l->inflight, 1);
    rf_list_push_back(&l->idle_buckets, &b->idle_node);
    if (++l->nidle > RF_IDLE_BUCKETS)
        bucket_remove(l, rf_container_of(l->idle_buckets.next,
                                         rf_timer_bucket, idle_node));
}

void rf__timers_flush_idle(rf_loop *l)
{
    while (l->nidle)
        bucket_remove(l, rf_container_of(l->idle_buckets.next,
                                         rf_timer_bucket, idle_node));
}

int rf_sleep(uint64_t ns)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    if (ns == 0)
        return rf_yield();
    int rc = rf__wait_precheck(self);
    if (rc)
        return rc;
    rf_timer t;
    uint64_t end = rf__time_after(ns);
    rc = rf__timer_start(l, &t, self, end);
    if (rc)
        return rc;
    /* The task's deadline, if it comes first, ends the wait (-ETIMEDOUT). */
    rc = rf__waiter_wait(l, self, &t.w, RF_WAIT_ANY, RF_WAIT_ON_SLEEP,
                         (const void *)(uintptr_t)end);
    if (rc < 0) {
        rf__timer_stop(l, &t);
        return rc;
    }
    return t.w.res == -ETIME ? 0 : t.w.res; /* -ECANCELED: cannot happen */
}

/* ---- the task's deadline ---- */

/*
 * One mechanism bounds every wait by the task's deadline, whatever the
 * wait is for (an operation in the ring, a sleep, a join, a lock): the
 * task's own timer, t->deadline_timer, one of the timers above. It is
 * armed at the first wait that accepts the deadline (RF_WAIT_DEADLINE)
 * and stays armed across waits until it fires, the deadline moves (a
 * deadline moved a little later keeps it: deadline_timer_keeps), or the
 * task ends; stopping it clears its slot in its bucket's array, without
 * a system call. While the task waits, the timer's waiter names it: the
 * timer firing wakes it, and rf__wait returns -ETIMEDOUT, as rf_cancel
 * ends a wait that accepts cancellation. The waiter then takes itself
 * out of what it waited on; an operation in the ring is first cancelled
 * in the kernel, and its final CQE awaited (ring.c). Once fired, the
 * timer stays done: every later wait returns -ETIMEDOUT at once, until
 * the deadline is moved or cleared.
 *
 * So a deadline costs one timer per task, not one per wait: a task that
 * makes a thousand operations under one deadline arms it once, and the
 * timers of tasks whose deadlines fall within one timer slack share one
 * kernel timeout. The price is precision: the wait ends up to one timer
 * slack after the deadline (as every timer here; a far one set with
 * rf_deadline_set, up to a grid step more: deadline_timer_end below), and
 * an operation in the ring one cancellation later still.
 *
 * The bounded waits of rf_wait_for, rf_wait and a graceful shutdown's
 * grace are the same deadline, narrowed for one wait (rf__deadline_narrow,
 * rf__deadline_restore): asyncio's wait_for is its timeout() likewise.
 */

/*
 * The instant the timer of a deadline set with rf_deadline_set is set for
 * (rf__deadline_arm, at the first wait it bounds), now being the time. A
 * deadline far away need not be kept to the timer slack: one d ns away
 * fires on a grid of g, d / 512 rounded down to a power of two (2^26 ns,
 * 67 ms, for 60 s), the deadline rounded up to it, so up to g plus the
 * slack late (about 0.1-0.2% of d), never early. What that buys: a server
 * that renews an idle timeout (now + 60 s) before each read and write
 * gives its tasks' timers the same instant for g, and they share one
 * kernel timeout, where a deadline kept to the 50 us slack needed a new
 * one, and the removal of the last, every 50 us: 0.15 more
 * io_uring_enter calls and 1.2 us more CPU per message for the W6 echo
 * server with a 60 s idle timeout. Kept to the slack: a grid step not
 * above it (deadlines under 512 to 1,024 slacks away: 25-50 ms by
 * default), a slack of 0 (a thread that asked for exact timers), virtual
 * time, and the narrowed deadlines of rf_wait_for, rf_wait's timeout and
 * a shutdown's grace (rf__deadline_move with arm).
 */
/* The grid step of a deadline d ns away: 0 where it is kept to the
 * slack. */
static uint64_t deadline_grid(const rf_loop *l, uint64_t d)
{
    if (l->vtime || l->timer_slack_ns == 0)
        return 0;
    uint64_t g = d >> 9;
    if (g == 0)
        return 0;
    g = 1ull << (63 - __builtin_clzll(g));
    return g > l->timer_slack_ns ? g : 0;
}

static uint64_t deadline_timer_end(const rf_loop *l, uint64_t deadline,
                                   uint64_t now)
{
    uint64_t g = deadline > now ? deadline_grid(l, deadline - now) : 0;
    if (g == 0)
        return deadline;
    uint64_t end = (deadline | (g - 1)) + 1; /* rounded up, never early */
    return end > deadline ? end : deadline;  /* no wrap at "forever" */
}

/*
 * Whether the armed timer t, whose timeout fires at `at`, can stay as the
 * timer of the deadline moved later to d: it fires no earlier than d, and
 * no later after it than a timer armed for d now could (a grid step for
 * d's distance from the loop's approximate clock, plus the slack). The
 * distance is taken when the deadline is set, not at the first wait it
 * bounds, as rf__deadline_arm takes it: the bound that ringfiber.h states
 * holds for both. So a server that renews an idle timeout before each
 * read and write (now + 60 s) moves its timer once a grid step, 67 ms for
 * 60 s, not at every renewal: a renewal is then a comparison and a store,
 * where taking the timer out of its bucket and putting it into another
 * cost the W6 echo server ~200-250 instructions a message (two renewals;
 * bench/README.md, "Deadlines renewed"). Under virtual time every timer
 * is exact: t fires at the old deadline, before d, and is never kept.
 */
static bool deadline_timer_keeps(const rf_loop *l, const rf_timer *t,
                                 uint64_t old, uint64_t d)
{
    if (!t->bucket || t->w.done || d < old)
        return false;
    uint64_t at = t->bucket->deadline;
    uint64_t now = l->now_approx;
    uint64_t late = l->timer_slack_ns;
    late += deadline_grid(l, d > now ? d - now : 0);
    return d <= at && at - d <= late;
}

/* A deadline that is changed: its timer, armed for the old one, must not
 * fire for the new one, unless it fires in time for it too (a deadline
 * moved a little later: deadline_timer_keeps). With arm (a deadline
 * narrowed for one wait, just computed from the clock), the new one's
 * timer is armed at once, without reading the clock again; if it cannot
 * be, the wait tries again and reports why. */
void rf__deadline_move(rf_loop *l, rf_task *self, uint64_t deadline_ns,
                       bool arm)
{
    rf_timer *t = &self->deadline_timer;
    if (!arm && deadline_timer_keeps(l, t, self->deadline, deadline_ns)) {
        self->deadline = deadline_ns;
        return;
    }
    if (t->bucket) {
        rf__timer_stop(l, t); /* a no-op if it has fired */
        t->bucket = NULL;
    }
    t->w.done = false;
    self->deadline = deadline_ns;
    if (arm)
        (void)rf__timer_start(l, t, NULL, deadline_ns);
}

/*
 * rf__wait, before a wait bounded by the deadline: -ETIMEDOUT once it has
 * passed, else the timer armed (0, or -ENOMEM/-EBUSY if it cannot be) and
 * naming self until the wait ends. The clock is read only to arm the
 * timer: an armed timer that has not fired yet stands for "not passed"
 * (if the deadline passed a moment ago, the wait ends when the loop sees
 * the timer fire, in the same pass end that would have begun it). Calls
 * that submit work read the clock anyway (rf__wait_precheck).
 */
int rf__deadline_arm(rf_loop *l, rf_task *self)
{
    rf_timer *t = &self->deadline_timer;
    if (t->w.done)
        return -ETIMEDOUT;
    if (!t->bucket) {
        uint64_t now = rf_now_ns();
        if (now >= self->deadline)
            return -ETIMEDOUT;
        int rc = rf__timer_start(l, t, NULL,
                                 deadline_timer_end(l, self->deadline, now));
        if (rc)
            return rc;
    }
    t->w.task = self;
    return 0;
}

int rf_deadline_set(uint64_t deadline_ns)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    if (deadline_ns != self->deadline)
        rf__deadline_move(l, self, deadline_ns, false);
    return 0;
}

uint64_t rf_deadline_get(void)
{
    rf_task *self = rf__self();
    return self ? self->deadline : 0;
}
