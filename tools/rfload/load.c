/*
 * The driver of ringfiber-load (rfl_load): a group of loops (rf_run_loops:
 * one unless opts->threads), each with its share of the connections, one
 * task per connection, each written as blocking code: the protocol's
 * exchange sends a request and reads the whole answer, the driver records
 * the latency, again. Each task keeps one request in flight, as wrk does.
 *
 * Closed loop: the next request leaves as soon as the answer to the last
 * one is in; latency runs from the send to the end of the answer.
 *
 * Open loop (opts->rate): the requests are due on one global schedule
 * (schedule.c), each loop taking its share of the due times, each due time
 * taken by whichever of the loop's connections is free first. A request's
 * latency runs from the time it was *due*, not from when it left: when the
 * server stalls, the requests that should have gone out meanwhile are not
 * silently skipped (coordinated omission, which makes a stall look like
 * one slow request); they go out late, back to back, and each carries its
 * wait. This is what wrk2 does.
 *
 * The end of the run is the deadline of every connection task
 * (rf_deadline_set): a sleep or an operation still waiting then ends with
 * -ETIMEDOUT, and the request it belonged to is not counted. Within the
 * run, the deadline is brought forward to the request's own limit
 * (timeout_ns) while a request is in flight.
 */
#include <ringfiber_load.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    CONNECT_RETRIES = 100, /* consecutive failed reconnects before a
                            * connection gives up */
};

#define SWEEP_DRAIN_NS (10 * RF_NSEC_PER_SEC)

typedef struct shared shared;

typedef struct worker {
    const rfl_load_opts *o;
    shared *sh;
    unsigned index;
    unsigned first_conn;   /* global index of its first connection */
    unsigned nconns;
    uint64_t quota;        /* requests it may send; 0: no limit */
    uint64_t issued;
    uint64_t start_ns, end_ns; /* end_ns: 0 without a duration */
    uint64_t flight_end;   /* a request in flight may last until then: a
                            * sweep's last requests are waited for (up to
                            * their timeout, or SWEEP_DRAIN_NS without
                            * one), so that its last step loses none;
                            * otherwise end_ns */
    int rc;
    rfl_slots slots;       /* open loop: its share of the schedule */
    rfl_result res;        /* its steps' histograms are its own until
                            * rfl_run merges them */
    /* --interval-log: the second being counted, and the seconds done. */
    rfl_hist *ivl;
    uint64_t ivl_sec;
    struct rfl_interval *ivls;
    uint64_t *ivl_secs;    /* the second of each of ivls */
    /* A sweep: answers by the time they arrived, in buckets of
     * arrivals_ns (rfl_step_rate). */
    uint32_t *arrivals;
    size_t narrivals;
    size_t nivls, ivl_cap;
    bool ivl_failed;       /* out of memory: the log is refused */
    /* Read by the progress task of worker 0, written only here. */
    _Atomic uint64_t pub_completed, pub_errors, pub_lat_sum_us;
} worker;

struct shared {
    const rfl_load_opts *o;
    worker *workers;
    unsigned nworkers;
    atomic_uint arrived;   /* workers whose connections are opened (or
                            * failed): the clock starts when all are */
    atomic_int failed;     /* a first connection could not be opened */
    atomic_uint running;   /* workers not done */
    atomic_int first_err;  /* the first connect error, for the caller */
    _Atomic uint64_t start_ns; /* the run's start, the same for every
                                * loop (the schedule is global) */
    double start_epoch_s;
};

typedef struct conn {
    rfl_conn pub;          /* what the protocol sees: fd, index, user */
    worker *w;
    unsigned failures;     /* consecutive failed connects */
    bool sent;             /* the protocol said its request went out */
    uint64_t answered_at;  /* rfl_conn_answered's time, 0: none */
} conn;

static void publish(worker *w)
{
    rfl_result *r = &w->res;
    atomic_store_explicit(&w->pub_completed, r->completed,
                          memory_order_relaxed);
    atomic_store_explicit(&w->pub_errors,
                          r->err_connect + r->err_read + r->err_write +
                              r->err_timeout + r->err_mismatch,
                          memory_order_relaxed);
    atomic_store_explicit(&w->pub_lat_sum_us, (uint64_t)(r->hist.sum / 1e3),
                          memory_order_relaxed);
}

static int open_conn(conn *c)
{
    const rfl_load_opts *o = c->w->o;
    int fd;
    int rc = rf_tcp_connect(o->host, o->port, &fd);
    if (rc != 0)
        return rc;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->pub.fd = fd;
    c->w->res.connects++;
    return 0;
}

static void close_conn(conn *c)
{
    if (c->pub.fd >= 0) {
        rf_close(c->pub.fd);
        c->pub.fd = -1;
    }
}


/* The second that ended at sec's start: into the worker's list. */
static void ivl_flush(worker *w)
{
    if (!w->ivl || w->ivl->total == 0)
        return;
    if (w->nivls == w->ivl_cap) {
        size_t cap = w->ivl_cap ? w->ivl_cap * 2 : 64;
        struct rfl_interval *n = realloc(w->ivls, cap * sizeof *n);
        uint64_t *secs = n ? realloc(w->ivl_secs, cap * sizeof *secs) : NULL;
        if (n)
            w->ivls = n;
        if (!secs) {
            w->ivl_failed = true;
            return;
        }
        w->ivl_secs = secs;
        w->ivl_cap = cap;
    }
    uint8_t *enc = malloc(RFL_HIST_ENCODED_MAX);
    size_t len = enc ? rfl_hist_encode(w->ivl, enc, RFL_HIST_ENCODED_MAX) : 0;
    uint8_t *fit = len ? realloc(enc, len) : NULL;
    if (!fit) {
        free(enc);
        w->ivl_failed = true;
        return;
    }
    w->ivls[w->nivls] = (struct rfl_interval){fit, len, w->ivl->max};
    w->ivl_secs[w->nivls++] = w->ivl_sec;
    rfl_hist_init(w->ivl);
}

/* An answer: its latency, counted in the run, its step (by when it was
 * due) and its second (by when it came). */
static void note_answer(worker *w, uint64_t due, uint64_t done, uint64_t lat)
{
    const rfl_schedule *sc = w->o->rate;
    rfl_result *r = &w->res;
    rfl_hist_record(&r->hist, lat);
    if (sc && sc->sweep) {
        unsigned st = rfl_schedule_step(sc, due - w->start_ns);
        if (st < sc->nsteps) {
            if (!r->steps[st].hist && (r->steps[st].hist = malloc(
                                           sizeof *r->steps[st].hist)))
                rfl_hist_init(r->steps[st].hist);
            if (r->steps[st].hist)
                rfl_hist_record(r->steps[st].hist, lat);
        }
        unsigned at = rfl_schedule_step(sc, done - w->start_ns);
        if (at < sc->nsteps)
            r->steps[at].completed++;
        if (w->arrivals) {
            size_t b = (size_t)((done - w->start_ns) / r->arrivals_ns);
            w->arrivals[b < w->narrivals ? b : w->narrivals - 1]++;
        }
    }
    if (w->ivl) {
        /* An answer that arrives after the run's end (due before it)
         * belongs to its last second. */
        uint64_t at = w->end_ns && done >= w->end_ns ? w->end_ns - 1 : done;
        uint64_t sec = (at - w->start_ns) / RF_NSEC_PER_SEC;
        if (sec != w->ivl_sec) {
            ivl_flush(w);
            w->ivl_sec = sec;
        }
        rfl_hist_record(w->ivl, lat);
    }
}

static void note_error(worker *w, uint64_t due)
{
    const rfl_schedule *sc = w->o->rate;
    if (sc && sc->sweep) {
        unsigned st = rfl_schedule_step(sc, due - w->start_ns);
        if (st < sc->nsteps)
            w->res.steps[st].errors++;
    }
}


void rfl_conn_sent(rfl_conn *c, uint64_t bytes)
{
    conn *k = c->priv;
    k->sent = true;
    k->w->res.bytes_sent += bytes;
}

void rfl_conn_answered(rfl_conn *c)
{
    conn *k = c->priv;
    k->answered_at = rf_now_ns();
}

void rfl_conn_received(rfl_conn *c, uint64_t bytes)
{
    conn *k = c->priv;
    k->w->res.bytes_received += bytes;
}

void rfl_conn_count(rfl_conn *c, unsigned k, uint64_t n)
{
    conn *kc = c->priv;
    if (k < RFL_COUNTERS)
        kc->w->res.counters[k] += n;
}

static void *conn_main(void *arg)
{
    conn *c = arg;
    worker *w = c->w;
    const rfl_load_opts *o = w->o;
    rfl_result *r = &w->res;
    bool open_loop = o->rate != NULL;
    rf_deadline_set(w->end_ns);
    if (o->proto->start && o->proto->start(o->arg, &c->pub) != 0) {
        r->err_read++; /* the connection is given up: no request made */
        close_conn(c);
        if (o->proto->stop)
            o->proto->stop(o->arg, &c->pub);
        return NULL;
    }
    for (;;) {
        /* Claimed before any wait, so that the tasks never send more
         * than the count between them. */
        if (w->quota && w->issued >= w->quota)
            break;
        w->issued++;
        uint64_t intended = 0;
        if (open_loop) {
            /* The loop's next time of the global schedule: taken by
             * whichever of its connections is free first. */
            uint64_t off = rfl_slots_next(&w->slots);
            if (off == UINT64_MAX)
                break;
            intended = w->start_ns + off;
            if (w->end_ns && intended >= w->end_ns)
                break;
            uint64_t now = rf_now_ns();
            if (intended > now) {
                if (rf_sleep(intended - now) != 0)
                    break; /* the end of the run */
            } else if (now - intended > 1000 * RF_NSEC_PER_USEC) {
                r->late++; /* more than a millisecond behind schedule */
            }
        }
        /* new_connection: the request's time and limit include the
         * connect. */
        uint64_t begin = rf_now_ns();
        if (o->new_connection && o->timeout_ns)
            rf_deadline_set(w->flight_end &&
                                    w->flight_end < begin + o->timeout_ns
                                ? w->flight_end
                                : begin + o->timeout_ns);
        if (c->pub.fd < 0) {
            int rc = open_conn(c);
            if (rc != 0) {
                rf_deadline_set(w->end_ns);
                if (rc == -ETIMEDOUT && w->end_ns && rf_now_ns() >= w->end_ns)
                    break;
                r->err_connect++;
                note_error(w, open_loop ? intended : begin);
                if (++c->failures >= CONNECT_RETRIES)
                    break;
                if (rf_sleep(10 * RF_NSEC_PER_MSEC) != 0)
                    break;
                continue; /* an open-loop request stays missed */
            }
            c->failures = 0;
        }
        uint64_t sent = rf_now_ns();
        uint64_t start = open_loop           ? intended
                         : o->new_connection ? begin
                                             : sent;
        if (o->timeout_ns && !o->new_connection) {
            uint64_t limit = sent + o->timeout_ns;
            rf_deadline_set(w->flight_end && w->flight_end < limit
                                ? w->flight_end
                                : limit);
        } else if (!o->timeout_ns && w->flight_end != w->end_ns) {
            rf_deadline_set(w->flight_end);
        }
        c->sent = false;
        c->answered_at = 0;
        int rc = o->proto->exchange(o->arg, &c->pub);
        uint64_t done = c->answered_at ? c->answered_at : rf_now_ns();
        if (o->timeout_ns || w->flight_end != w->end_ns)
            rf_deadline_set(w->end_ns);
        if (rc >= 0) {
            note_answer(w, start, done, done - start);
            r->completed++;
            if (rc == RFL_ANSWER_BAD)
                r->err_mismatch++;
            publish(w);
            if (rc == RFL_ANSWER_CLOSE || o->new_connection)
                close_conn(c);
            continue;
        }
        close_conn(c);
        if (rc == -ETIMEDOUT && w->end_ns && done >= w->end_ns)
            break; /* the run is over: this request does not count */
        note_error(w, start);
        if (rc == -ETIMEDOUT)
            r->err_timeout++;
        else if (!c->sent)
            r->err_write++;
        else
            r->err_read++;
        publish(w);
    }
    close_conn(c);
    if (o->proto->stop)
        o->proto->stop(o->arg, &c->pub);
    return NULL;
}

void rfl_format_ns(char *buf, size_t n, double ns)
{
    if (ns < 1e3)
        snprintf(buf, n, "%.0fns", ns);
    else if (ns < 1e6)
        snprintf(buf, n, "%.2fus", ns / 1e3);
    else if (ns < 1e9)
        snprintf(buf, n, "%.2fms", ns / 1e6);
    else
        snprintf(buf, n, "%.2fs", ns / 1e9);
}

/* Once a second, on stderr: elapsed, total, rate and mean latency over the
 * last second, errors. Runs in worker 0 until every worker is done. */
static void *progress_main(void *arg)
{
    shared *sh = arg;
    uint64_t start = sh->workers[0].start_ns;
    uint64_t last_done = 0, last_sum = 0, last_t = start;
    unsigned second = 0;
    while (atomic_load(&sh->running) > 0) {
        uint64_t now = rf_now_ns();
        uint64_t next = start + (second + 1) * RF_NSEC_PER_SEC;
        if (now < next) {
            uint64_t wait = next - now;
            if (rf_sleep(wait < 100 * RF_NSEC_PER_MSEC
                             ? wait : 100 * RF_NSEC_PER_MSEC) != 0)
                break;
            continue;
        }
        second++;
        uint64_t done = 0, errors = 0, sum = 0;
        for (unsigned i = 0; i < sh->nworkers; i++) {
            worker *w = &sh->workers[i];
            done += atomic_load_explicit(&w->pub_completed,
                                         memory_order_relaxed);
            errors += atomic_load_explicit(&w->pub_errors,
                                           memory_order_relaxed);
            sum += atomic_load_explicit(&w->pub_lat_sum_us,
                                        memory_order_relaxed);
        }
        double dt = (double)(now - last_t) / 1e9;
        char mean[32] = "-";
        if (done > last_done)
            rfl_format_ns(mean, sizeof mean,
                   (double)(sum - last_sum) * 1e3 / (double)(done - last_done));
        fprintf(stderr, "%s: %3us  %" PRIu64 " requests  %.0f req/s  "
                        "mean %s  errors %" PRIu64 "\n",
                sh->o->name ? sh->o->name : "rfl_load", second, done, (double)(done - last_done) / dt, mean, errors);
        last_done = done;
        last_sum = sum;
        last_t = now;
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    shared *sh = w->sh;
    const rfl_load_opts *o = w->o;
    conn *conns = calloc(w->nconns, sizeof *conns);
    rf_task **tasks = calloc(w->nconns, sizeof *tasks);
    rf_task *progress = NULL;
    int rc = 0;
    if (!conns || !tasks) {
        rc = -ENOMEM;
        atomic_store(&sh->failed, 1);
    }
    for (unsigned i = 0; rc == 0 && i < w->nconns; i++) {
        conns[i].w = w;
        conns[i].pub.index = w->first_conn + i;
        conns[i].pub.loop = w->index;
        conns[i].pub.fd = -1;
        conns[i].pub.priv = &conns[i];
    }
    /* The connections are all opened before the clock starts, each within
     * the request timeout (10 s without one): a server that drops SYNs
     * is an error, not a hang. */
    for (unsigned i = 0; rc == 0 && i < w->nconns; i++) {
        rf_deadline_set(rf_now_ns() +
                        (o->timeout_ns ? o->timeout_ns : 10 * RF_NSEC_PER_SEC));
        rc = open_conn(&conns[i]);
    }
    rf_deadline_set(0);
    if (rc != 0) {
        int none = 0;
        atomic_compare_exchange_strong(&sh->first_err, &none, rc);
        atomic_store(&sh->failed, 1);
    }
    /* The last to arrive starts the clock, for every loop: the schedule
     * is one. */
    if (atomic_fetch_add(&sh->arrived, 1) + 1 == sh->nworkers) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sh->start_epoch_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
        atomic_store(&sh->start_ns, rf_now_ns());
    }
    while (atomic_load(&sh->start_ns) == 0)
        if (rf_sleep(50 * RF_NSEC_PER_USEC) != 0)
            break;
    if (atomic_load(&sh->failed) || atomic_load(&sh->start_ns) == 0) {
        if (rc == 0)
            rc = -ECANCELED;
        goto out;
    }

    w->start_ns = atomic_load(&sh->start_ns);
    w->end_ns = o->duration_ns ? w->start_ns + o->duration_ns : 0;
    w->flight_end = w->end_ns;
    if (w->end_ns && o->rate && o->rate->sweep)
        w->flight_end = w->end_ns + (o->timeout_ns && o->timeout_ns <
                                                          SWEEP_DRAIN_NS
                                         ? o->timeout_ns
                                         : SWEEP_DRAIN_NS);
    if (o->rate)
        rfl_slots_init(&w->slots, o->rate, w->index, sh->nworkers);
    if (o->rate && o->rate->sweep && o->rate->total_ns) {
        /* 1 ms buckets (at most a million: longer sweeps, wider ones). */
        uint64_t width = o->rate->total_ns / 1000000 + 1;
        w->res.arrivals_ns = width > RF_NSEC_PER_MSEC ? width : RF_NSEC_PER_MSEC;
        /* The run, and the wait for its last answers. */
        w->narrivals = (size_t)((o->rate->total_ns + SWEEP_DRAIN_NS) /
                                w->res.arrivals_ns) + 2;
        w->arrivals = calloc(w->narrivals, sizeof *w->arrivals);
        /* NULL: merge_steps reports it (-ENOMEM) */
    }
    if (o->intervals && (w->ivl = malloc(sizeof *w->ivl)))
        rfl_hist_init(w->ivl);
    else if (o->intervals)
        w->ivl_failed = true;
    if (w->index == 0 && o->progress)
        progress = rf_spawn(progress_main, sh);
    for (unsigned i = 0; i < w->nconns; i++) {
        conn *c = &conns[i];
        rf_spawn_options so = {.stack_size = o->stack_size};
        tasks[i] = rf_spawn_opts(conn_main, c, &so);
        if (!tasks[i]) {
            rc = -errno;
            for (unsigned j = 0; j < i; j++)
                rf_cancel(tasks[j]);
            break;
        }
    }
    unsigned spawned = 0;
    while (spawned < w->nconns && tasks[spawned])
        spawned++;
    for (unsigned i = 0; i < spawned; i++) {
        rf_join(tasks[i], NULL);
        rf_task_release(tasks[i]);
    }
    /* A run that ends with its duration lasted the duration, even when
     * the last request due (open loop) was answered a little before. */
    uint64_t end = rf_now_ns();
    if (w->end_ns && !(w->quota && w->issued >= w->quota)) {
        /* ... or its schedule, where that ends first. */
        uint64_t sched_end = o->rate && o->rate->total_ns
                                 ? w->start_ns + o->rate->total_ns
                                 : UINT64_MAX;
        end = sched_end < w->end_ns ? sched_end : w->end_ns;
    }
    w->res.elapsed_s = (double)(end - w->start_ns) / 1e9;
    ivl_flush(w);
    publish(w);
out:
    atomic_fetch_sub(&sh->running, 1);
    if (progress) {
        rf_join(progress, NULL);
        rf_task_release(progress);
    }
    /* The connection tasks close their own sockets; these are the ones
     * opened when no task was started. */
    for (unsigned i = 0; conns && i < w->nconns; i++)
        if (conns[i].pub.fd >= 0)
            close(conns[i].pub.fd);
    w->rc = rc;
    free(conns);
    free(tasks);
    return NULL;
}

/* Each loop's entry: the worker of its index. */
static void *worker_entry(void *arg)
{
    shared *sh = arg;
    return worker_main(&sh->workers[rf_loop_index()]);
}

/* Each step's histograms, added up over the loops. */
static int merge_steps(const rfl_load_opts *o, worker *ws, unsigned nw,
                       rfl_result *res)
{
    res->nsteps = o->rate && o->rate->sweep ? o->rate->nsteps : 0;
    if (res->nsteps && ws[0].narrivals) {
        res->narrivals = ws[0].narrivals;
        res->arrivals_ns = ws[0].res.arrivals_ns;
        res->arrivals = calloc(res->narrivals, sizeof *res->arrivals);
        if (!res->arrivals)
            return -ENOMEM;
        for (unsigned i = 0; i < nw; i++) {
            if (!ws[i].arrivals)
                return -ENOMEM;
            for (size_t b = 0; b < res->narrivals; b++)
                res->arrivals[b] += ws[i].arrivals[b];
        }
    }
    for (unsigned j = 0; j < res->nsteps; j++) {
        struct rfl_step_result *out = &res->steps[j];
        for (unsigned i = 0; i < nw; i++) {
            const struct rfl_step_result *in = &ws[i].res.steps[j];
            out->completed += in->completed;
            out->errors += in->errors;
            if (!in->hist)
                continue;
            if (!out->hist) {
                if (!(out->hist = malloc(sizeof *out->hist)))
                    return -ENOMEM;
                rfl_hist_init(out->hist);
            }
            rfl_hist_merge(out->hist, in->hist);
        }
    }
    return 0;
}

/* The loops' seconds, merged second by second (each loop's list is in
 * order of time): one histogram per second of the run, empty ones too. */
static int merge_intervals(const rfl_load_opts *o, worker *ws, unsigned nw,
                           rfl_result *res)
{
    if (!o->intervals)
        return 0;
    uint64_t last = 0;
    bool any = false;
    for (unsigned i = 0; i < nw; i++) {
        if (ws[i].ivl_failed)
            return -ENOMEM;
        if (ws[i].nivls) {
            uint64_t s = ws[i].ivl_secs[ws[i].nivls - 1];
            last = !any || s > last ? s : last;
            any = true;
        }
    }
    size_t n = any ? (size_t)last + 1 : 0;
    /* A run with a duration has a line for each of its seconds. */
    size_t whole = (size_t)ceil(res->elapsed_s);
    if (whole > n && whole < 100000000)
        n = whole;
    size_t *cursor = calloc(nw, sizeof *cursor);
    rfl_hist *h = malloc(sizeof *h);
    uint8_t *enc = malloc(RFL_HIST_ENCODED_MAX);
    res->intervals = calloc(n ? n : 1, sizeof *res->intervals);
    int rc = cursor && h && enc && res->intervals ? 0 : -ENOMEM;
    for (size_t s = 0; rc == 0 && s < n; s++) {
        rfl_hist_init(h);
        uint64_t max = 0;
        for (unsigned i = 0; rc == 0 && i < nw; i++) {
            worker *w = &ws[i];
            while (cursor[i] < w->nivls && w->ivl_secs[cursor[i]] == s) {
                const struct rfl_interval *iv = &w->ivls[cursor[i]++];
                rc = rfl_hist_decode_add(h, iv->enc, iv->len);
                if (iv->max > max)
                    max = iv->max;
            }
        }
        if (h->total)
            h->max = max; /* exact, where the buckets give only a bound */
        size_t len = rc == 0 ? rfl_hist_encode(h, enc, RFL_HIST_ENCODED_MAX)
                             : 0;
        uint8_t *copy = len ? malloc(len) : NULL;
        if (!copy) {
            rc = rc ? rc : -ENOMEM;
            break;
        }
        memcpy(copy, enc, len);
        res->intervals[s] = (struct rfl_interval){copy, len, h->max};
        res->nintervals = s + 1;
    }
    free(cursor);
    free(h);
    free(enc);
    return rc;
}

int rfl_load(const rfl_load_opts *o, rfl_result *res)
{
    if (res)
        memset(res, 0, sizeof *res); /* nothing to release on any error */
    unsigned nw = o && o->threads ? o->threads : 1;
    if (!o || !res || !o->host || !o->proto || !o->proto->exchange ||
        o->connections < 1 || o->connections > RFL_MAX_CONNECTIONS ||
        nw > RFL_MAX_THREADS || nw > o->connections ||
        (!o->duration_ns && !o->requests) ||
        (o->rate && (o->rate->nsteps < 1 || o->rate->nsteps > RFL_MAX_STEPS)))
        return -EINVAL;
    shared sh = {.o = o, .nworkers = nw};
    atomic_init(&sh.failed, 0);
    atomic_init(&sh.first_err, 0);
    atomic_init(&sh.running, nw);
    atomic_init(&sh.arrived, 0);
    worker *ws = calloc(nw, sizeof *ws);
    if (!ws)
        return -ENOMEM;
    sh.workers = ws;
    unsigned first = 0;
    uint64_t quota_given = 0;
    for (unsigned i = 0; i < nw; i++) {
        worker *w = &ws[i];
        w->o = o;
        w->sh = &sh;
        w->index = i;
        w->first_conn = first;
        w->nconns = o->connections / nw + (i < o->connections % nw);
        first += w->nconns;
        if (o->requests) {
            /* Open loop: each loop has a 1/nw share of the schedule's
             * times, so an equal share of the count. */
            w->quota = i + 1 == nw ? o->requests - quota_given
                       : o->rate ? o->requests / nw
                                 : o->requests / o->connections * w->nconns +
                                       o->requests % o->connections *
                                           w->nconns / o->connections;
            quota_given += w->quota;
            if (w->quota == 0) /* fewer requests than workers */
                w->quota = UINT64_MAX, w->issued = UINT64_MAX;
        }
        rfl_hist_init(&w->res.hist);
    }
    int rc = 0;
    rf_loops_opts lo = {.loops = nw};
    int grc = rf_run_loops(worker_entry, &sh, &lo, NULL, NULL);
    if (grc != 0)
        rc = grc;
    memset(res, 0, sizeof *res);
    rfl_hist_init(&res->hist);
    for (unsigned i = 0; i < nw; i++) {
        worker *w = &ws[i];
        if (rc == 0 && w->rc != 0 && w->rc != -ECANCELED)
            rc = w->rc;
        const rfl_result *r = &w->res;
        rfl_hist_merge(&res->hist, &r->hist);
        res->completed += r->completed;
        res->err_connect += r->err_connect;
        res->err_read += r->err_read;
        res->err_write += r->err_write;
        res->err_timeout += r->err_timeout;
        res->err_mismatch += r->err_mismatch;
        for (unsigned k = 0; k < RFL_COUNTERS; k++)
            res->counters[k] += r->counters[k];
        res->bytes_sent += r->bytes_sent;
        res->bytes_received += r->bytes_received;
        res->connects += r->connects;
        res->late += r->late;
        if (r->elapsed_s > res->elapsed_s)
            res->elapsed_s = r->elapsed_s;
        res->per_loop[i].completed = r->completed;
        res->per_loop[i].elapsed_s = r->elapsed_s;
    }
    res->loops = nw;
    res->start_epoch_s = sh.start_epoch_s;
    if (rc == 0 && atomic_load(&sh.failed)) {
        int first_err = atomic_load(&sh.first_err);
        rc = first_err ? first_err : -ENOMEM;
    }
    int mrc = merge_steps(o, ws, nw, res);
    if (mrc == 0)
        mrc = merge_intervals(o, ws, nw, res);
    if (rc == 0)
        rc = mrc;
    for (unsigned i = 0; i < nw; i++) {
        worker *w = &ws[i];
        for (unsigned j = 0; j < RFL_MAX_STEPS; j++)
            free(w->res.steps[j].hist);
        for (size_t k = 0; k < w->nivls; k++)
            free(w->ivls[k].enc);
        free(w->ivls);
        free(w->ivl_secs);
        free(w->ivl);
        free(w->arrivals);
    }
    free(ws);
    if (rc != 0)
        rfl_result_release(res);
    return rc;
}

void rfl_result_release(rfl_result *res)
{
    for (unsigned j = 0; j < RFL_MAX_STEPS; j++) {
        free(res->steps[j].hist);
        res->steps[j].hist = NULL;
    }
    for (size_t k = 0; k < res->nintervals; k++)
        free(res->intervals[k].enc);
    free(res->intervals);
    res->intervals = NULL;
    res->nintervals = 0;
    free(res->arrivals);
    res->arrivals = NULL;
    res->narrivals = 0;
}


/* The answers that arrived in [from, to) (ns from the start), the edge
 * buckets counted in part. */
static double arrived(const rfl_result *res, double from, double to)
{
    double w = (double)res->arrivals_ns, n = 0;
    for (size_t b = (size_t)(from / w); b < res->narrivals; b++) {
        double lo = (double)b * w, hi = lo + w;
        if (lo >= to)
            break;
        double in = (hi < to ? hi : to) - (lo > from ? lo : from);
        n += in > 0 ? res->arrivals[b] * in / w : 0;
    }
    return n;
}

/*
 * A step's achieved rate: the answers that arrived during it, its window
 * moved later by the median latency of its requests, so that answers take
 * the time they take to come back, not a shortfall (with 1 s steps, a
 * 15 ms server would otherwise read 1.5% short, past the knee's 1%); the
 * window ends with the run at the latest, and the rate is over what is
 * left of it.
 */
double rfl_step_rate(const rfl_schedule *s, const rfl_result *res,
                     unsigned j)
{
    if (!s || j >= res->nsteps || j >= s->nsteps)
        return 0;
    double from = (double)rfl_schedule_step_start(s, j);
    double to = from + (double)s->steps[j].ns;
    const rfl_hist *h = res->steps[j].hist;
    if (!res->arrivals || !h) {
        double len = (to > res->elapsed_s * 1e9 ? res->elapsed_s * 1e9 : to) -
                     from;
        return len > 0 ? (double)res->steps[j].completed / (len / 1e9) : 0;
    }
    /* The last step's late answers were waited for (they are in the
     * buckets): only the buckets' end cuts the window. */
    double shift = (double)rfl_hist_percentile(h, 50);
    from += shift;
    to += shift;
    double kept = (double)res->narrivals * (double)res->arrivals_ns;
    if (to > kept)
        to = kept;
    return to > from ? arrived(res, from, to) / ((to - from) / 1e9) : 0;
}

int rfl_knee(const rfl_schedule *s, const rfl_result *res,
             uint64_t slo_p99_ns)
{
    int knee = -1;
    for (unsigned j = 0; s && j < res->nsteps && j < s->nsteps; j++) {
        const rfl_hist *h = res->steps[j].hist;
        if (!h ||
            rfl_step_rate(s, res, j) < 0.99 * rfl_schedule_target(s, j) ||
            (slo_p99_ns && rfl_hist_percentile(h, 99) > slo_p99_ns))
            break;
        knee = (int)j;
    }
    return knee;
}
