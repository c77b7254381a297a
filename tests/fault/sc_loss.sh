#!/usr/bin/env bash
# Random packet loss: every node drops P% (default 30) of the packets it
# receives from the other nodes (iptables statistic match; the rule counters
# prove the rate). TCP retransmits, raft retries: writes must still commit,
# at a lower rate. Printed: acknowledged writes per second before and during
# the loss. Then the loss is removed and the cluster converges.
BIN=${1:?usage: sc_loss.sh BIN_DIR [PERCENT]}
P=${2:-30}
source "$(dirname "$0")/lib.sh"
F_NAME="loss_$P"

f_start_cluster 3
f_wait_leader 10 1 2 3 >/dev/null || f_fail "no initial leader"
f_workload_start w 1 2 3
t0=$(f_now_ms); sleep 3; t1=$(f_now_ms)
before=$(f_acks_between w "$t0" "$t1")
f_loss "$P"
t2=$(f_now_ms); sleep 8; t3=$(f_now_ms)
during=$(f_acks_between w "$t2" "$t3")
read -r seen dropped < <(f_loss_counters)
f_timing acks_per_s_before "$(awk -v n="$before" -v ms=$((t1 - t0)) 'BEGIN { printf "%.1f", n * 1000 / ms }')"
f_timing acks_per_s_during_loss "$(awk -v n="$during" -v ms=$((t3 - t2)) 'BEGIN { printf "%.1f", n * 1000 / ms }')"
f_log "loss counters: $dropped of $seen node-to-node packets dropped"
[ "$during" -ge 5 ] || f_fail "only $during writes committed in 8 s of $P% loss"
f_ok "$during writes committed in 8 s of $P% loss ($before in 3 s before)"
f_heal_loss
f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
