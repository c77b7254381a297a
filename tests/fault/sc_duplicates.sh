#!/usr/bin/env bash
# Duplicated and reordered messages: every node sends half of its raft
# messages to the others twice, with up to 20 ms of random delay (so copies
# and later messages overtake each other), through its transport's fault
# hook. Raft must shrug duplicates off: writes keep committing, every
# acknowledged write survives, and the nodes converge once it stops.
BIN=${1:?usage: sc_duplicates.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

f_start_cluster 3
f_wait_leader 10 1 2 3 >/dev/null || f_fail "no initial leader"
f_workload_start w 1 2 3
sleep 2
for i in 1 2 3; do
    f_hook "$i" all dup=0.5 jitter=20
done
t0=$(f_now_ms)
n=$(f_wait_acks w "$t0" 30 40) || f_fail "only $n writes committed in 40 s of duplicated messages"
dups=0
for i in 1 2 3; do
    d=$(f_field "$i" fault_dups) || true
    dups=$((dups + ${d:-0}))
done
[ "$dups" -gt 0 ] || f_fail "the hook duplicated no message"
f_ok "$n writes committed while $dups raft messages went twice"
f_heal_hooks
f_log "workload: $(f_workload_stop w) acknowledged"
f_finish
