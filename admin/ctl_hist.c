/*
 * ctl_hist.c - a fixed-size log-linear latency histogram (HdrHistogram's
 * layout, simplified): values below 2 * CTL_HIST_SUB are counted exactly;
 * above that, each power of two is cut into CTL_HIST_SUB equal buckets, so
 * a bucket is never wider than 1/CTL_HIST_SUB of its lower bound.
 */
#include <math.h>
#include <string.h>

#include "ctl.h"

void ctl_hist_init(struct ctl_hist* h) {
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

static unsigned ctl_msb(uint64_t v) {
    return 63u - (unsigned)__builtin_clzll(v);
}

size_t ctl_hist_bucket_of(uint64_t value) {
    if (value < CTL_HIST_SUB) {
        return (size_t)value;
    }
    unsigned shift = ctl_msb(value) - CTL_HIST_SUB_BITS;
    uint64_t top = value >> shift; /* in [SUB, 2 * SUB) */
    size_t i =
        (size_t)(shift + 1) * CTL_HIST_SUB + (size_t)(top - CTL_HIST_SUB);
    return i < CTL_HIST_BUCKETS ? i : CTL_HIST_BUCKETS - 1;
}

uint64_t ctl_hist_bucket_high(size_t i) {
    if (i < CTL_HIST_SUB) {
        return (uint64_t)i;
    }
    unsigned shift = (unsigned)(i / CTL_HIST_SUB) - 1;
    uint64_t top = CTL_HIST_SUB + (uint64_t)(i % CTL_HIST_SUB);
    return (top << shift) + ((uint64_t)1 << shift) - 1;
}

void ctl_hist_record(struct ctl_hist* h, uint64_t value) {
    h->bucket[ctl_hist_bucket_of(value)]++;
    h->count++;
    h->sum = h->sum + value < h->sum ? UINT64_MAX : h->sum + value;
    if (value < h->min) {
        h->min = value;
    }
    if (value > h->max) {
        h->max = value;
    }
}

void ctl_hist_merge(struct ctl_hist* dst, const struct ctl_hist* src) {
    for (size_t i = 0; i < CTL_HIST_BUCKETS; i++) {
        dst->bucket[i] += src->bucket[i];
    }
    dst->count += src->count;
    dst->sum =
        dst->sum + src->sum < dst->sum ? UINT64_MAX : dst->sum + src->sum;
    if (src->min < dst->min) {
        dst->min = src->min;
    }
    if (src->max > dst->max) {
        dst->max = src->max;
    }
}

uint64_t ctl_hist_percentile(const struct ctl_hist* h, double p) {
    if (h->count == 0) {
        return 0;
    }
    if (p <= 0) {
        return h->min;
    }
    if (p > 100) {
        p = 100;
    }
    double want = ceil(p / 100.0 * (double)h->count);
    uint64_t rank = want < 1 ? 1 : (uint64_t)want;
    if (rank > h->count) {
        rank = h->count;
    }
    uint64_t seen = 0;
    for (size_t i = 0; i < CTL_HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            uint64_t v = ctl_hist_bucket_high(i);
            if (v > h->max) {
                v = h->max;
            }
            if (v < h->min) {
                v = h->min;
            }
            return v;
        }
    }
    return h->max;
}

double ctl_hist_mean(const struct ctl_hist* h) {
    return h->count == 0 ? 0.0 : (double)h->sum / (double)h->count;
}
