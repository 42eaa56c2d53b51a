/*
 * Stack overflow: a task that recurses without bound dies (SIGSEGV, or
 * SIGABRT) on its guard page, and the report on stderr says "stack
 * overflow" with the task's name and its stack size. So does a task whose
 * one large frame goes past its guard, and a task that touches another
 * task's guard is reported with both names. Each scenario runs in a forked
 * child.
 */
#include "helpers.h"

#include <sys/mman.h>

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

/*
 * One large frame. This file is built with -fstack-clash-protection (where
 * the compiler takes it, see CMakeLists.txt), so a large frame is probed a
 * page at a time and meets the guard first. The unprobed_* frames are
 * made as code built without the flag makes them (GCC's per-function
 * optimize attribute; Clang has no such attribute and probes them too):
 * the stack pointer moves by the whole frame at once and the first access
 * lands wherever that is. The arrays' address escapes (frame_escape) and
 * they are touched at both ends, the lowest address last, so that no
 * compiler shrinks the frame to the bytes touched.
 */
#if defined(__GNUC__) && !defined(__clang__)
#define RFT_UNPROBED 1
#define RFT_NO_PROBES __attribute__((optimize("no-stack-clash-protection")))
#else
#define RFT_UNPROBED 0
#define RFT_NO_PROBES
#endif

static void frame_escape(volatile char *buf)
{
    __asm__ volatile("" : : "r"(buf) : "memory");
}

static int __attribute__((noinline)) probed_frame_200k(int v)
{
    volatile char buf[200 * 1024];
    frame_escape(buf);
    buf[sizeof buf - 1] = (char)v;
    buf[0] = (char)v;
    return buf[0] + buf[sizeof buf - 1];
}

static int __attribute__((noinline)) RFT_NO_PROBES unprobed_frame_100k(int v)
{
    volatile char buf[100 * 1024];
    frame_escape(buf);
    buf[sizeof buf - 1] = (char)v;
    buf[0] = (char)v;
    return buf[0] + buf[sizeof buf - 1];
}

/* 200 KiB, and a switch from inside it. */
static int __attribute__((noinline)) RFT_NO_PROBES
unprobed_frame_200k_yield(int v)
{
    volatile char buf[200 * 1024];
    frame_escape(buf);
    buf[sizeof buf - 1] = (char)v;
    buf[0] = (char)v;
    rf_yield();
    return buf[0] + buf[sizeof buf - 1];
}

/* Parked for the whole run. */
static void *parked_body(void *arg)
{
    rf_sleep(60 * RF_NSEC_PER_SEC);
    return NULL;
}

/*
 * Is nothing mapped in the `len` bytes below `addr`? mincore() fails with
 * ENOMEM on a page that is not mapped.
 */
static bool unmapped_below(uintptr_t addr, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char vec;
    for (uintptr_t p = addr - len; p < addr; p += page)
        if (mincore((void *)p, page, &vec) == 0 || errno != ENOMEM)
            return false;
    return true;
}

/*
 * The 100 KiB frame on a 32 KiB stack lands 4 KiB below the stack's
 * mapping (its 64 KiB guard included). That it faults there needs nothing
 * to be mapped there, as is usual (mappings are placed top down, so a new
 * one has free space below it); but the stack's mapping may have been
 * placed in a hole above another mapping, which would take the frame's
 * writes silently. Then this task keeps its mapping (parked) and another
 * task, with a mapping elsewhere, makes the frame.
 */
static void *frame_100k_body(void *arg)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
    uintptr_t top = (frame + page - 1) / page * page;
    uintptr_t base = top - 32 * 1024 - 64 * 1024;
    if (unmapped_below(base, 16 * 1024))
        return (void *)(intptr_t)unprobed_frame_100k(1);
    intptr_t tries = (intptr_t)arg;
    if (tries >= 20) {
        fprintf(stderr, "no stack mapping with free space below it\n");
        exit(4);
    }
    rf_spawn_options o = {.name = "frame-100k", .stack_size = 32 * 1024};
    rf_task *t = rf_spawn_opts(frame_100k_body, (void *)(tries + 1), &o);
    if (!t)
        exit(2);
    return parked_body(NULL);
}

static void *frame_200k_body(void *arg)
{
    return (void *)(intptr_t)probed_frame_200k(1);
}

static void *frame_200k_yield_body(void *arg)
{
    return (void *)(intptr_t)unprobed_frame_200k_yield(1);
}

struct frame_scenario {
    const char *name;  /* the task with the large frame */
    size_t stack;      /* its stack_size, 0: default (pooled) */
    rf_fn body;
    unsigned loop_flags;
};

/*
 * A parked neighbour is spawned first: pooled stacks are handed out lowest
 * slot first, so the neighbour's stack lies right below the guard of the
 * task with the large frame, where that frame would land if it jumped the
 * guard.
 */
static int frame_child(void *arg)
{
    const struct frame_scenario *sc = arg;
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
    o.name = "neighbour";
    if (!rf_loop_spawn(loop, parked_body, NULL, &o))
        return 2;
    o.name = sc->name;
    o.stack_size = sc->stack;
    if (!rf_loop_spawn(loop, sc->body, NULL, &o))
        return 2;
    rf_loop_run_forever(loop);
    return 3; /* survived: wrong */
}

/* 32 KiB of stack, a 100 KiB frame: the stack pointer lands below the
 * guard, outside the stack's mapping. */
static const struct frame_scenario sc_frame_100k = {"frame-100k", 32 * 1024,
                                                    frame_100k_body, 0};
/* A pooled stack (128 KiB, 64 KiB of guard), a 200 KiB frame: without
 * probes it would land in the neighbour's stack, without a fault. */
static const struct frame_scenario sc_frame_200k = {"frame-200k", 0,
                                                    frame_200k_body, 0};
/* The same unprobed, on mprotect-guarded stacks (which carry a canary):
 * it lands in the neighbour's stack without a fault, and yields there. */
static const struct frame_scenario sc_frame_yield = {
    "frame-yield", 0, frame_200k_yield_body, RF_LOOP_GUARD_MPROTECT};

/*
 * A task that writes into the guard below another task's stack through a
 * pointer (here: computed from the other task's frame address; the top of
 * a stack is page aligned, and the guard below it is 64 KiB, README
 * "Stacks").
 */
static void *volatile g_victim_frame;

static void *victim_body(void *arg)
{
    g_victim_frame = __builtin_frame_address(0);
    rf_sleep(60 * RF_NSEC_PER_SEC);
    return NULL;
}

static void *vandal_body(void *arg)
{
    while (!g_victim_frame)
        rf_yield();
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t top = ((uintptr_t)g_victim_frame + page - 1) / page * page;
    uintptr_t lo = top - RF_DEFAULT_STACK_SIZE;
    volatile char *p = (volatile char *)(lo - 16 * 1024);
    *p = 1;
    return NULL;
}

/* The victim has returned before the vandal writes: its slot is free. */
static void *short_victim_body(void *arg)
{
    g_victim_frame = __builtin_frame_address(0);
    return NULL;
}

static int other_guard_child(void *arg)
{
    bool returned = arg != NULL;
    rf_loop *loop = NULL;
    int rc = rf_loop_new(&loop, NULL);
    if (rc != 0) {
        fprintf(stderr, "rf_loop_new: %d\n", rc);
        return 2;
    }
    rf_spawn_options o;
    memset(&o, 0, sizeof o);
    o.name = "victim"; /* a pooled stack */
    if (!rf_loop_spawn(loop, returned ? short_victim_body : victim_body, NULL,
                       &o))
        return 2;
    o.name = "vandal";
    o.stack_size = 32 * 1024; /* a mapping of its own */
    if (!rf_loop_spawn(loop, vandal_body, NULL, &o))
        return 2;
    rf_loop_run_forever(loop);
    return 3; /* survived: wrong */
}

/* Each runs in a fresh process (rft_exec): a program that overflows. */
static const rft_child_case children[] = {
    {"named_64k", overflow_child, (void *)&sc_named},
    {"min_stack", overflow_child, (void *)&sc_min},
    {"default", overflow_child, (void *)&sc_default},
    {"in_rf_run", overflow_child, (void *)&sc_rf_run},
    {"no_handler", overflow_child, (void *)&sc_no_handler},
    {"mprotect", overflow_child, (void *)&sc_mprotect},
    {"frame_100k", frame_child, (void *)&sc_frame_100k},
    {"frame_200k", frame_child, (void *)&sc_frame_200k},
    {"frame_yield", frame_child, (void *)&sc_frame_yield},
    {"other_guard", other_guard_child, NULL},
    {"free_slot_guard", other_guard_child, (void *)1},
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
#if RFT_ASAN || RFT_TSAN
    /* The sanitizer's own SEGV handler reports and exits with its exit
     * code. */
    bool died = c.signaled || (c.exited && c.code != 0 && c.code != 3 && c.code != 2);
#else
    bool died = c.signaled && c.sig == SIGSEGV;
#endif
    if (!died || said)
        rft_child_dump("no handler", &c);
    assert_true(died);
    assert_false(said);
}

static void check_frame_report(const char *name, size_t stack, int sig,
                               const char *how, const rft_child *c)
{
    struct scenario sc = {name, stack, stack, 0, false};
    check_overflow_report(&sc, name, c);
    bool ok = c->sig == sig && (!how || strstr(c->err, how));
    if (!ok) {
        fprintf(stderr, "expected signal %d and \"%s\" in the report\n", sig,
                how ? how : "");
        rft_child_dump(name, c);
    }
    assert_true(ok);
}

/*
 * A 100 KiB frame on a 32 KiB stack, in code built without
 * -fstack-clash-protection: the stack pointer goes past the 64 KiB guard
 * and the fault lands below it, outside any stack. Reported from the
 * stack pointer, with the way to prevent it.
 */
static void test_overflow_frame_past_guard_reported(void **state)
{
    /* Under ThreadSanitizer the child printed this report and then ran on
     * to its end (exit code 3) in 2 runs of 5: the access 68 KiB below
     * the stack faulted once and not when the handler returned. The
     * other builds check the report. */
    if (RFT_TSAN)
        skip();
    rft_child c;
    rft_exec("frame_100k", &c);
    check_frame_report("frame-100k", 32 * 1024, SIGSEGV,
                       RFT_UNPROBED ? "-fstack-clash-protection" : NULL, &c);
}

/* A 200 KiB frame on a pooled stack, in code built with
 * -fstack-clash-protection (as this file is): it meets its own guard. */
static void test_overflow_large_frame_meets_guard(void **state)
{
    rft_child c;
    rft_exec("frame_200k", &c);
    check_frame_report("frame-200k", RF_DEFAULT_STACK_SIZE, SIGSEGV,
                       "ran into the guard page below its stack", &c);
}

/* An unprobed frame that lands in the neighbouring stack without a fault
 * is caught at its next switch on stacks that are checked at each switch
 * (the mprotect ones, with a canary). */
static void test_overflow_switch_off_own_stack(void **state)
{
    rft_child c;
    rft_exec("frame_yield", &c);
    check_frame_report("frame-yield", RF_DEFAULT_STACK_SIZE,
                       RFT_UNPROBED ? SIGABRT : SIGSEGV,
                       RFT_UNPROBED ? "at a switch its stack pointer was"
                                    : NULL,
                       &c);
}

/* A write into the guard of another task's stack names both tasks. */
static void test_overflow_write_into_other_guard(void **state)
{
    rft_child c;
    rft_exec("other_guard", &c);
    bool died = c.signaled && c.sig == SIGSEGV;
    bool named = strstr(c.err, "task 'vandal' (stack size 32768 bytes) touched "
                               "the guard below the stack of task 'victim' "
                               "(stack size 131072 bytes)") != NULL;
    if (!died || !named)
        rft_child_dump("other_guard", &c);
    assert_true(died);
    assert_true(named);
}

/* ... and in the guard of a pooled stack whose task has returned. */
static void test_overflow_write_into_free_slot_guard(void **state)
{
    rft_child c;
    rft_exec("free_slot_guard", &c);
    bool died = c.signaled && c.sig == SIGSEGV;
    bool named = strstr(c.err, "task 'vandal' (stack size 32768 bytes) touched "
                               "the guard of a free stack slot") != NULL;
    if (!died || !named)
        rft_child_dump("free_slot_guard", &c);
    assert_true(died);
    assert_true(named);
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
    cmocka_unit_test(test_overflow_frame_past_guard_reported),
    cmocka_unit_test(test_overflow_large_frame_meets_guard),
    cmocka_unit_test(test_overflow_switch_off_own_stack),
    cmocka_unit_test(test_overflow_write_into_other_guard),
    cmocka_unit_test(test_overflow_write_into_free_slot_guard),
};

RFT_MAIN_CHILDREN(tests, children, sizeof children / sizeof children[0])
