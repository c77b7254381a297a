#!/usr/bin/env bash
# Symmetric split, no split brain: a 4-node cluster is cut 2|2. No side has a
# majority (3): the old leader steps down, nobody leads for the rest of the
# split, no write is acknowledged on either side, and at most one leader
# ever holds a term. After the heal one leader emerges and all converge.
BIN=${1:?usage: sc_split.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

f_start_cluster 4
leader=$(f_wait_leader 10 1 2 3 4) || f_fail "no initial leader"
mate=$((leader % 4 + 1))
side_a=("$leader" "$mate"); side_b=()
for i in 1 2 3 4; do [ "$i" = "$leader" ] || [ "$i" = "$mate" ] || side_b+=("$i"); done
f_workload_start w 1 2 3 4
sleep 1
f_partition "${side_a[*]}" "${side_b[*]}"
t0=$F_CUT_MS
deadline=$((SECONDS + 5))
while [ -n "$(f_leader 1 2 3 4)" ]; do
    [ $SECONDS -lt $deadline ] || f_fail "a leader survives 5 s into the 2|2 split"
    sleep 0.1
done
read -r _ ms < <(f_obs_first "$t0" "id == $leader && role != 3")
f_timing stepdown_ms "${ms:-0}"
f_ok "old leader $leader stepped down; no leader on either side"
t1=$(f_now_ms)
sleep 4
t2=$(f_now_ms)
led=$(f_obs_first "$t1" "role == 3")
[ -z "$led" ] || f_fail "a node led during the split: $led"
acks=$(awk -v a="$t1" '$1 >= a && /status=OK/' "$F_DIR/wl-w.log" | wc -l)
[ "$acks" = 0 ] || f_fail "$acks writes acknowledged without a majority"
f_ok "4 s of split: no leader, no acknowledged write ($(awk -v a="$t1" '$1 >= a' "$F_DIR/wl-w.log" | wc -l) attempts)"
f_heal_partition
new=$(f_wait_leader 10 1 2 3 4) || f_fail "no leader after the heal"
f_timing election_after_heal_ms $(($(f_now_ms) - t2))
f_ok "node $new leads after the heal"
f_wait_acks w "$(f_now_ms)" 3 10 >/dev/null || f_fail "writes do not resume after the heal"
f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
