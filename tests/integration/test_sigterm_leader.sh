#!/usr/bin/env bash
# SIGTERM on the leader: it hands leadership to its most up-to-date voter
# at once (TimeoutNow), then stops its HTTP gateway (civetweb alone would
# take up to 2 s for that) and its node, syncs and exits. The election
# timeout is long here (3 to 6 s), so a new leader within 1 s can only come
# from a hand-off made before the gateway stopped (it used to wait for it).
# Acknowledged writes survive, and the term moves by exactly one.
# Then SIGTERM on the new leader, whose old leader has just left: it must
# hand off to the member that is alive (it used to pick the one that had
# just left, equal in log, and wait out its 2 s stop deadline leaderless)
# and exit within 1 s (civetweb's listener is woken, not waited for).
BIN=${1:?usage: test_sigterm_leader.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

t_start_cluster 3 --election-ticks 100
leader=$(t_wait_http_leader 30) || t_fail "no leader"
t_log "leader is node $leader"
for i in $(seq 1 20); do
    r=$(t_create_retrying "$leader" "{\"key\":\"k$i\",\"value\":\"v\"}" "st-$i")
    t_expect 201 "$r" "write $i"
done
term=$(t_status_field "$leader" term)

pid=$(cat "$T_DIR/node-$leader.pid")
start=$(date +%s%N)
kill -TERM "$pid"
new=""
for _ in $(seq 1 50); do
    for i in $(t_ids_except "$leader"); do
        if curl -s -m 1 "http://127.0.0.1:$(t_http_port "$i")/status" |
            grep '"is_leader":true' >/dev/null; then
            new=$i
        fi
    done
    [ -n "$new" ] && break
    sleep 0.02
done
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ -n "$new" ] || t_fail "no new leader $ms ms after SIGTERM"
t_log "node $new leads $ms ms after SIGTERM"
[ "$ms" -lt 1000 ] || t_fail "the hand-off waited for the gateway to stop ($ms ms)"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$pid" 2>/dev/null && t_fail "the old leader did not exit"
new_term=$(t_status_field "$new" term)
[ "$new_term" = $((term + 1)) ] || t_fail "term went $term -> $new_term: not one hand-off"

r=$(t_http "$new" GET /api/kv/count)
t_expect 200 "$r" "count on the new leader"
case "$r" in *'"count":20'*) ;; *) t_fail "acknowledged writes lost: $r" ;; esac

# Long enough for the first leader's silence to show (two heartbeats).
sleep 0.3
last=""
for i in $(t_ids_except "$leader"); do [ "$i" = "$new" ] || last=$i; done
pid2=$(cat "$T_DIR/node-$new.pid")
start=$(date +%s%N)
kill -TERM "$pid2"
third=""
for _ in $(seq 1 50); do
    if curl -s -m 1 "http://127.0.0.1:$(t_http_port "$last")/status" |
        grep '"is_leader":true' >/dev/null; then
        third=$last
        break
    fi
    sleep 0.02
done
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ -n "$third" ] || t_fail "node $last did not take over within $ms ms of SIGTERM on node $new"
t_log "node $third leads $ms ms after SIGTERM on node $new"
for _ in $(seq 1 20); do kill -0 "$pid2" 2>/dev/null || break; sleep 0.05; done
kill -0 "$pid2" 2>/dev/null && t_fail "node $new still runs 1 s after its hand-off"
third_term=$(t_status_field "$third" term)
[ "$third_term" = $((term + 2)) ] || t_fail "term went $new_term -> $third_term: not one hand-off"
t_log "PASS"
