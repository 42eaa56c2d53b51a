/*
 * Tasks: spawn / join and their results, several waiters, errors and bad
 * input, options (names, stack sizes), rf_done, reference counting
 * (retain / release / detach), start order, rf_gather.
 */
#include "helpers.h"
/* White box: which stacks are pooled (rf_task.pooled_stack). */
#include "../runtime/internal.h"

#include <dirent.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

static void *double_it(void *arg) { return (void *)((intptr_t)arg * 2); }

static void *sleep_then_return(void *arg)
{
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0);
    return arg;
}

/* ---- spawn / join -------------------------------------------------------- */

static void *spawn_join_many(void *arg)
{
    enum { N = 64 };
    rf_task *t[N];
    for (intptr_t i = 0; i < N; i++) {
        t[i] = rf_spawn(i % 2 ? double_it : sleep_then_return, (void *)i);
        if (!RFT_CHECK(t[i] != NULL))
            return NULL;
    }
    for (intptr_t i = N - 1; i >= 0; i--) {
        void *res = (void *)-1;
        RFT_CHECK_INT(rf_join(t[i], &res), 0);
        RFT_CHECK_INT((intptr_t)res, i % 2 ? i * 2 : i);
        RFT_CHECK(rf_done(t[i]));
        RFT_CHECK(!rf_cancelled(t[i]));
        /* Joining again: same answer, result may be NULL. */
        RFT_CHECK_INT(rf_join(t[i], NULL), 0);
        rf_task_release(t[i]);
    }
    return (void *)0x600d;
}

static void test_spawn_join_results(void **state)
{
    assert_ptr_equal(rft_run(spawn_join_many, NULL), (void *)0x600d);
}

static rf_task *g_target;
static volatile int g_waiters_done;

static void *waiter(void *arg)
{
    void *res = NULL;
    RFT_CHECK(!rf_done(g_target));
    RFT_CHECK_INT(rf_join(g_target, &res), 0);
    RFT_CHECK(rf_done(g_target));
    RFT_CHECK_PTR(res, (void *)42);
    g_waiters_done++;
    return NULL;
}

static void *three_waiters(void *arg)
{
    g_waiters_done = 0;
    g_target = rf_spawn(sleep_then_return, (void *)42);
    rf_task *w[3];
    for (int i = 0; i < 3; i++)
        w[i] = rf_spawn(waiter, NULL);
    RFT_CHECK(g_target && w[0] && w[1] && w[2]);
    RFT_CHECK_INT(rf_gather(w, 3, NULL), 0);
    RFT_CHECK_INT(g_waiters_done, 3);
    /* main is a fourth waiter, after the fact. */
    void *res = NULL;
    RFT_CHECK_INT(rf_join(g_target, &res), 0);
    RFT_CHECK_PTR(res, (void *)42);
    return NULL;
}

static void test_join_three_waiters(void **state) { rft_run(three_waiters, NULL); }

static void *join_after_finish(void *arg)
{
    rf_task *t = rf_spawn(double_it, (void *)21);
    RFT_CHECK(t != NULL);
    for (int i = 0; i < 10 && !rf_done(t); i++)
        rf_yield();
    RFT_CHECK(rf_done(t));
    rf_stats before = rft_stats();
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), 0);
    rf_stats after = rft_stats();
    RFT_CHECK_PTR(res, (void *)42);
    /* It did not suspend: no task was switched to. */
    RFT_CHECK_INT(after.switches, before.switches);
    return NULL;
}

static void test_join_after_finish_is_immediate(void **state)
{
    rft_run(join_after_finish, NULL);
}

static void *bad_joins(void *arg)
{
    void *res = (void *)0x77;
    RFT_CHECK_INT(rf_join(rf_self(), &res), -EDEADLK);
    RFT_CHECK_INT(rf_join(NULL, &res), -EINVAL);
    RFT_CHECK_PTR(res, (void *)0x77);
    return NULL;
}

static void test_join_errors(void **state)
{
    rft_run(bad_joins, NULL);

    /* Outside any task: -EPERM, even with a valid handle. */
    rf_loop *loop = NULL;
    assert_int_equal(rf_loop_new(&loop, NULL), 0);
    rf_task *t = rf_loop_spawn(loop, double_it, (void *)1, NULL);
    assert_non_null(t);
    void *res = (void *)0x77;
    assert_int_equal(rf_join(t, &res), -EPERM);
    assert_ptr_equal(res, (void *)0x77);
    assert_int_equal(rf_gather(&t, 1, NULL), -EPERM);
    assert_int_equal(rf_wait_for(t, RFT_MS, NULL), -EPERM);
    assert_int_equal(rf_sleep(RFT_MS), -EPERM);
    assert_int_equal(rf_yield(), -EPERM);
    rf_as_completed ac;
    assert_int_equal(rf_as_completed_init(&ac, &t, 1), -EPERM);
    assert_false(rf_done(t));
    assert_int_equal(rf_loop_free(loop), 0);
}

static void *bad_spawns(void *arg)
{
    errno = 0;
    RFT_CHECK(rf_spawn(NULL, NULL) == NULL);
    RFT_CHECK_INT(errno, EINVAL);

    rf_spawn_options o;
    memset(&o, 0, sizeof o);
    o.stack_size = RF_MIN_STACK_SIZE - 1;
    errno = 0;
    RFT_CHECK(rf_spawn_opts(double_it, NULL, &o) == NULL);
    RFT_CHECK_INT(errno, EINVAL);

    o.stack_size = 4096;
    errno = 0;
    RFT_CHECK(rf_spawn_opts(double_it, NULL, &o) == NULL);
    RFT_CHECK_INT(errno, EINVAL);

    o.stack_size = SIZE_MAX; /* too large (and overflows page rounding) */
    errno = 0;
    RFT_CHECK(rf_spawn_opts(double_it, NULL, &o) == NULL);
    RFT_CHECK_INT(errno, EINVAL);

    errno = 0;
    RFT_CHECK(rf_spawn_opts(NULL, NULL, NULL) == NULL);
    RFT_CHECK_INT(errno, EINVAL);

    errno = 0;
    RFT_CHECK(rf_loop_spawn(rf_loop_current(), NULL, NULL, NULL) == NULL);
    RFT_CHECK_INT(errno, EINVAL);

    /* Nothing was left behind by the refused spawns. */
    rf_stats s = rft_stats();
    RFT_CHECK_INT(s.tasks_alive, 1);
    return NULL;
}

static void test_spawn_errors(void **state)
{
    rft_run(bad_spawns, NULL);

    /* No loop on this thread. */
    errno = 0;
    assert_null(rf_spawn(double_it, NULL));
    assert_int_equal(errno, EPERM);
    rf_spawn_options o;
    memset(&o, 0, sizeof o);
    o.name = "x";
    errno = 0;
    assert_null(rf_spawn_opts(double_it, NULL, &o));
    assert_int_equal(errno, EPERM);
    errno = 0;
    assert_null(rf_loop_spawn(NULL, double_it, NULL, NULL));
    assert_int_equal(errno, EINVAL);
}

/* ---- stack sizes ------------------------------------------------------- */

static void *use_stack(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    volatile char *buf = __builtin_alloca(n);
    for (size_t i = 0; i < n; i += 512)
        buf[i] = (char)i;
    buf[n - 1] = 1;
    return (void *)(uintptr_t)(buf[0] + buf[n - 1]);
}

static void *stack_sizes(void *arg)
{
    rf_spawn_options o;
    memset(&o, 0, sizeof o);
    struct { size_t stack, use; } cases[] = {
        {RF_MIN_STACK_SIZE, 4 * 1024},     /* the minimum is accepted */
        {RF_MIN_STACK_SIZE + 1, 4 * 1024}, /* rounded up to pages */
        {20000, 8 * 1024},
        {256 * 1024, 200 * 1024}, /* a bigger stack really is bigger */
        {1024 * 1024, 900 * 1024},
        {0, 64 * 1024},           /* the default (128 KiB) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        o.stack_size = cases[i].stack;
        rf_task *t = rf_spawn_opts(use_stack, (void *)(uintptr_t)cases[i].use, &o);
        if (!RFT_CHECK(t != NULL)) {
            fprintf(stderr, "stack_size %zu: %s\n", cases[i].stack, strerror(errno));
            continue;
        }
        void *res = NULL;
        RFT_CHECK_INT(rf_join(t, &res), 0);
        RFT_CHECK_PTR(res, (void *)1);
        rf_task_release(t);
    }
    return NULL;
}

static void test_stack_sizes(void **state) { rft_run(stack_sizes, NULL); }

/* A frame with a local array (AddressSanitizer surrounds it with poisoned
 * redzones), on a stack of its own; it says where the array was. */
static void *deep_frame(void *arg)
{
    volatile char buf[2048];
    buf[0] = 1;
    *(volatile char **)arg = (char *)buf;
    return (void *)(uintptr_t)buf[0];
}

static void *unmapped_stack_reused(void *arg)
{
    (void)arg;
    rf_spawn_options o;
    memset(&o, 0, sizeof o);
    o.stack_size = 64 * 1024; /* not the default: unmapped when it ends */
    char *where = NULL;
    rf_task *t = rf_spawn_opts(deep_frame, &where, &o);
    if (!RFT_CHECK(t != NULL))
        return NULL;
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
#if defined(__SANITIZE_ADDRESS__)
    /* The stack is gone. The frames still on it when the task made its
     * last switch (its entry's, its exit's) never returned, so nothing
     * unpoisoned their redzones: the runtime must have cleared the
     * shadow, or the next mapping at these addresses (another stack, a
     * ring's SQE array) is reported as a stack-buffer-underflow. */
    long pg = sysconf(_SC_PAGESIZE);
    char *page = (char *)((uintptr_t)where & ~(uintptr_t)(pg - 1));
    void *bad = __asan_region_is_poisoned(page - 4 * pg, (size_t)pg * 6);
    if (!RFT_CHECK(bad == NULL))
        fprintf(stderr, "shadow still poisoned at %p (the stack's frame at "
                        "%p)\n", bad, (void *)where);
#else
    (void)where;
#endif
    return NULL;
}

/* The runtime clears the sanitizer's shadow of a stack it unmaps (found
 * when an io_uring SQE array was mapped where a task's stack had been). */
static void test_unmapped_stack_shadow_cleared(void **state)
{
    rft_run(unmapped_stack_reused, NULL);
}

/* The loop's default_stack_size option is used when spawn gives none. */
static void test_loop_default_stack_size(void **state)
{
    rf_loop_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.default_stack_size = 512 * 1024;
    rf_loop *loop = NULL;
    assert_int_equal(rf_loop_new(&loop, &lo), 0);
    void *res = NULL;
    rft_begin();
    assert_int_equal(rf_loop_run_until_complete(loop, use_stack,
                                                (void *)(uintptr_t)(400 * 1024), &res), 0);
    rft_end();
    assert_ptr_equal(res, (void *)1);
    assert_int_equal(rf_loop_free(loop), 0);
}

/* Out of address space for stacks: spawn fails with ENOMEM, and the loop
 * carries on with the tasks it has. In a forked child with a low
 * RLIMIT_AS (not under ASan or TSan, whose shadow memory needs the
 * address space). */
#if !RFT_ASAN && !RFT_TSAN
static void *sleep_until_cancelled(void *arg)
{
    RFT_CHECK_INT(rf_sleep(10 * RFT_SEC), -ECANCELED);
    return arg;
}

static void *spawn_until_enomem(void *arg)
{
    enum { MAX = 200000 };
    rf_task **t = calloc(MAX, sizeof *t);
    if (!RFT_CHECK(t != NULL))
        return NULL;
    int n = 0, err = 0;
    while (n < MAX) {
        errno = 0;
        t[n] = rf_spawn(sleep_until_cancelled, (void *)(intptr_t)n);
        if (!t[n]) {
            err = errno;
            break;
        }
        n++;
    }
    RFT_CHECK(n > 0);
    RFT_CHECK(n < MAX);
    RFT_CHECK_INT(err, ENOMEM);
    rf_yield(); /* the ones that were spawned run */
    for (int i = 0; i < n; i++)
        rf_cancel(t[i]);
    void **res = calloc((size_t)n, sizeof *res);
    int rc = res ? rf_gather(t, (size_t)n, res) : -ENOMEM;
    RFT_CHECK_INT(rc, -ECANCELED);
    for (int i = 0; res && i < n; i++)
        RFT_CHECK_INT((intptr_t)res[i], i);
    free(res);
    free(t);
    return (void *)(intptr_t)n;
}

static int enomem_child(void *arg)
{
    struct rlimit as;
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (!f || fscanf(f, "%lu", &pages) != 1)
        return 2;
    fclose(f);
    /* What is mapped now plus 256 MiB: room for ~1000-2000 stacks. */
    as.rlim_cur = as.rlim_max = pages * (rlim_t)sysconf(_SC_PAGESIZE) + (256u << 20);
    if (setrlimit(RLIMIT_AS, &as) != 0)
        return 2;
    void *res = NULL;
    int rc = rf_run(spawn_until_enomem, NULL, &res);
    fprintf(stderr, "rf_run %d, %ld tasks spawned before ENOMEM, %d failed checks\n", rc,
            (long)(intptr_t)res, rft_failures_);
    return rc == 0 && rft_failures_ == 0 && res != NULL ? 0 : 1;
}

#endif

static void test_spawn_enomem(void **state)
{
#if RFT_ASAN || RFT_TSAN
    /* The sanitizers' own allocators run out first under the limit. */
    skip();
#else
    rft_child c;
    rft_fork(enomem_child, NULL, &c);
    if (!c.exited || c.code != 0)
        rft_child_dump("spawn until ENOMEM", &c);
    assert_true(c.exited);
    assert_int_equal(c.code, 0);
#endif
}

/* ---- names ------------------------------------------------------------- */

static void *report_name(void *arg)
{
    char *out = arg;
    const char *n = rf_task_name(rf_self());
    RFT_CHECK(n != NULL);
    if (n)
        snprintf(out, RF_TASK_NAME_MAX + 8, "%s", n);
    return NULL;
}

static bool is_default_name(const char *n)
{
    if (strncmp(n, "task-", 5) != 0 || n[5] == '\0')
        return false;
    for (const char *p = n + 5; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

static void *names(void *arg)
{
    char seen[RF_TASK_NAME_MAX + 8];
    char given[64];
    strcpy(given, "worker-7");
    rf_spawn_options o;
    memset(&o, 0, sizeof o);
    o.name = given;
    rf_task *t = rf_spawn_opts(report_name, seen, &o);
    if (!RFT_CHECK(t != NULL))
        return NULL;
    strcpy(given, "CHANGED"); /* the name was copied */
    RFT_CHECK(strcmp(rf_task_name(t), "worker-7") == 0);
    rf_join(t, NULL);
    RFT_CHECK(strcmp(seen, "worker-7") == 0);
    RFT_CHECK(strcmp(rf_task_name(t), "worker-7") == 0); /* after it returned */
    rf_task_release(t);

    /* Too long: the first RF_TASK_NAME_MAX-1 bytes. */
    const char *longname = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH";
    o.name = longname;
    t = rf_spawn_opts(report_name, seen, &o);
    if (!RFT_CHECK(t != NULL))
        return NULL;
    RFT_CHECK_INT(strlen(rf_task_name(t)), RF_TASK_NAME_MAX - 1);
    RFT_CHECK(strncmp(rf_task_name(t), longname, RF_TASK_NAME_MAX - 1) == 0);
    rf_join(t, NULL);
    rf_task_release(t);

    /* Default names: "task-<id>", distinct. */
    rf_task *a = rf_spawn(report_name, seen);
    rf_task *b = rf_spawn_opts(report_name, seen, NULL);
    o.name = NULL;
    rf_task *c = rf_spawn_opts(report_name, seen, &o);
    if (!RFT_CHECK(a && b && c))
        return NULL;
    RFT_CHECK(is_default_name(rf_task_name(a)));
    RFT_CHECK(is_default_name(rf_task_name(b)));
    RFT_CHECK(is_default_name(rf_task_name(c)));
    RFT_CHECK(strcmp(rf_task_name(a), rf_task_name(b)) != 0);
    RFT_CHECK(strcmp(rf_task_name(b), rf_task_name(c)) != 0);
    if (!is_default_name(rf_task_name(a)))
        fprintf(stderr, "default name: \"%s\"\n", rf_task_name(a));
    rf_task *all[] = {a, b, c};
    rf_gather(all, 3, NULL);
    /* main has a name too */
    RFT_CHECK(rf_task_name(rf_self()) != NULL);
    return NULL;
}

static void test_task_names(void **state) { rft_run(names, NULL); }

/* ---- rf_done ------------------------------------------------------------- */

static void *done_inside(void *arg)
{
    RFT_CHECK(!rf_done(rf_self()));
    rf_sleep(1 * RFT_MS);
    RFT_CHECK(!rf_done(rf_self()));
    return NULL;
}

static void *done_states(void *arg)
{
    rf_task *t = rf_spawn(done_inside, NULL);
    RFT_CHECK(!rf_done(t)); /* not started */
    rf_yield();
    RFT_CHECK(!rf_done(t)); /* sleeping */
    rf_join(t, NULL);
    RFT_CHECK(rf_done(t));
    RFT_CHECK(!rf_done(rf_self()));
    return NULL;
}

static void test_done(void **state) { rft_run(done_states, NULL); }

/* ---- retain / release / detach ----------------------------------------- */

static volatile int g_detached_done;

static void *detached_body(void *arg)
{
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0);
    g_detached_done++;
    return NULL;
}

static void *refcounts(void *arg)
{
    g_detached_done = 0;

    /* Released before it ever ran. */
    rf_task *t = rf_spawn(detached_body, NULL);
    RFT_CHECK(t != NULL);
    rf_task_release(t);

    /* Released while it runs (asleep). */
    t = rf_spawn(detached_body, NULL);
    RFT_CHECK(t != NULL);
    rf_yield();
    RFT_CHECK(!rf_done(t));
    rf_task_release(t);

    /* Extra references keep the record valid until the last release. */
    t = rf_spawn(double_it, (void *)4);
    rf_task_retain(t);
    rf_task_retain(t);
    rf_task_release(t);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), 0);
    RFT_CHECK_PTR(res, (void *)8);
    rf_task_release(t);
    RFT_CHECK(rf_done(t)); /* one reference is still ours */
    RFT_CHECK_INT(rf_join(t, &res), 0);
    rf_task_release(t);

    rf_task_retain(NULL);
    rf_task_release(NULL);

    /* The detached tasks run to the end. */
    for (int i = 0; i < 1000 && g_detached_done < 2; i++)
        rf_sleep(1 * RFT_MS);
    RFT_CHECK_INT(g_detached_done, 2);

    /* Many detached tasks, recycled as they finish (ASan checks that the
     * records are freed and not used afterwards). */
    for (int i = 0; i < 1000; i++) {
        rf_task *d = rf_spawn(double_it, NULL);
        RFT_CHECK(d != NULL);
        rf_task_release(d);
    }
    rf_yield();
    rf_stats s = rft_stats();
    RFT_CHECK_INT(s.tasks_alive, 1);
    return NULL;
}

static void test_retain_release_detach(void **state) { rft_run(refcounts, NULL); }

/* ---- start order -------------------------------------------------------- */

static char g_log[64];
static size_t g_log_len;

static void *log_letter(void *arg)
{
    g_log[g_log_len++] = (char)(intptr_t)arg;
    rf_yield();
    g_log[g_log_len++] = (char)((intptr_t)arg + 32); /* lower case */
    return NULL;
}

static void *start_order(void *arg)
{
    g_log_len = 0;
    memset(g_log, 0, sizeof g_log);
    rf_task *t[4];
    for (int i = 0; i < 4; i++)
        t[i] = rf_spawn(log_letter, (void *)(intptr_t)('A' + i));
    /* Nothing runs before the spawner suspends. */
    RFT_CHECK_INT(g_log_len, 0);
    rf_yield();
    /* They started in spawn order, before main got back. */
    RFT_CHECK(strcmp(g_log, "ABCD") == 0);
    rf_yield();
    RFT_CHECK(strcmp(g_log, "ABCDabcd") == 0);
    if (strncmp(g_log, "ABCDabcd", 8) != 0)
        fprintf(stderr, "order: %s\n", g_log);
    rf_gather(t, 4, NULL);
    return NULL;
}

static void test_start_order(void **state) { rft_run(start_order, NULL); }

/* A task spawned onto the loop from one of its tasks with rf_loop_spawn. */
static void *loop_spawn_inside(void *arg)
{
    rf_task *t = rf_loop_spawn(rf_loop_current(), double_it, (void *)5, NULL);
    if (!RFT_CHECK(t != NULL))
        return NULL;
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), 0);
    RFT_CHECK_PTR(res, (void *)10);
    return NULL;
}

static void test_loop_spawn_from_task(void **state) { rft_run(loop_spawn_inside, NULL); }

/* rf_self: the handle the spawner got. */
static rf_task *g_seen_self;

static void *record_self(void *arg)
{
    g_seen_self = rf_self();
    return NULL;
}

static void *self_matches(void *arg)
{
    rf_task *t = rf_spawn(record_self, NULL);
    rf_join(t, NULL);
    RFT_CHECK_PTR(g_seen_self, t);
    RFT_CHECK(rf_self() != t);
    return NULL;
}

static void test_self(void **state)
{
    rft_run(self_matches, NULL);
    assert_null(rf_self());
}

/* ---- gather -------------------------------------------------------------- */

static void *gather_ok(void *arg)
{
    enum { N = 20 };
    rf_task *t[N];
    void *res[N];
    for (intptr_t i = 0; i < N; i++) {
        t[i] = rf_spawn(i % 3 ? double_it : sleep_then_return, (void *)i);
        res[i] = (void *)-1;
    }
    RFT_CHECK_INT(rf_gather(t, N, res), 0);
    for (intptr_t i = 0; i < N; i++) {
        RFT_CHECK(rf_done(t[i]));
        RFT_CHECK_INT((intptr_t)res[i], i % 3 ? i * 2 : i);
    }
    /* results may be NULL; all done: returns at once. */
    RFT_CHECK_INT(rf_gather(t, N, NULL), 0);
    /* empty set */
    RFT_CHECK_INT(rf_gather(NULL, 0, NULL), 0);
    RFT_CHECK_INT(rf_gather(t, 0, NULL), 0);
    return NULL;
}

static void test_gather(void **state) { rft_run(gather_ok, NULL); }

static void *return_after_cancel(void *arg)
{
    int rc = rf_sleep(10 * RFT_SEC);
    RFT_CHECK_INT(rc, -ECANCELED);
    return arg;
}

static void *gather_errors(void *arg)
{
    rf_task *t[3];
    t[0] = rf_spawn(double_it, (void *)1);
    t[1] = rf_spawn(return_after_cancel, (void *)0xCA);
    t[2] = rf_spawn(sleep_then_return, (void *)3);
    void *res[3] = {0};

    RFT_CHECK_INT(rf_gather(NULL, 3, res), -EINVAL);
    rf_task *with_null[2] = {t[0], NULL};
    RFT_CHECK_INT(rf_gather(with_null, 2, res), -EINVAL);
    rf_task *with_self[2] = {t[0], rf_self()};
    RFT_CHECK_INT(rf_gather(with_self, 2, res), -EDEADLK);

    /* One of them is cancelled: -ECANCELED, every result delivered. */
    rf_yield();
    RFT_CHECK_INT(rf_cancel(t[1]), 0);
    RFT_CHECK_INT(rf_gather(t, 3, res), -ECANCELED);
    RFT_CHECK_PTR(res[0], (void *)2);
    RFT_CHECK_PTR(res[1], (void *)0xCA);
    RFT_CHECK_PTR(res[2], (void *)3);
    RFT_CHECK_INT(rf_join(t[0], NULL), 0);
    RFT_CHECK_INT(rf_join(t[1], NULL), -ECANCELED);
    RFT_CHECK_INT(rf_join(t[2], NULL), 0);
    /* The caller was not cancelled by any of this. */
    RFT_CHECK(!rf_cancelled(rf_self()));
    return NULL;
}

static void test_gather_errors(void **state) { rft_run(gather_errors, NULL); }

/* ---- rf_join_nocancel: clean-up waits of a cancelled task ----------------- */

static volatile int g_child_unwound;

static void *slow_unwinder(void *arg)
{
    (void)arg;
    RFT_CHECK_INT(rf_sleep(60 * RFT_SEC), -ECANCELED);
    /* Clean-up that takes a few turns (rf_yield still yields). */
    for (int i = 0; i < 5; i++)
        rf_yield();
    g_child_unwound = 1;
    return (void *)0x77;
}

static void *parent_cleans_up(void *arg)
{
    (void)arg;
    rf_task *c = rf_spawn(slow_unwinder, NULL);
    RFT_CHECK_INT(rf_sleep(60 * RFT_SEC), -ECANCELED); /* cancelled here */
    rf_cancel(c);
    /* A cancelled task's rf_join does not wait... */
    RFT_CHECK_INT(rf_join(c, NULL), -ECANCELED);
    RFT_CHECK(!g_child_unwound);
    /* ...rf_join_nocancel does, and delivers the result. */
    void *res = NULL;
    RFT_CHECK_INT(rf_join_nocancel(c, &res), -ECANCELED);
    RFT_CHECK(g_child_unwound);
    RFT_CHECK_PTR(res, (void *)0x77);
    /* Done already: at once. */
    RFT_CHECK_INT(rf_join_nocancel(c, NULL), -ECANCELED);
    RFT_CHECK_INT(rf_join_nocancel(NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_join_nocancel(rf_self(), NULL), -EDEADLK);
    rf_task_release(c);
    return NULL;
}

static void *cancel_the_parent(void *arg)
{
    (void)arg;
    g_child_unwound = 0;
    rf_task *p = rf_spawn(parent_cleans_up, NULL);
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0);
    rf_cancel(p);
    RFT_CHECK_INT(rf_join(p, NULL), -ECANCELED);
    RFT_CHECK(g_child_unwound);
    rf_task_release(p);
    return NULL;
}

static void test_join_nocancel(void **state)
{
    assert_int_equal(rf_join_nocancel(NULL, NULL), -EINVAL);
    rft_run(cancel_the_parent, NULL);
}

/* ---- stale handles ---------------------------------------------------- */

static void *return_arg(void *arg) { return arg; }

static void *wait_event(void *arg)
{
    RFT_CHECK_INT(rf_event_wait(arg), 0);
    return (void *)(uintptr_t)0xbad;
}

/* Release t, then keep more tasks alive than a chunk of records holds, so
 * that t's record is certainly reused by one of them. Returns the event
 * they wait on; *live receives them. */
enum { STALE_N = 160 };

static void reuse_records(rf_task **live, rf_event *ev)
{
    RFT_CHECK_INT(rf_event_init(ev), 0);
    for (int i = 0; i < STALE_N; i++)
        RFT_CHECK((live[i] = rf_spawn(wait_event, ev)) != NULL);
    RFT_CHECK_INT(rf_yield(), 0); /* all of them waiting */
}

static void release_all_live(rf_task **live, rf_event *ev)
{
    RFT_CHECK_INT(rf_event_set(ev), 0);
    RFT_CHECK_INT(rf_gather(live, STALE_N, NULL), 0);
    for (int i = 0; i < STALE_N; i++)
        rf_task_release(live[i]);
    RFT_CHECK_INT(rf_event_fini(ev), 0);
}

static void *stale_handle_main(void *arg)
{
    rf_task *t = rf_spawn(return_arg, (void *)(uintptr_t)1);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), 0);
    RFT_CHECK_PTR(res, (void *)(uintptr_t)1);
    rf_task_release(t); /* t is stale from here on */

    static rf_task *live[STALE_N];
    rf_event ev;
    reuse_records(live, &ev);

    /* Every call that takes a handle detects it, none acts on the task
     * that now has the record. */
    res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), -ESRCH);
    RFT_CHECK_PTR(res, NULL);
    RFT_CHECK_INT(rf_join_nocancel(t, &res), -ESRCH);
    RFT_CHECK_INT(rf_wait_for(t, RFT_SEC, &res), -ESRCH);
    RFT_CHECK_INT(rf_cancel(t), -ESRCH);
    RFT_CHECK_INT(rf_task_error(t), -ESRCH);
    rf_task *set[2] = {live[0], t};
    RFT_CHECK_INT(rf_gather(set, 2, NULL), -ESRCH);
    RFT_CHECK_INT(rf_wait(set, 2, RF_ALL_COMPLETED, 0, NULL, NULL, NULL, NULL),
                  -ESRCH);
    rf_as_completed ac;
    RFT_CHECK_INT(rf_as_completed_init(&ac, set, 2), -ESRCH);
    errno = 0;
    RFT_CHECK(rft_ac_next(&ac, NULL, NULL) == NULL);
    RFT_CHECK_INT(errno, ESRCH); /* never initialised: not "no more" */
    rf_as_completed_fini(&ac);
    errno = 0;
    RFT_CHECK(rf_done(t)); /* the task it named has returned */
    RFT_CHECK_INT(errno, ESRCH);
    errno = 0;
    RFT_CHECK(!rf_cancelled(t));
    RFT_CHECK_INT(errno, ESRCH);
    errno = 0;
    RFT_CHECK(rf_task_name(t) == NULL);
    RFT_CHECK_INT(errno, ESRCH);
    errno = 0;
    rf_task_retain(t);
    RFT_CHECK_INT(errno, ESRCH);
    errno = 0;
    rf_task_release(t);
    RFT_CHECK_INT(errno, ESRCH);
    /* No live task was cancelled, retained or released by those calls. */
    for (int i = 0; i < STALE_N; i++) {
        RFT_CHECK(!rf_cancelled(live[i]));
        RFT_CHECK(!rf_done(live[i]));
    }
    release_all_live(live, &ev);
    return NULL;
}

/* A released handle whose record was reused for a new task is refused
 * with -ESRCH by every call; it used to wait for the new task and return
 * its result with 0. */
static void test_released_handle_is_stale(void **state)
{
    rft_run(stale_handle_main, NULL);
}

/* An as_completed iterator after fini is refused, not "exhausted". */
static void *ac_after_fini_main(void *arg)
{
    rf_task *t = rf_spawn(return_arg, NULL);
    rf_as_completed ac;
    RFT_CHECK_INT(rf_as_completed_init(&ac, &t, 1), 0);
    RFT_CHECK(rft_ac_next(&ac, NULL, NULL) == t);
    rf_as_completed_fini(&ac);
    errno = 0;
    RFT_CHECK(rft_ac_next(&ac, NULL, NULL) == NULL);
    RFT_CHECK_INT(errno, ESRCH);
    rf_as_completed_fini(&ac); /* twice: harmless */
    rf_task_release(t);
    return NULL;
}

static void test_as_completed_after_fini_is_stale(void **state)
{
    rft_run(ac_after_fini_main, NULL);
}

/* RINGFIBER_ABORT_ON_STALE=1: the misuse aborts, naming the call. */
static void *stale_join_main(void *arg)
{
    rf_task *t = rf_spawn(return_arg, NULL);
    RFT_CHECK_INT(rf_join(t, NULL), 0);
    rf_task_release(t);
    static rf_task *live[STALE_N];
    rf_event ev;
    reuse_records(live, &ev);
    rf_join(t, NULL); /* aborts */
    release_all_live(live, &ev);
    return NULL;
}

static int stale_abort_child(void *arg)
{
    setenv("RINGFIBER_ABORT_ON_STALE", "1", 1);
    rf_run(stale_join_main, NULL, NULL);
    return 3; /* survived: wrong */
}

static const rft_child_case children[] = {
    {"stale_abort", stale_abort_child, NULL},
};

static void test_stale_handle_aborts_when_asked(void **state)
{
    rft_child c;
    rft_exec("stale_abort", &c);
    bool ok = c.signaled && c.sig == SIGABRT &&
              strstr(c.err, "rf_join: stale handle") != NULL;
    if (!ok)
        rft_child_dump("stale_abort", &c);
    assert_true(ok);
}

/* ---- stacks taken at the first run --------------------------------------- */

/* A default-size stack is promised at spawn and taken when the task first
 * runs (stack.c): spawning maps no stack into use, and tasks that end
 * before the next one starts run on recycled stacks, a few however many
 * there are. A dump of a task not started yet says it has no stack. */
#define FR_TASKS 1000

static void *fr_where(void *arg)
{
    uintptr_t *out = arg;
    /* The frame, not a local's address: under ASan a local may live on a
     * fake stack of its own. */
    *out = (uintptr_t)__builtin_frame_address(0);
    return NULL;
}

static void *fr_body(void *arg)
{
    (void)arg;
    static uintptr_t where[FR_TASKS];
    static rf_task *t[FR_TASKS];
    rf_stats s0 = rft_stats();
    for (int i = 0; i < FR_TASKS; i++)
        t[i] = rf_spawn(fr_where, &where[i]);
    rf_stats s1 = rft_stats();
    RFT_CHECK_INT(s1.stacks_mapped, s0.stacks_mapped); /* none taken yet */

    /* The dump of tasks not started: listed, their stacks not walked. */
    int fd = memfd_create("dump", MFD_CLOEXEC);
    RFT_CHECK(fd >= 0);
    RFT_CHECK_INT(rf_loop_dump(rf_loop_current(), fd, RF_DUMP_BACKTRACES), 0);
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    RFT_CHECK(n > 0);
    buf[n > 0 ? n : 0] = '\0';
    RFT_CHECK(strstr(buf, "not started yet") != NULL);
    close(fd);

    RFT_CHECK_INT(rf_gather(t, FR_TASKS, NULL), 0);
    for (int i = 0; i < FR_TASKS; i++)
        rf_task_release(t[i]);
    /* Distinct stacks used, told apart by the 64 KiB region of a frame. */
    int distinct = 0;
    for (int i = 0; i < FR_TASKS; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = where[j] >> 16 == where[i] >> 16;
        distinct += !seen;
    }
    RFT_CHECK(distinct >= 1 && distinct <= 4);
    rf_stats s2 = rft_stats();
    RFT_CHECK_INT(s2.stacks_mapped, s0.stacks_mapped);
    return NULL;
}

static void test_stacks_taken_at_first_run(void **state)
{
    (void)state;
    rft_run(fr_body, NULL);
}

/* The free list across slabs: stacks given back are taken again latest
 * first. A first round of tasks, all alive at once (each yields once
 * before it ends), ends in start order; a second round, spawned after,
 * runs on the same stacks in reverse: its first task on the stack the
 * first round gave back last. None is left in use. */
#define LF_TASKS 200 /* more than 3 slabs of 64 */

static void *lf_task(void *arg)
{
    uintptr_t *out = arg;
    *out = (uintptr_t)__builtin_frame_address(0); /* see fr_where */
    RFT_CHECK_INT(rf_yield(), 0);
    return NULL;
}

static void *lf_body(void *arg)
{
    (void)arg;
    static uintptr_t where[2][LF_TASKS];
    static rf_task *t[LF_TASKS];
    rf_stats s0 = rft_stats();
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < LF_TASKS; i++)
            t[i] = rf_spawn(lf_task, &where[round][i]);
        RFT_CHECK_INT(rf_gather(t, LF_TASKS, NULL), 0);
        for (int i = 0; i < LF_TASKS; i++)
            rf_task_release(t[i]);
    }
    for (int i = 0; i < LF_TASKS; i++) {
        for (int j = 0; j < i; j++) /* all alive at once: distinct */
            RFT_CHECK(where[0][j] != where[0][i]);
        RFT_CHECK(where[1][i] == where[0][LF_TASKS - 1 - i]);
    }
    rf_stats s2 = rft_stats();
    RFT_CHECK_INT(s2.stacks_mapped, s0.stacks_mapped);
    return NULL;
}

static void test_stacks_taken_latest_first(void **state)
{
    (void)state;
    rft_run(lf_body, NULL);
}

/* A stack size that rounds up to the loop's default, in pages, takes a
 * pooled stack; one page less or a byte more maps a stack of its own
 * (rf__stack_pooled). */
static void *pooled_body(void *arg)
{
    (void)arg;
    size_t page = (size_t)sysconf(_SC_PAGESIZE), d = RF_DEFAULT_STACK_SIZE;
    struct {
        size_t size;
        bool pooled;
    } cases[] = {{0, true},          {d, true},           {d - page + 1, true},
                 {d - page, false},  {d + 1, false},      {RF_MIN_STACK_SIZE, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rf_spawn_options o = {.stack_size = cases[i].size};
        rf_task *t = rf_spawn_opts(double_it, (void *)(intptr_t)1, &o);
        RFT_CHECK(t != NULL);
        RFT_CHECK(rf__record(t)->pooled_stack == cases[i].pooled);
        RFT_CHECK_INT(rf_join(t, NULL), 0);
        rf_task_release(t);
    }
    return NULL;
}

static void test_stack_size_rounded_to_default_is_pooled(void **state)
{
    (void)state;
    rft_run(pooled_body, NULL);
}

/* Tasks spawned on a loop that is not running hold no stack (10,000 of
 * them: none mapped into use), and rf_loop_free, which runs them to their
 * end, then frees the loop with every promise kept or given back. */
static void *fr_never(void *arg)
{
    (void)arg;
    return NULL;
}

static void test_unstarted_tasks_freed(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        rf_loop *l = NULL;
        assert_int_equal(rf_loop_new(&l, NULL), 0);
        for (int i = 0; i < 10000; i++) {
            rf_task *t = rf_loop_spawn(l, fr_never, NULL, NULL);
            assert_non_null(t);
            rf_task_release(t);
        }
        rf_stats s;
        assert_int_equal(rf_loop_stats(l, &s), 0);
        assert_int_equal(s.stacks_mapped, 0);
        assert_int_equal(s.tasks_alive, 10000);
        assert_int_equal(rf_loop_free(l), 0); /* they run, then it ends */
    }
}

/* ---- slabs prepared ahead ------------------------------------------------ */

/* Many tasks starting at once on a fresh loop fill slab after slab; the
 * loop's slab preparer guards and populates the next ones meanwhile
 * (stack.c, rf_stack_prep), where the kernel has the advice it needs
 * (guard mode RF_GUARD_MADVISE). 5,000 tasks each hold their stack
 * across a yield: all run and return their own value; the preparer's
 * thread ("rf-stacks") runs while they do, and is gone once the loop is
 * freed. */
#define PA_TASKS 5000

static int pa_threads_named(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f) && strncmp(comm, name, strlen(name)) == 0)
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* Whether this process may guard and populate its own pages through a
 * pidfd, as the preparer does. */
static bool pa_can_prepare(void)
{
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (pidfd < 0)
        return false;
    long page = sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bool ok = false;
    if (m != MAP_FAILED) {
        struct iovec g = {m, (size_t)page}, t = {m + page, (size_t)page};
        ok = syscall(SYS_process_madvise, pidfd, &g, 1, 102 /* GUARD_INSTALL */,
                     0) == page &&
             syscall(SYS_process_madvise, pidfd, &t, 1, 23 /* POPULATE_WRITE */,
                     0) == page;
        munmap(m, (size_t)page * 2);
    }
    close(pidfd);
    return ok;
}

static void *pa_task(void *arg)
{
    RFT_CHECK_INT(rf_yield(), 0);
    return arg;
}

static void *pa_body(void *arg)
{
    int *preparers = arg;
    static rf_task *t[PA_TASKS];
    static void *res[PA_TASKS];
    for (int i = 0; i < PA_TASKS; i++)
        t[i] = rf_spawn(pa_task, (void *)(intptr_t)(i + 1));
    RFT_CHECK_INT(rf_yield(), 0); /* every task has run once: all hold stacks */
    rf_stats st = rft_stats();
    RFT_CHECK(st.stacks_mapped >= PA_TASKS);
    *preparers = pa_threads_named("rf-stacks");
    RFT_CHECK_INT(rf_gather(t, PA_TASKS, res), 0);
    for (int i = 0; i < PA_TASKS; i++) {
        RFT_CHECK_INT((intptr_t)res[i], i + 1);
        rf_task_release(t[i]);
    }
    return NULL;
}

static void test_slabs_prepared_ahead(void **state)
{
    (void)state;
    int preparers = -1;
    rf_loop *l = NULL;
    assert_int_equal(rf_loop_new(&l, NULL), 0);
    rft_begin();
    assert_int_equal(rf_loop_run_until_complete(l, pa_body, &preparers, NULL), 0);
    rft_end();
    rf_stats st; /* the guard mode the loop ended with (a fallback shows) */
    assert_int_equal(rf_loop_stats(l, &st), 0);
    assert_int_equal(rf_loop_free(l), 0);
    fprintf(stderr, "guard mode %u: %d preparer thread(s) while running\n",
            st.guard_mode, preparers);
    /* The preparer needs process_madvise() on ourselves with both
     * advice values (6.13); a sandbox may refuse it where madvise()
     * guards work. */
    if (st.guard_mode == RF_GUARD_MADVISE && pa_can_prepare())
        assert_int_equal(preparers, 1);
    assert_true(preparers <= 1);
    assert_int_equal(pa_threads_named("rf-stacks"), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_join_nocancel),
    cmocka_unit_test(test_spawn_join_results),
    cmocka_unit_test(test_join_three_waiters),
    cmocka_unit_test(test_join_after_finish_is_immediate),
    cmocka_unit_test(test_join_errors),
    cmocka_unit_test(test_spawn_errors),
    cmocka_unit_test(test_spawn_enomem),
    cmocka_unit_test(test_stack_sizes),
    cmocka_unit_test(test_unmapped_stack_shadow_cleared),
    cmocka_unit_test(test_loop_default_stack_size),
    cmocka_unit_test(test_task_names),
    cmocka_unit_test(test_done),
    cmocka_unit_test(test_retain_release_detach),
    cmocka_unit_test(test_start_order),
    cmocka_unit_test(test_loop_spawn_from_task),
    cmocka_unit_test(test_self),
    cmocka_unit_test(test_gather),
    cmocka_unit_test(test_gather_errors),
    cmocka_unit_test(test_released_handle_is_stale),
    cmocka_unit_test(test_as_completed_after_fini_is_stale),
    cmocka_unit_test(test_stale_handle_aborts_when_asked),
    cmocka_unit_test(test_stacks_taken_at_first_run),
    cmocka_unit_test(test_stacks_taken_latest_first),
    cmocka_unit_test(test_stack_size_rounded_to_default_is_pooled),
    cmocka_unit_test(test_unstarted_tasks_freed),
    cmocka_unit_test(test_slabs_prepared_ahead),
};

RFT_MAIN_CHILDREN(tests, children, sizeof children / sizeof children[0])
