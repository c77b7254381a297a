#!/usr/bin/env bash
# Real 3-node cluster over loopback, driven through the raw nng path
# (nngcat + skein-wire): election, writes via any node, reads from all,
# kill -9 of the leader, restart and catch-up from the log, a wiped
# follower brought back by snapshot.
BIN=${1:?usage: test_nng_cluster.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

command -v nngcat >/dev/null || t_fail "nngcat missing (Debian package nng-utils)"

t_start_cluster 3 --no-http --log-retain 20 --snapshot-threshold 20
leader=$(t_wait_leader 10) || t_fail "no leader elected"
t_log "leader is node $leader"

for i in 0 1 2; do
    out=$(t_wire "$i" create "k$i" "v$i" "req-$i")
    echo "$out" | grep '^status=OK' >/dev/null || t_fail "create via node $i: $out"
done
# The same request id again is answered from the idempotency table.
again=$(t_wire 1 create k1 v1 req-1)
first_id=$(t_wire 1 list | sed -n 's/^entry id=\([^ ]*\) key=k1 .*/\1/p') || true
echo "$again" | grep "id=$first_id" >/dev/null || t_fail "retry was applied twice: $again"
for i in 0 1 2; do
    [ "$(t_wire "$i" count)" = "$(printf 'status=OK\ncount=3')" ] ||
        t_fail "node $i does not count 3 entries"
done
t_wait_converged 0 1 2 >/dev/null || t_fail "nodes did not converge"
# Keys and values must be UTF-8 (the REST API is JSON): refused over nng
# too, with nothing written, through the leader and through a follower.
for i in 0 1 2; do
    out=$(t_wire "$i" create $'bad\xff' v utf8-$i)
    case "$out" in status=BAD_REQUEST*UTF-8*) ;; *) t_fail "a key that is not UTF-8 via node $i: $out" ;; esac
done
out=$(t_wire 1 create k $'v\xc3\x28')
case "$out" in status=BAD_REQUEST*) ;; *) t_fail "a value that is not UTF-8: $out" ;; esac
[ "$(t_wire 1 count)" = "$(printf 'status=OK\ncount=3')" ] || t_fail "a bad write changed the count"

t_log "kill -9 the leader ($leader)"
t_kill_node "$leader"
others=$(t_ids_except "$leader")
deadline=$((SECONDS + 10)); newleader=""
while [ $SECONDS -lt $deadline ] && [ -z "$newleader" ]; do
    for i in $others; do
        if [ "$(t_status_field "$i" role)" = 3 ]; then newleader=$i; fi
    done
    sleep 0.1
done
[ -n "$newleader" ] || t_fail "no new leader after the kill"
t_log "new leader is node $newleader"
for k in $(seq 1 40); do
    out=$(t_wire "$newleader" create "after$k" "x")
    echo "$out" | grep '^status=OK' >/dev/null || t_fail "write after failover: $out"
done

t_log "restart node $leader: catches up"
t_start_node "$leader"
t_wait_converged 0 1 2 >/dev/null || t_fail "restarted node did not catch up"

follower=$(t_ids_except "$leader" "$newleader")
t_log "wipe follower $follower: snapshot resync"
t_kill_node "$follower"
rm -rf "$T_DIR/node-$follower"
acked=0
for k in $(seq 1 60); do
    out=$(t_wire "$newleader" create "more$k" "y")
    if ! echo "$out" | grep '^status=OK' >/dev/null; then
        t_log "write more$k not acknowledged: $(echo $out)"
    fi
    if echo "$out" | grep '^status=OK' >/dev/null; then
        acked=$((acked + 1))
        echo "$out" | sed -n 's/^entry id=\([^ ]*\) .*/\1/p' >>"$T_DIR/acked-ids"
    fi
done
t_log "$acked of 60 writes acknowledged while the follower was away"
t_start_node "$follower"
state=$(t_wait_converged 0 1 2) || t_fail "wiped follower did not converge"
t_log "converged: $state"
count=$(echo "$state" | tr ' ' '\n' | sed -n 's/^count=//p')
# Every acknowledged write is there; an unacknowledged one may be too.
[ "$count" -ge $((43 + acked)) ] && [ "$count" -le 103 ] ||
    t_fail "expected $((43 + acked))..103 entries, got $state"
while read -r id; do
    t_wire_settled "$follower" get "$id" | grep '^status=OK' >/dev/null ||
        t_fail "acknowledged entry $id missing on the resynced follower: $(t_wire "$follower" get "$id" | tr "\n" " ") / leader: $(t_wire "$newleader" get "$id" | tr "\n" " ")"
done <"$T_DIR/acked-ids"
[ "$(t_status_field "$follower" snapshots_applied)" -ge 1 ] ||
    t_fail "the wiped follower caught up without a snapshot (first index $(t_status_field "$newleader" first))"
t_log "garbage from the network: dropped and counted, never a crash"
for k in $(seq 1 20); do
    head -c $((RANDOM % 4000 + 1)) /dev/urandom >"$T_DIR/garbage.bin"
    timeout 5 nngcat --req --dial "$(t_nng_url "$newleader")" \
        --file "$T_DIR/garbage.bin" --raw --recv-timeout 2 >/dev/null 2>&1 || true
done
kill -0 "$(cat "$T_DIR/node-$newleader.pid")" || t_fail "garbage killed node $newleader"
t_log "a ForwardBatch from a peer: each part answered on its own, bad parts refused"
out=$(t_wire "$newleader" forward-batch creates 5 fbk) || true
echo "$out" | grep '^forward_batch n=5$' >/dev/null || t_fail "batch of 5 creates: $out"
[ "$(echo "$out" | grep -c ' status=OK$')" = 5 ] || t_fail "batch of 5 creates not all OK: $out"
out=$(t_wire "$newleader" forward-batch mixed fbm) || true
for want in "part 0 status=OK" "part 1 status=BAD_REQUEST" "part 2 status=NOT_FOUND" "part 3 status=BAD_REQUEST"; do
    echo "$out" | grep -x "$want" >/dev/null || t_fail "mixed batch: no '$want' in: $out"
done
for mode in empty huge; do
    out=$(t_wire "$newleader" forward-batch "$mode") || true
    echo "$out" | grep '^forward_batch' >/dev/null && t_fail "a $mode batch was served: $out"
done
t_log "a one-way ForwardBatch: tagged writes proposed, refusals sent to the member in ForwardResults"
member=$(( (newleader + 1) % 3 ))
u0=$(t_status_field "$member" forward_results_unmatched) || true
s0=$(t_status_field "$newleader" forward_results_sent) || true
c0=$(t_wire_settled "$newleader" count | sed -n 's/^count=//p') || true
t_wire "$newleader" forward-batch one-way "$member" owb >/dev/null || true
for _ in $(seq 1 50); do
    u1=$(t_status_field "$member" forward_results_unmatched) || true
    [ "${u1:-x}" = "$((u0 + 1))" ] && break
    sleep 0.1
done
[[ "$u0$s0" =~ ^[0-9]+$ ]] || t_fail "no forward_results fields in /status: $u0 $s0"
# The read was refused and its answer reached the member (which waited
# for nothing tagged 2, so it counts it as unmatched); the tagged create
# was proposed, the untagged one dropped.
[ "$u1" = "$((u0 + 1))" ] || t_fail "member $member got no ForwardResults ($u0 -> $u1)"
[ "$(t_status_field "$newleader" forward_results_sent)" = "$((s0 + 1))" ] ||
    t_fail "the leader refused more or less than the read"
c1=$(t_wire_settled "$newleader" count | sed -n 's/^count=//p') || true
[[ "$c0" =~ ^[0-9]+$ ]] || t_fail "no count: $c0"
[ "$c1" = "$((c0 + 1))" ] ||
    t_fail "a one-way batch of one tagged and one untagged create added $c0 -> $c1 entries"
t_log "raft batches inside raft batches: one level opened, deeper dropped and counted"
dropped() { t_status_field "$1" dropped || echo x; }
d0=$(dropped "$newleader")
t_wire "$newleader" raft-batch nested >/dev/null || true
d1=$(dropped "$newleader")
t_wire "$newleader" raft-batch deep >/dev/null || true
d2=$(dropped "$newleader")
[[ "$d0$d1$d2" =~ ^[0-9]+$ ]] || t_fail "no dropped_messages in /status: $d0 $d1 $d2"
[ "$d1" = "$d0" ] || t_fail "a batch in a batch was dropped ($d0 -> $d1)"
[ "$d2" = $((d1 + 1)) ] || t_fail "a batch three levels deep was not dropped once ($d1 -> $d2)"
other=$(( (newleader + 1) % 3 ))
out=$(t_wire "$other" forward-batch creates 2 fbf) || true
[ "$(echo "$out" | grep -c ' status=NOT_LEADER$')" = 2 ] || t_fail "a follower served a forwarded batch: $out"
kill -0 "$(cat "$T_DIR/node-$newleader.pid")" || t_fail "forward batches killed node $newleader"
t_wire_settled "$newleader" create garbage-after ok | grep '^status=OK' >/dev/null ||
    t_fail "node $newleader stopped serving after garbage"
t_log "PASS"
