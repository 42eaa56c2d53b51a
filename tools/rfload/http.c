/*
 * The HTTP/1.1 response parser: enough to find where each keep-alive
 * response ends (Content-Length, or a chunked body) and its status. The
 * body is skipped, never stored.
 */
#include "rfload.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

enum {
    ST_HEAD,       /* waiting for the whole status line and headers */
    ST_BODY,       /* skipping remaining Content-Length bytes */
    ST_CHUNK_SIZE, /* waiting for a chunk-size line */
    ST_CHUNK_DATA, /* skipping remaining chunk bytes */
    ST_CHUNK_CRLF, /* the CRLF after a chunk's data */
    ST_TRAILER,    /* trailer lines after the last chunk, up to a blank one */
};

void rfl_http_init(rfl_http *p)
{
    memset(p, 0, sizeof *p);
    p->state = ST_HEAD;
}

/* Does header line [l, e) carry name (case-insensitive)? Sets *value. */
static bool header_is(const char *l, const char *e, const char *name,
                      const char **value)
{
    size_t n = strlen(name);
    if ((size_t)(e - l) <= n || l[n] != ':' || strncasecmp(l, name, n) != 0)
        return false;
    const char *v = l + n + 1;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    *value = v;
    return true;
}

static bool contains_token(const char *v, const char *e, const char *token)
{
    size_t n = strlen(token);
    for (; v + n <= e; v++)
        if (strncasecmp(v, token, n) == 0)
            return true;
    return false;
}

/* Parse the head [p, end) (up to and excluding the blank line): 0, 1 (an
 * interim 1xx answer, skipped: the state is back at the head), or
 * -EPROTO. */
static int parse_head(rfl_http *h, const char *p, const char *end)
{
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (!eol)
        eol = end;
    /* "HTTP/1.x SSS reason" */
    if (eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
        return -EPROTO;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EPROTO;
        status = status * 10 + (p[i] - '0');
    }
    h->status = status;
    h->chunked = false;
    h->close = false;
    bool have_length = false;
    uint64_t length = 0;
    for (const char *l = eol + 2; l < end;) {
        const char *e = memmem(l, (size_t)(end - l), "\r\n", 2);
        if (!e)
            e = end;
        const char *v;
        if (header_is(l, e, "content-length", &v)) {
            if (v == e)
                return -EPROTO;
            length = 0;
            for (; v < e && *v >= '0' && *v <= '9'; v++) {
                if (length > UINT64_MAX / 10 - 10)
                    return -EPROTO;
                length = length * 10 + (uint64_t)(*v - '0');
            }
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            if (v != e)
                return -EPROTO; /* "12abc", "abc": no length */
            have_length = true;
        } else if (header_is(l, e, "transfer-encoding", &v)) {
            h->chunked = contains_token(v, e, "chunked");
        } else if (header_is(l, e, "connection", &v)) {
            h->close = contains_token(v, e, "close");
        }
        l = e + 2;
    }
    /* An interim answer (100 Continue, 103 Early Hints): the real one
     * follows on the same request. */
    if (status >= 100 && status < 200 && status != 101) {
        h->state = ST_HEAD;
        return 1;
    }
    /* 101, 204 and 304 have no body, nor has the answer to a HEAD. */
    if (status == 101 || status == 204 || status == 304 || h->no_body) {
        h->remaining = 0;
        h->state = ST_BODY;
    } else if (h->chunked) {
        h->state = ST_CHUNK_SIZE;
    } else if (have_length) {
        h->remaining = length;
        h->state = ST_BODY;
    } else {
        return -EPROTO; /* the body would end at the close: not keep-alive */
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int rfl_http_parse(rfl_http *h, const char *data, size_t len, size_t *used)
{
    const char *p = data, *end = data + len;
    for (;;) {
        switch (h->state) {
        case ST_HEAD: {
            const char *blank = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
            if (!blank) {
                *used = (size_t)(p - data);
                return RFL_HTTP_MORE;
            }
            int rc = parse_head(h, p, blank);
            if (rc < 0)
                return rc;
            h->body_bytes = 0;
            p = blank + 4;
            break; /* rc 1: an interim answer, skipped: the next head */
        }
        case ST_BODY: {
            uint64_t take = (uint64_t)(end - p);
            if (take > h->remaining)
                take = h->remaining;
            p += take;
            h->remaining -= take;
            h->body_bytes += take;
            if (h->remaining == 0) {
                *used = (size_t)(p - data);
                h->state = ST_HEAD;
                return RFL_HTTP_DONE;
            }
            *used = len;
            return RFL_HTTP_MORE;
        }
        case ST_CHUNK_SIZE: {
            const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
            if (!eol) {
                *used = (size_t)(p - data);
                return RFL_HTTP_MORE;
            }
            uint64_t size = 0;
            const char *q = p;
            for (int d; q < eol && (d = hexval(*q)) >= 0; q++) {
                if (size >> 59)
                    return -EPROTO;
                size = size * 16 + (uint64_t)d;
            }
            if (q == p || (q < eol && *q != ';' && *q != ' '))
                return -EPROTO;
            p = eol + 2;
            h->remaining = size;
            h->state = size ? ST_CHUNK_DATA : ST_TRAILER;
            break;
        }
        case ST_CHUNK_DATA: {
            uint64_t take = (uint64_t)(end - p);
            if (take > h->remaining)
                take = h->remaining;
            p += take;
            h->remaining -= take;
            h->body_bytes += take;
            if (h->remaining) {
                *used = len;
                return RFL_HTTP_MORE;
            }
            h->state = ST_CHUNK_CRLF;
            break;
        }
        case ST_CHUNK_CRLF:
            if (end - p < 2) {
                *used = (size_t)(p - data);
                return RFL_HTTP_MORE;
            }
            if (p[0] != '\r' || p[1] != '\n')
                return -EPROTO;
            p += 2;
            h->state = ST_CHUNK_SIZE;
            break;
        case ST_TRAILER: {
            const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
            if (!eol) {
                *used = (size_t)(p - data);
                return RFL_HTTP_MORE;
            }
            bool blank = eol == p;
            p = eol + 2;
            if (blank) {
                *used = (size_t)(p - data);
                h->state = ST_HEAD;
                return RFL_HTTP_DONE;
            }
            break;
        }
        default:
            return -EPROTO;
        }
    }
}
