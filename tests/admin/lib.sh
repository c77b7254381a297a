# lib.sh - helpers for skeinctl tests that run real clusters on loopback.
# Source it with BIN set to the directory holding skeinctl and skein-node.
#
# Every cluster a test starts lives in a directory under $T_DIR; the EXIT
# trap stops all of them (skeinctl cluster stop, then SIGKILL of every pid
# file left) and removes $T_DIR, also when the test fails.

set -euo pipefail

: "${BIN:?BIN must name the directory holding skeinctl and skein-node}"
CTL="$BIN/skeinctl"
T_DIR=$(mktemp -d /tmp/skein-ctl.XXXXXX)

t_cleanup() {
    local rc=$? d f
    for d in "$T_DIR"/*/; do
        [ -f "$d/cluster.conf" ] && "$CTL" cluster stop --data "$d" --grace 3 >/dev/null 2>&1 || true
        for f in "$d"/node-*.pid; do
            [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
        done
    done
    # A failed run keeps its directory (histories, node logs) for a look.
    if [ "${T_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        echo "kept $T_DIR"
    else
        rm -rf "$T_DIR"
    fi
}
trap t_cleanup EXIT

t_log() { echo "[$(date +%H:%M:%S.%3N)] $*"; }
t_fail() {
    echo "FAIL: $*" >&2
    local f
    for f in "$T_DIR"/*/node-*.log; do
        [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; } >&2
    done
    exit 1
}

# t_pick_base N: a base port whose N HTTP ports (base..) and nng ports
# (base+1000..) are free now. Below 32768, the start of Linux's ephemeral
# range (ip_local_port_range): ports there can be taken at any moment by
# the outgoing connections of whatever runs on the machine.
t_pick_base() {
    local n=$1 tries base p ok
    for tries in $(seq 1 100); do
        base=$(( 20000 + (RANDOM * 3 + $$ + tries * 97) % 11500 ))
        ok=1
        for p in $(seq "$base" $((base + n - 1))) $(seq $((base + 1000)) $((base + 1000 + n - 1))); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then ok=0; break; fi
        done
        [ "$ok" = 1 ] && { echo "$base"; return 0; }
    done
    return 1
}

# t_cluster NAME NODES [cluster start options...]: starts a cluster in
# $T_DIR/NAME on free ports (retrying on a port race), with the ports of one
# more node free too (for add-node); prints the base port.
t_cluster() {
    local name=$1 n=$2 base try; shift 2
    for try in 1 2 3; do
        base=$(t_pick_base "$((n + 1))") || t_fail "no free ports"
        if "$CTL" cluster start --data "$T_DIR/$name" --nodes "$n" --port "$base" \
            --wait 60 "$@" >"$T_DIR/$name.start.log" 2>&1; then
            echo "$base"; return 0
        fi
        grep -q "is taken" "$T_DIR/$name.start.log" || break
    done
    cat "$T_DIR/$name.start.log" >&2
    t_fail "cluster start $name"
}

# t_pid NAME ID: pid of node ID of cluster NAME.
t_pid() { cat "$T_DIR/$1/node-$2.pid"; }
