/*
 * test_progress.c - the leader's per-follower tracker (raft_progress.h):
 * the ring of appends in flight, and the PROBE / REPLICATE / SNAPSHOT
 * state machine drawn at the top of raft_progress.h.
 *
 * Raft §5.3: "When sending an AppendEntries RPC, the leader includes the
 * index and term of the entry in its log that immediately precedes the new
 * entries. [...] After a rejection, the leader decrements nextIndex and
 * retries the AppendEntries RPC." The tracker adds etcd's flow control on
 * top: one probe at a time while the match is unknown, a bounded pipeline
 * once it is known.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "raft_progress.h"

/* ---- inflights ring --------------------------------------------------- */

static void test_inflights_add_until_full(void** state) {
    (void)state;
    struct raft_inflights in;
    raft_inflights_init(&in, 4);
    assert_int_equal(in.cap, 4);
    assert_int_equal(in.count, 0);
    for (raft_index i = 1; i <= 4; i++) {
        assert_false(raft_inflights_full(&in));
        raft_inflights_add(&in, i * 10);
        assert_int_equal(in.count, i);
    }
    assert_true(raft_inflights_full(&in));
}

static void test_inflights_free_to_partial_and_all(void** state) {
    (void)state;
    struct raft_inflights in;
    raft_inflights_init(&in, 8);
    for (raft_index i = 1; i <= 5; i++) {
        raft_inflights_add(&in, i * 10); /* 10 20 30 40 50 */
    }
    /* Below the oldest: nothing is acknowledged. */
    raft_inflights_free_to(&in, 9);
    assert_int_equal(in.count, 5);
    /* Acknowledging 25 frees the messages ending at 10 and 20 only. */
    raft_inflights_free_to(&in, 25);
    assert_int_equal(in.count, 3);
    assert_int_equal(in.last[in.start], 30);
    /* An exact boundary frees that message too (<=). */
    raft_inflights_free_to(&in, 40);
    assert_int_equal(in.count, 1);
    assert_int_equal(in.last[in.start], 50);
    /* A stale acknowledgement changes nothing. */
    raft_inflights_free_to(&in, 20);
    assert_int_equal(in.count, 1);
    raft_inflights_free_to(&in, 1000);
    assert_int_equal(in.count, 0);
    assert_false(raft_inflights_full(&in));
}

static void test_inflights_wrap_around(void** state) {
    (void)state;
    /* At full capacity the ring must wrap its storage: whatever the
     * layout, the oldest entry stays at `start` and frees go in order. */
    struct raft_inflights in;
    raft_inflights_init(&in, RAFT_MAX_INFLIGHT);
    raft_index next = 1;
    for (uint32_t i = 0; i < RAFT_MAX_INFLIGHT; i++) {
        raft_inflights_add(&in, next++);
    }
    assert_true(raft_inflights_full(&in));
    raft_inflights_free_to(&in, RAFT_MAX_INFLIGHT - 2); /* two left */
    assert_int_equal(in.count, 2);
    assert_int_equal(in.last[in.start], RAFT_MAX_INFLIGHT - 1);
    for (int i = 0; i < 10; i++) { /* these wrap to the start of storage */
        raft_inflights_add(&in, next++);
    }
    assert_int_equal(in.count, 12);
    raft_inflights_free_to(&in, RAFT_MAX_INFLIGHT + 3); /* across the wrap */
    assert_int_equal(in.count, 7);
    assert_int_equal(in.last[in.start], RAFT_MAX_INFLIGHT + 4);
    while (!raft_inflights_full(&in)) {
        raft_inflights_add(&in, next++);
    }
    assert_int_equal(in.count, RAFT_MAX_INFLIGHT);
    raft_inflights_free_to(&in, next - 2);
    assert_int_equal(in.count, 1);
    assert_int_equal(in.last[in.start], next - 1);

    /* A small ring cycled many times stays consistent too. */
    raft_inflights_init(&in, 4);
    next = 1;
    for (int round = 0; round < 300; round++) {
        while (!raft_inflights_full(&in)) {
            raft_inflights_add(&in, next++);
        }
        assert_int_equal(in.count, 4);
        raft_inflights_free_to(&in, next - 3); /* leave two in flight */
        assert_int_equal(in.count, 2);
        assert_int_equal(in.last[in.start], next - 2);
        assert_true(in.start < RAFT_MAX_INFLIGHT);
    }
    raft_inflights_free_to(&in, next);
    assert_int_equal(in.count, 0);
}

static void test_inflights_reset(void** state) {
    (void)state;
    struct raft_inflights in;
    raft_inflights_init(&in, 3);
    raft_inflights_add(&in, 1);
    raft_inflights_add(&in, 2);
    raft_inflights_add(&in, 3);
    assert_true(raft_inflights_full(&in));
    raft_inflights_reset(&in);
    assert_int_equal(in.count, 0);
    assert_int_equal(in.cap, 3);
    assert_false(raft_inflights_full(&in));
    /* Usable again after the reset. */
    raft_inflights_add(&in, 9);
    assert_int_equal(in.count, 1);
    assert_int_equal(in.last[in.start], 9);
}

static void test_inflights_cap_clamped(void** state) {
    (void)state;
    struct raft_inflights in;
    raft_inflights_init(&in, RAFT_MAX_INFLIGHT + 1000);
    assert_int_equal(in.cap, RAFT_MAX_INFLIGHT);
    for (raft_index i = 1; i <= RAFT_MAX_INFLIGHT; i++) {
        assert_false(raft_inflights_full(&in));
        raft_inflights_add(&in, i);
    }
    assert_true(raft_inflights_full(&in));
    raft_inflights_free_to(&in, RAFT_MAX_INFLIGHT);
    assert_int_equal(in.count, 0);
    raft_inflights_init(&in, 1);
    raft_inflights_add(&in, 1);
    assert_true(raft_inflights_full(&in));
}

/* ---- progress state machine ------------------------------------------ */

static void test_progress_init(void** state) {
    (void)state;
    struct raft_progress p;
    memset(&p, 0xff, sizeof(p)); /* init must not rely on zeroed memory */
    raft_progress_init(&p, 2, 10, 4);
    assert_int_equal(p.id, 2);
    assert_int_equal(p.match, 0);
    assert_int_equal(p.next, 11); /* optimistic: the follower is up to date */
    assert_int_equal(p.state, RAFT_PROGRESS_PROBE);
    assert_false(p.probe_sent);
    assert_false(raft_progress_is_paused(&p));
    assert_int_equal(p.inflights.count, 0);
    assert_int_equal(p.inflights.cap, 4);
}

static void test_progress_probe_pauses_after_send(void** state) {
    (void)state;
    struct raft_progress p;
    raft_progress_init(&p, 2, 10, 4);
    /* PROBE: one append at a time until the follower answers. */
    raft_progress_sent(&p, 12);
    assert_true(raft_progress_is_paused(&p));
    /* A successful answer unpauses (and records the match). */
    assert_true(raft_progress_maybe_update(&p, 12));
    assert_int_equal(p.match, 12);
    assert_true(p.next >= 13);
    assert_false(raft_progress_is_paused(&p));
    /* So does a rejection of the outstanding probe. */
    raft_progress_init(&p, 2, 10, 4);
    raft_progress_sent(&p, 12);
    assert_true(raft_progress_is_paused(&p));
    assert_true(raft_progress_maybe_decrease(&p, 10, 4));
    assert_false(raft_progress_is_paused(&p));
}

static void test_progress_replicate_advances_next(void** state) {
    (void)state;
    struct raft_progress p;
    raft_progress_init(&p, 3, 10, 3);
    assert_true(raft_progress_maybe_update(&p, 10));
    raft_progress_become_replicate(&p);
    assert_int_equal(p.state, RAFT_PROGRESS_REPLICATE);
    assert_int_equal(p.next, 11);
    /* REPLICATE streams: next moves before any acknowledgement. */
    raft_progress_sent(&p, 12);
    assert_int_equal(p.next, 13);
    assert_false(raft_progress_is_paused(&p));
    raft_progress_sent(&p, 15);
    assert_int_equal(p.next, 16);
    raft_progress_sent(&p, 20);
    assert_int_equal(p.next, 21);
    /* Three in flight with max_inflight = 3: the pipeline is full. */
    assert_int_equal(p.inflights.count, 3);
    assert_true(raft_progress_is_paused(&p));
    assert_int_equal(p.match, 10); /* nothing acknowledged yet */
}

static void test_progress_maybe_update_semantics(void** state) {
    (void)state;
    struct raft_progress p;
    raft_progress_init(&p, 2, 10, 4);
    assert_true(raft_progress_maybe_update(&p, 5));
    assert_int_equal(p.match, 5);
    assert_int_equal(p.next, 11); /* next never moves back on success */
    /* Stale or duplicate acknowledgements do not move match. */
    assert_false(raft_progress_maybe_update(&p, 5));
    assert_false(raft_progress_maybe_update(&p, 3));
    assert_int_equal(p.match, 5);
    /* An acknowledgement past next pulls next along. */
    assert_true(raft_progress_maybe_update(&p, 20));
    assert_int_equal(p.match, 20);
    assert_int_equal(p.next, 21);
    assert_true(p.next > p.match);
}

static void test_progress_probe_decrease(void** state) {
    (void)state;
    struct raft_progress p;
    raft_progress_init(&p, 2, 10, 4); /* next 11: probes prev 10 */
    raft_progress_sent(&p, 11);
    /* Stale: rejects a previous index we are not probing. */
    assert_false(raft_progress_maybe_decrease(&p, 7, 3));
    assert_int_equal(p.next, 11);
    assert_true(raft_progress_is_paused(&p));
    /* The conflict hint is the highest index that may still match (what
     * raft.c passes: find_conflict_by_term), so next = hint + 1. The
     * comment in raft_progress.h says "the next index to try": see
     * FINDINGS.md U1. */
    assert_true(raft_progress_maybe_decrease(&p, 10, 4));
    assert_int_equal(p.next, 5);
    /* A hint beyond the rejected index cannot move next forward. */
    assert_true(raft_progress_maybe_decrease(&p, 4, 50));
    assert_true(p.next <= 4);
    assert_true(p.next >= p.match + 1);
}

static void test_progress_decrease_never_below_match(void** state) {
    (void)state;
    struct raft_progress p;
    raft_progress_init(&p, 2, 10, 4);
    assert_true(raft_progress_maybe_update(&p, 3));
    raft_progress_become_probe(&p);
    assert_int_equal(p.next, 4);
    raft_progress_sent(&p, 4);
    assert_true(raft_progress_maybe_update(&p, 4)); /* match 4 */
    assert_int_equal(p.next, 5);
    raft_progress_sent(&p, 9);
    /* A rejection of an index at or below match that is not the probe in
     * flight is stale: next stays above match, the follower holds 4. */
    assert_false(raft_progress_maybe_decrease(&p, 3, 1));
    assert_int_equal(p.match, 4);
    assert_true(p.next >= 5);
    /* The probe in flight (prev = next - 1 = 4) refused: the follower lost
     * the log it acknowledged (wiped disk), so match drops to its hint. */
    assert_true(raft_progress_maybe_decrease(&p, 4, 1));
    assert_int_equal(p.match, 1);
    assert_int_equal(p.next, 2);
    /* Same for a far too low hint on a real rejection. */
    raft_progress_init(&p, 2, 10, 4); /* next 11 */
    assert_true(raft_progress_maybe_update(&p, 4));
    raft_progress_sent(&p, 11);
    assert_true(raft_progress_maybe_decrease(&p, 10, 1));
    assert_int_equal(p.next, 5);
}

static void test_progress_replicate_ignores_stale_reject(void** state) {
    (void)state;
    struct raft_progress p;
    raft_progress_init(&p, 2, 10, 8);
    assert_true(raft_progress_maybe_update(&p, 10));
    raft_progress_become_replicate(&p);
    raft_progress_sent(&p, 15);
    raft_progress_sent(&p, 20);
    assert_int_equal(p.next, 21);
    /* Rejections of previous indexes at or below match are old news. */
    assert_false(raft_progress_maybe_decrease(&p, 10, 3));
    assert_false(raft_progress_maybe_decrease(&p, 9, 3));
    assert_int_equal(p.next, 21);
    assert_int_equal(p.match, 10);
    /* A real rejection falls back to match + 1 (the leader then probes). */
    assert_true(raft_progress_maybe_decrease(&p, 15, 12));
    assert_true(p.next >= p.match + 1);
    assert_true(p.next <= 15);
}

static void test_progress_become_probe_and_replicate(void** state) {
    (void)state;
    struct raft_progress p;
    raft_progress_init(&p, 2, 10, 4);
    assert_true(raft_progress_maybe_update(&p, 6));
    raft_progress_become_replicate(&p);
    raft_progress_sent(&p, 8);
    raft_progress_sent(&p, 10);
    assert_int_equal(p.inflights.count, 2);
    raft_progress_become_probe(&p);
    assert_int_equal(p.state, RAFT_PROGRESS_PROBE);
    assert_int_equal(p.next, 7);
    assert_int_equal(p.inflights.count, 0); /* nothing in flight any more */
    assert_false(raft_progress_is_paused(&p));
    raft_progress_become_replicate(&p);
    assert_int_equal(p.next, 7);
    assert_int_equal(p.inflights.count, 0);
}

static void test_progress_snapshot_paused(void** state) {
    (void)state;
    struct raft_progress p;
    raft_progress_init(&p, 2, 100, 4);
    raft_progress_become_snapshot(&p, 80);
    assert_int_equal(p.state, RAFT_PROGRESS_SNAPSHOT);
    assert_int_equal(p.pending_snapshot, 80);
    /* No appends while the snapshot is in transit. */
    assert_true(raft_progress_is_paused(&p));
    /* A stale rejection does not leave SNAPSHOT. */
    assert_false(raft_progress_maybe_decrease(&p, 0, 1));
    assert_int_equal(p.state, RAFT_PROGRESS_SNAPSHOT);
    assert_true(raft_progress_is_paused(&p));
    /* The follower reporting the snapshot's index records the match. */
    assert_true(raft_progress_maybe_update(&p, 80));
    assert_int_equal(p.match, 80);
    raft_progress_become_probe(&p);
    assert_int_equal(p.state, RAFT_PROGRESS_PROBE);
    assert_int_equal(p.next, 81);
    assert_false(raft_progress_is_paused(&p));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inflights_add_until_full),
        cmocka_unit_test(test_inflights_free_to_partial_and_all),
        cmocka_unit_test(test_inflights_wrap_around),
        cmocka_unit_test(test_inflights_reset),
        cmocka_unit_test(test_inflights_cap_clamped),
        cmocka_unit_test(test_progress_init),
        cmocka_unit_test(test_progress_probe_pauses_after_send),
        cmocka_unit_test(test_progress_replicate_advances_next),
        cmocka_unit_test(test_progress_maybe_update_semantics),
        cmocka_unit_test(test_progress_probe_decrease),
        cmocka_unit_test(test_progress_decrease_never_below_match),
        cmocka_unit_test(test_progress_replicate_ignores_stale_reject),
        cmocka_unit_test(test_progress_become_probe_and_replicate),
        cmocka_unit_test(test_progress_snapshot_paused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
