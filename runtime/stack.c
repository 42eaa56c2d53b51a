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
 *
 * A default-size stack is promised at spawn and taken at the task's first
 * run (rf__stack_reserve, rf__stack_bind: see there why); a slab is mapped
 * when a promise needs it, and guarded and touched when its first stack
 * is taken (slab_fill).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#include "internal.h"

#if defined(RF_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13 */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/* A fresh slab's preparation by the preparer thread (prep->mu). */
enum { SLAB_FRESH, SLAB_QUEUED, SLAB_PREPARING, SLAB_PREPARED,
       SLAB_PREPARED_UNGUARDED, SLAB_TAKEN };

typedef struct rf_stack_slab {
    struct rf_stack_slab *next;       /* every slab (rf_stacks.slabs) */
    struct rf_stack_slab *next_fresh; /* slabs not yet filled (.fresh) */
    struct rf_stack_slab *next_prep;  /* the preparer's queue */
    void *base;
    size_t len;
    uint32_t slots; /* pooled slots of this slab and of those mapped before */
    int state; /* SLAB_*, under prep->mu */
} rf_stack_slab;

/*
 * The slab preparer. Filling a fresh slab costs a guard install and 64
 * page allocations (slab_fill), on the loop's thread, in the switch of
 * whichever task then runs for the first time: where many tasks start at
 * once on a fresh loop (W3's first round) that is most of the round. So
 * when the loop fills a slab and more fresh ones wait, a thread of the
 * loop's (started at the spawn that maps a second fresh slab) prepares
 * the next RF_PREP_AHEAD of them meanwhile, on another CPU where there
 * is one: it installs their guards and populates their stack tops
 * (process_madvise, MADV_GUARD_INSTALL and MADV_POPULATE_WRITE), and the
 * loop, when it reaches a prepared slab, only pushes its stacks onto the
 * free list. Only slabs the loop is about to fill are prepared
 * (read-ahead, not all that spawns promised: tasks that end before the
 * next one starts never need them). Where the kernel lacks either advice
 * (before 6.13), or the thread cannot be made, the loop does it all, as
 * before.
 */
#define RF_PREP_AHEAD 4

typedef struct rf_stack_prep {
    pthread_mutex_t mu;
    pthread_cond_t work; /* the preparer waits for a slab */
    pthread_t thread;
    rf_stack_slab *head, *tail; /* queued, SLAB_QUEUED */
    bool stop;
    /* Copied from the loop's rf_stacks, read-only here. */
    int pidfd;
    size_t slot, guard, page;
} rf_stack_prep;

#define RF_SLAB_STACKS 64u
/*
 * 64 KiB of guard below each stack, not one page: a function with a large
 * frame (or several inlined into one) moves the stack pointer by more than
 * a page at once, and its first write would land beyond a one-page guard,
 * in the neighbouring stack. Guard pages cost address space only. Frames
 * larger than the guard still jump it unless compiled with
 * -fstack-clash-protection (CMakeLists.txt), which probes every page of
 * them: on x86-64 GCC and Clang probe each 4 KiB, on AArch64 GCC assumes a
 * guard of 64 KiB, which this is.
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
    s->page = (uint32_t)sysconf(_SC_PAGESIZE);
    s->size = round_up(default_size, s->page);
    s->guard = RF_GUARD_SIZE;
    s->slot = s->size + s->guard;
    s->canary_key = RF_CANARY_MAGIC ^ (uint64_t)(uintptr_t)s;
    s->guard_mode = (flags & RF_LOOP_GUARD_MPROTECT) ? RF_GUARD_MPROTECT
                                                     : RF_GUARD_MADVISE;
    s->pidfd = -1;
    uint64_t budget = max_map_count() / 4; /* 2 mappings per guard */
    s->mprotect_budget = budget > UINT32_MAX ? UINT32_MAX : (uint32_t)budget;
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

static void prep_stop(rf_stacks *s);
static struct rf_stack_prep *prep_get(rf_stacks *s);

/* The ranges of a slab's stacks for process_madvise(). Not on the
 * stack: a slab is filled at a task's first run, inside the switch of
 * whichever task suspends then, and that one may have little stack left
 * (16 KiB stacks are allowed). One per thread: a loop is one thread's. */
static __thread struct iovec slab_iov[RF_SLAB_STACKS];

/*
 * All the guards of a new slab in one system call: process_madvise() on
 * ourselves takes a vector of ranges (any advice is allowed on the calling
 * process since 6.13, the release that brought guard regions). Installing
 * them one madvise() at a time costs a system call per task.
 */
/* slab_iov as the ranges of a slab at base: each slot's guard region
 * (tops false), or each stack's top page (tops true). */
static struct iovec *slab_ranges(char *base, unsigned n, size_t slot,
                                 size_t guard, size_t page, bool tops)
{
    for (unsigned i = 0; i < n; i++) {
        slab_iov[i].iov_base = tops ? base + (size_t)(i + 1) * slot - page
                                    : base + (size_t)i * slot;
        slab_iov[i].iov_len = tops ? page : guard;
    }
    return slab_iov;
}

static bool guard_install_slab(rf_stacks *s, char *base)
{
    if (s->guard_mode != RF_GUARD_MADVISE || s->pidfd < 0)
        return false;
    struct iovec *iov =
        slab_ranges(base, RF_SLAB_STACKS, s->slot, s->guard, s->page, false);
    long rc = syscall(SYS_process_madvise, s->pidfd, iov, RF_SLAB_STACKS,
                      MADV_GUARD_INSTALL, 0);
    if (rc == (long)((size_t)RF_SLAB_STACKS * s->guard))
        return true;
    /* Refused or partial: never try again, take the per-slot path (it
     * re-installs harmlessly where a guard is already in place). The
     * preparer, which uses the descriptor too, stops first. */
    prep_stop(s);
    s->prep_off = true;
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

/*
 * Every stack area leaves through here. Under AddressSanitizer its shadow
 * is cleared first: frames that lived on it left their redzones poisoned,
 * and a later mapping that gets the same addresses (another stack, a
 * ring's SQE array) would be reported as overflowing into them.
 */
static void unmap_stack_area(void *p, size_t len)
{
#if defined(RF_ASAN)
    __asan_unpoison_memory_region(p, len);
#endif
    munmap(p, len);
}

/* A stack's top word: what a new slab's first touch writes. */
static void **top_word(const rf_stacks *s, void *lo)
{
    return (void **)((char *)lo + s->size - sizeof(void *));
}

/*
 * The first page of each new stack. Every slot's top page is written at
 * once, which costs a page fault per stack: most of what a task's first
 * spawn costs on a fresh loop (W3 cold, bench/README.md). The faults can
 * instead be taken in one system call per slab,
 * process_madvise(MADV_POPULATE_WRITE) over the 64 top pages, which
 * saves the traps but not the page allocations. Which is cheaper depends
 * on the machine, and on this project's VM on its moment: measured on
 * 100,000 slots, populating cost 1.13x the faults when a fault took 2.7
 * us and 0.63x when one took 17 us (the host backing fresh guest
 * memory). So both are timed: the first slab faults, the second
 * populates, then each slab takes the one that was cheaper when last
 * timed, and every 8th slab the other, to see whether the machine has
 * changed its mind. Two clock reads per 64 stacks.
 */
static void slab_touch(rf_stacks *s, char *base)
{
    unsigned n = s->slabs_made++; /* wraps: both are timed anew */
    bool populate = false;
    if (!s->populate_off && s->pidfd >= 0 && n >= 1) {
        bool cheaper = s->populate_ns < s->touch_ns;
        populate = n == 1 || (n % 8 == 0 ? !cheaper : cheaper);
    }
    uint64_t t0 = rf__real_now_ns();
    if (populate) {
        struct iovec *iov =
            slab_ranges(base, RF_SLAB_STACKS, s->slot, s->guard, s->page,
                        true);
        long rc = syscall(SYS_process_madvise, s->pidfd, iov, RF_SLAB_STACKS,
                          MADV_POPULATE_WRITE, 0);
        if (rc != (long)((size_t)RF_SLAB_STACKS * s->page))
            s->populate_off = true; /* refused (before 6.x?): fault */
    }
    for (unsigned i = 0; i < RF_SLAB_STACKS; i++)
        *(void *volatile *)top_word(s, base + (size_t)i * s->slot +
                                           s->guard) = NULL;
    uint64_t ns = rf__real_now_ns() - t0;
    uint32_t dt = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
    if (populate)
        s->populate_ns = dt;
    else
        s->touch_ns = dt;
}

/*
 * Room on the free list (s->free) for at least slots stacks: every slot
 * mapped has room there, so that rf__stack_put and slab_fill, which
 * cannot fail, only push. The list is a mapping of its own, grown by
 * mremap: no copy, pages touched only as stacks are freed onto it, and
 * nothing left in malloc's heap, where a 100,000-task list freed with its
 * loop made the heap give back its top and the next loop's task records
 * fault in anew (W2_spawn_join_sweep: 1.8x).
 */
static int free_grow(rf_stacks *s, uint64_t slots)
{
    uint64_t cap = s->free_cap ? (uint64_t)s->free_cap * 2
                               : s->page / sizeof(void *);
    while (cap < slots)
        cap *= 2;
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    size_t old = (size_t)s->free_cap * sizeof(void *);
    size_t len = (size_t)cap * sizeof(void *);
#if defined(RF_TSAN)
    /* ThreadSanitizer follows mmap and munmap but not mremap (GCC 12's
     * libtsan has no interceptor for it): an array moved by mremap could
     * meet shadow state left at its new address by an earlier mapping
     * there. Under it, a new mapping and a copy. */
    void *a = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return -ENOMEM;
    if (s->free) {
        memcpy(a, s->free, (size_t)s->nfree * sizeof(void *));
        munmap(s->free, old);
    }
#else
    void *a = s->free ? mremap(s->free, old, len, MREMAP_MAYMOVE)
                      : mmap(NULL, len, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return -ENOMEM;
#endif
    s->free = a;
    s->free_cap = (uint32_t)cap;
    return 0;
}

/* A new slab, mapped, neither guarded nor touched: it waits on s->fresh
 * until the free list runs dry (slab_fill). Called by rf__stack_reserve
 * (internal.h) when no stack is spare. */
int rf__stack_map_slab(rf_stacks *s)
{
    uint64_t slots =
        (s->slabs ? s->slabs->slots : 0) + (uint64_t)RF_SLAB_STACKS;
    if (slots > UINT32_MAX)
        return -ENOMEM;
    if (slots > s->free_cap) {
        int rc = free_grow(s, slots);
        if (rc)
            return rc;
    }
    rf_stack_slab *slab = malloc(sizeof(*slab));
    if (!slab)
        return -ENOMEM;
    slab->len = (size_t)RF_SLAB_STACKS * s->slot;
    slab->base = map_stack_area(slab->len);
    if (!slab->base) {
        free(slab);
        return -ENOMEM;
    }
    slab->slots = (uint32_t)slots;
    slab->next = s->slabs;
    s->slabs = slab;
    slab->next_fresh = s->fresh;
    s->fresh = slab;
    slab->next_prep = NULL;
    slab->state = SLAB_FRESH;
    s->spare += RF_SLAB_STACKS;
    if (slab->next_fresh)
        prep_get(s); /* a burst: two fresh slabs wait */
    return 0;
}

/* ---- the slab preparer (see rf_stack_prep) ---- */

/* The preparer thread: guard and populate the queued slabs, in order. */
static void *prep_main(void *arg)
{
    rf_stack_prep *p = arg;
    struct iovec *iov; /* slab_iov: this thread's own */
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stop)
            break;
        rf_stack_slab *slab = p->head;
        p->head = slab->next_prep;
        if (!p->head)
            p->tail = NULL;
        slab->state = SLAB_PREPARING;
        char *base = slab->base;
        pthread_mutex_unlock(&p->mu);
        iov = slab_ranges(base, RF_SLAB_STACKS, p->slot, p->guard, p->page,
                          false);
        long rc = syscall(SYS_process_madvise, p->pidfd, iov, RF_SLAB_STACKS,
                          MADV_GUARD_INSTALL, 0);
        bool guarded = rc == (long)((size_t)RF_SLAB_STACKS * p->guard);
        iov = slab_ranges(base, RF_SLAB_STACKS, p->slot, p->guard, p->page,
                          true);
        /* A refusal leaves the pages to the loop's first writes. */
        (void)syscall(SYS_process_madvise, p->pidfd, iov, RF_SLAB_STACKS,
                      MADV_POPULATE_WRITE, 0);
        pthread_mutex_lock(&p->mu);
        slab->state = guarded ? SLAB_PREPARED : SLAB_PREPARED_UNGUARDED;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* The preparer: started by rf__stack_map_slab when a second fresh slab waits (on
 * the spawning task's stack, at an rf_spawn, not inside the switch of
 * whatever task suspends when a slab is filled); NULL where there is
 * none (prep_off). */
static rf_stack_prep *prep_get(rf_stacks *s)
{
    if (s->prep || s->prep_off)
        return s->prep;
    s->prep_off = true; /* unless it starts below */
    if (s->guard_mode != RF_GUARD_MADVISE || s->pidfd < 0 || s->populate_off)
        return NULL;
    rf_stack_prep *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    p->pidfd = s->pidfd;
    p->slot = s->slot;
    p->guard = s->guard;
    p->page = s->page;
    if (rf__thread_create(&p->thread, prep_main, p) != 0) {
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    pthread_setname_np(p->thread, "rf-stacks");
    s->prep_off = false;
    s->prep = p;
    return p;
}

/* Queue the next RF_PREP_AHEAD fresh slabs that are not yet queued. */
static void prep_ahead(rf_stacks *s)
{
    rf_stack_prep *p = s->prep;
    if (!p)
        return;
    bool queued = false;
    pthread_mutex_lock(&p->mu);
    rf_stack_slab *f = s->fresh;
    for (unsigned k = 0; f && k < RF_PREP_AHEAD; f = f->next_fresh, k++) {
        if (f->state != SLAB_FRESH)
            continue;
        f->state = SLAB_QUEUED;
        f->next_prep = NULL;
        if (p->tail)
            p->tail->next_prep = f;
        else
            p->head = f;
        p->tail = f;
        queued = true;
    }
    if (queued)
        pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
}

/* The fresh slab the loop fills next, unlinked from s->fresh: among the
 * first RF_PREP_AHEAD + 1, one the preparer is done with, else the
 * first that it is not working on (out of its queue if it is there);
 * the loop never waits for the preparer. *state: the slab's state then. */
static rf_stack_slab *prep_pick(rf_stacks *s, int *state)
{
    rf_stack_prep *p = s->prep;
    rf_stack_slab *slab = s->fresh;
    if (!p) {
        s->fresh = slab->next_fresh;
        *state = SLAB_FRESH;
        return slab;
    }
    pthread_mutex_lock(&p->mu);
    rf_stack_slab **at = NULL, **pp = &s->fresh;
    for (unsigned k = 0; *pp && k <= RF_PREP_AHEAD;
         pp = &(*pp)->next_fresh, k++) {
        int st = (*pp)->state;
        if (st == SLAB_PREPARED || st == SLAB_PREPARED_UNGUARDED) {
            at = pp;
            break;
        }
        if (!at && st != SLAB_PREPARING)
            at = pp;
    }
    if (!at) /* the preparer works on every one of them: do the first */
        at = &s->fresh;
    slab = *at;
    *at = slab->next_fresh;
    if (slab->state == SLAB_QUEUED) {
        rf_stack_slab **q = &p->head, *prev = NULL;
        while (*q != slab) {
            prev = *q;
            q = &(*q)->next_prep;
        }
        *q = slab->next_prep;
        if (p->tail == slab)
            p->tail = prev;
    }
    *state = slab->state;
    /* Taken: the preparer leaves it alone (one it is preparing is done
     * twice, harmlessly: a guard or a page installed twice is one). */
    if (slab->state != SLAB_PREPARING)
        slab->state = SLAB_TAKEN;
    pthread_mutex_unlock(&p->mu);
    return slab;
}

static void prep_stop(rf_stacks *s)
{
    rf_stack_prep *p = s->prep;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p);
    s->prep = NULL;
}

/* The free list is empty: guard a fresh slab's stacks, touch their tops
 * and put them on it. */
static void slab_fill(rf_stacks *s)
{
    int state;
    rf_stack_slab *slab = prep_pick(s, &state);
    if (s->fresh)
        prep_ahead(s); /* the next ones, while this one is filled */
    bool guarded = state == SLAB_PREPARED;
    if (state != SLAB_PREPARED && state != SLAB_PREPARED_UNGUARDED) {
        guarded = guard_install_slab(s, slab->base);
        slab_touch(s, slab->base);
    }
    /* Push in reverse so the lowest slot is handed out first. */
    for (unsigned i = RF_SLAB_STACKS; i-- > 0;) {
        char *slot = (char *)slab->base + (size_t)i * s->slot;
        void *lo = slot + s->guard;
        if (!guarded &&
            (!guard_install(s, slot) || s->guard_mode != RF_GUARD_MADVISE))
            *(uint64_t *)lo = canary_of(s, lo);
        s->free[s->nfree++] = lo;
    }
}

static bool has_canary(const rf_stacks *s, const void *lo)
{
    return *(const uint64_t *)lo == canary_of(s, lo);
}

/*
 * A pooled (default-size) stack is promised at spawn and taken when the
 * task first runs (rf__stack_bind, from the scheduler). Spawning then
 * touches no stack memory, and a task takes the stack most recently
 * released, still in cache: tasks that end before the next one starts
 * (a burst of short tasks, spawned then gathered) run on two stacks in
 * turn however many there are, instead of one cold stack each. The
 * promise keeps rf_spawn's contract: the slab a stack will come from is
 * mapped at spawn (s->spare counts the stacks on the free list and in
 * fresh slabs not yet promised), so an out-of-memory still fails the
 * spawn, and binding cannot fail. The guards and the first touch of a
 * fresh slab's pages move from spawn to the first run of the first task
 * that takes one of its stacks. The promise is rf__stack_reserve
 * (internal.h, inline: every spawn makes one); when no stack is spare, it
 * maps a slab (rf__stack_map_slab).
 */

/*
 * How a bind fetches ahead. Where many tasks start at once (binds with no
 * release between them: s->binds), each takes a stack that is out of the
 * cache and the TLB, and would wait at its first frames for both. A
 * prefetch that misses the TLB holds the CPU up until its page walk is
 * done, so fetched one by one the stacks would still cost a walk each,
 * only earlier. Every BIND_BATCH binds, the top line of each of the
 * BIND_BATCH stacks after the next BIND_BATCH is fetched at once: their
 * walks overlap. Each bind then fetches the top BIND_LINES lines of the
 * stack BIND_AHEAD on, already in the TLB. Tasks that end before the next
 * one starts take back the stack just released, in cache: nothing is
 * fetched for them.
 */
enum { BIND_AHEAD = 4, BIND_LINES = 6, BIND_BATCH = 8 };

void rf__stack_bind(rf_stacks *s, rf_task *t)
{
    if (!s->nfree)
        slab_fill(s); /* s->spare promised one: a fresh slab is there */
    void *lo = s->free[--s->nfree];
    uint32_t run = ++s->binds;
    if (run >= 2 && s->nfree >= BIND_AHEAD) {
        char *top = (char *)s->free[s->nfree - BIND_AHEAD] + s->size;
        for (unsigned k = 1; k <= BIND_LINES; k++)
            __builtin_prefetch(top - 64 * k, 1);
        if (run % BIND_BATCH == 0 && s->nfree >= 2 * BIND_BATCH)
            for (unsigned k = BIND_BATCH; k < 2 * BIND_BATCH; k++)
                __builtin_prefetch(
                    (char *)s->free[s->nfree - 1 - k] + s->size - 64, 1);
    }
    t->ctx.stack_lo = lo;
    t->canary = s->guard_mode != RF_GUARD_MADVISE && has_canary(s, lo);
    RF_STAT_ADD(s->mapped, 1);
}

/* A stack of a size of its own, mapped at spawn. */
int rf__stack_get(rf_stacks *s, rf_task *t, size_t size)
{
    size = round_up(size, s->page);
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
    s->own_mapped++;
    return 0;
}

void rf__stack_put(rf_stacks *s, rf_task *t)
{
    void *lo = t->ctx.stack_lo;
    if (!lo) {
        if (t->pooled_stack)
            s->spare++; /* promised, never bound: the task never ran */
        t->pooled_stack = false; /* a second put gives nothing back */
        return;
    }
    if (t->pooled_stack)
        s->spare++;
    RF_STAT_SUB(s->mapped, 1);
    if (t->pooled_stack) {
        s->free[s->nfree++] = lo;
        s->binds = 0;
    } else {
        unmap_stack_area((char *)lo - s->guard, t->ctx.stack_size + s->guard);
        s->own_mapped--;
    }
    t->ctx.stack_lo = NULL;
    t->pooled_stack = false;
}

/* ---- overflow reports: async-signal-safe (write(2) only, no stdio, no
 * allocation), since the SIGSEGV handler makes them too ---- */

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

/* 'name' (stack size N bytes) */
static void write_task(const rf_task *t)
{
    write_str("'");
    if (t->name[0]) {
        write_str(t->name);
    } else {
        write_str("task-");
        write_u64(t->id);
    }
    write_str("' (stack size ");
    write_u64(t->ctx.stack_size);
    write_str(" bytes)");
}

static void write_advice(void)
{
    write_str(". Give it a larger stack (rf_spawn_options.stack_size) "
              "or use less stack in it.");
}

static void report_overflow(const rf_task *t, const char *how)
{
    write_str("ringfiber: stack overflow in task ");
    write_task(t);
    write_str(": ");
    write_str(how);
    write_advice();
    write_str("\n");
}

/*
 * Called at every switch away from a task whose stack has a canary (the
 * slots guarded by mprotect or by nothing at all; out of line, off the
 * path of stacks guarded with MADV_GUARD_INSTALL). Besides the canary, it
 * checks that the task is still on its own stack: a frame larger than the
 * guard, in code built without -fstack-clash-protection, may have moved
 * the stack pointer past the guard into the stack below without a fault,
 * and a switch from there would save the task's registers in another
 * task's stack.
 */
void rf__stack_check(rf_stacks *s, rf_task *t)
{
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    uintptr_t lo = (uintptr_t)t->ctx.stack_lo;
    if (rf_unlikely(sp - lo >= t->ctx.stack_size)) {
        write_str("ringfiber: stack overflow in task ");
        write_task(t);
        if (sp < lo) {
            write_str(": at a switch its stack pointer was ");
            write_u64(lo - sp);
            write_str(" bytes below its stack, past the guard (a frame "
                      "larger than the guard, in code built without "
                      "-fstack-clash-protection)");
        } else {
            write_str(": at a switch its stack pointer was not in its own "
                      "stack");
        }
        write_advice();
        write_str("\n");
        abort();
    }
    if (rf_unlikely(!has_canary(s, t->ctx.stack_lo))) {
        report_overflow(t, "the canary at the bottom of its stack was "
                           "overwritten");
        abort();
    }
}

/*
 * Where an address lies among the stacks of a loop: in a task's stack or
 * in the guard below it (each stack, pooled or with a mapping of its own,
 * is the region [lo - guard, lo + size)), or in a pooled slot that no task
 * holds. Only reads memory the loop's thread owns; called from the SIGSEGV
 * handler on that thread.
 */
typedef struct stack_place {
    bool found;          /* in a task's stack or guard, or a free slot */
    bool guard;          /* in the guard part */
    const rf_task *task; /* the holder; NULL: a free pooled slot */
    uintptr_t lo;        /* lowest usable address of that stack */
} stack_place;

static bool place_in_task(const rf_stacks *s, const rf_task *t, uintptr_t a,
                          stack_place *p)
{
    uintptr_t lo = t ? (uintptr_t)t->ctx.stack_lo : 0;
    if (!lo || a < lo - s->guard || a >= lo + t->ctx.stack_size)
        return false;
    p->found = true;
    p->guard = a < lo;
    p->task = t;
    p->lo = lo;
    return true;
}

static stack_place place_of(const rf_loop *l, uintptr_t a)
{
    const rf_stacks *s = &l->stacks;
    stack_place p = {0};
    bool in_slab = false;
    for (const rf_stack_slab *slab = s->slabs; slab; slab = slab->next) {
        uintptr_t base = (uintptr_t)slab->base;
        if (a >= base && a - base < slab->len) {
            in_slab = true;
            p.lo = base + (a - base) / s->slot * s->slot + s->guard;
            break;
        }
    }
    if (!in_slab && s->own_mapped == 0)
        return p; /* the common case for faults that are not ours */
    /* The holder: the running task, the one that has just returned (its
     * stack is released at the next switch), or one on the alive list,
     * walked no further than its length in case it is damaged. */
    rf_task *dead = l->dead == RF_PEEK ? NULL : l->dead; /* a dump's walk */
    if (place_in_task(s, l->current, a, &p) || place_in_task(s, dead, a, &p))
        return p;
    const rf_list *n = l->alive.next;
    for (uint64_t i = 0; n != &l->alive && i <= l->stats.tasks_alive;
         i++, n = n->next)
        if (place_in_task(s, rf_container_of(n, rf_task, alive), a, &p))
            return p;
    if (in_slab) { /* a slot on the free list */
        p.found = true;
        p.guard = a < p.lo;
        p.task = NULL;
    }
    return p;
}

/* "the guard below the stack of task 'x' (stack size N bytes)", ... */
static void write_place(const stack_place *p)
{
    if (!p->task) {
        write_str(p->guard ? "the guard of a free stack slot (no task holds it)"
                           : "a free stack slot (no task holds it)");
        return;
    }
    write_str(p->guard ? "the guard below the stack of task "
                       : "the stack of task ");
    write_task(p->task);
}

/* The stack pointer of the context that faulted; 0 where unknown. */
static uintptr_t fault_sp(const ucontext_t *uc)
{
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.sp;
#else
    (void)uc;
    return 0;
#endif
}

/*
 * The report for a SIGSEGV on the thread of loop l, if the fault concerns
 * its task stacks; false if it does not (the handler then chains). Which
 * task overflowed is decided by the faulting context's stack pointer
 * first, then by the faulting address:
 *
 *  1. the stack pointer is in the guard below a task's stack: that task
 *     overflowed (the running one, or, in the middle of a switch, the one
 *     being left, whose registers are being saved on its stack: the loop
 *     already names the next one as running);
 *  2. the running task's stack pointer is below its stack, past its guard,
 *     and the fault is between the stack pointer (less a page: pushes,
 *     the red zone) and the stack's bottom: a frame larger than the guard
 *     jumped it, in code built without -fstack-clash-protection, and the
 *     fault is that frame's first access outside the task's own stack,
 *     wherever it lands: below the guard outside any mapping, or in the
 *     stack or guard of a neighbouring slot (then named too);
 *  3. the fault is in the running task's own guard (a stack pointer still
 *     in its stack: an access below a large local array, say).
 *
 * Otherwise a fault in any task's stack or guard, or in a free slot, is
 * an access through a pointer into that stack that went out of bounds:
 * the report names the task whose stack was hit and the running task.
 * A fault on the alternate signal stack (a signal handler's) is judged by
 * its address alone. Only this thread's loop is known here: a fault made
 * by another thread in one of its stacks is chained like any other.
 */
static bool overflow_report(const rf_loop *l, const siginfo_t *si,
                            const ucontext_t *uc)
{
    const rf_stacks *s = &l->stacks;
    uintptr_t a = (uintptr_t)si->si_addr;
    uintptr_t sp = uc && !(uc->uc_stack.ss_flags & SS_ONSTACK) ? fault_sp(uc)
                                                                : 0;
    const rf_task *run = l->current;
    uintptr_t run_lo = run ? (uintptr_t)run->ctx.stack_lo : 0;
    stack_place at = place_of(l, a);
    stack_place sp_at = {0};
    if (sp)
        sp_at = place_of(l, sp);

    const rf_task *over = NULL;
    bool jumped = false;
    if (sp_at.found && sp_at.guard && sp_at.task) {
        over = sp_at.task;
    } else if (run_lo && sp && sp < run_lo && a < run_lo &&
               a + s->page >= sp) {
        over = run;
        jumped = true;
    } else if (at.found && at.guard && at.task && at.task == run) {
        over = run;
    }
    if (!over && !at.found)
        return false;

    if (over) {
        write_str("ringfiber: stack overflow in task ");
        write_task(over);
        if (jumped) {
            write_str(": a frame larger than the guard below its stack "
                      "moved its stack pointer ");
            write_u64(run_lo - sp);
            write_str(" bytes below the stack, past the guard");
            if (sp_at.found && sp_at.task != over) {
                write_str(", into ");
                write_place(&sp_at);
            }
        } else {
            write_str(": it ran into the guard page below its stack");
        }
        if (at.found && at.task != over) {
            write_str("; the fault is in ");
            write_place(&at);
        }
        if (run != over) {
            if (run) {
                write_str("; the running task was ");
                write_task(run);
            } else {
                write_str("; no task was running");
            }
        }
        write_advice();
        if (jumped)
            write_str(" Code built with -fstack-clash-protection probes "
                      "each page of a large frame and meets the guard "
                      "first.");
        write_str("\n");
        return true;
    }

    write_str("ringfiber: stack fault: ");
    if (run) {
        write_str("task ");
        write_task(run);
    } else {
        write_str("the scheduler (no task running)");
    }
    write_str(" touched ");
    write_place(&at);
    if (at.guard) {
        write_str(", ");
        write_u64(at.lo - a);
        write_str(" bytes below that stack");
    }
    if (run && sp && sp_at.task == run)
        write_str(", its own stack pointer within its own stack");
    write_str(at.task ? ": a pointer into that stack went out of bounds.\n"
                      : ": a pointer into the stack of a task that has "
                        "returned.\n");
    return true;
}

void rf__stacks_fini(rf_stacks *s, bool keep_mapped)
{
    prep_stop(s); /* before the slabs it may be preparing go */
    rf_stack_slab *slab = s->slabs;
    while (slab) {
        rf_stack_slab *next = slab->next;
        if (!keep_mapped)
            unmap_stack_area(slab->base, slab->len);
        free(slab);
        slab = next;
    }
    s->slabs = NULL;
    s->fresh = NULL;
    if (s->free)
        munmap(s->free, (size_t)s->free_cap * sizeof(void *));
    s->free = NULL;
    s->nfree = s->free_cap = 0;
    s->spare = 0;
    if (s->pidfd >= 0)
        close(s->pidfd);
    s->pidfd = -1;
}

/*
 * Overflow reporting (overflow_report above). The handler is
 * process-wide (signal dispositions are) and chains to whatever handler
 * was there before for faults that are not ours. It is (re)installed at
 * every rf_loop_new if someone else has taken SIGSEGV since (test
 * frameworks and crash reporters do), under a lock because loops may be
 * created on several threads at once. It runs on an alternate signal
 * stack, since the faulting stack is full.
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
    if (l && overflow_report(l, si, uc)) {
        /* Returning re-executes the faulting access, now fatal. */
        signal(sig, SIG_DFL);
        return;
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
            unmap_stack_area(p, sz);
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
        unmap_stack_area(l->altstack, l->altstack_size);
    }
    /* If it was replaced, leaking 64 KiB is safer than unmapping a stack
     * the kernel may still deliver signals on. */
    l->own_altstack = false;
}
