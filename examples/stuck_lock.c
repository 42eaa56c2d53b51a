/*
 * stuck_lock: a server whose requests pile up behind one lock, and the
 * dump that shows why without a debugger.
 *
 *   stuck_lock [--clients 8] [--after 1] [--backtraces] [--scale N]
 *
 * The server keeps a cache behind one rf_mutex. A request names a key; a
 * hit is answered from the cache; a miss asks the client for the value
 * and stores it. The bug: the miss path asks while holding the lock. A
 * client that never answers holds every other request behind it, and the
 * server looks hung: nothing fails, nothing is logged, the CPU is idle.
 *
 * The program plays both sides on one loop, over 127.0.0.1: a first
 * client asks for a missing key and then never answers; --clients others
 * ask for keys that are cached. After --after seconds (and once every
 * request has reached the server) it writes the loop's
 * dump (rf_loop_dump) to stdout, as RINGFIBER_DUMP_SIGNAL=SIGUSR2 and
 * `kill -USR2` would on a real server, then stops everything. The dump
 * says it all: N tasks waiting in mutex, the mutex held by one connection
 * task, and that task waiting in a recv on its client's socket, a lock
 * held across a wait on the network (README, "Looking inside a running
 * server").
 */
#include "common.h"

#include <sys/socket.h>

#define HOST "127.0.0.1"

static long n_clients = 8;
static double after_s = 1.0;
static bool backtraces = false;
static long answered; /* requests a client got an answer to */

typedef struct server {
    int lfd;
    uint16_t port;
    rf_mutex cache_lock;
    char cached[16][16]; /* the keys in the cache */
    int ncached;
    long arrived; /* requests read, before the lock */
    rf_group conns;
} server;

static bool cache_has(server *s, const char *key)
{
    for (int i = 0; i < s->ncached; i++)
        if (strcmp(s->cached[i], key) == 0)
            return true;
    return false;
}

/* One line (at most cap-1 bytes, without its '\n'), or false. */
static bool read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = rf_recv(fd, buf + n, 1, 0);
        if (r <= 0)
            return false;
        if (buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = '\0';
    return true;
}

typedef struct conn {
    server *s;
    int fd;
} conn;

static void *serve_conn(void *arg)
{
    conn *c = arg;
    server *s = c->s;
    char key[16], value[16];
    if (read_line(c->fd, key, sizeof key) && ++s->arrived &&
        rf_mutex_lock(&s->cache_lock) == 0) {
        if (cache_has(s, key)) {
            rf_send_all(c->fd, "hit\n", 4, 0, NULL);
        } else {
            /* The bug: a wait on the client, with the lock held. */
            rf_send_all(c->fd, "?\n", 2, 0, NULL);
            if (read_line(c->fd, value, sizeof value) && s->ncached < 16)
                snprintf(s->cached[s->ncached++], 16, "%s", key);
            rf_send_all(c->fd, "stored\n", 7, 0, NULL);
        }
        rf_mutex_unlock(&s->cache_lock);
    }
    rf_close(c->fd);
    free(c);
    return NULL;
}

static void *accept_loop(void *arg)
{
    server *s = arg;
    for (int i = 1;; i++) {
        int fd = rf_accept(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return NULL; /* cancelled: the program stops */
        conn *c = malloc(sizeof(*c));
        if (!c)
            ex_die("malloc", -ENOMEM);
        *c = (conn){s, fd};
        char name[RF_TASK_NAME_MAX];
        snprintf(name, sizeof name, "conn-%d", i);
        rf_spawn_options o = {.name = name};
        if (!rf_group_spawn(&s->conns, serve_conn, c, &o)) {
            rf_close(fd);
            free(c);
        }
    }
}

typedef struct client {
    uint16_t port;
    const char *key;
    bool answers; /* answers the server's question */
} client;

static void *client_main(void *arg)
{
    client *cl = arg;
    int fd;
    if (rf_tcp_connect(HOST, cl->port, &fd) != 0)
        return NULL;
    char line[32];
    snprintf(line, sizeof line, "%s\n", cl->key);
    rf_send_all(fd, line, strlen(line), 0, NULL);
    if (read_line(fd, line, sizeof line)) {
        if (strcmp(line, "?") != 0)
            answered++;
        else if (cl->answers)
            rf_send_all(fd, "v\n", 2, 0, NULL);
    }
    /* The stuck client reads on, never answering: it waits until the
     * program stops it. */
    read_line(fd, line, sizeof line);
    rf_close(fd);
    return NULL;
}

static void *main_task(void *arg)
{
    (void)arg;
    server s = {.ncached = 1};
    strcpy(s.cached[0], "popular");
    rf_mutex_init(&s.cache_lock);
    rf_group_init(&s.conns);
    ex_check(rf_tcp_listen(HOST, 0, 64, &s.lfd), "listen");
    s.port = (uint16_t)rf_sock_port(s.lfd);
    rf_spawn_options ao = {.name = "acceptor"};
    rf_task *acc = rf_spawn_opts(accept_loop, &s, &ao);

    rf_group clients;
    rf_group_init(&clients);
    client stuck = {s.port, "rare", false};
    rf_spawn_options so = {.name = "stuck-client"};
    rf_group_spawn(&clients, client_main, &stuck, &so);
    /* Let its request reach the server (and so take the lock) before the
     * others come. */
    while (s.arrived < 1)
        sleep_s(0.01);
    client good = {s.port, "popular", true};
    for (long i = 0; i < n_clients; i++) {
        char name[RF_TASK_NAME_MAX];
        snprintf(name, sizeof name, "client-%ld", i + 1);
        rf_spawn_options o = {.name = name};
        rf_group_spawn(&clients, client_main, &good, &o);
    }
    sleep_s(after_s);
    /* On a busy machine the clients may not all have been heard yet. */
    while (s.arrived < n_clients + 1)
        sleep_s(0.01);

    printf("%ld of %ld requests answered; the loop's dump:\n", answered,
           n_clients + 1);
    fflush(stdout);
    ex_check(rf_loop_dump(rf_loop_current(), 1,
                          backtraces ? RF_DUMP_BACKTRACES : 0),
             "rf_loop_dump");

    /* Stop: the clients, then the server's connections, then the
     * acceptor; every task unwinds through its cancelled wait. */
    rf_group_cancel(&clients);
    rf_group_wait(&clients);
    rf_group_fini(&clients);
    rf_group_cancel(&s.conns);
    rf_group_wait(&s.conns);
    rf_group_fini(&s.conns);
    rf_cancel(acc);
    rf_join(acc, NULL);
    rf_task_release(acc);
    rf_close(s.lfd);
    printf("stopped\n");
    return NULL;
}

int main(int argc, char **argv)
{
    ex_option opts[] = {
        {"--clients", "N", "clients asking for a cached key (default 8)",
         NULL, NULL, &n_clients},
        {"--after", "S", "seconds before the dump (default 1)", NULL,
         &after_s, NULL},
        {"--backtraces", NULL, "each task's stack in the dump", &backtraces,
         NULL, NULL},
        {0},
    };
    ex_parse_args(argc, argv, opts);
    if (n_clients < 1 || n_clients > 1000)
        ex_bad_arg(opts, "--clients must be 1..1000", NULL);
    if (ex_virtual_time)
        ex_bad_arg(opts, "--virtual-time: the clients and the server talk "
                         "over real sockets", NULL);
    ex_run(main_task, NULL);
    return 0;
}
