/*
 * Task stacks: mmap'ed slabs of equal slots, each slot a guard page
 * followed by a stack, recycled LIFO through a per-loop free list (the
 * most recently used stack is the one whose pages are still in cache and
 * already faulted in).
 *
 * Why slabs with MADV_GUARD_INSTALL: a guard page made with mprotect()
 * splits the mapping, so each stack costs two VMAs and the default
 * vm.max_map_count (65530) caps a process at ~32,000 tasks. Linux 6.13's
 * MADV_GUARD_INSTALL marks pages as guards inside one mapping, so a slab of
 * 64 stacks stays one VMA. On older kernels (EINVAL) we fall back to
 * mprotect guards for as long as the map count allows, and every slot also
 * gets a canary at its lowest word that is checked at each switch, so a
 * slot left without a guard (mprotect refused with ENOMEM) still reports
 * an overflow instead of corrupting its neighbour silently.
 *
 * Stacks of a non-default size get a mapping of their own and are unmapped
 * when their task ends.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13 */
#endif

#define RF_SLAB_STACKS 64u
/*
 * 64 KiB of guard below each stack, not one page: a function with a large
 * frame (or several inlined into one) moves the stack pointer by more than
 * a page at once, and its first write would land beyond a one-page guard,
 * in the neighbouring stack. Guard pages cost address space only.
 */
#define RF_GUARD_SIZE (64u * 1024u)
#define RF_CANARY_MAGIC 0x72696e6766696272ULL /* "ringfibr" */

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

static uint64_t max_map_count(void)
{
    uint64_t v = 65530; /* the kernel's default */
    FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
    if (f) {
        unsigned long long x;
        if (fscanf(f, "%llu", &x) == 1)
            v = x;
        fclose(f);
    }
    return v;
}

int rf__stacks_init(rf_stacks *s, size_t default_size, unsigned flags)
{
    memset(s, 0, sizeof(*s));
    s->page = (size_t)sysconf(_SC_PAGESIZE);
    s->size = round_up(default_size, s->page);
    s->guard = RF_GUARD_SIZE;
    s->slot = s->size + s->guard;
    s->per_slab = RF_SLAB_STACKS;
    s->canary_key = RF_CANARY_MAGIC ^ (uint64_t)(uintptr_t)s;
    s->guard_mode = (flags & RF_LOOP_GUARD_MPROTECT) ? RF_GUARD_MPROTECT
                                                     : RF_GUARD_MADVISE;
    s->pidfd = -1;
    s->mprotect_budget = max_map_count() / 4; /* 2 mappings per guard */
    if (s->guard_mode == RF_GUARD_MADVISE)
        s->pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    return 0;
}

static uint64_t canary_of(const rf_stacks *s, const void *lo)
{
    return s->canary_key ^ (uint64_t)(uintptr_t)lo;
}

/* Put a guard region at g. Returns false if the slot must rely on its
 * canary alone. */
static bool guard_install(rf_stacks *s, void *g)
{
    if (s->guard_mode == RF_GUARD_MADVISE) {
        if (madvise(g, s->guard, MADV_GUARD_INSTALL) == 0)
            return true;
        if (errno != EINVAL)
            return false;
        RF_STAT_SET(s->guard_mode, RF_GUARD_MPROTECT); /* before 6.13 */
    }
    /* Each mprotect guard splits the mapping: keep within a share of
     * vm.max_map_count, so that slabs (and the rest of the program) can
     * still be mapped; slots past it rely on their canary. */
    if (s->mprotect_budget == 0)
        return false;
    if (mprotect(g, s->guard, PROT_NONE) != 0)
        return false;
    s->mprotect_budget--;
    return true;
}

/*
 * All the guards of a new slab in one system call: process_madvise() on
 * ourselves takes a vector of ranges (any advice is allowed on the calling
 * process since 6.13, the release that brought guard regions). Installing
 * them one madvise() at a time costs a system call per task.
 */
static bool guard_install_slab(rf_stacks *s, char *base)
{
    if (s->guard_mode != RF_GUARD_MADVISE || s->pidfd < 0)
        return false;
    struct iovec iov[RF_SLAB_STACKS];
    for (unsigned i = 0; i < s->per_slab; i++) {
        iov[i].iov_base = base + (size_t)i * s->slot;
        iov[i].iov_len = s->guard;
    }
    long rc = syscall(SYS_process_madvise, s->pidfd, iov, s->per_slab,
                      MADV_GUARD_INSTALL, 0);
    if (rc == (long)((size_t)s->per_slab * s->guard))
        return true;
    /* Refused or partial: never try again, take the per-slot path (it
     * re-installs harmlessly where a guard is already in place). */
    close(s->pidfd);
    s->pidfd = -1;
    return false;
}

static void *map_stack_area(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* The free-list link of a pooled stack sits in its top word. */
static void **free_link(const rf_stacks *s, void *lo)
{
    return (void **)((char *)lo + s->size - sizeof(void *));
}

static int slab_new(rf_stacks *s)
{
    rf_stack_slab *slab = malloc(sizeof(*slab));
    if (!slab)
        return -ENOMEM;
    slab->len = (size_t)s->per_slab * s->slot;
    slab->base = map_stack_area(slab->len);
    if (!slab->base) {
        free(slab);
        return -ENOMEM;
    }
    bool guarded = guard_install_slab(s, slab->base);
    /* Push in reverse so the lowest slot is handed out first. */
    for (unsigned i = s->per_slab; i-- > 0;) {
        char *slot = (char *)slab->base + (size_t)i * s->slot;
        void *lo = slot + s->guard;
        if (!guarded &&
            (!guard_install(s, slot) || s->guard_mode != RF_GUARD_MADVISE))
            *(uint64_t *)lo = canary_of(s, lo);
        *free_link(s, lo) = s->free;
        s->free = lo;
    }
    slab->next = s->slabs;
    s->slabs = slab;
    return 0;
}

static bool has_canary(const rf_stacks *s, const void *lo)
{
    return *(const uint64_t *)lo == canary_of(s, lo);
}

int rf__stack_get(rf_stacks *s, rf_task *t, size_t size)
{
    size = size ? round_up(size, s->page) : s->size;
    if (size == s->size) {
        if (!s->free) {
            int rc = slab_new(s);
            if (rc)
                return rc;
        }
        void *lo = s->free;
        s->free = *free_link(s, lo);
        t->ctx.stack_lo = lo;
        t->ctx.stack_size = size;
        t->pooled_stack = true;
        t->canary = s->guard_mode != RF_GUARD_MADVISE && has_canary(s, lo);
        RF_STAT_ADD(s->mapped, 1);
        return 0;
    }
    char *base = map_stack_area(size + s->guard);
    if (!base)
        return -ENOMEM;
    void *lo = base + s->guard;
    bool guarded = guard_install(s, base);
    t->canary = !guarded || s->guard_mode != RF_GUARD_MADVISE;
    if (t->canary)
        *(uint64_t *)lo = canary_of(s, lo);
    t->ctx.stack_lo = lo;
    t->ctx.stack_size = size;
    t->pooled_stack = false;
    RF_STAT_ADD(s->mapped, 1);
    return 0;
}

void rf__stack_put(rf_stacks *s, rf_task *t)
{
    void *lo = t->ctx.stack_lo;
    RF_STAT_SUB(s->mapped, 1);
    if (t->pooled_stack) {
        *free_link(s, lo) = s->free;
        s->free = lo;
    } else {
        munmap((char *)lo - s->guard, t->ctx.stack_size + s->guard);
    }
    t->ctx.stack_lo = NULL;
}

static void write_str(const char *str) { (void)!write(2, str, strlen(str)); }

static void write_u64(uint64_t v)
{
    char buf[24];
    char *p = buf + sizeof(buf);
    *--p = '\0';
    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    write_str(p);
}

/* Async-signal-safe: called from the SIGSEGV handler too. */
static void report_overflow(const rf_task *t, const char *how)
{
    write_str("ringfiber: stack overflow in task '");
    if (t->name[0]) {
        write_str(t->name);
    } else {
        write_str("task-");
        write_u64(t->id);
    }
    write_str("' (stack size ");
    write_u64(t->ctx.stack_size);
    write_str(" bytes): ");
    write_str(how);
    write_str(". Give it a larger stack (rf_spawn_options.stack_size) "
              "or use less stack in it.\n");
}

/* Called at every switch away from a task whose stack has a canary. */
void rf__stack_check(rf_stacks *s, rf_task *t)
{
    if (rf_unlikely(!has_canary(s, t->ctx.stack_lo))) {
        report_overflow(t, "the canary at the bottom of its stack was "
                           "overwritten");
        abort();
    }
}

void rf__stacks_fini(rf_stacks *s)
{
    rf_stack_slab *slab = s->slabs;
    while (slab) {
        rf_stack_slab *next = slab->next;
        munmap(slab->base, slab->len);
        free(slab);
        slab = next;
    }
    s->slabs = NULL;
    s->free = NULL;
    if (s->pidfd >= 0)
        close(s->pidfd);
    s->pidfd = -1;
}

/*
 * Overflow reporting. The handler is process-wide (signal dispositions
 * are) and chains to whatever handler was there before for faults that
 * are not ours. It is (re)installed at every rf_loop_new if someone else
 * has taken SIGSEGV since (test frameworks and crash reporters do), under
 * a lock because loops may be created on several threads at once. It runs
 * on an alternate signal stack, since the faulting stack is full.
 */
static struct sigaction rf_prev_segv;
static pthread_mutex_t rf_segv_lock = PTHREAD_MUTEX_INITIALIZER;

static void segv_chain(int sig, siginfo_t *si, void *uc)
{
    if (rf_prev_segv.sa_flags & SA_SIGINFO) {
        rf_prev_segv.sa_sigaction(sig, si, uc);
    } else if (rf_prev_segv.sa_handler != SIG_DFL &&
               rf_prev_segv.sa_handler != SIG_IGN) {
        rf_prev_segv.sa_handler(sig);
    } else {
        /* Returning re-executes the faulting access, now fatal. */
        signal(sig, SIG_DFL);
    }
}

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
    rf_loop *l = rf__tls_loop;
    rf_task *t = l ? l->current : NULL;
    if (t && t->ctx.stack_lo) {
        uintptr_t a = (uintptr_t)si->si_addr;
        uintptr_t lo = (uintptr_t)t->ctx.stack_lo;
        if (a >= lo - l->stacks.guard && a < lo + sizeof(uint64_t)) {
            report_overflow(t, "it ran into the guard page below its stack");
            signal(sig, SIG_DFL);
            return;
        }
    }
    segv_chain(sig, si, uc);
}

static void segv_install(void)
{
    pthread_mutex_lock(&rf_segv_lock);
    struct sigaction cur;
    if (sigaction(SIGSEGV, NULL, &cur) == 0 &&
        !((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == segv_handler)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = segv_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        rf_prev_segv = cur;
        sigaction(SIGSEGV, &sa, NULL);
    }
    pthread_mutex_unlock(&rf_segv_lock);
}

int rf__overflow_handler_install(rf_loop *l)
{
    if (l->flags & RF_LOOP_NO_OVERFLOW_HANDLER)
        return 0;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
        size_t sz = 64 * 1024;
        void *p = map_stack_area(sz);
        if (!p)
            return -ENOMEM;
        stack_t ss = {.ss_sp = p, .ss_size = sz, .ss_flags = 0};
        if (sigaltstack(&ss, NULL) != 0) {
            munmap(p, sz);
            return -errno;
        }
        l->altstack = p;
        l->altstack_size = sz;
        l->own_altstack = true;
    }
    segv_install();
    return 0;
}

void rf__overflow_handler_remove(rf_loop *l)
{
    if (!l->own_altstack)
        return;
    stack_t cur;
    /* Only undo what is still ours (a nested user of sigaltstack may have
     * replaced it since). */
    if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == l->altstack) {
        stack_t off = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
        sigaltstack(&off, NULL);
        munmap(l->altstack, l->altstack_size);
    }
    /* If it was replaced, leaking 64 KiB is safer than unmapping a stack
     * the kernel may still deliver signals on. */
    l->own_altstack = false;
}
