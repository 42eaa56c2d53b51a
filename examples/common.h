/*
 * Shared plumbing for the example programs: command line, scaled
 * durations, elapsed-time lines, Python-looking output and "die on
 * error" wrappers. Every example is a single translation unit that
 * includes this header, so everything here is static.
 *
 * Every example accepts --scale N: each duration is divided by N, so the
 * whole set runs in a fraction of a second under CTest while keeping the
 * same shape. The elapsed times printed stay the real, measured ones.
 */
#ifndef RINGFIBER_EXAMPLES_COMMON_H
#define RINGFIBER_EXAMPLES_COMMON_H

/* nanosleep() is POSIX; ask for it even under a strict -std=c11. This
 * header is the first include of every example, so this comes first. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <ringfiber.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* argv[0] without its directory, for error messages. */
static const char *ex_prog = "example";
/* Every duration is divided by this (--scale). */
static double ex_scale = 1.0;
/* --virtual-time: the loops run on a virtual clock (RF_LOOP_VIRTUAL_TIME),
 * so the example prints what it prints at real speed, times included, in
 * a fraction of a second. */
static bool ex_virtual_time = false;

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/* Print "prog: what: reason" to stderr and exit 1. */
static inline void ex_die(const char *what, int err)
{
    fflush(stdout); /* keep what was printed so far ahead of the error */
    fprintf(stderr, "%s: %s: %s\n", ex_prog, what, rf_strerror(err));
    exit(1);
}

/* Exit 1 unless rc is 0. For calls whose failure the example cannot
 * sensibly continue from. */
static inline void ex_check(int rc, const char *what)
{
    if (rc != 0)
        ex_die(what, rc);
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */
/* ------------------------------------------------------------------ */

/* An option an example adds to --scale. Exactly one target is set. */
typedef struct ex_option {
    const char *name;    /* "--reverse" */
    const char *metavar; /* "N" for a valued option, NULL for a flag */
    const char *help;
    bool *flag;          /* a flag: set to true when present */
    double *number;      /* a valued option parsed as a real number */
    long *integer;       /* a valued option parsed as an integer */
} ex_option;

/* A valued option kept as text (argv's storage), such as --host ADDR.
 * Kept apart from ex_option, whose initialisers are positional. An
 * example that has some points ex_str_options at its table (terminated by
 * a zeroed entry) before ex_parse_args(). */
typedef struct ex_str_option {
    const char *name;
    const char *metavar;
    const char *help;
    const char **value;
} ex_str_option;

static const ex_str_option *ex_str_options;

/* "--name METAVAR", or "--name" for a flag. */
static inline const char *ex_option_spec(const ex_option *o, char *buf,
                                         size_t size)
{
    snprintf(buf, size, "%s%s%s", o->name, o->metavar ? " " : "",
             o->metavar ? o->metavar : "");
    return buf;
}

static inline void ex_usage(FILE *out, const ex_option *opts)
{
    char spec[64];
    fprintf(out, "usage: %s [--scale N] [--virtual-time]", ex_prog);
    for (const ex_option *o = opts; o && o->name; o++)
        fprintf(out, " [%s]", ex_option_spec(o, spec, sizeof spec));
    for (const ex_str_option *o = ex_str_options; o && o->name; o++)
        fprintf(out, " [%s %s]", o->name, o->metavar);
    fprintf(out, "\n  %-12s %s\n", "--scale N",
            "divide every duration by N (default 1)");
    fprintf(out, "  %-12s %s\n", "--virtual-time",
            "run on a virtual clock: same output, no waiting");
    for (const ex_option *o = opts; o && o->name; o++)
        fprintf(out, "  %-12s %s\n", ex_option_spec(o, spec, sizeof spec),
                o->help);
    for (const ex_str_option *o = ex_str_options; o && o->name; o++) {
        snprintf(spec, sizeof spec, "%s %s", o->name, o->metavar);
        fprintf(out, "  %-12s %s\n", spec, o->help);
    }
}

static inline void ex_bad_arg(const ex_option *opts, const char *msg,
                              const char *arg)
{
    fprintf(stderr, "%s: %s%s%s\n", ex_prog, msg, arg ? ": " : "",
            arg ? arg : "");
    ex_usage(stderr, opts);
    exit(2);
}

/* Parse a whole-string number; false on junk, overflow or NaN. */
static inline bool ex_parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || isnan(v))
        return false;
    *out = v;
    return true;
}

static inline bool ex_parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* Store the value of a valued option; false if it does not parse. */
static inline bool ex_store(const ex_option *o, const char *value)
{
    if (o->integer)
        return ex_parse_long(value, o->integer);
    return ex_parse_double(value, o->number);
}

/* Find the option called name in opts (terminated by a zeroed entry). */
static inline const ex_option *ex_find(const ex_option *opts,
                                       const char *name)
{
    for (const ex_option *o = opts; o && o->name; o++)
        if (strcmp(o->name, name) == 0)
            return o;
    return NULL;
}

/*
 * Parse --scale N, --help and the example's own options (opts may be
 * NULL; otherwise it ends with a zeroed entry). Exits 2 on a bad command
 * line, 0 after --help.
 */
static inline void ex_parse_args(int argc, char **argv, const ex_option *opts)
{
    static const ex_option scale = {"--scale", "N", "", NULL, &ex_scale,
                                    NULL};
    static const ex_option vtime = {"--virtual-time", NULL, "",
                                    &ex_virtual_time, NULL, NULL};
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    if (argc > 0)
        ex_prog = slash ? slash + 1 : argv[0];
    /* Line by line even into a pipe, so that what goes to stderr (the
     * stall detector's report) stays in order with the output. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            ex_usage(stdout, opts);
            exit(0);
        }
        const ex_option *o = strcmp(argv[i], "--scale") == 0 ? &scale
                             : strcmp(argv[i], "--virtual-time") == 0
                                 ? &vtime
                                 : ex_find(opts, argv[i]);
        const ex_str_option *so = ex_str_options;
        while (!o && so && so->name && strcmp(so->name, argv[i]) != 0)
            so++;
        if (!o && so && so->name) {
            if (i + 1 >= argc)
                ex_bad_arg(opts, "missing value for", argv[i]);
            *so->value = argv[++i];
            continue;
        }
        if (!o)
            ex_bad_arg(opts, "unknown option", argv[i]);
        if (!o->metavar) {
            *o->flag = true;
            continue;
        }
        if (i + 1 >= argc)
            ex_bad_arg(opts, "missing value for", argv[i]);
        if (!ex_store(o, argv[++i]))
            ex_bad_arg(opts, "bad value", argv[i]);
    }
    if (!(ex_scale > 0) || isinf(ex_scale))
        ex_bad_arg(opts, "--scale must be a positive number", NULL);
}

/* ------------------------------------------------------------------ */
/* Durations                                                           */
/* ------------------------------------------------------------------ */

/* seconds, divided by --scale, in nanoseconds. */
static inline uint64_t ex_ns(double seconds)
{
    double ns = seconds * (double)RF_NSEC_PER_SEC / ex_scale;
    return ns <= 0 ? 0 : (uint64_t)(ns + 0.5);
}

/*
 * asyncio.sleep(seconds), scaled: suspends the calling task only.
 * Returns 0, or -ECANCELED when the task is being cancelled (the caller
 * decides what that means for it). Any other error ends the program,
 * since an example cannot go on with its timings broken.
 */
static inline int sleep_s(double seconds)
{
    int rc = rf_sleep(ex_ns(seconds));
    if (rc != 0 && rc != -ECANCELED)
        ex_die("rf_sleep", rc);
    return rc;
}

/*
 * time.sleep(seconds), scaled: blocks the whole thread, and with it the
 * loop and every other task. This is the mistake the "blocked" examples
 * demonstrate, so it is deliberately a real nanosleep, not rf_sleep.
 */
static inline void block_s(double seconds)
{
    uint64_t ns = ex_ns(seconds);
    if (ex_virtual_time && rf_loop_current()) {
        /* On the virtual clock a blocking call is the clock jumping by
         * its length while no other task runs. (Offloaded to a worker, it
         * takes real time, while the loop's clock stands still.) */
        ex_check(rf_clock_jump(NULL, ns), "rf_clock_jump");
        return;
    }
    struct timespec left = {(time_t)(ns / RF_NSEC_PER_SEC),
                            (long)(ns % RF_NSEC_PER_SEC)};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ; /* a signal cut the sleep short: sleep the remainder */
}

/* ------------------------------------------------------------------ */
/* Elapsed time, printed as the tutorials print it                     */
/* ------------------------------------------------------------------ */

static inline uint64_t ex_now(void);

/* Seconds since start_ns (a value of ex_now()). Real time (or the virtual
 * clock's), unscaled. */
static inline double ex_elapsed_s(uint64_t start_ns)
{
    return (double)(ex_now() - start_ns) / (double)RF_NSEC_PER_SEC;
}

/* print(f"Executed in {end-start:0.2f} seconds") */
static inline void ex_print_executed(uint64_t start_ns)
{
    printf("Executed in %0.2f seconds\n", ex_elapsed_s(start_ns));
}

/* print(f"Execution time: {elapsed:0.2f} seconds.") */
static inline void ex_print_execution_time(uint64_t start_ns)
{
    printf("Execution time: %0.2f seconds.\n", ex_elapsed_s(start_ns));
}

/* ------------------------------------------------------------------ */
/* Python-looking values                                               */
/* ------------------------------------------------------------------ */

/* A task result that is a read-only string: rf_fn returns a plain
 * void *, so the const is dropped here, once, and restored by readers
 * (ex_str_list) that treat every string result as const char *. */
static inline void *ex_str(const char *s)
{
    return (void *)(uintptr_t)s;
}

/* Task results carry small integers in the result pointer. */
#define EX_INT_TO_PTR(v) ((void *)(intptr_t)(v))
#define EX_PTR_TO_INT(p) ((int)(intptr_t)(p))

/* Append printf output at *used in buf, never past size (truncates). */
static inline void ex_append(char *buf, size_t size, size_t *used,
                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *used, size - *used, fmt, ap);
    va_end(ap);
    if (w > 0)
        *used += (size_t)w < size - *used ? (size_t)w : size - *used - 1;
}

/*
 * Write repr() of a list of str into buf: ['A1', 'B2']. Each item is a
 * task result that points to a C string. Truncates to fit size.
 */
static inline const char *ex_str_list(char *buf, size_t size,
                                      void *const *items, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    ex_append(buf, size, &used, "[");
    for (size_t i = 0; i < n; i++)
        ex_append(buf, size, &used, "%s'%s'", i ? ", " : "",
                  (const char *)items[i]);
    ex_append(buf, size, &used, "]");
    return buf;
}

/* print(list_of_str) */
static inline void ex_print_str_list(void *const *items, size_t n)
{
    char buf[512];
    puts(ex_str_list(buf, sizeof buf, items, n));
}

/* print(list_of_int), for items made with EX_INT_TO_PTR. */
static inline void ex_print_int_list(void *const *items, size_t n)
{
    printf("[");
    for (size_t i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", EX_PTR_TO_INT(items[i]));
    printf("]\n");
}

/* ------------------------------------------------------------------ */
/* Running tasks                                                       */
/* ------------------------------------------------------------------ */

/* asyncio.create_task(fn(arg)) with a name that shows up in debuggers.
 * Exits on failure: an example has no fallback for a task it needs. */
static inline rf_task *ex_spawn(rf_fn fn, void *arg, const char *name)
{
    rf_spawn_options opts = {.name = name};
    rf_task *t = rf_spawn_opts(fn, arg, &opts);
    if (!t)
        ex_die("rf_spawn", -errno);
    return t;
}

/* await asyncio.gather(*tasks), for tasks that are never cancelled. */
static inline void ex_gather(rf_task *const *tasks, size_t n, void **results)
{
    ex_check(rf_gather(tasks, n, results), "rf_gather");
}

/* Drop the handles of tasks we spawned and no longer need. */
static inline void ex_release_all(rf_task *const *tasks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rf_task_release(tasks[i]);
}

/* asyncio.run(main(arg)); exits 1 if the loop cannot run at all (no
 * io_uring, for one: the library has already said why on stderr). */
/* Loop flags an example asks for (a server's --recv). */
static unsigned ex_loop_flags = 0;

/* The options every loop of an example is made with: NULL, or
 * ex_loop_flags and the virtual clock with --virtual-time. */
static inline const rf_loop_opts *ex_loop_opts(void)
{
    static rf_loop_opts o;
    o = (rf_loop_opts){
        .flags = ex_loop_flags | (ex_virtual_time ? RF_LOOP_VIRTUAL_TIME : 0)};
    return o.flags ? &o : NULL;
}

/* --virtual-time: the virtual time the runs so far have taken (each run's
 * clock starts at 0), so that a time read outside the runs (the program's
 * "start" before asyncio.run) and one read inside add up as real ones do. */
static uint64_t ex_vclock_before = 0;

/* rf_now_ns(), or with --virtual-time the program's virtual time. */
static inline uint64_t ex_now(void)
{
    if (!ex_virtual_time)
        return rf_now_ns();
    return ex_vclock_before + (rf_loop_current() ? rf_now_ns() : 0);
}

typedef struct ex_run_args {
    rf_fn fn;
    void *arg;
} ex_run_args;

static inline void *ex_run_main(void *p)
{
    ex_run_args *a = p;
    void *res = a->fn(a->arg);
    if (ex_virtual_time)
        ex_vclock_before += rf_now_ns(); /* this run's end */
    return res;
}

static inline void *ex_run(rf_fn main_fn, void *arg)
{
    void *result = NULL;
    ex_run_args a = {main_fn, arg};
    ex_check(rf_run_opts(ex_run_main, &a, &result, ex_loop_opts()),
             "rf_run");
    return result;
}

/* ------------------------------------------------------------------ */
/* Servers and clients (echo_server, echo_client, chat_server,         */
/* http_hello)                                                         */
/* ------------------------------------------------------------------ */

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

/* TCP_NODELAY: request/response traffic must not wait for Nagle. Not a
 * ring operation: setsockopt never blocks. */
static inline void ex_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A TCP connection to host:port with TCP_NODELAY, or -errno. Suspends. */
static inline int ex_connect(const char *host, long port)
{
    if (port < 0 || port > 65535)
        return -EINVAL;
    int fd;
    int rc = rf_tcp_connect(host, (uint16_t)port, &fd);
    if (rc < 0)
        return rc;
    ex_nodelay(fd);
    return fd;
}

/* A deadline seconds from now for rf_deadline_set, or 0 (none) when
 * seconds is 0. Real seconds: --scale does not apply to servers. */
static inline uint64_t ex_deadline_after(double seconds)
{
    if (!(seconds > 0))
        return 0;
    return rf_now_ns() + (uint64_t)(seconds * (double)RF_NSEC_PER_SEC);
}

/*
 * The server skeleton the example servers share: listen, print one line
 * "listening on HOST:PORT", run serve() in a task per connection (at most
 * --max-conns at once), and on SIGINT or SIGTERM stop gracefully with the
 * library's shutdown (rf_loop_shutdown):
 *   1. stop accepting: the accept in progress ends with -ESHUTDOWN (and
 *      the acceptor, if it waits for a free connection slot, is cancelled
 *      by the skeleton), the listening socket is closed: new connections
 *      are refused;
 *   2. shut down the read side of every connection: a connection waiting
 *      for its next request sees end-of-file at once; one busy with a
 *      request finishes what it has read (its answer is still written),
 *      then sees end-of-file (bytes the kernel had received but the task
 *      had not read yet are dropped by the shutdown);
 *   3. the connections have --grace seconds to end; the shutdown cancels
 *      the ones still running then (a peer that does not read its
 *      answers, say), and the skeleton's main task, which the shutdown
 *      spares, waits until they have all unwound and says how many it
 *      lost.
 * Then main returns, rf_run returns 0 and the program exits 0.
 *
 * The signal arrives through the ring: rf_signal_wait hands it to the
 * main task, so the loop never runs a signal handler and no wait is
 * interrupted.
 */
typedef struct ex_conn {
    struct ex_server *srv;
    struct ex_conn *prev, *next; /* srv->conns */
    rf_task *task;
    int fd;
} ex_conn;

typedef struct ex_server {
    /* set by the example */
    const char *host;            /* --host, default 127.0.0.1 */
    long port;                   /* --port */
    double grace_s;              /* --grace, default 2 */
    void (*serve)(ex_conn *c);   /* returns when c is done; the skeleton
                                  * closes c->fd afterwards */
    void *data;
    long max_conns;              /* --max-conns; 0: EX_MAX_CONNS */
    double idle_s;               /* --idle-timeout, the example's default */
    long loops;                  /* --loops: 1 (one loop), 0 (one per
                                  * CPU) or N (a group of loops) */
    const char *accept_mode;     /* --accept: "reuseport" or "handoff" */
    const char *recv_mode;       /* --recv: "plain" or "multishot"
                                  * (RF_LOOP_RECV_MULTISHOT); the
                                  * example's default, else plain */
    /* many loops: called on each loop, before it serves and after its
     * connections have ended (may suspend); data starts as main's */
    void (*loop_open)(struct ex_server *s);
    void (*loop_close)(struct ex_server *s);
    /* the skeleton's */
    int lfd;
    bool stopping;               /* a signal came: finish up */
    ex_conn conns;               /* list head */
    size_t nconns;
    size_t cancelled;            /* connections the shutdown cancelled */
    rf_sem slots;                /* one permit per connection served */
    /* many loops (ex_server_run with --loops): */
    struct ex_group *group;      /* NULL on one loop */
    rf_event stop_ev;            /* set by loop 0 when a signal comes */
    size_t served;               /* connections this loop served */
    unsigned open;               /* __atomic: connections open here */
} ex_server;

/* A server on many loops (--loops): one ex_server per loop, sharing
 * nothing but the port and these counters. */
typedef struct ex_group {
    ex_server *per;     /* per[k]: loop k's (room for every CPU online) */
    bool handoff;       /* --accept handoff */
    int port;           /* __atomic: the port loop 0 got (--port 0) */
    unsigned listening; /* __atomic: loops ready to serve */
} ex_group;

/* Default of --max-conns. */
#define EX_MAX_CONNS 10000
#define EX_STR_(x) #x
#define EX_STR(x) EX_STR_(x)
/* Entries ex_server_options fills; an example's own options follow. */
#define EX_SERVER_NOPTS 5

/* Bound the calling connection task's next waits on its client to
 * --idle-timeout seconds from now (no bound when it is 0). */
static inline void ex_idle_deadline(const ex_server *s)
{
    rf_deadline_set(ex_deadline_after(s->idle_s));
}

/* The options every server takes: --port, --grace, --max-conns and
 * --idle-timeout go into opts (room for EX_SERVER_NOPTS entries), --host
 * into the string options. Call it after setting s->idle_s to the
 * example's default, which the help shows. */
static inline void ex_server_options(ex_server *s, ex_option *opts)
{
    static ex_str_option host[4];
    host[0] = (ex_str_option){"--host", "ADDR",
                              "address to listen on (default 127.0.0.1)",
                              &s->host};
    if (!s->accept_mode)
        s->accept_mode = "reuseport";
    host[1] = (ex_str_option){"--accept", "MODE",
                              "with --loops: reuseport (a listener per loop, "
                              "the kernel spreads the connections; default) "
                              "or handoff (loop 0 accepts and hands each "
                              "connection to the loop with the fewest open)",
                              &s->accept_mode};
    if (!s->recv_mode)
        s->recv_mode = "plain";
    static char recv_help[192];
    snprintf(recv_help, sizeof recv_help,
             "plain (a receive submitted per rf_recv) or multishot (one "
             "multishot receive per connection into the loop's buffers: "
             "RF_LOOP_RECV_MULTISHOT); default %s",
             s->recv_mode);
    host[2] = (ex_str_option){"--recv", "MODE", recv_help, &s->recv_mode};
    ex_str_options = host;
    if (s->loops == 0)
        s->loops = 1;
    opts[4] = (ex_option){"--loops", "N",
                          "loops (threads) serving: 1 (default), N, or 0 "
                          "for one per CPU",
                          NULL, NULL, &s->loops};
    opts[0] = (ex_option){"--port", "P", "TCP port to listen on", NULL, NULL,
                          &s->port};
    opts[1] = (ex_option){"--grace", "S",
                          "seconds connections get to finish on SIGTERM "
                          "(default 2)",
                          NULL, &s->grace_s, NULL};
    static char idle_help[128];
    if (s->max_conns == 0)
        s->max_conns = EX_MAX_CONNS;
    snprintf(idle_help, sizeof idle_help,
             "close a connection whose client sends nothing, or reads "
             "nothing, for S seconds; 0: never (default %g)",
             s->idle_s);
    opts[2] = (ex_option){"--max-conns", "N",
                          "connections served at once; beyond them new "
                          "clients wait in the listen backlog until one "
                          "ends (default " EX_STR(EX_MAX_CONNS) ")",
                          NULL, NULL, &s->max_conns};
    opts[3] = (ex_option){"--idle-timeout", "S", idle_help, NULL,
                          &s->idle_s, NULL};
}

/* Link c into its loop's server: open, counted, joined at the end. */
static inline void ex_conn_link(ex_server *s, ex_conn *c)
{
    c->srv = s;
    c->next = &s->conns;
    c->prev = s->conns.prev;
    c->prev->next = c;
    s->conns.prev = c;
    s->nconns++;
    s->served++;
    __atomic_add_fetch(&s->open, 1, __ATOMIC_RELAXED);
}

static inline void *ex_conn_task(void *arg)
{
    ex_conn *c = arg;
    c->srv->serve(c);
    if (rf_cancelled(rf_self()))
        c->srv->cancelled++; /* cut off at the end of the grace */
    rf_close(c->fd);
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->srv->nconns--;
    __atomic_sub_fetch(&c->srv->open, 1, __ATOMIC_RELAXED);
    if (!c->srv->group || c->srv->group->handoff == false)
        rf_sem_release(&c->srv->slots); /* the acceptor may take one more */
    rf_task_release(c->task);
    free(c);
    return NULL;
}

/* One accept for the acceptors below: 1 with *fd (TCP_NODELAY set), 0
 * after a passing error (a connection reset before it was taken, out of
 * fds: said on stderr, and a 10 ms pause), -1 when the server is
 * stopping. */
static inline int ex_accept_next(ex_server *s, int *fd)
{
    *fd = rf_accept(s->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (*fd == -ECANCELED || *fd == -ESHUTDOWN)
        return -1;
    if (*fd < 0) {
        fprintf(stderr, "%s: accept: %s\n", ex_prog, rf_strerror(*fd));
        return rf_sleep(10 * RF_NSEC_PER_MSEC) == -ECANCELED ? -1 : 0;
    }
    ex_nodelay(*fd);
    return 1;
}

/* The one line a server prints when it is ready (suffix: "" or more). */
static inline void ex_print_ready(const ex_server *s, int port,
                                  const char *suffix)
{
    bool v6 = strchr(s->host, ':') && s->host[0] != '[';
    printf("listening on %s%s%s:%d%s\n", v6 ? "[" : "", s->host,
           v6 ? "]" : "", port, suffix);
    fflush(stdout);
}

/* Accepts until cancelled, while fewer than --max-conns connections are
 * open (the slot taken here is given back by ex_conn_task). */
static inline void *ex_accept_task(void *arg)
{
    ex_server *s = arg;
    for (;;) {
        int rc = rf_sem_acquire(&s->slots);
        if (rc != 0) {
            if (rc != -ECANCELED)
                fprintf(stderr, "%s: waiting for a connection slot: %s\n",
                        ex_prog, rf_strerror(rc));
            return NULL; /* the server is stopping */
        }
        int fd, got = ex_accept_next(s, &fd);
        if (got <= 0) {
            rf_sem_release(&s->slots);
            if (got < 0)
                return NULL; /* the server is stopping */
            continue;        /* go on serving the connections open */
        }
        ex_conn *c = calloc(1, sizeof *c);
        rf_spawn_options o = {.name = "conn"};
        rf_task *t = c ? rf_spawn_opts(ex_conn_task, c, &o) : NULL;
        if (!t) {
            fprintf(stderr, "%s: no memory for a connection\n", ex_prog);
            free(c);
            rf_close(fd);
            rf_sem_release(&s->slots);
            continue;
        }
        c->fd = fd;
        c->task = t;
        ex_conn_link(s, c);
    }
}

/* Waits until every connection task has returned. */
static inline void ex_join_conns(ex_server *s)
{
    while (s->conns.next != &s->conns) {
        rf_task *t = s->conns.next->task;
        rf_task_retain(t);
        rf_join(t, NULL);
        rf_task_release(t);
    }
}

/* The graceful stop of one loop's server (see the top of this part). */
static inline void ex_server_stop(ex_server *s, rf_task *acceptor)
{
    s->stopping = true;
    ex_check(rf_loop_shutdown(rf_loop_current(),
                              (uint64_t)(s->grace_s * (double)RF_NSEC_PER_SEC)),
             "rf_loop_shutdown");
    /* The accept ended with the shutdown; an acceptor waiting for a free
     * slot is not in an accept: it is cancelled. */
    if (acceptor) {
        rf_cancel(acceptor);
        rf_join(acceptor, NULL);
        rf_task_release(acceptor);
    }
    if (s->lfd >= 0)
        rf_close(s->lfd);

    /* shutdown(2), not rf_shutdown: it never blocks, and a loop that does
     * not suspend cannot see a connection free itself under its feet. */
    for (ex_conn *c = s->conns.next; c != &s->conns; c = c->next)
        shutdown(c->fd, SHUT_RD);
    /* As long as they take: the shutdown cancels the ones still open at
     * the end of the grace (this task it spares). */
    ex_join_conns(s);
    if (s->cancelled)
        fprintf(stderr, "%s: cancelled %zu connections after the %.1f s "
                        "grace\n", ex_prog, s->cancelled, s->grace_s);
}

static inline unsigned ex_open_total(const ex_group *g);

/* The main task (one loop) or loop 0's (many): wait for SIGINT or SIGTERM,
 * which ex_server_run blocked before any loop existed, taken through the
 * ring (rf_signal_wait), and say so with the connections open then (on
 * every loop of a group). */
static inline void ex_wait_stop_signal(const ex_server *s)
{
    sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGTERM);
    int sig = rf_signal_wait(&stop_sigs, NULL);
    if (sig < 0)
        ex_die("rf_signal_wait", sig);
    size_t open = s->group ? ex_open_total(s->group) : s->nconns;
    fprintf(stderr, "%s: %s: stopping (%zu connections open)\n", ex_prog,
            strsignal(sig), open);
}

static inline void *ex_server_main(void *arg)
{
    ex_server *s = arg;
    ex_check(rf_tcp_listen(s->host, (uint16_t)s->port, 1024, &s->lfd),
             "listen");
    /* --port 0 picks a free port: print the one we got. */
    int port = rf_sock_port(s->lfd);
    if (port < 0)
        ex_die("getsockname", port);
    ex_print_ready(s, port, "");

    s->conns.next = s->conns.prev = &s->conns;
    ex_check(rf_sem_init(&s->slots, (unsigned)s->max_conns,
                         (unsigned)s->max_conns),
             "rf_sem_init");
    rf_task *acceptor = ex_spawn(ex_accept_task, s, "acceptor");

    ex_wait_stop_signal(s);

    ex_server_stop(s, acceptor);
    rf_sem_fini(&s->slots);
    return NULL;
}

/* ---- many loops (--loops) ---- */

/* --accept handoff: a connection accepted on loop 0, now on its loop. */
static inline void *ex_conn_handed(void *arg)
{
    ex_conn *c = arg;
    ex_group *g = c->srv->group;
    ex_server *s = &g->per[rf_loop_index()];
    c->task = rf_self();
    rf_task_retain(c->task); /* the loop's own handle, for ex_join_conns */
    __atomic_sub_fetch(&s->open, 1, __ATOMIC_RELAXED); /* counted again: */
    ex_conn_link(s, c);
    return ex_conn_task(c);
}

static inline unsigned ex_open_total(const ex_group *g)
{
    unsigned n = 0, loops = rf_loops_count(rf_loops_current());
    for (unsigned k = 0; k < loops; k++)
        n += __atomic_load_n(&g->per[k].open, __ATOMIC_RELAXED);
    return n;
}

/* --accept handoff, on loop 0: accept, and hand each connection to the
 * loop with the fewest open (rf_spawn_on: the connection's task runs
 * there for good). At --max-conns open in all, wait for one to end. */
static inline void *ex_handoff_task(void *arg)
{
    ex_server *s = arg;
    ex_group *g = s->group;
    rf_loops *ls = rf_loops_current();
    for (;;) {
        while (ex_open_total(g) >= (unsigned)s->max_conns)
            if (rf_sleep(RF_NSEC_PER_MSEC) != 0)
                return NULL; /* the server is stopping */
        int fd, got = ex_accept_next(s, &fd);
        if (got < 0)
            return NULL;
        if (got == 0)
            continue;
        unsigned best = 0;
        for (unsigned k = 1; k < rf_loops_count(ls); k++)
            if (__atomic_load_n(&g->per[k].open, __ATOMIC_RELAXED) <
                __atomic_load_n(&g->per[best].open, __ATOMIC_RELAXED))
                best = k;
        ex_conn *c = calloc(1, sizeof *c);
        rf_task *t = NULL;
        if (c) {
            c->fd = fd;
            c->srv = s; /* for its group; relinked on its loop */
            /* Counted now, so that the next choice sees it. */
            __atomic_add_fetch(&g->per[best].open, 1, __ATOMIC_RELAXED);
            rf_spawn_options o = {.name = "conn"};
            t = rf_spawn_on(rf_loops_loop(ls, best), ex_conn_handed, c, &o);
            if (!t)
                __atomic_sub_fetch(&g->per[best].open, 1, __ATOMIC_RELAXED);
        }
        if (!t) {
            free(c); /* not spawned: still ours (the loop is stopping, or
                      * out of memory) */
            rf_close(fd);
            continue;
        }
        rf_task_release(t); /* the task is its loop's now */
    }
}

static inline void ex_stop_call(void *arg)
{
    ex_server *s = arg;
    rf_event_set(&s->stop_ev);
}

/* Each loop's main task. */
static inline void *ex_loop_main(void *arg)
{
    ex_group *g = arg;
    unsigned k = (unsigned)rf_loop_index();
    ex_server *s = &g->per[k];
    rf_loops *ls = rf_loops_current();
    unsigned n = rf_loops_count(ls);
    s->lfd = -1;
    bool listens = !g->handoff || k == 0;
    if (listens) {
        /* Loop 0 first: --port 0 picks a port, the others take it. */
        int port = (int)s->port;
        if (k != 0)
            while ((port = __atomic_load_n(&g->port, __ATOMIC_ACQUIRE)) < 0)
                rf_sleep(RF_NSEC_PER_MSEC);
        ex_check(rf_tcp_listen_flags(s->host, (uint16_t)port, 1024,
                                     g->handoff ? 0 : RF_TCP_REUSEPORT,
                                     &s->lfd),
                 "listen");
        if (k == 0) {
            port = rf_sock_port(s->lfd);
            if (port < 0)
                ex_die("getsockname", port);
            __atomic_store_n(&g->port, port, __ATOMIC_RELEASE);
        }
    }
    s->conns.next = s->conns.prev = &s->conns;
    if (s->loop_open)
        s->loop_open(s);
    ex_check(rf_sem_init(&s->slots, (unsigned)s->max_conns,
                         (unsigned)s->max_conns),
             "rf_sem_init");
    ex_check(rf_event_init(&s->stop_ev), "rf_event_init");
    __atomic_add_fetch(&g->listening, 1, __ATOMIC_ACQ_REL);
    rf_task *acceptor = NULL;
    if (listens)
        acceptor = ex_spawn(g->handoff ? ex_handoff_task : ex_accept_task, s,
                            "acceptor");
    if (k == 0) {
        while (__atomic_load_n(&g->listening, __ATOMIC_ACQUIRE) < n)
            rf_sleep(RF_NSEC_PER_MSEC);
        char how[64];
        snprintf(how, sizeof how, " (%u loops, %s)", n,
                 g->handoff ? "handoff" : "reuseport");
        ex_print_ready(s, g->port, how);
        ex_wait_stop_signal(s);
        for (unsigned j = 1; j < n; j++)
            ex_check(rf_loop_call_threadsafe(rf_loops_loop(ls, j),
                                             ex_stop_call, &g->per[j]),
                     "rf_loop_call_threadsafe");
    } else {
        rf_event_wait(&s->stop_ev);
    }
    ex_server_stop(s, acceptor);
    if (s->loop_close)
        s->loop_close(s);
    /* How the connections were spread: reuseport hashes them, handoff
     * evens them out. */
    fprintf(stderr, "%s: loop %u served %zu connections\n", ex_prog, k,
            s->served);
    rf_event_fini(&s->stop_ev);
    rf_sem_fini(&s->slots);
    return NULL;
}

/* The flags of the server's loops (--recv). */
static inline unsigned ex_server_loop_flags(const ex_server *s)
{
    return strcmp(s->recv_mode, "multishot") == 0 ? RF_LOOP_RECV_MULTISHOT
                                                   : 0;
}

static inline int ex_server_run_loops(ex_server *s)
{
    /* --loops 0: one per CPU of the affinity mask, at most one per CPU
     * online. */
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = s->loops ? (unsigned)s->loops
                          : (unsigned)(online > 0 ? online : 1);
    ex_group g = {.port = -1,
                  .handoff = strcmp(s->accept_mode, "handoff") == 0};
    g.per = calloc(n, sizeof *g.per);
    if (!g.per)
        ex_die("calloc", -ENOMEM);
    for (unsigned k = 0; k < n; k++) {
        g.per[k] = *s;
        g.per[k].group = &g;
    }
    rf_loops_opts o = {.loops = (unsigned)s->loops, .flags = RF_LOOPS_PIN,
                       .loop = ex_loop_opts()};
    int failed = -1;
    int rc = rf_run_loops(ex_loop_main, &g, &o, NULL, &failed);
    if (rc)
        ex_die("rf_run_loops", rc);
    free(g.per);
    return 0;
}

/*
 * Run the server until SIGINT or SIGTERM. Call from main() after the
 * command line is parsed; returns the exit status (0).
 */
static inline int ex_server_run(ex_server *s)
{
    if (s->port < 0 || s->port > 65535) {
        fprintf(stderr, "%s: --port must be 0..65535\n", ex_prog);
        exit(2);
    }
    if (!(s->grace_s >= 0 && s->grace_s <= 3600)) {
        fprintf(stderr, "%s: --grace must be 0..3600 seconds\n", ex_prog);
        exit(2);
    }
    if (s->max_conns < 1 || s->max_conns > 1000000) {
        fprintf(stderr, "%s: --max-conns must be 1..1000000\n", ex_prog);
        exit(2);
    }
    if (!(s->idle_s >= 0 && s->idle_s <= 86400)) {
        fprintf(stderr, "%s: --idle-timeout must be 0..86400 seconds\n",
                ex_prog);
        exit(2);
    }
    if (s->loops < 0 || s->loops > RF_LOOPS_MAX) {
        fprintf(stderr, "%s: --loops must be 0..%u\n", ex_prog,
                RF_LOOPS_MAX);
        exit(2);
    }
    if (strcmp(s->accept_mode, "reuseport") != 0 &&
        strcmp(s->accept_mode, "handoff") != 0) {
        fprintf(stderr, "%s: --accept must be reuseport or handoff\n",
                ex_prog);
        exit(2);
    }
    if (strcmp(s->recv_mode, "plain") != 0 &&
        strcmp(s->recv_mode, "multishot") != 0) {
        fprintf(stderr, "%s: --recv must be plain or multishot\n", ex_prog);
        exit(2);
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    /* Blocked before the loop exists, so that one that comes before
     * rf_signal_wait is called stays pending for it. */
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        ex_die("sigprocmask", -errno);
    ex_loop_flags |= ex_server_loop_flags(s);
    if (s->loops != 1)
        return ex_server_run_loops(s);
    ex_run(ex_server_main, s);
    return 0;
}

#define EX_COUNT(a) (sizeof(a) / sizeof((a)[0]))

#endif /* RINGFIBER_EXAMPLES_COMMON_H */
