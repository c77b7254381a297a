#!/usr/bin/env bash
# Property-based run: a random fault schedule drawn from SEED (printed, so a
# failure is replayed with the same command) over 3-7 nodes, under load:
#   - a raw-nng create workload through every node (acknowledged creates
#     are recorded);
#   - if skeinctl is built: back-to-back `skeinctl storm` rounds through the
#     nodes' REST gateways (creates, reads, updates, CAS, deletes on hot
#     keys, retried with idempotency keys), each recorded with --history.
# Each step injects one fault (isolate a node or the leader, random split,
# one-way cut, loss, kill -9, SIGSTOP, delay+jitter, or loss plus an
# isolated node), holds it 1-3 s, heals it (restarting killed nodes) and
# lets the cluster settle 1 s. Checked at the end:
#   - at most one leader per term, over every status sample taken;
#   - convergence (applied index, count, state hash) within 30 s of the last
#     heal;
#   - no acknowledged create lost (every one listed, a sample read by id);
#   - every storm history linearizable (skeinctl check).
# The schedule (which fault, which node, how long) is a function of the
# seed; what the cluster does in between is not, timing being real.
#
#   sc_random.sh BIN_DIR SEED [STEPS] [NODES]
BIN=${1:?usage: sc_random.sh BIN_DIR SEED [STEPS] [NODES]}
SEED=${2:?seed}
STEPS=${3:-6}
source "$(dirname "$0")/lib.sh"
F_NAME="random_seed$SEED"

RANDOM=$SEED
drawn=$((3 + RANDOM % 5)) # always drawn, so that a given NODES keeps the schedule
N=${4:-$drawn}
pick() { echo "${F_MEMBERS[$((RANDOM % ${#F_MEMBERS[@]}))]}"; }
f_log "seed $SEED: $N nodes, $STEPS steps (replay: $0 BIN_DIR $SEED $STEPS $N)"

STORM=0
if [ -x "$BIN/skeinctl" ]; then STORM=1; F_HTTP=1; fi
f_start_cluster "$N"
f_wait_leader 15 "${F_MEMBERS[@]}" >/dev/null || f_fail "no initial leader"
f_workload_start w "${F_MEMBERS[@]}"

# Storm rounds, one after another, until told to stop; round K records
# $F_DIR/storm-K.jsonl. Runs in the client namespace.
storm_loop() {
    local k=0 urls="" i
    for i in "${F_MEMBERS[@]}"; do urls="$urls${urls:+,}http://$(f_http "$i")"; done
    while [ ! -e "$F_DIR/stop-storm" ]; do
        k=$((k + 1))
        ip netns exec "$F_CL" "$BIN/skeinctl" storm --nodes "$urls" \
            --count 300 --concurrency 8 --read-pct 40 --hot 8 \
            --seed "$((SEED * 1000 + k))" --timeout 10 --attempt-timeout-ms 2000 \
            --history "$F_DIR/storm-$k.jsonl" --no-progress \
            >"$F_DIR/storm-$k.out" 2>&1
        echo "$k $?" >>"$F_DIR/storm-rounds"
    done
}
if [ "$STORM" = 1 ]; then
    storm_loop &
    storm_pid=$!; disown "$storm_pid"; F_BG+=("$storm_pid")
else
    f_log "skeinctl not built: raw-nng workload only"
fi

killed=()
for step in $(seq 1 "$STEPS"); do
    kind=$((RANDOM % 9)); hold=$((1 + RANDOM % 3))
    case $kind in
        0) n=$(pick); desc="isolate node $n"; f_isolate "$n" ;;
        1) a=(); b=()
           for i in "${F_MEMBERS[@]}"; do
               if [ $((RANDOM % 2)) = 0 ]; then a+=("$i"); else b+=("$i"); fi
           done
           [ ${#a[@]} = 0 ] && { a=("${b[0]}"); b=("${b[@]:1}"); }
           [ ${#b[@]} = 0 ] && { b=("${a[0]}"); a=("${a[@]:1}"); }
           desc="split {${a[*]}} {${b[*]}}"; f_partition "${a[*]}" "${b[*]}" ;;
        2) l=$(f_leader "${F_MEMBERS[@]}"); desc="isolate the leader (${l:-none})"
           [ -n "$l" ] && f_isolate "$l" ;;
        3) a=$(pick); b=$(pick); [ "$a" = "$b" ] && b=$((a % N + 1))
           desc="one-way cut $a -> $b"; f_hook "$a" "$b" partition ;;
        4) p=$((10 + RANDOM % 4 * 10)); desc="loss $p%"; f_loss "$p" ;;
        5) k=$((1 + RANDOM % ((N - 1) / 2))); killed=()
           while [ ${#killed[@]} -lt "$k" ]; do
               n=$(pick); [[ " ${killed[*]} " == *" $n "* ]] || killed+=("$n")
           done
           desc="kill -9 ${killed[*]}"; for n in "${killed[@]}"; do f_kill "$n"; done ;;
        6) n=$(pick); desc="SIGSTOP node $n"; f_pause "$n" ;;
        7) n=$(pick); d=$((50 + RANDOM % 4 * 50)); desc="delay node $n by $d+$d ms"
           f_delay "$n" "$d" "$d" ;;
        8) n=$(pick); desc="loss 20% and isolate node $n"; f_loss 20; f_isolate "$n" ;;
    esac
    f_log "step $step/$STEPS: $desc for ${hold}s"
    echo "step $step: $desc for ${hold}s" >>"$F_DIR/schedule"
    sleep "$hold"
    f_heal_all
    for n in "${killed[@]}"; do f_restart "$n"; done
    killed=()
    sleep 1
done
f_log "schedule done:"; sed 's/^/    /' "$F_DIR/schedule"
f_heal_all
if [ "$STORM" = 1 ]; then
    touch "$F_DIR/stop-storm"
    deadline=$((SECONDS + 60))
    while kill -0 "$storm_pid" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || f_fail "the last storm round did not end within 60 s of the heal"
        sleep 0.2
    done
    for h in "$F_DIR"/storm-*.jsonl; do
        [ -s "$h" ] || continue
        k=${h##*/storm-}; k=${k%.jsonl}
        summary=$(grep -E -m 1 -i 'acked' "$F_DIR/storm-$k.out" | tr -s ' ' ' ')
        if ! out=$("$BIN/skeinctl" check "$h" 2>&1); then
            echo "$out" | tail -n 30 >&2
            cp "$h" "/tmp/skein-fault-seed$SEED-storm-$k.jsonl"
            f_fail "storm round $k is not linearizable (history kept in /tmp/skein-fault-seed$SEED-storm-$k.jsonl)"
        fi
        f_ok "storm round $k linearizable: $(echo "$out" | tail -n 1) [$summary]"
    done
fi
f_log "raw workload: $(f_workload_stop w) acknowledged"
f_finish
