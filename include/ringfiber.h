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
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

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
    uint64_t accept_emfile;   /* accepts that met EMFILE/ENFILE and backed
                               * off (rf_accept, rf_acceptor_next) */
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
/* Files                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Every call of this section and the next (except those marked "does not
 * suspend") is one io_uring operation:
 *  - it suspends only the calling task (the loop runs the others) and
 *    returns the kernel's result, or a negative errno;
 *  - outside a task it returns -EPERM; on a kernel whose io_uring lacks
 *    the operation it returns -EOPNOTSUPP (a line on stderr says so, once
 *    per loop, unless the loop is RF_LOOP_QUIET);
 *  - the task's deadline (rf_deadline_set) bounds it: the operation is
 *    submitted with a linked timeout and returns -ETIMEDOUT when the
 *    deadline passes first; past the deadline it returns -ETIMEDOUT
 *    without being submitted;
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
 * file for a read) or a negative errno. Like write(2), rf_write to a pipe
 * or socket whose reader is gone raises SIGPIPE (then -EPIPE): ignore
 * SIGPIPE, or use rf_send on sockets. Suspends. */
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
 * ended. Suspends.
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
 * an operation as above), else socket(2) itself, which never blocks; also
 * callable outside a task (then it does not suspend). Returns the fd or a
 * negative errno.
 */
RF_API int rf_socket(int domain, int type, int protocol);

/*
 * Fill *ss and *len from a numeric address ("127.0.0.1", "::1", "[::1]"; NULL
 * or "" = 0.0.0.0; "localhost" = 127.0.0.1) and a port. Names are not
 * resolved (a DNS lookup would block the loop): -EINVAL for anything else.
 * Does not suspend.
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

/* The local port a socket is bound to (getsockname), or a negative errno.
 * Does not suspend. */
RF_API int rf_sock_port(int fd);

/* rf_socket + rf_connect to host:port (numeric). On success *fd is set and
 * 0 returned; on failure the socket is closed, *fd = -1 and the error
 * returned. Suspends. */
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
 * (before the listening socket is closed is best; an rf_close of the
 * listening socket makes rf_acceptor_next return -ECANCELED). One still
 * open when its loop is freed is cancelled and freed then (the fds it
 * queued are closed).
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
 */
typedef struct rf_acceptor rf_acceptor;
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

/* recvmsg(2) / sendmsg(2). msg and what it points to must stay valid until
 * the call returns (NULL msg: -EFAULT). Suspend. */
RF_API ssize_t rf_recvmsg(int fd, struct msghdr *msg, int flags);
RF_API ssize_t rf_sendmsg(int fd, const struct msghdr *msg, int flags);

/* shutdown(2): IORING_OP_SHUTDOWN in a task where the kernel has it, else
 * shutdown(2) itself (it does not block). Returns 0 or a negative errno. */
RF_API int rf_shutdown(int fd, int how);

/*
 * Wait until fd is ready for events (POLLIN, POLLOUT, ...): for code that
 * must wait on an fd it does not own or read itself. Returns the ready
 * events (a POLL* mask, POLLHUP/POLLERR included when they happen) or a
 * negative errno. Suspends.
 */
RF_API int rf_poll(int fd, unsigned events);

#ifdef __cplusplus
}
#endif

#endif /* RINGFIBER_H */
