/*
 * bounded_fetch: fetch many URLs with at most K requests in flight, and
 * stop everything at the first failure.
 *
 *   sem = asyncio.Semaphore(K)
 *   async def fetch(url):
 *       async with sem:
 *           status, body = await http_get(url)
 *           if status != 200: raise HTTPError(url, status)
 *   async with asyncio.TaskGroup() as tg:       # first error cancels the rest
 *       for url in urls: tg.create_task(fetch(url))
 *
 * Every fetch is a task of one rf_group; an rf_sem of K permits bounds how
 * many talk to the server at once (the program checks the bound it
 * observes). A fetch that gets anything but "200" fails its task with
 * RF_ERR_PTR(-EIO); the group then cancels the other fetches, wherever
 * they are (waiting for a permit, connecting, reading), and rf_group_wait
 * reports the first failure.
 *
 * The server: by default one in this same loop, on a free port of
 * 127.0.0.1, that answers `hello world!` after --delay seconds, and HTTP
 * 500 for the path /fail (--fail-at I makes URL number I that path). With
 * --port P the URLs go to a server already running on 127.0.0.1:P (e.g.
 * the http_hello example).
 *
 * Options: --urls N (default 100), --limit K (default 8), --fail-at I,
 * --port P, --delay S (default 0.02), --scale N.
 */
#include "common.h"

#include <sys/socket.h>

#define HOST "127.0.0.1"

typedef struct fetcher {
    rf_sem permits;
    uint16_t port;
    long fail_at;
    long in_flight, max_in_flight;
    long ok, failed;
    char first_error[128];
} fetcher;

typedef struct job {
    fetcher *f;
    long i;
} job;

/* ---- the HTTP client side of one fetch ---- */

/* GET path over a new connection (Connection: close); the status code, or
 * a negative errno. body receives the response body. */
static int http_get(uint16_t port, const char *path, char *body, size_t cap)
{
    int fd;
    int rc = rf_tcp_connect(HOST, port, &fd);
    if (rc < 0)
        return rc;
    char req[256];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: " HOST "\r\n"
                     "Connection: close\r\n\r\n", path);
    ssize_t w = rf_send_all(fd, req, (size_t)n, 0, NULL);
    char resp[1024];
    size_t got = 0;
    while (w >= 0 && got < sizeof resp - 1) {
        ssize_t r = rf_recv(fd, resp + got, sizeof resp - 1 - got, 0);
        if (r <= 0) {
            w = r; /* 0: the server closed: the response is complete */
            break;
        }
        got += (size_t)r;
    }
    rf_close(fd); /* always, even cancelled: it never leaks */
    if (w < 0)
        return (int)w;
    resp[got] = '\0';
    int status;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
        return -EPROTO;
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, cap, "%s", b ? b + 4 : "");
    return status;
}

static void *fetch(void *arg)
{
    job *j = arg;
    fetcher *f = j->f;
    int rc = rf_sem_acquire(&f->permits); /* at most K past this point */
    if (rc < 0)
        return RF_ERR_PTR(rc); /* cancelled while waiting for a permit */
    if (++f->in_flight > f->max_in_flight)
        f->max_in_flight = f->in_flight;
    char path[64], body[64];
    if (j->i == f->fail_at)
        snprintf(path, sizeof path, "/fail");
    else
        snprintf(path, sizeof path, "/item/%ld", j->i);
    int status = http_get(f->port, path, body, sizeof body);
    f->in_flight--;
    rf_sem_release(&f->permits);
    if (status == 200 && strcmp(body, "hello world!") == 0) {
        f->ok++;
        return NULL;
    }
    if (status == -ECANCELED)
        return RF_ERR_PTR(status); /* the group stopped us */
    if (f->failed++ == 0) {
        if (status < 0)
            snprintf(f->first_error, sizeof f->first_error, "%s: %s", path,
                     rf_strerror(status));
        else
            snprintf(f->first_error, sizeof f->first_error, "%s: HTTP %d",
                     path, status);
    }
    return RF_ERR_PTR(-EIO);
}

/* ---- the server in this loop (when no --port is given) ---- */

static uint64_t g_delay_ns;

static void *serve_one(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char req[1024];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t r = rf_recv(fd, req + got, sizeof req - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    req[got] = '\0';
    if (rf_sleep(g_delay_ns) == 0) {
        bool fail = strncmp(req, "GET /fail ", 10) == 0;
        const char *resp =
            fail ? "HTTP/1.1 500 Internal Server Error\r\n"
                   "Content-Length: 0\r\nConnection: close\r\n\r\n"
                 : "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   "Content-Length: 12\r\nConnection: close\r\n\r\n"
                   "hello world!";
        rf_send_all(fd, resp, strlen(resp), 0, NULL);
    }
    rf_close(fd);
    return NULL;
}

static void *server(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    rf_acceptor *acc;
    ex_check(rf_acceptor_open(lfd, SOCK_CLOEXEC, &acc), "rf_acceptor_open");
    int fd;
    /* Until it is cancelled: then rf_acceptor_next returns -ECANCELED. */
    while ((fd = rf_acceptor_next(acc)) >= 0) {
        rf_task *t = rf_spawn(serve_one, (void *)(intptr_t)fd);
        if (!t)
            rf_close(fd);
        rf_task_release(t); /* detached: it closes its connection */
    }
    rf_acceptor_close(acc);
    rf_close(lfd);
    return NULL;
}

/* ---- main ---- */

typedef struct config {
    long urls, limit, fail_at, port;
    double delay;
} config;

static void *fetch_main(void *arg)
{
    const config *c = arg;
    fetcher f = {.fail_at = c->fail_at};
    rf_task *srv = NULL;
    if (c->port > 0) {
        f.port = (uint16_t)c->port;
    } else {
        int lfd;
        ex_check(rf_tcp_listen(HOST, 0, 1024, &lfd), "rf_tcp_listen");
        f.port = (uint16_t)rf_sock_port(lfd);
        g_delay_ns = ex_ns(c->delay);
        srv = ex_spawn(server, (void *)(intptr_t)lfd, "server");
    }
    printf("fetching %ld URLs from a local server, at most %ld at a time\n",
           c->urls, c->limit);

    uint64_t start = rf_now_ns();
    ex_check(rf_sem_init(&f.permits, (unsigned)c->limit, (unsigned)c->limit),
             "rf_sem_init");
    job *jobs = calloc((size_t)c->urls, sizeof(*jobs));
    if (!jobs)
        ex_die("calloc", -ENOMEM);
    rf_group g;
    ex_check(rf_group_init(&g), "rf_group_init");
    for (long i = 0; i < c->urls; i++) {
        jobs[i] = (job){&f, i};
        if (!rf_group_spawn(&g, fetch, &jobs[i], NULL))
            break; /* ECANCELED: the group has already failed */
    }
    int rc = rf_group_wait(&g);
    double secs = ex_elapsed_s(start);
    if (rc == 0) {
        printf("fetched %ld of %ld: all 200 OK, body \"hello world!\"\n",
               f.ok, c->urls);
    } else {
        printf("first failure: %s\n", f.first_error);
        printf("the group cancelled the rest: %ld fetched, %ld failed, "
               "%ld cancelled or not started\n",
               f.ok, f.failed, c->urls - f.ok - f.failed);
    }
    printf("most in flight at once: %ld (limit %ld)\n", f.max_in_flight,
           c->limit);
    printf("%.2f seconds\n", secs);
    rf_group_fini(&g);
    ex_check(rf_sem_fini(&f.permits), "rf_sem_fini");
    free(jobs);
    if (srv) {
        rf_cancel(srv);
        rf_join(srv, NULL); /* -ECANCELED: we cancelled it */
        rf_task_release(srv);
    }
    bool good = f.max_in_flight <= c->limit &&
                (rc == 0) == (c->fail_at < 0 || c->fail_at >= c->urls);
    return good ? NULL : RF_ERR_PTR(-EIO);
}

int main(int argc, char **argv)
{
    config c = {.urls = 100, .limit = 8, .fail_at = -1, .port = 0,
                .delay = 0.02};
    const ex_option opts[] = {
        {"--urls", "N", "URLs to fetch (default 100)", NULL, NULL, &c.urls},
        {"--limit", "K", "requests in flight at most (default 8)", NULL,
         NULL, &c.limit},
        {"--fail-at", "I", "URL number I fails with HTTP 500", NULL, NULL,
         &c.fail_at},
        {"--port", "P", "use the server on 127.0.0.1:P", NULL, NULL, &c.port},
        {"--delay", "S", "the local server's delay (default 0.02 s)", NULL,
         &c.delay, NULL},
        {0},
    };
    ex_parse_args(argc, argv, opts);
    if (c.urls < 1 || c.urls > 100000 || c.limit < 1 || c.limit > 10000 ||
        c.port < 0 || c.port > 65535 || c.delay < 0 || c.delay > 60 ||
        (c.fail_at >= 0 && c.port > 0))
        ex_bad_arg(opts, "values out of range (--fail-at needs the local "
                         "server)", NULL);
    void *res = ex_run(fetch_main, &c);
    return res == NULL ? 0 : 1;
}
