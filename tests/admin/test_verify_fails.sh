#!/usr/bin/env bash
# `skeinctl verify` must be able to fail: it passes on a healthy cluster,
# exits non-zero when one node is down, and when two nodes hold different
# data at the same applied index (two separate single-node clusters with
# the same number of writes but different entries).
BIN=${1:?usage: test_verify_fails.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

base=$(t_cluster c3 3)
t_log "3-node cluster on $base"
"$CTL" flood --data "$T_DIR/c3" --count 50 --concurrency 5 --no-progress >/dev/null ||
    t_fail "flood"
out=$("$CTL" verify --data "$T_DIR/c3" --timeout 60) || t_fail "verify of a healthy cluster: $out"
echo "$out"

t_log "kill -9 node 2: verify must fail"
kill -9 "$(t_pid c3 2)"
rc=0; out=$("$CTL" verify --data "$T_DIR/c3" --timeout 2) || rc=$?
echo "$out"
[ "$rc" = 1 ] || t_fail "verify with a node down exited $rc"
echo "$out" | grep -q "DOWN" || t_fail "no DOWN line"
echo "$out" | grep -q "verify: FAILED" || t_fail "no FAILED verdict"
"$CTL" cluster stop --data "$T_DIR/c3" >/dev/null

t_log "two single-node clusters with different data: verify must fail"
a=$(t_cluster a 1)
b=$(t_cluster b 1)
for port in "$a" "$b"; do
    "$CTL" flood --nodes "$port" --count 3 --concurrency 1 --no-progress >/dev/null ||
        t_fail "flood on $port"
done
rc=0; out=$("$CTL" verify --nodes "$a,$b" --timeout 10) || rc=$?
echo "$out"
[ "$rc" = 1 ] || t_fail "verify of differing data exited $rc"
echo "$out" | grep -q "HASH MISMATCH" || t_fail "no HASH MISMATCH"
rc=0; out=$("$CTL" verify --nodes "$a,$b" --timeout 10 --deep) || rc=$?
[ "$rc" = 1 ] || t_fail "verify --deep exited $rc"
echo "$out" | grep -q "only on" || t_fail "verify --deep shows no difference: $out"
t_log "PASS"
