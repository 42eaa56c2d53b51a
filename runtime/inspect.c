/*
 * The operator's view of a loop: its tasks (rf_loop_tasks), the dump
 * (rf_loop_dump and its threadsafe and signal-driven forms) and the
 * process's list of loops that the signal and the debugger helper
 * (tools/gdb/ringfiber.py) walk. docs/inspect.md is the user's side.
 *
 * What a task waits on is written where it begins to wait
 * (rf__waiter_wait, internal.h): the kind, the opcode of an operation,
 * the object or descriptor, and the loop's approximate clock; three
 * stores, no clock read. Everything else is read here, on the loop's
 * thread, from records the loop keeps anyway.
 *
 * A suspended task's backtrace is taken on its own stack (context.c,
 * rf__peek_backtrace): the dump resumes it inside the runtime's switch
 * for one backtrace(3) call and comes back; the task's code does not run.
 */
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* ---- the process's loops ---- */

static pthread_mutex_t g_reg_mu = PTHREAD_MUTEX_INITIALIZER;
/* Every loop between rf_loop_new and rf_loop_free; read by the dump
 * signal's thread, the metrics and the debugger helper (its name is part
 * of what tools/gdb/ringfiber.py reads). */
rf_list rf__loops_registry = {&rf__loops_registry, &rf__loops_registry};

static void dump_signal_env(void);

void rf__registry_add(rf_loop *l)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    static unsigned next_id; /* under g_reg_mu */
    pthread_once(&once, dump_signal_env);
    pthread_mutex_lock(&g_reg_mu);
    l->registry_id = next_id++;
    rf_list_push_back(&rf__loops_registry, &l->registry_node);
    pthread_mutex_unlock(&g_reg_mu);
}

void rf__registry_remove(rf_loop *l)
{
    pthread_mutex_lock(&g_reg_mu);
    rf_list_remove(&l->registry_node);
    pthread_mutex_unlock(&g_reg_mu);
}

/* fn(loop, arg) for every loop of the process, under the registry's lock:
 * a loop is not freed meanwhile (rf_loop_free takes it out first). */
void rf__registry_each(void (*fn)(rf_loop *l, void *arg), void *arg)
{
    pthread_mutex_lock(&g_reg_mu);
    for (rf_list *n = rf__loops_registry.next; n != &rf__loops_registry;
         n = n->next)
        fn(rf_container_of(n, rf_loop, registry_node), arg);
    pthread_mutex_unlock(&g_reg_mu);
}

/* ---- what a task waits on, in words ---- */

static const char *const op_names[] = {
    [IORING_OP_NOP] = "nop",
    [IORING_OP_READV] = "readv",
    [IORING_OP_WRITEV] = "writev",
    [IORING_OP_FSYNC] = "fsync",
    [IORING_OP_READ_FIXED] = "read_fixed",
    [IORING_OP_WRITE_FIXED] = "write_fixed",
    [IORING_OP_POLL_ADD] = "poll",
    [IORING_OP_SYNC_FILE_RANGE] = "sync_file_range",
    [IORING_OP_SENDMSG] = "sendmsg",
    [IORING_OP_RECVMSG] = "recvmsg",
    [IORING_OP_TIMEOUT] = "timeout",
    [IORING_OP_ACCEPT] = "accept",
    [IORING_OP_ASYNC_CANCEL] = "cancel",
    [IORING_OP_CONNECT] = "connect",
    [IORING_OP_FALLOCATE] = "fallocate",
    [IORING_OP_OPENAT] = "openat",
    [IORING_OP_CLOSE] = "close",
    [IORING_OP_STATX] = "statx",
    [IORING_OP_READ] = "read",
    [IORING_OP_WRITE] = "write",
    [IORING_OP_FADVISE] = "fadvise",
    [IORING_OP_MADVISE] = "madvise",
    [IORING_OP_SEND] = "send",
    [IORING_OP_RECV] = "recv",
    [IORING_OP_OPENAT2] = "openat2",
    [IORING_OP_SPLICE] = "splice",
    [IORING_OP_SHUTDOWN] = "shutdown",
    [IORING_OP_RENAMEAT] = "renameat",
    [IORING_OP_UNLINKAT] = "unlinkat",
    [IORING_OP_MKDIRAT] = "mkdirat",
    [IORING_OP_MSG_RING] = "msg_ring",
};

static const char *const wait_names[RF_WAIT_ON_COUNT] = {
    [RF_WAIT_ON_NONE] = "",
    [RF_WAIT_ON_IO] = "io",
    [RF_WAIT_ON_SLEEP] = "sleep",
    [RF_WAIT_ON_TASK] = "join",
    [RF_WAIT_ON_TASKS] = "tasks",
    [RF_WAIT_ON_QUEUE_GET] = "queue_get",
    [RF_WAIT_ON_QUEUE_PUT] = "queue_put",
    [RF_WAIT_ON_QUEUE_JOIN] = "queue_join",
    [RF_WAIT_ON_EVENT] = "event",
    [RF_WAIT_ON_MUTEX] = "mutex",
    [RF_WAIT_ON_SEM] = "sem",
    [RF_WAIT_ON_COND] = "cond",
    [RF_WAIT_ON_OFFLOAD] = "to_thread",
    [RF_WAIT_ON_POOL] = "pool_room",
    [RF_WAIT_ON_ACCEPT] = "accept",
    [RF_WAIT_ON_CHAN_SEND] = "chan_send",
    [RF_WAIT_ON_CHAN_RECV] = "chan_recv",
    [RF_WAIT_ON_LOOP] = "other_loop",
    [RF_WAIT_ON_CLOSE] = "close_wait",
    [RF_WAIT_ON_SHUTDOWN] = "shutdown",
};

const char *rf__op_name(unsigned opcode)
{
    const char *n = opcode < sizeof(op_names) / sizeof(op_names[0])
                        ? op_names[opcode]
                        : NULL;
    return n;
}

static const char *wait_name(unsigned kind, unsigned op)
{
    if (kind == RF_WAIT_ON_IO) {
        const char *n = rf__op_name(op);
        return n ? n : "io";
    }
    return kind < RF_WAIT_ON_COUNT ? wait_names[kind] : "?";
}

/* The task's name, "task-<id>" if it has none, in buf. */
static const char *task_name(const rf_task *t, char buf[RF_TASK_NAME_MAX])
{
    if (t->name[0])
        return t->name;
    snprintf(buf, RF_TASK_NAME_MAX, "task-%llu", (unsigned long long)t->id);
    return buf;
}

static void task_info(rf_loop *l, rf_task *t, uint64_t now, rf_task_info *in,
                      char namebuf[RF_TASK_NAME_MAX])
{
    memset(in, 0, sizeof(*in));
    in->task = rf__handle(t);
    in->id = t->id;
    in->name = task_name(t, namebuf);
    in->fd = -1;
    in->deadline_ns = t->deadline;
    in->cancelled = t->cancelled;
    in->fn = t->fn;
    in->spawned_from = t->spawned_from;
    in->wait_name = "";
    if (t->state == RF_READY) {
        in->state = RF_TASK_READY;
        return;
    }
    if (t == l->current && t->state == RF_RUNNING) {
        in->state = RF_TASK_RUNNING;
        return;
    }
    in->state = t->state == RF_RUNNING ? RF_TASK_RUNNING : RF_TASK_WAITING;
    if (in->state != RF_TASK_WAITING)
        return;
    unsigned kind = t->wait_on & 0xff, op = t->wait_on >> 8;
    in->wait = (rf_wait_on)kind;
    in->wait_name = wait_name(kind, op);
    in->waited_ns = now > t->wait_since ? now - t->wait_since : 0;
    switch (kind) {
    case RF_WAIT_ON_IO:
        in->op = op;
        in->fd = (int)(intptr_t)t->wait_obj;
        break;
    case RF_WAIT_ON_ACCEPT:
    case RF_WAIT_ON_CLOSE:
        in->fd = (int)(intptr_t)t->wait_obj;
        break;
    case RF_WAIT_ON_SLEEP:
        in->until_ns = (uint64_t)(uintptr_t)t->wait_obj;
        break;
    case RF_WAIT_ON_TASK: {
        rf_task *j = (rf_task *)t->wait_obj;
        in->object = rf__handle(j);
        in->holder = rf__handle(j);
        break;
    }
    case RF_WAIT_ON_MUTEX: {
        in->object = t->wait_obj;
        rf_task *o = rf__mutex_owner(t->wait_obj);
        /* A holder that returned without unlocking is named by nobody
         * (its record may serve another task by now). */
        in->holder = o && o != t && o->state != RF_DONE ? rf__handle(o) : NULL;
        break;
    }
    default:
        in->object = t->wait_obj;
        break;
    }
}

int rf_loop_tasks(rf_loop *loop, rf_task_visit_fn fn, void *arg)
{
    if (!loop || !fn)
        return -EINVAL;
    if (!rf__on_owner_thread(loop))
        return -EXDEV;
    uint64_t now = loop->vtime ? loop->vnow : rf__real_now_ns();
    char namebuf[RF_TASK_NAME_MAX];
    for (rf_list *n = loop->alive.next; n != &loop->alive; n = n->next) {
        rf_task_info in;
        task_info(loop, rf_container_of(n, rf_task, alive), now, &in, namebuf);
        int rc = fn(&in, arg);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- the dump ---- */

/* Symbolized addresses, kept for one dump: many tasks share a function
 * and a spawn site, and a symbol lookup costs microseconds. */
#define SYM_SLOTS 512
typedef struct sym_cache {
    const void *addr[SYM_SLOTS];
    char *text[SYM_SLOTS];
} sym_cache;

static const char *sym(sym_cache *c, const void *a)
{
    size_t h = ((uintptr_t)a >> 2) * 0x9e3779b97f4a7c15ull >> 55; /* 9 bits */
    for (size_t i = 0; i < 8; i++) {
        size_t s = (h + i) & (SYM_SLOTS - 1);
        if (c->text[s] && c->addr[s] == a)
            return c->text[s];
        if (!c->text[s]) {
            char buf[512];
            rf_symbolize(a, buf, sizeof buf);
            c->text[s] = strdup(buf);
            c->addr[s] = a;
            return c->text[s] ? c->text[s] : "?";
        }
    }
    static __thread char buf[512]; /* a full neighbourhood: not kept */
    rf_symbolize(a, buf, sizeof buf);
    return buf;
}

static void sym_cache_free(sym_cache *c)
{
    for (size_t i = 0; i < SYM_SLOTS; i++)
        free(c->text[i]);
}

/* Totals by what is waited on: IO by opcode, the rest by kind. */
#define TOTAL_SLOTS (RF_WAIT_ON_COUNT + 256)
typedef struct dump_state {
    FILE *f;
    rf_loop *l;
    unsigned flags;
    bool walk;      /* made in a task of the loop: other stacks can be walked */
    uint64_t now;
    uint64_t by_state[3];
    uint64_t count[TOTAL_SLOTS];
    uint64_t longest[TOTAL_SLOTS];
    sym_cache syms;
    void *frames[RF_DUMP_FRAMES];
} dump_state;

static void put_secs(FILE *f, uint64_t ns)
{
    fprintf(f, "%llu.%03llu s", (unsigned long long)(ns / RF_NSEC_PER_SEC),
            (unsigned long long)(ns % RF_NSEC_PER_SEC / RF_NSEC_PER_MSEC));
}

static void put_task_ref(FILE *f, const rf_task *h)
{
    const rf_task *t = rf__untag(h);
    char nb[RF_TASK_NAME_MAX];
    fprintf(f, "task %llu '%s'", (unsigned long long)t->id, task_name(t, nb));
}

static void put_wait(dump_state *d, const rf_task_info *in)
{
    FILE *f = d->f;
    fputs(in->wait_name, f);
    switch (in->wait) {
    case RF_WAIT_ON_IO:
    case RF_WAIT_ON_ACCEPT:
    case RF_WAIT_ON_CLOSE:
        if (in->fd >= 0)
            fprintf(f, " fd %d", in->fd);
        break;
    case RF_WAIT_ON_SLEEP:
        fputs(" until +", f);
        put_secs(f, in->until_ns > d->now ? in->until_ns - d->now : 0);
        break;
    case RF_WAIT_ON_TASK:
        fputc(' ', f);
        put_task_ref(f, in->holder);
        break;
    case RF_WAIT_ON_MUTEX:
        fprintf(f, " %p", in->object);
        if (in->holder) {
            fputs(" held by ", f);
            put_task_ref(f, in->holder);
        }
        break;
    case RF_WAIT_ON_LOOP: /* only its address: it may be gone by now */
        fprintf(f, " (loop %p)", in->object);
        break;
    case RF_WAIT_ON_OFFLOAD: /* the function called on the pool */
        fprintf(f, " %s", sym(&d->syms, in->object));
        break;
    case RF_WAIT_ON_SHUTDOWN:
        break;
    default:
        if (in->object)
            fprintf(f, " %p", in->object);
        break;
    }
}

/* The frames of t's stack, or 0 and why not in *why. */
static int task_frames(dump_state *d, rf_task *t, const char **why)
{
    rf_loop *l = d->l;
    if (t == l->current) /* the dump runs on its stack */
        return backtrace(d->frames, RF_DUMP_FRAMES);
    /* Another task's stack is walked by switching to it, which only a
     * task of this loop may do: outside any task (a threadsafe call's
     * function runs at a pass end, on the stack of whichever task ended
     * the pass) the switch would save over the scheduler's context. */
    if (t->ctx.fctx == NULL) {
        *why = "not started yet";
        return 0;
    }
    if (!d->walk) {
        *why = "stacks are walked only by a dump made in a task of the loop "
               "(rf_loop_dump_threadsafe and the dump signal make theirs so)";
        return 0;
    }
    int n = rf__peek_backtrace(l, t, d->frames, RF_DUMP_FRAMES);
    if (n < 0) {
        *why = "less than 8 KiB of its stack left: not walked";
        return 0;
    }
    /* Frame 0 is the walk itself (rf__land_slow): not the task's. */
    if (n > 0)
        memmove(d->frames, d->frames + 1, (size_t)--n * sizeof(void *));
    return n;
}

static int dump_task(const rf_task_info *in, void *arg)
{
    dump_state *d = arg;
    FILE *f = d->f;
    static const char *const states[] = {"ready", "running", "waiting"};
    d->by_state[in->state]++;
    fprintf(f, "task %llu '%s' %s", (unsigned long long)in->id, in->name,
            states[in->state]);
    if (in->state == RF_TASK_WAITING) {
        unsigned slot = in->wait == RF_WAIT_ON_IO ? RF_WAIT_ON_COUNT + (in->op & 0xff)
                                                  : (unsigned)in->wait;
        d->count[slot]++;
        if (in->waited_ns > d->longest[slot])
            d->longest[slot] = in->waited_ns;
        fputc(' ', f);
        put_secs(f, in->waited_ns);
        fputs(": ", f);
        put_wait(d, in);
    }
    if (in->deadline_ns) {
        if (in->deadline_ns > d->now) {
            fputs("; deadline in ", f);
            put_secs(f, in->deadline_ns - d->now);
        } else {
            fputs("; deadline passed ", f);
            put_secs(f, d->now - in->deadline_ns);
            fputs(" ago", f);
        }
    }
    if (in->cancelled)
        fputs("; cancelled", f);
    fprintf(f, "; runs %s", sym(&d->syms, (const void *)in->fn));
    if (in->spawned_from)
        fprintf(f, ", spawned from %s", sym(&d->syms, in->spawned_from));
    fputc('\n', f);
    if (d->flags & RF_DUMP_BACKTRACES) {
        const char *why = NULL;
        int n = task_frames(d, rf__untag(in->task), &why);
        if (why)
            fprintf(f, "    (no backtrace: %s)\n", why);
        for (int i = 0; i < n; i++)
            fprintf(f, "    #%d %s\n", i, sym(&d->syms, d->frames[i]));
    }
    return 0;
}

static void dump_header(dump_state *d)
{
    rf_loop *l = d->l;
    char tname[32] = "";
    pthread_getname_np(pthread_self(), tname, sizeof tname);
    fprintf(d->f, "ringfiber: dump of loop %p", (void *)l);
    if (l->group)
        fprintf(d->f, " (loop %u of a group)", l->group_index);
    fprintf(d->f, ", thread %ld '%s', at ", (long)gettid(), tname);
    put_secs(d->f, d->now);
    fprintf(d->f, " on its %s clock: %llu tasks\n", l->vtime ? "virtual" : "monotonic",
            (unsigned long long)l->stats.tasks_alive);
}

/* Most waiters first; equal counts, the longest wait first. */
static int by_count(const void *a, const void *b, void *arg)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    const dump_state *d = arg;
    if (d->count[x] != d->count[y])
        return d->count[x] < d->count[y] ? 1 : -1;
    if (d->longest[x] != d->longest[y])
        return d->longest[x] < d->longest[y] ? 1 : -1;
    return x < y ? -1 : 1;
}

static void dump_totals(dump_state *d)
{
    FILE *f = d->f;
    fprintf(f, "totals: %llu running, %llu ready, %llu waiting\n",
            (unsigned long long)d->by_state[RF_TASK_RUNNING],
            (unsigned long long)d->by_state[RF_TASK_READY],
            (unsigned long long)d->by_state[RF_TASK_WAITING]);
    unsigned order[TOTAL_SLOTS], n = 0;
    for (unsigned s = 0; s < TOTAL_SLOTS; s++)
        if (d->count[s])
            order[n++] = s;
    qsort_r(order, n, sizeof order[0], by_count, d);
    for (unsigned i = 0; i < n; i++) {
        unsigned s = order[i];
        const char *wn = s >= RF_WAIT_ON_COUNT
                             ? wait_name(RF_WAIT_ON_IO, s - RF_WAIT_ON_COUNT)
                             : wait_name(s, 0);
        fprintf(f, "  %llu waiting in %s, longest ",
                (unsigned long long)d->count[s], wn);
        put_secs(f, d->longest[s]);
        fputc('\n', f);
    }
    fprintf(f, "ringfiber: end of dump of loop %p\n", (void *)d->l);
}

int rf_loop_dump_text(rf_loop *loop, unsigned flags, char **text, size_t *len)
{
    if (!loop || !text || (flags & ~RF_DUMP_BACKTRACES))
        return -EINVAL;
    if (!rf__on_owner_thread(loop))
        return -EXDEV;
    dump_state *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    char *buf = NULL;
    size_t n = 0;
    d->f = open_memstream(&buf, &n);
    if (!d->f) {
        free(d);
        return -ENOMEM;
    }
    d->l = loop;
    d->flags = flags;
    d->walk = rf__tls_loop == loop && loop->current != NULL;
    d->now = loop->vtime ? loop->vnow : rf__real_now_ns();
    if (flags & RF_DUMP_BACKTRACES) {
        void *warm[2];
        (void)backtrace(warm, 2); /* loads libgcc's unwinder here */
    }
    dump_header(d);
    rf__symbolize_hold();
    rf_loop_tasks(loop, dump_task, d);
    rf__symbolize_release();
    dump_totals(d);
    bool bad = ferror(d->f) != 0;
    fclose(d->f);
    sym_cache_free(&d->syms);
    free(d);
    if (bad || !buf) {
        free(buf);
        return -ENOMEM;
    }
    *text = buf;
    if (len)
        *len = n;
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int rf_loop_dump(rf_loop *loop, int fd, unsigned flags)
{
    if (fd < 0)
        return -EINVAL;
    char *text;
    size_t n;
    int rc = rf_loop_dump_text(loop, flags, &text, &n);
    if (rc)
        return rc;
    rc = write_all(fd, text, n);
    free(text);
    return rc;
}

/* ---- a dump asked for from another thread ---- */

/* The dump runs in a task of its own with a large stack: a request is
 * taken in at a pass end, which may run on the stack of any task, and the
 * symbol lookups want room. */
#define RF_DUMP_STACK (256u * 1024u)

typedef struct dump_req {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned refs;  /* under mu: the requester's, the loop's */
    bool done;
    int rc;
    unsigned flags;
    int fd;         /* >= 0: write it there (the signal), no reply */
    char *text;
    size_t len;
    rf_loop *loop;
} dump_req;

static void req_unref(dump_req *r)
{
    pthread_mutex_lock(&r->mu);
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        free(r->text);
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
    }
}

static void req_finish(dump_req *r, int rc)
{
    pthread_mutex_lock(&r->mu);
    r->rc = rc;
    r->done = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    req_unref(r);
}

static void *dump_task_main(void *arg)
{
    dump_req *r = arg;
    int rc;
    if (r->fd >= 0) {
        rc = rf_loop_dump(r->loop, r->fd, r->flags);
    } else {
        rc = rf_loop_dump_text(r->loop, r->flags, &r->text, &r->len);
    }
    req_finish(r, rc);
    return NULL;
}

/* On the loop's thread, as mail: the dump's own task. */
static void dump_call(void *arg)
{
    dump_req *r = arg;
    rf_spawn_options o = {.name = "rf-dump", .stack_size = RF_DUMP_STACK};
    rf_task *t = rf__spawn(r->loop, dump_task_main, r, &o, NULL);
    if (!t) {
        req_finish(r, -errno);
        return;
    }
    rf__task_unref(r->loop, t); /* detached */
}

static dump_req *req_new(rf_loop *l, unsigned flags, int fd)
{
    dump_req *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    r->refs = 2;
    r->flags = flags;
    r->fd = fd;
    r->loop = l;
    return r;
}

int rf_loop_dump_threadsafe(rf_loop *loop, unsigned flags, uint64_t timeout_ns,
                            char **text, size_t *len)
{
    if (!loop || !text || (flags & ~RF_DUMP_BACKTRACES))
        return -EINVAL;
    if (rf__on_owner_thread(loop))
        return -EDEADLK;
    dump_req *r = req_new(loop, flags, -1);
    if (!r)
        return -ENOMEM;
    int rc = rf_loop_call_threadsafe(loop, dump_call, r);
    if (rc) {
        r->refs = 1;
        req_unref(r);
        return rc;
    }
    uint64_t until = timeout_ns == RF_FOREVER
                         ? UINT64_MAX
                         : rf__real_now_ns() + (timeout_ns > UINT64_MAX / 4
                                                    ? UINT64_MAX / 4
                                                    : timeout_ns);
    pthread_mutex_lock(&r->mu);
    while (!r->done) {
        if (until == UINT64_MAX) {
            pthread_cond_wait(&r->cv, &r->mu);
            continue;
        }
        struct timespec ts = {(time_t)(until / RF_NSEC_PER_SEC),
                              (long)(until % RF_NSEC_PER_SEC)};
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT &&
            !r->done)
            break;
    }
    bool done = r->done;
    rc = done ? r->rc : -ETIMEDOUT;
    if (done && rc == 0) {
        *text = r->text;
        if (len)
            *len = r->len;
        r->text = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    req_unref(r);
    return rc;
}

/* ---- the dump signal ---- */

static int g_sig_pipe[2] = {-1, -1};
static int g_sig_no;        /* installed signal, 0: none */
static int g_sig_fd = 2;    /* where the dumps go */
static unsigned g_sig_flags;
static struct sigaction g_sig_old;
static pthread_t g_sig_thread;
static bool g_sig_thread_started;
static pthread_mutex_t g_sig_mu = PTHREAD_MUTEX_INITIALIZER;

static void dump_handler(int sig)
{
    (void)sig;
    int saved = errno;
    char b = 1;
    /* Non-blocking: a burst of signals is one dump per loop, or more. */
    (void)!write(__atomic_load_n(&g_sig_pipe[1], __ATOMIC_RELAXED), &b, 1);
    errno = saved;
}

static void post_dump(rf_loop *l, void *arg)
{
    (void)arg;
    dump_req *r = req_new(l, __atomic_load_n(&g_sig_flags, __ATOMIC_RELAXED),
                          __atomic_load_n(&g_sig_fd, __ATOMIC_RELAXED));
    if (!r)
        return;
    r->refs = 1; /* the loop's only: nobody waits for a signal's dump */
    if (rf_loop_call_threadsafe(l, dump_call, r) != 0)
        req_unref(r);
}

static void *dump_thread(void *arg)
{
    (void)arg;
    char buf[64];
    for (;;) {
        ssize_t n = read(g_sig_pipe[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        rf__registry_each(post_dump, NULL);
    }
}

int rf_dump_signal(int signo, int fd, unsigned flags)
{
    if (signo < 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP ||
        (signo && fcntl(fd, F_GETFD) < 0) || (flags & ~RF_DUMP_BACKTRACES))
        return -EINVAL;
    pthread_mutex_lock(&g_sig_mu);
    int rc = 0;
    if (signo != 0 && signo != g_sig_no) {
        /* Refused before the one installed is touched. */
        struct sigaction cur;
        if (sigaction(signo, NULL, &cur) != 0) {
            rc = -errno;
            goto out;
        }
        if ((cur.sa_flags & SA_SIGINFO) ? cur.sa_sigaction != NULL
                                        : (cur.sa_handler != SIG_DFL &&
                                           cur.sa_handler != SIG_IGN)) {
            rc = -EBUSY; /* the program's own handler */
            goto out;
        }
    }
    if (g_sig_no) { /* the one installed goes first */
        sigaction(g_sig_no, &g_sig_old, NULL);
        g_sig_no = 0;
    }
    if (signo == 0)
        goto out;
    if (g_sig_pipe[0] < 0 && pipe2(g_sig_pipe, O_CLOEXEC) != 0) {
        rc = -errno;
        goto out;
    }
    (void)fcntl(g_sig_pipe[1], F_SETFL, O_NONBLOCK);
    if (!g_sig_thread_started) {
        int e = rf__thread_create(&g_sig_thread, dump_thread, NULL);
        if (e) {
            rc = -e;
            goto out;
        }
        pthread_setname_np(g_sig_thread, "rf-dump");
        pthread_detach(g_sig_thread);
        g_sig_thread_started = true;
    }
    __atomic_store_n(&g_sig_fd, fd, __ATOMIC_RELAXED);
    __atomic_store_n(&g_sig_flags, flags, __ATOMIC_RELAXED);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = dump_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, &g_sig_old) != 0) {
        rc = -errno;
        goto out;
    }
    g_sig_no = signo;
out:
    pthread_mutex_unlock(&g_sig_mu);
    return rc;
}

/* RINGFIBER_DUMP_SIGNAL=SIGUSR2 (or USR2, or a number): at the first
 * rf_loop_new. */
static void dump_signal_env(void)
{
    const char *e = getenv("RINGFIBER_DUMP_SIGNAL");
    if (!e || !*e)
        return;
    static const struct {
        const char *name;
        int no;
    } names[] = {{"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"QUIT", SIGQUIT},
                 {"HUP", SIGHUP},   {"WINCH", SIGWINCH}, {"PWR", SIGPWR},
                 {"URG", SIGURG}};
    const char *n = strncmp(e, "SIG", 3) == 0 ? e + 3 : e;
    int signo = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(n, names[i].name) == 0)
            signo = names[i].no;
    if (!signo) {
        char *end;
        long v = strtol(e, &end, 10);
        signo = *end == '\0' && v > 0 && v < NSIG ? (int)v : 0;
    }
    int rc = signo ? rf_dump_signal(signo, 2, RF_DUMP_BACKTRACES) : -EINVAL;
    if (rc)
        fprintf(stderr, "ringfiber: RINGFIBER_DUMP_SIGNAL=%s ignored: %s\n", e,
                signo ? rf_strerror(rc) : "not a signal (SIGUSR2, USR2, 12)");
}
