/*
 * Three calls deep into a wait on an event, each frame kept (no inlining,
 * no tail call): what the dump's backtraces (tests/test_inspect.c) and the
 * gdb helper's (tests/gdb/) must show in order, deep_three innermost.
 * deep_one(ev) is a task's function; it returns rf_event_wait's result.
 */
#ifndef RINGFIBER_TESTS_DEEP_STACK_H
#define RINGFIBER_TESTS_DEEP_STACK_H

#include <stdint.h>

#include "ringfiber.h"

static __attribute__((noinline)) void *deep_three(void *ev)
{
    int rc = rf_event_wait(ev);
    __asm__ __volatile__("" ::: "memory");
    return (void *)(intptr_t)rc;
}

static __attribute__((noinline)) void *deep_two(void *ev)
{
    void *r = deep_three(ev);
    __asm__ __volatile__("" ::: "memory");
    return r;
}

static __attribute__((noinline, unused)) void *deep_one(void *ev)
{
    void *r = deep_two(ev);
    __asm__ __volatile__("" ::: "memory");
    return r;
}

#endif
