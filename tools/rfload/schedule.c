/*
 * The open-loop schedule: when each request is due.
 *
 * One global sequence of send times for the whole run, whatever the
 * number of loops: t_0 = 0, t_(i+1) = t_i + 1 / rate(t_i), where rate is
 * the schedule's rate at that time (constant, a step of a sweep, or a
 * point of a linear ramp). Loop k of n takes the times i = k, k + n,
 * k + 2n, ...: each loop walks the global sequence itself and keeps every
 * nth time, so the loops share no counter and exchange nothing, and the
 * union of their times is exactly the sequence, evenly interleaved. -R
 * therefore means the same rate at any --threads.
 */
#include "rfload.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool rfl_parse_time(const char *s, uint64_t *ns)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0) || isinf(v))
        return false;
    double mult = !*end || !strcmp(end, "s") ? 1e9
                  : !strcmp(end, "ms")       ? 1e6
                  : !strcmp(end, "us")       ? 1e3
                  : !strcmp(end, "m")        ? 60e9
                  : !strcmp(end, "h")        ? 3600e9
                                             : 0;
    if (mult == 0 || v * mult > 1e18)
        return false;
    *ns = (uint64_t)llround(v * mult);
    return true;
}

/* [s, end) as a string in buf (cap bytes); false if empty or too long. */
static bool span(const char *s, const char *end, char *buf, size_t cap)
{
    size_t n = (size_t)(end - s);
    if (n == 0 || n >= cap)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return true;
}

/* A step's or a ramp's length: from a millisecond to about 11 days. */
static bool duration(const char *s, const char *end, uint64_t *ns)
{
    char buf[32];
    return span(s, end, buf, sizeof buf) && rfl_parse_time(buf, ns) &&
           *ns >= RF_NSEC_PER_MSEC && *ns <= 1000000000000000ull;
}

static bool rate(const char *s, const char *end, double *r)
{
    char buf[32];
    /* A digit first: "1000...2000" is a typo, not a ramp to .2000. */
    if (!span(s, end, buf, sizeof buf) || *s < '0' || *s > '9')
        return false;
    char *e;
    errno = 0;
    double v = strtod(buf, &e);
    if (errno || e == buf || *e || !(v > 0) || v > 1e9)
        return false;
    *r = v;
    return true;
}

static int why_not(char *why, size_t len, const char *msg)
{
    if (why && len)
        snprintf(why, len, "%s", msg);
    return -1;
}

int rfl_schedule_parse(const char *s, uint64_t default_ns, rfl_schedule *out,
                       char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return why_not(why, whylen, "no rate given");
    const char *dots = strstr(s, "..");
    const char *at = strchr(s, '@');
    const char *end = s + strlen(s);
    if (dots) {
        /* A..B/T: a linear ramp, reported a step a second (at most 64). */
        const char *slash = strchr(dots, '/');
        double a, b;
        uint64_t t;
        if (!slash || at || !rate(s, dots, &a) || !rate(dots + 2, slash, &b) ||
            !duration(slash + 1, end, &t))
            return why_not(why, whylen,
                           "a ramp is FROM..TO/TIME, rates above 0 "
                           "(1000..20000/10s)");
        unsigned m = (unsigned)(t / 1000000000u);
        if (m < 1)
            m = 1;
        if (m > RFL_MAX_STEPS)
            m = RFL_MAX_STEPS;
        out->nsteps = m;
        for (unsigned j = 0; j < m; j++) {
            rfl_step *st = &out->steps[j];
            st->from = a + (b - a) * j / m;
            st->to = a + (b - a) * (j + 1) / m;
            st->ns = t / m + (j < t % m);
        }
        out->total_ns = t;
        out->sweep = true;
        return 0;
    }
    if (at) {
        /* R1,R2,...@T: steps of T each. */
        uint64_t t;
        if (!duration(at + 1, end, &t))
            return why_not(why, whylen,
                           "steps are RATE,RATE,...@TIME "
                           "(1000,2000,5000@5s), TIME from 1ms");
        for (const char *p = s; p < at;) {
            const char *comma = memchr(p, ',', (size_t)(at - p));
            const char *e = comma ? comma : at;
            double r;
            if (out->nsteps == RFL_MAX_STEPS)
                return why_not(why, whylen, "at most 64 steps");
            if (!rate(p, e, &r))
                return why_not(why, whylen,
                               "steps are RATE,RATE,...@TIME with rates "
                               "above 0 and up to 1e9");
            rfl_step *st = &out->steps[out->nsteps++];
            st->from = st->to = r;
            st->ns = t;
            out->total_ns += t;
            p = comma ? comma + 1 : at;
            if (comma && p == at)
                return why_not(why, whylen, "a rate is missing before @");
        }
        if (out->nsteps == 0)
            return why_not(why, whylen, "a rate is missing before @");
        out->sweep = true;
        return 0;
    }
    double r;
    if (!rate(s, end, &r))
        return why_not(why, whylen,
                       "a number of requests per second, above 0 and up "
                       "to 1e9, a ramp (1000..20000/10s) or steps "
                       "(1000,2000,5000@5s)");
    out->nsteps = 1;
    out->steps[0].from = out->steps[0].to = r;
    out->steps[0].ns = default_ns ? default_ns : UINT64_MAX;
    out->total_ns = default_ns;
    return 0;
}

unsigned rfl_schedule_step(const rfl_schedule *s, uint64_t t)
{
    for (unsigned j = 0; j < s->nsteps; j++) {
        if (t < s->steps[j].ns)
            return j;
        t -= s->steps[j].ns;
    }
    return s->nsteps;
}

double rfl_schedule_rate(const rfl_schedule *s, uint64_t t)
{
    for (unsigned j = 0; j < s->nsteps; j++) {
        const rfl_step *st = &s->steps[j];
        if (t < st->ns)
            return st->from +
                   (st->to - st->from) * ((double)t / (double)st->ns);
        t -= st->ns;
    }
    return 0;
}

double rfl_schedule_target(const rfl_schedule *s, unsigned step)
{
    return step < s->nsteps ? (s->steps[step].from + s->steps[step].to) / 2
                            : 0;
}

uint64_t rfl_schedule_step_start(const rfl_schedule *s, unsigned step)
{
    uint64_t t = 0;
    for (unsigned j = 0; j < step && j < s->nsteps; j++)
        t += s->steps[j].ns;
    return t;
}

/* Move sl's cached step up to the one holding sl->t; false past the end. */
static bool locate(rfl_slots *sl)
{
    const rfl_schedule *s = sl->s;
    if (!isfinite(sl->t))
        return false;
    while (sl->step < s->nsteps &&
           sl->t - (double)sl->step_start >= (double)s->steps[sl->step].ns) {
        sl->step_start += s->steps[sl->step].ns;
        sl->step++;
    }
    return sl->step < s->nsteps;
}

/* One time of the global sequence further. */
static void advance(rfl_slots *sl)
{
    if (!locate(sl)) {
        sl->t = INFINITY;
        return;
    }
    const rfl_step *st = &sl->s->steps[sl->step];
    double into = (sl->t - (double)sl->step_start) / (double)st->ns;
    sl->t += 1e9 / (st->from + (st->to - st->from) * into);
}

void rfl_slots_init(rfl_slots *sl, const rfl_schedule *s, unsigned k,
                    unsigned n)
{
    memset(sl, 0, sizeof *sl);
    sl->s = s;
    sl->stride = n ? n : 1;
    for (unsigned i = 0; i < k; i++)
        advance(sl);
}

uint64_t rfl_slots_next(rfl_slots *sl)
{
    if (!locate(sl))
        return UINT64_MAX;
    uint64_t t = (uint64_t)sl->t;
    for (unsigned i = 0; i < sl->stride; i++)
        advance(sl);
    return t;
}
