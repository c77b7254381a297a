#!/usr/bin/env bash
# Runs random seeds for a bounded time. The base seed comes from the date
# and is printed so that any failure can be replayed.
# Usage: run_random.sh SKEIN_SIM SECONDS [BASE_SEED]
set -u
sim=$1
secs=$2
base=${3:-$(date +%s)}
echo "sim random batch: base seed $base, $secs s"
end=$((SECONDS + secs))
i=0
while [ "$SECONDS" -lt "$end" ]; do
    seed=$((base + i))
    case $((i % 4)) in
        0 | 2) nodes=3 ;;
        1) nodes=5 ;;
        *) nodes=$((4 + (i / 4) % 4)) ;;
    esac
    if ! out=$("$sim" --seed "$seed" --nodes "$nodes"); then
        echo "$out" | tail -n 5
        echo "FAILED: $sim --seed $seed --nodes $nodes --trace"
        echo "(add '$seed $nodes' to tests/sim/seeds.txt once understood)"
        exit 1
    fi
    i=$((i + 1))
done
echo "sim random batch: $i seeds passed (base $base)"
