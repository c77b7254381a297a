#!/usr/bin/env bash
# Flapping network: five times in a row the current leader is cut off for
# ~1.5 s and the network heals for ~1.5 s, under a steady write load. After
# every cut the majority must elect a leader within 5 s (failover times are
# printed); at the end the cluster converges with no acknowledged write lost
# and at most one leader per term.
BIN=${1:?usage: sc_flapping.sh BIN_DIR [NODES]}
N=${2:-3}
source "$(dirname "$0")/lib.sh"

f_start_cluster "$N"
f_wait_leader 10 "${F_MEMBERS[@]}" >/dev/null || f_fail "no initial leader"
f_workload_start w "${F_MEMBERS[@]}"
times=()
for round in 1 2 3 4 5; do
    l=$(f_wait_leader 10 "${F_MEMBERS[@]}") || f_fail "round $round: no leader before the cut"
    term=$(f_field "$l" term)
    others=(); for i in "${F_MEMBERS[@]}"; do [ "$i" = "$l" ] || others+=("$i"); done
    f_isolate "$l"
    new=$(f_wait_leader 5 "${others[@]}") || f_fail "round $round: no new leader within 5 s"
    read -r _ ms < <(f_first_leader_since "$F_CUT_MS" "$term" "${others[@]}")
    times+=("$ms")
    f_ok "round $round: leader $l cut off, node $new leads after ${ms} ms"
    sleep 1
    f_heal_partition
    sleep 1.5
done
f_timing failover_ms_each "$(IFS=,; echo "${times[*]}")"
acks=$(grep -c 'status=OK' "$F_DIR/wl-w.log")
[ "$acks" -ge 20 ] || f_fail "only $acks writes acknowledged over 5 flaps"
f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
