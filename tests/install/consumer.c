/*
 * Install/consumer test: built against an installed ringfiber, once through
 * find_package(ringfiber) and once through pkg-config. It uses only the
 * installed header and library: a task sleeps 1 ms and the program prints
 * "ok".
 */
#include <ringfiber.h>

#include <errno.h>
#include <stdio.h>

/* ctest's SKIP_RETURN_CODE: io_uring is unavailable here (seccomp,
 * kernel.io_uring_disabled, old kernel); the build and link were still
 * tested. */
#define EXIT_SKIP 77

static void *main_task(void *arg)
{
    (void)arg;
    uint64_t t0 = rf_now_ns();
    int rc = rf_sleep(RF_NSEC_PER_MSEC);
    if (rc != 0) {
        fprintf(stderr, "consumer: rf_sleep: %s\n", rf_strerror(rc));
        return (void *)1;
    }
    if (rf_now_ns() - t0 < RF_NSEC_PER_MSEC) {
        fprintf(stderr, "consumer: rf_sleep(1 ms) returned early\n");
        return (void *)1;
    }
    return NULL;
}

int main(void)
{
    /* The header compiled against and the library loaded must agree. */
    if (rf_version() != RINGFIBER_VERSION_HEX) {
        fprintf(stderr, "consumer: header version 0x%x, library 0x%x\n",
                (unsigned)RINGFIBER_VERSION_HEX, rf_version());
        return 1;
    }
    void *res = (void *)1;
    int rc = rf_run(main_task, NULL, &res);
    if (rc == -EPERM || rc == -ENOSYS) {
        fprintf(stderr, "consumer: no io_uring here (%s), skipping the run\n",
                rf_strerror(rc));
        return EXIT_SKIP;
    }
    if (rc != 0) {
        fprintf(stderr, "consumer: rf_run: %s\n", rf_strerror(rc));
        return 1;
    }
    if (res != NULL)
        return 1;
    puts("ok");
    return 0;
}
