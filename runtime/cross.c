/*
 * Tasks across loops: rf_spawn_on, and rf_join, rf_join_nocancel,
 * rf_wait_for, rf_cancel, rf_done, rf_task_retain and rf_task_release on
 * a task of another loop.
 *
 * Loops share nothing: a task's record is read and written only on its
 * own loop's thread. Another loop asks, with a message in the task's
 * loop's mailbox (remote.c), and is answered with a message in its own.
 * A request that a task waits for is the ring's contract again: one
 * request, exactly one reply. The request lives on the waiting task's
 * stack (an xreq), the origin loop counts it in remote_expected while it
 * is out (so it neither reports a deadlock nor returns), and the task
 * waits on the request's rf_waiter, which the reply makes done.
 *
 *  - spawn: the task's loop creates it and replies with its record. The
 *    wait is not interruptible: the task may exist by then, and its
 *    handle must not be lost (as an accepted fd is handed over when a
 *    cancellation comes late).
 *  - join: the task's loop replies at once if the task has returned, else
 *    links a watch on it (as a local join does) whose fire replies with
 *    the result. If the joiner's wait ends first (cancellation, deadline),
 *    it sends a second message on the same request, "give up": if the
 *    watch is still linked, it is unlinked and the reply says "not
 *    ended"; if it has fired, its reply is already on its way. Messages
 *    from one thread run in the order they were sent, so "give up" never
 *    overtakes the join. Either way one reply comes; "give up" is
 *    acknowledged too, and the joiner waits for both before its stack,
 *    which holds the request and its messages, can go.
 *
 * A handle made for another loop (rf_spawn_on) has the low bit set
 * (RF_HANDLE_CROSS): its references are counted in the task's rf_xtask,
 * atomically, from any thread; while that count is not zero the task's
 * loop holds one ordinary reference for all of them, dropped by a message
 * when the count falls to zero. rf_cancel from another loop is a message
 * too, kept in the rf_xtask (at most one in flight). rf_done reads a flag
 * that task_finish stores with release.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* What a task's loop keeps for the handles held on other loops: allocated
 * with the first (rf_spawn_on), freed with the task's record. */
typedef struct rf_xtask {
    rf_remote_msg cancel_msg;  /* rf_cancel from another loop */
    rf_remote_msg release_msg; /* the last cross reference dropped */
    rf_task *t;
    uint32_t refs;             /* __atomic: cross references */
    uint8_t cancel_posted;     /* __atomic: cancel_msg is in the mailbox */
    uint8_t done;              /* __atomic: the task has returned */
} rf_xtask;

/* Waiters on a task's stack are linked into another task's list and are
 * always unlinked before their function returns (see task.c). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif

/* ---- one request, one reply ---- */

typedef struct xreq {
    rf_remote_msg msg;   /* to the task's loop */
    rf_remote_msg give_up; /* to the task's loop: a join ended early */
    rf_xwait xw;         /* the origin's wait: the reply, the acks */
    rf_task *t;          /* the task (a record) */
    /* spawn */
    rf_fn fn;
    void *arg;
    size_t stack_size;
    void *from;          /* rf_task_info.spawned_from */
    bool named;
    char name[RF_TASK_NAME_MAX];
    int err;
    /* join */
    rf_watch watch;      /* on t->joiners, on t's loop */
    bool watching;
    bool ended;          /* the reply: t had returned */
    void *result;
    int status;
} xreq;

/* On the task's loop: answer r (once). */
static void reply(xreq *r)
{
    rf__xwait_reply(&r->xw);
}

/* On the origin: send r->msg to `to` and count the reply to come.
 * -ESHUTDOWN if `to` refuses it. */
static int request(rf_loop *l, rf_loop *to, xreq *r, bool spawn,
                void (*run)(rf_loop *, rf_remote_msg *))
{
    rf__xwait_begin(l, &r->xw);
    r->msg.run = run;
    int rc = rf__post_gated(to, &r->msg, spawn);
    if (rc)
        rf__xwait_cancel(l, &r->xw);
    return rc;
}

/* ---- spawn ---- */

static void cancel_run(rf_loop *l, rf_remote_msg *m);
static void release_run(rf_loop *l, rf_remote_msg *m);

static void spawn_run(rf_loop *l, rf_remote_msg *m)
{
    xreq *r = rf_container_of(m, xreq, msg);
    rf_xtask *x = calloc(1, sizeof(*x));
    r->t = NULL;
    if (x) {
        x->cancel_msg.run = cancel_run;
        x->release_msg.run = release_run;
    }
    if (!x) {
        r->err = -ENOMEM;
    } else if (l->draining || l->group_draining) {
        r->err = -ESHUTDOWN;
    } else {
        rf_spawn_options o = {.name = r->named ? r->name : NULL,
                              .stack_size = r->stack_size};
        rf_task *t = rf__spawn(l, r->fn, r->arg, &o, r->from);
        if (t) {
            /* The caller's reference (of the two rf__spawn gives) is the
             * one held for every cross reference. */
            x->t = t;
            x->refs = 1;
            t->x = x;
            x = NULL;
            r->t = t;
        } else {
            r->err = -errno;
        }
    }
    free(x);
    reply(r);
}

rf_task *rf_spawn_on(rf_loop *loop, rf_fn fn, void *arg,
                     const rf_spawn_options *opts)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    int rc = 0;
    if (!loop || !fn)
        rc = -EINVAL;
    else if (!self)
        rc = -EPERM;
    else if (loop == l) {
        rf_task *t = rf__spawn(l, fn, arg, opts, __builtin_return_address(0));
        return t ? rf__handle(t) : NULL;
    }
    else
        rc = rf__wait_precheck(self);
    size_t ss = opts ? opts->stack_size : 0;
    if (rc == 0)
        rc = rf__stack_size_check(ss);
    if (rc) {
        errno = -rc;
        return NULL;
    }
    xreq r = {.fn = fn, .arg = arg, .stack_size = ss,
              .from = __builtin_return_address(0)};
    if (opts && opts->name) {
        r.named = true;
        strncpy(r.name, opts->name, sizeof(r.name) - 1);
    }
    rc = request(l, loop, &r, true, spawn_run);
    if (rc == 0)
        /* see the top */
        rf__waiter_wait(l, self, &r.xw.w, 0, RF_WAIT_ON_LOOP, loop);
    r.xw.w.task = NULL;
    if (rc == 0 && !r.t)
        rc = r.err;
    if (rc) {
        errno = -rc;
        return NULL;
    }
    /* The record's generation was read on its loop before the reply was
     * posted: the post and the drain order it before this read. */
    return (rf_task *)((uintptr_t)rf__handle(r.t) | RF_HANDLE_CROSS);
}

/* ---- join ---- */

static void join_fill(xreq *r, rf_task *t)
{
    r->ended = true;
    r->result = t->result;
    r->status = t->status;
}

static void join_fire(rf_watch *w, rf_task *done)
{
    xreq *r = rf_container_of(w, xreq, watch);
    r->watching = false;
    join_fill(r, done);
    reply(r);
}

static void join_run(rf_loop *l, rf_remote_msg *m)
{
    (void)l;
    xreq *r = rf_container_of(m, xreq, msg);
    rf_task *t = r->t;
    if (t->state == RF_DONE) {
        join_fill(r, t);
        reply(r);
        return;
    }
    r->watch = (rf_watch){.fire = join_fire};
    rf_list_push_back(&t->joiners, &r->watch.node);
    r->watching = true;
}

static void give_up_run(rf_loop *l, rf_remote_msg *m)
{
    (void)l;
    xreq *r = rf_container_of(m, xreq, give_up);
    if (r->watching) {
        rf_list_remove(&r->watch.node);
        r->watching = false;
        reply(r); /* not ended */
    } /* else it fired: its reply is on its way */
    /* Either way, say that this message has run: the record, on the
     * joiner's stack, must outlive it. */
    rf__xwait_ack(&r->xw);
}

/* Cancel t, from another loop: at most one message in flight. */
int rf__xcancel(rf_task *t)
{
    rf_xtask *x = t->x;
    if (__atomic_load_n(&x->done, __ATOMIC_ACQUIRE))
        return -ESRCH;
    if (__atomic_exchange_n(&x->cancel_posted, 1, __ATOMIC_ACQ_REL))
        return 0; /* one is on its way */
    int rc = rf__post_gated(t->loop, &x->cancel_msg, false);
    if (rc)
        __atomic_store_n(&x->cancel_posted, 0, __ATOMIC_RELEASE);
    return rc;
}

static void cancel_run(rf_loop *l, rf_remote_msg *m)
{
    (void)l;
    rf_xtask *x = rf_container_of(m, rf_xtask, cancel_msg);
    __atomic_store_n(&x->cancel_posted, 0, __ATOMIC_RELEASE);
    if (x->t->state != RF_DONE)
        rf__cancel(x->t);
}

/* One join of t from another loop, bounded by how (RF_WAIT_*): 0 and the
 * answer in r once t has returned, else why the wait ended first. */
static int xjoin_once(rf_loop *l, rf_task *self, rf_task *t, unsigned how,
                      xreq *r)
{
    *r = (xreq){.t = t};
    int rc = request(l, t->loop, r, false, join_run);
    if (rc)
        return rc;
    rc = rf__waiter_wait(l, self, &r->xw.w, how, RF_WAIT_ON_LOOP, t->loop);
    if (rc < 0) {
        /* Give up, and wait for the one reply. */
        r->give_up.run = give_up_run;
        /* Refused only by a loop being freed: it cancels t, whose end
         * replies. Accepted, it is answered by an ack as well. */
        rf__xwait_expect(l, &r->xw);
        if (rf__post_gated(t->loop, &r->give_up, false) != 0)
            rf__xwait_cancel(l, &r->xw);
        rf__waiter_wait(l, self, &r->xw.w, 0, RF_WAIT_ON_LOOP, t->loop);
        if (r->ended)
            rc = 0;
    }
    r->xw.w.task = NULL;
    return rc;
}

/*
 * rf_join (how RF_WAIT_ANY), rf_join_nocancel (0) and rf_wait_for
 * (timeout_ns other than RF_FOREVER) of a task of another loop, through
 * a cross handle h.
 */
int rf__xjoin(rf_task *h, void **result, unsigned how, uint64_t timeout_ns)
{
    rf_loop *l = rf__tls_loop;
    rf_task *self = l ? l->current : NULL;
    if (!self)
        return -EPERM;
    rf_task *t = rf__untag(h);
    if (!t->x)
        return -EXDEV; /* not a handle made for another loop */
    xreq r;
    int rc;
    if (timeout_ns == RF_FOREVER) {
        rc = xjoin_once(l, self, t, how, &r);
    } else {
        /* rf_wait_for: the join under a narrowed deadline (time.c); when
         * it ends first, t is cancelled and awaited, as locally. */
        uint64_t saved =
            rf__deadline_narrow(l, self, rf__time_after(timeout_ns));
        rc = xjoin_once(l, self, t, RF_WAIT_ANY, &r);
        rf__deadline_restore(l, self, saved);
        if (rc && rc != -ESHUTDOWN) {
            rf__xcancel(t);
            if (xjoin_once(l, self, t, 0, &r) != 0)
                r.ended = false;
        }
    }
    if (r.ended && result)
        *result = r.result;
    if (rc)
        return rc;
    return r.status;
}

/* ---- state and references ---- */

bool rf__xdone(const rf_task *t)
{
    return __atomic_load_n(&t->x->done, __ATOMIC_ACQUIRE) != 0;
}

/* task_finish, for a task with handles on other loops. */
void rf__xtask_finish(rf_task *t)
{
    __atomic_store_n(&t->x->done, 1, __ATOMIC_RELEASE);
}

void rf__xretain(rf_task *t)
{
    __atomic_add_fetch(&t->x->refs, 1, __ATOMIC_RELAXED);
}

static void release_run(rf_loop *l, rf_remote_msg *m)
{
    rf_xtask *x = rf_container_of(m, rf_xtask, release_msg);
    rf__task_unref(l, x->t); /* may free x (with the record's recycling) */
}

void rf__xrelease(rf_task *t)
{
    rf_xtask *x = t->x;
    if (__atomic_sub_fetch(&x->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    /* Refused only by a loop being freed, which frees the record
     * anyway. */
    (void)rf__post_gated(t->loop, &x->release_msg, false);
}

/* The record is recycled: its cross state goes with it. */
void rf__xtask_free(rf_task *t)
{
    free(t->x);
    t->x = NULL;
}
