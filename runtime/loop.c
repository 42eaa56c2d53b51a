/*
 * Loop life (new / run / stop / free) and the scheduler.
 *
 * The scheduler pass (docs/scheduler.md). Switches are direct: a task that
 * suspends hands the CPU directly to the next ready task (one jump)
 * instead of returning to the scheduler's context first (two jumps). The
 * pass structure is kept by a budget: a pass runs the tasks that were
 * ready when it began (tasks woken or yielding during the pass wait for the
 * next one); when the budget is spent, the task that is leaving does the
 * end-of-pass work itself (submit what the pass gathered, reap
 * completions, without blocking) and the next pass begins. Control goes
 * back to the scheduler's own context only when nothing is ready (it then
 * blocks in one io_uring_submit_and_wait) or when the loop must return.
 *
 * The ready count and the budget are kept apart in struct rf_loop: when
 * they were adjacent, GCC merged their decrements into one 16-byte access
 * that could not be forwarded from the 8-byte store just before it, a
 * stall that cost a third of a yield.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "internal.h"

/* The rf_loop_opts.flags rf_loop_new knows; any other bit is -EINVAL. */
#define RF_LOOP_KNOWN_FLAGS                                                    \
    (RF_LOOP_QUIET | RF_LOOP_NO_OVERFLOW_HANDLER | RF_LOOP_GUARD_MPROTECT |    \
     RF_LOOP_SERVE | RF_LOOP_WAKE_MSG_RING | RF_LOOP_VIRTUAL_TIME |            \
     RF_LOOP_SCHED_DELAY | RF_LOOP_WAKE_AT_ONCE | RF_LOOP_RECV_MULTISHOT)

__thread rf_loop *rf__tls_loop __attribute__((tls_model("initial-exec")));

bool rf__on_owner_thread(const rf_loop *l)
{
    return pthread_equal(l->owner, pthread_self());
}

/* For the calls on a loop that return a pointer: 0, or the errno to set
 * (EINVAL for NULL, EXDEV from another thread). */
int rf__owner_errno(const rf_loop *l)
{
    if (!l)
        return EINVAL;
    return rf__on_owner_thread(l) ? 0 : EXDEV;
}

void rf__wake(rf_loop *l, rf_task *t)
{
    /* One wait, one wake: a task already woken (by its CQE, a join or a
     * cancellation) is not queued twice. */
    if (t->state != RF_WAITING)
        return;
    t->state = RF_READY;
    if (rf_unlikely(l->delay_on)) /* RF_LOOP_SCHED_DELAY (metrics.c) */
        t->ready_at = l->delay_now;
    rf__rq_push(l, t);
}

/* rf__rq_reserve's way out of line: a run queue with too little room, or
 * none yet. */
int rf__rq_grow(rf_loop *l, uint64_t tasks)
{
    uint64_t cap = (uint64_t)l->rq_mask + 1;
    if (tasks <= cap && l->rq)
        return 0;
    uint64_t ncap = l->rq ? cap : 64;
    while (ncap < tasks)
        ncap *= 2;
    if (ncap > (1ull << 31))
        return -ENOMEM;
    rf_task **nrq = malloc(ncap * sizeof(*nrq));
    if (!nrq)
        return -ENOMEM;
    uint32_t n = rf__nready(l);
    for (uint32_t i = 0; i < n; i++)
        nrq[i] = l->rq[(l->rq_head + i) & l->rq_mask];
    free(l->rq);
    l->rq = nrq;
    l->rq_mask = (uint32_t)(ncap - 1);
    l->rq_head = 0;
    l->rq_tail = n;
    return 0;
}

static bool must_return(const rf_loop *l)
{
    return l->stop || l->once || l->target_done;
}

/*
 * A shuffled schedule (docs/shuffle.md): before a pass, the tasks ready
 * for it are put in an order drawn from the loop's seed (Fisher-Yates,
 * splitmix64). Only the order of tasks that are ready together changes:
 * each still runs once per pass, and what a primitive hands to whom (a
 * queue's item, a lock) is decided where it is handed, not by who runs
 * first, so every promise of the API holds.
 */
static uint64_t shuffle_next(rf_loop *l)
{
    uint64_t z = (l->shuffle_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void shuffle_pass(rf_loop *l)
{
    uint32_t n = rf__nready(l);
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = (uint32_t)(shuffle_next(l) % i);
        rf_task **a = &l->rq[(l->rq_head + i - 1) & l->rq_mask];
        rf_task **b = &l->rq[(l->rq_head + j) & l->rq_mask];
        rf_task *t = *a;
        *a = *b;
        *b = t;
    }
}

uint64_t rf_loop_shuffle_seed(const rf_loop *loop)
{
    return loop ? loop->shuffle_seed : 0;
}

/* How far ahead run_next fetches: the record of the task 3 places on (so
 * that its saved frame pointer is in cache when it is 1 place on), and the
 * frame of the task 1 place on: 6 lines up from its saved context, which
 * a suspended task's resume pops and returns through (jump_fcontext's
 * 64 bytes, rf__jump_ret's return, rf__wait, the waiter, the operation,
 * its caller). With 1,000 tasks each a step apart, W4 0.85-0.88 against
 * fetching one line of the next task (bench/ab.sh, 9 runs). */
enum { PREFETCH_RECORD = 3, PREFETCH_FRAME = 1, PREFETCH_LINES = 6 };

/* Always inlined: GCC takes a function that only prefetches for one
 * without side effects and drops the calls to it, unless it is inlined
 * first (without the attribute W4 ran at 1.26). */
static inline __attribute__((always_inline)) void prefetch_ahead(rf_loop *l)
{
    if (rf__nready(l) > PREFETCH_RECORD) {
        rf_task *r = l->rq[(l->rq_head + PREFETCH_RECORD) & l->rq_mask];
        __builtin_prefetch(r, 1);
        rf_task *n = l->rq[(l->rq_head + PREFETCH_FRAME) & l->rq_mask];
        const char *f = (const char *)n->ctx.fctx;
        /* NULL: not started yet, bound when it runs. (A task with a
         * stack of its own has a first frame at spawn, at the top of its
         * mapping: the lines above it are fetched for nothing.) */
        if (f)
            for (unsigned k = 0; k < PREFETCH_LINES; k++)
                __builtin_prefetch(f + 64 * k);
    }
}

/* Pops the next ready task and makes it current; the queue is not empty. */
static inline rf_task *run_next(rf_loop *l)
{
    rf_task *t = l->rq[l->rq_head++ & l->rq_mask];
    if (rf_unlikely(t->ctx.fctx == NULL))
        rf__task_bind(l, t); /* its first run: its stack (stack.c) */
    l->budget--;
    /* Tasks to come: their records and the frames their switches will
     * pop, fetched while this one runs (many tasks' stacks miss the cache
     * and the TLB). Only with more than a few ready: a handful of tasks
     * stay in cache. */
    prefetch_ahead(l);
    if (rf_unlikely(l->delay_on))
        rf__delay_note(l, t);
    t->state = RF_RUNNING;
    rf__set_current(l, t);
    return t;
}

/* stop, once, target_done and shuffle, adjacent bytes, tested as one
 * word: four byte loads and their ORs cost W1 8% (bench/ab.sh, medians of
 * 16 alternating runs: 1.085 against 1.003 for its baseline). */
_Static_assert(offsetof(rf_loop, once) == offsetof(rf_loop, stop) + 1 &&
                   offsetof(rf_loop, target_done) ==
                       offsetof(rf_loop, stop) + 2 &&
                   offsetof(rf_loop, shuffle) == offsetof(rf_loop, stop) + 3 &&
                   offsetof(rf_loop, pool_pending) ==
                       offsetof(rf_loop, stop) + 4 &&
                   offsetof(rf_loop, pass_zero) == offsetof(rf_loop, stop) + 5,
               "the pass end's flags must be adjacent bytes");
static inline uint64_t pass_flags(const rf_loop *l)
{
    uint64_t w;
    memcpy(&w, &l->stop, sizeof(w));
    return w;
}

/* A pass that ends now has nothing to do at its end (next_ctx) and does
 * not move the approximate clock. */
static inline bool pass_end_quiet(rf_loop *l)
{
    return l->inflight == 0 && pass_flags(l) == 0 &&
           !rf__remote_pending(l) &&
           ((l->stats.passes + 1) & (RF_APPROX_PASSES - 1)) != 0;
}

/* Where the CPU goes when the current task stops running. */
static inline rf_ctx *next_ctx(rf_loop *l)
{
    if (rf_unlikely(l->budget == 0)) {
        /* End of a pass. Usually nothing is in flight, nothing was posted
         * from another thread and nobody asked the loop to return: then
         * the next pass just begins. Otherwise the pass end's work (take
         * in the mail, submit, reap) is done whichever way the pass ends,
         * returning to the caller of the loop included: a host that runs
         * the loop in short runs sees its mail and its completions at
         * every pass. */
        if (rf_unlikely(l->inflight != 0 || pass_flags(l) ||
                        rf__remote_pending(l))) {
            rf__ring_pass_end(l);
            if (must_return(l))
                goto sched;
            if (l->shuffle)
                shuffle_pass(l);
        }
        l->budget = rf__nready(l);
        RF_STAT_ADD(l->stats.passes, 1);
        /* A loop that runs for long without entering the kernel still
         * moves its approximate clock (internal.h, now_approx). */
        if (rf_unlikely((l->stats.passes & (RF_APPROX_PASSES - 1)) == 0)) {
            rf__clock_refresh(l);
            RF_STAT_SET(l->m.tasks_ready, l->budget);
        }
    }
    if (rf_likely(rf__nready(l) != 0))
        return &run_next(l)->ctx;
sched:
    rf__set_current(l, NULL);
    return &l->sched;
}

static inline __attribute__((always_inline)) void switch_out(rf_loop *l,
                                                             rf_task *self)
{
    if (self->canary)
        rf__stack_check(&l->stacks, self);
    rf_ctx *to = next_ctx(l);
    if (to == &self->ctx)
        return; /* it yielded and was the only one ready */
    RF_STAT_ADD(l->stats.switches, 1);
    rf__switch(l, &self->ctx, to, false);
}

/* A task that has finished: the context to hand the CPU to. The caller
 * (rf__task_entry) makes the switch itself, so that no call of its is
 * outstanding when it jumps (rf__switch). */
rf_ctx *rf__next_after_end(rf_loop *l)
{
    rf_task *self = l->current;
    if (self->canary)
        rf__stack_check(&l->stacks, self);
    rf_ctx *to = next_ctx(l);
    RF_STAT_ADD(l->stats.switches, 1);
    return to;
}

/*
 * Suspend the running task until rf__wake. how (RF_WAIT_*) says what else
 * may end the wait: rf_cancel (-ECANCELED) and the task's deadline
 * (-ETIMEDOUT: its timer, time.c, wakes the task while it waits here).
 * Both are sticky: once cancelled, or past the deadline, such a wait is
 * not begun.
 */
int rf__wait(rf_loop *l, rf_task *self, unsigned how)
{
    if ((how & RF_WAIT_CANCEL) && self->cancelled)
        return -ECANCELED;
    bool bounded = (how & RF_WAIT_DEADLINE) && rf_unlikely(self->deadline);
    if (bounded) {
        int rc = rf__deadline_arm(l, self);
        if (rc)
            return rc;
    }
    self->state = RF_WAITING;
    self->wait_flags = (uint8_t)how;
    self->cancel_woken = false;
    switch_out(l, self);
    self->wait_flags = 0;
    if (self->cancel_woken)
        return -ECANCELED;
    if (bounded) {
        self->deadline_timer.w.task = NULL; /* wakes no other wait */
        if (self->deadline_timer.w.done)
            return -ETIMEDOUT;
    }
    return 0;
}

int rf_yield(void)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    self->state = RF_READY;
    rf__rq_push(l, self);
    switch_out(l, self);
    return self->cancelled ? -ECANCELED : 0;
}

/* rf__yield_begin's whole way. */
static __attribute__((noinline)) rf__plan yield_begin(rf_loop *l,
                                                      rf_task *self)
{
    self->state = RF_READY;
    rf__rq_push(l, self);
    if (self->canary)
        rf__stack_check(&l->stacks, self);
    rf_ctx *to = next_ctx(l);
    if (to == &self->ctx) /* alone: it yielded to itself */
        return (rf__plan){NULL, (void *)(intptr_t)(self->cancelled ? -ECANCELED : 0)};
    RF_STAT_ADD(l->stats.switches, 1);
    return (rf__plan){to->fctx, &self->ctx};
}

/*
 * rf_yield as the header inlines it into the caller (see "Fast path" in
 * ringfiber.h): begin does everything up to the jump, the caller jumps
 * (rf__jump, a tail jump into jump_fcontext), end lands.
 *
 * Why: jump_fcontext leaves through an indirect jmp, not a ret, so the
 * return address pushed by the call into it stays on the CPU's return
 * stack buffer. When the switch sits inside a library function, the ret
 * of that function in the task being resumed pops that stale entry and
 * mispredicts: one misprediction per switch, about a third of a yield.
 * With the jump in the caller's own frame no ret follows it: the calls to
 * begin and end each return to where they were called from.
 */
/* Both halves start a cache line: a change anywhere in this file moved
 * them within their lines and W1 by 3 to 9% either way (bench/ab.sh,
 * 16 runs), with no instruction of theirs changed. */
__attribute__((aligned(64))) rf__plan rf__yield_begin(void)
{
#if defined(RF_ASAN) || defined(RF_TSAN)
    /* Sanitizer builds annotate a switch on both sides of the jump, which
     * must then happen in one function: the whole yield is done here and
     * the caller does not jump. */
    return (rf__plan){NULL, (void *)(intptr_t)rf_yield()};
#endif
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (rf_unlikely(!self))
        return (rf__plan){NULL, (void *)(intptr_t)-EPERM};
    /* The common case, which calls nothing, so that this function saves
     * no register: another task is ready and has started, and a pass
     * that ends here has nothing to do at its end. Anything else, the
     * whole way. */
    uint32_t head = l->rq_head;
    if (rf_likely(l->rq_tail != head && !self->canary && !l->delay_on &&
                  (l->budget != 0 || pass_end_quiet(l)))) {
        rf_task *t = l->rq[head & l->rq_mask];
        if (rf_likely(t->ctx.fctx != NULL)) {
            self->state = RF_READY;
            rf__rq_push(l, self);
            if (l->budget == 0) {
                l->budget = rf__nready(l);
                RF_STAT_ADD(l->stats.passes, 1);
            }
            l->rq_head = head + 1;
            l->budget--;
            prefetch_ahead(l);
            t->state = RF_RUNNING;
            rf__set_current(l, t);
            RF_STAT_ADD(l->stats.switches, 1);
            return (rf__plan){t->ctx.fctx, &self->ctx};
        }
    }
    return yield_begin(l, self);
}

__attribute__((aligned(64))) int rf__yield_end(rf__xfer tr)
{
    rf_loop *l = rf__tls_loop;
    rf__land(l, (transfer_t){tr.fctx, tr.data});
    return l->current->cancelled ? -ECANCELED : 0;
}

/* ---- the scheduler: one run function for every way of running a loop ---- */

/* Whether the loop has anything left at all: a host driving it with
 * rf_loop_run_once can stop polling and free it when this is false. */
static bool loop_alive(rf_loop *l)
{
    return l->stats.tasks_alive || l->inflight || l->remote_expected ||
           rf__remote_pending(l);
}

/* Whether something outside the run queue may still make a task ready: an
 * operation in flight, an offloaded call to come back, or (a serving loop
 * not being freed) mail from another thread. If not, and no task is
 * ready, every task waits for something that can never happen. */
static bool can_wake(const rf_loop *l)
{
    return l->inflight || l->remote_expected ||
           ((l->flags & RF_LOOP_SERVE) && !l->draining);
}

/* rf_loop_free's run ends when nothing is left to wait for. */
static bool drained(const rf_loop *l)
{
    return rf_list_empty(&l->alive) && l->inflight == 0 &&
           l->remote_expected == 0 && l->nidle == 0;
}

/* One pass: run the tasks ready now, each once (see the top). The pass
 * ends in next_ctx, in the context of the last task, with the pass end's
 * work; control comes back here when nothing is ready or the run must
 * return (one_pass: after this pass, whatever is ready). */
static void run_pass(rf_loop *l, bool one_pass)
{
    l->once = one_pass;
    if (l->shuffle)
        shuffle_pass(l);
    l->budget = rf__nready(l);
    RF_STAT_ADD(l->stats.passes, 1);
    RF_STAT_SET(l->m.tasks_ready, l->budget);
    rf_task *t = run_next(l);
    RF_STAT_ADD(l->stats.switches, 1);
    rf__switch(l, &l->sched, &t->ctx, false);
    l->once = false;
    /* RF_LOOP_SCHED_DELAY: a task that yielded as the pass returned here
     * is the last one queued; run_next, which stamps a yielding task, did
     * not run after it. Stamped here, on the scheduler's side, so that
     * next_ctx, inlined in every switch, stays as it is. If the last one
     * queued was woken instead, this errs by the rest of the pass, at
     * most one task's run. */
    if (rf_unlikely(l->delay_on) && rf__nready(l) != 0)
        l->rq[(l->rq_tail - 1) & l->rq_mask]->ready_at = l->delay_now =
            rf__real_now_ns();
}

/* Nothing is ready: submit what the last pass gathered and sleep until at
 * least one completion, in one system call; a message from another
 * thread also ends the sleep (remote.c). Returns 0 or the ring's error. */
static int loop_sleep(rf_loop *l, bool may_batch)
{
    if (!rf__remote_sleep_begin(l))
        return 0; /* mail came in the meantime */
    __atomic_store_n(&l->idle, 1, __ATOMIC_RELAXED);
    RF_STAT_SET(l->m.tasks_ready, 0);
    /* Virtual time with real work in flight: the clock waits for it, or
     * with autojump_ns for that long (real), then moves on. */
    bool jump = l->autojump_ns && l->vheap_n;
    uint64_t slept = rf__real_now_ns(); /* beside a sleep's system call */
    int rc = jump ? rf__ring_enter_timeout(l, l->autojump_ns)
                  : rf__ring_sleep(l, slept, may_batch); /* and reaps */
    uint64_t woke = rf__real_now_ns();
    RF_STAT_ADD(l->m.idle_ns, woke - slept);
    l->delay_now = woke;
    __atomic_store_n(&l->idle, 0, __ATOMIC_RELAXED);
    rf__remote_awake(l, true);
    if (jump && rc == -ETIME) {
        if (!rf__ring_reap(l) && !rf__remote_pending(l))
            rf__vclock_autojump(l);
        return 0;
    }
    if (rc == 0 && jump)
        rf__ring_reap(l);
    return rc;
}

/*
 * Before a sleep, with rf_loop_opts.spin_ns: watch, without a system call,
 * what would end the sleep: the mailbox, the CQ, and the flag the kernel
 * raises in the SQ ring when it holds completions for this ring to run
 * (IORING_SQ_TASKRUN, in events_waiting: with DEFER_TASKRUN completions
 * are posted only when the loop enters). The loop stays awake to posters
 * meanwhile (remote_wake clear), so they push and write nothing. What the
 * last pass gathered is submitted first: a spin must not hold back I/O.
 * Returns true if anything came (the caller looks again), false after
 * spin_ns of nothing (the caller sleeps) or on a ring error (*rc).
 */
static bool loop_spin(rf_loop *l, int *rc)
{
    if (io_uring_sq_ready(&l->ring)) {
        *rc = rf__ring_enter(l, 0);
        if (*rc < 0)
            return false;
        /* Whatever was reaped, the caller looks again: a completion may
         * have ended the run (the last operation of a loop being freed)
         * as well as made a task ready. */
        if (rf__ring_reap(l))
            return true;
    }
    /* Idle to the stall detector, as a sleep is. */
    __atomic_store_n(&l->idle, 1, __ATOMIC_RELAXED);
    uint64_t until = rf__real_now_ns() + l->spin_ns;
    for (;;) {
        for (int i = 0; i < 32; i++) {
            if (__atomic_load_n(&l->remote_head, __ATOMIC_RELAXED) ||
                rf__ring_has_work(l))
                goto found;
            rf__cpu_relax();
        }
        if (rf__real_now_ns() >= until) {
            __atomic_store_n(&l->idle, 0, __ATOMIC_RELAXED);
            return false;
        }
    }
found:
    __atomic_store_n(&l->idle, 0, __ATOMIC_RELAXED);
    RF_STAT_ADD(l->stats.sleeps_avoided, 1);
    *rc = rf__ring_enter(l, 0);
    if (*rc < 0)
        return false;
    rf__ring_reap(l);
    return true;
}

/*
 * The scheduler, as libuv's uv_run: every way of running a loop is this
 * function in one of three modes.
 *  - RUN_DEFAULT (rf_run, rf_loop_run_until_complete,
 *    rf_loop_run_forever, rf_loop_free): passes until the run's target
 *    has returned, rf_loop_stop, everything is drained (rf_loop_free), or
 *    nothing can ever run again (-EDEADLK).
 *  - RUN_ONCE / RUN_NOWAIT (rf_loop_run_once, a host's loop): one
 *    pass over the tasks ready once the mail and the completions there are
 *    have been taken in; ONCE first sleeps if none is ready, NOWAIT never
 *    does. The host's eventfd (rf_loop_fd) is kept quiet during the run
 *    and set again if work is left behind.
 * Every pass ends the same way, however the run ends: the mail is taken
 * in, the ring submitted and reaped (next_ctx).
 */
enum run_mode { RUN_DEFAULT, RUN_ONCE, RUN_NOWAIT };

static int loop_run(rf_loop *l, enum run_mode mode)
{
    bool host = mode != RUN_DEFAULT;
    bool efd = host && l->poll_efd >= 0;
    int rc = 0;
    rf__tls_loop = l;
    l->running = true;
    rf__clock_refresh(l);
    if (rf_unlikely(l->delay_on)) /* tasks made ready by mail are so now */
        l->delay_now = rf__real_now_ns();
    rf__remote_awake(l, true);
    __atomic_store_n(&l->idle, 0, __ATOMIC_RELAXED);
    if (efd) {
        /* Quiet while this run takes in everything there is: each CQE
         * posted would signal it again. Work that arrives meanwhile is
         * seen at the end, before the eventfd is switched back on. */
        io_uring_cq_eventfd_toggle(&l->ring, false);
        uint64_t v = 0;
        (void)!read(l->poll_efd, &v, sizeof(v));
    }
    for (bool ran = false;;) {
        if (l->target_done || l->stop)
            break;
        if (l->draining && drained(l))
            break;
        if (rf__nready(l)) {
            if (ran && host)
                break; /* one pass per call */
            run_pass(l, host);
            ran = true;
            continue;
        }
        if (ran && host)
            break;
        if (rf__remote_drain(l))
            continue;
        if (host && rf__ring_has_work(l)) {
            /* Completions (or submissions) there are, without waiting (a
             * run that may sleep leaves them to the sleep's own enter). */
            rc = rf__ring_enter(l, 0);
            if (rc < 0)
                break;
            if (rf__ring_reap(l) && rf__nready(l))
                continue;
        }
        if (mode == RUN_NOWAIT)
            break;
        /* Virtual time with nothing real in flight: to the next timer. */
        if (l->vtime && rf__vclock_auto_advance(l))
            continue;
        /* Idle timeouts are not waited for: removed before a sleep (or
         * the verdict that nothing is left), they cannot wake it late. */
        if (l->nidle)
            rf__timers_flush_idle(l);
        if (!can_wake(l)) {
            /* Every task waits and nothing can wake one; a host's loop
             * with no task at all is merely idle. */
            if (!host || l->stats.tasks_alive)
                rc = -EDEADLK;
            break;
        }
        if (l->spin_ns && loop_spin(l, &rc))
            continue;
        if (rc < 0)
            break;
        /* A host's run_once blocks until something completes: its
         * sleeps never batch (a batched one may end with nothing). */
        rc = loop_sleep(l, !host);
        if (rc < 0)
            break;
        if (host && !rf__nready(l) && !rf__remote_pending(l))
            break; /* woken for nothing a task waits on: one call, one sleep */
    }
    if (host) {
        /* A host may poll rf_loop_fd and sleep now: submit what the pass
         * gathered, take in what completed, keep the mailbox's read in
         * the ring so that a message makes the eventfd readable, and drop
         * the idle timeouts if nothing is ready. */
        rf__remote_arm(l);
        if (l->nidle && !rf__nready(l))
            rf__timers_flush_idle(l);
        int erc = rf__ring_enter(l, 0);
        if (rc == 0)
            rc = erc;
        rf__ring_reap(l);
        if (efd)
            io_uring_cq_eventfd_toggle(&l->ring, true);
    }
    /* From here on posts wake the loop (or the host, through the eventfd);
     * what came before is in the mailbox, and seen below (remote.c). */
    rf__remote_awake(l, false);
    if (efd && rf__loop_work_ready(l)) {
        uint64_t one = 1;
        (void)!write(l->poll_efd, &one, sizeof(one));
    }
    __atomic_store_n(&l->idle, 1, __ATOMIC_RELAXED);
    l->running = false;
    l->stop = false;
    rf__tls_loop = NULL;
    if (rc < 0 || !host)
        return rc;
    return loop_alive(l);
}

/* Work rf_loop_run_once would do now, without waiting for anything. */
bool rf__loop_work_ready(rf_loop *l)
{
    return rf__nready(l) || rf__remote_pending(l) || rf__ring_has_work(l);
}

int rf_loop_run_once(rf_loop *loop, unsigned flags)
{
    int rc = rf__loop_check(loop);
    if (rc)
        return rc;
    if (flags & ~RF_RUN_NOWAIT)
        return -EINVAL;
    return loop_run(loop, (flags & RF_RUN_NOWAIT) ? RUN_NOWAIT : RUN_ONCE);
}

int rf__loop_check(const rf_loop *l)
{
    if (!l)
        return -EINVAL;
    if (!rf__on_owner_thread(l))
        return -EXDEV;
    if (l->running || rf__tls_loop)
        return -EBUSY;
    return 0;
}

int rf_loop_new(rf_loop **loopp, const rf_loop_opts *opts)
{
    if (!loopp)
        return -EINVAL;
    *loopp = NULL;
    rf_loop_opts o = opts ? *opts : (rf_loop_opts){0};
    if (o.flags & ~RF_LOOP_KNOWN_FLAGS)
        return -EINVAL;
    if (rf__stack_size_check(o.default_stack_size) ||
        rf__size_check(o.mailbox_capacity, 0, RF_MAILBOX_MAX) ||
        rf__size_check(o.sq_entries, 0, RF_RING_MAX_ENTRIES) ||
        rf__size_check(o.cq_entries, 0, 2 * RF_RING_MAX_ENTRIES) ||
        o.spin_ns > RF_SPIN_MAX_NS || o.wake_batch_us > RF_WAKE_BATCH_MAX_US ||
        (o.autojump_ns && !(o.flags & RF_LOOP_VIRTUAL_TIME)) ||
        ((o.recv_bufs || o.recv_buf_size) &&
         !(o.flags & RF_LOOP_RECV_MULTISHOT)) ||
        o.recv_bufs > RF_RECV_BUFS_MAX || o.recv_bufs == 1 ||
        (o.recv_bufs & (o.recv_bufs - 1)) ||
        (o.recv_buf_size && o.recv_buf_size < 64) ||
        o.recv_buf_size > RF_RECV_BUF_SIZE_MAX)
        return -EINVAL;
    size_t stack = o.default_stack_size ? o.default_stack_size
                                        : RF_DEFAULT_STACK_SIZE;
    rf_loop *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->remote_efd = -1;
    l->poll_efd = -1;
    l->idle = 1;
    l->flags = o.flags;
    /* At most RF_MAILBOX_MAX: the slot count has 32 bits (remote.c),
     * posters in flight included. */
    l->mail_cap = o.mailbox_capacity ? o.mailbox_capacity : RF_MAILBOX_DEFAULT;
    l->spin_ns = o.spin_ns;
    l->recv_ms = o.flags & RF_LOOP_RECV_MULTISHOT;
    l->recv_bufs = o.recv_bufs ? o.recv_bufs : RF_RECV_BUFS_DEFAULT;
    l->recv_buf_size =
        o.recv_buf_size ? o.recv_buf_size : RF_RECV_BUF_SIZE_DEFAULT;
    l->owner = pthread_self();
    int slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    l->timer_slack_ns = slack > 0 ? (uint64_t)slack : 0;
    /* Virtual time: every timer at its exact instant (time.c). */
    l->vtime = (o.flags & RF_LOOP_VIRTUAL_TIME) != 0;
    l->delay_on = (o.flags & RF_LOOP_SCHED_DELAY) != 0;
    l->delay_now = rf__real_now_ns();
    l->autojump_ns = o.autojump_ns;
    l->shuffle_seed = o.shuffle_seed;
    if (!l->shuffle_seed) {
        const char *e = getenv("RINGFIBER_SHUFFLE_SEED");
        if (e && *e)
            l->shuffle_seed = strtoull(e, NULL, 0);
    }
    l->shuffle = l->shuffle_seed != 0;
    l->shuffle_rng = l->shuffle_seed;
    if (l->vtime)
        l->timer_slack_ns = 0;
    rf_list_init(&l->alive);
    rf_list_init(&l->free_tasks);
    for (unsigned i = 0; i < RF_FD_BUCKETS; i++)
        rf_list_init(&l->fd_ops[i]);
    rf_list_init(&l->acceptors);
    rf_list_init(&l->free_acceptors);
    rf_list_init(&l->idle_buckets);
    rf_event_init(&l->shutdown_ev);
    rf__ctx_init_sched(&l->sched);
    rf__stacks_init(&l->stacks, stack, l->flags);
    int rc = rf__rq_reserve(l, 64);
    if (rc) {
        rf__stacks_fini(&l->stacks, false);
        free(l);
        return rc;
    }
    rc = rf__ring_setup(l, &o);
    if (rc) {
        rf__setup_error_report(rc, l->flags);
        rf__stacks_fini(&l->stacks, false);
        free(l->rq);
        free(l);
        return rc;
    }
    /* The autojump's timed wait is an enter argument (5.11). */
    rc = l->autojump_ns && !(l->ring.features & IORING_FEAT_EXT_ARG)
             ? -EOPNOTSUPP
             : rf__remote_init(l);
    if (rc == 0) {
        rc = rf__overflow_handler_install(l);
        if (rc)
            rf__remote_fini(l);
    }
    if (rc) {
        io_uring_queue_exit(&l->ring);
        rf__stacks_fini(&l->stacks, false);
        free(l->rq);
        free(l);
        return rc;
    }
    rf__ring_wake_init(l, (o.flags & RF_LOOP_WAKE_AT_ONCE)
                              ? 0
                              : o.wake_batch_us
                                  ? o.wake_batch_us
                                  : rf__wake_batch_env(o.flags & RF_LOOP_QUIET));
    rf__stall_env(l); /* RINGFIBER_STALL_MS; a failure is reported */
    rf__registry_add(l);
    *loopp = l;
    return 0;
}

int rf_loop_run_until_complete(rf_loop *loop, rf_fn fn, void *arg,
                               void **result)
{
    int rc = rf__loop_check(loop);
    if (rc)
        return rc;
    if (!fn)
        return -EINVAL;
    rf_task *t = rf__spawn(loop, fn, arg, NULL, __builtin_return_address(0));
    if (!t)
        return -errno;
    loop->target = t;
    loop->target_done = false;
    rc = loop_run(loop, RUN_DEFAULT);
    loop->target = NULL;
    loop->target_done = false;
    if (t->state == RF_DONE) {
        if (result)
            *result = t->result;
        rc = t->status;
    } else if (rc == 0) {
        rc = -EINTR; /* rf_loop_stop() before the task finished */
    }
    rf__task_unref(loop, t);
    return rc;
}

int rf_loop_run_forever(rf_loop *loop)
{
    int rc = rf__loop_check(loop);
    return rc ? rc : loop_run(loop, RUN_DEFAULT);
}

int rf_loop_stop(rf_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (!rf__on_owner_thread(loop))
        return -EXDEV;
    loop->stop = true;
    return 0;
}

int rf_loop_free(rf_loop *loop)
{
    if (!loop)
        return 0;
    int rc = rf__loop_check(loop);
    if (rc)
        return rc;
    /* asyncio.run's epilogue: cancel whatever is alive and let it unwind;
     * then drain every operation still in flight, so that no completion
     * can arrive for a record that is gone. Mail from other threads is
     * refused from now on; what was accepted is run first (embed.c), so
     * the tasks it spawns are cancelled with the others. */
    rf__registry_remove(loop); /* no dump signal's request from now on */
    rf__embed_close(loop);
    loop->draining = true;
    rf__timers_flush_idle(loop); /* counted again: drained below */
    rf__tls_loop = loop;
    rf__remote_drain(loop);
    rf__tls_loop = NULL;
    for (rf_list *n = loop->alive.next; n != &loop->alive; n = n->next)
        rf__cancel(rf_container_of(n, rf_task, alive));
    rf__acceptors_release(loop, false);
    rf__recvq_release(loop, false);
    if (!rf_list_empty(&loop->alive) || loop->inflight ||
        loop->remote_expected)
        rc = loop_run(loop, RUN_DEFAULT);
    if (rc)
        fprintf(stderr, "ringfiber: rf_loop_free: its last run failed (%s) "
                        "with %llu task(s) unfinished and %llu operation(s) "
                        "in flight; the operations are cancelled, the tasks "
                        "released unfinished\n",
                rf_strerror(rc), (unsigned long long)loop->stats.tasks_alive,
                (unsigned long long)loop->inflight);
    rf__stall_fini(loop);
    rf__pool_loop_fini(loop);
    /* Before the records and stacks go: where the run above failed (a
     * ring that refused work) operations may still be in flight, and the
     * mailbox's last reaps dispatch their completions. */
    rf__remote_fini(loop);
    /* What the kernel still holds after a failed run is cancelled and
     * waited for; what it will not give back keeps its memory mapped. */
    if ((rc < 0 || loop->inflight) && !rf__ring_settle(loop)) {
        loop->unsettled = true;
        fprintf(stderr, "ringfiber: rf_loop_free: operations still in the "
                        "kernel 1 s after their cancel (%llu counted); the "
                        "loop's stacks and receive buffers stay mapped\n",
                (unsigned long long)loop->inflight);
    }
    while (!rf_list_empty(&loop->alive)) {
        rf_task *t = rf_container_of(loop->alive.next, rf_task, alive);
        rf_list_remove(&t->alive);
        if (!loop->unsettled) /* a stack of its own would be unmapped */
            rf__stack_put(&loop->stacks, t);
    }
    rf__acceptors_release(loop, true);
    rf__recvq_release(loop, true);
    rf__vclock_fini(loop);
    io_uring_queue_exit(&loop->ring);
    rf__ring_wake_fini(loop);
    rf__embed_fini(loop);
    rf__stacks_fini(&loop->stacks, loop->unsettled);
    rf__tasks_free_all(loop);
    rf__overflow_handler_remove(loop);
    rf_event_fini(&loop->shutdown_ev); /* nobody waits: no task is left */
    free(loop->backlog.v);
    free(loop->rq);
    free(loop);
    return 0;
}

rf_loop *rf_loop_current(void) { return rf__tls_loop; }

/* Each counter read whole (the loop writes them with RF_STAT_*); on the
 * loop's own thread nothing changes meanwhile, so the copy is one instant. */
static void stats_snapshot(const rf_loop *l, rf_stats *out)
{
#define RF_STAT_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)
    const rf_stats *s = &l->stats;
    out->switches = RF_STAT_GET(s->switches);
    out->tasks_spawned = RF_STAT_GET(s->tasks_spawned);
    out->tasks_alive = RF_STAT_GET(s->tasks_alive);
    out->sqes_submitted = RF_STAT_GET(s->sqes_submitted);
    out->enters = RF_STAT_GET(s->enters);
    out->cqes_reaped = RF_STAT_GET(s->cqes_reaped);
    out->ops_in_flight = RF_STAT_GET(l->inflight);
    out->passes = RF_STAT_GET(s->passes);
    out->stacks_mapped = RF_STAT_GET(l->stacks.mapped);
    out->ring_flags = s->ring_flags; /* set once, before the loop exists */
    out->guard_mode = (uint32_t)RF_STAT_GET(l->stacks.guard_mode);
    out->accept_emfile = RF_STAT_GET(s->accept_emfile);
    out->stalls = rf__stall_count(l);
    out->acceptor_pauses = RF_STAT_GET(s->acceptor_pauses);
    out->mail_refused = RF_STAT_GET(l->mail_refused);
    out->spawn_failed = RF_STAT_GET(s->spawn_failed);
    out->wakeups_eventfd = RF_STAT_GET(s->wakeups_eventfd);
    out->wakeups_msg_ring = RF_STAT_GET(s->wakeups_msg_ring);
    out->sleeps_avoided = RF_STAT_GET(s->sleeps_avoided);
    out->wakes_batched = RF_STAT_GET(s->wakes_batched);
    out->recv_pauses = RF_STAT_GET(s->recv_pauses);
    out->recv_nobufs = RF_STAT_GET(s->recv_nobufs);
#undef RF_STAT_GET
}

int rf_loop_stats(const rf_loop *loop, rf_stats *out)
{
    if (!loop || !out)
        return -EINVAL;
    if (!rf__on_owner_thread(loop))
        return -EXDEV;
    stats_snapshot(loop, out);
    return 0;
}

int rf_loop_stats_threadsafe(const rf_loop *loop, rf_stats *out)
{
    if (!loop || !out)
        return -EINVAL;
    stats_snapshot(loop, out);
    return 0;
}

int rf_run(rf_fn main, void *arg, void **result)
{
    return rf_run_opts(main, arg, result, NULL);
}

int rf_run_opts(rf_fn main, void *arg, void **result, const rf_loop_opts *opts)
{
    if (!main)
        return -EINVAL;
    if (rf__tls_loop)
        return -EBUSY;
    rf_loop *l;
    int rc = rf_loop_new(&l, opts);
    if (rc)
        return rc;
    rc = rf_loop_run_until_complete(l, main, arg, result);
    /* main asked for a graceful shutdown and returned: the other tasks
     * still have their grace; run the loop until the shutdown is over
     * (it stops the loop then) before rf_loop_free cancels anything. */
    if (l->shutdown_task) {
        int src = rf_loop_run_forever(l);
        if (rc == 0 && src != 0)
            rc = src;
    }
    rf_loop_free(l);
    return rc;
}
