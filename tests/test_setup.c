/*
 * io_uring setup refused. In a forked child a seccomp filter makes
 * io_uring_setup fail (EPERM as under a container's default profile or
 * kernel.io_uring_disabled, ENOSYS as on a kernel without io_uring, ENOMEM
 * as with a low RLIMIT_MEMLOCK); rf_run / rf_loop_new must return that
 * error, write one line naming the cause and the remedy (nothing with
 * RF_LOOP_QUIET), run nothing and leak nothing.
 */
#include "helpers.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define RFT_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define RFT_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define RFT_AUDIT_ARCH AUDIT_ARCH_RISCV64
#endif

#ifndef SECCOMP_RET_KILL_PROCESS
#define SECCOMP_RET_KILL_PROCESS SECCOMP_RET_KILL
#endif

/* The child's exit codes besides -rc. */
enum { CHILD_NO_SECCOMP = RFT_SKIP_CODE, CHILD_MAIN_RAN = 100, CHILD_FD_LEAK = 101 };

/* Make io_uring_setup fail with err; every other system call is allowed.
 * A system call of another architecture kills the process. */
static int deny_io_uring_setup(int err)
{
#ifdef RFT_AUDIT_ARCH
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, RFT_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {
        .len = (unsigned short)(sizeof f / sizeof f[0]),
        .filter = f,
    };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -errno;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return -errno;
    /* The filter works: the raw call fails as told. */
    long r = syscall(__NR_io_uring_setup, 4, NULL);
    if (r != -1 || errno != err)
        return -EOPNOTSUPP;
    return 0;
#else
    (void)err;
    return -EOPNOTSUPP;
#endif
}

static volatile int g_main_ran;

static void *must_not_run(void *arg)
{
    g_main_ran = 1;
    return NULL;
}

struct refusal {
    int err;       /* what the filter makes io_uring_setup fail with */
    bool via_run;  /* rf_run, else rf_loop_new */
    unsigned flags;
};

static int refused_child(void *arg)
{
    const struct refusal *r = arg;
    if (deny_io_uring_setup(r->err) != 0)
        return CHILD_NO_SECCOMP;
    int fds = rft_count_fds();
    int rc;
    if (r->via_run) {
        void *res = (void *)0x77;
        rc = rf_run(must_not_run, NULL, &res);
    } else {
        rf_loop_opts o;
        memset(&o, 0, sizeof o);
        o.flags = r->flags;
        rf_loop *loop = NULL;
        rc = rf_loop_new(&loop, &o);
        if (rc == 0)
            rf_loop_free(loop);
    }
    fflush(stderr);
    if (g_main_ran)
        return CHILD_MAIN_RAN;
    if (rft_count_fds() != fds)
        return CHILD_FD_LEAK;
    return rc < 0 && rc > -100 ? -rc : 102;
}

static void run_refusal(const struct refusal *r, rft_child *c)
{
    rft_fork(refused_child, (void *)r, c);
    if (c->exited && c->code == CHILD_NO_SECCOMP)
        skip();
}

static bool names_cause_and_remedy(const char *err)
{
    bool cause = rft_contains_ci(err, "seccomp") || rft_contains_ci(err, "io_uring_disabled");
    bool remedy = rft_contains_ci(err, "sysctl") || rft_contains_ci(err, "allow") ||
                  rft_contains_ci(err, "security-opt") || rft_contains_ci(err, "unconfined");
    return cause && remedy;
}

static void test_rf_run_eperm(void **state)
{
    struct refusal r = {EPERM, true, 0};
    rft_child c;
    run_refusal(&r, &c);
    bool ok = c.exited && c.code == EPERM && strstr(c.err, "io_uring") &&
              names_cause_and_remedy(c.err);
    if (!ok)
        rft_child_dump("rf_run with io_uring_setup -> EPERM (expect exit code 1 = -rc)", &c);
    assert_true(c.exited);
    assert_int_equal(c.code, EPERM);
    assert_non_null(strstr(c.err, "io_uring"));
    assert_true(names_cause_and_remedy(c.err));
    assert_true(c.err_len > 0 && c.err[c.err_len - 1] == '\n');
}

static void test_loop_new_eperm_message(void **state)
{
    struct refusal r = {EPERM, false, 0};
    rft_child c;
    run_refusal(&r, &c);
    if (!(c.exited && c.code == EPERM && names_cause_and_remedy(c.err)))
        rft_child_dump("rf_loop_new with io_uring_setup -> EPERM", &c);
    assert_true(c.exited);
    assert_int_equal(c.code, EPERM);
    assert_true(names_cause_and_remedy(c.err));
}

static void test_loop_new_eperm_quiet(void **state)
{
    struct refusal r = {EPERM, false, RF_LOOP_QUIET};
    rft_child c;
    run_refusal(&r, &c);
    if (!(c.exited && c.code == EPERM && c.err_len == 0))
        rft_child_dump("rf_loop_new quiet, io_uring_setup -> EPERM", &c);
    assert_true(c.exited);
    assert_int_equal(c.code, EPERM);
    assert_int_equal(c.err_len, 0); /* nothing printed */
}

static void test_rf_run_enosys(void **state)
{
    struct refusal r = {ENOSYS, true, 0};
    rft_child c;
    run_refusal(&r, &c);
    if (!(c.exited && c.code == ENOSYS && strstr(c.err, "io_uring")))
        rft_child_dump("rf_run with io_uring_setup -> ENOSYS", &c);
    assert_true(c.exited);
    assert_int_equal(c.code, ENOSYS);
    assert_non_null(strstr(c.err, "io_uring"));
    assert_true(c.err[c.err_len - 1] == '\n');
}

static void test_loop_new_enosys_quiet(void **state)
{
    struct refusal r = {ENOSYS, false, RF_LOOP_QUIET};
    rft_child c;
    run_refusal(&r, &c);
    if (!(c.exited && c.code == ENOSYS && c.err_len == 0))
        rft_child_dump("rf_loop_new quiet, io_uring_setup -> ENOSYS", &c);
    assert_true(c.exited);
    assert_int_equal(c.code, ENOSYS);
    assert_int_equal(c.err_len, 0);
}

static void test_rf_run_enomem(void **state)
{
    struct refusal r = {ENOMEM, true, 0};
    rft_child c;
    run_refusal(&r, &c);
    bool memlock = rft_contains_ci(c.err, "memlock");
    if (!(c.exited && c.code == ENOMEM && strstr(c.err, "io_uring") && memlock))
        rft_child_dump("rf_run with io_uring_setup -> ENOMEM", &c);
    assert_true(c.exited);
    assert_int_equal(c.code, ENOMEM);
    assert_non_null(strstr(c.err, "io_uring"));
    /* the cause the header names for ENOMEM: RLIMIT_MEMLOCK */
    assert_true(memlock);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_rf_run_eperm),
    cmocka_unit_test(test_loop_new_eperm_message),
    cmocka_unit_test(test_loop_new_eperm_quiet),
    cmocka_unit_test(test_rf_run_enosys),
    cmocka_unit_test(test_loop_new_enosys_quiet),
    cmocka_unit_test(test_rf_run_enomem),
};

RFT_MAIN(tests)
