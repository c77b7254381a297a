#!/usr/bin/env bash
# Runs the fixed seed list: one "seed nodes" per line, '#' starts a comment.
# Extra arguments (e.g. --real-kv) are passed to every run.
# Usage: run_seeds.sh SKEIN_SIM SEEDS_FILE [ARGS...]
set -u
sim=$1
list=$2
shift 2
count=0
while read -r line; do
    line=${line%%#*}
    read -r seed nodes _ <<<"$line"
    [ -z "${seed:-}" ] && continue
    if ! out=$("$sim" --seed "$seed" --nodes "${nodes:-3}" "$@"); then
        echo "$out" | tail -n 5
        echo "FAILED: $sim --seed $seed --nodes ${nodes:-3}${*:+ $*} --trace"
        exit 1
    fi
    echo "$out" | tail -n 1
    count=$((count + 1))
done <"$list"
echo "sim seeds: $count passed${*:+ ($*)}"
