/*
 * ringfiber: stackful tasks on an io_uring event loop, with asyncio's model.
 *
 * Conventions that hold for every function below:
 *
 *  - Errors are negative errno values, as the kernel and liburing return
 *    them. Functions returning a pointer return NULL and set errno instead.
 *    rf_strerror() turns a code into text, rf_err_name() into its name.
 *  - Names. Objects the library allocates are made with _new and released
 *    with _free (rf_loop, rf_pool); objects in storage the caller owns are
 *    prepared with _init and released with _fini (rf_queue, rf_event,
 *    rf_mutex, rf_sem, rf_cond, rf_group, rf_as_completed); an object bound
 *    to a descriptor or a resource of the kernel is opened with _open and
 *    closed with _close (rf_acceptor; rf_close for fds). A call that does
 *    what another does without waiting is named _try_<verb> and returns
 *    -EAGAIN or -EBUSY instead of suspending (rf_queue_try_put,
 *    rf_mutex_try_lock, rf_sem_try_acquire). Setters are _set_<what>,
 *    getters name the value (rf_loop_set_pool_threads, rf_pool_threads).
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
 *  - Handles (rf_task *, rf_acceptor *, rf_pool *) are checked: a handle
 *    used after it was released (rf_task_release, once the task has
 *    returned and no other reference is left; rf_acceptor_close;
 *    rf_pool_free) is "stale", and every call given it returns -ESRCH
 *    (errno ESRCH for calls that return no code) without touching the
 *    object that may now live in its memory. Set RINGFIBER_ABORT_ON_STALE=1
 *    in the environment to have such a call print its name and abort()
 *    instead, to find the misuse in a debugger. Handles of a loop that was
 *    freed are not checked: the memory is gone.
 */
#ifndef RINGFIBER_H
#define RINGFIBER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The one place the version is written: CMakeLists.txt reads it here. */
#define RINGFIBER_VERSION_MAJOR 0
#define RINGFIBER_VERSION_MINOR 3
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

/* Text for a ringfiber error code (a negative errno): "Operation
 * canceled". A static string, never NULL ("Unknown error" for a code that
 * is no errno). Does not suspend; any thread. */
RF_API const char *rf_strerror(int err);

/* The name of an error code (a negative errno, as uv_err_name):
 * "ECANCELED" for -ECANCELED; "0" for 0, "UNKNOWN" for a code that is no
 * errno. A static string, never NULL. Does not suspend; any thread. */
RF_API const char *rf_err_name(int err);

/* ------------------------------------------------------------------------ */
/* Running a program                                                        */
/* ------------------------------------------------------------------------ */

/*
 * asyncio.run(): create a loop on this thread, run main(arg) as its first
 * task until it returns, cancel and await every task still alive, drain
 * every operation still in flight, free the loop.
 *
 * Graceful stop (asyncio's "cancel the rest after a grace", Go's
 * http.Server.Shutdown): if a task asked for one with rf_loop_shutdown
 * (main itself, after rf_signal_wait, say) and main returns, the other
 * tasks keep their grace; rf_run returns once they have all returned on
 * their own or, at the end of the grace, been cancelled and unwound. The
 * shutdown never cancels main.
 *
 * result: receives main's return value (may be NULL).
 * Returns 0 (main returned, and the graceful shutdown, if any, is over),
 * or:
 *   -ECANCELED main was cancelled (rf_cancel(rf_self()) or a handle to it
 *            that main gave away; the graceful shutdown never does);
 *   -EPERM / -ENOSYS / -ENOMEM / -EINVAL  the ring could not be set up
 *          (a line naming the cause and the remedy is written to stderr);
 *   -ENOMEM  no memory for main's task or stack;
 *   -EBUSY   called from inside a task (nested loops on one thread);
 *   -EINVAL  main is NULL;
 *   -EDEADLK main waits for something that can never happen (every task
 *            is waiting and nothing is in flight);
 *   or the error of io_uring_enter that stopped the loop (-EBADR,
 *            -EOWNERDEAD: the ring itself failed; never seen in normal
 *            operation).
 * Blocks the calling thread until main and the cleanup are done.
 */
RF_API int rf_run(rf_fn main, void *arg, void **result);

/* ------------------------------------------------------------------------ */
/* Loops                                                                    */
/* ------------------------------------------------------------------------ */

/* Options for rf_loop_new(); zero-initialise and set what you need. */
typedef struct rf_loop_opts {
    unsigned sq_entries;       /* SQ ring size, 1..RF_RING_MAX_ENTRIES
                                * (the kernel rounds it up to a power of
                                * two); 0 = 256 */
    unsigned cq_entries;       /* CQ ring size, sq_entries..2 x
                                * RF_RING_MAX_ENTRIES; 0 = 4 x sq_entries,
                                * at most 2 x RF_RING_MAX_ENTRIES */
    size_t default_stack_size; /* RF_MIN_STACK_SIZE..RF_MAX_STACK_SIZE;
                                * 0 = RF_DEFAULT_STACK_SIZE */
    unsigned flags;            /* RF_LOOP_* below */
    unsigned mailbox_capacity; /* spawns and calls from other threads that
                                * the loop has not taken in yet; beyond
                                * it they are refused with -EAGAIN.
                                * 1..RF_MAILBOX_MAX; 0 = RF_MAILBOX_DEFAULT */
    unsigned spin_ns;          /* with nothing ready, poll for up to this
                                * long before sleeping in the ring, for
                                * mail from other threads and for
                                * completions (0 = never; at most
                                * RF_SPIN_MAX_NS). Work that comes within
                                * it costs no sleep and no wake-up (no
                                * eventfd write by the poster, no kernel
                                * wake of this thread), at the price of
                                * the CPU kept busy that long each time
                                * the loop runs dry: for loops that trade
                                * messages on cores of their own
                                * (docs/loops.md, "Spinning before a
                                * sleep"); rf_stats.sleeps_avoided counts
                                * what it saved */
    uint64_t autojump_ns;      /* with RF_LOOP_VIRTUAL_TIME (else -EINVAL):
                                * when real work is in flight and nothing
                                * has happened for this long in real time,
                                * move the virtual clock to the next timer
                                * anyway (Trio's autojump_threshold); 0 =
                                * never: the clock waits for the real work.
                                * Needs IORING_FEAT_EXT_ARG (5.11), else
                                * rf_loop_new returns -EOPNOTSUPP */
    uint64_t shuffle_seed;     /* not 0: shake the schedule with this seed
                                * (docs/shuffle.md): the tasks of each pass
                                * run in an order drawn from it instead of
                                * the order they became ready (so do the
                                * tasks that completions reaped together,
                                * or yields, made ready), every promise of
                                * the API kept. Same seed, same program,
                                * same inputs (virtual time): the same
                                * schedule. 0: the environment's
                                * RINGFIBER_SHUFFLE_SEED if set, else none */
    unsigned wake_batch_us;    /* while the loop's thread waits for its CPU
                                * (another thread runs there: a load
                                * client, a busy machine), a sleep waits
                                * for a batch of completions rather than
                                * the first, and wakes once for them; this
                                * is the longest the first of them waits
                                * for the rest (docs/scheduler.md,
                                * "Batched wake-ups"). A loop with a CPU
                                * to itself wakes at the first (within
                                * 100 ms of getting it, it stops
                                * batching).
                                * 0: the environment's
                                * RINGFIBER_WAKE_BATCH_US if set (0 there:
                                * never batch), else
                                * RF_WAKE_BATCH_DEFAULT_US; at most
                                * RF_WAKE_BATCH_MAX_US. RF_LOOP_WAKE_AT_ONCE
                                * turns batching off */
    unsigned recv_bufs;        /* with RF_LOOP_RECV_MULTISHOT (else
                                * -EINVAL): buffers in the loop's
                                * provided-buffer ring, a power of two
                                * 2..RF_RECV_BUFS_MAX; 0 =
                                * RF_RECV_BUFS_DEFAULT */
    unsigned recv_buf_size;    /* .. and the size of each, 64..
                                * RF_RECV_BUF_SIZE_MAX bytes; 0 =
                                * RF_RECV_BUF_SIZE_DEFAULT. The buffers
                                * are one mapping, mapped at the first
                                * rf_recv and touched only where the
                                * kernel writes */
} rf_loop_opts;

/* rf_loop_opts.recv_bufs and .recv_buf_size: defaults and limits (4 MiB
 * of buffers by default). A socket pauses at RF_RECV_PAUSE unread buffers
 * (or an eighth of the ring, at least 2), but the kernel may fill more
 * before the loop sees them: when the ring runs dry, sockets wait in the
 * kernel and their next rf_recv is a plain receive; nothing is lost. */
#define RF_RECV_BUFS_DEFAULT 1024u
#define RF_RECV_BUFS_MAX 32768u
#define RF_RECV_BUF_SIZE_DEFAULT 4096u
#define RF_RECV_BUF_SIZE_MAX (1u << 20)

/* rf_loop_opts.wake_batch_us: the default and the most. */
#define RF_WAKE_BATCH_DEFAULT_US 200u
#define RF_WAKE_BATCH_MAX_US 10000u

/*
 * The seed loop shakes its schedule with (rf_loop_opts.shuffle_seed, or
 * RINGFIBER_SHUFFLE_SEED), 0 if none: print it when a test fails, and
 * replay the failure with it. Any thread. Does not suspend. 0 for NULL.
 */
RF_API uint64_t rf_loop_shuffle_seed(const rf_loop *loop);

/* Longest rf_loop_opts.spin_ns: one second. */
#define RF_SPIN_MAX_NS 1000000000u

/* Default bound of a loop's mailbox: 65,536 requests (about 6 MiB of
 * pending spawns), far above what a loop that runs drains between two
 * passes, and a ceiling for a loop that has stopped taking mail in. */
#define RF_MAILBOX_DEFAULT 65536u

/* Default usable stack per task (guard page not included). */
#define RF_DEFAULT_STACK_SIZE (128u * 1024u)

/*
 * Limits. Every size given to the runtime (a stack, a ring, a mailbox, a
 * pool, a queue, a semaphore) is checked against these where it enters,
 * once, and refused with -EINVAL outside them; 0 asks for the default
 * where the documentation of the size says so. Within them, nothing the
 * runtime computes from a size (page rounding, array lengths) overflows.
 */
#define RF_MIN_STACK_SIZE (16u * 1024u)          /* stacks: 16 KiB .. */
#define RF_MAX_STACK_SIZE (1024u * 1024u * 1024u) /* .. 1 GiB */
#define RF_RING_MAX_ENTRIES 32768u  /* sq_entries; cq_entries: twice that */
#define RF_MAILBOX_MAX (1u << 31)   /* rf_loop_opts.mailbox_capacity */
#define RF_POOL_MAX_THREADS 1024u   /* rf_pool_new, rf_loop_set_pool_threads */
#define RF_POOL_MAX_QUEUE (1u << 24) /* rf_pool_new's queue_capacity */
#define RF_QUEUE_MAX (1u << 31)     /* rf_queue_init's capacity */
#define RF_SEM_MAX (1u << 31)       /* rf_sem_init's max */

/* Do not print the setup failure message to stderr. */
#define RF_LOOP_QUIET 0x1u
/* Do not install the SIGSEGV handler that reports stack overflows, and
 * any other fault in a task's stack or in the guard below one, naming the
 * task whose stack it is and the running task. Task code should be
 * compiled with -fstack-clash-protection (ringfiber.pc and the CMake
 * package pass it on): a frame larger than the guard then meets it
 * instead of jumping it into another task's stack. */
#define RF_LOOP_NO_OVERFLOW_HANDLER 0x2u
/* Guard task stacks with mprotect() even where MADV_GUARD_INSTALL exists:
 * the fallback used on kernels before 6.13 (each guard then costs a
 * mapping, and slots beyond vm.max_map_count rely on a canary). */
#define RF_LOOP_GUARD_MPROTECT 0x4u
/* Wake other loops, and be woken by them, with IORING_OP_MSG_RING (a CQE
 * put in the sleeping loop's ring) instead of an eventfd write, where both
 * loops have this flag and run on kernels that have it (6.1+: the rings
 * must run with DEFER_TASKRUN); elsewhere, and after a refused message,
 * the eventfd is used. Threads that are not loops (the offload pool, a
 * host's threads) always write the eventfd. Measured against the eventfd
 * on 6.18: 4% slower round trips, 8% fewer messages/s in streams
 * (docs/loops.md, "Waking a loop"); hence not the default. */
#define RF_LOOP_WAKE_MSG_RING 0x100u
/* Run the loop on a virtual clock that starts at 0 (docs/virtual-time.md):
 * rf_now_ns() on the loop's thread and every timer of the loop (sleeps,
 * deadlines, rf_wait_for, a shutdown's grace) use it. When no task is
 * ready and nothing real is in flight (no operation in the ring, no
 * offloaded call, no mail), the clock jumps to the earliest timer, so
 * sleeps of hours end at once, at exactly their virtual instant. Timers
 * due at one instant fire in the order they were armed. While real work
 * is in flight the clock stands still: a deadline over a real operation
 * is a runtime timer (the task's), so it too waits for the clock, never
 * for the wall. rf_clock_advance() moves it by hand. For tests. */
#define RF_LOOP_VIRTUAL_TIME 0x200u
/* Measure each task's scheduling delay, from becoming ready to running,
 * into the loop's histogram (rf_loop_metrics.sched_delay_*, the "event
 * loop lag" operators alert on): one clock read per task run. Off by
 * default: on this project's VMs a clock read costs more than a yield
 * (docs/inspect.md, "Metrics"). */
#define RF_LOOP_SCHED_DELAY 0x400u
/* Wake at the first completion, always: no batched wake-ups even while
 * the loop's thread shares its CPU (rf_loop_opts.wake_batch_us). */
#define RF_LOOP_WAKE_AT_ONCE 0x800u
/*
 * Receive with one multishot receive per stream socket, into buffers the
 * loop provides to the kernel, instead of one receive per rf_recv
 * (docs/scheduler.md, "Multishot receive"): a message then costs the
 * kernel no re-arming of the socket's poll and the loop no SQE. Measured
 * on the W6 echo server (bench/README.md). rf_recv keeps its contract,
 * with these rules more for the stream sockets it reads:
 *  - one task at a time waits in rf_recv on a socket: another task's
 *    rf_recv on it meanwhile returns -EBUSY;
 *  - such a socket is closed with rf_close, on the loop that reads it
 *    (which ends its multishot and frees its buffers). close(2) would
 *    leave the multishot holding the connection open, and the number's
 *    next owner could be taken for the old socket; rf_accept,
 *    rf_acceptor_next and rf_socket do drop what the loop kept for a
 *    number they hand out again, other calls that make descriptors do
 *    not;
 *  - bytes received for rf_recv wait in user space: rf_read reads them
 *    first, rf_poll(POLLIN) reports them, rf_recvmsg and rf_readv return
 *    -EBUSY while any wait (read them with rf_recv); descriptors passed
 *    over a Unix stream socket (SCM_RIGHTS) are lost to the multishot's
 *    reads, so such a socket is read with rf_recvmsg only.
 * MSG_PEEK, MSG_DONTWAIT and MSG_WAITALL are served from the queue
 * (MSG_DONTWAIT: -EAGAIN when it is empty and the multishot is armed;
 * MSG_PEEK | MSG_WAITALL: short when the queue is full before len),
 * MSG_NOSIGNAL and MSG_CMSG_CLOEXEC change nothing; other flags are
 * recv(2)'s once the queue is empty (-EBUSY while it is not). Sockets
 * that are not SOCK_STREAM and kernels before 6.0 take the plain path.
 * An armed multishot is an operation in flight: a loop with one does not
 * report a deadlock (-EDEADLK) while it waits for its tasks.
 */
#define RF_LOOP_RECV_MULTISHOT 0x1000u

/* rf_run on a loop made with opts (rf_loop_new's, may be NULL): e.g.
 * RF_LOOP_VIRTUAL_TIME. Returns what rf_run returns, and rf_loop_new's
 * errors. Blocks the calling thread. */
RF_API int rf_run_opts(rf_fn main, void *arg, void **result,
                       const rf_loop_opts *opts);

/*
 * Create a loop owned by the calling thread. opts may be NULL.
 * On success *loopp owns the loop; free it with rf_loop_free().
 * Returns 0, -EINVAL (NULL loopp, unknown flags, a size outside its
 * limits: see "Limits" above), -ENOMEM, or the error the
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
 * result: receives fn's return value (may be NULL). Ownership of arg
 * passes to fn.
 * Returns 0, or:
 *   -ECANCELED the task was cancelled (result still receives its value);
 *   -EINTR    rf_loop_stop() (or rf_loop_stop_threadsafe) ended the run
 *             before the task returned: it stays alive, and the next run
 *             continues it (result untouched);
 *   -EINVAL   NULL loop or fn; -ENOMEM, and the errors of rf_spawn, when
 *             the task cannot be created;
 *   -EBUSY    the loop is already running, or called from a task;
 *   -EXDEV    another thread's loop;
 *   -EDEADLK  nothing can run and nothing is in flight;
 *   or the error of io_uring_enter that stopped the loop.
 * Blocks the calling thread; call it from outside any task.
 */
RF_API int rf_loop_run_until_complete(rf_loop *loop, rf_fn fn, void *arg,
                                      void **result);

/*
 * loop.run_forever(): run the loop until a task calls rf_loop_stop() (or
 * another thread rf_loop_stop_threadsafe, or a graceful shutdown ends).
 * Tasks alive when it returns stay alive. Returns 0 when stopped, or
 * -EINVAL (NULL loop), -EBUSY (already running, or called from a task),
 * -EXDEV (another thread's loop), -EDEADLK (every task is waiting,
 * nothing is in flight and nothing can stop the loop; a loop with
 * RF_LOOP_SERVE sleeps instead), or the error of io_uring_enter that
 * stopped the loop. Blocks the calling thread; call it from outside any
 * task.
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
 * invalid afterwards, whether or not they were released; so are the
 * loop's acceptors and its shutdown event. The default offload pool is
 * joined (rf_pool_free); a pool given with rf_loop_set_pool stays the
 * caller's. Mail accepted from other threads runs first (its spawns start
 * cancelled).
 * Returns 0 (also when tasks that ignore their cancellation had to be
 * abandoned: a line on stderr names how many), -EBUSY (called from a task
 * or while the loop runs; nothing is freed) or -EXDEV (wrong thread).
 * If that run fails (a ring that refuses work), the operations still in
 * the kernel are cancelled and waited for, at most 1 s; if any is left
 * after that, the loop's stacks and receive buffers are left mapped
 * rather than handed back while the kernel may write into them (a line
 * on stderr says so).
 * NULL is accepted and ignored. Blocks the calling thread while the tasks
 * unwind.
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
    uint64_t ops_in_flight;   /* submitted or queued, CQE not yet seen;
                               * not counted: idle shared timeouts kept
                               * for reuse, which nobody waits on and
                               * the loop removes before it sleeps;
                               * plus one while completions the kernel
                               * handed over to make room (it refused a
                               * submission) wait for the next reap */
    uint64_t passes;          /* scheduler passes */
    uint64_t stacks_mapped;   /* task stacks in use: a task takes its
                               * stack when it first runs */
    uint32_t ring_flags;      /* IORING_SETUP_* flags the ring runs with */
    uint32_t guard_mode;      /* RF_GUARD_* below */
    uint64_t accept_emfile;   /* accepts that met EMFILE/ENFILE and backed
                               * off (rf_accept, rf_acceptor_next) */
    uint64_t stalls;          /* loop stalls reported by the stall
                               * detector (rf_loop_stall_detector) */
    uint64_t acceptor_pauses; /* multishot accepts paused because
                               * RF_ACCEPTOR_QUEUE connections waited in
                               * an acceptor (rf_acceptor_next) */
    uint64_t mail_refused;    /* rf_loop_spawn/call_threadsafe requests
                               * refused with -EAGAIN: the mailbox was
                               * full */
    uint64_t spawn_failed;    /* accepted rf_loop_spawn_threadsafe
                               * requests whose task could not be created
                               * on the loop's thread */
    uint64_t wakeups_eventfd; /* times a message from another thread woke
                               * the sleeping loop through its eventfd */
    uint64_t wakeups_msg_ring; /* .. through a CQE another loop put in its
                                * ring (IORING_OP_MSG_RING) */
    uint64_t sleeps_avoided;  /* times the loop ran dry and work came while
                               * it spun (rf_loop_opts.spin_ns), so it
                               * did not sleep */
    uint64_t wakes_batched;   /* sleeps that waited for a batch of
                               * completions, the loop's thread sharing
                               * its CPU (rf_loop_opts.wake_batch_us) */
    uint64_t recv_pauses;     /* RF_LOOP_RECV_MULTISHOT: multishot
                               * receives stopped because a socket's
                               * unread buffers reached RF_RECV_PAUSE */
    uint64_t recv_nobufs;     /* .. ended because the loop's buffers
                               * had run out (the socket's next rf_recv
                               * is a plain one) */
} rf_stats;

/* How task stacks are protected against overflow. */
#define RF_GUARD_MADVISE 1  /* guard pages via MADV_GUARD_INSTALL */
#define RF_GUARD_MPROTECT 2 /* guard pages via mprotect (2 mappings each) */
/* With RF_GUARD_MPROTECT (and on stacks left without a guard once the
 * mprotect guards would approach vm.max_map_count) each stack also carries
 * a canary at its bottom; at each switch away from such a task the canary
 * is checked, and that the task runs on its own stack. */

/*
 * Copy loop's counters into *out, all taken at one instant. On the loop's
 * thread (from a task, or between runs). Returns 0, -EINVAL (NULL loop or
 * out), -EXDEV (another thread: use rf_loop_stats_threadsafe). Does not
 * suspend.
 */
RF_API int rf_loop_stats(const rf_loop *loop, rf_stats *out);

/*
 * rf_loop_stats for a monitoring thread: from any thread, while the loop
 * runs (or is stalled), without stopping it, taking a lock or costing the
 * loop anything (the loop writes every counter with a plain store, which
 * this reads whole). Each counter is exact at the moment it is read; the
 * set is read counter by counter, not at one instant (tasks_spawned and
 * tasks_alive may come from two moments a few nanoseconds apart, say).
 * The loop must exist: the caller makes sure rf_loop_free has not begun
 * (as for the other _threadsafe calls). Returns 0 or -EINVAL (NULL loop
 * or out). Does not suspend, does not block.
 */
RF_API int rf_loop_stats_threadsafe(const rf_loop *loop, rf_stats *out);

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
 * another owner. Once the last reference is dropped and the task has
 * returned, the handle is stale (see the conventions at the top): the
 * calls below return -ESRCH for it, even after its record was reused for
 * a new task. Cost: a handle carries a 16-bit generation that each call
 * compares with its record's (one load and one compare).
 */

/* Options for rf_spawn_opts(); zero-initialise and set what you need. */
typedef struct rf_spawn_options {
    const char *name;  /* copied (first RF_TASK_NAME_MAX-1 bytes); NULL = "task-<id>" */
    size_t stack_size; /* RF_MIN_STACK_SIZE..RF_MAX_STACK_SIZE, rounded
                        * up to pages; 0 = the loop's default */
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
 * A stack of the loop's default size is taken when the task first runs
 * (the one most recently released: tasks that end before the next one
 * starts share a few stacks); its mapping is made here, so a spawn that
 * returns a task never fails later for want of a stack. Where many tasks
 * start at once, a thread of the loop's ("rf-stacks", joined by
 * rf_loop_free) prepares the stacks the next ones will take. (A loop's
 * threads, like its ring, stay with the process that made it: a child of
 * fork() must neither use nor free the loops it inherits.)
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
 *   -ESRCH   t is a stale handle (the calls below that take tasks, too);
 *   -EPERM   not called from a task;
 *   -EDEADLK t is the calling task;
 *   -EXDEV   t belongs to another loop and the handle is not one made
 *            for it by rf_spawn_on (with such a handle the join waits
 *            for t across the loops: a round trip of messages, the
 *            caller suspended, never its thread);
 *   -ESHUTDOWN t's loop is being freed (a handle of rf_spawn_on);
 *   -ECANCELED the caller itself is cancelled (result untouched; t is not
 *            cancelled: a handle may have many waiters, so cancelling one
 *            waiter leaves the task alone; rf_gather and rf_wait_for, which
 *            own their tasks, do cancel them).
 * Suspends unless t has already returned.
 */
RF_API int rf_join(rf_task *t, void **result);

/*
 * rf_join for clean-up: waits until t has returned even if the caller is
 * cancelled or past its deadline (a cancelled task that has cancelled its
 * children must still wait for them before it frees what they use).
 * Returns 0 or -ECANCELED (t's status, as rf_join), or, without waiting,
 * -EINVAL, -EPERM, -EDEADLK, -EXDEV as rf_join. Never ends early: make
 * sure t will return (cancel it first if need be). Suspends unless t has
 * already returned.
 */
RF_API int rf_join_nocancel(rf_task *t, void **result);

/*
 * asyncio.gather(): wait for every task in tasks[0..n). results (may be
 * NULL) receives each return value at the same index. Returns 0 if none
 * was cancelled, else -ECANCELED (look at each with rf_join, which returns
 * at once for a finished task). If the caller is cancelled while waiting,
 * or already was when it called, the tasks not yet finished are
 * cancelled, rf_gather waits until all of them have returned and then
 * returns -ECANCELED. -EINVAL for a NULL
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
 * cancelled (during the wait, or before the call), t is cancelled and
 * awaited and -ECANCELED is returned. -ENOMEM or -EBUSY: no timer could
 * be set up (no memory, no SQE); t is cancelled and awaited then too, so
 * t has returned whatever this returns. Other errors as rf_join.
 * Suspends.
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
 *   rf_task *t; void *res; int status, rc;
 *   while ((rc = rf_as_completed_next(&ac, &t, &res, &status)) > 0) ...
 *   if (rc == -ECANCELED) ...     (the caller was cancelled)
 *   rf_as_completed_fini(&ac);
 *
 * The iterator must not be copied or moved between init and fini.
 */
typedef struct rf_as_completed {
    /* private */
    void *impl_[8];
} rf_as_completed;

/* Returns 0, -EINVAL, -ENOMEM, -EPERM (outside a task), -EXDEV, -ESRCH
 * (a stale handle in tasks). Does not suspend. */
RF_API int rf_as_completed_init(rf_as_completed *ac, rf_task *const *tasks,
                                size_t n);
/*
 * The next task to finish: *t receives its handle (one of the set's: no
 * reference is added), result and status (may be NULL) its return value
 * and its status (0 or -ECANCELED, as rf_join would return). Returns 1
 * when *t is set, 0 when every task of the set has been handed out (*t is
 * NULL), or, with *t NULL: -ECANCELED / -ETIMEDOUT (the caller was
 * cancelled or reached its deadline; the set is left as it was: call
 * rf_as_completed_fini), -EPERM (outside a task), -EINVAL (NULL ac or t),
 * -ESRCH (ac was finished with rf_as_completed_fini, or its init failed).
 * Suspends until a task finishes, unless one already has.
 */
RF_API int rf_as_completed_next(rf_as_completed *ac, rf_task **t,
                                void **result, int *status);
/* Releases the iterator's memory; a second call is harmless. Does not
 * suspend. */
RF_API void rf_as_completed_fini(rf_as_completed *ac);

/*
 * task.cancel(): request cancellation of t (see the conventions at the top).
 * Returns 0 when the request is made (again 0 if it was already pending),
 * -ESRCH if t has already returned (or the handle is stale), -EINVAL for
 * NULL, -EXDEV if t belongs to another loop (unless the handle is one of
 * rf_spawn_on: the request then goes to t's loop in a message, from any
 * thread; -ESHUTDOWN if that loop is being freed). A task may cancel
 * itself. Does not suspend.
 */
RF_API int rf_cancel(rf_task *t);

/* task.done(): true once t has returned (also for a stale handle, whose
 * task has returned: errno is then ESRCH). A handle of rf_spawn_on
 * answers on any loop. Does not suspend. */
RF_API bool rf_done(const rf_task *t);

/* True if cancellation of t was requested (false, errno ESRCH, for a
 * stale handle). Does not suspend. */
RF_API bool rf_cancelled(const rf_task *t);

/* The calling task, or NULL outside a task. */
RF_API rf_task *rf_self(void);

/* t's name: the copy of rf_spawn_options.name, or "task-<id>". The
 * string lives in the task's record: valid as long as the handle is (do
 * not keep it past rf_task_release). NULL with errno EINVAL (NULL t) or
 * ESRCH (stale handle). Does not suspend. */
RF_API const char *rf_task_name(const rf_task *t);

/* Add / drop a reference (see above). NULL is ignored; a stale handle is
 * refused (errno ESRCH), having no reference to give or drop. A handle of
 * rf_spawn_on may be retained and released on any loop (its last release
 * is a message to the task's loop). Do not suspend. */
RF_API void rf_task_retain(rf_task *t);
RF_API void rf_task_release(rf_task *t);

/*
 * asyncio.sleep(0): go to the back of the run queue; the other ready tasks
 * run first. Costs no system call. Returns 0, -ECANCELED (the caller is
 * cancelled; it has still yielded), -EPERM outside a task. Suspends.
 *
 * rf_yield is inlined into the caller (see "Fast path" below): the switch
 * then happens in the caller's frame, which is a third cheaper than from
 * inside a library function. The library also exports rf_yield as a
 * function, for callers that cannot use the inline one (other languages;
 * define RF_NO_INLINE_YIELD before including this header to use it from C).
 */
#if defined(RINGFIBER_BUILDING) || defined(RF_NO_INLINE_YIELD)
RF_API int rf_yield(void);
#endif

/*
 * asyncio.sleep(): suspend the calling task for ns nanoseconds, measured on
 * CLOCK_MONOTONIC to an absolute deadline (an IORING_OP_TIMEOUT), so a
 * series of sleeps does not drift by the scheduling delay of each.
 * rf_sleep(0) is rf_yield(). Returns 0, -ECANCELED, -ETIMEDOUT (the task's
 * deadline, rf_deadline_set, came first: the sleep ends at it), -EPERM, or
 * an error from the ring (-ENOMEM, -EBUSY). Suspends.
 */
RF_API int rf_sleep(uint64_t ns);

/* CLOCK_MONOTONIC in nanoseconds; on the thread of a loop that runs with
 * RF_LOOP_VIRTUAL_TIME (while it runs), that loop's virtual clock. Does
 * not suspend. */
RF_API uint64_t rf_now_ns(void);

/*
 * A loop's clock, from any thread: its virtual time (RF_LOOP_VIRTUAL_TIME)
 * or CLOCK_MONOTONIC, in *ns. Returns 0, or -EINVAL (NULL loop or ns).
 * Does not suspend.
 */
RF_API int rf_loop_time(const rf_loop *loop, uint64_t *ns);

/*
 * Move the virtual clock of loop (NULL: the calling task's loop, which it
 * must be) forward by ns, timer by timer: each timer due by then fires at its own instant (rf_now_ns()
 * reads its deadline), in order, and the tasks it wakes run before the
 * clock moves on and before this call returns; then the clock reads the
 * old time + ns. Timers the woken tasks arm within the span fire in it
 * too. Returns 0, -EPERM (not called from a task), -EXDEV (loop is not
 * the caller's), -EINVAL (the loop does not run on virtual time),
 * -ECANCELED (the caller was cancelled: the clock stops where it was).
 * May suspend (it yields to the woken tasks).
 */
RF_API int rf_clock_advance(rf_loop *loop, uint64_t ns);

/*
 * Move the virtual clock of loop (NULL: the calling task's loop, which it
 * must be) forward by ns at once, as a blocking call that took ns would
 * (Trio's MockClock.jump): the timers due by then fire now, in order, and
 * their tasks run after the caller next suspends, all reading the new
 * time. Returns 0, -EPERM (not called from a task), -EXDEV (loop is not
 * the caller's), -EINVAL (the loop does not run on virtual time). Does
 * not suspend.
 */
RF_API int rf_clock_jump(rf_loop *loop, uint64_t ns);

/*
 * The task's deadline: one absolute time (rf_now_ns() scale) that bounds
 * every wait the calling task makes from now on, like a socket timeout
 * that covers a whole request. Set it once; it applies until changed or
 * cleared (0). Once it has passed:
 *  - an I/O operation in flight is cancelled in the kernel and returns
 *    -ETIMEDOUT once the kernel is done with it, unless it completed
 *    first, in which case its own result is returned;
 *  - rf_sleep, rf_join, rf_gather, rf_wait_for, rf_as_completed_next and
 *    the waits of the sync objects return -ETIMEDOUT (rf_gather and
 *    rf_wait_for first cancel and await what they wait for, as they do
 *    when the caller is cancelled);
 *  - new waits of those kinds return -ETIMEDOUT at once, without
 *    suspending, until the deadline is moved or cleared (a join or a
 *    sync object's wait begun in the moment between the deadline and the
 *    loop seeing its timer fire suspends until the end of that pass).
 * rf_yield is not bounded by it. A task starts without a deadline; a
 * spawned task does not inherit its parent's.
 * Cost and precision: the deadline is one timer per task (armed at the
 * first wait it bounds, kept across waits, shared with the loop's other
 * timers that end within one timer slack of it, removed without a system
 * call when the task ends or the deadline moves, unless it moved a
 * little later and the timer still fires within the precision below for
 * it: renewing an idle timeout costs a comparison), not one per
 * operation: operations under a deadline cost what they cost without
 * one. A wait ends up to one timer slack (the thread's, prctl
 * PR_SET_TIMERSLACK; 50 us by default) after the deadline; a deadline d
 * ns away when it is set (on the loop's clock, which may lag by a clock
 * tick), d over 512 to 1,024 slacks (25-50 ms by default),
 * up to d / 512 more (a coarser instant that renewed idle timeouts
 * share: 67 ms for 60 s; not with a slack of 0); an operation in the
 * ring one cancellation later still; never before it.
 * rf_deadline_set returns 0, or -EPERM outside a task. Does not suspend.
 */
RF_API int rf_deadline_set(uint64_t deadline_ns);

/* The calling task's deadline, 0 if none (or outside a task). */
RF_API uint64_t rf_deadline_get(void);

/* ------------------------------------------------------------------------ */
/* Embedding                                                                */
/* ------------------------------------------------------------------------ */

/*
 * Two ways to host a loop in a program that has threads and an event loop
 * of its own.
 *
 * 1. A loop on a thread of its own. That thread creates the loop (with
 *    RF_LOOP_SERVE) and calls rf_loop_run_forever(); other threads hand it
 *    work with rf_loop_spawn_threadsafe() / rf_loop_call_threadsafe() and
 *    end it with rf_loop_stop_threadsafe() or, gracefully,
 *    rf_loop_shutdown_threadsafe(); then the loop's thread frees it.
 *
 * 2. A loop driven by the host's event loop, on the host's thread (libuv's
 *    uv_backend_fd + UV_RUN_NOWAIT): the host polls rf_loop_fd() for
 *    reading, with rf_loop_timeout_ms() for the poll's timeout, and calls
 *    rf_loop_run_once(loop, RF_RUN_NOWAIT) whenever it is readable.
 *
 * The _threadsafe calls may be made from any thread, the loop's own
 * included, as long as the loop exists: a host must not let a thread call
 * them once rf_loop_free() may have returned (join those threads first, or
 * have them stop at the first -ESHUTDOWN). Calls that race with
 * rf_loop_free() are safe: they are either run before the loop is gone or
 * refused with -ESHUTDOWN. None of them suspends or waits for the loop;
 * each costs at most a malloc, an atomic exchange and, when the loop's
 * mailbox was empty, one eventfd write that wakes the loop.
 */

/*
 * Loop flag: a loop that serves other threads. rf_loop_run_forever() and
 * rf_loop_run_until_complete() sleep, instead of returning -EDEADLK, when
 * every task waits and nothing is in flight: work may still come from
 * another thread. Such a loop returns only on a stop or at the end of a
 * graceful shutdown. rf_loop_free() is unaffected (it never waits for
 * mail).
 */
#define RF_LOOP_SERVE 0x80u

/*
 * From any thread: spawn fn(arg) as a task on loop's thread (as
 * rf_loop_spawn with opts, which are copied: opts and its name may be
 * freed when this returns; NULL for the defaults). The task starts at a
 * later scheduler pass of that loop; tasks spawned by one thread start in
 * the order of the calls. No handle is returned: the task is detached
 * (have it report back through arg if you need its result).
 *
 * Returns 0 when the request is accepted: fn(arg) then runs exactly once,
 * and ownership of arg passes to fn. If the loop is freed before the
 * request was taken in, rf_loop_free() still spawns the task, cancelled
 * from the start (fn runs; its waits fail with -ECANCELED). The one case
 * where an accepted fn does not run is a failure to create the task on the
 * loop's thread (out of memory or of stack mappings): a line on stderr
 * says so, and the loop counts it in rf_stats.spawn_failed. Errors, with
 * arg still the caller's:
 *   -EINVAL     loop or fn is NULL, or a bad stack size;
 *   -ENOMEM     no memory for the request;
 *   -EAGAIN     the loop's mailbox is full (rf_loop_opts.mailbox_capacity
 *               requests posted and not yet taken in): the loop is not
 *               keeping up, or not running; back off and retry. The
 *               mailbox is bounded so that posters faster than the loop
 *               cannot grow the process without limit.
 *   -ESHUTDOWN  a graceful shutdown was requested, or the loop is being
 *               freed.
 * Does not suspend, does not block.
 */
RF_API int rf_loop_spawn_threadsafe(rf_loop *loop, rf_fn fn, void *arg,
                                    const rf_spawn_options *opts);

/* A function run on a loop's thread by rf_loop_call_threadsafe(). */
typedef void (*rf_call_fn)(void *arg);

/*
 * From any thread: run fn(arg) on loop's thread, outside any task, at the
 * loop's next scheduler pass (or when the loop is freed, if it does not
 * run again). fn must not suspend (the suspending calls return -EPERM
 * there); it may spawn tasks (rf_spawn), cancel them, stop the loop, and
 * read or change the state of the loop's tasks without locks. Calls made
 * by one thread run in the order they were made.
 * Returns 0 (fn will run exactly once), -EINVAL (NULL loop or fn),
 * -ENOMEM, -EAGAIN (the mailbox is full, as for spawns: calls and spawns
 * share its capacity), -ESHUTDOWN (the loop is being freed). Unlike
 * spawns, calls are still accepted during a graceful shutdown. Does not
 * suspend.
 */
RF_API int rf_loop_call_threadsafe(rf_loop *loop, rf_call_fn fn, void *arg);

/*
 * From any thread: rf_loop_stop(), asynchronously. The running
 * rf_loop_run_forever() or rf_loop_run_until_complete() returns after the
 * pass in which the request is taken in; if the loop is not running then,
 * its next run returns after its first pass. Requests made before the
 * first is taken in are one request. Tasks stay alive. Returns 0, -EINVAL,
 * -ESHUTDOWN (the loop is being freed). Never refused for a full mailbox.
 * Does not suspend, does not allocate.
 */
RF_API int rf_loop_stop_threadsafe(rf_loop *loop);

/*
 * Graceful shutdown, in three phases on the loop's thread:
 *  1. stop accepting: rf_loop_spawn_threadsafe() refuses with -ESHUTDOWN
 *     from the moment of the request; when the loop takes the request in,
 *     every accept in progress ends with -ESHUTDOWN (its task is
 *     interrupted, not cancelled: it may go on to clean up), later
 *     accepts fail with -ESHUTDOWN at once, so a server stops taking
 *     connections, and the loop's shutdown event is set
 *     (rf_loop_shutdown_event: tasks that wait on it learn that the
 *     shutdown has begun, to finish their work early);
 *  2. grace: the other tasks (connections being served, tasks spawned
 *     earlier) have grace_ns, counted from phase 1, to return on their
 *     own; tasks may still spawn tasks, which count too;
 *  3. the tasks still alive at the end of the grace are cancelled
 *     (rf_cancel), except the task a run of the loop waits for (rf_run's
 *     main, rf_loop_run_until_complete's task): that one ends the run
 *     when it returns. Once every other task has returned,
 *     rf_loop_run_forever() returns 0 (rf_loop_run_until_complete()
 *     returns when its task does; rf_loop_run_once() reports an idle
 *     loop); rf_run then returns 0.
 * Phase 3 waits for cancelled tasks to unwind: a task that ignores its
 * cancellation holds the loop up, as it would hold rf_loop_free up.
 * grace_ns 0: no grace; UINT64_MAX: no limit. The loop stays closed to
 * spawns from other threads afterwards: free it.
 *
 * rf_loop_shutdown: on the loop's thread (from a task, say one waiting for
 * SIGTERM, or before a run); phase 1 is done before it returns.
 * rf_loop_shutdown_threadsafe: from any thread; phase 1 happens at the
 * loop's next scheduler pass.
 * Return 0, -EINVAL (NULL loop), -EXDEV (rf_loop_shutdown, wrong thread),
 * -EALREADY (a shutdown was already requested), -ESHUTDOWN (the loop is
 * being freed). Do not suspend.
 */
RF_API int rf_loop_shutdown(rf_loop *loop, uint64_t grace_ns);
RF_API int rf_loop_shutdown_threadsafe(rf_loop *loop, uint64_t grace_ns);

/*
 * The loop's shutdown event: an rf_event (see Coordination) that phase 1
 * of a graceful shutdown sets, and that nothing clears. Tasks wait on it
 * (rf_event_wait) or test it (rf_event_is_set) to learn that the shutdown
 * has begun: a connection between two requests can close at once instead
 * of using its grace. Owned by the loop, valid until rf_loop_free; do not
 * set, clear or fini it. Returns it, or NULL with errno EINVAL (NULL
 * loop) or EXDEV (another thread). Does not suspend.
 */
struct rf_event;
RF_API struct rf_event *rf_loop_shutdown_event(rf_loop *loop);

/*
 * Wait for a signal, through the ring (a server waiting for SIGTERM): the
 * signals of set are blocked in the calling thread, for good (one that
 * arrives between two waits stays pending for the next), a signalfd is
 * read with rf_read, and the number of the first one to arrive is
 * returned; info (may be NULL) receives what signalfd(2) tells of it.
 * No handler runs, no other wait is interrupted. A process-directed
 * signal is taken by any thread that does not block it: the runtime's
 * own threads (offload pool, stall detector) block every asynchronous
 * signal; block set in threads of your own too, or before creating them.
 * A signal that comes before the first wait takes its default action
 * unless set was blocked earlier (pthread_sigmask, first thing in main).
 * Returns the signal number, or -EINVAL (NULL or empty set), -EPERM
 * (outside a task), -ECANCELED, -ETIMEDOUT (the task's deadline), or the
 * error of pthread_sigmask or signalfd. Suspends.
 *
 *   sigset_t set;
 *   sigemptyset(&set); sigaddset(&set, SIGINT); sigaddset(&set, SIGTERM);
 *   rf_signal_wait(&set, NULL);
 *   rf_loop_shutdown(rf_loop_current(), 5 * RF_NSEC_PER_SEC);
 *   return NULL;                  (rf_run lets the shutdown finish)
 */
struct signalfd_siginfo;
RF_API int rf_signal_wait(const sigset_t *set, struct signalfd_siginfo *info);

/*
 * A file descriptor that is readable when loop has work for
 * rf_loop_run_once(): a completion waiting to be processed, a message from
 * another thread, tasks ready to run. Poll it for POLLIN (poll, epoll, a
 * host loop's I/O watcher); do not read, write or close it: the loop owns
 * it and closes it in rf_loop_free(). It is an eventfd registered with the
 * ring (IORING_REGISTER_EVENTFD), created at the first call and readable
 * at once; rf_loop_run_once() clears it and sets it again if it leaves
 * work behind, so a host that polls it alone never misses a completion.
 * With IORING_SETUP_DEFER_TASKRUN a completion reaches the CQ only when
 * the loop's thread asks the kernel for it; the eventfd is signalled
 * before that, when the completion is queued, which is why the ring's own
 * fd is not offered (poll on it misses such completions).
 * Returns the fd (>= 0), or -EINVAL, -EXDEV (wrong thread), or the error
 * of eventfd() / io_uring_register_eventfd(). Does not suspend.
 */
RF_API int rf_loop_fd(rf_loop *loop);

/* rf_loop_run_once flag: do not block, even when nothing is ready. */
#define RF_RUN_NOWAIT 1u

/*
 * One scheduler pass, for a host that drives the loop from its own event
 * loop (UV_RUN_NOWAIT / UV_RUN_ONCE): take in the messages from other
 * threads and the completions there are, run every task ready at that
 * point once (until it suspends), submit what those tasks queued, take in
 * the completions that came meanwhile, and return. Without RF_RUN_NOWAIT,
 * a pass that finds nothing ready first blocks until something completes
 * or a message arrives (if nothing could ever come, it returns -EDEADLK
 * at once, as rf_loop_run_forever does, unless the loop has
 * RF_LOOP_SERVE). rf_loop_stop() has no effect here: every call returns
 * after one pass.
 * Returns 1 while the loop has work left (tasks alive, operations in
 * flight, or mail), 0 when it is idle (no task alive, nothing in flight:
 * a host can stop polling and free it), or -EINVAL (NULL loop, unknown
 * flags), -EXDEV (wrong thread), -EBUSY (called from a task, or while the
 * loop runs), -EDEADLK, or an error from the ring.
 * Blocks only without RF_RUN_NOWAIT; call it from outside any task.
 */
RF_API int rf_loop_run_once(rf_loop *loop, unsigned flags);

/*
 * The timeout a host should give its poll on rf_loop_fd() (as
 * uv_backend_timeout), in *timeout_ms: 0 when rf_loop_run_once() has work
 * to do right now (tasks ready, mail, completions waiting), -1 (wait for
 * the fd) otherwise, ready to pass to poll(2) or epoll_wait(2). Timers
 * need no timeout here: they are in the ring, and make the fd readable
 * when they fire. Consult it after calling into the loop from outside a
 * pass (rf_loop_spawn, say), which does not touch the fd.
 * Returns 0, -EINVAL (NULL loop or timeout_ms), -EXDEV (wrong thread).
 * Does not suspend.
 */
RF_API int rf_loop_timeout_ms(const rf_loop *loop, int *timeout_ms);

/* ------------------------------------------------------------------------ */
/* Many cores: a loop per core                                              */
/* ------------------------------------------------------------------------ */

/*
 * A group of loops, each on a thread of its own, that share nothing: each
 * has its own ring, run queue, stacks and timers, and they talk only by
 * messages (the mailbox of the Embedding section). A task lives on one
 * loop for good.
 *
 * What crosses loops:
 *  - rf_spawn_on() starts a task on another loop and returns a handle to
 *    it that rf_join, rf_join_nocancel, rf_wait_for, rf_cancel, rf_done,
 *    rf_task_retain and rf_task_release take from any loop (the waiting
 *    task suspends; its thread does not block);
 *  - the _threadsafe calls of the Embedding section.
 * What does not: every other call on a task handle (rf_gather, rf_wait,
 * as_completed, groups) and the sync objects (queue, event, mutex,
 * semaphore, condition) are loop-local and return -EXDEV when used from
 * another loop's task.
 */
typedef struct rf_loops rf_loops;

/* rf_loops_opts.flags */
#define RF_LOOPS_PIN 1u        /* pin loop i's thread to the i-th CPU of the
                                * process's affinity mask (i modulo their
                                * number) */
#define RF_LOOPS_KEEP_GOING 2u /* a failed entry does not cancel the others */

typedef struct rf_loops_opts {
    unsigned loops;           /* how many; 0: one per CPU of the process's
                               * affinity mask (sched_getaffinity) */
    unsigned flags;           /* RF_LOOPS_* */
    const rf_loop_opts *loop; /* each loop's options (copied; NULL:
                               * defaults); RF_LOOP_SERVE is implied */
} rf_loops_opts;

/* Most loops in a group. */
#define RF_LOOPS_MAX 1024u

/*
 * Start a group: create opts->loops threads, each with its own loop
 * (pinned with RF_LOOPS_PIN), and, once every loop exists, run entry(arg)
 * as the main task of each (rf_loop_index() tells it which it is). Returns
 * when every loop runs its entry: 0 with *out set, or, with nothing left
 * running, -EINVAL (NULL out or entry, loops > RF_LOOPS_MAX, bad loop
 * options), -ENOMEM, -EAGAIN (no thread), -EBUSY (called from a task), or
 * the error of the first rf_loop_new that failed.
 *
 * The group runs until every entry has returned and then until every task
 * of every loop has returned (each loop cancels its own after its entry
 * has returned, as rf_run does, while all loops keep serving each other's
 * messages); then each thread frees its loop. An entry fails when it
 * returns RF_ERR_PTR(code) or is cancelled (-ECANCELED); the first to
 * fail cancels the other entries (asyncio.TaskGroup), unless
 * RF_LOOPS_KEEP_GOING. Ownership of arg stays with the caller: it must
 * live until rf_loops_wait() returns. Blocks the calling thread until the
 * loops are created; does not suspend.
 */
RF_API int rf_loops_start(rf_loops **out, rf_fn entry, void *arg,
                          const rf_loops_opts *opts);

/*
 * Wait until the group has ended (see rf_loops_start) and its threads
 * have exited. results (may be NULL): an array of rf_loops_count()
 * pointers that receives each entry's return value. Returns 0 if no entry
 * failed, else the first failure's code (-ECANCELED for a cancelled
 * entry, the code of RF_ERR_PTR, or the loop's run error), with *failed
 * (may be NULL) set to that loop's index (-1 if none failed). -EINVAL for
 * NULL ls, -EALREADY if the group was already waited for, -EBUSY from a
 * task of the group (it would wait for itself). Blocks the calling thread.
 */
RF_API int rf_loops_wait(rf_loops *ls, void **results, int *failed);

/*
 * From any thread: cancel every loop's entry, as a failure does; the group
 * then ends as described at rf_loops_start. 0, -EINVAL (NULL ls), or
 * -EALREADY (the group has already ended). Does not suspend or block.
 */
RF_API int rf_loops_stop(rf_loops *ls);

/* Free a group that was waited for (NULL: nothing). -EBUSY if it was not
 * waited for. Does not suspend. */
RF_API int rf_loops_free(rf_loops *ls);

/*
 * rf_loops_start, rf_loops_wait and rf_loops_free in one call: the
 * many-core rf_run. Returns what rf_loops_start returns if it fails, else
 * what rf_loops_wait returns.
 */
RF_API int rf_run_loops(rf_fn entry, void *arg, const rf_loops_opts *opts,
                        void **results, int *failed);

/*
 * The counters of every loop of ls, summed (ring_flags and guard_mode:
 * the first loop's), each loop's read as rf_loop_stats_threadsafe does; a loop's own are
 * rf_loop_stats_threadsafe(rf_loops_loop(ls, i), ...). Any thread, while
 * the group runs (see rf_loops_loop). Returns 0, or -EINVAL (NULL ls or
 * out). Does not suspend.
 */
RF_API int rf_loops_stats(const rf_loops *ls, rf_stats *out);

/* How many loops ls has (0 for NULL). Any thread. Does not suspend. */
RF_API unsigned rf_loops_count(const rf_loops *ls);

/*
 * Loop i of ls, from any thread, while the group runs (until its thread
 * frees it, after every entry and task of the group has returned); NULL
 * if ls is NULL or i is out of range. Does not suspend.
 */
RF_API rf_loop *rf_loops_loop(const rf_loops *ls, unsigned i);

/* The group of the calling thread's loop, NULL if it has none (or the
 * thread has no loop). Does not suspend. */
RF_API rf_loops *rf_loops_current(void);

/*
 * The index of the calling thread's loop in its group (0 for a loop
 * outside any group), or -EPERM if the thread runs no loop. Does not
 * suspend.
 */
RF_API int rf_loop_index(void);

/*
 * Spawn fn(arg) as a task on loop (another loop of this process: of a
 * group, or one that runs on its own thread), from a task; on the calling
 * task's own loop it is rf_spawn_opts. opts are copied. Returns the
 * handle, which the caller owns (release it with rf_task_release, from
 * any loop), or NULL with errno: EINVAL (NULL loop or fn, bad stack size),
 * EPERM (not called from a task), ECANCELED/ETIMEDOUT (the caller was
 * cancelled or is past its deadline before the request was sent),
 * ESHUTDOWN (loop is shutting down or being freed: nothing was spawned),
 * ENOMEM, or the errors of rf_spawn on that loop. Ownership of arg passes
 * to fn once the task exists (only then). Suspends: the task is created on
 * loop's thread, and the handle comes back in a message (a round trip
 * between the loops; no thread blocks).
 */
RF_API rf_task *rf_spawn_on(rf_loop *loop, rf_fn fn, void *arg,
                            const rf_spawn_options *opts);

/* ---- rf_chan: a bounded channel between loops ---- */

/*
 * A channel carries pointers from tasks of any loop (or, without waiting,
 * any thread) to the tasks of one loop: the loop that created it, the
 * receiving loop. One sender's items arrive in the order it sent them. A
 * receiving loop that sleeps is woken once for a burst of items (one
 * mailbox message and at most one eventfd write, not one per item). A
 * full channel makes senders wait (backpressure); a closed one refuses
 * sends and, once emptied, receives. Ownership of an item passes from
 * the sender to the receiver. See docs/loops.md, "Channels".
 */
typedef struct rf_chan rf_chan;

/* Most items a channel holds. */
#define RF_CHAN_MAX (1u << 24)

/*
 * Create a channel of capacity items (1..RF_CHAN_MAX, rounded up to a
 * power of two, at least 2) whose receiving loop is the calling thread's
 * loop. On
 * success *out owns it (rf_chan_free). Returns 0, -EINVAL (NULL out, a
 * capacity out of range), -EPERM (the thread runs no loop), -ENOMEM.
 * Does not suspend.
 */
RF_API int rf_chan_new(rf_chan **out, size_t capacity);

/*
 * Send item, from a task of any loop: 0 once it is in the channel;
 * -EPIPE if the channel is closed (before or while waiting: the item was
 * not sent); -ECANCELED / -ETIMEDOUT (the caller's cancellation or
 * deadline, before there was room: not sent); -EPERM outside a task;
 * -EINVAL for NULL ch. Suspends while the channel is full.
 */
RF_API int rf_chan_send(rf_chan *ch, void *item);

/* rf_chan_send without waiting, from any thread: -EAGAIN when full. */
RF_API int rf_chan_try_send(rf_chan *ch, void *item);

/*
 * Receive the next item into *item, from a task of the receiving loop:
 * 0; -EPIPE once the channel is closed and empty; -ECANCELED /
 * -ETIMEDOUT (nothing received); -EXDEV from another loop; -EPERM
 * outside a task; -EINVAL for NULL ch or item. Suspends while the
 * channel is empty; meanwhile the loop waits for other threads' sends
 * (it does not end with -EDEADLK: close the channel to end the wait).
 */
RF_API int rf_chan_recv(rf_chan *ch, void **item);

/* rf_chan_recv without waiting, on the receiving loop's thread: -EAGAIN
 * when empty (and not closed). */
RF_API int rf_chan_try_recv(rf_chan *ch, void **item);

/*
 * Close ch, from any thread: sends are refused with -EPIPE from now on,
 * waiting senders get -EPIPE, and receivers get the items left, then
 * -EPIPE. Closing twice is harmless. 0, or -EINVAL for NULL. Does not
 * suspend.
 */
RF_API int rf_chan_close(rf_chan *ch);

/*
 * Free ch, on the receiving loop's thread: it is closed first (senders
 * waiting for room get -EPIPE), then the senders still inside a call are
 * waited for, without suspending (a few instructions, or a message round
 * trip to a sender's loop, whose messages this loop runs meanwhile); no
 * call may be made with ch after. Items still in it are dropped (they are
 * pointers: take them first with rf_chan_try_recv if they own memory).
 * 0 (NULL: nothing), -EBUSY (receivers still wait on it), -EXDEV (another
 * thread), -EPERM (no loop). Blocks briefly; does not suspend.
 */
RF_API int rf_chan_free(rf_chan *ch);

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Every call of this section and the next (except those marked "does not
 * suspend") is one io_uring operation:
 *  - it suspends only the calling task (the loop runs the others) and
 *    returns the kernel's result, or a negative errno;
 *  - outside a task it returns -EPERM; on a kernel whose io_uring lacks
 *    the operation (a line on stderr says so, once per loop, unless the
 *    loop is RF_LOOP_QUIET) a file call runs its system call on the
 *    loop's offload pool instead (rf_to_thread's rules then apply: it is
 *    not interrupted once queued), and a socket call returns -EOPNOTSUPP
 *    (rf_socket and rf_shutdown fall back to their system calls, which do
 *    not block);
 *  - the task's deadline (rf_deadline_set) bounds it: the operation is
 *    cancelled in the kernel and returns -ETIMEDOUT when the deadline
 *    passes first; past the deadline it returns -ETIMEDOUT without being
 *    submitted;
 *  - rf_cancel of the task cancels it in the kernel and the call returns
 *    -ECANCELED after the kernel is done with it (its buffers are never
 *    touched after the return). An operation that had already completed
 *    when the cancellation came returns its real result: an fd from
 *    rf_open or rf_accept, bytes moved by a read or a write. Such an fd is
 *    the caller's, to use or to close; the cancellation shows at the next
 *    call (which returns -ECANCELED at once);
 *  - bad input is refused before anything is submitted: a negative fd
 *    gives -EBADF; a NULL buffer (or path, or struct) where a length says
 *    there is data gives -EFAULT; an out-of-range count or offset -EINVAL.
 *    Other errors are the kernel's (read(2), write(2), ... say which).
 * Offsets: off >= 0 reads or writes at that offset (pread/pwrite), off ==
 * -1 uses and advances the file position (read/write, and the only choice
 * for pipes and sockets). One transfer moves at most 0x7ffff000 bytes, as
 * read(2) does; transfers may be short.
 */

/* openat(AT_FDCWD, path, flags, mode) / openat(dirfd, ...). Returns the new
 * fd (the caller owns it) or a negative errno. Suspends. */
RF_API int rf_open(const char *path, int flags, unsigned mode);
RF_API int rf_openat(int dirfd, const char *path, int flags, unsigned mode);

/* Read / write up to len bytes at off. Returns the bytes moved (0 at end of
 * file for a read) or a negative errno. Owns nothing: buf is the caller's
 * and is no longer used once the call returns. Suspends.
 * Writing to a pipe or socket whose reader is gone: like write(2),
 * rf_write raises SIGPIPE, whose default action kills the process; only
 * where SIGPIPE is ignored or handled does it return -EPIPE. On a socket use
 * rf_send / rf_send_all, which add MSG_NOSIGNAL and return -EPIPE (or
 * -ECONNRESET) instead; for a pipe, ignore SIGPIPE (signal(SIGPIPE,
 * SIG_IGN)) before writing. rf_writev and rf_write_all behave the same. */
RF_API ssize_t rf_read(int fd, void *buf, size_t len, int64_t off);
RF_API ssize_t rf_write(int fd, const void *buf, size_t len, int64_t off);

/* Vectored: cnt entries of iov (0..IOV_MAX), which must stay valid until
 * the call returns. Suspends. */
RF_API ssize_t rf_readv(int fd, const struct iovec *iov, int cnt, int64_t off);
RF_API ssize_t rf_writev(int fd, const struct iovec *iov, int cnt, int64_t off);

/*
 * Loop over short transfers until len bytes are moved. rf_read_full stops
 * early only at end of file (it then returns fewer than len bytes);
 * rf_write_all only on an error (a write that moves 0 bytes is -EIO).
 * Returns the bytes moved, or the negative errno that ended the loop,
 * even after partial progress: the bytes already moved are in buf or in
 * the file, and done (may be NULL) receives how many in every case.
 * With off >= 0 each transfer continues at the offset where the last one
 * ended. Bad input is refused before anything is submitted, len 0
 * included: -EBADF (negative fd), -EFAULT (NULL buf, len > 0), -EINVAL
 * (off < -1), -EPERM (outside a task). Each transfer is bounded by the
 * deadline and ended by cancellation as any call (-ETIMEDOUT,
 * -ECANCELED, with done telling what moved before). rf_write_all to a
 * pipe or socket whose reader is gone raises SIGPIPE, as rf_write does
 * (see above): the process dies of it unless SIGPIPE is ignored; on a
 * socket, rf_send_all is the same loop without the signal. Owns nothing.
 * Suspends.
 */
RF_API ssize_t rf_read_full(int fd, void *buf, size_t len, int64_t off,
                            size_t *done);
RF_API ssize_t rf_write_all(int fd, const void *buf, size_t len, int64_t off,
                            size_t *done);

/* fsync(2), fdatasync(2). Return 0 or a negative errno. Suspend. */
RF_API int rf_fsync(int fd);
RF_API int rf_fdatasync(int fd);

/* fallocate(2): mode FALLOC_FL_*, off >= 0, len > 0 (else -EINVAL).
 * Returns 0 or a negative errno. Suspends. */
RF_API int rf_fallocate(int fd, int mode, int64_t off, int64_t len);

/* statx(2) into *out (NULL path or out: -EFAULT). Returns 0 or a negative
 * errno. Suspends. */
struct statx;
RF_API int rf_statx(int dirfd, const char *path, int flags, unsigned mask,
                    struct statx *out);

/*
 * Close fd, whatever it is (file or socket). First every operation of this
 * loop still in flight on fd is cancelled (IORING_ASYNC_CANCEL_FD, or one
 * by one on a kernel without it) and the call waits until each has
 * returned to its task, then the fd is closed (IORING_OP_CLOSE). So a
 * task blocked in rf_recv or rf_accept on fd returns -ECANCELED, a
 * socket's peer sees the close at once, and a later open that reuses the
 * number never meets an operation meant for the old file.
 * rf_close is not a cancellation point and ignores the deadline: it closes
 * fd even in a cancelled task, so an fd is never leaked. Returns 0, or
 * the error of close(2) (the fd is released even then), -EBADF for a
 * negative fd, -EPERM outside a task (use close(2) there). Suspends.
 */
RF_API int rf_close(int fd);

/* ------------------------------------------------------------------------ */
/* Sockets                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * socket(2), through IORING_OP_SOCKET where the kernel has it (then it is
 * an operation as above, and suspends), else socket(2) itself, which never
 * blocks; also callable outside a task (then it does not suspend).
 * Returns the new fd, which the caller owns (close it with rf_close, or
 * close(2) outside a task), or a negative errno: socket(2)'s, or those of
 * an operation (-ECANCELED, -ETIMEDOUT) in a task.
 */
RF_API int rf_socket(int domain, int type, int protocol);

/*
 * Fill *ss and *len from a numeric address ("127.0.0.1", "::1", "[::1]"; NULL
 * or "" = 0.0.0.0; "localhost" = 127.0.0.1) and a port. Names are not
 * resolved (a DNS lookup would block the loop). Returns 0, -EINVAL for
 * anything else (*ss zeroed), -EFAULT for a NULL ss or len. Writes
 * nothing it does not own; any thread. Does not suspend.
 */
struct sockaddr_storage;
RF_API int rf_addr_parse(const char *host, uint16_t port,
                         struct sockaddr_storage *ss, socklen_t *len);

/*
 * A listening TCP socket on host:port (numeric, as rf_addr_parse; port 0
 * picks a free port: read it with rf_sock_port), SO_REUSEADDR and
 * SOCK_CLOEXEC set; backlog <= 0 means SOMAXCONN. On success *fd (owned by
 * the caller) is set and 0 returned; else a negative errno (-EFAULT for a
 * NULL fd) and *fd = -1. Plain system calls that do not block: callable
 * anywhere, does not suspend.
 */
RF_API int rf_tcp_listen(const char *host, uint16_t port, int backlog, int *fd);

/*
 * rf_tcp_listen with flags: RF_TCP_REUSEPORT sets SO_REUSEPORT, so that
 * each loop of a group can listen on the same port with a socket of its
 * own and the kernel spreads the connections among them (by a hash of
 * each connection's addresses and ports: even over many connections,
 * lumpy over a few; see Many cores in the README). Every socket bound to
 * the port must have it, from the same user. -EINVAL for an unknown flag;
 * otherwise as rf_tcp_listen. Does not suspend.
 */
#define RF_TCP_REUSEPORT 1u
RF_API int rf_tcp_listen_flags(const char *host, uint16_t port, int backlog,
                               unsigned flags, int *fd);

/* The local port a socket is bound to (getsockname), or a negative errno.
 * Does not suspend. */
RF_API int rf_sock_port(int fd);

/* rf_socket + rf_connect to host:port (numeric, as rf_addr_parse). On
 * success *fd, owned by the caller (SOCK_CLOEXEC), is set and 0 returned;
 * on failure the socket is closed, *fd = -1 and the error returned:
 * -EFAULT (NULL fd), -EINVAL (not a numeric address), -EPERM (outside a
 * task), or those of rf_socket and rf_connect (-ECONNREFUSED,
 * -ECANCELED, -ETIMEDOUT, ...). Suspends. */
RF_API int rf_tcp_connect(const char *host, uint16_t port, int *fd);

/*
 * accept4(2): the connection's fd (the caller owns it) or a negative errno;
 * addr/addrlen as accept4 (both NULL, or addrlen non-NULL: else -EFAULT),
 * flags SOCK_NONBLOCK / SOCK_CLOEXEC. Suspends.
 * Out of descriptors (EMFILE, ENFILE), it does not spin: it sleeps 1 ms,
 * 2 ms, ... up to 256 ms between tries, counting each in
 * rf_stats.accept_emfile, while the loop keeps serving the connections
 * already open; the deadline and rf_cancel end that wait as any other.
 * Graceful stop: once the loop stops accepting it returns -ESHUTDOWN at
 * once, and an accept waiting then ends with -ESHUTDOWN (unless a
 * connection had already been accepted: that fd is returned).
 */
RF_API int rf_accept(int fd, struct sockaddr *addr, socklen_t *addrlen,
                     int flags);

/*
 * Multishot accept for servers: one IORING_ACCEPT_MULTISHOT accept stays
 * armed on the listening socket and every connection the kernel accepts is
 * queued in the acceptor; tasks take them one at a time. The acceptor
 * belongs to the loop it was opened on; close it with rf_acceptor_close
 * (before the listening socket is closed is best; after an rf_close of
 * the listening socket, rf_acceptor_next hands out the connections still
 * queued and then returns -ECANCELED, and never accepts again). One still
 * open when its loop is freed is cancelled and freed then (the fds it
 * queued are closed).
 *
 * The queue holds RF_ACCEPTOR_QUEUE connections (a few more in a burst):
 * when it is full the acceptor stops accepting, and new clients wait in
 * the listening socket's backlog (listen(2)), costing no fd, until the
 * tasks have taken half of the queue; rf_stats.acceptor_pauses counts the
 * pauses. A server that falls behind thus holds a bounded number of fds.
 *
 * rf_acceptor_open: *out receives the acceptor (the caller owns it);
 *   flags as rf_accept. Nothing is submitted before the first next.
 *   Returns 0, -EFAULT, -EBADF, -EPERM (outside a task), -ENOMEM,
 *   -EOPNOTSUPP. Does not suspend.
 * rf_acceptor_next: the next accepted fd (the caller owns it), or a
 *   negative errno: the accept's own error (the multishot is re-armed at
 *   the next call), -ECANCELED, -ETIMEDOUT (the task's deadline),
 *   -ESHUTDOWN (the loop stopped accepting), -EBUSY (another task waits
 *   in it), -EXDEV (another loop's acceptor), -EINVAL (NULL). EMFILE and
 *   ENFILE back off as in rf_accept. Suspends while the queue is empty.
 * rf_acceptor_close: cancels the armed accept, waits for its last CQE,
 *   closes the fds still queued and frees the acceptor. Not a cancellation
 *   point. Returns 0, -EPERM, -EXDEV, -EBUSY (a task waits in next:
 *   cancel it first). NULL is accepted. Suspends.
 * After rf_acceptor_close, and once its loop has released an acceptor
 * left open while the loop is freed, the handle is stale: next and close
 * return -ESRCH.
 */
typedef struct rf_acceptor rf_acceptor;
#define RF_ACCEPTOR_QUEUE 128u
RF_API int rf_acceptor_open(int listen_fd, int flags, rf_acceptor **out);
RF_API int rf_acceptor_next(rf_acceptor *a);
RF_API int rf_acceptor_close(rf_acceptor *a);

/* connect(2). Returns 0 or a negative errno (-ECONNREFUSED, ...). NULL addr:
 * -EFAULT. Suspends. */
RF_API int rf_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);

/*
 * recv(2) / send(2). Return the bytes moved (rf_recv: 0 when the peer has
 * shut down its side) or a negative errno (-ECONNRESET when the peer
 * reset, -EPIPE after the connection is shut down: MSG_NOSIGNAL is always
 * added to sends, so no SIGPIPE). Suspend.
 */
RF_API ssize_t rf_recv(int fd, void *buf, size_t len, int flags);
RF_API ssize_t rf_send(int fd, const void *buf, size_t len, int flags);

/*
 * Send all of buf[0..len): rf_send over and over until every byte has
 * gone, the socket counterpart of rf_write_all (the same loop; it stops
 * only on an error). flags are passed to each send, with MSG_NOSIGNAL
 * added: a peer that has gone away gives -EPIPE or -ECONNRESET, never
 * SIGPIPE. Returns len, or the negative errno that ended the loop, even
 * after partial progress: done (may be NULL) receives, in every case, how
 * many bytes the kernel took (they are on their way to the peer; the rest
 * was not sent). Errors:
 *   -EPIPE, -ECONNRESET  the peer closed or reset the connection;
 *   -ETIMEDOUT, -ECANCELED  the task's deadline, its cancellation (the
 *            send in flight is cancelled in the kernel; one that had
 *            already moved some bytes completes with that count instead,
 *            and the loop ends at its next send);
 *   -EIO     a send moved 0 bytes of a non-empty buffer: neither progress
 *            nor an error, and trying again could spin for ever;
 *   -EAGAIN  with MSG_DONTWAIT in flags, the socket buffer was full;
 *   -EBADF (negative fd), -EFAULT (NULL buf with len > 0), -EPERM
 *            (outside a task): refused before anything is sent, len 0
 *            included; the kernel's errors of send(2) otherwise.
 * len 0 sends nothing and returns 0. Owns nothing: buf is the caller's
 * and is no longer used once the call returns. Suspends.
 */
RF_API ssize_t rf_send_all(int fd, const void *buf, size_t len, int flags,
                           size_t *done);

/* recvmsg(2) / sendmsg(2). msg and what it points to must stay valid until
 * the call returns (NULL msg: -EFAULT). Suspend. */
RF_API ssize_t rf_recvmsg(int fd, struct msghdr *msg, int flags);
RF_API ssize_t rf_sendmsg(int fd, const struct msghdr *msg, int flags);

/* shutdown(2): IORING_OP_SHUTDOWN in a task where the kernel has it (then
 * it is an operation as above, and suspends), else shutdown(2) itself,
 * which does not block (outside a task: does not suspend). The fd stays
 * the caller's. Returns 0, -EBADF (negative fd), or a negative errno:
 * shutdown(2)'s (-ENOTCONN, ...), or -ECANCELED / -ETIMEDOUT in a task. */
RF_API int rf_shutdown(int fd, int how);

/*
 * Wait until fd is ready for events (POLLIN, POLLOUT, ...): for code that
 * must wait on an fd it does not own or read itself. Returns the ready
 * events (a POLL* mask, POLLHUP/POLLERR included when they happen) or a
 * negative errno. Suspends.
 */
RF_API int rf_poll(int fd, unsigned events);

/* ------------------------------------------------------------------------ */
/* Coordination: queues, events, mutexes, semaphores, conditions, groups    */
/* ------------------------------------------------------------------------ */

/*
 * asyncio.Queue, Event, Lock, Semaphore, Condition, TaskGroup and
 * asyncio.wait, for the tasks of one loop.
 *
 * Storage: every object is a small fixed-size struct the caller owns; it
 * may live in another struct, in a global or on a task's stack, and needs
 * no allocation (a queue's ring of items may be the caller's too). Call
 * the _init function before use; an object must not be copied or moved
 * while in use. The objects are not thread-safe: use one only from the
 * tasks of one loop. While tasks of a loop wait on an object, a call on
 * it from another loop's task or from another thread returns -EXDEV (a
 * best-effort diagnosis: such a call is a data race). The calls that do not suspend may also
 * be made outside any task, on the loop's thread (to fill a queue or set
 * an event before the loop runs, say).
 *
 * Waits: the calls that wait are suspending calls (conventions at the top:
 * -EPERM outside a task). They suspend only the calling task, and end on:
 *  - what they wait for: success;
 *  - the caller's cancellation: -ECANCELED, and the caller has left the
 *    object's list of waiters (nothing is taken from the object);
 *  - the caller's deadline (rf_deadline_set): -ETIMEDOUT, likewise. This
 *    is the way to bound a wait: set a deadline, wait, clear it.
 * A wait with a deadline may also fail with -ENOMEM or -EBUSY when the
 * deadline's timer cannot be set up (the wait is then not begun).
 * A call that can complete at once (an item is there, the lock is free)
 * does not suspend and succeeds even if the caller is cancelled or past
 * its deadline, like rf_join on a finished task.
 *
 * Fairness and hand-off: waiters are served in the order they began to
 * wait (FIFO). Whoever makes progress possible hands it over directly:
 * rf_queue_put gives its item to the first waiting getter, rf_mutex_unlock
 * makes the first waiter the owner, rf_sem_release gives the permit to the
 * first waiter. So a put wakes exactly one getter, nobody can overtake a
 * waiter, and a waiter that was handed something before it ran again
 * returns success with what it was given, even if it was cancelled (or
 * reached its deadline) in the meantime, before or after being served: it
 * leaves the list only when it runs. Its cancellation then shows at its
 * next suspending call. Nothing is ever lost.
 * Calls that wake all waiters (rf_event_set, rf_queue_close,
 * rf_cond_broadcast, the end of a join) do it in one pass.
 */

/* ---- rf_queue: a bounded FIFO of pointers (asyncio.Queue) ---- */

typedef struct rf_queue {
    /* private */
    void *impl_[12];
} rf_queue;

/*
 * Prepare q to hold at most capacity items. storage: an array of capacity
 * pointers that the caller owns and keeps valid until rf_queue_fini(), or
 * NULL to have the queue allocate it (freed by rf_queue_fini()). A
 * capacity of 0 makes a rendezvous queue: every put waits for a get.
 * Returns 0, -EINVAL (NULL q, capacity above RF_QUEUE_MAX), -ENOMEM.
 * Does not suspend.
 */
RF_API int rf_queue_init(rf_queue *q, size_t capacity, void **storage);

/*
 * Release what rf_queue_init allocated. Items still queued are dropped
 * (they are the caller's to free; drain them first with rf_queue_try_get).
 * Returns 0, -EINVAL, or -EBUSY when tasks still wait on q (nothing is
 * done: close the queue and let them leave first). Does not suspend.
 */
RF_API int rf_queue_fini(rf_queue *q);

/*
 * queue.put(): append item (any pointer, NULL included). Waits while the
 * queue is full. Ownership of item passes to the queue on success only.
 * Returns 0, -EPIPE (the queue is closed, or was closed while waiting:
 * the item was not queued), -ECANCELED, -ETIMEDOUT, -EPERM, -EINVAL,
 * -EXDEV. Suspends when the queue is full.
 */
RF_API int rf_queue_put(rf_queue *q, void *item);

/*
 * queue.get(): take the oldest item into *item. Waits while the queue is
 * empty. Returns 0, -EPIPE (the queue is closed and empty: every item was
 * delivered), -ECANCELED, -ETIMEDOUT, -EPERM, -EINVAL, -EXDEV.
 * Suspends when the queue is empty.
 */
RF_API int rf_queue_get(rf_queue *q, void **item);

/* put_nowait() / get_nowait(): as above without waiting. Return 0, -EAGAIN
 * when full / empty, -EPIPE when closed (and, for a get, empty), -EINVAL
 * (NULL q, or NULL item for a get), -EXDEV (tasks of another loop wait on
 * q). Ownership of the item passes as for rf_queue_put / rf_queue_get, on
 * success only. May be called outside a task, on the loop's thread. Do
 * not suspend. */
RF_API int rf_queue_try_put(rf_queue *q, void *item);
RF_API int rf_queue_try_get(rf_queue *q, void **item);

/*
 * queue.task_done(): a consumer has finished processing one item it got.
 * When every item ever put has been marked done, the tasks in
 * rf_queue_join() are woken. Returns 0, -EINVAL (more calls than items
 * put, or NULL q), -EXDEV. Does not suspend.
 */
RF_API int rf_queue_task_done(rf_queue *q);

/*
 * queue.join(): wait until every item put so far has been marked done
 * with rf_queue_task_done(). Returns 0, -ECANCELED, -ETIMEDOUT, -EPERM,
 * -EINVAL, -EXDEV. Suspends unless nothing is unfinished.
 */
RF_API int rf_queue_join(rf_queue *q);

/*
 * Close q (Go's close(ch), asyncio's Queue.shutdown()): every put from
 * now on, and every put waiting, fails with -EPIPE; gets still receive
 * the items that are queued, then fail with -EPIPE (tasks waiting in a
 * get on an empty queue are woken with it at once). Closing twice is
 * harmless. Returns 0, -EINVAL, -EXDEV. Does not suspend.
 */
RF_API int rf_queue_close(rf_queue *q);

/* Items queued now, the capacity, and whether q is closed. Do not suspend. */
RF_API size_t rf_queue_size(const rf_queue *q);
RF_API size_t rf_queue_capacity(const rf_queue *q);
RF_API bool rf_queue_closed(const rf_queue *q);

/* ---- rf_event (asyncio.Event) ---- */

typedef struct rf_event {
    /* private */
    void *impl_[4];
} rf_event;

/* Prepare e, not set. Returns 0 or -EINVAL. Does not suspend. */
RF_API int rf_event_init(rf_event *e);
/* Returns 0, -EINVAL, -EBUSY (tasks wait on e). Does not suspend. */
RF_API int rf_event_fini(rf_event *e);
/* Set the flag and wake every waiter, in one pass. Returns 0, -EINVAL,
 * -EXDEV. Does not suspend. */
RF_API int rf_event_set(rf_event *e);
/* Clear the flag. Returns 0 or -EINVAL. Does not suspend. */
RF_API int rf_event_clear(rf_event *e);
/* Whether the flag is set. Does not suspend. */
RF_API bool rf_event_is_set(const rf_event *e);
/*
 * Wait until the flag is set. A waiter woken by rf_event_set returns 0
 * even if the flag was cleared again before it ran. Returns 0,
 * -ECANCELED, -ETIMEDOUT, -EPERM, -EINVAL, -EXDEV. Suspends unless set.
 */
RF_API int rf_event_wait(rf_event *e);

/* ---- rf_mutex (asyncio.Lock) ---- */

typedef struct rf_mutex {
    /* private */
    void *impl_[4];
} rf_mutex;

/* Prepare m, unlocked. Returns 0 or -EINVAL. Does not suspend. */
RF_API int rf_mutex_init(rf_mutex *m);
/* Returns 0, -EINVAL, -EBUSY (m is held or tasks wait on it). Does not
 * suspend. */
RF_API int rf_mutex_fini(rf_mutex *m);
/*
 * Acquire m for the calling task, waiting in FIFO order while another task
 * holds it. Not recursive. A task that returns while holding m leaves it
 * locked. Returns 0, -EDEADLK (the caller already holds m), -ECANCELED,
 * -ETIMEDOUT, -EPERM, -EINVAL, -EXDEV. Suspends while m is held.
 */
RF_API int rf_mutex_lock(rf_mutex *m);
/* Acquire m without waiting: 0, -EBUSY (held, or tasks wait for it),
 * -EDEADLK, -EPERM (outside a task), -EINVAL. Does not suspend. */
RF_API int rf_mutex_try_lock(rf_mutex *m);
/* Release m; the first waiter, if any, becomes the owner. Returns 0,
 * -EPERM (the caller does not hold m, or is not a task), -EINVAL.
 * Does not suspend. */
RF_API int rf_mutex_unlock(rf_mutex *m);

/* ---- rf_sem (asyncio.BoundedSemaphore) ---- */

typedef struct rf_sem {
    /* private */
    void *impl_[5];
} rf_sem;

/*
 * Prepare s with value permits available out of max (1 <= max <= RF_SEM_MAX,
 * value <= max). Returns 0 or -EINVAL. Does not suspend.
 */
RF_API int rf_sem_init(rf_sem *s, unsigned value, unsigned max);
/* Returns 0, -EINVAL, -EBUSY (tasks wait on s). Does not suspend. */
RF_API int rf_sem_fini(rf_sem *s);
/* Take a permit, waiting in FIFO order while none is free. Returns 0,
 * -ECANCELED, -ETIMEDOUT, -EPERM, -EINVAL, -EXDEV. Suspends while none is
 * free. */
RF_API int rf_sem_acquire(rf_sem *s);
/* Take a permit without waiting: 0, -EAGAIN, -EINVAL. Does not suspend. */
RF_API int rf_sem_try_acquire(rf_sem *s);
/* Give a permit back (to the first waiter, if any). Returns 0,
 * -EOVERFLOW (every permit is already free: more releases than
 * acquires), -EINVAL, -EXDEV. Does not suspend. */
RF_API int rf_sem_release(rf_sem *s);
/* Permits free now. Does not suspend. */
RF_API unsigned rf_sem_value(const rf_sem *s);

/* ---- rf_cond (asyncio.Condition) ---- */

typedef struct rf_cond {
    /* private */
    void *impl_[3];
} rf_cond;

/* Prepare c. Returns 0 or -EINVAL. Does not suspend. */
RF_API int rf_cond_init(rf_cond *c);
/* Returns 0, -EINVAL, -EBUSY (tasks wait on c). Does not suspend. */
RF_API int rf_cond_fini(rf_cond *c);
/*
 * Release m (which the caller must hold), wait for a signal, and take m
 * again before returning, in every case (cancellation and the deadline
 * included: the re-lock itself is not interruptible). Wake-ups may be
 * spurious in the usual sense that the condition may no longer hold: wait
 * in a loop. Returns 0, -ECANCELED, -ETIMEDOUT, -EPERM (not a task, or m
 * not held: nothing was done), -EINVAL, -EXDEV. Suspends.
 */
RF_API int rf_cond_wait(rf_cond *c, rf_mutex *m);
/* Wake the first waiter / every waiter. Returns 0, -EINVAL, -EXDEV.
 * Do not suspend. */
RF_API int rf_cond_signal(rf_cond *c);
RF_API int rf_cond_broadcast(rf_cond *c);

/* ---- failure of a task ---- */

/*
 * A task fails by returning RF_ERR_PTR(err), err a negative errno in
 * [-4095, -1] (the kernel's ERR_PTR convention: no real pointer has those
 * values), or by being cancelled. rf_group and rf_wait's
 * RF_FIRST_EXCEPTION use this definition.
 */
#define RF_ERR_PTR(err) ((void *)(intptr_t)(err))
#define RF_IS_ERR_PTR(p) ((uintptr_t)(p) >= (uintptr_t)-4095)

/*
 * 0 if t has not returned or returned successfully; else why it failed:
 * the err of its RF_ERR_PTR result, or -ECANCELED if it was cancelled
 * (and returned no error of its own). -EINVAL for NULL. Does not suspend.
 */
RF_API int rf_task_error(const rf_task *t);

/* ---- rf_group: a task group (asyncio.TaskGroup, a trio nursery) ---- */

typedef struct rf_group {
    /* private */
    void *impl_[8];
} rf_group;

/* Prepare an empty group. Returns 0 or -EINVAL. Does not suspend. */
RF_API int rf_group_init(rf_group *g);

/*
 * Spawn fn(arg) as a member of g (rf_spawn_opts; opts may be NULL). The
 * returned handle belongs to the group and stays valid until
 * rf_group_fini() (take your own with rf_task_retain to keep it longer).
 * When a member fails (see rf_task_error), the group records the first
 * failure and cancels every other member. Returns the handle, or NULL
 * with errno EINVAL (NULL g or fn), EPERM (not on a loop's thread),
 * EXDEV (the group's members belong to another loop), ENOMEM, ECANCELED
 * (the group has already failed: no new member is started), or the errors
 * of rf_spawn; ownership of arg passes to fn only on success. Does not
 * suspend.
 */
RF_API rf_task *rf_group_spawn(rf_group *g, rf_fn fn, void *arg,
                               const rf_spawn_options *opts);

/*
 * Wait until every member has returned. Returns 0 if none failed, else
 * the first failure (rf_task_error of the member that failed first;
 * rf_group_failed names it). If the caller is cancelled or reaches its
 * deadline while waiting, every member is cancelled and awaited, then
 * -ECANCELED / -ETIMEDOUT is returned. -EPERM outside a task, -EINVAL,
 * -EXDEV, -EBUSY (another task is already waiting on g). The group may be waited on again, and members added (unless it
 * has failed). Suspends unless every member has returned.
 */
RF_API int rf_group_wait(rf_group *g);

/* Cancel every member still running (they fail with -ECANCELED unless
 * one failed before); the group's first failure is then -ECANCELED if
 * none came before. Returns 0, -EINVAL (NULL g), -EXDEV (another thread
 * than the members' loop's). Does not suspend. */
RF_API int rf_group_cancel(rf_group *g);

/* The member that failed first, or NULL. Does not suspend. */
RF_API rf_task *rf_group_failed(const rf_group *g);

/*
 * Release the group's handles and memory. Members still running are
 * cancelled and detached (they finish on their own; nothing waits for
 * them): call rf_group_wait first to have them finished. NULL is ignored.
 * Does not suspend.
 */
RF_API void rf_group_fini(rf_group *g);

/* ---- rf_wait (asyncio.wait) ---- */

#define RF_FIRST_COMPLETED 1 /* return when any task has returned */
#define RF_FIRST_EXCEPTION 2 /* ... when any has failed, or all returned */
#define RF_ALL_COMPLETED 3   /* ... when every task has returned */

/* A timeout meaning "no timeout". */
#define RF_FOREVER UINT64_MAX

/*
 * asyncio.wait(): wait until the condition `mode` holds over tasks[0..n)
 * or timeout_ns (RF_FOREVER: none) has passed, then split the tasks into
 * done (returned) and pending (still running), each in the order of
 * tasks. done and pending are arrays of n entries (or NULL if not
 * wanted); *ndone and *npending (may be NULL) receive their counts. The
 * tasks are not cancelled or released. Returns 0 (the condition holds),
 * -ETIMEDOUT (time ran out first, or the caller's deadline came),
 * -ECANCELED (the caller was cancelled); the sets are filled in all three
 * cases. Without filling them: -EINVAL (NULL tasks, n == 0 as asyncio
 * refuses an empty set, a NULL element, a bad mode), -EPERM, -EXDEV, -EDEADLK (the caller is in the
 * set), -ENOMEM, -EBUSY (no SQE for the timer). Suspends unless the
 * condition already holds.
 */
RF_API int rf_wait(rf_task *const *tasks, size_t n, int mode,
                   uint64_t timeout_ns, rf_task **done, size_t *ndone,
                   rf_task **pending, size_t *npending);

/* ------------------------------------------------------------------------ */
/* Ring                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * A no-op through the ring: submit one IORING_OP_NOP on the loop's ring and
 * wait for its completion, by the same path as every I/O call (so it is
 * batched with the other tasks' operations of the same scheduler pass, is
 * bounded by the task's deadline and ends early on cancellation). For
 * benchmarks of the ring path and for tests; it does no work of its own.
 * Returns 0 (the NOP's result), or without submitting anything:
 *   -EPERM     not called from a task;
 *   -ECANCELED the task is cancelled;
 *   -ETIMEDOUT the task's deadline has passed;
 *   -EBUSY     the submission queue stays full.
 * A cancellation or deadline that comes while the NOP is in flight ends
 * it with -ECANCELED / -ETIMEDOUT unless it completed first (it usually
 * has: a NOP completes as soon as the kernel sees it), in which case 0 is
 * returned and the cancellation shows at the next suspending call.
 * Owns nothing. Suspends.
 */
RF_API int rf_nop(void);

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
 * blocks on it. One pool may serve loops on any number of threads. The
 * calls a loop's tasks make in one scheduler pass are queued together at
 * the pass's end, as the ring's operations are submitted there, on slots
 * reserved for them (one per other ready task, at most 63 and half the
 * free room); the pass's first call is queued at once when a worker is
 * free to take it. So a call waits for its pass's end at the latest (a
 * task that keeps the loop busy delays it, as it delays I/O), and a
 * caller on another loop may wait for room that such a reservation holds
 * until that pass ends.
 *
 * Cancellation: a call cannot be interrupted once accepted (queued, or
 * gathered for its pass's end). rf_cancel of a
 * task in rf_to_thread / rf_pool_call does not resume it before the worker
 * has returned from fn (so arg may live on the task's stack); the call
 * then returns 0 and delivers fn's real result, and the cancellation
 * shows at the task's next suspending call. A task cancelled (or past its
 * deadline) before its call was accepted (while it waits for room
 * included) gets -ECANCELED (-ETIMEDOUT) and fn is not called.
 */
typedef struct rf_pool rf_pool;

/*
 * Create a pool of `threads` workers (0: $RINGFIBER_POOL_THREADS, else
 * min(32, CPUs + 4) as asyncio's default executor) with a queue of
 * queue_capacity calls (0: 1024). On success *poolp owns the pool; free
 * it with rf_pool_free(). Returns 0, -EINVAL (NULL poolp, more than
 * RF_POOL_MAX_THREADS threads, a queue above RF_POOL_MAX_QUEUE), -ENOMEM,
 * or -EAGAIN (no more threads).
 * Does not suspend. Any thread.
 */
RF_API int rf_pool_new(unsigned threads, unsigned queue_capacity,
                       rf_pool **poolp);

/*
 * Stop and join the workers, after they have run every call already
 * queued (their results are delivered to their loops as usual; this
 * blocks the calling thread meanwhile). Returns 0, or -EBUSY, freeing
 * nothing, while a task waits for room in the queue, or while a loop
 * holds slots reserved for the calls of its current scheduler pass (a
 * call made in the pass reserves them; the pass's end fills them or
 * gives them back, so that loop must run for them to go on: this thread
 * may be that loop's). The caller
 * guarantees that no call is submitted concurrently or afterwards: the
 * handle is stale from then on (rf_pool_call, rf_pool_free,
 * rf_pool_threads and rf_loop_set_pool refuse it with -ESRCH, errno
 * ESRCH). NULL is accepted and ignored. Any thread, outside the pool's
 * workers.
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
 * call with rf_loop_set_pool_threads() workers (0: as rf_pool_new), owned and
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
 * Returns 0, -EINVAL (NULL loop, more than RF_POOL_MAX_THREADS), -EXDEV,
 * -EBUSY (the pool exists already). Does not suspend. */
RF_API int rf_loop_set_pool_threads(rf_loop *loop, unsigned threads);

/* ------------------------------------------------------------------------ */
/* The loop-stall detector                                                  */
/* ------------------------------------------------------------------------ */

/*
 * asyncio's debug-mode slow-callback warning, with a backtrace: a watchdog
 * thread notices when the loop has not switched tasks nor ended a
 * scheduler pass for longer than a threshold (a task blocks the thread)
 * and reports the task, how long it has held the loop so far, and a
 * backtrace of the loop thread taken at that moment. The task and the
 * time need no signal: the watchdog reads them. For the backtrace the
 * thread is sent the real-time signal SIGRTMIN + RF_STALL_SIGNAL_OFFSET
 * and records it in the handler, installed with SA_RESTART. Where that
 * cannot work the report has no backtrace and says why
 * (rf_stall_info.no_backtrace): the program has its own handler for that
 * signal, or the loop thread blocks it (as a program that takes its
 * signals through a signalfd does; the signal is then not sent), or the
 * thread did not answer within 200 ms. As with any signal, a blocking
 * call that is never restarted (nanosleep, poll...) made by the stalled
 * task may return early with EINTR, once per stall. When the task finally
 * gives the loop back,
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
    int loop_index;         /* its index in its group of loops
                             * (rf_loop_index), -1 outside any group */
    const char *task_name;  /* the task holding the loop ("task-<id>" if
                             * it has no name); "(scheduler)" outside any
                             * task; "?" if its record could not be read */
    uint64_t task_id;       /* 0 outside any task or if unknown */
    uint64_t held_ns;       /* held so far; in all when `ended` */
    uint64_t threshold_ns;
    bool ended;             /* false: the first report, the loop is still
                             * held; true: the task gave it back */
    void *const *backtrace; /* first report: the loop thread's stack, as
                             * backtrace(3) gives it; else NULL */
    int backtrace_len;
    const char *no_backtrace; /* a first report without a backtrace: why,
                               * in words ("the loop thread blocks signal
                               * SIGRTMIN+3", "the program has its own
                               * handler for signal SIGRTMIN+3", "the loop
                               * thread did not answer signal SIGRTMIN+3
                               * within 200 ms", ...); NULL when there is a
                               * backtrace, and in the `ended` report */
} rf_stall_info;

/* A report. Called on the watchdog thread: it must not call loop or task
 * functions; info is valid during the call only. */
typedef void (*rf_stall_fn)(const rf_stall_info *info, void *user);

/* The default report: one line on stderr naming the task and the time,
 * then the backtrace, one frame a line (backtrace_symbols_fd), or, on the
 * same line, "no backtrace: " and why. Keeps no reference to info; does not
 * suspend. */
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

/* ------------------------------------------------------------------------ */
/* Looking inside a loop: its tasks, and what each one waits on             */
/* ------------------------------------------------------------------------ */

/*
 * Go's goroutine dump and asyncio's all_tasks(), for a loop: every live
 * task with its state and, for a waiting one, what it waits on, since
 * when, and where it was spawned from. Nothing of it costs a loop that
 * nobody looks at more than three stores per wait and one per spawn (no
 * clock read: a wait's start is stamped with the loop's approximate
 * clock, refreshed at each entry into the kernel, so a wait's length is
 * known to within a few milliseconds). docs/inspect.md says more.
 */

/* What a waiting task waits on. */
typedef enum rf_wait_on {
    RF_WAIT_ON_NONE = 0,   /* not waiting (ready or running) */
    RF_WAIT_ON_IO,         /* an operation in the ring: op, fd (-1: none) */
    RF_WAIT_ON_SLEEP,      /* rf_sleep: until its end, until_ns */
    RF_WAIT_ON_TASK,       /* a task's end (rf_join, rf_wait_for, rf_gather):
                            * object is the task's handle */
    RF_WAIT_ON_TASKS,      /* the next of a set (rf_as_completed_next,
                            * rf_group_wait, rf_wait): object is the set */
    RF_WAIT_ON_QUEUE_GET,  /* object: the rf_queue */
    RF_WAIT_ON_QUEUE_PUT,
    RF_WAIT_ON_QUEUE_JOIN,
    RF_WAIT_ON_EVENT,      /* object: the rf_event */
    RF_WAIT_ON_MUTEX,      /* object: the rf_mutex; holder: who holds it */
    RF_WAIT_ON_SEM,        /* object: the rf_sem */
    RF_WAIT_ON_COND,       /* object: the rf_cond */
    RF_WAIT_ON_OFFLOAD,    /* rf_to_thread: its call, on a pool thread;
                            * object is the function called */
    RF_WAIT_ON_POOL,       /* rf_to_thread: room in the pool's queue */
    RF_WAIT_ON_ACCEPT,     /* rf_acceptor_next: fd is the listening socket */
    RF_WAIT_ON_CHAN_SEND,  /* object: the rf_chan */
    RF_WAIT_ON_CHAN_RECV,
    RF_WAIT_ON_LOOP,       /* another loop's answer (rf_spawn_on, a join
                            * or cancel of a task on another loop) */
    RF_WAIT_ON_CLOSE,      /* rf_close: the operations in flight on fd */
    RF_WAIT_ON_SHUTDOWN,   /* a graceful shutdown: the other tasks' end */
    RF_WAIT_ON_COUNT
} rf_wait_on;

/* A task's state as the visitor reports it. */
#define RF_TASK_READY 0
#define RF_TASK_RUNNING 1
#define RF_TASK_WAITING 2

/* One live task, as rf_loop_tasks() shows it. Valid during the call. */
typedef struct rf_task_info {
    rf_task *task;          /* its handle: rf_task_retain() it to keep it */
    uint64_t id;
    const char *name;       /* its name, "task-<id>" if it has none */
    int state;              /* RF_TASK_READY, _RUNNING, _WAITING */
    rf_wait_on wait;        /* RF_WAIT_ON_NONE unless waiting */
    const char *wait_name;  /* wait in a word, the operation's for
                             * RF_WAIT_ON_IO: "recv", "sleep", "join",
                             * "mutex", "accept"... ("" when not waiting) */
    unsigned op;            /* RF_WAIT_ON_IO: its IORING_OP_* */
    int fd;                 /* the descriptor waited on, else -1 */
    const void *object;     /* the object waited on (see rf_wait_on), else
                             * NULL */
    rf_task *holder;        /* RF_WAIT_ON_MUTEX: the task that holds it
                             * (NULL: none, the lock is being handed to
                             * this task); RF_WAIT_ON_TASK: the task */
    uint64_t waited_ns;     /* how long it has waited, on the loop's
                             * clock, to within a few milliseconds */
    uint64_t until_ns;      /* RF_WAIT_ON_SLEEP: the sleep's end, on
                             * rf_now_ns()'s scale; else 0 */
    uint64_t deadline_ns;   /* its rf_deadline_set() deadline, 0: none */
    bool cancelled;         /* rf_cancel() was called */
    rf_fn fn;               /* the function it runs */
    void *spawned_from;     /* an address in the function that spawned it
                             * (after its call of rf_spawn*); NULL if the
                             * runtime spawned it (rf_loop_run_until_complete's
                             * own task gets its caller's) */
} rf_task_info;

/* Called once per task; a non-zero return stops the walk. Runs on the
 * loop's thread; it must not suspend, nor free or spawn tasks. */
typedef int (*rf_task_visit_fn)(const rf_task_info *info, void *arg);

/*
 * asyncio.all_tasks(), libuv's uv_walk(): call fn for every live task of
 * loop, in the order they were spawned. From a task of loop or from its
 * thread outside any task. Returns 0, fn's first non-zero return value,
 * -EINVAL (NULL loop or fn) or -EXDEV (another thread: see
 * rf_loop_dump_threadsafe). Does not suspend.
 */
RF_API int rf_loop_tasks(rf_loop *loop, rf_task_visit_fn fn, void *arg);

/* Flags of the dumps. */
#define RF_DUMP_BACKTRACES 1u /* each suspended task's stack, walked: where
                               * in the code it waits (see below) */

/*
 * Write a human-readable dump of loop's tasks to fd: a header (the loop,
 * its thread, the number of tasks by state), one line per task (id, name,
 * state, what it waits on and for how long, its deadline, whether it is
 * cancelled, where it was spawned from, symbolized), and totals by state
 * and by what is waited on, with the longest wait of each, so that "9,812
 * tasks in recv, 3 in mutex for 40 s" shows at a glance.
 *
 * RF_DUMP_BACKTRACES adds each task's backtrace. That of a suspended task
 * is taken on its own stack: the loop resumes it for the time of a
 * backtrace(3) call inside the runtime's switch, then returns to the dump
 * (the task's own code does not run, its state does not change). Only a
 * dump made in a task of loop walks other tasks' stacks (the threadsafe
 * and signal dumps are made so); called outside any task it lists them
 * without. A task with less than 8 KiB of its stack left is not walked,
 * nor one not started yet (it has no stack). The dump says why where it
 * does not walk.
 *
 * The dump is built in memory, then written whole (on EINTR and short
 * writes, the rest; the write blocks the loop's thread if fd does). From a
 * task of loop or its thread. Returns 0, -EINVAL, -EXDEV, -ENOMEM, or the
 * write's error. Does not suspend (the loop stops for the dump's length).
 */
RF_API int rf_loop_dump(rf_loop *loop, int fd, unsigned flags);

/*
 * The same dump as a string: *text (NUL-terminated, free() it) and *len
 * (may be NULL). Same rules and errors as rf_loop_dump, without the write.
 */
RF_API int rf_loop_dump_text(rf_loop *loop, unsigned flags, char **text,
                             size_t *len);

/*
 * The dump, asked for from another thread: the request is mail for the
 * loop, which builds the text at its next pass; this thread blocks until
 * it has (at most timeout_ns; RF_FOREVER: no limit). Returns 0 with
 * *text (free() it) and *len (may be NULL), -EINVAL, -EDEADLK (called on
 * loop's own thread: use rf_loop_dump_text), -EAGAIN (the mailbox is
 * full), -ESHUTDOWN (the loop is being freed), -ETIMEDOUT (the loop did
 * not take its mail in time: a stalled loop, or a host that does not run
 * it; the request is abandoned, its text freed when it comes). Blocks.
 */
RF_API int rf_loop_dump_threadsafe(rf_loop *loop, unsigned flags,
                                   uint64_t timeout_ns, char **text,
                                   size_t *len);

/*
 * Go's SIGQUIT dump, opt in: on signal signo every loop of the process
 * writes its dump (flags) to fd at its next pass; the process goes on.
 * The handler only writes a byte to a pipe; a thread of the runtime
 * ("rf-dump") takes it and posts a request to each loop, so the dump
 * never runs in the handler and a loop asleep in the ring wakes for it.
 * signo 0 uninstalls (the previous disposition comes back). The
 * environment variable RINGFIBER_DUMP_SIGNAL (a number or a name:
 * SIGUSR2, USR2) installs it for a whole program at its first
 * rf_loop_new, writing to stderr. Returns 0, -EINVAL (a signal that
 * cannot be caught, a bad fd), -EBUSY (the program has its own handler
 * for signo), -ENOMEM, -EAGAIN (no thread). Does not suspend.
 */
RF_API int rf_dump_signal(int signo, int fd, unsigned flags);

/*
 * Symbolize addr (a return address or a function's): "name+0xoff (file:line)"
 * where the debugging information has it ("name (file:line)" for a
 * function's own address), "name+0xoff" where only the symbol table has
 * it (static functions included), "module+0xoff" or the bare address
 * otherwise; written to buf (at most len bytes, always terminated; NULL
 * with len 0: the length only). Returns the length the full text has (as
 * snprintf), or -EINVAL (NULL buf with len > 0). Any thread. Blocks while
 * it reads the symbol tables (milliseconds: a lone call reads them and
 * lets them go, keeping no descriptor open; a dump or a stall report
 * reads them once for all its lookups); from a task the lookup runs on a
 * thread of the runtime, which has the stack it needs. Does not suspend.
 */
RF_API int rf_symbolize(const void *addr, char *buf, size_t len);

/* ------------------------------------------------------------------------ */
/* Metrics: what a monitoring system scrapes                                */
/* ------------------------------------------------------------------------ */

/* Buckets of the scheduling-delay histogram: bucket i counts delays below
 * 2^i microseconds (i < RF_DELAY_BUCKETS - 1), the last one the rest. */
#define RF_DELAY_BUCKETS 22
/* Operations are counted by opcode, IORING_OP_* below this (the rest in
 * the last slot). */
#define RF_METRICS_OPS 64

/*
 * A loop's counters and gauges, as rf_loop_metrics_threadsafe copies them.
 * Every field is read whole (the loop writes them with relaxed atomic
 * stores), but not all at one instant: a field may be a pass newer than
 * another.
 */
typedef struct rf_loop_metrics {
    rf_stats stats;          /* as rf_loop_stats_threadsafe */
    uint64_t tasks_ready;    /* gauge: in the run queue, at the last pass */
    uint64_t idle_ns;        /* time spent asleep in the ring (libuv's
                              * uv_metrics_idle_time) */
    uint64_t bytes_read;     /* by read, readv, recv, recvmsg */
    uint64_t bytes_written;  /* by write, writev, send, sendmsg */
    uint64_t ops_completed[RF_METRICS_OPS]; /* by IORING_OP_*: the
                              * operations tasks submit (reads, writes,
                              * sends, receives, accepts, connects...),
                              * not the runtime's own (sleeps' timeouts,
                              * the multishot accepts of rf_acceptor,
                              * rf_close's close) */
    uint64_t offload_calls;  /* rf_to_thread / rf_pool_call returned */
    uint64_t offload_wait_ns; /* their time from the call until a worker
                               * took it, in all */
    uint64_t offload_in_flight; /* gauge: this loop's calls not returned
                                 * yet (gathered for the pass end,
                                 * queued, or running on a worker) */
    bool sched_delay_on;     /* RF_LOOP_SCHED_DELAY */
    uint64_t sched_delay_count;
    uint64_t sched_delay_sum_ns;
    uint64_t sched_delay_max_ns;
    uint64_t sched_delay_buckets[RF_DELAY_BUCKETS];
} rf_loop_metrics;

/*
 * From any thread, without stopping the loop: loop's metrics into *out.
 * Returns 0 or -EINVAL. Does not suspend, does not block.
 */
RF_API int rf_loop_metrics_threadsafe(const rf_loop *loop, rf_loop_metrics *out);

/*
 * Every loop of the process, in Prometheus' text exposition format
 * (version 0.0.4), into buf (at most len bytes, always terminated when
 * len > 0): ringfiber_* counters and gauges with a loop="<n>" label (n:
 * the order in which the process created its loops, from 0) and, for
 * operations, op="<name>". Returns the length of the whole text (as
 * snprintf: call again with a larger buffer if it is >= len, with room to
 * spare: counters gain digits between two calls), -EINVAL (NULL buf with
 * len > 0), -ENOMEM, or -EOVERFLOW (a text over 2 GiB). Any thread; does
 * not suspend; holds the process's list of loops' lock while it copies
 * the loops' counters, not while it formats.
 */
RF_API int rf_metrics_format(char *buf, size_t len);

/* ------------------------------------------------------------------------ */
/* Fast path (not API: names starting with rf__ may change in any release)  */
/* ------------------------------------------------------------------------ */

typedef struct rf__xfer {
    void *fctx;
    void *data;
} rf__xfer;
typedef struct rf__plan {
    void *to;   /* context to jump to; NULL: no switch, from holds the rc */
    void *from; /* the context being left */
} rf__plan;
RF_API rf__plan rf__yield_begin(void);
RF_API rf__xfer rf__jump(void *to, void *from);
RF_API int rf__yield_end(rf__xfer tr);

#if !defined(RINGFIBER_BUILDING) && !defined(RF_NO_INLINE_YIELD)
static inline int rf_yield(void)
{
    rf__plan p = rf__yield_begin();
    if (!p.to)
        return (int)(intptr_t)p.from;
    return rf__yield_end(rf__jump(p.to, p.from));
}
#endif

#ifdef __cplusplus
}
#endif

#endif /* RINGFIBER_H */
