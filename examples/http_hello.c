/*
 * http_hello: a minimal HTTP/1.1 server that answers "hello world!".
 *
 *   http_hello [--port 8080] [--host 127.0.0.1] [--grace 2]
 *              [--max-conns 10000] [--idle-timeout 60]
 *              [--header-timeout 10] [--loops 1] [--accept reuseport]
 *
 * Enough HTTP for `curl -v` and for `wrk`:
 *  - keep-alive: HTTP/1.1 connections stay open unless the request says
 *    "Connection: close"; HTTP/1.0 ones close unless it says
 *    "Connection: keep-alive". "Connection: close" is honoured: the answer
 *    carries it and the server closes after sending it.
 *  - pipelining: every complete request in the buffer is answered, in
 *    order, and the answers go out in one send.
 *  - GET /metrics answers with every loop's metrics in Prometheus' text
 *    format (rf_metrics_format): point a scraper at it.
 *  - GET and HEAD (no body) get 200; another method 405; a request body
 *    announced by Content-Length, up to 64 KiB, is read and discarded; a
 *    larger one is not read: the answer (405, or 413 for a GET or HEAD)
 *    says "Connection: close" and the connection is closed. A chunked
 *    request body, a malformed request (a line ended by a bare LF
 *    included) or headers over 16 KiB get 501/400/431 and the connection
 *    is closed.
 *
 * What a client may hold, so that idle, slow or stuck clients cannot keep
 * connections (and their memory) for ever; each bound is the task's
 * deadline (rf_deadline_set), which ends the wait it is in:
 *  - --header-timeout S (10): a request, its head and a body being
 *    discarded, must arrive within S seconds of its first byte (of the
 *    accept, for a connection's first request). A client that sends a head
 *    a byte at a time (slowloris) gets 408 and is closed then.
 *  - --idle-timeout S (60): a kept-alive connection that brings no new
 *    request for S seconds is closed, and so is one whose client reads
 *    none of its answers for as long.
 *  - --max-conns N (10,000): beyond N connections the server stops
 *    accepting until one ends (see ex_server in common.h).
 * 0 turns a timeout off.
 * One task per connection; see echo_server.c for the skeleton.
 */
#define _GNU_SOURCE
#include "common.h"

#include <ctype.h>
#include <strings.h>

enum { IN_SIZE = 16384, OUT_SIZE = 16384 };
/* The largest request body that is read and discarded to keep the
 * connection; a larger one is not read at all: the connection is closed
 * after the answer instead. */
enum { MAX_SKIP = 64 * 1024 };

/* --header-timeout */
static double header_timeout_s = 10;

static const char HELLO[] = "hello world!";

/* "Date: Sun, 22 Nov 2026 01:02:03 GMT\r\n", remade once a second, and
 * with it the whole answer to a kept-alive HTTP/1.1 GET or HEAD of "/",
 * which is then a copy (as nginx keeps its Date string): formatting it
 * per request was most of the server's own instructions
 * (bench/README.md, "W7: the example's own work"). One of each per
 * thread (with --loops, each loop runs on a thread of its own). */
static __thread char date_buf[64];
static __thread char hello_get[256], hello_head[256];
static __thread size_t hello_get_len, hello_head_len;

static const char *date_header(void)
{
    static __thread time_t made = -1;
    time_t now = time(NULL);
    if (now != made) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date_buf, sizeof date_buf,
                 "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        int n = snprintf(hello_head, sizeof hello_head,
                         "HTTP/1.1 200 OK\r\n"
                         "Server: ringfiber\r\n"
                         "%s"
                         "Content-Type: text/plain\r\n"
                         "Content-Length: %zu\r\n"
                         "\r\n",
                         date_buf, sizeof HELLO - 1);
        hello_head_len = n > 0 && (size_t)n < sizeof hello_head ? (size_t)n : 0;
        memcpy(hello_get, hello_head, hello_head_len);
        memcpy(hello_get + hello_head_len, HELLO, sizeof HELLO - 1);
        hello_get_len = hello_head_len ? hello_head_len + sizeof HELLO - 1 : 0;
        made = now;
    }
    return date_buf;
}

/* Where the line that starts at p ends (its CR), or NULL: the head has no
 * bare LF (has_bare_lf), so the first LF ends the line. memchr, not
 * memmem: glibc's memmem prepares each search, which for these short
 * lines costs more than the search. */
static const char *line_end(const char *p, size_t n)
{
    const char *lf = memchr(p, '\n', n);
    return lf && lf > p && lf[-1] == '\r' ? lf - 1 : NULL;
}

/* The end of a request's head, "\r\n\r\n" (the first one), in p[0..n);
 * NULL if it has not all come. */
static char *head_end(char *p, size_t n)
{
    for (char *lf = memchr(p, '\n', n); lf;
         lf = memchr(lf + 1, '\n', n - (size_t)(lf + 1 - p)))
        if (lf > p && lf[-1] == '\r' && (size_t)(lf + 2 - p) < n &&
            lf[1] == '\r' && lf[2] == '\n')
            return lf - 1;
    return NULL;
}

typedef struct request {
    bool head;        /* HEAD: headers only */
    bool get;         /* GET or HEAD */
    bool keep_alive;
    bool http10;      /* HTTP/1.0: keep-alive only when asked for */
    bool chunked;
    bool metrics;     /* the target is /metrics */
    long long content_length;
} request;

/* Does the comma-separated header value v (length n) contain token? */
static bool has_token(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        size_t e = j;
        while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - i == tl && strncasecmp(v + i, token, tl) == 0)
            return true;
        i = j;
    }
    return false;
}

/* Parse the head of one request, p[0..n) up to (not including) the blank
 * line. Returns 0, or the status to answer with before closing. */
static int parse(const char *p, size_t n, request *r)
{
    const char *end = p + n;
    const char *eol = line_end(p, n);
    if (!eol)
        eol = end;
    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1 || eol - sp2 - 1 != 8 ||
        memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)sp2[8]))
        return 400;
    size_t mlen = (size_t)(sp1 - p);
    r->head = mlen == 4 && memcmp(p, "HEAD", 4) == 0;
    r->get = r->head || (mlen == 3 && memcmp(p, "GET", 3) == 0);
    r->http10 = sp2[8] == '0';
    r->metrics = sp2 - sp1 - 1 == 8 && memcmp(sp1 + 1, "/metrics", 8) == 0;
    r->keep_alive = !r->http10;
    r->chunked = false;
    r->content_length = 0;
    for (const char *h = eol + 2; h < end; h = eol + 2) {
        eol = line_end(h, (size_t)(end - h));
        if (!eol)
            eol = end;
        const char *colon = memchr(h, ':', (size_t)(eol - h));
        if (!colon || colon == h)
            return 400;
        size_t nlen = (size_t)(colon - h);
        const char *v = colon + 1;
        size_t vlen = (size_t)(eol - v);
        if (nlen == 10 && strncasecmp(h, "Connection", 10) == 0) {
            if (has_token(v, vlen, "close"))
                r->keep_alive = false;
            else if (has_token(v, vlen, "keep-alive"))
                r->keep_alive = true;
        } else if (nlen == 14 && strncasecmp(h, "Content-Length", 14) == 0) {
            char num[24];
            while (vlen > 0 && (*v == ' ' || *v == '\t'))
                v++, vlen--;
            while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (vlen == 0 || vlen >= sizeof num)
                return 400;
            memcpy(num, v, vlen);
            num[vlen] = '\0';
            char *e;
            errno = 0;
            long long cl = strtoll(num, &e, 10);
            if (*e != '\0' || errno != 0 || cl < 0 || !isdigit((unsigned char)num[0]))
                return 400;
            r->content_length = cl;
        } else if (nlen == 17 &&
                   strncasecmp(h, "Transfer-Encoding", 17) == 0) {
            r->chunked = true;
        }
    }
    return r->chunked ? 501 : 0;
}

/* Append one response to out; room is at least RESP_MAX. Returns its
 * length. */
enum { RESP_MAX = 512 };

static size_t respond(char *out, size_t room, int status, const request *r,
                      bool keep_alive)
{
    const char *reason = status == 200   ? "OK"
                         : status == 405 ? "Method Not Allowed"
                         : status == 408 ? "Request Timeout"
                         : status == 413 ? "Content Too Large"
                         : status == 431 ? "Request Header Fields Too Large"
                         : status == 501 ? "Not Implemented"
                                         : "Bad Request";
    const char *date = date_header();
    if (status == 200 && keep_alive && !r->http10) {
        const char *a = r->head ? hello_head : hello_get;
        size_t n = r->head ? hello_head_len : hello_get_len;
        if (n > 0 && n <= room) {
            memcpy(out, a, n);
            return n;
        }
    }
    const char *body = status == 200 ? HELLO : reason;
    const char *conn = !keep_alive    ? "Connection: close\r\n"
                       : r->http10    ? "Connection: keep-alive\r\n"
                                      : "";
    int n = snprintf(out, room,
                     "HTTP/1.1 %d %s\r\n"
                     "Server: ringfiber\r\n"
                     "%s"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n"
                     "%s%s"
                     "\r\n"
                     "%s",
                     status, reason, date, strlen(body),
                     status == 405 ? "Allow: GET, HEAD\r\n" : "", conn,
                     r->head ? "" : body);
    return n > 0 && (size_t)n < room ? (size_t)n : 0;
}

static bool send_out(ex_conn *c, const char *p, size_t n);

/* GET /metrics: the process's loops in Prometheus' text format, sent at
 * once (its size varies with the number of loops: it has a buffer of its
 * own). False if the connection is lost. */
static bool send_metrics(ex_conn *c, const request *r, bool keep_alive)
{
    /* Sized by a first call; the counters may gain digits (and loops come)
     * before the second: then again, with room to spare. */
    size_t cap = 0;
    char *body = NULL;
    int n = rf_metrics_format(NULL, 0);
    while (n >= 0 && (size_t)n >= cap) {
        free(body);
        cap = (size_t)n + 1024;
        body = malloc(cap);
        if (!body)
            return false;
        n = rf_metrics_format(body, cap);
    }
    if (n < 0) {
        free(body);
        return false;
    }
    char head[RESP_MAX];
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\n"
                     "Server: ringfiber\r\n"
                     "%s"
                     "Content-Type: text/plain; version=0.0.4\r\n"
                     "Content-Length: %d\r\n"
                     "%s"
                     "\r\n",
                     date_header(), n,
                     !keep_alive ? "Connection: close\r\n"
                     : r->http10 ? "Connection: keep-alive\r\n"
                                 : "");
    bool ok = send_out(c, head, (size_t)h) &&
              (r->head || send_out(c, body, (size_t)n));
    free(body);
    return ok;
}

/* Is there a bare LF, one that no CR precedes, in p[0..n)? */
static bool has_bare_lf(const char *p, size_t n)
{
    for (const char *lf = memchr(p, '\n', n); lf;
         lf = memchr(lf + 1, '\n', n - (size_t)(lf + 1 - p)))
        if (lf == p || lf[-1] != '\r')
            return true;
    return false;
}

/* Send answers; a client that reads none of them for --idle-timeout is
 * given up on. True when all of them went. */
static bool send_out(ex_conn *c, const char *p, size_t n)
{
    ex_idle_deadline(c->srv);
    return rf_send_all(c->fd, p, n, 0, NULL) == (ssize_t)n;
}

static void serve(ex_conn *c)
{
    char in[IN_SIZE], out[OUT_SIZE];
    size_t inlen = 0;
    long long skip = 0; /* bytes of a request body still to discard */
    bool open = true;
    /* Reading a request (its head, then the body being discarded): the
     * receives are bounded by request_by, --header-timeout after its
     * first byte (after the accept for the first request). Between
     * requests (in_request false) they are bounded by --idle-timeout. */
    bool in_request = true;
    uint64_t request_by = ex_deadline_after(header_timeout_s);
    while (open) {
        /* Answer every complete request in the buffer. */
        size_t off = 0, outlen = 0;
        bool answered = false;
        for (;;) {
            size_t k = skip < (long long)(inlen - off) ? (size_t)skip
                                                       : inlen - off;
            off += k;
            skip -= (long long)k;
            if (skip > 0)
                break;
            /* Empty lines before a request are allowed (RFC 9112 2.2). */
            while (inlen - off >= 2 && in[off] == '\r' && in[off + 1] == '\n')
                off += 2;
            char *hend = head_end(in + off, inlen - off);
            size_t span = hend ? (size_t)(hend + 4 - (in + off)) : inlen - off;
            /* A server may take a bare LF for a line end; this one
             * answers 400 at the first one, rather than wait for a CRLF
             * that such a client never sends. */
            bool bare_lf = has_bare_lf(in + off, span);
            if (!hend && !bare_lf)
                break; /* the rest of the head is still to come */
            request r = {0};
            int status = bare_lf ? 400
                                 : parse(in + off, (size_t)(hend - (in + off)),
                                         &r);
            if (status == 0)
                status = r.get ? 200 : 405;
            /* A body too large to discard is not read: answer, close. */
            bool big = r.content_length > MAX_SKIP;
            if (big && status == 200)
                status = 413;
            /* Once the server is stopping, every answer says so. */
            bool keep = (status == 200 || status == 405) && !big &&
                        r.keep_alive && !c->srv->stopping;
            if (OUT_SIZE - outlen < RESP_MAX || (status == 200 && r.metrics)) {
                if (outlen && !send_out(c, out, outlen))
                    return;
                outlen = 0;
            }
            if (status == 200 && r.metrics) {
                if (!send_metrics(c, &r, keep))
                    return;
            } else {
                outlen += respond(out + outlen, OUT_SIZE - outlen, status, &r,
                                  keep);
            }
            answered = true;
            if (!keep) {
                open = false;
                break;
            }
            off += span;
            skip = r.content_length;
        }
        if (outlen > 0 && !send_out(c, out, outlen))
            return;
        if (!open)
            return;
        memmove(in, in + off, inlen - off);
        inlen -= off;
        if (answered && skip == 0) {
            /* The last request is done: what is buffered, if anything, is
             * the start of the next one. */
            in_request = inlen > 0;
            request_by = ex_deadline_after(header_timeout_s);
        }
        if (inlen == IN_SIZE) {
            request r = {0};
            size_t n = respond(out, OUT_SIZE, 431, &r, false);
            send_out(c, out, n);
            return;
        }
        if (in_request)
            rf_deadline_set(request_by);
        else
            ex_idle_deadline(c->srv);
        ssize_t n = rf_recv(c->fd, in + inlen, IN_SIZE - inlen, 0);
        if (n == -ETIMEDOUT && in_request && inlen > 0 && skip == 0) {
            /* A head begun and not finished in time: say so, close. (A
             * body being discarded has had its answer: just close.) */
            request r = {0};
            size_t k = respond(out, OUT_SIZE, 408, &r, false);
            send_out(c, out, k);
            return;
        }
        if (n <= 0)
            return; /* the client closed, an error, a deadline, or the
                     * server stops */
        if (!in_request) {
            in_request = true; /* a new request's first bytes */
            request_by = ex_deadline_after(header_timeout_s);
        }
        inlen += (size_t)n;
    }
}

int main(int argc, char **argv)
{
    ex_server s = {.host = "127.0.0.1", .port = 8080, .grace_s = 2,
                   .idle_s = 60, .serve = serve};
    ex_option opts[EX_SERVER_NOPTS + 2] = {{0}};
    ex_server_options(&s, opts);
    opts[EX_SERVER_NOPTS] = (ex_option){
        "--header-timeout", "S",
        "seconds a request (its head, and a body being discarded) has to "
        "arrive, from its first byte (from the accept for the first); "
        "then 408 and close. 0: no limit (default 10)",
        NULL, &header_timeout_s, NULL};
    ex_parse_args(argc, argv, opts);
    if (!(header_timeout_s >= 0 && header_timeout_s <= 86400))
        ex_bad_arg(opts, "--header-timeout must be 0..86400 seconds", NULL);
    return ex_server_run(&s);
}
