/*
 * The requests rfload sends: built once, before the run, into the exact
 * bytes that go on the wire (rfl_request), from the command line (-m, -H,
 * --body, --body-file) or from a request file of several weighted
 * entries. Everything a server could misread is refused here, with the
 * file and line when it comes from a file: a method or header name that is
 * not an HTTP token, a line break inside a header, a Content-Length or
 * Transfer-Encoding of the user's own (rfload frames the body itself).
 */
#include "rfload.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 token characters. */
static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

/* Where a request's parts come from, for the messages. */
typedef struct origin {
    const char *file; /* NULL: the command line */
    unsigned line;
} origin;

static int fail(FILE *err, const origin *o, const char *what, const char *s)
{
    if (o->file)
        return rfl_bad(err, "%s:%u: %s%s%s", o->file, o->line, what,
                       s ? ": " : "", s ? s : "");
    return rfl_bad(err, "%s%s%s", what, s ? ": " : "", s ? s : "");
}

static int check_method(FILE *err, const origin *o, const char *m)
{
    if (strlen(m) > 32 || !is_token(m, strlen(m)))
        return fail(err, o, "a method is an HTTP token (GET, POST, ...) of "
                            "at most 32 characters, not", m);
    return 0;
}

static int check_path(FILE *err, const origin *o, const char *p)
{
    if (p[0] != '/' && strcmp(p, "*") != 0)
        return fail(err, o, "a path starts with /", p);
    if (strlen(p) > 8192)
        return fail(err, o, "a path is at most 8192 bytes", NULL);
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return fail(err, o, "a path may not hold spaces or control "
                                "characters", p);
    return 0;
}

/* "Name: value". Content-Length and Transfer-Encoding are rfload's. */
static int check_header(FILE *err, const origin *o, const char *h)
{
    const char *colon = strchr(h, ':');
    if (!colon || !is_token(h, (size_t)(colon - h)))
        return fail(err, o, "a header is 'Name: value' with a token for a "
                            "name, not", h);
    for (const char *c = colon + 1; *c; c++)
        if ((unsigned char)*c < ' ' && *c != '\t')
            return fail(err, o, "a header's value may not hold control "
                                "characters (line breaks included)", h);
    size_t n = (size_t)(colon - h);
    if ((n == 14 && !strncasecmp(h, "Content-Length", n)) ||
        (n == 17 && !strncasecmp(h, "Transfer-Encoding", n)))
        return fail(err, o, "rfload frames the body itself (Content-Length "
                            "from the body); leave this header out", h);
    return 0;
}

static bool header_named(const char *h, const char *name)
{
    size_t n = strlen(name);
    return !strncasecmp(h, name, n) && h[n] == ':';
}

/* A whole file, at most RFL_MAX_BODY bytes. */
static int read_file(FILE *err, const origin *o, const char *path,
                     char **out, size_t *len)
{
    FILE *f = fopen(path, "rbe");
    if (!f)
        return fail(err, o, strerror(errno), path);
    /* Room for one byte past the limit: a file that fills it is too big. */
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf && n <= RFL_MAX_BODY) {
        if (n == cap) {
            size_t ncap = cap * 2 > RFL_MAX_BODY + 1 ? RFL_MAX_BODY + 1
                                                     : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    bool bad_read = ferror(f);
    fclose(f);
    if (!buf || n > RFL_MAX_BODY || bad_read) {
        free(buf);
        return fail(err, o,
                    bad_read ? "cannot read the body file"
                    : !buf   ? "out of memory reading the body file"
                             : "a body is at most 64 MiB",
                    path);
    }
    *out = buf;
    *len = n;
    return 0;
}

static int hexdigit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A request file's "body TEXT": \n \r \t \\ \xHH. */
static int unescape(FILE *err, const origin *o, const char *s, char **out,
                    size_t *len)
{
    char *buf = malloc(strlen(s) + 1);
    if (!buf)
        return fail(err, o, "out of memory", NULL);
    size_t n = 0;
    for (; *s; s++) {
        if (*s != '\\') {
            buf[n++] = *s;
            continue;
        }
        char e = *++s;
        int hi, lo;
        if (e == 'n')
            buf[n++] = '\n';
        else if (e == 'r')
            buf[n++] = '\r';
        else if (e == 't')
            buf[n++] = '\t';
        else if (e == '\\')
            buf[n++] = '\\';
        else if (e == 'x' && (hi = hexdigit(s[1])) >= 0 &&
                 (lo = hexdigit(s[2])) >= 0) {
            buf[n++] = (char)(hi * 16 + lo);
            s += 2;
        } else {
            free(buf);
            return fail(err, o, "a body's escapes are \\n \\r \\t \\\\ and "
                                "\\xHH", NULL);
        }
    }
    *out = buf;
    *len = n;
    return 0;
}

/* One entry as parsed, before its bytes are built. */
typedef struct entry {
    const char *method;
    const char *path;
    const char *headers[RFL_MAX_HEADERS];
    unsigned nheaders;
    char *body; /* owned */
    size_t body_len;
    bool has_body;
    unsigned weight;
    origin at;
} entry;

static int build(const rfl_config *cfg, const entry *e, rfl_request *r,
                 FILE *err)
{
    const char *method = e->method ? e->method : "GET";
    const char *path = e->path ? e->path : cfg->path;
    bool own_host = false;
    size_t cap = strlen(method) + strlen(path) + strlen(cfg->host_header) +
                 e->body_len + 128;
    for (unsigned i = 0; i < cfg->nheaders; i++)
        cap += strlen(cfg->headers[i]) + 2;
    for (unsigned i = 0; i < e->nheaders; i++)
        cap += strlen(e->headers[i]) + 2;
    char *b = malloc(cap + 1); /* + a NUL after the body, not sent */
    if (!b)
        return fail(err, &e->at, "out of memory", NULL);
    size_t n = (size_t)snprintf(b, cap, "%s %s HTTP/1.1\r\n", method, path);
    const char *const *lists[2] = {e->headers, cfg->headers};
    unsigned counts[2] = {e->nheaders, cfg->nheaders};
    for (int l = 0; l < 2; l++)
        for (unsigned i = 0; i < counts[l]; i++) {
            own_host |= header_named(lists[l][i], "host");
            n += (size_t)snprintf(b + n, cap - n, "%s\r\n", lists[l][i]);
        }
    if (!own_host)
        n += (size_t)snprintf(b + n, cap - n, "Host: %s\r\n",
                              cfg->host_header);
    if (cfg->new_connection)
        n += (size_t)snprintf(b + n, cap - n, "Connection: close\r\n");
    /* A body, or a method that expects one: say its length (0 too). */
    if (e->has_body || !strcmp(method, "POST") || !strcmp(method, "PUT") ||
        !strcmp(method, "PATCH"))
        n += (size_t)snprintf(b + n, cap - n, "Content-Length: %zu\r\n",
                              e->body_len);
    n += (size_t)snprintf(b + n, cap - n, "\r\n");
    if (e->body_len)
        memcpy(b + n, e->body, e->body_len);
    n += e->body_len;
    b[n] = '\0';
    r->bytes = b;
    r->len = n;
    r->weight = e->weight;
    r->no_body = !strcmp(method, "HEAD");
    snprintf(r->label, sizeof r->label, "%s %.*s", method, 80, path);
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' ||
                 s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* The request file's folder joined with a relative name. */
static char *beside(const char *file, const char *name)
{
    const char *slash = strrchr(file, '/');
    if (name[0] == '/' || !slash)
        return strdup(name);
    size_t dl = (size_t)(slash - file) + 1;
    char *p = malloc(dl + strlen(name) + 1);
    if (p) {
        memcpy(p, file, dl);
        strcpy(p + dl, name);
    }
    return p;
}

static void entry_free(entry *e)
{
    free(e->body);
    e->body = NULL;
}

/* Strings a request file's entries point into: the file's lines, kept
 * until the requests are built. */
typedef struct lines {
    char **v;
    size_t n, cap;
} lines;

static char *keep(lines *ls, const char *s)
{
    if (ls->n == ls->cap) {
        size_t cap = ls->cap ? ls->cap * 2 : 64;
        char **nv = realloc(ls->v, cap * sizeof *nv);
        if (!nv)
            return NULL;
        ls->v = nv;
        ls->cap = cap;
    }
    char *c = strdup(s);
    if (c)
        ls->v[ls->n++] = c;
    return c;
}

static int finish_entry(rfl_config *cfg, entry *e, FILE *err)
{
    if (!e->method)
        e->method = cfg->method; /* checked by rfl_requests_build */
    int rc = build(cfg, e, &cfg->mix[cfg->nmix], err);
    if (rc == 0)
        cfg->nmix++;
    return rc;
}

static int parse_file(rfl_config *cfg, FILE *err)
{
    origin at = {cfg->request_file, 0};
    FILE *f = fopen(cfg->request_file, "re");
    if (!f)
        return fail(err, &at, strerror(errno), NULL);
    lines ls = {0};
    entry e = {0};
    bool open_entry = false;
    int rc = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while (rc == 0 && (got = getline(&line, &cap, f)) >= 0) {
        at.line++;
        if (memchr(line, '\0', (size_t)got)) {
            rc = fail(err, &at, "a NUL byte in the line", NULL);
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *key = s;
        char *val = s + strcspn(s, " \t");
        if (*val)
            *val++ = '\0';
        val = trim(val);
        if (!strcmp(key, "request")) {
            if (open_entry) {
                rc = finish_entry(cfg, &e, err);
                entry_free(&e);
                if (rc)
                    break;
            }
            if (cfg->nmix == RFL_MAX_REQUESTS) {
                rc = fail(err, &at, "at most 64 requests in a file", NULL);
                break;
            }
            memset(&e, 0, sizeof e);
            e.at = at;
            e.weight = 1;
            if (*val) {
                char *end;
                errno = 0;
                unsigned long w = strtoul(val, &end, 10);
                if (errno || *end || *val == '-' || w < 1 ||
                    w > RFL_MAX_WEIGHT) {
                    rc = fail(err, &at, "a weight is 1..1000000, not", val);
                    break;
                }
                e.weight = (unsigned)w;
            }
            open_entry = true;
            continue;
        }
        if (!open_entry) {
            rc = fail(err, &at, "the first line (after comments) must be "
                                "'request [WEIGHT]', not", key);
            break;
        }
        if (!*val && strcmp(key, "body") != 0) {
            rc = fail(err, &at, "a value is missing after", key);
            break;
        }
        if (!strcmp(key, "method")) {
            if (e.method)
                rc = fail(err, &at, "a second method for this request", NULL);
            else if ((rc = check_method(err, &at, val)) == 0 &&
                     !(e.method = keep(&ls, val)))
                rc = fail(err, &at, "out of memory", NULL);
        } else if (!strcmp(key, "path")) {
            if (e.path)
                rc = fail(err, &at, "a second path for this request", NULL);
            else if ((rc = check_path(err, &at, val)) == 0 &&
                     !(e.path = keep(&ls, val)))
                rc = fail(err, &at, "out of memory", NULL);
        } else if (!strcmp(key, "header")) {
            if (e.nheaders == RFL_MAX_HEADERS)
                rc = fail(err, &at, "at most 64 headers per request", NULL);
            else if ((rc = check_header(err, &at, val)) == 0 &&
                     !(e.headers[e.nheaders++] = keep(&ls, val)))
                rc = fail(err, &at, "out of memory", NULL);
        } else if (!strcmp(key, "body") || !strcmp(key, "body-file")) {
            if (e.has_body) {
                rc = fail(err, &at, "a second body for this request", NULL);
            } else if (!strcmp(key, "body")) {
                rc = unescape(err, &at, val, &e.body, &e.body_len);
            } else {
                char *path = beside(cfg->request_file, val);
                rc = path ? read_file(err, &at, path, &e.body, &e.body_len)
                          : fail(err, &at, "out of memory", NULL);
                free(path);
            }
            e.has_body = rc == 0;
        } else {
            rc = fail(err, &at, "unknown key (method, path, header, body, "
                                "body-file, request)", key);
        }
    }
    if (rc == 0 && ferror(f))
        rc = fail(err, &at, "cannot read the file", NULL);
    if (rc == 0 && open_entry)
        rc = finish_entry(cfg, &e, err);
    else if (rc == 0 && cfg->nmix == 0)
        rc = fail(err, &at, "no request in the file ('request' starts one)",
                  NULL);
    entry_free(&e);
    free(line);
    fclose(f);
    for (size_t i = 0; i < ls.n; i++)
        free(ls.v[i]);
    free(ls.v);
    return rc;
}

int rfl_requests_build(rfl_config *cfg, FILE *err)
{
    origin cli = {NULL, 0};
    for (unsigned i = 0; i < cfg->nheaders; i++)
        if (check_header(err, &cli, cfg->headers[i]))
            return -1;
    if (cfg->method && check_method(err, &cli, cfg->method))
        return -1;
    cfg->mix = calloc(RFL_MAX_REQUESTS, sizeof *cfg->mix);
    if (!cfg->mix)
        return fail(err, &cli, "out of memory", NULL);
    if (cfg->request_file)
        return parse_file(cfg, err);
    entry e = {.method = cfg->method, .weight = 1, .at = cli};
    if (cfg->body) {
        e.body = strdup(cfg->body);
        e.body_len = strlen(cfg->body);
        e.has_body = true;
        if (!e.body)
            return fail(err, &cli, "out of memory", NULL);
    } else if (cfg->body_file) {
        if (read_file(err, &cli, cfg->body_file, &e.body, &e.body_len))
            return -1;
        e.has_body = true;
    }
    int rc = build(cfg, &e, &cfg->mix[0], err);
    entry_free(&e);
    if (rc == 0)
        cfg->nmix = 1;
    return rc;
}

void rfl_config_free(rfl_config *cfg)
{
    for (unsigned i = 0; cfg->mix && i < cfg->nmix; i++)
        free(cfg->mix[i].bytes);
    free(cfg->mix);
    cfg->mix = NULL;
    cfg->nmix = 0;
}
