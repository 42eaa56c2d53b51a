/*
 * ringfiber-load: the parts of a load generator, for harnesses written on
 * ringfiber. rfload (tools/rfload) is built on it; a load generator for
 * another protocol writes only the protocol (examples/binload.c):
 *
 *   rfl_hist       latencies in a fixed-size histogram: record, merge,
 *                  exact-rank percentiles, HdrHistogram's encodings, its
 *                  .hgrm text and interval log
 *   rfl_http       an incremental HTTP/1.1 response reader
 *   rfl_schedule   an open-loop schedule (a rate, steps, a ramp) and
 *                  rfl_slots, one loop's share of its send times
 *   rfl_load       the driver: connections on a group of loops, one task
 *                  each, closed or open loop with coordinated omission
 *                  corrected, deadlines, the figures merged exactly
 *
 * Link with -lringfiber_load -lringfiber (pkg-config ringfiber-load).
 * Nothing here keeps global state; a histogram or schedule belongs to its
 * caller. Unless a function says so, it does not suspend and may be called
 * from any thread on objects that thread owns.
 */
#ifndef RINGFIBER_LOAD_H
#define RINGFIBER_LOAD_H

#include <ringfiber.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Histogram                                                                */
/* ------------------------------------------------------------------------ */

/*
 * Values (nanoseconds here) are counted in log-linear buckets, as
 * HdrHistogram does: the values below 2^RFL_HIST_SUB_BITS each have their
 * own bucket; above, every power-of-two range [2^k, 2^(k+1)) is split into
 * 2^(RFL_HIST_SUB_BITS-1) equal buckets. A value is thus known to within
 * 1/1024 of itself (0.1%), from 1 ns to 2^RFL_HIST_MAX_BITS ns (18
 * minutes; larger values land in the last bucket, the exact maximum is
 * kept aside), in a fixed 248 KiB whatever the number of values.
 */
#define RFL_HIST_SUB_BITS 11
#define RFL_HIST_MAX_BITS 40
#define RFL_HIST_SUB_COUNT (1u << RFL_HIST_SUB_BITS)           /* 2048 */
#define RFL_HIST_HALF (RFL_HIST_SUB_COUNT / 2)                  /* 1024 */
#define RFL_HIST_BUCKETS \
    (RFL_HIST_SUB_COUNT + (RFL_HIST_MAX_BITS - RFL_HIST_SUB_BITS) * RFL_HIST_HALF)

typedef struct rfl_hist {
    uint64_t total;  /* values recorded */
    uint64_t min;    /* exact; UINT64_MAX when empty */
    uint64_t max;    /* exact; 0 when empty */
    double sum;      /* for the mean */
    double sum_sq;   /* for the standard deviation */
    uint64_t counts[RFL_HIST_BUCKETS];
} rfl_hist;

/* Empty h (the caller's memory: 248 KiB, better on the heap than on a
 * task's stack). Pointers given to the rfl_hist_ functions must not be
 * NULL. */
RF_API void rfl_hist_init(rfl_hist *h);
/* The bucket of value v, and the highest value that bucket holds. */
RF_API unsigned rfl_hist_index(uint64_t v);
RF_API uint64_t rfl_hist_bucket_top(unsigned index);
RF_API void rfl_hist_record(rfl_hist *h, uint64_t v);
/* Add every count of src into dst. */
RF_API void rfl_hist_merge(rfl_hist *dst, const rfl_hist *src);
/* The value at percentile p (0 < p <= 100): the top of the bucket holding
 * the ceil(p/100 * total)-th smallest value, capped at the exact maximum
 * (0 when empty; p <= 0 or NaN: the smallest value's bucket; p >= 100:
 * the maximum). */
RF_API uint64_t rfl_hist_percentile(const rfl_hist *h, double p);
RF_API double rfl_hist_mean(const rfl_hist *h);
RF_API double rfl_hist_stddev(const rfl_hist *h);
/* ns as text with a unit into buf (len bytes, 16 are enough), as rfload's
 * summaries print it: "850ns", "12.34us", "5.67ms", "1.23s". */
RF_API void rfl_format_ns(char *buf, size_t len, double ns);

/*
 * HdrHistogram's formats. The counts array is HdrHistogram's own for
 * values 1..2^40-1 at 3 significant digits, index for index, so these are
 * the files its tools read.
 *
 * rfl_hist_encode: the V2 encoding (ZigZag LEB128 counts, runs of zeros
 * as one negative number) into buf; returns its length, or 0 when cap is
 * under RFL_HIST_ENCODED_MAX. rfl_hist_decode_add adds such an encoding
 * into h: 0, -EBADMSG (malformed) or -EINVAL (another layout); the exact
 * min, max and sum are not in the encoding, so h takes its buckets' bounds
 * and middles for them.
 */
#define RFL_HIST_ENCODED_MAX (40u + 9u * RFL_HIST_BUCKETS)
RF_API size_t rfl_hist_encode(const rfl_hist *h, uint8_t *buf, size_t cap);
RF_API int rfl_hist_decode_add(rfl_hist *h, const uint8_t *buf, size_t len);
/* The percentile spectrum as HdrHistogram reports it: fn(arg, percentile,
 * the value there (its bucket's top), the count up to it) at each
 * reporting level (5 per halving of the distance to 100%), then at 100. */
RF_API void rfl_hist_spectrum(const rfl_hist *h,
                       void (*fn)(void *arg, double pct, uint64_t value,
                                  uint64_t cum),
                       void *arg);
/* The percentile distribution in HdrHistogram's .hgrm text (values divided
 * by unit_ratio: 1e6 prints nanoseconds as milliseconds). 0 or -EIO. */
RF_API int rfl_hist_write_hgrm(const rfl_hist *h, FILE *out, double unit_ratio);
/* HdrHistogram's interval log (format 1.3): the header, then a line per
 * interval: start and length in seconds, the interval's maximum divided by
 * max_unit_ratio, and the histogram compressed (zlib) in base64. 0, -EIO
 * or -ENOMEM. rfl_hist_log_decode adds such a line's last field into h. */
RF_API int rfl_hist_log_header(FILE *out, const char *comment, double start_epoch_s);
RF_API int rfl_hist_log_interval(FILE *out, const rfl_hist *h, double start_s,
                          double length_s, double max_unit_ratio);
RF_API int rfl_hist_log_decode(const char *b64, size_t len, rfl_hist *h);

/* ------------------------------------------------------------------------ */
/* HTTP/1.1 response parser                                                 */
/* ------------------------------------------------------------------------ */

/*
 * An incremental parser for one response at a time. The caller hands it
 * the bytes received so far; it consumes what it can. The head (status
 * line and headers) must arrive whole in the buffer it is given (the
 * caller's buffer bounds its size); the body is skipped without being
 * kept, whatever its length. Interim answers (100 Continue, 103 Early
 * Hints) are skipped: the response is the final one.
 */
typedef struct rfl_http {
    int state;          /* private */
    int status;         /* the status code, once the head is parsed */
    bool chunked;       /* read-only */
    bool close;         /* "Connection: close" seen */
    bool no_body;       /* set by the caller after rfl_http_init for the
                         * answer to a HEAD request: no body whatever the
                         * head says */
    uint64_t remaining; /* private: body or chunk bytes still to skip */
    uint64_t body_bytes; /* the body's length so far (chunked: the data
                          * of its chunks) */
} rfl_http;

#define RFL_HTTP_MORE 0 /* everything given was consumed (or the head is
                         * incomplete: *used tells); give more bytes */
#define RFL_HTTP_DONE 1 /* a whole response ends after *used bytes */

RF_API void rfl_http_init(rfl_http *p);
/* Returns RFL_HTTP_DONE, RFL_HTTP_MORE or -EPROTO (malformed, or a
 * response whose end cannot be known without the connection closing).
 * *used: the bytes of data that were consumed. */
RF_API int rfl_http_parse(rfl_http *p, const char *data, size_t len, size_t *used);

/* ------------------------------------------------------------------------ */
/* The open-loop schedule                                                   */
/* ------------------------------------------------------------------------ */

#define RFL_MAX_STEPS 64

typedef struct rfl_step {
    double from, to;   /* requests/s at its start and at its end */
    uint64_t ns;       /* its length (UINT64_MAX: until the run ends) */
} rfl_step;

typedef struct rfl_schedule {
    rfl_step steps[RFL_MAX_STEPS];
    unsigned nsteps;
    uint64_t total_ns; /* 0: open-ended (a constant rate, default_ns 0) */
    bool sweep;        /* steps or a ramp: reported step by step */
} rfl_schedule;

/* A time as rfload's options take it: "10" (seconds), "1.5s", "500ms",
 * "250us", "2m", "1h", from 0 to about 31 years; true with *ns set. */
RF_API bool rfl_parse_time(const char *s, uint64_t *ns);

/*
 * Parse a rate: "R" (R requests/s for default_ns; 0: until the run ends),
 * "A..B/T" (a linear ramp from A to B over T, reported in steps of one
 * second, at most 64), or "R1,R2,...@T" (each rate for T); rates above 0
 * and up to 1e9, times from 1ms (10, 1.5s, 500ms, 2m, 1h). Returns 0, or
 * -1 with what is wrong in why (why may be NULL; s NULL is wrong too).
 * The other rfl_schedule_ functions take a parsed schedule.
 */
RF_API int rfl_schedule_parse(const char *s, uint64_t default_ns, rfl_schedule *out,
                       char *why, size_t whylen);
/* The step holding offset t (ns from the start): nsteps past the end. */
RF_API unsigned rfl_schedule_step(const rfl_schedule *s, uint64_t t);
/* The rate asked at offset t (0 past the end), and a step's mean rate. */
RF_API double rfl_schedule_rate(const rfl_schedule *s, uint64_t t);
RF_API double rfl_schedule_target(const rfl_schedule *s, unsigned step);
RF_API uint64_t rfl_schedule_step_start(const rfl_schedule *s, unsigned step);

/*
 * One loop's share of the schedule's global sequence of send times (t_0 =
 * 0, t_(i+1) = t_i + 1/rate(t_i)): loop k of n takes t_k, t_(k+n), ...
 * rfl_slots_next returns the next one (ns from the start), or UINT64_MAX
 * when the schedule is over.
 */
typedef struct rfl_slots {
    const rfl_schedule *s;
    unsigned stride;
    unsigned step;        /* cached: the step holding t */
    uint64_t step_start;
    double t;             /* ns from the start */
} rfl_slots;

RF_API void rfl_slots_init(rfl_slots *sl, const rfl_schedule *s, unsigned k,
                    unsigned n);
RF_API uint64_t rfl_slots_next(rfl_slots *sl);

/* ------------------------------------------------------------------------ */
/* The driver                                                               */
/* ------------------------------------------------------------------------ */

/* One connection as the protocol sees it. */
typedef struct rfl_conn {
    int fd;              /* the connected socket (TCP_NODELAY) */
    unsigned index;      /* among all connections, 0.. */
    unsigned loop;       /* the loop (thread) it runs on, 0.. */
    void *user;          /* the protocol's own, per connection */
    void *priv;          /* the driver's */
} rfl_conn;

/* What a protocol's exchange returns (or a negative errno: no answer). */
#define RFL_ANSWER 0        /* an answer: counted, its latency recorded */
#define RFL_ANSWER_BAD 1    /* an answer that is wrong: also counted as a
                             * mismatch */
#define RFL_ANSWER_CLOSE 2  /* an answer, after which the connection is
                             * closed (the next request opens another) */

/*
 * A protocol: three functions the driver calls on the task of each
 * connection (each may suspend that task, never the thread). arg is
 * rfl_load_opts.arg. start (may be NULL) runs once per connection task,
 * before its first request: set c->user; a negative errno ends the task
 * (stop still runs; the connection counts as one read error).
 * exchange sends one request on c->fd and reads its whole answer; it
 * reports the bytes with rfl_conn_sent / rfl_conn_received (a failure
 * before rfl_conn_sent counts as a write error, after it as a read error)
 * and its own counts with rfl_conn_count; it returns RFL_ANSWER*, or
 * -ETIMEDOUT (the request's deadline), -ECONNRESET (closed early) or any
 * other negative errno; the connection is then closed and reopened. stop
 * (may be NULL) runs once when the task ends: free c->user.
 */
typedef struct rfl_proto {
    int (*start)(void *arg, rfl_conn *c);
    int (*exchange)(void *arg, rfl_conn *c);
    void (*stop)(void *arg, rfl_conn *c);
} rfl_proto;

/* From a protocol's exchange, on its connection (c as given): the bytes
 * it sent and received, and n added to the run's counter k (the
 * protocol's own figures: statuses, kinds of answer), summed over the
 * loops into rfl_result.counters; a k of RFL_COUNTERS or more is
 * ignored. */
RF_API void rfl_conn_sent(rfl_conn *c, uint64_t bytes);
RF_API void rfl_conn_received(rfl_conn *c, uint64_t bytes);
/* The answer is whole now: its latency ends here, not when exchange
 * returns (for a protocol that has more to do after it, such as waiting
 * for the server's close). */
RF_API void rfl_conn_answered(rfl_conn *c);
#define RFL_COUNTERS 128
RF_API void rfl_conn_count(rfl_conn *c, unsigned k, uint64_t n);

#define RFL_MAX_THREADS 256
#define RFL_MAX_CONNECTIONS 100000

typedef struct rfl_load_opts {
    const char *host;       /* numeric address (127.0.0.1, ::1), or
                             * "localhost" */
    uint16_t port;
    unsigned connections;   /* 1..RFL_MAX_CONNECTIONS */
    unsigned threads;       /* loops, 1..RFL_MAX_THREADS (0: 1), at most
                             * connections; each has its share of them */
    uint64_t duration_ns;   /* 0: until requests are done */
    uint64_t requests;      /* 0: until the duration is over; one of the
                             * two must be set */
    const rfl_schedule *rate; /* NULL: closed loop (the next request when
                             * the answer is in); else open loop: requests
                             * due on this schedule, latency from when
                             * each was due. A sweep's last requests are
                             * waited for after its end, up to timeout_ns
                             * (10 s without one), so that its last step
                             * loses none of its answers */
    uint64_t timeout_ns;    /* one request's limit; 0: none */
    bool new_connection;    /* a connection per request, its connect in
                             * the latency */
    bool progress;          /* a line a second on stderr */
    bool intervals;         /* keep a histogram per second (intervals) */
    size_t stack_size;      /* each connection task's (rf_spawn_options);
                             * 0: the loop's default */
    const char *name;       /* the progress lines' prefix (NULL:
                             * "rfl_load") */
    const rfl_proto *proto;
    void *arg;              /* for proto's functions */
} rfl_load_opts;

typedef struct rfl_result {
    rfl_hist hist;          /* latencies in ns: every loop's, merged by
                             * adding their buckets (rfl_hist_merge) */
    uint64_t completed;     /* requests answered */
    uint64_t err_connect;
    uint64_t err_read;      /* reset, early close, unparseable answer */
    uint64_t err_write;
    uint64_t err_timeout;
    uint64_t err_mismatch;  /* RFL_ANSWER_BAD answers */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t connects;      /* connections opened */
    uint64_t late;          /* open loop: sends over 1 ms after their time */
    double elapsed_s;       /* the measured interval */
    double start_epoch_s;   /* its start, wall clock */
    unsigned loops;
    struct {
        uint64_t completed;
        double elapsed_s;
    } per_loop[RFL_MAX_THREADS];
    uint64_t counters[RFL_COUNTERS]; /* rfl_conn_count's */
    /* A sweep (a schedule with several steps): each step's figures. */
    unsigned nsteps;
    struct rfl_step_result {
        rfl_hist *hist;     /* latencies of the requests due in the step
                             * (owned; NULL: none answered) */
        uint64_t completed; /* answers that arrived during the step */
        uint64_t errors;    /* failed requests due in the step */
    } steps[RFL_MAX_STEPS];
    /* A sweep's answers by the time they arrived, in buckets of
     * arrivals_ns (owned): rfl_step_rate reads them. */
    uint32_t *arrivals;
    size_t narrivals;
    uint64_t arrivals_ns;
    /* intervals: the run's seconds, each a histogram of the answers that
     * arrived in it (owned). */
    struct rfl_interval {
        uint8_t *enc;       /* rfl_hist_encode's bytes */
        size_t len;
        uint64_t max;       /* the exact maximum */
    } *intervals;
    size_t nintervals;
} rfl_result;

/*
 * Run the load: open every connection first (the clock starts when all
 * are open), then run a task per connection on a group of o->threads
 * loops (rf_run_loops) until the duration is over or the requests are
 * done, and merge every loop's figures into *res. Blocks the calling
 * thread, which must not be a loop's (-EBUSY from a task). Returns 0, or
 * -EINVAL (bad options), -ENOMEM, -ECONNREFUSED or another connect error
 * (the first connections could not be opened: nothing ran), or the
 * group's error; on error *res holds nothing to release. On success
 * rfl_result_release(res) frees what it holds (not res itself).
 */
RF_API int rfl_load(const rfl_load_opts *o, rfl_result *res);
RF_API void rfl_result_release(rfl_result *res);

/* A sweep's step j: its achieved rate (answers that arrived during it,
 * per second, the step's window moved later by its median latency: the
 * time answers take to come back is not a shortfall; cut at the run's
 * end), and the knee: the last step before the first one whose achieved
 * rate is under 99% of its target or whose p99 is over slo_p99_ns (0: no
 * latency limit); -1 if the first already is. */
RF_API double rfl_step_rate(const rfl_schedule *s, const rfl_result *res,
                            unsigned j);
RF_API int rfl_knee(const rfl_schedule *s, const rfl_result *res,
                    uint64_t slo_p99_ns);

#ifdef __cplusplus
}
#endif

#endif
