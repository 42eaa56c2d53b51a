/*
 * The latency histogram: log-linear buckets in a fixed array (see
 * rfload.h). Recording is a count-leading-zeros, a shift and an add.
 */
#include "rfload.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

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
    if (!(p > 0))
        p = 0; /* and NaN: the first value */
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

/* ------------------------------------------------------------------------ */
/* HdrHistogram's formats                                                   */
/* ------------------------------------------------------------------------ */

/*
 * The counts array is HdrHistogram's for lowest value 1, highest 2^40 - 1
 * and 3 significant digits (2048 sub-buckets, 30 buckets, 31,744 counts):
 * index for index, so that the files below are theirs.
 */
#define HDR_V2_ENCODING 0x1c849313u    /* V2 cookie | 0x10 (word size) */
#define HDR_V2_COMPRESSION 0x1c849314u
#define HDR_HEADER 40u                 /* cookie .. conversion ratio */
#define HDR_HIGHEST ((UINT64_C(1) << RFL_HIST_MAX_BITS) - 1)
#define HDR_BUCKETS 30

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* ZigZag, then LEB128 of at most 9 bytes (the ninth carries 8 bits). */
static size_t zigzag_put(uint8_t *p, int64_t signed_v)
{
    uint64_t v = ((uint64_t)signed_v << 1) ^ (uint64_t)(signed_v >> 63);
    size_t n = 0;
    while (n < 8 && v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t zigzag_get(const uint8_t *p, size_t len, int64_t *out)
{
    uint64_t v = 0;
    size_t n = 0;
    for (;;) {
        if (n == len)
            return 0;
        uint8_t b = p[n];
        if (n == 8) {
            v |= (uint64_t)b << 56;
            n++;
            break;
        }
        v |= (uint64_t)(b & 0x7f) << (7 * n);
        n++;
        if (!(b & 0x80))
            break;
    }
    *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
    return n;
}

size_t rfl_hist_encode(const rfl_hist *h, uint8_t *buf, size_t cap)
{
    if (cap < RFL_HIST_ENCODED_MAX)
        return 0;
    unsigned limit = h->total ? rfl_hist_index(h->max) + 1 : 0;
    size_t n = HDR_HEADER;
    for (unsigned i = 0; i < limit;) {
        uint64_t c = h->counts[i++];
        if (c == 0) {
            int64_t zeros = 1;
            while (i < limit && h->counts[i] == 0)
                zeros++, i++;
            n += zigzag_put(buf + n, -zeros);
        } else {
            n += zigzag_put(buf + n, c > INT64_MAX ? INT64_MAX : (int64_t)c);
        }
    }
    put_be32(buf, HDR_V2_ENCODING);
    put_be32(buf + 4, (uint32_t)(n - HDR_HEADER));
    put_be32(buf + 8, 0);  /* normalizing index offset */
    put_be32(buf + 12, 3); /* significant digits */
    put_be64(buf + 16, 1); /* lowest discernible value */
    put_be64(buf + 24, HDR_HIGHEST);
    double ratio = 1.0;
    uint64_t bits;
    memcpy(&bits, &ratio, sizeof bits);
    put_be64(buf + 32, bits);
    return n;
}

/* The middle of bucket i, for a decoded histogram's sum. */
static double bucket_mid(unsigned i)
{
    uint64_t top = rfl_hist_bucket_top(i);
    uint64_t low = i ? rfl_hist_bucket_top(i - 1) + 1 : 0;
    return ((double)low + (double)top) / 2;
}

int rfl_hist_decode_add(rfl_hist *h, const uint8_t *buf, size_t len)
{
    if (len < HDR_HEADER || get_be32(buf) != HDR_V2_ENCODING)
        return -EBADMSG;
    uint32_t payload = get_be32(buf + 4);
    if (payload > len - HDR_HEADER)
        return -EBADMSG; /* cut short */
    if (get_be32(buf + 8) != 0 || get_be32(buf + 12) != 3 ||
        get_be64(buf + 16) != 1 || get_be64(buf + 24) > HDR_HIGHEST)
        return -EINVAL; /* another layout: not one of ours */
    const uint8_t *p = buf + HDR_HEADER, *end = p + payload;
    /* Checked whole before anything is added. */
    for (int pass = 0; pass < 2; pass++) {
        unsigned i = 0;
        for (const uint8_t *q = p; q < end;) {
            int64_t v;
            size_t used = zigzag_get(q, (size_t)(end - q), &v);
            if (used == 0)
                return -EBADMSG;
            q += used;
            if (v < 0) {
                uint64_t run = 0 - (uint64_t)v; /* INT64_MIN too */
                if (run > RFL_HIST_BUCKETS - i)
                    return -EBADMSG;
                i += (unsigned)run;
                continue;
            }
            if (i >= RFL_HIST_BUCKETS)
                return -EBADMSG;
            if (pass == 1 && v > 0) {
                uint64_t c = (uint64_t)v;
                h->counts[i] += c;
                h->total += c;
                uint64_t low = i ? rfl_hist_bucket_top(i - 1) + 1 : 0;
                uint64_t top = rfl_hist_bucket_top(i);
                if (low < h->min)
                    h->min = low;
                if (top > h->max)
                    h->max = top;
                double mid = bucket_mid(i);
                h->sum += mid * (double)c;
                h->sum_sq += mid * mid * (double)c;
            }
            i++;
        }
    }
    return 0;
}

/*
 * The percentile spectrum as HdrHistogram's outputPercentileDistribution
 * walks it: a point each time the cumulative percentile passes the next
 * reporting level, the levels getting closer as they near 100% (5 ticks
 * per halving of the distance to 100%), then the 100% point.
 */
void rfl_hist_spectrum(const rfl_hist *h,
                       void (*fn)(void *arg, double pct, uint64_t value,
                                  uint64_t cum),
                       void *arg)
{
    const int ticks = 5;
    uint64_t cum = 0, last_top = 0;
    double level = 0.0;
    for (unsigned i = 0; h->total && i < RFL_HIST_BUCKETS; i++) {
        if (h->counts[i] == 0)
            continue;
        cum += h->counts[i];
        uint64_t top = rfl_hist_bucket_top(i);
        last_top = top;
        double pct = 100.0 * (double)cum / (double)h->total;
        while (level <= pct) {
            fn(arg, level, top, cum);
            /* Halvings of the distance to 100% so far, plus one (computed
             * as HdrHistogram does, so that the rows are its rows). */
            double halvings =
                floor(log(100.0 / (100.0 - level)) / log(2.0)) + 1;
            level += 100.0 / (ticks * pow(2.0, halvings));
            if (cum == h->total)
                break; /* the last bucket: once, then the 100% row */
        }
    }
    if (h->total)
        fn(arg, 100.0, last_top, h->total);
}

struct hgrm_out {
    FILE *out;
    double ratio;
};

static void hgrm_row(void *arg, double pct, uint64_t value, uint64_t cum)
{
    struct hgrm_out *o = arg;
    double q = pct / 100.0;
    if (pct < 100.0)
        fprintf(o->out, "%12.3f %2.12f %10" PRIu64 " %14.2f\n",
                (double)value / o->ratio, q, cum, 1.0 / (1.0 - q));
    else /* 1/(1 - 1) has no value: HdrHistogram leaves it out */
        fprintf(o->out, "%12.3f %2.12f %10" PRIu64 "\n",
                (double)value / o->ratio, 1.0, cum);
}

/* The distribution in HdrHistogram's .hgrm text: the spectrum's rows,
 * values divided by unit_ratio, and its footer. */
int rfl_hist_write_hgrm(const rfl_hist *h, FILE *out, double unit_ratio)
{
    fprintf(out, "%12s %14s %10s %14s\n\n", "Value", "Percentile",
            "TotalCount", "1/(1-Percentile)");
    struct hgrm_out o = {out, unit_ratio};
    rfl_hist_spectrum(h, hgrm_row, &o);
    fprintf(out, "#[Mean    = %12.3f, StdDeviation   = %12.3f]\n",
            rfl_hist_mean(h) / unit_ratio, rfl_hist_stddev(h) / unit_ratio);
    fprintf(out, "#[Max     = %12.3f, Total count    = %12" PRIu64 "]\n",
            (double)h->max / unit_ratio, h->total);
    fprintf(out, "#[Buckets = %12d, SubBuckets     = %12d]\n", HDR_BUCKETS,
            RFL_HIST_SUB_COUNT);
    return ferror(out) ? -EIO : 0;
}

/* ---- the interval log: base64 of zlib-compressed V2 encodings ---------- */

static const char B64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_put(FILE *out, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        fputc(B64[v >> 18 & 63], out);
        fputc(B64[v >> 12 & 63], out);
        fputc(i + 1 < n ? B64[v >> 6 & 63] : '=', out);
        fputc(i + 2 < n ? B64[v & 63] : '=', out);
    }
}

static int b64_val(char c)
{
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

/* Decoded bytes of s[0..n) into out (room for n * 3 / 4); -1 if bad. */
static long b64_get(const char *s, size_t n, uint8_t *out)
{
    if (n % 4)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            v[k] = s[i + k] == '=' && i + 4 == n && k >= 2 ? 0
                                                           : b64_val(s[i + k]);
            if (v[k] < 0)
                return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                     (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (uint8_t)(w >> 16);
        if (s[i + 2] != '=')
            out[o++] = (uint8_t)(w >> 8);
        if (s[i + 3] != '=')
            out[o++] = (uint8_t)w;
    }
    return (long)o;
}

int rfl_hist_log_header(FILE *out, const char *comment, double start_epoch_s)
{
    time_t t = (time_t)start_epoch_s;
    struct tm tm;
    char date[64] = "";
    if (gmtime_r(&t, &tm))
        strftime(date, sizeof date, "%a %b %d %H:%M:%S UTC %Y", &tm);
    if (comment)
        fprintf(out, "#[%s]\n", comment);
    fprintf(out, "#[Histogram log format version 1.3]\n");
    fprintf(out, "#[StartTime: %.3f (seconds since epoch), %s]\n",
            start_epoch_s, date);
    fprintf(out, "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\","
                 "\"Interval_Compressed_Histogram\"\n");
    return ferror(out) ? -EIO : 0;
}

int rfl_hist_log_interval(FILE *out, const rfl_hist *h, double start_s,
                          double length_s, double max_unit_ratio)
{
    uint8_t *enc = malloc(RFL_HIST_ENCODED_MAX);
    uLong bound = compressBound(RFL_HIST_ENCODED_MAX);
    uint8_t *z = malloc(8 + bound);
    int rc = -ENOMEM;
    if (enc && z) {
        size_t n = rfl_hist_encode(h, enc, RFL_HIST_ENCODED_MAX);
        uLongf zlen = bound;
        rc = -EIO;
        if (n && compress(z + 8, &zlen, enc, n) == Z_OK) {
            put_be32(z, HDR_V2_COMPRESSION);
            put_be32(z + 4, (uint32_t)zlen);
            fprintf(out, "%.3f,%.3f,%.3f,", start_s, length_s,
                    (double)h->max / max_unit_ratio);
            b64_put(out, z, 8 + zlen);
            fputc('\n', out);
            rc = ferror(out) ? -EIO : 0;
        }
    }
    free(enc);
    free(z);
    return rc;
}

int rfl_hist_log_decode(const char *b64, size_t len, rfl_hist *h)
{
    uint8_t *z = malloc(len / 4 * 3 + 3);
    uint8_t *enc = malloc(RFL_HIST_ENCODED_MAX);
    int rc = -ENOMEM;
    if (z && enc) {
        long n = b64_get(b64, len, z);
        rc = -EBADMSG;
        if (n >= 8 && get_be32(z) == HDR_V2_COMPRESSION &&
            get_be32(z + 4) <= (uint64_t)n - 8) {
            uLongf out = RFL_HIST_ENCODED_MAX;
            if (uncompress(enc, &out, z + 8, get_be32(z + 4)) == Z_OK)
                rc = rfl_hist_decode_add(h, enc, out);
        }
    }
    free(z);
    free(enc);
    return rc;
}
