/*
 * The structures behind the opaque types, shared by the runtime files only.
 */
#ifndef RF_INTERNAL_H
#define RF_INTERNAL_H

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "list.h"
#include "ringfiber.h"

#if defined(__SANITIZE_ADDRESS__)
#define RF_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define RF_TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(RF_ASAN)
#define RF_ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(RF_TSAN)
#define RF_TSAN 1
#endif
#endif

#define rf_likely(x) __builtin_expect(!!(x), 1)
#define rf_unlikely(x) __builtin_expect(!!(x), 0)

/*
 * The one range check of a size given to the runtime ("Limits" in
 * ringfiber.h): 0 when min <= v <= max, else -EINVAL. Done once, where
 * the size enters; past it a size is at most its RF_*_MAX, which is what
 * keeps the arithmetic on it (page rounding, array lengths) from
 * overflowing.
 */
static inline int rf__size_check(uint64_t v, uint64_t min, uint64_t max)
{
    return v >= min && v <= max ? 0 : -EINVAL;
}

/* A task's stack size: 0 (the loop's default) or within the limits. */
static inline int rf__stack_size_check(uint64_t size)
{
    return size == 0 ? 0
                     : rf__size_check(size, RF_MIN_STACK_SIZE,
                                      RF_MAX_STACK_SIZE);
}

/* ---- fcontext (Boost.Context's assembly entry points) ---- */
typedef void *fcontext_t;
typedef struct {
    fcontext_t fctx;
    void *data;
} transfer_t;
transfer_t jump_fcontext(fcontext_t const to, void *vp);
fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));
/* jump_fcontext for the switches inside the library (context.c): the
 * context left resumes through a ret that the CPU predicts. */
#if defined(__x86_64__) && defined(__ELF__)
transfer_t rf__jump_ret(fcontext_t const to, void *vp);
#define RF_JUMP rf__jump_ret
#else
#define RF_JUMP jump_fcontext
#endif

/* One execution context: a task's, or the loop's own (the thread stack). */
typedef struct rf_ctx {
    fcontext_t fctx;
    void *stack_lo;    /* lowest usable address (NULL: unknown, thread stack) */
    size_t stack_size; /* usable bytes above stack_lo */
#if defined(RF_ASAN)
    void *asan_fake;
#endif
#if defined(RF_TSAN)
    void *tsan_fiber;
#endif
} rf_ctx;

/* ---- stacks ---- */
/* Its size is pinned: it sits in rf_loop before fields the hot paths
 * use, whose offsets W1 is sensitive to. 112 bytes since stacks are taken
 * at the first run (fresh, spare): W1 1.006 against its raw baseline's
 * 0.990 (bench/ab.sh, 5 runs); 120 with the slab preparer (prep): W1
 * 0.997 against 1.001. */
typedef struct rf_stacks {
    size_t size;      /* usable size of a pooled (default) stack */
    size_t slot;      /* guard + size */
    void **free;      /* LIFO of free pooled stacks (their lo), nfree of */
    uint32_t nfree;   /* them; room for every slot of every slab mapped */
    uint32_t free_cap;
    struct rf_stack_slab *slabs; /* stack.c */
    struct rf_stack_slab *fresh; /* mapped, not yet on the free list */
    struct rf_stack_prep *prep;  /* the slab preparer thread (stack.c) */
    uint64_t spare;   /* stacks free or fresh, not promised to a task */
    uint64_t mapped;  /* stacks handed out or pooled */
    uint64_t own_mapped; /* of which with a mapping of their own */
    uint64_t canary_key;
    uint32_t mprotect_budget; /* mprotect guards still allowed */
    uint32_t page;
    uint32_t guard;   /* guard bytes below each stack */
    uint32_t binds;   /* pooled stacks taken since one was given back */
    int pidfd;        /* for batched guard installs; -1: not available */
    /* How a new slab's stack tops get their first page (stack.c,
     * slab_touch): what each way cost when last timed (ns per slab,
     * saturated), the slabs made (mod 256), and whether the kernel
     * refused process_madvise(MADV_POPULATE_WRITE). */
    uint32_t touch_ns, populate_ns;
    uint8_t slabs_made;
    uint8_t guard_mode; /* RF_GUARD_* */
    bool populate_off;
    bool prep_off;    /* no slab preparer: the kernel or a thread refused */
} rf_stacks;
_Static_assert(sizeof(rf_stacks) == 120, "rf_stacks: see above");

/* ---- tasks ---- */
enum rf_task_state {
    RF_READY,   /* in the run queue */
    RF_RUNNING, /* on the CPU */
    RF_WAITING, /* suspended until rf__wake */
    RF_DONE     /* fn returned; stack released */
};

/*
 * The one waiter record (loop.c): a task waiting for one thing to happen
 * (an operation's final CQE, a timer, an object handing it an item, a
 * lock or a permit, an offloaded call's return, a room in the pool's
 * queue). It lives in the record of what it waits for, on the waiting
 * task's stack. Whoever makes it happen calls rf__waiter_done (result,
 * done, wake); the task waits with rf__waiter_wait. One wait, one wake:
 * a record is done once.
 */
typedef struct rf_waiter {
    rf_task *task; /* the waiting task; NULL: nobody waits now */
    int32_t res;   /* the result, once done */
    bool done;
} rf_waiter;

/* A timer a task waits on: it joins a shared kernel timeout that fires
 * within [end, end + timer slack] (time.c), sets done and res (-ETIME)
 * and wakes task. rf__timer_start returns 0, -ENOMEM or -EBUSY (no SQE);
 * rf__timer_stop takes a timer that has not fired out of its timeout,
 * without a system call or a wait (a no-op once done). */
typedef struct rf_timer {
    uint32_t slot; /* its index in its bucket's array (time.c) */
    rf_waiter w;   /* done when it fires: res -ETIME */
    struct rf_timer_bucket *bucket;
} rf_timer;

/* Someone interested in a task's end: a joiner, an as_completed set, a
 * group, an rf_wait (task.c, taskset.c). fire runs once, as the task
 * returns; a join's (rf__watch_wake) makes w done. */
typedef struct rf_watch {
    rf_list node;
    void (*fire)(struct rf_watch *w, rf_task *done);
    rf_waiter w;
} rf_watch;

struct rf_task {
    rf_ctx ctx;
    rf_loop *loop;
    rf_list node;    /* loop->free_tasks while the record is free */
    rf_list alive;   /* loop->alive while not DONE */
    rf_list joiners; /* rf_watch */
    rf_fn fn;
    void *arg;
    void *result;
    uint64_t id;
    uint32_t refs;
    uint16_t gen;          /* handle generation: bumped at each recycling */
    uint8_t state;
    bool cancelled;        /* rf_cancel was called */
    uint8_t wait_flags;    /* RF_WAIT_* of the current wait */
    bool cancel_woken;     /* the current wait ended on rf_cancel */
    bool pooled_stack;     /* stack from the loop's pool */
    bool canary;           /* stack has a canary to check */
    int status;            /* 0 or -ECANCELED once DONE */
    uint64_t deadline;     /* rf_deadline_set: absolute ns, 0 none */
    struct rf_xtask *x;    /* handles held on other loops (cross.c) */
    bool in_accept;        /* waiting in an accept (graceful shutdown
                            * cancels such tasks: "stop accepting") */
    uint16_t wait_on;      /* what its current or last wait was on:
                            * RF_WAIT_ON_* | IORING_OP_* << 8 (rf__waiter_wait;
                            * inspect.c reads it) */
    /* id and name are read by the stall detector's watchdog too, from
     * its thread, while the task holds the loop (stall.c): both are
     * written with atomic stores (rf__task_name_set), the name's first
     * byte last, with release, so that a reader that sees it (acquire)
     * sees the rest. The loop's thread reads them plainly. */
    char name[RF_TASK_NAME_MAX];
    /* Last: a spawn, a switch and a task's end touch nothing below this
     * line unless the task has a deadline, but for the operator's view's
     * stores after the timer. The timer is unarmed whenever deadline is 0
     * (time.c), and so in a free record. Keep the fields above it
     * (everything a task without a deadline touches) within the record's
     * first 192 bytes, three cache lines: W2 measures it. */
    rf_timer deadline_timer; /* bounds its waits by it (time.c) */
    /* For the operator's view (inspect.c), read only by a dump: written
     * at each wait (the object or descriptor of wait_on, and when the wait
     * began on the loop's approximate clock, rf_loop.now_approx) and at
     * each spawn. They are past the first 192 bytes, which had no room:
     * a line more per wait, which W2 (a join per spawn) measured within
     * its noise (docs/inspect.md). */
    const void *wait_obj;
    uint64_t wait_since;
    void *spawned_from;    /* a return address in the spawning function */
    uint64_t ready_at;     /* RF_LOOP_SCHED_DELAY: when it became ready */
    uint64_t unused;       /* keeps the record at four lines (below) */
};
#if !defined(RF_ASAN) && !defined(RF_TSAN)
/* 256 bytes: every record of a chunk starts at the same offset in a cache
 * line, and the fields above deadline_timer stay within three lines. */
_Static_assert(sizeof(struct rf_task) == 256 &&
                   offsetof(struct rf_task, deadline_timer) <= 192,
               "rf_task: see above");
#endif

#define RF_TIMER_BUCKETS 16

/* How a task waits (rf__wait). */
#define RF_WAIT_CANCEL 1u   /* rf_cancel ends the wait: -ECANCELED */
#define RF_WAIT_DEADLINE 2u /* the task's deadline ends it: -ETIMEDOUT */
#define RF_WAIT_ANY (RF_WAIT_CANCEL | RF_WAIT_DEADLINE)

/* An operation in the ring (ring.c); lives on the waiting task's stack.
 * rf__op_begin sets it up; a record used without it (rf_close's) is made
 * with RF_OP(fd). */
/* Buckets of the loop's index of operations by fd (4 KiB of heads): a
 * close looks at about 1/256 of the operations in flight. */
#define RF_FD_BUCKETS 256u

typedef struct rf_op {
    rf_waiter w;      /* done at the final CQE, with its res */
    rf_loop *loop;
    uint32_t cflags;
    int fd;           /* the descriptor it works on; -1: none */
    rf_list node;     /* rf__fd_ops(loop, fd) while in flight on fd */
    struct rf_close_wait *closer; /* an rf_close waiting for it to end */
} rf_op;

/* An rf_close waiting for the operations it claimed on its fd (fs.c):
 * done when the last of them has ended. */
typedef struct rf_close_wait {
    rf_waiter w;
    unsigned left;
} rf_close_wait;
void rf__close_release(rf_loop *l, rf_close_wait *c);
#define RF_OP(fd_) ((rf_op){.fd = (fd_)})

/* A record whose CQEs go to a function: multishot operations, and the
 * loop's own requests. Submitted with rf__handler_data(h). */
typedef struct rf_handler {
    void (*fn)(rf_loop *l, struct rf_handler *h,
               const struct io_uring_cqe *cqe);
    bool uncounted; /* not in loop->inflight (the remote wake-up read) */
} rf_handler;

/* user_data tags: records are 8-byte aligned, the low bits are free.
 * RF_UD_IGNORE marks requests whose CQE only settles accounting: cancel
 * requests (op.c, acceptor.c, remote.c) and timeout removals (time.c). */
#define RF_UD_IGNORE 1ULL
#define RF_UD_HANDLER 3ULL /* h | 3: an rf_handler */

static inline uint64_t rf__handler_data(rf_handler *h)
{
    return (uint64_t)(uintptr_t)h | RF_UD_HANDLER;
}

/* A message posted to a loop from another thread (remote.c). run() is
 * called on the loop's thread, in the scheduler, once. */
typedef struct rf_remote_msg {
    struct rf_remote_msg *next;
    void (*run)(rf_loop *l, struct rf_remote_msg *m);
    bool counted; /* holds a mailbox slot (a user's spawn or call);
                   * the runtime's own messages (pool completions, stop,
                   * shutdown) are bounded elsewhere and never refused */
} rf_remote_msg;
/* Task records are allocated RF_TASKS_PER_CHUNK at a time, after a
 * header that takes the first slot (task.c). */
#define RF_TASKS_PER_CHUNK 64
typedef struct rf_task_chunk {
    struct rf_task_chunk *next;
} rf_task_chunk;

struct rf_loop {
    struct io_uring ring;
    rf_ctx sched;          /* the loop's own context (the caller's stack) */
    rf_task *current;      /* running task, NULL in the scheduler;
                            * written with rf__set_current */
    uint64_t budget;       /* tasks still to run in this pass (see loop.c) */
    rf_task *dead;         /* finished task whose stack is still in use */
    /* The run queue: a ring of task pointers, FIFO. Its capacity is kept
     * at least the number of tasks alive (spawn grows it), so a wake never
     * allocates and never fails. */
    rf_task **rq;
    uint32_t rq_mask;      /* capacity - 1, a power of two */
    uint32_t rq_head, rq_tail;
    /* RF_LOOP_SCHED_DELAY (metrics.c): in the padding before `alive`, on
     * the run queue's line that every wake touches anyway. */
    bool delay_on;
    rf_list alive;
    rf_list free_tasks;
    rf_task_chunk *chunks; /* written with release (task.c, stall.c) */
    rf_task *target;       /* run_until_complete's task */
    pthread_t owner;
    bool running;
    /* The three reasons to return to the caller of the loop, kept
     * adjacent: the pass end tests them together. */
    bool stop;
    bool once;             /* rf_loop_run_once: return at this pass's end */
    bool target_done;      /* target has returned */
    /* A shuffled schedule (rf_loop_opts.shuffle_seed): every pass end
     * takes the slow path, which permutes the next pass (loop.c). In the
     * padding after the bools: no offset above moves. */
    bool shuffle;
    /* Offloaded calls gathered this pass, for the pass end to queue
     * (pool.c, rf__pool_flush). With the three bytes after it (always 0),
     * the pass end reads it in the same word as the four above. */
    bool pool_pending;
    uint8_t pass_zero[3];
    bool draining;         /* rf_loop_free: cancel every task spawned */
    bool taskrun_flag;     /* ring has IORING_SETUP_TASKRUN_FLAG */
    bool ring_fd_registered; /* enter with IORING_ENTER_REGISTERED_RING */
    bool own_altstack;
    void *altstack;
    size_t altstack_size;
    uint64_t next_id;
    uint64_t inflight;
    /* Batched wake-ups (ring.c, rf__ring_sleep). */
    struct {
        unsigned us;        /* the first completion's longest wait; 0: off */
        unsigned batch;     /* next batch to ask for (see rf__ring_sleep) */
        int fd;             /* /proc/thread-self/schedstat, or -1 */
        bool contended;     /* the thread waited for its CPU lately */
        bool losing;        /* batched sleeps reaped less than plain ones */
        bool probing;       /* this window tries the other way */
        bool min_wait;      /* the kernel has IORING_FEAT_MIN_TIMEOUT */
        unsigned windows;   /* windows since the last probe */
        uint64_t sample_at; /* when the CPU wait was last read */
        uint64_t delay;     /* ... and what it read (ns waited, total) */
        uint64_t cqes;      /* cqes_reaped when the window began */
        uint64_t sum_cqes, sum_wall; /* the windows since the last probe */
    } wake;
    /* Completions an enter took out of the CQ when the kernel refused a
     * submission, in order, for the next rf__ring_reap to dispatch
     * (ring.c). While it holds any, it counts as one in inflight. */
    struct {
        struct io_uring_cqe *v;
        unsigned head, n, cap; /* v[head..n) are still to dispatch */
        bool counted;          /* its one in inflight is there */
        uint64_t taken;        /* completions ever moved in (tests) */
    } backlog;
    /* Test hook (tests/test_refuse.c): every refuse_every-th enter of
     * rf__ring_enter (submitting, waiting or both) is refused with -EBUSY
     * once the kernel has posted the completions it holds, as a kernel
     * that wants CQ room refuses one. 0: never. */
    unsigned refuse_every, refuse_count;
    uint64_t refused;
    /* rf_loop_free: operations were still in the kernel after the
     * cancel-all, so the memory they may write into is never unmapped. */
    bool unsettled;
    /* Work that another thread will hand back through rf__remote_post
     * (offloaded calls): the loop does not report a deadlock, and is not
     * freed, while it is non-zero. Loop thread only. */
    uint64_t remote_expected;
    /* Cross-thread mailbox (remote.c): a LIFO pushed by other threads;
     * the pusher that finds it empty writes remote_efd. */
    rf_remote_msg *remote_head; /* __atomic_* only */
    uint64_t mail_cap;          /* rf_loop_opts.mailbox_capacity */
    uint64_t mail_refused;      /* __atomic_*: posters count it */
    int remote_efd;
    /* __atomic_*, two counts in one word so that a post costs no more
     * atomic operations for the bound (remote.c):
     *  low 32 bits: posters still inside rf__remote_post (the loop is not
     *               freed before they are out);
     *  high 32 bits: counted messages pushed and not yet drained. */
    uint64_t remote_posting;
    uint32_t remote_wake;  /* the loop sleeps or is not running: the
                            * next poster writes remote_efd (and the
                            * host's rf_loop_fd), clearing it (__atomic_*,
                            * rf__remote_awake) */
    bool remote_armed;     /* a wait for remote_efd is in the ring */
    bool remote_poll;      /* .. a multishot poll, not a read (remote.c) */
    bool wake_ring;        /* RF_LOOP_WAKE_MSG_RING, and the kernel can:
                            * this loop sends and accepts wake-ups by
                            * IORING_OP_MSG_RING (remote.c) */
    uint64_t remote_buf;
    rf_handler remote_h;
    uint64_t probe[4];     /* opcodes the kernel supports (bitmap) */
    bool accept_stopped;   /* graceful shutdown began: accepts refuse */
    rf_list acceptors;     /* acceptor.c: rf_acceptor.node, open ones */
    rf_list free_acceptors; /* acceptor.c: closed ones, records kept for
                             * reuse */
    bool no_cancel_fd;     /* the kernel refused IORING_ASYNC_CANCEL_FD */
    uint64_t op_warned[4]; /* opcodes whose absence was reported (bitmap) */
    /* Embedding (embed.c). gate: the threadsafe calls in progress (count
     * in units of RF_GATE_ONE) and what they are refused (RF_GATE_* bits);
     * __atomic_* only. */
    uint64_t gate;
    rf_remote_msg stop_msg;     /* rf_loop_stop_threadsafe, one in flight */
    uint32_t stop_posted;       /* __atomic_*: stop_msg is in the mailbox */
    rf_remote_msg shutdown_msg; /* rf_loop_shutdown_threadsafe */
    uint64_t shutdown_grace;    /* written before shutdown_msg is posted */
    struct rf_loops *group;     /* its group (loops.c), NULL if none */
    unsigned group_index;       /* its index there */
    bool group_draining;        /* the group's end: its shutdown counts */
    rf_task *shutdown_task;     /* waits for the others to finish */
    rf_waiter shutdown_w;       /* ... here: done at each task's end */
    rf_event shutdown_ev;       /* set when a graceful shutdown begins */
    uint64_t shutdown_end;      /* the grace ends (rf_now_ns scale) */
    int poll_efd;          /* rf_loop_fd: eventfd registered with the ring */
    uint64_t timer_slack_ns; /* timers ending this close share a kernel
                              * timeout (time.c) */
    /* Timers' shared kernel timeouts, by deadline (time.c). */
    struct rf_timer_bucket *timer_cache[RF_TIMER_BUCKETS];
    rf_list idle_buckets;  /* armed timeouts no timer waits on (time.c) */
    unsigned nidle;
    unsigned flags;        /* RF_LOOP_* */
    rf_stacks stacks;
    /* The pool rf_to_thread uses (pool.c): created at the first call
     * (pool_owned) unless rf_loop_set_pool gave one. */
    struct rf_pool *pool;
    unsigned pool_threads; /* size of the pool to create; 0: default */
    bool pool_owned;
    /* Loop-stall detector (stall.c), NULL when off. The watchdog reads
     * stats.switches and stats.passes (written with relaxed atomic stores)
     * and `idle` (set while the loop sleeps in the ring or is not
     * running): __atomic_* only. */
    struct rf_stall *stall;
    uint64_t stall_count;  /* stalls of detectors since stopped */
    uint32_t idle;
    /* Cold (remote.c, RF_LOOP_WAKE_MSG_RING): kept out of the fields
     * above, whose offsets the hot paths are tuned for. */
    rf_handler ring_woken_h; /* another loop's MSG_RING wake-up */
    rf_handler wake_fail_h;  /* one this loop sent was refused */
    rf_stats stats;
    /* The loop's approximate clock, which stamps the start of each wait
     * (rf__wait_on) for the operator's view: rf_now_ns's scale, refreshed
     * after each entry into the kernel and every RF_APPROX_PASSES passes
     * with CLOCK_MONOTONIC_COARSE (time.c, rf__clock_refresh), and set
     * with the virtual clock when it moves. Loop thread only. */
    uint64_t now_approx;
    /* Cold, and after stats so that its offset stays where the hot paths
     * were measured with it. */
    uint64_t spin_ns;        /* rf_loop_opts.spin_ns (loop.c, loop_spin) */
    /* RF_LOOP_VIRTUAL_TIME (time.c): the clock (__atomic_*: other threads
     * read it), and the armed timer buckets in a heap by (deadline,
     * seq), none of them in the ring nor counted in inflight. */
    bool vtime;
    uint64_t autojump_ns;  /* rf_loop_opts.autojump_ns */
    uint64_t shuffle_seed; /* the seed in use, 0: none */
    uint64_t shuffle_rng;  /* its generator's state */
    uint64_t vnow;
    uint64_t vseq;
    struct rf_timer_bucket **vheap;
    size_t vheap_n, vheap_cap;
    /* The operator's view (inspect.c, context.c, metrics.c). */
    rf_list registry_node;  /* on rf__loops_registry */
    unsigned registry_id;   /* its place in the process's order of loops */
    uint64_t delay_now;     /* RF_LOOP_SCHED_DELAY: the last clock read */
    /* metrics.c: written with RF_STAT_* by the loop's thread. */
    struct {
        uint64_t tasks_ready, idle_ns, bytes_read, bytes_written;
        uint64_t ops[RF_METRICS_OPS];
        uint64_t offload_calls, offload_wait_ns, offload_in_flight;
        uint64_t delay_count, delay_sum, delay_max;
        uint64_t delay_buckets[RF_DELAY_BUCKETS];
    } m;
    void **peek_frames;     /* rf__peek_backtrace's request */
    int peek_max, peek_len;
    rf_task *peek_back;     /* the task the peek returns to, NULL: none */
    /* ring.c: operations on descriptors in flight (rf_op.node), so that
     * rf_close can wait for the ones on the fd it closes: in the list of
     * bucket fd % RF_FD_BUCKETS, so that a close looks at the few
     * operations of its bucket, not at every connection's. */
    rf_list fd_ops[RF_FD_BUCKETS];
    /* recvq.c: RF_LOOP_RECV_MULTISHOT's buffers and queues, made at the
     * first rf_recv (NULL before, and without the flag). Last: the fields
     * above keep the offsets the hot paths were measured with. */
    struct rf_recvq *rxq;
    bool recv_ms;          /* RF_LOOP_RECV_MULTISHOT */
    unsigned recv_bufs, recv_buf_size; /* rf_loop_opts' (defaults applied) */
    /* pool.c: the calls to pb_pool gathered this pass (a FIFO through
     * pool_call.next), and the slots reserved for more (credits). */
    struct rf_pool *pb_pool;
    struct pool_call *pb_head, *pb_tail;
    unsigned pb_n, pb_credit;
};
static inline rf_list *rf__fd_ops(rf_loop *l, int fd)
{
    return &l->fd_ops[(unsigned)fd & (RF_FD_BUCKETS - 1)];
}

/*
 * The counters of rf_stats (and the gauges it reports: inflight,
 * stacks.mapped) are written by the loop's thread only, and read by any
 * thread (rf_loop_stats_threadsafe, the stall detector's watchdog). Every
 * write is a relaxed atomic store: an ordinary store on every target, no
 * fence and no locked instruction, which lets another thread read each
 * counter whole and lets TSan see those reads as intended. The loop's own
 * reads are plain. Loop thread only.
 */
#define RF_STAT_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define RF_STAT_ADD(field, n) RF_STAT_SET(field, (field) + (n))
#define RF_STAT_SUB(field, n) RF_STAT_SET(field, (field) - (n))

/* Make t (NULL: none, the scheduler) the running task. The stall
 * detector's watchdog reads l->current from its thread to name the task
 * that holds the loop (stall.c): a relaxed store, as for the heartbeat, is
 * the ordinary store the switch makes anyway. Loop thread only. */
static inline void rf__set_current(rf_loop *l, rf_task *t)
{
    __atomic_store_n(&l->current, t, __ATOMIC_RELAXED);
}

/* ---- context.c, and the inline hot path of a switch ---- */
void rf__land_slow(rf_loop *l, rf_ctx *prev);
/* l->dead while a dump resumes a task only to walk its stack (context.c). */
#define RF_PEEK ((rf_task *)(uintptr_t)8)
/* The frames of suspended task t's stack, taken on that stack (up to max
 * into frames), or -1 if it has less than RF_PEEK_ROOM bytes left. */
int rf__peek_backtrace(rf_loop *l, rf_task *t, void **frames, int max);
#define RF_PEEK_ROOM (8u * 1024u)
#define RF_DUMP_FRAMES 64
void rf__switch_annotate(rf_ctx *from, rf_ctx *to, bool from_dies);
void rf__ctx_init_sched(rf_ctx *c);
void rf__ctx_init_task(rf_ctx *c);
void rf__ctx_fini_task(rf_ctx *c);

/* Called first thing wherever a context resumes: after the jump in
 * rf__switch and at a new task's entry. Records where the context that
 * jumped here stopped. */
static inline void rf__land(rf_loop *l, transfer_t tr)
{
    rf_ctx *prev = (rf_ctx *)tr.data;
    prev->fctx = tr.fctx;
#if defined(RF_ASAN)
    rf__land_slow(l, prev);
#else
    if (rf_unlikely(l->dead != NULL))
        rf__land_slow(l, prev);
#endif
}

static inline void rf__switch(rf_loop *l, rf_ctx *from, rf_ctx *to,
                              bool from_dies)
{
#if defined(RF_ASAN) || defined(RF_TSAN)
    rf__switch_annotate(from, to, from_dies);
#endif
#if defined(__x86_64__) && defined(__ELF__)
    if (from_dies) {
        /* A finished task's last switch is a jump, not a call: it pushes
         * nothing on the return stack buffer, so the task resumed (often
         * the one that started or joined this one) pops the entry its own
         * call pushed when it left (context.c, rf__jump_ret). */
        __asm__ volatile("jmp jump_fcontext"
                         :
                         : "D"(to->fctx), "S"(from)
                         : "memory");
        __builtin_unreachable();
    }
#else
    (void)from_dies;
#endif
    transfer_t tr = RF_JUMP(to->fctx, from);
    rf__land(l, tr);
}

/* ---- stack.c ---- */
int rf__stacks_init(rf_stacks *s, size_t default_size, unsigned flags);
/* keep_mapped: the slabs' memory stays mapped (the kernel may still
 * write into a stack: rf_loop_free after a failed run). */
void rf__stacks_fini(rf_stacks *s, bool keep_mapped);
void rf__task_bind(rf_loop *l, rf_task *t);
int rf__stack_map_slab(rf_stacks *s);
void rf__stack_bind(rf_stacks *s, rf_task *t);
int rf__stack_get(rf_stacks *s, rf_task *t, size_t size);

/* A default-size stack promised to t: taken when it first runs
 * (rf__stack_bind; stack.c says why). 0, or -ENOMEM when no slab could be
 * mapped. Inline, with the slab's mapping out of line: every spawn makes
 * one. */
static inline int rf__stack_reserve(rf_stacks *s, rf_task *t)
{
    if (rf_unlikely(s->spare == 0)) {
        int rc = rf__stack_map_slab(s);
        if (rc)
            return rc;
    }
    s->spare--;
    t->ctx.fctx = NULL; /* unbound: rf__stack_bind */
    t->ctx.stack_lo = NULL;
    t->ctx.stack_size = s->size;
    t->pooled_stack = true;
    t->canary = false;
    return 0;
}

/* Whether a stack of size bytes (0: the loop's default) is a pooled one:
 * rounded up to pages, it is the default size (a whole number of pages). */
static inline bool rf__stack_pooled(const rf_stacks *s, size_t size)
{
    return size == 0 || (size <= s->size && size > s->size - s->page);
}
void rf__stack_put(rf_stacks *s, rf_task *t);
void rf__stack_check(rf_stacks *s, rf_task *t);
int rf__overflow_handler_install(rf_loop *l);
void rf__overflow_handler_remove(rf_loop *l);

/* ---- loop.c ---- */
static inline uint32_t rf__nready(const rf_loop *l)
{
    return l->rq_tail - l->rq_head;
}

static inline void rf__rq_push(rf_loop *l, rf_task *t)
{
    l->rq[l->rq_tail++ & l->rq_mask] = t;
}

/* Make room in the run queue for `tasks` tasks: 0 or -ENOMEM. Called
 * before every spawn: the check is inline, the growth is not. */
int rf__rq_grow(rf_loop *l, uint64_t tasks);
static inline int rf__rq_reserve(rf_loop *l, uint64_t tasks)
{
    if (rf_likely(tasks <= (uint64_t)l->rq_mask + 1 && l->rq))
        return 0;
    return rf__rq_grow(l, tasks);
}
extern __thread rf_loop *rf__tls_loop __attribute__((tls_model("initial-exec")));
void rf__wake(rf_loop *l, rf_task *t);
int rf__wait(rf_loop *l, rf_task *self, unsigned how);

/*
 * What a wait is on, for the operator's view (inspect.c): on is an
 * RF_WAIT_ON_* (ringfiber.h), with the IORING_OP_* of an operation in the
 * ring in bits 8..15 (RF_ON_IO); obj is the object waited on (a queue, a
 * mutex, a task record...) or, for a descriptor, the fd cast to a
 * pointer; for a sleep, its end. Three stores, no clock read: the time is
 * the loop's approximate clock.
 */
#define RF_ON_IO(opcode) (RF_WAIT_ON_IO | (unsigned)(opcode) << 8)
#define RF_ON_FD(fd) ((const void *)(intptr_t)(fd))
static inline void rf__wait_on(rf_loop *l, rf_task *self, unsigned on,
                               const void *obj)
{
    self->wait_on = (uint16_t)on;
    self->wait_obj = obj;
    self->wait_since = l->now_approx;
}

/*
 * Wait until w is done: 0, and w->res holds the result. A wait that may
 * end on cancellation or the deadline (how: RF_WAIT_*) returns -ECANCELED
 * or -ETIMEDOUT if one came first, with w not done: the caller takes w
 * out of what it waits on (or, for an operation in the ring, has the
 * kernel end it and waits again without how). Inline: it is on the path
 * of every wait, and a call more costs a tenth of an operation.
 */
static inline int rf__waiter_wait(rf_loop *l, rf_task *self, rf_waiter *w,
                                  unsigned how, unsigned on, const void *obj)
{
    rf__wait_on(l, self, on, obj);
    w->task = self;
    while (!w->done) {
        int rc = rf__wait(l, self, how);
        if (rc < 0 && !w->done)
            return rc;
    }
    return 0;
}

/* w's event has happened: record res and wake its task (if one waits). */
static inline void rf__waiter_done(rf_loop *l, rf_waiter *w, int32_t res)
{
    w->res = res;
    w->done = true;
    if (w->task)
        rf__wake(l, w->task);
}

/*
 * A source that may fire many times and has one waiting task at a time (an
 * acceptor's queue, a group's last member, the next of a set of tasks, a
 * graceful shutdown's count): its rf_waiter is reset at each wait and
 * named nobody after it, and the source calls rf__waiter_done at each
 * event (a done waiter without a task is only reset by the next wait).
 * The caller tests its condition before, and again after, each wait.
 */
static inline int rf__waiter_next(rf_loop *l, rf_task *self, rf_waiter *w,
                                  unsigned how, unsigned on, const void *obj)
{
    w->done = false;
    int rc = rf__waiter_wait(l, self, w, how, on, obj);
    w->task = NULL;
    return rc;
}

/* The pre-check of a call that is about to wait or submit: -ECANCELED
 * once the task is cancelled, -ETIMEDOUT once its deadline has passed
 * (both sticky, conventions in ringfiber.h), else 0. */
static inline int rf__wait_precheck(const rf_task *self)
{
    if (rf_unlikely(self->cancelled))
        return -ECANCELED;
    if (rf_unlikely(self->deadline != 0) && rf_now_ns() >= self->deadline)
        return -ETIMEDOUT;
    return 0;
}
rf_ctx *rf__next_after_end(rf_loop *l);
int rf__loop_check(const rf_loop *l);
bool rf__loop_work_ready(rf_loop *l);
bool rf__on_owner_thread(const rf_loop *l);
int rf__owner_errno(const rf_loop *l);

static inline rf_task *rf__self(void)
{
    rf_loop *l = rf__tls_loop;
    return l ? l->current : NULL;
}

/* ---- ring.c ---- */
int rf__ring_setup(rf_loop *l, const rf_loop_opts *o);
void rf__ring_pass_end(rf_loop *l);
bool rf__ring_has_work(const rf_loop *l);
struct io_uring_sqe *rf__sqe_get(rf_loop *l);
int rf__ring_enter(rf_loop *l, unsigned wait_nr);
unsigned rf__ring_reap(rf_loop *l);
bool rf__ring_settle(rf_loop *l);

/* ---- ring.c: the I/O path (see the top of ring.c) ---- */
struct io_uring_sqe *rf__op_begin(rf_op *op, int fd, unsigned opcode,
                                  const char *what, int *err);
int rf__op_run(rf_op *op, struct io_uring_sqe *sqe);
bool rf__op_supported(const rf_loop *l, unsigned opcode);
void rf__op_report_missing(rf_loop *l, unsigned opcode, const char *what,
                           const char *instead);
void rf__op_cancel(rf_loop *l, rf_op *op);
void rf__op_track(rf_op *op);
void rf__op_untrack(rf_op *op);

/* ---- handles (task.c) ---- */

/*
 * Handles. What a user holds for a task (rf_task *), an acceptor
 * (rf_acceptor *) or a pool (rf_pool *) is not its record's address
 * alone: it carries the record's generation in the 16 bits above the 48
 * of a user-space address (x86-64 and arm64 map nothing there unless a
 * program asks for it). Records are recycled, never returned to malloc
 * while their owner lives (a task's or an acceptor's loop, the process
 * for a pool), and a record's generation changes each time it is: a
 * handle kept after its object was released, and its record reused for
 * another, no longer matches, and the call made with it fails with
 * -ESRCH instead of acting on the other object. 16 bits: a stale handle
 * goes unnoticed only if its record was recycled a multiple of 65,536
 * times since. Inside the runtime, rf_task * is always a record.
 */
#define RF_HANDLE_SHIFT 48
#define RF_HANDLE_ADDR ((1ULL << RF_HANDLE_SHIFT) - 1)
/* The lowest bit (records are 8-byte aligned): a task handle held on
 * another loop than the task's (cross.c). */
#define RF_HANDLE_CROSS 1ULL

static inline void *rf__tag(const void *rec, uint16_t gen)
{
    return (void *)((uintptr_t)rec | (uintptr_t)gen << RF_HANDLE_SHIFT);
}

/* The record a handle points to, whether or not it is stale. */
static inline void *rf__untag(const void *h)
{
    return (void *)((uintptr_t)h & RF_HANDLE_ADDR & ~(uintptr_t)RF_HANDLE_CROSS);
}

/* Whether a task handle was made for another loop than the task's
 * (rf_spawn_on, cross.c): its reference is counted apart. */
static inline bool rf__cross(const void *h)
{
    return (uintptr_t)h & RF_HANDLE_CROSS;
}

static inline uint16_t rf__tag_gen(const void *h)
{
    return (uint16_t)((uintptr_t)h >> RF_HANDLE_SHIFT);
}

/* Whether a record's address leaves the generation's bits free. */
static inline bool rf__taggable(const void *rec)
{
    return (uintptr_t)rec <= RF_HANDLE_ADDR;
}

static inline rf_task *rf__handle(const rf_task *t)
{
    return (rf_task *)rf__tag(t, t->gen);
}

/* The record of a non-NULL task handle, or NULL if the handle is stale. */
static inline rf_task *rf__record(const rf_task *h)
{
    rf_task *t = (rf_task *)rf__untag(h);
    return rf_likely(t->gen == rf__tag_gen(h)) ? t : NULL;
}

/* A stale handle passed to `call`: -ESRCH (errno ESRCH for the calls
 * that return no code). With RINGFIBER_ABORT_ON_STALE=1 in the
 * environment, a line on stderr naming the call, then abort(): the place
 * of the misuse, in a debugger or a core file. */
int rf__stale(const char *call);

/* ---- task.c ---- */
void rf__task_name_set(rf_task *t, const char *name, size_t n);
/* from: an address in the spawning function (rf_task_info.spawned_from),
 * the public spawn's __builtin_return_address(0); NULL for the runtime's
 * own tasks. */
rf_task *rf__spawn(rf_loop *l, rf_fn fn, void *arg, const rf_spawn_options *o,
                   void *from);
void rf__task_entry(transfer_t tr);
void rf__task_unref(rf_loop *l, rf_task *t);
void rf__cancel(rf_task *t);
void rf__interrupt(rf_task *t);
void rf__tasks_free_all(rf_loop *l);
void rf__watch_wake(rf_watch *w, rf_task *done);

/* Returns 0 once t is done; -ECANCELED or -ETIMEDOUT if the wait (how:
 * RF_WAIT_*) ended first on the caller's cancellation or deadline.
 * Inline: rf_join and rf_wait_for are this and a few checks. */
static inline int rf__join_wait(rf_loop *l, rf_task *self, rf_task *t,
                                unsigned how)
{
    if (t->state == RF_DONE)
        return 0;
    rf_watch w = {.fire = rf__watch_wake};
    rf_list_push_back(&t->joiners, &w.node);
    int rc = rf__waiter_wait(l, self, &w.w, how, RF_WAIT_ON_TASK, t);
    rf_list_remove(&w.node);
    return rc;
}
int rf__wait_check(const char *call, rf_task *h, rf_task **tp, rf_loop **lp,
                   rf_task **selfp);

/* ---- time.c ---- */
void rf__abs_timespec(struct __kernel_timespec *ts, uint64_t deadline_ns);
uint64_t rf__time_after(uint64_t ns);
/* CLOCK_MONOTONIC, whatever clock the loop runs on: for what must keep
 * real time (spinning, the stall detector, the pool). */
uint64_t rf__real_now_ns(void);
/* RF_LOOP_VIRTUAL_TIME: with nothing real in flight, move the clock to
 * the earliest timer and fire what is due; false if it cannot move. */
bool rf__vclock_auto_advance(rf_loop *l);
/* autojump_ns of real time passed with nothing done: to the next timer. */
void rf__vclock_autojump(rf_loop *l);
/* ring.c: as rf__ring_enter(l, 1), for at most ns of real time (-ETIME
 * then). */
int rf__ring_enter_timeout(rf_loop *l, uint64_t ns);
int rf__ring_sleep(rf_loop *l, uint64_t now, bool may_batch);
void rf__ring_wake_init(rf_loop *l, unsigned us);
void rf__ring_wake_fini(rf_loop *l);
unsigned rf__wake_batch_env(bool quiet);
void rf__vclock_fini(rf_loop *l);
/* l->now_approx = the loop's clock, coarse (see rf_loop.now_approx). */
void rf__clock_refresh(rf_loop *l);
#define RF_APPROX_PASSES 256u

/* A busy-wait's pause: lets the sibling hyperthread run and saves power. */
static inline void rf__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
int rf__timer_start(rf_loop *l, rf_timer *t, rf_task *task, uint64_t end);
void rf__timer_stop(rf_loop *l, rf_timer *t);
/* Remove the idle timeouts (time.c); the loop calls it before it sleeps
 * or decides that nothing is left. */
void rf__timers_flush_idle(rf_loop *l);

int rf__deadline_arm(rf_loop *l, rf_task *self);
void rf__deadline_move(rf_loop *l, rf_task *self, uint64_t deadline_ns,
                       bool arm);

/* Bound self's waits by end too (rf_wait_for, rf_wait's timeout, a
 * shutdown's grace), until rf__deadline_restore(l, self, returned value).
 * Inline, as the join it bounds. */
static inline uint64_t rf__deadline_narrow(rf_loop *l, rf_task *self,
                                           uint64_t end)
{
    uint64_t saved = self->deadline;
    /* A deadline of 0 is "none": a timeout of 0 at the virtual clock's
     * first instant ends at its next nanosecond instead. */
    end += end == 0;
    if (saved == 0 || end < saved)
        rf__deadline_move(l, self, end, true);
    return saved;
}

static inline void rf__deadline_restore(rf_loop *l, rf_task *self,
                                        uint64_t saved)
{
    if (self->deadline != saved)
        rf__deadline_move(l, self, saved, false);
}

/*
 * A task's request to another loop (remote.c; used by cross.c and chan.c):
 * the requester waits on w until every message addressed to it has come,
 * the one reply and an ack for each "give up" it sent (which may still be
 * in the other loop's mailbox when the reply comes: the record, on the
 * requester's stack, must outlive it). The origin loop counts each in
 * remote_expected meanwhile.
 */
typedef struct rf_xwait {
    rf_waiter w;
    rf_loop *origin;
    unsigned expect;     /* origin's thread only: messages still to come */
    rf_remote_msg reply; /* posted by the other loop, once */
    rf_remote_msg ack;   /* posted by the other loop, per give-up */
} rf_xwait;
void rf__xwait_begin(rf_loop *l, rf_xwait *x);
void rf__xwait_expect(rf_loop *l, rf_xwait *x);
void rf__xwait_cancel(rf_loop *l, rf_xwait *x);
void rf__xwait_reply(rf_xwait *x);
void rf__xwait_ack(rf_xwait *x);

/* ---- cross.c, loops.c ---- */
void rf__xtask_finish(rf_task *t);
int rf__xjoin(rf_task *h, void **result, unsigned how, uint64_t timeout_ns);
int rf__xcancel(rf_task *t);
bool rf__xdone(const rf_task *t);
void rf__xretain(rf_task *t);
void rf__xrelease(rf_task *t);
void rf__xtask_free(rf_task *t);
void rf__loops_drained(rf_loop *l);
int rf__loops_pool(struct rf_loops *ls, rf_pool **out);

/* ---- embed.c ---- */
int rf__post_gated(rf_loop *l, rf_remote_msg *m, bool spawn);
void rf__shutdown_begin(rf_loop *l, uint64_t grace_ns);
void rf__embed_close(rf_loop *l);
void rf__embed_fini(rf_loop *l);

/* ---- remote.c ---- */
int rf__remote_init(rf_loop *l);
void rf__remote_fini(rf_loop *l);
void rf__remote_post(rf_loop *l, rf_remote_msg *m);
int rf__remote_post_counted(rf_loop *l, rf_remote_msg *m);
void rf__remote_arm(rf_loop *l);
void rf__remote_awake(rf_loop *l, bool awake);
bool rf__remote_sleep_begin(rf_loop *l);
bool rf__remote_drain(rf_loop *l);

static inline bool rf__remote_pending(rf_loop *l)
{
    /* seq_cst: pairs with remote_wake (remote.c); a plain load on x86. */
    return __atomic_load_n(&l->remote_head, __ATOMIC_SEQ_CST) != NULL;
}

/* ---- fs.c ---- */

/* The most one read, write, send or receive transfers, as Linux's
 * MAX_RW_COUNT: a larger request is a short transfer, which callers
 * already handle. */
#define RF_IO_MAX 0x7ffff000u


/* One transfer of rf__xfer_all: at most len bytes at p, at off (files;
 * -1: the file position), with flags (sockets). Bytes moved or -errno. */
typedef ssize_t (*rf__xfer_step)(int fd, void *p, size_t len, int64_t off,
                                 int flags);
/* The loop over short transfers (fs.c), shared by rf_read_full,
 * rf_write_all and rf_send_all. */
ssize_t rf__xfer_all(rf__xfer_step step, int fd, void *buf, size_t len,
                     int64_t off, int flags, ssize_t on_zero, size_t *done);

/* ---- net.c ---- */
/* The one backoff of an accept out of descriptors (EMFILE, ENFILE), for
 * rf_accept and rf_acceptor_next (acceptor.c): *backoff starts at
 * RF_ACCEPT_BACKOFF_MIN; each call sleeps that long and doubles it, up to
 * RF_ACCEPT_BACKOFF_MAX. */
#define RF_ACCEPT_BACKOFF_MIN (1 * RF_NSEC_PER_MSEC)
#define RF_ACCEPT_BACKOFF_MAX (256 * RF_NSEC_PER_MSEC)
int rf__accept_backoff(rf_loop *l, uint64_t *backoff);

/* ---- acceptor.c ---- */
void rf__acceptors_release(rf_loop *l, bool final);
bool rf__acceptors_fd_closed(rf_loop *l, int fd);

/* ---- recvq.c (RF_LOOP_RECV_MULTISHOT) ---- */
/* rf__recvq_recv's answer for "not here: take the plain recv". */
#define RF_RECVQ_PLAIN ((ssize_t)INT64_MIN)
/* A socket's queue pauses its multishot at this many buffers (or an
 * eighth of the ring, if less). */
#define RF_RECV_PAUSE 16u
ssize_t rf__recvq_recv(rf_loop *l, int fd, void *buf, size_t len, int flags);
/* net.c: rf_recv's own IORING_OP_RECV (recvq.c falls back to it). */
ssize_t rf__recv_plain(rf_loop *l, int fd, void *buf, size_t len, int flags);
/* Stop fd's multishot (waiting for its end): 1 if bytes wait in its
 * queue, 0 if none (or fd has no record), or the wait's negative errno. */
int rf__recvq_quiesce(rf_loop *l, int fd);
/* Take up to len of fd's queued bytes (after rf__recvq_quiesce said 1). */
ssize_t rf__recvq_take(rf_loop *l, int fd, void *buf, size_t len);
/* rf_close(fd): true if fd's multishot is still armed uncancelled (no
 * SQE): the close must cancel what is in flight on fd. */
bool rf__recvq_fd_closed(rf_loop *l, int fd);
void rf__recvq_fd_new(rf_loop *l, int fd);
void rf__recvq_release(rf_loop *l, bool final);
/* A descriptor the runtime just made: a record for its number is stale. */
static inline void rf__recvq_fd_made(rf_loop *l, int fd)
{
    if (rf_unlikely(l->rxq != NULL) && fd >= 0)
        rf__recvq_fd_new(l, fd);
}

/* ---- pool.c ---- */
void rf__pool_loop_fini(rf_loop *l);
/* The pass end: queue the offloaded calls this pass gathered. */
void rf__pool_flush(rf_loop *l);

/* ---- stall.c ---- */
int rf__stall_env(rf_loop *l);
void rf__stall_fini(rf_loop *l);
uint64_t rf__stall_count(const rf_loop *l);

/* ---- inspect.c ---- */
extern rf_list rf__loops_registry;
void rf__registry_add(rf_loop *l);
void rf__registry_remove(rf_loop *l);
void rf__registry_each(void (*fn)(rf_loop *l, void *arg), void *arg);
/* An IORING_OP_*'s name as the dump and the metrics say it: "recv";
 * NULL for one the runtime does not use. */
const char *rf__op_name(unsigned opcode);

/* ---- symbolize.c ---- */
/* Keep the symbol tables between lookups (many lookups in a row). */
void rf__symbolize_hold(void);
void rf__symbolize_release(void);

/* ---- metrics.c ---- */
/* RF_LOOP_SCHED_DELAY: t runs now (run_next). */
void rf__delay_note(rf_loop *l, rf_task *t);
/* An operation with opcode ended with res (ring.c, rf__op_run). */
static inline void rf__op_count(rf_loop *l, unsigned opcode, int res)
{
    unsigned i = opcode < RF_METRICS_OPS ? opcode : RF_METRICS_OPS - 1;
    RF_STAT_ADD(l->m.ops[i], 1);
    if (res <= 0)
        return;
    switch (opcode) {
    case IORING_OP_READ: case IORING_OP_READV: case IORING_OP_RECV:
    case IORING_OP_RECVMSG: case IORING_OP_READ_FIXED:
        RF_STAT_ADD(l->m.bytes_read, (uint64_t)res);
        break;
    case IORING_OP_WRITE: case IORING_OP_WRITEV: case IORING_OP_SEND:
    case IORING_OP_SENDMSG: case IORING_OP_WRITE_FIXED:
        RF_STAT_ADD(l->m.bytes_written, (uint64_t)res);
        break;
    default:
        break;
    }
}

/* ---- sync.c ---- */
rf_task *rf__mutex_owner(const void *m);

/* ---- signal.c ---- */
/* pthread_create for the runtime's own threads: they start with every
 * asynchronous signal blocked. Returns pthread_create's result. */
int rf__thread_create(pthread_t *th, void *(*fn)(void *), void *arg);

/* ---- error.c ---- */
void rf__setup_error_report(int err, unsigned flags);

#endif
