/*
 * test_hist.c - the latency histogram (admin/ctl_hist.c): bucket layout,
 * exactness of small values, bounded relative error, percentiles of known
 * distributions, merging.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "ctl.h"

static void test_small_values_exact(void** state) {
    (void)state;
    for (uint64_t v = 0; v < 2 * CTL_HIST_SUB; v++) {
        size_t b = ctl_hist_bucket_of(v);
        assert_int_equal(ctl_hist_bucket_high(b), v);
    }
}

static void test_buckets_cover_and_bound_error(void** state) {
    (void)state;
    /* Every value lands in a bucket whose high end is >= it and within
     * 1/32 of it; buckets are monotonic. */
    size_t prev = 0;
    for (uint64_t v = 1; v < ((uint64_t)1 << 40); v = v + 1 + v / 7) {
        size_t b = ctl_hist_bucket_of(v);
        uint64_t hi = ctl_hist_bucket_high(b);
        assert_true(b >= prev);
        assert_true(hi >= v);
        assert_true((double)(hi - v) <= (double)v / CTL_HIST_SUB + 1);
        if (b > 0) {
            assert_true(ctl_hist_bucket_high(b - 1) < v);
        }
        prev = b;
    }
    /* Huge values are clamped into the last bucket, not out of bounds. */
    assert_int_equal(ctl_hist_bucket_of(UINT64_MAX), CTL_HIST_BUCKETS - 1);
}

static void test_percentiles_uniform(void** state) {
    (void)state;
    struct ctl_hist* h = malloc(sizeof *h);
    assert_non_null(h);
    ctl_hist_init(h);
    assert_int_equal(ctl_hist_percentile(h, 50), 0);
    for (uint64_t v = 1; v <= 100000; v++) {
        ctl_hist_record(h, v);
    }
    assert_int_equal(h->count, 100000);
    assert_int_equal(h->min, 1);
    assert_int_equal(h->max, 100000);
    const double ps[] = {50, 90, 99, 99.9};
    for (size_t i = 0; i < 4; i++) {
        double want = ps[i] * 1000;
        double got = (double)ctl_hist_percentile(h, ps[i]);
        assert_true(got >= want);
        assert_true(got <= want * (1.0 + 1.0 / CTL_HIST_SUB) + 1);
    }
    assert_int_equal(ctl_hist_percentile(h, 100), 100000);
    assert_true(ctl_hist_mean(h) > 50000 && ctl_hist_mean(h) < 50001);
    free(h);
}

static void test_percentiles_bimodal_and_merge(void** state) {
    (void)state;
    struct ctl_hist* a = malloc(sizeof *a);
    struct ctl_hist* b = malloc(sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    ctl_hist_init(a);
    ctl_hist_init(b);
    /* 990 fast requests at 2 ms and 10 slow ones at 800 ms. */
    for (int i = 0; i < 990; i++) {
        ctl_hist_record(a, 2000);
    }
    for (int i = 0; i < 10; i++) {
        ctl_hist_record(b, 800000);
    }
    ctl_hist_merge(a, b);
    assert_int_equal(a->count, 1000);
    assert_int_equal(a->max, 800000);
    uint64_t p50 = ctl_hist_percentile(a, 50);
    uint64_t p99 = ctl_hist_percentile(a, 99);
    uint64_t p999 = ctl_hist_percentile(a, 99.9);
    assert_true(p50 >= 2000 && p50 <= 2000 + 2000 / CTL_HIST_SUB);
    assert_true(p99 >= 2000 && p99 <= 2000 + 2000 / CTL_HIST_SUB);
    assert_int_equal(p999, 800000); /* clamped to the max */
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_values_exact),
        cmocka_unit_test(test_buckets_cover_and_bound_error),
        cmocka_unit_test(test_percentiles_uniform),
        cmocka_unit_test(test_percentiles_bimodal_and_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
