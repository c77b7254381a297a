#!/usr/bin/env bash
# A restore given up halfway: its leader is killed with -9 once a follower
# has staged some of the chunk entries, well before the commit entry can
# have been proposed. The new leader finds the chunks staged with no
# restore running and proposes an abort entry: every node (the old leader
# too, once restarted) drops them, the data is what it was before the
# restore, and writes go on. The leader's sends are delayed (fault
# injection) so that the restore takes long enough to be caught halfway.
BIN=${1:?usage: test_restore_abort.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

# "UPLOAD BYTES" of what node ID's state has staged (its /status).
t_staged() {
    curl -s -m 5 "http://127.0.0.1:$(t_http_port "$1")/status" |
        jq -r '"\(.restore_staging.upload_id) \(.restore_staging.bytes)"' 2>/dev/null || echo "? ?"
}

# Applied index, state hash and count of node ID.
t_state() {
    t_wire "$1" status | tr ' ' '\n' | grep -E '^(hash|count)=' | tr '\n' ' ' || true
}

t_start_cluster 3 --enable-fault-injection
leader=$(t_wait_http_leader 15) || t_fail "no leader"
f1=$(( (leader + 1) % 3 ))
f2=$(( (leader + 2) % 3 ))
t_log "leader is node $leader, followers $f1 and $f2"

# 40 values of 1,000,000 bytes: a backup of about 40 MB, 40 chunk entries
# of 1 MiB (at most 8 in flight), then the commit entry.
head -c 1000000 /dev/zero | tr '\0' x >"$T_DIR/value"
ids=()
for i in $(seq 1 40); do
    { printf '{"key":"big:%d","value":"' "$i"; cat "$T_DIR/value"; printf '"}'; } >"$T_DIR/v.json"
    r=$(t_http "$leader" POST /api/kv "" --data-binary "@$T_DIR/v.json")
    t_expect 201 "${r:0:200}" "create big:$i"
    ids+=("$(echo "${r:0:200}" | t_json id)")
done
t_wait_converged 0 1 2 >/dev/null || t_fail "no convergence before the backup"
code=$(curl -s -m 60 -o "$T_DIR/backup.mdb" -w '%{http_code}' \
    "http://127.0.0.1:$(t_http_port "$leader")/_raft/snapshot") || true
[ "$code" = 200 ] || t_fail "backup download: HTTP $code"
size=$(stat -c %s "$T_DIR/backup.mdb")
[ "$size" -gt $((30 * 1024 * 1024)) ] || t_fail "backup of $size bytes: expected more than 30 MiB"

# After the backup: some entries deleted, one written. A completed
# restore would bring them back; an aborted one must not.
for id in "${ids[@]:0:5}"; do
    t_expect 200 "$(t_http "$leader" DELETE "/api/kv/$id")" "delete $id"
done
t_expect 201 "$(t_http "$leader" POST /api/kv '{"key":"after-backup","value":"1"}')" "create after-backup"
before=$(t_wait_converged 0 1 2) || t_fail "no convergence after the backup"
t_log "backup: $size bytes; state before the restore: $before"

# Slow the leader's sends, start the restore, and kill the leader as soon
# as a follower has staged its first chunks.
for f in "$f1" "$f2"; do
    t_wire "$leader" fault "$f" delay=150 >/dev/null || t_fail "fault injection on node $leader"
done
curl -s -m 120 -o "$T_DIR/restore.out" -X POST --data-binary "@$T_DIR/backup.mdb" \
    -H 'Content-Type: application/octet-stream' \
    "http://127.0.0.1:$(t_http_port "$leader")/_raft/snapshot" &
T_PIDS+=("$!")
staged_bytes=0
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
    read -r up staged_bytes < <(t_staged "$f1")
    [[ "$staged_bytes" =~ ^[0-9]+$ ]] && [ "$staged_bytes" -gt 0 ] && break
    sleep 0.05
done
[[ "$staged_bytes" =~ ^[0-9]+$ ]] && [ "$staged_bytes" -gt 0 ] ||
    t_fail "node $f1 never staged a chunk of the restore"
t_kill_node "$leader"
t_log "node $f1 staged $staged_bytes bytes of upload $up: leader $leader killed"
# The commit entry follows the last chunk; with at most 8 chunk entries
# unapplied at the leader, 16 MiB staged here leaves 16 more unproposed.
[ "$staged_bytes" -le $((16 * 1024 * 1024)) ] ||
    t_fail "caught too late ($staged_bytes bytes staged): the commit entry may be out"

# The survivors elect a leader, which aborts the staged restore.
new_leader=$(t_wait_http_leader 15) || t_fail "no leader after the kill"
t_log "new leader: node $new_leader"
deadline=$((SECONDS + 30))
while [ $SECONDS -lt $deadline ]; do
    s1=$(t_staged "$f1"); s2=$(t_staged "$f2")
    [ "$s1" = "0 0" ] && [ "$s2" = "0 0" ] && break
    sleep 0.2
done
[ "$s1" = "0 0" ] && [ "$s2" = "0 0" ] || t_fail "staging not dropped: node $f1: $s1, node $f2: $s2"
grep -h 'abort proposed' "$T_DIR"/node-*.log || t_fail "no abort entry was proposed"
after=$(t_wait_converged "$f1" "$f2") || t_fail "survivors did not converge"
[ "$(echo "$after" | tr ' ' '\n' | grep -E '^(hash|count)=' | tr '\n' ' ')" = "$(echo "$before" | tr ' ' '\n' | grep -E '^(hash|count)=' | tr '\n' ' ')" ] ||
    t_fail "the data changed: before $before, after $after"
t_expect 404 "$(t_http "$f1" GET "/api/kv/${ids[0]}")" "deleted entry stays deleted"

# The old leader restarts, applies the abort from the log, and agrees.
t_start_node "$leader"
t_wait_converged 0 1 2 >/dev/null || t_fail "node $leader did not catch up"
s0=$(t_staged "$leader")
[ "$s0" = "0 0" ] || t_fail "restarted node $leader still stages $s0"
t_expect 201 "$(t_http "$f2" POST /api/kv '{"key":"after-abort","value":"2"}')" "write after the abort"
t_log "PASS"
