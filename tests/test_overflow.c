/*
 * Stack overflow: a task that recurses without bound dies (SIGSEGV, or
 * SIGABRT) on its guard page, and the report on stderr says "stack
 * overflow" with the task's name and its stack size. Each scenario runs in
 * a forked child.
 */
#include "helpers.h"

static volatile int g_limit = 0x7fffffff;

static int __attribute__((noinline)) recurse(int depth)
{
    volatile char buf[192];
    buf[0] = (char)depth;
    buf[sizeof buf - 1] = (char)depth;
    if (depth >= g_limit)
        return buf[0];
    return recurse(depth + 1) + buf[depth % (int)sizeof buf];
}

static void *overflow_body(void *arg)
{
    return (void *)(intptr_t)recurse(0);
}

struct scenario {
    const char *name;     /* task name given to spawn, NULL: default */
    size_t stack;         /* stack_size given to spawn, 0: default */
    size_t expect_stack;  /* the size the report must show */
    unsigned loop_flags;
    bool in_rf_run;       /* overflow in a task spawned from rf_run's main */
};

static void *spawn_overflow_and_join(void *arg)
{
    const struct scenario *sc = arg;
    rf_spawn_options o;
    memset(&o, 0, sizeof o);
    o.name = sc->name;
    o.stack_size = sc->stack;
    rf_task *t = rf_spawn_opts(overflow_body, NULL, &o);
    if (!t) {
        fprintf(stderr, "spawn failed: %s\n", strerror(errno));
        return NULL;
    }
    rf_join(t, NULL);
    return NULL;
}

static int overflow_child(void *arg)
{
    const struct scenario *sc = arg;
    if (sc->in_rf_run) {
        rf_run(spawn_overflow_and_join, (void *)sc, NULL);
        return 3; /* survived: wrong */
    }
    rf_loop_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.flags = sc->loop_flags;
    rf_loop *loop = NULL;
    int rc = rf_loop_new(&loop, &lo);
    if (rc != 0) {
        fprintf(stderr, "rf_loop_new: %d\n", rc);
        return 2;
    }
    rf_spawn_options o;
    memset(&o, 0, sizeof o);
    o.name = sc->name;
    o.stack_size = sc->stack;
    rf_task *t = rf_loop_spawn(loop, overflow_body, NULL, &o);
    if (!t) {
        fprintf(stderr, "rf_loop_spawn: %s\n", strerror(errno));
        return 2;
    }
    rf_loop_run_forever(loop);
    return 3; /* survived: wrong */
}

/* Does the report show this size, in bytes or in KiB? */
static bool mentions_size(const char *text, size_t bytes)
{
    char pat[64];
    snprintf(pat, sizeof pat, "%zu", bytes);
    if (strstr(text, pat))
        return true;
    if (bytes % 1024 == 0) {
        snprintf(pat, sizeof pat, "%zu K", bytes / 1024);
        if (rft_contains_ci(text, pat))
            return true;
        snprintf(pat, sizeof pat, "%zuK", bytes / 1024);
        if (rft_contains_ci(text, pat))
            return true;
    }
    return false;
}

static void check_overflow_report(const struct scenario *sc, const char *name_part,
                                  const rft_child *c)
{
    bool died = c->signaled && (c->sig == SIGSEGV || c->sig == SIGABRT);
    bool said = strstr(c->err, "stack overflow") != NULL;
    bool named = strstr(c->err, name_part) != NULL;
    bool sized = mentions_size(c->err, sc->expect_stack);
    if (!died || !said || !named || !sized) {
        fprintf(stderr, "expected death by SIGSEGV/SIGABRT with \"stack overflow\", "
                        "\"%s\" and %zu bytes in the report\n",
                name_part, sc->expect_stack);
        rft_child_dump("overflow", c);
    }
    assert_true(died);
    assert_true(said);
    assert_true(named);
    assert_true(sized);
}

static const struct scenario sc_named = {"deep-recursion", 64 * 1024, 64 * 1024, 0, false};
static const struct scenario sc_min = {"tiny", RF_MIN_STACK_SIZE, RF_MIN_STACK_SIZE, 0, false};
static const struct scenario sc_default = {NULL, 0, RF_DEFAULT_STACK_SIZE, 0, false};
static const struct scenario sc_rf_run = {"under-rf-run", 32 * 1024, 32 * 1024, 0, true};
static const struct scenario sc_mprotect = {"mprotect-guard", 64 * 1024, 64 * 1024,
                                            RF_LOOP_GUARD_MPROTECT, false};
static const struct scenario sc_no_handler = {"no-handler", 64 * 1024, 64 * 1024,
                                              RF_LOOP_NO_OVERFLOW_HANDLER, false};

/* Each runs in a fresh process (rft_exec): a program that overflows. */
static const rft_child_case children[] = {
    {"named_64k", overflow_child, (void *)&sc_named},
    {"min_stack", overflow_child, (void *)&sc_min},
    {"default", overflow_child, (void *)&sc_default},
    {"in_rf_run", overflow_child, (void *)&sc_rf_run},
    {"no_handler", overflow_child, (void *)&sc_no_handler},
    {"mprotect", overflow_child, (void *)&sc_mprotect},
};

static void test_overflow_named_64k(void **state)
{
    rft_child c;
    rft_exec("named_64k", &c);
    check_overflow_report(&sc_named, "deep-recursion", &c);
}

static void test_overflow_min_stack(void **state)
{
    rft_child c;
    rft_exec("min_stack", &c);
    check_overflow_report(&sc_min, "tiny", &c);
}

static void test_overflow_default_stack_default_name(void **state)
{
    rft_child c;
    rft_exec("default", &c);
    check_overflow_report(&sc_default, "task-", &c);
}

static void test_overflow_in_rf_run(void **state)
{
    rft_child c;
    rft_exec("in_rf_run", &c);
    check_overflow_report(&sc_rf_run, "under-rf-run", &c);
}

/* The same with mprotect guards instead of MADV_GUARD_INSTALL. */
static void test_overflow_mprotect_guard(void **state)
{
    rft_child c;
    rft_exec("mprotect", &c);
    check_overflow_report(&sc_mprotect, "mprotect-guard", &c);
}

/*
 * A loop created after the SIGSEGV disposition was changed (here: reset to
 * SIG_DFL in a forked child of a process that already had a loop and whose
 * handler cmocka replaced) still reports overflows: each loop made without
 * RF_LOOP_NO_OVERFLOW_HANDLER installs the handler.
 */
static void test_overflow_after_sigsegv_reset(void **state)
{
    rft_child c;
    rft_fork(overflow_child, (void *)&sc_named, &c);
    check_overflow_report(&sc_named, "deep-recursion", &c);
}

/* With RF_LOOP_NO_OVERFLOW_HANDLER the loop installs no handler: the
 * process still dies on the guard page, without ringfiber's report. */
static void test_overflow_without_handler(void **state)
{
    rft_child c;
    rft_exec("no_handler", &c);
    bool said = strstr(c.err, "stack overflow") != NULL;
#if RFT_ASAN
    /* ASan's own SEGV handler reports and exits with its exit code. */
    bool died = c.signaled || (c.exited && c.code != 0 && c.code != 3 && c.code != 2);
#else
    bool died = c.signaled && c.sig == SIGSEGV;
#endif
    if (!died || said)
        rft_child_dump("no handler", &c);
    assert_true(died);
    assert_false(said);
}

/* A deep but bounded recursion that fits is fine (the guard is where it
 * should be, not inside the usable stack). */
static void *bounded(void *arg)
{
    g_limit = (int)(intptr_t)arg;
    volatile int r = recurse(0); /* the value does not matter: that it returns does */
    (void)r;
    g_limit = 0x7fffffff;
    return (void *)1;
}

static void *bounded_main(void *arg)
{
    rf_spawn_options o;
    memset(&o, 0, sizeof o);
    o.stack_size = 256 * 1024;
    /* ~ 200-300 bytes a frame: 300 frames < 100 KiB, well within 256 KiB */
    rf_task *t = rf_spawn_opts(bounded, (void *)(intptr_t)300, &o);
    void *res = NULL;
    RFT_CHECK_INT(rf_join(t, &res), 0);
    RFT_CHECK_PTR(res, (void *)1);
    return NULL;
}

static void test_bounded_recursion_fits(void **state) { rft_run(bounded_main, NULL); }

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_overflow_named_64k),
    cmocka_unit_test(test_overflow_min_stack),
    cmocka_unit_test(test_overflow_default_stack_default_name),
    cmocka_unit_test(test_overflow_in_rf_run),
    cmocka_unit_test(test_overflow_after_sigsegv_reset),
    cmocka_unit_test(test_overflow_mprotect_guard),
    cmocka_unit_test(test_overflow_without_handler),
    cmocka_unit_test(test_bounded_recursion_fits),
};

RFT_MAIN_CHILDREN(tests, children, sizeof children / sizeof children[0])
