#!/usr/bin/env bash
# One-way cut: everything the leader sends to one follower is lost (the
# leader's transport fault hook), while that follower still reaches the
# leader and the other follower. The follower hears no leader and keeps
# timing out. With PreVote (and CheckQuorum) its pre-votes are refused and
# no term moves: the term does not run away, the leader keeps its place and
# keeps committing through the other follower; after the cut is removed the
# follower catches up without disrupting anyone.
# The bound allows one or two elections that a starved CPU may cause (the
# time bound of a loaded 2-core machine); without PreVote the cut follower
# runs its term up by about one per election timeout (15 in 4 s measured):
# F_NODE_FLAGS=--no-pre-vote makes this scenario fail.
BIN=${1:?usage: sc_oneway_cut.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

f_start_cluster 3
leader=$(f_wait_leader 10 1 2 3) || f_fail "no initial leader"
cut=$((leader % 3 + 1))
other=$((cut % 3 + 1))
term0=$(f_field "$leader" term)
f_workload_start w "$leader" "$other"
sleep 1

t0=$(f_now_ms)
f_cut_oneway "$leader" "$cut" # asserts: $cut's commit index stops
sleep 4 # ~13 election timeouts of the cut follower
t1=$(f_now_ms)

maxterm=$(awk -v a="$t0" '$1 >= a { for (i = 2; i <= NF; i++) if ($i ~ /^term=/) { split($i, kv, "="); if (kv[2] + 0 > m) m = kv[2] + 0 } } END { print m + 0 }' "$F_DIR/obs")
cutterm=$(f_field "$cut" term)
f_log "terms during the cut: started at $term0, highest seen $maxterm, cut follower now at $cutterm"
f_timing term_growth_during_cut $((maxterm - term0))
[ "$maxterm" -le $((term0 + 2)) ] || f_fail "the term ran away during the one-way cut: $term0 -> $maxterm (cut follower at $cutterm)"
f_ok "the term did not run away during the 4 s cut ($term0 -> $maxterm)"
acks=$(f_acks_between w "$t0" "$t1")
[ "$acks" -ge 5 ] || f_fail "only $acks writes acknowledged during the cut"
f_ok "$acks writes acknowledged during the cut (leader now $(f_leader 1 2 3))"

f_uncut_oneway "$leader" "$cut"
term1=$(f_field "$(f_leader 1 2 3)" term)
t2=$(f_now_ms)
state=$(f_wait_converged 20 1 2 3) || f_fail "the cut follower did not catch up"
f_timing catchup_ms $(($(f_now_ms) - t2))
f_ok "follower $cut caught up: $state"
sleep 1
l=$(f_leader 1 2 3); t=$(f_field "$l" term)
[ -n "$t" ] && [ "$t" -le $((term1 + 1)) ] || f_fail "removing the cut disrupted the cluster (term $term1 -> $t)"
f_ok "no disruption after the cut was removed (leader $l, term $term1 -> $t)"
f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
