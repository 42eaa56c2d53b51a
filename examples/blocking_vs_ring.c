/*
 * blocking_vs_ring: the seeds' point about blocking file I/O, measured.
 *
 *   blocking_vs_ring [--files N] [--size MIB] [--chunk KIB]
 *
 * N files (default 8) of --size MiB (default 4) are made in /tmp. One task
 * per file reads its file in --chunk KiB pieces (default 64), first with
 * blocking pread() called inside the task, then with rf_read. Meanwhile a
 * ticker task wants to run every millisecond; how late it gets is printed
 * with each time. Each way runs twice: on files in the page cache, and
 * after dropping them from it (posix_fadvise DONTNEED), so that the reads
 * go to the disk.
 *
 * What it shows, honestly (figures seen on a loaded 2-vCPU VM, 8 files of
 * 32 MiB):
 *  - Cached files: a read is a memory copy. Blocking pread() is about as
 *    fast as rf_read in total (0.06-0.13 s vs 0.04-0.16 s: within the
 *    noise), and can be faster on small files (no ring round trip). What
 *    differs is the ticker: a task calling pread() never gives the loop
 *    back, so the ticker is late by the whole run (60-130 ms); with
 *    rf_read each read is a suspension point and it stays within a few
 *    ms (what is left is this machine's scheduling noise).
 *  - Uncached files: pread() reads one chunk after the other and freezes
 *    the loop for the whole run (0.6-1.0 s late); rf_read keeps one read
 *    per task in flight and was 2-5x faster here, with the ticker on
 *    time. On a disk with no parallelism the gain in time shrinks; the
 *    loop's responsiveness is the point that always holds.
 */
#include "common.h"

#include <fcntl.h>
#include <unistd.h>

typedef struct reader {
    const char *path;
    size_t size, chunk;
    bool blocking;
    int err;
} reader;

static void *read_file(void *arg)
{
    reader *r = arg;
    char *buf = malloc(r->chunk);
    int fd = open(r->path, O_RDONLY | O_CLOEXEC); /* open is quick either way */
    if (!buf || fd < 0) {
        r->err = fd < 0 ? -errno : -ENOMEM;
        free(buf);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    for (size_t off = 0; off < r->size; off += r->chunk) {
        ssize_t n = r->blocking ? pread(fd, buf, r->chunk, (off_t)off)
                                : rf_read(fd, buf, r->chunk, (int64_t)off);
        if (n < 0) {
            r->err = r->blocking ? -errno : (int)n;
            break;
        }
        if (n == 0)
            break;
    }
    close(fd);
    free(buf);
    return NULL;
}

typedef struct ticker {
    volatile bool stop;
    uint64_t worst_ns;
} ticker;

/* Wants to run every millisecond; records the worst lateness. */
static void *tick(void *arg)
{
    ticker *k = arg;
    uint64_t next = rf_now_ns() + RF_NSEC_PER_MSEC;
    while (!k->stop) {
        if (rf_sleep(next > rf_now_ns() ? next - rf_now_ns() : 0) == -ECANCELED)
            break;
        uint64_t now = rf_now_ns();
        if (now > next && now - next > k->worst_ns)
            k->worst_ns = now - next;
        next = now + RF_NSEC_PER_MSEC;
    }
    return NULL;
}

typedef struct args {
    long files, size_mib, chunk_kib;
    char (*paths)[64];
} args;

static double run(const args *a, bool blocking, uint64_t *worst)
{
    ticker k = {0};
    rf_task *kt = ex_spawn(tick, &k, "ticker");
    rf_yield(); /* the ticker starts its beat */
    reader *r = calloc((size_t)a->files, sizeof *r);
    rf_task **t = calloc((size_t)a->files, sizeof *t);
    uint64_t t0 = rf_now_ns();
    for (long i = 0; i < a->files; i++) {
        r[i] = (reader){a->paths[i], (size_t)a->size_mib << 20,
                        (size_t)a->chunk_kib << 10, blocking, 0};
        t[i] = ex_spawn(read_file, &r[i], "reader");
    }
    ex_gather(t, (size_t)a->files, NULL);
    double secs = (double)(rf_now_ns() - t0) / 1e9;
    for (long i = 0; i < a->files; i++)
        if (r[i].err)
            ex_die(a->paths[i], r[i].err);
    k.stop = true;
    ex_check(rf_join(kt, NULL), "join ticker");
    rf_task_release(kt);
    ex_release_all(t, (size_t)a->files);
    free(t);
    free(r);
    *worst = k.worst_ns;
    return secs;
}

static void drop_cache(const args *a)
{
    for (long i = 0; i < a->files; i++) {
        int fd = open(a->paths[i], O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
}

static void *bench_main(void *arg)
{
    args *a = arg;
    size_t size = (size_t)a->size_mib << 20;
    char *buf = malloc(1 << 20);
    memset(buf, 'x', 1 << 20);
    for (long i = 0; i < a->files; i++) {
        snprintf(a->paths[i], sizeof a->paths[i], "/tmp/ringfiber-bvr-%d-%ld",
                 (int)getpid(), i);
        int fd = rf_open(a->paths[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            ex_die(a->paths[i], fd);
        for (size_t off = 0; off < size; off += 1 << 20) {
            ssize_t w = rf_write_all(fd, buf, 1 << 20, (int64_t)off, NULL);
            if (w < 0)
                ex_die("write", (int)w);
        }
        ex_check(rf_fdatasync(fd), "fdatasync");
        rf_close(fd);
    }
    free(buf);
    printf("%ld files of %ld MiB, read in %ld KiB pieces, one task per file; "
           "a ticker task wants to run every 1 ms\n",
           a->files, a->size_mib, a->chunk_kib);
    for (int pass = 0; pass < 2; pass++) {
        bool cached = pass == 0;
        uint64_t wb, wr;
        if (!cached)
            drop_cache(a);
        else
            run(a, true, &wb); /* warm the cache */
        double tb = run(a, true, &wb);
        if (!cached)
            drop_cache(a);
        double tr = run(a, false, &wr);
        printf("%s: blocking pread() %.3f s (ticker late by up to %.1f ms), "
               "rf_read %.3f s (ticker late by up to %.1f ms)\n",
               cached ? "cached  " : "uncached", tb, (double)wb / 1e6, tr,
               (double)wr / 1e6);
    }
    for (long i = 0; i < a->files; i++)
        unlink(a->paths[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    args a = {.files = 8, .size_mib = 4, .chunk_kib = 64};
    const ex_option opts[] = {
        {"--files", "N", "files, one reading task each (default 8)", NULL, NULL,
         &a.files},
        {"--size", "MIB", "size of each file (default 4)", NULL, NULL, &a.size_mib},
        {"--chunk", "KIB", "bytes per read, in KiB (default 64)", NULL, NULL,
         &a.chunk_kib},
        {0},
    };
    ex_parse_args(argc, argv, opts);
    if (a.files < 1 || a.files > 1024 || a.size_mib < 1 || a.size_mib > 4096 ||
        a.chunk_kib < 1 || a.chunk_kib > 65536)
        ex_bad_arg(opts, "value out of range", NULL);
    char (*paths)[64] = calloc((size_t)a.files, sizeof *paths);
    a.paths = paths;
    ex_run(bench_main, &a);
    free(paths);
    return 0;
}
