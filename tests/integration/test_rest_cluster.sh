#!/usr/bin/env bash
# A real 3-node cluster through its REST gateways: writes via any node and
# reads from all, CAS, idempotent retries (also across a leader change),
# every error status, leadership transfer, forced resync, membership
# (a fourth node added as learner, promoted, another removed), and a
# cluster without quorum answering 503 quickly.
BIN=${1:?usage: test_rest_cluster.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

t_start_cluster 3
leader=$(t_wait_http_leader 15) || t_fail "no leader"
t_log "leader is node $leader"

# Writes via every node, read back from every node.
ids=()
for i in 0 1 2; do
    r=$(t_http "$i" POST /api/kv "{\"key\":\"user:$i\",\"value\":\"v$i\"}")
    t_expect 201 "$r" "create via node $i"
    ids+=("$(echo "$r" | t_json id)")
done
for i in 0 1 2; do
    for id in "${ids[@]}"; do
        t_expect 200 "$(t_http "$i" GET "/api/kv/$id")" "read $id on node $i"
    done
    r=$(t_http "$i" GET /api/kv/count)
    echo "$r" | grep '"count":3' >/dev/null || t_fail "count on node $i: $r"
    t_expect 200 "$(t_http "$i" GET '/api/kv?consistency=stale')" "stale list"
done

# Compare-and-swap with If-Match.
id=${ids[0]}
seq=$(t_http 1 GET "/api/kv/$id" | t_json seq) || true
t_expect 412 "$(t_http 2 PUT "/api/kv/$id" '{"value":"cas"}' -H "If-Match: $((seq + 100))")" "CAS with a wrong seq"
r=$(t_http 2 PUT "/api/kv/$id" '{"value":"cas"}' -H "If-Match: $seq")
t_expect 200 "$r" "CAS with the right seq"
[ "$(echo "$r" | t_json value)" = cas ] || t_fail "CAS did not write: $r"

# Idempotency-Key: the same key twice gives the same entry once.
a=$(t_http 0 POST /api/kv '{"key":"idem","value":"1"}' -H 'Idempotency-Key: key-1')
b=$(t_http 2 POST /api/kv '{"key":"idem","value":"1"}' -H 'Idempotency-Key: key-1')
[ "$(echo "$a" | t_json id)" = "$(echo "$b" | t_json id)" ] || t_fail "retry applied twice: $a / $b"

# Concurrent writes at a follower: they reach the leader together (one
# one-way ForwardBatch per loop round) and each gets its own answer, which
# the follower computes when it applies the write's entry: creates 201,
# one Idempotency-Key sent five times applied once, a CAS mismatch 412.
fw=$(( (leader + 1) % 3 ))
before=$(t_http "$fw" GET /api/kv/count | t_json count) || true
st=$(t_http "$fw" GET /status)
fwd0=$(echo "$st" | t_json forwarded_writes) || true
req0=$(echo "$st" | t_json forward_requests) || true
app0=$(echo "$st" | t_json forwards_applied) || true
fport=$(t_http_port "$fw")
for k in $(seq 1 40); do
    curl -s -m 15 -o /dev/null -w '%{http_code}\n' -X POST \
        --data-binary "{\"key\":\"burst:$k\",\"value\":\"b\"}" \
        "http://127.0.0.1:$fport/api/kv" >"$T_DIR/burst.$k" &
done
for k in 1 2 3 4 5; do
    curl -s -m 15 -X POST -H 'Idempotency-Key: burst-dup' \
        --data-binary '{"key":"burst:dup","value":"d"}' \
        "http://127.0.0.1:$fport/api/kv" >"$T_DIR/dup.$k" &
done
curl -s -m 15 -o /dev/null -w '%{http_code}\n' -X PUT -H "If-Match: 999999" \
    --data-binary '{"value":"x"}' "http://127.0.0.1:$fport/api/kv/${ids[1]}" >"$T_DIR/burst.cas" &
wait || true
for k in $(seq 1 40); do
    [ "$(cat "$T_DIR/burst.$k")" = 201 ] || t_fail "burst create $k via follower $fw: $(cat "$T_DIR/burst.$k")"
done
[ "$(cat "$T_DIR/burst.cas")" = 412 ] || t_fail "burst CAS mismatch via follower: $(cat "$T_DIR/burst.cas")"
dup_ids=$(for k in 1 2 3 4 5; do t_json id <"$T_DIR/dup.$k"; done | sort -u)
[ "$(echo "$dup_ids" | wc -l)" = 1 ] && [ -n "$dup_ids" ] ||
    t_fail "one Idempotency-Key gave several entries: $dup_ids"
after=$(t_http "$fw" GET /api/kv/count | t_json count) || true
[ "$after" = $((before + 41)) ] || t_fail "burst: count $before -> $after, expected +41"
st=$(t_http "$fw" GET /status)
fwd=$(( $(echo "$st" | t_json forwarded_writes) - fwd0 ))
req=$(( $(echo "$st" | t_json forward_requests) - req0 ))
t_log "burst: $fwd writes forwarded in $req requests"
[ "$fwd" -ge 46 ] && [ "$req" -lt "$fwd" ] ||
    t_fail "the burst's writes were not forwarded in batches ($fwd writes, $req requests)"
app=$(( $(echo "$st" | t_json forwards_applied) - app0 ))
[ "$app" = "$fwd" ] ||
    t_fail "$fwd writes forwarded, $app answered from the follower's own apply"

# Errors: each status, nothing changed by bad input.
before=$(t_http 0 GET /api/kv/count)
t_expect 400 "$(t_http 0 POST /api/kv '{bad')" "malformed JSON"
t_expect 400 "$(t_http 0 POST /api/kv '[1,2]')" "not an object"
t_expect 400 "$(t_http 0 POST /api/kv '{"key":"k","value":5}')" "wrong type"
t_expect 400 "$(t_http 0 POST /api/kv '{"value":"v"}')" "missing field"
t_expect 404 "$(t_http 0 GET /api/kv/no-such-id)" "unknown id"
t_expect 404 "$(t_http 0 DELETE /api/kv/no-such-id)" "delete unknown id"
t_expect 405 "$(t_http 0 PATCH /api/kv)" "wrong method"
head -c 3000000 /dev/zero | tr '\0' 'a' >"$T_DIR/big.json"
t_expect 413 "$(t_http 0 POST /api/kv "" --data-binary "@$T_DIR/big.json")" "oversized body"
[ "$(t_http 0 GET /api/kv/count)" = "$before" ] || t_fail "bad input changed the data"

# Leadership transfer to the best follower, then to a named one.
r=$(t_http "$leader" POST '/_raft/transfer-leader?to=auto')
t_expect 200 "$r" "transfer-leader auto"
deadline=$((SECONDS + 10)); new=$leader
while [ $SECONDS -lt $deadline ] && [ "$new" = "$leader" ]; do
    new=$(t_http_leader); [ -z "$new" ] && new=$leader; sleep 0.1
done
[ "$new" != "$leader" ] || t_fail "leadership did not move"
t_log "leadership moved from $leader to $new"
leader=$new

# Forced snapshot resync of a follower.
f=$(( (leader + 1) % 3 ))
r=$(t_http "$leader" POST "/_raft/force-resync?target=127.0.0.1:$(t_http_port "$f")")
t_expect 200 "$r" "force-resync"
deadline=$((SECONDS + 10)); ok=0
while [ $SECONDS -lt $deadline ]; do
    t_http "$leader" GET /_raft/resync_stats | grep '"send_successes":[1-9]' >/dev/null && { ok=1; break; }
    sleep 0.2
done
[ "$ok" = 1 ] || t_fail "forced resync never completed: $(t_http "$leader" GET /_raft/resync_stats)"
t_wait_converged 0 1 2 >/dev/null || t_fail "no convergence after resync"

# Membership: node 3 joins as a learner, gets promoted; node f leaves.
T_NODES=4
t_start_node 3 --join
r=$(t_http "$leader" POST /_raft/members "{\"id\":3,\"address\":\"$(t_nng_url 3)\",\"http_address\":\"127.0.0.1:$(t_http_port 3)\"}")
t_expect 200 "$r" "add member 3"
deadline=$((SECONDS + 15)); ok=0
while [ $SECONDS -lt $deadline ]; do
    t_http "$leader" GET /_raft/members | tr '{' '\n' | grep '"id":3' | grep voter >/dev/null && { ok=1; break; }
    sleep 0.2
done
[ "$ok" = 1 ] || t_fail "node 3 was not promoted: $(t_http "$leader" GET /_raft/members)"
t_wait_converged 0 1 2 3 >/dev/null || t_fail "node 3 did not catch up: $(for i in 0 1 2 3; do t_wire $i status; done)"
t_expect 200 "$(t_http "$leader" DELETE "/_raft/members/$f")" "remove member $f"
t_term_node "$f" || t_fail "node $f did not stop on SIGTERM"
t_expect 201 "$(t_http 3 POST /api/kv '{"key":"after-remove","value":"x"}')" "write after removal"
# Restart the new member (recovery with the stored membership) and resync
# it by snapshot (a snapshot made after a membership change).
t_term_node 3 || t_fail "node 3 did not stop on SIGTERM"
t_start_node 3 --join
members=$(t_ids_except "$f")
t_wait_converged $members >/dev/null || t_fail "node 3 did not recover"
leader=$(t_wait_http_leader 10) || t_fail "no leader after node 3 restarted"
if [ "$leader" != 3 ]; then
    sent=$(t_http "$leader" GET /_raft/resync_stats | t_json send_successes) || true
    t_expect 200 "$(t_http "$leader" POST "/_raft/force-resync?target=3")" "resync node 3"
    deadline=$((SECONDS + 10))
    while [ $SECONDS -lt $deadline ] &&
          [ "$(t_http "$leader" GET /_raft/resync_stats | t_json send_successes)" = "$sent" ]; do
        sleep 0.2
    done
    [ "$(t_http "$leader" GET /_raft/resync_stats | t_json send_successes)" != "$sent" ] ||
        t_fail "snapshot to node 3 after the membership change failed"
fi
t_wait_converged $members >/dev/null || t_fail "no convergence after resyncing node 3"

# Idempotent retry across a leader change: first attempt on the leader,
# which dies; the retry elsewhere with the same key must not apply twice.
t_http "$leader" POST /api/kv '{"key":"fail-over","value":"x"}' -H 'Idempotency-Key: fo-1' >/dev/null
t_kill_node "$leader"
other=$(t_ids_except "$f" "$leader" | sed -n 1p)
r=$(t_create_retrying "$other" '{"key":"fail-over","value":"x"}' fo-1)
t_expect 201 "$r" "retry after the leader died"
n=$(t_http "$other" GET '/api/kv?key=fail-over' | grep -o '"key":"fail-over"' | wc -l) || true
[ "$n" = 1 ] || t_fail "the retried write exists $n times"

# No quorum: with two of three voters gone, writes get 503 quickly.
last=$(t_ids_except "$f" "$leader" "$other")
t_kill_node "$other"
# A write already in flight to the dying leader is honestly "outcome
# unknown"; once the survivor's election timeout passed it knows there is
# no leader, and every write is refused at once.
sleep 1.5
start=$(date +%s%N)
r=$(t_http "$last" POST /api/kv '{"key":"no-quorum","value":"x"}')
ms=$(( ($(date +%s%N) - start) / 1000000 ))
t_expect 503 "$r" "write without quorum"
t_log "no quorum answered 503 in ${ms} ms"
curl -s -i -m 15 -X POST "http://127.0.0.1:$(t_http_port "$last")/api/kv" \
    -d '{"key":"no-quorum","value":"x"}' | grep -i '^Retry-After' >/dev/null ||
    t_fail "503 without Retry-After"
t_log "PASS"
