#!/usr/bin/env bash
# Leader crash and re-election: under a steady write load the leader is
# killed with SIGKILL; the survivors elect a new leader (asserted within 5 s,
# measured and printed) that keeps committing; the old leader restarts from
# its data directory and catches up. No acknowledged write is lost.
BIN=${1:?usage: sc_leader_crash.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

f_start_cluster 3
old=$(f_wait_leader 10 1 2 3) || f_fail "no initial leader"
f_workload_start w 1 2 3
sleep 1.5
others=(); for i in 1 2 3; do [ "$i" = "$old" ] || others+=("$i"); done
term0=$(f_field "$old" term)
t0=$(f_now_ms)
f_kill "$old"
new=$(f_wait_leader 5 "${others[@]}") || f_fail "no new leader within 5 s of killing leader $old"
t1=$(f_now_ms)
read -r _ ms < <(f_first_leader_since "$t0" "$term0" "${others[@]}")
f_timing failover_ms "$ms"
f_ok "node $new leads term $(f_field "$new" term); first seen leading ${ms} ms after the kill"
acks=$(f_wait_acks w "$t1" 5 10) || f_fail "only $acks writes acknowledged in the 10 s after failover"
f_timing writes_resume_ms $(($(f_now_ms) - t1))
f_ok "writes resumed: 5 acknowledged $(($(f_now_ms) - t1)) ms after the new leader was seen"
f_restart "$old"
sleep 1
f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
