#!/usr/bin/env bash
# The standalone skein-gateway in front of a real 3-node cluster (nodes
# without their own HTTP): writes reach the leader, reads are answered,
# a burst of concurrent writes is batched by the leader (its loop lingers
# for clients that came over nng, not only for embedded-gateway callers),
# and after kill -9 of the leader the gateway finds the new one and no
# acknowledged write is lost.
BIN=${1:?usage: test_standalone_gateway.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

t_start_cluster 3 --no-http
gw_port=$((T_BASE + T_NODES)) # checked free by t_pick_base
nodes="$(t_nng_url 0),$(t_nng_url 1),$(t_nng_url 2)"
"$BIN/skein-gateway" --listen "127.0.0.1:$gw_port" --nodes "$nodes" \
    --threads 64 --quiet >>"$T_DIR/gateway.log" 2>&1 &
T_PIDS+=("$!")
disown "$!"
leader=$(t_wait_leader 15) || t_fail "no leader"
t_log "leader is node $leader, gateway on port $gw_port"

# gw METHOD PATH [BODY] [curl args...]: "STATUS BODY" from the gateway.
gw() {
    local method=$1 path=$2 body=${3:-}
    shift 2; [ $# -gt 0 ] && shift
    local args=(-s -m 15 -o "$T_DIR/gw.body" -w '%{http_code}' -X "$method"
                -H 'Content-Type: application/json' "$@")
    [ -n "$body" ] && args+=(--data-binary "$body")
    local code
    code=$(curl "${args[@]}" "http://127.0.0.1:$gw_port$path") || true
    echo "$code $(cat "$T_DIR/gw.body" 2>/dev/null)"
}

deadline=$((SECONDS + 15))
until [ "$(gw POST /api/kv '{"key":"first","value":"1"}' -H 'Idempotency-Key: first' | cut -d' ' -f1)" = 201 ]; do
    [ $SECONDS -lt $deadline ] || t_fail "the gateway never accepted a write"
    sleep 0.2
done
id=$(gw GET '/api/kv?key=first' | grep -o '"id":"[^"]*"' | head -n 1 | cut -d'"' -f4) || true
[ -n "$id" ] || t_fail "the write cannot be listed through the gateway"
t_expect 200 "$(gw GET "/api/kv/$id")" "a read through the gateway"

# 200 writes from 32 clients at once: the leader holds many of them at a
# time, so some of its loop rounds wait to batch more.
before=$(t_status_field "$leader" lingered_rounds)
seq 1 200 | xargs -P 32 -I{} curl -s -m 15 -o /dev/null -w '%{http_code}\n' \
    -X POST -H 'Content-Type: application/json' -H 'Idempotency-Key: burst-{}' \
    --data-binary '{"key":"burst-{}","value":"v"}' \
    "http://127.0.0.1:$gw_port/api/kv" >"$T_DIR/burst.codes" || true
ok=$(grep -c '^201$' "$T_DIR/burst.codes") || true
[ "$ok" = 200 ] || t_fail "burst: $ok of 200 writes answered 201: $(sort "$T_DIR/burst.codes" | uniq -c | tr '\n' ' ')"
after=$(t_status_field "$leader" lingered_rounds)
t_log "leader's lingered rounds: $before -> $after"
[ "$after" -gt "$before" ] || t_fail "the leader never lingered for clients that came over nng"

# The leader dies: the gateway follows the new one and nothing is lost.
t_kill_node "$leader"
start=$SECONDS
deadline=$((SECONDS + 15))
until [ "$(gw POST /api/kv '{"key":"after","value":"2"}' -H 'Idempotency-Key: after' | cut -d' ' -f1)" = 201 ]; do
    [ $SECONDS -lt $deadline ] || t_fail "no write accepted after the leader died"
    sleep 0.1
done
t_log "a write was accepted $((SECONDS - start)) s after kill -9 of the leader"
r=$(gw GET /api/kv/count)
t_expect 200 "$r" "count"
count=$(echo "$r" | grep -o '[0-9][0-9]*' | tail -n 1) || true
[ "$count" = 202 ] || t_fail "expected 202 entries after the failover, the gateway counts: $r"
t_log "PASS"
