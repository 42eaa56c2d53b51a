/*
 * Context switching: context set-up, the slow half of a switch (the
 * sanitizer annotations that let ASan and TSan follow a task from one
 * stack to another, the release of a finished task's stack), and the
 * entries into jump_fcontext (rf__jump, rf__jump_ret). The hot half,
 * rf__switch() and rf__land(), is inline in internal.h: it is the one
 * place inside the library that jumps to another context.
 *
 * Every switch passes the address of the context being left as the
 * transfer's data pointer. Whoever resumes stores the suspended fcontext
 * there (rf__land), so a task can hand the CPU straight to the next ready
 * task without a detour through the scheduler's context: one jump per
 * switch instead of two, which is what keeps rf_yield close to a raw
 * jump_fcontext.
 */
#include <execinfo.h>

#include "internal.h"

#if defined(RF_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(RF_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

void rf__ctx_init_sched(rf_ctx *c)
{
    c->fctx = NULL;
    c->stack_lo = NULL; /* learnt from ASan at the first switch */
    c->stack_size = 0;
#if defined(RF_ASAN)
    c->asan_fake = NULL;
#endif
#if defined(RF_TSAN)
    c->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void rf__ctx_init_task(rf_ctx *c)
{
#if defined(RF_ASAN)
    c->asan_fake = NULL;
    /* A recycled stack may still carry the poisoning of frames that lived
     * on it before. */
    __asan_unpoison_memory_region(c->stack_lo, c->stack_size);
#endif
#if defined(RF_TSAN)
    c->tsan_fiber = __tsan_create_fiber(0);
#endif
    c->fctx = make_fcontext((char *)c->stack_lo + c->stack_size, c->stack_size,
                            rf__task_entry);
}

void rf__ctx_fini_task(rf_ctx *c)
{
#if defined(RF_TSAN)
    __tsan_destroy_fiber(c->tsan_fiber);
    c->tsan_fiber = NULL;
#else
    (void)c;
#endif
}

/*
 * The part of landing that is not on the hot path: the sanitizers'
 * bookkeeping, and the release of the stack of a task that has just
 * finished (it could not release its own stack while running on it).
 */
void rf__land_slow(rf_loop *l, rf_ctx *prev)
{
#if defined(RF_ASAN)
    rf_ctx *self = l->current ? &l->current->ctx : &l->sched;
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(self->asan_fake, &bottom, &size);
    if (prev->stack_lo == NULL) {
        prev->stack_lo = (void *)bottom;
        prev->stack_size = size;
    }
#else
    (void)prev;
#endif
    if (rf_unlikely(l->dead == RF_PEEK)) {
        /* Resumed by a dump only to have its stack walked (see
         * rf__peek_backtrace): take the frames and go back. When the
         * scheduler resumes this task for real, it lands in the switch
         * below, and returns from here to where it was suspended. */
        l->dead = NULL;
        l->peek_len = backtrace(l->peek_frames, l->peek_max);
        rf_ctx *me = &l->current->ctx;
        rf__set_current(l, l->peek_back);
        rf__switch(l, me, prev, false);
        return;
    }
    if (l->dead) {
        rf_task *d = l->dead;
        l->dead = NULL;
        rf__ctx_fini_task(&d->ctx);
        rf__stack_put(&l->stacks, d);
        rf__task_unref(l, d); /* the running task's own reference */
    }
}

/*
 * A dump's look at suspended task t's stack: resume t with l->dead set to
 * RF_PEEK, which every landing passes to rf__land_slow (the hot path's
 * one test, no new one); there, on t's stack, backtrace(3) runs and the
 * CPU comes back here. t's state, its queue place and the loop's counters
 * are untouched; its code does not run. t's saved context is then inside
 * rf__land_slow, one frame deeper, which its next real resume unwinds.
 */
int rf__peek_backtrace(rf_loop *l, rf_task *t, void **frames, int max)
{
    uintptr_t sp = (uintptr_t)t->ctx.fctx;
    if (t->ctx.stack_lo && sp - (uintptr_t)t->ctx.stack_lo < RF_PEEK_ROOM)
        return -1;
    rf_task *cur = l->current;
    rf_ctx *from = cur ? &cur->ctx : &l->sched;
    l->peek_frames = frames;
    l->peek_max = max;
    l->peek_len = 0;
    l->peek_back = cur;
    l->dead = RF_PEEK;
    rf__set_current(l, t);
    rf__switch(l, from, &t->ctx, false);
    return l->peek_len;
}

/*
 * rf__jump: jump_fcontext under a name the library exports (the Boost
 * symbols stay hidden in the shared library), as a tail jump so that it
 * pushes nothing on the return stack buffer (see rf__yield_begin).
 */
#if defined(__x86_64__) && defined(__ELF__)
__asm__(".pushsection .text\n"
        ".globl rf__jump\n"
        ".type rf__jump, @function\n"
        ".p2align 4\n"
        "rf__jump:\n"
        "\tjmp jump_fcontext\n"
        ".size rf__jump, .-rf__jump\n"
        ".popsection\n");
#elif defined(__aarch64__) && defined(__ELF__)
__asm__(".pushsection .text\n"
        ".globl rf__jump\n"
        ".type rf__jump, %function\n"
        ".p2align 2\n"
        "rf__jump:\n"
        "\tb jump_fcontext\n"
        ".size rf__jump, .-rf__jump\n"
        ".popsection\n");
#else
rf__xfer rf__jump(void *to, void *data)
{
    transfer_t t = jump_fcontext(to, data);
    return (rf__xfer){t.fctx, t.data};
}
#endif

/*
 * rf__jump_ret: jump_fcontext for the switches inside the library's own
 * functions (rf__switch: every wait, a task's end). The call into it
 * pushes an entry on the CPU's return stack buffer, and jump_fcontext
 * leaves through an indirect jmp, never popping it. The task resumed
 * would then return out of rf__wait, its caller and theirs with every
 * prediction one entry off: a misprediction at each ret up its chain.
 * Here the context left is saved with a return address of our own, a
 * ret: the task resumed pops the entry its predecessor's call pushed,
 * to the same place in rf__switch's caller when both suspended there
 * (the common case: two tasks in rf__wait), and each ret after it
 * matches the predecessor's calls. rax is free: jump_fcontext's
 * arguments are rdi and rsi, its result rax:rdx, which the ret keeps.
 * (A ret to an address no call pushed is what a CPU's shadow stack
 * forbids; jump_fcontext, which moves between stacks, is not built for
 * one either.)
 */
#if defined(__x86_64__) && defined(__ELF__)
__asm__(".pushsection .text\n"
        ".globl rf__jump_ret\n"
        ".hidden rf__jump_ret\n"
        ".type rf__jump_ret, @function\n"
        ".p2align 4\n"
        "rf__jump_ret:\n"
        "\t.cfi_startproc\n"
        "\tleaq 1f(%rip), %rax\n"
        "\tpushq %rax\n"
        "\t.cfi_adjust_cfa_offset 8\n"
        "\tjmp jump_fcontext\n"
        /* Resumed at 1 with our return address popped: a debugger that
         * unwinds a suspended task starts at that ret, and looks its
         * frame up one byte before it, as for any return address: the
         * nop (never run) is there for that. */
        "\t.cfi_adjust_cfa_offset -8\n"
        "\tnop\n"
        "1:\tret\n"
        "\t.cfi_endproc\n"
        ".size rf__jump_ret, .-rf__jump_ret\n"
        ".popsection\n");
#endif

#if defined(RF_ASAN) || defined(RF_TSAN)
void rf__switch_annotate(rf_ctx *from, rf_ctx *to, bool from_dies)
{
#if defined(RF_ASAN)
    __sanitizer_start_switch_fiber(from_dies ? NULL : &from->asan_fake,
                                   to->stack_lo, to->stack_size);
#endif
#if defined(RF_TSAN)
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
}
#endif
