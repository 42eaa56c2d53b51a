/*
 * The W6 echo server on libuv, for bench/compare: uv_tcp on 127.0.0.1 at
 * an ephemeral port, one uv_loop, TCP_NODELAY, whatever a read returns is
 * written back. The write goes out with uv_try_write (on loopback it
 * always completes at once); a remainder, if the socket is ever full, is
 * copied into a uv_write request, libuv's ordinary path.
 *
 *   uv_echo      prints "listening on 127.0.0.1:PORT"; SIGTERM ends it
 */
#include <uv.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct conn {
    uv_tcp_t tcp;
    char buf[16384];
} conn;

typedef struct write_req {
    uv_write_t req;
    char data[];
} write_req;

static void on_close(uv_handle_t *h)
{
    free(h->data);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    conn *c = h->data;
    *buf = uv_buf_init(c->buf, sizeof c->buf);
}

static void on_written(uv_write_t *req, int status)
{
    if (status < 0)
        uv_close((uv_handle_t *)req->handle, on_close);
    free(req);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (nread == 0)
        return;
    uv_buf_t out = uv_buf_init(buf->base, (unsigned)nread);
    int w = uv_try_write(s, &out, 1);
    if (w == nread)
        return;
    if (w < 0 && w != UV_EAGAIN) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    size_t done = w > 0 ? (size_t)w : 0, rest = (size_t)nread - done;
    write_req *r = malloc(sizeof *r + rest);
    if (!r) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    memcpy(r->data, buf->base + done, rest);
    out = uv_buf_init(r->data, (unsigned)rest);
    if (uv_write(&r->req, s, &out, 1, on_written) < 0) {
        free(r);
        uv_close((uv_handle_t *)s, on_close);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    conn *c = malloc(sizeof *c);
    if (!c)
        return;
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(void)
{
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_tcp_init(loop, &server);
    uv_ip4_addr("127.0.0.1", 0, &addr);
    int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    if (rc < 0) {
        fprintf(stderr, "uv_echo: %s\n", uv_strerror(rc));
        return 1;
    }
    int len = sizeof addr;
    uv_tcp_getsockname(&server, (struct sockaddr *)&addr, &len);
    printf("listening on 127.0.0.1:%u\n", (unsigned)ntohs(addr.sin_port));
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}
