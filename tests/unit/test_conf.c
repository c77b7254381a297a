/*
 * test_conf.c - cluster configurations: the encoding carried by
 * RAFT_ENTRY_CONF entries and snapshots, and the queries on it; plus the
 * name tables of raft.h.
 *
 * The tests do not assume the byte layout: to build malformed inputs they
 * locate a field by encoding two configurations that differ only in it and
 * comparing the bytes. Every decode reads from a heap buffer of exactly the
 * given length, so an over-read is an AddressSanitizer error.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "raft.h"

struct conf_bytes {
    uint8_t b[RAFT_CONF_ENCODED_MAX + 64];
    size_t len;
};

static void conf_make(struct raft_conf* c,
                      uint32_t count,
                      const raft_node_id* ids,
                      const uint8_t* roles) {
    memset(c, 0, sizeof(*c));
    c->count = count;
    for (uint32_t i = 0; i < count; i++) {
        c->ids[i] = ids[i];
        c->roles[i] = roles ? roles[i] : RAFT_VOTER;
    }
}

static void conf_encode(const struct raft_conf* c, struct conf_bytes* out) {
    memset(out->b, 0xee, sizeof(out->b));
    out->len = raft_conf_encode(c, out->b);
    assert_true(out->len > 0);
    assert_true(out->len <= RAFT_CONF_ENCODED_MAX);
    /* Nothing written past the returned length. */
    for (size_t i = out->len; i < sizeof(out->b); i++) {
        assert_int_equal(out->b[i], 0xee);
    }
}

/* Decodes from an exactly sized heap copy, so ASan sees any over-read. */
static int conf_decode_exact(const uint8_t* b,
                             size_t len,
                             struct raft_conf* out) {
    uint8_t* copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) {
        memcpy(copy, b, len);
    }
    int rc = raft_conf_decode(copy, len, out);
    free(copy);
    return rc;
}

static void conf_assert_equal(const struct raft_conf* a,
                              const struct raft_conf* b) {
    assert_int_equal(a->count, b->count);
    for (uint32_t i = 0; i < a->count; i++) {
        /* Order may be canonicalised, so look each member up. */
        assert_int_equal(raft_conf_role(b, a->ids[i]), a->roles[i]);
    }
}

/* Positions (at most 16) where two encodings of equal length differ. */
static size_t conf_diff(const struct conf_bytes* x,
                        const struct conf_bytes* y,
                        size_t* pos,
                        size_t cap) {
    size_t n = 0;
    size_t len = x->len < y->len ? x->len : y->len;
    for (size_t i = 0; i < len && n < cap; i++) {
        if (x->b[i] != y->b[i]) {
            pos[n++] = i;
        }
    }
    return n;
}

static const raft_node_id conf_ids3[] = {1, 2, 3};

static void test_conf_round_trip(void** state) {
    (void)state;
    static const raft_node_id ids[RAFT_MAX_NODES] = {
        7, 1,  UINT64_MAX, 42, 0x0102030405060708ULL, 99, 1000, 3, 4, 5, 6, 8,
        9, 10, 11,         12};
    uint8_t roles[RAFT_MAX_NODES];
    for (uint32_t count = 1; count <= RAFT_MAX_NODES; count++) {
        for (uint32_t i = 0; i < count; i++) {
            roles[i] = (i % 3 == 1) ? RAFT_LEARNER : RAFT_VOTER;
        }
        struct raft_conf in, out;
        struct conf_bytes enc;
        conf_make(&in, count, ids, roles);
        conf_encode(&in, &enc);
        memset(&out, 0xaa, sizeof(out));
        assert_int_equal(conf_decode_exact(enc.b, enc.len, &out), RAFT_OK);
        conf_assert_equal(&in, &out);
        /* Deterministic: the same conf always gives the same bytes. */
        struct conf_bytes again;
        conf_encode(&out, &again);
        assert_int_equal(again.len, enc.len);
        assert_memory_equal(again.b, enc.b, enc.len);
    }
}

static void test_conf_rejects_truncated_and_oversized(void** state) {
    (void)state;
    struct raft_conf in, out;
    struct conf_bytes enc;
    conf_make(&in, 3, conf_ids3, NULL);
    conf_encode(&in, &enc);
    /* Every proper prefix is malformed, including the empty one. */
    for (size_t len = 0; len < enc.len; len++) {
        if (conf_decode_exact(enc.b, len, &out) != RAFT_EINVAL) {
            fail_msg("prefix of %zu/%zu bytes accepted", len, enc.len);
        }
    }
    /* Trailing bytes make the length wrong too. */
    for (size_t extra = 1; extra <= 20; extra++) {
        if (conf_decode_exact(enc.b, enc.len + extra, &out) != RAFT_EINVAL) {
            fail_msg("%zu trailing bytes accepted", extra);
        }
    }
    /* A huge length claim is refused without reading it. */
    uint8_t big[RAFT_CONF_ENCODED_MAX * 4];
    memset(big, 0x01, sizeof(big));
    assert_int_equal(conf_decode_exact(big, sizeof(big), &out), RAFT_EINVAL);
}

/* Finds where the member count lives, then claims too many members. */
static void test_conf_rejects_too_many_members(void** state) {
    (void)state;
    raft_node_id ids[RAFT_MAX_NODES];
    for (uint32_t i = 0; i < RAFT_MAX_NODES; i++) {
        ids[i] = i + 1;
    }
    struct raft_conf c15, c16, out;
    struct conf_bytes e15, e16;
    conf_make(&c15, RAFT_MAX_NODES - 1, ids, NULL);
    conf_make(&c16, RAFT_MAX_NODES, ids, NULL);
    conf_encode(&c15, &e15);
    conf_encode(&c16, &e16);
    size_t pos[16];
    size_t n = conf_diff(&e15, &e16, pos, 16);
    assert_true(n >= 1); /* the count field, wherever it is */
    /* The last member's low id byte: ids 16 vs 17 differ in one byte. */
    struct raft_conf c16b;
    struct conf_bytes e16b;
    conf_make(&c16b, RAFT_MAX_NODES, ids, NULL);
    c16b.ids[RAFT_MAX_NODES - 1] = RAFT_MAX_NODES + 1;
    conf_encode(&c16b, &e16b);
    size_t low[16];
    assert_int_equal(conf_diff(&e16, &e16b, low, 16), 1);
    /* The same bytes plus a 17th member (id 18, distinct from all others)
     * and a count that says 17. */
    struct conf_bytes e17 = e16;
    size_t member = e16.len - e15.len;
    memcpy(e17.b + e16.len, e16.b + e16.len - member, member);
    e17.b[low[0] + member] = RAFT_MAX_NODES + 2;
    e17.len = e16.len + member;
    for (size_t i = 0; i < n; i++) {
        /* 16 -> 17 in the differing byte, little or big endian alike. */
        e17.b[pos[i]] = (uint8_t)(e16.b[pos[i]] + 1);
    }
    assert_int_equal(conf_decode_exact(e17.b, e17.len, &out), RAFT_EINVAL);
}

/* Member 3's id bytes: where {1,2,3} and {1,2,0x0101...} differ. */
static size_t conf_locate_third_id(const struct conf_bytes* base, size_t* pos) {
    static const raft_node_id other[] = {1, 2, 0x0101010101010101ULL};
    struct raft_conf c;
    struct conf_bytes e;
    conf_make(&c, 3, other, NULL);
    conf_encode(&c, &e);
    assert_int_equal(e.len, base->len);
    return conf_diff(base, &e, pos, 16);
}

static void test_conf_rejects_zero_and_duplicate_id(void** state) {
    (void)state;
    struct raft_conf c, out;
    struct conf_bytes base;
    conf_make(&c, 3, conf_ids3, NULL);
    conf_encode(&c, &base);
    size_t pos[16];
    size_t n = conf_locate_third_id(&base, pos);
    assert_int_equal(n, 8); /* ids are 64-bit */
    /* Zero id. */
    struct conf_bytes bad = base;
    for (size_t i = 0; i < n; i++) {
        bad.b[pos[i]] = 0;
    }
    assert_int_equal(conf_decode_exact(bad.b, bad.len, &out), RAFT_EINVAL);
    /* Duplicate: member 3's low id byte (the one byte where {1,2,3} and
     * {1,2,4} differ) turned from 3 into 2 gives {1,2,2}. */
    static const raft_node_id ids_124[] = {1, 2, 4};
    struct raft_conf c4;
    struct conf_bytes e4;
    conf_make(&c4, 3, ids_124, NULL);
    conf_encode(&c4, &e4);
    size_t low[16];
    size_t nlow = conf_diff(&base, &e4, low, 16);
    assert_int_equal(nlow, 1); /* 3 vs 4: one byte, the lowest */
    bad = base;
    bad.b[low[0]] = (uint8_t)(base.b[low[0]] - 1); /* 3 -> 2 */
    assert_int_equal(conf_decode_exact(bad.b, bad.len, &out), RAFT_EINVAL);
    /* Sanity: 3 -> 5 is a fine conf {1,2,5}. */
    bad.b[low[0]] = (uint8_t)(base.b[low[0]] + 2);
    assert_int_equal(conf_decode_exact(bad.b, bad.len, &out), RAFT_OK);
    assert_int_equal(raft_conf_role(&out, 5), RAFT_VOTER);
    assert_int_equal(raft_conf_role(&out, 3), -1);
}

static void test_conf_rejects_bad_role(void** state) {
    (void)state;
    static const uint8_t voters[] = {RAFT_VOTER, RAFT_VOTER, RAFT_VOTER};
    static const uint8_t learner[] = {RAFT_VOTER, RAFT_VOTER, RAFT_LEARNER};
    struct raft_conf a, b, out;
    struct conf_bytes ea, eb;
    conf_make(&a, 3, conf_ids3, voters);
    conf_make(&b, 3, conf_ids3, learner);
    conf_encode(&a, &ea);
    conf_encode(&b, &eb);
    size_t pos[16];
    size_t n = conf_diff(&ea, &eb, pos, 16);
    assert_int_equal(n, 1); /* the role byte */
    static const uint8_t bad_roles[] = {2, 3, 7, 0x80, 0xff};
    for (size_t i = 0; i < sizeof(bad_roles); i++) {
        struct conf_bytes bad = ea;
        bad.b[pos[0]] = bad_roles[i];
        if (conf_decode_exact(bad.b, bad.len, &out) != RAFT_EINVAL) {
            fail_msg("role byte %u accepted", bad_roles[i]);
        }
    }
}

static void test_conf_rejects_random_garbage(void** state) {
    (void)state;
    /* Whatever the bytes, decode returns OK or EINVAL and never crashes;
     * an accepted conf satisfies the documented rules. */
    uint64_t x = 77;
    for (int round = 0; round < 5000; round++) {
        uint8_t buf[RAFT_CONF_ENCODED_MAX];
        size_t len = (size_t)(round % (int)sizeof(buf));
        for (size_t i = 0; i < len; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[i] = (uint8_t)(x >> 56);
        }
        struct raft_conf out;
        int rc = conf_decode_exact(buf, len, &out);
        assert_true(rc == RAFT_OK || rc == RAFT_EINVAL);
        if (rc == RAFT_OK) {
            assert_true(out.count <= RAFT_MAX_NODES);
            for (uint32_t i = 0; i < out.count; i++) {
                assert_true(out.ids[i] != 0);
                assert_true(out.roles[i] <= RAFT_LEARNER);
                for (uint32_t j = 0; j < i; j++) {
                    assert_true(out.ids[i] != out.ids[j]);
                }
            }
        }
    }
}

static void test_conf_role_and_voter_count(void** state) {
    (void)state;
    static const raft_node_id ids[] = {10, 20, 30, 40, 50};
    static const uint8_t roles[] = {RAFT_VOTER, RAFT_LEARNER, RAFT_VOTER,
                                    RAFT_LEARNER, RAFT_VOTER};
    struct raft_conf c;
    conf_make(&c, 5, ids, roles);
    assert_int_equal(raft_conf_role(&c, 10), RAFT_VOTER);
    assert_int_equal(raft_conf_role(&c, 20), RAFT_LEARNER);
    assert_int_equal(raft_conf_role(&c, 50), RAFT_VOTER);
    assert_int_equal(raft_conf_role(&c, 11), -1);
    assert_int_equal(raft_conf_role(&c, 0), -1);
    assert_int_equal(raft_conf_voter_count(&c), 3);
    /* Ids beyond count are not members, whatever the array holds. */
    c.count = 2;
    assert_int_equal(raft_conf_role(&c, 30), -1);
    assert_int_equal(raft_conf_voter_count(&c), 1);
    c.count = 0;
    assert_int_equal(raft_conf_voter_count(&c), 0);
    assert_int_equal(raft_conf_role(&c, 10), -1);
}

static void test_names_cover_every_code(void** state) {
    (void)state;
    for (int code = 0; code < RAFT_ERROR_COUNT; code++) {
        const char* s = raft_strerror(code);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
    }
    assert_string_equal(raft_strerror(RAFT_OK), "ok");
    assert_non_null(raft_strerror(RAFT_ERROR_COUNT)); /* out of range */
    assert_non_null(raft_strerror(-1));
    assert_string_equal(raft_role_name(RAFT_FOLLOWER), "follower");
    assert_string_equal(raft_role_name(RAFT_PRE_CANDIDATE), "pre-candidate");
    assert_string_equal(raft_role_name(RAFT_CANDIDATE), "candidate");
    assert_string_equal(raft_role_name(RAFT_LEADER), "leader");
    for (int t = RAFT_MSG_APPEND; t < RAFT_MSG_TYPE_MAX; t++) {
        assert_non_null(raft_msg_type_name(t));
    }
    assert_non_null(raft_msg_type_name(0));
    assert_non_null(raft_msg_type_name(RAFT_MSG_TYPE_MAX + 5));
    for (int m = 1; m < RAFT_MUTANT_COUNT; m++) {
        assert_non_null(raft_mutant_name(m));
    }
    assert_null(raft_mutant_name(RAFT_MUTANT_COUNT));
    assert_null(raft_mutant_name(-1));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_round_trip),
        cmocka_unit_test(test_conf_rejects_truncated_and_oversized),
        cmocka_unit_test(test_conf_rejects_too_many_members),
        cmocka_unit_test(test_conf_rejects_zero_and_duplicate_id),
        cmocka_unit_test(test_conf_rejects_bad_role),
        cmocka_unit_test(test_conf_rejects_random_garbage),
        cmocka_unit_test(test_conf_role_and_voter_count),
        cmocka_unit_test(test_names_cover_every_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
