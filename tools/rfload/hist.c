/*
 * The latency histogram: log-linear buckets in a fixed array (see
 * rfload.h). Recording is a count-leading-zeros, a shift and an add.
 */
#include "rfload.h"

#include <math.h>
#include <string.h>

void rfl_hist_init(rfl_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

/*
 * Below 2^SUB_BITS a value is its own index. Above, a value with its
 * highest bit at position m (m >= SUB_BITS) lies in octave k = m - SUB_BITS,
 * whose HALF buckets are each 2^(k+1) wide: v >> (k+1) is in [HALF,
 * SUB_COUNT), so the octave's buckets follow one another without a gap.
 */
unsigned rfl_hist_index(uint64_t v)
{
    if (v < RFL_HIST_SUB_COUNT)
        return (unsigned)v;
    unsigned m = 63u - (unsigned)__builtin_clzll(v);
    if (m >= RFL_HIST_MAX_BITS)
        return RFL_HIST_BUCKETS - 1;
    unsigned k = m - RFL_HIST_SUB_BITS;
    return RFL_HIST_SUB_COUNT + k * RFL_HIST_HALF +
           (unsigned)((v >> (k + 1)) - RFL_HIST_HALF);
}

uint64_t rfl_hist_bucket_top(unsigned index)
{
    if (index < RFL_HIST_SUB_COUNT)
        return index;
    unsigned k = (index - RFL_HIST_SUB_COUNT) / RFL_HIST_HALF;
    uint64_t sub = (index - RFL_HIST_SUB_COUNT) % RFL_HIST_HALF + RFL_HIST_HALF;
    return ((sub + 1) << (k + 1)) - 1;
}

void rfl_hist_record(rfl_hist *h, uint64_t v)
{
    h->counts[rfl_hist_index(v)]++;
    h->total++;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    double d = (double)v;
    h->sum += d;
    h->sum_sq += d * d;
}

void rfl_hist_merge(rfl_hist *dst, const rfl_hist *src)
{
    for (unsigned i = 0; i < RFL_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->sum += src->sum;
    dst->sum_sq += src->sum_sq;
}

uint64_t rfl_hist_percentile(const rfl_hist *h, double p)
{
    if (h->total == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    double want = ceil(p / 100.0 * (double)h->total);
    uint64_t target = want < 1.0 ? 1 : (uint64_t)want;
    uint64_t seen = 0;
    for (unsigned i = 0; i < RFL_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= target) {
            uint64_t top = rfl_hist_bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

double rfl_hist_mean(const rfl_hist *h)
{
    return h->total ? h->sum / (double)h->total : 0.0;
}

double rfl_hist_stddev(const rfl_hist *h)
{
    if (h->total < 2)
        return 0.0;
    double n = (double)h->total;
    double mean = h->sum / n;
    double var = h->sum_sq / n - mean * mean;
    return var > 0 ? sqrt(var) : 0.0;
}
