#!/usr/bin/env bash
# Asserts that the simulator catches a planted bug: runs seeds 1..MAX with
# the mutant on and passes as soon as one seed fails. Extra arguments (e.g.
# --real-kv) are passed to every run.
# Usage: run_mutant.sh SKEIN_SIM MUTANT MAX [ARGS...]
set -u
sim=$1
mutant=$2
max=$3
shift 3
if ! "$sim" --list-mutants | grep -qx -- "$mutant"; then
    echo "unknown mutant $mutant"
    exit 1
fi
for seed in $(seq 1 "$max"); do
    nodes=$((seed % 2 ? 3 : 5))
    out=$("$sim" --seed "$seed" --nodes "$nodes" --mutant "$mutant" "$@")
    rc=$?
    if [ "$rc" -eq 1 ] && echo "$out" | grep -q 'invariant=liveness'; then
        # A planted safety bug must be caught by a safety check; a stall
        # does not prove the checks work.
        continue
    elif [ "$rc" -eq 1 ]; then
        echo "mutant $mutant caught at seed $seed ($nodes nodes${*:+, $*}):"
        echo "$out" | grep '^FAIL'
        exit 0
    elif [ "$rc" -ne 0 ]; then
        echo "mutant $mutant: seed $seed crashed the simulator (rc $rc)"
        exit 0
    fi
done
echo "mutant $mutant NOT caught in seeds 1..$max${*:+ ($*)}"
exit 1
