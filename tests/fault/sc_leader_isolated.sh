#!/usr/bin/env bash
# Leader isolated by a network partition (iptables, both directions):
#  - the majority elects a new leader (asserted within 5 s; the figure is
#    printed, the target is 1 s);
#  - the old leader steps down (CheckQuorum), acknowledges no write, and
#    serves no stale read: linearizable and lease reads of an entry that the
#    majority has updated never return the old value once the update was
#    acknowledged;
#  - after the heal it catches up and reads the new value.
BIN=${1:?usage: sc_leader_isolated.sh BIN_DIR [NODES]}
N=${2:-3}
source "$(dirname "$0")/lib.sh"

f_start_cluster "$N"
old=$(f_wait_leader 10 "${F_MEMBERS[@]}") || f_fail "no initial leader"
x=$(f_write "$old" create stale-key v1 stale-key-$$) || f_fail "seed write"
term0=$(f_field "$old" term)
others=(); for i in "${F_MEMBERS[@]}"; do [ "$i" = "$old" ] || others+=("$i"); done
f_workload_start w "${others[@]}"

# A reader hammering the old leader with linearizable and lease reads of x.
(
    while [ ! -e "$F_DIR/stop-reader" ]; do
        for mode in linearizable lease; do
            a=$(f_now_ms)
            out=$(F_RPC_TIMEOUT=2 f_wire "$old" get "$x" "$mode")
            st=$(f_kv "$(echo "$out" | sed -n 1p)" status)
            val=$(f_kv "$(echo "$out" | grep '^entry ')" value)
            echo "$a $(f_now_ms) $mode ${st:-TIMEOUT} ${val:--}" >>"$F_DIR/reads"
        done
    done
) &
reader=$!; disown "$reader"; F_BG+=("$reader")
sleep 1

f_isolate "$old"
t0=$F_CUT_MS
new=$(f_wait_leader 5 "${others[@]}") || f_fail "the majority elected no leader within 5 s"
read -r _ ms < <(f_first_leader_since "$t0" "$term0" "${others[@]}")
f_timing failover_ms "$ms"
[ "$ms" -le 1000 ] && within="within 1 s" || within="SLOWER than the 1 s target"
f_ok "majority elected node $new; first seen leading ${ms} ms after the partition ($within)"

out=$(f_wire "$new" update "$x" v2)
[[ $out == status=OK* ]] || f_fail "update through the new leader: $out"
t_ack=$(f_now_ms)
f_ok "x updated to v2 through node $new"

# Stale reads are checked first (again at the end), so that a missing
# ReadIndex leadership check shows as such even when CheckQuorum is off and
# the old leader never steps down.
check_stale() {
    local stale
    stale=$(awk -v t="$t_ack" '$1 > t && $4 == "OK" && $5 == "v1"' "$F_DIR/reads")
    [ -z "$stale" ] || f_fail "stale read from the isolated old leader after v2 was acknowledged: $(echo "$stale" | head -n 3 | tr '\n' ';')"
}
sleep 1.5
check_stale
deadline=$((SECONDS + 5))
while [ "$(f_field "$old" role)" = 3 ]; do
    [ $SECONDS -lt $deadline ] || f_fail "old leader $old still leads 5 s after the partition"
    sleep 0.05
done
read -r _ ms < <(f_obs_first "$t0" "id == $old && role != 3")
f_timing stepdown_ms "$ms"
f_ok "old leader $old stepped down: first seen as role $(f_field "$old" role) ${ms} ms after the partition"

for k in 1 2 3; do
    out=$(F_RPC_TIMEOUT=3 f_wire "$old" create iso-$k v iso-$k-$$)
    [[ $out == status=OK* ]] && f_fail "isolated old leader acknowledged a write: $out"
done
f_ok "isolated node $old acknowledged none of 3 writes ($(echo "${out:-timeout}" | sed -n 1p))"
f_assert_frozen "$old" "${others[*]}"

sleep 1
touch "$F_DIR/stop-reader"; while kill -0 "$reader" 2>/dev/null; do sleep 0.05; done
check_stale
f_ok "no stale read: $(awk -v t="$t0" '$1 < t && $4 == "OK"' "$F_DIR/reads" | wc -l) OK reads before the partition, $(awk -v t="$t0" '$1 >= t && $4 == "OK"' "$F_DIR/reads" | wc -l) OK and $(awk -v t="$t0" '$1 >= t && $4 != "OK"' "$F_DIR/reads" | wc -l) refused after it ($(awk -v t="$t0" '$1 >= t {print $4}' "$F_DIR/reads" | sort | uniq -c | tr '\n' ' '))"

f_log "workload: $(f_workload_stop w) acknowledged"
f_heal_partition
deadline=$((SECONDS + 15))
until [ "$(f_wire "$old" get "$x" | grep -o 'value=[^ ]*')" = value=v2 ]; do
    [ $SECONDS -lt $deadline ] || f_fail "old leader does not read v2 after the heal"
    sleep 0.2
done
f_ok "after the heal node $old reads v2"
f_finish
