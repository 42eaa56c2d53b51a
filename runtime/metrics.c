/*
 * Metrics: a loop's counters for a monitoring thread
 * (rf_loop_metrics_threadsafe), the scheduling-delay histogram
 * (RF_LOOP_SCHED_DELAY), and every loop of the process in Prometheus'
 * text format (rf_metrics_format).
 *
 * The counters are written by the loop's thread only, each with a relaxed
 * atomic store (RF_STAT_*, internal.h: a plain store on x86-64 and arm64),
 * where the loop does the work anyway: an operation's end (ring.c), a
 * sleep in the ring (loop.c, two clock reads beside its system call), an
 * offloaded call (pool.c, a clock read on each side of the thread
 * hand-off). A reader takes each whole, with a relaxed load.
 *
 * The scheduling delay (from becoming ready to running) needs a clock
 * read per task run, which costs more than a whole yield on machines
 * whose clock source is slow: it is a loop option. With it, a task put in
 * the run queue is stamped with the loop's last clock reading (taken when
 * the task that woke it began to run, or when the completions that woke it
 * were reaped), and the delay is taken as the task begins to run; it
 * counts the waker's run up to the wake too, so it errs long by at most
 * one task's run. A task that yields is stamped by the next task's
 * reading, taken as the CPU leaves it: exact, and the yield's path has no
 * test for it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void rf__delay_note(rf_loop *l, rf_task *t)
{
    uint64_t now = rf__real_now_ns();
    /* A task that yields is queued just before the switch away from it,
     * which is now: stamped here, the yield's own path stays as it is. */
    rf_task *prev = l->current;
    if (prev && prev->state == RF_READY)
        prev->ready_at = now;
    uint64_t d = now > t->ready_at ? now - t->ready_at : 0;
    l->delay_now = now;
    /* Bucket b: at most 2^b us (Prometheus' le is inclusive). */
    uint64_t us = (d + 999) / 1000;
    unsigned b = us <= 1 ? 0 : 64u - (unsigned)__builtin_clzll(us - 1);
    if (b >= RF_DELAY_BUCKETS)
        b = RF_DELAY_BUCKETS - 1;
    RF_STAT_ADD(l->m.delay_buckets[b], 1);
    RF_STAT_ADD(l->m.delay_count, 1);
    RF_STAT_ADD(l->m.delay_sum, d);
    if (d > l->m.delay_max)
        RF_STAT_SET(l->m.delay_max, d);
}

#define GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

int rf_loop_metrics_threadsafe(const rf_loop *loop, rf_loop_metrics *out)
{
    if (!loop || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    rf_loop_stats_threadsafe(loop, &out->stats);
    const rf_loop *l = loop;
    out->tasks_ready = GET(l->m.tasks_ready);
    out->idle_ns = GET(l->m.idle_ns);
    out->bytes_read = GET(l->m.bytes_read);
    out->bytes_written = GET(l->m.bytes_written);
    for (unsigned i = 0; i < RF_METRICS_OPS; i++)
        out->ops_completed[i] = GET(l->m.ops[i]);
    out->offload_calls = GET(l->m.offload_calls);
    out->offload_wait_ns = GET(l->m.offload_wait_ns);
    out->offload_in_flight = GET(l->m.offload_in_flight);
    out->sched_delay_on = l->delay_on; /* set before the loop is shared */
    out->sched_delay_count = GET(l->m.delay_count);
    out->sched_delay_sum_ns = GET(l->m.delay_sum);
    out->sched_delay_max_ns = GET(l->m.delay_max);
    for (unsigned i = 0; i < RF_DELAY_BUCKETS; i++)
        out->sched_delay_buckets[i] = GET(l->m.delay_buckets[i]);
    return 0;
}

/* ---- Prometheus' text format ---- */

typedef struct out {
    char *buf;
    size_t len, used; /* used: what the whole text needs */
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->used < o->len ? o->len - o->used : 0;
    int n = vsnprintf(room ? o->buf + o->used : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->used += (size_t)n;
}

/* One metric of every loop: its HELP and TYPE, then a sample per loop. */
typedef struct metric {
    const char *name, *type, *help;
    /* The value of loop m, or, for per-op metrics, NULL here. */
    uint64_t (*get)(const rf_loop_metrics *m);
    double scale; /* seconds from nanoseconds: 1e-9; else 1 */
} metric;

#define M(field) static uint64_t get_##field(const rf_loop_metrics *m) { return m->field; }
#define MS(field) static uint64_t get_##field(const rf_loop_metrics *m) { return m->stats.field; }
MS(switches) MS(passes) MS(tasks_spawned) MS(tasks_alive) MS(sqes_submitted)
MS(enters) MS(cqes_reaped) MS(ops_in_flight) MS(stacks_mapped) MS(stalls)
MS(mail_refused) MS(accept_emfile) MS(wakes_batched) MS(recv_pauses)
MS(recv_nobufs)
M(tasks_ready) M(idle_ns) M(bytes_read) M(bytes_written) M(offload_calls)
M(offload_wait_ns) M(offload_in_flight)
#undef M
#undef MS

static const metric metrics[] = {
    {"ringfiber_switches_total", "counter", "Context switches into tasks.", get_switches, 1},
    {"ringfiber_passes_total", "counter", "Scheduler passes.", get_passes, 1},
    {"ringfiber_tasks_spawned_total", "counter", "Tasks spawned.", get_tasks_spawned, 1},
    {"ringfiber_tasks_alive", "gauge", "Tasks spawned and not yet returned.", get_tasks_alive, 1},
    {"ringfiber_tasks_ready", "gauge", "Tasks in the run queue at the last pass (the rest of the alive ones wait).", get_tasks_ready, 1},
    {"ringfiber_sqes_submitted_total", "counter", "Submission queue entries handed to the kernel.", get_sqes_submitted, 1},
    {"ringfiber_enters_total", "counter", "io_uring_enter system calls.", get_enters, 1},
    {"ringfiber_wakes_batched_total", "counter", "Sleeps that waited for a batch of completions, the loop's thread sharing its CPU.", get_wakes_batched, 1},
    {"ringfiber_recv_pauses_total", "counter", "Multishot receives stopped because a socket's unread buffers reached RF_RECV_PAUSE.", get_recv_pauses, 1},
    {"ringfiber_recv_nobufs_total", "counter", "Multishot receives ended because the loop's receive buffers had run out.", get_recv_nobufs, 1},
    {"ringfiber_cqes_reaped_total", "counter", "Completions reaped.", get_cqes_reaped, 1},
    {"ringfiber_ops_in_flight", "gauge", "Operations submitted whose completion has not come.", get_ops_in_flight, 1},
    {"ringfiber_read_bytes_total", "counter", "Bytes read and received.", get_bytes_read, 1},
    {"ringfiber_written_bytes_total", "counter", "Bytes written and sent.", get_bytes_written, 1},
    {"ringfiber_idle_seconds_total", "counter", "Time the loop slept in the ring, waiting for work.", get_idle_ns, 1e-9},
    {"ringfiber_stacks_mapped", "gauge", "Task stacks mapped.", get_stacks_mapped, 1},
    {"ringfiber_stalls_total", "counter", "Loop stalls the stall detector reported.", get_stalls, 1},
    {"ringfiber_mail_refused_total", "counter", "Threadsafe spawns and calls refused: the mailbox was full.", get_mail_refused, 1},
    {"ringfiber_accept_emfile_total", "counter", "Accepts that met EMFILE or ENFILE and backed off.", get_accept_emfile, 1},
    {"ringfiber_offload_calls_total", "counter", "Calls run on the thread pool (rf_to_thread) that returned.", get_offload_calls, 1},
    {"ringfiber_offload_wait_seconds_total", "counter", "Time those calls waited for a worker, from the call until one took it.", get_offload_wait_ns, 1e-9},
    {"ringfiber_offload_in_flight", "gauge", "Calls on the thread pool not returned yet (gathered, queued or running).", get_offload_in_flight, 1},
};
#define NMETRICS (sizeof metrics / sizeof metrics[0])

typedef struct snap {
    unsigned id;
    rf_loop_metrics m;
} snap;

typedef struct collect {
    snap *s;
    size_t n, cap;
    bool failed;
} collect;

static void take(rf_loop *l, void *arg)
{
    collect *c = arg;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        snap *s = realloc(c->s, cap * sizeof(*s));
        if (!s) {
            c->failed = true;
            return;
        }
        c->s = s;
        c->cap = cap;
    }
    c->s[c->n].id = l->registry_id;
    rf_loop_metrics_threadsafe(l, &c->s[c->n].m);
    c->n++;
}

static void put_value(out *o, const metric *mt, uint64_t v)
{
    if (mt->scale != 1)
        put(o, "%.9f\n", (double)v * mt->scale);
    else
        put(o, "%llu\n", (unsigned long long)v);
}

int rf_metrics_format(char *buf, size_t len)
{
    if (!buf && len > 0)
        return -EINVAL;
    collect c = {0};
    /* The snapshots are taken under the list's lock (no loop is freed
     * meanwhile); the text is made after it. */
    rf__registry_each(take, &c);
    if (c.failed) {
        free(c.s);
        return -ENOMEM;
    }
    out o = {.buf = buf, .len = len};
    if (len)
        buf[0] = '\0';
    for (size_t k = 0; k < NMETRICS; k++) {
        const metric *mt = &metrics[k];
        put(&o, "# HELP %s %s\n# TYPE %s %s\n", mt->name, mt->help, mt->name,
            mt->type);
        for (size_t i = 0; i < c.n; i++) {
            put(&o, "%s{loop=\"%u\"} ", mt->name, c.s[i].id);
            put_value(&o, mt, mt->get(&c.s[i].m));
        }
    }
    put(&o, "# HELP ringfiber_ops_total Operations tasks submitted to the "
            "ring that ended, by operation.\n"
            "# TYPE ringfiber_ops_total counter\n");
    for (size_t i = 0; i < c.n; i++)
        for (unsigned op = 0; op < RF_METRICS_OPS; op++) {
            if (!c.s[i].m.ops_completed[op])
                continue;
            char other[16];
            const char *name = rf__op_name(op);
            if (!name) {
                snprintf(other, sizeof other, "op%u", op);
                name = other;
            }
            put(&o, "ringfiber_ops_total{loop=\"%u\",op=\"%s\"} %llu\n",
                c.s[i].id, name, (unsigned long long)c.s[i].m.ops_completed[op]);
        }
    put(&o, "# HELP ringfiber_sched_delay_seconds Time from a task becoming "
            "ready to it running (loops with RF_LOOP_SCHED_DELAY).\n"
            "# TYPE ringfiber_sched_delay_seconds histogram\n");
    for (size_t i = 0; i < c.n; i++) {
        const rf_loop_metrics *m = &c.s[i].m;
        if (!m->sched_delay_on)
            continue;
        uint64_t cum = 0;
        for (unsigned b = 0; b + 1 < RF_DELAY_BUCKETS; b++) {
            cum += m->sched_delay_buckets[b];
            put(&o, "ringfiber_sched_delay_seconds_bucket{loop=\"%u\",le=\"%.6f\"} %llu\n",
                c.s[i].id, (double)(1ull << b) * 1e-6, (unsigned long long)cum);
        }
        /* The count is the buckets' sum, read with them: the counters are
         * not read at one instant, and a histogram must add up. */
        cum += m->sched_delay_buckets[RF_DELAY_BUCKETS - 1];
        put(&o, "ringfiber_sched_delay_seconds_bucket{loop=\"%u\",le=\"+Inf\"} %llu\n",
            c.s[i].id, (unsigned long long)cum);
        put(&o, "ringfiber_sched_delay_seconds_sum{loop=\"%u\"} %.9f\n", c.s[i].id,
            (double)m->sched_delay_sum_ns * 1e-9);
        put(&o, "ringfiber_sched_delay_seconds_count{loop=\"%u\"} %llu\n",
            c.s[i].id, (unsigned long long)cum);
    }
    free(c.s);
    return o.used > (size_t)INT32_MAX ? -EOVERFLOW : (int)o.used;
}
