#!/usr/bin/env bash
# Same seed, same bytes: runs a few seeds twice with --trace and compares.
# Extra arguments (e.g. --real-kv) are passed to every run.
# Usage: run_determinism.sh SKEIN_SIM [ARGS...]
set -u
sim=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for args in "--seed 7 --nodes 3" "--seed 11 --nodes 5" "--seed 23 --nodes 7"; do
    # shellcheck disable=SC2086
    "$sim" $args "$@" --trace >"$tmp/a"
    # shellcheck disable=SC2086
    "$sim" $args "$@" --trace >"$tmp/b"
    if ! cmp -s "$tmp/a" "$tmp/b"; then
        echo "NOT deterministic: $sim $args${*:+ $*} --trace"
        exit 1
    fi
    echo "deterministic: $args${*:+ $*} ($(wc -l <"$tmp/a") trace lines)"
done
