#!/usr/bin/env bash
# Sets up, builds and starts Skein's main job (Debian 12, run as root):
#   1. installs the Debian packages (deploy/install-deps.sh, idempotent);
#   2. configures and builds into build/ (binaries in build/bin/);
#   3. starts the main job: a local 3-node cluster once skein-node exists,
#      until then the deterministic cluster simulator.
set -euo pipefail
cd "$(dirname "$0")/.."

./deploy/install-deps.sh

cmake -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j2

bin=build/bin
echo
echo "run.sh: binaries are in $PWD/$bin:"
ls -1 "$bin"
echo

if [ -x "$bin/skein-node" ]; then
    # The node runtime is built: start a local 3-node cluster.
    echo "run.sh: starting a local 3-node cluster: $bin/skeinctl cluster start"
    exec "$bin/skeinctl" cluster start
else
    # Only the consensus core and its simulator exist so far: run 3 real
    # cores over a simulated network and disk, with faults, and check every
    # Raft invariant after each step.
    echo "run.sh: no skein-node yet; running the simulator: $bin/skein-sim --seed 1 --nodes 3"
    exec "$bin/skein-sim" --seed 1 --nodes 3
fi
