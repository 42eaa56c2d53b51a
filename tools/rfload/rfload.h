/*
 * rfload: a load generator for TCP echo and HTTP/1.1 servers, built on
 * ringfiber-load (include/ringfiber_load.h: the histogram, the HTTP
 * reader, the schedule, the driver; hist.c, http.c, schedule.c, load.c).
 * This header is the tool's own interface, shared by its files and by
 * tests/test_rfload.c; it is not installed.
 *
 *   request.c the requests sent: from the command line or a request file
 *   plot.c    --plot: gnuplot draws the spectrum and a sweep
 *   rfload.c  the command line, the HTTP and echo protocols, the reports
 *   main.c    main()
 */
#ifndef RINGFIBER_RFLOAD_H
#define RINGFIBER_RFLOAD_H

#include <ringfiber_load.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* rfload's counters (rfl_conn_count): HTTP statuses, --expect-* misses,
 * and the answers to each entry of the mix. */
enum {
    RFL_C_2XX,
    RFL_C_OTHER,        /* a status outside 2xx */
    RFL_C_BAD_STATUS,   /* --expect-status missed */
    RFL_C_BAD_BODY,     /* --expect-body-bytes missed */
    RFL_C_MIX,          /* + entry: answers to that entry */
};

/* ------------------------------------------------------------------------ */
/* The run                                                                  */
/* ------------------------------------------------------------------------ */

enum rfl_kind { RFL_HTTP, RFL_ECHO };

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
    enum rfl_kind proto;
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

/* --plot: whether gnuplot is on the PATH; draw cfg->plot (the percentile
 * spectrum, and for a sweep p99 against the rate with the knee). 0, or -1
 * after saying why on err. */
bool rfl_have_gnuplot(void);
int rfl_plot(const rfl_config *cfg, const rfl_result *res, FILE *err);

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

/* Run the load described by cfg on ringfiber-load's driver (rfl_load):
 * rfl_result_release frees what *res holds. Returns 0 or a
 * negative errno (the first connections could not be opened, or the loop
 * could not be started), with a message on stderr. */
int rfl_run(const rfl_config *cfg, rfl_result *res);

/* The summary, as text, and as a JSON object. */
void rfl_report_text(const rfl_config *cfg, const rfl_result *res, FILE *out);
void rfl_report_json(const rfl_config *cfg, const rfl_result *res, FILE *out);

/* The whole program: 0 success, 1 run failure, 2 bad arguments. */
int rfl_main(int argc, char **argv);

#endif
