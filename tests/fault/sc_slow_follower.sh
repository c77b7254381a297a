#!/usr/bin/env bash
# A slow follower: every message to and from one follower waits 100 ms plus
# up to 80 ms of jitter (reordering) in the senders' transports (the node's
# fault hook; this kernel has no tc netem). The leader and the other
# follower form the majority, so writes keep committing at about the usual
# latency; the slow follower keeps applying, later. The number of
# elections during the delay is printed (none expected: the jitter keeps
# heartbeat gaps under the election timeout; a starved CPU may still cause
# one). After the delay is removed everything converges.
BIN=${1:?usage: sc_slow_follower.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

f_start_cluster 3
leader=$(f_wait_leader 10 1 2 3) || f_fail "no initial leader"
slow=$((leader % 3 + 1))
term0=$(f_field "$leader" term)
f_workload_start w 1 2 3
t0=$(f_now_ms); sleep 3; t1=$(f_now_ms)
f_delay "$slow" 100 80 # asserts a write reaches $slow >= 100 ms after its ack
a0=$(f_field "$slow" applied)
t2=$(f_now_ms); sleep 6; t3=$(f_now_ms)
a1=$(f_field "$slow" applied)
median() { awk -v a="$2" -v b="$3" '$1 >= a && $2 <= b && /status=OK/ { print $2 - $1 }' "$F_DIR/wl-$1.log" | sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : -1) }'; }
f_timing write_median_ms_before "$(median w "$t0" "$t1")"
f_timing write_median_ms_slow_follower "$(median w "$t2" "$t3")"
during=$(f_acks_between w "$t2" "$t3")
[ "$during" -ge 10 ] || f_fail "only $during writes committed in 6 s with a slow follower"
[ "$a1" -gt "$a0" ] || f_fail "the slow follower stopped applying ($a0 -> $a1)"
f_ok "$during writes committed in 6 s; slow follower $slow applied $a0 -> $a1"
l=$(f_leader 1 2 3)
f_timing elections_during_delay $(( $(f_field "$l" term) - term0 ))
f_heal_hooks
f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
