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
 * The backtrace is the technique of Seastar's reactor stall detector: the
 * watchdog sends the loop thread a real-time signal and the handler, on
 * the loop thread, records backtrace(3) and the name of the running task;
 * the watchdog formats and reports them. backtrace() loads libgcc on its
 * first call, which is not async-signal-safe, so it is called once when a
 * detector is enabled. When the task finally yields, a second report
 * gives the total.
 */
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define RF_STALL_BT_MAX 64
#define RF_STALL_DEFAULT_MS 100
/* How long the watchdog waits for the signal handler's capture. */
#define RF_STALL_CAPTURE_WAIT_NS (200 * RF_NSEC_PER_MSEC)

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
    /* The capture: the handler owns these between CAP_BUSY and
     * CAP_DONE, the watchdog after it has seen CAP_DONE. */
    uint32_t cap;       /* CAP_*, __atomic_* */
    int bt_len;
    void *bt[RF_STALL_BT_MAX];
    uint64_t task_id;
    char name[RF_TASK_NAME_MAX];
} rf_stall;

static bool g_signal_ok; /* set once, under g_once */
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
        rf_task *t = l->current;
        if (!t) {
            s->task_id = 0;
            memcpy(s->name, "(scheduler)", sizeof("(scheduler)"));
        } else {
            s->task_id = t->id;
            if (t->name[0])
                memcpy(s->name, t->name, sizeof(s->name));
            else
                default_name(s->name, t->id);
        }
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
    g_signal_ok = sigaction(stall_signo(), &sa, NULL) == 0;
}

static uint64_t heartbeat(rf_loop *l)
{
    return __atomic_load_n(&l->stats.switches, __ATOMIC_RELAXED) +
           __atomic_load_n(&l->stats.passes, __ATOMIC_RELAXED);
}

/* Ask the loop thread for its backtrace and the running task; false if it
 * did not answer in time (it is not in a loop any more, say). */
static bool capture(rf_stall *s)
{
    if (!g_signal_ok)
        return false;
    __atomic_store_n(&s->cap, CAP_REQUESTED, __ATOMIC_RELEASE);
    if (pthread_kill(s->loop->owner, stall_signo()) != 0) {
        __atomic_store_n(&s->cap, CAP_IDLE, __ATOMIC_RELAXED);
        return false;
    }
    uint64_t give_up = rf_now_ns() + RF_STALL_CAPTURE_WAIT_NS;
    struct timespec tick = {0, 200 * 1000};
    for (;;) {
        uint32_t c = __atomic_load_n(&s->cap, __ATOMIC_ACQUIRE);
        if (c == CAP_DONE)
            return true;
        if (c == CAP_REQUESTED && rf_now_ns() > give_up) {
            uint32_t want = CAP_REQUESTED;
            if (__atomic_compare_exchange_n(&s->cap, &want, CAP_IDLE, false,
                                            __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return false;
        }
        nanosleep(&tick, NULL);
    }
}

static void report(rf_stall *s, rf_stall_info *info)
{
    info->loop = s->loop;
    info->threshold_ns = s->threshold_ns;
    s->fn(info, s->user);
}

static void *watchdog(void *arg)
{
    rf_stall *s = arg;
    rf_loop *l = s->loop;
    uint64_t period = s->threshold_ns / 10;
    if (period < RF_NSEC_PER_MSEC)
        period = RF_NSEC_PER_MSEC;
    uint64_t last_hb = heartbeat(l);
    uint64_t since = rf_now_ns(); /* when the heartbeat was last seen moving */
    bool stalled = false;
    char name[RF_TASK_NAME_MAX] = "?";
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
        uint64_t now = rf_now_ns();
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
            stalled = true;
            __atomic_add_fetch(&s->count, 1, __ATOMIC_RELAXED);
            rf_stall_info info = {.held_ns = now - since};
            if (capture(s)) {
                memcpy(name, s->name, sizeof(name));
                task_id = s->task_id;
                /* Frame 0 is the handler itself. */
                if (s->bt_len > 1) {
                    info.backtrace = s->bt + 1;
                    info.backtrace_len = s->bt_len - 1;
                }
            } else {
                memcpy(name, "?", 2);
                task_id = 0;
            }
            info.task_name = name;
            info.task_id = task_id;
            report(s, &info);
            __atomic_store_n(&s->cap, CAP_IDLE, __ATOMIC_RELAXED);
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void rf_stall_report_default(const rf_stall_info *info, void *user)
{
    (void)user;
    double held = (double)info->held_ns / 1e9;
    if (info->ended) {
        fprintf(stderr, "ringfiber: loop stall: task '%s' held the loop for "
                        "%.3f s in all\n", info->task_name, held);
        return;
    }
    fprintf(stderr, "ringfiber: loop stall: task '%s' has held the loop for "
                    "%.3f s (threshold %.3f s) without yielding%s\n",
            info->task_name, held, (double)info->threshold_ns / 1e9,
            info->backtrace_len > 0 ? "; backtrace of the loop thread:"
                                    : "");
    if (info->backtrace_len > 0)
        backtrace_symbols_fd(info->backtrace, info->backtrace_len, 2);
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
