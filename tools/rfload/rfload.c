/*
 * rfload: the command line, the connection tasks and the reports.
 *
 * A group of loops (rf_run_loops: one loop unless --threads), each with its
 * share of the connections, one task per connection, each written as
 * blocking code: send a request, receive the
 * whole answer, record the latency, again. Each task keeps one request in
 * flight, as wrk does.
 *
 * Closed loop: the next request leaves as soon as the answer to the last
 * one is in; latency runs from the send to the end of the answer.
 *
 * Open loop (--rate): every connection has its own schedule, one request
 * every `interval` (connections * 1 s / rate), the connections' schedules
 * staggered evenly across one interval. A request's latency runs from the
 * time it was *meant* to leave, not from when it did: when the server
 * stalls, the requests that should have gone out meanwhile are not
 * silently skipped (coordinated omission, which makes a stall look like
 * one slow request); they go out late, back to back, and each carries its
 * wait. This is what wrk2 does.
 *
 * The end of the run is the deadline of every connection task
 * (rf_deadline_set): a sleep or an operation still waiting then ends with
 * -ETIMEDOUT, and the request it belonged to is not counted. Within the
 * run, the deadline is brought forward to the request's own limit
 * (--timeout) while a request is in flight.
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
    "                        without it: closed loop (as fast as answered)\n"
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

/* "10", "1.5s", "500ms", "250us", "2m" -> ns. */
static bool parse_time(const char *s, uint64_t *ns)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0) || isinf(v))
        return false;
    double mult;
    if (!*end || !strcmp(end, "s"))
        mult = 1e9;
    else if (!strcmp(end, "ms"))
        mult = 1e6;
    else if (!strcmp(end, "us"))
        mult = 1e3;
    else if (!strcmp(end, "m"))
        mult = 60e9;
    else if (!strcmp(end, "h"))
        mult = 3600e9;
    else
        return false;
    if (v * mult > 1e18)
        return false;
    *ns = (uint64_t)llround(v * mult);
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
            if (!parse_time(val, &cfg->duration_ns) || cfg->duration_ns == 0)
                return rfl_bad(err, "--duration must be a positive time (10, "
                                "10s, 500ms, 2m), not '%s'", val);
            have_duration = true;
            break;
        case 2:
            if (!parse_u64(val, &cfg->requests) || cfg->requests == 0)
                return rfl_bad(err, "--requests must be a positive count, not "
                                "'%s'", val);
            break;
        case 3: {
            char *end;
            errno = 0;
            double r = strtod(val, &end);
            if (errno || end == val || *end || !(r > 0) || r > 1e9)
                return rfl_bad(err, "--rate must be a number of requests per "
                                "second, above 0 and up to 1e9, not '%s'",
                           val);
            cfg->rate = r;
            break;
        }
        case 4:
            if (!parse_u64(val, &u) || u < 1 || u > MAX_THREADS)
                return rfl_bad(err, "--threads must be 1..%d, not '%s'",
                           MAX_THREADS, val);
            cfg->threads = (unsigned)u;
            break;
        case 5:
            if (!parse_time(val, &cfg->timeout_ns))
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
        }
        if (which >= 9)
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
    if (!have_duration && cfg->requests == 0)
        cfg->duration_ns = 10 * RF_NSEC_PER_SEC;
    if (cfg->rate > 0) {
        /* Each connection sends at rate / connections: its interval must
         * be at least a microsecond for the schedule to mean anything. */
        double interval = cfg->connections * 1e9 / cfg->rate;
        if (interval < 1000)
            return rfl_bad(err, "--rate %.0f over %u connections is more than "
                            "1,000,000 requests/s per connection: add "
                            "connections", cfg->rate, cfg->connections);
    }
    if (cfg->proto == RFL_HTTP && rfl_requests_build(cfg, err) != 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The run                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct shared shared;

typedef struct worker {
    const rfl_config *cfg;
    shared *sh;
    unsigned index;
    unsigned first_conn;   /* global index of its first connection */
    unsigned nconns;
    uint64_t quota;        /* requests it may send; 0: no limit */
    uint64_t issued;
    uint64_t start_ns, end_ns; /* end_ns: 0 without a duration */
    int rc;
    int64_t wrr[RFL_MAX_REQUESTS]; /* HTTP: the mix's smooth weighted
                                    * round robin (pick_request) */
    rfl_result res;
    /* Read by the progress task of worker 0, written only here. */
    _Atomic uint64_t pub_completed, pub_errors, pub_lat_sum_us;
} worker;

struct shared {
    const rfl_config *cfg;
    worker *workers;
    unsigned nworkers;
    atomic_uint arrived;   /* workers whose connections are opened (or
                            * failed): the clock starts when all are */
    atomic_int failed;     /* a first connection could not be opened */
    atomic_uint running;   /* workers not done */
};

typedef struct conn {
    worker *w;
    unsigned gidx;         /* index among all connections */
    int fd;
    unsigned failures;     /* consecutive failed connects */
    uint64_t next_send;    /* open loop: when the next request is due */
    uint64_t interval;     /* open loop */
    uint64_t seq;          /* echo: requests sent, to vary the bytes */
    char *out, *in;        /* echo: message and answer buffers */
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
    const rfl_config *cfg = c->w->cfg;
    int fd;
    int rc = rf_tcp_connect(cfg->host, cfg->port, &fd);
    if (rc != 0)
        return rc;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->w->res.connects++;
    return 0;
}

static void close_conn(conn *c)
{
    if (c->fd >= 0) {
        rf_close(c->fd);
        c->fd = -1;
    }
}

/* The next request of the mix: each entry is picked weight times in every
 * run of (sum of the weights) picks, spread evenly (nginx's smooth
 * weighted round robin), per loop. */
static unsigned pick_request(worker *w)
{
    const rfl_config *cfg = w->cfg;
    if (cfg->nmix <= 1)
        return 0;
    int64_t total = 0;
    unsigned best = 0;
    for (unsigned i = 0; i < cfg->nmix; i++) {
        w->wrr[i] += cfg->mix[i].weight;
        total += cfg->mix[i].weight;
        if (w->wrr[i] > w->wrr[best])
            best = i;
    }
    w->wrr[best] -= total;
    return best;
}

/* One HTTP exchange of request rq on c->fd. Returns the status code, or a
 * negative errno: -EPROTO (unparseable answer), -ECONNRESET (closed
 * early), or the send/receive error. *closing: the server said
 * Connection: close; *body: the answer's body length. */
static int http_exchange(conn *c, const rfl_request *rq, char *in,
                         bool *closing, uint64_t *body, bool *send_failed)
{
    worker *w = c->w;
    ssize_t sent = rf_send_all(c->fd, rq->bytes, rq->len, 0, NULL);
    if (sent < 0) {
        *send_failed = true;
        return (int)sent;
    }
    w->res.bytes_sent += rq->len;
    rfl_http p;
    rfl_http_init(&p);
    p.no_body = rq->no_body;
    size_t len = 0;
    for (;;) {
        ssize_t n = rf_recv(c->fd, in + len, IN_SIZE - len, 0);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -ECONNRESET;
        w->res.bytes_received += (uint64_t)n;
        len += (size_t)n;
        size_t used;
        int st = rfl_http_parse(&p, in, len, &used);
        if (st < 0)
            return st;
        if (st == RFL_HTTP_DONE) {
            /* One request in flight: nothing may follow the answer. */
            if (used != len)
                return -EPROTO;
            *closing = p.close;
            *body = p.body_bytes;
            return p.status;
        }
        memmove(in, in + used, len - used);
        len -= used;
        if (len == IN_SIZE)
            return -EPROTO; /* a head larger than the buffer */
    }
}

/* One echo exchange. Returns 0, -EBADMSG (other bytes came back) or the
 * send/receive error. */
static int echo_exchange(conn *c, bool *send_failed)
{
    worker *w = c->w;
    size_t size = w->cfg->size;
    /* Bytes that differ from one request to the next, so that an answer
     * to an earlier request cannot pass for this one's. */
    uint64_t s = ++c->seq * 0x9E3779B97F4A7C15ull + c->gidx;
    for (size_t i = 0; i < size; i += 8) {
        uint64_t v = s + i;
        memcpy(c->out + i, &v, size - i < 8 ? size - i : 8);
    }
    ssize_t sent = rf_send_all(c->fd, c->out, size, 0, NULL);
    if (sent < 0) {
        *send_failed = true;
        return (int)sent;
    }
    w->res.bytes_sent += size;
    size_t got = 0;
    while (got < size) {
        ssize_t n = rf_recv(c->fd, c->in + got, size - got, 0);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -ECONNRESET;
        got += (size_t)n;
        w->res.bytes_received += (uint64_t)n;
    }
    return memcmp(c->in, c->out, size) ? -EBADMSG : 0;
}

static void *conn_main(void *arg)
{
    conn *c = arg;
    worker *w = c->w;
    const rfl_config *cfg = w->cfg;
    rfl_result *r = &w->res;
    bool open_loop = cfg->rate > 0;
    char *in = NULL;
    if (cfg->proto == RFL_HTTP && !(in = malloc(IN_SIZE))) {
        r->err_read++;
        close_conn(c);
        return NULL;
    }
    rf_deadline_set(w->end_ns);
    for (;;) {
        /* Claimed before any wait, so that the tasks never send more
         * than the count between them. */
        if (w->quota && w->issued >= w->quota)
            break;
        w->issued++;
        uint64_t intended = 0;
        if (open_loop) {
            intended = c->next_send;
            c->next_send += c->interval;
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
        /* --new-connection: the request's time and limit include the
         * connect. */
        uint64_t begin = rf_now_ns();
        if (cfg->new_connection && cfg->timeout_ns)
            rf_deadline_set(w->end_ns && w->end_ns < begin + cfg->timeout_ns
                                ? w->end_ns
                                : begin + cfg->timeout_ns);
        if (c->fd < 0) {
            int rc = open_conn(c);
            if (rc != 0) {
                rf_deadline_set(w->end_ns);
                if (rc == -ETIMEDOUT && w->end_ns && rf_now_ns() >= w->end_ns)
                    break;
                r->err_connect++;
                if (++c->failures >= CONNECT_RETRIES)
                    break;
                if (rf_sleep(10 * RF_NSEC_PER_MSEC) != 0)
                    break;
                continue; /* an open-loop request stays missed */
            }
            c->failures = 0;
        }
        uint64_t sent = rf_now_ns();
        uint64_t start = open_loop             ? intended
                         : cfg->new_connection ? begin
                                               : sent;
        if (cfg->timeout_ns && !cfg->new_connection) {
            uint64_t limit = sent + cfg->timeout_ns;
            rf_deadline_set(w->end_ns && w->end_ns < limit ? w->end_ns
                                                           : limit);
        }
        bool closing = false, send_failed = false;
        uint64_t body = 0;
        unsigned rq = cfg->proto == RFL_HTTP ? pick_request(w) : 0;
        int rc = cfg->proto == RFL_HTTP
                     ? http_exchange(c, &cfg->mix[rq], in, &closing,
                                     &body, &send_failed)
                     : echo_exchange(c, &send_failed);
        uint64_t done = rf_now_ns();
        if (rc >= 0 && cfg->new_connection) {
            /* Wait for the server's close (it was asked to): the side
             * that closes first keeps the TIME_WAIT, and a client that
             * did would run out of ports at some hundreds of
             * connections per second. */
            if (rf_recv(c->fd, in, IN_SIZE, 0) > 0)
                rc = -EPROTO; /* more than the answer */
            closing = true;
        }
        if (cfg->timeout_ns)
            rf_deadline_set(w->end_ns);
        if (rc >= 0 || rc == -EBADMSG) {
            rfl_hist_record(&r->hist, done - start);
            r->completed++;
            r->per_request[rq]++;
            if (rc == -EBADMSG)
                r->err_mismatch++;
            else if (cfg->proto == RFL_ECHO || (rc >= 200 && rc < 300))
                r->status_2xx++;
            else
                r->status_other++;
            if (cfg->expect_status && rc >= 0 && rc != cfg->expect_status)
                r->bad_status++;
            if (cfg->expect_body_bytes >= 0 && rc >= 0 &&
                body != (uint64_t)cfg->expect_body_bytes)
                r->bad_body++;
            publish(w);
            if (closing || rc == -EBADMSG)
                close_conn(c);
            continue;
        }
        close_conn(c);
        if (rc == -ETIMEDOUT && w->end_ns && done >= w->end_ns)
            break; /* the run is over: this request does not count */
        if (rc == -ETIMEDOUT)
            r->err_timeout++;
        else if (send_failed)
            r->err_write++;
        else
            r->err_read++;
        publish(w);
    }
    close_conn(c);
    free(in);
    return NULL;
}

static void fmt_ns(char *buf, size_t n, double ns)
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
            fmt_ns(mean, sizeof mean,
                   (double)(sum - last_sum) * 1e3 / (double)(done - last_done));
        fprintf(stderr, "rfload: %3us  %" PRIu64 " requests  %.0f req/s  "
                        "mean %s  errors %" PRIu64 "\n",
                second, done, (double)(done - last_done) / dt, mean, errors);
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
    const rfl_config *cfg = w->cfg;
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
        conns[i].gidx = w->first_conn + i;
        conns[i].fd = -1;
    }
    /* The connections are all opened before the clock starts. */
    for (unsigned i = 0; rc == 0 && i < w->nconns; i++) {
        conn *c = &conns[i];
        if (cfg->proto == RFL_ECHO) {
            c->out = malloc(cfg->size);
            c->in = malloc(cfg->size);
            if (!c->out || !c->in) {
                rc = -ENOMEM;
                break;
            }
        }
        rc = open_conn(c);
        if (rc != 0)
            fprintf(stderr, "rfload: connect to %s:%u: %s\n", cfg->host,
                    cfg->port, rf_strerror(rc));
    }
    if (rc != 0)
        atomic_store(&sh->failed, 1);
    atomic_fetch_add(&sh->arrived, 1);
    while (atomic_load(&sh->arrived) < sh->nworkers)
        if (rf_sleep(50 * RF_NSEC_PER_USEC) != 0)
            break;
    if (atomic_load(&sh->failed)) {
        if (rc == 0)
            rc = -ECANCELED;
        goto out;
    }

    w->start_ns = rf_now_ns();
    w->end_ns = cfg->duration_ns ? w->start_ns + cfg->duration_ns : 0;
    if (w->index == 0 && cfg->progress)
        progress = rf_spawn(progress_main, sh);
    unsigned total = cfg->connections;
    for (unsigned i = 0; i < w->nconns; i++) {
        conn *c = &conns[i];
        if (cfg->rate > 0) {
            c->interval = (uint64_t)llround(total * 1e9 / cfg->rate);
            c->next_send = w->start_ns + c->interval * c->gidx / total;
        }
        rf_spawn_options o = {.stack_size = RF_MIN_STACK_SIZE * 2};
        tasks[i] = rf_spawn_opts(conn_main, c, &o);
        if (!tasks[i]) {
            rc = -errno;
            fprintf(stderr, "rfload: spawn: %s\n", rf_strerror(rc));
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
    if (w->end_ns && !(w->quota && w->issued >= w->quota))
        end = w->end_ns;
    w->res.elapsed_s = (double)(end - w->start_ns) / 1e9;
    publish(w);
out:
    atomic_fetch_sub(&sh->running, 1);
    if (progress) {
        rf_join(progress, NULL);
        rf_task_release(progress);
    }
    /* The connection tasks close their own sockets; these are the ones
     * opened when no task was started. */
    for (unsigned i = 0; conns && i < w->nconns; i++) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
        free(conns[i].in);
        free(conns[i].out);
    }
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

int rfl_run(const rfl_config *cfg, rfl_result *res)
{
    unsigned nw = cfg->threads ? cfg->threads : 1;
    shared sh = {.cfg = cfg, .nworkers = nw};
    atomic_init(&sh.failed, 0);
    atomic_init(&sh.running, nw);
    atomic_init(&sh.arrived, 0);
    worker *ws = calloc(nw, sizeof *ws);
    if (!ws)
        return -ENOMEM;
    sh.workers = ws;
    if (cfg->proto == RFL_HTTP && cfg->nmix == 0) {
        free(ws);
        return -EINVAL; /* rfl_parse_args builds the requests */
    }
    unsigned first = 0;
    uint64_t quota_given = 0;
    for (unsigned i = 0; i < nw; i++) {
        worker *w = &ws[i];
        w->cfg = cfg;
        w->sh = &sh;
        w->index = i;
        w->first_conn = first;
        w->nconns = cfg->connections / nw + (i < cfg->connections % nw);
        first += w->nconns;
        if (cfg->requests) {
            w->quota = i + 1 == nw
                           ? cfg->requests - quota_given
                           : cfg->requests * w->nconns / cfg->connections;
            quota_given += w->quota;
            if (w->quota == 0) /* fewer requests than workers */
                w->quota = UINT64_MAX, w->issued = UINT64_MAX;
        }
        rfl_hist_init(&w->res.hist);
    }
    int rc = 0;
    rf_loops_opts lo = {.loops = nw};
    int grc = rf_run_loops(worker_entry, &sh, &lo, NULL, NULL);
    if (grc != 0) {
        fprintf(stderr, "rfload: the loops failed: %s\n", rf_strerror(grc));
        rc = grc;
    }
    memset(res, 0, sizeof *res);
    rfl_hist_init(&res->hist);
    for (unsigned i = 0; i < nw; i++) {
        worker *w = &ws[i];
        if (rc == 0 && w->rc != 0 && w->rc != -ECANCELED)
            rc = w->rc;
        const rfl_result *r = &w->res;
        rfl_hist_merge(&res->hist, &r->hist);
        res->completed += r->completed;
        res->status_2xx += r->status_2xx;
        res->status_other += r->status_other;
        res->err_connect += r->err_connect;
        res->err_read += r->err_read;
        res->err_write += r->err_write;
        res->err_timeout += r->err_timeout;
        res->err_mismatch += r->err_mismatch;
        res->bad_status += r->bad_status;
        res->bad_body += r->bad_body;
        for (unsigned k = 0; k < RFL_MAX_REQUESTS; k++)
            res->per_request[k] += r->per_request[k];
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
    if (rc == 0 && atomic_load(&sh.failed))
        rc = -ECONNREFUSED;
    free(ws);
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
    if (cfg->rate > 0)
        fprintf(out, "  target rate  %.1f req/s, latency from the intended "
                     "send time; %" PRIu64 " sends over 1 ms late\n",
                cfg->rate, res->late);
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
                res->status_2xx, res->status_other);
    if (cfg->expect_status)
        fprintf(out, "  expected     status %d: %" PRIu64 " answers had "
                     "another\n", cfg->expect_status, res->bad_status);
    if (cfg->expect_body_bytes >= 0)
        fprintf(out, "  expected     body of %" PRId64 " bytes: %" PRIu64
                     " answers had another length\n",
                cfg->expect_body_bytes, res->bad_body);
    if (cfg->nmix > 1) {
        unsigned wsum = 0;
        for (unsigned i = 0; i < cfg->nmix; i++)
            wsum += cfg->mix[i].weight;
        for (unsigned i = 0; i < cfg->nmix; i++)
            fprintf(out, "  %-12s %" PRIu64 " answered (%.1f%%, weight "
                         "%u/%u): %s\n", i ? "" : "mix", res->per_request[i],
                    res->completed ? 100.0 * (double)res->per_request[i] /
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
    fmt_ns(a, sizeof a, h->total ? (double)h->min : 0);
    fmt_ns(b, sizeof b, rfl_hist_mean(h));
    fmt_ns(c, sizeof c, rfl_hist_stddev(h));
    fprintf(out, "  latency      min %s  mean %s  stdev %s\n", a, b, c);
    for (unsigned i = 0; i < 4; i++) {
        fmt_ns(a, sizeof a, (double)rfl_hist_percentile(h, PCTS[i]));
        fprintf(out, "    %-6s %s\n", PCT_NAMES[i], a);
    }
    fmt_ns(a, sizeof a, (double)h->max);
    fprintf(out, "    %-6s %s\n", "max", a);
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
                 PRIu64 ",\n", res->status_2xx, res->status_other);
    fprintf(out, "  \"expect\": {\"status\": ");
    if (cfg->expect_status)
        fprintf(out, "%d", cfg->expect_status);
    else
        fprintf(out, "null");
    fprintf(out, ", \"status_mismatches\": %" PRIu64 ", \"body_bytes\": ",
            res->bad_status);
    if (cfg->expect_body_bytes >= 0)
        fprintf(out, "%" PRId64, cfg->expect_body_bytes);
    else
        fprintf(out, "null");
    fprintf(out, ", \"body_mismatches\": %" PRIu64 "},\n", res->bad_body);
    fprintf(out, "  \"new_connection\": %s,\n",
            cfg->new_connection ? "true" : "false");
    fprintf(out, "  \"mix\": [");
    for (unsigned i = 0; i < cfg->nmix; i++) {
        fprintf(out, "%s{\"request\": ", i ? ", " : "");
        json_string(out, cfg->mix[i].label);
        fprintf(out, ", \"weight\": %u, \"answered\": %" PRIu64 "}",
                cfg->mix[i].weight, res->per_request[i]);
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
    fprintf(out, ", \"max\": %" PRIu64 "}\n}\n", h->max);
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
    free(res);
    rfl_config_free(&cfg);
    return rc == 0 ? 0 : 1;
}
