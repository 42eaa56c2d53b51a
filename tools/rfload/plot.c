/*
 * --plot: the run drawn by gnuplot, as bench/compare draws its chart. The
 * data and the script go to a private temporary folder, gnuplot runs as a
 * child process (waited for), and the folder is removed whatever happens.
 *
 * The spectrum: latency (ms) against the percentile, on HdrHistogram's
 * axis (1/(1 - percentile), logarithmic, labelled 50% ... 99.999%). A
 * sweep adds a second panel: p99 (ms) against the rate asked, each step a
 * point, and the knee marked.
 */
#include "rfload.h"

#include <errno.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

bool rfl_have_gnuplot(void)
{
    const char *path = getenv("PATH");
    if (!path)
        return false;
    char buf[4096];
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        if (n && n + 9 < sizeof buf) {
            memcpy(buf, p, n);
            memcpy(buf + n, "/gnuplot", 9);
            if (access(buf, X_OK) == 0)
                return true;
        }
        p += n + (p[n] == ':');
    }
    return false;
}

/* s in gnuplot's single quotes, where nothing is special but the quote,
 * written twice. */
static void gp_quote(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static void spectrum_point(void *arg, double pct, uint64_t value,
                           uint64_t cum)
{
    (void)cum;
    if (pct >= 100.0)
        return; /* 1/(1 - 1) is off the axis */
    fprintf(arg, "%.6f %.6f\n", 100.0 / (100.0 - pct), (double)value / 1e6);
}

int rfl_plot(const rfl_config *cfg, const rfl_result *res, FILE *err)
{
    char dir[] = "/tmp/rfload-plot-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(err, "rfload: --plot: %s\n", strerror(errno));
        return -1;
    }
    char spec[64], sweep[64], script[64];
    snprintf(spec, sizeof spec, "%s/spectrum.dat", dir);
    snprintf(sweep, sizeof sweep, "%s/sweep.dat", dir);
    snprintf(script, sizeof script, "%s/plot.gp", dir);
    int rc = -1;
    bool two = res->nsteps > 0;
    FILE *f = fopen(spec, "we");
    if (f) {
        rfl_hist_spectrum(&res->hist, spectrum_point, f);
        rc = fclose(f) == 0 ? 0 : -1;
    }
    int knee = two ? rfl_knee(&cfg->sched, res, cfg->slo_p99_ns) : -1;
    if (rc == 0 && two && (f = fopen(sweep, "we"))) {
        for (unsigned j = 0; j < res->nsteps; j++) {
            const rfl_hist *h = res->steps[j].hist;
            if (!h)
                continue;
            fprintf(f, "%.3f %.6f %d\n", rfl_schedule_target(&cfg->sched, j),
                    (double)rfl_hist_percentile(h, 99) / 1e6,
                    (int)j == knee);
        }
        rc = fclose(f) == 0 ? 0 : -1;
    } else if (rc == 0 && two) {
        rc = -1;
    }
    if (rc == 0 && (f = fopen(script, "we"))) {
        size_t pl = strlen(cfg->plot);
        bool png = !strcmp(cfg->plot + pl - 4, ".png");
        fprintf(f, "set terminal %s size %d,480 %sfont \"sans,%d\" "
                   "background \"white\"\n",
                png ? "pngcairo" : "svg", two ? 1400 : 800,
                png ? "" : "dynamic ", png ? 10 : 12);
        fputs("set output ", f);
        gp_quote(f, cfg->plot);
        fputc('\n', f);
        fprintf(f, "set grid\n");
        if (two)
            fprintf(f, "set multiplot layout 1,2\n");
        char title[1200];
        snprintf(title, sizeof title, "rfload %s: latency by percentile",
                 cfg->url);
        fputs("set title ", f);
        gp_quote(f, title);
        fprintf(f, " noenhanced\n"
                   "set logscale x\nset xrange [1:*]\n"
                   /* Tic labels are formats to gnuplot: %% is a %. */
                   "set xtics (\"50%%%%\" 2, \"90%%%%\" 10, "
                   "\"99%%%%\" 100, \"99.9%%%%\" 1000, \"99.99%%%%\" 10000, "
                   "\"99.999%%%%\" 100000, \"99.9999%%%%\" 1000000)\n"
                   "set xlabel \"percentile\"\nset ylabel \"latency (ms)\"\n"
                   "set key bottom right\n"
                   "plot \"%s\" using 1:2 with lines lw 2 title \"%s\"\n",
                spec,
                cfg->rate > 0 ? "open loop, from the intended send time"
                              : "closed loop");
        if (two) {
            fprintf(f, "unset logscale x\nset xrange [*:*]\nset xtics auto\n"
                       "set offsets graph 0.05, graph 0.05, graph 0.05, 0\n"
                       "set title \"p99 against the rate asked\"\n"
                       "set key top left\n"
                       "set xlabel \"requests/s asked\"\n"
                       "set ylabel \"p99 latency (ms)\"\n"
                       /* An overloaded step is 1000x the others. */
                       "set logscale y\n");
            if (knee >= 0)
                fprintf(f, "set arrow from %.3f, graph 0 to %.3f, graph 1 "
                           "nohead dt 2 lc rgb \"red\"\n"
                           "set label \"knee\" at %.3f, graph 0.95 right "
                           "offset -0.5,0 tc rgb \"red\"\n",
                        rfl_schedule_target(&cfg->sched, (unsigned)knee),
                        rfl_schedule_target(&cfg->sched, (unsigned)knee),
                        rfl_schedule_target(&cfg->sched, (unsigned)knee));
            if (cfg->slo_p99_ns)
                fprintf(f, "set arrow from graph 0, first %.6f to graph 1, "
                           "first %.6f nohead dt 3 lc rgb \"gray40\"\n",
                        (double)cfg->slo_p99_ns / 1e6,
                        (double)cfg->slo_p99_ns / 1e6);
            fprintf(f, "plot \"%s\" using 1:2 with linespoints lw 2 pt 7 "
                       "title \"p99\"\nunset multiplot\n",
                    sweep);
        }
        rc = fclose(f) == 0 ? 0 : -1;
    } else if (rc == 0) {
        rc = -1;
    }
    if (rc != 0)
        fprintf(err, "rfload: --plot: cannot write in %s: %s\n", dir,
                strerror(errno));
    if (rc == 0) {
        pid_t pid;
        char *argv[] = {"gnuplot", script, NULL};
        int e = posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ);
        int status = 0;
        if (e != 0) {
            fprintf(err, "rfload: --plot: gnuplot: %s\n", strerror(e));
            rc = -1;
        } else if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
                   WEXITSTATUS(status) != 0) {
            fprintf(err, "rfload: --plot: gnuplot failed (status %d)\n",
                    status);
            rc = -1;
        }
    }
    unlink(spec);
    unlink(sweep);
    unlink(script);
    rmdir(dir);
    return rc;
}
