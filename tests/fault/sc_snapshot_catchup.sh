#!/usr/bin/env bash
# Snapshot catch-up: a follower is cut off while the leader writes 150
# entries and compacts its log (--log-retain 20 --snapshot-threshold 50)
# past the follower's last index. After the heal the follower can only
# catch up by installing a snapshot (InstallSnapshot in chunks): asserted by
# its snapshots_applied counter, and by convergence of applied index, count
# and state hash.
BIN=${1:?usage: sc_snapshot_catchup.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

f_start_cluster 3 --log-retain 20 --snapshot-threshold 50
l=$(f_wait_leader 10 1 2 3) || f_fail "no initial leader"
f=$((l % 3 + 1)); g=$((f % 3 + 1))
f_write_n "$l" 10 pre
f_isolate "$f"
f_assert_frozen "$f" "$l $g"
behind=$(f_field "$f" applied)
f_write_n "$l" 150 snap
deadline=$((SECONDS + 15))
until first=$(f_field "$l" first) && [ "$first" -gt $((behind + 1)) ]; do
    [ $SECONDS -lt $deadline ] || f_fail "leader $l did not compact past $behind (first index $first)"
    sleep 0.2
done
f_ok "follower $f stuck at $behind; leader $l compacted its log to start at $first"
snaps0=$(f_field "$f" snapshots_applied)
f_heal_partition
t0=$(f_now_ms)
state=$(f_wait_converged 30 1 2 3) || f_fail "follower $f did not catch up within 30 s"
f_timing snapshot_catchup_ms $(($(f_now_ms) - t0))
snaps=$(f_field "$f" snapshots_applied)
[ "$snaps" -gt "$snaps0" ] || f_fail "follower $f caught up without installing a snapshot ($snaps0 -> $snaps)"
f_ok "follower $f installed $((snaps - snaps0)) snapshot(s) and converged: $state"
f_finish
