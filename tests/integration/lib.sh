# lib.sh - shared helpers for integration tests that run real skein-node
# processes on loopback. Source it; set BIN to the directory of binaries.
#
# Every process a test starts is recorded and killed by the EXIT trap, and
# the temporary directory is removed, also when the test fails.

set -euo pipefail

: "${BIN:?BIN must name the directory holding skein-node}"
T_DIR=$(mktemp -d /tmp/skein-it.XXXXXX)
T_PIDS=()
T_NODES=0
T_BASE=0
T_EXTRA_FLAGS=()

t_cleanup() {
    local pid
    for pid in "${T_PIDS[@]:-}"; do
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${T_KEEP:-0}" = 1 ]; then
        echo "kept $T_DIR"
    else
        rm -rf "$T_DIR"
    fi
}
trap t_cleanup EXIT
# A command that fails outside a test (set -e) says where, instead of
# ending the script silently.
trap 'echo "FAIL: unexpected error at line $LINENO: $BASH_COMMAND" >&2' ERR

t_log() { echo "[$(date +%H:%M:%S.%3N)] $*"; }
t_fail() {
    echo "FAIL: $*" >&2
    local f
    for f in "$T_DIR"/node-*.log; do
        [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; } >&2
    done
    exit 1
}

# A base port whose HTTP (base..base+n) and nng (base+1000..) ports are free.
t_pick_base() {
    local n=$1 tries base p ok
    for tries in $(seq 1 50); do
        # Below the kernel's ephemeral range (32768+), where an outgoing
        # connection could hold a port a node wants to bind.
        base=$(( 12000 + (RANDOM * 7 + $$) % 18000 ))
        ok=1
        for p in $(seq "$base" $((base + n))) $(seq $((base + 1000)) $((base + 1000 + n))); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then ok=0; break; fi
        done
        [ "$ok" = 1 ] && { echo "$base"; return 0; }
    done
    return 1
}

t_http_port() { echo $((T_BASE + $1)); }
t_nng_url() { echo "tcp://127.0.0.1:$((T_BASE + 1000 + $1))"; }

# t_start_node ID [extra flags...]: seed-form node ID of the cluster.
t_start_node() {
    local id=$1; shift
    local peers="" j
    for j in $(seq 0 $((T_NODES - 1))); do
        [ "$j" = "$id" ] && continue
        peers="$peers${peers:+,}$((T_BASE + j))"
    done
    SKEIN_DATA="$T_DIR" "$BIN/skein-node" --node-id "$id" \
        --port "$((T_BASE + id))" --peers "$peers" \
        "${T_EXTRA_FLAGS[@]}" "$@" >>"$T_DIR/node-$id.log" 2>&1 &
    echo $! >"$T_DIR/node-$id.pid"
    T_PIDS+=("$!")
    disown "$!" # no "Killed" job notices; t_cleanup kills it by pid
}

t_kill_node() { kill -9 "$(cat "$T_DIR/node-$1.pid")" 2>/dev/null || true; }
t_term_node() {
    local pid; pid=$(cat "$T_DIR/node-$1.pid")
    kill -TERM "$pid" 2>/dev/null || true
    local i; for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
    return 1
}

# t_start_cluster N [extra flags...]
t_start_cluster() {
    T_NODES=$1; shift
    T_EXTRA_FLAGS=("$@")
    T_BASE=$(t_pick_base "$T_NODES") || t_fail "no free ports"
    local i; for i in $(seq 0 $((T_NODES - 1))); do t_start_node "$i"; done
}

# t_wire ID ARGS...: one request to node ID over raw nng (nngcat), decoded.
t_wire() {
    local id=$1; shift
    "$BIN/skein-wire" encode "$@" >"$T_DIR/req.bin"
    timeout 10 nngcat --req --dial "$(t_nng_url "$id")" \
        --file "$T_DIR/req.bin" --raw --recv-timeout 8 2>/dev/null |
        "$BIN/skein-wire" decode
}

# t_status_field ID FIELD: one field of the node's status line.
t_status_field() {
    t_wire "$1" status | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# t_leader: id of the node that reports itself leader (role=3), or "".
t_leader() {
    local i
    for i in $(seq 0 $((T_NODES - 1))); do
        if [ "$(t_status_field "$i" role 2>/dev/null)" = 3 ]; then echo "$i"; return; fi
    done
}

# t_wait_leader [seconds]: waits until exactly one leader answers.
t_wait_leader() {
    local deadline=$((SECONDS + ${1:-10})) l
    while [ $SECONDS -lt $deadline ]; do
        l=$(t_leader)
        [ -n "$l" ] && { echo "$l"; return 0; }
        sleep 0.1
    done
    return 1
}

# t_wait_converged IDS... : same applied index and hash on every listed node.
t_wait_converged() {
    local deadline=$((SECONDS + 20)) i first line ok
    while [ $SECONDS -lt $deadline ]; do
        ok=1; first=""
        for i in "$@"; do
            line=$(t_wire "$i" status 2>/dev/null | tr ' ' '\n' |
                   grep -E '^(applied|hash|count)=' | tr '\n' ' ') || true
            [ -z "$line" ] && { ok=0; break; }
            [ -z "$first" ] && first=$line
            [ "$line" = "$first" ] || { ok=0; break; }
        done
        [ "$ok" = 1 ] && { echo "$first"; return 0; }
        sleep 0.2
    done
    return 1
}

# t_http ID METHOD PATH [BODY] [curl args...]: prints "STATUS BODY".
t_http() {
    local id=$1 method=$2 path=$3 body=${4:-}
    shift 3; [ $# -gt 0 ] && shift
    local args=(-s -m 15 -o "$T_DIR/body" -w '%{http_code}' -X "$method"
                -H 'Content-Type: application/json' "$@")
    [ -n "$body" ] && args+=(--data-binary "$body")
    local code
    code=$(curl "${args[@]}" "http://127.0.0.1:$(t_http_port "$id")$path") || true
    echo "$code $(cat "$T_DIR/body" 2>/dev/null)"
}

# t_create_retrying ID BODY KEY: POSTs BODY to node ID's /api/kv with
# Idempotency-Key KEY until it is answered 201 (15 s at most); prints the
# last "STATUS BODY".
t_create_retrying() {
    local deadline=$((SECONDS + 15)) r=""
    while [ $SECONDS -lt $deadline ]; do
        r=$(t_http "$1" POST /api/kv "$2" -H "Idempotency-Key: $3")
        [ "${r%% *}" = 201 ] && break
        sleep 0.2
    done
    echo "$r"
}

# t_json FIELD: the first string or number value of "FIELD" in stdin.
t_json() {
    sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" | sed -n 1p
}

# t_http_leader: the node id whose /status says is_leader, or "".
t_http_leader() {
    local i
    for i in $(seq 0 $((T_NODES - 1))); do
        if t_http "$i" GET /status | grep '"is_leader":true' >/dev/null; then
            echo "$i"; return
        fi
    done
}

t_wait_http_leader() {
    local deadline=$((SECONDS + ${1:-10})) l
    while [ $SECONDS -lt $deadline ]; do
        l=$(t_http_leader); [ -n "$l" ] && { echo "$l"; return 0; }
        sleep 0.1
    done
    return 1
}

# t_expect CODE "STATUS BODY" WHAT: fails unless the status matches.
t_expect() {
    local want=$1 got=$2 what=$3
    [ "${got%% *}" = "$want" ] || t_fail "$what: expected $want, got $got"
}

# t_ids_except IDS... : node ids 0..T_NODES-1 not listed.
t_ids_except() {
    local i x skip
    for i in $(seq 0 $((T_NODES - 1))); do
        skip=0
        for x in "$@"; do [ "$i" = "$x" ] && skip=1; done
        if [ "$skip" = 0 ]; then echo "$i"; fi
    done
}

# t_wire_settled ID ARGS...: like t_wire, but retries answers that only say
# "not now" (an election in progress: NO_QUORUM, NOT_LEADER) for 15 s.
t_wire_settled() {
    local deadline=$((SECONDS + 15)) out
    while :; do
        out=$(t_wire "$@" || true)
        case "$out" in
            *status=NO_QUORUM*|*status=NOT_LEADER*|"") ;;
            *) break ;;
        esac
        [ $SECONDS -ge $deadline ] && break
        sleep 0.2
    done
    echo "$out"
}
