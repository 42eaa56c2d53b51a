/*
 * echo_client: load an echo server and measure it.
 *
 *   echo_client [--port 7000] [--host 127.0.0.1] [--conns 50]
 *               [--count 10000] [--size 64]
 *
 * --conns connections, one task each; every task sends --count messages
 * of --size bytes, one at a time (ping-pong: the next message leaves when
 * the echo of the previous one is back whole and checked). Prints the
 * message rate over the whole run and the round-trip latency percentiles.
 * Exit status 0 when every echo came back intact, 1 otherwise.
 */
#define _GNU_SOURCE
#include "common.h"

typedef struct client {
    const char *host;
    long port, conns, count, size;
    uint32_t *lat_ns;   /* conns x count round trips */
    long failed;        /* connections that did not finish */
} client;

typedef struct conn_arg {
    client *cl;
    long index;
} conn_arg;

/* A message whose bytes depend on the connection and the sequence number,
 * so that an echo mixed up between connections or messages is caught. */
static void fill(char *buf, long size, long conn, long seq)
{
    for (long i = 0; i < size; i++)
        buf[i] = (char)('a' + (conn * 7 + seq * 13 + i) % 26);
}

static void *conn_task(void *arg)
{
    conn_arg *a = arg;
    client *cl = a->cl;
    char *out = malloc((size_t)cl->size), *in = malloc((size_t)cl->size);
    int fd = ex_connect(cl->host, cl->port);
    const char *what = "connect";
    int rc = fd < 0 ? fd : 0;
    for (long seq = 0; rc == 0 && seq < cl->count; seq++) {
        fill(out, cl->size, a->index, seq);
        uint64_t t0 = rf_now_ns();
        what = "send";
        ssize_t sent = rf_send_all(fd, out, (size_t)cl->size, 0, NULL);
        rc = sent < 0 ? (int)sent : 0;
        for (long got = 0; rc == 0 && got < cl->size;) {
            what = "recv";
            ssize_t n = rf_recv(fd, in + got, (size_t)(cl->size - got), 0);
            if (n <= 0)
                rc = n == 0 ? -ECONNRESET : (int)n;
            else
                got += n;
        }
        if (rc == 0 && memcmp(in, out, (size_t)cl->size) != 0) {
            what = "echo";
            rc = -EPROTO;
        }
        if (rc == 0) {
            uint64_t d = rf_now_ns() - t0;
            cl->lat_ns[a->index * cl->count + seq] =
                d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        }
    }
    if (rc != 0) {
        fprintf(stderr, "%s: connection %ld: %s: %s\n", ex_prog, a->index,
                what, rf_strerror(rc));
        cl->failed++;
    }
    if (fd >= 0)
        rf_close(fd);
    free(out);
    free(in);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const uint32_t *sorted, size_t n, double p)
{
    size_t k = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[k] / 1000.0;
}

static void *client_main(void *arg)
{
    client *cl = arg;
    size_t n = (size_t)cl->conns * (size_t)cl->count;
    rf_task **tasks = calloc((size_t)cl->conns, sizeof *tasks);
    conn_arg *args = calloc((size_t)cl->conns, sizeof *args);
    cl->lat_ns = calloc(n, sizeof *cl->lat_ns);
    if (!tasks || !args || !cl->lat_ns)
        ex_die("calloc", -ENOMEM);

    uint64_t start = rf_now_ns();
    for (long i = 0; i < cl->conns; i++) {
        args[i] = (conn_arg){cl, i};
        tasks[i] = ex_spawn(conn_task, &args[i], "conn");
    }
    ex_gather(tasks, (size_t)cl->conns, NULL);
    double secs = ex_elapsed_s(start);
    ex_release_all(tasks, (size_t)cl->conns);

    printf("%ld connections x %ld messages of %ld bytes to %s:%ld\n",
           cl->conns, cl->count, cl->size, cl->host, cl->port);
    if (cl->failed == 0) {
        qsort(cl->lat_ns, n, sizeof *cl->lat_ns, cmp_u32);
        printf("%zu messages in %.3f s: %.0f messages/s\n", n, secs,
               (double)n / secs);
        printf("latency us: p50 %.1f p90 %.1f p99 %.1f max %.1f\n",
               pct_us(cl->lat_ns, n, 0.50), pct_us(cl->lat_ns, n, 0.90),
               pct_us(cl->lat_ns, n, 0.99), cl->lat_ns[n - 1] / 1000.0);
    } else {
        printf("%ld of %ld connections failed\n", cl->failed, cl->conns);
    }
    free(cl->lat_ns);
    free(args);
    free(tasks);
    return NULL;
}

int main(int argc, char **argv)
{
    client cl = {.host = "127.0.0.1", .port = 7000, .conns = 50,
                 .count = 10000, .size = 64};
    const ex_option opts[] = {
        {"--port", "P", "server port (default 7000)", NULL, NULL, &cl.port},
        {"--conns", "N", "connections, one task each (default 50)", NULL,
         NULL, &cl.conns},
        {"--count", "N", "messages per connection (default 10000)", NULL,
         NULL, &cl.count},
        {"--size", "B", "bytes per message (default 64)", NULL, NULL,
         &cl.size},
        {0},
    };
    const ex_str_option strs[] = {
        {"--host", "ADDR", "server address (default 127.0.0.1)", &cl.host},
        {0},
    };
    ex_str_options = strs;
    ex_parse_args(argc, argv, opts);
    /* Every round trip's latency is kept (4 bytes each): at most 2^28. */
    if (cl.conns < 1 || cl.count < 1 || cl.size < 1 || cl.size > (1 << 20) ||
        cl.conns > 100000 || cl.count > (1L << 28) / cl.conns)
        ex_bad_arg(opts, "--conns, --count, --size must be positive, "
                         "--conns x --count at most 2^28, --size at most "
                         "1 MiB", NULL);
    ex_run(client_main, &cl);
    return cl.failed == 0 ? 0 : 1;
}
