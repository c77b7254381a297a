#!/usr/bin/env bash
# The standalone skein-gateway process: --help, bad flags, serving 503 with
# Retry-After while its only node is down, and a clean exit on SIGTERM.
# Usage: test_gateway_binary.sh PATH/TO/skein-gateway
set -euo pipefail
bin=$1
fail() { echo "FAIL: $*" >&2; exit 1; }

"$bin" --help | grep -q -- '--nodes' || fail "--help does not document --nodes"
if "$bin" --listen 127.0.0.1:0 >/dev/null 2>&1; then fail "no --nodes accepted"; fi
if "$bin" --listen 127.0.0.1:0 --nodes tcp://x:1 --threads abc >/dev/null 2>&1; then
    fail "bad --threads accepted"
fi

# HTTP on a port the gateway picks (it logs it); the node on port 1, where
# nothing listens.
log=$(mktemp)
"$bin" --listen 127.0.0.1:0 --nodes 127.0.0.1:1 --timeout-ms 2000 \
    --threads 8 >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
http=
for _ in $(seq 1 50); do
    http=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$log")
    [ -n "$http" ] && break
    sleep 0.1
done
[ -n "$http" ] || fail "no port in the log: $(cat "$log")"
for _ in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:$http/" && break
    sleep 0.1
done
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http/api/kv/count")
[ "$code" = 503 ] || fail "expected 503 with the node down, got $code"
curl -s -D - -o /dev/null "http://127.0.0.1:$http/api/kv/count" | grep -qi '^Retry-After:' \
    || fail "no Retry-After on 503"
curl -s "http://127.0.0.1:$http/api/kv/count" | grep -q '"code":"unavailable"' \
    || fail "503 body is not the JSON error"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http/")
[ "$code" = 200 ] || fail "dashboard: $code"
kill -TERM "$pid"
for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then fail "still running 10 s after SIGTERM"; fi
wait "$pid" || fail "exit status $? after SIGTERM"
echo "1 passed, 0 failed"
