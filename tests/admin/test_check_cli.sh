#!/usr/bin/env bash
# `skeinctl check` on the hand-written histories in histories/: exit 0 for
# the linearizable one, 1 with the smallest offending sub-history for each
# anomaly, 2 for a malformed file.
set -euo pipefail
CTL=${1:?usage: test_check_cli.sh SKEINCTL HISTORY_DIR}
DIR=${2:?usage: test_check_cli.sh SKEINCTL HISTORY_DIR}
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$("$CTL" check "$DIR/linearizable.jsonl") || fail "linearizable.jsonl: $out"
echo "$out" | grep -q "history is linearizable" || fail "no verdict: $out"

# file:size of the smallest offending sub-history
for case in stale_read:3 lost_write:2 never_written:2 wrong_cas:2; do
    f=${case%%:*}; n=${case##*:}
    rc=0; out=$("$CTL" check "$DIR/$f.jsonl") || rc=$?
    [ "$rc" = 1 ] || fail "$f: exit $rc, want 1: $out"
    echo "$out" | grep -q "NOT LINEARIZABLE: key A" || fail "$f: $out"
    echo "$out" | grep -q "smallest (1-minimal) offending sub-history, $n operations" ||
        fail "$f: want $n operations: $out"
    echo "ok: $f ($n operations)"
done

rc=0; out=$("$CTL" check "$DIR/malformed.jsonl" 2>&1) || rc=$?
[ "$rc" = 2 ] || fail "malformed: exit $rc, want 2: $out"
echo "$out" | grep -q "line 2" || fail "malformed: no line number: $out"
echo "PASS"
