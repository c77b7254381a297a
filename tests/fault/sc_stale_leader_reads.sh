#!/usr/bin/env bash
# Stale reads from an isolated leader that is slow to notice (FINDINGS O2).
# With the default timing an isolated leader steps down (CheckQuorum, every
# election timeout) about as fast as the majority elects and commits, so the
# ReadIndex leadership round hardly matters. Here the leader runs with a 10x
# longer election timeout than its followers (--election-ticks 100, a 3 s
# CheckQuorum round; the followers keep the default 10), so it keeps
# believing it leads for 3-6 s after it is cut off, while the majority elects
# in well under 1 s. In that window:
#  - node 1 (long timeout) is made leader (leadership transfer if needed),
#    x is created as v1, node 1 is isolated (iptables, both directions);
#  - the majority elects a new leader and acknowledges the update x = v2;
#  - the old leader still reports role leader (asserted just before the reads
#    are sent, and the observer's first non-leader sample of it must come
#    after they were sent): linearizable reads of x sent to it must never
#    return v1 (they time out, fail, or would return v2);
#  - it steps down (printed), acknowledges no write, and after the heal it
#    reads v2.
# With the ReadIndex leadership check removed (RAFT_MUTANT_READ_NO_CONFIRM)
# the old leader answers v1 at once and this scenario fails.
BIN=${1:?usage: sc_stale_leader_reads.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

LONG=100 # node 1's election timeout in ticks (30 ms each): 3 s
N=3

# f_start_cluster with a per-node flag: node 1 gets the long timeout.
F_FLAGS=()
[ -n "${F_NODE_FLAGS:-}" ] && F_FLAGS+=($F_NODE_FLAGS)
f_net_init
F_MEMBERS=($(seq 1 "$N"))
for i in "${F_MEMBERS[@]}"; do f_add_node_ns "$i"; done
f_start_node 1 "$(f_peers_of 1 "${F_MEMBERS[@]}")" --election-ticks "$LONG"
for i in 2 3; do f_start_node "$i" "$(f_peers_of "$i" "${F_MEMBERS[@]}")"; done
for i in "${F_MEMBERS[@]}"; do f_wait_up "$i" 15 || f_fail "node $i did not come up"; done
f_log "cluster of $N up (node 1: --election-ticks $LONG, nodes 2 3: default)"
f_observe_start

lead=$(f_wait_leader 10 "${F_MEMBERS[@]}") || f_fail "no initial leader"
if [ "$lead" != 1 ]; then
    out=$(f_wire "$lead" transfer 1)
    [[ $out == status=OK* ]] || f_fail "transfer $lead -> 1 refused: $out"
    deadline=$((SECONDS + 10))
    until [ "$(f_wait_leader 2 "${F_MEMBERS[@]}")" = 1 ]; do
        [ $SECONDS -lt $deadline ] || f_fail "node 1 does not lead 10 s after the transfer from $lead"
    done
    f_ok "leadership transferred $lead -> 1"
fi
old=1
f_ok "node 1 (election timeout $LONG ticks) leads term $(f_field 1 term)"
x=$(f_write "$old" create stale-key v1 stale-key-$$) || f_fail "seed write"
f_write_n "$old" 3 warm
# Node 1 must serve a linearizable read of v1 before the partition.
out=$(f_wire "$old" get "$x" linearizable)
[ "$(f_kv "$(echo "$out" | grep '^entry ')" value)" = v1 ] || f_fail "read of x before the partition: $out"
term0=$(f_field "$old" term)
others=(2 3)

f_isolate "$old"
t0=$F_CUT_MS
new=$(f_wait_leader 5 "${others[@]}") || f_fail "the majority elected no leader within 5 s"
read -r _ ms < <(f_first_leader_since "$t0" "$term0" "${others[@]}")
f_timing failover_ms "$ms"
f_ok "majority elected node $new, first seen leading ${ms} ms after the partition"
out=$(f_wire "$new" update "$x" v2)
[[ $out == status=OK* ]] || f_fail "update through the new leader: $out"
t_ack=$(f_now_ms)
f_ok "x updated to v2 through node $new, acknowledged $((t_ack - t0)) ms after the partition"

# The window: node 1 must still believe it leads when the reads are sent.
st=$(f_status "$old")
[ "$(f_kv "$st" role)" = 3 ] && [ "$(f_kv "$st" term)" = "$term0" ] ||
    f_fail "no window: the old leader no longer leads term $term0 when the reads would be sent ($st)"
t_send=$(f_now_ms)
f_ok "old leader $old still reports role leader (term $term0) $((t_send - t0)) ms after the partition; sending reads"
: >"$F_DIR/reads"
pids=()
for k in 1 2 3 4 5 6; do
    (
        a=$(f_now_ms)
        out=$(F_RPC_TIMEOUT=2 f_wire "$old" get "$x" linearizable)
        st=$(f_kv "$(echo "$out" | sed -n 1p)" status)
        val=$(f_kv "$(echo "$out" | grep '^entry ')" value)
        echo "$a $(f_now_ms) ${st:-TIMEOUT} ${val:--}" >>"$F_DIR/reads"
    ) &
    pids+=("$!")
    sleep 0.05
done
for p in "${pids[@]}"; do wait "$p"; done
t_done=$(f_now_ms)

# The window was real: the observer's first sample of node 1 as a
# non-leader (or in a later term) came after the last read was sent.
read -r _ down_ms < <(f_obs_first "$t0" "id == $old && (role != 3 || term != $term0)")
last_sent=$(awk 'BEGIN { m = 0 } $1 > m { m = $1 } END { print m }' "$F_DIR/reads")
if [ -n "${down_ms:-}" ] && [ $((t0 + down_ms)) -le "$last_sent" ]; then
    f_fail "no window: node $old was seen as a non-leader $down_ms ms after the partition, before the last read was sent ($((last_sent - t0)) ms)"
fi
f_ok "reads sent $((t_send - t0))-$((last_sent - t0)) ms after the partition, node $old still leading then (first seen otherwise: ${down_ms:-not yet})"
f_log "reads: $(awk '{ print $3 "/" $4 " in " $2 - $1 " ms" }' "$F_DIR/reads" | tr '\n' ' ')"
stale=$(awk '$3 == "OK" && $4 == "v1"' "$F_DIR/reads")
[ -z "$stale" ] || f_fail "stale read: the isolated old leader returned v1 after v2 was acknowledged ($(echo "$stale" | wc -l) of 6 reads: $(echo "$stale" | head -n 2 | tr '\n' ';'))"
f_ok "no stale read: none of 6 linearizable reads sent to the isolated old leader returned v1 ($(awk '{ print $3 }' "$F_DIR/reads" | sort | uniq -c | tr '\n' ' '))"

deadline=$((SECONDS + 10))
while [ "$(f_field "$old" role)" = 3 ]; do
    [ $SECONDS -lt $deadline ] || f_fail "old leader $old still leads $((SECONDS - deadline + 10)) s after the reads"
    sleep 0.05
done
read -r _ ms < <(f_obs_first "$t0" "id == $old && role != 3")
f_timing stepdown_ms "$ms"
f_ok "old leader $old stepped down ${ms} ms after the partition (CheckQuorum round $((LONG * 30)) ms)"
out=$(F_RPC_TIMEOUT=3 f_wire "$old" create iso v iso-$$)
[[ $out == status=OK* ]] && f_fail "isolated old leader acknowledged a write: $out"
f_ok "isolated node $old acknowledged no write ($(echo "${out:-timeout}" | sed -n 1p))"

f_heal_partition
deadline=$((SECONDS + 15))
until [ "$(f_wire "$old" get "$x" | grep -o 'value=[^ ]*')" = value=v2 ]; do
    [ $SECONDS -lt $deadline ] || f_fail "old leader does not read v2 after the heal"
    sleep 0.2
done
f_ok "after the heal node $old reads v2"
f_finish
