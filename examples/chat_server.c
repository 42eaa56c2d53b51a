/*
 * chat_server: a chat room. Every line a client sends is broadcast to all
 * the other clients, as "userN: line".
 *
 *   chat_server [--port 7001] [--host 127.0.0.1] [--grace 2]
 *               [--max-conns 10000] [--idle-timeout 600]
 *               [--backlog BYTES]
 *
 * Messages fan out through per-member queues (rf_queue). Each member has
 * a reader task (the connection's task: it reads lines and broadcasts
 * them) and a writer task that loops on rf_queue_get and sends what it
 * gets. A line becomes one message, allocated once and shared by all its
 * recipients: it holds a reference for each queue it was put in, and
 * whoever lets go of the last one frees it. A writer sends what is
 * queued for its member in one sendmsg(2) (how: see writer_task). A
 * broadcast never waits: it puts the message into each recipient's queue
 * with rf_queue_try_put and moves on, so one slow reader cannot stall the
 * room.
 *
 * Slow clients: what waits for a member is bounded twice, on top of what
 * the kernel's socket buffers hold: by --backlog bytes (default 64 KiB;
 * the bytes of the messages queued for it and not yet sent), and by its
 * queue's capacity, one message per 16 bytes of backlog (4096 by default:
 * as many as the lines one 4 KiB read from a sender can hold; the count
 * runs out first only when the messages average under 16 bytes, lines of
 * a word such as "user3: ok"). A slot is a pointer: the queue costs half
 * the backlog's size in memory, allocated when the member joins.
 * A member who would go over either is disconnected: its queue is closed,
 * its socket shut down, the room is told ("* user3 dropped: too slow")
 * and the server says so on stderr. We disconnect rather than drop lines
 * because a chat with silent holes in it is worse than an honest
 * disconnect the client can notice and recover from (reconnect).
 *
 * Idle clients: a member that sends nothing for --idle-timeout seconds
 * (default 600: a chat has quiet readers), or reads nothing of what is
 * sent to it for as long, is disconnected too ("* user3 dropped: idle"):
 * each receive of its reader and each send of its writer is bounded by
 * the task's deadline (ex_idle_deadline). --max-conns bounds the members
 * (see ex_server in common.h).
 *
 * Leaving: a member's queue is closed when it leaves. A member who left
 * (or was dropped) gets nothing more: what was queued for it is released.
 * On a server that is stopping, everyone gets what was queued for them:
 * the writer drains the closed queue, gets -EPIPE and ends; a member that
 * does not read has its writer cancelled when the grace period runs out.
 *
 * Lines starting with "* " are the room's own notices: a newcomer gets
 * "* welcome userN", the others "* userN joined" / "* userN left".
 *
 * Many loops (--loops N, --accept reuseport|handoff): each loop has a room
 * of its own, the members whose connections it serves, touched by its
 * tasks only. A line said on loop i is delivered to loop i's members as
 * above, and a copy of it is sent to every other loop through that loop's
 * relay channel (rf_chan): the loop's relay task receives it and delivers
 * it to its members. The loops share nothing but the channels. A sender
 * whose line finds another loop's channel full waits (its reader task
 * suspends: backpressure on the client that talks, never a lost line);
 * the room's list is never held across that wait.
 */
#define _GNU_SOURCE
#include "common.h"

#include <sys/uio.h>

/* Backlog bytes per queue slot: the queue holds backlog / 16 messages. */
enum { BYTES_PER_SLOT = 16 };
/* A writer's send: at most BATCH_IOV pieces; messages of at most
 * SMALL_MSG bytes are copied into the member's stage (STAGE_BYTES). */
enum { BATCH_IOV = 256, SMALL_MSG = 256, STAGE_BYTES = 32 * 1024 };

/* One line for the room. Its text is never changed once it is queued. */
typedef struct msg {
    size_t refs; /* one per queue it was put in, one for its author */
    size_t len;
    char text[];
} msg;

typedef struct member {
    struct member *prev, *next; /* room */
    ex_conn *conn;
    char name[32];
    rf_queue queue;        /* messages for this member, a reference each */
    size_t queued;         /* bytes of them not sent yet */
    rf_task *writer;       /* loops on the queue; the member's handle */
    bool gone;             /* left or dropped: nothing more is queued */
    char stage[STAGE_BYTES]; /* the writer's copies of short messages */
} member;

typedef struct room {
    member members;        /* list head */
    size_t backlog;        /* bytes queued per member, at most */
    size_t capacity;       /* messages queued per member, at most */
    long next_id;
    /* many loops */
    unsigned index;        /* this room's loop */
    rf_chan *link;         /* lines from the other loops (relay_task) */
    rf_task *relay;
} room;

/* Many loops: links[k] is loop k's relay channel; set once loop k is
 * ready, NULL on one loop. */
enum { LINK_CAPACITY = 4096 };
static rf_chan *links[RF_LOOPS_MAX];
static unsigned nloops = 1;    /* __atomic */
static unsigned loops_done;    /* __atomic: loops that send no more lines */

static long backlog_opt = 64 * 1024;

static msg *msg_new(const char *text, size_t len)
{
    msg *p = malloc(sizeof *p + len);
    if (p) {
        p->refs = 1;
        p->len = len;
        memcpy(p->text, text, len);
    }
    return p;
}

static void msg_release(msg *p)
{
    if (--p->refs == 0)
        free(p);
}

/* Release every message still in m's queue. Never suspends. */
static void discard(member *m)
{
    void *p;
    while (rf_queue_try_get(&m->queue, &p) == 0) {
        m->queued -= ((msg *)p)->len;
        msg_release(p);
    }
}

/* Close the member's queue (nothing more is put in it) and shut its
 * socket both ways: its reader sees end-of-file, its writer's send fails
 * (the reader releases what is left in the queue when it leaves).
 * shutdown(2) never blocks, and deliver() must not suspend (the room list
 * must not change under a broadcast). */
static void drop(member *m, const char *why)
{
    if (m->gone)
        return;
    m->gone = true;
    fprintf(stderr, "%s: %s disconnected: %s\n", ex_prog, m->name, why);
    rf_queue_close(&m->queue);
    shutdown(m->conn->fd, SHUT_RDWR);
}

/* Send what m's queue brings until it is closed and empty (-EPIPE), the
 * connection fails or the task is cancelled. What is queued goes out in
 * one sendmsg(2): a message longer than SMALL_MSG is sent from its shared
 * allocation itself, shorter ones are copied one after another into the
 * member's stage and released at once. Not an iovec per line: a send
 * takes at most IOV_MAX (1024) of them, fewer than the short lines one
 * 4 KiB read from a sender can bring, and the room would outrun the
 * writers of members that read as fast as they can. */
static void *writer_task(void *arg)
{
    member *m = arg;
    struct iovec iov[BATCH_IOV];
    msg *owner[BATCH_IOV]; /* what iov[i] points into; NULL: the stage */
    size_t first = 0, n = 0; /* iov[first..n) not sent yet */
    for (;;) {
        /* Gather what is queued. */
        void *p;
        if (rf_queue_get(&m->queue, &p) < 0)
            break; /* -EPIPE: closed and drained; -ECANCELED */
        size_t used = 0; /* bytes of the stage in use */
        first = n = 0;
        do {
            msg *g = p;
            char *at = m->stage + used;
            if (g->len > SMALL_MSG || g->len > sizeof m->stage - used) {
                iov[n] = (struct iovec){g->text, g->len};
                owner[n++] = g;
                continue;
            }
            memcpy(at, g->text, g->len);
            used += g->len;
            if (n > 0 && !owner[n - 1] &&
                (char *)iov[n - 1].iov_base + iov[n - 1].iov_len == at) {
                iov[n - 1].iov_len += g->len;
            } else {
                iov[n] = (struct iovec){at, g->len};
                owner[n++] = NULL;
            }
            msg_release(g);
        } while (n < BATCH_IOV && rf_queue_try_get(&m->queue, &p) == 0);

        /* Send all of it, each send bounded by --idle-timeout. */
        while (first < n) {
            struct msghdr h = {.msg_iov = iov + first,
                               .msg_iovlen = n - first};
            ex_idle_deadline(m->conn->srv);
            ssize_t sent = rf_sendmsg(m->conn->fd, &h, 0);
            rf_deadline_set(0); /* waiting for messages has no limit */
            if (sent < 0) {
                if (sent != -ECANCELED)
                    drop(m, rf_strerror((int)sent));
                goto out;
            }
            m->queued -= (size_t)sent;
            size_t k = (size_t)sent;
            for (; first < n && k >= iov[first].iov_len; first++) {
                k -= iov[first].iov_len;
                if (owner[first])
                    msg_release(owner[first]);
            }
            if (k > 0) {
                iov[first].iov_base = (char *)iov[first].iov_base + k;
                iov[first].iov_len -= k;
            }
        }
    }
out:
    /* What this task took and did not send: no longer counted as queued
     * (the member is gone or the task cancelled, nothing more goes out). */
    for (; first < n; first++) {
        m->queued -= iov[first].iov_len;
        if (owner[first])
            msg_release(owner[first]);
    }
    return NULL;
}

/* Queue p for m, taking a reference, or drop m if it is too far behind
 * (p NULL: the message could not be allocated). Never suspends. */
static void deliver(room *r, member *m, msg *p)
{
    if (m->gone)
        return;
    if (!p) {
        drop(m, "no memory for a message");
        return;
    }
    char why[96];
    if (p->len > r->backlog - m->queued) {
        snprintf(why, sizeof why, "too slow (%zu bytes waiting)", m->queued);
        drop(m, why);
        return;
    }
    int rc = rf_queue_try_put(&m->queue, p);
    if (rc < 0) {
        if (rc == -EAGAIN)
            snprintf(why, sizeof why, "too slow (%zu messages waiting)",
                     rf_queue_size(&m->queue));
        else
            snprintf(why, sizeof why, "queue: %s", rf_strerror(rc));
        drop(m, why);
        return;
    }
    p->refs++;
    m->queued += p->len;
}

/* Deliver p to this loop's members but from, and release the caller's
 * reference to p (NULL: no memory for it). Never suspends. */
static void fanout(room *r, member *from, msg *p)
{
    for (member *m = r->members.next; m != &r->members; m = m->next) {
        if (m != from)
            deliver(r, m, p);
    }
    if (p)
        msg_release(p); /* the author's reference: the queues hold theirs */
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

/* A line for the room: this loop's members, then a copy for each other
 * loop. May suspend (after this loop's members have it) while another
 * loop's channel is full. */
static void broadcast(room *r, member *from, const char *text, size_t len)
{
    fanout(r, from, msg_new(text, len));
    unsigned n = __atomic_load_n(&nloops, __ATOMIC_RELAXED);
    for (unsigned k = 0; k < n; k++) {
        rf_chan *ch = __atomic_load_n(&links[k], __ATOMIC_ACQUIRE);
        if (k == r->index || !ch)
            continue;
        msg *copy = msg_new(text, len);
        /* -EPIPE: that loop is stopping; -ECANCELED: this one is. */
        if (copy && rf_chan_send(ch, copy) != 0)
            free(copy);
    }
}

/* Many loops: the lines said on the other loops, to this loop's members,
 * until the channel is closed and drained. */
static void *relay_task(void *arg)
{
    room *r = arg;
    void *p;
    while (rf_chan_recv(r->link, &p) == 0)
        fanout(r, NULL, p); /* the copy is this loop's now */
    return NULL;
}

/* Many loops: each loop's room, before the loop serves (ex_loop_main). */
static void room_open(ex_server *s)
{
    const room *tmpl = s->data; /* main's, for the sizes */
    room *r = calloc(1, sizeof *r);
    if (!r)
        ex_die("calloc", -ENOMEM);
    r->members.next = r->members.prev = &r->members;
    r->backlog = tmpl->backlog;
    r->capacity = tmpl->capacity;
    r->index = (unsigned)rf_loop_index();
    __atomic_store_n(&nloops, rf_loops_count(rf_loops_current()),
                     __ATOMIC_RELAXED);
    ex_check(rf_chan_new(&r->link, LINK_CAPACITY), "rf_chan_new");
    r->relay = ex_spawn(relay_task, r, "relay");
    __atomic_store_n(&links[r->index], r->link, __ATOMIC_RELEASE);
    s->data = r;
}

/* Many loops: after this loop's connections have ended. Its channel is
 * closed (other loops' lines to it are refused from now on) and drained;
 * it is freed once no loop can send any more. */
static void room_close(ex_server *s)
{
    room *r = s->data;
    __atomic_add_fetch(&loops_done, 1, __ATOMIC_ACQ_REL);
    rf_chan_close(r->link);
    rf_join_nocancel(r->relay, NULL);
    rf_task_release(r->relay);
    unsigned n = __atomic_load_n(&nloops, __ATOMIC_RELAXED);
    while (__atomic_load_n(&loops_done, __ATOMIC_ACQUIRE) < n)
        rf_sleep(RF_NSEC_PER_MSEC);
    __atomic_store_n(&links[r->index], NULL, __ATOMIC_RELEASE);
    rf_chan_free(r->link);
    free(r);
}

static void notice(room *r, member *from, const char *fmt, const char *name)
{
    char line[96];
    int n = snprintf(line, sizeof line, fmt, name);
    broadcast(r, from, line, (size_t)n);
}

/* Wait until the writer has ended; its queue is closed. flush: let it
 * send what is queued first. If this task is cancelled meanwhile (a stop
 * whose grace ran out), the writer is cancelled too, and this task still
 * waits for it to unwind (rf_join_nocancel): the writer uses the member. */
static void writer_finish(member *m, bool flush)
{
    rf_task *w = m->writer;
    if (!flush)
        discard(m); /* a writer waiting for more gets -EPIPE */
    if (!flush || rf_join(w, NULL) == -ECANCELED) {
        if (!rf_done(w))
            rf_cancel(w); /* a send may be blocked on a silent peer */
    }
    rf_join_nocancel(w, NULL);
}

static void chat(ex_conn *c)
{
    room *r = c->srv->data;
    member *m = calloc(1, sizeof *m);
    if (!m || rf_queue_init(&m->queue, r->capacity, NULL) < 0) {
        fprintf(stderr, "%s: no memory for a member\n", ex_prog);
        free(m);
        return;
    }
    m->conn = c;
    /* user1, user2, ... on one loop; on N, loop k names k+1, k+1+N, ... */
    unsigned loops_n = __atomic_load_n(&nloops, __ATOMIC_RELAXED);
    snprintf(m->name, sizeof m->name, "user%ld",
             r->next_id++ * (long)loops_n + (long)r->index + 1);
    rf_spawn_options o = {.name = "writer"};
    m->writer = rf_spawn_opts(writer_task, m, &o);
    if (!m->writer) {
        fprintf(stderr, "%s: no memory for a writer task\n", ex_prog);
        rf_queue_fini(&m->queue);
        free(m);
        return;
    }
    m->next = &r->members;
    m->prev = r->members.prev;
    m->prev->next = m;
    r->members.prev = m;
    notice(r, m, "* %s joined\n", m->name);
    char hello[64];
    int hn = snprintf(hello, sizeof hello, "* welcome %s\n", m->name);
    msg *welcome = msg_new(hello, (size_t)hn);
    deliver(r, m, welcome);
    if (welcome)
        msg_release(welcome);

    /* Lines: "name: " + up to sizeof in - 1 bytes + "\n". */
    char in[4096], line[sizeof in + sizeof m->name + 3];
    size_t have = 0;
    bool idle = false;
    while (!m->gone) {
        ex_idle_deadline(c->srv);
        ssize_t n = rf_recv(c->fd, in + have, sizeof in - have, 0);
        if (n <= 0) {
            idle = n == -ETIMEDOUT;
            break;
        }
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

    /* Leaving: out of the room first, so that nothing more is queued. The
     * waits that follow (for the writer) have no deadline. */
    rf_deadline_set(0);
    bool dropped = m->gone;
    if (idle)
        fprintf(stderr, "%s: %s disconnected: idle for %g s\n", ex_prog,
                m->name, c->srv->idle_s);
    m->gone = true;
    rf_queue_close(&m->queue);
    if (m->prev) {
        m->prev->next = m->next;
        m->next->prev = m->prev;
        m->prev = m->next = NULL;
    }
    notice(r, NULL,
           dropped ? "* %s dropped: too slow\n"
           : idle  ? "* %s dropped: idle\n"
                   : "* %s left\n",
           m->name);
    /* A member who left gets nothing more; on a server that is stopping,
     * everyone gets what was queued for them (within the grace period). */
    writer_finish(m, c->srv->stopping && !dropped);
    discard(m); /* what a cancelled writer left */
    rf_queue_fini(&m->queue);
    rf_task_release(m->writer);
    free(m);
}

int main(int argc, char **argv)
{
    room r = {.members = {0}};
    r.members.next = r.members.prev = &r.members;
    ex_server s = {.host = "127.0.0.1", .port = 7001, .grace_s = 2,
                   .idle_s = 600, .serve = chat, .data = &r,
                   .loop_open = room_open, .loop_close = room_close};
    ex_option opts[EX_SERVER_NOPTS + 2] = {{0}};
    ex_server_options(&s, opts);
    opts[EX_SERVER_NOPTS] = (ex_option){"--backlog", "BYTES",
                          "output queued per client before it is "
                          "disconnected as too slow (default 65536; the "
                          "queue holds one message per 16 bytes of it)",
                          NULL, NULL, &backlog_opt};
    ex_parse_args(argc, argv, opts);
    if (backlog_opt < 1024 || backlog_opt > (1L << 30))
        ex_bad_arg(opts, "--backlog must be between 1024 and 1 GiB", NULL);
    r.backlog = (size_t)backlog_opt;
    r.capacity = r.backlog / BYTES_PER_SLOT;
    return ex_server_run(&s);
}
