/*
 * The program tests/gdb/check_gdb.py looks at with tools/gdb/ringfiber.py:
 * a loop with tasks in several kinds of wait, one of them three calls
 * deep, stopped (a breakpoint on rf_gdb_stop_here) while they all wait.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringfiber.h"

#include "../deep_stack.h"

static rf_event ev;
static rf_mutex mu;
static int sv[2];

/* GDB_TARGET_ABORT=1: abort here, for a core file the kernel writes. */
__attribute__((noinline)) void rf_gdb_stop_here(void)
{
    const char *a = getenv("GDB_TARGET_ABORT");
    if (a && *a == '1')
        abort();
    __asm__ __volatile__("" ::: "memory");
}

static void *sleeper(void *arg)
{
    rf_sleep(3600 * RF_NSEC_PER_SEC);
    return arg;
}

static void *holder(void *arg)
{
    rf_mutex_lock(&mu);
    rf_event_wait(&ev);
    rf_mutex_unlock(&mu);
    return arg;
}

static void *locker(void *arg)
{
    if (rf_mutex_lock(&mu) == 0)
        rf_mutex_unlock(&mu);
    return arg;
}

static void *receiver(void *arg)
{
    char c;
    rf_recv(sv[0], &c, 1, 0);
    return arg;
}

static void *main_task(void *arg)
{
    (void)arg;
    rf_event_init(&ev);
    rf_mutex_init(&mu);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return (void *)1;
    /* Ids 2..6, in this order. */
    rf_task *t[5] = {
        rf_spawn_opts(deep_one, &ev, &(rf_spawn_options){.name = "deep"}),
        rf_spawn_opts(sleeper, NULL, &(rf_spawn_options){.name = "sleeper"}),
        rf_spawn_opts(holder, NULL, &(rf_spawn_options){.name = "holder"}),
        rf_spawn_opts(locker, NULL, &(rf_spawn_options){.name = "locker"}),
        rf_spawn_opts(receiver, NULL, &(rf_spawn_options){.name = "receiver"}),
    };
    for (int i = 0; i < 5; i++)
        rf_yield();
    rf_gdb_stop_here();
    /* Let everything finish. */
    rf_cancel(t[1]);
    (void)!write(sv[1], "x", 1);
    rf_event_set(&ev);
    for (int i = 0; i < 5; i++) {
        rf_join(t[i], NULL);
        rf_task_release(t[i]);
    }
    close(sv[0]);
    close(sv[1]);
    return NULL;
}

int main(void)
{
    void *r = NULL;
    /* Guard pages by mprotect: gdb's gcore cannot read a mapping with
     * guard regions in it (MADV_GUARD_INSTALL) and leaves all of it out,
     * stacks included; a kernel core dump has them either way. */
    const char *g = getenv("GDB_TARGET_GUARD");
    rf_loop_opts o = {.flags = g && strcmp(g, "madvise") == 0
                                   ? 0u
                                   : RF_LOOP_GUARD_MPROTECT};
    int rc = rf_run_opts(main_task, NULL, &r, &o);
    if (rc || r) {
        fprintf(stderr, "gdb_target: %s\n", rc ? rf_strerror(rc) : "socketpair");
        return 1;
    }
    puts("gdb_target: done");
    return 0;
}
