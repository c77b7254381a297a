#!/usr/bin/env bash
# A write forwarded by a follower to a leader that stops answering: the
# follower answers outcome_unknown as soon as it learns of the new leader,
# not at the write's deadline (set to 60 s here, well past curl's 20 s
# limit, so only the leader change can answer in time). Its embedded
# gateway retries such an answer with the same request id, so the client
# gets the new leader's 201 (or the follower's 504 if the retries ran out).
# Either way a retry with the same Idempotency-Key applies it once. The old
# leader is paused (SIGSTOP) before the write reaches it, so it never
# answers and never commits it.
BIN=${1:?usage: test_forward_leader_change.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

t_start_cluster 3 --write-timeout-ms 60000
leader=$(t_wait_http_leader 15) || t_fail "no leader"
f=$(( (leader + 1) % 3 ))
t_log "leader is node $leader, the write goes to follower $f"
r=$(t_create_retrying "$f" '{"key":"warm-up","value":"x"}' warm-up)
t_expect 201 "$r" "a forwarded write"

lpid=$(cat "$T_DIR/node-$leader.pid")
kill -STOP "$lpid"
start=$(date +%s%N)
r=$(curl -s -m 20 -w ' %{http_code}' -X POST -H 'Idempotency-Key: flc-1' \
    --data-binary '{"key":"flc","value":"v"}' \
    "http://127.0.0.1:$(t_http_port "$f")/api/kv") || true
ms=$(( ($(date +%s%N) - start) / 1000000 ))
kill -CONT "$lpid"
t_log "answered in $ms ms: $r"
# Not the gateway's own "no reply from node in time" (10 s): that is what
# a follower that waits for the deadline produces.
case "$r" in
    *' 201' | *'leader changed'*' 504') ;;
    *) t_fail "a forwarded write whose leader stopped: $r" ;;
esac

# The retry applies it once, whoever leads now.
r=$(t_create_retrying "$f" '{"key":"flc","value":"v"}' flc-1)
t_expect 201 "$r" "the retry with the same key"
n=$(t_http "$f" GET '/api/kv?key=flc' | grep -o '"key":"flc"' | wc -l) || true
[ "$n" = 1 ] || t_fail "the write exists $n times"
st=$(t_http "$f" GET /status)
[ "$(echo "$st" | t_json forwards_applied)" -ge 1 ] ||
    t_fail "no forwarded write was answered from the follower's apply: $st"
t_log "PASS"
