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
t2=$(f_now_ms)
term2=$(f_field "$(f_leader 1 2 3)" term)
# Progress, not speed: 10 writes must commit under loss, within a generous
# 40 s (TCP retransmission timeouts start at 200 ms and double, against a
# 300 ms election timeout: leaders come and go, and throughput collapses).
n=$(f_wait_acks w "$t2" 10 40) || f_fail "only $n writes committed in 40 s of $P% loss"
t3=$(f_now_ms)
read -r seen dropped < <(f_loss_counters)
terms=$(( $(f_field "$(f_leader 1 2 3)" term) - term2 ))
f_timing acks_per_s_before "$(awk -v n="$before" -v ms=$((t1 - t0)) 'BEGIN { printf "%.1f", n * 1000 / ms }')"
f_timing acks_per_s_during_loss "$(awk -v n="$n" -v ms=$((t3 - t2)) 'BEGIN { printf "%.1f", n * 1000 / ms }')"
f_timing elections_during_loss "$terms"
f_log "loss counters: $dropped of $seen node-to-node packets dropped"
f_ok "$n writes committed in $(( (t3 - t2) / 1000 )) s of $P% loss ($before in 3 s before; $terms elections meanwhile)"
f_heal_loss
f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
