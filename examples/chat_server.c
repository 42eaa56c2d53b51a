/*
 * chat_server: a chat room. Every line a client sends is broadcast to all
 * the other clients, as "userN: line".
 *
 *   chat_server [--port 7001] [--host 127.0.0.1] [--grace 2]
 *               [--backlog BYTES]
 *
 * Each member has a reader task (the connection's task: it reads lines
 * and broadcasts them) and, while it has output pending, a writer task
 * that drains its outbox. A broadcast never waits: it copies the line
 * into each recipient's outbox and moves on, so one slow reader cannot
 * stall the room.
 *
 * Slow clients: the outbox is bounded (--backlog, default 64 KiB, on top
 * of what the kernel's socket buffers hold). A member whose outbox would
 * overflow is disconnected: its socket is shut down, the room is told
 * ("* user3 dropped: too slow") and the server says so on stderr. We
 * disconnect rather than drop lines because a chat with silent holes in
 * it is worse than an honest disconnect the client can notice and
 * recover from (reconnect).
 *
 * Lines starting with "* " are the room's own notices: a newcomer gets
 * "* welcome userN", the others "* userN joined" / "* userN left".
 */
#define _GNU_SOURCE
#include "common.h"

typedef struct member {
    struct member *prev, *next; /* room */
    ex_conn *conn;
    char name[32];
    char *out;             /* outbox: a ring of backlog bytes */
    size_t head, len;
    rf_task *writer;       /* draining the outbox, NULL when idle */
    bool gone;             /* left or dropped: nothing more is queued */
} member;

typedef struct room {
    member members;        /* list head */
    size_t backlog;
    long next_id;
} room;

static long backlog_opt = 64 * 1024;

/* Shut the member's socket both ways: its reader sees end-of-file, its
 * writer's send fails. shutdown(2) never blocks, and deliver() must not
 * suspend (the room list must not change under a broadcast). */
static void drop(room *r, member *m, const char *why)
{
    if (m->gone)
        return;
    m->gone = true;
    fprintf(stderr, "%s: %s disconnected: %s\n", ex_prog, m->name, why);
    shutdown(m->conn->fd, SHUT_RDWR);
    (void)r;
}

static void *writer_task(void *arg)
{
    member *m = arg;
    room *r = m->conn->srv->data;
    while (m->len > 0) {
        size_t chunk = r->backlog - m->head;
        if (chunk > m->len)
            chunk = m->len;
        ssize_t n = rf_send(m->conn->fd, m->out + m->head, chunk, 0);
        if (n < 0) {
            if (n != -ECANCELED)
                drop(r, m, rf_strerror((int)n));
            break;
        }
        m->head = (m->head + (size_t)n) % r->backlog;
        m->len -= (size_t)n;
    }
    /* Detach: the record is reclaimed when the reader, which may still
     * hold a reference, lets go of it. */
    rf_task *self = m->writer;
    m->writer = NULL;
    rf_task_release(self);
    return NULL;
}

/* Queue text for m. Never suspends. */
static void deliver(room *r, member *m, const char *text, size_t len)
{
    if (m->gone)
        return;
    if (len > r->backlog - m->len) {
        char why[96];
        snprintf(why, sizeof why, "too slow (%zu bytes waiting)", m->len);
        drop(r, m, why);
        return;
    }
    size_t tail = (m->head + m->len) % r->backlog;
    size_t first = r->backlog - tail < len ? r->backlog - tail : len;
    memcpy(m->out + tail, text, first);
    memcpy(m->out, text + first, len - first);
    m->len += len;
    if (!m->writer) {
        rf_spawn_options o = {.name = "writer"};
        m->writer = rf_spawn_opts(writer_task, m, &o);
        if (!m->writer)
            drop(r, m, "no memory for a writer task");
    }
}

static void broadcast(room *r, member *from, const char *text, size_t len)
{
    for (member *m = r->members.next; m != &r->members; m = m->next) {
        if (m != from)
            deliver(r, m, text, len);
    }
    /* Tell the room about the members dropped just now. */
    for (member *m = r->members.next; m != &r->members;) {
        member *next = m->next;
        if (m->gone && m != from && m->prev) {
            m->prev->next = m->next;
            m->next->prev = m->prev;
            m->prev = m->next = NULL;
        }
        m = next;
    }
}

static void notice(room *r, member *from, const char *fmt, const char *name)
{
    char line[96];
    int n = snprintf(line, sizeof line, fmt, name);
    broadcast(r, from, line, (size_t)n);
}

/* Wait until the writer is done. If this task is cancelled meanwhile (a
 * stop whose grace ran out), the writer is cancelled too, and this task
 * still waits for it to unwind (rf_join_nocancel): the writer uses the
 * member's outbox. */
static void writer_wait(member *m, bool flush)
{
    rf_task *w = m->writer;
    if (!w)
        return;
    rf_task_retain(w);
    if (!flush || rf_join(w, NULL) == -ECANCELED) {
        if (!rf_done(w))
            rf_cancel(w);
        rf_join_nocancel(w, NULL);
    }
    rf_task_release(w);
}

static void chat(ex_conn *c)
{
    room *r = c->srv->data;
    member *m = calloc(1, sizeof *m);
    char *out = malloc(r->backlog);
    if (!m || !out) {
        free(m);
        free(out);
        return;
    }
    m->conn = c;
    m->out = out;
    snprintf(m->name, sizeof m->name, "user%ld", ++r->next_id);
    m->next = &r->members;
    m->prev = r->members.prev;
    m->prev->next = m;
    r->members.prev = m;
    notice(r, m, "* %s joined\n", m->name);
    char hello[64];
    int hn = snprintf(hello, sizeof hello, "* welcome %s\n", m->name);
    deliver(r, m, hello, (size_t)hn);

    /* Lines: "name: " + up to sizeof in - 1 bytes + "\n". */
    char in[4096], line[sizeof in + sizeof m->name + 3];
    size_t have = 0;
    while (!m->gone) {
        ssize_t n = rf_recv(c->fd, in + have, sizeof in - have, 0);
        if (n <= 0)
            break;
        have += (size_t)n;
        size_t start = 0;
        for (;;) {
            char *nl = memchr(in + start, '\n', have - start);
            size_t end = nl ? (size_t)(nl - in) : have;
            if (!nl && !(start == 0 && have == sizeof in))
                break; /* wait for the rest of the line */
            size_t len = end - start;
            if (len > 0 && in[start + len - 1] == '\r')
                len--;
            int k = snprintf(line, sizeof line, "%s: %.*s\n", m->name,
                             (int)len, in + start);
            broadcast(r, m, line, (size_t)k);
            start = nl ? end + 1 : end;
        }
        memmove(in, in + start, have - start);
        have -= start;
    }

    /* Leaving: out of the room first, so that nothing more is queued. */
    bool dropped = m->gone;
    m->gone = true;
    if (m->prev) {
        m->prev->next = m->next;
        m->next->prev = m->prev;
        m->prev = m->next = NULL;
    }
    notice(r, NULL, dropped ? "* %s dropped: too slow\n" : "* %s left\n",
           m->name);
    /* A member who left gets nothing more; on a server that is stopping,
     * everyone gets what was queued for them (within the grace period). */
    writer_wait(m, c->srv->stopping && !dropped);
    free(m->out);
    free(m);
}

int main(int argc, char **argv)
{
    room r = {.members = {0}};
    r.members.next = r.members.prev = &r.members;
    ex_server s = {.host = "127.0.0.1", .port = 7001, .grace_s = 2,
                   .serve = chat, .data = &r};
    ex_option opts[4] = {{0}};
    ex_server_options(&s, opts);
    opts[2] = (ex_option){"--backlog", "BYTES",
                          "output queued per client before it is "
                          "disconnected as too slow (default 65536)",
                          NULL, NULL, &backlog_opt};
    ex_parse_args(argc, argv, opts);
    if (backlog_opt < 1024 || backlog_opt > (1L << 30))
        ex_bad_arg(opts, "--backlog must be between 1024 and 1 GiB", NULL);
    r.backlog = (size_t)backlog_opt;
    return ex_server_run(&s);
}
