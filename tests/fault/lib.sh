# lib.sh - network-namespace fault harness for skein-node. Source it from a
# scenario script after setting BIN (the directory holding skein-node and
# skein-wire). Needs root, iproute2, iptables and nngcat; without them the
# scenario is skipped (exit 77, ctest SKIP_RETURN_CODE), never passed.
#
# Topology, one per run; every name carries the script's PID (skf<PID>-...)
# so parallel runs never collide:
#
#   skf<PID>-sw   the "switch": bridge br0, and one veth end per member
#   skf<PID>-cl   the client, 10.77.0.2/24: every request, status poll and
#                 workload of the test comes from here
#   skf<PID>-nI   node I (1..N), 10.77.0.(16+I)/24, skein-node on :7000
#                 (nng) and, with F_HTTP=1, :8000 (REST, for skeinctl)
#
# The veth pairs are created inside the switch namespace and their other end
# is moved straight into the member's namespace: nothing is created in the
# root namespace, and its firewall is never touched. Faults:
#   - partitions and packet loss: iptables rules inside the node namespaces
#     (chains SKF_PART and SKF_LOSS; the client is never cut off, so the test
#     can keep observing an isolated node);
#   - one-way cuts, delay and jitter (reordering): the node's transport fault
#     hook (AdminRequest.fault_inject; nodes run --enable-fault-injection);
#     this kernel has no tc netem;
#   - kill -9, restart, SIGSTOP/SIGCONT: signals to the node's PID.
# Every primitive checks that it took effect before it returns.
#
# f_cleanup (the EXIT trap, also on failure, ^C or the watchdog) kills every
# process started here by PID, deletes the namespaces (which takes their
# links, bridge and rules with them) and the temporary directory. Namespaces
# left by a run that was SIGKILLed (whose owner PID is gone) are swept at the
# start of the next run.
#
# Environment: F_KEEP=1 keeps the temporary directory (logs, observations);
# F_NODE_FLAGS adds flags to every node (e.g. --no-pre-vote); F_TIMEOUT is
# the watchdog in seconds (the scenario fails, and cleans up, before ctest's
# own TIMEOUT would kill it without cleanup).

set -uo pipefail

: "${BIN:?BIN must name the directory holding skein-node and skein-wire}"

F_SKIP=77
F_TAG="skf$$"
F_SW="$F_TAG-sw"
F_CL="$F_TAG-cl"
F_PORT=7000
F_HTTP_PORT=8000
F_HTTP=${F_HTTP:-0}    # 1: nodes also serve REST on :8000 (for skeinctl)
F_RPC_TIMEOUT=${F_RPC_TIMEOUT:-5} # seconds a request may take
F_DIR=""
F_N=0                  # highest node id created
F_NS=()                # namespaces created, deleted in reverse
F_BG=()                # background helpers (workloads, observer, watchdog)
declare -A F_PID=()    # node id -> skein-node pid (empty when down)
declare -A F_ARGS=()   # node id -> extra flags it was started with
declare -A F_PAUSED=() # node id -> 1 while SIGSTOPped
F_FLAGS=()             # flags given to every node of this cluster
F_T0=$SECONDS
F_NAME=$(basename "$0" .sh); F_NAME=${F_NAME#sc_}
F_CHECKS=0

# ---------------------------------------------------------------- output

f_now_ms() { local t; t=$EPOCHREALTIME; echo $(( ${t%.*} * 1000 + 10#${t#*.} / 1000 )); }
f_log() { echo "[$(date +%H:%M:%S.%3N) +$((SECONDS - F_T0))s] $*"; }
f_ok() { F_CHECKS=$((F_CHECKS + 1)); f_log "ok: $*"; }
# f_timing NAME VALUE: one measured figure, easy to grep from ctest output.
f_timing() { echo "TIMING $F_NAME $1=$2"; }

f_fail() {
    echo "FAIL [$F_NAME]: $*" >&2
    f_dump_logs >&2
    exit 1
}

f_skip() {
    echo "SKIP [$F_NAME]: $*"
    exit "$F_SKIP"
}

f_dump_logs() {
    local f
    [ -n "$F_DIR" ] || return 0
    for f in "$F_DIR"/node-*.log; do
        [ -f "$f" ] && { echo "--- tail $f"; tail -n 15 "$f"; }
    done
    [ -f "$F_DIR/obs" ] && { echo "--- last observations"; tail -n 12 "$F_DIR/obs"; }
    return 0
}

# ---------------------------------------------------------------- setup

# Skips (exit 77) unless this run can build the topology. Checks the tools,
# root, and that a namespace with iptables can really be made.
f_preflight() {
    local c probe="$F_TAG-probe"
    [ "$(id -u)" = 0 ] || f_skip "needs root (network namespaces, iptables); run as root"
    for c in ip iptables nngcat timeout ping; do
        command -v "$c" >/dev/null 2>&1 ||
            f_skip "'$c' is missing (Debian: iproute2 iptables nng-utils coreutils iputils-ping; deploy/install-deps.sh)"
    done
    [ -x "$BIN/skein-node" ] && [ -x "$BIN/skein-wire" ] && [ -x "$BIN/skein-probe" ] ||
        f_fail "skein-node, skein-wire or skein-probe not built in $BIN"
    f_sweep_stale
    ip netns add "$probe" 2>/dev/null ||
        f_skip "cannot create network namespaces here (ip netns add failed)"
    if ! ip netns exec "$probe" iptables -w -A INPUT -s 10.77.0.16/28 \
            -m statistic --mode random --probability 0.5 -j DROP 2>/dev/null; then
        ip netns del "$probe"
        f_skip "iptables (with -m statistic) does not work inside a namespace"
    fi
    ip netns del "$probe"
}

# Deletes namespaces of earlier runs whose owner (the PID in the name) is
# gone: a run killed by SIGKILL could not clean up after itself.
f_sweep_stale() {
    local ns owner p
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^skf[0-9]+-' || true); do
        owner=${ns#skf}; owner=${owner%%-*}
        kill -0 "$owner" 2>/dev/null && continue
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null && echo "swept stale namespace $ns"
    done
}

f_cleanup() {
    local rc=$? id p ns i
    trap - EXIT INT TERM
    for id in "${!F_PID[@]}"; do
        p=${F_PID[$id]}
        [ -n "$p" ] && { kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; }
    done
    for p in "${F_BG[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
    if [ -n "${F_WATCHDOG:-}" ]; then # and its sleep
        kill -9 "$F_WATCHDOG" 2>/dev/null
        [ -f "$F_DIR/watchdog.sleep" ] && kill "$(cat "$F_DIR/watchdog.sleep")" 2>/dev/null
    fi
    for ((i = ${#F_NS[@]} - 1; i >= 0; i--)); do
        ns=${F_NS[$i]}
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    done
    wait 2>/dev/null
    for ((i = ${#F_NS[@]} - 1; i >= 0; i--)); do
        ip netns del "${F_NS[$i]}" 2>/dev/null
    done
    if [ -n "$F_DIR" ]; then
        if [ "${F_KEEP:-0}" = 1 ]; then echo "kept $F_DIR"; else rm -rf "$F_DIR"; fi
    fi
    f_log "cleaned up ($rc); scenario time $((SECONDS - F_T0))s"
    exit "$rc"
}

f_ns() { echo "$F_TAG-n$1"; }
f_ip() { echo "10.77.0.$((16 + $1))"; }
f_url() { echo "tcp://$(f_ip "$1"):$F_PORT"; }
f_http() { echo "$(f_ip "$1"):$F_HTTP_PORT"; }
f_inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Adds namespace NS joined to the switch with ADDRESS on its eth0.
f_add_member() {
    local ns=$1 addr=$2 port="v${#F_NS[@]}"
    ip netns add "$ns" || f_fail "ip netns add $ns"
    F_NS+=("$ns")
    ip -n "$F_SW" link add "$port" type veth peer name eth0 netns "$ns" &&
        ip -n "$F_SW" link set "$port" master br0 up &&
        ip -n "$ns" addr add "$addr/24" dev eth0 &&
        ip -n "$ns" link set eth0 up &&
        ip -n "$ns" link set lo up || f_fail "cannot wire $ns to the switch"
}

# Creates the switch and client namespaces, the temporary directory, the
# cleanup trap and the watchdog. Called by f_start_cluster.
f_net_init() {
    f_preflight
    trap f_cleanup EXIT
    trap 'f_log "interrupted"; exit 1' INT TERM
    # Data on tmpfs when there is one: fsync is then nearly free, so a busy
    # disk on a shared machine does not turn every write into a second
    # (--durability strict is still the code path; kill -9 keeps the page
    # cache, so durability across a process crash is still tested).
    local root=${F_DATA_ROOT:-/dev/shm}
    [ -d "$root" ] && [ -w "$root" ] || root=/tmp
    F_DIR=$(mktemp -d "$root/skein-fault.XXXXXX") || f_fail "mktemp"
    : >"$F_DIR/obs"
    ip netns add "$F_SW" || f_fail "ip netns add $F_SW"
    F_NS+=("$F_SW")
    ip -n "$F_SW" link add br0 type bridge && ip -n "$F_SW" link set br0 up ||
        f_fail "bridge"
    f_add_member "$F_CL" 10.77.0.2
    if [ -n "${F_TIMEOUT:-}" ]; then
        # The sleep must not hold ctest's output pipe after the test ends.
        (sleep "$F_TIMEOUT" >/dev/null 2>&1 </dev/null &
         echo "$!" >"$F_DIR/watchdog.sleep"
         wait "$!"
         echo "WATCHDOG [$F_NAME]: still running after ${F_TIMEOUT}s" >&2
         kill -TERM $$) &
        F_WATCHDOG=$!
        disown "$!"
    fi
    f_log "namespaces $F_TAG-*; data in $F_DIR"
}

# Creates node I's namespace with its firewall chains (empty until a fault).
f_add_node_ns() {
    local i=$1 ns
    ns=$(f_ns "$i")
    f_add_member "$ns" "$(f_ip "$i")"
    f_inns "$ns" iptables -w -N SKF_PART && f_inns "$ns" iptables -w -N SKF_LOSS &&
        f_inns "$ns" iptables -w -A INPUT -j SKF_PART &&
        f_inns "$ns" iptables -w -A OUTPUT -j SKF_PART &&
        f_inns "$ns" iptables -w -A INPUT -j SKF_LOSS || f_fail "iptables chains in $ns"
    [ "$i" -gt "$F_N" ] && F_N=$i
    return 0
}

# f_peers_of I MEMBERS...: the --peers value for node I.
f_peers_of() {
    local i=$1 j out=""; shift
    for j in "$@"; do
        [ "$j" = "$i" ] && continue
        out="$out${out:+,}$j=$(f_url "$j")"
        [ "$F_HTTP" = 1 ] && out="$out@$(f_http "$j")"
    done
    echo "$out"
}

# f_start_node I PEERS [extra flags...]: starts skein-node I in its
# namespace (long-form flags); its log goes to $F_DIR/node-I.log.
f_start_node() {
    local i=$1 peers=$2; shift 2
    F_ARGS[$i]="$peers $*"
    [ "$F_HTTP" = 1 ] && set -- --http "$(f_http "$i")" --http-threads 16 "$@"
    # ip netns exec execs the node: $! is skein-node's own PID.
    ip netns exec "$(f_ns "$i")" "$BIN/skein-node" --node-id "$i" \
        --data-dir "$F_DIR/node-$i" --listen "$(f_url "$i")" --peers "$peers" \
        --enable-fault-injection --map-size 1073741824 "${F_FLAGS[@]}" $@ >>"$F_DIR/node-$i.log" 2>&1 &
    F_PID[$i]=$!
    disown "$!"
    echo "=== started pid ${F_PID[$i]} at $(date +%T.%3N)" >>"$F_DIR/node-$i.log"
}

# f_start_cluster N [flags for every node...]: N nodes, ids 1..N, all
# voters; returns when every node answers a status request. Also starts the
# observer (f_observe_start).
F_MEMBERS=()
f_start_cluster() {
    local n=$1 i; shift
    F_FLAGS=("$@")
    [ -n "${F_NODE_FLAGS:-}" ] && F_FLAGS+=($F_NODE_FLAGS)
    f_net_init
    F_MEMBERS=($(seq 1 "$n"))
    for i in "${F_MEMBERS[@]}"; do f_add_node_ns "$i"; done
    for i in "${F_MEMBERS[@]}"; do f_start_node "$i" "$(f_peers_of "$i" "${F_MEMBERS[@]}")"; done
    for i in "${F_MEMBERS[@]}"; do f_wait_up "$i" 15 || f_fail "node $i did not come up"; done
    f_log "cluster of $n up (flags: ${F_FLAGS[*]:-none})"
    f_observe_start
}

# ---------------------------------------------------------------- requests

# f_wire I [-v] OP ARGS...: one request to node I from the client namespace,
# decoded to text by skein-wire (empty output when the node did not answer).
f_wire() {
    local i=$1 v=""; shift
    [ "${1:-}" = -v ] && { v=-v; shift; }
    "$BIN/skein-wire" encode "$@" |
        ip netns exec "$F_CL" timeout $((F_RPC_TIMEOUT + 2)) nngcat --req \
            --dial "$(f_url "$i")" --file - --raw --recv-timeout "$F_RPC_TIMEOUT" 2>/dev/null |
        "$BIN/skein-wire" decode $v 2>/dev/null | grep -v '^reply body 0$'
    return 0
}

# f_kv LINE NAME: the value of NAME=... in LINE (no fork).
f_kv() {
    local re="(^| )$2=([^ ]*)"
    [[ $1 =~ $re ]] && echo "${BASH_REMATCH[2]}"
}

# f_status I: node I's status line ("" if it did not answer); every answer is
# recorded in $F_DIR/obs for the election-safety check.
f_status() {
    local line
    line=$(f_poll "$1")
    line=${line#"$1"}
    echo "${line# }"
}

# f_field I NAME: one field of node I's status.
f_field() { f_kv "$(f_status "$1")" "$2"; }

f_wait_up() {
    local i=$1 deadline=$((SECONDS + ${2:-10}))
    while [ $SECONDS -lt $deadline ]; do
        [ -n "$(f_status "$i")" ] && return 0
        sleep 0.1
    done
    return 1
}

# f_poll IDS...: the status of every listed node, asked in parallel (one
# skein-probe process; a paused or dead node costs one timeout,
# F_STATUS_TIMEOUT s, default 2); prints "ID LINE" lines (LINE empty when
# the node did not answer) and records every answer in $F_DIR/obs.
f_poll() {
    local i targets=()
    for i in "$@"; do targets+=("$i=$(f_url "$i")"); done
    ip netns exec "$F_CL" "$BIN/skein-probe" status -t $((${F_STATUS_TIMEOUT:-2} * 1000)) \
        -o "$F_DIR/obs" "${targets[@]}"
}

# f_leader IDS...: the node among IDS that reports itself leader in the
# highest term, or "" (a stale leader in an older term loses).
f_leader() {
    local best="" bterm=-1 id line role term
    while read -r id line; do
        role=$(f_kv "$line" role); term=$(f_kv "$line" term)
        if [ "$role" = 3 ] && [ "$term" -gt "$bterm" ]; then best=$id; bterm=$term; fi
    done < <(f_poll "$@")
    echo "$best"
}

# f_wait_leader SECS IDS...: waits until one of IDS leads and every other
# listed node that answers agrees (same leader id and term); prints its id.
f_wait_leader() {
    local secs=$1; shift
    local deadline=$((SECONDS + secs)) id line lead term agree cand cterm
    while [ $SECONDS -lt $deadline ]; do
        cand=""; cterm=""; agree=1
        while read -r id line; do
            [ -z "$line" ] && continue
            if [ "$(f_kv "$line" role)" = 3 ]; then
                [ -n "$cand" ] && { agree=0; break; }
                cand=$id; cterm=$(f_kv "$line" term)
            fi
        done < <(f_poll "$@")
        if [ "$agree" = 1 ] && [ -n "$cand" ]; then
            while read -r id line; do
                [ -z "$line" ] && continue
                lead=$(f_kv "$line" leader); term=$(f_kv "$line" term)
                if [ "$lead" != "$cand" ] || [ "$term" != "$cterm" ]; then agree=0; fi
            done < <(f_poll "$@")
            [ "$agree" = 1 ] && { echo "$cand"; return 0; }
        fi
        sleep 0.05
    done
    return 1
}

# f_write I KEY VALUE [REQUEST_ID]: a create through node I (a follower
# forwards it). Prints the new entry's id when acknowledged; returns 1 else.
f_write() {
    local out
    out=$(f_wire "$@")
    [[ $out == status=OK* ]] || return 1
    f_kv "$(echo "$out" | grep '^entry ')" id
}

# f_write_n I N PREFIX: N acknowledged creates through node I (each retried
# up to 10 s with the same request id); fails the test if one never is.
f_write_n() {
    local i=$1 n=$2 prefix=$3 k id deadline
    for k in $(seq 1 "$n"); do
        deadline=$((SECONDS + 10))
        until id=$(f_write "$i" create "$prefix-$k" "v$k" "$prefix-$k-$$"); do
            [ $SECONDS -ge $deadline ] && f_fail "write $prefix-$k through node $i never acknowledged"
            sleep 0.2
        done
        echo "ack $id $prefix-$k" >>"$F_DIR/acked"
    done
}

# ---------------------------------------------------------------- observer

# The observer: skein-probe polls every member's status every 100 ms in the
# background (in the client namespace), so that the election-safety check
# also sees leaders that come and go between the test's own polls. The
# members are re-read from $F_DIR/members (f_members_changed) every round.
f_observe_start() {
    f_members_changed
    ip netns exec "$F_CL" "$BIN/skein-probe" observe -i 100 -t 1000 \
        -o "$F_DIR/obs" -m "$F_DIR/members" -s "$F_DIR/stop-observer" &
    F_BG+=("$!")
    disown "$!"
}
f_members_changed() {
    local i
    for i in "${F_MEMBERS[@]}"; do echo "$i=$(f_url "$i")"; done >"$F_DIR/members.new"
    mv "$F_DIR/members.new" "$F_DIR/members"
}

# f_obs_first T0_MS CONDITION: from the observations, the first status
# sample taken after T0_MS for which the awk CONDITION holds (fields: id,
# role, term, leader, commit, applied); prints "ID MS_AFTER_T0" or nothing.
f_obs_first() {
    awk -v t0="$1" '
        { id = ""; role = ""; term = 0; leader = ""; commit = 0; applied = 0
          for (i = 2; i <= NF; i++) { split($i, kv, "=")
              if (kv[1] == "node_id") id = kv[2]
              else if (kv[1] == "role") role = kv[2]
              else if (kv[1] == "term") term = kv[2] + 0
              else if (kv[1] == "leader") leader = kv[2]
              else if (kv[1] == "commit") commit = kv[2] + 0
              else if (kv[1] == "applied") applied = kv[2] + 0 }
          if ($1 >= t0 && ('"$2"') && (best == "" || $1 < best)) { best = $1; who = id } }
        END { if (best != "") print who, best - t0 }' "$F_DIR/obs"
}
# f_first_leader_since T0_MS OLD_TERM IDS...: when one of IDS was first seen
# leading a term above OLD_TERM; prints "ID MS_AFTER_T0".
f_first_leader_since() {
    local t0=$1 old=$2; shift 2
    f_obs_first "$t0" "role == 3 && term > $old && index(\" $* \", \" \" id \" \")"
}

# At most one leader per term, over every status ever observed.
f_check_election_safety() {
    local bad
    bad=$(awk '{ role = ""; term = ""; id = "";
                 for (i = 2; i <= NF; i++) { split($i, kv, "=");
                     if (kv[1] == "role") role = kv[2];
                     if (kv[1] == "term") term = kv[2];
                     if (kv[1] == "node_id") id = kv[2]; }
                 if (role == 3) { if ((term in lead) && lead[term] != id)
                                      print "term " term ": leaders " lead[term] " and " id;
                                  lead[term] = id } }' "$F_DIR/obs" | sort -u)
    [ -z "$bad" ] || f_fail "two leaders in one term: $bad"
    f_ok "at most one leader per term ($(wc -l <"$F_DIR/obs") status samples, $(grep -c ' role=3 ' "$F_DIR/obs") leader samples, $(awk '/ role=3 /{for(i=2;i<=NF;i++) if ($i ~ /^term=/) t[$i]=1} END{print length(t)}' "$F_DIR/obs") leader terms)"
}

# ---------------------------------------------------------------- workload

# f_workload_start NAME IDS...: background clients (F_WL_WORKERS, default
# 2, each one request at a time) creating entries through the listed nodes
# in turn. Acknowledged creates go to $F_DIR/acked ("ack ID KEY"), every
# attempt to $F_DIR/wl-NAME.log as "START_MS END_MS node=I key=K status=S".
f_workload_start() {
    local name=$1 w; shift
    rm -f "$F_DIR/stop-wl-$name"
    : >"$F_DIR/wl-$name.pids"
    for w in $(seq 1 "${F_WL_WORKERS:-2}"); do
        f_workload_worker "$name" "$w" "$@" &
        echo "$!" >>"$F_DIR/wl-$name.pids"
        F_BG+=("$!")
        disown "$!"
    done
}
f_workload_worker() {
    local name=$1 w=$2 seq=0 node out st id t0 key; shift 2
    local nodes=("$@")
    while [ ! -e "$F_DIR/stop-wl-$name" ]; do
        seq=$((seq + 1))
        node=${nodes[$(((seq + w) % ${#nodes[@]}))]}
        key="$name-$w-$seq"
        t0=$(f_now_ms)
        out=$(F_RPC_TIMEOUT=3 f_wire "$node" create "$key" "v$seq" "$key-$$")
        st=$(f_kv "$(echo "$out" | sed -n 1p)" status)
        if [ "$st" = OK ]; then
            id=$(f_kv "$(echo "$out" | grep '^entry ')" id)
            echo "ack $id $key" >>"$F_DIR/acked"
        fi
        echo "$t0 $(f_now_ms) node=$node key=$key status=${st:-TIMEOUT}" >>"$F_DIR/wl-$name.log"
        [ "$st" = OK ] || sleep 0.05
    done
}

# f_wait_acks NAME SINCE_MS COUNT SECS: waits until COUNT writes of workload
# NAME that started at or after SINCE_MS are acknowledged; returns 1 if not
# within SECS. Prints how many there were.
f_wait_acks() {
    local deadline=$((SECONDS + $4)) n=0
    while :; do
        n=$(awk -v a="$2" '$1 >= a && /status=OK/' "$F_DIR/wl-$1.log" 2>/dev/null | wc -l)
        [ "$n" -ge "$3" ] && { echo "$n"; return 0; }
        [ $SECONDS -lt $deadline ] || { echo "$n"; return 1; }
        sleep 0.1
    done
}

# f_workload_stop NAME: stops it and prints "acked/attempted".
f_workload_stop() {
    local name=$1 pid
    touch "$F_DIR/stop-wl-$name"
    for pid in $(cat "$F_DIR/wl-$name.pids"); do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    done
    echo "$(grep -c 'status=OK' "$F_DIR/wl-$name.log" 2>/dev/null)/$(wc -l <"$F_DIR/wl-$name.log" 2>/dev/null)"
}

# f_acks_between NAME FROM_MS TO_MS: acknowledged writes of workload NAME
# that started and ended within the window.
f_acks_between() {
    awk -v a="$2" -v b="$3" '$1 >= a && $2 <= b && /status=OK/' "$F_DIR/wl-$1.log" | wc -l
}

# ---------------------------------------------------------------- checks

# f_wait_converged SECS IDS...: same applied index, count and hash on every
# listed node; prints "applied=.. count=.. hash=..".
f_wait_converged() {
    local secs=$1; shift
    local deadline=$((SECONDS + secs)) id line first cur ok
    while [ $SECONDS -lt $deadline ]; do
        ok=1; first=""
        while read -r id line; do
            cur="applied=$(f_kv "$line" applied) count=$(f_kv "$line" count) hash=$(f_kv "$line" hash)"
            [ -z "$line" ] && { ok=0; break; }
            [ -z "$first" ] && first=$cur
            [ "$cur" = "$first" ] || { ok=0; break; }
        done < <(f_poll "$@")
        [ "$ok" = 1 ] && { echo "$first"; return 0; }
        sleep 0.2
    done
    f_poll "$@" >&2
    return 1
}

# f_read I ID: a linearizable get through node I, retried for up to 10 s
# while the answer is NO_QUORUM, NOT_LEADER or none (a leader change).
f_read() {
    local deadline=$((SECONDS + 10)) out tries=0 first=""
    while :; do
        out=$(f_wire "$1" get "$2")
        case "$out" in status=NO_QUORUM* | status=NOT_LEADER* | "") ;; *) break ;; esac
        tries=$((tries + 1)); [ -n "$first" ] || first="${out:-no answer}"
        [ $SECONDS -lt $deadline ] || break
        sleep 0.2
    done
    [ "$tries" = 0 ] || f_log "note: read of $2 from node $1 answered after $tries retries (first: $(echo "$first" | tr '\n' ' '))" >&2
    echo "$out"
}

# f_dump I: every entry on node I ("ID KEY VALUE" lines, paged, linearizable).
f_dump() {
    local i=$1 after="" page last n
    local deadline=$((SECONDS + 15))
    while :; do
        page=$(F_RPC_TIMEOUT=10 f_wire "$i" list 1000 $after)
        if [[ $page != status=OK* ]]; then
            [ $SECONDS -lt $deadline ] || { echo "list failed: $page"; return 1; }
            sleep 0.2; continue
        fi
        echo "$page" | sed -n 's/^entry id=\([^ ]*\) key=\([^ ]*\) value=\([^ ]*\) .*/\1 \2 \3/p'
        echo "$page" | grep -q '^truncated=1' || return 0
        last=$(echo "$page" | grep '^entry ' | tail -n 1)
        after=$(f_kv "$last" id)
        [ -n "$after" ] || return 0
    done
}

# f_check_acked I: every acknowledged create is in node I's list with its
# key, and a sample of them reads back by id (linearizable get).
f_check_acked() {
    local i=$1 n missing dump sample id key out
    [ -s "$F_DIR/acked" ] || { f_log "no acknowledged writes to check"; return 0; }
    n=$(wc -l <"$F_DIR/acked")
    dump=$(f_dump "$i") || f_fail "cannot list node $i's entries"
    missing=$(awk 'NR == FNR { have[$1 " " $2] = 1; next }
                   !(($2 " " $3) in have) { print $2 " " $3 }' \
                  <(echo "$dump") "$F_DIR/acked" | sed -n 1,5p)
    [ -z "$missing" ] || f_fail "acknowledged writes lost on node $i (first: $missing)"
    sample=$(awk 'NR % 7 == 1 && ++n <= 20' "$F_DIR/acked")
    while read -r _ id key; do
        out=$(f_read "$i" "$id")
        [[ $out == status=OK* ]] && [ "$(f_kv "$(echo "$out" | grep '^entry ')" key)" = "$key" ] ||
            f_fail "acknowledged write $id ($key) does not read back from node $i: $out"
    done <<<"$sample"
    f_ok "all $n acknowledged writes present on node $i ($(echo "$dump" | wc -l) entries), $(echo "$sample" | wc -l) read back by id"
}

# f_finish [IDS]: heals every fault, waits for convergence (bounded), checks
# acknowledged writes and election safety, prints the scenario's time.
f_finish() {
    local ids=("$@") t0 state leader
    [ $# -gt 0 ] || ids=("${F_MEMBERS[@]}")
    F_FORCE_HEAL=1 f_heal_all
    t0=$(f_now_ms)
    leader=$(f_wait_leader 15 "${ids[@]}") || f_fail "no single leader after the final heal"
    state=$(f_wait_converged 30 "${ids[@]}") || f_fail "nodes ${ids[*]} did not converge within 30 s of the final heal"
    f_timing converge_after_heal_ms $(($(f_now_ms) - t0))
    f_ok "converged after heal: leader $leader, $state"
    f_check_acked "$leader"
    touch "$F_DIR/stop-observer"
    f_check_election_safety
    f_timing total_s $((SECONDS - F_T0))
    f_log "PASS $F_NAME ($F_CHECKS checks)"
}

# ---------------------------------------------------------------- faults

# f_link_is up|down A B: whether node A reaches node B (ICMP echo, so both
# directions count). "down" waits 0.5 s for a reply that must not come; an
# "up" link gets a second, longer chance on a busy machine.
f_link_is() {
    local want=$1 a=$2 b=$3 ns ip
    ns=$(f_ns "$a"); ip=$(f_ip "$b")
    if [ "$want" = down ]; then
        ! ip netns exec "$ns" ping -c 1 -W 0.5 -q "$ip" >/dev/null 2>&1
    else
        ip netns exec "$ns" ping -c 1 -W 1 -q "$ip" >/dev/null 2>&1 ||
            ip netns exec "$ns" ping -c 1 -W 3 -q "$ip" >"$F_DIR/ping.$a.$b" 2>&1 ||
            { cat "$F_DIR/ping.$a.$b" >&2; return 1; }
    fi
}

# f_check_links: the ping matrix matches $F_DIR/part (one set per line; no
# file = fully connected). All pairs are pinged in parallel.
f_check_links() {
    local a b want pids=() bad=0 p
    local -A set=()
    for a in "${F_MEMBERS[@]}"; do set[$a]=$(f_set_of "$a"); done
    for a in "${F_MEMBERS[@]}"; do
        for b in "${F_MEMBERS[@]}"; do
            [ "$a" = "$b" ] && continue
            want=down; [ "${set[$a]}" = "${set[$b]}" ] && want=up
            { f_link_is "$want" "$a" "$b" || { echo "link $a -> $b is not $want" >&2; exit 1; }; } &
            pids+=("$!")
        done
    done
    for p in "${pids[@]}"; do wait "$p" || bad=1; done
    return $bad
}
f_set_of() {
    [ -s "$F_DIR/part" ] || { echo 0; return; }
    awk -v n="$1" '{ for (i = 1; i <= NF; i++) if ($i == n) { print NR; exit } }' "$F_DIR/part"
}

# f_partition "SET" "SET" ...: cuts every link between nodes of different
# sets, both ways (iptables DROP in each node's SKF_PART chain). Every member
# must be in one set. F_CUT_MS is set to the time the last rule was in
# place. Asserts with pings that exactly the cross-set links are down and
# the others up.
f_partition() {
    local i pids=() bad=0 p
    f_heal_partition quiet
    printf '%s\n' "$@" >"$F_DIR/part"
    for i in "${F_MEMBERS[@]}"; do
        [ -n "$(f_set_of "$i")" ] || f_fail "f_partition: node $i is in no set"
    done
    for i in "${F_MEMBERS[@]}"; do
        f_cut_node "$i" & pids+=("$!")
    done
    for p in "${pids[@]}"; do wait "$p" || bad=1; done
    [ "$bad" = 0 ] || f_fail "iptables failed while partitioning"
    F_CUT_MS=$(f_now_ms)
    F_DIRTY_PART=1
    f_check_links || f_fail "partition $(printf '{%s} ' "$@")did not take effect"
    f_ok "partition $(printf '{%s} ' "$@")in place (ping matrix checked)"
}
# Node I drops everything from and to nodes outside its set, in one
# iptables-restore transaction.
f_cut_node() {
    local i=$1 j
    local -A set=()
    for j in "${F_MEMBERS[@]}"; do set[$j]=$(f_set_of "$j"); done
    {
        echo "*filter"
        for j in "${F_MEMBERS[@]}"; do
            [ "${set[$j]}" = "${set[$i]}" ] && continue
            echo "-A SKF_PART -s $(f_ip "$j") -j DROP"
            echo "-A SKF_PART -d $(f_ip "$j") -j DROP"
        done
        echo "COMMIT"
    } | f_inns "$(f_ns "$i")" iptables-restore -w --noflush
}

# f_isolate I: node I alone on one side, every other member on the other.
f_isolate() {
    local others=() j
    for j in "${F_MEMBERS[@]}"; do [ "$j" = "$1" ] || others+=("$j"); done
    f_partition "$1" "${others[*]}"
}

f_heal_partition() {
    local i
    for i in "${F_MEMBERS[@]}"; do
        f_inns "$(f_ns "$i")" iptables -w -F SKF_PART || f_fail "iptables -F in node $i"
    done
    rm -f "$F_DIR/part"
    F_DIRTY_PART=0
    [ "${1:-}" = quiet ] && return 0
    f_check_links || f_fail "links still down after heal"
    f_ok "partition healed (ping matrix checked)"
}

# f_assert_frozen "ISOLATED IDS" "MAJORITY IDS": the isolated nodes' commit
# index stays put while the majority commits 5 new writes.
f_assert_frozen() {
    local iso=($1) maj=($2) i before=() after leader
    for i in "${iso[@]}"; do before+=("$(f_field "$i" commit)"); done
    f_write_n "${maj[0]}" 5 "frozen$SECONDS"
    sleep 0.5
    leader=$(f_leader "${maj[@]}")
    [ -n "$leader" ] || f_fail "no leader among ${maj[*]} while checking the cut"
    local k=0
    for i in "${iso[@]}"; do
        after=$(f_field "$i" commit)
        [ "$after" = "${before[$k]}" ] || f_fail "isolated node $i's commit moved ${before[$k]} -> $after"
        k=$((k + 1))
    done
    f_ok "commit index frozen on ${iso[*]} while ${maj[*]} committed 5 writes (leader $leader at commit $(f_field "$leader" commit))"
}

# f_hook I ARGS...: the transport fault hook of node I (see skein-wire
# "fault"); fails the test unless the node accepts it.
f_hook() {
    local i=$1 out; shift
    F_DIRTY_HOOK=1
    out=$(f_wire "$i" fault "$@")
    [[ $out == status=OK* ]] || f_fail "node $i refused fault $*: ${out:-no answer}"
}

# f_cut_oneway A B: messages A sends to B are lost; B still reaches A. If A
# leads, asserts that B's commit index stops while the others' advances.
f_cut_oneway() {
    local a=$1 b=$2 rest=() j
    f_hook "$a" "$b" partition
    f_ok "one-way cut $a -> $b installed in node $a's transport"
    if [ "$(f_field "$a" role)" = 3 ]; then
        for j in "${F_MEMBERS[@]}"; do [ "$j" = "$b" ] || rest+=("$j"); done
        f_assert_frozen "$b" "${rest[*]}"
    fi
}
f_uncut_oneway() { f_hook "$1" "$2" drop=0 delay=0 jitter=0; f_ok "one-way cut $1 -> $2 removed"; }

# f_loss PERCENT: random loss on node-to-node traffic (each node drops
# PERCENT% of the TCP packets it receives from other nodes; the client, and
# the ICMP probes of the link checks, are spared).
# Asserts from the rule counters that packets really are being dropped at
# about that rate.
f_loss() {
    local pct=$1 i ns p
    F_DIRTY_LOSS=1
    p=$(awk -v p="$pct" 'BEGIN { printf "%.2f", p / 100 }')
    for i in "${F_MEMBERS[@]}"; do
        ns=$(f_ns "$i")
        f_inns "$ns" iptables -w -F SKF_LOSS &&
            f_inns "$ns" iptables -w -A SKF_LOSS -s 10.77.0.16/28 -p tcp -j RETURN -m statistic --mode random --probability "$(awk -v p="$p" 'BEGIN { printf "%.4f", 1 - p }')" &&
            f_inns "$ns" iptables -w -A SKF_LOSS -s 10.77.0.16/28 -p tcp -j DROP ||
            f_fail "loss rule in $ns"
    done
    sleep 2
    local seen dropped
    read -r seen dropped < <(f_loss_counters)
    [ "$seen" -ge 50 ] || f_fail "loss: only $seen node-to-node packets seen in 2 s"
    awk -v s="$seen" -v d="$dropped" -v p="$p" 'BEGIN { r = d / s; exit !(r > p / 2 && r < p * 1.5 + 0.05) }' ||
        f_fail "loss: dropped $dropped of $seen packets, not about $pct%"
    f_ok "loss $pct% in place: dropped $dropped of $seen node-to-node packets in 2 s"
}
# Prints "SEEN DROPPED" summed over the nodes' SKF_LOSS chains.
f_loss_counters() {
    local i ns
    for i in "${F_MEMBERS[@]}"; do
        f_inns "$(f_ns "$i")" iptables -w -L SKF_LOSS -v -x -n 2>/dev/null
    done | awk '$3 == "RETURN" { ret += $1 } $3 == "DROP" { drop += $1 }
                END { print ret + drop, drop + 0 }'
}
f_heal_loss() {
    local i
    for i in "${F_MEMBERS[@]}"; do f_inns "$(f_ns "$i")" iptables -w -F SKF_LOSS; done
    F_DIRTY_LOSS=0
}

# f_delay I MS [JITTER_MS]: node I becomes slow: every message it sends and
# every message sent to it waits MS (+ up to JITTER_MS, which reorders) in
# the senders' transports. Asserts that a write reaches I no sooner than MS
# after it was acknowledged by the leader.
f_delay() {
    local i=$1 ms=$2 jit=${3:-0} j leader id t0 seen lag
    f_hook "$i" all "delay=$ms" "jitter=$jit"
    for j in "${F_MEMBERS[@]}"; do
        [ "$j" = "$i" ] || [ -z "${F_PID[$j]:-}" ] || f_hook "$j" "$i" "delay=$ms" "jitter=$jit"
    done
    leader=$(f_leader "${F_MEMBERS[@]}")
    [ -n "$leader" ] && [ "$leader" != "$i" ] || { f_ok "delay ${ms}+${jit} ms around node $i installed"; return 0; }
    id=$(f_write "$leader" create "delayprobe-$SECONDS" x "delayprobe-$SECONDS-$$") ||
        f_fail "delay probe write failed"
    t0=$(f_now_ms); seen=""
    while [ $(($(f_now_ms) - t0)) -lt 10000 ]; do
        [[ $(f_wire "$i" get "$id" stale) == status=OK* ]] && { seen=$(f_now_ms); break; }
    done
    [ -n "$seen" ] || f_fail "delay probe write never reached node $i"
    lag=$((seen - t0))
    [ "$lag" -ge "$ms" ] || f_fail "delay did not take effect: node $i saw a write ${lag} ms after its ack (< $ms)"
    f_ok "delay ${ms}+${jit} ms around node $i: a write became visible there ${lag} ms after its ack"
}

# Clears every node's transport fault hook.
f_heal_hooks() {
    local i
    for i in "${F_MEMBERS[@]}"; do
        [ -n "${F_PID[$i]:-}" ] && [ -z "${F_PAUSED[$i]:-}" ] && f_hook "$i" all clear
    done
    F_DIRTY_HOOK=0
}

# f_kill I: kill -9; asserts the process is gone and the node unreachable.
f_kill() {
    local i=$1 p=${F_PID[$1]}
    kill -9 "$p" 2>/dev/null
    local t; for t in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.02; done
    kill -0 "$p" 2>/dev/null && f_fail "node $i (pid $p) survived kill -9"
    F_PID[$i]=""
    F_PAUSED[$i]=""
    [ -z "$(F_STATUS_TIMEOUT=1 f_status "$i")" ] || f_fail "node $i still answers after kill -9"
    f_ok "node $i killed (-9)"
}

# f_restart I: starts node I again with the same flags and data directory;
# asserts it answers within 15 s.
f_restart() {
    local i=$1 args
    [ -z "${F_PID[$i]:-}" ] || f_fail "f_restart: node $i is running"
    args=${F_ARGS[$i]}
    f_start_node "$i" $args
    f_wait_up "$i" 15 || f_fail "node $i did not answer after restart"
    f_ok "node $i restarted (pid ${F_PID[$i]})"
}

# f_pause I / f_resume I: SIGSTOP / SIGCONT; each asserts the process state
# (T = stopped) and that the node stops / resumes answering.
f_pause() {
    local i=$1 p=${F_PID[$1]}
    kill -STOP "$p" || f_fail "SIGSTOP node $i"
    local t; for t in $(seq 1 50); do [ "$(f_proc_state "$p")" = T ] && break; sleep 0.02; done
    [ "$(f_proc_state "$p")" = T ] || f_fail "node $i not stopped (state $(f_proc_state "$p"))"
    F_PAUSED[$i]=1
    [ -z "$(F_STATUS_TIMEOUT=1 f_status "$i")" ] || f_fail "node $i answers while stopped"
    f_ok "node $i paused (SIGSTOP)"
}
f_resume() {
    local i=$1 p=${F_PID[$1]}
    kill -CONT "$p" || f_fail "SIGCONT node $i"
    F_PAUSED[$i]=""
    [ "$(f_proc_state "$p")" != T ] || sleep 0.1
    [ "$(f_proc_state "$p")" != T ] || f_fail "node $i still stopped after SIGCONT"
    f_wait_up "$i" 10 || f_fail "node $i does not answer after SIGCONT"
    f_ok "node $i resumed (SIGCONT)"
}
f_proc_state() { awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null; }

# Removes every fault: partitions, loss, hooks; resumes paused nodes.
# (Only what was injected since the last heal is undone; F_FORCE_HEAL=1
# undoes everything.)
f_heal_all() {
    local i force=${F_FORCE_HEAL:-0}
    for i in "${!F_PAUSED[@]}"; do [ -n "${F_PAUSED[$i]}" ] && f_resume "$i"; done
    if [ "$force" = 1 ] || [ "${F_DIRTY_PART:-0}" = 1 ]; then
        f_heal_partition quiet
        f_check_links || f_fail "links still down after the heal"
    fi
    if [ "$force" = 1 ] || [ "${F_DIRTY_LOSS:-0}" = 1 ]; then f_heal_loss; fi
    if [ "$force" = 1 ] || [ "${F_DIRTY_HOOK:-0}" = 1 ]; then f_heal_hooks; fi
    return 0
}
