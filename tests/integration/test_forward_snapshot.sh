#!/usr/bin/env bash
# A write forwarded by a follower that then catches up by snapshot instead
# of by log: its entry is inside the snapshot, so the follower never applies
# it and cannot compute its answer. The follower must answer
# outcome_unknown when it installs the snapshot (its embedded gateway then
# retries with the same request id and gets the original 201), not leave the
# client waiting for the write's deadline (60 s here; the gateway gives up
# on its node after 10 s).
#
# How: the leader drops everything it sends to the follower (fault
# injection) while the follower's forward still reaches it; the leader
# commits the write with the third node, takes more writes and compacts its
# log (--log-retain 1), so when the fault is cleared it can only send a
# snapshot. A long election timeout keeps the cut-off follower from
# campaigning, which would answer the write by the leader-change path.
# The follower is node 0, so the fault hook must take 0 as a node id.
BIN=${1:?usage: test_forward_snapshot.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

t_start_cluster 3 --enable-fault-injection --write-timeout-ms 60000 \
    --election-ticks 200 --log-retain 1 --snapshot-threshold 10
leader=$(t_wait_http_leader 40) || t_fail "no leader"
if [ "$leader" = 0 ]; then
    # The follower is node 0: the fault hook once read peer 0 as "every
    # peer", which cut the leader off from both followers.
    t_expect 200 "$(t_http 0 POST '/_raft/transfer-leader?to=1')" "transfer to node 1"
    for i in $(seq 1 50); do [ "$(t_http_leader)" = 1 ] && break; sleep 0.1; done
    leader=$(t_http_leader)
    [ "$leader" = 1 ] || t_fail "leadership did not move to node 1"
fi
f=0
r=$(t_wire "$leader" fault 9 drop=1) || true
[[ $r == status=BAD_REQUEST* ]] || t_fail "a fault for a node that is no peer: ${r:-no answer}"
t_log "leader is node $leader, the write goes to follower $f"
r=$(t_create_retrying "$f" '{"key":"warm-up","value":"x"}' warm-up)
t_expect 201 "$r" "a forwarded write"
t_wait_converged 0 1 2 >/dev/null || t_fail "nodes did not converge"

t_wire "$leader" fault "$f" drop=1 >/dev/null || t_fail "fault injection"
curl -s -m 40 -o "$T_DIR/fs.body" -w '%{http_code}' -X POST \
    -H 'Idempotency-Key: fs-1' --data-binary '{"key":"fs","value":"v"}' \
    "http://127.0.0.1:$(t_http_port "$f")/api/kv" >"$T_DIR/fs.code" 2>&1 &
writer=$!
sleep 0.5
for i in $(seq 1 30); do
    t_expect 201 "$(t_http "$leader" POST /api/kv "{\"key\":\"b$i\",\"value\":\"v\"}")" "write $i to the leader"
done
st=$(t_http "$leader" GET /status)
first=$(echo "$st" | t_json first_log_index)
t_log "leader's log now starts at $first"
[ "$first" -gt 5 ] || t_fail "the leader did not compact its log: $st"

t_wire "$leader" fault "$f" clear >/dev/null || t_fail "clearing the fault"
start=$(date +%s%N)
wait "$writer" || true
ms=$(( ($(date +%s%N) - start) / 1000000 ))
code=$(cat "$T_DIR/fs.code")
t_log "the forwarded write was answered $ms ms after the fault cleared: $code $(cat "$T_DIR/fs.body")"
st=$(t_http "$f" GET /status)
[ "$(echo "$st" | t_json snapshots_applied)" -ge 1 ] ||
    t_fail "the follower did not catch up by snapshot: $st"
[ "$code" = 201 ] || t_fail "the forwarded write got $code"
# The gateway's own give-up (10 s) would come later than this.
[ "$ms" -lt 6000 ] || t_fail "answered only after $ms ms: at a deadline, not at the install"

r=$(t_create_retrying "$f" '{"key":"fs","value":"v"}' fs-1)
t_expect 201 "$r" "the retry with the same key"
n=$(t_http "$f" GET '/api/kv?key=fs' | grep -o '"key":"fs"' | wc -l) || true
[ "$n" = 1 ] || t_fail "the write exists $n times"
t_log "PASS"
