/*
 * rfload: a load generator for TCP echo and HTTP/1.1 servers, built on
 * ringfiber. This header is the tool's internal interface, shared by its
 * files and by tests/test_rfload.c; it is not installed.
 *
 *   hist.c    the latency histogram (log-linear buckets, fixed size)
 *   http.c    the HTTP/1.1 response parser (status, Content-Length, chunked)
 *   request.c the requests sent: from the command line or a request file
 *   plot.c    --plot: gnuplot draws the spectrum and a sweep
 *   schedule.c the open-loop schedule: constant, steps, a ramp; one global
 *             sequence of send times shared out among the loops
 *   rfload.c  the command line, the connection tasks, the reports
 *   main.c    main()
 */
#ifndef RINGFIBER_RFLOAD_H
#define RINGFIBER_RFLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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

void rfl_hist_init(rfl_hist *h);
/* The bucket of value v, and the highest value that bucket holds. */
unsigned rfl_hist_index(uint64_t v);
uint64_t rfl_hist_bucket_top(unsigned index);
void rfl_hist_record(rfl_hist *h, uint64_t v);
/* Add every count of src into dst. */
void rfl_hist_merge(rfl_hist *dst, const rfl_hist *src);
/* The value at percentile p (0 < p <= 100): the top of the bucket holding
 * the ceil(p/100 * total)-th smallest value, capped at the exact maximum
 * (0 when empty). */
uint64_t rfl_hist_percentile(const rfl_hist *h, double p);
double rfl_hist_mean(const rfl_hist *h);
double rfl_hist_stddev(const rfl_hist *h);

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
size_t rfl_hist_encode(const rfl_hist *h, uint8_t *buf, size_t cap);
int rfl_hist_decode_add(rfl_hist *h, const uint8_t *buf, size_t len);
/* The percentile spectrum as HdrHistogram reports it: fn(arg, percentile,
 * the value there (its bucket's top), the count up to it) at each
 * reporting level (5 per halving of the distance to 100%), then at 100. */
void rfl_hist_spectrum(const rfl_hist *h,
                       void (*fn)(void *arg, double pct, uint64_t value,
                                  uint64_t cum),
                       void *arg);
/* The percentile distribution in HdrHistogram's .hgrm text (values divided
 * by unit_ratio: 1e6 prints nanoseconds as milliseconds). 0 or -EIO. */
int rfl_hist_write_hgrm(const rfl_hist *h, FILE *out, double unit_ratio);
/* HdrHistogram's interval log (format 1.3): the header, then a line per
 * interval: start and length in seconds, the interval's maximum divided by
 * max_unit_ratio, and the histogram compressed (zlib) in base64. 0, -EIO
 * or -ENOMEM. rfl_hist_log_decode adds such a line's last field into h. */
int rfl_hist_log_header(FILE *out, const char *comment, double start_epoch_s);
int rfl_hist_log_interval(FILE *out, const rfl_hist *h, double start_s,
                          double length_s, double max_unit_ratio);
int rfl_hist_log_decode(const char *b64, size_t len, rfl_hist *h);

/* ------------------------------------------------------------------------ */
/* HTTP/1.1 response parser                                                 */
/* ------------------------------------------------------------------------ */

/*
 * An incremental parser for one response at a time. The caller hands it
 * the bytes received so far; it consumes what it can. The head (status
 * line and headers) must arrive whole in the buffer it is given (the
 * caller's buffer bounds its size); the body is skipped without being
 * kept, whatever its length.
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

void rfl_http_init(rfl_http *p);
/* Returns RFL_HTTP_DONE, RFL_HTTP_MORE or -EPROTO (malformed, or a
 * response whose end cannot be known without the connection closing).
 * *used: the bytes of data that were consumed. */
int rfl_http_parse(rfl_http *p, const char *data, size_t len, size_t *used);

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
    uint64_t total_ns; /* 0: open-ended (a constant rate without -d) */
    bool sweep;        /* steps or a ramp: reported step by step */
} rfl_schedule;

/*
 * Parse --rate: "R" (R requests/s for default_ns, 0: until the run ends),
 * "A..B/T" (a linear ramp from A to B over T, reported in steps of one
 * second, at most 64), or "R1,R2,...@T" (each rate for T). Returns 0, or
 * -1 with what is wrong in why.
 */
int rfl_schedule_parse(const char *s, uint64_t default_ns, rfl_schedule *out,
                       char *why, size_t whylen);
/* The step holding offset t (ns from the start): nsteps past the end. */
unsigned rfl_schedule_step(const rfl_schedule *s, uint64_t t);
/* The rate asked at offset t (0 past the end), and a step's mean rate. */
double rfl_schedule_rate(const rfl_schedule *s, uint64_t t);
double rfl_schedule_target(const rfl_schedule *s, unsigned step);
uint64_t rfl_schedule_step_start(const rfl_schedule *s, unsigned step);

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

void rfl_slots_init(rfl_slots *sl, const rfl_schedule *s, unsigned k,
                    unsigned n);
uint64_t rfl_slots_next(rfl_slots *sl);

/* ------------------------------------------------------------------------ */
/* The run                                                                  */
/* ------------------------------------------------------------------------ */

enum rfl_proto { RFL_HTTP, RFL_ECHO };

/* One request of the mix, as it goes on the wire: head and body in one
 * buffer, built once before the run. */
typedef struct rfl_request {
    char *bytes;        /* len bytes, then a NUL that is not sent */
    size_t len;
    unsigned weight;    /* its share: weight / the sum of the weights */
    bool no_body;       /* HEAD: its answer has no body */
    char label[96];     /* "METHOD PATH" (cut), for the reports */
} rfl_request;

#define RFL_MAX_REQUESTS 64   /* entries in a request file */
#define RFL_MAX_HEADERS 64    /* -H options; headers of one entry */
#define RFL_MAX_BODY (64u << 20)
#define RFL_MAX_WEIGHT 1000000u

typedef struct rfl_config {
    enum rfl_proto proto;
    char host[64];          /* numeric address to connect to */
    uint16_t port;
    char path[1024];        /* HTTP: the request path */
    char host_header[256];  /* HTTP: the Host header */
    unsigned connections;
    unsigned threads;
    uint64_t duration_ns;   /* 0: until the request count is reached */
    uint64_t requests;      /* 0: until the duration is over */
    double rate;            /* open loop: the first step's rate (requests
                             * per second in all); 0: closed loop */
    rfl_schedule sched;     /* open loop: the whole schedule */
    uint64_t slo_p99_ns;    /* a sweep's latency limit for its knee; 0: none */
    const char *hgrm;       /* --hgrm FILE */
    const char *interval_log; /* --interval-log FILE */
    const char *plot;       /* --plot FILE.svg or .png */
    uint64_t timeout_ns;    /* one request's limit */
    size_t size;            /* echo: message size */
    const char *json;       /* NULL, "-" (stdout) or a file name */
    bool progress;          /* a line a second on stderr */
    const char *url;        /* as given, for the reports */
    /* HTTP: what is sent (-m, -H, --body, --body-file, --request-file);
     * the strings point into argv. */
    const char *method;     /* NULL: GET */
    const char *headers[RFL_MAX_HEADERS];
    unsigned nheaders;
    const char *body;       /* --body, as given */
    const char *body_file;
    const char *request_file;
    bool new_connection;    /* a connection per request */
    int expect_status;      /* 0: any */
    int64_t expect_body_bytes; /* -1: any */
    /* The requests, built from the above by rfl_parse_args (HTTP only),
     * sent in proportion to their weights; owned by the
     * config: rfl_config_free releases them. */
    rfl_request *mix;
    unsigned nmix;
} rfl_config;

/* Most --threads. */
#define RFL_MAX_THREADS 256

typedef struct rfl_result {
    rfl_hist hist;          /* latencies in ns: every loop's, merged by
                             * adding their buckets (rfl_hist_merge) */
    uint64_t completed;     /* requests answered (any status) */
    uint64_t status_2xx;
    uint64_t status_other;  /* HTTP answers with a status outside 2xx */
    uint64_t err_connect;
    uint64_t err_read;      /* reset, early close, unparseable answer */
    uint64_t err_write;
    uint64_t err_timeout;
    uint64_t err_mismatch;  /* echo: bytes that came back differ */
    uint64_t bad_status;    /* --expect-status: answers with another status */
    uint64_t bad_body;      /* --expect-body-bytes: bodies of another size */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t connects;      /* connections opened */
    uint64_t late;          /* open loop: sends that left after their time */
    double elapsed_s;       /* the measured interval */
    unsigned loops;         /* --threads: each loop's share below */
    struct {
        uint64_t completed;
        double elapsed_s;
    } per_loop[RFL_MAX_THREADS];
    uint64_t per_request[RFL_MAX_REQUESTS]; /* answers to each of the mix */
    double start_epoch_s;   /* the run's start, wall clock */
    /* A sweep (--rate with steps or a ramp): each step's figures. */
    unsigned nsteps;
    struct rfl_step_result {
        rfl_hist *hist;     /* latencies of the requests due in the step
                             * (owned; NULL: none answered) */
        uint64_t completed; /* answers that arrived during the step */
        uint64_t errors;    /* failed requests due in the step */
    } steps[RFL_MAX_STEPS];
    /* --interval-log: the run's seconds, each a histogram of the answers
     * that arrived in it (owned). */
    struct rfl_interval {
        uint8_t *enc;       /* rfl_hist_encode's bytes */
        size_t len;
        uint64_t max;       /* the exact maximum */
    } *intervals;
    size_t nintervals;
} rfl_result;

/* --plot: whether gnuplot is on the PATH; draw cfg->plot (the percentile
 * spectrum, and for a sweep p99 against the rate with the knee). 0, or -1
 * after saying why on err. */
bool rfl_have_gnuplot(void);
int rfl_plot(const rfl_config *cfg, const rfl_result *res, FILE *err);

/* Release what rfl_run allocated in *res (not res itself). */
void rfl_result_release(rfl_result *res);
/* A sweep's knee: the last step before the first one whose achieved rate
 * is under 99% of its target or whose p99 is over --slo-p99; -1 if the
 * first already is. */
int rfl_knee(const rfl_config *cfg, const rfl_result *res);

/*
 * Parse the command line into *cfg. Returns 0, 1 when help or the version
 * was asked for (printed to out), or -1 after printing "rfload: <what is
 * wrong>" and a hint to err. Whatever it returns, rfl_config_free(cfg)
 * releases what it built.
 */
int rfl_parse_args(int argc, char **argv, rfl_config *cfg, FILE *out,
                   FILE *err);
void rfl_config_free(rfl_config *cfg);

/* Print "rfload: <message>" and the --help hint to err; returns -1. */
int rfl_bad(FILE *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Build cfg->mix (HTTP): from cfg->request_file if given, else one
 * request from -m, -H and --body/--body-file. Called by rfl_parse_args.
 * Returns 0 or -1 after printing what is wrong (a request file's errors
 * name the file and the line) to err.
 */
int rfl_requests_build(rfl_config *cfg, FILE *err);

/*
 * The request file: one entry per "request [WEIGHT]" line, then lines of
 * "KEY VALUE" that describe it, until the next "request" line:
 *   method METHOD      default -m's, else GET
 *   path /PATH         default the URL's path
 *   header Name: value repeatable; -H headers are added to every entry
 *   body TEXT          one line; \n \r \t \\ and \xHH stand for bytes
 *   body-file FILE     the body is FILE's bytes (relative to the request
 *                      file's folder)
 * Blank lines and lines starting with # are skipped.
 */

/* Run the load described by cfg; *res receives the figures. Returns 0 or a
 * negative errno (the first connections could not be opened, or the loop
 * could not be started), with a message on stderr. */
int rfl_run(const rfl_config *cfg, rfl_result *res);

/* The summary, as text, and as a JSON object. */
void rfl_report_text(const rfl_config *cfg, const rfl_result *res, FILE *out);
void rfl_report_json(const rfl_config *cfg, const rfl_result *res, FILE *out);

/* The whole program: 0 success, 1 run failure, 2 bad arguments. */
int rfl_main(int argc, char **argv);

#endif
