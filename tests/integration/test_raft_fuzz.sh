#!/usr/bin/env bash
# Hostile or broken peers. First a heartbeat of term 2^64-1 "from" each
# member to every node: it must change nothing (taken, it once left the
# cluster unable to ever elect a leader again). Then 2000 well-formed
# protobuf raft messages with
# random types and edge-case fields (`skein-wire encode raft-fuzz SEED
# FROM`: terms and indexes of 0, 1, 2^63, 2^64-1, entries with wrong
# indexes and random bytes, snapshot chunks with random offsets, sizes and
# members), sent over raw nng to every node of a live cluster, "from"
# members and from a node that does not exist. No node may crash, and the
# cluster must afterwards elect a leader, take a write and converge with
# every acknowledged write. Then 1500 fuzzed ClientRequests (`skein-wire
# encode client-fuzz SEED`: random ops, long strings, bytes that are not
# UTF-8, odd consistency values and forward tags): no crash, the nodes
# converge, and the list reads back as JSON. Seeds are fixed: a failure
# names the seed.
BIN=${1:?usage: test_raft_fuzz.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

t_start_cluster 3
leader=$(t_wait_http_leader 15) || t_fail "no leader"
for i in $(seq 1 10); do
    r=$(t_create_retrying "$leader" "{\"key\":\"k$i\",\"value\":\"v\"}" "fz-$i")
    t_expect 201 "$r" "write $i"
done
# First the case that wedged clusters: a heartbeat of term 2^64-1 "from"
# each member, to every node. Taken, no term could ever follow it.
for to in 0 1 2; do
    for from in 0 1 2; do
        [ "$from" = "$to" ] && continue
        "$BIN/skein-wire" encode raft-term "$from" 18446744073709551615 >"$T_DIR/term.bin"
        timeout 5 nngcat --req --dial "$(t_nng_url "$to")" --file "$T_DIR/term.bin" \
            --raw --recv-timeout 1 >/dev/null 2>&1 || true
    done
done
for n in 0 1 2; do
    t=$(t_status_field "$n" term)
    [ "$t" -lt 1000 ] || t_fail "node $n took the absurd term: now $t"
done
t_log "leader $leader; 2000 fuzzed raft messages"
alive() {
    local n
    for n in 0 1 2; do
        kill -0 "$(cat "$T_DIR/node-$n.pid")" 2>/dev/null ||
            t_fail "node $n died by $1"
    done
}
for seed in $(seq 1 2000); do
    to=$((seed % 3))
    from=$(( (seed / 3) % 4 )) # 3 is no member
    "$BIN/skein-wire" encode raft-fuzz "$seed" "$from" >"$T_DIR/fuzz.bin"
    timeout 5 nngcat --req --dial "$(t_nng_url "$to")" --file "$T_DIR/fuzz.bin" \
        --raw --recv-timeout 1 >/dev/null 2>&1 || true
    [ $((seed % 100)) = 0 ] && alive "raft seed $seed"
done
alive "raft seed 2000"

l=$(t_wait_http_leader 20) || t_fail "no leader after the fuzz"
r=$(t_create_retrying "$l" '{"key":"after","value":"v"}' fz-after)
t_expect 201 "$r" "a write after the fuzz"
c=$(t_wait_converged 0 1 2) || t_fail "the nodes did not converge after the fuzz"
t_log "leader $l, converged: $c"
case "$c" in *count=11*) ;; *) t_fail "acknowledged writes missing: $c" ;; esac

# Clients that speak nng directly: 1500 fuzzed ClientRequests.
t_log "1500 fuzzed client requests"
for seed in $(seq 1 1500); do
    "$BIN/skein-wire" encode client-fuzz "$seed" >"$T_DIR/fuzz.bin"
    timeout 5 nngcat --req --dial "$(t_nng_url $((seed % 3)))" --file "$T_DIR/fuzz.bin" \
        --raw --recv-timeout 2 >/dev/null 2>&1 || true
    [ $((seed % 100)) = 0 ] && alive "client seed $seed"
done
c=$(t_wait_converged 0 1 2) || t_fail "the nodes did not converge after the client fuzz"
t_log "converged: $c"
# Whatever was stored reads back as JSON (every key and value is UTF-8).
r=$(t_http "$l" GET '/api/kv?limit=1000')
t_expect 200 "$r" "the list after the client fuzz"
echo "${r#* }" | jq -e 'all(.[]; (.key | type) == "string" and (.value | type) == "string")' \
    >/dev/null || t_fail "the list is not JSON: ${r:0:300}"
t_log "PASS"
