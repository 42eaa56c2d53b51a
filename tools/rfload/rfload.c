/*
 * rfload: the command line, the two protocols and the reports.
 *
 * The run itself is ringfiber-load's driver (load.c: a task per
 * connection on a group of loops, closed or open loop, the figures merged
 * exactly); rfload adds what is HTTP's and echo's: the requests (built by
 * request.c from the command line or a request file), reading and checking
 * the answers (HTTP statuses, --expect-*, the echo's bytes), and the
 * reports: the text summary, the JSON, a sweep's table and knee, the
 * HdrHistogram files and the plot (plot.c).
 */
#include "rfload.h"

#include <ringfiber.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

enum {
    IN_SIZE = 16384,        /* HTTP: the largest response head */
    MAX_CONNECTIONS = 100000,
    MAX_THREADS = RFL_MAX_THREADS,
    MAX_SIZE = 16 << 20,    /* echo: the largest message */
    CONNECT_RETRIES = 100,  /* consecutive failed reconnects before a
                             * connection gives up */
};

/* ------------------------------------------------------------------------ */
/* Command line                                                             */
/* ------------------------------------------------------------------------ */

static const char USAGE[] =
    "usage: rfload [options] URL\n"
    "  URL is http://HOST:PORT/PATH (HTTP/1.1 keep-alive, GET unless -m) or\n"
    "  echo://HOST:PORT (send a message, expect it back); HOST is numeric\n"
    "  (127.0.0.1, ::1 in brackets) or localhost.\n"
    "options:\n"
    "  -c, --connections N   connections kept open (default 10)\n"
    "  -d, --duration TIME   length of the run: 10, 10s, 500ms, 2m\n"
    "                        (default 10s unless --requests is given)\n"
    "  -n, --requests N      stop after N requests in all\n"
    "  -R, --rate R          open loop: R requests/s in all, on a fixed\n"
    "                        schedule, latency from the intended send time;\n"
    "                        without it: closed loop (as fast as answered).\n"
    "                        A sweep: a ramp FROM..TO/TIME (1000..20000/10s,\n"
    "                        a step a second) or steps R1,R2,...@TIME\n"
    "                        (1000,2000,5000@5s): a row per step, the knee\n"
    "      --slo-p99 TIME    a sweep's knee: the last step whose rate is\n"
    "                        within 1% of its target and p99 within TIME\n"
    "  -t, --threads T       T loops on T threads (default 1)\n"
    "      --timeout TIME    a request's limit (default 2s; 0: none)\n"
    "      --host NAME       HTTP: the Host header (default HOST:PORT)\n"
    "  -m, --method METHOD   HTTP: the method (default GET)\n"
    "  -H, --header 'N: V'   HTTP: add a header to every request\n"
    "                        (repeatable; Content-Length is rfload's)\n"
    "      --body STRING     HTTP: send STRING as each request's body\n"
    "      --body-file FILE  HTTP: send FILE's bytes as the body\n"
    "      --request-file F  HTTP: a mix of weighted requests, one entry\n"
    "                        per 'request [WEIGHT]' line, then 'method',\n"
    "                        'path', 'header', 'body' or 'body-file'\n"
    "                        lines (man rfload: REQUEST FILE)\n"
    "      --new-connection  HTTP: a new connection for every request\n"
    "                        (Connection: close; latency includes the\n"
    "                        connect)\n"
    "      --expect-status N HTTP: count answers with another status\n"
    "      --expect-body-bytes N  HTTP: count bodies of another length\n"
    "  -s, --size BYTES      echo: the message size (default 64)\n"
    "      --json FILE       also write the results as JSON to FILE (- for\n"
    "                        stdout: the text summary then goes to stderr)\n"
    "      --hgrm FILE       the latency distribution in HdrHistogram's\n"
    "                        .hgrm text (milliseconds)\n"
    "      --interval-log FILE  a histogram per second in HdrHistogram's\n"
    "                        interval log format (values in ns)\n"
    "      --plot FILE       draw the percentile spectrum (and a sweep's p99\n"
    "                        against its rate) with gnuplot: .svg or .png\n"
    "  -q, --quiet           no progress line on stderr\n"
    "  -V, --version         rfload's version (ringfiber's)\n"
    "  -h, --help            this text\n";

int rfl_bad(FILE *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("rfload: ", err);
    vfprintf(err, fmt, ap);
    fputs("\n(rfload --help lists the options)\n", err);
    va_end(ap);
    return -1;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s == '-' || *s == '\0')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Split "scheme://host:port/path" into cfg. */
static int parse_url(const char *url, rfl_config *cfg, FILE *err)
{
    const char *rest;
    if (!strncmp(url, "http://", 7)) {
        cfg->proto = RFL_HTTP;
        rest = url + 7;
    } else if (!strncmp(url, "echo://", 7)) {
        cfg->proto = RFL_ECHO;
        rest = url + 7;
    } else if (!strncmp(url, "https://", 8)) {
        return rfl_bad(err, "https is not supported: %s", url);
    } else {
        return rfl_bad(err, "the URL must start with http:// or echo://: %s", url);
    }
    const char *hs = rest, *he;
    const char *colon;
    if (*hs == '[') {
        he = strchr(hs, ']');
        if (!he)
            return rfl_bad(err, "unterminated [ in %s", url);
        hs++;
        colon = he + 1;
    } else {
        he = hs + strcspn(hs, ":/");
        colon = he;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= sizeof cfg->host)
        return rfl_bad(err, "no host, or too long a host, in %s", url);
    memcpy(cfg->host, hs, hl);
    cfg->host[hl] = '\0';
    if (*colon != ':')
        return rfl_bad(err, "the URL needs a port (HOST:PORT): %s", url);
    const char *ps = colon + 1;
    size_t pl = strcspn(ps, "/");
    char port[8];
    uint64_t p;
    if (pl == 0 || pl >= sizeof port)
        return rfl_bad(err, "bad port in %s", url);
    memcpy(port, ps, pl);
    port[pl] = '\0';
    if (!parse_u64(port, &p) || p == 0 || p > 65535)
        return rfl_bad(err, "bad port '%s' (1..65535) in %s", port, url);
    cfg->port = (uint16_t)p;
    const char *path = ps + pl;
    if (cfg->proto == RFL_ECHO && *path && strcmp(path, "/"))
        return rfl_bad(err, "an echo:// URL has no path: %s", url);
    if (!*path)
        path = "/";
    if (strlen(path) >= sizeof cfg->path)
        return rfl_bad(err, "the path is too long (at most %zu bytes)",
                   sizeof cfg->path - 1);
    for (const char *c = path; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return rfl_bad(err, "the path may not hold spaces or control "
                            "characters: %s", url);
    strcpy(cfg->path, path);
    struct sockaddr_storage ss;
    socklen_t sl;
    if (rf_addr_parse(cfg->host, cfg->port, &ss, &sl) != 0)
        return rfl_bad(err, "'%s' is not a numeric address (names are not "
                        "resolved; use 127.0.0.1, [::1] or localhost)",
                   cfg->host);
    snprintf(cfg->host_header, sizeof cfg->host_header, "%s%s%s:%u",
             strchr(cfg->host, ':') ? "[" : "", cfg->host,
             strchr(cfg->host, ':') ? "]" : "", cfg->port);
    return 0;
}

int rfl_parse_args(int argc, char **argv, rfl_config *cfg, FILE *out,
                   FILE *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->connections = 10;
    cfg->threads = 1;
    cfg->timeout_ns = 2 * RF_NSEC_PER_SEC;
    cfg->size = 64;
    cfg->progress = true;
    cfg->expect_body_bytes = -1;
    bool have_duration = false, have_size = false;
    const char *host_header = NULL;
    const char *http_only = NULL; /* an HTTP option given, for the message */
    const char *rate = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            if (cfg->url)
                return rfl_bad(err, "one URL only (got %s and %s)", cfg->url, a);
            cfg->url = a;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, out);
            return 1;
        }
        if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            fprintf(out, "rfload %d.%d.%d (ringfiber)\n",
                    RINGFIBER_VERSION_MAJOR, RINGFIBER_VERSION_MINOR,
                    RINGFIBER_VERSION_PATCH);
            return 1;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cfg->progress = false;
            continue;
        }
        if (!strcmp(a, "--new-connection")) {
            cfg->new_connection = true;
            http_only = a;
            continue;
        }
        /* Options with a value: "--opt V", "--opt=V". */
        static const char *const names[][2] = {
            {"-c", "--connections"}, {"-d", "--duration"},
            {"-n", "--requests"},    {"-R", "--rate"},
            {"-t", "--threads"},     {"", "--timeout"},
            {"", "--host"},          {"-s", "--size"},
            {"", "--json"},          {"-m", "--method"},
            {"-H", "--header"},      {"", "--body"},
            {"", "--body-file"},     {"", "--request-file"},
            {"", "--expect-status"}, {"", "--expect-body-bytes"},
            {"", "--slo-p99"},       {"", "--hgrm"},
            {"", "--interval-log"},  {"", "--plot"},
        };
        const char *val = NULL;
        int which = -1;
        for (int k = 0; k < (int)(sizeof names / sizeof names[0]); k++) {
            size_t ln = strlen(names[k][1]);
            if ((names[k][0][0] && !strcmp(a, names[k][0])) ||
                !strcmp(a, names[k][1])) {
                if (i + 1 >= argc)
                    return rfl_bad(err, "%s needs a value", a);
                val = argv[++i];
                which = k;
                break;
            }
            if (!strncmp(a, names[k][1], ln) && a[ln] == '=') {
                val = a + ln + 1;
                which = k;
                break;
            }
        }
        if (which < 0)
            return rfl_bad(err, "unknown option %s", a);
        uint64_t u;
        switch (which) {
        case 0:
            if (!parse_u64(val, &u) || u < 1 || u > MAX_CONNECTIONS)
                return rfl_bad(err, "--connections must be 1..%d, not '%s'",
                           MAX_CONNECTIONS, val);
            cfg->connections = (unsigned)u;
            break;
        case 1:
            if (!rfl_parse_time(val, &cfg->duration_ns) || cfg->duration_ns == 0)
                return rfl_bad(err, "--duration must be a positive time (10, "
                                "10s, 500ms, 2m), not '%s'", val);
            have_duration = true;
            break;
        case 2:
            if (!parse_u64(val, &cfg->requests) || cfg->requests == 0)
                return rfl_bad(err, "--requests must be a positive count, not "
                                "'%s'", val);
            break;
        case 3:
            rate = val; /* parsed once the duration is known */
            break;
        case 4:
            if (!parse_u64(val, &u) || u < 1 || u > MAX_THREADS)
                return rfl_bad(err, "--threads must be 1..%d, not '%s'",
                           MAX_THREADS, val);
            cfg->threads = (unsigned)u;
            break;
        case 5:
            if (!rfl_parse_time(val, &cfg->timeout_ns))
                return rfl_bad(err, "--timeout must be a time (2s, 500ms; 0 "
                                "for none), not '%s'", val);
            break;
        case 6:
            if (!*val || strlen(val) >= sizeof cfg->host_header ||
                strpbrk(val, "\r\n"))
                return rfl_bad(err, "--host must be a non-empty name on one "
                                "line, under %zu bytes",
                           sizeof cfg->host_header);
            host_header = val;
            break;
        case 7:
            if (!parse_u64(val, &u) || u < 1 || u > MAX_SIZE)
                return rfl_bad(err, "--size must be 1..%d bytes, not '%s'",
                           MAX_SIZE, val);
            cfg->size = (size_t)u;
            have_size = true;
            break;
        case 8:
            if (!*val)
                return rfl_bad(err, "--json needs a file name (or -)");
            cfg->json = val;
            break;
        case 9:
            cfg->method = val; /* checked with the requests */
            break;
        case 10:
            if (cfg->nheaders == RFL_MAX_HEADERS)
                return rfl_bad(err, "at most %d -H options", RFL_MAX_HEADERS);
            cfg->headers[cfg->nheaders++] = val;
            break;
        case 11:
            cfg->body = val;
            break;
        case 12:
            if (!*val)
                return rfl_bad(err, "--body-file needs a file name");
            cfg->body_file = val;
            break;
        case 13:
            if (!*val)
                return rfl_bad(err, "--request-file needs a file name");
            cfg->request_file = val;
            break;
        case 14:
            if (!parse_u64(val, &u) || u < 100 || u > 599)
                return rfl_bad(err, "--expect-status must be 100..599, not "
                                    "'%s'", val);
            cfg->expect_status = (int)u;
            break;
        case 15:
            if (!parse_u64(val, &u) || u > INT64_MAX)
                return rfl_bad(err, "--expect-body-bytes must be a byte "
                                    "count, not '%s'", val);
            cfg->expect_body_bytes = (int64_t)u;
            break;
        case 16:
            if (!rfl_parse_time(val, &cfg->slo_p99_ns) || cfg->slo_p99_ns == 0)
                return rfl_bad(err, "--slo-p99 must be a positive time "
                                    "(5ms, 250us), not '%s'", val);
            break;
        case 17:
        case 18:
        case 19:
            if (!*val)
                return rfl_bad(err, "%s needs a file name", names[which][1]);
            *(which == 17   ? &cfg->hgrm
              : which == 18 ? &cfg->interval_log
                            : &cfg->plot) = val;
            break;
        }
        if (which >= 9 && which <= 15)
            http_only = names[which][1];
    }
    if (!cfg->url)
        return rfl_bad(err, "no URL given (http://HOST:PORT/PATH or "
                        "echo://HOST:PORT)");
    if (parse_url(cfg->url, cfg, err) != 0)
        return -1;
    if (cfg->proto == RFL_HTTP && have_size)
        return rfl_bad(err, "--size applies to echo:// targets only");
    if (cfg->proto == RFL_ECHO && host_header)
        return rfl_bad(err, "--host applies to http:// targets only");
    if (cfg->proto == RFL_ECHO && http_only)
        return rfl_bad(err, "%s applies to http:// targets only", http_only);
    if ((cfg->body != NULL) + (cfg->body_file != NULL) +
            (cfg->request_file != NULL) > 1)
        return rfl_bad(err, "--body, --body-file and --request-file exclude "
                            "each other (a request file gives each entry "
                            "its body)");
    if (host_header)
        strcpy(cfg->host_header, host_header);
    if (cfg->threads > cfg->connections)
        return rfl_bad(err, "--threads (%u) may not exceed --connections (%u)",
                   cfg->threads, cfg->connections);
    if (rate) {
        char why[160];
        if (rfl_schedule_parse(rate, 0, &cfg->sched, why, sizeof why) != 0)
            return rfl_bad(err, "--rate: %s; not '%s'", why, rate);
        if (cfg->sched.sweep && have_duration)
            return rfl_bad(err, "a sweep (--rate %s) sets the run's length: "
                                "leave out --duration", rate);
        if (cfg->sched.sweep)
            cfg->duration_ns = cfg->sched.total_ns;
        cfg->rate = cfg->sched.steps[0].from;
    }
    if (cfg->slo_p99_ns && !cfg->sched.sweep)
        return rfl_bad(err, "--slo-p99 applies to a sweep (--rate with steps "
                            "or a ramp)");
    if (!have_duration && cfg->requests == 0 && !cfg->sched.sweep)
        cfg->duration_ns = 10 * RF_NSEC_PER_SEC;
    if (rate && !cfg->sched.sweep) {
        /* The constant rate lasts the run. */
        cfg->sched.steps[0].ns = cfg->duration_ns ? cfg->duration_ns
                                                  : UINT64_MAX;
        cfg->sched.total_ns = cfg->duration_ns;
    }
    for (unsigned j = 0; j < cfg->sched.nsteps; j++) {
        /* A connection keeps one request in flight: a rate whose share
         * per connection is over a million a second means nothing. */
        const rfl_step *st = &cfg->sched.steps[j];
        double peak = st->from > st->to ? st->from : st->to;
        if (cfg->connections * 1e9 / peak < 1000)
            return rfl_bad(err, "--rate %.0f over %u connections is more than "
                                "1,000,000 requests/s per connection: add "
                                "connections", peak, cfg->connections);
    }
    if (cfg->plot) {
        size_t pl = strlen(cfg->plot);
        if (pl < 5 || (strcmp(cfg->plot + pl - 4, ".svg") &&
                       strcmp(cfg->plot + pl - 4, ".png")))
            return rfl_bad(err, "--plot draws .svg or .png files, not '%s'",
                           cfg->plot);
        if (!rfl_have_gnuplot())
            return rfl_bad(err, "--plot needs gnuplot (apt-get install "
                                "gnuplot-nox)");
    }
    if (cfg->proto == RFL_HTTP && rfl_requests_build(cfg, err) != 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The protocols, on ringfiber-load's driver                                */
/* ------------------------------------------------------------------------ */

/* Per connection: the HTTP answer buffer and the mix's smooth weighted
 * round robin; echo's message and answer and its count. */
typedef struct conn_state {
    char *in;
    uint64_t seq;
    char *out;
    int64_t wrr[RFL_MAX_REQUESTS];
} conn_state;

static int proto_start(void *arg, rfl_conn *c)
{
    const rfl_config *cfg = arg;
    conn_state *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    c->user = st;
    size_t in = cfg->proto == RFL_HTTP ? IN_SIZE : cfg->size;
    st->in = malloc(in);
    st->out = cfg->proto == RFL_ECHO ? malloc(cfg->size) : NULL;
    if (!st->in || (cfg->proto == RFL_ECHO && !st->out))
        return -ENOMEM; /* proto_stop frees what there is */
    return 0;
}

static void proto_stop(void *arg, rfl_conn *c)
{
    (void)arg;
    conn_state *st = c->user;
    if (st) {
        free(st->in);
        free(st->out);
        free(st);
        c->user = NULL;
    }
}

/* The next request of the mix: each entry is picked weight times in every
 * run of (sum of the weights) picks, spread evenly (nginx's smooth
 * weighted round robin), per connection. */
static unsigned pick_request(const rfl_config *cfg, conn_state *st)
{
    if (cfg->nmix <= 1)
        return 0;
    int64_t total = 0;
    unsigned best = 0;
    for (unsigned i = 0; i < cfg->nmix; i++) {
        st->wrr[i] += cfg->mix[i].weight;
        total += cfg->mix[i].weight;
        if (st->wrr[i] > st->wrr[best])
            best = i;
    }
    st->wrr[best] -= total;
    return best;
}

/* One HTTP request of the mix and its answer: RFL_ANSWER(_CLOSE), or
 * -EPROTO (unparseable), -ECONNRESET (closed early), the send or receive
 * error. The status, the --expect-* checks and the entry are counted. */
static int http_exchange(void *arg, rfl_conn *c)
{
    const rfl_config *cfg = arg;
    conn_state *st = c->user;
    unsigned k = pick_request(cfg, st);
    const rfl_request *rq = &cfg->mix[k];
    ssize_t sent = rf_send_all(c->fd, rq->bytes, rq->len, 0, NULL);
    if (sent < 0)
        return (int)sent;
    rfl_conn_sent(c, rq->len);
    rfl_http p;
    rfl_http_init(&p);
    p.no_body = rq->no_body;
    size_t len = 0;
    for (;;) {
        ssize_t n = rf_recv(c->fd, st->in + len, IN_SIZE - len, 0);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -ECONNRESET;
        rfl_conn_received(c, (uint64_t)n);
        len += (size_t)n;
        size_t used;
        int rc = rfl_http_parse(&p, st->in, len, &used);
        if (rc < 0)
            return rc;
        if (rc == RFL_HTTP_DONE) {
            /* One request in flight: nothing may follow the answer. */
            if (used != len)
                return -EPROTO;
            break;
        }
        memmove(st->in, st->in + used, len - used);
        len -= used;
        if (len == IN_SIZE)
            return -EPROTO; /* a head larger than the buffer */
    }
    if (cfg->new_connection) {
        /* Wait for the server's close (it was asked to): the side that
         * closes first keeps the TIME_WAIT, and a client that did would
         * run out of ports at some hundreds of connections per second.
         * The latency ends with the answer, before this wait. */
        rfl_conn_answered(c);
        ssize_t n = rf_recv(c->fd, st->in, IN_SIZE, 0);
        if (n < 0)
            return (int)n; /* it did not close: a timeout, counted */
        if (n > 0)
            return -EPROTO; /* more than the answer */
    }
    rfl_conn_count(c, p.status >= 200 && p.status < 300 ? RFL_C_2XX
                                                         : RFL_C_OTHER, 1);
    rfl_conn_count(c, RFL_C_MIX + k, 1);
    if (cfg->expect_status && p.status != cfg->expect_status)
        rfl_conn_count(c, RFL_C_BAD_STATUS, 1);
    if (cfg->expect_body_bytes >= 0 &&
        p.body_bytes != (uint64_t)cfg->expect_body_bytes)
        rfl_conn_count(c, RFL_C_BAD_BODY, 1);
    return p.close || cfg->new_connection ? RFL_ANSWER_CLOSE : RFL_ANSWER;
}

/* One echo: RFL_ANSWER, RFL_ANSWER_BAD (other bytes came back), or the
 * send or receive error. */
static int echo_exchange(void *arg, rfl_conn *c)
{
    const rfl_config *cfg = arg;
    conn_state *st = c->user;
    size_t size = cfg->size;
    /* Bytes that differ from one request to the next, so that an answer
     * to an earlier request cannot pass for this one's. */
    uint64_t s = ++st->seq * 0x9E3779B97F4A7C15ull + c->index;
    for (size_t i = 0; i < size; i += 8) {
        uint64_t v = s + i;
        memcpy(st->out + i, &v, size - i < 8 ? size - i : 8);
    }
    ssize_t sent = rf_send_all(c->fd, st->out, size, 0, NULL);
    if (sent < 0)
        return (int)sent;
    rfl_conn_sent(c, size);
    size_t got = 0;
    while (got < size) {
        ssize_t n = rf_recv(c->fd, st->in + got, size - got, 0);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -ECONNRESET;
        got += (size_t)n;
        rfl_conn_received(c, (uint64_t)n);
    }
    return memcmp(st->in, st->out, size) ? RFL_ANSWER_BAD : RFL_ANSWER;
}

static const rfl_proto HTTP_PROTO = {proto_start, http_exchange, proto_stop};
static const rfl_proto ECHO_PROTO = {proto_start, echo_exchange, proto_stop};

int rfl_run(const rfl_config *cfg, rfl_result *res)
{
    if (cfg->proto == RFL_HTTP && cfg->nmix == 0)
        return -EINVAL; /* rfl_parse_args builds the requests */
    rfl_load_opts o = {
        .host = cfg->host,
        .port = cfg->port,
        .connections = cfg->connections,
        .threads = cfg->threads,
        .duration_ns = cfg->duration_ns,
        .requests = cfg->requests,
        .rate = cfg->rate > 0 ? &cfg->sched : NULL,
        .timeout_ns = cfg->timeout_ns,
        .new_connection = cfg->new_connection,
        .progress = cfg->progress,
        .intervals = cfg->interval_log != NULL,
        .stack_size = RF_MIN_STACK_SIZE * 2,
        .name = "rfload",
        .proto = cfg->proto == RFL_HTTP ? &HTTP_PROTO : &ECHO_PROTO,
        .arg = (void *)cfg,
    };
    int rc = rfl_load(&o, res);
    if (rc == -ECONNREFUSED || rc == -ENETUNREACH || rc == -EHOSTUNREACH ||
        rc == -ETIMEDOUT || rc == -EADDRNOTAVAIL)
        fprintf(stderr, "rfload: connect to %s:%u: %s\n", cfg->host,
                cfg->port, rf_strerror(rc));
    else if (rc != 0)
        fprintf(stderr, "rfload: %s\n", rf_strerror(rc));
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Reports                                                                  */
/* ------------------------------------------------------------------------ */

static const double PCTS[] = {50, 90, 99, 99.9};
static const char *const PCT_NAMES[] = {"p50", "p90", "p99", "p99.9"};
static const char *const PCT_KEYS[] = {"p50", "p90", "p99", "p99_9"};

static uint64_t errors_of(const rfl_result *r)
{
    return r->err_connect + r->err_read + r->err_write + r->err_timeout +
           r->err_mismatch;
}

static void report_steps(const rfl_config *cfg, const rfl_result *res,
                         FILE *out)
{
    char b[4][32];
    int knee = rfl_knee(&cfg->sched, res, cfg->slo_p99_ns);
    if (cfg->slo_p99_ns) {
        rfl_format_ns(b[0], sizeof b[0], (double)cfg->slo_p99_ns);
        fprintf(out, "  sweep        %u steps; the knee: the last step with "
                     "its rate within 1%% and p99 within %s\n",
                res->nsteps, b[0]);
    } else {
        fprintf(out, "  sweep        %u steps; the knee: the last step with "
                     "its rate within 1%% of the target\n", res->nsteps);
    }
    fprintf(out, "    %4s %12s %12s %10s %10s %10s %10s %8s\n", "step",
            "asked/s", "achieved/s", "p50", "p99", "p99.9", "max", "errors");
    for (unsigned j = 0; j < res->nsteps; j++) {
        const rfl_hist *h = res->steps[j].hist;
        static const double q[] = {50, 99, 99.9};
        for (int k = 0; k < 3; k++)
            rfl_format_ns(b[k], sizeof b[k],
                   h ? (double)rfl_hist_percentile(h, q[k]) : 0);
        rfl_format_ns(b[3], sizeof b[3], h ? (double)h->max : 0);
        fprintf(out, "    %4u %12.1f %12.1f %10s %10s %10s %10s %8" PRIu64
                     "%s\n",
                j + 1, rfl_schedule_target(&cfg->sched, j),
                rfl_step_rate(&cfg->sched, res, j), h ? b[0] : "-", h ? b[1] : "-",
                h ? b[2] : "-", h ? b[3] : "-", res->steps[j].errors,
                (int)j == knee ? "  <- knee" : "");
    }
    if (knee < 0)
        fprintf(out, "    no knee: the first step already missed\n");
}

static double loop_rps(const rfl_result *res, unsigned i)
{
    double s = res->per_loop[i].elapsed_s;
    return s > 0 ? (double)res->per_loop[i].completed / s : 0;
}

void rfl_report_text(const rfl_config *cfg, const rfl_result *res, FILE *out)
{
    char a[32], b[32], c[32];
    double rps = res->elapsed_s > 0 ? res->completed / res->elapsed_s : 0;
    fprintf(out, "rfload %s: %s, %u connection%s, %u thread%s, %.2f s\n",
            cfg->url,
            cfg->rate > 0 ? "open loop" : "closed loop", cfg->connections,
            cfg->connections == 1 ? "" : "s", cfg->threads,
            cfg->threads == 1 ? "" : "s", res->elapsed_s);
    if (cfg->rate > 0 && !cfg->sched.sweep)
        fprintf(out, "  target rate  %.1f req/s, latency from the intended "
                     "send time; %" PRIu64 " sends over 1 ms late\n",
                cfg->rate, res->late);
    else if (cfg->rate > 0)
        fprintf(out, "  target rate  a sweep, latency from the intended send "
                     "time; %" PRIu64 " sends over 1 ms late\n", res->late);
    fprintf(out, "  requests     %" PRIu64 " in %.2f s: %.1f req/s\n",
            res->completed, res->elapsed_s, rps);
    if (res->loops > 1) {
        /* Each loop's rate: an uneven spread shows here. */
        fprintf(out, "  per loop    ");
        for (unsigned i = 0; i < res->loops; i++)
            fprintf(out, " %.1f", loop_rps(res, i));
        fprintf(out, " req/s\n");
    }
    if (cfg->proto == RFL_HTTP)
        fprintf(out, "  status       2xx %" PRIu64 ", non-2xx %" PRIu64 "\n",
                res->counters[RFL_C_2XX], res->counters[RFL_C_OTHER]);
    if (cfg->expect_status)
        fprintf(out, "  expected     status %d: %" PRIu64 " answers had "
                     "another\n", cfg->expect_status, res->counters[RFL_C_BAD_STATUS]);
    if (cfg->expect_body_bytes >= 0)
        fprintf(out, "  expected     body of %" PRId64 " bytes: %" PRIu64
                     " answers had another length\n",
                cfg->expect_body_bytes, res->counters[RFL_C_BAD_BODY]);
    if (cfg->nmix > 1) {
        unsigned wsum = 0;
        for (unsigned i = 0; i < cfg->nmix; i++)
            wsum += cfg->mix[i].weight;
        for (unsigned i = 0; i < cfg->nmix; i++)
            fprintf(out, "  %-12s %" PRIu64 " answered (%.1f%%, weight "
                         "%u/%u): %s\n", i ? "" : "mix", res->counters[RFL_C_MIX + i],
                    res->completed ? 100.0 * (double)res->counters[RFL_C_MIX + i] /
                                         (double)res->completed
                                   : 0.0,
                    cfg->mix[i].weight, wsum, cfg->mix[i].label);
    }
    fprintf(out, "  errors       %" PRIu64 " (connect %" PRIu64 ", read %"
                 PRIu64 ", write %" PRIu64 ", timeout %" PRIu64,
            errors_of(res), res->err_connect, res->err_read, res->err_write,
            res->err_timeout);
    if (cfg->proto == RFL_ECHO)
        fprintf(out, ", mismatch %" PRIu64, res->err_mismatch);
    fprintf(out, ")\n");
    fprintf(out, "  transfer     %.2f MB received, %.2f MB sent, %" PRIu64
                 " connects\n",
            res->bytes_received / 1e6, res->bytes_sent / 1e6, res->connects);
    const rfl_hist *h = &res->hist;
    rfl_format_ns(a, sizeof a, h->total ? (double)h->min : 0);
    rfl_format_ns(b, sizeof b, rfl_hist_mean(h));
    rfl_format_ns(c, sizeof c, rfl_hist_stddev(h));
    fprintf(out, "  latency      min %s  mean %s  stdev %s\n", a, b, c);
    for (unsigned i = 0; i < 4; i++) {
        rfl_format_ns(a, sizeof a, (double)rfl_hist_percentile(h, PCTS[i]));
        fprintf(out, "    %-6s %s\n", PCT_NAMES[i], a);
    }
    rfl_format_ns(a, sizeof a, (double)h->max);
    fprintf(out, "    %-6s %s\n", "max", a);
    if (res->nsteps)
        report_steps(cfg, res, out);
}

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(out, "\\u%04x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

void rfl_report_json(const rfl_config *cfg, const rfl_result *res, FILE *out)
{
    const rfl_hist *h = &res->hist;
    double rps = res->elapsed_s > 0 ? res->completed / res->elapsed_s : 0;
    fprintf(out, "{\n  \"tool\": \"rfload\",\n  \"url\": ");
    json_string(out, cfg->url);
    fprintf(out, ",\n  \"protocol\": \"%s\",\n  \"mode\": \"%s\",\n",
            cfg->proto == RFL_HTTP ? "http" : "echo",
            cfg->rate > 0 ? "open" : "closed");
    fprintf(out, "  \"connections\": %u,\n  \"threads\": %u,\n",
            cfg->connections, cfg->threads);
    if (cfg->rate > 0)
        fprintf(out, "  \"target_rate\": %.3f,\n  \"late_sends\": %" PRIu64
                     ",\n", cfg->rate, res->late);
    else
        fprintf(out, "  \"target_rate\": null,\n");
    fprintf(out, "  \"elapsed_s\": %.6f,\n  \"requests\": %" PRIu64
                 ",\n  \"requests_per_s\": %.3f,\n",
            res->elapsed_s, res->completed, rps);
    fprintf(out, "  \"per_loop\": [");
    for (unsigned i = 0; i < res->loops; i++)
        fprintf(out, "%s{\"requests\": %" PRIu64 ", \"requests_per_s\": %.3f}",
                i ? ", " : "", res->per_loop[i].completed, loop_rps(res, i));
    fprintf(out, "],\n");
    fprintf(out, "  \"status_2xx\": %" PRIu64 ",\n  \"status_other\": %"
                 PRIu64 ",\n", res->counters[RFL_C_2XX], res->counters[RFL_C_OTHER]);
    fprintf(out, "  \"expect\": {\"status\": ");
    if (cfg->expect_status)
        fprintf(out, "%d", cfg->expect_status);
    else
        fprintf(out, "null");
    fprintf(out, ", \"status_mismatches\": %" PRIu64 ", \"body_bytes\": ",
            res->counters[RFL_C_BAD_STATUS]);
    if (cfg->expect_body_bytes >= 0)
        fprintf(out, "%" PRId64, cfg->expect_body_bytes);
    else
        fprintf(out, "null");
    fprintf(out, ", \"body_mismatches\": %" PRIu64 "},\n", res->counters[RFL_C_BAD_BODY]);
    fprintf(out, "  \"new_connection\": %s,\n",
            cfg->new_connection ? "true" : "false");
    fprintf(out, "  \"mix\": [");
    for (unsigned i = 0; i < cfg->nmix; i++) {
        fprintf(out, "%s{\"request\": ", i ? ", " : "");
        json_string(out, cfg->mix[i].label);
        fprintf(out, ", \"weight\": %u, \"answered\": %" PRIu64 "}",
                cfg->mix[i].weight, res->counters[RFL_C_MIX + i]);
    }
    fprintf(out, "],\n");
    fprintf(out, "  \"errors\": {\"total\": %" PRIu64 ", \"connect\": %"
                 PRIu64 ", \"read\": %" PRIu64 ", \"write\": %" PRIu64
                 ", \"timeout\": %" PRIu64 ", \"mismatch\": %" PRIu64 "},\n",
            errors_of(res), res->err_connect, res->err_read, res->err_write,
            res->err_timeout, res->err_mismatch);
    fprintf(out, "  \"bytes_received\": %" PRIu64 ",\n  \"bytes_sent\": %"
                 PRIu64 ",\n  \"connects\": %" PRIu64 ",\n",
            res->bytes_received, res->bytes_sent, res->connects);
    fprintf(out, "  \"latency_ns\": {\"count\": %" PRIu64 ", \"min\": %"
                 PRIu64 ", \"mean\": %.1f, \"stdev\": %.1f",
            h->total, h->total ? h->min : 0, rfl_hist_mean(h),
            rfl_hist_stddev(h));
    for (unsigned i = 0; i < 4; i++)
        fprintf(out, ", \"%s\": %" PRIu64, PCT_KEYS[i],
                rfl_hist_percentile(h, PCTS[i]));
    fprintf(out, ", \"max\": %" PRIu64 "},\n", h->max);
    int knee = rfl_knee(&cfg->sched, res, cfg->slo_p99_ns);
    fprintf(out, "  \"steps\": [");
    for (unsigned j = 0; j < res->nsteps; j++) {
        const rfl_hist *s = res->steps[j].hist;
        fprintf(out, "%s\n    {\"target_rate\": %.3f, \"achieved_rate\": "
                     "%.3f, \"answered\": %" PRIu64 ", \"errors\": %" PRIu64,
                j ? "," : "", rfl_schedule_target(&cfg->sched, j),
                rfl_step_rate(&cfg->sched, res, j), s ? s->total : 0, res->steps[j].errors);
        for (unsigned i = 0; i < 4; i++)
            fprintf(out, ", \"%s\": %" PRIu64, PCT_KEYS[i],
                    s ? rfl_hist_percentile(s, PCTS[i]) : 0);
        fprintf(out, ", \"max\": %" PRIu64 "}", s ? s->max : 0);
    }
    fprintf(out, "%s],\n  \"slo_p99_ns\": ", res->nsteps ? "\n  " : "");
    if (cfg->slo_p99_ns)
        fprintf(out, "%" PRIu64, cfg->slo_p99_ns);
    else
        fprintf(out, "null");
    fprintf(out, ",\n  \"knee\": ");
    if (res->nsteps && knee >= 0)
        fprintf(out, "{\"step\": %d, \"target_rate\": %.3f}\n}\n", knee + 1,
                rfl_schedule_target(&cfg->sched, (unsigned)knee));
    else
        fprintf(out, "null\n}\n");
}

/* --hgrm and --interval-log. 0 or -1 after saying why. */
static int write_histograms(const rfl_config *cfg, const rfl_result *res)
{
    int rc = 0;
    if (cfg->hgrm) {
        FILE *f = fopen(cfg->hgrm, "we");
        if (!f || rfl_hist_write_hgrm(&res->hist, f, 1e6) != 0 ||
            fclose(f) != 0) {
            fprintf(stderr, "rfload: --hgrm %s: %s\n", cfg->hgrm,
                    strerror(errno));
            rc = -1;
        }
    }
    if (cfg->interval_log) {
        FILE *f = fopen(cfg->interval_log, "we");
        char comment[256];
        snprintf(comment, sizeof comment,
                 "Logged with rfload %d.%d.%d, %s; values in nanoseconds, "
                 "Interval_Max in milliseconds",
                 RINGFIBER_VERSION_MAJOR, RINGFIBER_VERSION_MINOR,
                 RINGFIBER_VERSION_PATCH, cfg->url);
        int e = f ? rfl_hist_log_header(f, comment, res->start_epoch_s)
                  : -errno;
        rfl_hist *h = e == 0 ? malloc(sizeof *h) : NULL;
        if (e == 0 && !h)
            e = -ENOMEM;
        for (size_t s = 0; e == 0 && s < res->nintervals; s++) {
            const struct rfl_interval *iv = &res->intervals[s];
            rfl_hist_init(h);
            e = rfl_hist_decode_add(h, iv->enc, iv->len);
            if (h->total)
                h->max = iv->max;
            double len = s + 1 > res->elapsed_s ? res->elapsed_s - (double)s
                                                 : 1.0;
            if (e == 0)
                e = rfl_hist_log_interval(f, h, (double)s, len > 0 ? len : 0,
                                          1e6);
        }
        free(h);
        if (f && fclose(f) != 0 && e == 0)
            e = -errno;
        if (e != 0) {
            fprintf(stderr, "rfload: --interval-log %s: %s\n",
                    cfg->interval_log, strerror(-e));
            rc = -1;
        }
    }
    return rc;
}

int rfl_main(int argc, char **argv)
{
    rfl_config cfg;
    int rc = rfl_parse_args(argc, argv, &cfg, stdout, stderr);
    if (rc != 0) {
        rfl_config_free(&cfg);
        return rc > 0 ? 0 : 2;
    }
    bool json_stdout = cfg.json && !strcmp(cfg.json, "-");
    FILE *json = NULL;
    if (cfg.json && !json_stdout) {
        json = fopen(cfg.json, "w");
        if (!json) {
            fprintf(stderr, "rfload: --json %s: %s\n", cfg.json,
                    strerror(errno));
            rfl_config_free(&cfg);
            return 2;
        }
    }
    rfl_result *res = malloc(sizeof *res);
    if (!res) {
        if (json)
            fclose(json);
        fprintf(stderr, "rfload: out of memory\n");
        rfl_config_free(&cfg);
        return 1;
    }
    rc = rfl_run(&cfg, res);
    if (rc == 0) {
        rfl_report_text(&cfg, res, json_stdout ? stderr : stdout);
        if (json_stdout)
            rfl_report_json(&cfg, res, stdout);
        else if (json)
            rfl_report_json(&cfg, res, json);
    }
    if (json && fclose(json) != 0 && rc == 0) {
        fprintf(stderr, "rfload: --json %s: %s\n", cfg.json, strerror(errno));
        rc = -EIO;
    }
    if (json && rc != 0)
        unlink(cfg.json); /* no half-written or empty results */
    /* The other files last: one that cannot be written (or a plot gnuplot
     * refuses) fails the run's status, not its summary and JSON. */
    int orc = rc == 0 ? write_histograms(&cfg, res) : 0;
    if (rc == 0 && cfg.plot && rfl_plot(&cfg, res, stderr) != 0)
        orc = -1;
    rfl_result_release(res);
    free(res);
    rfl_config_free(&cfg);
    return rc == 0 && orc == 0 ? 0 : 1;
}
