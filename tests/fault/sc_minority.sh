#!/usr/bin/env bash
# Minority cannot elect: in a 5-node cluster two followers are cut off
# together. For 4 s neither of them becomes leader, neither acknowledges a
# write, and (PreVote) neither moves its term; the majority keeps its leader
# and keeps committing. After the heal the two rejoin without disrupting
# the leader. Terms may move by at most 2 (one or two elections a starved
# CPU may cause); without PreVote the minority's terms run away and the
# rejoin deposes the leader.
BIN=${1:?usage: sc_minority.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

f_start_cluster 5
leader=$(f_wait_leader 10 1 2 3 4 5) || f_fail "no initial leader"
term0=$(f_field "$leader" term)
minority=(); majority=("$leader")
for i in 1 2 3 4 5; do
    [ "$i" = "$leader" ] && continue
    if [ ${#minority[@]} -lt 2 ]; then minority+=("$i"); else majority+=("$i"); fi
done
f_workload_start w "${majority[@]}"
f_partition "${minority[*]}" "${majority[*]}"
t0=$F_CUT_MS
f_assert_frozen "${minority[*]}" "${majority[*]}"
for i in "${minority[@]}"; do
    out=$(F_RPC_TIMEOUT=3 f_wire "$i" create min-$i v min-$i-$$)
    [[ $out == status=OK* ]] && f_fail "minority node $i acknowledged a write: $out"
done
f_ok "the minority acknowledged no write ($(echo "${out:-timeout}" | sed -n 1p))"
sleep 4
t1=$(f_now_ms)
bad=$(f_obs_first "$t0" "role == 3 && index(\" ${minority[*]} \", \" \" id \" \")")
[ -z "$bad" ] || f_fail "minority node elected itself: $bad"
f_ok "no minority node became leader in $(( (t1 - t0) / 1000 )) s"
for i in "${minority[@]}"; do
    t=$(f_field "$i" term)
    f_log "minority node $i: term $t, role $(f_field "$i" role)"
    [ "$t" -le $((term0 + 2)) ] || f_fail "minority node $i's term ran away: $term0 -> $t"
done
f_ok "minority terms did not run away (started at $term0)"
l=$(f_leader "${majority[@]}") || true
[ -n "$l" ] || f_fail "the majority has no leader"
term1=$(f_field "$l" term)
f_ok "node $l leads the majority in term $term1"

f_heal_partition
state=$(f_wait_converged 20 1 2 3 4 5) || f_fail "no convergence after the heal"
f_ok "rejoined: $state"
sleep 1
l=$(f_leader 1 2 3 4 5); t=$(f_field "$l" term)
[ -n "$t" ] && [ "$t" -le $((term1 + 1)) ] || f_fail "the rejoining minority disrupted the leader (term $term1 -> $t)"
f_ok "no disruption on rejoin (leader $l, term $term1 -> $t)"
f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
