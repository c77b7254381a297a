#!/usr/bin/env bash
# Leader transfer under load: three times, leadership is handed to another
# node (TimeoutNow) while clients keep writing. Each transfer must complete
# within 5 s (measured and printed), writes keep committing, and no
# acknowledged write is lost.
BIN=${1:?usage: sc_transfer.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

f_start_cluster 3
f_wait_leader 10 1 2 3 >/dev/null || f_fail "no initial leader"
f_workload_start w 1 2 3
sleep 1
times=()
for round in 1 2 3; do
    l=$(f_wait_leader 10 1 2 3) || f_fail "round $round: no leader"
    to=$((l % 3 + 1))
    t0=$(f_now_ms)
    out=$(f_wire "$l" transfer "$to")
    [[ $out == status=OK* ]] || f_fail "round $round: transfer $l -> $to refused: $out"
    deadline=$((SECONDS + 5))
    until [ "$(f_leader 1 2 3)" = "$to" ]; do
        [ $SECONDS -lt $deadline ] || f_fail "round $round: node $to does not lead 5 s after the transfer"
        sleep 0.05
    done
    read -r _ ms < <(f_obs_first "$t0" "id == $to && role == 3")
    times+=("${ms:-$(($(f_now_ms) - t0))}")
    n=$(f_wait_acks w "$(f_now_ms)" 3 10) || f_fail "round $round: writes stall after the transfer"
    f_ok "round $round: leadership $l -> $to in ${times[-1]} ms; writes continue"
done
f_timing transfer_ms_each "$(IFS=,; echo "${times[*]}")"
f_log "workload: $(f_workload_stop w) acknowledged ($(grep -vc 'status=OK' "$F_DIR/wl-w.log") not: $(grep -v 'status=OK' "$F_DIR/wl-w.log" | grep -o 'status=[A-Z_]*' | sort | uniq -c | tr '\n' ' '))"
f_finish
