#!/usr/bin/env bash
# Paused leader (a long GC pause, a VM freeze): the leader is stopped with
# SIGSTOP; the others elect a new leader, which updates entry x from v1 to
# v2. The old leader is then cut off (iptables) and resumed with SIGCONT:
# it wakes up still believing it leads, with client reads already queued on
# its socket. It must not answer any of them with v1 (linearizable reads
# need a quorum round, the ReadIndex leadership check; lease reads need a
# lease that a pause cannot have kept alive), must acknowledge no write,
# and must step down (CheckQuorum). After the heal it reads v2.
# Removing the ReadIndex leadership check makes this fail with CheckQuorum
# on (the window is the old leader's first election timeout after waking).
BIN=${1:?usage: sc_paused_leader.sh BIN_DIR}
source "$(dirname "$0")/lib.sh"

f_start_cluster 3
old=$(f_wait_leader 10 1 2 3) || f_fail "no initial leader"
term0=$(f_field "$old" term)
x=$(f_write "$old" create paused-key v1 paused-key-$$) || f_fail "seed write"
others=(); for i in 1 2 3; do [ "$i" = "$old" ] || others+=("$i"); done

# Readers hammering the old leader, one per consistency, each request
# waiting up to 3 s (so some wait on the stopped process).
for mode in linearizable lease; do
    (
        while [ ! -e "$F_DIR/stop-reader" ]; do
            a=$(f_now_ms)
            out=$(F_RPC_TIMEOUT=3 f_wire "$old" get "$x" "$mode")
            st=$(f_kv "$(echo "$out" | sed -n 1p)" status)
            val=$(f_kv "$(echo "$out" | grep '^entry ')" value)
            echo "$a $(f_now_ms) $mode ${st:-TIMEOUT} ${val:--}" >>"$F_DIR/reads"
        done
    ) &
    F_BG+=("$!"); disown "$!"
done
sleep 1

t0=$(f_now_ms)
f_pause "$old"
new=$(f_wait_leader 10 "${others[@]}") || f_fail "no new leader while $old is stopped"
read -r _ ms < <(f_first_leader_since "$t0" "$term0" "${others[@]}")
f_timing failover_ms "$ms"
out=$(f_wire "$new" update "$x" v2)
[[ $out == status=OK* ]] || f_fail "update through the new leader: $out"
t_ack=$(f_now_ms)
f_ok "node $new leads after ${ms} ms and updated x to v2"
f_partition "$old" "${others[*]}" # installed while it sleeps
sleep 1 # reads started after the ack queue up on the stopped node
t_wake=$(f_now_ms)
f_resume "$old"
sleep 3
touch "$F_DIR/stop-reader"; sleep 3.5
after=$(awk -v t="$t_ack" '$1 > t' "$F_DIR/reads")
stale=$(echo "$after" | awk '$4 == "OK" && $5 == "v1"')
[ -z "$stale" ] || f_fail "the woken old leader served stale reads (v1 after v2 was acknowledged): $(echo "$stale" | head -n 4 | tr '\n' ';')"
f_ok "no stale read from the woken leader: $(echo "$after" | awk '{print $3 ":" $4}' | sort | uniq -c | tr -s ' \n' ' ')"
read -r _ ms < <(f_obs_first "$t_wake" "id == $old && role != 3")
[ -n "$ms" ] || f_fail "the woken old leader never stepped down"
f_timing stepdown_after_wake_ms "$ms"
f_ok "the woken old leader stepped down ${ms} ms after SIGCONT"
for k in 1 2; do
    out=$(F_RPC_TIMEOUT=3 f_wire "$old" create woke-$k v woke-$k-$$)
    [[ $out == status=OK* ]] && f_fail "the cut-off old leader acknowledged a write: $out"
done
f_ok "the cut-off old leader acknowledged no write"
f_heal_partition
deadline=$((SECONDS + 15))
until [ "$(f_wire "$old" get "$x" | grep -o 'value=[^ ]*')" = value=v2 ]; do
    [ $SECONDS -lt $deadline ] || f_fail "old leader does not read v2 after the heal"
    sleep 0.2
done
f_ok "after the heal node $old reads v2"
f_finish
