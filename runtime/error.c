/*
 * Error texts, and the one message a user gets when io_uring cannot be set
 * up: what the cause most likely is and what to do about it.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

unsigned rf_version(void) { return RINGFIBER_VERSION_HEX; }

/* |err| if it can be an errno value (1..4095), else 0. Through unsigned:
 * -INT_MIN does not exist. */
static int errno_of(int err)
{
    unsigned e = err < 0 ? 0u - (unsigned)err : (unsigned)err;
    return e <= 4095 ? (int)e : 0;
}

const char *rf_strerror(int err)
{
    if (err == 0)
        return "Success";
    int e = errno_of(err);
    const char *s = e ? strerrordesc_np(e) : NULL;
    return s ? s : "Unknown error";
}

const char *rf_err_name(int err)
{
    if (err == 0)
        return "0";
    int e = errno_of(err);
    const char *s = e ? strerrorname_np(e) : NULL;
    return s ? s : "UNKNOWN";
}

static int read_int_file(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int v = -1;
    if (fscanf(f, "%d", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

static const char *setup_hint(int err)
{
    switch (err) {
    case -EPERM:
        switch (read_int_file("/proc/sys/kernel/io_uring_disabled")) {
        case 2:
            return "io_uring is disabled on this machine "
                   "(kernel.io_uring_disabled=2); enable it with "
                   "'sysctl -w kernel.io_uring_disabled=0'";
        case 1:
            return "io_uring is restricted to the group in "
                   "kernel.io_uring_group (kernel.io_uring_disabled=1); add "
                   "this user to that group, run as root, or set "
                   "kernel.io_uring_disabled=0";
        default:
            return "io_uring_setup was refused, most likely by a seccomp "
                   "filter (container runtimes block io_uring by default); "
                   "run with a seccomp profile that allows io_uring_setup, "
                   "io_uring_enter and io_uring_register";
        }
    case -ENOSYS:
        return "this kernel has no io_uring (it needs Linux 5.11 or newer "
               "built with CONFIG_IO_URING), or a seccomp filter hides it";
    case -ENOMEM:
        return "not enough locked memory for the ring (RLIMIT_MEMLOCK counts "
               "ring memory before Linux 5.12); raise it with 'ulimit -l' or "
               "LimitMEMLOCK=, or ask for smaller rings in rf_loop_opts";
    case -EINVAL:
        return "the kernel rejected the ring parameters; check "
               "rf_loop_opts.sq_entries/cq_entries (powers of two, "
               "cq >= sq, at most 32768 / 65536)";
    case -EMFILE:
    case -ENFILE:
        return "out of file descriptors; raise RLIMIT_NOFILE";
    default:
        return "see io_uring_setup(2)";
    }
}

void rf__setup_error_report(int err, unsigned flags)
{
    if (flags & RF_LOOP_QUIET)
        return;
    fprintf(stderr, "ringfiber: cannot set up io_uring: %s (%s): %s\n",
            rf_strerror(err), strerrorname_np(-err) ? strerrorname_np(-err) : "?",
            setup_hint(err));
}
