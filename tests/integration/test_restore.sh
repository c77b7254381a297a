#!/usr/bin/env bash
# POST /_raft/snapshot on a real 3-node cluster: a backup (GET
# /_raft/snapshot) restored through the raft log. Writes set A (values
# large enough for a multi-chunk upload and several restore entries),
# takes a backup, writes set B and deletes part of A, then checks: a
# garbage body and a truncated backup are 400 and change nothing; the
# backup POSTed to a follower (its embedded gateway, the node forwards to
# the leader) is restored: every node, read stale on each node once it
# applied the restore and linearizable, holds exactly the backup's data
# (same entries, seq, count and state hash as when the backup was taken);
# a follower killed with -9 and restarted still has it; writes go on from
# the backup's seq.
BIN=${1:?usage: test_restore.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

# The canonical content of one node: every entry (id, key, value, seq),
# sorted by id, hashed. Consistency: stale or linearizable.
t_content() {
    local id=$1 consistency=$2 out
    out=$(curl -s -m 15 "http://127.0.0.1:$(t_http_port "$id")/api/kv?limit=1000&consistency=$consistency" |
          jq -c 'sort_by(.id) | map({id, key, value, seq})' 2>/dev/null) || true
    [ -n "$out" ] || { echo "unreadable"; return; }
    echo "$(echo "$out" | jq length) $(echo "$out" | md5sum | cut -c1-32)"
}

# Applied index, state hash and count of node ID (its /status via nng).
t_state() {
    t_wire "$1" status | tr ' ' '\n' | grep -E '^(applied|hash|count)=' | tr '\n' ' ' || true
}

t_start_cluster 3
leader=$(t_wait_http_leader 15) || t_fail "no leader"
f1=$(( (leader + 1) % 3 ))
f2=$(( (leader + 2) % 3 ))
t_log "leader is node $leader, followers $f1 and $f2"

# Set A: 24 entries of ~120 KB (a backup of about 3 MiB: several 1 MiB
# gateway chunks and restore entries) and some small ones.
a_ids=()
letters=abcdefghijklmnopqrstuvwxyz
for i in $(seq 1 24); do
    c=${letters:$((i % 26)):1}
    printf '{"key":"a:%d","value":"%s"}' "$i" "$(head -c 120000 /dev/zero | tr '\0' "$c")" >"$T_DIR/a.json"
    r=$(t_http $((i % 3)) POST /api/kv "" --data-binary "@$T_DIR/a.json")
    t_expect 201 "$r" "create a:$i"
    a_ids+=("$(echo "$r" | t_json id)")
done
for i in $(seq 25 40); do
    r=$(t_http $((i % 3)) POST /api/kv "{\"key\":\"a:$i\",\"value\":\"small-$i\"}")
    t_expect 201 "$r" "create a:$i"
    a_ids+=("$(echo "$r" | t_json id)")
done

# The backup, and what it holds.
t_wait_converged 0 1 2 >/dev/null || t_fail "no convergence before the backup"
want=$(t_content "$leader" linearizable)
want_state=$(t_state "$leader")
want_hash=$(echo "$want_state" | tr ' ' '\n' | sed -n 's/^hash=//p')
want_count=$(echo "$want_state" | tr ' ' '\n' | sed -n 's/^count=//p')
code=$(curl -s -m 30 -o "$T_DIR/backup.mdb" -w '%{http_code}' \
    "http://127.0.0.1:$(t_http_port "$leader")/_raft/snapshot") || true
[ "$code" = 200 ] || t_fail "backup download: HTTP $code"
size=$(stat -c %s "$T_DIR/backup.mdb")
[ "$size" -gt $((2 * 1024 * 1024)) ] || t_fail "backup of $size bytes: expected more than 2 MiB"
t_log "backup: $size bytes, $want entries, state $want_state"
seq_before=$(t_http "$leader" GET "/api/kv/${a_ids[39]}" | t_json seq) || true

# Set B, and part of A deleted.
for i in $(seq 1 20); do
    t_expect 201 "$(t_http $((i % 3)) POST /api/kv "{\"key\":\"b:$i\",\"value\":\"after-$i\"}")" "create b:$i"
done
for id in "${a_ids[@]:0:10}"; do
    t_expect 200 "$(t_http "$f1" DELETE "/api/kv/$id")" "delete $id"
done
t_wait_converged 0 1 2 >/dev/null || t_fail "no convergence after set B"
changed=$(t_content "$leader" linearizable)
[ "$changed" != "$want" ] || t_fail "set B did not change the data"

# Garbage and a truncated backup: 400, nothing changes.
head -c 300000 /dev/urandom >"$T_DIR/garbage.bin"
r=$(t_http "$leader" POST /_raft/snapshot "" --data-binary "@$T_DIR/garbage.bin")
t_expect 400 "$r" "garbage restore"
t_log "garbage: $r"
head -c $((size / 2)) "$T_DIR/backup.mdb" >"$T_DIR/truncated.mdb"
r=$(t_http "$f2" POST /_raft/snapshot "" --data-binary "@$T_DIR/truncated.mdb")
t_expect 400 "$r" "truncated restore"
t_log "truncated: $r"
for i in 0 1 2; do
    [ "$(t_content "$i" linearizable)" = "$changed" ] || t_fail "a refused restore changed node $i"
done

# The restore, POSTed to a follower.
r=$(t_http "$f1" POST /_raft/snapshot "" --data-binary "@$T_DIR/backup.mdb" \
    -H 'Content-Type: application/octet-stream')
t_expect 200 "$r" "restore via follower $f1"
echo "$r" | grep '"restored":true' >/dev/null || t_fail "not restored: $r"
idx=$(echo "$r" | t_json last_included_index)
[ -n "$idx" ] && [ "$idx" -gt 0 ] || t_fail "no restore index: $r"
t_log "restored at index $idx: $r"

# Every node, once it applied the restore: exactly the backup's data.
t_wait_converged 0 1 2 >/dev/null || t_fail "no convergence after the restore: $(for i in 0 1 2; do t_state $i; done)"
for i in 0 1 2; do
    st=$(t_state "$i")
    applied=$(echo "$st" | tr ' ' '\n' | sed -n 's/^applied=//p')
    [ "$applied" -ge "$idx" ] || t_fail "node $i applied $applied < $idx"
    echo "$st" | grep "hash=$want_hash " >/dev/null || t_fail "node $i state $st, the backup had $want_state"
    echo "$st" | grep "count=$want_count " >/dev/null || t_fail "node $i state $st, the backup had $want_state"
    got=$(t_content "$i" stale)
    [ "$got" = "$want" ] || t_fail "node $i (stale) holds $got, the backup $want"
    got=$(t_content "$i" linearizable)
    [ "$got" = "$want" ] || t_fail "node $i (linearizable) holds $got, the backup $want"
done
for id in "${a_ids[@]:0:3}"; do
    t_expect 200 "$(t_http "$f2" GET "/api/kv/$id")" "deleted entry $id is back"
done
r=$(t_http "$leader" GET '/api/kv?key=b:1')
[ "$(echo "$r" | grep -o '"key":"b:1"' | wc -l)" = 0 ] || t_fail "set B survived the restore: $r"

# A follower killed with -9 and restarted still has the restored data.
t_kill_node "$f2"
sleep 0.3
t_start_node "$f2"
t_wait_converged 0 1 2 >/dev/null || t_fail "node $f2 did not come back: $(for i in 0 1 2; do t_state $i; done)"
got=$(t_content "$f2" stale)
[ "$got" = "$want" ] || t_fail "restarted node $f2 holds $got, the backup $want"

# Writes after the restore: seq goes on from the backup's.
leader=$(t_wait_http_leader 10) || t_fail "no leader after the restart"
r=$(t_http "$f1" POST /api/kv '{"key":"after-restore","value":"x"}')
t_expect 201 "$r" "write after the restore"
seq=$(echo "$r" | t_json seq)
[ "$seq" = $((seq_before + 1)) ] || t_fail "seq $seq after the restore, backup's last $seq_before"
new_id=$(echo "$r" | t_json id)
t_wait_converged 0 1 2 >/dev/null || t_fail "no convergence after the last write"
for i in 0 1 2; do
    t_expect 200 "$(t_http "$i" GET "/api/kv/$new_id?consistency=stale")" "new entry on node $i"
    r=$(t_http "$i" GET /api/kv/count)
    echo "$r" | grep "\"count\":$((want_count + 1))" >/dev/null || t_fail "count on node $i: $r"
done
t_log "PASS"
