#!/usr/bin/env bash
# Membership changes during a partition. In a 3-node cluster follower F is
# cut off; then, on the majority side:
#   1. node 4 starts empty (--join) and is added: it joins as a learner, is
#      promoted to voter once caught up, and the cluster (now 4 voters,
#      quorum 3) keeps committing with F still cut off, which only works if
#      node 4's acknowledgements count;
#   2. the unreachable F is removed: 3 voters again.
# Then the partition heals: the removed node does not disrupt the cluster,
# and the three members converge on the new configuration.
BIN=${1:?usage: sc_membership.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

members_of() { f_wire "$1" members | awk '/^member /{ split($2, a, "="); split($3, r, "="); printf "%s:%s ", a[2], r[2] }'; }

f_start_cluster 3
l=$(f_wait_leader 10 1 2 3) || f_fail "no initial leader"
f=$((l % 3 + 1)); g=$((f % 3 + 1))
f_add_node_ns 4
F_MEMBERS+=(4)
f_workload_start w "$l" "$g"
f_partition "$f" "$l $g 4"

t0=$(f_now_ms)
f_start_node 4 "$(f_peers_of 4 1 2 3)" --join
f_wait_up 4 15 || f_fail "node 4 did not come up"
out=$(f_wire "$l" member-add 4 "$(f_url 4)")
[[ $out == status=OK* ]] || f_fail "member-add 4 refused: $out"
f_ok "node 4 added through leader $l: $(members_of "$l")"
deadline=$((SECONDS + 20))
until [[ " $(members_of "$l") " == *" 4:voter "* ]]; do
    [ $SECONDS -lt $deadline ] || f_fail "node 4 not promoted to voter within 20 s: $(members_of "$l")"
    sleep 0.2
done
f_members_changed
f_timing add_and_promote_ms $(($(f_now_ms) - t0))
f_ok "node 4 promoted to voter: $(members_of "$l")"
l=$(f_wait_leader 10 "$l" "$g" 4) || f_fail "no leader on the majority side"
f_assert_frozen "$f" "$l $g 4" # 3 of 4 voters: node 4's acks are needed
f_ok "4 voters, F cut off: commits need node 4, and they happen"

out=$(f_wire "$l" member-remove "$f")
[[ $out == status=OK* ]] || f_fail "member-remove $f refused: $out"
deadline=$((SECONDS + 10))
until [[ " $(members_of "$l") " != *" $f:"* ]]; do
    [ $SECONDS -lt $deadline ] || f_fail "node $f still a member 10 s after its removal: $(members_of "$l")"
    sleep 0.2
done
f_ok "unreachable node $f removed: $(members_of "$l")"
term1=$(f_field "$l" term)

f_heal_partition
sleep 3 # the removed node hears nobody, times out, pre-votes
nl=$(f_wait_leader 10 "$l" "$g" 4) || f_fail "no leader after the heal"
t=$(f_field "$nl" term)
[ "$t" -le $((term1 + 1)) ] || f_fail "the removed node disrupted the cluster: term $term1 -> $t"
f_ok "the removed node $f did not disrupt the cluster (leader $nl, term $term1 -> $t; node $f: role $(f_field "$f" role) term $(f_field "$f" term))"
for i in "$l" "$g" 4; do
    m=$(members_of "$i")
    [ "$(echo $m | tr ' ' '\n' | sort | tr '\n' ' ')" = "$(printf '%s\n' "$l:voter" "$g:voter" "4:voter" | sort | tr '\n' ' ')" ] ||
        f_fail "node $i's configuration is $m"
done
f_ok "nodes $l $g 4 agree on the configuration {$l, $g, 4}"
f_log "workload: $(f_workload_stop w) acknowledged"
F_MEMBERS=("$l" "$g" 4 "$f") # heal all four namespaces; check only the three
f_members_changed
f_finish "$l" "$g" 4
