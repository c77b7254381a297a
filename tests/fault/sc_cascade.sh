#!/usr/bin/env bash
# Cascading partitions in a 5-node cluster, under a steady write load:
#   1. the leader L1 is cut off: the other four elect L2 and commit;
#   2. L2 is cut off as well (three groups: {L1} {L2} {rest}): the last three
#      elect L3 and commit, while L1 and L2 stay frozen;
#   3. L1 comes back to the majority side: it catches up from L3;
#   4. the cluster splits {L2, x} | {L1, L3, y}: the majority keeps going;
# then everything heals and converges with no acknowledged write lost.
# Each step asserts a leader on the majority side within 5 s and 5 writes
# committed there while the cut-off nodes' commit index stays put.
BIN=${1:?usage: sc_cascade.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

without() { local x; for x in "${@:2}"; do [[ " $1 " == *" $x "* ]] || echo -n "$x "; done; }

f_start_cluster 5
l1=$(f_wait_leader 10 1 2 3 4 5) || f_fail "no initial leader"
f_workload_start w 1 2 3 4 5

rest=$(without "$l1" 1 2 3 4 5)
f_partition "$l1" "$rest"
l2=$(f_wait_leader 5 $rest) || f_fail "step 1: no leader among $rest within 5 s"
read -r _ ms < <(f_obs_first "$F_CUT_MS" "role == 3 && id == $l2")
f_timing step1_failover_ms "$ms"
f_assert_frozen "$l1" "$rest"
f_ok "step 1: {$l1} cut off, node $l2 leads {$rest}"

rest=$(without "$l1 $l2" 1 2 3 4 5)
f_partition "$l1" "$l2" "$rest"
l3=$(f_wait_leader 5 $rest) || f_fail "step 2: no leader among $rest within 5 s"
read -r _ ms < <(f_obs_first "$F_CUT_MS" "role == 3 && id == $l3")
f_timing step2_failover_ms "$ms"
f_assert_frozen "$l1 $l2" "$rest"
f_ok "step 2: {$l1} {$l2} cut off, node $l3 leads {$rest}"

f_partition "$l2" "$l1 $rest"
l=$(f_wait_leader 5 $l1 $rest) || f_fail "step 3: no single leader among $l1 $rest"
f_wait_converged 20 $l1 $rest >/dev/null || f_fail "step 3: $l1 did not catch up"
f_assert_frozen "$l2" "$l1 $rest"
f_ok "step 3: $l1 rejoined the majority (leader $l) and caught up"

set -- $(without "$l1 $l3" 1 2 3 4 5)   # the three others, L2 among them
x=$(without "$l2" "$@" | awk '{print $1}')
y=$(without "$l2 $x" "$@")
f_partition "$l2 $x" "$l1 $l3 $y"
l=$(f_wait_leader 5 $l1 $l3 $y) || f_fail "step 4: no leader among $l1 $l3 $y"
f_assert_frozen "$l2 $x" "$l1 $l3 $y"
f_ok "step 4: {$l2 $x} | {$l1 $l3 $y}: node $l leads the majority"

f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
