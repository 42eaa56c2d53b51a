/*
 * echo_server: every byte a client sends comes back to it.
 *
 *   echo_server [--port 7000] [--host 127.0.0.1] [--grace 2]
 *
 * One task per connection, written as blocking code would be: receive,
 * send it all back (rf_send_all: a peer that has gone is -EPIPE, never
 * SIGPIPE), again. Each rf_recv / rf_send_all suspends only that
 * connection's task; the loop serves the others meanwhile. Prints
 * "listening on HOST:PORT" when ready; SIGINT or SIGTERM stops it
 * gracefully (see ex_server_main in common.h) with exit status 0.
 * Try it with echo_client, or `nc 127.0.0.1 7000`.
 */
#define _GNU_SOURCE
#include "common.h"

static void echo(ex_conn *c)
{
    char buf[16384];
    for (;;) {
        ssize_t n = rf_recv(c->fd, buf, sizeof buf, 0);
        if (n <= 0)
            return; /* end of file, error, or the server is stopping */
        if (rf_send_all(c->fd, buf, (size_t)n, 0, NULL) < 0)
            return;
    }
}

int main(int argc, char **argv)
{
    ex_server s = {.host = "127.0.0.1", .port = 7000, .grace_s = 2,
                   .serve = echo};
    ex_option opts[3] = {{0}};
    ex_server_options(&s, opts);
    ex_parse_args(argc, argv, opts);
    return ex_server_run(&s);
}
