/*
 * W6 plumbing that does not involve ringfiber: the hand-written epoll echo
 * server (the baseline) and the epoll load client that drives every
 * contender the same way.
 */
#ifndef RINGFIBER_BENCH_ECHO_EPOLL_H
#define RINGFIBER_BENCH_ECHO_EPOLL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A TCP socket listening on 127.0.0.1 at an ephemeral port (written to
 * *port). Returns the fd or -errno. */
int echo_listen_loopback(int backlog, uint16_t *port);

/*
 * The baseline server: one thread, one epoll set, level-triggered,
 * non-blocking sockets; whatever a read returns is written back (the
 * classic shape of a C event-loop server). It accepts exactly nconns
 * connections on lfd (which it does not close) and returns once all of
 * them have been closed by the peer: 0, or -errno on a setup failure.
 */
int epoll_echo_serve(int lfd, int nconns);

/*
 * The load client: nconns connections, each with one msg_size message in
 * flight at a time (ping-pong). echo_load_next() blocks until one echo has
 * come back whole, sends that connection's next message and returns the
 * round-trip time in ns (or -errno). Connections whose echo is ready are
 * served in the order epoll reports them, as a real client would.
 */
typedef struct echo_load {
    int epfd;
    int nconns;
    size_t msg_size;
    int *fds;
    uint64_t *sent_ns;  /* when each connection's message left */
    size_t *got;        /* bytes of the current echo received */
    char *msg;
    char *rbuf;
    void *events;       /* struct epoll_event[] */
    int nevents, next;  /* events from the last epoll_wait, next to serve */
} echo_load;

int echo_load_open(echo_load *c, uint16_t port, int nconns, size_t msg_size);
/* Send the first message on every connection. */
int echo_load_start(echo_load *c);
int64_t echo_load_next(echo_load *c);
void echo_load_close(echo_load *c);

/* CLOCK_MONOTONIC in ns. */
uint64_t echo_now_ns(void);

#ifdef __cplusplus
}
#endif

#endif
