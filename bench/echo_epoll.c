/*
 * The W6 baseline server and the load client; see echo_epoll.h.
 */
#define _GNU_SOURCE
#include "echo_epoll.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t echo_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int echo_listen_loopback(int backlog, uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* ---- the baseline server ---- */

enum { SERVE_BUF = 4096 };

typedef struct serve_conn {
    int fd;
    size_t off, len; /* bytes of buf still to write back */
    char buf[SERVE_BUF];
} serve_conn;

static int serve_conn_open(int epfd, int fd)
{
    serve_conn *c = malloc(sizeof *c);
    if (!c)
        return -ENOMEM;
    c->fd = fd;
    c->off = c->len = 0;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = -errno;
        free(c);
        return err;
    }
    return 0;
}

/* Write back what is pending; switch the interest to EPOLLOUT while the
 * socket is full, back to EPOLLIN when everything went out. Returns false
 * when the connection is finished. */
static bool serve_flush(int epfd, serve_conn *c, bool was_waiting)
{
    while (c->off < c->len) {
        ssize_t w = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return false;
            if (!was_waiting) {
                struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
            }
            return true;
        }
        c->off += (size_t)w;
    }
    c->off = c->len = 0;
    if (was_waiting) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
    return true;
}

/* One event for one connection. Returns false when it is finished. */
static bool serve_event(int epfd, serve_conn *c, uint32_t events)
{
    if (c->len > 0)
        return serve_flush(epfd, c, true);
    for (;;) {
        ssize_t r = recv(c->fd, c->buf, sizeof c->buf, 0);
        if (r > 0) {
            c->len = (size_t)r;
            return serve_flush(epfd, c, false);
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return !(events & (EPOLLHUP | EPOLLERR));
        return false; /* EOF or error */
    }
}

int epoll_echo_serve(int lfd, int nconns)
{
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return -errno;
    static char listen_tag;
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listen_tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        int err = -errno;
        close(epfd);
        return err;
    }
    int accepted = 0, live = 0, rc = 0;
    struct epoll_event evs[64];
    while (accepted < nconns || live > 0) {
        int n = epoll_wait(epfd, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &listen_tag) {
                while (accepted < nconns) {
                    int fd = accept4(lfd, NULL, NULL,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break; /* EAGAIN: the rest come with a later event */
                    accepted++;
                    if (serve_conn_open(epfd, fd) == 0)
                        live++;
                    else
                        close(fd);
                }
                if (accepted == nconns)
                    epoll_ctl(epfd, EPOLL_CTL_DEL, lfd, NULL);
                continue;
            }
            serve_conn *c = evs[i].data.ptr;
            if (!serve_event(epfd, c, evs[i].events)) {
                close(c->fd); /* also removes it from the epoll set */
                free(c);
                live--;
            }
        }
    }
    close(epfd);
    return rc;
}

/* ---- the load client ---- */

int echo_load_open(echo_load *c, uint16_t port, int nconns, size_t msg_size)
{
    memset(c, 0, sizeof *c);
    c->epfd = -1;
    c->nconns = nconns;
    c->msg_size = msg_size;
    c->fds = malloc(sizeof(int) * (size_t)nconns);
    c->sent_ns = calloc((size_t)nconns, sizeof(uint64_t));
    c->got = calloc((size_t)nconns, sizeof(size_t));
    c->msg = malloc(msg_size);
    c->rbuf = malloc(msg_size);
    c->events = calloc((size_t)nconns, sizeof(struct epoll_event));
    if (!c->fds || !c->sent_ns || !c->got || !c->msg || !c->rbuf ||
        !c->events) {
        echo_load_close(c);
        return -ENOMEM;
    }
    for (int i = 0; i < nconns; i++)
        c->fds[i] = -1;
    memset(c->msg, 'x', msg_size);
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (c->epfd < 0) {
        int err = -errno;
        echo_load_close(c);
        return err;
    }
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < nconns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            int err = -errno;
            if (fd >= 0)
                close(fd);
            echo_load_close(c);
            return err;
        }
        c->fds[i] = fd;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            int err = -errno;
            echo_load_close(c);
            return err;
        }
    }
    return 0;
}

/* Sends connection i's message whole (64 bytes always fit in an empty
 * socket buffer; the loop is for correctness, not speed). */
static int load_send(echo_load *c, int i)
{
    size_t off = 0;
    c->sent_ns[i] = echo_now_ns();
    while (off < c->msg_size) {
        ssize_t w = send(c->fds[i], c->msg + off, c->msg_size - off,
                         MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (size_t)w;
    }
    c->got[i] = 0;
    return 0;
}

int echo_load_start(echo_load *c)
{
    for (int i = 0; i < c->nconns; i++) {
        int rc = load_send(c, i);
        if (rc)
            return rc;
    }
    return 0;
}

int64_t echo_load_next(echo_load *c)
{
    struct epoll_event *evs = c->events;
    for (;;) {
        while (c->next == c->nevents) {
            int n = epoll_wait(c->epfd, evs, c->nconns, 10000);
            if (n < 0 && errno != EINTR)
                return -errno;
            if (n == 0)
                return -ETIMEDOUT; /* the server stopped answering */
            c->nevents = n < 0 ? 0 : n;
            c->next = 0;
        }
        int i = (int)evs[c->next++].data.u32;
        ssize_t r = recv(c->fds[i], c->rbuf, c->msg_size - c->got[i],
                         MSG_DONTWAIT);
        if (r == 0)
            return -ECONNRESET;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -errno;
        }
        c->got[i] += (size_t)r;
        if (c->got[i] < c->msg_size)
            continue; /* the rest of this echo comes with a later event */
        uint64_t rtt = echo_now_ns() - c->sent_ns[i];
        int rc = load_send(c, i);
        return rc ? rc : (int64_t)rtt;
    }
}

void echo_load_close(echo_load *c)
{
    for (int i = 0; c->fds && i < c->nconns; i++)
        if (c->fds[i] >= 0)
            close(c->fds[i]);
    if (c->epfd >= 0)
        close(c->epfd);
    free(c->fds);
    free(c->sent_ns);
    free(c->got);
    free(c->msg);
    free(c->rbuf);
    free(c->events);
    memset(c, 0, sizeof *c);
    c->epfd = -1;
}
