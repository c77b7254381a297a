/*
 * test_quorum.c - majority arithmetic of the core (raft_quorum.h).
 *
 * Raft §5.2: "A candidate wins an election if it receives votes from a
 * majority of the servers in the full cluster for the same term."
 * Raft §5.3: an entry is committed once "the leader that created the entry
 * has replicated it on a majority of the servers".
 * Every table below is also checked against a brute-force oracle over
 * seeded pseudo-random inputs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "raft_quorum.h"

/* splitmix64: a tiny seeded generator, so every run draws the same inputs */
static uint64_t quorum_test_next(uint64_t* state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Oracle: the largest value v in `m` such that a majority reaches v. */
static raft_index quorum_test_oracle(const raft_index* m, uint32_t n) {
    raft_index best = 0;
    uint32_t q = n / 2 + 1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t reach = 0;
        for (uint32_t j = 0; j < n; j++) {
            if (m[j] >= m[i]) {
                reach++;
            }
        }
        if (reach >= q && m[i] > best) {
            best = m[i];
        }
    }
    return best;
}

static void test_quorum_size(void** state) {
    (void)state;
    /* A majority is strictly more than half. */
    assert_int_equal(raft_quorum_size(0), 0);
    assert_int_equal(raft_quorum_size(1), 1);
    assert_int_equal(raft_quorum_size(2), 2);
    assert_int_equal(raft_quorum_size(3), 2);
    assert_int_equal(raft_quorum_size(4), 3);
    assert_int_equal(raft_quorum_size(5), 3);
    assert_int_equal(raft_quorum_size(6), 4);
    assert_int_equal(raft_quorum_size(7), 4);
    assert_int_equal(raft_quorum_size(RAFT_MAX_NODES), RAFT_MAX_NODES / 2 + 1);
    for (uint32_t n = 1; n <= RAFT_MAX_NODES; n++) {
        uint32_t q = raft_quorum_size(n);
        /* Two majorities always intersect, a minority never is one. */
        assert_true(2 * q > n);
        assert_true(2 * (q - 1) <= n);
    }
}

static void expect_committed(const raft_index* m, uint32_t n, raft_index want) {
    raft_index copy[RAFT_MAX_NODES];
    assert_true(n <= RAFT_MAX_NODES);
    memcpy(copy, m, n * sizeof(*m));
    assert_int_equal(raft_quorum_committed_index(copy, n), want);
    /* "matches is not modified": the core passes its live progress. */
    assert_memory_equal(copy, m, n * sizeof(*m));
}

static void test_quorum_committed_index_odd(void** state) {
    (void)state;
    const raft_index one[] = {7};
    const raft_index three[] = {1, 2, 3};
    const raft_index five[] = {10, 4, 8, 1, 6};
    const raft_index zeros[] = {0, 0, 0};
    expect_committed(one, 1, 7);
    expect_committed(three, 3, 2);
    expect_committed(five, 5, 6);
    expect_committed(zeros, 3, 0);
}

static void test_quorum_committed_index_even(void** state) {
    (void)state;
    /* With 4 voters a majority is 3: the third highest index. */
    const raft_index two[] = {5, 9};
    const raft_index four[] = {1, 2, 3, 4};
    const raft_index four_b[] = {9, 9, 1, 1};
    const raft_index six[] = {6, 5, 4, 3, 2, 1};
    expect_committed(two, 2, 5);
    expect_committed(four, 4, 2);
    expect_committed(four_b, 4, 1);
    expect_committed(six, 6, 3);
}

static void test_quorum_committed_index_unsorted(void** state) {
    (void)state;
    const raft_index a[] = {3, 1, 2};
    const raft_index b[] = {2, 3, 1};
    const raft_index c[] = {100, 0, 50, 75, 25};
    expect_committed(a, 3, 2);
    expect_committed(b, 3, 2);
    expect_committed(c, 5, 50);
}

static void test_quorum_committed_index_duplicates(void** state) {
    (void)state;
    const raft_index same[] = {7, 7, 7, 7};
    const raft_index pair[] = {5, 5, 1};
    const raft_index tail[] = {1, 9, 9, 9, 1};
    expect_committed(same, 4, 7);
    expect_committed(pair, 3, 5);
    expect_committed(tail, 5, 9);
}

static void test_quorum_committed_index_empty(void** state) {
    (void)state;
    raft_index unused = 42;
    assert_int_equal(raft_quorum_committed_index(&unused, 0), 0);
    assert_int_equal(unused, 42);
}

static void test_quorum_committed_index_matches_oracle(void** state) {
    (void)state;
    uint64_t rng = 2024;
    for (int round = 0; round < 20000; round++) {
        raft_index m[RAFT_MAX_NODES];
        uint32_t n = (uint32_t)(quorum_test_next(&rng) % RAFT_MAX_NODES) + 1;
        /* Small ranges force many duplicates, large ones none. */
        uint64_t range = (round % 2) ? 4 : UINT64_MAX;
        for (uint32_t i = 0; i < n; i++) {
            m[i] = quorum_test_next(&rng) % range;
        }
        expect_committed(m, n, quorum_test_oracle(m, n));
    }
}

static enum raft_vote_result vote_oracle(uint32_t voters,
                                         uint32_t granted,
                                         uint32_t rejected) {
    uint32_t q = voters / 2 + 1;
    uint32_t missing = voters - granted - rejected;
    if (granted >= q) {
        return RAFT_VOTE_WON;
    }
    if (granted + missing < q) {
        return RAFT_VOTE_LOST;
    }
    return RAFT_VOTE_PENDING;
}

static void test_quorum_vote_result(void** state) {
    (void)state;
    /* §5.2: a candidate wins with a majority of the full cluster. */
    assert_int_equal(raft_quorum_vote_result(1, 1, 0), RAFT_VOTE_WON);
    assert_int_equal(raft_quorum_vote_result(1, 0, 1), RAFT_VOTE_LOST);
    assert_int_equal(raft_quorum_vote_result(1, 0, 0), RAFT_VOTE_PENDING);
    assert_int_equal(raft_quorum_vote_result(3, 2, 0), RAFT_VOTE_WON);
    assert_int_equal(raft_quorum_vote_result(3, 2, 1), RAFT_VOTE_WON);
    assert_int_equal(raft_quorum_vote_result(3, 1, 0), RAFT_VOTE_PENDING);
    assert_int_equal(raft_quorum_vote_result(3, 1, 1), RAFT_VOTE_PENDING);
    assert_int_equal(raft_quorum_vote_result(3, 1, 2), RAFT_VOTE_LOST);
    assert_int_equal(raft_quorum_vote_result(3, 0, 2), RAFT_VOTE_LOST);
    /* Even clusters: a tie is not a majority. */
    assert_int_equal(raft_quorum_vote_result(4, 2, 0), RAFT_VOTE_PENDING);
    assert_int_equal(raft_quorum_vote_result(4, 2, 2), RAFT_VOTE_LOST);
    assert_int_equal(raft_quorum_vote_result(4, 3, 0), RAFT_VOTE_WON);
    assert_int_equal(raft_quorum_vote_result(5, 2, 2), RAFT_VOTE_PENDING);
    assert_int_equal(raft_quorum_vote_result(5, 2, 3), RAFT_VOTE_LOST);
    assert_int_equal(raft_quorum_vote_result(5, 3, 2), RAFT_VOTE_WON);
}

static void test_quorum_vote_result_exhaustive(void** state) {
    (void)state;
    for (uint32_t v = 1; v <= RAFT_MAX_NODES; v++) {
        for (uint32_t g = 0; g <= v; g++) {
            for (uint32_t r = 0; g + r <= v; r++) {
                enum raft_vote_result got = raft_quorum_vote_result(v, g, r);
                if (got != vote_oracle(v, g, r)) {
                    fail_msg("voters %u granted %u rejected %u: got %d", v, g,
                             r, (int)got);
                }
            }
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quorum_size),
        cmocka_unit_test(test_quorum_committed_index_odd),
        cmocka_unit_test(test_quorum_committed_index_even),
        cmocka_unit_test(test_quorum_committed_index_unsorted),
        cmocka_unit_test(test_quorum_committed_index_duplicates),
        cmocka_unit_test(test_quorum_committed_index_empty),
        cmocka_unit_test(test_quorum_committed_index_matches_oracle),
        cmocka_unit_test(test_quorum_vote_result),
        cmocka_unit_test(test_quorum_vote_result_exhaustive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
