/*
 * echo_epoll: the W6 plumbing of echo_epoll.c as a program, so that
 * bench/compare drives every echo server (ringfiber's examples/echo_server,
 * the peers of bench/peers/, and this file's epoll server) with one and the
 * same load client, each server in a process of its own.
 *
 *   echo_epoll server [--conns 50]
 *       The hand-written epoll server (epoll_echo_serve) on 127.0.0.1 at an
 *       ephemeral port. Prints "listening on 127.0.0.1:PORT" like the other
 *       servers and serves --conns connections at a time (a load run),
 *       one run after the other, until it is killed.
 *
 *   echo_epoll load PORT [--conns 50] [--size 64] [--seconds 2]
 *                        [--warmup 2000]
 *       The load client (echo_load_*): --conns connections to
 *       127.0.0.1:PORT, one --size message in flight on each (ping-pong);
 *       --warmup messages, then --seconds of measurement. Prints one JSON
 *       line: msgs_per_s, p50_us, p99_us, max_us, msgs, seconds.
 *
 * Start both under the same `taskset -c N` (docs/benchmarks.md, "Pinning").
 */
#define _GNU_SOURCE
#include "echo_epoll.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr,
            "usage: echo_epoll server [--conns N]\n"
            "       echo_epoll load PORT [--conns N] [--size BYTES] "
            "[--seconds S] [--warmup MSGS]\n");
    exit(2);
}

static double num_arg(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        usage();
    char *end;
    double v = strtod(argv[++*i], &end);
    if (*end != '\0' || v < 0)
        usage();
    return v;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int run_server(int conns)
{
    uint16_t port;
    int lfd = echo_listen_loopback(1024, &port);
    if (lfd < 0) {
        fprintf(stderr, "echo_epoll: listen: %s\n", strerror(-lfd));
        return 1;
    }
    printf("listening on 127.0.0.1:%u\n", (unsigned)port);
    fflush(stdout);
    for (;;) {
        int rc = epoll_echo_serve(lfd, conns);
        if (rc < 0) {
            fprintf(stderr, "echo_epoll: serve: %s\n", strerror(-rc));
            close(lfd);
            return 1;
        }
    }
}

static int run_load(long port, int conns, size_t size, double seconds,
                    long warmup)
{
    echo_load c;
    int rc = echo_load_open(&c, (uint16_t)port, conns, size);
    if (rc == 0)
        rc = echo_load_start(&c);
    for (long i = 0; rc == 0 && i < warmup; i++) {
        int64_t r = echo_load_next(&c);
        if (r < 0)
            rc = (int)r;
    }
    /* Round trips in ns, capped at UINT32_MAX (4.3 s); the array grows. */
    size_t n = 0, cap = 1u << 20;
    uint32_t *lat = malloc(cap * sizeof *lat);
    if (!lat)
        rc = -ENOMEM;
    uint64_t t0 = echo_now_ns(), end = t0 + (uint64_t)(seconds * 1e9), t1 = t0;
    while (rc == 0) {
        int64_t r = echo_load_next(&c);
        if (r < 0) {
            rc = (int)r;
            break;
        }
        if (n == cap) {
            uint32_t *more = realloc(lat, 2 * cap * sizeof *lat);
            if (!more) {
                rc = -ENOMEM;
                break;
            }
            lat = more;
            cap *= 2;
        }
        lat[n++] = r > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)r;
        /* The clock is read once per 64 messages: cheap, and still
         * within a few microseconds of the end. */
        if ((n & 63) == 0 && (t1 = echo_now_ns()) >= end)
            break;
    }
    echo_load_close(&c);
    if (rc != 0) {
        free(lat);
        fprintf(stderr, "echo_epoll: load: %s\n", strerror(-rc));
        return 1;
    }
    qsort(lat, n, sizeof *lat, cmp_u32);
    double secs = (double)(t1 - t0) / 1e9;
    printf("{\"msgs_per_s\": %.1f, \"p50_us\": %.2f, \"p99_us\": %.2f, "
           "\"max_us\": %.2f, \"msgs\": %zu, \"seconds\": %.3f}\n",
           (double)n / secs, lat[n / 2] / 1e3, lat[(size_t)(0.99 * (double)(n - 1))] / 1e3,
           lat[n - 1] / 1e3, n, secs);
    free(lat);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    int server = strcmp(argv[1], "server") == 0;
    if (!server && strcmp(argv[1], "load") != 0)
        usage();
    int i = 2;
    long port = 0;
    if (!server) {
        if (argc < 3)
            usage();
        char *end;
        port = strtol(argv[2], &end, 10);
        if (*end != '\0' || port <= 0 || port > 65535)
            usage();
        i = 3;
    }
    int conns = 50;
    size_t size = 64;
    double seconds = 2;
    long warmup = 2000;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--conns") == 0)
            conns = (int)num_arg(argc, argv, &i);
        else if (!server && strcmp(argv[i], "--size") == 0)
            size = (size_t)num_arg(argc, argv, &i);
        else if (!server && strcmp(argv[i], "--seconds") == 0)
            seconds = num_arg(argc, argv, &i);
        else if (!server && strcmp(argv[i], "--warmup") == 0)
            warmup = (long)num_arg(argc, argv, &i);
        else
            usage();
    }
    if (conns < 1 || conns > 100000 || size < 1 || size > (1u << 20) ||
        seconds <= 0)
        usage();
    return server ? run_server(conns) : run_load(port, conns, size, seconds,
                                                 warmup);
}
