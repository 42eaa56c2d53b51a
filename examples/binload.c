/*
 * A load generator for a made-up binary protocol on ringfiber-load: the
 * protocol is all it writes; connections, loops, the open-loop schedule
 * and the latencies are the library's. A request is a 4-byte id, a 4-byte
 * length and that many bytes; the answer: the id, the length, the bytes
 * reversed.
 *   binload serve                       serve on 127.0.0.1 (port printed)
 *   binload load PORT [RATE] [SECONDS]  RATE as rfload's -R; 0: closed loop
 */
#include <ringfiber_load.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PAYLOAD = 32 };

typedef struct { uint32_t id, len; } head;

/* n bytes, or fewer if the peer closed, or a negative errno. */
static ssize_t recv_all(int fd, char *p, size_t n)
{
    size_t got = 0;
    for (ssize_t k = 1; got < n && k > 0; got += (size_t)k)
        if ((k = rf_recv(fd, p + got, n - got, 0)) <= 0)
            return k < 0 ? k : (ssize_t)got;
    return (ssize_t)got;
}
typedef struct { uint32_t next_id; } conn_state;

static int start(void *arg, rfl_conn *c)
{
    return (void)arg, (c->user = calloc(1, sizeof(conn_state))) ? 0 : -ENOMEM;
}

static void stop(void *arg, rfl_conn *c) { (void)arg, free(c->user); }

/* One request and its answer; a wrong answer counts as a mismatch. */
static int exchange(void *arg, rfl_conn *c)
{
    (void)arg;
    conn_state *st = c->user;
    char out[sizeof(head) + PAYLOAD], in[sizeof out];
    uint32_t id = st->next_id++;
    head h = {htonl(id), htonl(PAYLOAD)};
    memcpy(out, &h, sizeof h);
    for (int i = 0; i < PAYLOAD; i++)
        out[sizeof h + i] = (char)('a' + (id + (unsigned)i) % 26);
    ssize_t n = rf_send_all(c->fd, out, sizeof out, 0, NULL);
    if (n < 0)
        return (int)n;
    rfl_conn_sent(c, sizeof out);
    n = recv_all(c->fd, in, sizeof in);
    if (n < 0)
        return (int)n;
    if ((size_t)n < sizeof in)
        return -ECONNRESET;
    rfl_conn_received(c, sizeof in);
    bool ok = !memcmp(in, out, sizeof h);
    for (int i = 0; i < PAYLOAD; i++)
        ok &= in[sizeof h + i] == out[sizeof h + PAYLOAD - 1 - i];
    return ok ? RFL_ANSWER : RFL_ANSWER_BAD;
}

/* The server: a task per connection, answering until the client closes. */
static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char b[sizeof(head) + PAYLOAD], r[sizeof b];
    while (recv_all(fd, b, sizeof b) == (ssize_t)sizeof b) {
        memcpy(r, b, sizeof(head));
        for (int i = 0; i < PAYLOAD; i++)
            r[sizeof(head) + i] = b[sizeof b - 1 - i];
        if (rf_send_all(fd, r, sizeof r, 0, NULL) < 0)
            break;
    }
    rf_close(fd);
    return NULL;
}

static void *serve(void *arg)
{
    (void)arg;
    int lfd, fd;
    if (rf_tcp_listen("127.0.0.1", 0, 0, &lfd) != 0)
        return RF_ERR_PTR(-EADDRINUSE);
    printf("listening on 127.0.0.1:%d\n", rf_sock_port(lfd));
    fflush(stdout);
    while ((fd = rf_accept(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
        rf_task *t = rf_spawn(serve_conn, (void *)(intptr_t)fd);
        if (t)
            rf_task_release(t);
        else
            rf_close(fd);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "serve"))
        return rf_run(serve, NULL, NULL) == 0 ? 0 : 1;
    if (argc < 3 || strcmp(argv[1], "load") != 0) {
        fprintf(stderr, "usage: binload serve | binload load PORT [RATE] "
                        "[SECONDS]\n");
        return 2;
    }
    double seconds = argc > 4 ? atof(argv[4]) : 2;
    rfl_schedule rate;
    char why[160];
    bool open = argc > 3 && strcmp(argv[3], "0") != 0;
    if (open && rfl_schedule_parse(argv[3], (uint64_t)(seconds * 1e9), &rate,
                                   why, sizeof why) != 0) {
        fprintf(stderr, "binload: rate: %s\n", why);
        return 2;
    }
    static const rfl_proto proto = {start, exchange, stop};
    rfl_load_opts o = {
        .host = "127.0.0.1", .port = (uint16_t)atoi(argv[2]),
        .connections = 16, .threads = 2,
        .duration_ns = (uint64_t)(seconds * 1e9),
        .rate = open ? &rate : NULL, .timeout_ns = RF_NSEC_PER_SEC,
        .proto = &proto,
    };
    rfl_result *r = malloc(sizeof *r);
    int rc = r ? rfl_load(&o, r) : -ENOMEM;
    if (rc != 0) {
        fprintf(stderr, "binload: %s\n", rf_strerror(rc));
        free(r);
        return 1;
    }
    char p50[32], p99[32], max[32];
    rfl_format_ns(p50, sizeof p50, (double)rfl_hist_percentile(&r->hist, 50));
    rfl_format_ns(p99, sizeof p99, (double)rfl_hist_percentile(&r->hist, 99));
    rfl_format_ns(max, sizeof max, (double)r->hist.max);
    printf("%llu answers in %.2f s (%.0f/s), %llu wrong, %llu errors; "
           "p50 %s p99 %s max %s\n",
           (unsigned long long)r->completed, r->elapsed_s,
           r->completed / r->elapsed_s, (unsigned long long)r->err_mismatch,
           (unsigned long long)(r->err_connect + r->err_read + r->err_write +
                                r->err_timeout),
           p50, p99, max);
    rfl_result_release(r);
    free(r);
    return 0;
}
