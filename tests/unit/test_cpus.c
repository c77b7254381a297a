/*
 * test_cpus.c - CPU lists for skein-node --cpus (node/cpus.h): what is
 * accepted, what is refused, and that formatting folds ranges and reads
 * back as the same set.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "cpus.h"

static void expect_set(const char* list, const int* cpus, int n) {
    cpu_set_t set;
    assert_int_equal(cpus_parse(list, &set), 0);
    assert_int_equal(CPU_COUNT(&set), n);
    for (int i = 0; i < n; i++) {
        assert_true(CPU_ISSET(cpus[i], &set));
    }
}

static void test_accepted_lists(void** state) {
    (void)state;
    expect_set("0", (const int[]){0}, 1);
    expect_set("3", (const int[]){3}, 1);
    expect_set("0-3", (const int[]){0, 1, 2, 3}, 4);
    expect_set("0,2,4-5", (const int[]){0, 2, 4, 5}, 4);
    expect_set("7,7,6-7", (const int[]){6, 7}, 2);
    expect_set("1023", (const int[]){1023}, 1);
}

static void test_refused_lists(void** state) {
    static const char* const bad[] = {
        "",
        "x",
        "-1",
        "1-0",
        "0,",
        ",0",
        "0--1",
        "0-",
        "1 2",
        "0;1",
        "1,a",
        "+1",
        "1024",
        "0-1024",
        " 0",
        "0x1",
        "99999999999999999999",
    };
    cpu_set_t set;
    (void)state;
    assert_int_equal(cpus_parse(NULL, &set), -1);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(cpus_parse(bad[i], &set), -1);
    }
}

static void test_format_folds_ranges(void** state) {
    cpu_set_t set;
    char buf[64];
    (void)state;
    CPU_ZERO(&set);
    assert_string_equal(cpus_format(&set, buf, sizeof(buf)), "");
    CPU_SET(0, &set);
    assert_string_equal(cpus_format(&set, buf, sizeof(buf)), "0");
    CPU_SET(1, &set);
    CPU_SET(2, &set);
    CPU_SET(3, &set);
    CPU_SET(6, &set);
    CPU_SET(8, &set);
    CPU_SET(9, &set);
    assert_string_equal(cpus_format(&set, buf, sizeof(buf)), "0-3,6,8-9");
}

static void test_format_round_trips(void** state) {
    static const char* const lists[] = {"0",         "0-1",  "1,3,5",
                                        "0-3,6,8-9", "1023", "5-7,1000-1023"};
    (void)state;
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        cpu_set_t set;
        char buf[128];
        assert_int_equal(cpus_parse(lists[i], &set), 0);
        assert_string_equal(cpus_format(&set, buf, sizeof(buf)), lists[i]);
    }
}

static void test_format_truncates_safely(void** state) {
    cpu_set_t set;
    char buf[6];
    (void)state;
    assert_int_equal(cpus_parse("0,2,4,6,8", &set), 0);
    cpus_format(&set, buf, sizeof(buf));
    assert_true(strlen(buf) < sizeof(buf));
    assert_string_equal(buf, "0,2,4");
    assert_ptr_equal(cpus_format(&set, buf, 0), buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_lists),
        cmocka_unit_test(test_refused_lists),
        cmocka_unit_test(test_format_folds_ranges),
        cmocka_unit_test(test_format_round_trips),
        cmocka_unit_test(test_format_truncates_safely),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
