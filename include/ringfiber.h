/*
 * ringfiber: stackful tasks on an io_uring event loop, with asyncio's model.
 *
 * Conventions that hold for every function below:
 *
 *  - Errors are negative errno values, as the kernel and liburing return
 *    them. Functions returning a pointer return NULL and set errno instead.
 *    rf_strerror() turns a code into text.
 *  - "Suspends" means the function may switch away from the calling task
 *    and let the loop run others. Suspending functions may only be called
 *    from a task; called anywhere else they return -EPERM at once.
 *    Functions documented as "does not suspend" never switch tasks and
 *    never block the thread.
 *  - A loop belongs to the thread that created it (its ring is set up with
 *    IORING_SETUP_SINGLE_ISSUER where the kernel has it). Calling a loop
 *    function from another thread returns -EXDEV. Functions that may be
 *    called from any thread say so with a _threadsafe suffix.
 *  - Cancellation is sticky: once rf_cancel(t) has been called, the wait t
 *    is in (if any) ends with -ECANCELED, and every later suspending call
 *    made by t returns -ECANCELED without waiting (rf_yield still yields).
 *    I/O that was in flight is cancelled in the kernel and the task resumes
 *    only after the operation's final completion, so buffers on its stack
 *    are never written after the call returned. A wait that had already
 *    completed when rf_cancel() came (the task was woken but had not run
 *    yet) returns its real result, not -ECANCELED: nothing that happened
 *    is hidden; the cancellation shows at the next suspending call.
 */
#ifndef RINGFIBER_H
#define RINGFIBER_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RINGFIBER_VERSION_MAJOR 0
#define RINGFIBER_VERSION_MINOR 1
#define RINGFIBER_VERSION_PATCH 0
#define RINGFIBER_VERSION_HEX                                                  \
    ((RINGFIBER_VERSION_MAJOR << 16) | (RINGFIBER_VERSION_MINOR << 8) |        \
     RINGFIBER_VERSION_PATCH)

#if defined(RINGFIBER_BUILDING) && defined(__GNUC__)
#define RF_API __attribute__((visibility("default")))
#else
#define RF_API
#endif

typedef struct rf_loop rf_loop;
typedef struct rf_task rf_task;

/* A task's body. The returned pointer is the task's result. */
typedef void *(*rf_fn)(void *arg);

/* Nanoseconds, for rf_sleep and timeouts. */
#define RF_NSEC_PER_USEC 1000ULL
#define RF_NSEC_PER_MSEC 1000000ULL
#define RF_NSEC_PER_SEC 1000000000ULL

/* Version of the library actually linked (RINGFIBER_VERSION_HEX layout). */
RF_API unsigned rf_version(void);

/* Text for a ringfiber error code (a negative errno). Never NULL. */
RF_API const char *rf_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Running a program                                                        */
/* ------------------------------------------------------------------------ */

/*
 * asyncio.run(): create a loop on this thread, run main(arg) as its first
 * task until it returns, cancel and await every task still alive, drain
 * every operation still in flight, free the loop.
 *
 * result: receives main's return value (may be NULL).
 * Returns 0, or:
 *   -EPERM / -ENOSYS / -ENOMEM / -EINVAL  the ring could not be set up
 *          (a line naming the cause and the remedy is written to stderr);
 *   -EBUSY   called from inside a task (nested loops on one thread);
 *   -EINVAL  main is NULL;
 *   -EDEADLK main waits for something that can never happen (every task
 *            is waiting and nothing is in flight).
 * Blocks the calling thread until main and the cleanup are done.
 */
RF_API int rf_run(rf_fn main, void *arg, void **result);

/* ------------------------------------------------------------------------ */
/* Loops                                                                    */
/* ------------------------------------------------------------------------ */

/* Options for rf_loop_new(); zero-initialise and set what you need. */
typedef struct rf_loop_opts {
    unsigned sq_entries;       /* SQ ring size; 0 = 256 */
    unsigned cq_entries;       /* CQ ring size; 0 = 4 x sq_entries */
    size_t default_stack_size; /* 0 = RF_DEFAULT_STACK_SIZE */
    unsigned flags;            /* RF_LOOP_* below */
} rf_loop_opts;

/* Default usable stack per task (guard page not included). */
#define RF_DEFAULT_STACK_SIZE (128u * 1024u)
/* Smallest stack accepted by spawn. */
#define RF_MIN_STACK_SIZE (16u * 1024u)

/* Do not print the setup failure message to stderr. */
#define RF_LOOP_QUIET 0x1u
/* Do not install the SIGSEGV handler that reports stack overflows. */
#define RF_LOOP_NO_OVERFLOW_HANDLER 0x2u
/* Guard task stacks with mprotect() even where MADV_GUARD_INSTALL exists:
 * the fallback used on kernels before 6.13 (each guard then costs a
 * mapping, and slots beyond vm.max_map_count rely on a canary). */
#define RF_LOOP_GUARD_MPROTECT 0x4u

/*
 * Create a loop owned by the calling thread. opts may be NULL.
 * On success *loopp owns the loop; free it with rf_loop_free().
 * Returns 0, -EINVAL (NULL loopp, bad sizes), -ENOMEM, or the error the
 * kernel gave io_uring_setup (-EPERM: seccomp or
 * kernel.io_uring_disabled; -ENOSYS: kernel without io_uring; -ENOMEM:
 * RLIMIT_MEMLOCK too low on kernels before 5.12), with a message on stderr
 * that names the cause and the remedy unless RF_LOOP_QUIET is set.
 * Does not suspend.
 */
RF_API int rf_loop_new(rf_loop **loopp, const rf_loop_opts *opts);

/*
 * loop.run_until_complete(): spawn fn(arg) on loop and run the loop until
 * that task returns. Other tasks run too; the ones still alive afterwards
 * stay where they are and continue at the next run of the loop.
 * result: receives fn's return value (may be NULL).
 * Returns 0, -ECANCELED (the task was cancelled), -EINVAL, -ENOMEM,
 * -EBUSY (the loop is already running), -EXDEV (wrong thread), -EDEADLK
 * (nothing can run and nothing is in flight).
 * Blocks the calling thread; call it from outside any task.
 */
RF_API int rf_loop_run_until_complete(rf_loop *loop, rf_fn fn, void *arg,
                                      void **result);

/*
 * loop.run_forever(): run the loop until a task calls rf_loop_stop().
 * Returns 0 when stopped, -EBUSY, -EXDEV, or -EDEADLK if every task is
 * waiting, nothing is in flight and nothing can stop the loop.
 */
RF_API int rf_loop_run_forever(rf_loop *loop);

/*
 * loop.stop(): make the running rf_loop_run_forever() or
 * rf_loop_run_until_complete() return after the current scheduler pass.
 * Tasks that are alive stay alive. Returns 0, -EINVAL or -EXDEV.
 * Does not suspend.
 */
RF_API int rf_loop_stop(rf_loop *loop);

/*
 * loop.close(): cancel every task still alive, run the loop until they
 * have all returned and every operation in flight has completed, then
 * release the ring, the stacks and every task record. Task handles are
 * invalid afterwards, whether or not they were released.
 * Returns 0, -EBUSY (called from a task or while the loop runs; nothing is
 * freed) or -EXDEV (wrong thread). NULL is accepted and ignored.
 */
RF_API int rf_loop_free(rf_loop *loop);

/* The loop running on this thread, or NULL outside any task. */
RF_API rf_loop *rf_loop_current(void);

/* Counters; all monotonic except tasks_alive and ops_in_flight. */
typedef struct rf_stats {
    uint64_t switches;        /* context switches into tasks */
    uint64_t tasks_spawned;
    uint64_t tasks_alive;     /* spawned and not yet returned */
    uint64_t sqes_submitted;  /* SQEs handed to the kernel */
    uint64_t enters;          /* io_uring_enter system calls */
    uint64_t cqes_reaped;
    uint64_t ops_in_flight;   /* submitted or queued, CQE not yet seen */
    uint64_t passes;          /* scheduler passes */
    uint64_t stacks_mapped;   /* task stacks currently mapped */
    uint32_t ring_flags;      /* IORING_SETUP_* flags the ring runs with */
    uint32_t guard_mode;      /* RF_GUARD_* below */
    uint64_t stalls;          /* loop stalls reported by the stall
                               * detector (rf_loop_stall_detector) */
} rf_stats;

/* How task stacks are protected against overflow. */
#define RF_GUARD_MADVISE 1  /* guard pages via MADV_GUARD_INSTALL */
#define RF_GUARD_MPROTECT 2 /* guard pages via mprotect (2 mappings each) */
/* Every stack also carries a canary checked at each switch. */

/* Copy loop's counters into *out. Returns 0 or -EINVAL. Does not suspend. */
RF_API int rf_loop_stats(const rf_loop *loop, rf_stats *out);

/* ------------------------------------------------------------------------ */
/* Tasks                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Task handles are reference counted. rf_spawn() returns a handle that
 * holds one reference, owned by the caller; the running task holds
 * another until it returns. rf_join() and the other waits never consume a
 * reference, so any number of tasks may wait on one handle, any number of
 * times. Drop yours with rf_task_release() when you no longer need the
 * task's result; a task released while it runs is detached (it runs to
 * the end and its record is recycled then). Records never released are
 * reclaimed by rf_loop_free(). rf_task_retain() adds a reference for
 * another owner.
 */

/* Options for rf_spawn_opts(); zero-initialise and set what you need. */
typedef struct rf_spawn_options {
    const char *name;  /* copied (first RF_TASK_NAME_MAX-1 bytes); NULL = "task-<id>" */
    size_t stack_size; /* 0 = the loop's default; rounded up to pages */
} rf_spawn_options;

#define RF_TASK_NAME_MAX 32

/*
 * asyncio.create_task(): create a task running fn(arg) on the current
 * loop. It starts at the scheduler's next turn, after the caller suspends
 * or yields; fn always runs, even if the task is cancelled first (its
 * waits then fail with -ECANCELED), so ownership of arg always passes to
 * fn. Returns the handle, or NULL with errno set to EINVAL (NULL fn, stack
 * size too small or too large), EPERM (no loop on this thread), ENOMEM
 * (out of memory or out of memory mappings for stacks). Does not suspend.
 */
RF_API rf_task *rf_spawn(rf_fn fn, void *arg);
RF_API rf_task *rf_spawn_opts(rf_fn fn, void *arg, const rf_spawn_options *opts);

/*
 * loop.create_task(): like rf_spawn, onto a given loop, from outside any
 * task (before rf_loop_run_forever, say) or from a task of that loop.
 * errno EXDEV if loop belongs to another thread.
 */
RF_API rf_task *rf_loop_spawn(rf_loop *loop, rf_fn fn, void *arg,
                              const rf_spawn_options *opts);

/*
 * await task: wait until t has returned. result (may be NULL) receives
 * fn's return value, even when t was cancelled, so nothing it returned is
 * lost. Returns 0 if t returned without being cancelled, -ECANCELED if t
 * was cancelled before it returned, or, without waiting:
 *   -EINVAL  t is NULL;
 *   -EPERM   not called from a task;
 *   -EDEADLK t is the calling task;
 *   -EXDEV   t belongs to another loop;
 *   -ECANCELED the caller itself is cancelled (result untouched; t is not
 *            cancelled: a handle may have many waiters, so cancelling one
 *            waiter leaves the task alone; rf_gather and rf_wait_for, which
 *            own their tasks, do cancel them).
 * Suspends unless t has already returned.
 */
RF_API int rf_join(rf_task *t, void **result);

/*
 * asyncio.gather(): wait for every task in tasks[0..n). results (may be
 * NULL) receives each return value at the same index. Returns 0 if none
 * was cancelled, else -ECANCELED (look at each with rf_join, which returns
 * at once for a finished task). If the caller is cancelled while waiting,
 * the tasks not yet finished are cancelled, rf_gather waits until all of
 * them have returned and then returns -ECANCELED. -EINVAL for a NULL
 * array with n > 0 or a NULL element; the errors of rf_join otherwise.
 * Suspends.
 */
RF_API int rf_gather(rf_task *const *tasks, size_t n, void **results);

/*
 * asyncio.wait_for(): wait at most timeout_ns for t. When time runs out, t
 * is cancelled and awaited (it has fully returned when this returns) and
 * the result is -ETIMEDOUT. result receives t's return value in every case
 * where t has returned, so nothing is lost; if t finished in the same
 * instant as the timeout, its result is delivered with 0. If the caller is
 * cancelled, t is cancelled and awaited and -ECANCELED is returned. Other
 * errors as rf_join. Suspends.
 */
RF_API int rf_wait_for(rf_task *t, uint64_t timeout_ns, void **result);

/*
 * asyncio.as_completed(): iterate over a set of tasks in the order they
 * finish. The storage is the caller's (on the stack is fine);
 * rf_as_completed_init() takes no references, so the handles must stay
 * valid until rf_as_completed_fini().
 *
 *   rf_as_completed ac;
 *   rf_as_completed_init(&ac, tasks, n);
 *   rf_task *t; void *res; int status;
 *   while ((t = rf_as_completed_next(&ac, &res, &status)) != NULL) ...
 *   if (errno == ECANCELED) ...   (the caller was cancelled)
 *   rf_as_completed_fini(&ac);
 *
 * The iterator must not be copied or moved between init and fini.
 */
typedef struct rf_as_completed {
    /* private */
    void *impl_[6];
} rf_as_completed;

/* Returns 0, -EINVAL, -ENOMEM, -EPERM (outside a task), -EXDEV. Does not
 * suspend. */
RF_API int rf_as_completed_init(rf_as_completed *ac, rf_task *const *tasks,
                                size_t n);
/*
 * Next task to finish, with its result and status (0 or -ECANCELED, as
 * rf_join would return); result and status may be NULL. NULL when every task has been returned (errno 0),
 * or with errno ECANCELED if the caller was cancelled (the set is left as
 * it was; call rf_as_completed_fini). Suspends until a task finishes.
 */
RF_API rf_task *rf_as_completed_next(rf_as_completed *ac, void **result,
                                     int *status);
/* Releases the iterator's memory. Does not suspend. */
RF_API void rf_as_completed_fini(rf_as_completed *ac);

/*
 * task.cancel(): request cancellation of t (see the conventions at the top).
 * Returns 0 when the request is made (again 0 if it was already pending),
 * -ESRCH if t has already returned, -EINVAL for NULL, -EXDEV if t belongs
 * to another loop. A task may cancel itself. Does not suspend.
 */
RF_API int rf_cancel(rf_task *t);

/* task.done(): true once t has returned. Does not suspend. */
RF_API bool rf_done(const rf_task *t);

/* True if cancellation of t was requested. Does not suspend. */
RF_API bool rf_cancelled(const rf_task *t);

/* The calling task, or NULL outside a task. */
RF_API rf_task *rf_self(void);

/* t's name (never NULL for a valid t). */
RF_API const char *rf_task_name(const rf_task *t);

/* Add / drop a reference (see above). NULL is ignored. Do not suspend. */
RF_API void rf_task_retain(rf_task *t);
RF_API void rf_task_release(rf_task *t);

/*
 * asyncio.sleep(0): go to the back of the run queue; the other ready tasks
 * run first. Costs no system call. Returns 0, -ECANCELED (the caller is
 * cancelled; it has still yielded), -EPERM outside a task. Suspends.
 */
RF_API int rf_yield(void);

/*
 * asyncio.sleep(): suspend the calling task for ns nanoseconds, measured on
 * CLOCK_MONOTONIC to an absolute deadline (an IORING_OP_TIMEOUT), so a
 * series of sleeps does not drift by the scheduling delay of each.
 * rf_sleep(0) is rf_yield(). Returns 0, -ECANCELED, -ETIMEDOUT (the task's
 * deadline, rf_deadline_set, came first: the sleep ends at it), -EPERM, or
 * an error from the ring (-ENOMEM, -EBUSY). Suspends.
 */
RF_API int rf_sleep(uint64_t ns);

/* CLOCK_MONOTONIC in nanoseconds. Does not suspend. */
RF_API uint64_t rf_now_ns(void);

/*
 * The task's deadline: one absolute time (rf_now_ns() scale) that bounds
 * every wait the calling task makes from now on, like a socket timeout
 * that covers a whole request. Set it once; it applies until changed or
 * cleared (0). Once it has passed:
 *  - an I/O operation in flight is cancelled in the kernel (it was
 *    submitted with a linked IORING_OP_LINK_TIMEOUT on absolute
 *    CLOCK_MONOTONIC time, so a deadline costs no extra system call) and
 *    returns -ETIMEDOUT, unless it completed first, in which case its own
 *    result is returned (the kernel's -ECANCELED/-ETIME pair never shows);
 *  - rf_sleep, rf_join, rf_gather, rf_wait_for, rf_as_completed_next and
 *    the waits of the sync objects return -ETIMEDOUT (rf_gather and
 *    rf_wait_for first cancel and await what they wait for, as they do
 *    when the caller is cancelled);
 *  - new waits of those kinds return -ETIMEDOUT at once, without
 *    suspending, until the deadline is moved or cleared.
 * rf_yield is not bounded by it. A task starts without a deadline; a
 * spawned task does not inherit its parent's.
 * rf_deadline_set returns 0, or -EPERM outside a task. Does not suspend.
 */
RF_API int rf_deadline_set(uint64_t deadline_ns);

/* The calling task's deadline, 0 if none (or outside a task). */
RF_API uint64_t rf_deadline_get(void);

/* ------------------------------------------------------------------------ */
/* Blocking calls: offload to a thread pool                                 */
/* ------------------------------------------------------------------------ */

/*
 * asyncio.to_thread() / loop.run_in_executor(): a blocking call (a
 * library without an async API, a long computation, time.sleep) run on a
 * worker thread while the calling task waits and the loop runs the
 * others. The result comes back through the loop's cross-thread mailbox:
 * a burst of completions costs the loop one wake-up.
 *
 * A pool has a bounded queue: when it is full, callers wait (suspend) for
 * room, oldest first; the queue never grows and the loop thread never
 * blocks on it. One pool may serve loops on any number of threads.
 *
 * Cancellation: a call cannot be interrupted once queued. rf_cancel of a
 * task in rf_to_thread / rf_pool_call does not resume it before the worker
 * has returned from fn (so arg may live on the task's stack); the call
 * then returns 0 and delivers fn's real result, and the cancellation
 * shows at the task's next suspending call. A task cancelled (or past its
 * deadline) before its call was queued, while it waits for room included,
 * gets -ECANCELED (-ETIMEDOUT) and fn is not called.
 */
typedef struct rf_pool rf_pool;

/*
 * Create a pool of `threads` workers (0: $RINGFIBER_POOL_THREADS, else
 * min(32, CPUs + 4) as asyncio's default executor) with a queue of
 * queue_capacity calls (0: 1024). On success *poolp owns the pool; free
 * it with rf_pool_free(). Returns 0, -EINVAL (NULL poolp, more than 1024
 * threads, a queue above 2^24), -ENOMEM, or -EAGAIN (no more threads).
 * Does not suspend. Any thread.
 */
RF_API int rf_pool_new(unsigned threads, unsigned queue_capacity,
                       rf_pool **poolp);

/*
 * Stop and join the workers, after they have run every call already
 * queued (their results are delivered to their loops as usual; this
 * blocks the calling thread meanwhile). Returns 0, or -EBUSY, freeing
 * nothing, while a task waits for room in the queue (its loop must run
 * for it to go on: this thread may be that loop's). The caller
 * guarantees that no call is submitted concurrently or afterwards.
 * NULL is accepted and ignored. Any thread, outside the pool's workers.
 */
RF_API int rf_pool_free(rf_pool *pool);

/* Number of worker threads of pool (0 for NULL). Does not suspend. */
RF_API unsigned rf_pool_threads(const rf_pool *pool);

/*
 * Run fn(arg) on a worker of pool; the calling task waits. result (may be
 * NULL) receives fn's return value. Returns 0 (cancelled or not, once
 * the call was queued: see above), or, without calling fn: -EINVAL (NULL
 * pool or fn), -EPERM (not in a task), -ECANCELED / -ETIMEDOUT (the
 * caller was cancelled or reached its deadline before the call was
 * queued), -ESHUTDOWN (the pool is being freed). Suspends.
 */
RF_API int rf_pool_call(rf_pool *pool, rf_fn fn, void *arg, void **result);

/*
 * rf_pool_call on the current loop's default pool: created at the first
 * call with rf_loop_pool_threads() workers (0: as rf_pool_new), owned and
 * joined by rf_loop_free, unless rf_loop_set_pool() gave another. Errors
 * as rf_pool_call, and those of rf_pool_new. Suspends.
 */
RF_API int rf_to_thread(rf_fn fn, void *arg, void **result);

/*
 * loop.set_default_executor(): rf_to_thread on loop uses pool from now on
 * (NULL: a default pool again). The pool stays the caller's and must
 * outlive the loop's calls. Returns 0, -EINVAL, -EXDEV (wrong thread),
 * -EBUSY (the loop has already created its own pool). Does not suspend.
 */
RF_API int rf_loop_set_pool(rf_loop *loop, rf_pool *pool);

/* Number of workers of the default pool loop creates (0: as rf_pool_new).
 * Returns 0, -EINVAL, -EXDEV, -EBUSY (the pool exists already). Does not
 * suspend. */
RF_API int rf_loop_pool_threads(rf_loop *loop, unsigned threads);

/* ------------------------------------------------------------------------ */
/* The loop-stall detector                                                  */
/* ------------------------------------------------------------------------ */

/*
 * asyncio's debug-mode slow-callback warning, with a backtrace: a watchdog
 * thread notices when the loop has not switched tasks nor ended a
 * scheduler pass for longer than a threshold (a task blocks the thread)
 * and reports the task, how long it has held the loop so far, and a
 * backtrace of the loop thread taken at that moment (the thread is sent
 * the real-time signal SIGRTMIN + RF_STALL_SIGNAL_OFFSET and records it in
 * the handler, installed with SA_RESTART; a program that has its own
 * handler for that signal gets reports without backtraces). As with any
 * signal, a blocking call that is never restarted (nanosleep, poll...)
 * made by the stalled task may then return early with EINTR, once per
 * stall. When the task finally gives the loop back,
 * a second report gives the total. A loop sleeping in the ring is never
 * stalled. Each stall counts once in rf_stats.stalls. The loop's own cost
 * is nil: its heartbeat is the switch and pass counters it keeps anyway.
 *
 * Off by default; on with rf_loop_stall_detector(), or for every loop a
 * program creates with the environment variable RINGFIBER_STALL_MS=<ms>
 * (read by rf_loop_new; empty: 100 ms).
 */
#define RF_STALL_SIGNAL_OFFSET 3

typedef struct rf_stall_info {
    const rf_loop *loop;
    const char *task_name;  /* the task holding the loop; "(scheduler)"
                             * outside any task, "?" if not captured */
    uint64_t task_id;       /* 0 if none or unknown */
    uint64_t held_ns;       /* held so far; in all when `ended` */
    uint64_t threshold_ns;
    bool ended;             /* false: the first report, the loop is still
                             * held; true: the task gave it back */
    void *const *backtrace; /* first report: the loop thread's stack, as
                             * backtrace(3) gives it; else NULL */
    int backtrace_len;
} rf_stall_info;

/* A report. Called on the watchdog thread: it must not call loop or task
 * functions; info is valid during the call only. */
typedef void (*rf_stall_fn)(const rf_stall_info *info, void *user);

/* The default report: one line on stderr naming the task and the time,
 * then the backtrace, one frame a line (backtrace_symbols_fd). */
RF_API void rf_stall_report_default(const rf_stall_info *info, void *user);

/*
 * Watch loop with a threshold of threshold_ms (0: stop watching); fn (NULL:
 * rf_stall_report_default) gets the reports, with user. Replaces the
 * detector loop had. Returns 0, -EINVAL (NULL loop), -EXDEV (wrong
 * thread), -ENOMEM, -EAGAIN (no thread). Does not suspend; stopping a
 * detector waits for its watchdog's report in progress, if any.
 */
RF_API int rf_loop_stall_detector(rf_loop *loop, unsigned threshold_ms,
                                  rf_stall_fn fn, void *user);

#ifdef __cplusplus
}
#endif

#endif /* RINGFIBER_H */
