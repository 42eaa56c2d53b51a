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
    fprintf(out, "usage: %s [--scale N]", ex_prog);
    for (const ex_option *o = opts; o && o->name; o++)
        fprintf(out, " [%s]", ex_option_spec(o, spec, sizeof spec));
    fprintf(out, "\n  %-12s %s\n", "--scale N",
            "divide every duration by N (default 1)");
    for (const ex_option *o = opts; o && o->name; o++)
        fprintf(out, "  %-12s %s\n", ex_option_spec(o, spec, sizeof spec),
                o->help);
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
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    if (argc > 0)
        ex_prog = slash ? slash + 1 : argv[0];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            ex_usage(stdout, opts);
            exit(0);
        }
        const ex_option *o = strcmp(argv[i], "--scale") == 0
                                 ? &scale
                                 : ex_find(opts, argv[i]);
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
    struct timespec left = {(time_t)(ns / RF_NSEC_PER_SEC),
                            (long)(ns % RF_NSEC_PER_SEC)};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ; /* a signal cut the sleep short: sleep the remainder */
}

/* ------------------------------------------------------------------ */
/* Elapsed time, printed as the tutorials print it                     */
/* ------------------------------------------------------------------ */

/* Seconds since start_ns (a value of rf_now_ns()). Real time, unscaled. */
static inline double ex_elapsed_s(uint64_t start_ns)
{
    return (double)(rf_now_ns() - start_ns) / (double)RF_NSEC_PER_SEC;
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
static inline void *ex_run(rf_fn main_fn, void *arg)
{
    void *result = NULL;
    ex_check(rf_run(main_fn, arg, &result), "rf_run");
    return result;
}

#define EX_COUNT(a) (sizeof(a) / sizeof((a)[0]))

#endif /* RINGFIBER_EXAMPLES_COMMON_H */
