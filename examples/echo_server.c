/*
 * echo_server: every byte a client sends comes back to it.
 *
 *   echo_server [--port 7000] [--host 127.0.0.1] [--grace 2]
 *               [--max-conns 10000] [--idle-timeout 60]
 *               [--loops 1] [--accept reuseport|handoff]
 *               [--recv multishot|plain]
 *
 * One task per connection, written as blocking code would be: receive,
 * send it all back (rf_send_all: a peer that has gone is -EPIPE, never
 * SIGPIPE), again. Each rf_recv / rf_send_all suspends only that
 * connection's task; the loop serves the others meanwhile. Each wait on
 * the client is bounded by the task's deadline (rf_deadline_set, through
 * ex_idle_deadline): a client that sends nothing for --idle-timeout
 * seconds, or reads none of its echo for as long, is disconnected, so an
 * idle or stuck client does not hold a connection for ever. At most
 * --max-conns connections are served at once (see ex_server in common.h).
 * With --loops N it serves on N loops, one per thread (see "many loops"
 * in common.h and Many cores in the README).
 * Its loops receive with RF_LOOP_RECV_MULTISHOT (one multishot receive per
 * connection, into the loop's buffers: docs/scheduler.md, "Multishot
 * receive"), which it can use: each connection has one reading task and
 * is closed with rf_close; --recv plain turns it off.
 * Prints "listening on HOST:PORT" when ready; SIGINT or SIGTERM stops it
 * gracefully (see ex_server_main in common.h) with exit status 0.
 * Try it with echo_client, or `nc 127.0.0.1 7000`.
 */
#define _GNU_SOURCE
#include "common.h"

static void echo(ex_conn *c)
{
    /* On the task's stack, whose pages are touched (and faulted in) as a
     * frame reaches them: 4 KiB, as the epoll server of the benchmarks
     * uses per connection (a page or two of stack); 16 KiB cost each
     * connection three more first-touch faults (W6 at 10,000
     * connections, bench/README.md). */
    char buf[4096];
    for (;;) {
        ex_idle_deadline(c->srv);
        ssize_t n = rf_recv(c->fd, buf, sizeof buf, 0);
        if (n <= 0)
            return; /* end of file, error, idle too long, or stopping */
        ex_idle_deadline(c->srv);
        if (rf_send_all(c->fd, buf, (size_t)n, 0, NULL) < 0)
            return;
    }
}

int main(int argc, char **argv)
{
    ex_server s = {.host = "127.0.0.1", .port = 7000, .grace_s = 2,
                   .idle_s = 60, .serve = echo, .recv_mode = "multishot"};
    ex_option opts[EX_SERVER_NOPTS + 1] = {{0}};
    ex_server_options(&s, opts);
    ex_parse_args(argc, argv, opts);
    return ex_server_run(&s);
}
