/*
 * The loop-stall detector: a watchdog thread per loop that notices when
 * the loop has not come back to a switch or a scheduler pass for longer
 * than a threshold (a task that blocks the thread: a sleep, a lock, a long
 * computation), and reports which task held the loop, for how long, and
 * where it was (a backtrace of the loop thread).
 *
 * The loop pays nothing extra for it: its heartbeat is the pair of
 * counters it keeps anyway, stats.switches and stats.passes, written with
 * relaxed atomic stores (plain stores on x86-64 and arm64); the watchdog
 * samples them every threshold/10. A loop asleep in the ring, or not
 * running at all, says so in l->idle and is never stalled.
 *
 * Which task holds the loop needs no signal: the loop publishes the
 * running task in l->current, a relaxed store of the pointer each switch
 * writes anyway, and the task's id and name are written with atomic
 * stores at spawn (internal.h, rf_task.name); the chunks that hold task
 * records are published with release when allocated, a cold path, and
 * the watchdog reads a record only in a chunk it has acquired so
 * (published()). When the heartbeat has stood still past the threshold,
 * the watchdog reads them and then the heartbeat again: if it still has
 * not moved, no switch happened while it read, so the task was the
 * running one throughout and its record (recycled only after the task has
 * returned, a switch later) was not rewritten. The loop's hot path gains
 * nothing: the same one store of l->current per switch, no fence, no
 * other cache line.
 *
 * The backtrace is the technique of Seastar's reactor stall detector: the
 * watchdog sends the loop thread a real-time signal and the handler, on
 * the loop thread, records backtrace(3); the watchdog formats and reports
 * it. backtrace() loads libgcc on its first call, which is not
 * async-signal-safe, so it is called once when a detector is enabled. The
 * signal is not sent where it cannot work, and the report then says why
 * (rf_stall_info.no_backtrace): the program has its own handler for it,
 * or the loop thread blocks it (read from /proc/self/task/<tid>/status,
 * as a program that takes its signals through a signalfd does: sent
 * anyway, the signal would reach that signalfd). When the task finally
 * yields, a second report gives the total.
 */
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define RF_STALL_BT_MAX 64
#define RF_STALL_DEFAULT_MS 100
/* How long the watchdog waits for the signal handler's capture. */
#define RF_STALL_CAPTURE_WAIT_NS (200 * RF_NSEC_PER_MSEC)

/* Why a first report has no backtrace (rf_stall_info.no_backtrace). */
#define RF_STALL_STR_(x) #x
#define RF_STALL_STR(x) RF_STALL_STR_(x)
#define RF_STALL_SIGNAL "signal SIGRTMIN+" RF_STALL_STR(RF_STALL_SIGNAL_OFFSET)
static const char why_blocked[] = "the loop thread blocks " RF_STALL_SIGNAL;
static const char why_own_handler[] =
    "the program has its own handler for " RF_STALL_SIGNAL;
static const char why_no_handler[] =
    "the handler for " RF_STALL_SIGNAL " could not be installed";
static const char why_not_sent[] =
    RF_STALL_SIGNAL " could not be sent to the loop thread";
static const char why_no_answer[] =
    "the loop thread did not answer " RF_STALL_SIGNAL " within 200 ms";
static const char why_moved_on[] =
    "the loop moved on before the backtrace was taken";

enum { CAP_IDLE, CAP_REQUESTED, CAP_BUSY, CAP_DONE };

typedef struct rf_stall {
    rf_loop *loop;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;          /* under mu */
    uint64_t threshold_ns;
    rf_stall_fn fn;
    void *user;
    uint64_t count;     /* __atomic_* */
    pid_t tid;          /* the loop's thread */
    /* The capture: the handler owns these between CAP_BUSY and
     * CAP_DONE, the watchdog after it has seen CAP_DONE. */
    uint32_t cap;       /* CAP_*, __atomic_* */
    int bt_len;
    void *bt[RF_STALL_BT_MAX];
    uint64_t bt_heartbeat; /* the loop's heartbeat when it was taken */
} rf_stall;

/* Set once, under g_once: NULL if the handler is installed, else why. */
static const char *g_signal_why;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int stall_signo(void) { return SIGRTMIN + RF_STALL_SIGNAL_OFFSET; }

/* "task-<id>" without snprintf (not async-signal-safe). */
static void default_name(char *out, uint64_t id)
{
    char digits[24];
    int n = 0;
    do
        digits[n++] = (char)('0' + id % 10);
    while ((id /= 10) != 0);
    memcpy(out, "task-", 5);
    int i = 5;
    while (n > 0 && i < RF_TASK_NAME_MAX - 1)
        out[i++] = digits[--n];
    out[i] = '\0';
}

/* The loop's heartbeat: the counters it keeps anyway (see the top). */
static uint64_t heartbeat(const rf_loop *l)
{
    return __atomic_load_n(&l->stats.switches, __ATOMIC_RELAXED) +
           __atomic_load_n(&l->stats.passes, __ATOMIC_RELAXED);
}

static void stall_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    (void)uc;
    int saved = errno;
    rf_loop *l = rf__tls_loop;
    rf_stall *s = l ? __atomic_load_n(&l->stall, __ATOMIC_ACQUIRE) : NULL;
    uint32_t want = CAP_REQUESTED;
    if (s && __atomic_compare_exchange_n(&s->cap, &want, CAP_BUSY, false,
                                         __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        s->bt_len = backtrace(s->bt, RF_STALL_BT_MAX);
        s->bt_heartbeat = heartbeat(l);
        __atomic_store_n(&s->cap, CAP_DONE, __ATOMIC_RELEASE);
    }
    errno = saved;
}

static void global_init(void)
{
    /* Load libgcc's unwinder now, outside any signal handler. */
    void *frames[4];
    (void)backtrace(frames, 4);
    struct sigaction old;
    if (sigaction(stall_signo(), NULL, &old) != 0)
        return;
    g_signal_why = why_no_handler;
    if (sigaction(stall_signo(), NULL, &old) != 0)
        return;
    g_signal_why = why_own_handler;
    if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler != SIG_DFL &&
        old.sa_handler != SIG_IGN)
        return; /* the program uses this signal: no backtraces */
    if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = stall_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    g_signal_why = sigaction(stall_signo(), &sa, NULL) == 0 ? NULL
                                                             : why_no_handler;
}

/* Does thread tid of this process block signal sig? From its status in
 * /proc (SigBlk, a hexadecimal mask, bit sig - 1); false if unknown. */
static bool thread_blocks(pid_t tid, int sig)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/status", (long)tid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char line[256];
    bool blocked = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long long mask;
        if (sscanf(line, "SigBlk: %llx", &mask) == 1) {
            blocked = sig >= 1 && sig <= 64 && ((mask >> (sig - 1)) & 1);
            break;
        }
    }
    fclose(f);
    return blocked;
}

/* Ask the loop thread for its backtrace, taken while the heartbeat is
 * still hb. Returns NULL once it is in s->bt, else why there is none. */
static const char *capture(rf_stall *s, uint64_t hb)
{
    if (g_signal_why)
        return g_signal_why;
    /* The program may have taken the signal since the handler was
     * installed: then it is theirs, and not sent. */
    struct sigaction cur;
    if (sigaction(stall_signo(), NULL, &cur) != 0 ||
        !(cur.sa_flags & SA_SIGINFO) || cur.sa_sigaction != stall_handler)
        return why_own_handler;
    if (thread_blocks(s->tid, stall_signo()))
        return why_blocked;
    __atomic_store_n(&s->cap, CAP_REQUESTED, __ATOMIC_RELEASE);
    if (pthread_kill(s->loop->owner, stall_signo()) != 0) {
        __atomic_store_n(&s->cap, CAP_IDLE, __ATOMIC_RELAXED);
        return why_not_sent;
    }
    uint64_t give_up = rf__real_now_ns() + RF_STALL_CAPTURE_WAIT_NS;
    struct timespec tick = {0, 200 * 1000};
    for (;;) {
        uint32_t c = __atomic_load_n(&s->cap, __ATOMIC_ACQUIRE);
        if (c == CAP_DONE)
            return s->bt_heartbeat == hb ? NULL : why_moved_on;
        if (c == CAP_REQUESTED && rf__real_now_ns() > give_up) {
            uint32_t want = CAP_REQUESTED;
            if (__atomic_compare_exchange_n(&s->cap, &want, CAP_IDLE, false,
                                            __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return thread_blocks(s->tid, stall_signo()) ? why_blocked
                                                            : why_no_answer;
        }
        nanosleep(&tick, NULL);
    }
}

/*
 * Is t a record of a chunk that the loop has published (task.c,
 * record_get)? The pointer in l->current is published with a relaxed
 * store, which orders nothing; the chunk list is published with release,
 * so once t is found in it, the chunk's allocation happens before the
 * reads of t that follow. Chunks are freed only with the loop, after its
 * watchdog is stopped.
 */
static bool published(const rf_loop *l, const rf_task *t)
{
    uintptr_t a = (uintptr_t)t;
    const rf_task_chunk *c = __atomic_load_n(&l->chunks, __ATOMIC_ACQUIRE);
    for (; c; c = c->next) {
        uintptr_t first = (uintptr_t)((const rf_task *)c + 1);
        if (a >= first && a < first + RF_TASKS_PER_CHUNK * sizeof(rf_task))
            return true;
    }
    return false;
}

/*
 * Which task holds the loop, whose heartbeat was hb: its name (a default
 * one made from its id where it has none; "(scheduler)" outside any task)
 * and id, read from the loop's thread's records (see the top). False if
 * the heartbeat moved meanwhile: the stall has just ended, and what was
 * read may be another task's.
 */
static bool holder(const rf_loop *l, uint64_t hb, char name[RF_TASK_NAME_MAX],
                   uint64_t *id)
{
    const rf_task *t = __atomic_load_n(&l->current, __ATOMIC_RELAXED);
    if (!t) {
        *id = 0;
        memcpy(name, "(scheduler)", sizeof("(scheduler)"));
    } else if (!published(l, t)) {
        /* Not seen in practice: t has run since its chunk was published,
         * a switch ago at least. */
        *id = 0;
        memcpy(name, "?", sizeof("?"));
    } else {
        *id = __atomic_load_n(&t->id, __ATOMIC_RELAXED);
        char c = __atomic_load_n(&t->name[0], __ATOMIC_ACQUIRE);
        if (!c) {
            default_name(name, *id);
        } else {
            int i = 0;
            name[i++] = c;
            while (i < RF_TASK_NAME_MAX - 1 &&
                   (name[i] = __atomic_load_n(&t->name[i],
                                              __ATOMIC_RELAXED)) != '\0')
                i++;
            name[i] = '\0';
        }
    }
    return heartbeat(l) == hb &&
           __atomic_load_n(&l->current, __ATOMIC_RELAXED) == t;
}

static void report(rf_stall *s, rf_stall_info *info)
{
    info->loop = s->loop;
    /* Set by the group's thread once its loop exists; the watchdog may
     * have started before (RINGFIBER_STALL_MS). */
    const struct rf_loops *g = __atomic_load_n(&s->loop->group,
                                               __ATOMIC_ACQUIRE);
    info->loop_index = g ? (int)s->loop->group_index : -1;
    info->threshold_ns = s->threshold_ns;
    s->fn(info, s->user);
}

/* The first report of a stall: who, so far, and where (or why not). */
static void report_first(rf_stall *s, uint64_t hb, const char *name,
                         uint64_t task_id, uint64_t held_ns)
{
    __atomic_add_fetch(&s->count, 1, __ATOMIC_RELAXED);
    rf_stall_info info = {.task_name = name, .task_id = task_id,
                          .held_ns = held_ns};
    info.no_backtrace = capture(s, hb);
    if (!info.no_backtrace) {
        /* Frame 0 is the handler itself. */
        if (s->bt_len > 1) {
            info.backtrace = s->bt + 1;
            info.backtrace_len = s->bt_len - 1;
        } else {
            info.no_backtrace = "backtrace(3) found no frames";
        }
    }
    report(s, &info);
    __atomic_store_n(&s->cap, CAP_IDLE, __ATOMIC_RELAXED);
}

static void *watchdog(void *arg)
{
    rf_stall *s = arg;
    rf_loop *l = s->loop;
    uint64_t period = s->threshold_ns / 10;
    if (period < RF_NSEC_PER_MSEC)
        period = RF_NSEC_PER_MSEC;
    /* The symbol library is loaded at the first report, not here: the
     * watch must begin at once (loading it took seconds under ASan on a
     * busy machine, and a stall meanwhile went unseen). A report's
     * symbols cost this thread, never the loop. */
    uint64_t last_hb = heartbeat(l);
    uint64_t since = rf__real_now_ns(); /* when the heartbeat was last seen moving */
    bool stalled = false;
    char name[RF_TASK_NAME_MAX];
    uint64_t task_id = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        /* During a stall, look often: the total is then precise. */
        uint64_t wait = stalled && period > RF_NSEC_PER_MSEC ? RF_NSEC_PER_MSEC
                                                            : period;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t until = (uint64_t)ts.tv_sec * RF_NSEC_PER_SEC +
                         (uint64_t)ts.tv_nsec + wait;
        ts.tv_sec = (time_t)(until / RF_NSEC_PER_SEC);
        ts.tv_nsec = (long)(until % RF_NSEC_PER_SEC);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (s->stop)
            break;
        pthread_mutex_unlock(&s->mu);
        uint64_t now = rf__real_now_ns();
        uint64_t hb = heartbeat(l);
        bool idle = __atomic_load_n(&l->idle, __ATOMIC_RELAXED) != 0;
        if (idle || hb != last_hb) {
            if (stalled) {
                rf_stall_info info = {.task_name = name, .task_id = task_id,
                                      .held_ns = now - since, .ended = true};
                report(s, &info);
            }
            stalled = false;
            last_hb = hb;
            since = now;
        } else if (!stalled && now - since >= s->threshold_ns) {
            if (holder(l, hb, name, &task_id)) {
                stalled = true;
                report_first(s, hb, name, task_id, now - since);
            } else {
                /* It ended while being looked at: as one that ends
                 * between two looks, it is not reported. */
                last_hb = heartbeat(l);
                since = now;
            }
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    if (stalled) {
        /* Stopped during a stall (the loop is being freed, or the
         * detector replaced): it ended, by now at the latest. */
        rf_stall_info info = {.task_name = name, .task_id = task_id,
                              .held_ns = rf__real_now_ns() - since,
                              .ended = true};
        report(s, &info);
    }
    return NULL;
}

void rf_stall_report_default(const rf_stall_info *info, void *user)
{
    (void)user;
    double held = (double)info->held_ns / 1e9;
    char where[32] = "loop";
    if (info->loop_index >= 0)
        snprintf(where, sizeof where, "loop %d", info->loop_index);
    if (info->ended) {
        fprintf(stderr, "ringfiber: %s stall: task '%s' held the loop for "
                        "%.3f s in all\n", where, info->task_name, held);
        return;
    }
    const char *then = "", *why = "";
    if (info->backtrace_len > 0) {
        then = "; backtrace of the loop thread:";
    } else if (info->no_backtrace) {
        then = "; no backtrace: ";
        why = info->no_backtrace;
    }
    fprintf(stderr, "ringfiber: %s stall: task '%s' has held the loop for "
                    "%.3f s (threshold %.3f s) without yielding%s%s\n",
            where, info->task_name, held, (double)info->threshold_ns / 1e9,
            then, why);
    /* Symbolized here, on the watchdog's thread: the stall is not made
     * longer by it. */
    rf__symbolize_hold();
    for (int i = 0; i < info->backtrace_len; i++) {
        char frame[512];
        rf_symbolize(info->backtrace[i], frame, sizeof frame);
        fprintf(stderr, "    #%d %s\n", i, frame);
    }
    rf__symbolize_release();
}

static void stall_stop(rf_loop *l)
{
    rf_stall *s = l->stall;
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    __atomic_store_n(&l->stall, NULL, __ATOMIC_RELEASE);
    /* The count survives in the stats. */
    l->stall_count += __atomic_load_n(&s->count, __ATOMIC_RELAXED);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int rf_loop_stall_detector(rf_loop *loop, unsigned threshold_ms,
                           rf_stall_fn fn, void *user)
{
    if (!loop)
        return -EINVAL;
    if (!rf__on_owner_thread(loop))
        return -EXDEV;
    stall_stop(loop);
    if (threshold_ms == 0)
        return 0;
    pthread_once(&g_once, global_init);
    rf_stall *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->tid = gettid(); /* the owner's: the loop runs on no other thread */
    s->threshold_ns = (uint64_t)threshold_ms * RF_NSEC_PER_MSEC;
    s->fn = fn ? fn : rf_stall_report_default;
    s->user = user;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    __atomic_store_n(&loop->stall, s, __ATOMIC_RELEASE);
    int rc = pthread_create(&s->thread, NULL, watchdog, s);
    if (rc) {
        __atomic_store_n(&loop->stall, NULL, __ATOMIC_RELEASE);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return -rc;
    }
    pthread_setname_np(s->thread, "rf-stall");
    return 0;
}

int rf__stall_env(rf_loop *l)
{
    const char *env = getenv("RINGFIBER_STALL_MS");
    if (!env)
        return 0;
    unsigned long ms = RF_STALL_DEFAULT_MS;
    if (*env) {
        char *end;
        errno = 0;
        ms = strtoul(env, &end, 10);
        if (errno || *end || ms == 0 || ms > 3600000) {
            fprintf(stderr, "ringfiber: RINGFIBER_STALL_MS=%s ignored (want "
                            "a threshold in ms, 1..3600000)\n", env);
            return -EINVAL;
        }
    }
    int rc = rf_loop_stall_detector(l, (unsigned)ms, NULL, NULL);
    if (rc)
        fprintf(stderr, "ringfiber: RINGFIBER_STALL_MS: stall detector not "
                        "started: %s\n", rf_strerror(rc));
    return rc;
}

void rf__stall_fini(rf_loop *l) { stall_stop(l); }

uint64_t rf__stall_count(const rf_loop *l)
{
    rf_stall *s = __atomic_load_n(&l->stall, __ATOMIC_ACQUIRE);
    return l->stall_count + (s ? __atomic_load_n(&s->count, __ATOMIC_RELAXED)
                               : 0);
}
