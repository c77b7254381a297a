#!/usr/bin/env bash
# Simultaneous failures in a 5-node cluster under a steady write load:
#   1. the leader and one follower are killed (-9) at the same instant: the
#      remaining three elect a leader within 5 s and keep committing;
#   2. a third node is paused (SIGSTOP): two of five remain, no majority:
#      no write started after the pause is acknowledged;
#   3. it is resumed (SIGCONT): writes resume;
#   4. both killed nodes restart and catch up.
BIN=${1:?usage: sc_simultaneous.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

f_start_cluster 5
l=$(f_wait_leader 10 1 2 3 4 5) || f_fail "no initial leader"
term0=$(f_field "$l" term)
v=$((l % 5 + 1))
rest=(); for i in 1 2 3 4 5; do [ "$i" = "$l" ] || [ "$i" = "$v" ] || rest+=("$i"); done
f_workload_start w "${rest[@]}"
sleep 1
t0=$(f_now_ms)
f_kill "$l" & f_kill "$v" & wait
F_PID[$l]=""; F_PID[$v]="" # the kills ran in subshells
new=$(f_wait_leader 5 "${rest[@]}") || f_fail "no leader among ${rest[*]} within 5 s"
read -r _ ms < <(f_first_leader_since "$t0" "$term0" "${rest[@]}")
f_timing failover_ms "$ms"
f_ok "nodes $l and $v killed together; node $new leads after ${ms} ms"
n=$(f_wait_acks w "$(f_now_ms)" 3 10) || f_fail "writes do not resume on three nodes ($n)"
f_ok "three of five commit"

p=""; for i in "${rest[@]}"; do [ "$i" = "$new" ] || { p=$i; break; }; done
f_pause "$p"
t1=$(f_now_ms)
sleep 6
# A write that started after the pause can only commit with a majority.
attempts=$(awk -v a="$t1" '$1 >= a' "$F_DIR/wl-w.log" | wc -l)
acks=$(awk -v a="$t1" '$1 >= a && /status=OK/' "$F_DIR/wl-w.log" | wc -l)
[ "$acks" = 0 ] || f_fail "$acks writes acknowledged with two of five nodes alive"
[ "$attempts" -ge 1 ] || f_fail "no write was even attempted while paused"
f_ok "two of five alive: none of $attempts writes acknowledged in 6 s ($(awk -v a="$t1" '$1 >= a' "$F_DIR/wl-w.log" | grep -o 'status=[A-Z_]*' | sort | uniq -c | tr '\n' ' '))"
f_resume "$p"
t4=$(f_now_ms)
n=$(f_wait_acks w "$t4" 3 10) || f_fail "writes do not resume after SIGCONT ($n)"
f_timing writes_resume_after_sigcont_ms $(($(f_now_ms) - t4))
f_ok "writes resumed after SIGCONT"

f_restart "$l"; f_restart "$v"
f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
