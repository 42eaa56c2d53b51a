/*
 * copy_file: copy a file with several reads and writes in flight, check
 * the copy, and show the loop's I/O counters.
 *
 *   copy_file [SRC DST] [--depth N] [--chunk KIB] [--size MIB]
 *
 * Without SRC and DST it makes a --size MiB (default 32) source file of
 * pseudo-random bytes in /tmp, copies it, checks and removes both files.
 * --depth tasks (default 8) each take the next --chunk KiB (default 256)
 * of the file, read it with rf_read_full and write it with rf_write_all at
 * the same offset; the copy is then read back and compared with the
 * source by checksum. The counters show how the loop batched the work:
 * several SQEs per io_uring_enter when several operations are in flight.
 */
#define _GNU_SOURCE /* statx, before common.h sets _POSIX_C_SOURCE */
#include "common.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct copy_job {
    int src, dst;
    size_t chunk;
    uint64_t size;
    uint64_t next; /* next offset to copy; tasks of one loop share it safely */
    int err;
} copy_job;

static void *copier(void *arg)
{
    copy_job *j = arg;
    char *buf = malloc(j->chunk);
    if (!buf) {
        j->err = -ENOMEM;
        return NULL;
    }
    while (j->err == 0 && j->next < j->size) {
        uint64_t off = j->next;
        j->next += j->chunk;
        size_t want = j->size - off < j->chunk ? (size_t)(j->size - off) : j->chunk;
        ssize_t n = rf_read_full(j->src, buf, want, (int64_t)off, NULL);
        if (n >= 0 && (size_t)n != want)
            n = -EIO; /* the source shrank under us */
        if (n > 0)
            n = rf_write_all(j->dst, buf, (size_t)n, (int64_t)off, NULL);
        if (n < 0)
            j->err = (int)n;
    }
    free(buf);
    return NULL;
}

/* FNV-1a of a whole file, read with rf_read. */
static int checksum(int fd, uint64_t *out)
{
    static char buf[1 << 20];
    uint64_t h = 14695981039346656037ULL;
    int64_t off = 0;
    for (;;) {
        ssize_t n = rf_read(fd, buf, sizeof buf, off);
        if (n < 0)
            return (int)n;
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
        off += n;
    }
    *out = h;
    return 0;
}

typedef struct args {
    const char *src, *dst;
    long depth, chunk_kib, size_mib;
} args;

static void make_source(const char *path, uint64_t size)
{
    int fd = rf_open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        ex_die(path, fd);
    static uint32_t buf[1 << 18];
    uint32_t x = 2463534242u;
    for (uint64_t off = 0; off < size; off += sizeof buf) {
        for (size_t i = 0; i < EX_COUNT(buf); i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            buf[i] = x;
        }
        size_t n = size - off < sizeof buf ? (size_t)(size - off) : sizeof buf;
        ssize_t w = rf_write_all(fd, buf, n, (int64_t)off, NULL);
        if (w < 0)
            ex_die("write source", (int)w);
    }
    rf_close(fd);
}

static void *copy_main(void *arg)
{
    args *a = arg;
    char srcbuf[64], dstbuf[64];
    bool temp = !a->src;
    if (temp) {
        snprintf(srcbuf, sizeof srcbuf, "/tmp/ringfiber-copy-src-%d", (int)getpid());
        snprintf(dstbuf, sizeof dstbuf, "/tmp/ringfiber-copy-dst-%d", (int)getpid());
        a->src = srcbuf;
        a->dst = dstbuf;
        make_source(a->src, (uint64_t)a->size_mib << 20);
    }
    copy_job j = {.chunk = (size_t)a->chunk_kib << 10};
    j.src = rf_open(a->src, O_RDONLY | O_CLOEXEC, 0);
    if (j.src < 0)
        ex_die(a->src, j.src);
    struct statx sx;
    ex_check(rf_statx(j.src, "", AT_EMPTY_PATH, STATX_SIZE | STATX_MODE, &sx),
             "statx");
    j.size = sx.stx_size;
    j.dst = rf_open(a->dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                    sx.stx_mode & 0777);
    if (j.dst < 0)
        ex_die(a->dst, j.dst);
    if (j.size > 0) {
        int rc = rf_fallocate(j.dst, 0, 0, (int64_t)j.size);
        if (rc != 0 && rc != -EOPNOTSUPP)
            ex_die("fallocate", rc);
    }

    rf_stats s0, s1;
    rf_loop_stats(rf_loop_current(), &s0);
    uint64_t t0 = rf_now_ns();
    rf_task **t = calloc((size_t)a->depth, sizeof *t);
    for (long i = 0; i < a->depth; i++)
        t[i] = ex_spawn(copier, &j, "copier");
    ex_gather(t, (size_t)a->depth, NULL);
    ex_release_all(t, (size_t)a->depth);
    free(t);
    if (j.err)
        ex_die("copy", j.err);
    ex_check(rf_fdatasync(j.dst), "fdatasync");
    double secs = (double)(rf_now_ns() - t0) / 1e9;
    rf_loop_stats(rf_loop_current(), &s1);
    rf_close(j.dst);

    int d = rf_open(a->dst, O_RDONLY | O_CLOEXEC, 0);
    if (d < 0)
        ex_die(a->dst, d);
    uint64_t hs = 0, hd = 0;
    ex_check(checksum(j.src, &hs), "read source");
    ex_check(checksum(d, &hd), "read copy");
    rf_close(d);
    rf_close(j.src);
    if (hs != hd) {
        fprintf(stderr, "%s: the copy differs from the source\n", ex_prog);
        exit(1);
    }
    printf("copied %llu bytes in %.3f s (%.0f MiB/s), %ld tasks, %ld KiB chunks\n",
           (unsigned long long)j.size, secs,
           secs > 0 ? (double)j.size / 1048576.0 / secs : 0.0, a->depth,
           a->chunk_kib);
    printf("copy verified: checksum %016llx\n", (unsigned long long)hs);
    uint64_t sqes = s1.sqes_submitted - s0.sqes_submitted;
    uint64_t enters = s1.enters - s0.enters;
    printf("loop counters for the copy: %llu SQEs submitted, %llu CQEs reaped, "
           "%llu io_uring_enter calls (%.1f SQEs per call), %llu task switches\n",
           (unsigned long long)sqes,
           (unsigned long long)(s1.cqes_reaped - s0.cqes_reaped),
           (unsigned long long)enters, enters ? (double)sqes / (double)enters : 0.0,
           (unsigned long long)(s1.switches - s0.switches));
    if (temp) {
        unlink(a->src);
        unlink(a->dst);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    args a = {.depth = 8, .chunk_kib = 256, .size_mib = 32};
    const ex_option opts[] = {
        {"--depth", "N", "tasks copying at once (default 8)", NULL, NULL, &a.depth},
        {"--chunk", "KIB", "bytes per read/write, in KiB (default 256)", NULL,
         NULL, &a.chunk_kib},
        {"--size", "MIB", "size of the generated source (default 32)", NULL,
         NULL, &a.size_mib},
        {0},
    };
    /* SRC DST come first when given. */
    if (argc >= 3 && argv[1][0] != '-' && argv[2][0] != '-') {
        a.src = argv[1];
        a.dst = argv[2];
        argv[2] = argv[0];
        argc -= 2;
        argv += 2;
    }
    ex_parse_args(argc, argv, opts);
    if (a.depth < 1 || a.depth > 4096 || a.chunk_kib < 1 ||
        a.chunk_kib > (1 << 20) || a.size_mib < 0)
        ex_bad_arg(opts, "value out of range", NULL);
    ex_run(copy_main, &a);
    return 0;
}
