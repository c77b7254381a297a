/*
 * test_handoff.c - whom a stopping leader hands leadership to
 * (node_pick_handoff in node/node.c).
 *
 * Regression: a leader that got SIGTERM just after another member died
 * picked the dead member (equal log, and first in the progress array),
 * sent it TimeoutNow, and kept the cluster without a leader until its 2 s
 * stop deadline. The progress below is what such a leader saw.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "node_internal.h"

#define FRESH 4 /* two heartbeats of two ticks */

static struct raft_progress_info voter(raft_node_id id,
                                       raft_index match,
                                       uint64_t contact) {
    struct raft_progress_info p = {0};
    p.id = id;
    p.role = RAFT_VOTER;
    p.recent_active = true;
    p.match = match;
    p.last_contact_tick = contact;
    return p;
}

static void test_a_member_that_just_died_is_not_picked(void** state) {
    /* self 2 at tick 22; 1 died at tick 18 with the same log as 3 */
    struct raft_progress_info prs[] = {voter(2, 2, 22), voter(1, 2, 18),
                                       voter(3, 2, 22)};
    (void)state;
    assert_int_equal(node_pick_handoff(prs, 3, 2, FRESH), 3);
}

static void test_same_tick_prefers_the_latest_contact(void** state) {
    /* both fresh, same log: the one heard from last */
    struct raft_progress_info prs[] = {voter(1, 5, 20), voter(2, 5, 19),
                                       voter(3, 5, 20)};
    (void)state;
    assert_int_equal(node_pick_handoff(prs, 3, 1, FRESH), 3);
}

static void test_fresh_beats_a_longer_log_gone_quiet(void** state) {
    /* 2 holds more but has not answered for 10 ticks; 3 is alive */
    struct raft_progress_info prs[] = {voter(1, 9, 30), voter(2, 9, 20),
                                       voter(3, 8, 30)};
    (void)state;
    assert_int_equal(node_pick_handoff(prs, 3, 1, FRESH), 3);
}

static void test_longest_log_among_the_fresh(void** state) {
    struct raft_progress_info prs[] = {voter(1, 9, 30), voter(2, 7, 30),
                                       voter(3, 8, 29), voter(4, 9, 10)};
    (void)state;
    assert_int_equal(node_pick_handoff(prs, 4, 1, FRESH), 3);
}

static void test_a_quiet_voter_is_still_better_than_none(void** state) {
    struct raft_progress_info prs[] = {voter(1, 9, 30), voter(2, 9, 20)};
    (void)state;
    assert_int_equal(node_pick_handoff(prs, 2, 1, FRESH), 2);
}

static void test_learners_inactive_and_self_never_picked(void** state) {
    struct raft_progress_info prs[] = {voter(1, 9, 30), voter(2, 9, 30),
                                       voter(3, 9, 30)};
    (void)state;
    prs[1].role = RAFT_LEARNER;
    prs[2].recent_active = false;
    assert_int_equal(node_pick_handoff(prs, 3, 1, FRESH), 0);
    assert_int_equal(node_pick_handoff(prs, 1, 1, FRESH), 0);
    assert_int_equal(node_pick_handoff(prs, 0, 1, FRESH), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_member_that_just_died_is_not_picked),
        cmocka_unit_test(test_same_tick_prefers_the_latest_contact),
        cmocka_unit_test(test_fresh_beats_a_longer_log_gone_quiet),
        cmocka_unit_test(test_longest_log_among_the_fresh),
        cmocka_unit_test(test_a_quiet_voter_is_still_better_than_none),
        cmocka_unit_test(test_learners_inactive_and_self_never_picked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
