/*
 * Shared helpers for the ringfiber cmocka tests.
 *
 * Checks inside tasks: cmocka reports a failed assert_*() by longjmp()ing
 * back to its test runner. Doing that from a task would jump off the task's
 * stack into the main stack while the loop still believes the task is
 * running, corrupting the loop (and every later test in the executable).
 * So code that runs inside a task uses RFT_CHECK*() below: a failed check
 * prints the expression, the values and the location, counts the failure
 * and lets the task carry on (or return, with `if (!RFT_CHECK(...)) return
 * NULL;`). The helpers that run a loop (rft_run, rft_end) then assert with
 * cmocka, on the main stack, that no check failed.
 *
 * Scenarios that must crash or be refused (stack overflow, seccomp) run in a
 * forked child (rft_fork); the parent checks the exit status and stderr.
 */
#ifndef RINGFIBER_TEST_HELPERS_H
#define RINGFIBER_TEST_HELPERS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ringfiber.h"

#if defined(__SANITIZE_ADDRESS__)
#define RFT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RFT_ASAN 1
#endif
#endif
#ifndef RFT_ASAN
#define RFT_ASAN 0
#endif
#if defined(__SANITIZE_THREAD__)
#define RFT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RFT_TSAN 1
#endif
#endif
#ifndef RFT_TSAN
#define RFT_TSAN 0
#endif
#define RFT_SANITIZED (RFT_ASAN || RFT_TSAN)
/* ThreadSanitizer follows each task as a fiber, keeps at most 8,128
 * threads and fibers at once ("Thread limit exceeded. Dying.") and
 * spends ~0.9 MB of memory on each: a test that holds more tasks alive
 * at once caps its count with RFT_ALIVE_CAP, or skips under it where
 * the count is the point. */
#define RFT_TSAN_ALIVE_MAX 2000
#define RFT_ALIVE_CAP(n) (RFT_TSAN && (n) > RFT_TSAN_ALIVE_MAX ? RFT_TSAN_ALIVE_MAX : (n))

#define RFT_UNUSED __attribute__((unused))

/* Exit code CTest treats as "skipped" (SKIP_RETURN_CODE). */
#define RFT_SKIP_CODE 77

#define RFT_MS RF_NSEC_PER_MSEC
#define RFT_SEC RF_NSEC_PER_SEC

/* ------------------------------------------------------------------------ */
/* Checks usable inside tasks                                               */
/* ------------------------------------------------------------------------ */

static int rft_failures_;

static RFT_UNUSED bool rft_check_(bool ok, const char *expr, const char *file,
                                  int line)
{
    if (!ok) {
        rft_failures_++;
        fprintf(stderr, "%s:%d: check failed: %s\n", file, line, expr);
    }
    return ok;
}

static RFT_UNUSED bool rft_check_int_(long long a, long long b, const char *ea,
                                      const char *eb, const char *file,
                                      int line)
{
    if (a != b) {
        rft_failures_++;
        fprintf(stderr, "%s:%d: check failed: %s == %s (%lld != %lld)\n",
                file, line, ea, eb, a, b);
        return false;
    }
    return true;
}

/* Both evaluate to true when the check passed. */
#define RFT_CHECK(cond) rft_check_(!!(cond), #cond, __FILE__, __LINE__)
#define RFT_CHECK_INT(a, b)                                                    \
    rft_check_int_((long long)(a), (long long)(b), #a, #b, __FILE__, __LINE__)
#define RFT_CHECK_PTR(a, b)                                                    \
    RFT_CHECK_INT((intptr_t)(const void *)(a), (intptr_t)(const void *)(b))

/* Start a test: forget the failures of an earlier one. */
static RFT_UNUSED void rft_begin(void) { rft_failures_ = 0; }

/* End a test's loop work: assert (cmocka, main stack) that no check failed. */
static RFT_UNUSED void rft_end(void)
{
    int failures = rft_failures_;
    rft_failures_ = 0;
    assert_int_equal(failures, 0);
}

/*
 * Run body(arg) as the main task of rf_run(). Returns what rf_run returned;
 * *result (may be NULL) receives body's result. Asserts that no RFT_CHECK
 * failed inside.
 */
static RFT_UNUSED int rft_run_rc(rf_fn body, void *arg, void **result)
{
    rft_begin();
    int rc = rf_run(body, arg, result);
    rft_end();
    return rc;
}

/* As rft_run_rc, and asserts that rf_run returned 0. Returns the result. */
static RFT_UNUSED void *rft_run(rf_fn body, void *arg)
{
    void *result = NULL;
    int rc = rft_run_rc(body, arg, &result);
    if (rc != 0)
        fprintf(stderr, "rf_run returned %d (%s)\n", rc, rf_strerror(rc));
    assert_int_equal(rc, 0);
    return result;
}

/*
 * Run entry(arg) on every loop of a group of `loops` loops, each created
 * with loop_flags (rf_run_loops). Asserts that the group returned 0 and
 * that no RFT_CHECK failed inside.
 */
static RFT_UNUSED void rft_run_loops(rf_fn entry, void *arg, unsigned loops,
                                     unsigned loop_flags)
{
    rft_begin();
    rf_loop_opts lo = {.flags = loop_flags};
    rf_loops_opts o = {.loops = loops, .loop = &lo};
    int rc = rf_run_loops(entry, arg, &o, NULL, NULL);
    if (rc != 0)
        fprintf(stderr, "rf_run_loops returned %d (%s)\n", rc, rf_strerror(rc));
    assert_int_equal(rc, 0);
    rft_end();
}

/* ------------------------------------------------------------------------ */
/* Clocks and counts                                                        */
/* ------------------------------------------------------------------------ */

static RFT_UNUSED uint64_t rft_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * RF_NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* An fd number no process can have open (fs.nr_open's ceiling is below
 * INT_MAX): a "bad fd" that stays bad whatever the test inherited. */
#define RFT_BAD_FD INT_MAX

/* Entries of a /proc directory (open fds, threads), "." and ".." excluded. */
static RFT_UNUSED int rft_count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Open fds of this process (the directory's own fd is counted each time, so
 * two counts compare). */
static RFT_UNUSED int rft_count_fds(void) { return rft_count_dir("/proc/self/fd"); }
static RFT_UNUSED int rft_count_threads(void) { return rft_count_dir("/proc/self/task"); }
/* The highest open fd of this process (the directory's own fd excluded),
 * or -1. */
static RFT_UNUSED int rft_highest_fd(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int self = dirfd(d), hi = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd != self && fd > hi)
            hi = fd;
    }
    closedir(d);
    return hi;
}

/* Lines of /proc/self/maps: the memory mappings (VMAs) of this process. */
static RFT_UNUSED long rft_count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    long n = 0;
    int c;
    while ((c = getc(f)) != EOF)
        if (c == '\n')
            n++;
    fclose(f);
    return n;
}

static RFT_UNUSED long rft_read_long_file(const char *path, long dflt)
{
    FILE *f = fopen(path, "r");
    long v = dflt;
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = dflt;
        fclose(f);
    }
    return v;
}

/* Counters of the loop running the calling task. */
static RFT_UNUSED rf_stats rft_stats(void)
{
    rf_stats s;
    memset(&s, 0, sizeof s);
    int rc = rf_loop_stats(rf_loop_current(), &s);
    RFT_CHECK_INT(rc, 0);
    return s;
}

/* Yield until *flag is set or `max` yields have passed; true if set. */
static RFT_UNUSED bool rft_yield_until(volatile int *flag, int max)
{
    for (int i = 0; i < max && !*flag; i++)
        rf_yield();
    return *flag != 0;
}

/* rf_as_completed_next as the tests read it: the task, or NULL with errno
 * 0 (every task handed out) or the error; *t is checked to be NULL
 * whenever no task is returned. */
static RFT_UNUSED rf_task *rft_ac_next(rf_as_completed *ac, void **res,
                                       int *status)
{
    rf_task *t = (rf_task *)(uintptr_t)1;
    int rc = rf_as_completed_next(ac, &t, res, status);
    if (rc > 0 && rc != 1)
        fail_msg("rf_as_completed_next returned %d", rc);
    if (rc == 1)
        return t;
    if (t != NULL)
        fail_msg("rf_as_completed_next: *t not NULL with %d", rc);
    errno = -rc;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Forked children                                                          */
/* ------------------------------------------------------------------------ */

typedef struct rft_child {
    bool exited;    /* WIFEXITED */
    int code;       /* WEXITSTATUS */
    bool signaled;  /* WIFSIGNALED */
    int sig;        /* WTERMSIG */
    char err[16384]; /* the child's stderr (truncated, NUL-terminated) */
    size_t err_len;
} rft_child;

/*
 * Children. rft_fork() runs fn(arg) in a forked child: quick, but the child
 * inherits this process's state (signal dispositions changed by cmocka,
 * pthread_once flags already set by an earlier loop, ...). rft_exec()
 * starts this test program afresh (/proc/self/exe --child NAME) and runs
 * the child case NAME listed in RFT_MAIN_CHILDREN: a brand-new process, as
 * a user's program would be. Either way the child's stderr goes to a pipe
 * read into out->err, core dumps are disabled, and fn's return value is the
 * exit code.
 */
typedef struct rft_child_case {
    const char *name;
    int (*fn)(void *);
    void *arg;
} rft_child_case;

static void rft_child_collect_(pid_t pid, int rd, rft_child *out)
{
    size_t cap = sizeof out->err - 1;
    for (;;) {
        char buf[4096];
        ssize_t n = read(rd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t take = (size_t)n;
        if (take > cap - out->err_len)
            take = cap - out->err_len;
        memcpy(out->err + out->err_len, buf, take);
        out->err_len += take;
    }
    out->err[out->err_len] = '\0';
    close(rd);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        assert_int_equal(errno, EINTR);
    out->exited = WIFEXITED(status);
    out->code = out->exited ? WEXITSTATUS(status) : -1;
    out->signaled = WIFSIGNALED(status);
    out->sig = out->signaled ? WTERMSIG(status) : 0;
}

/* Fork; in the child, send stderr to the pipe and return 0; in the parent
 * return the pid and *rd the read end. */
static pid_t rft_child_start_(int *rd)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit nocore = {0, 0};
        setrlimit(RLIMIT_CORE, &nocore);
        close(p[0]);
        dup2(p[1], STDERR_FILENO);
        close(p[1]);
        return 0;
    }
    close(p[1]);
    *rd = p[0];
    return pid;
}

/* The crash handlers cmocka installed are reset to the default first, so
 * that one never takes over in the child (it would longjmp into the
 * child's copy of the test runner). */
static RFT_UNUSED void rft_fork(int (*fn)(void *), void *arg, rft_child *out)
{
    memset(out, 0, sizeof *out);
    int rd = -1;
    pid_t pid = rft_child_start_(&rd);
    if (pid == 0) {
        static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT,
                                   SIGSYS};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            signal(sigs[i], SIG_DFL);
        int code = fn(arg);
        fflush(stdout);
        fflush(stderr);
        _exit(code);
    }
    rft_child_collect_(pid, rd, out);
}

static RFT_UNUSED void rft_exec(const char *child_case, rft_child *out)
{
    memset(out, 0, sizeof *out);
    int rd = -1;
    pid_t pid = rft_child_start_(&rd);
    if (pid == 0) {
        execl("/proc/self/exe", "/proc/self/exe", "--child", child_case, (char *)NULL);
        fprintf(stderr, "exec /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    rft_child_collect_(pid, rd, out);
}

/* Print how a child ended and its stderr (for a failing assertion's log). */
static RFT_UNUSED void rft_child_dump(const char *what, const rft_child *c)
{
    fprintf(stderr, "--- child %s: %s %d; stderr (%zu bytes):\n%s\n---\n",
            what, c->signaled ? "killed by signal" : "exit code",
            c->signaled ? c->sig : c->code, c->err_len, c->err);
}

static RFT_UNUSED bool rft_contains_ci(const char *hay, const char *needle)
{
    return strcasestr(hay, needle) != NULL;
}

/* ------------------------------------------------------------------------ */
/* main()                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Exit with RFT_SKIP_CODE when this machine cannot set up an io_uring ring
 * at all (sandbox, kernel.io_uring_disabled): the tests could only fail.
 */
static RFT_UNUSED void rft_require_io_uring(void)
{
    rf_loop_opts o;
    memset(&o, 0, sizeof o);
    o.flags = RF_LOOP_QUIET;
    rf_loop *l = NULL;
    int rc = rf_loop_new(&l, &o);
    if (rc == -EPERM || rc == -ENOSYS) {
        fprintf(stderr, "skipping: io_uring is not available here (%s)\n",
                rf_strerror(rc));
        exit(RFT_SKIP_CODE);
    }
    if (rc == 0)
        rf_loop_free(l);
}

/*
 * main(): `test_x` runs every case of the group; `test_x CASE` runs only
 * CASE (CTest registers each case so, one process per case, each with its
 * own timeout: a crash or a hang in one case hides no other). A CASE that
 * names no test is an error, not a silent pass.
 */
static RFT_UNUSED int rft_main(int argc, char **argv, const struct CMUnitTest *tests,
                               size_t n, int (*run)(void), const rft_child_case *children,
                               size_t nchildren)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    /* Sleeps share a timer within the thread's timer slack, and the tests
     * that count timers assume the kernel's default of 50 us; a runner may
     * have changed it (children inherit it). */
    prctl(PR_SET_TIMERSLACK, 50000UL, 0, 0, 0);
    if (argc > 2 && strcmp(argv[1], "--child") == 0) {
        for (size_t i = 0; i < nchildren; i++)
            if (strcmp(children[i].name, argv[2]) == 0)
                return children[i].fn(children[i].arg);
        fprintf(stderr, "%s: no child case named %s\n", argv[0], argv[2]);
        return 126;
    }
    if (argc > 1) {
        bool found = false;
        for (size_t i = 0; i < n; i++)
            if (strcmp(tests[i].name, argv[1]) == 0)
                found = true;
        if (!found) {
            fprintf(stderr, "%s: no test case named %s\n", argv[0], argv[1]);
            return 1;
        }
        cmocka_set_test_filter(argv[1]);
    }
    rft_require_io_uring();
    return run();
}

#define RFT_MAIN_CHILDREN(tests, children, nchildren)                          \
    static int rft_run_group_(void)                                            \
    {                                                                          \
        return cmocka_run_group_tests(tests, NULL, NULL);                      \
    }                                                                          \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        return rft_main(argc, argv, tests, sizeof tests / sizeof tests[0],     \
                        rft_run_group_, children, nchildren);                  \
    }

#define RFT_MAIN(tests) RFT_MAIN_CHILDREN(tests, NULL, 0)

#endif /* RINGFIBER_TEST_HELPERS_H */
